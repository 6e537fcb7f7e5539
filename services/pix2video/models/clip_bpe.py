"""CLIP byte-level BPE tokenizers written from their merges, for the model
sets built here (no vocabulary can be downloaded where they are built)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def bytes_to_unicode() -> dict[int, str]:
    """The byte -> unicode table that CLIP's byte-level BPE uses (same as GPT-2)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def write_clip_bpe(folder: Path, merges: list[str], merged: list[str], max_length: int) -> tuple[Any, int]:
    """Writes a CLIP BPE vocabulary into ``folder``: every byte, with and
    without the end-of-word marker, then ``merged`` (the tokens ``merges``
    make), then the start and end tokens (the end token pads). Returns the
    CLIPTokenizer read back from those files and the vocabulary's size.

    Loading the plain files through from_pretrained works across transformers
    versions (their constructors differ); saving the tokenizer again (the
    caller's, once it has checked it) adds tokenizer.json."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + merged + ["<|startoftext|>", "<|endoftext|>"]
    vocab = {t: i for i, t in enumerate(dict.fromkeys(tokens))}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": max_length, "pad_token": "<|endoftext|>", "tokenizer_class": "CLIPTokenizer"})
    )
    return CLIPTokenizer.from_pretrained(folder), len(vocab)
