"""Writing edited frames to a video file (the ``video`` extra: PyAV, numpy)."""

from __future__ import annotations

import os
from fractions import Fraction
from typing import Iterable

from .atomic import AtomicFile


class FrameSizeError(ValueError):
    """A frame H.264 cannot encode (odd width or height)."""


def encode_mp4(path: str | os.PathLike, frames: Iterable, fps: float, crf: int = 18) -> int:
    """Encodes (H, W, 3) uint8 frames as they arrive into an H.264 (yuv420p)
    .mp4 at ``path``; returns the count (0 writes an empty container). The one
    encoder of the project: the engine's writer wraps it too."""
    import av
    import numpy as np

    n = 0
    with av.open(str(path), mode="w", format="mp4") as container:
        stream = None
        for frame in frames:
            if stream is None:
                h, w = frame.shape[:2]
                if h % 2 or w % 2:  # yuv420p halves the chroma planes
                    raise FrameSizeError(f"width and height must be even for H.264, got {w}x{h}")
                stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(1001))
                stream.height, stream.width = h, w
                stream.pix_fmt = "yuv420p"
                stream.options = {"crf": str(crf)}
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                container.mux(packet)
            n += 1
        if stream is not None:
            for packet in stream.encode():
                container.mux(packet)
    return n


def write_mp4(path: str | os.PathLike, frames: Iterable, fps: float, crf: int = 18) -> int:
    """H.264 .mp4 from (H, W, 3) uint8 frames; the file appears only when complete."""
    out = AtomicFile(path)
    try:
        n = encode_mp4(out.tmp, frames, fps or 25, crf)
        if n == 0:
            raise ValueError("no frames to write")
        out.commit()
    except BaseException:
        out.discard()
        raise
    return n
