"""The world's small vocabulary and the caption grammar.

    caption := "a" OBJECT ("and a" OBJECT)* GROUND SKY
    OBJECT  := COLOUR SHAPE                      e.g. "red ball"
    GROUND  := "on green grass" | "on yellow sand" | "on white snow"
    SKY     := "under a blue sky" | "at sunset" | "under a grey sky"

The first object named is the main one (the largest on screen).
"""

from __future__ import annotations

import re

# Albedo of each object colour (linear-ish RGB in [0, 1]); shading multiplies it.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.82, 0.12, 0.10),
    "green": (0.15, 0.68, 0.18),
    "blue": (0.12, 0.25, 0.88),
    "yellow": (0.92, 0.80, 0.12),
    "purple": (0.55, 0.18, 0.70),
}
SHAPES = ("ball", "cube", "cone")
# ground name -> (phrase, base colour, stripe colour)
GROUNDS: dict[str, tuple[str, tuple[float, float, float], tuple[float, float, float]]] = {
    "grass": ("on green grass", (0.22, 0.50, 0.16), (0.30, 0.62, 0.20)),
    "sand": ("on yellow sand", (0.80, 0.69, 0.46), (0.88, 0.78, 0.55)),
    "snow": ("on white snow", (0.86, 0.88, 0.92), (0.95, 0.96, 0.98)),
}
# sky name -> (phrase, zenith colour, horizon colour, light tint)
SKIES: dict[str, tuple[str, tuple[float, float, float], tuple[float, float, float], tuple[float, float, float]]] = {
    "blue": ("under a blue sky", (0.16, 0.36, 0.80), (0.62, 0.78, 0.95), (1.0, 1.0, 1.0)),
    "sunset": ("at sunset", (0.30, 0.16, 0.42), (0.98, 0.52, 0.22), (1.0, 0.9, 0.8)),
    "grey": ("under a grey sky", (0.45, 0.47, 0.50), (0.75, 0.76, 0.78), (0.85, 0.85, 0.88)),
}

WORDS = sorted(
    {"a", "and"}
    | set(COLOURS)
    | set(SHAPES)
    | {w for phrase, *_ in GROUNDS.values() for w in phrase.split()}
    | {w for phrase, *_ in SKIES.values() for w in phrase.split()}
)


def caption_for(objects: list[tuple[str, str]], ground: str, sky: str) -> str:
    """(colour, shape) per object, main object first -> the caption."""
    names = " and ".join(f"a {c} {s}" for c, s in objects)
    return f"{names} {GROUNDS[ground][0]} {SKIES[sky][0]}"


_OBJECT = re.compile(r"\b(" + "|".join(COLOURS) + r")\s+(" + "|".join(SHAPES) + r")\b")


def parse_main_object(caption: str) -> tuple[str, str] | None:
    """(colour, shape) of the first object a caption names, or None."""
    m = _OBJECT.search(caption.lower())
    return (m.group(1), m.group(2)) if m else None
