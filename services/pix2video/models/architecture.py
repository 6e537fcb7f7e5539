"""The architectures of the model sets built here, at any size: SD2-depth's
layout (UNet, VAE, CLIP text encoder, DPT), BLIP captioning and CLIP.

One builder per component returns its config as keyword arguments (the
diffusers constructor's, or the transformers config class's); the structure
is fixed here once (which blocks carry cross-attention, linear projections,
the special tokens' ids, DPT's neck) and the sizes are the arguments. The
``toy`` set (:mod:`.toy`), the tiny test set (:mod:`.tiny`) and the tiny CLIP
(:mod:`pix2video.quality.tiny_clip`) are these at their sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

# SD2's DDIM schedule (scaled_linear 0.00085..0.012, 1000 steps, epsilon prediction).
SCHEDULER = dict(
    num_train_timesteps=1000,
    beta_start=0.00085,
    beta_end=0.012,
    beta_schedule="scaled_linear",
    clip_sample=False,
    set_alpha_to_one=False,
    steps_offset=1,
    prediction_type="epsilon",
)


@dataclass(frozen=True)
class Tower:
    """The size of one transformer stack, in transformers' config names."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int = 4


@dataclass(frozen=True)
class Sd2Size:
    """The sizes of one set in SD2-depth's layout."""

    image_size: int  # pixels the VAE is made for
    vae_channels: tuple[int, ...]  # one level each; the VAE scales by 2 ** (levels - 1)
    unet_channels: tuple[int, ...]
    unet_head_width: int  # channels per attention head
    norm_num_groups: int  # the UNet's and the VAE's group norms
    text: Tower
    max_tokens: int
    depth: Tower
    depth_image_size: int
    depth_patch_size: int

    @property
    def latent_size(self) -> int:
        return self.image_size // 2 ** (len(self.vae_channels) - 1)


def unet_config(size: Sd2Size) -> dict[str, Any]:
    """SD2-depth's UNet: 5 input channels (latent + depth), cross-attention in
    every down block but the last and every up block but the first, linear
    projections, epsilon prediction."""
    channels = size.unet_channels
    return dict(
        sample_size=size.latent_size,
        in_channels=5,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D",) * (len(channels) - 1) + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (len(channels) - 1),
        cross_attention_dim=size.text.hidden_size,
        attention_head_dim=tuple(c // size.unet_head_width for c in channels),  # SD2's misnomer: the number of heads
        use_linear_projection=True,
        norm_num_groups=size.norm_num_groups,
    )


def vae_config(size: Sd2Size) -> dict[str, Any]:
    """SD's AutoencoderKL: RGB in and out, 4 latent channels."""
    levels = len(size.vae_channels)
    return dict(
        in_channels=3,
        out_channels=3,
        latent_channels=4,
        block_out_channels=size.vae_channels,
        down_block_types=("DownEncoderBlock2D",) * levels,
        up_block_types=("UpDecoderBlock2D",) * levels,
        layers_per_block=1,
        norm_num_groups=size.norm_num_groups,
        sample_size=size.image_size,
    )


def clip_text_config(vocab_size: int, tower: Tower, max_tokens: int, projection_dim: int | None = None) -> dict:
    """A CLIP text tower over one of our BPE vocabularies, which end in
    ``<|startoftext|>``, ``<|endoftext|>`` (the end token pads)."""
    config = dict(
        vocab_size=vocab_size,
        **asdict(tower),
        max_position_embeddings=max_tokens,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=vocab_size - 1,
    )
    if projection_dim is not None:
        config["projection_dim"] = projection_dim
    return config


def text_encoder_config(vocab_size: int, size: Sd2Size) -> dict:
    """The set's CLIPTextConfig (its projection is square; the pipeline reads the hidden states)."""
    return clip_text_config(vocab_size, size.text, size.max_tokens, projection_dim=size.text.hidden_size)


def dpt_config(size: Sd2Size) -> dict:
    """DPT (ViT backbone, not hybrid): four reassembled stages, the neck at a
    quarter, half, one and one times the hidden size, fusion at half."""
    h = size.depth.hidden_size
    return dict(
        **asdict(size.depth),
        image_size=size.depth_image_size,
        patch_size=size.depth_patch_size,
        backbone_out_indices=[0, 1, 2, 3],
        neck_hidden_sizes=[h // 4, h // 2, h, h],
        fusion_hidden_size=h // 2,
        reassemble_factors=[4, 2, 1, 0.5],
        is_hybrid=False,
    )


def _vision_config(tower: Tower, image_size: int, patch_size: int) -> dict:
    return dict(**asdict(tower), image_size=image_size, patch_size=patch_size)


def blip_config(
    vocab: list[str], text: Tower, vision: Tower, max_tokens: int, image_size: int, patch_size: int
) -> dict:
    """BLIP captioning over a word-piece vocabulary holding BERT's specials
    and ``[DEC]`` (the decoder's start token)."""
    return dict(
        text_config=dict(
            vocab_size=len(vocab),
            **asdict(text),
            max_position_embeddings=max_tokens,
            encoder_hidden_size=vision.hidden_size,
            bos_token_id=vocab.index("[DEC]"),
            sep_token_id=vocab.index("[SEP]"),
            pad_token_id=vocab.index("[PAD]"),
            eos_token_id=vocab.index("[SEP]"),
        ),
        vision_config=_vision_config(vision, image_size, patch_size),
    )


def clip_config(
    vocab_size: int, text: Tower, vision: Tower, max_tokens: int, image_size: int, patch_size: int, projection_dim: int
) -> dict:
    """CLIP, image and text towers, for CLIP-score metrics."""
    return dict(
        text_config=clip_text_config(vocab_size, text, max_tokens),
        vision_config=_vision_config(vision, image_size, patch_size),
        projection_dim=projection_dim,
    )


def sd2_modules(size: Sd2Size, vocab_size: int, seed: int) -> dict[str, Any]:
    """Freshly initialised UNet, VAE, text encoder and DPT at ``size``: seeded
    once, built in that order (the order fixes each one's random weights)."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, DPTConfig, DPTForDepthEstimation

    torch.manual_seed(seed)
    return {
        "unet": UNet2DConditionModel(**unet_config(size)),
        "vae": AutoencoderKL(**vae_config(size)),
        "text_encoder": CLIPTextModel(CLIPTextConfig(**text_encoder_config(vocab_size, size))),
        "depth_estimator": DPTForDepthEstimation(DPTConfig(**dpt_config(size))),
    }
