"""Issue 17's untried compilations, in one GPU call: each way compiled in its
own process at once, then measured one process at a time.

    python bench/compile_study.py --out-dir D                 # on the GPU
    python bench/compile_study.py --smoke --out-dir D         # CPU, tiny models, uncompiled (checks it runs)

A compile of the full-size UNet costs 45-90 s of mostly host work (and
max-autotune far more), so the jobs below compile side by side, each in its
own process; none is timed until every one has compiled (or the compile
deadline has passed: those still compiling are stopped with SIGSTOP while
the others are measured, resumed after, and each measured when it finishes,
if in time, with the rest stopped meanwhile). Measurements therefore run one at a time on a quiet GPU; autotuning
benchmarks, though, ran beside the other jobs' compilation (what it picked
may be worse than on an idle GPU, never better).

Jobs (512x512, 50 steps, paper settings):
- ``b2-fp16``: the first frame's batch-2 self-only call compiled as the
  benchmark's table does (default mode, fp16): the baseline; with the
  matmul peak probe;
- ``b2-autotune``: the same call, ``max-autotune-no-cudagraphs`` (GEMMs and
  the triton kernels' launch configs autotuned, convolutions left to cuDNN);
- ``b2-bf16``: the same call, default mode, the models in bf16;
- ``inv64-fp16``: inversion compiled at batch 64 (default mode): the
  baseline; then depth beside it (the next chunk's depth in a thread on its
  own stream while this chunk inverts) against depth first;
- ``inv64-autotune``: inversion at batch 64, ``max-autotune-no-cudagraphs``;
- ``inv128-fp16``: inversion compiled at batch 128 (default mode);
- ``depth``: bench/depth_study.py, DPT compiled at batch 32 in the compile phase.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT / "clients"), str(ROOT / "bench")]

JOBS = ("depth", "b2-fp16", "b2-cdt", "b2-autotune", "b2-bf16", "inv64-fp16", "inv64-autotune", "inv128-fp16")
AUTOTUNE = "max-autotune-no-cudagraphs"
# Default mode plus the part of max-autotune that tunes inductor's own triton
# kernels (norms, activations: a third of the batch-2 call) by coordinate
# descent; GEMMs stay cuBLAS's.
CDT = "default+coordinate-descent"


# -- one job (a child process) ----------------------------------------------------


class Job:
    def __init__(self, name: str, out: Path, smoke: bool):
        self.name, self.out, self.smoke = name, out, smoke
        self.cuda = torch.cuda.is_available() and not smoke
        self.t0 = time.perf_counter()
        self.results: dict = {"job": name}

    def note(self, line: str) -> None:
        print(f"[{self.name} {time.perf_counter() - self.t0:.0f} s] {line}", flush=True)

    def save(self) -> None:
        (self.out / f"{self.name}.json").write_text(json.dumps(self.results, default=str))

    def models(self, dtype=torch.float16):
        from bench_pix2video import tiny_models
        from full_size import full_size_models

        cache = Path("/tmp/pix2video-bench")
        tiny = tiny_models(cache / "tiny")
        if not self.cuda:
            return tiny
        return full_size_models("cuda", dtype, cache / "tiny" / "tokenizer")

    def wait_for_turn(self) -> None:
        (self.out / f"{self.name}.ready").write_text("")
        while not (self.out / f"{self.name}.go").exists():
            time.sleep(0.2)


def unet_inputs(m, batch: int, hw: int, seed: int):
    """Inputs made in float32 on the CPU, then cast: the same values in fp16 and bf16 jobs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, m.unet.config.in_channels, hw, hw, generator=g)
    emb = torch.randn(batch, 77, m.unet.config.cross_attention_dim, generator=g)
    t = torch.full((batch,), 500, dtype=torch.long)
    return x.to(m.device, m.dtype), t.to(m.device), emb.to(m.device, m.dtype)


def runner_mode(mode: str) -> str:
    return "default" if mode == CDT else mode


