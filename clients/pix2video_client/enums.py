"""The API's enums by name: one table per enum, name -> protobuf value, for the
SDK and the services alike.

The names are those of :mod:`pix2video_client.options`; each value is found by
the enum's own naming rule (``anchor+previous`` -> ``REFERENCE_ANCHOR_PREVIOUS``),
so a name without a value in the proto fails at import, not at a request.
"""

from __future__ import annotations

from pix2video_api.common.v1 import common_pb2
from pix2video_api.editor.v1 import editor_pb2
from pix2video_api.inversion.v1 import inversion_pb2

from .options import (
    DEFAULT_INJECT_LAYERS,
    DEFAULT_LATENT_UPDATE,
    DEFAULT_REFERENCE,
    DEFAULT_RESIZE,
    ENCODINGS,
    INJECT_LAYERS,
    LATENT_UPDATES,
    REFERENCES,
    RESIZE_MODES,
)


def _table(enum, prefix: str, names: tuple[str, ...], spelled: dict[str, str] | None = None) -> dict[str, int]:
    spelled = spelled or {}
    return {n: enum.Value(prefix + spelled.get(n, n.upper().replace("+", "_"))) for n in names}


REFERENCE = _table(editor_pb2.Reference, "REFERENCE_", REFERENCES)
INJECT_LAYERS_VALUE = _table(editor_pb2.InjectLayers, "INJECT_LAYERS_", INJECT_LAYERS)
LATENT_UPDATE = _table(editor_pb2.LatentUpdate, "LATENT_UPDATE_", LATENT_UPDATES)
RESIZE = _table(inversion_pb2.ResizeMode, "RESIZE_MODE_", RESIZE_MODES)
ENCODING = _table(common_pb2.ImageEncoding, "IMAGE_ENCODING_", ENCODINGS, {"raw": "RAW_RGB8"})
# Inversion stages: decode, depth, caption, inversion, store.
STAGE = {
    v.name.removeprefix("STAGE_").lower(): v.number
    for v in inversion_pb2.Stage.DESCRIPTOR.values
    if v.number != inversion_pb2.STAGE_UNSPECIFIED
}

# The value a server reads when a field is left unset (each enum's 0, UNSPECIFIED).
UNSET_MEANS = {
    "reference": DEFAULT_REFERENCE,
    "inject_layers": DEFAULT_INJECT_LAYERS,
    "latent_update": DEFAULT_LATENT_UPDATE,
    "resize": DEFAULT_RESIZE,
}


def to_proto(table: dict[str, int], value: str, field: str) -> int:
    """Name -> value; an unknown name is a ValueError naming ``field`` and the choices."""
    if value not in table:
        raise ValueError(f"{field}: must be one of {', '.join(table)}; got {value!r}")
    return table[value]


def from_proto(table: dict[str, int], value: int, field: str) -> str:
    """Value -> name, 0 (unset) -> the default of ``field``; an unknown value is a
    ValueError naming ``field``."""
    if value == 0 and field in UNSET_MEANS:
        return UNSET_MEANS[field]
    for name, v in table.items():
        if v == value:
            return name
    raise ValueError(f"{field}: unknown value {value}")
