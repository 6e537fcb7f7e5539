"""The toy components' training: one loop (:func:`_fit`: AdamW, the
learning-rate schedule, gradient clipping, logging) and per component its
data, loss and what it does before and after.

The loop runs a fixed number of steps from a fixed seed (the JSON of losses
records the steps actually run: a wall-clock cap, when given, may stop a loop
early, and the step count it reached reproduces the run). Losses are logged
every ``log_every`` steps.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from .data import Dataset


@dataclass
class Budget:
    steps: int
    batch: int
    lr: float
    max_seconds: float | None = None  # wall-clock cap; None: run every step


@dataclass
class History:
    name: str
    steps_planned: int
    steps: int = 0
    seconds: float = 0.0
    losses: list[tuple[int, float]] = field(default_factory=list)
    extra: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        tail = [v for _, v in self.losses[-5:]]
        return {
            "steps_planned": self.steps_planned,
            "steps": self.steps,
            "seconds": round(self.seconds, 1),
            "final_loss": float(np.mean(tail)) if tail else None,
            "losses": [[s, round(v, 6)] for s, v in self.losses],
            **self.extra,
        }


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _lr(step: int, budget: Budget, warmup: int = 200) -> float:
    warm = min(1.0, (step + 1) / min(warmup, max(1, budget.steps // 10)))
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(1, budget.steps))))
    return budget.lr * warm * (0.1 + 0.9 * cosine)


class _Loop:
    """Steps, learning-rate schedule, logging, progress bar and time cap."""

    def __init__(self, name: str, budget: Budget, opt, progress: bool, log_every: int):
        from tqdm import tqdm

        self.history = History(name, budget.steps)
        self.budget, self.opt, self.log_every = budget, opt, log_every
        self.bar = tqdm(total=budget.steps, desc=f"{name:>15}", disable=not progress, mininterval=5, leave=True)
        self.start = time.monotonic()
        self.acc: list[float] = []

    def __iter__(self):
        step = 0
        while step < self.budget.steps:
            if step == 30:
                warm = time.monotonic()
            if step == 100 and self.budget.max_seconds is not None:
                # Fit the schedule to the cap: the step count is set once, from
                # the speed of steps 30..99 (past the warm-up), so the cosine
                # still ends at its floor; losses.json records it (rerun with
                # that many steps).
                per_step = (time.monotonic() - warm) / 70
                fit = max(step + 1, int((self.budget.max_seconds - (warm - self.start)) / per_step) + 30)
                if fit < self.budget.steps:
                    self.budget = dataclasses.replace(self.budget, steps=fit)
                    self.bar.total = fit
                self.history.extra["steps_scheduled"] = self.budget.steps
            if self.budget.max_seconds is not None and time.monotonic() - self.start > 1.1 * self.budget.max_seconds:
                break
            for g in self.opt.param_groups:
                g["lr"] = _lr(step, self.budget)
            yield step
            step += 1
            self.history.steps = step
            self.bar.update(1)
        self.bar.close()
        self.history.seconds = time.monotonic() - self.start

    def log(self, step: int, loss: torch.Tensor) -> None:
        if step % self.log_every == 0 or step == self.budget.steps - 1:
            value = float(loss.detach())
            self.history.losses.append((step, value))
            self.bar.set_postfix(loss=f"{value:.4f}")


def _seeded(seed: int) -> np.random.Generator:
    """Seeds torch (the losses' random draws) and returns the batches' numpy generator."""
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def _fit(
    name: str,
    params: list,
    n: int,
    budget: Budget,
    rng: np.random.Generator,
    step_loss,
    progress: bool,
    log_every: int,
    *,
    weight_decay: float,
    betas: tuple[float, float] = (0.9, 0.999),
    ema: EMA | None = None,
) -> History:
    """The one training loop: AdamW over ``params`` on the schedule of
    :func:`_lr`, each step a shuffled batch of indices into the ``n``
    training items, ``step_loss(step, idx)`` its loss, the gradient clipped
    to norm 1, the EMA (when given) updated after the step."""
    opt = torch.optim.AdamW(params, lr=budget.lr, weight_decay=weight_decay, betas=betas)
    loop = _Loop(name, budget, opt, progress, log_every)
    batches = _batches(n, budget.batch, rng)
    for step in loop:
        loss = step_loss(step, next(batches))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if ema is not None:
            ema.update(step)
        loop.log(step, loss)
    return loop.history


def _batches(n: int, batch: int, rng: np.random.Generator):
    """Endless shuffled index batches over ``n`` items (sorted within a batch:
    faster reads from a memory map)."""
    while True:
        perm = rng.permutation(n)
        for i in range(0, n - batch + 1, batch):
            yield np.sort(perm[i : i + batch])
        if n < batch:
            yield np.sort(rng.choice(n, batch))


def _take(array, idx: np.ndarray, device) -> torch.Tensor:
    """Rows ``idx`` of a numpy array (a memory map) or of a tensor already on ``device``."""
    if isinstance(array, torch.Tensor):
        return array[torch.from_numpy(idx).to(array.device)].to(device)
    return torch.from_numpy(np.ascontiguousarray(array[idx])).to(device)


def on_device(data: Dataset, device) -> Dataset:
    """The dataset's arrays as tensors on ``device`` (a few hundred MB: no
    host-side batching per step)."""
    return Dataset(
        torch.from_numpy(np.array(data.frames)).to(device),
        torch.from_numpy(np.array(data.depth)).to(device),
        data.captions,
    )


def _images(data: Dataset, idx: np.ndarray, device) -> torch.Tensor:
    x = _take(data.frames, idx, device)
    return x.permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _normalised(data: Dataset, idx, device, mean, std) -> torch.Tensor:
    x = (_images(data, idx, device) + 1) / 2
    return (x - torch.tensor(mean, device=device).view(1, 3, 1, 1)) / torch.tensor(std, device=device).view(1, 3, 1, 1)


class EMA:
    """Exponential moving average of parameters (the shipped weights)."""

    def __init__(self, params, decay: float):
        self.params = [p for p in params if p.requires_grad]
        self.shadow = [p.detach().clone().float() for p in self.params]
        self.decay = decay

    @torch.no_grad()
    def update(self, step: int) -> None:
        d = min(self.decay, (1 + step) / (10 + step))
        torch._foreach_mul_(self.shadow, d)
        torch._foreach_add_(self.shadow, [p.detach().float() for p in self.params], alpha=1 - d)

    @torch.no_grad()
    def copy_to(self) -> None:
        for p, s in zip(self.params, self.shadow, strict=False):
            p.copy_(s.to(p.dtype))


def train_vae(vae, data: Dataset, budget: Budget, device, seed: int, progress=True, log_every=50) -> History:
    """Reconstruction (MSE + L1) with a tiny KL term, on random crops of whole frames."""
    rng = _seeded(seed)
    vae.to(device).train()

    def step_loss(step, idx):
        x = _images(data, idx, device)
        if step % 2:
            x = x.flip(-1)
        with _autocast(device):
            post = vae.encode(x).latent_dist
            z = post.sample()
            rec = vae.decode(z).sample.float()
        kl = post.kl().mean() / x[0].numel()
        return F.mse_loss(rec, x) + 0.5 * F.l1_loss(rec, x) + 1e-6 * kl

    params = list(vae.parameters())
    history = _fit(
        "vae", params, len(data), budget, rng, step_loss, progress, log_every, weight_decay=0.0, betas=(0.9, 0.99)
    )
    vae.eval()
    # SD's convention: latents are scaled to about unit variance.
    with torch.no_grad(), _autocast(device):
        idx = np.sort(rng.choice(len(data), min(len(data), 256), replace=False))
        z = torch.cat(
            [vae.encode(_images(data, idx[i : i + 64], device)).latent_dist.mode() for i in range(0, len(idx), 64)]
        )
    std = float(z.float().std())
    vae.register_to_config(scaling_factor=1.0 / std)
    history.extra["latent_std"] = std
    return history


@torch.no_grad()
def encode_dataset(vae, data: Dataset, device, batch: int = 128) -> torch.Tensor:
    """Scaled latent modes of every frame (what inversion encodes), on ``device``."""
    vae.eval()
    out = []
    for i in range(0, len(data), batch):
        idx = np.arange(i, min(i + batch, len(data)))
        x = _images(data, idx, device).to(vae.dtype)  # no autocast: the VAE's own precision, as at inference
        out.append(vae.encode(x).latent_dist.mode().float())
    return torch.cat(out) * vae.config.scaling_factor


@torch.no_grad()
def depth_condition(data: Dataset, size: tuple[int, int], device, batch: int = 512) -> torch.Tensor:
    """True depth as the UNet sees estimated depth: bicubic to the latent size, min-max to [-1, 1]."""
    from ..engine.depth import normalise_depth

    out = []
    for i in range(0, len(data), batch):
        d = _take(data.depth, np.arange(i, min(i + batch, len(data))), device)
        out.append(normalise_depth(d, size))
    return torch.cat(out)


def pyramid_noise(x: torch.Tensor, discount: float) -> torch.Tensor:
    """Multi-resolution noise shaped like ``x`` (N, C, H, W): white noise plus
    bilinearly upsampled white noise at H/2, H/4, ... 1, level k weighted
    ``discount ** k``, each sample renormalised to unit std."""
    n, c, h, w = x.shape
    noise = torch.randn_like(x)
    k, size = 1, (h, w)
    while max(size) > 1:
        size = (max(1, size[0] // 2), max(1, size[1] // 2))
        low = torch.randn(n, c, *size, device=x.device, dtype=x.dtype)
        noise = noise + discount**k * F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        k += 1
    return noise / noise.flatten(1).std(1).view(n, 1, 1, 1)


def train_unet(
    unet,
    text_encoder,
    tokenizer,
    latents,
    depth,
    captions,
    scheduler_config,
    budget,
    device,
    seed,
    progress=True,
    log_every=50,
    uncond_prob=0.1,
    ema_decay=0.999,
    noise_discount=0.0,
) -> History:
    """Epsilon prediction on SD2's noise schedule, depth concatenated, text
    encoder trained jointly; captions dropped to "" with ``uncond_prob`` (for
    classifier-free guidance). The shipped weights are the EMA.

    ``noise_discount``: multi-resolution ("pyramid") noise when above 0: the
    white noise plus the same at half, quarter, ... resolution down to 1x1,
    level k weighted ``noise_discount ** k``, renormalised to unit std. At
    32x32 latents SD2's x_999 = 0.068 x0 + noise still shows the frame's
    low frequencies (the sky and the ground: a mean over a 16x16 block has
    noise std 1/16), so a UNet trained on white noise learns to read the
    background from x_T even at t = 999 (measured: its x0 prediction there
    keeps the input's blue sky under the prompt "at sunset"), and from an
    inverted x_T guidance cannot change it. With low-frequency noise those
    components are noise at high t too, and the text decides them."""
    from diffusers import DDPMScheduler

    rng = _seeded(seed)
    unet.to(device).train()
    text_encoder.to(device).train()
    sched = DDPMScheduler.from_config(scheduler_config)
    alphas = sched.alphas_cumprod.to(device)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    ema = EMA(params, ema_decay)
    # Every distinct caption is tokenized once.
    vocab = sorted(set(captions) | {""})
    caption_index = torch.tensor([vocab.index(c) for c in captions], device=device)
    tokens = tokenizer(
        vocab, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)
    empty = vocab.index("")

    def step_loss(step, idx):
        idx = torch.from_numpy(idx).to(device)
        x0, d = latents[idx], depth[idx]
        if step % 2:
            x0, d = x0.flip(-1), d.flip(-1)
        d = d + 0.03 * torch.randn_like(d)  # estimated depth is never exactly the true one
        cap = caption_index[idx]
        cap = torch.where(torch.rand(len(cap), device=device) < uncond_prob, torch.full_like(cap, empty), cap)
        t = torch.randint(0, sched.config.num_train_timesteps, (len(idx),), device=device)
        noise = pyramid_noise(x0, noise_discount) if noise_discount else torch.randn_like(x0)
        a = alphas[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        with _autocast(device):
            emb = text_encoder(tokens[cap])[0]
            pred = unet(torch.cat([xt, d], 1), t, encoder_hidden_states=emb).sample.float()
        return F.mse_loss(pred, noise)

    history = _fit(
        "unet+text",
        params,
        len(latents),
        budget,
        rng,
        step_loss,
        progress,
        log_every,
        weight_decay=0.01,
        betas=(0.9, 0.99),
        ema=ema,
    )
    ema.copy_to()
    unet.eval()
    text_encoder.eval()
    return history


def train_depth(model, data: Dataset, mean, std, budget, device, seed, progress=True, log_every=50) -> History:
    """L1 on inverse depth (x4, about unit range), plus a gradient term for sharp edges."""
    rng = _seeded(seed)
    model.to(device).train()
    # DPT's head ends in a ReLU; from the default initialisation its output is
    # zero everywhere and no gradient flows (the first GPU run's estimator
    # never moved). A positive bias on the last convolution starts it alive.
    with torch.no_grad():
        model.head.head[-2].bias.fill_(1.0)

    def step_loss(step, idx):
        x = _normalised(data, idx, device, mean, std)
        target = _take(data.depth, idx, device).unsqueeze(1) * 4
        if step % 2:
            x, target = x.flip(-1), target.flip(-1)
        with _autocast(device):
            pred = model(pixel_values=x).predicted_depth.float().unsqueeze(1)
        pred = F.interpolate(pred, size=target.shape[-2:], mode="bilinear", align_corners=False)
        grad = lambda z: (z[..., 1:, :] - z[..., :-1, :], z[..., :, 1:] - z[..., :, :-1])  # noqa: E731
        (py, px), (ty, tx) = grad(pred), grad(target)
        return F.l1_loss(pred, target) + 0.5 * (F.l1_loss(py, ty) + F.l1_loss(px, tx))

    history = _fit(
        "depth", list(model.parameters()), len(data), budget, rng, step_loss, progress, log_every, weight_decay=0.01
    )
    model.eval()
    return history


def train_captioner(model, processor, data: Dataset, budget, device, seed, progress=True, log_every=50) -> History:
    """Teacher-forced captions: [DEC] words [SEP], BLIP's own LM loss."""
    rng = _seeded(seed)
    model.to(device).train()
    ip, tok = processor.image_processor, processor.tokenizer
    vocab = sorted(set(data.captions))
    enc = tok(
        vocab,
        padding="max_length",
        max_length=model.config.text_config.max_position_embeddings // 2,
        truncation=True,
        return_tensors="pt",
    )
    ids = enc.input_ids.clone()
    ids[:, 0] = model.config.text_config.bos_token_id
    ids, mask = ids.to(device), enc.attention_mask.to(device)
    labels = ids.masked_fill(mask == 0, -100)
    cap_index = torch.tensor([vocab.index(c) for c in data.captions], device=device)

    def step_loss(step, idx):
        x = _normalised(data, idx, device, ip.image_mean, ip.image_std)
        if step % 2:
            x = x.flip(-1)
        c = cap_index[torch.from_numpy(idx).to(device)]
        with _autocast(device):
            out = model(pixel_values=x, input_ids=ids[c], attention_mask=mask[c], labels=labels[c])
        return out.loss.float()

    history = _fit(
        "captioner", list(model.parameters()), len(data), budget, rng, step_loss, progress, log_every, weight_decay=0.01
    )
    model.eval()
    return history


def train_clip(
    model, tokenizer, image_processor, data: Dataset, budget, device, seed, progress=True, log_every=50
) -> History:
    """CLIP's symmetric contrastive loss over (frame, caption) pairs."""
    rng = _seeded(seed)
    model.to(device).train()
    vocab = sorted(set(data.captions))
    tokens = tokenizer(
        vocab, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids.to(device)
    cap_index = torch.tensor([vocab.index(c) for c in data.captions], device=device)
    mean, std = image_processor.image_mean, image_processor.image_std

    def step_loss(step, idx):
        x = _normalised(data, idx, device, mean, std)
        if step % 2:
            x = x.flip(-1)
        c = cap_index[torch.from_numpy(idx).to(device)]
        with _autocast(device):
            img = model.get_image_features(pixel_values=x)
            txt = model.get_text_features(input_ids=tokens[c])
        img, txt = [getattr(e, "pooler_output", e).float() for e in (img, txt)]
        img, txt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
        logits = model.logit_scale.exp().clamp(max=100) * img @ txt.T
        # Pairs with the same caption are positives too (the world repeats captions).
        same = (c[:, None] == c[None, :]).float()
        target = same / same.sum(1, keepdim=True)
        return 0.5 * (
            torch.sum(-target * F.log_softmax(logits, 1), 1).mean()
            + torch.sum(-target * F.log_softmax(logits.T, 1), 1).mean()
        )

    history = _fit(
        "clip", list(model.parameters()), len(data), budget, rng, step_loss, progress, log_every, weight_decay=0.1
    )
    model.eval()
    return history
