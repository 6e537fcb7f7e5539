"""``pix2video serve``: one service, or the whole suite in one process (``--all``)."""

from __future__ import annotations

import argparse
import dataclasses
import sys

from ..errors import InvalidInput
from ..servers.registry import SERVICES, settings_class

HELP = "serve {depth,caption,inversion,editor} [settings] | serve --all [--depth-port N ...] [settings]"
RAW_ARGS = True  # the rest of the command line is the service's own settings flags


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Nothing: ``run`` parses ``args.argv`` itself (each service has its own flags)."""


def _describe(name: str) -> str:
    return (settings_class(name).__doc__ or "").strip().splitlines()[0]


def print_help() -> None:
    width = max(map(len, SERVICES))
    lines = [
        "usage: pix2video serve NAME [settings]",
        "       pix2video serve --all [--NAME-port N ...] [settings]",
        "",
        "Runs one gRPC service until SIGTERM, or with --all every service in one process, each on its own",
        "port (the inversion service pointed at the depth and caption services just started).",
        "",
        "services:",
        *(f"  {name:<{width}}  {_describe(name)}" for name in SERVICES),
        "",
        "settings: every field of the service's settings, as --field-name VALUE or the environment variable",
        "PIX2VIDEO_FIELD_NAME; 'pix2video serve NAME --help' lists them with their defaults, and",
        "'pix2video serve --all --help' the port flags of --all.",
    ]
    print("\n".join(lines))


def _ports_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pix2video serve --all",
        description="Every service in one process; the settings flags of each service apply to the ones that have"
        " them (see 'pix2video serve NAME --help').",
    )
    for name in SERVICES:
        cls = settings_class(name)
        p.add_argument(
            f"--{name}-port", type=int, default=cls.port, help=f"gRPC port of the {name} service (default: {cls.port})"
        )
    return p


def run(args: argparse.Namespace) -> int:
    argv = args.argv
    if argv and argv[0] in ("-h", "--help"):
        print_help()
        return 0
    if argv and argv[0] in SERVICES:
        if any(a in ("-h", "--help") for a in argv[1:]):
            from ..servers.common.settings import settings_parser

            settings_parser(settings_class(argv[0]), f"pix2video serve {argv[0]}").print_help()
            return 0
        from ..servers.common.main import run_service
        from ..servers.registry import builder

        return run_service(f"pix2video serve {argv[0]}", settings_class(argv[0]), builder(argv[0]), argv[1:])
    if not argv or argv[0] != "--all":
        raise InvalidInput(f"serve: name one of {', '.join(SERVICES)}, or give --all")
    ports = _ports_parser()
    if any(a in ("-h", "--help") for a in argv[1:]):
        ports.print_help()
        return 0
    return _serve_all(ports, argv[1:])


def _serve_all(ports: argparse.ArgumentParser, argv: list[str]) -> int:
    from ..servers.common.main import run_until_signal
    from ..servers.common.settings import load_settings
    from ..servers.suite import start_suite

    args, options = ports.parse_known_args(argv)
    classes = {name: settings_class(name) for name in SERVICES}
    # --all: one command line for every service; each takes the flags it has.
    known = {"--" + f.name.replace("_", "-") for cls in classes.values() for f in dataclasses.fields(cls)}
    unknown = [a.split("=")[0] for a in options if a.startswith("--") and a.split("=")[0] not in known]
    if unknown:
        raise InvalidInput(f"serve: unknown setting {unknown[0]}")
    settings = {
        name: dataclasses.replace(
            load_settings(cls, options, prog="pix2video serve --all", ignore_unknown=True),
            port=getattr(args, f"{name}_port"),
        )
        for name, cls in classes.items()
    }

    async def start():
        running = await start_suite(settings)
        for name, r in running.items():
            print(f"{name} listening on port {r.port}", file=sys.stderr)
        return list(running.values())

    return run_until_signal("pix2video serve --all", start)
