"""``pix2video build-tiny``: the tiny random model set, written in the SD2-depth folder layout."""

from __future__ import annotations

import argparse

HELP = "write the tiny random model set to a folder (for --model PATH)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", help="folder to create")


def run(args: argparse.Namespace) -> int:
    from ..models.tiny import build_tiny_model_set

    print(build_tiny_model_set(args.output))
    return 0
