"""Pix2Video speed and memory, side by side with two baselines, in one run.

    python bench/bench_pix2video.py            # full size on the GPU (random weights)
    python bench/bench_pix2video.py --smoke    # tiny models on the CPU (CI runs this)

Full size is the SD2-depth architecture (866M-parameter UNet, SD VAE,
OpenCLIP-H text encoder, DPT-hybrid depth) with random weights: no weights can
be downloaded here, and the arithmetic is the same. Paper settings: 512x512,
50 DDIM steps, guidance 7.5, anchor+previous injection in the decoder, latent
update on the first 25 steps.

Rows:
- baseline A (authors' way): frames one after another, the two guidance
  branches as two batch-1 UNet calls, fp16 eager;
- baseline B: frames one after another, guidance as one batch-2 call;
- ours: the wavefront (W frames in flight sharing each UNet call), across
  sessions too.
The table is printed and written (markdown) to --out.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT / "clients"), str(ROOT / "bench")]

from pix2video.engine.depth import DepthEstimator  # noqa: E402
from pix2video.engine.editor import Pix2VideoEditor  # noqa: E402
from pix2video.engine.inversion import Inverter  # noqa: E402
from pix2video.engine.settings import EditSettings  # noqa: E402
from pix2video.models.loading import ModelSet  # noqa: E402

from full_size import full_size_models  # noqa: E402


# -- models -------------------------------------------------------------------

def tiny_models(folder: Path) -> ModelSet:
    from pix2video.models import load_model_set
    from pix2video.models.tiny import build_tiny_model_set

    if not (folder / "model_index.json").exists():
        build_tiny_model_set(folder)
    return load_model_set(str(folder))


class RandomVideo:
    """An inverted video of random x_T and depth (what an edit reads from the store)."""

    def __init__(self, num_frames: int, latent_hw: int, num_steps: int, seed: int = 0):
        self.num_frames, self.num_steps, self.hw, self.seed = num_frames, num_steps, latent_hw, seed

    def _gen(self, i, salt):
        return torch.Generator().manual_seed(self.seed * 1_000_003 + i * 2 + salt)

    def latent(self, i):
        return torch.randn(4, self.hw, self.hw, generator=self._gen(i, 0))

    def depth(self, i):
        return torch.rand(1, self.hw, self.hw, generator=self._gen(i, 1)) * 2 - 1


# -- measurements -------------------------------------------------------------

def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_sessions(models, videos, settings, split_guidance=False, max_batch_items=64):
    """Edits videos concurrently on one editor; returns per-session frame times (s since start)."""
    editor = Pix2VideoEditor(models, max_batch_items=max_batch_items, split_guidance=split_guidance)
    dev = models.device
    sessions = [editor.open_session(v, settings) for v in videos]
    times = {s.id: [] for s in sessions}
    peak_session = 0
    sync(dev)
    start = time.perf_counter()
    while not all(s.done for s in sessions):
        done = editor.tick()
        if done:
            sync(dev)
            now = time.perf_counter() - start
            for sid, _ in done:
                times[sid].append(now)
        live = [s.id for s in sessions if s.id in editor.sessions]
        if live:
            peak_session = max(peak_session, max(editor.session_bytes(i) for i in live))
    for s in sessions:
        editor.close_session(s.id)
    return [times[s.id] for s in sessions], peak_session, editor


def steady_seconds_per_frame(times, skip, width):
    """Seconds per frame over whole cycles of the steady state. With W frames in
    flight and fewer than the step count, frames finish in bursts of W, one
    cycle per step count of ticks, so only whole cycles measure throughput."""
    cycles = (len(times) - 1 - skip) // width
    if cycles < 1:
        raise ValueError(f"need at least {skip + width + 1} frames, got {len(times)}")
    return (times[skip + cycles * width] - times[skip]) / (cycles * width)


def bench_edit(models, hw, steps, frames, width, sessions=1, split=False, max_batch_items=64, skip=None):
    settings = EditSettings(prompt="a crochet swan on the lake", num_steps=steps, frames_in_flight=width)
    videos = [RandomVideo(frames, hw, steps, seed=i) for i in range(sessions)]
    per, peak, _ = run_sessions(models, videos, settings, split, max_batch_items)
    skip = (width + 1) if skip is None else skip
    sec = [steady_seconds_per_frame(t, skip, width) for t in per]
    return dict(
        first_frame_s=float(np.mean([t[0] for t in per])),
        sec_per_frame=float(np.mean(sec)),
        fps_total=float(sum(1 / s for s in sec)),
        fps_min=float(min(1 / s for s in sec)),
        session_gb=peak / 1e9,
    )


def bench_memory_growth(models, hw, steps, width, short, long):
    """Session memory after `short` and after `long` frames (constant memory)."""
    settings = EditSettings(prompt="a swan", num_steps=steps, frames_in_flight=width)
    editor = Pix2VideoEditor(models)
    s = editor.open_session(RandomVideo(long + width + 1, hw, steps), settings)
    seen = {}
    while s.next_out <= long:
        for _, f in editor.tick():
            if f.index in (short, long):
                seen[f.index] = editor.session_bytes(s.id)
    editor.close_session(s.id)
    return seen[short] / 1e9, seen[long] / 1e9


def bench_inversion(models, size, steps, frames, batch):
    inv = Inverter(models, batch_size=batch)
    imgs = np.random.default_rng(0).integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
    depth = torch.rand(frames, 1, size // 8, size // 8) * 2 - 1
    inv(imgs[:batch], depth[:batch], "a lake", num_steps=2)  # warm-up
    sync(models.device)
    t = time.perf_counter()
    inv(imgs, depth, "a lake", num_steps=steps)
    sync(models.device)
    return frames / (time.perf_counter() - t)


def bench_depth(models, size, frames, batch):
    est = DepthEstimator(models, batch_size=batch)
    imgs = np.random.default_rng(1).integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
    est(imgs[:batch])
    sync(models.device)
    t = time.perf_counter()
    est(imgs)
    sync(models.device)
    return frames / (time.perf_counter() - t)


def unet_call_ms(models, batch, hw, inject=False, reps=10):
    from pix2video.engine.attention import InjectionContext, SampleRoute, injection_installed

    m = models
    x = torch.randn(batch, 5, hw, hw, device=m.device, dtype=m.dtype)
    t = torch.full((batch,), 500, device=m.device)
    emb = torch.randn(batch, 77, m.unet.config.cross_attention_dim, device=m.device, dtype=m.dtype)
    ctx = InjectionContext()
    with torch.no_grad(), injection_installed(m.unet, ctx, "all"):
        if inject:
            ctx.routes = [SampleRoute(record=("f", b)) for b in range(batch)]
            m.unet(x, t, encoder_hidden_states=emb)
            ctx.routes = [SampleRoute(refs=(("f", b), ("f", (b + 1) % batch))) for b in range(batch)]
        else:
            ctx.routes = [SampleRoute() for _ in range(batch)]
        for _ in range(2):
            m.unet(x, t, encoder_hidden_states=emb)
        sync(m.device)
        start = time.perf_counter()
        for _ in range(reps):
            m.unet(x, t, encoder_hidden_states=emb)
        sync(m.device)
    return (time.perf_counter() - start) / reps * 1000


# -- main ---------------------------------------------------------------------

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny models on the CPU, a few frames (CI)")
    p.add_argument("--out", default=None, help="markdown table to write")
    p.add_argument("--widths", default="8,16,24", help="wavefront widths to try")
    p.add_argument("--session-width", type=int, default=None, help="W of each of the 4 concurrent sessions")
    p.add_argument("--inversion-batch", type=int, default=16)
    p.add_argument("--tokenizer", default=None, help="CLIP tokenizer folder (default: the tiny set's)")
    args = p.parse_args(argv)

    cache = Path("/tmp/pix2video-bench")
    if args.smoke:
        models = tiny_models(cache / "tiny")
        size, steps, frames_a, widths = 64, 4, 3, [2, 4]
        inv_frames, inv_batch, depth_frames, depth_batch, mem = 8, 4, 8, 4, (3, 12)
    else:
        tok = Path(args.tokenizer) if args.tokenizer else tiny_models(cache / "tiny") and cache / "tiny" / "tokenizer"
        models = full_size_models("cuda", torch.float16, tok)
        size, steps, frames_a = 512, 50, 3
        widths = [int(w) for w in args.widths.split(",")]
        inv_batch = args.inversion_batch
        inv_frames, depth_frames, depth_batch, mem = 4 * inv_batch, 256, 32, (10, 300)
    hw = size // 8
    dev = models.device
    rows = []

    def row(name, **values):
        rows.append((name, values))
        print(name, json.dumps({k: round(v, 4) for k, v in values.items()}), flush=True)

    with torch.no_grad():
        if dev.type == "cuda":
            for b, inj in [(2, False), (2, True), (16, True), (48, True)]:
                print(f"unet batch {b} inject={inj}: {unet_call_ms(models, b, hw, inj):.1f} ms", flush=True)
        row("baseline A: sequential, 2 batch-1 calls/step",
            **bench_edit(models, hw, steps, frames_a, 1, split=True, skip=1))
        row("baseline B: sequential, 1 batch-2 call/step", **bench_edit(models, hw, steps, frames_a, 1, skip=1))
        for w in widths:  # after the first frame and the window fill, two whole cycles
            row(f"ours: wavefront W={w}, 1 session", **bench_edit(models, hw, steps, 3 * w + 2, w))
        w4 = args.session_width or widths[0]
        row(f"ours: 4 sessions, W={w4} each", **bench_edit(models, hw, steps, 3 * w4 + 2, w4, sessions=4, max_batch_items=4 * w4))
        short, long = mem
        m_short, m_long = bench_memory_growth(models, hw, 4 if not args.smoke else 2, widths[0], short, long)
        inv_fps = bench_inversion(models, size, steps, inv_frames, inv_batch)
        depth_fps = bench_depth(models, size, depth_frames, depth_batch)
    peak = torch.cuda.max_memory_allocated() / 1e9 if dev.type == "cuda" else float("nan")

    gpu = torch.cuda.get_device_name() if dev.type == "cuda" else platform.processor() or "cpu"
    lines = [
        f"# Pix2Video benchmark ({'smoke, tiny models' if args.smoke else 'full-size SD2-depth, random weights'})",
        "",
        f"- device: {gpu}; torch {torch.__version__}; {datetime.date.today().isoformat()}",
        f"- {size}x{size}, {steps} DDIM steps, guidance 7.5, anchor+previous injection in the decoder, "
        f"latent update (x0 form) on the first half of the steps, {'fp16' if dev.type == 'cuda' else 'fp32'}, eager, SDPA",
        "",
        "| way of running | s / frame (steady) | frames/s total | slowest session frames/s | time to first frame (s) | session memory (GB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in rows:
        lines.append(
            f"| {name} | {v['sec_per_frame']:.3f} | {v['fps_total']:.2f} | {v['fps_min']:.2f} | "
            f"{v['first_frame_s']:.2f} | {v['session_gb']:.2f} |"
        )
    lines += [
        "",
        f"- inversion: {inv_fps:.1f} frames/s (batch {inv_batch}, {steps} steps, VAE encode included)",
        f"- depth: {depth_fps:.1f} frames/s (batch {depth_batch})",
        f"- session memory (4-step schedule, W={widths[0]}): {m_short:.3f} GB after {short} frames, "
        f"{m_long:.3f} GB after {long} frames",
        f"- peak GPU memory allocated (all runs): {peak:.1f} GB",
        "- warm-up: none needed (eager); no compilation or graph capture in these rows",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
