"""The step-parallel editor: every session's denoising steps sharded over N devices.

Frame i at step t needs only its reference frames' self-attention features
and the previous frame's predicted x0 at that same step t (docs/ARCHITECTURE.md,
section 1). So device g can own the steps [s_g, s_{g+1}) of every frame:
it keeps the features and x0 targets of those steps only, runs its own
wavefront over them (a :class:`StageScheduler`, cross-session batching
included) and hands each frame's latent (4 x h x w; its depth map rides
along, 1 x h x w) to device g+1 when the frame has done step s_{g+1} - 1.
The last device decodes. Nothing else crosses devices, and the arithmetic of
every step is the one-device editor's (the same
:class:`~pix2video.engine.denoiser.Denoiser`), so the frames are the same.

How it is driven: one process drives all N devices, one stage per device
(a :class:`~pix2video.engine.editor.Pix2VideoEditor` whose scheduler only
sees the stage's steps). A :meth:`StepParallelEditor.tick` is one round:
the hand-offs of the last round enter the next stages' inboxes, then every
stage advances its ready work by one step (on CUDA devices, each stage on its
own thread: the work is queued on each GPU's stream, so the GPUs overlap),
and the round ends when every stage has queued its work. Commands (open,
close) run between rounds, so the stages share no lock. Why one process and
not torch.distributed (one process per GPU): a service session opens,
resumes, pauses for its client and closes on every stage at once, which is a
method call here and a control protocol there; the hand-off is a 64 KB
device-to-device copy that torch orders on the two streams without the host
waiting; and the same code runs on the CPU, where the tests hold it to the
one-device editor. The cost: the host work of all stages shares one Python
interpreter (docs/step-parallel.md measures it against a step's GPU time).

Step ranges come from :func:`~pix2video.engine.step_ranges.plan_steps`, per
session (its step count and latent-update steps), balanced by a cost model.
"""

from __future__ import annotations

import concurrent.futures
import copy
import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Sequence

import torch

from .editor import EditedFrame, Pix2VideoEditor
from .scheduler import EditSession, Flight, FrameSource, Scheduler, WorkItem
from .settings import EditSettings
from .step_ranges import DEFAULT_COSTS, StepCosts, plan_steps
from .timers import StageTimer
from .unet_runner import UNetRunner

__all__ = ["StageScheduler", "StageSession", "StepParallelEditor", "replicate_models"]


@dataclass
class StageSession(EditSession):
    """A session's state on a stage after the first: the frames of the stage's
    steps, their features and x0. It advances when the session's record on the
    first stage (``front``: the service's session record) may."""

    front: EditSession | None = None

    def runnable(self) -> bool:
        return self.front is None or self.front.runnable()


@dataclass
class Handoff:
    """A frame leaving a stage: its latent after the stage's last step, and its depth."""

    frame: int
    latent: torch.Tensor
    depth: torch.Tensor
    handed_at: float = 0.0  # time.perf_counter() when it left


