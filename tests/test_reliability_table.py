"""docs/RELIABILITY.md: written by the tests (tests/reliability.py), and it
lists every fault, load and bad input of issue 14's "Must show", issue 13's
editor sessions and the security issue's attacks."""

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
    "inversion.abandoned-job-remote-waiter",
    # issue 13's editor sessions
    "editor.16-clients-never-read",
    "editor.16-clients-sigkilled",
    "editor.second-open",
    "editor.5mb-negative-prompt",
    "editor.slow-ticks",
    "editor.sdk-stream-cut",
    "editor.cli-stream-cut",
    "editor.replica-sigkilled",
    # the security issue's attacks on the running suite
    "security.tls",
    "security.token",
    "security.tenant-get",
    "security.tenant-edit",
    "security.tenant-key",
    "security.tenant-quota",
    "attack.property-depth-caption",
    "attack.property-inversion",
    "attack.property-editor",
}


def test_the_table_exists_and_lists_every_row():
    rows = parse(DOC.read_text())
    assert MUST_SHOW <= set(rows), MUST_SHOW - set(rows)
    attacks = {r for r in rows if r.startswith("attack.")}
    assert len(attacks) >= 50, len(attacks)  # one per hostile input of tests/test_attacks.py
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
