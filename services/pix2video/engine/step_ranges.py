"""Which denoising steps each device of a step-parallel editor owns: a cost model and the split.

Device g owns the steps [s_g, s_{g+1}) of every frame (docs/step-parallel.md).
Throughput is set by the slowest device, so the boundaries minimise the
largest per-device cost, where a step's cost depends on its kind: a plain
step, a step with the latent update (the x0 closed form costs a few
elementwise kernels; the paper's eq. (1) a backward pass through the UNet),
and the last device also decodes every frame with the VAE.

Costs are seconds per frame (one work item), so a measured run of the
editor gives them directly (:class:`CostMeter`, a sink of the editor's stage
timers); :data:`DEFAULT_COSTS` are the H200 figures of docs/ARCHITECTURE.md, section 5.1,
in units of one step. Pure functions: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .settings import EditSettings


@dataclass(frozen=True)
class StepCosts:
    """Cost of one frame's work by kind (seconds per frame, or any one unit)."""

    step: float = 1.0
    """One denoising step of one frame (both guidance branches), without the latent update."""
    x0_update: float = 0.02
    """Extra cost of a step with the authors' closed-form latent update (elementwise)."""
    xt_update: float = 2.5
    """Extra cost of a step with the paper's eq. (1) update (a forward and a backward through the UNet)."""
    decode: float = 3.0
    """VAE decode of one frame, paid on the last device."""

    def __post_init__(self):
        for name in ("step", "x0_update", "xt_update", "decode"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < float("inf"):
                raise ValueError(f"{name}: must be a finite cost >= 0, got {value!r}")
        if self.step <= 0:
            raise ValueError(f"step: must be > 0, got {self.step!r}")


# docs/ARCHITECTURE.md section 5.1 (H200): 7.07 ms a batch-1 step, 22 ms a decode, eq. (1) about 2.5x a forward.
DEFAULT_COSTS = StepCosts(step=1.0, x0_update=0.02, xt_update=2.5, decode=22.0 / 7.07)


def step_costs(settings: EditSettings, costs: StepCosts = DEFAULT_COSTS) -> list[float]:
    """Cost of each of ``settings``' denoising steps, for a frame after the anchor
    (the anchor takes no update; every other frame does, so it sets the pace)."""
    extra = {"x0": costs.x0_update, "xt": costs.xt_update}.get(settings.latent_update, 0.0)
    return [costs.step + (extra if settings.updates_at(k) else 0.0) for k in range(settings.num_steps)]


def split_steps(costs: Sequence[float], num_devices: int, tail: float = 0.0) -> list[int]:
    """Boundaries ``[0, s_1, ..., s_N = len(costs)]`` of ``num_devices``
    contiguous, non-empty step ranges that minimise the largest range's cost,
    the last range also paying ``tail`` (the decode). Among equally good
    splits, the one whose earlier ranges are longest (deterministic).

    Exact (dynamic programming over prefix sums: O(N S^2), S steps).
    """
    n, steps = num_devices, len(costs)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"num_devices: must be an integer >= 1, got {n!r}")
    if n > steps:
        raise ValueError(f"num_devices: {n} devices need at least {n} denoising steps, got {steps}")
    if any(c < 0 for c in costs) or tail < 0:
        raise ValueError("costs: every step cost and the tail must be >= 0")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + c)
    inf = float("inf")
    # best[g][j]: the smallest max cost of covering steps [j, steps) with devices g..n-1;
    # cut[g][j]: where device g's range ends in that split.
    best = [[inf] * (steps + 1) for _ in range(n + 1)]
    cut = [[0] * (steps + 1) for _ in range(n + 1)]
    for j in range(steps):
        best[n - 1][j] = prefix[steps] - prefix[j] + tail
        cut[n - 1][j] = steps
    for g in range(n - 2, -1, -1):
        for j in range(g, steps - (n - g) + 1):
            # Longest first: a later end wins ties (strict <), so earlier ranges come out longest.
            for e in range(steps - (n - 1 - g), j, -1):
                value = max(prefix[e] - prefix[j], best[g + 1][e])
                if best[g][j] == inf or value < best[g][j] - 1e-12 * max(1.0, best[g][j]):
                    best[g][j], cut[g][j] = value, e
    bounds, j = [0], 0
    for g in range(n):
        j = cut[g][j]
        bounds.append(j)
    return bounds


def range_costs(costs: Sequence[float], bounds: Sequence[int], tail: float = 0.0) -> list[float]:
    """Each device's cost under ``bounds`` (the last one paying ``tail``)."""
    out = [float(sum(costs[a:b])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    out[-1] += tail
    return out


def plan_steps(settings: EditSettings, num_devices: int, costs: StepCosts = DEFAULT_COSTS) -> list[int]:
    """Step boundaries of one edit on ``num_devices`` devices (see :func:`split_steps`)."""
    return split_steps(step_costs(settings, costs), num_devices, tail=costs.decode)


class CostMeter:
    """Measured :class:`StepCosts`: a sink of the editor's stage timers
    (:class:`~pix2video.engine.timers.HostTimer` / ``CudaEventTimer``).

    ``denoise`` calls give seconds per frame-step (a call's time over its
    items), ``latent_update`` the extra of an update, ``decode`` seconds per
    frame. The eq. (1) and x0 updates are told apart by ``update_kind``.
    """

    def __init__(self, update_kind: str = "x0"):
        self.update_kind = update_kind
        self.sums = {"denoise": 0.0, "latent_update": 0.0, "decode": 0.0}
        self.counts = {"denoise": 0, "latent_update": 0, "decode": 0}

    def __call__(self, stage: str, started: float, seconds: float, items: list) -> None:
        if stage in self.sums and items:
            self.sums[stage] += seconds
            self.counts[stage] += len(items)

    def mean(self, stage: str) -> float | None:
        return self.sums[stage] / self.counts[stage] if self.counts[stage] else None

    def costs(self, fallback: StepCosts = DEFAULT_COSTS) -> StepCosts:
        """What was measured, in seconds; what was not, scaled from ``fallback`` by the measured step."""
        step = self.mean("denoise")
        if step is None or step <= 0:
            return fallback
        scale = step / fallback.step
        update = self.mean("latent_update")
        decode = self.mean("decode")
        x0 = update if update is not None and self.update_kind == "x0" else fallback.x0_update * scale
        xt = update if update is not None and self.update_kind == "xt" else fallback.xt_update * scale
        decode = decode if decode is not None else fallback.decode * scale
        return StepCosts(step=step, x0_update=x0, xt_update=xt, decode=decode)
