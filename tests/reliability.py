"""pytest plugin: the tests write docs/RELIABILITY.md (one row per fault injected,
load level held and bad input tried).

How to add a row from any test (the one function to call):

    from reliability import reliability_row

    def test_something(...):
        with reliability_row("inversion.overload", "Inversion overload",
                             "20 clients for 18 s against 2 running + 2 waiting slots") as row:
            ...                                   # inject the fault, hold the load
            row.status = "OK or RESOURCE_EXHAUSTED"   # what the clients got
            row.kept_serving = True               # health SERVING and a normal call succeeded after
            row.lost = "nothing"                  # anything else fails the test

``reliability_row(row_id, section, what)`` samples this process's RSS before the
block, its peak during it (every 20 ms) and after it (when the block ends: a
test that must wait for memory to settle waits inside the block), and records
the row. ``row_id`` is unique and stable ("<area>.<case>"); ``section`` groups
rows in the file. A row opened by a fixture around a whole test (one row per
parametrised case, as tests/test_attacks.py does) calls ``row.discard()`` when
the test failed (``call_passed(request)`` says), so that only what passed is
recorded. The servers under test run in the test process (real gRPC
servers on loopback, ServerThread), so its RSS is theirs.

The file is the record: at the end of a session it is rewritten with the rows
recorded (rows of tests that did not run are kept as they were). A row whose
stable columns (section, what, status, kept serving, lost) differ from the
file, or that is missing from it, fails its test with "out of date": the
rewritten file is then the one to commit, and the next run passes. RSS
figures change from run to run and are refreshed without failing.
"""

from __future__ import annotations

import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parent.parent / "docs" / "RELIABILITY.md"
HEADER = """# Reliability

Written by the test suite (`tests/reliability.py`, which gathers the rows while
the tests run; a test fails when its row here is out of date). One row per
fault injected, load level held and bad input tried, on loopback with tiny
models and a real SeaweedFS process. *Kept serving*: the service reported
SERVING and answered a normal call afterwards. *Lost*: data or work that a
client had been promised and did not get; it must be nothing. RSS is the
resident memory of the test process, which runs the servers: before the
fault, at its peak during it, and after it.

The rows come from tests/test_inversion_reliability.py, test_editor_sessions.py,
test_cli_cut_stream.py, test_attacks.py and test_security_transport.py. Any run
of them rewrites the rows it recorded and keeps the others, so a partial run
updates the file; to refresh it all, run those five files.
"""
COLUMNS = ["Row", "What was done", "Status the client got", "Kept serving", "Lost", "RSS before / peak / after (MiB)"]
_recorded: dict[str, "Row"] = {}


def rss_bytes() -> int:
    """Resident set size of this process (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


@dataclass
class Row:
    row_id: str
    section: str
    what: str
    status: str = ""
    kept_serving: bool | None = None
    lost: str = ""
    rss: tuple[float, float, float] = (0.0, 0.0, 0.0)  # MiB
    extra: dict = field(default_factory=dict)
    discarded: bool = False

    def discard(self) -> None:
        """Record nothing for this row (its test failed: the failure is the report)."""
        self.discarded = True

    def stable(self) -> tuple:
        return (self.section, self.what, self.status, self.kept_serving, self.lost)

    def cells(self) -> list[str]:
        serving = {True: "yes", False: "NO", None: "?"}[self.kept_serving]
        rss = " / ".join(f"{v:.0f}" for v in self.rss)
        return [self.row_id, self.what, self.status, serving, self.lost, rss]


class _Sampler:
    def __init__(self):
        self.peak = rss_bytes()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.02):
            self.peak = max(self.peak, rss_bytes())

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return max(self.peak, rss_bytes())


@contextmanager
def reliability_row(row_id: str, section: str, what: str):
    """See the module docstring: yields a Row to fill in; records it when the block ends."""
    if not re.fullmatch(r"[a-z0-9_.-]+", row_id):
        raise ValueError(f"row_id: lower-case words joined by . _ -, got {row_id!r}")
    row = Row(row_id, section, what)
    before = rss_bytes()
    sampler = _Sampler()
    try:
        yield row
    finally:
        peak = sampler.stop()
    after = rss_bytes()
    mib = 1024 * 1024
    row.rss = (before / mib, peak / mib, after / mib)
    if row.discarded:
        return
    if not row.status or row.kept_serving is None or not row.lost:
        pytest.fail(f"reliability row {row_id}: set status, kept_serving and lost")
    _recorded[row_id] = row
    old = read_rows().get(row_id)
    if row.lost != "nothing":
        pytest.fail(f"reliability row {row_id}: lost {row.lost!r}; it must be nothing")
    if old is None or old.stable() != row.stable():
        pytest.fail(
            f"docs/RELIABILITY.md is out of date for row {row_id} (was {old.stable() if old else 'missing'}, "
            f"now {row.stable()}); it is rewritten at the end of this session: commit it"
        )


# ------------------------------------------------------------------ the file


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _split(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
    return [c.strip().replace("\\|", "|") for c in cells]


def render(rows: dict[str, Row]) -> str:
    out = [HEADER]
    sections: dict[str, list[Row]] = {}
    for row in rows.values():
        sections.setdefault(row.section, []).append(row)
    for section in sorted(sections):
        out.append(f"\n## {section}\n")
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + "|".join("---" for _ in COLUMNS) + "|")
        for row in sorted(sections[section], key=lambda r: r.row_id):
            out.append("| " + " | ".join(_escape(c) for c in row.cells()) + " |")
    return "\n".join(out) + "\n"


def parse(text: str) -> dict[str, Row]:
    rows: dict[str, Row] = {}
    section = ""
    for line in text.splitlines():
        if line.startswith("## "):
            section = line[3:].strip()
            continue
        if not line.startswith("| ") or line.startswith("| Row |"):
            continue
        cells = _split(line)
        if len(cells) != len(COLUMNS):
            continue
        row_id, what, status, serving, lost, rss = cells
        try:
            figures = tuple(float(v) for v in rss.split(" / "))
        except ValueError:
            figures = (0.0, 0.0, 0.0)
        kept = {"yes": True, "NO": False}.get(serving)
        rows[row_id] = Row(row_id, section, what, status, kept, lost, figures if len(figures) == 3 else (0, 0, 0))
    return rows


def read_rows() -> dict[str, Row]:
    try:
        return parse(DOC.read_text())
    except FileNotFoundError:
        return {}


def pytest_sessionfinish(session, exitstatus):
    if not _recorded:
        return
    rows = read_rows()
    rows.update(_recorded)
    text = render(rows)
    try:
        current = DOC.read_text()
    except FileNotFoundError:
        current = None
    if text != current:
        DOC.parent.mkdir(parents=True, exist_ok=True)
        tmp = DOC.with_suffix(".md.tmp")
        tmp.write_text(text)
        tmp.replace(DOC)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keeps each phase's report on the item, for :func:`call_passed`."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"_reliability_{report.when}", report)


def call_passed(request) -> bool:
    """In a fixture's teardown: whether the test itself (its call phase) passed."""
    report = getattr(request.node, "_reliability_call", None)
    return report is not None and report.passed


@pytest.fixture
def reliability():
    """The plugin as a fixture: ``reliability.row(...)`` is :func:`reliability_row`."""

    class _Api:
        row = staticmethod(reliability_row)

    return _Api()


__all__ = ["reliability_row", "call_passed", "rss_bytes", "parse", "render", "read_rows", "DOC"]
