"""On the CPU a frame's depth does not depend on what else is in its batch
(issue 13 item 4 / issue 14: a retried or resumed job equals an undisturbed
run's bitwise on the CPU). The depth service batches frames of whatever
streams are in flight; with whole batches through DPT, a frame's depth moved
by up to 5e-6 with its batch (tiny model, float32), so the retried inversion's
latents differed from the first run's in the last bits."""

from __future__ import annotations

import numpy as np

from pix2video.servers.depth.settings import DepthSettings
from pix2video.servers.depth.worker import DepthWorker
from pix2video.video import make_sample_frames


def test_a_frames_depth_is_the_same_alone_and_in_any_batch(tiny_dir):
    worker = DepthWorker(DepthSettings(model=str(tiny_dir), device="cpu", dtype="float32", batch_size=4))
    frames = [np.ascontiguousarray(f) for f in make_sample_frames(6, 64, 64)]
    alone = [worker.estimate([f])[0] for f in frames]
    for order in ([0, 1], [0, 1, 2, 3], list(range(6)), [5, 4, 3, 2, 1, 0], [3, 0, 5]):
        got = worker.estimate([frames[i] for i in order])
        for i, depth in zip(order, got, strict=True):
            assert np.array_equal(depth, alone[i]), (order, i, float(np.abs(depth - alone[i]).max()))
    # and at an explicit output size (the other path through the worker)
    sized = worker.estimate(frames, sizes=[(5, 7)] * len(frames))
    assert all(np.array_equal(worker.estimate([f], sizes=[(5, 7)])[0], s) for f, s in zip(frames, sized, strict=True))
