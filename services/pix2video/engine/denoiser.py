"""The editor's denoiser: the arithmetic of one tick, for whatever items the scheduler picked.

Prompt embeddings, the batched UNet call (both guidance branches of every
item, of every session, with each sample's injection routing), guidance, the
DDIM step, the latent update toward the previous frame (the authors' closed
form on x0, or the paper's eq. (1) through the UNet), decoding, and the
warm-up that captures the UNet's graphs before a replica serves.
"""

from __future__ import annotations

import functools
import operator

import torch

from .attention import InjectionContext, SampleRoute, injection_installed
from .ddim import DDIMSchedule, ddim_move, predict_eps_x0
from .scheduler import COND, UNCOND, EditSession, WorkItem, steps_offset_of
from .settings import EditSettings
from .text import encode_prompts
from .timers import StageTimer
from .transfer import to_device
from .unet_runner import UNetRunner
from .vae import decode_latents


class Denoiser:
    """Computes denoising steps of batched work items.

    Args:
        models: the loaded :class:`~pix2video.models.ModelSet`.
        runner: how the UNet is called.
        context: the injected-feature slots the UNet's processors read and write.
        split_guidance: run the two guidance branches as two UNet calls.
    """

    def __init__(self, models, runner: UNetRunner, context: InjectionContext, split_guidance: bool = False):
        self.models = models
        self.runner = runner
        self.context = context
        self.split_guidance = split_guidance
        self._generation = context.generation
        self._schedules: dict[tuple[int, int | None], DDIMSchedule] = {}
        self.latent_dtype = torch.promote_types(models.dtype, torch.float32)

    def schedule(self, num_steps: int, steps_offset: int | None = None) -> DDIMSchedule:
        key = (num_steps, steps_offset)
        if key not in self._schedules:
            self._schedules[key] = DDIMSchedule.from_config(self.models.scheduler_config, num_steps, steps_offset)
        return self._schedules[key]

    def schedule_of(self, s: EditSession) -> DDIMSchedule:
        """A session's schedule: its step count, on the timesteps its video was inverted with."""
        return self.schedule(s.settings.num_steps, steps_offset_of(s.video))

    def embeddings(self, settings: EditSettings) -> dict[int, torch.Tensor]:
        """Prompt embeddings per guidance branch (the unconditional one only when guided)."""
        prompts = [settings.prompt] + ([settings.negative_prompt] if settings.guided else [])
        emb = encode_prompts(self.models, prompts)
        embeds = {COND: emb[:1]}
        if settings.guided:
            embeds[UNCOND] = emb[1:]
        return embeds

    # -- one tick -------------------------------------------------------------

    def step(self, items: list[WorkItem], timer: StageTimer | None = None) -> tuple[list[torch.Tensor], torch.Tensor]:
        """One denoising step of every item, in one batched UNet call: each
        item's latent after the step (the latent update applied) and its
        predicted x0."""
        start = timer.mark() if timer is not None else None
        latents = torch.stack([s.flight[i].latent for s, i in items])
        xt_items = [n for n, (s, i) in enumerate(items) if s.settings.latent_update == "xt" and s.updates(i)]
        grads = {}
        if xt_items:
            grads = dict(zip(xt_items, self._xt_gradient([items[n] for n in xt_items], latents[xt_items]), strict=True))
            if timer is not None:
                start = self._lap(timer, "latent_update", start, [items[n] for n in xt_items])
        eps, x0 = self._predict(items, latents, record=True)
        alpha_prev = self._alphas(items, prev=True)
        x_prev = ddim_move(x0, eps, alpha_prev)
        if timer is not None:
            start = self._lap(timer, "denoise", start, items)
        # Authors' closed form: gradient of delta * mse(x0, x0_prev) w.r.t. x0
        # (a mean over the latent, or over SD2-depth's 512x512 latent size:
        # update_normalisation), applied to x_{t-1}. It reads only the previous
        # frame's x0 at this step, which no other item of the tick changes.
        updated = {
            n: x_prev[n]
            - s.settings.update_strength * 2 * (x0[n] - s.prev_x0(i)) / s.settings.update_divisor(x0[n].numel())
            for n, (s, i) in enumerate(items)
            if s.settings.latent_update == "x0" and s.updates(i)
        }
        # Paper eq. (1): x_{t-1} <- x_{t-1} - delta * grad_{x_t} mse(x0(x_t), x0_prev), the step
        # taken from the unmoved x_t and the gradient (through the UNet) subtracted from its result.
        if timer is not None and updated:
            self._lap(timer, "latent_update", start, [items[n] for n in updated])
        updated.update({n: x_prev[n] - items[n][0].settings.update_strength * g for n, g in grads.items()})
        return [updated.get(n, x_prev[n]) for n in range(len(items))], x0

    def decode(self, latents: torch.Tensor):
        """Clean latents -> (N, H, W, 3) uint8 images."""
        return decode_latents(self.models, latents)

    @staticmethod
    def _lap(timer: StageTimer, stage: str, start, items) -> object:
        end = timer.mark()
        timer.record(stage, start, end, [(s.id, i) for s, i in items])
        return end

    def _predict(self, items, latents: torch.Tensor, record: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """One batched UNet call for ``items`` -> guided (eps, x0) per item."""
        m = self.models
        samples = [(n, b) for b in (UNCOND, COND) for n, (s, _) in enumerate(items) if b in s.embeds]
        routes, steps, embeds, inp = [], [], [], []
        for n, b in samples:
            s, i = items[n]
            f = s.flight[i]
            rec = s.record_key(i, b) if record else None
            routes.append(SampleRoute(record=rec, refs=s.ref_keys(i, b), scope=s.settings.inject_layers))
            steps.append(int(self.schedule_of(s).timesteps[f.step]))
            embeds.append(s.embeds[b])
            inp.append(torch.cat([latents[n], f.depth]))
        x, t, emb = torch.stack(inp).to(m.dtype), to_device(steps, m.device), torch.cat(embeds)
        parts = [slice(0, len(samples))]
        if self.split_guidance:
            n_uncond = sum(1 for _, b in samples if b == UNCOND)
            parts = [p for p in (slice(0, n_uncond), slice(n_uncond, len(samples))) if p.stop > p.start]
        layers = next(
            (lay for lay in ("all", "decoder") if any(s.settings.inject_layers == lay for s, _ in items)), "none"
        )
        out = torch.cat([self.unet(x[p], t[p], emb[p], routes[p], layers) for p in parts]).to(latents.dtype)
        cond = {n: out[j] for j, (n, b) in enumerate(samples) if b == COND}
        uncond = {n: out[j] for j, (n, b) in enumerate(samples) if b == UNCOND}
        guided = torch.stack(
            [
                uncond[n] + s.settings.guidance_scale * (cond[n] - uncond[n]) if n in uncond else cond[n]
                for n, (s, _) in enumerate(items)
            ]
        )
        alpha = self._alphas(items, prev=False)
        pred_types = {self.schedule_of(s).prediction_type for s, _ in items}
        (ptype,) = pred_types  # one model, one prediction type
        return predict_eps_x0(guided, latents, alpha, ptype)

    def unet(self, x, t, emb, routes: list[SampleRoute], layers: str) -> torch.Tensor:
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

    def _alphas(self, items: list[tuple[EditSession, int]], prev: bool) -> torch.Tensor:
        """alpha_bar of each item's current step (or the step it lands on), on the device."""
        values = []
        for s, i in items:
            sched = self.schedule_of(s)
            step = s.flight[i].step
            values.append(float(sched.alpha((sched.prev_timesteps if prev else sched.timesteps)[step : step + 1])[0]))
        return to_device(values, self.models.device, torch.float64)

    def _xt_gradient(self, items, latents: torch.Tensor) -> torch.Tensor:
        """grad_{x_t} mse(x0(x_t), x0_prev) of each item, through the UNet (eq. (1)'s gradient)."""
        with torch.enable_grad():
            x = latents.detach().requires_grad_(True)
            _, x0 = self._predict(items, x, record=False)
            # mse over the latent's own size, rescaled when normalised to SD2-depth's 512x512 latent (a
            # factor of exactly 1 there, so nothing is multiplied and the result is bitwise the mean's).
            losses = []
            for n, (s, i) in enumerate(items):
                loss = torch.nn.functional.mse_loss(x0[n], s.prev_x0(i))
                numel = x0[n].numel()
                divisor = s.settings.update_divisor(numel)
                losses.append(loss if divisor == numel else loss * (numel / divisor))
            loss = functools.reduce(operator.add, losses)  # as sum(), typed as a tensor
            (grad,) = torch.autograd.grad(loss, x)
        return grad.detach()

    # -- warm-up --------------------------------------------------------------

    @torch.no_grad()
    def warm_up(self, height: int, width: int, sizes: list[int], compiled: list[int] | None = None) -> None:
        """Captures the UNet call of every batch bucket in ``sizes`` samples,
        for decoder injection at ``height`` x ``width`` pixels, compiling
        those in ``compiled`` (default all, if the runner compiles). Both
        variants per bucket: with references (frames after the anchor) and
        self-only (anchors alone: a session's first frame)."""
        m = self.models
        h, w = height // m.vae_scale_factor, width // m.vae_scale_factor
        emb = encode_prompts(m, ["warm up"])
        key = ("warm-up",)

        def call(size: int) -> None:
            x = torch.zeros((size, m.unet.config.in_channels, h, w), device=m.device, dtype=m.dtype)
            t = torch.full((size,), 1, device=m.device, dtype=torch.long)
            e = emb.expand(size, -1, -1)
            self.unet(x, t, e, [SampleRoute(record=key, scope="decoder")] * size, "decoder")  # self-only
            self.unet(x, t, e, [SampleRoute(refs=(key,), scope="decoder")] * size, "decoder")

        try:
            self.runner.warm_up(call, sizes, compiled)
        finally:
            self.context.release(key)
