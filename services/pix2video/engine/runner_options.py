"""The UNet runner's choices, torch-free so that service settings (and their
help) can name them without loading torch."""

from __future__ import annotations

DEFAULT_BUCKETS = (2, 4, 8, 16, 24, 32, 48, 64, 96, 128)
# Inductor modes that leave CUDA graphs to the runner (it captures its own).
COMPILE_MODES = ("default", "max-autotune-no-cudagraphs")
# Precisions of the UNet's transformer linear layers (engine/fp8.py).
PRECISIONS = ("fp16", "fp8")
