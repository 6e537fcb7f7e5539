"""Pixel-MSE: temporal consistency measured through the source video's motion.

The paper's protocol (Table 2): optical flow between consecutive *source*
frames; each *edited* frame is warped to the next along that flow and the mean
squared error against the next edited frame is taken, at 512 x 512 in 0..255.
A perfectly consistent edit moves exactly as the source does and scores 0.

Flow is OpenCV's DIS (dense inverse search, ``opencv-python-headless``), on
grayscale source frames. Warping needs, for every pixel of frame t+1, where
it came from in frame t: the backward flow t+1 -> t. Pixels whose motion is
not trustworthy are excluded by the forward-backward check of Sundaram et al.
(ECCV 2010): following the backward flow and then the forward flow must come
back near the start, ``|b + f(x + b)|^2 <= 0.01 (|b|^2 + |f(x + b)|^2) + 0.5``;
pixels that fail it (occlusions, disocclusions) or whose source lies outside
the frame are left out, and their share is reported.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import InvalidInput
from .options import FLOW_METHODS

METRIC_SIZE = 512  # the paper's convention: MSE at 512 x 512 in 0..255
FB_ALPHA, FB_BETA = 0.01, 0.5


@dataclass(frozen=True)
class PixelMSE:
    value: float  # mean over consecutive pairs of the MSE over kept pixels, 0..255 scale
    occluded_fraction: float  # share of pixels left out (forward-backward check or out of frame)
    flow_method: str
    per_pair: tuple[float, ...]


def _resize(frames: np.ndarray, size: int) -> np.ndarray:
    import cv2

    return np.stack(
        [
            f if f.shape[:2] == (size, size) else cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA)
            for f in frames
        ]
    )


def dis_flow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Dense flow from RGB uint8 frame ``a`` to ``b``: (H, W, 2) float32, x then y,
    such that ``a[y, x]`` moves to ``b[y + fy, x + fx]``."""
    import cv2

    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    ga, gb = (cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY) for x in (a, b))
    return dis.calc(ga, gb, None)


def _sample(image: np.ndarray, flow: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``image`` read at ``x + flow(x)`` (bilinear) and whether that point is inside the frame."""
    import cv2

    h, w = flow.shape[:2]
    gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    mx, my = gx + flow[..., 0], gy + flow[..., 1]
    inside = (mx >= 0) & (mx <= w - 1) & (my >= 0) & (my <= h - 1)
    out = cv2.remap(image, mx, my, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out, inside


def warp_mask(forward: np.ndarray, backward: np.ndarray) -> np.ndarray:
    """Pixels of frame t+1 whose backward flow passes the forward-backward check
    and lands inside frame t: (H, W) bool."""
    f_at, inside = _sample(forward, backward)
    diff = ((backward + f_at) ** 2).sum(-1)
    bound = FB_ALPHA * ((backward**2).sum(-1) + (f_at**2).sum(-1)) + FB_BETA
    return inside & (diff <= bound)


def pixel_mse(edited: np.ndarray, source: np.ndarray, flow_method: str = "dis", progress=None) -> PixelMSE:
    """Pixel-MSE of ``edited`` frames against the motion of ``source`` frames.

    Args:
        edited, source: (N, H, W, 3) uint8, the same N (>= 2); each set is
            resized to 512 x 512 first (sizes may differ between the two).
        progress: called with 1 after each consecutive pair.
    """
    if flow_method not in FLOW_METHODS:
        raise InvalidInput(f"flow: must be one of {', '.join(FLOW_METHODS)}; got {flow_method!r}")
    if len(edited) != len(source):
        raise InvalidInput(f"source: has {len(source)} frames, the edit has {len(edited)}; they must match")
    if len(edited) < 2:
        raise InvalidInput(f"frames: Pixel-MSE needs at least 2 frames, got {len(edited)}")
    ed = _resize(np.asarray(edited), METRIC_SIZE).astype(np.float32)
    src = _resize(np.asarray(source), METRIC_SIZE)
    errors, excluded = [], 0
    for t in range(len(ed) - 1):
        fwd, bwd = dis_flow(src[t], src[t + 1]), dis_flow(src[t + 1], src[t])
        keep = warp_mask(fwd, bwd)
        warped, _ = _sample(ed[t], bwd)
        sq = ((warped - ed[t + 1]) ** 2).mean(-1)
        # Every pixel occluded (unrelated frames): the whole frame is the honest error.
        errors.append(float(sq[keep].mean()) if keep.any() else float(sq.mean()))
        excluded += int((~keep).sum())
        if progress:
            progress(1)
    total = (len(ed) - 1) * METRIC_SIZE * METRIC_SIZE
    return PixelMSE(
        value=float(np.mean(errors)),
        occluded_fraction=excluded / total,
        flow_method=f"{flow_method} (OpenCV DIS, medium preset) with forward-backward occlusion check",
        per_pair=tuple(errors),
    )
