"""Protobuf <-> domain conversions shared by the services (images, tensors)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from pix2video_api.common.v1 import common_pb2

from ...errors import InvalidInput
from ...limits import FrameLimits

ENC = common_pb2.ImageEncoding
# The PIL plugin each encoding may use: nothing else of PIL's many formats is reachable.
PIL_FORMAT = {ENC.IMAGE_ENCODING_PNG: "PNG", ENC.IMAGE_ENCODING_JPEG: "JPEG"}


def image_to_array(msg: common_pb2.Image, field: str = "image", limits: FrameLimits | None = None) -> np.ndarray:
    """Decodes an Image message to (H, W, 3) uint8 RGB; errors name ``field``.

    The size is checked against ``limits`` before any pixel is decoded: from
    width/height for RAW_RGB8, from the PNG or JPEG header otherwise (a small
    file can declare a huge image)."""
    limits = limits or FrameLimits()
    if msg.encoding == ENC.IMAGE_ENCODING_RAW_RGB8:
        w, h = msg.width, msg.height
        limits.check(w, h, field)
        if len(msg.data) != w * h * 3:
            raise InvalidInput(f"{field}.data: RAW_RGB8 {w}x{h} needs {w * h * 3} bytes, got {len(msg.data)}")
        return np.frombuffer(msg.data, np.uint8).reshape(h, w, 3).copy()
    if msg.encoding not in PIL_FORMAT:
        got = ENC.Name(msg.encoding) if msg.encoding in ENC.values() else msg.encoding
        raise InvalidInput(f"{field}.encoding: must be PNG, JPEG or RAW_RGB8, got {got}")
    name = PIL_FORMAT[msg.encoding]
    try:
        # open() reads the header only; the pixels are decoded by convert().
        img = Image.open(io.BytesIO(msg.data), formats=[name])
        limits.check(img.size[0], img.size[1], field)
        return np.asarray(img.convert("RGB"))
    except Image.DecompressionBombError:
        # PIL's own ceiling, hit in open() when the header declares a giant image.
        raise InvalidInput(f"{field}: the {name} header declares more than {limits.max_pixels} pixels") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        if isinstance(exc, InvalidInput):
            raise
        raise InvalidInput(f"{field}.data: not a decodable {name} image ({type(exc).__name__})") from None


def array_to_image(frame: np.ndarray, output: common_pb2.OutputFormat | None = None) -> common_pb2.Image:
    """Encodes (H, W, 3) uint8 RGB as the requested Image (PNG by default)."""
    enc = output.encoding if output is not None else ENC.IMAGE_ENCODING_UNSPECIFIED
    h, w = frame.shape[:2]
    if enc == ENC.IMAGE_ENCODING_RAW_RGB8:
        return common_pb2.Image(data=np.ascontiguousarray(frame).tobytes(), encoding=enc, width=w, height=h)
    buf = io.BytesIO()
    if enc == ENC.IMAGE_ENCODING_JPEG:
        Image.fromarray(frame).save(buf, format="JPEG", quality=(output.jpeg_quality or 90))
    else:
        enc = ENC.IMAGE_ENCODING_PNG
        # compress_level 1: frames stream at video rate; size matters less than latency.
        Image.fromarray(frame).save(buf, format="PNG", compress_level=1)
    return common_pb2.Image(data=buf.getvalue(), encoding=enc, width=w, height=h)


def check_output_format(output: common_pb2.OutputFormat, field: str = "output") -> None:
    if output.encoding not in ENC.values():
        raise InvalidInput(f"{field}.encoding: unknown value {output.encoding}")
    if not 0 <= output.jpeg_quality <= 100:
        raise InvalidInput(f"{field}.jpeg_quality: must be in [0, 100], got {output.jpeg_quality}")


def tensor_to_msg(t) -> common_pb2.Tensor:
    a = np.ascontiguousarray(np.asarray(t, dtype="<f4"))
    return common_pb2.Tensor(shape=list(a.shape), data=a.tobytes())


def msg_to_array(msg: common_pb2.Tensor, field: str = "tensor") -> np.ndarray:
    n = int(np.prod(msg.shape)) if msg.shape else 0
    if any(d < 0 for d in msg.shape) or len(msg.data) != 4 * n:
        raise InvalidInput(f"{field}: shape {list(msg.shape)} needs {4 * n} bytes, got {len(msg.data)}")
    return np.frombuffer(msg.data, "<f4").reshape(tuple(msg.shape)).copy()
