"""Resumed edits against undisturbed ones (issue 13, item 4): frames of an edit
opened at ``start_frame=k`` compared with the undisturbed edit's frames k..,
per wavefront width, printed as a table. The bar: bitwise on CPU, within 1 grey
level on a GPU (where batch composition can differ).

    python bench/bench_resume_equality.py --device cuda --dtype float16   # the GPU figure
    python bench/bench_resume_equality.py --frames 3 --steps 2 --starts 1 # CPU smoke
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from random_video import RandomVideo  # noqa: E402

from pix2video.devices import resolve_dtype  # noqa: E402
from pix2video.engine.editor import Pix2VideoEditor  # noqa: E402
from pix2video.engine.settings import EditSettings  # noqa: E402
from pix2video.models import load_model_set  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="toy")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dtype", default="float32")
    p.add_argument("--size", type=int, default=128)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--widths", default="8,1")
    p.add_argument("--starts", default="5,8,13")
    a = p.parse_args(argv)
    models = load_model_set(a.model, device=a.device, dtype=resolve_dtype(a.dtype, torch.device(a.device)))
    editor = Pix2VideoEditor(models)
    hw = a.size // models.vae_scale_factor
    print("| W | start_frame | max abs diff (grey levels) | pixels differing | frames bitwise equal |")
    print("| --- | --- | --- | --- | --- |")
    for width in (int(w) for w in a.widths.split(",")):
        prompt = "a blue ball on green grass under a blue sky"
        s = EditSettings(prompt=prompt, num_steps=a.steps, frames_in_flight=width)
        t = time.perf_counter()
        full = np.stack([f.image for f in editor.edit(RandomVideo(a.frames, hw, a.steps, seed=7), s)])
        print(f"<!-- W={width}: undisturbed {a.frames} frames in {time.perf_counter() - t:.1f} s -->", flush=True)
        for k in (int(k) for k in a.starts.split(",")):
            frames = list(editor.edit(RandomVideo(a.frames, hw, a.steps, seed=7), s, start_frame=k))
            if [f.index for f in frames] != list(range(k, a.frames)):
                print(f"FAILED: W={width} start_frame={k}: frame indices {[f.index for f in frames]}")
                return 1
            diff = np.abs(np.stack([f.image for f in frames]).astype(int) - full[k:].astype(int))
            equal = sum(bool((d == 0).all()) for d in diff)
            print(f"| {width} | {k} | {diff.max()} | {np.mean(diff > 0):.4%} | {equal}/{a.frames - k} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
