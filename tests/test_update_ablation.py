"""The update ablation's script (docs/runs/2026-12-01-h200-update-ablation) runs end to end: its CPU smoke mode."""

from __future__ import annotations

import json

import pytest

from pix2video.toytrain import update_ablation as ab


def test_relative_strengths_are_against_the_authors_pull_at_512():
    assert ab.relative_strength("sd512 d=100", 4096) == 1.0
    assert ab.relative_strength("latent d=100", 4096) == 4.0  # the toy set's 32x32x4 latent, the mean over it
    assert ab.relative_strength("latent d=100", 16384) == 1.0
    assert ab.relative_strength("sd512 d=25", 4096) == 0.25 and ab.relative_strength("off", 4096) == 0.0


def test_smoke_runs_both_stages_and_writes_the_tables(tmp_path):
    assert ab.main(["smoke", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "ablation.json").read_text())
    rows = result["rows"]
    assert set(rows) == {ab.row_name(u, r) for u, r in ab.SMOKE_JOBS}
    for r in rows.values():
        assert r["warp"] > 0 and r["compare_pixel_mse"] >= 0 and 0 <= r["blue_fraction"] <= 1
        assert r["ratio_depth2img_same_seed"] == pytest.approx(
            r["warp"] / result["baselines_warp"]["depth2img same seed"]
        )
    assert rows["anchor | latent d=100"]["strength_vs_sd512"] == 4.0
    table = (tmp_path / "ablation.md").read_text()
    assert table.count("\n| anchor") == len(rows) and "cut short" not in table
