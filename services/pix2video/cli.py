"""``pix2video``: edit a clip, invert it, make a sample clip, build the tiny models.

Errors end the command with one readable line on stderr and a non-zero exit
code (2: bad input or arguments, 3: models could not be loaded, 4: stored data
corrupt, 1: anything unexpected); no partial output file is left behind.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from pix2video_client import errors as client_errors

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
    try:
        from transformers.utils import logging as tlog

        tlog.set_verbosity_error()
        tlog.disable_progress_bar()
    except Exception:  # noqa: BLE001 - cosmetic only
        pass


def _add_runtime_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("models and runtime")
    g.add_argument(
        "--model",
        default="stabilityai/stable-diffusion-2-depth",
        help="SD2-depth hub id, local folder in its layout, 'toy' (shipped, trained on the toy world; 128x128) "
        "or 'tiny' (built-in random tiny models)",
    )
    g.add_argument(
        "--caption-model", default=None, help="BLIP hub id or folder (default: <model>/captioner or BLIP base)"
    )
    g.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    g.add_argument("--dtype", default="auto", help="auto (float16 on CUDA, float32 on CPU), float32, float16, bfloat16")
    g.add_argument("--store", default=None, help="latent store folder (default: ~/.cache/pix2video/store)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bars")


def _add_inversion_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("inversion")
    g.add_argument("input", help="input video file (mp4, mov, webm, ...)")
    g.add_argument("--width", type=int, default=512, help="working width, a multiple of 64 (default 512)")
    g.add_argument("--height", type=int, default=512, help="working height, a multiple of 64 (default 512)")
    g.add_argument(
        "--resize",
        default="crop",
        choices=["crop", "pad"],
        help="keep the aspect ratio by scaling to cover and centre-cropping (crop) or fitting and padding (pad)",
    )
    g.add_argument("--steps", type=int, default=50, help="DDIM steps for inversion and editing (default 50)")
    g.add_argument("--source-prompt", default=None, help="prompt for inversion (default: BLIP caption of frame 1)")
    g.add_argument("--max-frames", type=int, default=None, help="use only the first N frames")
    g = p.add_argument_group("service suite (instead of running the engine here)")
    g.add_argument("--server", default=None, metavar="HOST:PORT", help="inversion service; runs the job on the suite")
    g.add_argument("--editor-server", default=None, metavar="HOST:PORT", help="editor service (default: --server)")
    g.add_argument("--key", action="store_true", help="INPUT is an object key in the suite's store, not a local file")


def _add_edit_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("edit (Pix2Video method switches)")
    g.add_argument("--prompt", required=True, help="target prompt, e.g. 'a crochet swan on the lake'")
    g.add_argument("-o", "--output", required=True, help="output .mp4")
    g.add_argument("--frames-dir", default=None, help="also write each edited frame as PNG into this folder")
    g.add_argument("--negative-prompt", default="", help="prompt of the unconditional branch (default empty)")
    g.add_argument("--guidance", type=float, default=7.5, help="classifier-free guidance scale (default 7.5)")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument(
        "--reference",
        default="anchor+previous",
        choices=["anchor+previous", "anchor", "previous", "anchor+random"],
        help="frames whose self-attention features are injected (default anchor+previous)",
    )
    g.add_argument(
        "--inject-layers",
        default="decoder",
        choices=["decoder", "all", "none"],
        help="self-attention layers that inject (default decoder)",
    )
    g.add_argument(
        "--latent-update",
        default="x0",
        choices=["x0", "xt", "off"],
        help="guided latent update: x0 (authors' code), xt (paper eq. 1, through the UNet), off",
    )
    g.add_argument("--update-strength", type=float, default=100.0, help="latent update step size delta (default 100)")
    g.add_argument("--update-start", type=float, default=0.0, help="update from this fraction of the steps (default 0)")
    g.add_argument(
        "--update-end", type=float, default=0.5, help="update until this fraction of the steps (default 0.5)"
    )
    g.add_argument(
        "--frames-in-flight",
        type=int,
        default=1,
        help="wavefront width: frames denoised together per UNet call (same result, faster on GPU)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pix2video", description="Text-guided video editing (Pix2Video).")
    parser.add_argument("--version", action="version", version=f"pix2video {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("edit", help="edit a video with a text prompt")
    _add_inversion_args(p)
    _add_edit_args(p)
    _add_runtime_args(p)

    p = sub.add_parser("invert", help="depth, caption and DDIM inversion into the latent store; prints the video id")
    _add_inversion_args(p)
    _add_runtime_args(p)

    p = sub.add_parser("sample", help="write a toy-world sample clip (a red ball on green grass under a blue sky)")
    p.add_argument("output", help="output .mp4")
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--width", type=int, default=128, help="default 128, the toy model set's size")
    p.add_argument("--height", type=int, default=128)
    p.add_argument("--fps", type=float, default=8.0)

    sub.add_parser(
        "serve",
        add_help=False,
        help="serve {depth,caption,inversion,editor} [settings] | serve --all [--depth-port N ...] [settings]",
    )

    p = sub.add_parser("build-tiny", help="write the tiny random model set to a folder (for --model PATH)")
    p.add_argument("output", help="folder to create")
    from .toytrain import command as train_toy  # its own module: the training has many switches

    train_toy.add_parser(sub)
    return parser


class _Bars:
    """One tqdm bar per stage, on stderr."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self.bars = {}

    def __call__(self, stage: str, done: int, total: int) -> None:
        if not self.enabled:
            return
        from tqdm import tqdm

        bar = self.bars.get(stage)
        if bar is None:
            bar = self.bars[stage] = tqdm(total=total, desc=f"{stage:>9}", unit="frame", file=sys.stderr, leave=True)
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self.bars.values():
            bar.close()


