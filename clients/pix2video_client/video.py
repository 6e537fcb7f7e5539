"""Writing edited frames to a video file (the ``video`` extra: PyAV, numpy)."""

from __future__ import annotations

import os
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Iterable


def write_mp4(path: str | os.PathLike, frames: Iterable, fps: float, crf: int = 18) -> int:
    """H.264 .mp4 from (H, W, 3) uint8 frames; the file appears only when complete."""
    import av
    import numpy as np

    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".mp4")
    os.close(fd)
    n = 0
    try:
        with av.open(tmp, mode="w", format="mp4") as container:
            stream = None
            for frame in frames:
                if stream is None:
                    stream = container.add_stream("libx264", rate=Fraction(fps or 25).limit_denominator(1001))
                    stream.height, stream.width = frame.shape[:2]
                    stream.pix_fmt = "yuv420p"
                    stream.options = {"crf": str(crf)}
                for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                    container.mux(packet)
                n += 1
            if stream is not None:
                for packet in stream.encode():
                    container.mux(packet)
        if n == 0:
            raise ValueError("no frames to write")
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return n


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
