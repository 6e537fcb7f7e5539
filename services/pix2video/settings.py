"""Runtime settings of the embedded engine (models, device, store), read once.

Torch-free at import (torch is loaded when a device is resolved), so the
command line can describe these without loading it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .engine.checks import check_dtype

if TYPE_CHECKING:
    import torch


def _home() -> Path:
    return Path(os.environ.get("PIX2VIDEO_HOME") or os.path.expanduser("~/.cache/pix2video"))


@dataclass(frozen=True)
class RuntimeSettings:
    """Where models come from and where they run."""

    model: str = "stabilityai/stable-diffusion-2-depth"
    """SD2-depth hub id, a local folder in its layout, or tiny (built-in random tiny models)."""
    caption_model: str | None = None
    """BLIP hub id or folder (none: <model>/captioner when that folder exists, else BLIP base)."""
    device: str = "auto"
    """cpu, cuda, cuda:N, or auto (CUDA when available)."""
    dtype: str = "auto"
    """Weights' dtype: auto (float16 on CUDA, float32 on CPU), float32, float16, bfloat16 or float64."""
    home: Path = field(default_factory=_home)
    """Cache folder for the tiny models; the default local store lives in it."""
    store: Path | None = None
    """Local latent-store folder (none: <home>/store)."""

    def __post_init__(self):
        from .devices import resolve_device

        check_dtype(self.dtype)
        resolve_device(self.device)  # an unknown device, or CUDA where there is none, fails now

    @property
    def torch_device(self) -> torch.device:
        from .devices import resolve_device

        return resolve_device(self.device)

    @property
    def resolved_device(self) -> str:
        return str(self.torch_device)

    @property
    def torch_dtype(self) -> torch.dtype:
        from .devices import resolve_dtype

        return resolve_dtype(self.dtype, self.torch_device)

    @property
    def store_dir(self) -> Path:
        return self.store or self.home / "store"
