"""The inverted video the benchmarks edit: random x_T and depth, deterministic from a seed."""

import torch


class RandomVideo:
    """An inverted video of random x_T and depth (what an edit reads from the store)."""

    def __init__(self, num_frames: int, latent_hw: int, num_steps: int, seed: int = 0):
        self.num_frames, self.num_steps, self.hw, self.seed = num_frames, num_steps, latent_hw, seed

    def _gen(self, i, salt):
        return torch.Generator().manual_seed(self.seed * 1_000_003 + i * 2 + salt)

    def latent(self, i):
        return torch.randn(4, self.hw, self.hw, generator=self._gen(i, 0))

    def depth(self, i):
        return torch.rand(1, self.hw, self.hw, generator=self._gen(i, 1)) * 2 - 1
