"""Retrains only the UNet and text encoder of a finished toy model set.

``python -m pix2video.toytrain.retrain SOURCE OUTPUT [--steps N] [--max-seconds S] [--uncond-prob P]
[--noise-discount O] [--device cuda]``

The other components (VAE, depth estimator, captioner, CLIP, tokenizers,
scheduler) are copied from ``SOURCE`` unchanged, so the loader and the
format stay those of ``train-toy``. The data are ``train-toy``'s (the same
seed renders the same scenes), the UNet learns on the latents of SOURCE's
float16 VAE as ``train-toy`` does, and the fresh UNet and text encoder start
from the same seeded initialisation; ``losses.json`` gets the new UNet
history and the settings that made it (rerun with ``--steps`` set to the
steps it records and no ``--max-seconds`` to reproduce it).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import torch

from .data import Dataset, render_dataset
from .trainers import Budget


def retrain_unet(
    source: str | Path,
    output: str | Path,
    *,
    budget: Budget,
    uncond_prob: float,
    noise_discount: float,
    device: str = "cuda",
    workers: int | None = None,
    progress: bool = True,
) -> dict:
    """Copies ``source`` to ``output`` and retrains its UNet + text encoder; returns the new losses.json."""
    import os

    from diffusers import AutoencoderKL
    from transformers import CLIPTokenizer

    from ..models.toy import toy_modules
    from . import trainers
    from .run import allow_tf32, train_unet_and_text_encoder

    src, out = Path(source), Path(output)
    if out.exists():
        raise FileExistsError(f"output: {str(out)!r} exists")
    summary = json.loads((src / "losses.json").read_text())
    seed, plan = summary["seed"], summary["plan"]
    shutil.copytree(src, out)
    allow_tf32()
    dev = torch.device(device)
    t0 = time.monotonic()
    scratch = Path(tempfile.mkdtemp(prefix="toy-data-"))
    try:
        workers = workers or max(1, (os.cpu_count() or 1) - 1)
        render_dataset(seed, plan["scenes"], plan["frames_per_scene"], workers=workers).save(scratch)
        data = trainers.on_device(Dataset.load(scratch), dev)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    render_s = time.monotonic() - t0
    tok = CLIPTokenizer.from_pretrained(out / "tokenizer")
    modules = toy_modules(len(tok), seed)
    # SOURCE's shipped VAE, passed without a name here so that it is freed once it has encoded.
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    history = train_unet_and_text_encoder(
        out,
        modules,
        tok,
        AutoencoderKL.from_pretrained(out / "vae", torch_dtype=dtype).to(dev),
        data,
        budget,
        dev,
        seed,
        progress,
        uncond_prob=uncond_prob,
        noise_discount=noise_discount,
    )
    history["retrained"] = {
        "from": "the run above, its other components unchanged",
        "gpu": torch.cuda.get_device_name(dev) if dev.type == "cuda" else None,
        "render_seconds": round(render_s, 1),
        "minutes": round((time.monotonic() - t0) / 60, 2),
        "previous": {k: v for k, v in summary["components"]["unet"].items() if k != "losses"},
    }
    summary["components"]["unet"] = history
    summary["plan"]["unet"] = {
        "steps": budget.steps,
        "batch": budget.batch,
        "lr": budget.lr,
        "max_seconds": budget.max_seconds,
    }
    (out / "losses.json").write_text(json.dumps(summary, indent=1) + "\n")
    return summary


def main(argv=None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m pix2video.toytrain.retrain")
    p.add_argument("source")
    p.add_argument("output")
    p.add_argument("--steps", type=int, default=12000)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--max-seconds", type=float, default=None)
    p.add_argument("--uncond-prob", type=float, default=0.2)
    p.add_argument("--noise-discount", type=float, default=0.7)
    p.add_argument("--device", default="cuda")
    p.add_argument("-q", "--quiet", action="store_true")
    a = p.parse_args(argv)
    budget = Budget(steps=a.steps, batch=a.batch, lr=a.lr, max_seconds=a.max_seconds)
    s = retrain_unet(
        a.source,
        a.output,
        budget=budget,
        uncond_prob=a.uncond_prob,
        noise_discount=a.noise_discount,
        device=a.device,
        progress=not a.quiet,
    )
    u = s["components"]["unet"]
    print(json.dumps({k: u[k] for k in ("steps", "seconds", "final_loss")} | {"minutes": u["retrained"]["minutes"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
