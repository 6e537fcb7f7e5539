"""Runtime settings of the embedded engine (models, device, store), read once."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import InvalidInput

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16, "float64": torch.float64}


def _home() -> Path:
    return Path(os.environ.get("PIX2VIDEO_HOME") or os.path.expanduser("~/.cache/pix2video"))


@dataclass(frozen=True)
class RuntimeSettings:
    """Where models come from and where they run.

    Args:
        model: hub id, local folder, or ``tiny`` (built-in random tiny models).
        caption_model: BLIP hub id or folder (default: see ``load_model_set``).
        device: ``cpu``, ``cuda``, ``cuda:1``, ... (``auto``: CUDA when available).
        dtype: ``auto`` (float16 on CUDA, float32 on CPU) or a name in ``DTYPES``.
        home: cache folder for the tiny models; the default local store lives in it.
        store: local latent-store folder (default ``<home>/store``).
    """

    model: str = "stabilityai/stable-diffusion-2-depth"
    caption_model: str | None = None
    device: str = "auto"
    dtype: str = "auto"
    home: Path = field(default_factory=_home)
    store: Path | None = None

    def __post_init__(self):
        if self.dtype != "auto" and self.dtype not in DTYPES:
            raise InvalidInput(f"dtype: must be auto or one of {', '.join(DTYPES)}; got {self.dtype!r}")
        try:
            dev = torch.device(self.resolved_device)
        except (RuntimeError, ValueError) as exc:
            raise InvalidInput(f"device: invalid value {self.device!r} ({exc})") from None
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InvalidInput(f"device: {self.device!r} requested but CUDA is not available here")

    @property
    def resolved_device(self) -> str:
        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        return self.device

    @property
    def torch_dtype(self) -> torch.dtype:
        if self.dtype == "auto":
            return torch.float16 if self.resolved_device.startswith("cuda") else torch.float32
        return DTYPES[self.dtype]

    @property
    def store_dir(self) -> Path:
        return self.store or self.home / "store"
