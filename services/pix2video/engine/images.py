"""Frame geometry and pixel conversions shared by every stage.

Frames enter the engine as uint8 RGB arrays of shape (H, W, 3). They are
brought to the working resolution (multiples of 64, the UNet's total
downsampling of 8 in the VAE times 8 in the UNet) keeping the aspect ratio:

- ``crop``: scale to cover the target, then centre-crop (default; nothing is
  squeezed, edges may be lost);
- ``pad``: scale to fit inside the target, then centre on black borders (the
  whole picture is kept; the borders are edited too);
- ``squash``: scale each side to the target, ignoring the aspect ratio (what
  the authors' script does: every frame to 512 x 512; ``--preset authors``).
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..errors import InvalidInput

RESIZE_MODES = ("crop", "pad", "squash")
SIZE_MULTIPLE = 64
MAX_SIDE = 2048


def check_resolution(width: int, height: int) -> None:
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or v <= 0 or v % SIZE_MULTIPLE or v > MAX_SIDE:
            raise InvalidInput(f"{name}: must be a positive multiple of {SIZE_MULTIPLE} up to {MAX_SIDE}, got {v!r}")


def fit_frame(frame: np.ndarray, width: int, height: int, mode: str = "crop") -> np.ndarray:
    """Resizes one (H, W, 3) uint8 frame to (height, width, 3), keeping its
    aspect ratio (``crop``, ``pad``) or not (``squash``)."""
    if mode not in RESIZE_MODES:
        raise InvalidInput(f"resize: must be one of {RESIZE_MODES}, got {mode!r}")
    if mode == "squash":
        # PIL's own default filter for resize (bicubic), as the authors' Image.resize((512, 512)) gets it.
        return np.asarray(Image.fromarray(frame).resize((width, height), Image.Resampling.BICUBIC))
    h, w = frame.shape[:2]
    scale = (max if mode == "crop" else min)(width / w, height / h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    img = Image.fromarray(frame).resize((nw, nh), Image.Resampling.BICUBIC)
    if mode == "crop":
        left, top = (nw - width) // 2, (nh - height) // 2
        return np.asarray(img.crop((left, top, left + width, top + height)))
    canvas = Image.new("RGB", (width, height))
    canvas.paste(img, ((width - nw) // 2, (height - nh) // 2))
    return np.asarray(canvas)


def to_model_range(frames: np.ndarray, device, dtype) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) in [-1, 1], the VAE's input range."""
    x = torch.from_numpy(np.ascontiguousarray(frames)).to(device).permute(0, 3, 1, 2)
    return (x.to(dtype) / 127.5 - 1.0).contiguous()


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) in [-1, 1] -> (N, H, W, 3) uint8."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()
