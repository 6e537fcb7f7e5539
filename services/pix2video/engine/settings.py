"""Method settings of an edit: the paper's defaults and every ablation switch.

Torch-free, so the command line can build its help from these fields' docstrings."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Mapping

from pix2video_client.options import (
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_INJECT_LAYERS,
    DEFAULT_LATENT_UPDATE,
    DEFAULT_NUM_STEPS,
    DEFAULT_REFERENCE,
    DEFAULT_UPDATE_END,
    DEFAULT_UPDATE_START,
    DEFAULT_UPDATE_STRENGTH,
    INJECT_LAYERS,
    LATENT_UPDATES,
    MAX_FRAMES_IN_FLIGHT,
    MAX_GUIDANCE,
    MAX_UPDATE_STRENGTH,
    REFERENCES,
)

from ..errors import InvalidInput
from .checks import check_num_steps, check_prompt

# How the latent update's step is normalised (EditSettings.update_normalisation).
UPDATE_NORMALISATIONS = ("sd512", "latent")
DEFAULT_UPDATE_NORMALISATION = UPDATE_NORMALISATIONS[0]
# SD2-depth's latent at its 512x512 working size: 4 channels x 64 x 64. The
# authors' delta (100) was chosen for a mean over this many values; dividing by
# it at every size keeps delta's pull per element (the toy world's 128x128
# frames have 4,096 latent values: the mean pulled each 4x as hard, and raised
# Pixel-MSE there, docs/runs/2026-12-01-h200-update-ablation/).
SD512_LATENT_NUMEL = 4 * 64 * 64


@dataclass(frozen=True)
class EditSettings:
    """How to edit one inverted video: the paper's defaults and every ablation switch."""

    prompt: str
    """The target prompt P', e.g. 'a crochet swan on the lake'."""
    negative_prompt: str = ""
    """Prompt of the unconditional guidance branch (empty, as in the paper)."""
    guidance_scale: float = DEFAULT_GUIDANCE_SCALE
    """Classifier-free guidance weight; 1 runs the conditional branch only."""
    num_steps: int = DEFAULT_NUM_STEPS
    """DDIM steps; must equal the inversion's step count."""
    seed: int = 0
    """Seeds every random choice (the anchor+random reference frame)."""
    reference: str = field(default=DEFAULT_REFERENCE, metadata={"choices": REFERENCES})
    """Frames whose self-attention keys/values frame i > 0 attends to: anchor+previous (the paper), anchor,
    previous, or anchor+random (the anchor and a random earlier frame)."""
    inject_layers: str = field(default=DEFAULT_INJECT_LAYERS, metadata={"choices": INJECT_LAYERS})
    """Self-attention layers that inject: decoder (the paper: the UNet's up blocks), all, or none."""
    latent_update: str = field(default=DEFAULT_LATENT_UPDATE, metadata={"choices": LATENT_UPDATES})
    """Guided latent update toward the previous frame's predicted clean latent, applied to x_{t-1} after the
    DDIM step: x0 (authors' code: gradient w.r.t. x0, closed form), xt (paper eq. 1: gradient w.r.t. x_t,
    through the UNet), or off."""
    update_strength: float = DEFAULT_UPDATE_STRENGTH
    """The latent update's step size delta (100: the authors', for SD2-depth's 512x512 latent)."""
    update_start: float = DEFAULT_UPDATE_START
    """The latent update runs from this fraction of the steps on."""
    update_end: float = DEFAULT_UPDATE_END
    """The latent update runs until this fraction of the steps (0.5: steps 0..24 of 50)."""
    update_normalisation: str = field(default=DEFAULT_UPDATE_NORMALISATION, metadata={"choices": UPDATE_NORMALISATIONS})
    """What the update's squared error toward the previous x0 is divided by: sd512 (SD2-depth's 64x64x4 latent at
    512x512, so delta pulls each element as hard at every size) or latent (the latent's own size, the authors' mean:
    4x the pull per element at 256x256); the two are equal at 512x512."""
    frames_in_flight: int = 1
    """Wavefront width: frames denoised together, frame i one step behind frame i-1, sharing each UNet call;
    the result equals one frame after another (faster on GPU)."""

    def __post_init__(self):
        check_prompt(self.prompt, "prompt")
        check_prompt(self.negative_prompt, "negative_prompt", allow_empty=True)
        check_num_steps(self.num_steps)
        _check_choice("reference", self.reference, REFERENCES)
        _check_choice("inject_layers", self.inject_layers, INJECT_LAYERS)
        _check_choice("latent_update", self.latent_update, LATENT_UPDATES)
        _check_choice("update_normalisation", self.update_normalisation, UPDATE_NORMALISATIONS)
        _check_range("guidance_scale", self.guidance_scale, 1.0, MAX_GUIDANCE)
        _check_range("update_strength", self.update_strength, 0.0, MAX_UPDATE_STRENGTH)
        _check_range("update_start", self.update_start, 0.0, 1.0)
        _check_range("update_end", self.update_end, self.update_start, 1.0)
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or not 0 <= self.seed < 2**63:
            raise InvalidInput(f"seed: must be an integer in [0, 2^63), got {self.seed!r}")
        if not isinstance(self.frames_in_flight, int) or not 1 <= self.frames_in_flight <= MAX_FRAMES_IN_FLIGHT:
            raise InvalidInput(
                f"frames_in_flight: must be an integer in [1, {MAX_FRAMES_IN_FLIGHT}], got {self.frames_in_flight!r}"
            )

    @property
    def guided(self) -> bool:
        return self.guidance_scale > 1.0

    def updates_at(self, step: int) -> bool:
        """Whether the latent update runs at denoising step ``step``."""
        return (
            self.latent_update != "off"
            and self.update_strength > 0
            and self.update_start * self.num_steps <= step < self.update_end * self.num_steps
        )

    def update_divisor(self, numel: int) -> int:
        """What the update's squared error toward the previous frame's x0 is divided by, for a latent of
        ``numel`` values: ``numel`` itself (a mean, the authors' code) or SD2-depth's 512x512 latent size."""
        return SD512_LATENT_NUMEL if self.update_normalisation == "sd512" else numel


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidInput(f"{name}: must be one of {', '.join(choices)}; got {value!r}")


