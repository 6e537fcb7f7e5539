"""The step-parallel benchmark runs end to end on tiny CPU models (its GPU rows run on a GPU machine)."""

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_step_parallel_smoke_writes_a_row_per_n_and_its_frame_check(tmp_path, tiny_dir):
    spec = importlib.util.spec_from_file_location("bench_step_parallel", ROOT / "bench" / "bench_step_parallel.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    out, js = tmp_path / "t.md", tmp_path / "t.json"
    argv = ["--smoke", "--n", "1,2", "--check", "2", "--check-frames", "3", "--tiny-dir", str(tiny_dir)]
    bench.main([*argv, "--out", str(out), "--json", str(js)])
    rows = json.loads(js.read_text())
    assert [r["n"] for r in rows["rows"]] == [1, 2]
    assert rows["rows"][1]["bounds"][0] == 0 and len(rows["rows"][1]["busy"]) == 2
    assert rows["checks"][0]["W=1"]["bitwise"]  # one frame in flight: the same samples in every call
    assert "| 2 | cpu,cpu |" in out.read_text()
