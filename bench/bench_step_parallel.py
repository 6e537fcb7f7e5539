"""Step-parallel editing speed: one session's steps sharded over N GPUs, a row per N.

    python bench/bench_step_parallel.py --n 1,2,4,8          # full size, one GPU per stage
    python bench/bench_step_parallel.py --n 1,2 --same-gpu   # N stages on cuda:0 (the hand-off path, not scaling)
    python bench/bench_step_parallel.py --smoke              # tiny models on the CPU (CI)

Full size is the SD2-depth architecture with random weights
(bench/full_size.py), paper settings: 512x512, 50 DDIM steps, guidance 7.5,
anchor+previous injection in the decoder, the x0 latent update on the first
25 steps. Each stage runs CUDA graphs of the UNet (no compilation).

Per row: single-session frames/s (steady state, after the first W + 1
frames), scaling efficiency against the N=1 row (fps_N / (N fps_1)), the
first frame (open to first frame out, prompt encoding included, warm), and
each GPU's busy fraction (the GPU time its stage's timer recorded: denoise,
latent update, decode, over the steady run's wall time; CUDA events count
launch gaps inside a call as busy). Also the host time of each stage's tick
against the GPU time of its calls (the last stage's includes the decode's wait
for the GPU: an upper bound on host work): the one-process design runs out of
host when N x host > GPU per round.
A row needing more GPUs than the machine has says so and is not run.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import datetime
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT / "clients"), str(ROOT / "bench")]

from random_video import RandomVideo  # noqa: E402

from pix2video.engine.runner_options import DEFAULT_BUCKETS  # noqa: E402
from pix2video.engine.settings import EditSettings  # noqa: E402
from pix2video.engine.step_parallel import DeviceTimers, StepParallelEditor  # noqa: E402
from pix2video.engine.step_ranges import CostMeter, plan_steps  # noqa: E402
from pix2video.engine.timers import CudaEventTimer, HostTimer  # noqa: E402
from pix2video.engine.unet_runner import UNetRunner  # noqa: E402


def load_models(args):
    from pix2video.models import load_model_set
    from pix2video.models.tiny import build_tiny_model_set

    tiny = Path(args.tiny_dir)
    if not (tiny / "model_index.json").exists():
        build_tiny_model_set(tiny)
    if args.smoke:
        return load_model_set(str(tiny))
    from full_size import full_size_models

    return full_size_models("cuda:0", torch.float16, tiny / "tokenizer")


class StageClock:
    """GPU (or host) seconds per stage, from each stage's timer; and the measured step costs."""

    def __init__(self):
        self.seconds: dict[int, float] = collections.defaultdict(float)  # every stage of the timers
        self.denoise: dict[int, float] = collections.defaultdict(float)  # the UNet calls only
        self.calls: dict[int, int] = collections.defaultdict(int)
        self.meter = CostMeter("x0")

    def sink(self, g):
        def record(stage, started, seconds, items):
            self.seconds[g] += seconds
            if stage == "denoise":
                self.denoise[g] += seconds
                self.calls[g] += 1
            self.meter(stage, started, seconds, items)

        return record


def timers_for(editor, clock):
    return DeviceTimers(
        [
            CudaEventTimer(clock.sink(g), d) if d.type == "cuda" else HostTimer(clock.sink(g))
            for g, d in enumerate(editor.devices)
        ]
    )


def sync_all(editor):
    for d in {d for d in editor.devices if d.type == "cuda"}:
        torch.cuda.synchronize(d)


def run_one(editor, video, settings):
    """One session, timed: frame times (s since the open) and the steady run's stage clock."""
    clock = StageClock()
    editor.timer = timers_for(editor, clock)
    for st in editor.stages:
        st.host_seconds, st.ticks = 0.0, 0
    sync_all(editor)
    start = time.perf_counter()
    session = editor.open_session(video, settings)
    times = []
    while len(times) < video.num_frames:
        done = editor.tick()
        if done:
            sync_all(editor)
            times += [time.perf_counter() - start] * len(done)
        editor.timer.flush(wait=False)
    editor.timer.flush(wait=True)
    editor.close_session(session.id)
    editor.timer = None
    return times, clock


