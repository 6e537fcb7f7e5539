"""Training and held-out data from the toy world, rendered in parallel.

Training scenes use seeds ``seed * 1_000_000 + i``; held-out scenes use seeds
from :data:`HELD_OUT_BASE` up, which no training run draws (``seed`` is at
most 999).
"""

from __future__ import annotations

import multiprocessing as mp
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..toyworld import render_clip, sample_scene

HELD_OUT_BASE = 2_000_000_000
MAX_SEED = 999


@dataclass
class Dataset:
    frames: np.ndarray  # (N, H, W, 3) uint8
    depth: np.ndarray  # (N, H, W) float32 inverse depth
    captions: list[str]

    def __len__(self) -> int:
        return len(self.frames)

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        np.save(folder / "frames.npy", self.frames)
        np.save(folder / "depth.npy", self.depth)
        (folder / "captions.txt").write_text("\n".join(self.captions) + "\n")

    @classmethod
    def load(cls, folder: Path) -> "Dataset":
        return cls(
            frames=np.load(folder / "frames.npy", mmap_mode="r"),
            depth=np.load(folder / "depth.npy", mmap_mode="r"),
            captions=(folder / "captions.txt").read_text().splitlines(),
        )


def _render(args):
    scene_seed, frames_per_scene, size = args
    clip = render_clip(sample_scene(scene_seed), frames_per_scene, size, size, flow=False)
    return clip.frames, clip.depth, clip.caption


def training_seeds(seed: int, num_scenes: int) -> list[int]:
    if not 0 <= seed <= MAX_SEED:
        raise ValueError(f"seed: must be in [0, {MAX_SEED}], got {seed}")
    return [seed * 1_000_000 + i for i in range(num_scenes)]


def render_dataset(
    seed: int, num_scenes: int, frames_per_scene: int = 2, size: int = 128, workers: int = 1, progress=None
) -> Dataset:
    """Renders ``num_scenes`` training scenes, ``frames_per_scene`` consecutive frames each."""
    jobs = [(s, frames_per_scene, size) for s in training_seeds(seed, num_scenes)]
    frames, depth, captions = [], [], []
    if workers > 1:
        with mp.get_context("fork").Pool(workers) as pool:
            results = pool.imap(_render, jobs, chunksize=8)
            for f, d, c in results:
                frames.append(f)
                depth.append(d)
                captions += [c] * len(f)
                if progress:
                    progress(1)
    else:
        for job in jobs:
            f, d, c = _render(job)
            frames.append(f)
            depth.append(d)
            captions += [c] * len(f)
            if progress:
                progress(1)
    return Dataset(np.concatenate(frames), np.concatenate(depth).astype(np.float32), captions)


def held_out_scene_seed(k: int) -> int:
    return HELD_OUT_BASE + k
