"""Ray casting of a :class:`~.scene.Scene`, frame by frame, in numpy.

Each pixel is supersampled (``ss`` x ``ss`` rays, box-filtered) so edges are
smooth. Besides the colour image every frame has:

- ``depth``: inverse distance along the view axis (1/z, 0 at the sky), the
  MiDaS/DPT convention that SD2-depth's estimator predicts;
- ``masks``: the pixels where each object is the nearest surface;
- ``prev_xy``/``prev_valid``: where each pixel's surface point was in the
  previous frame (the true backward optical flow), and whether it was visible
  there, for flow-warped consistency measures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grammar import COLOURS, GROUNDS, SKIES
from .scene import Scene

SUN = np.array([-0.45, 0.75, -0.5]) / np.linalg.norm([-0.45, 0.75, -0.5])
SKY_ID, GROUND_ID = -1, 0  # object k has id k + 1


@dataclass
class Clip:
    scene: Scene
    frames: np.ndarray  # (N, H, W, 3) uint8
    depth: np.ndarray  # (N, H, W) float32, 1 / view depth, 0 at the sky
    masks: np.ndarray  # (N, num_objects, H, W) bool
    prev_xy: np.ndarray  # (N, H, W, 2) float32 pixel (x, y) of the same point in frame i - 1
    prev_valid: np.ndarray  # (N, H, W) bool, False for frame 0, off-screen or occluded points

    @property
    def caption(self) -> str:
        return self.scene.caption


def _basis(yaw: float, pitch: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f = np.array([np.sin(yaw) * np.cos(pitch), np.sin(pitch), np.cos(yaw) * np.cos(pitch)])
    r = np.array([np.cos(yaw), 0.0, -np.sin(yaw)])
    u = np.cross(f, r)
    return f, r, u


def _rays(scene: Scene, frame: int, width: int, height: int, ss: int):
    pos, yaw = scene.camera.at(frame)
    f, r, u = _basis(yaw, scene.camera.pitch)
    th = np.tan(scene.camera.fov / 2)
    ys, xs = np.mgrid[0 : height * ss, 0 : width * ss].astype(np.float32)
    nx = (xs + 0.5) / (width * ss) * 2 - 1
    ny = 1 - (ys + 0.5) / (height * ss) * 2
    d = f + (nx * th * width / height)[..., None] * r + (ny * th)[..., None] * u
    d = (d / np.linalg.norm(d, axis=-1, keepdims=True)).astype(np.float32)
    return pos, d, f


def _hit_sphere(o, d, c, radius):
    oc = o - c
    b = d @ oc
    disc = b * b - (oc @ oc - radius * radius)
    t = -b - np.sqrt(np.maximum(disc, 0))
    t = np.where((disc > 0) & (t > 1e-4), t, np.inf)
    n = (o + t[..., None] * d - c) / radius
    return t, n


def _hit_box(o, d, c, half, yaw):
    cy, sy = np.cos(yaw), np.sin(yaw)
    rot = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])  # world -> box frame
    ol, dl = rot @ (o - c), d @ rot.T
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = 1.0 / np.where(np.abs(dl) < 1e-12, 1e-12, dl)
    t1, t2 = (-half - ol) * inv, (half - ol) * inv
    tlo, thi = np.minimum(t1, t2), np.maximum(t1, t2)
    tmin, tmax = tlo.max(-1), thi.min(-1)
    t = np.where((tmax >= tmin) & (tmin > 1e-4), tmin, np.inf)
    axis = tlo.argmax(-1)
    nl = np.zeros_like(dl)
    np.put_along_axis(nl, axis[..., None], -np.sign(np.take_along_axis(dl, axis[..., None], -1)), -1)
    return t, nl @ rot  # back to world


def _hit_cone(o, d, base, radius, height):
    k2 = (radius / height) ** 2
    ox, oy, oz = o - base
    dx, dy, dz = d[..., 0], d[..., 1], d[..., 2]
    a = dx * dx + dz * dz - k2 * dy * dy
    b = 2 * (ox * dx + oz * dz + k2 * (height - oy) * dy)
    c = ox * ox + oz * oz - k2 * (height - oy) ** 2
    disc = b * b - 4 * a * c
    sq = np.sqrt(np.maximum(disc, 0))
    with np.errstate(divide="ignore", invalid="ignore"):
        roots = [(-b - sq) / (2 * a), (-b + sq) / (2 * a)]
    t = np.full(a.shape, np.inf)
    for root in reversed(roots):  # the nearer root wins when both are on the surface
        y = oy + root * dy
        ok = (disc > 0) & (root > 1e-4) & (y >= 0) & (y <= height)
        t = np.where(ok & (root < t), root, t)
    p = o + np.where(np.isfinite(t), t, 0)[..., None] * d - base
    n = np.stack([p[..., 0], k2 * (height - p[..., 1]) * 1.0 + 0 * p[..., 1], p[..., 2]], -1)
    n[..., 1] = np.sqrt(k2) * np.hypot(p[..., 0], p[..., 2])  # slope of the side
    n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-9)
    return t, n


def _object_hit(obj, frame, o, d):
    x, z = obj.centre(frame)
    if obj.shape == "ball":
        return _hit_sphere(o, d, np.array([x, obj.size, z]), obj.size)
    if obj.shape == "cube":
        half = obj.size * 0.8
        return _hit_box(o, d, np.array([x, half, z]), half, obj.yaw)
    return _hit_cone(o, d, np.array([x, 0.0, z]), obj.size, obj.size * 2.4)


def _geometry(scene: Scene, frame: int, width: int, height: int, ss: int):
    """Nearest hit per ray: (t, id, normal, point, ray dirs, camera pos, forward)."""
    o, d, f = _rays(scene, frame, width, height, ss)
    with np.errstate(divide="ignore"):
        tg = np.where(d[..., 1] < -1e-6, -o[1] / d[..., 1], np.inf)
    t, ids = tg.copy(), np.where(np.isfinite(tg), GROUND_ID, SKY_ID)
    normal = np.zeros(d.shape)
    normal[..., 1] = 1.0
    flat_t, flat_ids, flat_n, flat_d = t.reshape(-1), ids.reshape(-1), normal.reshape(-1, 3), d.reshape(-1, 3)
    for k, obj in enumerate(scene.objects):
        # Only the rays through the object's bounding sphere are cast at it.
        x, z = obj.centre(frame)
        centre = np.array([x, obj.size * 1.2, z])
        oc = o - centre
        b = flat_d @ oc
        near = np.flatnonzero(b * b - (oc @ oc - (obj.size * 1.75) ** 2) > 0)
        if near.size == 0:
            continue
        tk, nk = _object_hit(obj, frame, o, flat_d[near])
        nearer = tk < flat_t[near]
        idx = near[nearer]
        flat_t[idx], flat_ids[idx], flat_n[idx] = tk[nearer], k + 1, nk[nearer]
    point = o + np.where(np.isfinite(t), t, 0)[..., None] * d
    return t, ids, normal, point, d, o, f


def _smooth(x):
    return x * x * (3 - 2 * x)


def _value_noise(table: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Smooth noise in [0, 1] at lattice coordinates (u, v): ``table``'s random
    values at the integer points (it repeats), smoothstep-interpolated between them."""
    n = table.shape[0]
    u, v = np.nan_to_num(u, posinf=0.0, neginf=0.0), np.nan_to_num(v, posinf=0.0, neginf=0.0)
    iu, iv = np.floor(u), np.floor(v)
    fu, fv = _smooth(u - iu), _smooth(v - iv)
    i0, j0 = iu.astype(np.int64) % n, iv.astype(np.int64) % n
    i1, j1 = (i0 + 1) % n, (j0 + 1) % n
    top = table[i0, j0] * (1 - fu) + table[i1, j0] * fu
    bottom = table[i0, j1] * (1 - fu) + table[i1, j1] * fu
    return top * (1 - fv) + bottom * fv


