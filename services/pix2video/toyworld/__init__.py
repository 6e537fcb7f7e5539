"""A small procedural world: clips with true depth, a mask per object and a caption.

Everything is rendered by ray casting in numpy, deterministically from a seed:
a sky gradient, a textured ground plane seen in perspective, one to three
objects (ball, cube, cone) in a handful of colours, slow camera and object
motion. The ``toy`` model set (``pix2video.models.toy``) is trained on it.
"""

from .grammar import COLOURS, GROUNDS, SHAPES, SKIES, caption_for, parse_main_object
from .render import Clip, render_clip
from .scene import Scene, sample_scene

__all__ = [
    "COLOURS",
    "GROUNDS",
    "SHAPES",
    "SKIES",
    "Clip",
    "Scene",
    "caption_for",
    "parse_main_object",
    "render_clip",
    "sample_scene",
]
