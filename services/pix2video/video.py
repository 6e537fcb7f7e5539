"""Reading and writing video files (PyAV, which ships its own FFmpeg codecs)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from pix2video_client.atomic import AtomicFile
from pix2video_client.video import FrameSizeError, encode_mp4

from .errors import InvalidInput, NotFound
from .limits import FrameLimits


@dataclass
class VideoInfo:
    fps: float
    width: int
    height: int


# The containers we demux, recognised by their first bytes (never by a file
# name, which a client chooses): name -> the FFmpeg demuxer forced to open it.
CONTAINERS = {"mp4/mov": "mov", "mkv/webm": "matroska", "avi": "avi"}
ALLOWED = ", ".join(CONTAINERS)
# ISO base media (mp4, mov, 3gp): a box size then one of these box types.
_ISO_BOXES = (b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot")
# Text formats that make FFmpeg open other files or URLs (HLS, ffconcat, DASH,
# SDP, ...): refused by name so the client learns why.
_REFERENCING = (
    (b"#EXTM3U", "an HLS playlist"),
    (b"ffconcat", "an ffconcat script"),
    (b"<?xml", "an XML manifest (DASH or similar)"),
    (b"<MPD", "a DASH manifest"),
    (b"v=0", "an SDP description"),
)


def probe_container(head: bytes) -> str:
    """The FFmpeg demuxer for a file starting with ``head`` (its first bytes),
    chosen from the allow-list; raises InvalidInput for anything else,
    playlists and concat scripts included."""
    if len(head) >= 8 and head[4:8] in _ISO_BOXES:
        return CONTAINERS["mp4/mov"]
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return CONTAINERS["mkv/webm"]
    if head.startswith(b"RIFF") and head[8:12] == b"AVI ":
        return CONTAINERS["avi"]
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    for magic, what in _REFERENCING:
        if text.startswith(magic):
            raise InvalidInput(f"input: {what} is not accepted (it names other files); send a {ALLOWED} file")
    raise InvalidInput(f"input: not a supported video container (accepted: {ALLOWED}, recognised by content)")


def _refuse_nested_open(url: str, flags: int, options: dict):
    # FFmpeg asks for this only when a demuxer wants a second file or URL (a
    # playlist entry, an external track reference): never allowed.
    raise PermissionError("input: the video refers to another file or URL, which is not allowed")


def read_video(
    path: str | os.PathLike,
    max_frames: int | None = None,
    transform: Callable[[np.ndarray], np.ndarray] | None = None,
    limits: FrameLimits | None = None,
    label: str | None = None,
) -> tuple[list[np.ndarray], VideoInfo]:
    """All frames of the first video stream as (H, W, 3) uint8 RGB arrays.

    ``transform`` is applied to each frame as it is decoded (e.g. fitting it to
    the working resolution), so a long high-resolution clip is never held in
    memory at its source size. ``VideoInfo`` describes the source frames.

    The input is hostile until checked: the container is probed from its bytes
    (:func:`probe_container`) and opened with that demuxer forced, through a
    Python file object, so no FFmpeg protocol (file, http, concat, ...) is
    reachable; the declared frame size is checked against ``limits`` before
    any frame is decoded, and the decoder refuses larger frames itself.
    ``label`` names the input in messages (default: its path; servers pass a
    name that reveals no local path).
    """
    import av

    limits = limits or FrameLimits()
    path = Path(path)
    what = label or repr(str(path))
    if not path.exists():
        raise NotFound(f"input: file {what} does not exist")
    if not path.is_file():
        raise InvalidInput(f"input: {what} is not a file")
    try:
        with open(path, "rb") as f:
            try:
                fmt = probe_container(f.read(64))
            except InvalidInput as exc:
                reason = str(exc).removeprefix("input: ")
                raise InvalidInput(f"input: {what} is not a readable video: {reason}") from None
            f.seek(0)
            with av.open(
                f,
                format=fmt,
                container_options={"format_whitelist": fmt, "protocol_whitelist": "none", "enable_drefs": "0"},
                # Decoders run while probing the streams: they refuse oversized frames too.
                options={"max_pixels": str(limits.max_pixels)},
                io_open=_refuse_nested_open,
            ) as container:
                if not container.streams.video:
                    raise InvalidInput(f"input: {what} has no video stream")
                stream = container.streams.video[0]
                cc = stream.codec_context
                if not (cc.width and cc.height):
                    # Probing with max_pixels leaves the size of an oversized stream unset.
                    raise InvalidInput(
                        f"input: the frame size of {what} is unreadable or over the limit of {limits.max_pixels} pixels"
                    )
                limits.check(cc.width, cc.height, "input")
                cc.options = {**cc.options, "max_pixels": str(limits.max_pixels)}
                fps = float(stream.average_rate or stream.guessed_rate or 25)
                frames, source_hw = [], None
                for frame in container.decode(stream):
                    # A stream may change size mid-way: every frame is checked before conversion.
                    limits.check(frame.width, frame.height, "input")
                    rgb = frame.to_ndarray(format="rgb24")
                    source_hw = source_hw or rgb.shape[:2]
                    frames.append(transform(rgb) if transform else rgb)
                    if max_frames and len(frames) >= max_frames:
                        break
    except InvalidInput:
        raise
    except PermissionError as exc:
        raise InvalidInput(f"{exc} ({what})") from None
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        # strerror, not str(exc): FFmpeg's message ends with the file's path.
        reason = getattr(exc, "strerror", None) or str(exc) if isinstance(exc, av.error.FFmpegError) else str(exc)
        raise InvalidInput(f"input: {what} is not a readable video ({type(exc).__name__}: {reason})") from exc
    if not frames:
        raise InvalidInput(f"input: {what} has no video frames")
    h, w = source_hw
    return frames, VideoInfo(fps=fps, width=w, height=h)


class AtomicOutput(AtomicFile):
    """An output file written atomically (see :class:`~pix2video_client.atomic.AtomicFile`);
    a missing folder is a NotFound naming ``output``."""

    def __init__(self, path: str | os.PathLike):
        if not Path(path).parent.is_dir():
            raise NotFound(f"output: folder {str(Path(path).parent)!r} does not exist")
        super().__init__(path)


def write_video(path: str | os.PathLike, frames: Iterable[np.ndarray], fps: float, crf: int = 18) -> int:
    """Encodes frames (H.264, yuv420p, .mp4) as they arrive; returns the count.
    The file appears at ``path`` only when complete."""
    try:
        fps_ok = math.isfinite(float(fps)) and float(fps) > 0
    except (TypeError, ValueError):
        fps_ok = False
    if not fps_ok:
        raise InvalidInput(f"fps: must be a positive number, got {fps!r}")
    out = AtomicOutput(path)
    try:
        try:
            n = encode_mp4(out.tmp, frames, fps, crf)
        except FrameSizeError as exc:
            raise InvalidInput(f"output: {exc}") from None
        if n == 0:
            raise InvalidInput("output: no frames to write")
        out.commit()
    except BaseException:
        out.discard()
        raise
    return n


def tee_frames_to_dir(frames: Iterable[np.ndarray], folder: str | os.PathLike) -> Iterator[np.ndarray]:
    """Passes frames through while also saving each one as a numbered PNG."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:06d}.png")
        yield frame


def make_sample_frames(num_frames: int = 12, width: int = 256, height: int = 256) -> list[np.ndarray]:
    """A synthetic clip: a ball crossing a lit scene with a horizon, so depth,
    motion and colour all change smoothly from frame to frame."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    frames = []
    for i in range(num_frames):
        t = i / max(1, num_frames - 1)
        sky = np.stack([120 + 60 * yy / height, 170 + 40 * yy / height, 235 - 20 * yy / height], -1)
        ground = np.stack([60 + 50 * yy / height, 120 + 30 * yy / height, 60 + 0 * yy], -1)
        img = np.where((yy > height * 0.55)[..., None], ground, sky)
        cx, cy, r = width * (0.2 + 0.6 * t), height * (0.6 - 0.15 * np.sin(np.pi * t)), width * 0.12
        d2 = (xx - cx) ** 2 + (yy - cy) ** 2
        shade = np.clip(1.2 - np.sqrt(d2) / r * 0.6, 0, 1)[..., None]
        ball = np.array([230, 80, 60], np.float32) * shade
        img = np.where((d2 < r * r)[..., None], ball, img)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return frames
