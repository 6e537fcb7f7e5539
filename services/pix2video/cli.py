"""``pix2video``: edit a clip, invert it, make a sample clip, build the tiny models, serve.

Each command is a module of :mod:`pix2video.commands` (``HELP``,
``add_arguments(parser)``, ``run(args)``) named in :data:`COMMANDS`; a new
command is a new module and one line there. Nothing heavy is imported until a
command runs, so ``--help`` answers at once.

Errors end the command with one readable line on stderr and a non-zero exit
code (2: bad input or arguments, 3: models could not be loaded, 4: stored data
corrupt, 1: anything unexpected); no partial output file is left behind.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from . import __version__
from .errors import CorruptObject, InvalidInput, ModelLoadError, NotFound, Pix2VideoError

EXIT_INPUT, EXIT_MODEL, EXIT_CORRUPT, EXIT_UNEXPECTED = 2, 3, 4, 1


def _quiet_libraries() -> None:
    # Library chatter (weight-loading bars, backend hints) would bury our own
    # progress bars and error lines.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_VERBOSITY", "error")  # e.g. "Retrying in 1s" when the hub is unreachable
    import warnings

    warnings.filterwarnings("ignore")
    logging.getLogger().setLevel(logging.ERROR)
    # The variables above only act when a library is first imported; these
    # loggers may exist already (a notebook, a test run), so set them too.
    for name in ("transformers", "diffusers", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # imported already: the variables above came too late for it
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()


# command name -> module of pix2video.commands (see its docstring); the order of `pix2video --help`.
COMMANDS = {
    "edit": "edit",
    "invert": "invert",
    "sample": "sample",
    "serve": "serve",
    "build-tiny": "build_tiny",
    "eval": "eval",
    "compare": "compare",
}


def command_module(name: str):
    return importlib.import_module(f".commands.{COMMANDS[name]}", __package__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pix2video", description="Text-guided video editing (Pix2Video).")
    parser.add_argument("--version", action="version", version=f"pix2video {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = command_module(name)
        p = sub.add_parser(
            name, help=module.HELP, description=module.HELP, add_help=not getattr(module, "RAW_ARGS", False)
        )
        module.add_arguments(p)
    return parser


def parse_args(argv: list[str]) -> argparse.Namespace:
    if argv and argv[0] in COMMANDS and getattr(command_module(argv[0]), "RAW_ARGS", False):
        return argparse.Namespace(command=argv[0], argv=argv[1:])
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    args.raw_argv = argv  # which flags were given explicitly (a preset does not override them)
    _quiet_libraries()
    from pix2video_client import errors as client_errors  # grpc: after --help has answered

    try:
        return command_module(args.command).run(args)
    except (InvalidInput, NotFound, client_errors.InvalidArgument, client_errors.NotFound) as exc:
        code, msg = EXIT_INPUT, str(exc)
    except client_errors.DataLoss as exc:
        code, msg = EXIT_CORRUPT, str(exc)
    except client_errors.Pix2VideoClientError as exc:
        code, msg = EXIT_UNEXPECTED, str(exc)
    except ModelLoadError as exc:
        code, msg = EXIT_MODEL, str(exc)
    except CorruptObject as exc:
        code, msg = EXIT_CORRUPT, str(exc)
    except Pix2VideoError as exc:
        code, msg = EXIT_UNEXPECTED, str(exc)
    except KeyboardInterrupt:
        code, msg = 130, "interrupted"
    except Exception as exc:  # noqa: BLE001 - one line, as promised above, not a traceback
        if os.environ.get("PIX2VIDEO_DEBUG"):
            raise
        code, msg = EXIT_UNEXPECTED, f"{type(exc).__name__}: {exc}"
    msg = " ".join(msg.split()) or "unknown error"  # exactly one line
    print(f"pix2video: error: {msg}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
