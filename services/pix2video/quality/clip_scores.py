"""CLIP-Text and CLIP-Image, as in the paper's Table 2.

- CLIP-Text: mean cosine similarity between the prompt's CLIP text embedding
  and each edited frame's CLIP image embedding (prompt faithfulness).
- CLIP-Image: mean cosine similarity between the image embeddings of
  consecutive edited frames (temporal consistency).

Frames go through CLIP's own preprocessing (``CLIPProcessor``: resize of the
short side, centre crop, CLIP's normalisation), and the embeddings are the
projected ones (``get_text_features`` / ``get_image_features``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from ..errors import InvalidInput, ModelLoadError
from .options import DEFAULT_CLIP_MODEL, TOY_CLIP


def _features(out) -> torch.Tensor:
    # transformers 5 returns a model output whose pooler_output is projected;
    # 4.x returned the projected tensor itself.
    return out.pooler_output if hasattr(out, "pooler_output") else out


class ClipScorer:
    """Image and text embeddings from one CLIP model (hub id or folder).

    Args:
        model: a ``CLIPModel`` + ``CLIPProcessor`` hub id or folder
            (default ViT-L/14, the family the paper uses), or ``toy`` for the
            toy world's CLIP (``pix2video/models/toy_weights/clip``).
        device: torch device.
        batch_size: frames per image-encoder call.
    """

    def __init__(self, model: str = DEFAULT_CLIP_MODEL, device: str | torch.device = "cpu", batch_size: int = 16):
        from transformers import CLIPModel, CLIPProcessor

        folder = model
        if model == TOY_CLIP:
            from ..models.toy import toy_folder

            folder = str(toy_folder() / "clip")  # the toy world's CLIP ships inside the toy model set
        try:
            self.processor = CLIPProcessor.from_pretrained(folder)
            self.model = CLIPModel.from_pretrained(folder, torch_dtype=torch.float32).to(device).eval()
        except Exception as exc:  # noqa: BLE001 - one readable line for any loading failure
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ModelLoadError(f"clip_model: cannot load {model!r}: {first}") from exc
        self.name = model
        self.device = torch.device(device)
        self.batch_size = batch_size

    @torch.no_grad()
    def image_embeddings(self, frames: np.ndarray, progress: Callable[[int], None] | None = None) -> torch.Tensor:
        """(N, H, W, 3) uint8 -> (N, D) unit-norm float64 embeddings."""
        out = []
        for i in range(0, len(frames), self.batch_size):
            chunk = list(frames[i : i + self.batch_size])
            pixels = self.processor(images=chunk, return_tensors="pt").pixel_values.to(self.device)
            out.append(_features(self.model.get_image_features(pixel_values=pixels)).double().cpu())
            if progress:
                progress(len(chunk))
        e = torch.cat(out)
        return e / e.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def text_embedding(self, prompt: str) -> torch.Tensor:
        """(D,) unit-norm float64 embedding of ``prompt`` (truncated to CLIP's 77 tokens)."""
        tok = self.processor.tokenizer
        ids = tok([prompt], padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt")
        e = _features(
            self.model.get_text_features(
                input_ids=ids.input_ids.to(self.device), attention_mask=ids.attention_mask.to(self.device)
            )
        )
        e = e[0].double().cpu()
        return e / e.norm()


def clip_text(image_emb: torch.Tensor, text_emb: torch.Tensor) -> float:
    """Mean cosine between every frame's embedding and the prompt's."""
    return float((image_emb @ text_emb).mean())


def clip_image(image_emb: torch.Tensor) -> float:
    """Mean cosine between consecutive frames' embeddings."""
    if len(image_emb) < 2:
        raise InvalidInput(f"frames: CLIP-Image needs at least 2 frames, got {len(image_emb)}")
    return float((image_emb[1:] * image_emb[:-1]).sum(-1).mean())
