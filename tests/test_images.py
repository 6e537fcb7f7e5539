"""Frame geometry: fitting to the working resolution."""

import numpy as np
import pytest

from pix2video.jobs import InversionSettings, prepare_frames


@pytest.mark.parametrize("resize", ["crop", "pad"])
@pytest.mark.parametrize("shape", [(90, 160), (160, 90), (64, 64), (37, 301)])
def test_fitting_keeps_the_aspect_ratio_and_is_idempotent(resize, shape):
    """Frames are fitted while decoding and again in prepare_frames; the second
    fit must change nothing, or video ids would depend on the code path."""
    settings = InversionSettings(width=128, height=64, resize=resize)
    frame = np.random.default_rng(sum(shape)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    once = settings.fit(frame)
    assert once.shape == (64, 128, 3)
    assert np.array_equal(settings.fit(once), once)
    assert np.array_equal(prepare_frames([once], settings)[0], prepare_frames([frame], settings)[0])
    if resize == "pad" and shape[1] / shape[0] < 2:  # narrower than 2:1: black bars left and right
        assert once[:, 0].max() == 0 and once[:, -1].max() == 0