def compile_patch(mode: str):
    """Autotuning leaves convolutions to cuDNN (as bench/experiments.py): its
    triton convolutions are slower here and would lengthen the compile."""
    import contextlib

    if mode == "default":
        return contextlib.nullcontext()
    import torch._inductor.config as cfg

    if mode == CDT:
        return cfg.patch({"coordinate_descent_tuning": True})
    return cfg.patch({"max_autotune_conv_backends": "ATEN"} if hasattr(cfg, "max_autotune_conv_backends") else {})


def job_b2(job: Job, mode: str, dtype) -> None:
    """The first frame's batch-2 self-only call, compiled in ``mode`` and ``dtype``."""
    from bench_pix2video import peak_probe, profile_first_frame, rel_err, unet_flops, warm_lean
    from experiments import first_frame_s, profile

    from pix2video.engine.attention import SampleRoute
    from pix2video.engine.editor import Pix2VideoEditor
    from pix2video.engine.unet_runner import DEFAULT_BUCKETS, UNetRunner

    m = job.models(dtype)
    hw, size, steps = (64, 512, 50) if job.cuda else (8, 64, 2)
    flops = unet_flops(Pix2VideoEditor(m), hw, "self-only") if job.cuda else float("nan")
    runner = UNetRunner(
        m.unet, cuda_graphs=job.cuda, compile=job.cuda, buckets=DEFAULT_BUCKETS, compile_mode=runner_mode(mode)
    )
    ed = Pix2VideoEditor(m, max_batch_items=1, runner=runner, feature_slots=16)
    eager = Pix2VideoEditor(m)
    t = time.perf_counter()
    if job.cuda:
        # Without autograd, as the benchmark's editor: with it the runner
        # neither captures nor compiles (run 5's first call timed uncompiled
        # graphs for want of this).
        with compile_patch(mode), torch.no_grad():
            warm_lean(ed, size, [2])
    job.results["compile_s"] = time.perf_counter() - t
    job.note(f"compiled ({mode}, {str(dtype)[6:]}) in {job.results['compile_s']:.0f} s")
    x, tt, emb = unet_inputs(m, 2, hw, 12)
    record = [SampleRoute(record=("probe", b)) for b in range(2)]
    with torch.no_grad():
        eager._unet(x, tt, emb, record, "decoder")  # records the probe's features (and warms)
        ed._unet(x, tt, emb, record, "decoder")
        first_frame_s(ed, hw, steps, reps=1)  # captures the prompt and decode graphs
    job.wait_for_turn()
    r = job.results
    with torch.no_grad():
        if job.name == "b2-fp16" and job.cuda:
            r["peak"] = peak_probe(m.device)
            job.note(f"matmul peak {r['peak']}")
        call = lambda: ed._unet(x, tt, emb, record, "decoder")  # noqa: E731
        ref = eager._unet(x, tt, emb, record, "decoder").float()
        out = call().float()
        r["rel_err_vs_eager"] = rel_err(out, ref)
        if job.cuda:
            torch.save(out.cpu(), job.out / f"{job.name}.out.pt")
        times = []
        for _ in range(5):
            if job.cuda:
                torch.cuda.synchronize()
            t = time.perf_counter()
            for _ in range(20):
                call()
            if job.cuda:
                torch.cuda.synchronize()
            times.append((time.perf_counter() - t) / 20 * 1000)
        r["call_ms"] = float(np.median(times))
        r["tflops"] = flops / r["call_ms"] / 1e9
        r["first_frame_s"] = first_frame_s(ed, hw, steps, reps=5)
        r["first_frame_parts"] = profile_first_frame(ed, hw, steps) if job.cuda else ""
        r["kernels_ms"] = profile(call, job.out / f"{job.name}.profile.txt", job.cuda)
    job.note(json.dumps(r, default=str))


def inversion_fps(inv, frames, depth, steps, cuda) -> float:
    inv(frames[: inv.batch_size], depth[: inv.batch_size], "a lake", num_steps=2)  # warm-up
    sync(cuda)
    t = time.perf_counter()
    inv(frames, depth, "a lake", num_steps=steps)
    sync(cuda)
    return len(frames) / (time.perf_counter() - t)


def sync(cuda: bool) -> None:
    if cuda:
        torch.cuda.synchronize()


