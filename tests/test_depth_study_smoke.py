"""The depth study (bench/depth_study.py, run 5 of docs/benchmark.md) runs end
to end on the CPU with the tiny models, so it does not rot between GPU runs."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_depth_study_smoke_mode_measures_every_way(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "depth_study.py"), "--smoke", "--out-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads((tmp_path / "depth_study.json").read_text())
    ways = res["ways"]
    assert "host input, fp32" in ways and "device input, fp16" in ways and "host input, fp16" in ways
    assert ways["host input, fp32"]["max_err"] == 0  # the reference against itself
    assert all(w["fps"] > 0 and 0 < w["pearson_min"] <= 1 + 1e-9 for w in ways.values())
    assert res["worker"]["host"]["resolved"] == "host" and res["worker"]["auto"]["resolved"] == "host"  # CPU
