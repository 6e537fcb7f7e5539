"""What the engine needs from its models: Protocols the engine is typed against.

The engine never names a concrete loader. ``pix2video.models`` provides the
implementations: the full :class:`~pix2video.models.loading.ModelSet` (every
SD2-depth component) and, for the depth and caption services, the single
components of :mod:`pix2video.models.components`. Tests and benchmarks may
pass anything else with these attributes. The check at the bottom makes mypy
prove that the loaded classes satisfy these Protocols.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

import torch


class OnDevice(Protocol):
    @property
    def device(self) -> torch.device: ...

    @property
    def dtype(self) -> torch.dtype: ...


class ModelSet(OnDevice, Protocol):
    """The SD2-depth components the inverter, the editor, the text and VAE
    helpers use (no depth estimator, no captioner: those are separate stages)."""

    # diffusers' model classes are typed as Any: its lazy imports hide their
    # ConfigMixin and ModelMixin members from mypy.
    @property
    def unet(self) -> Any: ...  # UNet2DConditionModel with in_channels=5 (latent + depth)

    @property
    def vae(self) -> Any: ...  # AutoencoderKL

    @property
    def text_encoder(self) -> Any: ...  # transformers' CLIPTextModel: called, returns (hidden states, ...)

    @property
    def tokenizer(self) -> Any: ...  # transformers' CLIPTokenizer

    @property
    def scheduler_config(self) -> dict: ...

    @property
    def vae_scale_factor(self) -> int: ...


class DepthModels(OnDevice, Protocol):
    """What :class:`~pix2video.engine.depth.DepthEstimator` reads."""

    @property
    def depth_estimator(self) -> Any: ...  # DPTForDepthEstimation, or None when loaded without depth

    @property
    def feature_extractor(self) -> Any: ...  # DPTImageProcessor

    @property
    def vae_scale_factor(self) -> int: ...


class CaptionModels(Protocol):
    """What :class:`~pix2video.engine.caption.Captioner` reads."""

    def captioner(self) -> tuple[Any, Any]: ...  # (BlipForConditionalGeneration, BlipProcessor)


if TYPE_CHECKING:  # mypy proves the loaded classes satisfy the Protocols; nothing runs
    from ..models.components import CaptionComponents, DepthComponents
    from ..models.loading import ModelSet as LoadedModelSet

    def _conforms(
        full: LoadedModelSet, depth: DepthComponents, caption: CaptionComponents
    ) -> tuple[ModelSet, DepthModels, CaptionModels, DepthModels, CaptionModels]:
        return full, depth, caption, full, full
