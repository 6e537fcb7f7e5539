"""The editor's scheduler: which (session, frame, step) work items advance next.

Every edited frame is denoised from its inverted ``x_T`` with the target
prompt. Frame i at step k needs only its own latent after step k-1 and its
reference frames' features (and the previous frame's predicted ``x0``) at the
same step k. So the scheduler keeps a set of frames in flight per session
(admission), and each tick picks every work item whose dependencies are met
(readiness), of every session, for one batched denoising call. With one frame
in flight this is the paper's frame-by-frame method; with more it is the
wavefront (frame i one step behind frame i-1); the arithmetic per item is the
same either way.

Memory per session stays bounded (feature lifetimes): a frame's features at
step k are dropped as soon as the last frame that references them has done
step k, and x_T and depth are read from the source only when a frame enters
the flight.

No model code here: the :mod:`~pix2video.engine.denoiser` computes the steps.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

import numpy as np
import torch

from .attention import InjectionContext
from .settings import EditSettings
from .transfer import to_device

UNCOND, COND = 0, 1  # guidance branches


class FeatureKey(NamedTuple):
    """Names the injected features one sample recorded: kept in the
    :class:`~pix2video.engine.attention.InjectionContext` until every frame
    that references them has passed ``step``."""

    session: int | str
    frame: int
    step: int
    branch: int  # UNCOND or COND


class FrameSource(Protocol):
    """An inverted video, read frame by frame (a store record implements it).

    It may also carry ``steps_offset`` (int or None): the DDIM timestep offset
    it was inverted with; the edit denoises on the same timesteps. Sources
    without it were inverted with the model's own (see :func:`steps_offset_of`).
    """

    num_frames: int
    num_steps: int

    def latent(self, index: int) -> torch.Tensor:  # (4, h, w) x_T
        ...

    def depth(self, index: int) -> torch.Tensor:  # (1, h, w) in [-1, 1]
        ...


def steps_offset_of(video: FrameSource) -> int | None:
    """The timestep offset ``video`` was inverted with; None: the model's scheduler config's."""
    return getattr(video, "steps_offset", None)


def reference_frames(settings: EditSettings, num_frames: int) -> list[tuple[int, ...]]:
    """Reference frames of every frame (empty for the anchor, frame 0).

    Drawn up front (seeded) so the scheduler knows how long each frame's
    features must be kept.
    """
    rng = np.random.default_rng(settings.seed)
    refs: list[tuple[int, ...]] = [()]
    for i in range(1, num_frames):
        if settings.reference == "anchor+previous":
            refs.append((0, i - 1))
        elif settings.reference == "anchor":
            refs.append((0,))
        elif settings.reference == "previous":
            refs.append((i - 1,))
        else:  # anchor+random: the anchor and a random earlier frame other than it
            refs.append((0, int(rng.integers(1, i)) if i > 1 else 0))
    return refs


@dataclass
class Flight:
    """A frame being denoised: its latent after ``step`` steps, and its depth."""

    latent: torch.Tensor  # (4, h, w), float32 or wider
    depth: torch.Tensor  # (1, h, w)
    step: int = 0


@dataclass
class EditSession:
    """State of one edit: frames in flight, features and x0 kept for later frames."""

    id: int | str
    video: FrameSource
    settings: EditSettings
    embeds: dict[int, torch.Tensor]  # branch -> (1, tokens, dim)
    refs: list[tuple[int, ...]]
    consumers: list[int]  # per frame: how many later frames reference it
    progress: list[int]  # per frame: denoising steps done
    emit_from: int = 0  # frames before this are recomputed (their features and x0 are needed) but not decoded
    next_frame: int = 0  # next frame to admit into the flight
    next_out: int = 0  # next frame to hand out, in order
    flight: dict[int, Flight] = field(default_factory=dict)
    pending: dict[tuple[int, int], int] = field(default_factory=dict)  # (frame, step) -> consumers left
    x0: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)  # kept for the next frame's update
    finished: dict[int, torch.Tensor] = field(default_factory=dict)  # clean latents awaiting in-order output
    latent_size: tuple[int, ...] = ()  # (h, w), known once a frame is admitted

    @property
    def num_frames(self) -> int:
        return self.video.num_frames

    @property
    def done(self) -> bool:
        return self.next_out >= self.num_frames

    @property
    def injects(self) -> bool:
        return self.settings.inject_layers != "none"

    def window(self) -> int:
        # Narrow until the first frame is out (its latency is what a user
        # waits for), then as wide as the settings allow. A session rebuilt
        # from a later frame (emit_from > 0) follows the very same schedule
        # (anchor alone, then full width), so that on the CPU, its frames are
        # bitwise those of the run it continues (the anchor alone is a
        # self-only call, which rounds differently from a batched one).
        return 1 if self.next_out == 0 else self.settings.frames_in_flight

    def runnable(self) -> bool:
        """Whether the session may advance now; a service's record overrides
        this with its own rule (back-pressure, a client away), decided on the
        thread that ticks."""
        return True

    def deps(self, frame: int) -> set[int]:
        d = set(self.refs[frame]) if self.injects else set()
        if frame > 0 and self.settings.latent_update != "off":
            d.add(frame - 1)
        return d

    def ready(self, frame: int) -> bool:
        step = self.flight[frame].step
        return all(self.progress[r] > step for r in self.deps(frame))

    def updates(self, frame: int) -> bool:
        """Whether ``frame``'s latent update (toward the previous frame) applies at its current step."""
        return frame > 0 and self.settings.updates_at(self.flight[frame].step)

    def record_key(self, frame: int, branch: int) -> FeatureKey | None:
        """Key to keep ``frame``'s features under at its current step (None: no later frame reads them)."""
        if not self.injects or self.consumers[frame] == 0:
            return None
        return FeatureKey(self.id, frame, self.flight[frame].step, branch)

    def ref_keys(self, frame: int, branch: int) -> tuple[FeatureKey, ...]:
        """Keys of the features ``frame`` attends to at its current step."""
        if not self.injects:
            return ()
        step = self.flight[frame].step
        return tuple(FeatureKey(self.id, r, step, branch) for r in self.refs[frame])

    def prev_x0(self, frame: int) -> torch.Tensor:
        """The previous frame's predicted x0 at ``frame``'s current step (for the latent update)."""
        return self.x0[(frame - 1, self.flight[frame].step)]


