"""The latent update's strength and the injection modes on the toy world: an ablation.

Issues 15 and 16 each leave one bar missed on the toy world, and both involve
the latent update: the Table 2 ordering (Pix2Video's flow-warped error at most
half that of per-frame depth2img) and "the update lowers Pixel-MSE" in
``pix2video compare``. The update's step is ``2 * delta * (x0 - x0_prev) /
N``; the authors' ``N`` is the latent's own element count, 16,384 for SD2-depth
at 512x512 but 4,096 for the toy set at 128x128 (a VAE of factor 4), so each
element is pulled 4x as hard here. This runs, for every update setting and
injection mode below, both measures on the clips the docs report:

- **Table 2** (``toytrain.evaluate``): the 2 held-out red-ball clips of 8
  frames, float32, "a blue ball ..."; the flow-warped error (true flow) of the
  edit against per-frame depth2img with the same seed every frame and against
  per-frame editing from inversion; the colour-edit bars (ball blue in >= 90%
  of frames, PSNR outside its mask >= 20 dB) on the same frames.
- **compare** (``pix2video compare``'s protocol): ``pix2video sample``'s clip
  as decoded from its mp4 (8 frames, 128x128), float16 on CUDA as the command
  runs, "a blue ball on green grass under a blue sky"; CLIP-Text, CLIP-Image
  (the toy CLIP) and Pixel-MSE (DIS flow of the source), and the README's scene
  edit at the main candidates.

Two stages, since the GPU machine has no OpenCV for the DIS flow:

    python -m pix2video.toytrain.update_ablation edit OUT --device cuda --source SOURCE.npy
    python -m pix2video.toytrain.update_ablation score OUT --source SOURCE.npy

``edit`` writes ``OUT/device.json`` (figures, timings) and ``OUT/frames-*.npz``
(every edit's frames) after each job, so a run cut short keeps what it did;
``score`` adds the compare metrics and writes ``OUT/ablation.json`` and
``OUT/ablation.md``. ``SOURCE.npy`` holds the compare clip's frames
(``prepare-source`` writes it from ``pix2video sample``'s mp4). ``smoke OUT``
runs both stages on the CPU in seconds (2 frames, 2 steps, one clip, 3 rows).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ..engine.settings import SD512_LATENT_NUMEL

COMPARE_PROMPT = "a blue ball on green grass under a blue sky"
SCENE_PROMPT = "a red ball on yellow sand at sunset"
AUTHORS_DELTA = 100.0

# Update settings: name -> EditSettings overrides. "sd512" divides by SD2-depth's
# 512x512 latent (16,384 values); "latent" by the toy latent's own 4,096.
UPDATES = {
    "off": {"latent_update": "off"},
    "sd512 d=6.25": {"update_normalisation": "sd512", "update_strength": 6.25},
    "sd512 d=25": {"update_normalisation": "sd512", "update_strength": 25.0},
    "sd512 d=100": {"update_normalisation": "sd512", "update_strength": 100.0},
    "latent d=100": {"update_normalisation": "latent", "update_strength": 100.0},
    # The second run: around SD's strength, and the paper's eq. (1) (the xt mode) under both normalisations.
    "sd512 d=50": {"update_normalisation": "sd512", "update_strength": 50.0},
    "sd512 d=200": {"update_normalisation": "sd512", "update_strength": 200.0},
    "xt latent d=100": {"latent_update": "xt", "update_normalisation": "latent", "update_strength": 100.0},
    "xt sd512 d=100": {"latent_update": "xt", "update_normalisation": "sd512", "update_strength": 100.0},
}
MODES = ("anchor+previous", "previous", "anchor")
# (update, reference) in the order they run: the strength ladder first, then the
# modes at the candidates, so that a run cut short has the most telling rows.
LADDER = ("off", "sd512 d=6.25", "sd512 d=25", "sd512 d=100", "latent d=100")
JOBS = [(u, "anchor+previous") for u in LADDER] + [
    (u, r) for u in ("sd512 d=100", "sd512 d=25", "off", "latent d=100") for r in ("previous", "anchor")
]
SCENE_UPDATES = ("latent d=100", "sd512 d=100", "sd512 d=25")
# ``--jobs extra``: the second run's rows.
EXTRA_JOBS = [(u, "anchor+previous") for u in ("sd512 d=50", "sd512 d=200", "xt latent d=100", "xt sd512 d=100")]
# ``smoke``: a few rows, enough to take every stage through its code.
SMOKE_JOBS = [("off", "anchor+previous"), ("sd512 d=100", "anchor+previous"), ("latent d=100", "anchor")]
JOB_LISTS = {"main": (JOBS, SCENE_UPDATES), "extra": (EXTRA_JOBS, ()), "smoke": (SMOKE_JOBS, ("sd512 d=100",))}


def relative_strength(update: str, numel: int) -> float:
    """The update's per-element pull relative to the authors' at SD2-depth's 512x512 (delta 100 / 16,384)."""
    from ..engine.settings import EditSettings

    # the divisor the denoiser uses (for xt the same factor scales its gradient of the mean squared error)
    s = EditSettings(prompt=COMPARE_PROMPT, **UPDATES[update])
    if s.latent_update == "off":
        return 0.0
    return (s.update_strength / s.update_divisor(numel)) / (AUTHORS_DELTA / SD512_LATENT_NUMEL)


