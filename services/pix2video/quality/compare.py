"""``pix2video compare``: one clip edited by each method variant, measured side by side.

Variants (the paper's ablations, Table 2 and Fig. 7):

- ``per-frame depth2img``: diffusers' own ``StableDiffusionDepth2ImgPipeline``
  on every frame independently (SDEdit-like: the frame's latent noised to
  strength 0.8 with fresh noise per frame, then denoised with its depth);
- ``no latent update``: Pix2Video with injection but ``latent_update=off``;
- ``anchor only``, ``previous only``: injection from one reference frame;
- ``anchor+previous``: the method as published (ours).

Outputs in the output folder: ``table.md`` and ``table.json`` (the metrics of
every variant), ``grid.png`` (rows: input, then each variant; columns: frames
sampled evenly) and ``<variant>.mp4`` (input | edit, side by side).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InvalidInput

VARIANTS = ("per-frame depth2img", "no latent update", "anchor only", "previous only", "anchor+previous")
SDEDIT_STRENGTH = 0.8  # diffusers' depth2img default


def variant_settings(name: str, base):
    """The EditSettings of a Pix2Video variant, from the (preset-applied) ``base``."""
    if name == "no latent update":
        return dataclasses.replace(base, latent_update="off")
    if name == "anchor only":
        return dataclasses.replace(base, reference="anchor")
    if name == "previous only":
        return dataclasses.replace(base, reference="previous")
    if name == "anchor+previous":
        return dataclasses.replace(base, reference="anchor+previous")
    raise ValueError(name)


def depth2img_pipeline(models):
    """diffusers' depth2img pipeline over the loaded models (no copies), DDIM, quiet."""
    from diffusers import DDIMScheduler, StableDiffusionDepth2ImgPipeline

    if models.depth_estimator is None:
        raise InvalidInput("model: per-frame depth2img needs the depth estimator")
    pipe = StableDiffusionDepth2ImgPipeline(
        vae=models.vae,
        text_encoder=models.text_encoder,
        tokenizer=models.tokenizer,
        unet=models.unet,
        scheduler=DDIMScheduler.from_config(models.scheduler_config),
        depth_estimator=models.depth_estimator,
        feature_extractor=models.feature_extractor,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def per_frame_depth2img(
    models, frames: np.ndarray, prompt: str, steps: int, guidance: float, seed: int, progress=None, generator_for=None
):
    """Each frame edited on its own by diffusers' depth2img pipeline. ``generator_for(i)`` gives frame i's
    generator; by default fresh seeded noise per frame (seed + i)."""
    import torch
    from PIL import Image

    if generator_for is None:

        def generator_for(i: int):
            return torch.Generator(device="cpu").manual_seed(seed + i)

    pipe = depth2img_pipeline(models)
    out = []
    for i, frame in enumerate(frames):
        image = pipe(
            prompt=prompt,
            image=Image.fromarray(frame),
            strength=SDEDIT_STRENGTH,
            num_inference_steps=steps,
            guidance_scale=guidance,
            generator=generator_for(i),
            output_type="np",
        ).images[0]
        out.append((np.clip(image, 0, 1) * 255).round().astype(np.uint8))
        if progress:
            progress(1)
    return np.stack(out)


def grid_image(rows: dict[str, np.ndarray], columns: int) -> np.ndarray:
    """Rows of frames sampled evenly (``columns`` of them), a label strip on the left."""
    from PIL import Image, ImageDraw

    first = next(iter(rows.values()))
    n, h, w = first.shape[:3]
    idx = np.unique(np.linspace(0, n - 1, min(columns, n)).round().astype(int))
    label_w = 150
    canvas = Image.new("RGB", (label_w + w * len(idx), h * len(rows)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (name, frames) in enumerate(rows.items()):
        draw.text((6, r * h + h // 2 - 6), name, fill="black")
        for c, i in enumerate(idx):
            canvas.paste(Image.fromarray(frames[i]), (label_w + c * w, r * h))
    return np.asarray(canvas)


def _counter(bars, stage: str, total: int) -> Callable[[int], None]:
    done = [0]

    def step(k: int) -> None:
        done[0] += k
        bars(stage, done[0], total)

    return step


def compare_frames(
    engine, source: np.ndarray, fps: float, inv, base, variants, scorer, flow_method="dis", progress=None
):
    """One inversion of ``source``, then each variant's edit and its metrics.

    Args:
        engine: an ``EmbeddedPix2Video``.
        source: (N, H, W, 3) uint8 frames, already fitted to the working size.
        inv, base: the (preset-applied) inversion and edit settings.
        variants: names from :data:`VARIANTS`.
        scorer: a :class:`~pix2video.quality.clip_scores.ClipScorer`.
        progress: the CLI's ``(stage, done, total)`` bars, or None.

    Returns:
        ``(edits, reports)``: variant -> (N, H, W, 3) uint8 frames, variant -> QualityReport.
    """
    from .metrics import evaluate

    bars = progress or (lambda stage, done, total: None)
    result = engine.invert(list(source), inv, fps=fps, progress=progress)
    edits: dict[str, np.ndarray] = {}
    for name in variants:
        step = _counter(bars, name, len(source))
        if name == "per-frame depth2img":
            edits[name] = per_frame_depth2img(
                engine.models, source, base.prompt, base.num_steps, base.guidance_scale, base.seed, step
            )
        else:
            images = []
            for f in engine.edit(result.video_id, variant_settings(name, base)):
                images.append(f.image)
                step(1)
            edits[name] = np.stack(images)
    reports = {
        name: evaluate(e, base.prompt, scorer, source=source, flow_method=flow_method) for name, e in edits.items()
    }
    return edits, reports


def write_tables(out_dir: Path, reports: dict, meta: dict) -> str:
    """``table.md`` and ``table.json`` in ``out_dir``; returns the markdown table."""
    from .report import dumps, markdown_table

    table = markdown_table(reports)
    first = next(iter(reports.values()))
    (out_dir / "table.md").write_text(
        f"{table}\n\nPixel-MSE at 512x512 in 0..255; flow: {first.flow_method}.\n"
        f"Clip: {meta['input']}, {meta['frames']} frames at {meta['width']}x{meta['height']}, "
        f"prompt {meta['prompt']!r}, preset {meta['preset']}, model {meta['model']}, CLIP {meta['clip_model']}.\n"
    )
    (out_dir / "table.json").write_text(dumps({**meta, "variants": {k: r.to_json() for k, r in reports.items()}}))
    return table


def variant_file(name: str) -> str:
    """The side-by-side clip's file name of a variant."""
    return f"{name.replace(' ', '_').replace('+', '_')}.mp4"


def write_side_by_side(out_dir: Path, source: np.ndarray, edits: dict, fps: float) -> None:
    """``<variant>.mp4`` per variant: input | edit."""
    from ..video import write_video

    for name, e in edits.items():
        write_video(out_dir / variant_file(name), np.concatenate([source, e], axis=2), fps=fps)


def run_compare(args) -> int:
    import sys

    from PIL import Image

    from ..commands.job import given
    from ..commands.progress import Progress
    from ..embedded import EmbeddedPix2Video
    from ..engine.settings import EditSettings, get_preset
    from ..jobs import InversionSettings
    from ..settings import RuntimeSettings
    from ..video import read_video
    from .clip_scores import ClipScorer

    variants = VARIANTS if not args.variants else tuple(v.strip() for v in args.variants.split(","))
    for v in variants:
        if v not in VARIANTS:
            raise InvalidInput(f"variants: unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    if args.max_frames is not None and args.max_frames < 2:
        raise InvalidInput(f"max_frames: at least 2 frames are needed, got {args.max_frames}")
    if args.grid_frames < 1:
        raise InvalidInput(f"grid_frames: must be at least 1, got {args.grid_frames}")
    out_dir = Path(args.output_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InvalidInput(f"output_dir: {args.output_dir!r} exists and is not a folder")
    preset = get_preset(args.preset)
    given_flags = given(args)
    inv = preset.apply(
        InversionSettings(width=args.width, height=args.height, num_steps=args.steps, source_prompt=args.source_prompt),
        "inversion",
        given_flags,
    )
    base = preset.apply(EditSettings(prompt=args.prompt, num_steps=args.steps), "edit", given_flags)
    frames, info = read_video(args.input, max_frames=args.max_frames, transform=inv.fit)
    if len(frames) < 2:
        raise InvalidInput(f"input: at least 2 frames are needed, got {len(frames)}")
    source = np.stack(frames)
    dtype = preset.dtype if args.dtype == "auto" and preset.dtype else args.dtype
    runtime = RuntimeSettings(
        model=args.model,
        caption_model=args.caption_model,
        device=args.device,
        dtype=dtype,
        store=Path(args.store) if args.store else None,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    bars = Progress(not args.quiet)
    try:
        engine = EmbeddedPix2Video.from_settings(runtime)
        scorer = ClipScorer(args.clip_model, device=args.metrics_device)
        edits, reports = compare_frames(
            engine, source, info.fps, inv, base, variants, scorer, flow_method=args.flow, progress=bars
        )
    finally:
        bars.close()
    meta = {
        "input": Path(args.input).name,
        "prompt": args.prompt,
        "preset": args.preset,
        "model": args.model,
        "clip_model": args.clip_model,
        "frames": len(source),
        "width": args.width,
        "height": args.height,
        "steps": args.steps,
    }
    table = write_tables(out_dir, reports, meta)
    Image.fromarray(grid_image({"input": source, **edits}, args.grid_frames)).save(out_dir / "grid.png")
    write_side_by_side(out_dir, source, edits, info.fps)
    print(table)
    print(f"wrote table.md, table.json, grid.png and {len(edits)} mp4s to {out_dir}", file=sys.stderr)
    return 0
