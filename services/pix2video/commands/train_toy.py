"""``pix2video train-toy``: render the toy world and train the ``toy`` model set (docs/toy-world.md)."""

from __future__ import annotations

import argparse
import json
import sys

from ..errors import InvalidInput

HELP = "render the toy world and train the toy model set into a folder (docs/toy-world.md)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("output", help="folder to create: the model set in SD2-depth's layout, plus losses.json")
    p.add_argument(
        "--seed", type=int, default=0, help="seeds the world's scenes and every component, 0..999 (default: 0)"
    )
    p.add_argument("--device", default="auto", help="cuda, cuda:N, cpu or auto: CUDA when available (default: auto)")
    p.add_argument(
        "--smoke", action="store_true", help="a few steps on a few scenes, to check the pipeline (default: false)"
    )
    p.add_argument(
        "--steps-from",
        default=None,
        metavar="LOSSES_JSON",
        help="rerun a finished run: its data and each component's reached step count, no time caps, e.g. "
        "pix2video/models/toy_weights/losses.json (default: none)",
    )
    p.add_argument("--workers", type=int, default=None, help="processes rendering the world (default: cores - 1)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars (default: false)")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..devices import resolve_device
    from ..toytrain.data import MAX_SEED
    from ..toytrain.run import SMOKE, Plan, plan_from_losses, train_toy

    if not 0 <= args.seed <= MAX_SEED:
        raise InvalidInput(f"seed: must be in [0, {MAX_SEED}], got {args.seed}")
    if args.workers is not None and not 1 <= args.workers <= 256:
        raise InvalidInput(f"workers: must be in [1, 256], got {args.workers}")
    out = Path(args.output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InvalidInput(f"output: {args.output!r} exists and is not an empty folder")
    device = resolve_device(args.device)
    plan = SMOKE if args.smoke else Plan()
    if args.steps_from:
        try:
            plan = plan_from_losses(args.steps_from)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"steps_from: cannot read a training summary from {args.steps_from!r} ({exc})") from None
    summary = train_toy(
        out, seed=args.seed, plan=plan, device=str(device), workers=args.workers, progress=not args.quiet
    )
    finals = {k: round(v["final_loss"], 4) for k, v in summary["components"].items() if v["final_loss"] is not None}
    print(json.dumps({"minutes": summary["minutes"], "final_losses": finals}), file=sys.stderr)
    print(out)
    return 0
