"""Model loading: the SD2-depth components, DPT depth and BLIP caption models."""

from .loading import ModelSet, load_model_set, resolve_model_path

__all__ = ["ModelSet", "load_model_set", "resolve_model_path"]