def depth_then_inversion(inv, est, frames, steps, cuda) -> float:
    """As the pipeline runs today: depth of every frame, then inversion."""
    sync(cuda)
    t = time.perf_counter()
    d = est(frames)
    inv(frames, d, "a lake", num_steps=steps)
    sync(cuda)
    return len(frames) / (time.perf_counter() - t)


def depth_beside_inversion(inv, est, frames, steps, cuda) -> float:
    """The next chunk's depth (a chunk is one inversion batch) in a thread,
    on its own stream, while this chunk inverts."""
    from concurrent.futures import ThreadPoolExecutor

    chunk = inv.batch_size
    stream = torch.cuda.Stream() if cuda else None

    def depth_of(part):
        if stream is None:
            return est(part), None
        with torch.cuda.stream(stream):
            d = est(part)
            done = torch.cuda.Event()
            done.record(stream)
        return d, done

    sync(cuda)
    t = time.perf_counter()
    with ThreadPoolExecutor(1) as pool:
        nxt = pool.submit(depth_of, frames[:chunk])
        for i in range(0, len(frames), chunk):
            d, done = nxt.result()
            if done is not None:
                torch.cuda.current_stream().wait_event(done)
                d.record_stream(torch.cuda.current_stream())
            if i + chunk < len(frames):
                nxt = pool.submit(depth_of, frames[i + chunk : i + 2 * chunk])
            inv(frames[i : i + chunk], d, "a lake", num_steps=steps)
    sync(cuda)
    return len(frames) / (time.perf_counter() - t)


def job_inversion(job: Job, batch: int, mode: str, overlap: bool) -> None:
    from bench_pix2video import gpu_ms, unet_flops
    from experiments import profile

    from pix2video.engine.depth import DepthEstimator
    from pix2video.engine.editor import Pix2VideoEditor
    from pix2video.engine.inversion import Inverter
    from pix2video.engine.unet_runner import DEFAULT_BUCKETS, UNetRunner

    m = job.models()
    hw, size, steps, n = (64, 512, 50, 128) if job.cuda else (8, 64, 2, 2 * batch)
    per_sample = unet_flops(Pix2VideoEditor(m), hw, "plain") / 2 if job.cuda else float("nan")
    runner = UNetRunner(
        m.unet, cuda_graphs=job.cuda, compile=job.cuda, buckets=DEFAULT_BUCKETS, compile_mode=runner_mode(mode)
    )
    inv = Inverter(m, batch_size=batch, runner=runner)
    t = time.perf_counter()
    if job.cuda:
        with compile_patch(mode):
            inv.warm_up(size, size, compile=True)
    job.results["compile_s"] = time.perf_counter() - t
    job.note(f"compiled ({mode}, batch {batch}) in {job.results['compile_s']:.0f} s")
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    depth = torch.rand(n, 1, hw, hw) * 2 - 1
    x, tt, emb = unet_inputs(m, batch, hw, 11)
    with torch.no_grad():
        inv(frames[:batch], depth[:batch], "a lake", num_steps=2)
    job.wait_for_turn()
    r = job.results
    with torch.no_grad():
        call = lambda: runner(x, tt, emb, variant="plain")  # noqa: E731
        r["call_ms"] = gpu_ms(call, reps=10)
        r["call_tflops"] = per_sample * batch / r["call_ms"] / 1e9
        r["unet_only_fps"] = batch / (steps * r["call_ms"] / 1000)
        r["fps"] = inversion_fps(inv, frames, depth, steps, job.cuda)
        job.note(f"inversion {r['fps']:.2f} frames/s; plain call {r['call_ms']:.1f} ms")
        r["kernels_ms"] = profile(call, job.out / f"{job.name}.profile.txt", job.cuda)
        if overlap:
            for pre in ("auto", "host"):
                est = DepthEstimator(m, batch_size=32, preprocess=pre)
                est(frames[:32])
                r[f"depth_first_{pre}"] = depth_then_inversion(inv, est, frames, steps, job.cuda)
                r[f"depth_beside_{pre}"] = depth_beside_inversion(inv, est, frames, steps, job.cuda)
                job.note(
                    f"depth ({est.preprocess} input) then inversion {r[f'depth_first_{pre}']:.2f} frames/s; "
                    f"beside it {r[f'depth_beside_{pre}']:.2f}"
                )
    job.note(json.dumps(r, default=str))


