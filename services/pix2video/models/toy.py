"""The ``toy`` model set: SD2-depth's layout, small, trained on the toy world.

Components (each a real diffusers/transformers class, saved with
``save_pretrained`` and read back by :func:`~.loading.load_model_set` exactly
as a hub checkpoint would be):

- ``vae/``: AutoencoderKL, 3 levels (scale factor 4: 128x128 frames -> 32x32x4 latents);
- ``text_encoder/`` + ``tokenizer/``: CLIP text model and a CLIP BPE tokenizer
  whose merges make every word of the world's grammar one token;
- ``unet/``: UNet2DConditionModel with SD2-depth's structure (5 input channels,
  latent + depth; linear projections; cross-attention down and up blocks),
  epsilon prediction;
- ``scheduler/``: SD2's DDIM schedule (scaled_linear 0.00085..0.012, 1000 steps);
- ``depth_estimator/`` + ``feature_extractor/``: DPT trained on the true depth;
- ``captioner/``: BLIP trained on the captions;
- ``clip/``: a small CLIP (image and text towers, trained contrastively) for
  CLIP-score metrics on the toy world; not part of SD2's layout, loaded with
  :func:`load_toy_clip`.

The weights are trained by ``pix2video train-toy`` (``pix2video.toytrain``)
and shipped in ``pix2video/models/toy_weights/`` (float16 safetensors).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from ..errors import ModelLoadError
from ..toyworld.grammar import WORDS
from .architecture import SCHEDULER, Sd2Size, Tower, blip_config, clip_config, sd2_modules
from .clip_bpe import write_clip_bpe

TOY = "toy"
TOY_SIZE = 128  # working resolution (pixels, square)
TOY_WEIGHTS = Path(__file__).with_name("toy_weights")
MAX_TOKENS = 32  # captions are at most ~20 words, one token each
TEXT_DIM = 128


def _bpe(pieces: list[str], ranks: dict[str, int]) -> list[str]:
    while len(pieces) > 1:
        pairs = [(ranks.get(f"{a} {b}"), i) for i, (a, b) in enumerate(zip(pieces, pieces[1:], strict=False))]
        pairs = [(r, i) for r, i in pairs if r is not None]
        if not pairs:
            break
        _, i = min(pairs)
        pieces = pieces[:i] + [pieces[i] + pieces[i + 1]] + pieces[i + 2 :]
    return pieces


def write_clip_tokenizer(folder: str | Path) -> int:
    """A CLIP BPE tokenizer: every byte (so any text encodes), plus one merge
    chain per grammar word so that each word is a single token. Returns the
    vocabulary size."""
    merges: list[str] = []
    merged: list[str] = []
    for word in WORDS:
        # Apply the merges so far (BPE: lowest rank first), then chain whatever
        # pieces remain left to right. New merges rank last, so words already
        # made whole stay whole.
        pieces = _bpe(list(word[:-1]) + [word[-1] + "</w>"], {m: r for r, m in enumerate(merges)})
        acc = pieces[0]
        for p in pieces[1:]:
            merges.append(f"{acc} {p}")
            acc += p
            merged.append(acc)
        merged.append(acc)
    folder = Path(folder)
    tok, vocab_size = write_clip_bpe(folder, merges, merged, MAX_TOKENS)
    split = [w for w in WORDS if len(tok(w, add_special_tokens=False).input_ids) != 1]
    if split:
        raise RuntimeError(f"toy tokenizer splits grammar words {split}")
    tok.save_pretrained(folder)
    return vocab_size


def blip_vocab() -> list[str]:
    return ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]"] + list(WORDS)


def write_blip_processor(folder: str | Path):
    """BLIP's processor: a BERT word-piece tokenizer over the grammar's words."""
    from transformers import BertTokenizer, BlipImageProcessor, BlipProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_file = folder / "vocab.txt"
    vocab_file.write_text("\n".join(blip_vocab()) + "\n")
    tokenizer = BertTokenizer(str(vocab_file), bos_token="[DEC]")
    processor = BlipProcessor(
        image_processor=BlipImageProcessor(size={"height": TOY_SIZE, "width": TOY_SIZE}), tokenizer=tokenizer
    )
    processor.save_pretrained(folder)
    return processor


# SD2-depth's layout at the toy world's size (scale factor 4: 128x128 frames -> 32x32x4 latents).
TOY_LAYOUT = Sd2Size(
    image_size=TOY_SIZE,
    vae_channels=(64, 128, 128),
    unet_channels=(64, 128, 192),
    unet_head_width=32,
    norm_num_groups=32,
    text=Tower(TEXT_DIM, 4 * TEXT_DIM, 4),
    max_tokens=MAX_TOKENS,
    depth=Tower(128, 512, 4),
    depth_image_size=TOY_SIZE,
    depth_patch_size=8,
)


def toy_modules(vocab_size: int, seed: int = 0) -> dict[str, Any]:
    """Freshly initialised toy components (seeded), before training."""
    from transformers import BlipConfig, BlipForConditionalGeneration, CLIPConfig, CLIPModel

    modules = sd2_modules(TOY_LAYOUT, vocab_size, seed)
    # Built after the SD2 parts from the same random stream, as the shipped weights were.
    text, vision = Tower(128, 512, 3), Tower(128, 512, 4)
    modules["captioner"] = BlipForConditionalGeneration(
        BlipConfig(**blip_config(blip_vocab(), text, vision, max_tokens=40, image_size=TOY_SIZE, patch_size=16))
    )
    modules["clip"] = CLIPModel(
        CLIPConfig(
            **clip_config(
                vocab_size, text, vision, MAX_TOKENS, image_size=TOY_SIZE, patch_size=16, projection_dim=TEXT_DIM
            )
        )
    )
    return modules


def write_static_parts(folder: str | Path) -> int:
    """Tokenizers, processors, scheduler and index of a toy folder (everything
    but the trained weights). Returns the CLIP vocabulary size."""
    from diffusers import DDIMScheduler
    from transformers import CLIPImageProcessor, DPTImageProcessor

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    vocab_size = write_clip_tokenizer(folder / "tokenizer")
    write_clip_tokenizer(folder / "clip")
    CLIPImageProcessor(
        size={"shortest_edge": TOY_SIZE}, crop_size={"height": TOY_SIZE, "width": TOY_SIZE}
    ).save_pretrained(folder / "clip")
    scheduler: Any = DDIMScheduler(**SCHEDULER)  # diffusers' lazy imports hide save_pretrained from mypy
    scheduler.save_pretrained(folder / "scheduler")
    DPTImageProcessor(size={"height": TOY_SIZE, "width": TOY_SIZE}, keep_aspect_ratio=False).save_pretrained(
        folder / "feature_extractor"
    )
    write_blip_processor(folder / "captioner")
    (folder / "model_index.json").write_text(
        json.dumps({"_class_name": "StableDiffusionDepth2ImgPipeline", "_pix2video_toy": True}, indent=1) + "\n"
    )
    return vocab_size


def save_component(folder: str | Path, name: str, module: Any, half: bool = True) -> None:
    """Saves one trained component into its subfolder, in float16 by default."""
    module = module.eval()
    if half:
        module = module.to(torch.float16)
    module.save_pretrained(Path(folder) / name, safe_serialization=True)


def toy_folder(path: str | Path | None = None) -> Path:
    """The shipped toy model folder (or ``path``), checked to hold trained weights."""
    folder = Path(path) if path is not None else TOY_WEIGHTS
    if not (folder / "model_index.json").is_file() or not (folder / "unet" / "config.json").is_file():
        raise ModelLoadError(
            "model: the toy weights are not installed (expected pix2video/models/toy_weights; "
            "run 'pix2video train-toy' to make them)"
        )
    return folder


class ToyClip:
    """The toy CLIP with its tokenizer and image processor; embeddings are L2-normalised.

    ``clip.texts(["a blue ball ..."])`` -> (N, 128); ``clip.images(frames)`` for
    (N, H, W, 3) uint8 frames -> (N, 128). CLIP-Text of an edit is
    ``(clip.images(edited) @ clip.texts([prompt]).T).mean()``; CLIP-Image
    (frame consistency) is the mean cosine of consecutive frames' image embeddings.
    """

    def __init__(self, model, tokenizer, processor):
        self.model, self.tokenizer, self.processor = model, tokenizer, processor

    @staticmethod
    def _tensor(out) -> torch.Tensor:
        # transformers 5 returns a model output whose pooler_output is the projection.
        return getattr(out, "pooler_output", out)

    @torch.no_grad()
    def texts(self, texts: list[str]) -> torch.Tensor:
        ids = self.tokenizer(texts, padding="max_length", truncation=True, return_tensors="pt").input_ids
        out = self._tensor(self.model.get_text_features(input_ids=ids.to(self.model.device)))
        return torch.nn.functional.normalize(out.float(), dim=-1)

    @torch.no_grad()
    def images(self, frames) -> torch.Tensor:
        pixels = self.processor(images=list(frames), return_tensors="pt").pixel_values.to(self.model.device)
        out = self._tensor(self.model.get_image_features(pixel_values=pixels))
        return torch.nn.functional.normalize(out.float(), dim=-1)


def load_toy_clip(path: str | Path | None = None, device: str | torch.device = "cpu") -> ToyClip:
    """The toy world's CLIP, for CLIP-Text / CLIP-Image scores (see :class:`ToyClip`).

    Args:
        path: a toy model folder (default: the shipped weights).
        device: torch device.

    Returns:
        a :class:`ToyClip` (CLIPModel in float32, eval mode, with its
        CLIPTokenizer and CLIPImageProcessor as ``.model``, ``.tokenizer``,
        ``.processor``).
    """
    from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

    folder = toy_folder(path) / "clip"
    try:
        model: Any = CLIPModel.from_pretrained(folder, torch_dtype=torch.float32)
        tokenizer = CLIPTokenizer.from_pretrained(folder)
        processor = CLIPImageProcessor.from_pretrained(folder)
    except Exception as exc:  # noqa: BLE001 - one readable line for any loading failure
        raise ModelLoadError(f"model: cannot load the toy CLIP: {str(exc).strip().splitlines()[0]}") from exc
    return ToyClip(model.to(device).eval().requires_grad_(False), tokenizer, processor)