def row_name(update: str, reference: str) -> str:
    return f"{reference} | {update}"


class _Recorder:
    """The device stage's results, written after every job."""

    def __init__(self, out: Path, meta: dict):
        self.out, self.meta, self.rows = out, meta, {}
        self.frames: dict[str, dict[str, np.ndarray]] = {"eval": {}, "compare": {}}
        self.start = time.perf_counter()

    def add(self, part: str, name: str, frames: np.ndarray, figures: dict) -> None:
        self.frames[part][name] = frames
        self.rows.setdefault(part, {})[name] = figures
        self.write()

    def write(self) -> None:
        self.meta["seconds"] = round(time.perf_counter() - self.start, 1)
        (self.out / "device.json").write_text(json.dumps({"meta": self.meta, "rows": self.rows}, indent=1) + "\n")
        for part, frames in self.frames.items():
            if frames:
                np.savez_compressed(self.out / f"frames-{part}.npz", **frames)


def run_edits(
    out: Path,
    source: np.ndarray,
    device: str,
    weights: str,
    *,
    frames: int = 8,
    steps: int = 50,
    clips: int = 2,
    budget_seconds: float = 1e9,
    compare_dtype: str = "auto",
    jobs: str = "main",
    log=print,
) -> dict:
    """The device stage: every edit and every figure that needs no OpenCV."""
    import torch

    from ..engine.settings import EditSettings
    from ..jobs import InversionSettings
    from ..models import load_model_set
    from ..quality.compare import per_frame_depth2img as compare_depth2img
    from . import evaluate as ev

    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.device(device).type == "cuda"
    rec = _Recorder(
        out,
        {
            "device": torch.cuda.get_device_name() if cuda else "cpu",
            "torch": torch.__version__,
            "frames": frames,
            "steps": steps,
            "clips": clips,
            "complete": False,
        },
    )

    def over_budget() -> bool:
        return time.perf_counter() - rec.start > budget_seconds

    def settings(prompt: str, update: str, reference: str, **extra) -> EditSettings:
        return EditSettings(prompt=prompt, num_steps=steps, seed=0, reference=reference, **{**UPDATES[update], **extra})

    # -- Table 2 on held-out red-ball clips, float32 (toytrain.evaluate's protocol) --
    models = load_model_set(weights, device=device, dtype=torch.float32)
    engine = ev.engine_for(models)
    held = ev.red_ball_clips(clips, frames)
    evals = []
    for k, clip in enumerate(held):
        t0 = time.perf_counter()
        target = ev.colour_target(clip)
        vid = ev.invert(engine, clip, None, steps)
        per_frame = ev._frames(engine.edit(vid, settings(target, "off", "anchor+previous", inject_layers="none")))
        same = ev.per_frame_depth2img(models, clip.frames, target, steps, 0, per_clip=False)
        one = ev.per_frame_depth2img(models, clip.frames, target, steps, 0, per_clip=True)
        for name, f in (
            ("per-frame from inversion", per_frame),
            ("depth2img same seed", same),
            ("depth2img per clip", one),
        ):
            rec.add("eval", f"clip{k} | {name}", f, ev.colour_figures(clip, f))
        rec.meta.setdefault("eval_clips", []).append(
            {"caption": clip.caption, "target": target, "warp_input": ev.warp_error(clip.frames, clip)}
        )
        evals.append((clip, target, vid))
        log(f"eval clip {k}: inversion and baselines {time.perf_counter() - t0:.1f} s")

    # -- compare's clip, in the command's precision --------------------------
    dtype = (torch.float16 if cuda else torch.float32) if compare_dtype == "auto" else getattr(torch, compare_dtype)
    cmodels = models if dtype == torch.float32 else load_model_set(weights, device=device, dtype=dtype)
    cengine = engine if cmodels is models else ev.engine_for(cmodels)
    rec.meta["compare_dtype"] = str(dtype).removeprefix("torch.")
    t0 = time.perf_counter()
    inv = InversionSettings(width=source.shape[2], height=source.shape[1], num_steps=steps)
    cvid = cengine.invert(list(source), inv, fps=8.0).video_id
    d2i = compare_depth2img(cmodels, source, COMPARE_PROMPT, steps, 7.5, 0)
    rec.add("compare", "per-frame depth2img", d2i, {})
    log(f"compare: inversion and per-frame depth2img {time.perf_counter() - t0:.1f} s")

    # the latent's size (4 channels), for the pulls relative to SD2-depth's at 512x512
    numel = 4 * (source.shape[1] // cmodels.vae_scale_factor) * (source.shape[2] // cmodels.vae_scale_factor)
    rec.meta["latent_numel"] = numel

    job_list, scene_updates = JOB_LISTS[jobs]
    rec.meta["jobs"] = jobs
    for update, reference in job_list:
        if over_budget():
            log(f"budget reached: skipping {row_name(update, reference)} and what follows")
            break
        t0 = time.perf_counter()
        for k, (clip, target, vid) in enumerate(evals):
            f = ev._frames(engine.edit(vid, settings(target, update, reference)))
            fig = ev.colour_figures(clip, f)
            rec.add("eval", f"clip{k} | {row_name(update, reference)}", f, fig)
        f = ev._frames(cengine.edit(cvid, settings(COMPARE_PROMPT, update, reference)))
        rec.add("compare", row_name(update, reference), f, {})
        log(f"{row_name(update, reference)}: {time.perf_counter() - t0:.1f} s")
    for update in scene_updates:
        if over_budget():
            break
        f = ev._frames(cengine.edit(cvid, settings(SCENE_PROMPT, update, "anchor+previous")))
        rec.add("compare", f"scene | {update}", f, {})
    else:
        rec.meta["complete"] = True
    rec.write()
    return rec.meta


# -- scoring (where OpenCV is) ---------------------------------------------------


def _mean(xs):
    return float(np.mean(xs)) if xs else float("nan")


def score(out: Path, source: np.ndarray, clip_model: str = "toy", log=print) -> dict:
    """Adds the compare metrics to the device stage's figures; writes ablation.json and ablation.md."""
    from ..quality.clip_scores import ClipScorer
    from ..quality.metrics import evaluate

    dev = json.loads((out / "device.json").read_text())
    meta, rows = dev["meta"], dev["rows"]
    numel = meta["latent_numel"]
    cframes = dict(np.load(out / "frames-compare.npz"))
    scorer = ClipScorer(clip_model, device="cpu")
    compare = {}
    for name, f in cframes.items():
        if name.startswith("scene"):
            continue
        q = evaluate(f, COMPARE_PROMPT, scorer, source=source, flow_method="dis")
        compare[name] = {
            "clip_text": q.clip_text,
            "clip_image": q.clip_image,
            "pixel_mse": q.pixel_mse,
            "occluded": q.occluded_fraction,
            "pixel_mse_per_pair": q.pixel_mse_per_pair,
        }
    ev_rows = rows.get("eval", {})
    nclips = len(meta.get("eval_clips", []))

    def eval_mean(name: str, key: str) -> float:
        return _mean([ev_rows[f"clip{k} | {name}"][key] for k in range(nclips) if f"clip{k} | {name}" in ev_rows])

    base = {b: eval_mean(b, "warp") for b in ("per-frame from inversion", "depth2img same seed", "depth2img per clip")}
    table = {}
    for update, reference in JOBS + EXTRA_JOBS:
        name = row_name(update, reference)
        if name not in compare:
            continue
        warp = eval_mean(name, "warp")
        table[name] = {
            "update": update,
            "reference": reference,
            "strength_vs_sd512": relative_strength(update, numel),
            "warp": warp,
            "ratio_depth2img_same_seed": warp / base["depth2img same seed"],
            "ratio_per_frame_inversion": warp / base["per-frame from inversion"],
            "ratio_depth2img_per_clip": warp / base["depth2img per clip"],
            "blue_fraction": eval_mean(name, "blue_fraction"),
            "outside_psnr": eval_mean(name, "outside_psnr"),
            **{f"compare_{k}": v for k, v in compare[name].items() if k != "pixel_mse_per_pair"},
        }
    result = {
        "meta": meta,
        "baselines_warp": base,
        "compare_per_frame_depth2img": compare.get("per-frame depth2img"),
        "rows": table,
        "compare": compare,
        "eval_rows": ev_rows,
    }
    (out / "ablation.json").write_text(json.dumps(result, indent=1) + "\n")
    md = markdown(result)
    (out / "ablation.md").write_text(md)
    log(md)
    return result


def markdown(result: dict) -> str:
    meta, base, rows = result["meta"], result["baselines_warp"], result["rows"]
    d2i = result.get("compare_per_frame_depth2img") or {}
    lines = [
        f"Device: {meta['device']} (torch {meta['torch']}); {meta['steps']} steps; Table 2 and colour bars on "
        f"{meta.get('clips')} held-out red-ball clips x {meta['frames']} frames (float32); compare on the sample clip "
        f"({meta.get('compare_dtype')}); latent {meta['latent_numel']} values (SD2-depth at 512x512: "
        f"{SD512_LATENT_NUMEL}); device stage {meta['seconds']} s{'' if meta.get('complete') else ', cut short'}.",
        "",
        f"Baselines, flow-warped error (0..255): per-frame depth2img same seed {base['depth2img same seed']:.3f}, "
        f"per clip {base['depth2img per clip']:.3f}, per-frame editing from inversion "
        f"{base['per-frame from inversion']:.3f}; compare per-frame depth2img: CLIP-Text "
        f"{d2i.get('clip_text', float('nan')):.4f}, CLIP-Image {d2i.get('clip_image', float('nan')):.4f}, "
        f"Pixel-MSE {d2i.get('pixel_mse', float('nan')):.2f}.",
        "",
        "| injection | update | pull vs SD 512 | warp error | Table 2 ratio (depth2img same seed; bar <= 0.5) "
        "| ratio (per-frame from inversion; bar <= 0.5) | ball blue (bar >= 90%) | outside PSNR (bar >= 20 dB) "
        "| compare CLIP-Text | compare CLIP-Image | compare Pixel-MSE |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows.values():
        lines.append(
            f"| {r['reference']} | {r['update']} | {r['strength_vs_sd512']:g}x | {r['warp']:.3f} "
            f"| {r['ratio_depth2img_same_seed']:.2f} | {r['ratio_per_frame_inversion']:.2f} "
            f"| {100 * r['blue_fraction']:.1f}% | {r['outside_psnr']:.2f} dB | {r['compare_clip_text']:.4f} "
            f"| {r['compare_clip_image']:.4f} | {r['compare_pixel_mse']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def write_docs(run: Path, source: np.ndarray, update: str, docs: Path, log=print) -> dict:
    """The docs' compare folder and strips from one update setting's frames of a run.

    ``docs/quality-toy/`` (``pix2video compare``'s table, grid and mp4s, written by its own writers), the README
    command's strips (``toy-readme-colour-edit.png``, ``toy-readme-scene-edit.png``, ``toy-demo-h200.png``: input,
    colour edit, scene edit) and the held-out colour edit's strip (``toy-eval-colour-edit.png``: input, Pix2Video,
    per-frame editing from inversion, per-frame depth2img with the same seed)."""
    from PIL import Image

    from ..quality.clip_scores import ClipScorer
    from ..quality.compare import grid_image, write_side_by_side, write_tables
    from ..quality.metrics import evaluate
    from . import evaluate as ev

    meta = json.loads((run / "device.json").read_text())["meta"]
    cf, ef = dict(np.load(run / "frames-compare.npz")), dict(np.load(run / "frames-eval.npz"))
    variants = {
        "per-frame depth2img": cf["per-frame depth2img"],
        "no latent update": cf[row_name("off", "anchor+previous")],
        "anchor only": cf[row_name(update, "anchor")],
        "previous only": cf[row_name(update, "previous")],
        "anchor+previous": cf[row_name(update, "anchor+previous")],
    }
    scorer = ClipScorer("toy", device="cpu")
    reports = {k: evaluate(v, COMPARE_PROMPT, scorer, source=source, flow_method="dis") for k, v in variants.items()}
    out = docs / "quality-toy"
    out.mkdir(parents=True, exist_ok=True)
    table_meta = {
        "input": "sample.mp4",
        "prompt": COMPARE_PROMPT,
        "preset": "default",
        "model": "toy",
        "clip_model": "toy",
        "frames": len(source),
        "width": source.shape[2],
        "height": source.shape[1],
        "steps": meta["steps"],
        "device": f"{meta['device']} (edits, {meta['compare_dtype']}); metrics on CPU",
        "update": f"{update} ({UPDATES[update]})",
    }
    table = write_tables(out, reports, table_meta)
    Image.fromarray(grid_image({"input": source, **variants}, len(source))).save(out / "grid.png")
    write_side_by_side(out, source, variants, 8.0)
    colour, scene = variants["anchor+previous"], cf[f"scene | {update}"]
    strips = {
        "toy-readme-colour-edit.png": [source, colour],
        "toy-readme-scene-edit.png": [source, scene],
        "toy-demo-h200.png": [source, colour, scene],
    }
    clip = ev.red_ball_clips(1, meta["frames"])[0]
    strips["toy-eval-colour-edit.png"] = [
        clip.frames,
        ef[f"clip0 | {row_name(update, 'anchor+previous')}"],
        ef["clip0 | per-frame from inversion"],
        ef["clip0 | depth2img same seed"],
    ]
    for name, rows in strips.items():
        Image.fromarray(ev.strip(rows)).save(docs / name)

    def rgb(frames, rows):
        return [round(float(v)) for v in frames[:, rows].reshape(-1, 3).mean(0)]

    colours = {
        "scene_top30": rgb(scene, slice(0, 30)),
        "scene_bottom30": rgb(scene, slice(-30, None)),
        "input_top30": rgb(source, slice(0, 30)),
        "input_bottom30": rgb(source, slice(-30, None)),
    }
    log(table)
    log(json.dumps(colours))
    return {"reports": reports, "colours": colours}


def prepare_source(mp4: str, out: str, width: int = 128, height: int = 128, steps: int = 50) -> np.ndarray:
    """The compare clip's frames as ``pix2video compare`` reads them (``read_video`` with the inversion's fit)."""
    from ..jobs import InversionSettings
    from ..video import read_video

    inv = InversionSettings(width=width, height=height, num_steps=steps)
    frames, _ = read_video(mp4, transform=inv.fit)
    source = np.stack(frames)
    np.save(out, source)
    return source


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m pix2video.toytrain.update_ablation", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="stage", required=True)
    e = sub.add_parser("edit", help="every edit (the GPU stage)")
    e.add_argument("out")
    e.add_argument("--source", required=True, help="the compare clip's frames (.npy, from prepare-source)")
    e.add_argument("--device", default="cuda")
    e.add_argument("--weights", default="toy", help="the toy model set (default: the shipped one)")
    e.add_argument("--budget-seconds", type=float, default=1e9, help="start no job after this many seconds")
    e.add_argument("--jobs", choices=sorted(JOB_LISTS), default="main", help="which rows (default: main)")
    s = sub.add_parser("score", help="the compare metrics and the tables (needs OpenCV)")
    s.add_argument("out")
    s.add_argument("--source", required=True)
    ps = sub.add_parser("prepare-source", help="write the compare clip's frames from pix2video sample's mp4")
    ps.add_argument("mp4")
    ps.add_argument("npy")
    dc = sub.add_parser("docs", help="docs/quality-toy and the toy strips from one update setting of a run")
    dc.add_argument("run")
    dc.add_argument("--source", required=True)
    dc.add_argument("--update", default="sd512 d=100", choices=sorted(UPDATES))
    dc.add_argument("--docs", default="docs")
    sm = sub.add_parser("smoke", help="both stages on the CPU, 2 frames, 2 steps, one clip, 3 rows (seconds)")
    sm.add_argument("out")
    args = p.parse_args(argv)
    if args.stage == "prepare-source":
        prepare_source(args.mp4, args.npy)
    elif args.stage == "edit":
        run_edits(
            Path(args.out),
            np.load(args.source),
            args.device,
            args.weights,
            budget_seconds=args.budget_seconds,
            jobs=args.jobs,
            log=lambda m: print(m, flush=True),
        )
    elif args.stage == "score":
        score(Path(args.out), np.load(args.source))
    elif args.stage == "docs":
        write_docs(Path(args.run), np.load(args.source), args.update, Path(args.docs))
    else:
        from ..toyworld import demo_frames

        source = np.stack(list(demo_frames(2, 128, 128)))
        out = Path(args.out)
        run_edits(out, source, "cpu", "toy", frames=2, steps=2, clips=1, jobs="smoke")
        score(out, source)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
