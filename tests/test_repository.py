"""The repository stands alone: no file points outside it, and every relative
link in its Markdown resolves to a file inside it."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Spelled in pieces so that this file does not match itself.
OUTSIDE = ["../" + "shared", "/work/" + "shared", "DESIGN" + ".md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # an exported tree without git
        names = [str(p.relative_to(ROOT)) for p in ROOT.rglob("*") if p.is_file() and ".git" not in p.parts]
    return [ROOT / n for n in names if (ROOT / n).is_file()]


def text_of(path: Path) -> str | None:
    data = path.read_bytes()
    if b"\0" in data[:8192]:
        return None  # binary
    return data.decode("utf-8", errors="replace")


def test_no_file_refers_to_a_path_outside_the_repository():
    hits = []
    for path in tracked_files():
        text = text_of(path)
        if text is None:
            continue
        for needle in OUTSIDE:
            for n, line in enumerate(text.splitlines(), 1):
                if needle in line:
                    hits.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_relative_markdown_links_resolve_inside_the_repository():
    broken = []
    for path in tracked_files():
        if path.suffix != ".md":
            continue
        for target in LINK.findall(path.read_text()):
            if re.match(r"[a-z]+:", target) or target.startswith("#"):
                continue  # a URL or an anchor in the same page
            resolved = (path.parent / target.split("#")[0]).resolve()
            if not resolved.is_relative_to(ROOT) or not resolved.exists():
                broken.append(f"{path.relative_to(ROOT)}: {target}")
    assert not broken, "\n".join(broken)


def test_the_architecture_document_has_the_sections_the_code_cites():
    doc = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    for heading in ("## 1. The method as implemented", "### 5.1", "### 5.2", "### 5.3", "## 6. Conventions"):
        assert heading in doc, heading
    cited = set()
    for path in tracked_files():
        text = text_of(path)
        if text:
            cited |= set(re.findall(r"ARCHITECTURE\.md,? section (\d+(?:\.\d+)?)", text))
    assert cited, "no code cites docs/ARCHITECTURE.md"
    for section in cited:
        assert re.search(rf"^#+ {re.escape(section)}[. ]", doc, re.M), f"section {section} cited but missing"