class StageScheduler(Scheduler):
    """The scheduler of one stage: each session's steps [first, end) only.

    A frame enters the flight at step ``first``, from the stage's inbox (filled
    with the previous stage's hand-offs; the first stage reads the video, as
    the one-device scheduler does), and leaves it at step ``end``. Everything
    in between (readiness, the wavefront, feature lifetimes, x0 targets) is
    the one-device :class:`~pix2video.engine.scheduler.Scheduler`'s.
    """

    def __init__(self, context, device, latent_dtype: torch.dtype, max_batch_items: int):
        super().__init__(context, device, latent_dtype, max_batch_items)
        self.ranges: dict[int | str, tuple[int, int]] = {}  # session -> (first, end) step
        self.inbox: dict[int | str, dict[int, Handoff]] = {}  # session -> frame -> arrived, not yet admitted
        self.leaving: dict[tuple[int | str, int], torch.Tensor] = {}  # (session, frame) -> depth, until handed on
        # Set by the editor: whether a session may admit no more frames (the next stage's inbox is full).
        self.blocked: Callable[[EditSession], bool] = lambda s: False
        self.on_admit: Callable[[EditSession, Handoff], None] | None = None  # a hand-off entered the flight

    def add(self, video, settings, embeds, session_id=None, session_type=EditSession, *, steps=None, **fields):
        """As :meth:`Scheduler.add`, for the steps ``steps`` = (first, end) of every frame."""
        first, end = steps if steps is not None else (0, settings.num_steps)
        if not 0 <= first < end <= settings.num_steps:
            raise ValueError(f"steps: must satisfy 0 <= first < end <= {settings.num_steps}, got {steps!r}")
        s = super().add(video, settings, embeds, session_id, session_type, **fields)
        # No frame has done a step of this stage yet; earlier steps are another stage's.
        s.progress = [first] * s.num_frames
        self.ranges[s.id] = (first, end)
        self.inbox[s.id] = {}
        return s

    def remove(self, session_id: int | str) -> None:
        super().remove(session_id)
        self.ranges.pop(session_id, None)
        self.inbox.pop(session_id, None)
        for key in [k for k in self.leaving if k[0] == session_id]:
            del self.leaving[key]

    def session_bytes(self, session_id: int | str) -> int:
        waiting = list(self.inbox.get(session_id, {}).values())
        extra = sum(
            h.latent.numel() * h.latent.element_size() + h.depth.numel() * h.depth.element_size() for h in waiting
        )
        return super().session_bytes(session_id) + extra

    def _admit(self, s: EditSession) -> None:
        if self.blocked(s):
            return
        first, _ = self.ranges[s.id]
        if first == 0:
            super()._admit(s)
            return
        inbox = self.inbox[s.id]
        while s.next_frame in inbox and len(s.flight) < s.window():
            h = inbox.pop(s.next_frame)
            s.flight[h.frame] = Flight(latent=h.latent, depth=h.depth, step=first)
            s.latent_size = tuple(h.latent.shape[1:])
            s.next_frame += 1
            if self.on_admit is not None:
                self.on_admit(s, h)

    def advance(self, items: list[WorkItem], latents: list[torch.Tensor], x0: torch.Tensor) -> None:
        super().advance(items, latents, x0)
        for s in {id(s): s for s, _ in items}.values():
            end = self.ranges[s.id][1]
            if end == s.settings.num_steps:
                continue  # the last stage: the one-device scheduler set the frame aside already
            for i in [i for i, f in s.flight.items() if f.step == end]:
                f = s.flight.pop(i)
                s.finished[i] = f.latent
                self.leaving[(s.id, i)] = f.depth

    def take_handoffs(self) -> list[tuple[EditSession, list[Handoff]]]:
        """Frames done with this stage's steps, in frame order, per session."""
        now = time.perf_counter()
        out = []
        for s, ready, latents in self.take_finished():
            out.append(
                (s, [Handoff(i, lat, self.leaving.pop((s.id, i)), now) for i, lat in zip(ready, latents, strict=True)])
            )
        return out


def replicate_models(models, device, share: bool = True):
    """``models`` on ``device``: the same object when it is there already and
    ``share`` is set, else a copy of the UNet, VAE and text encoder (no depth
    estimator: the editor reads depth from the store)."""
    device = torch.device(device)
    if share and torch.device(models.device) == device:
        return models
    if not dataclasses.is_dataclass(models) or isinstance(models, type):
        raise TypeError("replicate_models: needs a dataclass model set (pix2video.models.loading.ModelSet)")
    parts = {name: copy.deepcopy(getattr(models, name)).to(device) for name in ("unet", "vae", "text_encoder")}
    extra = {"depth_estimator": None} if any(f.name == "depth_estimator" for f in dataclasses.fields(models)) else {}
    return dataclasses.replace(models, device=device, **parts, **extra)


@dataclass
class Stage:
    """One device's share: its editor (models, runner, feature slots, denoiser)
    with a :class:`StageScheduler`, and its timings."""

    index: int
    editor: Pix2VideoEditor
    timer: StageTimer | None = None
    items_done: int = 0  # work items (frame-steps) advanced
    ticks: int = 0  # rounds in which this stage advanced work
    host_seconds: float = 0.0  # host time spent queueing this stage's ticks (threads run it in parallel)

    @property
    def scheduler(self) -> StageScheduler:
        return self.editor.scheduler  # type: ignore[return-value]

    @property
    def device(self) -> torch.device:
        return torch.device(self.editor.models.device)


@dataclass
class _Contexts:
    """What the service's gauges read of the feature slots, all stages together."""

    stages: list = field(default_factory=list)

    @property
    def capacity(self) -> int:
        return sum(st.editor.context.capacity for st in self.stages)

    @property
    def slot_of(self) -> list:
        return [k for st in self.stages for k in st.editor.context.slot_of]


