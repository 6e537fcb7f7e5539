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
        "ours (eager): 8 sessions",
    ):
        assert f"| {row}" in text
    # The ceiling beside every row: TFLOP/s and the fraction of the peak measured in the run.
    assert "| TFLOP/s | of fp16 peak |" in text and "matmul probe" in text and "FlopCounterMode" in text
    assert "fp8 drift" in text and "long edit" in text
    assert "- inversion (" in text and "depth:" in text and "session memory" in text and "warm-up" in text
