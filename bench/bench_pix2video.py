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
import collections
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

from full_size import full_size_models  # noqa: E402

from pix2video.engine.depth import DepthEstimator  # noqa: E402
from pix2video.engine.editor import Pix2VideoEditor  # noqa: E402
from pix2video.engine.inversion import Inverter  # noqa: E402
from pix2video.engine.settings import EditSettings  # noqa: E402
from pix2video.models.loading import ModelSet  # noqa: E402

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


def run_sessions(editor, videos, settings):
    """Edits videos concurrently on one editor; returns per-session frame times
    (s since the sessions were asked for: prompt encoding counts)."""
    dev = editor.models.device
    sync(dev)
    start = time.perf_counter()
    sessions = [editor.open_session(v, settings) for v in videos]
    times = {s.id: [] for s in sessions}
    peak_session = 0
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
    return [times[s.id] for s in sessions], peak_session


def steady_seconds_per_frame(times, skip, width):
    """Seconds per frame over whole cycles of the steady state. With W frames in
    flight and fewer than the step count, frames finish in bursts of W, one
    cycle per step count of ticks, so only whole cycles measure throughput."""
    cycles = (len(times) - 1 - skip) // width
    if cycles < 1:
        raise ValueError(f"need at least {skip + width + 1} frames, got {len(times)}")
    return (times[skip + cycles * width] - times[skip]) / (cycles * width)


def bench_edit(editor, hw, steps, frames, width, sessions=1, skip=None):
    settings = EditSettings(prompt="a crochet swan on the lake", num_steps=steps, frames_in_flight=width)
    videos = [RandomVideo(frames, hw, steps, seed=i) for i in range(sessions)]
    per, peak = run_sessions(editor, videos, settings)
    skip = (width + 1) if skip is None else skip
    sec = [steady_seconds_per_frame(t, skip, width) for t in per]
    return dict(
        first_frame_s=float(np.mean([t[0] for t in per])),
        sec_per_frame=float(np.mean(sec)),
        fps_total=float(sum(1 / s for s in sec)),
        fps_min=float(min(1 / s for s in sec)),
        session_gb=peak / 1e9,
    )


def profile_first_frame(editor, hw, steps):
    """Where a warm editor's first frame goes: the GPU time of its stages
    (CUDA events on the stream, as the editor service times them) against
    the wall clock; what is left is the GPU waiting for the host."""
    from pix2video.servers.editor.worker import CudaEventTimer

    gpu = collections.defaultdict(float)
    editor.timer = CudaEventTimer(
        lambda stage, t0, seconds, items: gpu.__setitem__(stage, gpu[stage] + seconds), editor.models.device
    )
    dev = editor.models.device
    sync(dev)
    start = time.perf_counter()
    s = editor.open_session(RandomVideo(1, hw, steps), EditSettings(prompt="a swan", num_steps=steps))
    sync(dev)
    opened = time.perf_counter() - start
    while not s.done:
        editor.tick()
    sync(dev)
    wall = time.perf_counter() - start
    editor.timer.flush(wait=True)
    editor.timer = None
    editor.close_session(s.id)
    rest = wall - opened - gpu["denoise"] - gpu["decode"]
    return (
        f"{wall:.3f} s = open (prompt encoding) {opened * 1000:.1f} ms + {steps} denoising steps "
        f"{gpu['denoise']:.3f} s GPU ({gpu['denoise'] / steps * 1000:.2f} ms each: UNet call, guidance, DDIM move) "
        f"+ VAE decode {gpu['decode'] * 1000:.1f} ms GPU + GPU waiting for the host {rest * 1000:.1f} ms"
    )


def bench_memory_growth(editor, hw, steps, width, short, long):
    """Session memory after `short` and after `long` frames (constant memory)."""
    settings = EditSettings(prompt="a swan", num_steps=steps, frames_in_flight=width)
    s = editor.open_session(RandomVideo(long + width + 1, hw, steps), settings)
    seen = {}
    while s.next_out <= long:
        for _, f in editor.tick():
            if f.index in (short, long):
                seen[f.index] = editor.session_bytes(s.id)
    editor.close_session(s.id)
    return seen[short] / 1e9, seen[long] / 1e9


def bench_inversion(models, size, steps, frames, batch, runner=None, compile=True):
    inv = Inverter(models, batch_size=batch, runner=runner)
    if runner is not None and runner.cuda_graphs:
        inv.warm_up(size, size, compile=compile)
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


def _dummy_call(models, size, hw, seed=0):
    g = torch.Generator(device=models.device).manual_seed(seed)
    m = models
    x = torch.randn(size, 5, hw, hw, device=m.device, dtype=m.dtype, generator=g)
    t = torch.full((size,), 500, device=m.device)
    emb = torch.randn(size, 77, m.unet.config.cross_attention_dim, device=m.device, dtype=m.dtype, generator=g)
    return x, t, emb