def bench_row(models, n, args, same_gpu):
    dev = models.device
    if dev.type == "cuda":
        devices = [torch.device("cuda:0")] * n if same_gpu else [torch.device(f"cuda:{g}") for g in range(n)]
        if not same_gpu and torch.cuda.device_count() < n:
            return dict(n=n, skipped=f"needs {n} GPUs, this machine has {torch.cuda.device_count()}")
    else:
        devices = [dev] * n
    settings = EditSettings(prompt="a crochet swan", num_steps=args.steps, frames_in_flight=args.width)
    hw = args.size // models.vae_scale_factor

    def runner(m):
        return UNetRunner.for_models(m, cuda_graphs=True, buckets=DEFAULT_BUCKETS)

    t0 = time.perf_counter()
    editor = StepParallelEditor.on_devices(
        models,
        devices,
        runner=runner,
        max_batch_items=args.width,
        feature_slots=args.feature_slots,
        threads=args.threads if n > 1 else None,
    )
    sizes = sorted({editor.runner.bucket(k) for k in range(2, 2 * args.width + 1, 2)})
    if dev.type == "cuda":
        editor.warm_up(args.size, args.size, sizes)
    warm_s = time.perf_counter() - t0
    try:
        # A short warm edit (first calls of the DDIM path, the decode), then the measured one.
        list(editor.edit(RandomVideo(2, hw, args.steps, seed=99), settings))
        times, clock = run_one(editor, RandomVideo(args.frames, hw, args.steps), settings)
    finally:
        editor.close()
    skip = min(args.width + 1, len(times) - 2)
    steady = times[-1] - times[skip]
    fps = (len(times) - 1 - skip) / steady if steady > 0 else float("nan")
    rounds = max(st.ticks for st in editor.stages) or 1
    return dict(
        n=n,
        devices=[str(d) for d in devices],
        threads=editor.threads,
        bounds=editor.plan(settings),
        fps=fps,
        first_frame_s=times[0],
        wall_s=times[-1],
        busy=[clock.seconds[g] / times[-1] for g in range(n)],
        gpu_ms_per_call=[1000 * clock.denoise[g] / max(clock.calls[g], 1) for g in range(n)],
        host_ms_per_round=[1000 * st.host_seconds / rounds for st in editor.stages],
        warm_up_s=warm_s,
        measured_costs=dataclasses.asdict(clock.meter.costs()),
        measured_plans={k: plan_steps(settings, k, clock.meter.costs()) for k in (2, 4, 8) if k <= args.steps},
    )


def check_equal(models, n, args, same_gpu):
    """Frames of the N-stage editor against the one-stage editor's, at W=1 (every call
    holds the same samples) and at the benchmark's W (calls batch other frames)."""
    dev = models.device
    devices = [dev] * n if same_gpu or dev.type != "cuda" else [torch.device(f"cuda:{g}") for g in range(n)]
    if dev.type == "cuda" and not same_gpu and torch.cuda.device_count() < n:
        return dict(n=n, skipped=f"needs {n} GPUs")
    hw = args.size // models.vae_scale_factor
    video = RandomVideo(args.check_frames, hw, args.steps, seed=5)
    out = dict(n=n)

    def runner(m):
        return UNetRunner.for_models(m, cuda_graphs=True, buckets=DEFAULT_BUCKETS)

    for width in (1, args.width):
        settings = EditSettings(prompt="a crochet swan", num_steps=args.steps, frames_in_flight=width)
        frames = {}
        for k, devs in ((1, devices[:1]), (n, devices)):
            threads = args.threads if k > 1 else None
            ed = StepParallelEditor.on_devices(models, devs, runner=runner, max_batch_items=args.width, threads=threads)
            try:
                if dev.type == "cuda":  # no graph captured while another stage's thread runs
                    ed.warm_up(
                        args.size,
                        args.size,
                        sorted({ed.runner.bucket(j) for j in range(2, 2 * min(width, args.check_frames) + 1, 2)}),
                    )
                frames[k] = list(ed.edit(video, settings))
            finally:
                ed.close()
        a = torch.stack([f.latent.float() for f in frames[1]])
        b = torch.stack([f.latent.float() for f in frames[n]])
        pixels = max(
            int(abs(x.image.astype(int) - y.image.astype(int)).max()) for x, y in zip(frames[1], frames[n], strict=True)
        )
        out[f"W={width}"] = dict(
            threads=bool(threads),
            bitwise=bool(torch.equal(a, b)),
            max_latent_diff=float((a - b).abs().max()),
            latent_scale=float(a.abs().max()),
            max_pixel_diff=pixels,
        )
    return out