def job_depth(job: Job) -> None:
    import depth_study as ds

    if not job.cuda:
        from bench_pix2video import tiny_models

        m = tiny_models(Path("/tmp/pix2video-bench/tiny"))
        study = ds.Study(m.depth_estimator, m.feature_extractor, "cpu", m.vae_scale_factor)
        job.wait_for_turn()
        job.results.update(ds.run(study, 64, 2, [2, 4], 4, 8, 0, job.note))
        return
    from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

    torch.manual_seed(0)
    with torch.device("cuda"):
        dpt = DPTForDepthEstimation(DPTConfig(is_hybrid=True, image_size=384, neck_hidden_sizes=[256, 512, 768, 768]))
    dpt = dpt.float().eval().requires_grad_(False)
    fe = DPTImageProcessor(size={"height": 384, "width": 384}, keep_aspect_ratio=False)
    study = ds.Study(dpt, fe, "cuda")
    warm = np.random.default_rng(1).integers(0, 256, (32, 512, 512, 3), dtype=np.uint8)
    job.results["processor"] = type(fe).__name__
    compile_batch = 32 if os.environ.get("P2V_DEPTH_COMPILE") == "1" else 0
    if compile_batch:
        job.results["dpt_compile_s"] = study.warm_compiled(ds.Way("device", "fp16", compiled=True), warm, 32)
        job.note(f"DPT compiled at batch 32 in {job.results['dpt_compile_s']:.0f} s; processor {type(fe).__name__}")
    folder = ds.save_depth_folder(Path("/tmp/pix2video-depth-model"), dpt, fe)
    job.wait_for_turn()
    job.results.update(ds.run(study, 512, 32, [16, 32, 64, 128], 64, 256, compile_batch, job.note))
    frames = np.random.default_rng(2).integers(0, 256, (256, 512, 512, 3), dtype=np.uint8)
    job.results["worker"] = ds.worker_fps(folder, 16, frames, job.note)


def child(name: str, out: Path, smoke: bool) -> int:
    job = Job(name, out, smoke)
    try:
        if name == "depth":
            job_depth(job)
        elif name.startswith("b2-"):
            mode = AUTOTUNE if "autotune" in name else CDT if "cdt" in name else "default"
            job_b2(job, mode, torch.bfloat16 if "bf16" in name else torch.float16)
        else:
            batch = int(name[3:].split("-")[0]) if not smoke else 2
            job_inversion(job, batch, AUTOTUNE if "autotune" in name else "default", overlap=name == "inv64-fp16")
    except Exception:  # noqa: BLE001 - reported; the other jobs go on
        job.results["error"] = traceback.format_exc()[-3000:]
        job.note("FAILED:\n" + job.results["error"])
        (out / f"{name}.ready").write_text("")
    job.save()
    (out / f"{name}.done").write_text("")
    return 0


# -- the parent: start, wait for compiles, measure one at a time ------------------