def _runtime(args):
    from .settings import RuntimeSettings

    return RuntimeSettings(
        model=args.model,
        caption_model=args.caption_model,
        device=args.device,
        dtype=args.dtype,
        store=Path(args.store) if args.store else None,
    )


def _invert(args, bars):
    """Checks every input, then loads the models and inverts (or finds) the clip."""
    from .jobs import InversionSettings
    from .video import read_video

    if args.max_frames is not None and args.max_frames < 1:
        raise InvalidInput(f"max_frames: must be at least 1, got {args.max_frames}")
    inv = InversionSettings(
        width=args.width,
        height=args.height,
        resize=args.resize,
        num_steps=args.steps,
        source_prompt=args.source_prompt,
    )
    runtime = _runtime(args)
    edit_settings = _edit_settings(args) if args.command == "edit" else None
    # Frames are fitted as they are decoded: the source size is never all in memory.
    frames, info = read_video(args.input, max_frames=args.max_frames, transform=inv.fit)
    from .embedded import EmbeddedPix2Video  # diffusers and transformers: only once the inputs are good

    engine = EmbeddedPix2Video.from_settings(runtime)
    result = engine.invert(frames, inv, fps=info.fps, progress=bars)
    return engine, result, edit_settings, info


def _edit_settings(args):
    from .engine.settings import EditSettings

    return EditSettings(
        prompt=args.prompt,
        negative_prompt=args.negative_prompt,
        guidance_scale=args.guidance,
        num_steps=args.steps,
        seed=args.seed,
        reference=args.reference,
        inject_layers=args.inject_layers,
        latent_update=args.latent_update,
        update_strength=args.update_strength,
        update_start=args.update_start,
        update_end=args.update_end,
        frames_in_flight=args.frames_in_flight,
    )


def _remote(args, bars):
    """The same job on the service suite, through the SDK: (info, frames iterator or None)."""
    from pix2video_client import EditOptions, InversionOptions, Pix2VideoClient

    if args.max_frames is not None and args.max_frames < 1:
        raise InvalidInput(f"max_frames: must be at least 1, got {args.max_frames}")
    if not args.key and not Path(args.input).is_file():
        raise NotFound(f"input: file {args.input!r} does not exist (use --key for an object in the store)")
    settings = _edit_settings(args) if args.command == "edit" else None  # checked before any remote work
    client = Pix2VideoClient(args.server, args.editor_server)
    inv = InversionOptions(
        width=args.width,
        height=args.height,
        resize=args.resize,
        num_steps=args.steps,
        source_prompt=args.source_prompt,
        max_frames=args.max_frames or 0,
    )
    info = client.invert(args.input, inv, key=args.key, progress=bars)
    if settings is None:
        return info, None
    fields = (
        "negative_prompt",
        "guidance_scale",
        "num_steps",
        "seed",
        "reference",
        "inject_layers",
        "latent_update",
        "update_strength",
        "update_start",
        "update_end",
        "frames_in_flight",
    )
    options = EditOptions(**{f: getattr(settings, f) for f in fields})
    frames = client.edit(info.video_id, settings.prompt, options, encoding="raw")
    return info, (f.to_array() for f in frames)