def _check_range(name: str, value: object, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise InvalidInput(f"{name}: must be a number in [{lo:g}, {hi:g}], got {value!r}")


@dataclass(frozen=True)
class Preset:
    """A named set of method choices laid over the defaults.

    Each mapping holds field values of one settings class; a value the user
    gives explicitly wins over the preset's.
    """

    name: str
    inversion: Mapping[str, object] = field(default_factory=dict)
    """Fields of ``pix2video.jobs.InversionSettings``."""
    edit: Mapping[str, object] = field(default_factory=dict)
    """Fields of :class:`EditSettings`."""
    dtype: str | None = None
    """Model dtype when the runtime's is ``auto`` (None: leave it to the runtime)."""

    def apply(self, settings, part: str, given: set[str] | frozenset[str] = frozenset()):
        """``settings`` with this preset's ``part`` (``inversion`` or ``edit``)
        fields set, except those named in ``given``."""
        values = {k: v for k, v in getattr(self, part).items() if k not in given}
        return dataclasses.replace(settings, **values) if values else settings


PRESETS = {
    # The paper's method with diffusers' depth2img conventions (cover-crop
    # resize, bicubic depth, the hub scheduler's steps_offset=1, update on
    # steps 0..24 of 50, float16 on CUDA).
    "default": Preset("default"),
    # What duyguceylan/pix2video's script runs (code/test_cfg.py and
    # code/video_model_cross_frame_attn.py): every frame squashed to the
    # working size, depth resized bilinearly, a DDIMScheduler built with
    # steps_offset=0 (timesteps 980..0), the latent update while i <= 25
    # (26 of 50 steps: update_end = 26/50) with their mean over the latent's own
    # elements (update_normalisation latent), float32. tests/test_oracle_authors.py
    # holds the engine under this preset to a re-implementation of that loop.
    "authors": Preset(
        "authors",
        inversion={"resize": "squash", "depth_resize": "bilinear", "steps_offset": 0},
        edit={"update_end": 0.52, "update_normalisation": "latent"},
        dtype="float32",
    ),
}


def get_preset(name: object) -> Preset:
    if name not in PRESETS:
        raise InvalidInput(f"preset: must be one of {', '.join(PRESETS)}; got {name!r}")
    return PRESETS[name]