def table(rows, args, gpu_name, same_gpu) -> str:
    base = next((r["fps"] for r in rows if r["n"] == 1 and "fps" in r), None)
    lines = [
        "| N | devices | step ranges | fps (1 session) | scaling efficiency | first frame (s) | busy per GPU | "
        "GPU ms / call | host ms / round |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['n']} | not run: {r['skipped']} | | | | | | | |")
            continue
        eff = "—" if base is None else f"{r['fps'] / (r['n'] * base):.0%}"
        if same_gpu and r["n"] > 1:
            eff += " (one GPU: not a scaling figure)"
        lines.append(
            f"| {r['n']} | {','.join(r['devices'])}{' (threads)' if r['threads'] else ''} | {r['bounds']} | "
            f"{r['fps']:.2f} | {eff} | "
            f"{r['first_frame_s']:.3f} | {', '.join(f'{b:.0%}' for b in r['busy'])} | "
            f"{', '.join(f'{x:.1f}' for x in r['gpu_ms_per_call'])} | "
            f"{', '.join(f'{x:.1f}' for x in r['host_ms_per_round'])} |"
        )
    head = (
        f"{gpu_name}; {datetime.date.today()}; torch {torch.__version__}; {args.size}x{args.size}, {args.steps} steps, "
        f"W={args.width}, {args.frames} frames, one session, CUDA graphs, fp16"
        if not args.smoke
        else f"smoke: tiny models on the CPU, {args.steps} steps, W={args.width}, {args.frames} frames"
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny models on the CPU, a few frames (CI)")
    p.add_argument("--n", default="1,2,4,8", help="device counts, one row each")
    p.add_argument("--same-gpu", action="store_true", help="put every stage on cuda:0 (the code path, not scaling)")
    p.add_argument("--width", type=int, default=8, help="wavefront width W of the session (per stage)")
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--feature-slots", type=int, default=256)
    p.add_argument("--tiny-dir", default="/tmp/pix2video-bench-tiny", help="tiny set (the tokenizer; smoke: all)")
    p.add_argument("--out", default=None, help="markdown table to write")
    p.add_argument("--json", default=None, help="rows as JSON to write")
    p.add_argument("--check", default="", help="device counts whose frames to compare with one device's")
    p.add_argument("--check-frames", type=int, default=6)
    p.add_argument(
        "--threads", action="store_true", default=None, help="tick the stages on threads (default: on distinct GPUs)"
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.steps, args.frames, args.size, args.width = min(args.steps, 4), min(args.frames, 5), 32, 2
        args.n = ",".join(n for n in args.n.split(",") if int(n) <= 2)
    counts = [int(n) for n in args.n.split(",") if n.strip()]
    bad = [n for n in counts if n not in (1, 2, 4, 8)]
    if bad:
        p.error(f"--n: each count must be 1, 2, 4 or 8, got {bad}")
    torch.backends.cuda.matmul.allow_tf32 = True
    models = load_models(args)
    gpu_name = torch.cuda.get_device_name(0) if models.device.type == "cuda" else "CPU"
    rows = []
    with torch.no_grad():
        for n in counts:
            rows.append(bench_row(models, n, args, args.same_gpu))
            print(json.dumps(rows[-1]), flush=True)
    text = table(rows, args, gpu_name, args.same_gpu)
    print(text, flush=True)
    if args.out:
        Path(args.out).write_text(text)
    checks = []
    with torch.no_grad():
        for n in [int(n) for n in args.check.split(",") if n.strip()]:
            checks.append(check_equal(models, n, args, args.same_gpu))
            print(json.dumps(checks[-1]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "checks": checks}, indent=1))
    return rows


if __name__ == "__main__":
    main()
