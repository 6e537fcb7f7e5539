"""The UNet and inversion against the ceiling: fp16 vs fp8, graphs vs compiled,
inversion's batch and its encode overlap, the first frame's fixed parts, and
a kernel profile of the compiled call (where the time goes), in one GPU run.

    python bench/bench_precision.py --out-dir DIR [--choice FILE]

Full-size SD2-depth with random weights (bench/full_size.py). Every figure
beside the peak that a matmul probe measures in the same run; FLOPs from
FlopCounterMode (see bench_pix2video.py). With --choice, writes the precision
whose compiled batch-64 call was faster (fp8 only if also within the drift
bound) for a following full benchmark run.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT / "clients"), str(ROOT / "bench")]

from bench_pix2video import (  # noqa: E402
    Flops,
    _dummy_call,
    bench_inversion,
    first_frame_parts,
    fp8_drift,
    gpu_ms,
    peak_probe,
    tiny_models,
)
from full_size import full_size_models  # noqa: E402

from pix2video.engine.inversion import Inverter  # noqa: E402
from pix2video.engine.unet_runner import DEFAULT_BUCKETS, UNetRunner  # noqa: E402

DRIFT_BOUND = 0.05  # fp8's UNet output relative error above which fp8 is not chosen


def kernel_profile(call, path: Path) -> dict:
    """CUDA time of one call by kind of kernel (from torch.profiler), and the full table."""
    from torch.profiler import ProfilerActivity, profile

    call()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    kinds: dict[str, float] = {}
    for ev in prof.key_averages():
        us = getattr(ev, "device_time_total", None) or getattr(ev, "cuda_time_total", 0)
        if not us or ev.key.startswith("ProfilerStep"):
            continue
        name = ev.key.lower()
        # Kernel names as seen on an H200 (torch 2.11): cuDNN's SDPA, cuDNN's
        # implicit-GEMM convolutions, cuBLASLt's nvjet matmuls, inductor's triton.
        if "sdpa" in name or "flash" in name or "fmha" in name:
            kind = "attention"
        elif "fprop" in name or ("conv" in name and not name.startswith("triton")):
            kind = "convolution"
        elif "nvjet" in name or "gemm" in name or "cutlass" in name:
            kind = "matmul"
        elif name.startswith("triton"):
            kind = "fused triton (norms, activations, quantization)"
        else:
            kind = "other"
        kinds[kind] = kinds.get(kind, 0.0) + us / 1000
    path.write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40))
    return kinds


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out-dir", default="/tmp/pix2video-precision")
    p.add_argument("--choice", default=None, help="file to write the chosen precision to")
    p.add_argument("--batch", type=int, default=64, help="the compiled (inversion / steady-state) batch")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--smoke", action="store_true", help="tiny models on the CPU (checks the script runs)")
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    results: dict = {}

    def stamp(what, **values):
        results.update(values)
        print(f"[{time.perf_counter() - t_start:.0f} s] {what} {json.dumps(values, default=str)}", flush=True)
        (out / "precision.json").write_text(json.dumps(results, indent=1, default=str))

    cache = Path("/tmp/pix2video-bench")
    tiny = tiny_models(cache / "tiny")
    if args.smoke:
        models, hw, size, steps, batch, small = tiny, 8, 64, 2, 4, 2
        args.compile = False
    else:
        models = full_size_models("cuda", torch.float16, cache / "tiny" / "tokenizer")
        hw, size, steps, batch, small = 64, 512, 50, args.batch, 32
    cuda = models.device.type == "cuda"
    stamp("device", gpu=torch.cuda.get_device_name() if cuda else "cpu", torch=torch.__version__)
    peak = peak_probe(models.device, 8192 if cuda else 256)
    stamp("matmul peak (TFLOP/s)", peak=peak)
    flops = Flops(models, hw, size)
    stamp(flops.summary(), flops_per_sample=flops.per_sample)
    with torch.no_grad():
        drift = fp8_drift(models, hw, sizes=(2, batch))
        stamp("fp8 drift", drift={f"{g} b{b}": e for (g, b), e in drift.items()})
        stamp("first-frame parts", parts=first_frame_parts(models, hw))

        # Plain UNet calls (inversion's), replayed graphs, per precision and batch.
        plain = flops.per_sample["plain"]
        graphs = {}
        for precision in ("fp16", "fp8"):
            r = UNetRunner(models.unet, cuda_graphs=cuda, buckets=DEFAULT_BUCKETS, precision=precision)
            for n in (2, small, batch):
                x, t, emb = _dummy_call(models, n, hw)
                ms = gpu_ms(lambda r=r, x=x, t=t, emb=emb: r(x, t, emb, variant="plain"), reps=10)
                graphs[f"{precision} b{n}"] = dict(ms=ms, tflops=plain * n / ms / 1e9)
        stamp("plain UNet call, CUDA graph", graphs=graphs)

        # bf16 against fp16 at batch 2 (the first frame's call), graphs.
        unet_bf16 = copy.deepcopy(models.unet).to(torch.bfloat16)
        r = UNetRunner(unet_bf16, cuda_graphs=cuda, buckets=DEFAULT_BUCKETS)
        x, t, emb = _dummy_call(models, 2, hw)
        xb, eb = x.to(torch.bfloat16), emb.to(torch.bfloat16)
        stamp("bf16 batch 2 graph", bf16_b2_ms=gpu_ms(lambda r=r: r(xb, t, eb, variant="plain"), reps=10))
        del unet_bf16, r

        # Compiled at the steady/inversion batch, per precision: call time, its
        # kernel profile, and inversion at that batch (VAE encode included).
        compiled, inversion = {}, {}
        best_graph = max((small, batch), key=lambda n: graphs[f"fp16 b{n}"]["tflops"])
        graphed = UNetRunner(models.unet, cuda_graphs=cuda, buckets=DEFAULT_BUCKETS)
        inversion["fp16 graphs b32 overlap"] = bench_inversion(
            models, size, steps, 2 * small, small, runner=graphed, compile=False, flops=flops
        )
        stamp("inversion", inversion=inversion)
        for precision in ("fp16", "fp8") if args.compile else ():
            r = UNetRunner(models.unet, cuda_graphs=True, compile=True, buckets=DEFAULT_BUCKETS, precision=precision)
            t0 = time.perf_counter()
            Inverter(models, batch_size=batch, runner=r).warm_up(size, size)
            warm_s = time.perf_counter() - t0
            x, t, emb = _dummy_call(models, batch, hw)
            ms = gpu_ms(lambda r=r, x=x, t=t, emb=emb: r(x, t, emb, variant="plain"), reps=10)
            kinds = kernel_profile(
                lambda r=r, x=x, t=t, emb=emb: r(x, t, emb, variant="plain"), out / f"profile_{precision}.txt"
            )
            compiled[precision] = dict(ms=ms, tflops=plain * batch / ms / 1e9, compile_s=warm_s, kernels_ms=kinds)
            stamp(f"compiled plain b{batch} {precision}", compiled=compiled)
            inversion[f"{precision} compiled b{batch} overlap"] = bench_inversion(
                models, size, steps, 2 * batch, batch, runner=r, flops=flops
            )
            if precision == "fp16":
                inversion[f"{precision} compiled b{batch} no overlap"] = bench_inversion(
                    models, size, steps, 2 * batch, batch, runner=r, flops=flops, overlap=False
                )
            stamp("inversion", inversion=inversion, graph_best_batch=best_graph)
            del r
    choice = "fp16"
    drift = max(v for k, v in results["drift"].items() if k.startswith("row"))  # the default granularity
    if "fp8" in compiled and compiled["fp8"]["ms"] < 0.95 * compiled["fp16"]["ms"] and drift < DRIFT_BOUND:
        choice = "fp8"
    stamp("choice", choice=choice, seconds=time.perf_counter() - t_start)
    if args.choice:
        Path(args.choice).write_text(choice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
