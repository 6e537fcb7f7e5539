"""Shared fixtures: the tiny model set, built from configs with random weights,
saved with save_pretrained and loaded back through the real loading code."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
warnings.filterwarnings("ignore")
torch.set_num_threads(2)
pytest_plugins = ["s3_fixture", "reliability"]


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    from pix2video.models.tiny import build_tiny_model_set

    return build_tiny_model_set(tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture(scope="session")
def models(tiny_dir):
    from pix2video.models import load_model_set

    return load_model_set(str(tiny_dir), dtype=torch.float32)


@pytest.fixture(scope="session")
def models64(tiny_dir):
    """Float64 models: exactness tests separate right from wrong by 1e-9, not by rounding."""
    from pix2video.models import load_model_set

    return load_model_set(str(tiny_dir), dtype=torch.float64)


@pytest.fixture(scope="session")
def clip_frames():
    """Six 64x64 frames of the synthetic sample clip (8x8 latents)."""
    from pix2video.video import make_sample_frames

    return np.stack(make_sample_frames(6, 64, 64))
