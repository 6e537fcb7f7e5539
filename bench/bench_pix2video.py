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

The ceiling: every row also prints the TFLOP/s it achieved and its fraction
of the peak that a matmul probe measured on the same GPU in the same run
(:func:`peak_probe`). A row's FLOPs are the UNet samples it actually ran, by
kind of call (with references, self-only, plain; counted by a proxy around
its runner, padding samples excluded), times each kind's FLOPs per sample as
torch's FlopCounterMode counts an eager call of that kind, plus the VAE's
(and the text encoder's) counted the same way.
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
from random_video import RandomVideo  # noqa: E402

from pix2video.engine.depth import DepthEstimator  # noqa: E402
from pix2video.engine.editor import Pix2VideoEditor  # noqa: E402
from pix2video.engine.inversion import Inverter  # noqa: E402
from pix2video.engine.settings import EditSettings  # noqa: E402
from pix2video.engine.unet_runner import UNetRunner  # noqa: E402
from pix2video.models.loading import ModelSet  # noqa: E402

# -- models -------------------------------------------------------------------


def tiny_models(folder: Path) -> ModelSet:
    from pix2video.models import load_model_set
    from pix2video.models.tiny import build_tiny_model_set

    if not (folder / "model_index.json").exists():
        build_tiny_model_set(folder)
    return load_model_set(str(folder))


# -- measurements -------------------------------------------------------------


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def gpu_ms(fn, reps=20, warm=3):
    """Median milliseconds of ``fn()`` timed with CUDA events (host clock on the CPU)."""
    for _ in range(warm):
        fn()
    times = []
    for _ in range(reps):
        if torch.cuda.is_available():
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1000)
    return float(np.median(times))


def peak_probe(device, n=8192):
    """Dense matmul TFLOP/s on this GPU now: fp16 (torch.mm) and e4m3
    (torch._scaled_mm, fp16 out), random data, n x n x n."""
    g = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, device=device, dtype=torch.float16, generator=g)
    b = torch.randn(n, n, device=device, dtype=torch.float16, generator=g)
    flops = 2 * n**3
    out = {"fp16": flops / gpu_ms(lambda: a @ b) / 1e9}
    try:
        a8, b8 = a.to(torch.float8_e4m3fn), b.to(torch.float8_e4m3fn).t().contiguous().t()
        one = torch.ones((), device=device)
        fp8 = lambda: torch._scaled_mm(a8, b8, scale_a=one, scale_b=one, out_dtype=torch.float16)  # noqa: E731
        out["fp8"] = flops / gpu_ms(fp8) / 1e9
    except (RuntimeError, NotImplementedError):
        out["fp8"] = float("nan")
    return out


def count_flops(fn) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def call_kind(variant) -> str:
    """Which FLOPs a UNet call has: ``plain`` (no injection), ``self-only``, ``refs``."""
    if variant == "plain" or (isinstance(variant, tuple) and variant[0] == "none"):
        return "plain"
    return "self-only" if isinstance(variant, tuple) and variant[2] else "refs"


class Tally:
    """A runner's proxy that counts the samples of its calls by kind (not the
    padding: the runner pads after this)."""

    def __init__(self, runner):
        self.runner = runner
        self.samples = collections.Counter()

    def __getattr__(self, name):
        return getattr(self.runner, name)

    def __call__(self, x, t, emb, variant=None):
        self.samples[call_kind(variant)] += x.shape[0]
        return self.runner(x, t, emb, variant=variant)


