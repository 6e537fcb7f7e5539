"""The step ranges of the step-parallel editor: the cost model and the exact split (pure functions)."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pix2video.engine.settings import EditSettings
from pix2video.engine.step_ranges import (
    DEFAULT_COSTS,
    CostMeter,
    StepCosts,
    plan_steps,
    range_costs,
    split_steps,
    step_costs,
)


def brute_force(costs, n, tail):
    """The smallest largest-range cost over every split into n contiguous non-empty ranges."""
    best = float("inf")
    for cuts in itertools.combinations(range(1, len(costs)), n - 1):
        bounds = [0, *cuts, len(costs)]
        best = min(best, max(range_costs(costs, bounds, tail)))
    return best


@settings(max_examples=150, deadline=None)
@given(
    costs=st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=1, max_size=9),
    n=st.integers(1, 5),
    tail=st.floats(0.0, 10.0, allow_nan=False),
)
def test_split_is_optimal_contiguous_and_covers_every_step(costs, n, tail):
    if n > len(costs):
        with pytest.raises(ValueError, match="num_devices"):
            split_steps(costs, n, tail)
        return
    bounds = split_steps(costs, n, tail)
    assert bounds[0] == 0 and bounds[-1] == len(costs) and len(bounds) == n + 1
    assert all(a < b for a, b in zip(bounds[:-1], bounds[1:], strict=True))  # non-empty, in order
    assert max(range_costs(costs, bounds, tail)) == pytest.approx(brute_force(costs, n, tail), abs=1e-9)


def test_uniform_steps_split_evenly_and_the_decode_shortens_the_last_range():
    assert split_steps([1.0] * 50, 2) == [0, 25, 50]
    assert split_steps([1.0] * 48, 8) == [0, 6, 12, 18, 24, 30, 36, 42, 48]
    # A decode worth 4 steps: the last device takes 4 fewer.
    assert split_steps([1.0] * 24, 2, tail=4.0) == [0, 14, 24]


def test_update_steps_cost_more_so_the_first_ranges_are_shorter():
    paper = EditSettings("x", num_steps=50, latent_update="xt")  # eq. (1) on steps 0..24
    costs = step_costs(paper, StepCosts(step=1.0, xt_update=2.5, decode=0.0))
    assert costs[:25] == [3.5] * 25 and costs[25:] == [1.0] * 25
    b = split_steps(costs, 4)
    lengths = [y - x for x, y in zip(b[:-1], b[1:], strict=True)]
    assert lengths[0] < lengths[-1]
    off = EditSettings("x", num_steps=50, latent_update="off")
    assert step_costs(off) == [DEFAULT_COSTS.step] * 50
    assert plan_steps(off, 1) == [0, 50]


def test_cost_meter_turns_stage_timings_into_costs():
    meter = CostMeter(update_kind="x0")
    meter("denoise", 0.0, 0.08, [("s", 0), ("s", 1), ("s", 2), ("s", 3)])  # one call of 4 items
    meter("latent_update", 0.0, 0.002, [("s", 1), ("s", 2)])
    meter("decode", 0.0, 0.05, [("s", 0), ("s", 1)])
    c = meter.costs()
    assert c.step == pytest.approx(0.02) and c.x0_update == pytest.approx(0.001) and c.decode == pytest.approx(0.025)
    assert c.xt_update == pytest.approx(DEFAULT_COSTS.xt_update * 0.02)  # unmeasured: scaled from the default
    assert CostMeter().costs() == DEFAULT_COSTS  # nothing measured


@pytest.mark.parametrize(
    "kw, field", [({"step": 0.0}, "step"), ({"decode": -1.0}, "decode"), ({"x0_update": float("nan")}, "x0_update")]
)
def test_bad_costs_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        StepCosts(**kw)
