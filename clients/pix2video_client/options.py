"""The choices and defaults that the SDK, the services and the CLI share.

Plain Python (no protobuf, no torch), so the SDK, the engine's settings and the
command line's help all read these one definitions.
"""

from __future__ import annotations

# Frames whose self-attention features are injected into frame i > 0.
REFERENCES = ("anchor+previous", "anchor", "previous", "anchor+random")
# Self-attention layers that inject: the UNet's up blocks (the paper), every one, or none.
INJECT_LAYERS = ("decoder", "all", "none")
# Guided latent update: w.r.t. x0 (authors' code), w.r.t. x_t (paper eq. 1), or off.
LATENT_UPDATES = ("x0", "xt", "off")
# How a frame reaches the working resolution: cover and centre-crop, or fit and pad.
RESIZE_MODES = ("crop", "pad")
# Encodings of an edited frame on the wire.
ENCODINGS = ("png", "jpeg", "raw")
# Model weight dtypes by name; ``auto`` (float16 on CUDA, float32 elsewhere) is accepted besides.
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")

# The paper's settings of an edit.
DEFAULT_REFERENCE = REFERENCES[0]
DEFAULT_INJECT_LAYERS = INJECT_LAYERS[0]
DEFAULT_LATENT_UPDATE = LATENT_UPDATES[0]
DEFAULT_RESIZE = RESIZE_MODES[0]
DEFAULT_NUM_STEPS = 50
DEFAULT_GUIDANCE_SCALE = 7.5
DEFAULT_UPDATE_STRENGTH = 100.0
DEFAULT_UPDATE_START = 0.0
DEFAULT_UPDATE_END = 0.5
DEFAULT_WIDTH = DEFAULT_HEIGHT = 512

# Limits a request is checked against.
MIN_STEPS, MAX_STEPS = 1, 1000
MAX_PROMPT_CHARS = 2000
MAX_GUIDANCE = 50.0
MAX_UPDATE_STRENGTH = 1e4
MAX_FRAMES_IN_FLIGHT = 256