class Flops:
    """FLOPs per unit of work, counted once each by FlopCounterMode on eager calls."""

    def __init__(self, models, hw, size):
        m = models
        probe = Pix2VideoEditor(models)
        self.per_sample = {k: unet_flops(probe, hw, k) / 2 for k in ("refs", "self-only", "plain")}
        z = torch.randn(1, 4, hw, hw, device=m.device, dtype=m.dtype)
        self.decode = count_flops(lambda: m.vae.decode(z))
        img = torch.randn(1, 3, size, size, device=m.device, dtype=m.dtype)
        self.encode = count_flops(lambda: m.vae.encode(img))
        ids = torch.zeros(1, m.tokenizer.model_max_length, dtype=torch.long, device=m.device)
        self.prompt = count_flops(lambda: m.text_encoder(ids))
        frame = np.random.default_rng(0).integers(0, 255, (1, size, size, 3), dtype=np.uint8)
        self.depth = count_flops(lambda: DepthEstimator(models, batch_size=1)(frame))

    def unet(self, samples: collections.Counter) -> float:
        return sum(self.per_sample[k] * n for k, n in samples.items())

    def summary(self) -> str:
        s = self.per_sample
        return (
            f"UNet per sample-forward {s['plain'] / 1e9:.0f} GFLOP plain, {s['self-only'] / 1e9:.0f} self-only, "
            f"{s['refs'] / 1e9:.0f} with anchor+previous; VAE decode {self.decode / 1e9:.0f} GFLOP, encode "
            f"{self.encode / 1e9:.0f} GFLOP a frame; prompt {self.prompt / 1e9:.1f} GFLOP; "
            f"depth {self.depth / 1e9:.0f} GFLOP a frame"
        )


def unet_flops(editor, hw, routing) -> float:
    """FLOPs of one batch-2 UNet call of kind ``routing`` through ``editor``'s path (eager)."""
    box = {}
    unet_call_ms(editor, 2, hw, routing, reps=0, flops=box)
    return box["flops"]


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


def bench_edit(editor, hw, steps, frames, width, sessions=1, skip=None, flops=None, prompt="a crochet swan"):
    settings = EditSettings(prompt=prompt, num_steps=steps, frames_in_flight=width)
    videos = [RandomVideo(frames, hw, steps, seed=i) for i in range(sessions)]
    before = collections.Counter(editor.runner.samples) if isinstance(editor.runner, Tally) else None
    per, peak = run_sessions(editor, videos, settings)
    skip = (width + 1) if skip is None else skip
    sec = [steady_seconds_per_frame(t, skip, width) for t in per]
    fps_total = float(sum(1 / s for s in sec))
    out = dict(
        first_frame_s=float(np.mean([t[0] for t in per])),
        sec_per_frame=float(np.mean(sec)),
        fps_total=fps_total,
        fps_min=float(min(1 / s for s in sec)),
        session_gb=peak / 1e9,
    )
    if flops is not None and before is not None:
        done = collections.Counter(editor.runner.samples)
        done.subtract(before)
        total = flops.unet(done) + flops.decode * frames * sessions + flops.prompt * 2 * sessions
        out["tflop_per_frame"] = total / (frames * sessions) / 1e12
        out["tflops"] = out["tflop_per_frame"] * fps_total
    return out


def profile_first_frame(editor, hw, steps):
    """Where a warm editor's first frame goes: the GPU time of its stages
    (CUDA events on the stream, as the editor service times them) against
    the wall clock; what is left is the GPU waiting for the host."""
    from pix2video.engine.timers import CudaEventTimer

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


def bench_long_video(editor, hw, steps, width, checkpoints, window):
    """One long edit: the session's memory (its kept features, x0 and flight)
    and the GPU memory allocated after each checkpoint's frame count, and the
    throughput of each ``window`` frames (steady state: no decay)."""
    dev = editor.models.device
    settings = EditSettings(prompt="a swan", num_steps=steps, frames_in_flight=width)
    last = max(checkpoints)
    s = editor.open_session(RandomVideo(last + width + 1, hw, steps), settings)
    memory, windows = {}, []
    sync(dev)
    t0 = time.perf_counter()
    while s.next_out <= last:
        for _, f in editor.tick():
            if f.index in checkpoints:
                alloc = torch.cuda.memory_allocated(dev) if dev.type == "cuda" else 0
                memory[f.index] = (editor.session_bytes(s.id) / 1e9, alloc / 1e9)
            if f.index and f.index % window == 0:
                sync(dev)
                now = time.perf_counter()
                windows.append(window / (now - t0))
                t0 = now
    editor.close_session(s.id)
    return memory, windows


