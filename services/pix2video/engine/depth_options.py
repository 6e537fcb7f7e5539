"""The depth estimator's choices, torch-free so that service settings (and
their help) can name them without loading torch (see :mod:`.depth`)."""

from __future__ import annotations

# Where DPT's input is made: the model's image processor on the host, torch on
# the model's device, or auto (the device on CUDA, the host elsewhere).
DEPTH_PREPROCESS_MODES = ("auto", "host", "device")
