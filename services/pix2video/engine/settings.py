"""Method settings of an edit: the paper's defaults and every ablation switch.

Torch-free, so the command line can build its help from these fields' docstrings."""

from __future__ import annotations

from dataclasses import dataclass, field

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
    """Guided latent update toward the previous frame's predicted clean latent: x0 (authors' code: gradient
    w.r.t. x0, closed form, after the DDIM step), xt (paper eq. 1: gradient w.r.t. x_t through the UNet,
    before the step), or off."""
    update_strength: float = DEFAULT_UPDATE_STRENGTH
    """The latent update's step size delta."""
    update_start: float = DEFAULT_UPDATE_START
    """The latent update runs from this fraction of the steps on."""
    update_end: float = DEFAULT_UPDATE_END
    """The latent update runs until this fraction of the steps (0.5: steps 0..24 of 50)."""
    frames_in_flight: int = 1
    """Wavefront width: frames denoised together, frame i one step behind frame i-1, sharing each UNet call;
    the result equals one frame after another (faster on GPU)."""

    def __post_init__(self):
        check_prompt(self.prompt, "prompt")
        if not isinstance(self.negative_prompt, str):
            raise InvalidInput(f"negative_prompt: must be a string, got {self.negative_prompt!r}")
        check_num_steps(self.num_steps)
        _check_choice("reference", self.reference, REFERENCES)
        _check_choice("inject_layers", self.inject_layers, INJECT_LAYERS)
        _check_choice("latent_update", self.latent_update, LATENT_UPDATES)
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


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise InvalidInput(f"{name}: must be one of {', '.join(choices)}; got {value!r}")


def _check_range(name: str, value: object, lo: float, hi: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise InvalidInput(f"{name}: must be a number in [{lo:g}, {hi:g}], got {value!r}")
