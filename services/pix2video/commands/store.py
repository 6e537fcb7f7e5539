"""``pix2video store gc``: clean-up of the latent store (see :mod:`pix2video.store.gc`).

    pix2video store gc [--dry-run] [--grace 1h] [--retention 30d] [store settings]

The store settings are the services' own (``--store s3 --s3-endpoint ...`` or
``PIX2VIDEO_STORE``, ``PIX2VIDEO_S3_*`` in the environment), so the chart's
CronJob runs it with the configuration the services get. Prints each key
deleted (or, with ``--dry-run``, that would be), then one summary line on
stderr. Exit codes: 0 done, 2 bad arguments, 1 the store failed.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from ..errors import InvalidInput, Pix2VideoError
from ..servers.common.settings import load_settings
from ..servers.common.store_settings import StoreSettingsMixin

HELP = "store gc [--dry-run] [--grace 1h] [--retention 30d] [store settings]: clean up the latent store"
RAW_ARGS = True  # its own parser: the gc flags, then the services' store settings flags


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Nothing: ``run`` parses ``args.argv`` itself."""


def run(args) -> int:
    return main(args.argv)


@dataclass(frozen=True)
class StoreCommandSettings(StoreSettingsMixin):
    """Where the store is (the services' store settings)."""

    def __post_init__(self):
        self.check_store()


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pix2video store", description="latent store maintenance")
    sub = p.add_subparsers(dest="action", required=True)
    gc = sub.add_parser("gc", help="delete orphan attempts, expired leases and (with --retention) old videos")
    gc.add_argument("--dry-run", action="store_true", help="list what would be deleted; delete nothing")
    gc.add_argument("--grace", default="1h", help="spare unreferenced objects younger than this (default 1h)")
    gc.add_argument("--retention", default="", help="delete videos whose manifest is older than this (default: keep)")
    gc.add_argument("--no-tenants", action="store_true", help="only the store's root, not tenants/<t>/ parts")
    return p


def main(argv: list[str]) -> int:
    from ..store.gc import collect, parse_duration  # torch (safetensors): only when it runs

    args, rest = _parser().parse_known_args(argv)
    try:
        grace = parse_duration(args.grace, "--grace")
        retention = parse_duration(args.retention, "--retention") if args.retention else None
        settings = load_settings(StoreCommandSettings, rest, prog="pix2video store gc")
        store = settings.open_store()
        report = collect(store, grace=grace, retention=retention, dry_run=args.dry_run, tenants=not args.no_tenants)
    except InvalidInput as exc:
        print(f"pix2video store gc: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    except Pix2VideoError as exc:
        print(f"pix2video store gc: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 1
    for key in report.deleted:
        print(key)
    verb = "would delete" if args.dry_run else "deleted"
    print(
        f"pix2video store gc: {verb} {len(report.deleted)} objects ({report.bytes} bytes), "
        f"{report.videos_removed} videos past retention; {len(report.skipped)} videos skipped",
        file=sys.stderr,
    )
    for line in report.skipped:
        print(f"pix2video store gc: skipped {line}", file=sys.stderr)
    return 0