def parent(args) -> int:
    out, work = Path(args.out_dir), Path(args.work_dir)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    for f in work.iterdir():  # a previous study's flags and results
        if f.is_file():
            f.unlink()
    jobs = [j for j in args.jobs.split(",") if j]
    t0 = time.perf_counter()
    log = open(out / "study.log", "w")

    def note(line):
        line = f"[study {time.perf_counter() - t0:.0f} s] {line}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    from bench_pix2video import tiny_models

    tiny_models(Path("/tmp/pix2video-bench/tiny"))  # built once here: the jobs would race to build it
    procs = {}
    for j in jobs:
        threads = args.autotune_threads if "autotune" in j else args.compile_threads
        env = dict(os.environ, PYTHONUNBUFFERED="1", TORCHINDUCTOR_COMPILE_THREADS=str(threads))
        env["P2V_DEPTH_COMPILE"] = "1" if args.depth_compile else "0"
        cmd = [sys.executable, __file__, "--child", j, "--work-dir", str(work)] + (["--smoke"] if args.smoke else [])
        procs[j] = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
        note(f"started {j} (pid {procs[j].pid})")

    def ready(j):
        return (work / f"{j}.ready").exists() or procs[j].poll() is not None

    def measure(j):
        if procs[j].poll() is not None and not (work / f"{j}.done").exists():
            note(f"{j}: exited with {procs[j].returncode} before measuring")
            return
        (work / f"{j}.go").write_text("")
        limit = time.perf_counter() + args.measure_s
        while procs[j].poll() is None and time.perf_counter() < limit:
            time.sleep(0.2)
        if procs[j].poll() is None:
            note(f"{j}: measuring took over {args.measure_s:.0f} s; stopped")
            procs[j].kill()
        note(f"{j}: measured")

    while not all(ready(j) for j in jobs) and time.perf_counter() - t0 < args.compile_s:
        time.sleep(1)
    late = [j for j in jobs if not ready(j)]
    for j in late:
        os.kill(procs[j].pid, signal.SIGSTOP)
    note(f"compile phase over: late {late} (stopped while the others are measured)")
    for j in jobs:
        if j not in late:
            measure(j)
    for j in late:
        os.kill(procs[j].pid, signal.SIGCONT)
    # Late jobs are measured as they become ready, the others stopped meanwhile:
    # run 5's second call measured one late job beside two still compiling
    # (its host-clock times were a half slower than its GPU's).
    waiting = list(late)
    while waiting and time.perf_counter() - t0 < args.total_s - args.late_reserve_s:
        done = [j for j in waiting if ready(j)]
        for j in done:
            waiting.remove(j)
            note(f"{j}: compiled late, at {time.perf_counter() - t0:.0f} s")
            for other in waiting:
                os.kill(procs[other].pid, signal.SIGSTOP)
            measure(j)
            for other in waiting:
                os.kill(procs[other].pid, signal.SIGCONT)
        time.sleep(0 if done else 1)
    for j in waiting:
        note(f"{j}: still compiling at {time.perf_counter() - t0:.0f} s; stopped, not measured")
    for j in jobs:
        if procs[j].poll() is None:
            procs[j].kill()
            procs[j].wait()
    results = {}
    for j in jobs:
        f = work / f"{j}.json"
        results[j] = json.loads(f.read_text()) if f.exists() else {"error": "no result"}
    (out / "study.json").write_text(json.dumps(results, indent=1, default=str))
    with open(out / "profiles.txt", "w") as prof:
        for j in jobs:
            f = work / f"{j}.profile.txt"
            if f.exists():
                prof.write(f"## {j}\n{f.read_text()}\n")
    if (work / "b2-fp16.out.pt").exists():  # bf16 and autotuned calls against the fp16 compiled one
        ref = torch.load(work / "b2-fp16.out.pt")
        for j in ("b2-autotune", "b2-bf16"):
            if (work / f"{j}.out.pt").exists():
                o = torch.load(work / f"{j}.out.pt")
                results[j]["rel_err_vs_b2_fp16"] = float((o.double() - ref.double()).norm() / ref.double().norm())
        (out / "study.json").write_text(json.dumps(results, indent=1, default=str))
    note(
        "summary: "
        + json.dumps(
            {j: {k: v for k, v in r.items() if not isinstance(v, (dict, str))} for j, r in results.items()}, default=str
        )
    )
    log.close()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default="/tmp/pix2video-compile-study", help="study.log, study.json, profiles.txt")
    p.add_argument("--work-dir", default="/tmp/pix2video-compile-study-work", help="the jobs' flags and files")
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--jobs", default=",".join(JOBS))
    p.add_argument("--compile-s", type=float, default=300, help="measure what has compiled by then")
    p.add_argument("--total-s", type=float, default=540, help="stop everything by then")
    p.add_argument("--measure-s", type=float, default=150, help="longest one job's measurement may take")
    p.add_argument("--compile-threads", type=int, default=2, help="inductor's compile workers per default-mode job")
    p.add_argument("--autotune-threads", type=int, default=6, help="inductor's compile workers per autotuning job")
    p.add_argument("--late-reserve-s", type=float, default=30, help="a late job must be ready this long before the end")
    p.add_argument("--depth-compile", action="store_true", help="the depth job also compiles DPT (batch 32)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        return child(args.child, Path(args.work_dir), args.smoke)
    return parent(args)


if __name__ == "__main__":
    sys.exit(main())
