"""Hostile media for the attack tests, built from scratch: playlists that name
other files, decompression bombs (small files declaring huge frames), frames
below the minimum size, and containers whose header lies about the frames."""

from __future__ import annotations

import fractions
import functools
import io
import struct
import zlib

import av
import numpy as np
from PIL import Image

from pix2video.video import make_sample_frames, write_video


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bytes(width: int, height: int, rows: int | None = None) -> bytes:
    """An RGB PNG of ``width`` x ``height`` grey pixels, ``rows`` of them
    actually present (None: all: a real image that compresses ~1000:1)."""
    row = b"\0" + b"\x80" * (3 * width)
    z = zlib.compressobj(6)
    data = b"".join(z.compress(row) for _ in range(height if rows is None else min(rows, height))) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b"")


@functools.lru_cache(maxsize=None)
def png_bomb(side: int = 8000) -> bytes:
    """~200 kB of PNG that decodes to side x side x 3 bytes (192 MB at 8000)."""
    return png_bytes(side, side)


def jpeg_declaring(width: int, height: int) -> bytes:
    """A real 16x16 JPEG whose SOF header is patched to declare ``width`` x ``height``."""
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(buf, format="JPEG")
    data = bytearray(buf.getvalue())
    i = data.index(b"\xff\xc0")  # SOF0: marker, length(2), precision(1), height(2), width(2)
    data[i + 5 : i + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def png_of(frame: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(frame).save(buf, format="PNG")
    return buf.getvalue()


def gif_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(buf, format="GIF")
    return buf.getvalue()


def avi_of_pngs(frames: list[bytes], declare: tuple[int, int] | None = None) -> bytes:
    """An AVI of PNG-coded frames (the frames' bytes as given), its header
    declaring 64x64 or, patched, ``declare``."""
    buf = io.BytesIO()
    with av.open(buf, "w", format="avi") as c:
        st = c.add_stream("png", rate=10)
        st.width, st.height, st.pix_fmt = 64, 64, "rgb24"
        for i, data in enumerate(frames):
            p = av.Packet(data)
            p.stream, p.pts, p.dts, p.time_base = st, i, i, fractions.Fraction(1, 10)
            c.mux(p)
    data = buf.getvalue()
    if declare:
        data = data.replace(struct.pack("<ii", 64, 64), struct.pack("<ii", *declare))
    return data


def clip_bytes(path, width: int = 64, height: int = 64, frames: int = 2) -> bytes:
    """A real mp4 (H.264) of the synthetic sample clip."""
    write_video(path, make_sample_frames(frames, width, height), fps=10)
    return path.read_bytes()


def container_bytes(fmt: str, codec: str, width: int = 64, height: int = 64, frames: int = 2) -> bytes:
    """The sample clip in another container (matroska, webm, avi, mov)."""
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        st = c.add_stream(codec, rate=10)
        st.width, st.height, st.pix_fmt = width, height, "yuv420p"
        for f in make_sample_frames(frames, width, height):
            for p in st.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in st.encode():
            c.mux(p)
    return buf.getvalue()


def hls_playlist(*entries: str) -> bytes:
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:10", "#EXT-X-MEDIA-SEQUENCE:0"]
    for e in entries:
        lines += ["#EXTINF:1.0,", e]
    return ("\n".join(lines + ["#EXT-X-ENDLIST", ""])).encode()


def ffconcat(*files: str) -> bytes:
    return ("ffconcat version 1.0\n" + "".join(f"file '{f}'\n" for f in files)).encode()
