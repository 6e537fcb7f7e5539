"""Host-to-device copies that do not make the host wait for the GPU.

A plain ``torch.tensor(values, device="cuda")`` (or ``.to("cuda")`` of a
pageable CPU tensor) copies synchronously: the host waits until the GPU has
finished everything queued before it. The editor makes a few such small
copies per tick (routing indices, timesteps, alphas), so every tick used to
wait for the previous UNet call and then leave the GPU idle while Python
prepared the next one. Staged through pinned memory, the copies are queued
on the stream like kernels, and the host runs ahead of the GPU.
"""

from __future__ import annotations

import torch


def to_device(data, device, dtype: torch.dtype | None = None) -> torch.Tensor:
    """``data`` (a tensor or nested lists of numbers) as a tensor on ``device``,
    queued on the current stream without waiting for it on CUDA."""
    device = torch.device(device)
    if isinstance(data, torch.Tensor) and data.device.type != "cpu":
        return data.to(device, dtype)
    cpu = data.to(dtype=dtype) if isinstance(data, torch.Tensor) else torch.tensor(data, dtype=dtype)
    if device.type != "cuda":
        return cpu.to(device)
    # The caching host allocator keeps the pinned block until the copy has run.
    return cpu.pin_memory().to(device, non_blocking=True)