def unet_call_ms(editor, size, hw, routing="refs", reps=10):
    """ms per UNet call through ``editor``'s own path, and its output. Routing
    ``refs``: as the wavefront does (each sample attends to two recorded
    frames); ``self-only``: as a lone anchor frame (records, attends to
    itself); ``plain``: no injection installed (as inversion calls it)."""
    from pix2video.engine.attention import SampleRoute

    x, t, emb = _dummy_call(editor.models, size, hw)
    record = [SampleRoute(record=("probe", b)) for b in range(size)]
    refs = [SampleRoute(refs=(("probe", b), ("probe", (b + 1) % size))) for b in range(size)]
    if routing == "plain":
        call = lambda: editor.runner(x, t, emb, variant="plain")  # noqa: E731
    else:
        routes = refs if routing == "refs" else record
        call = lambda: editor._unet(x, t, emb, routes, "decoder")  # noqa: E731
    with torch.no_grad():
        editor._unet(x, t, emb, record, "decoder")
        for _ in range(2):
            out = call()
        sync(editor.models.device)
        start = time.perf_counter()
        for _ in range(reps):
            call()
        sync(editor.models.device)
    for b in range(size):
        editor.context.release(("probe", b))
    return (time.perf_counter() - start) / reps * 1000, out.float()


def probe_calls(models, hw, sizes, compile_sizes, compile_mode="default"):
    """UNet call time, eager vs CUDA graph vs compiled + graph, with the
    largest difference from eager (the graphs must compute the same thing)."""
    from pix2video.engine.unet_runner import UNetRunner

    eager = Pix2VideoEditor(models)
    graphed = Pix2VideoEditor(models, runner=UNetRunner(models.unet, cuda_graphs=True))
    compiled = Pix2VideoEditor(
        models, runner=UNetRunner(models.unet, cuda_graphs=True, compile=True, compile_mode=compile_mode)
    )
    for size in sizes:
        line = f"unet batch {size}:"
        if size in compile_sizes:  # the editor's warm-up compiles both injection variants
            t0 = time.perf_counter()
            compiled.warm_up(hw * 8, hw * 8, sizes=[size])
            line += f" (compile+capture of both variants {time.perf_counter() - t0:.0f} s)"
        for routing in ("refs", "self-only", "plain"):
            e_ms, e_out = unet_call_ms(eager, size, hw, routing)
            g_ms, g_out = unet_call_ms(graphed, size, hw, routing)
            line += (
                f" [{routing}] eager {e_ms:.1f} ms, graph {g_ms:.1f} ms (max diff {(g_out - e_out).abs().max():.2e})"
            )
            if size in compile_sizes and routing != "plain":
                c_ms, c_out = unet_call_ms(compiled, size, hw, routing)
                line += f", compiled+graph {c_ms:.1f} ms (max diff {(c_out - e_out).abs().max():.2e})"
            line += ";"
        print(line, flush=True)


