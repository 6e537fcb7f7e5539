"""The per-video job: frames -> depth, caption, DDIM inversion -> latent store.

Stages are passed in as callables, so the embedded CLI plugs in the local
engine and the inversion service plugs in gRPC clients of the depth and
caption services; both share this orchestration, the video-id rule and the
store layout.
"""

from __future__ import annotations

import hashlib
import json
import threading
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .engine.checks import check_num_steps, check_prompt
from .engine.depth import check_depth_resize
from .engine.images import RESIZE_MODES, check_resolution, fit_frame
from .errors import InvalidInput
from .store import Manifest, ObjectStore, read_manifest, write_video_record

MAX_FRAMES = 10_000


@dataclass(frozen=True)
class InversionSettings:
    """How a video is prepared and inverted; part of its identity.

    Args:
        width, height: working resolution, multiples of 64 (512 x 512 for SD2).
        resize: ``crop`` (cover, then centre-crop), ``pad`` (fit, then pad) or
            ``squash`` (ignore the aspect ratio); see :mod:`pix2video.engine.images`.
        num_steps: inverse DDIM steps (50); edits must use the same number.
        source_prompt: the prompt inversion uses; None captions the first frame.
    """

    width: int = 512
    height: int = 512
    resize: str = "crop"
    num_steps: int = 50
    source_prompt: str | None = None
    depth_resize: str = "bicubic"
    """Interpolation of DPT depth to the latent size: bicubic (diffusers' depth2img) or bilinear (the authors')."""
    steps_offset: int | None = None
    """Offset added to every DDIM timestep; None keeps the model's scheduler config (1 for SD2-depth)."""

    def __post_init__(self):
        check_resolution(self.width, self.height)
        if self.resize not in RESIZE_MODES:
            raise InvalidInput(f"resize: must be one of {', '.join(RESIZE_MODES)}; got {self.resize!r}")
        check_num_steps(self.num_steps)
        if self.source_prompt is not None:
            check_prompt(self.source_prompt, "source_prompt")
        check_depth_resize(self.depth_resize)
        offset = self.steps_offset
        if offset is not None and (not isinstance(offset, int) or isinstance(offset, bool) or not 0 <= offset < 1000):
            raise InvalidInput(f"steps_offset: must be None or an integer in [0, 1000), got {self.steps_offset!r}")

    def fit(self, frame: np.ndarray) -> np.ndarray:
        """One frame at the working resolution (see :mod:`pix2video.engine.images`)."""
        return fit_frame(frame, self.width, self.height, self.resize)


def prepare_frames(frames: list[np.ndarray], settings: InversionSettings) -> np.ndarray:
    """Brings decoded frames to the working resolution: (N, H, W, 3) uint8."""
    if not frames:
        raise InvalidInput("frames: the video has no frames")
    if len(frames) > MAX_FRAMES:
        raise InvalidInput(f"frames: at most {MAX_FRAMES} frames per video, got {len(frames)}")
    # Frames fitted while decoding come through unchanged (PIL copies a same-size resize).
    return np.stack([settings.fit(f) for f in frames])


_LATER_FIELDS = {"depth_resize": "bicubic", "steps_offset": None}


def video_id_for(frames: np.ndarray, settings: InversionSettings, model_identity: dict) -> str:
    """Content hash of the prepared frames, the models and the inversion settings."""
    h = hashlib.sha256()
    named = asdict(settings)
    # Fields added after videos were first stored name a video only when they
    # differ from their default, so existing stores keep their ids.
    for name, default in _LATER_FIELDS.items():
        if named.get(name) == default:
            del named[name]
    h.update(json.dumps({"settings": named, "model": model_identity}, sort_keys=True).encode())
    h.update(str(frames.shape).encode())
    h.update(np.ascontiguousarray(frames).tobytes())
    return h.hexdigest()[:40]


def model_identity(models) -> dict:
    """What names a loaded model set inside video ids."""
    return {
        "model": models.fingerprint,
        "caption_model": models.caption_model,
        "dtype": str(models.dtype).removeprefix("torch."),
    }


@dataclass
class InversionResult:
    video_id: str
    manifest: Manifest
    cached: bool  # True when the store already held this video


# One lock per video id, so concurrent requests for the same video do the work
# once. Entries are counted and dropped when the last holder leaves, so a
# long-running service does not keep one lock per video it ever saw.
_locks: dict[str, list] = {}  # video id -> [lock, holders and waiters]
_locks_guard = threading.Lock()


@contextmanager
def _video_lock(video_id: str) -> Iterator[None]:
    with _locks_guard:
        entry = _locks.setdefault(video_id, [threading.Lock(), 0])
        entry[1] += 1
    try:
        with entry[0]:
            yield
    finally:
        with _locks_guard:
            entry[1] -= 1
            if entry[1] == 0:
                del _locks[video_id]


def invert_video(
    frames: np.ndarray,
    settings: InversionSettings,
    *,
    store: ObjectStore,
    model_identity: dict,
    depth_fn: Callable[[np.ndarray], torch.Tensor],
    caption_fn: Callable[[np.ndarray], list[str]],
    invert_fn: Callable[..., torch.Tensor],
    fps: float = 25.0,
    on_stage: Callable[[str], None] | None = None,
) -> InversionResult:
    """Inverts prepared frames into ``store`` unless it already holds them.

    Args:
        frames: (N, H, W, 3) uint8 from :func:`prepare_frames`.
        model_identity: what names the models (fingerprints); part of the id.
        depth_fn: frames -> (N, 1, H/8, W/8) depth in [-1, 1].
        caption_fn: frames -> captions (called on the first frame only).
        invert_fn: ``(frames, depth, prompt, num_steps) -> x_T``.
        on_stage: called with ``depth``, ``caption``, ``inversion``, ``store``
            as each stage starts (progress reporting).
    """
    video_id = video_id_for(frames, settings, model_identity)
    # Keyed by the store's tenant prefix too: tenant B's inversion of a clip
    # never waits on tenant A's (the wait would tell B that A is inverting it).
    with _video_lock(getattr(store, "prefix", "") + video_id):
        manifest = read_manifest(store, video_id)
        if manifest is not None:
            return InversionResult(video_id, manifest, cached=True)
        stage = on_stage or (lambda _name: None)
        stage("depth")
        depth = depth_fn(frames)
        prompt = settings.source_prompt
        if prompt is None:
            stage("caption")
            prompt = caption_fn(frames[:1])[0]
        stage("inversion")
        latents = invert_fn(frames, depth, prompt, settings.num_steps)
        stage("store")
        manifest = Manifest(
            video_id=video_id,
            num_frames=len(frames),
            width=settings.width,
            height=settings.height,
            num_steps=settings.num_steps,
            source_prompt=prompt,
            model=json.dumps(model_identity, sort_keys=True),
            fps=fps,
            settings=asdict(settings),
        )
        write_video_record(store, manifest, latents, depth)
        return InversionResult(video_id, manifest, cached=False)