WorkItem = tuple[EditSession, int]  # (session, frame): advance the frame by one step


class Scheduler:
    """Admission, readiness and feature lifetimes of every open session.

    Args:
        context: where injected features are kept (released here when no
            frame needs them any more).
        device, latent_dtype: where and in what precision admitted frames live.
        max_batch_items: most work items per tick.
    """

    def __init__(self, context: InjectionContext, device, latent_dtype: torch.dtype, max_batch_items: int):
        self.context = context
        self.device = device
        self.latent_dtype = latent_dtype
        self.max_batch_items = max_batch_items
        self.sessions: dict[int, EditSession] = {}
        self._ids = itertools.count(1)
        self.ticks = 0  # ticks that advanced work (sessions of different sizes take turns by it)

    # -- sessions -----------------------------------------------------------

    def add(
        self,
        video: FrameSource,
        settings: EditSettings,
        embeds: dict[int, torch.Tensor],
        session_id: int | str | None = None,
        session_type: type[EditSession] = EditSession,
        **fields,
    ) -> EditSession:
        """Registers a session (id: ``session_id``, default the next number), as
        a ``session_type`` (a subclass of EditSession holding a service's own
        per-session fields, given in ``fields``)."""
        refs = reference_frames(settings, video.num_frames)
        consumers = [0] * video.num_frames
        for r in refs:
            for j in set(r):
                consumers[j] += 1
        session = session_type(
            id=next(self._ids) if session_id is None else session_id,
            video=video,
            settings=settings,
            embeds=embeds,
            refs=refs,
            consumers=consumers,
            progress=[0] * video.num_frames,
            **fields,
        )
        if session.id in self.sessions:
            raise ValueError(f"session {session.id!r} is already open")
        self.sessions[session.id] = session
        return session

    def remove(self, session_id: int | str) -> None:
        """Forgets a session and frees everything it holds, at once."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        for key in self.feature_keys(session_id):
            self.context.release(key)
        session.flight.clear()
        session.x0.clear()
        session.finished.clear()
        session.pending.clear()

    def feature_keys(self, session_id: int | str) -> list[FeatureKey]:
        """Keys of the features a session holds."""
        return [k for k in self.context.keys if isinstance(k, FeatureKey) and k.session == session_id]

    def session_bytes(self, session_id: int | str) -> int:
        """Device memory held by a session's kept features, x0 and frames in flight."""
        s = self.sessions[session_id]
        feats = len(self.feature_keys(session_id)) * self.context.slot_bytes(s.latent_size)
        tensors = [f.latent for f in s.flight.values()] + [f.depth for f in s.flight.values()]
        tensors += list(s.x0.values()) + list(s.finished.values())
        return feats + sum(t.numel() * t.element_size() for t in tensors)

    # -- admission and readiness ----------------------------------------------

    def _admit(self, s: EditSession) -> None:
        while s.next_frame < s.num_frames and len(s.flight) < s.window():
            i = s.next_frame
            s.flight[i] = Flight(
                latent=to_device(s.video.latent(i), self.device, self.latent_dtype),
                depth=to_device(s.video.depth(i), self.device, self.latent_dtype),
            )
            s.latent_size = tuple(s.flight[i].latent.shape[1:])
            s.next_frame += 1

    def ready_items(self) -> list[WorkItem]:
        """Work items (session, frame) that can advance one step now, oldest
        first; all of one latent size, since they share a call (sessions of
        different sizes take turns, tick by tick)."""
        items = []
        for s in self.sessions.values():
            if not s.runnable():
                continue
            self._admit(s)
            items += [(s, i) for i in sorted(s.flight) if s.ready(i)]
        sizes = list(dict.fromkeys(s.latent_size for s, _ in items))
        if len(sizes) > 1:
            size = sizes[self.ticks % len(sizes)]
            items = [(s, i) for s, i in items if s.latent_size == size]
        return items[: self.max_batch_items]

    # -- after a step -------------------------------------------------------

    def advance(self, items: list[WorkItem], latents: list[torch.Tensor], x0: torch.Tensor) -> None:
        """Each item's frame has done one more step, landing on ``latents[n]``
        with predicted ``x0[n]``: keep what later frames need, drop what
        nobody needs any more, and set finished frames aside."""
        for n, (s, i) in enumerate(items):
            f = s.flight[i]
            step = f.step
            f.latent, f.step = latents[n], step + 1
            s.progress[i] = step + 1
            if s.settings.latent_update != "off" and i + 1 < s.num_frames and s.settings.updates_at(step):
                s.x0[(i, step)] = x0[n]
            s.x0.pop((i - 1, step), None)
            if s.injects:
                if s.consumers[i] > 0:
                    s.pending[(i, step)] = s.consumers[i]
                self._release(s, i, step)
            if f.step == s.settings.num_steps:
                s.finished[i] = f.latent
                del s.flight[i]
        self.ticks += 1

    def _release(self, s: EditSession, frame: int, step: int) -> None:
        """Frame ``frame`` is past ``step``: its references' features at that
        step have one consumer fewer; drop those nobody needs any more."""
        for r in set(s.refs[frame]):
            left = s.pending[(r, step)] - 1
            if left:
                s.pending[(r, step)] = left
            else:
                del s.pending[(r, step)]
                for b in (UNCOND, COND):
                    self.context.release(FeatureKey(s.id, r, step, b))

    def take_finished(self) -> list[tuple[EditSession, list[int], list[torch.Tensor]]]:
        """Finished frames that can be handed out now, in frame order, per session."""
        out = []
        for s in self.sessions.values():
            ready = []
            while s.next_out in s.finished:
                ready.append(s.next_out)
                s.next_out += 1
            if ready:
                out.append((s, ready, [s.finished.pop(i) for i in ready]))
        return out
