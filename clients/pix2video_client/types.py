"""Plain settings and results of the SDK (no protobuf in the caller's code)."""

from __future__ import annotations

from dataclasses import dataclass

from pix2video_api.common.v1 import common_pb2
from pix2video_api.editor.v1 import editor_pb2
from pix2video_api.inversion.v1 import inversion_pb2

ENCODINGS = {
    "png": common_pb2.IMAGE_ENCODING_PNG,
    "jpeg": common_pb2.IMAGE_ENCODING_JPEG,
    "raw": common_pb2.IMAGE_ENCODING_RAW_RGB8,
}
_REF = {
    "anchor+previous": editor_pb2.REFERENCE_ANCHOR_PREVIOUS,
    "anchor": editor_pb2.REFERENCE_ANCHOR,
    "previous": editor_pb2.REFERENCE_PREVIOUS,
    "anchor+random": editor_pb2.REFERENCE_ANCHOR_RANDOM,
}
_LAYERS = {
    "decoder": editor_pb2.INJECT_LAYERS_DECODER,
    "all": editor_pb2.INJECT_LAYERS_ALL,
    "none": editor_pb2.INJECT_LAYERS_NONE,
}
_UPDATE = {"x0": editor_pb2.LATENT_UPDATE_X0, "xt": editor_pb2.LATENT_UPDATE_XT, "off": editor_pb2.LATENT_UPDATE_OFF}
_RESIZE = {"crop": inversion_pb2.RESIZE_MODE_CROP, "pad": inversion_pb2.RESIZE_MODE_PAD}


def _pick(table: dict, value: str, name: str) -> int:
    if value not in table:
        raise ValueError(f"{name}: must be one of {', '.join(table)}; got {value!r}")
    return table[value]


@dataclass(frozen=True)
class InversionOptions:
    """See the inversion proto: width/height multiples of 64, resize crop|pad."""

    width: int = 512
    height: int = 512
    resize: str = "crop"
    num_steps: int = 50
    source_prompt: str | None = None
    max_frames: int = 0

    def to_proto(self) -> inversion_pb2.InversionSettings:
        msg = inversion_pb2.InversionSettings(
            width=self.width,
            height=self.height,
            resize=_pick(_RESIZE, self.resize, "resize"),
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
    reference: str = "anchor+previous"
    inject_layers: str = "decoder"
    latent_update: str = "x0"
    update_strength: float | None = None
    update_start: float | None = None
    update_end: float | None = None
    frames_in_flight: int = 0

    def to_proto(self, prompt: str) -> editor_pb2.EditSettings:
        msg = editor_pb2.EditSettings(
            prompt=prompt,
            negative_prompt=self.negative_prompt,
            seed=self.seed,
            reference=_pick(_REF, self.reference, "reference"),
            inject_layers=_pick(_LAYERS, self.inject_layers, "inject_layers"),
            latent_update=_pick(_UPDATE, self.latent_update, "latent_update"),
            frames_in_flight=self.frames_in_flight,
        )
        for name in ("guidance_scale", "num_steps", "update_strength", "update_start", "update_end"):
            if getattr(self, name) is not None:
                setattr(msg, name, getattr(self, name))
        return msg


def output_format(encoding: str, jpeg_quality: int = 0) -> common_pb2.OutputFormat:
    return common_pb2.OutputFormat(encoding=_pick(ENCODINGS, encoding, "encoding"), jpeg_quality=jpeg_quality)


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


_ENC_NAME = {v: k for k, v in ENCODINGS.items()}


def frame_from_proto(m: editor_pb2.EditedFrame) -> Frame:
    return Frame(m.index, m.image.data, _ENC_NAME.get(m.image.encoding, "png"), m.image.width, m.image.height)