def _textures(scene: Scene) -> np.ndarray:
    """The scene's own random lattices: ground patches (two octaves) and clouds (two octaves).

    Drawn from the scene's seed but from nothing its caption or depth says, so
    a model trained on the world must take them from its input (inversion
    keeps them where they are) or draw them from its noise (per-frame editing
    from fresh noise draws them anew on every frame: the flicker the paper's Table 2 measures)."""
    return np.random.default_rng([scene.seed, 0x7E47]).random((4, 64, 64))


def _shade(scene: Scene, frame: int, t, ids, normal, point, d) -> np.ndarray:
    _, zenith, horizon, tint = SKIES[scene.sky]
    zenith, horizon, tint = np.array(zenith), np.array(horizon), np.array(tint)
    tex = _textures(scene)
    e = _smooth(np.clip(d[..., 1] / 0.5, 0, 1)[..., None])
    sky = horizon * (1 - e) + zenith * e
    # Clouds: a function of the ray's direction alone (the sky is at infinity, as the flow takes it).
    up = np.maximum(d[..., 1], 0) + 0.12
    cu, cv = d[..., 0] / up * 2.2, d[..., 2] / up * 2.2
    cloud = 0.7 * _value_noise(tex[2], cu, cv) + 0.3 * _value_noise(tex[3], cu * 2.3 + 11, cv * 2.3 + 5)
    cloud = (_smooth(np.clip((cloud - 0.48) / 0.3, 0, 1)) * np.clip(d[..., 1] / 0.06, 0, 1))[..., None]
    sky = sky * (1 - 0.65 * cloud) + (0.45 * horizon + 0.55 * tint) * 0.65 * cloud
    _, base, stripe = GROUNDS[scene.ground]
    px, pz = point[..., 0], point[..., 2]
    dist = np.where(np.isfinite(t), t, 1e3)  # the sky counts as far away
    fade = np.exp(-dist / 10.0)
    wave = 0.5 + 0.5 * np.sin(px * 1.7 + 0.8 * np.sin(pz * 0.9)) * np.sin(pz * 1.3 + 0.5 * np.cos(px * 0.7))
    ground = np.array(base) + (np.array(stripe) - np.array(base)) * (wave * fade + 0.5 * (1 - fade))[..., None]
    # Patches a third of a metre to a metre across, fading out with distance before they alias.
    coarse, fine = _value_noise(tex[0], px / 0.5, pz / 0.5), _value_noise(tex[1], px / 0.22 + 17, pz / 0.22 + 31)
    patch = 0.65 * coarse + 0.35 * fine
    near = np.exp(-dist / 7.0)
    ground = ground * (1 + 0.32 * (2 * patch - 1) * near)[..., None]
    shadow = np.ones(t.shape)
    for obj in scene.objects:
        x, z = obj.centre(frame)
        r2 = ((px - x - 0.35 * obj.size) ** 2 + (pz - z - 0.4 * obj.size) ** 2) / (obj.size * 1.1) ** 2
        shadow *= 1 - 0.45 * np.exp(-2.0 * r2)
    ground = ground * (0.75 + 0.25 * shadow[..., None] * 1.0) * shadow[..., None] ** 0.5 * tint
    img = np.where((ids == GROUND_ID)[..., None], ground, sky)
    view = d[d.shape[0] // 2, d.shape[1] // 2]
    half = (SUN - view) / np.linalg.norm(SUN - view)
    for k, obj in enumerate(scene.objects):
        sel = ids == k + 1
        n = normal[sel]
        lam = np.clip(n @ SUN, 0, 1)[:, None]
        spec = 0.25 * np.clip(n @ half, 0, 1)[:, None] ** 24 if obj.shape == "ball" else 0.0
        img[sel] = np.array(COLOURS[obj.colour]) * tint * (0.38 + 0.62 * lam) + spec
    # Distance haze toward the horizon colour.
    haze = (1 - np.exp(-dist / 60.0))[..., None] * (ids != SKY_ID)[..., None]
    return img * (1 - haze) + horizon * haze


def _project(scene: Scene, frame: int, points: np.ndarray, at_infinity: np.ndarray, width: int, height: int):
    """World points (or directions, where ``at_infinity``) -> pixel (x, y) in ``frame``; in front or not."""
    pos, yaw = scene.camera.at(frame)
    f, r, u = _basis(yaw, scene.camera.pitch)
    v = np.where(at_infinity[..., None], points, points - pos)
    zf = v @ f
    th = np.tan(scene.camera.fov / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        nx = (v @ r) / zf / (th * width / height)
        ny = (v @ u) / zf / th
    px = (nx + 1) / 2 * width - 0.5
    py = (1 - ny) / 2 * height - 0.5
    return np.stack([px, py], -1), zf > 1e-6


def _box(a: np.ndarray, ss: int) -> np.ndarray:
    h, w = a.shape[0] // ss, a.shape[1] // ss
    return a.reshape(h, ss, w, ss, *a.shape[2:]).mean(axis=(1, 3))


def render_clip(
    scene: Scene, num_frames: int = 8, width: int = 128, height: int = 128, ss: int = 2, flow: bool = True
) -> Clip:
    """Renders ``num_frames`` frames of ``scene`` at ``width`` x ``height``
    (``flow=False`` skips the backward flow, which training does not need)."""
    frames, depths, masks, prev_xy, prev_valid = [], [], [], [], []
    prev_ids = None
    for i in range(num_frames):
        t, ids, normal, point, d, o, f = _geometry(scene, i, width, height, ss)
        img = _shade(scene, i, t, ids, normal, point, d)
        frames.append(np.clip(np.round(_box(img, ss) * 255), 0, 255).astype(np.uint8))
        zview = np.where(np.isfinite(t), t * (d @ f), np.inf)
        depths.append(_box(np.where(np.isfinite(zview), 1.0 / zview, 0.0), ss).astype(np.float32))
        masks.append(np.stack([_box((ids == k + 1).astype(np.float32), ss) >= 0.5 for k in range(len(scene.objects))]))
        # Backward flow at the pixel centres: the point's position one frame back.
        if not flow:
            continue
        tc, idc, _, pc, dc, _, _ = _geometry(scene, i, width, height, 1)
        if i == 0:
            prev_xy.append(np.full((height, width, 2), np.nan, np.float32))
            prev_valid.append(np.zeros((height, width), bool))
        else:
            pts = pc.copy()
            for k, obj in enumerate(scene.objects):
                (x1, z1), (x0, z0) = obj.centre(i), obj.centre(i - 1)
                pts = np.where((idc == k + 1)[..., None], pts - np.array([x1 - x0, 0.0, z1 - z0]), pts)
            sky = idc == SKY_ID
            pts = np.where(sky[..., None], dc, pts)
            xy, front = _project(scene, i - 1, pts, sky, width, height)
            xi, yi = np.round(xy[..., 0]), np.round(xy[..., 1])
            inside = front & (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            xs = np.clip(np.nan_to_num(xi), 0, width - 1).astype(int)
            ys = np.clip(np.nan_to_num(yi), 0, height - 1).astype(int)
            same = prev_ids[ys, xs] == idc  # the point was the visible surface there too
            prev_xy.append(xy.astype(np.float32))
            prev_valid.append(inside & same)
        prev_ids = idc
    return Clip(
        scene=scene,
        frames=np.stack(frames),
        depth=np.stack(depths),
        masks=np.stack(masks),
        prev_xy=np.stack(prev_xy) if flow else np.zeros((0, height, width, 2), np.float32),
        prev_valid=np.stack(prev_valid) if flow else np.zeros((0, height, width), bool),
    )
