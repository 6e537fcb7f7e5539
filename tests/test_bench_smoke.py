"""The benchmark's CPU smoke mode runs every row end to end (so it never rots)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_smoke_mode_writes_the_table(tmp_path):
    out = tmp_path / "bench.md"
    subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_pix2video.py"), "--smoke", "--out", str(out)],
        check=True,
        timeout=600,
    )
    text = out.read_text()
    for row in (
        "baseline A",
        "baseline B",
        "wavefront W=4, 1 session, eager",
        "ours (eager): W=2, 1 session",
        "ours (eager): 4 sessions",
    ):
        assert f"| {row}" in text
    assert "inversion:" in text and "depth:" in text and "session memory" in text and "warm-up" in text
