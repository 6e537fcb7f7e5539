"""A small procedural world: clips with true depth, a mask per object and a caption.

Everything is rendered by ray casting in numpy, deterministically from a seed:
a sky gradient with clouds, a textured and patchy ground plane seen in
perspective, one to three objects (ball, cube, cone) in a handful of colours,
a camera that slides and turns to follow the main object, slow object motion.
The ``toy`` model set (``pix2video.models.toy``) is trained on it.
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

# The README's sample clip: a scene no training run draws (toytrain.data's seeds).
DEMO_SEED = 3_000_000_000


def demo_frames(num_frames: int = 8, width: int = 128, height: int = 128, seed: int = DEMO_SEED):
    """The ``pix2video sample`` clip: a red ball on green grass under a blue sky, moving slowly."""
    scene = sample_scene(seed, main_colour="red", main_shape="ball", ground="grass", sky="blue", num_objects=1)
    return list(render_clip(scene, num_frames, width, height, flow=False).frames)
