"""Loading the model set from service settings."""

from __future__ import annotations

from pathlib import Path

from ...models import load_model_set
from ...settings import RuntimeSettings
from .settings import ModelServerSettings


def runtime_from(settings: ModelServerSettings) -> RuntimeSettings:
    kw = dict(
        model=settings.model, caption_model=settings.caption_model or None, device=settings.device, dtype=settings.dtype
    )
    if settings.home:
        kw["home"] = Path(settings.home)
    return RuntimeSettings(**kw)


def load_models(settings: ModelServerSettings):
    """The model set of the inversion and editor services: no depth estimator
    (the depth service has it; the editor reads depth from the store)."""
    rt = runtime_from(settings)
    return load_model_set(
        rt.model,
        device=rt.resolved_device,
        dtype=rt.torch_dtype,
        caption_model=rt.caption_model,
        cache_dir=rt.home,
        with_depth=False,
    )
