"""How many frames go through DPT at once: one place for the embedded engine
and the depth service, so that both compute a frame's depth the same way.

On the CPU each frame runs alone. A frame's depth then does not depend on the
other frames of its batch: with whole batches it moved by up to 5e-6 (tiny
model, float32) with the batch's shape, and the depth service's batches mix
frames of whatever streams are in flight, so a retried or resumed job was not
bitwise the first one's (tests/test_depth_bitwise_cpu.py). CPU GEMMs gain little
from the batch. On a GPU batches stay whole; results there agree to rounding.
"""

from __future__ import annotations

import torch


def depth_batch_size(device: torch.device, requested: int) -> int:
    return 1 if torch.device(device).type == "cpu" else requested
