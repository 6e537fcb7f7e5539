"""FP8 against fp16 on the trained toy model set (``--model toy``): the PSNR
of edited frames, the gate for making ``fp8`` the default (35 dB, issue 17).

The README's colour edit on the ``pix2video sample`` clip (a red ball on
green grass, edited to a blue ball): depth from the toy DPT, inversion with
the caption, then the edit, once per precision. Three comparisons against
the all-fp16 pipeline, on the same frames:

- ``edit``: the edit's UNet in fp8 (row-wise scales, the default), from the
  same fp16 inversion (what an editor replica set to fp8 does with a stored
  inversion);
- ``edit, per-tensor``: the same with per-tensor scales;
- ``inversion + edit``: both services in fp8 (row-wise).

On the CPU the toy models run in float32 and fp8 is emulated (the same
quantization and float32 accumulation as ``torch._scaled_mm``).
"""

from __future__ import annotations

import numpy as np
import torch

SOURCE = "a red ball on green grass under a blue sky"
TARGET = "a blue ball on green grass under a blue sky"


class _Inverted:
    """An inverted clip in memory (the FrameSource an edit reads)."""

    def __init__(self, latents: torch.Tensor, depth: torch.Tensor, num_steps: int):
        self.latents, self.depths, self.num_steps = latents, depth, num_steps
        self.num_frames = len(latents)

    def latent(self, i):
        return self.latents[i]

    def depth(self, i):
        return self.depths[i]


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of uint8 images ``a`` against ``b`` (inf when equal)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def toy_fp8_psnr(device: str, num_frames: int = 8, num_steps: int = 50, width: int = 8) -> dict:
    """PSNR (dB, mean and worst frame) of fp8 edits against fp16 edits on the toy model set."""
    from pix2video.engine.depth import DepthEstimator
    from pix2video.engine.editor import Pix2VideoEditor
    from pix2video.engine.inversion import Inverter
    from pix2video.engine.settings import EditSettings
    from pix2video.engine.unet_runner import UNetRunner
    from pix2video.models.loading import load_model_set
    from pix2video.toyworld import demo_frames

    cuda = device == "cuda"
    models = load_model_set("toy", device=device, dtype=torch.float16 if cuda else torch.float32)
    frames = np.stack(demo_frames(num_frames))
    depth = DepthEstimator(models, batch_size=num_frames)(frames)

    def runner(precision, granularity="row"):
        return UNetRunner(models.unet, precision=precision, fp8_granularity=granularity)

    def invert(precision):
        inv = Inverter(models, batch_size=num_frames, runner=runner(precision))
        return _Inverted(inv(frames, depth, SOURCE, num_steps=num_steps), depth, num_steps)

    def edit(video, precision, granularity="row"):
        editor = Pix2VideoEditor(models, runner=runner(precision, granularity), feature_slots=4 * width + 8)
        settings = EditSettings(prompt=TARGET, num_steps=num_steps, frames_in_flight=width)
        return np.stack([f.image for f in editor.edit(video, settings)])

    with torch.no_grad():
        inv16 = invert("fp16")
        ref = edit(inv16, "fp16")
        cases = {
            "edit": edit(inv16, "fp8"),
            "edit, per-tensor": edit(inv16, "fp8", "tensor"),
            "inversion + edit": edit(invert("fp8"), "fp8"),
        }
    out = {}
    for name, imgs in cases.items():
        per_frame = [psnr(a, b) for a, b in zip(imgs, ref, strict=True)]
        out[name] = {"mean_db": float(np.mean(per_frame)), "min_db": float(min(per_frame))}
    out["setup"] = f"toy model set, {num_frames} frames 128x128, {num_steps} steps, W={width}, {TARGET!r}"
    return out
