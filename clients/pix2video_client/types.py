"""Plain settings and results of the SDK (no protobuf in the caller's code)."""

from __future__ import annotations

from dataclasses import dataclass

from pix2video_api.common.v1 import common_pb2
from pix2video_api.editor.v1 import editor_pb2
from pix2video_api.inversion.v1 import inversion_pb2

from .enums import ENCODING, INJECT_LAYERS_VALUE, LATENT_UPDATE, REFERENCE, RESIZE, to_proto
from .options import (
    DEFAULT_HEIGHT,
    DEFAULT_INJECT_LAYERS,
    DEFAULT_LATENT_UPDATE,
    DEFAULT_NUM_STEPS,
    DEFAULT_REFERENCE,
    DEFAULT_RESIZE,
    DEFAULT_WIDTH,
)


@dataclass(frozen=True)
class InversionOptions:
    """See the inversion proto: width/height multiples of 64, resize crop|pad."""

    width: int = DEFAULT_WIDTH
    height: int = DEFAULT_HEIGHT
    resize: str = DEFAULT_RESIZE
    num_steps: int = DEFAULT_NUM_STEPS
    source_prompt: str | None = None
    max_frames: int = 0

    def to_proto(self) -> inversion_pb2.InversionSettings:
        msg = inversion_pb2.InversionSettings(
            width=self.width,
            height=self.height,
            resize=to_proto(RESIZE, self.resize, "resize"),
            num_steps=self.num_steps,
            max_frames=self.max_frames,
        )
        if self.source_prompt is not None:
            msg.source_prompt = self.source_prompt
        return msg


@dataclass(frozen=True)
class EditOptions:
    """The method switches; None keeps the server's (the paper's) default."""

    negative_prompt: str = ""
    guidance_scale: float | None = None
    num_steps: int | None = None
    seed: int = 0
    reference: str = DEFAULT_REFERENCE
    inject_layers: str = DEFAULT_INJECT_LAYERS
    latent_update: str = DEFAULT_LATENT_UPDATE
    update_strength: float | None = None
    update_start: float | None = None
    update_end: float | None = None
    frames_in_flight: int = 0

    def to_proto(self, prompt: str) -> editor_pb2.EditSettings:
        msg = editor_pb2.EditSettings(
            prompt=prompt,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            reference=to_proto(REFERENCE, self.reference, "reference"),
            inject_layers=to_proto(INJECT_LAYERS_VALUE, self.inject_layers, "inject_layers"),
            latent_update=to_proto(LATENT_UPDATE, self.latent_update, "latent_update"),
            frames_in_flight=self.frames_in_flight,
        )
        for name in ("guidance_scale", "num_steps", "update_strength", "update_start", "update_end"):
            if getattr(self, name) is not None:
                setattr(msg, name, getattr(self, name))
        return msg


def output_format(encoding: str, jpeg_quality: int = 0) -> common_pb2.OutputFormat:
    return common_pb2.OutputFormat(encoding=to_proto(ENCODING, encoding, "encoding"), jpeg_quality=jpeg_quality)


@dataclass(frozen=True)
class VideoInfo:
    video_id: str
    cached: bool
    num_frames: int
    width: int
    height: int
    num_steps: int
    source_prompt: str
    fps: float

    @classmethod
    def from_proto(cls, m: inversion_pb2.VideoInfo) -> "VideoInfo":
        return cls(m.video_id, m.cached, m.num_frames, m.width, m.height, m.num_steps, m.source_prompt, m.fps)


@dataclass(frozen=True)
class EditQuality:
    """A finished edit's quality as the editor measured it (``edit(..., on_quality=...)``):
    the paper's CLIP-Text and CLIP-Image, over ``frames`` frames, in ``seconds``."""

    clip_text: float
    clip_image: float
    frames: int
    seconds: float

    @classmethod
    def from_proto(cls, m: editor_pb2.EditQuality) -> "EditQuality":
        return cls(m.clip_text, m.clip_image, m.frames, m.seconds)


@dataclass(frozen=True)
class Frame:
    """An edited frame as sent: ``data`` in ``encoding`` (png, jpeg or raw RGB)."""

    index: int
    data: bytes
    encoding: str
    width: int
    height: int

    def to_array(self):
        """(H, W, 3) uint8; needs numpy (and pillow for PNG/JPEG)."""
        import io

        import numpy as np

        if self.encoding == "raw":
            return np.frombuffer(self.data, np.uint8).reshape(self.height, self.width, 3)
        from PIL import Image

        return np.asarray(Image.open(io.BytesIO(self.data)).convert("RGB"))


_ENC_NAME = {v: k for k, v in ENCODING.items()}


def frame_from_proto(m: editor_pb2.EditedFrame) -> Frame:
    return Frame(m.index, m.image.data, _ENC_NAME.get(m.image.encoding, "png"), m.image.width, m.image.height)
