"""The benchmark's CPU smoke mode runs every row end to end (so it never rots)."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_smoke_mode_writes_the_table(tmp_path):
    out = tmp_path / "bench.md"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "bench_pix2video.py"),
            "--smoke",
            "--toy-psnr",
            "--experiments",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    assert "FAILED:" not in proc.stdout, proc.stdout[-4000:]  # a part that failed (bench_pix2video.guarded)
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
    # Issue 17's rows: the resume catch-up, fp8 against fp16 on the toy model, the experiments after the table.
    assert "resume catch-up" in text and "k=2:" in text and "per frame caught up" in text
    assert "fp8 PSNR of edited frames against fp16 edits on the toy model set: edit:" in text
    assert "## Experiments (same run)" in text and "fp8 row-wise" in text and "batch-2 self-only call" in text
