"""Where models run: the one dtype table and the one device/dtype resolver, used
by the command line, the embedded engine and every service."""

from __future__ import annotations

import torch

from pix2video_client.options import DTYPE_NAMES

from .engine.checks import check_dtype
from .errors import InvalidInput

DTYPES: dict[str, torch.dtype] = {name: getattr(torch, name) for name in DTYPE_NAMES}


def resolve_device(device: str | torch.device) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; anything else as torch reads it."""
    name = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as exc:
        raise InvalidInput(f"device: invalid value {device!r} ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInput(f"device: {device!r} requested but CUDA is not available here")
    return dev


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` -> float16 on CUDA, float32 elsewhere; else a name in :data:`DTYPES`."""
    if check_dtype(dtype) == "auto":
        return torch.float16 if device.type == "cuda" else torch.float32
    return DTYPES[dtype]
