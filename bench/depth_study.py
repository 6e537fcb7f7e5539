"""Depth frames/s and accuracy, each way of running DPT, against float32.

    python bench/depth_study.py --out-dir D          # full-size DPT-hybrid (random weights) on the GPU
    python bench/depth_study.py --smoke --out-dir D  # the tiny model set on the CPU (checks the script runs)

Ways (issue 17, run 5 of docs/benchmark.md): where DPT's input is made (the
image processor on the host, or torch on the device: engine/depth.py),
DPT's precision (float32; float32 with TF32; autocast fp16, the services'
default; autocast bf16), channels-last, torch.compile, and the batch.

Accuracy, on the same frames (half smooth synthetic video, half noise),
against the reference way (the host's processor, DPT in float32, TF32 off):
of the depth map the editor receives (normalised per frame to [-1, 1] at the
latent size), the worst frame's Pearson correlation and the largest and
mean absolute difference as a fraction of the map's range
(:func:`pix2video.engine.depth.depth_agreement`).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "services"), str(ROOT / "clients"), str(ROOT / "bench")]

from pix2video.engine.depth import (  # noqa: E402
    DepthEstimator,
    depth_agreement,
    device_pixels,
)
from pix2video.models.components import DepthComponents  # noqa: E402

FP = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Way:
    preprocess: str = "host"
    precision: str = "fp16"  # fp32: no autocast; fp16/bf16: autocast (as predict_depth does on CUDA)
    tf32: bool = False
    channels_last: bool = False
    compiled: bool = False

    @property
    def name(self) -> str:
        return (
            f"{self.preprocess} input, {self.precision}"
            + (" + TF32" if self.tf32 else "")
            + (", channels-last" if self.channels_last else "")
            + (", compiled" if self.compiled else "")
        )


REFERENCE = Way("host", "fp32")
DEFAULT_BEFORE = Way("host", "fp16")  # the services' default until this run
WAYS = [
    DEFAULT_BEFORE,
    Way("device", "fp16"),
    Way("device", "fp32"),
    Way("device", "fp32", tf32=True),
    Way("device", "bf16"),
    Way("device", "fp16", channels_last=True),
]


@contextlib.contextmanager
def tf32(on: bool):
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class Study:
    """One DPT, the ways of running it (a channels-last copy and a compiled
    one made on demand, the compiled one at one batch size)."""

    def __init__(self, depth_estimator, feature_extractor, device, scale=8):
        self.base = depth_estimator
        self.fe, self.device, self.scale = feature_extractor, torch.device(device), scale
        self._nets: dict = {}

    def net(self, way: Way):
        key = (way.channels_last, way.compiled)
        if key not in self._nets:
            net = self.base
            if way.channels_last:
                net = copy.deepcopy(self.base).to(memory_format=torch.channels_last)
            if way.compiled:
                compiled = torch.compile(net, dynamic=False)
                net = _Compiled(net, compiled)
            self._nets[key] = net
        return self._nets[key]

    def models(self, way: Way) -> DepthComponents:
        return DepthComponents(self.net(way), self.fe, self.device, FP[way.precision], self.scale)

    def estimator(self, way: Way, batch: int) -> DepthEstimator:
        return DepthEstimator(self.models(way), batch_size=batch, preprocess=way.preprocess)

    @torch.no_grad()
    def depth(self, way: Way, frames: np.ndarray, batch: int) -> torch.Tensor:
        with tf32(way.tf32):
            return self.estimator(way, batch)(frames).float().cpu()

    @torch.no_grad()
    def fps(self, way: Way, frames: np.ndarray, batch: int) -> float:
        est = self.estimator(way, batch)
        with tf32(way.tf32):
            est(frames[:batch])
            sync(self.device)
            t = time.perf_counter()
            est(frames)
            sync(self.device)
        return len(frames) / (time.perf_counter() - t)

    @torch.no_grad()
    def parts_ms(self, way: Way, frames: np.ndarray) -> dict:
        """ms per frame of one batch's steps: the host processor, the device
        path's input, DPT's forward (GPU), in this way's precision."""
        m = self.models(way)
        host = _ms(lambda: self.fe(images=list(frames), return_tensors="pt").pixel_values.to(self.device), self.device)
        dev = _ms(lambda: device_pixels(self.fe, frames, self.device), self.device)
        pixels = device_pixels(self.fe, frames, self.device)
        ctx = (
            (lambda: torch.autocast(self.device.type, dtype=m.dtype))
            if self.device.type == "cuda" and m.dtype != torch.float32
            else contextlib.nullcontext
        )

        def forward():
            with ctx():
                return m.depth_estimator(pixels).predicted_depth

        with tf32(way.tf32):
            fwd = _ms(forward, self.device)
        n = len(frames)
        return {"host_input_ms": host / n, "device_input_ms": dev / n, "dpt_forward_ms": fwd / n}

    def warm_compiled(self, way: Way, frames: np.ndarray, batch: int) -> float:
        """Compiles (static shapes) at ``batch``; seconds."""
        t = time.perf_counter()
        with torch.no_grad(), tf32(way.tf32):
            self.estimator(way, batch)(frames[:batch])
        sync(self.device)
        return time.perf_counter() - t


