"""A scene: what is in the world and how it moves, drawn from a seed.

Units are metres; the ground is the plane y = 0, the camera looks along +z.
Every quantity that changes over a clip is linear in the frame index, slow
enough that consecutive frames overlap almost everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .grammar import COLOURS, GROUNDS, SHAPES, SKIES, caption_for


@dataclass(frozen=True)
class SceneObject:
    colour: str
    shape: str
    size: float  # ball radius, cube half-side, cone base radius
    x: float
    z: float
    vx: float  # metres per frame
    vz: float
    yaw: float  # cube orientation (radians)

    def centre(self, frame: int) -> tuple[float, float]:
        return self.x + self.vx * frame, self.z + self.vz * frame


@dataclass(frozen=True)
class Camera:
    x: float
    height: float
    z: float
    vx: float  # metres per frame
    vz: float
    yaw: float  # radians, 0 looks along +z
    yaw_rate: float  # radians per frame
    pitch: float  # radians, negative looks down
    fov: float = np.deg2rad(55.0)

    def at(self, frame: int) -> tuple[np.ndarray, float]:
        """(position, yaw) at ``frame``."""
        pos = np.array([self.x + self.vx * frame, self.height, self.z + self.vz * frame])
        return pos, self.yaw + self.yaw_rate * frame


@dataclass(frozen=True)
class Scene:
    seed: int
    ground: str
    sky: str
    objects: tuple[SceneObject, ...]  # the main object first
    camera: Camera

    @property
    def caption(self) -> str:
        return caption_for([(o.colour, o.shape) for o in self.objects], self.ground, self.sky)

    @property
    def main(self) -> SceneObject:
        return self.objects[0]

    def with_main(self, colour: str | None = None, shape: str | None = None) -> "Scene":
        """The same scene with the main object recoloured or reshaped."""
        main = replace(self.main, colour=colour or self.main.colour, shape=shape or self.main.shape)
        return replace(self, objects=(main,) + self.objects[1:])


CAMERA_SPEED = 0.16  # the camera's top sideways speed, metres a frame


def check_min_camera_speed(min_camera_speed: float) -> None:
    """Raises ValueError naming the field unless 0 <= min_camera_speed < CAMERA_SPEED."""
    if not 0.0 <= min_camera_speed < CAMERA_SPEED:
        raise ValueError(f"min_camera_speed: must be in [0, {CAMERA_SPEED}) metres a frame, got {min_camera_speed!r}")


def sample_scene(
    seed: int,
    main_colour: str | None = None,
    main_shape: str | None = None,
    ground: str | None = None,
    sky: str | None = None,
    num_objects: int | None = None,
    min_camera_speed: float = 0.0,
) -> Scene:
    """A random scene, the same for the same arguments. Any named attribute
    is fixed; the rest is drawn from ``seed``.

    ``min_camera_speed`` (metres a frame, below :data:`CAMERA_SPEED`) floors the
    camera's sideways speed: the same draw is mapped onto ``min .. CAMERA_SPEED``
    either way, so the rest of the scene is the scene without the floor, and 0
    (the world the shipped set was trained on) leaves it exactly as it was."""
    check_min_camera_speed(min_camera_speed)
    rng = np.random.default_rng([seed, 0x70F])
    colours, shapes = list(COLOURS), list(SHAPES)
    n = num_objects or int(rng.choice([1, 2, 3], p=[0.45, 0.35, 0.2]))
    g = ground or str(rng.choice(list(GROUNDS)))
    s = sky or str(rng.choice(list(SKIES)))
    objects: list[SceneObject] = []
    for k in range(n):
        # The main object is near and central, so it is the largest on screen.
        if k == 0:
            size, x, z = rng.uniform(0.55, 0.8), rng.uniform(-0.7, 0.7), rng.uniform(4.2, 5.4)
        else:
            for _ in range(50):
                size, x, z = rng.uniform(0.3, 0.5), rng.uniform(-2.8, 2.8), rng.uniform(5.8, 9.0)
                if all(np.hypot(x - o.x, z - o.z) > (size + o.size) * 1.6 + 0.4 for o in objects):
                    break
        colour = str(rng.choice(colours))
        shape = str(rng.choice(shapes))
        if k == 0:
            colour, shape = main_colour or colour, main_shape or shape
        speed, heading = rng.uniform(0.0, 0.05), rng.uniform(0, 2 * np.pi)
        objects.append(
            SceneObject(
                colour=colour,
                shape=shape,
                size=float(size),
                x=float(x),
                z=float(z),
                vx=float(speed * np.cos(heading)),
                vz=float(speed * np.sin(heading) * 0.5),
                yaw=float(rng.uniform(0, np.pi / 2)),
            )
        )
    # The camera slides sideways and turns to follow the main object part of the
    # way, as a tracking shot does: the object drifts a little on screen while
    # the ground and the sky sweep past by a few pixels a frame.
    vx = float(rng.uniform(-CAMERA_SPEED, CAMERA_SPEED))
    if min_camera_speed:
        # A nearly still camera makes a nearly still clip, on which per-frame
        # editing with one seed cannot flicker (Table 2 then measures nothing).
        vx = float(np.copysign(min_camera_speed + (CAMERA_SPEED - min_camera_speed) * abs(vx) / CAMERA_SPEED, vx))
    track = float(rng.uniform(0.5, 1.0))
    camera = Camera(
        x=float(rng.uniform(-0.4, 0.4)),
        height=float(rng.uniform(1.2, 1.8)),
        z=0.0,
        vx=vx,
        vz=float(rng.uniform(0.0, 0.06)),
        yaw=float(rng.uniform(-0.08, 0.08)),
        yaw_rate=float(-track * vx / objects[0].z + rng.uniform(-0.004, 0.004)),
        pitch=float(rng.uniform(-0.22, -0.12)),
    )
    return Scene(seed=seed, ground=g, sky=s, objects=tuple(objects), camera=camera)
