"""The protobuf contract: generated code is current, and the SDK stands alone."""

import filecmp
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_generated_code_matches_the_protos(tmp_path):
    subprocess.run(["bash", str(ROOT / "protos" / "generate.sh"), str(tmp_path)], check=True, cwd=ROOT)
    fresh = sorted(p.relative_to(tmp_path) for p in (tmp_path / "pix2video_api").rglob("*.py*"))
    committed = sorted(p.relative_to(ROOT / "clients") for p in (ROOT / "clients" / "pix2video_api").rglob("*.py*"))
    assert fresh == committed, "run protos/generate.sh: generated files differ from the protos"
    stale = [str(p) for p in fresh if not filecmp.cmp(tmp_path / p, ROOT / "clients" / p, shallow=False)]
    assert not stale, f"run protos/generate.sh: stale generated code in {stale}"


def test_every_rpc_and_field_is_commented():
    import re

    for proto in (ROOT / "protos").rglob("*.proto"):
        lines = proto.read_text().splitlines()
        for i, line in enumerate(lines):
            stripped = line.strip()
            is_decl = re.match(r"^(rpc |[a-z].* = \d+;|[A-Z_0-9]+ = \d+;)", stripped)
            if is_decl and not stripped.startswith(("option", "package", "syntax", "import")):
                assert lines[i - 1].strip().startswith("//"), f"{proto.name}:{i + 1}: {stripped} has no comment"


def test_the_sdk_imports_neither_torch_nor_the_engine():
    code = (
        "import sys, pix2video_client, pix2video_client.aio, pix2video_client.video;"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'pix2video', 'diffusers', 'transformers')];"
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": ""})