class _Compiled(torch.nn.Module):
    """The compiled DPT where its batch is the compiled one, eager otherwise
    (a smaller last batch would recompile)."""

    def __init__(self, net, compiled):
        super().__init__()
        self.net, self.compiled, self.batch = net, compiled, None

    def forward(self, pixels):
        if self.batch is None:
            self.batch = pixels.shape[0]
        return (self.compiled if pixels.shape[0] == self.batch else self.net)(pixels)


def sync(device):
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _ms(fn, device, reps=5) -> float:
    fn()
    sync(device)
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times)) * 1000


def test_frames(n: int, side: int) -> np.ndarray:
    """``n`` frames: half the synthetic sample clip (smooth), half noise."""
    from pix2video.video import make_sample_frames

    half = n // 2
    smooth = np.stack([np.ascontiguousarray(f) for f in make_sample_frames(n - half, side, side)])
    noise = np.random.default_rng(3).integers(0, 256, (half, side, side, 3), dtype=np.uint8)
    return np.concatenate([smooth, noise])


def run(study: Study, size: int, batch: int, batches, n_acc: int, n_fps: int, compile_batch: int, note) -> dict:
    """Every way at ``batch``: frames/s and accuracy; the best way at each of
    ``batches``; the compiled way (when ``compile_batch``); the steps' parts."""
    acc_frames = test_frames(n_acc, size)
    fps_frames = np.random.default_rng(1).integers(0, 256, (n_fps, size, size, 3), dtype=np.uint8)
    ref = study.depth(REFERENCE, acc_frames, batch)
    out: dict = {"ways": {}}
    ways = list(WAYS)
    if compile_batch:
        ways.append(Way("device", "fp16", compiled=True))
        seconds = study.warm_compiled(ways[-1], fps_frames, compile_batch)
        note(f"depth: compiled at batch {compile_batch} ({seconds:.0f} s here; 0 when compiled before)")
    for way in [REFERENCE, *ways]:
        b = compile_batch if way.compiled else batch
        r = {"fps": study.fps(way, fps_frames, b), "batch": b, **depth_agreement(study.depth(way, acc_frames, b), ref)}
        out["ways"][way.name] = r
        note(f"depth {way.name}, batch {b}: {json.dumps({k: round(v, 6) for k, v in r.items()})}")
    best = Way("device", "fp16")
    out["batches"] = {}
    for b in batches:
        out["batches"][b] = study.fps(best, fps_frames, b)
        note(f"depth {best.name}, batch {b}: {out['batches'][b]:.1f} frames/s")
    for way in (DEFAULT_BEFORE, best):
        out[f"parts {way.name}"] = study.parts_ms(way, fps_frames[:batch])
        note(f"depth steps, batch {batch}, {way.name}: {out[f'parts {way.name}']}")
    return out


