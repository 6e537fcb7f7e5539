"""The services by name: their settings class and their ``build`` coroutine,
imported only when asked for (settings are torch-free, so ``--help`` is quick;
``build`` brings in gRPC, torch and the models)."""

from __future__ import annotations

import importlib
from typing import Any, Callable

# name -> (settings "module:Class", build "module:function"); start order of ``serve --all``.
SERVICES = {
    "depth": ("pix2video.servers.depth.settings:DepthSettings", "pix2video.servers.depth.server:build"),
    "caption": ("pix2video.servers.caption.settings:CaptionSettings", "pix2video.servers.caption.server:build"),
    "inversion": (
        "pix2video.servers.inversion.settings:InversionServerSettings",
        "pix2video.servers.inversion.server:build",
    ),
    "editor": ("pix2video.servers.editor.settings:EditorServerSettings", "pix2video.servers.editor.server:build"),
}


def _load(ref: str) -> Any:
    module, name = ref.split(":")
    return getattr(importlib.import_module(module), name)


def settings_class(name: str) -> type:
    return _load(SERVICES[name][0])


def builder(name: str) -> Callable:
    return _load(SERVICES[name][1])
