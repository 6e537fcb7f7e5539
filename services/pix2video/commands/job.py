"""What ``edit`` and ``invert`` share: the runtime and inversion flags, and running
the inversion here (the embedded engine) or on the service suite (the SDK)."""

from __future__ import annotations

import argparse
from pathlib import Path

from pix2video_client.options import DEFAULT_HEIGHT, DEFAULT_NUM_STEPS, DEFAULT_RESIZE, DEFAULT_WIDTH, RESIZE_MODES

from .. import cli_security
from ..errors import InvalidInput, NotFound
from ..flags import add_field_flags
from ..settings import RuntimeSettings

# RuntimeSettings field -> flag; type, default and help come from the field.
RUNTIME_FLAGS = {
    "model": "--model",
    "caption_model": "--caption-model",
    "device": "--device",
    "dtype": "--dtype",
    "store": "--store",
}


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models and runtime")
    add_field_flags(g, RuntimeSettings, RUNTIME_FLAGS)
    g.add_argument("-q", "--quiet", action="store_true", help="no progress output (default: progress on stderr)")


def add_inversion_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inversion")
    g.add_argument("input", help="input video file (mp4, mov, webm, ...)")
    g.add_argument(
        "--width",
        type=int,
        default=DEFAULT_WIDTH,
        help=f"working width, a multiple of 64 (default: {DEFAULT_WIDTH})",
    )
    g.add_argument(
        "--height",
        type=int,
        default=DEFAULT_HEIGHT,
        help=f"working height, a multiple of 64 (default: {DEFAULT_HEIGHT})",
    )
    g.add_argument(
        "--resize",
        default=DEFAULT_RESIZE,
        choices=(*RESIZE_MODES, "squash"),
        help="keep the aspect ratio by scaling to cover and centre-cropping (crop) or fitting and padding (pad),"
        f" or ignore it (squash, the authors'; local engine only) (default: {DEFAULT_RESIZE})",
    )
    g.add_argument(
        "--steps",
        type=int,
        default=DEFAULT_NUM_STEPS,
        help=f"DDIM steps for inversion and editing (default: {DEFAULT_NUM_STEPS})",
    )
    g.add_argument("--source-prompt", default=None, help="prompt for inversion (default: BLIP caption of frame 1)")
    g.add_argument("--max-frames", type=int, default=None, help="use only the first N frames (default: all)")
    add_preset_arg(g)
    g = p.add_argument_group("service suite (instead of running the engine here)")
    g.add_argument(
        "--server",
        default=None,
        metavar="HOST:PORT",
        help="inversion service; runs the job on the suite (default: none, run here)",
    )
    g.add_argument(
        "--editor-server", default=None, metavar="HOST:PORT", help="editor service (default: the --server address)"
    )
    g.add_argument(
        "--key",
        action="store_true",
        help="INPUT is an object key in the suite's store, not a local file (default: a local file)",
    )
    cli_security.add_args(g)


def add_preset_arg(g) -> None:
    g.add_argument(
        "--preset",
        default="default",
        choices=("default", "authors"),
        help="authors: exactly what the authors' script runs (squash resize, bilinear depth, update while i <= 25,"
        " steps_offset=0, float32); flags given explicitly win over it; local engine only"
        " (default: default, the paper with diffusers' conventions)",
    )


def given(args) -> set[str]:
    """Settings named by an explicit flag on the command line: they win over a preset."""
    return {a.split("=")[0].lstrip("-").replace("-", "_") for a in getattr(args, "raw_argv", []) if a.startswith("--")}


def preset(args):
    from ..engine.settings import get_preset

    return get_preset(getattr(args, "preset", "default"))


def runtime(args) -> RuntimeSettings:
    values = {name: getattr(args, name) for name in RUNTIME_FLAGS}
    if values.get("dtype") == "auto" and preset(args).dtype:  # the preset's precision, unless --dtype says
        values["dtype"] = preset(args).dtype
    return RuntimeSettings(**{**values, "store": Path(args.store) if args.store else None})


def edit_settings(args):
    """The EditSettings of an ``edit`` command line (its flags are generated from them)."""
    import dataclasses

    from ..engine.settings import EditSettings

    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(EditSettings) if hasattr(args, f.name)}
    # The preset's edit fields (update_end) have flags of the same name.
    return preset(args).apply(EditSettings(**{**values, "num_steps": args.steps}), "edit", given(args))


def check_max_frames(args) -> None:
    if args.max_frames is not None and args.max_frames < 1:
        raise InvalidInput(f"max_frames: must be at least 1, got {args.max_frames}")


def invert_here(args, progress):
    """Checks every input, then loads the models and inverts (or finds) the clip."""
    from ..jobs import InversionSettings
    from ..video import read_video

    check_max_frames(args)
    inv = InversionSettings(
        width=args.width,
        height=args.height,
        resize=args.resize,
        num_steps=args.steps,
        source_prompt=args.source_prompt,
    )
    inv = preset(args).apply(inv, "inversion", given(args))
    runtime_settings = runtime(args)
    settings = edit_settings(args) if args.command == "edit" else None
    # Frames are fitted as they are decoded: the source size is never all in memory.
    frames, info = read_video(args.input, max_frames=args.max_frames, transform=inv.fit)
    from ..embedded import EmbeddedPix2Video  # diffusers and transformers: only once the inputs are good

    engine = EmbeddedPix2Video.from_settings(runtime_settings)
    result = engine.invert(frames, inv, fps=info.fps, progress=progress)
    return engine, result, settings, info


def run_remote(args, progress):
    """The same job on the service suite, through the SDK: (info, frames iterator or None)."""
    import dataclasses

    from pix2video_client import EditOptions, InversionOptions, Pix2VideoClient

    from ..engine.settings import DEFAULT_UPDATE_NORMALISATION

    check_max_frames(args)
    if preset(args).name != "default" or args.resize not in RESIZE_MODES:
        raise InvalidInput(
            "preset: the authors' preset and --resize squash run in the local engine only; drop --server"
        )
    if not args.key and not Path(args.input).is_file():
        raise NotFound(f"input: file {args.input!r} does not exist (use --key for an object in the store)")
    settings = edit_settings(args) if args.command == "edit" else None  # checked before any remote work
    if settings is not None and settings.update_normalisation != DEFAULT_UPDATE_NORMALISATION:
        # the services' EditSettings carry no normalisation: they use the default
        raise InvalidInput(
            f"update_normalisation: the services normalise the update as {DEFAULT_UPDATE_NORMALISATION}; drop --server"
        )
    client = Pix2VideoClient(args.server, args.editor_server, **cli_security.client_kwargs(args))
    inv = InversionOptions(
        width=args.width,
        height=args.height,
        resize=args.resize,
        num_steps=args.steps,
        source_prompt=args.source_prompt,
        max_frames=args.max_frames or 0,
    )
    info = client.invert(args.input, inv, key=args.key, progress=progress)
    if settings is None:
        return info, None
    fields = [f.name for f in dataclasses.fields(EditOptions)]
    options = EditOptions(**{f: getattr(settings, f) for f in fields})
    frames = client.edit(
        info.video_id, settings.prompt, options, encoding="raw", on_quality=getattr(args, "on_quality", None)
    )
    return info, (f.to_array() for f in frames)
