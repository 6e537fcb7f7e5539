"""docs/RELIABILITY.md: written by the tests (tests/reliability.py), and it
lists every fault, load and bad input of issue 14's "Must show"."""

from __future__ import annotations

from reliability import DOC, parse, render

MUST_SHOW = {
    "store.killed-during-decode",
    "store.killed-during-depth",
    "store.killed-during-inversion",
    "store.killed-during-store",
    "inversion.overload-20-clients",
    "inversion.stalled-uploads",
    "inversion.abandoned-job",
    "inversion.same-clip-two-replicas",
    "inversion.dead-replica-lease",
    "store.wrong-credentials",
    "inversion.depth-rolling-restart",
}


def test_the_table_exists_and_lists_every_row():
    rows = parse(DOC.read_text())
    assert MUST_SHOW <= set(rows), MUST_SHOW - set(rows)
    for row in rows.values():
        assert row.lost == "nothing", row
        assert row.kept_serving is True, row
        assert row.status and row.what, row
        before, peak, after = row.rss
        assert 0 < before <= peak and 0 < after <= peak, row


def test_the_table_is_what_the_generator_writes():
    """Hand edits show up: the file must be exactly the generator's rendering of its rows."""
    text = DOC.read_text()
    assert render(parse(text)) == text
