"""DDIM arithmetic with per-sample timesteps.

``diffusers.DDIMScheduler.step`` takes one scalar timestep for the whole batch,
but the editor batches frames that sit at different denoising steps (the
wavefront), so the step is written out here, computing its alphas exactly the
way the scheduler does (eta = 0). A test checks it against the scheduler.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DDIMSchedule:
    """Timesteps and cumulative alphas of a DDIM schedule with ``num_steps`` steps.

    ``timesteps[k]`` is the timestep of denoising step k (descending, k = 0 is
    the noisiest); ``prev_timesteps[k]`` the one that step k lands on.
    """

    timesteps: torch.Tensor  # (num_steps,) long
    prev_timesteps: torch.Tensor  # (num_steps,) long, may be negative at the end
    alphas_cumprod: torch.Tensor  # (num_train_timesteps,) float64
    final_alpha_cumprod: float
    prediction_type: str

    @classmethod
    def from_config(cls, config: dict, num_steps: int, steps_offset: int | None = None) -> "DDIMSchedule":
        """The schedule of ``config`` (a scheduler config) at ``num_steps`` steps.

        ``steps_offset`` replaces the config's offset added to every timestep
        (SD2-depth's hub config has 1: timesteps 981..1 at 50 steps; the
        authors' script builds its scheduler with the default 0: 980..0).
        None keeps the config's.
        """
        from diffusers import DDIMScheduler

        # The scheduler computes betas, the timestep spacing and the offset; we
        # keep its numbers and do the per-sample stepping ourselves.
        overrides = {} if steps_offset is None else {"steps_offset": int(steps_offset)}
        sched = DDIMScheduler.from_config(config, **overrides)
        sched.set_timesteps(num_steps)
        ratio = sched.config.num_train_timesteps // num_steps
        timesteps = sched.timesteps.clone().long()
        return cls(
            timesteps=timesteps,
            prev_timesteps=timesteps - ratio,
            alphas_cumprod=sched.alphas_cumprod.double(),
            final_alpha_cumprod=float(sched.final_alpha_cumprod),
            prediction_type=sched.config.prediction_type,
        )

    @property
    def num_steps(self) -> int:
        return len(self.timesteps)

    def to(self, device) -> "DDIMSchedule":
        """The schedule with its tables on ``device``: stepping then indexes
        them there, with no host-to-device copy (and wait) per step."""
        return dataclasses.replace(
            self,
            timesteps=self.timesteps.to(device),
            prev_timesteps=self.prev_timesteps.to(device),
            alphas_cumprod=self.alphas_cumprod.to(device),
        )

    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        """alpha_bar at timesteps ``t`` (long tensor); negative t -> final alpha."""
        a = self.alphas_cumprod.to(t.device)[t.clamp(min=0)]
        return torch.where(t >= 0, a, torch.full_like(a, self.final_alpha_cumprod))


def _bcast(a: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return a.to(like.device, torch.float64).view(-1, *([1] * (like.ndim - 1)))


def predict_eps_x0(
    model_output: torch.Tensor, sample: torch.Tensor, alpha_t: torch.Tensor, prediction_type: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """(eps, x0) from the model's output at a sample whose alpha_bar is ``alpha_t``.

    The arithmetic runs in float64 and is cast back, so the result does not
    depend on how samples were batched beyond the model call itself.
    """
    a = _bcast(alpha_t, sample)
    x, out = sample.double(), model_output.double()
    if prediction_type == "epsilon":
        eps = out
        x0 = (x - (1 - a).sqrt() * eps) / a.sqrt()
    elif prediction_type == "v_prediction":
        x0 = a.sqrt() * x - (1 - a).sqrt() * out
        eps = a.sqrt() * out + (1 - a).sqrt() * x
    elif prediction_type == "sample":
        x0 = out
        eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
    else:
        raise ValueError(f"prediction_type: unsupported value {prediction_type!r}")
    return eps.to(sample.dtype), x0.to(sample.dtype)


def ddim_move(x0: torch.Tensor, eps: torch.Tensor, alpha_to: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM move (eta = 0) to the noise level ``alpha_to``:
    ``sqrt(a) x0 + sqrt(1 - a) eps``. Used both to denoise and to invert."""
    a = _bcast(alpha_to, x0)
    return (a.sqrt() * x0.double() + (1 - a).sqrt() * eps.double()).to(x0.dtype)


def ddim_invert(x0: torch.Tensor, predict_noise, schedule: DDIMSchedule) -> torch.Tensor:
    """Inverse DDIM: from clean latents to ``x_T`` at ``schedule.timesteps[0]``.

    ``predict_noise(x, t)`` returns the model output for latents ``x`` at the
    (B,) timesteps ``t``. Each inverse step evaluates the model at the *next*
    (noisier) timestep with the current latent, the usual DDIM inversion
    approximation, whose error vanishes as the step count grows.
    """
    x, schedule = x0, schedule.to(x0.device)
    for k in reversed(range(schedule.num_steps)):
        t = schedule.timesteps[k].expand(x.shape[0])
        eps, x0_hat = predict_eps_x0(
            predict_noise(x, t),
            x,
            schedule.alpha(schedule.prev_timesteps[k].expand(x.shape[0])),
            schedule.prediction_type,
        )
        x = ddim_move(x0_hat, eps, schedule.alpha(t))
    return x


def ddim_sample(x_t: torch.Tensor, predict_noise, schedule: DDIMSchedule) -> torch.Tensor:
    """Plain DDIM sampling (eta = 0) from ``x_T`` to clean latents."""
    x, schedule = x_t, schedule.to(x_t.device)
    for k in range(schedule.num_steps):
        t = schedule.timesteps[k].expand(x.shape[0])
        eps, x0_hat = predict_eps_x0(predict_noise(x, t), x, schedule.alpha(t), schedule.prediction_type)
        x = ddim_move(x0_hat, eps, schedule.alpha(schedule.prev_timesteps[k].expand(x.shape[0])))
    return x
