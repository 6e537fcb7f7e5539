"""The per-video job: frames -> depth, caption, DDIM inversion -> latent store.

Stages are passed in as callables, so the embedded CLI plugs in the local
engine and the inversion service plugs in gRPC clients of the depth and
caption services; both share this orchestration, the video-id rule and the
store layout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Callable, Iterator

import numpy as np
import torch

from .engine.checks import check_num_steps, check_prompt
from .engine.depth import check_depth_resize
from .engine.images import RESIZE_MODES, check_resolution, fit_frame
from .errors import InvalidInput, Pix2VideoError
from .store import Manifest, ObjectStore, read_manifest, write_video_record
from .store.lease import Lease, Waiter, live_waiters

log = logging.getLogger(__name__)

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


class VideoLocks:
    """One lock per video id, so concurrent requests for the same video in one
    process do the work once. Entries are counted and dropped when the last
    holder leaves, so a long-running service does not keep one lock per video
    it ever saw. Each inversion worker has its own (replicas in one test
    process then coordinate only through the store, as separate ones do)."""

    def __init__(self):
        self._locks: dict[str, list] = {}  # video id -> [lock, holders and waiters]
        self._guard = threading.Lock()

    @contextmanager
    def hold(self, video_id: str) -> Iterator[None]:
        with self._guard:
            entry = self._locks.setdefault(video_id, [threading.Lock(), 0])
            entry[1] += 1
        try:
            with entry[0]:
                yield
        finally:
            with self._guard:
                entry[1] -= 1
                if entry[1] == 0:
                    del self._locks[video_id]

    def interested(self, video_id: str) -> int:
        """Requests in this process holding or waiting for ``video_id``."""
        with self._guard:
            entry = self._locks.get(video_id)
            return entry[1] if entry else 0


_default_locks = VideoLocks()


class JobCancelled(Pix2VideoError):
    """The job's caller went away and no other caller waits for the same video."""


class JobControl:
    """How a caller stops its job: ``cancel()`` when it goes away; the job calls
    ``checkpoint()`` between stages and batches, which raises JobCancelled
    unless another request waits for the same video: of this process, or of
    another replica waiting on this job's lease."""

    def __init__(self):
        self._gone = threading.Event()
        self.video_id: str | None = None  # set once the frames are hashed
        self.locks: VideoLocks | None = None
        self.remote_waiters: Callable[[], int] | None = None  # set while the job holds a lease

    def cancel(self) -> None:
        self._gone.set()

    @property
    def cancelled(self) -> bool:
        return self._gone.is_set()

    def checkpoint(self) -> None:
        if not self._gone.is_set():
            return
        if self.video_id is not None and self.locks is not None and self.locks.interested(self.video_id) > 1:
            return  # another caller waits for this video: run on for it
        if self.remote_waiters is not None and self._remote_waiters() > 0:
            return  # a caller on another replica waits on our lease: run on for it
        raise JobCancelled("the caller went away")

    def _remote_waiters(self) -> int:
        try:
            return self.remote_waiters()
        except Pix2VideoError as exc:  # the store is down: nobody can be told either way; stop
            log.warning("waiters of video %s: unknown (%s); the job stops", self.video_id, exc)
            return 0


@dataclass(frozen=True)
class LeasePolicy:
    """One job per video across processes sharing a store (see :mod:`.store.lease`).

    owner: this process's name in the lease. ttl: seconds a lease lives unless
    renewed. poll: seconds between looks while another owner's job runs.
    """

    owner: str
    ttl: float = 30.0
    poll: float = 0.5
    settle: float = 0.2


def _claim_or_wait(store, video_id: str, policy: LeasePolicy, control: JobControl) -> Lease | Manifest:
    """Our lease on the video, or the manifest another owner's job wrote while we waited.

    A holder that dies stops renewing; its lease expires and we take over.
    """
    lease = Lease(store, "videos/" + video_id, policy.owner, policy.ttl, settle=policy.settle)
    waiter = Waiter(store, "videos/" + video_id, policy.owner, policy.ttl)
    try:
        while True:
            if lease.try_acquire():
                # It may have finished between our manifest check and the claim.
                manifest = read_manifest(store, video_id)
                if manifest is not None:
                    lease.release()
                    return manifest
                control.remote_waiters = lambda: live_waiters(store, "videos/" + video_id)
                return lease
            control.checkpoint()
            waiter.beat()  # the holder's job runs on for us if its own caller goes away
            time.sleep(policy.poll)
            manifest = read_manifest(store, video_id)
            if manifest is not None:
                return manifest
    finally:
        waiter.withdraw()


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
    control: JobControl | None = None,
    locks: VideoLocks | None = None,
    lease: LeasePolicy | None = None,
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
        control: lets the caller stop the job between stages (and, through
            ``invert_fn``, between batches); see :class:`JobControl`.
        locks: this process's per-video locks (default: one set per process).
        lease: also hold a lease in ``store``, so that another process given
            the same video waits for this job and answers from its manifest.
    """
    video_id = video_id_for(frames, settings, model_identity)
    control = control or JobControl()
    locks = locks or _default_locks
    # Keyed by the store's tenant prefix too: tenant B's inversion of a clip
    # never waits on tenant A's (the wait would tell B that A is inverting it).
    key = getattr(store, "prefix", "") + video_id
    control.video_id, control.locks = key, locks
    with locks.hold(key), ExitStack() as held:
        manifest = read_manifest(store, video_id)
        if manifest is not None:
            return InversionResult(video_id, manifest, cached=True)
        if lease is not None:
            claim = _claim_or_wait(store, video_id, lease, control)
            if isinstance(claim, Manifest):
                return InversionResult(video_id, claim, cached=True)
            held.enter_context(claim.heartbeat())
        stage = on_stage or (lambda _name: None)

        def stage_checked(name: str) -> None:
            control.checkpoint()
            stage(name)

        stage_checked("depth")
        depth = depth_fn(frames)
        prompt = settings.source_prompt
        if prompt is None:
            stage_checked("caption")
            prompt = caption_fn(frames[:1])[0]
        stage_checked("inversion")
        latents = invert_fn(frames, depth, prompt, settings.num_steps)
        stage_checked("store")
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