def cmd_edit(args) -> int:
    from .video import AtomicOutput, tee_frames_to_dir, write_video

    if not args.output.lower().endswith((".mp4", ".m4v", ".mov")):
        raise InvalidInput(f"output: must end in .mp4, .m4v or .mov, got {args.output!r}")
    AtomicOutput(args.output).discard()  # fail now, not after inverting, if the folder is missing
    if args.frames_dir and Path(args.frames_dir).exists() and not Path(args.frames_dir).is_dir():
        raise InvalidInput(f"frames_dir: {args.frames_dir!r} exists and is not a folder")
    bars = _Bars(not args.quiet)
    try:
        if args.server:
            info, images = _remote(args, bars)
            video_id, cached, n, fps = info.video_id, info.cached, info.num_frames, info.fps
        else:
            engine, result, settings, local = _invert(args, bars)
            video_id, cached, n, fps = result.video_id, result.cached, result.manifest.num_frames, local.fps
            images = (f.image for f in engine.edit(result.video_id, settings))
        print(f"{'reused stored inversion' if cached else 'inverted'} {video_id} ({n} frames)", file=sys.stderr)

        def frames():
            for i, image in enumerate(images):
                bars("edit", i + 1, n)
                yield image

        stream = frames()
        if args.frames_dir:
            stream = tee_frames_to_dir(stream, args.frames_dir)
        # The input's own rate: a stored inversion found by content may have
        # been made from a clip with the same frames at another rate.
        written = write_video(args.output, stream, fps=fps)
    finally:
        bars.close()
    print(f"wrote {written} frames to {args.output}", file=sys.stderr)
    return 0


def cmd_invert(args) -> int:
    bars = _Bars(not args.quiet)
    try:
        if args.server:
            info, _ = _remote(args, bars)
            video_id, cached, n, prompt = info.video_id, info.cached, info.num_frames, info.source_prompt
        else:
            _, result, _, _ = _invert(args, bars)
            m = result.manifest
            video_id, cached, n, prompt = result.video_id, result.cached, m.num_frames, m.source_prompt
    finally:
        bars.close()
    print(video_id)
    print(f"{'cached' if cached else 'inverted'}: {n} frames, source prompt {prompt!r}", file=sys.stderr)
    return 0


def cmd_sample(args) -> int:
    from .toyworld import demo_frames
    from .video import write_video

    if not 1 <= args.frames <= 10_000:
        raise InvalidInput(f"frames: must be in [1, 10000], got {args.frames}")
    for name in ("width", "height"):
        v = getattr(args, name)
        if not 2 <= v <= 4096 or v % 2:
            raise InvalidInput(f"{name}: must be an even number in [2, 4096], got {v}")
    if not 0 < args.fps <= 1000:
        raise InvalidInput(f"fps: must be in (0, 1000], got {args.fps}")
    n = write_video(args.output, demo_frames(args.frames, args.width, args.height), fps=args.fps)
    print(f"wrote {n} frames to {args.output}", file=sys.stderr)
    return 0


def cmd_build_tiny(args) -> int:
    from .models.tiny import build_tiny_model_set

    print(build_tiny_model_set(args.output))
    return 0


def cmd_serve(argv: list[str]) -> int:
    """``serve NAME [settings]`` or ``serve --all [--NAME-port N] [settings]``;
    settings are the services' own flags (``python -m pix2video.servers.NAME --help``)."""
    import dataclasses

    from .servers.common.main import run_service, run_until_signal
    from .servers.common.settings import load_settings
    from .servers.suite import SERVICES, start_suite

    if argv and argv[0] in SERVICES:
        cls, build = SERVICES[argv[0]]
        return run_service(f"pix2video serve {argv[0]}", cls, build, argv[1:])
    if not argv or argv[0] != "--all":
        raise InvalidInput(f"serve: name one of {', '.join(SERVICES)}, or give --all")
    ports = argparse.ArgumentParser(prog="pix2video serve --all", add_help=False)
    for name, (cls, _) in SERVICES.items():
        ports.add_argument(f"--{name}-port", type=int, default=cls.port)
    args, options = ports.parse_known_args(argv[1:])
    # --all: one command line for every service; each takes the flags it has.
    known = {"--" + f.name.replace("_", "-") for cls, _ in SERVICES.values() for f in dataclasses.fields(cls)}
    unknown = [a.split("=")[0] for a in options if a.startswith("--") and a.split("=")[0] not in known]
    if unknown:
        raise InvalidInput(f"serve: unknown setting {unknown[0]}")
    settings = {
        name: dataclasses.replace(
            load_settings(cls, options, prog="pix2video serve --all", ignore_unknown=True),
            port=getattr(args, f"{name}_port"),
        )
        for name, (cls, _) in SERVICES.items()
    }

    async def start():
        running = await start_suite(settings)
        for name, r in running.items():
            print(f"{name} listening on port {r.port}", file=sys.stderr)
        return list(running.values())

    return run_until_signal("pix2video serve --all", start)


def cmd_train_toy(args) -> int:
    from .toytrain.command import run

    return run(args)


COMMANDS = {
    "edit": cmd_edit,
    "invert": cmd_invert,
    "sample": cmd_sample,
    "build-tiny": cmd_build_tiny,
    "train-toy": cmd_train_toy,
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    serve = bool(argv) and argv[0] == "serve"
    args = None if serve else build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return cmd_serve(argv[1:]) if serve else COMMANDS[args.command](args)
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