def worker_fps(folder: Path, batch: int, frames: np.ndarray, note, device="cuda") -> dict:
    """The depth service's worker (settings -> real loading code -> estimate),
    frames/s with ``preprocess`` host and auto, lists of ``batch`` frames."""
    from pix2video.servers.depth.settings import DepthSettings
    from pix2video.servers.depth.worker import DepthWorker

    out = {}
    ref = None
    for pre in ("host", "auto"):
        w = DepthWorker(
            DepthSettings(model=str(folder), device=device, dtype="float16", batch_size=batch, preprocess=pre)
        )
        w.estimate(list(frames[:batch]))
        sync(device)
        t = time.perf_counter()
        got = [d for i in range(0, len(frames), batch) for d in w.estimate(list(frames[i : i + batch]))]
        sync(device)
        fps = len(frames) / (time.perf_counter() - t)
        d = torch.from_numpy(np.stack(got))
        ref = d if ref is None else ref
        out[pre] = {"fps": fps, "resolved": w.estimator.preprocess, **depth_agreement(d, ref)}
        note(f"depth service worker, preprocess={pre} ({w.estimator.preprocess}), batch {batch}: {out[pre]}")
    return out


def save_depth_folder(folder: Path, depth_estimator, feature_extractor) -> Path:
    """What the depth service loads (load_depth): DPT, its processor, the VAE's config."""
    from full_size import SD_VAE

    if not (folder / "vae" / "config.json").exists():
        depth_estimator.save_pretrained(folder / "depth_estimator")
        feature_extractor.save_pretrained(folder / "feature_extractor")
        (folder / "vae").mkdir(parents=True, exist_ok=True)
        (folder / "vae" / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL", **SD_VAE}))
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--out-dir", default="/tmp/pix2video-depth")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--batches", default="16,32,64,128")
    p.add_argument("--compile-batch", type=int, default=0, help="also torch.compile DPT at this batch (0: not)")
    args = p.parse_args(argv)
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    lines: list[str] = []

    def note(line):
        lines.append(line)
        print(f"[{time.perf_counter() - t0:.0f} s] {line}", flush=True)

    if args.smoke:
        from bench_pix2video import tiny_models

        m = tiny_models(Path("/tmp/pix2video-bench/tiny"))
        study = Study(m.depth_estimator, m.feature_extractor, "cpu", m.vae_scale_factor)
        res = run(study, 64, 2, [2, 4], 4, 8, 0, note)
        res["worker"] = worker_fps(Path("/tmp/pix2video-bench/tiny"), 2, test_frames(4, 64), note, device="cpu")
    else:
        from transformers import DPTConfig, DPTForDepthEstimation, DPTImageProcessor

        torch.manual_seed(0)
        with torch.device("cuda"):
            dpt = DPTForDepthEstimation(
                DPTConfig(is_hybrid=True, image_size=384, neck_hidden_sizes=[256, 512, 768, 768])
            )
        dpt = dpt.float().eval().requires_grad_(False)
        fe = DPTImageProcessor(size={"height": 384, "width": 384}, keep_aspect_ratio=False)
        note(f"{torch.cuda.get_device_name()}; torch {torch.__version__}; processor {type(fe).__name__}")
        study = Study(dpt, fe, "cuda")
        res = run(study, 512, args.batch, [int(b) for b in args.batches.split(",")], 64, 256, args.compile_batch, note)
        folder = save_depth_folder(Path("/tmp/pix2video-depth-model"), dpt, fe)
        res["worker"] = worker_fps(
            folder, 16, np.random.default_rng(2).integers(0, 256, (256, 512, 512, 3), np.uint8), note
        )
    (out_dir / "depth_study.json").write_text(json.dumps(res, indent=1, default=str))
    (out_dir / "depth_study.log").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