def bench_inversion(models, size, steps, frames, batch, runner=None, compile=True, overlap=True, flops=None):
    """Inversion frames/s (VAE encode included) and, with ``flops``, TFLOP/s."""
    tally = Tally(runner or UNetRunner(models.unet))
    inv = Inverter(models, batch_size=batch, runner=tally, overlap=overlap)
    if tally.cuda_graphs:
        inv.warm_up(size, size, compile=compile)
    imgs = np.random.default_rng(0).integers(0, 255, (frames, size, size, 3), dtype=np.uint8)
    depth = torch.rand(frames, 1, size // 8, size // 8) * 2 - 1
    inv(imgs[:batch], depth[:batch], "a lake", num_steps=2)  # warm-up
    sync(models.device)
    tally.samples.clear()
    t = time.perf_counter()
    inv(imgs, depth, "a lake", num_steps=steps)
    sync(models.device)
    fps = frames / (time.perf_counter() - t)
    out = {"fps": fps}
    if flops is not None:
        per_frame = (flops.unet(tally.samples) + flops.encode * frames) / frames
        out["tflops"] = per_frame * fps / 1e12
    return out


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


def unet_call_ms(editor, size, hw, routing="refs", reps=10, flops=None):
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
        if flops is not None:
            flops["flops"] = count_flops(call)
        for _ in range(2):
            out = call()
        sync(editor.models.device)
        start = time.perf_counter()
        for _ in range(reps):
            call()
        sync(editor.models.device)
    for b in range(size):
        editor.context.release(("probe", b))
    return (time.perf_counter() - start) / max(reps, 1) * 1000, out.float()


def probe_calls(models, hw, sizes, compile_sizes, compile_mode="default", precisions=("fp16",)):
    """UNet call time, eager vs CUDA graph vs compiled + graph, per precision,
    with the largest difference from the fp16 eager call (graphs must compute
    the same thing) and fp8's relative error."""
    eager = Pix2VideoEditor(models)
    for precision in precisions:
        graphed = Pix2VideoEditor(models, runner=UNetRunner(models.unet, cuda_graphs=True, precision=precision))
        compiled = Pix2VideoEditor(
            models,
            runner=UNetRunner(
                models.unet, cuda_graphs=True, compile=True, compile_mode=compile_mode, precision=precision
            ),
        )
        for size in sizes:
            line = f"unet {precision} batch {size}:"
            if size in compile_sizes:  # the editor's warm-up compiles both injection variants
                t0 = time.perf_counter()
                compiled.warm_up(hw * 8, hw * 8, sizes=[size])
                line += f" (compile+capture of both variants {time.perf_counter() - t0:.0f} s)"
            for routing in ("refs", "self-only", "plain"):
                e_ms, e_out = unet_call_ms(eager, size, hw, routing)
                g_ms, g_out = unet_call_ms(graphed, size, hw, routing)
                line += (
                    f" [{routing}] eager fp16 {e_ms:.1f} ms, graph {g_ms:.1f} ms "
                    f"(max diff {(g_out - e_out).abs().max():.2e}, rel {rel_err(g_out, e_out):.2e})"
                )
                if size in compile_sizes and routing != "plain":
                    c_ms, c_out = unet_call_ms(compiled, size, hw, routing)
                    line += f", compiled+graph {c_ms:.1f} ms (rel {rel_err(c_out, e_out):.2e})"
                line += ";"
            print(line, flush=True)


def rel_err(out, ref) -> float:
    return float((out.double() - ref.double()).norm() / ref.double().norm())


def fp8_drift(models, hw, sizes=(2, 64), seeds=3):
    """The fp8 UNet output's relative error against fp16 on the same inputs
    (eager, plain calls, fresh random inputs per seed, mid-schedule t), per
    (scale granularity, batch)."""
    if models.device.type != "cuda":
        sizes = (2,)
    fp16 = UNetRunner(models.unet)
    out = {}
    with torch.no_grad():
        for granularity in ("row", "tensor"):
            fp8 = UNetRunner(models.unet, precision="fp8", fp8_granularity=granularity)
            for size in sizes:
                errs = []
                for seed in range(seeds):
                    x, t, emb = _dummy_call(models, size, hw, seed)
                    errs.append(rel_err(fp8(x, t, emb), fp16(x, t, emb)))
                out[(granularity, size)] = max(errs)
    return out


def first_frame_parts(models, hw):
    """GPU ms of the first frame's fixed parts, each way: prompt encoding of
    (prompt, negative) eager at batch 2, through the batch-1 CUDA graph, and
    from the prompt cache; the VAE decode of one latent, eager and graphed."""
    from pix2video.engine.text import PromptEncoder
    from pix2video.engine.vae import decode_latents

    eager = PromptEncoder(models, cache_size=0, cuda_graph=False)
    graph = PromptEncoder(models, cache_size=0, cuda_graph=True)
    cached = PromptEncoder(models)
    prompts = ["a crochet swan on the lake", ""]
    e, g = eager(prompts), graph(prompts)
    z = torch.randn(1, 4, hw, hw, device=models.device, dtype=models.dtype)
    de, dg = decode_latents(models, z, cuda_graph=False), decode_latents(models, z, cuda_graph=True)
    return {
        "prompt_eager_ms": gpu_ms(lambda: eager(prompts)),
        "prompt_graph_ms": gpu_ms(lambda: graph(prompts)),
        "prompt_cached_ms": gpu_ms(lambda: cached(prompts)),
        "prompt_graph_rel": rel_err(g, e),
        "decode_eager_ms": gpu_ms(lambda: decode_latents(models, z, cuda_graph=False), reps=10),
        "decode_graph_ms": gpu_ms(lambda: decode_latents(models, z, cuda_graph=True), reps=10),
        "decode_graph_max_diff": int(np.abs(de.astype(int) - dg.astype(int)).max()),
    }


# -- main ---------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny models on the CPU, a few frames (CI)")
    p.add_argument("--out", default=None, help="markdown table to write")
    p.add_argument("--widths", default="16,32", help="wavefront widths to try")
    p.add_argument("--session-width", type=int, default=16, help="W of each of the 4 concurrent sessions")
    p.add_argument("--session8-width", type=int, default=4, help="W of each of the 8 concurrent sessions")
    p.add_argument("--no-baselines", dest="baselines", action="store_false", help="skip baselines A, B and eager W")
    p.add_argument("--inversion-batches", default="32", help="inversion batch sizes to try (graphed); best is kept")
    p.add_argument(
        "--no-inversion-compile",
        dest="inversion_compile",
        action="store_false",
        help="inversion on CUDA graphs only (a shorter warm-up)",
    )
    p.add_argument("--compile", default="", help="batch sizes (samples) to compile, e.g. 2,64,128 (empty: none)")
    p.add_argument(
        "--compile-variants",
        default="both",
        help="editor variants compiled per batch: both, or 'lean' (self-only at batch 2, refs at the others)",
    )
    p.add_argument("--compile-mode", default="default", help="inductor mode (default, max-autotune-no-cudagraphs)")
    p.add_argument("--precision", default="fp16", help="ours' UNet linear layers: fp16 or fp8")
    p.add_argument(
        "--inversion-compile-batch", type=int, default=0, help="batch of the compiled inversion (0: best graphed)"
    )
    p.add_argument("--resume", default="", help="resume catch-up: start frames k to time (default 8,32)")
    p.add_argument("--toy-psnr", action="store_true", help="fp8 vs fp16 PSNR of edits on the toy model set")
    p.add_argument("--experiments", action="store_true", help="then bench/experiments.py (fp8 compiled, batch 2)")
    p.add_argument("--budget-s", type=float, default=560, help="experiments stop starting new parts after this")
    p.add_argument("--long", default="", help="long edit: frame counts to read memory at, e.g. 10,1000,3000")
    p.add_argument("--long-steps", type=int, default=2, help="denoising steps of the long edit")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN time its convolution algorithms")
    p.add_argument("--probe", default="", help="only time UNet calls at these batch sizes (eager/graph/compiled)")
    p.add_argument("--probe-precisions", default="fp16,fp8", help="precisions the probe times")
    p.add_argument("--tokenizer", default=None, help="CLIP tokenizer folder (default: the tiny set's)")
    args = p.parse_args(argv)

    from pix2video.engine.fp8 import check_precision
    from pix2video.engine.unet_runner import DEFAULT_BUCKETS

    check_precision(args.precision, "--precision")
    torch.backends.cudnn.benchmark = args.cudnn_benchmark
    cache = Path("/tmp/pix2video-bench")
    compile_sizes = [int(b) for b in args.compile.split(",") if b]
    long_at = [int(n) for n in args.long.split(",") if n]
    if args.smoke:
        models = tiny_models(cache / "tiny")
        size, steps, frames_a, widths, w4, w8 = 64, 2, 3, [2, 4], 2, 1
        inv_batches, depth_frames, depth_batch = [4], 8, 4
        long_at = long_at or [3, 8]
    else:
        tok = Path(args.tokenizer) if args.tokenizer else tiny_models(cache / "tiny") and cache / "tiny" / "tokenizer"
        models = full_size_models("cuda", torch.float16, tok)
        size, steps, frames_a = 512, 50, 3
        widths, w4, w8 = [int(w) for w in args.widths.split(",")], args.session_width, args.session8_width
        inv_batches = [int(b) for b in args.inversion_batches.split(",") if b]
        depth_frames, depth_batch = 256, 32
        long_at = long_at or [10, 300]
    hw = size // 8
    dev = models.device
    cuda = dev.type == "cuda"
    t_start = time.perf_counter()

    def stamp(what):
        print(f"[{time.perf_counter() - t_start:.0f} s] {what}", flush=True)

    probe_n = 8192 if cuda else 256
    peak = peak_probe(dev, probe_n)
    stamp(f"matmul peak: fp16 {peak['fp16']:.0f} TFLOP/s, fp8 {peak['fp8']:.0f} TFLOP/s")
    flops = Flops(models, hw, size)
    stamp(flops.summary())
    if args.probe:
        probe_calls(
            models,
            hw,
            [int(b) for b in args.probe.split(",")],
            compile_sizes,
            args.compile_mode,
            [check_precision(x, "--probe-precisions") for x in args.probe_precisions.split(",")],
        )
        stamp("probe done")
        return 0
    rows = []

    def row(name, **values):
        rows.append((name, values))
        print(name, json.dumps({k: round(v, 4) for k, v in values.items()}), flush=True)

    with torch.no_grad():
        drift = guarded("fp8 drift", lambda: fp8_drift(models, hw)) or {}
        stamp(f"fp8 drift (UNet output relative error vs fp16, row-wise / per-tensor scales): {drift}")
        parts = first_frame_parts(models, hw) if cuda else {}
        stamp(f"first-frame parts: {parts}")
        if args.baselines or args.smoke:
            eager = Pix2VideoEditor(models, runner=Tally(UNetRunner(models.unet)))
            split = Pix2VideoEditor(models, split_guidance=True, runner=Tally(UNetRunner(models.unet)))
            row(
                "baseline A: sequential, 2 batch-1 calls/step, eager",
                **bench_edit(split, hw, steps, frames_a, 1, skip=1, flops=flops),
            )
            row(
                "baseline B: sequential, 1 batch-2 call/step, eager",
                **bench_edit(eager, hw, steps, frames_a, 1, skip=1, flops=flops),
            )
            row(
                f"wavefront W={widths[-1]}, 1 session, eager",
                **bench_edit(eager, hw, steps, 3 * widths[-1] + 2, widths[-1], flops=flops),
            )
            stamp("baselines done")

        # Ours: one warm replica's editor, every bucket captured (and the chosen ones compiled) up front.
        runner = UNetRunner(
            models.unet,
            cuda_graphs=cuda,
            compile=bool(compile_sizes) and cuda,
            buckets=None if args.smoke else DEFAULT_BUCKETS,
            channels_last=args.channels_last,
            compile_mode=args.compile_mode,
            precision=args.precision,
        )
        items = max(4 * w4, 8 * w8, max(widths))
        # Slots for every session of the 8-session row (about 100 + 4 per frame
        # in flight each): if the pools grow, every captured graph is dropped
        # and the rest of the run is uncompiled (run of 2026-12-01, 1024 slots).
        ours = Pix2VideoEditor(
            models, max_batch_items=items, runner=Tally(runner), feature_slots=64 if args.smoke else 2048
        )
        if cuda:
            if args.compile_variants == "lean" and compile_sizes:
                warm_lean(ours, size, compile_sizes)
            ours.warm_up(size, size, compiled=compile_sizes if args.compile_variants != "lean" else [])
        stamp(f"ours warmed: {runner.warm}")
        label = (
            "graphs"
            + (f", compiled ({args.compile_mode}) at {args.compile}" if compile_sizes else "")
            + f", {args.precision}"
            if cuda
            else f"eager, {args.precision}"
            if args.precision != "fp16"
            else "eager"
        )
        for w in widths:  # after the first frame and the window fill, two whole cycles
            row(f"ours ({label}): W={w}, 1 session", **bench_edit(ours, hw, steps, 3 * w + 2, w, flops=flops))
        row(
            f"ours ({label}): 4 sessions, W={w4} each",
            **bench_edit(ours, hw, steps, 3 * w4 + 2, w4, sessions=4, flops=flops),
        )
        row(
            f"ours ({label}): 8 sessions, W={w8} each",
            **bench_edit(ours, hw, steps, 4 if args.smoke else 3 * w8 + 2, w8, sessions=8, flops=flops),
        )
        grew = ours.context.generation != 0
        stamp(f"ours done (feature pools grew during the rows: {grew})")
        first = profile_first_frame(ours, hw, steps) if cuda else "(CUDA only)"
        print("first frame:", first, flush=True)
        resume_ks = [int(k) for k in args.resume.split(",") if k] or ([1, 2] if args.smoke else [8, 32])
        resume = guarded("resume", lambda: bench_resume(ours, hw, steps, widths[-1], [0, *resume_ks])) or {0: 0.0}
        stamp(f"resume catch-up (s to the first frame sent, by start_frame): {resume}")
        toy = None
        if args.toy_psnr:
            from toy_fp8 import toy_fp8_psnr

            toy = guarded(
                "toy PSNR",
                lambda: toy_fp8_psnr("cuda" if cuda else "cpu", *((1, 2, 1) if args.smoke else (8, steps, 8))),
            )
            stamp(f"fp8 vs fp16 on the toy model set, PSNR of edited frames: {toy}")
        inv = {}
        for b in inv_batches:
            inv[b] = bench_inversion(models, size, steps, 2 * b, b, runner=runner, compile=False, flops=flops)
            stamp(f"inversion batch {b} (graphs, overlap): {inv[b]}")
        inv_lines = []
        if inv:
            best = max(inv, key=lambda b: inv[b]["fps"])
            inv_lines.append(
                f"- inversion ({'graphs' if cuda else 'eager'}, {args.precision}, VAE encode of the next batch "
                f"overlapped, {steps} steps, VAE encode included): "
                + ", ".join(
                    f"batch {b}: {v['fps']:.1f} frames/s {v['tflops']:.0f} TFLOP/s" for b, v in sorted(inv.items())
                )
            )
        best = args.inversion_compile_batch or (max(inv, key=lambda b: inv[b]["fps"]) if inv else inv_batches[0])
        crunner = None
        if cuda and args.inversion_compile:
            crunner = UNetRunner(
                models.unet,
                cuda_graphs=True,
                compile=True,
                buckets=DEFAULT_BUCKETS,
                compile_mode=args.compile_mode,
                precision=args.precision,
            )
            t0 = time.perf_counter()
            inv_c = bench_inversion(models, size, steps, 2 * best, best, runner=crunner, flops=flops)
            inv_c["warm_s"] = time.perf_counter() - t0
            stamp(f"inversion compiled at batch {best}: {inv_c}")
            inv_in_line = bench_inversion(
                models, size, steps, 2 * best, best, runner=crunner, compile=False, overlap=False, flops=flops
            )
            stamp(f"inversion compiled at batch {best}, encode in line: {inv_in_line}")
            inv_lines.append(
                f"- inversion compiled ({args.compile_mode}) + graphs, {args.precision}, batch {best}, {steps} steps, "
                f"VAE encode included: {inv_c['fps']:.2f} frames/s ({ceiling(inv_c['tflops'], peak, args)} of the "
                f"fp16 peak) with the next batch's encode on a side stream; {inv_in_line['fps']:.2f} frames/s with "
                f"the encode in line; warm-up (compile) {inv_c['warm_s']:.0f} s"
            )
        depth_fps = bench_depth(models, size, depth_frames, depth_batch)
        stamp(f"depth {depth_fps:.1f} frames/s")

        def long_line():
            long_steps, window = args.long_steps, max(1, long_at[-1] // 6) if not args.smoke else 4
            memory, windows = bench_long_video(ours, hw, long_steps, widths[0], long_at, window)
            stamp(f"long video: memory {memory}, windows {windows}")
            mem = ", ".join(
                f"{n} frames: {s_gb:.3f} GB (GPU allocated {a_gb:.1f} GB)" for n, (s_gb, a_gb) in sorted(memory.items())
            )
            return (
                f"- long edit ({long_steps}-step schedule, W={widths[0]}, {size}x{size}), session memory after {mem}; "
                f"throughput per {window} frames: " + ", ".join(f"{w:.1f}" for w in windows) + " frames/s"
            )

        long_text = long_line()
    peak_mem = torch.cuda.max_memory_allocated() / 1e9 if cuda else float("nan")
    pools = sum(p.numel() * p.element_size() for p in ours.context.pools.values()) / 1e9
    warm = runner.warm
    gpu = torch.cuda.get_device_name() if cuda else platform.processor() or "cpu"
    today = datetime.date.today().isoformat()
    lines = [
        f"# Pix2Video benchmark ({'smoke, tiny models' if args.smoke else 'full-size SD2-depth, random weights'})",
        "",
        f"- device: {gpu}; torch {torch.__version__}; {today}",
        f"- {size}x{size}, {steps} DDIM steps, guidance 7.5, anchor+previous injection in the decoder, "
        f"latent update (x0 form) on the first half of the steps, {'fp16' if cuda else 'fp32'}, SDPA"
        + (f", UNet transformer linears {args.precision}" if args.precision != "fp16" else "")
        + (", channels-last" if args.channels_last else "")
        + (", cuDNN benchmark mode" if args.cudnn_benchmark else ""),
        "- time to first frame: from asking for the session (prompt encoding included) to the decoded frame",
        f"- peak measured in this run (matmul probe, {probe_n}^3, random data): fp16 {peak['fp16']:.0f} TFLOP/s, "
        f"fp8 {peak['fp8']:.0f} TFLOP/s; FLOPs counted by FlopCounterMode: {flops.summary()}",
        "",
        f"| way of running ({gpu}, {today}) | s / frame (steady) | frames/s total | slowest session frames/s "
        "| time to first frame (s) | session memory (GB) | TFLOP / frame | TFLOP/s | of fp16 peak |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, v in rows:
        lines.append(
            f"| {name} | {v['sec_per_frame']:.3f} | {v['fps_total']:.2f} | {v['fps_min']:.2f} | "
            f"{v['first_frame_s']:.2f} | {v['session_gb']:.2f} | {v.get('tflop_per_frame', float('nan')):.1f} | "
            f"{ceiling(v.get('tflops', float('nan')), peak, args)} |"
        )
    k0 = resume[0]
    lines += [
        "",
        f"- feature pools grew during the rows (graphs dropped, rows after it uncompiled): {'yes' if grew else 'no'}",
        f"- resume catch-up (open with start_frame=k, W={widths[-1]}, frames 0..k-1 recomputed and not sent): "
        + ", ".join(f"k={k}: {s:.2f} s" for k, s in resume.items())
        + " to the first frame sent; "
        + ", ".join(f"{(resume[k] - k0) / k:.3f} s per frame caught up (k={k})" for k in resume if k),
        *inv_lines,
        f"- depth: {depth_fps:.1f} frames/s (batch {depth_batch}); {flops.depth * depth_fps / 1e12:.0f} TFLOP/s "
        # DPT's weights are float32, its matmuls under autocast on CUDA (engine/depth.py); runs 3 and 4 said fp32.
        + ("(DPT under autocast fp16, input made on the GPU)" if cuda else "(fp32, input made on the host)"),
        "- fp8 drift: UNet output relative error against fp16, same inputs: "
        + ", ".join(f"{g} batch {b}: {e:.2e}" for (g, b), e in drift.items()),
        "- fp8 PSNR of edited frames against fp16 edits on the toy model set: "
        + (
            "; ".join(
                f"{k}: {v['mean_db']:.1f} dB (worst frame {v['min_db']:.1f})" for k, v in toy.items() if k != "setup"
            )
            + f" ({toy['setup']})"
            if toy
            else "not measured in this run"
        ),
        f"- first frame of a warm replica (ours), profiled: {first}",
        "- first frame's fixed parts (GPU ms): "
        + (", ".join(f"{k} {v:.3g}" for k, v in parts.items()) if parts else "(CUDA only)"),
        long_text,
        f"- injected-feature pools, preallocated once per replica ({ours.context.capacity} slots): {pools:.1f} GB",
        f"- peak GPU memory allocated (all runs): {peak_mem:.1f} GB",
        f"- warm-up, once per replica before SERVING: {warm.graphs} CUDA graphs captured, {warm.compiled} compiled, "
        f"{warm.seconds:.0f} s in all"
        + "".join(f"; batch {k}: {v:.0f} s" for k, v in warm.per_bucket_s.items() if v >= 5),
    ]
    text = "\n".join(lines) + "\n"
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text)
    if args.experiments:
        from experiments import run_experiments

        with torch.no_grad():
            extra = run_experiments(
                models,
                ours,
                crunner,
                hw,
                size,
                steps,
                flops,
                peak,
                best,
                smoke=args.smoke,
                deadline=t_start + args.budget_s,
                out_dir=Path(args.out).parent if args.out else None,
                stamp=stamp,
            )
        text += "\n## Experiments (same run)\n\n" + "\n".join(extra) + "\n"
        print("\n".join(extra), flush=True)
        if args.out:
            Path(args.out).write_text(text)
    return 0


def guarded(what, fn):
    """``fn()``, or None with the error printed: one part's failure on the GPU
    must not cost the rest of the run (the device time is short)."""
    import traceback

    try:
        return fn()
    except Exception:  # noqa: BLE001 - reported, and the run goes on
        print(f"FAILED: {what}", flush=True)
        traceback.print_exc()
        return None


def ceiling(tflops, peak, args):
    out = f"{tflops:.0f} | {tflops / peak['fp16']:.0%}"
    return out + (f" ({tflops / peak['fp8']:.0%} of fp8)" if args.precision == "fp8" else "")


def bench_resume(editor, hw, steps, width, ks):
    """Seconds from asking for a session opened at ``start_frame=k`` to its
    first frame sent (frame k), per k: frames 0..k-1 are recomputed at full
    wavefront width and not decoded (the catch-up of a resumed edit)."""
    dev = editor.models.device
    settings = EditSettings(prompt="a crochet swan", num_steps=steps, frames_in_flight=width)
    out = {}
    for k in ks:
        sync(dev)
        start = time.perf_counter()
        s = editor.open_session(RandomVideo(k + 1, hw, steps, seed=100 + k), settings, start_frame=k)
        sent = []
        while not sent:
            sent = [f for sid, f in editor.tick() if sid == s.id]
        sync(dev)
        out[k] = time.perf_counter() - start
        assert sent[0].index == k, (sent[0].index, k)
        editor.close_session(s.id)
    return out


def warm_lean(editor, size, compile_sizes):
    """Compiles only the variant each compiled batch serves in these runs: a
    lone anchor (self-only) at batch 2, references at the others (the editor's
    own warm-up compiles both per bucket); then captures the rest."""
    from pix2video.engine.attention import SampleRoute
    from pix2video.engine.text import encode_prompts

    m = editor.models
    h = size // m.vae_scale_factor
    emb = encode_prompts(m, ["warm up"])
    key = ("warm-up",)

    def inputs(n):
        x = torch.zeros((n, m.unet.config.in_channels, h, h), device=m.device, dtype=m.dtype)
        return x, torch.full((n,), 1, device=m.device, dtype=torch.long), emb.expand(n, -1, -1)

    def call(n: int) -> None:
        routes = SampleRoute(record=key, scope="decoder") if n == 2 else SampleRoute(refs=(key,), scope="decoder")
        editor._unet(*inputs(n), [routes] * n, "decoder")

    # The references' features, recorded by an eager call (with autograd on,
    # the runner neither captures nor compiles).
    with torch.enable_grad():
        editor._unet(*inputs(2), [SampleRoute(record=key, scope="decoder")] * 2, "decoder")
    try:
        editor.runner.warm_up(call, compile_sizes)
    finally:
        editor.context.release(key)


if __name__ == "__main__":
    sys.exit(main())