class DeviceTimers:
    """One stage timer per device (the service's per-device UNet time); :meth:`flush` flushes each."""

    def __init__(self, timers: Sequence[StageTimer | None]):
        self.timers = list(timers)

    def flush(self, wait: bool = False) -> None:
        for t in self.timers:
            flush = getattr(t, "flush", None)
            if flush is not None:
                flush(wait)


class StepParallelEditor:
    """Edits inverted videos with every session's steps sharded over the
    devices of ``models`` (one model set per device, in stage order).

    Args:
        models: one loaded model set per stage (see :func:`replicate_models`);
            stages may share one set only when they are not ticked on threads.
        max_batch_items, feature_slots: per stage, as for
            :class:`~pix2video.engine.editor.Pix2VideoEditor`.
        runners: one UNet runner per stage (default plain calls).
        costs: the cost model that balances the step ranges (measured:
            :class:`~pix2video.engine.step_ranges.CostMeter`).
        threads: tick the stages on one thread each; default when the stages
            are on two or more distinct CUDA devices.
        max_inbox: frames a session may have waiting at a stage's door before
            the stage before it stops admitting new frames of it (default:
            the session's wavefront width).
    """

    def __init__(
        self,
        models: Sequence,
        max_batch_items: int = 64,
        runners: Sequence[UNetRunner] | None = None,
        feature_slots: int = 128,
        costs: StepCosts = DEFAULT_COSTS,
        threads: bool | None = None,
        max_inbox: int | None = None,
    ):
        if not models:
            raise ValueError("models: the step-parallel editor needs at least one device")
        runners = list(runners) if runners is not None else [UNetRunner(m.unet) for m in models]
        if len(runners) != len(models):
            raise ValueError(f"runners: one per stage, got {len(runners)} for {len(models)} stages")
        self.stages: list[Stage] = []
        for g, (m, runner) in enumerate(zip(models, runners, strict=True)):
            ed = Pix2VideoEditor(m, max_batch_items=max_batch_items, runner=runner, feature_slots=feature_slots)
            ed.scheduler = StageScheduler(ed.context, m.device, ed.latent_dtype, max_batch_items)
            self.stages.append(Stage(g, ed))
        for g, st in enumerate(self.stages):
            st.scheduler.blocked = self._blocker(g)
            st.scheduler.on_admit = self._admit_hook(g)
        self.costs = costs
        self.max_inbox = max_inbox
        cuda = {st.device for st in self.stages if st.device.type == "cuda"}
        self.threads = len(cuda) > 1 if threads is None else threads
        if self.threads and len({id(m) for m in models}) < len(models):
            raise ValueError("models: stages ticked on threads need their own model sets (replicate_models)")
        self._pool = (
            concurrent.futures.ThreadPoolExecutor(len(self.stages), thread_name_prefix="step-stage")
            if self.threads and len(self.stages) > 1
            else None
        )
        self.bounds: dict[int | str, list[int]] = {}  # session -> its step boundaries
        self._handoffs: list[tuple[int, EditSession, list[Handoff]]] = []  # made last round, not yet delivered
        self.rounds = 0  # rounds in which any stage advanced (the service's "ticks")
        # Hooks (called on the ticking thread): a hand-off entered stage g + 1 after this many seconds.
        self.on_handoff: Callable[[int, float], None] | None = None
        self.context = _Contexts(self.stages)

    @classmethod
    def on_devices(
        cls,
        models,
        devices: Sequence[str | torch.device],
        runner: Callable[[object], UNetRunner] | None = None,
        **kw,
    ) -> "StepParallelEditor":
        """A step-parallel editor over ``devices``, with ``models`` copied to each
        (``runner(models_g)`` builds each stage's UNet runner)."""
        devs = [torch.device(d) for d in devices]
        threads = kw.get("threads")
        threaded = threads if threads is not None else len({d for d in devs if d.type == "cuda"}) > 1
        sets: list = []
        by_device: dict[torch.device, object] = {}
        for d in devs:
            if not threaded and d in by_device:  # sequential stages may share one set per device
                sets.append(by_device[d])
                continue
            # Threaded stages each get their own set (the injection processors are swapped per call).
            reuse = torch.device(models.device) == d and not any(m is models for m in sets)
            m = models if reuse else replicate_models(models, d, share=False)
            by_device[d] = m
            sets.append(m)
        runners = [runner(m) for m in sets] if runner is not None else None
        return cls(sets, runners=runners, **kw)

    # -- facade of the one-device editor (what the service and the benchmark use) --

    @property
    def num_stages(self) -> int:
        return len(self.stages)

    @property
    def devices(self) -> list[torch.device]:
        return [st.device for st in self.stages]

    @property
    def models(self):
        """The first stage's model set (prompt encoding happens there)."""
        return self.stages[0].editor.models

    @property
    def runner(self) -> UNetRunner:
        """The first stage's UNet runner (each stage has its own)."""
        return self.stages[0].editor.runner

    @property
    def sessions(self) -> dict[int | str, EditSession]:
        """The open sessions' records: the first stage's (the service's own type, see :meth:`open_session`)."""
        return self.stages[0].scheduler.sessions

    @property
    def ticks(self) -> int:
        return self.rounds

    @property
    def items_done(self) -> int:
        """Work items (frame-steps) advanced, all stages."""
        return sum(st.items_done for st in self.stages)

    @property
    def timer(self):
        timers = [st.timer for st in self.stages]
        return None if all(t is None for t in timers) else DeviceTimers(timers)

    @timer.setter
    def timer(self, value) -> None:
        """None, one timer for every stage (host clock), or a :class:`DeviceTimers` with one per stage."""
        if isinstance(value, DeviceTimers):
            if len(value.timers) != len(self.stages):
                raise ValueError(f"timer: one per stage, got {len(value.timers)} for {len(self.stages)} stages")
            for st, t in zip(self.stages, value.timers, strict=True):
                st.timer = t
        else:
            for st in self.stages:
                st.timer = value

    def plan(self, settings: EditSettings) -> list[int]:
        """Step boundaries of an edit with ``settings`` over the stages."""
        return plan_steps(settings, len(self.stages), self.costs)

    def open_session(
        self,
        video: FrameSource,
        settings: EditSettings,
        *,
        start_frame: int = 0,
        session_id: int | str | None = None,
        session_type: type[EditSession] = EditSession,
        **fields,
    ) -> EditSession:
        """As :meth:`Pix2VideoEditor.open_session` (same checks, on the first
        stage); the session is registered on every stage, over its steps."""
        from ..errors import InvalidInput

        if settings.num_steps < len(self.stages):
            raise InvalidInput(
                f"num_steps: the step-parallel editor on {len(self.stages)} devices needs at least "
                f"{len(self.stages)} steps, got {settings.num_steps}"
            )
        bounds = self.plan(settings)
        first = self.stages[0]
        front = first.editor.open_session(
            video,
            settings,
            start_frame=start_frame,
            session_id=session_id,
            session_type=session_type,
            steps=(bounds[0], bounds[1]),
            **fields,
        )
        try:
            for g, st in enumerate(self.stages[1:], start=1):
                embeds = {b: e.to(st.device) for b, e in front.embeds.items()}
                st.scheduler.add(
                    video,
                    settings,
                    embeds,
                    front.id,
                    StageSession,
                    steps=(bounds[g], bounds[g + 1]),
                    emit_from=start_frame,
                    front=front,
                )
        except BaseException:
            self.close_session(front.id)
            raise
        self.bounds[front.id] = bounds
        return front

    def close_session(self, session_id: int | str) -> None:
        """Stops a session's work on every stage and frees everything it holds, at once."""
        for st in self.stages:
            st.editor.close_session(session_id)
        self.bounds.pop(session_id, None)
        self._handoffs = [(g, s, hs) for g, s, hs in self._handoffs if s.id != session_id]

    def frames_in_flight(self) -> int:
        """Frames being denoised or waiting at a stage's door, all sessions, all stages."""
        return sum(
            len(s.flight) + len(st.scheduler.inbox.get(sid, ()))
            for st in self.stages
            for sid, s in st.scheduler.sessions.items()
        ) + sum(len(hs) for _, _, hs in self._handoffs)

    def session_bytes(self, session_id: int | str) -> int:
        """Device memory a session holds, all stages together."""
        return sum(st.scheduler.session_bytes(session_id) for st in self.stages if session_id in st.scheduler.sessions)

    def edit(self, video: FrameSource, settings: EditSettings, start_frame: int = 0) -> Iterator[EditedFrame]:
        """Edits a whole video (from ``start_frame``), yielding each frame as soon as it is done, in order."""
        session = self.open_session(video, settings, start_frame=start_frame)
        left = video.num_frames - start_frame
        try:
            while left:
                before = self.rounds
                for sid, frame in self.tick():
                    if sid == session.id:
                        left -= 1
                        yield frame
                if self.rounds == before and left and not self._handoffs:
                    raise RuntimeError("step-parallel editor: no stage can advance")  # a bug, never a user's
        finally:
            self.close_session(session.id)

    # -- rounds ---------------------------------------------------------------

    @torch.no_grad()
    def tick(self) -> list[tuple[int | str, EditedFrame]]:
        """One round: last round's hand-offs enter the next stages, every stage
        advances its ready work by one step (one UNet call each), and the
        frames the last stage finished are decoded and returned, as (session id, frame)."""
        self._deliver()
        if self._pool is not None:
            results = list(self._pool.map(self._stage_tick, self.stages))
        else:
            results = [self._stage_tick(st) for st in self.stages]
        if any(advanced for advanced, _ in results):
            self.rounds += 1
        for st, (_, out) in zip(self.stages[:-1], results[:-1], strict=True):
            self._handoffs += [(st.index, s, hs) for s, hs in out]
        return results[-1][1]

    @torch.no_grad()  # grad mode is per thread: the stage threads need it too (and graphs need it off)
    def _stage_tick(self, st: Stage):
        start = time.perf_counter()
        ed, sched = st.editor, st.scheduler
        items = sched.ready_items()
        if items:
            latents, x0 = ed.denoiser.step(items, st.timer)
            sched.advance(items, latents, x0)
            st.items_done += len(items)
            st.ticks += 1
        out: list  # the last stage's frames, or the other stages' hand-offs
        if st.index == len(self.stages) - 1:
            out = self._collect(st)
        else:
            nxt = self.stages[st.index + 1].device
            # The copy is queued on both devices' streams; the host does not wait for it.
            out = [
                (s, [dataclasses.replace(h, latent=h.latent.to(nxt), depth=h.depth.to(nxt)) for h in hs])
                for s, hs in sched.take_handoffs()
            ]
        st.host_seconds += time.perf_counter() - start
        return bool(items), out

    def _deliver(self) -> None:
        for g, s, hs in self._handoffs:
            inbox = self.stages[g + 1].scheduler.inbox.get(s.id)
            if inbox is None:  # closed meanwhile
                continue
            for h in hs:
                inbox[h.frame] = h
        self._handoffs = []

    def _blocker(self, g: int) -> Callable[[EditSession], bool]:
        if g == len(self.stages) - 1:
            return lambda s: False

        def blocked(s: EditSession) -> bool:
            waiting = len(self.stages[g + 1].scheduler.inbox.get(s.id, ()))
            limit = self.max_inbox or s.settings.frames_in_flight
            return waiting >= limit

        return blocked

    def _admit_hook(self, g: int) -> Callable[[EditSession, Handoff], None]:
        def admitted(s: EditSession, h: Handoff) -> None:
            if self.on_handoff is not None:
                self.on_handoff(g - 1, time.perf_counter() - h.handed_at)

        return admitted

    def _collect(self, st: Stage) -> list[tuple[int | str, EditedFrame]]:
        """Decodes the last stage's finished frames (batched per session), in frame order."""
        out = []
        timer = st.timer
        for s, ready, finished in st.scheduler.take_finished():
            keep = [n for n, i in enumerate(ready) if i >= s.emit_from]  # recomputed frames are not decoded
            ready, finished = [ready[n] for n in keep], [finished[n] for n in keep]
            if not ready:
                continue
            start = timer.mark() if timer is not None else None
            latents = torch.stack(finished)
            images = st.editor.denoiser.decode(latents)
            if timer is not None:
                timer.record("decode", start, timer.mark(), [(s.id, i) for i in ready])
            out += [
                (s.id, EditedFrame(index=i, image=img, latent=lat))
                for i, img, lat in zip(ready, images, latents, strict=True)
            ]
        return out

    @torch.no_grad()
    def warm_up(
        self, height: int, width: int, sizes: list[int] | None = None, compiled: list[int] | None = None
    ) -> None:
        """Every stage's :meth:`Pix2VideoEditor.warm_up`, and the last stage's
        VAE decode graphs at ``height`` x ``width`` (so that no graph is
        captured while other stages' threads run)."""
        from .vae import GRAPHED_DECODE_BATCHES, decode_latents

        for st in self.stages:
            st.editor.warm_up(height, width, sizes, compiled)
        last = self.stages[-1].editor.models
        if last.device.type == "cuda":
            f = last.vae_scale_factor
            for b in GRAPHED_DECODE_BATCHES:
                decode_latents(last, torch.zeros((b, 4, height // f, width // f), device=last.device))

    def close(self) -> None:
        """Stops the stage threads (the editor is unusable afterwards)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
