"""Issue 17's experiments, after the benchmark's table, in the same run (so
against the same peak and the same baseline runners):

1. FP8 with row-wise scales, compiled: the plain UNet call at the inversion's
   batch and inversion itself, against the fp16 compiled runner of the table,
   with a kernel profile of each call by kind (where the time goes);
2. the first frame's batch-2 call (self-only, compiled): a kernel profile;
   then the same call compiled with ``max-autotune-no-cudagraphs`` (GEMMs
   autotuned, convolutions left to cuDNN), its call time and the first frame
   against the table's editor.

Each part is skipped, and says so, when the run's deadline leaves too little
time for it (a compile costs 45-90 s on an H200). On the CPU (smoke mode)
every part runs uncompiled on the tiny models, so this code cannot rot.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from bench_pix2video import (
    RandomVideo,
    _dummy_call,
    bench_inversion,
    gpu_ms,
    rel_err,
    sync,
    unet_call_ms,
    warm_lean,
)

from pix2video.engine.editor import Pix2VideoEditor
from pix2video.engine.settings import EditSettings
from pix2video.engine.unet_runner import DEFAULT_BUCKETS, UNetRunner


def kinds_line(kinds: dict) -> str:
    return ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(kinds.items(), key=lambda kv: -kv[1]))


def profile(call, path: Path | None, cuda: bool) -> dict:
    if not cuda:
        return {}
    from bench_precision import kernel_profile

    return kernel_profile(call, path or Path("/tmp/pix2video-profile.txt"))


def first_frame_s(editor, hw, steps, reps=3) -> float:
    """Median wall seconds from asking for a one-frame session to its frame (prompt cached after the first)."""
    dev = editor.models.device
    times = []
    for r in range(reps):
        sync(dev)
        start = time.perf_counter()
        s = editor.open_session(RandomVideo(1, hw, steps, seed=7 + r), EditSettings(prompt="a swan", num_steps=steps))
        while not s.done:
            editor.tick()
        sync(dev)
        times.append(time.perf_counter() - start)
        editor.close_session(s.id)
    return float(np.median(times))


def run_experiments(
    models, ours, crunner, hw, size, steps, flops, peak, batch, smoke, deadline, out_dir, stamp, parts=("fp8", "b2")
) -> list[str]:
    cuda = models.device.type == "cuda"
    lines: list[str] = []

    def note(line: str) -> None:
        lines.append(line)
        stamp(line)
        if out_dir is not None:  # each part on disk as it lands: a run cut short keeps what it measured
            (out_dir / "experiments.md").write_text("\n".join(lines) + "\n")

    def left() -> float:
        return deadline - time.perf_counter()

    def path(name):
        return out_dir / name if out_dir is not None else None

    # 1. fp8 (row-wise) against fp16 at the inversion's batch.
    if crunner is None:  # smoke mode: eager runners, the same code path
        crunner = UNetRunner(models.unet)
    if "fp8" not in parts:
        pass
    elif cuda and left() < 150:
        note(f"- fp8 compiled: skipped ({left():.0f} s left of the run's budget)")
    else:
        r8 = (
            UNetRunner(models.unet, cuda_graphs=True, compile=True, buckets=DEFAULT_BUCKETS, precision="fp8")
            if cuda
            else UNetRunner(models.unet, precision="fp8")
        )
        t0 = time.perf_counter()
        inv8 = bench_inversion(models, size, steps, 2 * batch, batch, runner=r8, flops=flops)
        warm_s = time.perf_counter() - t0
        x, t, emb = _dummy_call(models, batch, hw, seed=11)
        eager = UNetRunner(models.unet)(x, t, emb).float()
        ms16 = gpu_ms(lambda: crunner(x, t, emb, variant="plain"), reps=10)
        ms8 = gpu_ms(lambda: r8(x, t, emb, variant="plain"), reps=10)
        e16 = rel_err(crunner(x, t, emb, variant="plain").float(), eager)
        e8 = rel_err(r8(x, t, emb, variant="plain").float(), eager)
        per_call = flops.per_sample["plain"] * batch
        k16 = profile(lambda: crunner(x, t, emb, variant="plain"), path("profile_fp16_b64.txt"), cuda)
        k8 = profile(lambda: r8(x, t, emb, variant="plain"), path("profile_fp8row_b64.txt"), cuda)
        way = "compiled + graph" if cuda else "eager"
        note(
            f"- plain UNet call, batch {batch}, {way}: fp16 {ms16:.1f} ms ({per_call / ms16 / 1e9:.0f} TFLOP/s, "
            f"rel. error vs eager {e16:.1e}); fp8 row-wise {ms8:.1f} ms ({per_call / ms8 / 1e9:.0f} TFLOP/s, "
            f"{per_call / ms8 / 1e9 / peak['fp16']:.0%} of the fp16 peak; rel. error vs fp16 eager {e8:.1e}); "
            f"fp8 {'faster' if ms8 < ms16 else 'slower'} by {abs(ms16 - ms8) / ms16:.1%}"
        )
        note(
            f"- inversion, batch {batch}, fp8 row-wise {way}: {inv8['fps']:.2f} frames/s "
            f"({inv8['tflops']:.0f} TFLOP/s); compile + capture {warm_s:.0f} s"
        )
        if k16:
            note(f"- kernels of the fp16 call (GPU ms by kind): {kinds_line(k16)}")
            note(f"- kernels of the fp8 row-wise call (GPU ms by kind): {kinds_line(k8)}")

    # 2. The first frame's batch-2 call.
    if "b2" not in parts:
        return lines
    from pix2video.engine.attention import SampleRoute

    x2, t2, e2 = _dummy_call(models, 2, hw, seed=12)
    record = [SampleRoute(record=("probe", b)) for b in range(2)]

    def b2_call(editor):
        return lambda: editor._unet(x2, t2, e2, record, "decoder")

    ms_ours, _ = unet_call_ms(ours, 2, hw, "self-only", reps=20)
    k2 = profile(b2_call(ours), path("profile_b2_selfonly.txt"), cuda)
    for b in range(2):
        ours.context.release(("probe", b))
    ff_ours = first_frame_s(ours, hw, steps)
    note(
        f"- batch-2 self-only call (the first frame's), as in the table: {ms_ours:.2f} ms a call (host clock, "
        f"{flops.per_sample['self-only'] * 2 / ms_ours / 1e9:.0f} TFLOP/s); first frame {ff_ours:.3f} s "
        f"(median of 3, prompt cached)" + (f"; kernels (GPU ms by kind): {kinds_line(k2)}" if k2 else "")
    )
    if not cuda:
        note("- batch 2, max-autotune-no-cudagraphs: CUDA only")
        return lines
    if left() < 200:
        note(f"- batch 2, max-autotune-no-cudagraphs: skipped ({left():.0f} s left of the run's budget)")
        return lines
    r_at = UNetRunner(
        models.unet, cuda_graphs=True, compile=True, buckets=DEFAULT_BUCKETS, compile_mode="max-autotune-no-cudagraphs"
    )
    ed_at = Pix2VideoEditor(models, max_batch_items=1, runner=r_at, feature_slots=16)
    cfg = torch._inductor.config
    patch = {"max_autotune_conv_backends": "ATEN"} if hasattr(cfg, "max_autotune_conv_backends") else {}
    t0 = time.perf_counter()
    with cfg.patch(patch):
        warm_lean(ed_at, size, [2])
    compile_s = time.perf_counter() - t0
    note(f"- batch 2, max-autotune-no-cudagraphs (GEMMs autotuned, convolutions cuDNN): compiled in {compile_s:.0f} s")
    ms_at, out_at = unet_call_ms(ed_at, 2, hw, "self-only", reps=20)
    _, out_ref = unet_call_ms(ours, 2, hw, "self-only", reps=2)
    ff_at = first_frame_s(ed_at, hw, steps)
    k_at = profile(b2_call(ed_at), path("profile_b2_autotune.txt"), cuda)
    for b in range(2):
        ed_at.context.release(("probe", b))
    note(
        f"- batch 2 max-autotune: {ms_at:.2f} ms a call against {ms_ours:.2f} (rel. difference of outputs "
        f"{rel_err(out_at, out_ref):.1e}); first frame {ff_at:.3f} s against {ff_ours:.3f} s"
        + (f"; kernels (GPU ms by kind): {kinds_line(k_at)}" if k_at else "")
    )
    return lines


def main(argv=None) -> int:
    """Part 1 alone (fp8 against fp16, compiled, at the inversion's batch) on
    the GPU, with its own fp16 baseline: for a run that has no time for the
    whole benchmark."""
    import argparse

    from bench_pix2video import Flops, peak_probe, tiny_models
    from full_size import full_size_models

    p = argparse.ArgumentParser(description=main.__doc__.splitlines()[0])
    p.add_argument("--out-dir", default="/tmp/pix2video-experiments")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--budget-s", type=float, default=400)
    args = p.parse_args(argv)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()

    def stamp(what):
        print(f"[{time.perf_counter() - t_start:.0f} s] {what}", flush=True)

    cache = Path("/tmp/pix2video-bench")
    tiny_models(cache / "tiny")
    models = full_size_models("cuda", torch.float16, cache / "tiny" / "tokenizer")
    hw, size, steps = 64, 512, 50
    peak = peak_probe(models.device)
    stamp(f"{torch.cuda.get_device_name()}; matmul peak: fp16 {peak['fp16']:.0f} TFLOP/s, fp8 {peak['fp8']:.0f}")
    flops = Flops(models, hw, size)
    with torch.no_grad():
        crunner = UNetRunner(models.unet, cuda_graphs=True, compile=True, buckets=DEFAULT_BUCKETS)
        t0 = time.perf_counter()
        inv16 = bench_inversion(models, size, steps, 2 * args.batch, args.batch, runner=crunner, flops=flops)
        stamp(
            f"- inversion, batch {args.batch}, fp16 compiled + graph: {inv16['fps']:.2f} frames/s "
            f"({inv16['tflops']:.0f} TFLOP/s); compile + capture {time.perf_counter() - t0:.0f} s"
        )
        lines = run_experiments(
            models,
            None,
            crunner,
            hw,
            size,
            steps,
            flops,
            peak,
            args.batch,
            False,
            t_start + args.budget_s,
            out,
            stamp,
            parts=("fp8",),
        )
    print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
