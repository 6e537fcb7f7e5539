"""The Pix2Video editor, run as a scheduler over (session, frame, step) work items.

Every edited frame is denoised from its inverted ``x_T`` with the target
prompt. Frame i at step k needs only its own latent after step k-1 and its
reference frames' features (and the previous frame's predicted ``x0``) at the
same step k. So the scheduler keeps a set of frames in flight, and each tick
advances every work item whose dependencies are met by one denoising step, in
one batched UNet call that holds both guidance branches of every item, of
every session. With one frame in flight this is the paper's frame-by-frame
method; with more it is the wavefront (frame i one step behind frame i-1);
the arithmetic per item is the same either way.

Memory per session stays bounded: a frame's features at step k are dropped as
soon as the last frame that references them has done step k, and x_T and depth
are read from the source only when a frame enters the flight.

Timing: an optional :class:`StageTimer` (``Pix2VideoEditor.timer``) is told
how long each stage of a tick took and which work items took part: a service
turns that into per-frame latencies by stage. Without one, nothing is timed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterator, Protocol

import numpy as np
import torch

from ..errors import InvalidInput
from .attention import InjectionContext, SampleRoute, injection_installed
from .ddim import DDIMSchedule, ddim_move, predict_eps_x0
from .settings import EditSettings
from .text import encode_prompts
from .transfer import to_device
from .unet_runner import UNetRunner
from .vae import decode_latents

UNCOND, COND = 0, 1


class StageTimer(Protocol):
    """Times the stages of the editor's ticks (metrics; optional).

    ``mark()`` returns an opaque point in time (on the device's stream, for a
    timer that uses CUDA events); ``record(stage, start, end, items)`` reports
    that ``stage`` ran from mark ``start`` to mark ``end`` for ``items``, a
    list of (session id, frame index), each of which took part in all of it.
    Stages: ``latent_update`` (the x_t update through the UNet, or the x0
    update), ``denoise`` (one batched UNet call with guidance and the DDIM
    move; reported once per tick with every item of the call) and ``decode``
    (the VAE decode of finished frames).
    """

    def mark(self) -> object: ...

    def record(self, stage: str, start: object, end: object, items: list[tuple[int, int]]) -> None: ...


class FrameSource(Protocol):
    """An inverted video, read frame by frame (a store record implements it)."""

    num_frames: int
    num_steps: int

    def latent(self, index: int) -> torch.Tensor:  # (4, h, w) x_T
        ...

    def depth(self, index: int) -> torch.Tensor:  # (1, h, w) in [-1, 1]
        ...


@dataclass
class EditedFrame:
    index: int
    image: np.ndarray  # (H, W, 3) uint8
    latent: torch.Tensor  # (4, h, w) clean latent the image was decoded from


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
class _Flight:
    latent: torch.Tensor  # (4, h, w), float32 or wider
    depth: torch.Tensor  # (1, h, w)
    step: int = 0


@dataclass
class EditSession:
    """State of one edit: frames in flight, features and x0 kept for later frames."""

    id: int
    video: FrameSource
    settings: EditSettings
    embeds: dict[int, torch.Tensor]  # branch -> (1, tokens, dim)
    refs: list[tuple[int, ...]]
    consumers: list[int]  # per frame: how many later frames reference it
    progress: list[int]  # per frame: denoising steps done
    paused: bool = False  # set by a server: no work while its client is away or behind
    next_frame: int = 0  # next frame to admit into the flight
    next_out: int = 0  # next frame to hand out, in order
    flight: dict[int, _Flight] = field(default_factory=dict)
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

    def window(self) -> int:
        # Narrow until the first frame is out (its latency is what a user
        # waits for), then as wide as the settings allow.
        return 1 if self.next_out == 0 else self.settings.frames_in_flight

    def deps(self, frame: int) -> set[int]:
        d = set(self.refs[frame]) if self.settings.inject_layers != "none" else set()
        if frame > 0 and self.settings.latent_update != "off":
            d.add(frame - 1)
        return d

    def ready(self, frame: int) -> bool:
        step = self.flight[frame].step
        return all(self.progress[r] > step for r in self.deps(frame))


class Pix2VideoEditor:
    """Edits inverted videos; many sessions can share its UNet calls.

    Args:
        models: the loaded :class:`~pix2video.models.ModelSet`.
        max_batch_items: most work items (frames) in one UNet call; each item
            is two samples with classifier-free guidance.
        split_guidance: run the unconditional and conditional branches as two
            UNet calls, as the authors' code does (a baseline for benchmarks;
            same arithmetic, more launches).
        runner: how the UNet is called (CUDA graphs, compilation, batch
            buckets); default plain eager calls.
        feature_slots: injected-feature slots to preallocate; one per kept
            (frame, step, branch), about 100 per session plus 4 per frame in
            flight for anchor+previous at 50 steps (they grow if short).
    """

    def __init__(
        self,
        models,
        max_batch_items: int = 64,
        split_guidance: bool = False,
        runner: UNetRunner | None = None,
        feature_slots: int = 128,
    ):
        self.models = models
        self.max_batch_items = max_batch_items
        self.split_guidance = split_guidance
        self.runner = runner or UNetRunner(models.unet)
        self.context = InjectionContext(slots=feature_slots, scratch=self.runner.bucket(2 * max_batch_items))
        self._generation = self.context.generation
        self.sessions: dict[int, EditSession] = {}
        self._ids = itertools.count(1)
        self._schedules: dict[int, DDIMSchedule] = {}
        self.latent_dtype = torch.promote_types(models.dtype, torch.float32)
        self.items_done = 0  # work items (frame-steps) advanced, all sessions
        self.ticks = 0  # batched UNet calls
        self.timer: StageTimer | None = None  # optional stage timing (see StageTimer)

    # -- sessions -----------------------------------------------------------

    def open_session(self, video: FrameSource, settings: EditSettings) -> EditSession:
        """Checks the inputs and registers a session; no GPU work until :meth:`tick`."""
        if video.num_frames < 1:
            raise InvalidInput(f"video: has no frames (num_frames={video.num_frames})")
        if settings.num_steps != video.num_steps:
            raise InvalidInput(
                f"num_steps: must equal the inversion's step count {video.num_steps}, got {settings.num_steps}"
            )
        prompts = [settings.prompt] + ([settings.negative_prompt] if settings.guided else [])
        emb = encode_prompts(self.models, prompts)
        embeds = {COND: emb[:1]}
        if settings.guided:
            embeds[UNCOND] = emb[1:]
        refs = reference_frames(settings, video.num_frames)
        consumers = [0] * video.num_frames
        for i, r in enumerate(refs):
            for j in set(r):
                consumers[j] += 1
        session = EditSession(
            id=next(self._ids),
            video=video,
            settings=settings,
            embeds=embeds,
            refs=refs,
            consumers=consumers,
            progress=[0] * video.num_frames,
        )
        self.sessions[session.id] = session
        return session

    def close_session(self, session_id: int) -> None:
        """Stops a session's work and frees everything it holds, at once."""
        session = self.sessions.pop(session_id, None)
        if session is None:
            return
        for key in [k for k in self.context.keys if k[0] == session_id]:
            self.context.release(key)
        session.flight.clear()
        session.x0.clear()
        session.finished.clear()
        session.pending.clear()

    def session_bytes(self, session_id: int) -> int:
        """Device memory held by a session's kept features, x0 and frames in flight."""
        s = self.sessions[session_id]
        feats = sum(1 for k in self.context.keys if k[0] == session_id) * self.context.slot_bytes(s.latent_size)
        tensors = [f.latent for f in s.flight.values()] + [f.depth for f in s.flight.values()]
        tensors += list(s.x0.values()) + list(s.finished.values())
        return feats + sum(t.numel() * t.element_size() for t in tensors)

    def edit(self, video: FrameSource, settings: EditSettings) -> Iterator[EditedFrame]:
        """Edits a whole video, yielding each frame as soon as it is done, in order."""
        session = self.open_session(video, settings)
        try:
            while not session.done:
                for sid, frame in self.tick():
                    if sid == session.id:
                        yield frame
        finally:
            self.close_session(session.id)

    # -- the scheduler ------------------------------------------------------

    def _schedule(self, num_steps: int) -> DDIMSchedule:
        if num_steps not in self._schedules:
            self._schedules[num_steps] = DDIMSchedule.from_config(self.models.scheduler_config, num_steps)
        return self._schedules[num_steps]

    def _admit(self, s: EditSession) -> None:
        dev = self.models.device
        while s.next_frame < s.num_frames and len(s.flight) < s.window():
            i = s.next_frame
            s.flight[i] = _Flight(
                latent=to_device(s.video.latent(i), dev, self.latent_dtype),
                depth=to_device(s.video.depth(i), dev, self.latent_dtype),
            )
            s.latent_size = tuple(s.flight[i].latent.shape[1:])
            s.next_frame += 1

    def ready_items(self) -> list[tuple[EditSession, int]]:
        """Work items (session, frame) that can advance one step now, oldest
        first; all of one latent size, since they share a call (sessions of
        different sizes take turns, tick by tick)."""
        items = []
        for s in self.sessions.values():
            if s.paused:
                continue
            self._admit(s)
            items += [(s, i) for i in sorted(s.flight) if s.ready(i)]
        sizes = list(dict.fromkeys(s.latent_size for s, _ in items))
        if len(sizes) > 1:
            size = sizes[self.ticks % len(sizes)]
            items = [(s, i) for s, i in items if s.latent_size == size]
        return items[: self.max_batch_items]

    @torch.no_grad()
    def tick(self) -> list[tuple[int, EditedFrame]]:
        """Advances every ready work item by one denoising step (one UNet call)
        and returns the frames that became available, as (session id, frame)."""
        items = self.ready_items()
        if not items:
            return []
        timer = self.timer
        start = timer.mark() if timer is not None else None
        latents = torch.stack([s.flight[i].latent for s, i in items])
        xt_items = [n for n, (s, i) in enumerate(items) if s.settings.latent_update == "xt" and self._updates(s, i)]
        if xt_items:
            latents = latents.clone()
            latents[xt_items] = self._xt_update([items[n] for n in xt_items], latents[xt_items])
            if timer is not None:
                start = self._lap(timer, "latent_update", start, [items[n] for n in xt_items])
        eps, x0 = self._predict(items, latents, record=True)
        self._advance(items, latents, eps, x0, timer, start)
        self.items_done += len(items)
        self.ticks += 1
        return self._collect()

    @staticmethod
    def _lap(timer: StageTimer, stage: str, start, items) -> object:
        end = timer.mark()
        timer.record(stage, start, end, [(s.id, i) for s, i in items])
        return end

    def _updates(self, s: EditSession, i: int) -> bool:
        return i > 0 and s.settings.updates_at(s.flight[i].step)

    def _predict(self, items, latents: torch.Tensor, record: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One batched UNet call for ``items`` -> guided (eps, x0) per item."""
        m = self.models
        samples = [(n, b) for b in (UNCOND, COND) for n, (s, _) in enumerate(items) if b in s.embeds]
        routes, t, emb, inp = [], [], [], []
        for n, b in samples:
            s, i = items[n]
            f = s.flight[i]
            step = f.step
            inject = s.settings.inject_layers != "none"
            rec = (s.id, i, step, b) if record and inject and s.consumers[i] > 0 else None
            refs = tuple((s.id, r, step, b) for r in s.refs[i]) if inject else ()
            routes.append(SampleRoute(record=rec, refs=refs, scope=s.settings.inject_layers))
            t.append(int(self._schedule(s.settings.num_steps).timesteps[step]))
            emb.append(s.embeds[b])
            inp.append(torch.cat([latents[n], f.depth]))
        x, t, emb = torch.stack(inp).to(m.dtype), to_device(t, m.device), torch.cat(emb)
        parts = [slice(0, len(samples))]
        if self.split_guidance:
            n_uncond = sum(1 for _, b in samples if b == UNCOND)
            parts = [p for p in (slice(0, n_uncond), slice(n_uncond, len(samples))) if p.stop > p.start]
        layers = next(
            (lay for lay in ("all", "decoder") if any(s.settings.inject_layers == lay for s, _ in items)), "none"
        )
        out = torch.cat([self._unet(x[p], t[p], emb[p], routes[p], layers) for p in parts]).to(latents.dtype)
        cond = {n: out[j] for j, (n, b) in enumerate(samples) if b == COND}
        uncond = {n: out[j] for j, (n, b) in enumerate(samples) if b == UNCOND}
        guided = torch.stack(
            [
                uncond[n] + s.settings.guidance_scale * (cond[n] - uncond[n]) if n in uncond else cond[n]
                for n, (s, _) in enumerate(items)
            ]
        )
        alpha = self._alphas(items, prev=False)
        pred_types = {self._schedule(s.settings.num_steps).prediction_type for s, _ in items}
        (ptype,) = pred_types  # one model, one prediction type
        return predict_eps_x0(guided, latents, alpha, ptype)

    def _unet(self, x, t, emb, routes: list[SampleRoute], layers: str) -> torch.Tensor:
        """One UNet call through the runner, with the injection processors of
        ``layers`` installed and the padding samples routed nowhere."""
        routes = routes + [SampleRoute(scope="none")] * (self.runner.bucket(len(routes)) - len(routes))
        self.context.set_routes(routes, x.device, tuple(x.shape[2:]))
        if self.context.generation != self._generation:  # the pools moved under any captured graph
            self.runner.forget()
            self._generation = self.context.generation
        try:
            with injection_installed(self.models.unet, self.context, layers):
                return self.runner(x, t, emb, variant=(layers, self.context.token, self.context.self_only))
        finally:
            self.context.clear_routes()

    @torch.no_grad()
    def warm_up(
        self, height: int, width: int, sizes: list[int] | None = None, compiled: list[int] | None = None
    ) -> None:
        """Captures the UNet call of every batch bucket up to ``2 *
        max_batch_items`` samples (or ``sizes``), for decoder injection at
        ``height`` x ``width`` pixels, compiling those in ``compiled`` (default
        all, if the runner compiles): what a replica does before it reports
        SERVING. Both variants per bucket: with references (frames after the
        anchor) and self-only (anchors alone: a session's first frame)."""
        m = self.models
        sizes = sizes or sorted({self.runner.bucket(n) for n in range(2, 2 * self.max_batch_items + 1, 2)})
        h, w = height // m.vae_scale_factor, width // m.vae_scale_factor
        emb = encode_prompts(m, ["warm up"])
        key = ("warm-up",)

        def call(size: int) -> None:
            x = torch.zeros((size, m.unet.config.in_channels, h, w), device=m.device, dtype=m.dtype)
            t = torch.full((size,), 1, device=m.device, dtype=torch.long)
            e = emb.expand(size, -1, -1)
            self._unet(x, t, e, [SampleRoute(record=key, scope="decoder")] * size, "decoder")  # self-only
            self._unet(x, t, e, [SampleRoute(refs=(key,), scope="decoder")] * size, "decoder")

        try:
            self.runner.warm_up(call, sizes, compiled)
        finally:
            self.context.release(key)

    def _alphas(self, items, prev: bool) -> torch.Tensor:
        """alpha_bar of each item's current step (or the step it lands on), on the device."""
        values = []
        for s, i in items:
            sched = self._schedule(s.settings.num_steps)
            step = s.flight[i].step
            values.append(float(sched.alpha((sched.prev_timesteps if prev else sched.timesteps)[step : step + 1])[0]))
        return to_device(values, self.models.device, torch.float64)

    def _xt_update(self, items, latents: torch.Tensor) -> torch.Tensor:
        """Paper eq. (1): x_t -= delta * grad_{x_t} mse(x0(x_t), x0_prev), through the UNet."""
        with torch.enable_grad():
            x = latents.detach().requires_grad_(True)
            _, x0 = self._predict(items, x, record=False)
            loss = sum(
                torch.nn.functional.mse_loss(x0[n], s.x0[(i - 1, s.flight[i].step)]) for n, (s, i) in enumerate(items)
            )
            (grad,) = torch.autograd.grad(loss, x)
        delta = torch.tensor([s.settings.update_strength for s, _ in items], device=x.device, dtype=x.dtype)
        return (x - delta.view(-1, 1, 1, 1) * grad).detach()

    def _advance(self, items, latents, eps, x0, timer: StageTimer | None = None, start=None) -> None:
        alpha_prev = self._alphas(items, prev=True)
        x_prev = ddim_move(x0, eps, alpha_prev)
        if timer is not None:
            start = self._lap(timer, "denoise", start, items)
        # Authors' closed form: gradient of delta * mse(x0, x0_prev) w.r.t. x0
        # (mean over the latent), applied to x_{t-1}. It reads only the previous
        # frame's x0 at this step, which no other item of the tick changes.
        updated = {
            n: x_prev[n] - s.settings.update_strength * 2 * (x0[n] - s.x0[(i - 1, s.flight[i].step)]) / x0[n].numel()
            for n, (s, i) in enumerate(items)
            if s.settings.latent_update == "x0" and self._updates(s, i)
        }
        if timer is not None and updated:
            self._lap(timer, "latent_update", start, [items[n] for n in updated])
        for n, (s, i) in enumerate(items):
            f = s.flight[i]
            step = f.step
            x = updated.get(n, x_prev[n])
            f.latent, f.step = x, step + 1
            s.progress[i] = step + 1
            if s.settings.latent_update != "off" and i + 1 < s.num_frames and s.settings.updates_at(step):
                s.x0[(i, step)] = x0[n]
            s.x0.pop((i - 1, step), None)
            if s.settings.inject_layers != "none":
                if s.consumers[i] > 0:
                    s.pending[(i, step)] = s.consumers[i]
                self._release(s, i, step)
            if f.step == s.settings.num_steps:
                s.finished[i] = f.latent
                del s.flight[i]

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
                    self.context.release((s.id, r, step, b))

    def _collect(self) -> list[tuple[int, EditedFrame]]:
        """Decodes finished frames (batched) and hands them out in frame order."""
        out = []
        for s in self.sessions.values():
            ready = []
            while s.next_out in s.finished:
                ready.append(s.next_out)
                s.next_out += 1
            if ready:
                start = self.timer.mark() if self.timer is not None else None
                latents = torch.stack([s.finished.pop(i) for i in ready])
                images = decode_latents(self.models, latents)
                if self.timer is not None:
                    self.timer.record("decode", start, self.timer.mark(), [(s.id, i) for i in ready])
                out += [
                    (s.id, EditedFrame(index=i, image=img, latent=lat)) for i, img, lat in zip(ready, images, latents)
                ]
        return out