# -- main ---------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny models on the CPU, a few frames (CI)")
    p.add_argument("--out", default=None, help="markdown table to write")
    p.add_argument("--widths", default="16,32", help="wavefront widths to try")
    p.add_argument("--session-width", type=int, default=16, help="W of each of the 4 concurrent sessions")
    p.add_argument("--inversion-batch", type=int, default=32)
    p.add_argument(
        "--no-inversion-compile",
        dest="inversion_compile",
        action="store_false",
        help="inversion on CUDA graphs only, unless its batch is in --compile (a shorter warm-up)",
    )
    p.add_argument("--compile", default="", help="batch sizes (samples) to compile, e.g. 2,64,128 (empty: none)")
    p.add_argument("--compile-mode", default="default", help="inductor mode (default, max-autotune-no-cudagraphs)")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its convolution algorithms")
    p.add_argument("--probe", default="", help="only time UNet calls at these batch sizes (eager/graph/compiled)")
    p.add_argument("--tokenizer", default=None, help="CLIP tokenizer folder (default: the tiny set's)")
    args = p.parse_args(argv)

    from pix2video.engine.unet_runner import DEFAULT_BUCKETS, UNetRunner

    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    cache = Path("/tmp/pix2video-bench")
    compile_sizes = [int(b) for b in args.compile.split(",") if b]
    if args.smoke:
        models = tiny_models(cache / "tiny")
        size, steps, frames_a, widths, w4 = 64, 4, 3, [2, 4], 2
        inv_frames, inv_batch, depth_frames, depth_batch, mem = 8, 4, 8, 4, (3, 12)
    else:
        tok = Path(args.tokenizer) if args.tokenizer else tiny_models(cache / "tiny") and cache / "tiny" / "tokenizer"
        models = full_size_models("cuda", torch.float16, tok)
        size, steps, frames_a = 512, 50, 3
        widths, w4 = [int(w) for w in args.widths.split(",")], args.session_width
        inv_batch = args.inversion_batch
        inv_frames, depth_frames, depth_batch, mem = 4 * inv_batch, 256, 32, (10, 300)
    hw = size // 8
    dev = models.device
    cuda = dev.type == "cuda"
    if args.probe:
        probe_calls(models, hw, [int(b) for b in args.probe.split(",")], compile_sizes, args.compile_mode)
        return 0
    rows = []

    def row(name, **values):
        rows.append((name, values))
        print(name, json.dumps({k: round(v, 4) for k, v in values.items()}), flush=True)

    with torch.no_grad():
        eager = Pix2VideoEditor(models)
        split = Pix2VideoEditor(models, split_guidance=True)
        row("baseline A: sequential, 2 batch-1 calls/step, eager", **bench_edit(split, hw, steps, frames_a, 1, skip=1))
        row("baseline B: sequential, 1 batch-2 call/step, eager", **bench_edit(eager, hw, steps, frames_a, 1, skip=1))
        row(
            f"wavefront W={widths[-1]}, 1 session, eager",
            **bench_edit(eager, hw, steps, 3 * widths[-1] + 2, widths[-1]),
        )
        eager_inv_fps = bench_inversion(models, size, steps, inv_frames, inv_batch)

        # Ours: one warm replica's editor, every bucket captured (and the chosen ones compiled) up front.
        runner = UNetRunner(
            models.unet,
            cuda_graphs=cuda,
            compile=bool(compile_sizes) and cuda,
            buckets=None if args.smoke else DEFAULT_BUCKETS,
            channels_last=args.channels_last,
            compile_mode=args.compile_mode,
        )
        ours = Pix2VideoEditor(models, max_batch_items=4 * w4, runner=runner, feature_slots=64 if args.smoke else 1024)
        if cuda:
            ours.warm_up(size, size, compiled=compile_sizes)
        label = (
            "graphs" + (f", compiled ({args.compile_mode}) at {args.compile}" if compile_sizes else "")
            if cuda
            else "eager"
        )
        for w in widths:  # after the first frame and the window fill, two whole cycles
            row(f"ours ({label}): W={w}, 1 session", **bench_edit(ours, hw, steps, 3 * w + 2, w))
        row(f"ours ({label}): 4 sessions, W={w4} each", **bench_edit(ours, hw, steps, 3 * w4 + 2, w4, sessions=4))
        first = profile_first_frame(ours, hw, steps) if cuda else "(CUDA only)"
        print("first frame:", first, flush=True)
        short, long = mem
        m_short, m_long = bench_memory_growth(ours, hw, 4 if not args.smoke else 2, widths[0], short, long)
        inv_compiled = runner.compile and (args.inversion_compile or inv_batch in compile_sizes)
        inv_fps = bench_inversion(models, size, steps, inv_frames, inv_batch, runner=runner, compile=inv_compiled)
        depth_fps = bench_depth(models, size, depth_frames, depth_batch)
    peak = torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan")
    pools = sum(p.numel() * p.element_size() for p in ours.context.pools.values()) / 1e9
    warm = runner.warm

    gpu = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    lines = [
        f"# Pix2Video benchmark ({'smoke, tiny models' if args.smoke else 'full-size SD2-depth, random weights'})",
        "",
        f"- device: {gpu}; torch {torch.__version__}; {datetime.date.today().isoformat()}",
        f"- {size}x{size}, {steps} DDIM steps, guidance 7.5, anchor+previous injection in the decoder, "
        f"latent update (x0 form) on the first half of the steps, {'fp16' if cuda else 'fp32'}, SDPA"
        + (", channels-last" if args.channels_last else "")
        + (", cuDNN benchmark mode" if args.cudnn_benchmark else ""),
        "- time to first frame: from asking for the session (prompt encoding included) to the decoded frame",
        "",
        "| way of running | s / frame (steady) | frames/s total | slowest session frames/s"
        " | time to first frame (s) | session memory (GB) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in rows:
        lines.append(
            f"| {name} | {v['sec_per_frame']:.3f} | {v['fps_total']:.2f} | {v['fps_min']:.2f} | "
            f"{v['first_frame_s']:.2f} | {v['session_gb']:.2f} |"
        )
    inv_mode = "compiled + graphs" if inv_compiled else "graphs" if cuda else "eager"
    lines += [
        "",
        f"- inversion: {inv_fps:.1f} frames/s ({inv_mode}; "
        f"eager {eager_inv_fps:.1f}); batch {inv_batch}, "
        f"{steps} steps, VAE encode included",
        f"- depth: {depth_fps:.1f} frames/s (batch {depth_batch})",
        f"- first frame of a warm replica (ours), profiled: {first}",
        f"- session memory (4-step schedule, W={widths[0]}): {m_short:.3f} GB after {short} frames, "
        f"{m_long:.3f} GB after {long} frames",
        f"- injected-feature pools, preallocated once per replica ({ours.context.capacity} slots): {pools:.1f} GB",
        f"- peak GPU memory allocated (all runs): {peak:.1f} GB",
        f"- warm-up, once per replica before SERVING: {warm.graphs} CUDA graphs captured, {warm.compiled} compiled, "
        f"{warm.seconds:.0f} s in all"
        + "".join(f"; batch {k}: {v:.0f} s" for k, v in warm.per_bucket_s.items() if v >= 5),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
