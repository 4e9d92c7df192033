"""The history step under faults: the filesystem result is whole, the call ends within its budget,
and every mark that could not be made waits in the outbox until sync_pending delivers it once."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import ago, closed_port, read_index, write_index
from history_service import Faults, HistoryService

import session_manager as sm

BUDGET = 2.0
# The whole call: its filesystem step on a 2-core machine that runs a second test suite beside this
# one (seen: 6.9 s and 11.6 s for calls whose history step kept its 2 s budget). The budget itself
# is checked on the service's side, where the filesystem step does not count: from the first
# request to the last, at most the budget, the grace of a request in flight, and a scheduling delay.
SLACK = sm.HISTORY_GRACE_SECONDS + 20
HISTORY_SPAN = BUDGET + sm.HISTORY_GRACE_SECONDS + 2
STALE, WITH_ROWS = 40, 30


@pytest.fixture
def agent(root: Path, history: HistoryService, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("SESSION_HISTORY_BUDGET_SECONDS", str(BUDGET))
    store: dict[str, Any] = {"agent:worker:cron:fresh": {"sessionId": "fresh", "updatedAt": ago(1)}}
    store |= {f"agent:worker:cron:{n}": {"sessionId": f"s{n}", "updatedAt": ago(300)} for n in range(STALE)}
    write_index(root, "worker", store)
    history.add_row("fresh", agent="worker")
    rows = {f"s{n}": history.add_row(f"s{n}", agent="worker") for n in range(WITH_ROWS)}
    for n in range(60):
        history.add_row(f"unrelated-{n}", agent="worker")
    return rows


def prune_timed() -> tuple[dict[str, Any], float]:
    started = time.monotonic()
    result = sm.prune_sessions(max_age_minutes=60)
    return result, time.monotonic() - started


def assert_filesystem_done(root: Path, result: dict[str, Any]) -> None:
    assert result["pruned_count"] == STALE and result["errors"] == []
    assert set(read_index(root, "worker")) == {"agent:worker:cron:fresh"}


def assert_recovers_exactly_once(
    history: HistoryService, rows: dict[str, str], result: dict[str, Any]
) -> None:
    """After the service recovers, sync_pending delivers every queued mark, each row PATCHed once."""
    counts = result["history"]
    assert sum(counts.values()) == STALE and set(counts) <= {"marked", "no_history_row", "queued"}
    assert counts.get("marked", 0) <= WITH_ROWS and counts.get("no_history_row", 0) <= STALE - WITH_ROWS
    queued = {sid for sid, outcome in result["history_by_session"].items() if outcome["status"] == "queued"}
    assert result["history_pending"] == len(queued)
    history.faults = Faults()
    synced = sm.sync_pending()
    assert synced["still_pending"] == [] and synced["gave_up"] == []
    assert {row["session_id"] for row in synced["delivered"]} == queued
    again = sm.sync_pending()
    assert again["delivered"] == [] and again["still_pending"] == []
    patched = Counter(row_id for row_id, body in history.patches if body == {"status": "ended"})
    assert patched == Counter(rows.values()), "every row of a pruned session is PATCHed exactly once"
    assert all(history.row_of(sid)["status"] == "ended" for sid in rows)
    assert history.row_of("fresh")["status"] == "active"


def test_normal_service_marks_every_row_at_once(
    root: Path, history: HistoryService, agent: dict[str, str]
) -> None:
    result, took = prune_timed()
    assert_filesystem_done(root, result)
    assert result["history"] == {"marked": WITH_ROWS, "no_history_row": STALE - WITH_ROWS}
    assert result["history_pending"] == 0 and took < BUDGET
    assert [m for m, _ in history.requests].count("GET") == 1  # one page holds this agent's 91 rows
    assert_recovers_exactly_once(history, agent, result)


FAULTS: dict[str, Callable[[HistoryService], None]] = {
    "slow": lambda h: setattr(h.faults, "latency", 2.0),  # unbounded: 40 x (GET + PATCH) / 8 = 20 s
    "http-500": lambda h: setattr(h.faults, "status", 500),
    "flaky": lambda h: setattr(h.faults, "failure_share", 0.35),
    "hangs": lambda h: setattr(h.faults, "hang", BUDGET + SLACK + 5),
    "malformed-json": lambda h: setattr(h.faults, "malformed", True),
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_faulty_service_never_loses_a_mark(
    root: Path, history: HistoryService, agent: dict[str, str], fault: str
) -> None:
    FAULTS[fault](history)
    result, took = prune_timed()
    assert_filesystem_done(root, result)
    assert took < BUDGET + SLACK, f"{fault}: the call took {took:.1f} s"
    span = history.arrivals[-1] - history.arrivals[0] if history.arrivals else 0.0
    assert span < HISTORY_SPAN, f"{fault}: requests went on for {span:.1f} s after the first"
    if fault != "flaky" and fault != "slow":
        assert result["history"].get("marked", 0) == 0
    assert_recovers_exactly_once(history, agent, result)


def test_closed_port_stops_at_the_first_refusal(
    root: Path, history: HistoryService, agent: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARIA_API_URL", f"http://127.0.0.1:{closed_port()}")
    result, took = prune_timed()
    assert_filesystem_done(root, result)
    assert result["history"] == {"queued": STALE} and took < 1.5
    assert all("refused" in o["reason"] for o in result["history_by_session"].values())
    monkeypatch.setenv("ARIA_API_URL", history.url)
    waiting = sm.sync_pending()  # queued for the other URL: never sent here unasked (issue 26 M1)
    assert waiting["delivered"] == [] and '"reassign": true' in waiting["history_other_service"]
    synced = sm.sync_pending(reassign=True)  # the operator says the other URL was the mistake
    assert len(synced["delivered"]) == STALE
    assert Counter(o["outcome"] for o in synced["delivered"]) == {
        "marked": WITH_ROWS,
        "no_history_row": STALE - WITH_ROWS,
    }


def test_wrong_key_is_a_loud_configuration_error_until_fixed(
    root: Path, history: HistoryService, agent: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    history.api_key = "the-right-key"
    monkeypatch.setenv("ARIA_API_KEY", "a-wrong-key")
    result, took = prune_timed()
    assert took < 1.5
    assert_filesystem_done(root, result)
    assert result["history_error"]["error_type"] == "history_configuration_error"
    assert "HTTP 401 (check ARIA_API_KEY)" in result["history_error"]["error"]
    assert [m for m, _ in history.requests] == ["GET"], "a rejected key is not retried"
    assert "a-wrong-key" not in json.dumps(result)
    monkeypatch.setenv("ARIA_API_KEY", "the-right-key")
    assert sm.sync_pending()["delivered"] == []  # queued under the wrong key: never sent unasked
    synced = sm.sync_pending(reassign=True)
    assert len(synced["delivered"]) == STALE and "the-right-key" not in json.dumps(synced)
    assert all(history.row_of(sid)["status"] == "ended" for sid in agent)


def test_the_next_call_delivers_the_outbox_too(
    root: Path, history: HistoryService, agent: dict[str, str]
) -> None:
    history.faults.status = 500  # a failure; a 503 asks to wait (Retry-After), tests/test_delivery.py
    first, _ = prune_timed()
    assert first["history_pending"] == STALE
    history.faults = Faults()
    write_index(root, "other", {"agent:other:cron:x": {"sessionId": "x", "updatedAt": ago(300)}})
    later = sm.delete_session("x")
    assert later["history_pending_delivered"] == STALE and later["history_pending"] == 0
    assert sm.get_session_stats()["pending_history_marks"] == 0


@pytest.mark.parametrize(
    ("failing_since", "fault", "given_up"),
    [
        ("2026-01-01T00:00:00.000Z", 500, True),  # failing for months, and failing again
        (None, 500, False),  # queued long ago, failing only now
        ("2026-01-01T00:00:00.000Z", 429, False),  # the service asks to wait: never a reason to give up
        ("2026-01-01T00:00:00.000Z", 503, False),
        ("recently", 500, False),
    ],
)
def test_a_mark_is_given_up_only_after_failing_for_days(
    root: Path,
    history: HistoryService,
    agent: dict[str, str],
    failing_since: str | None,
    fault: int,
    given_up: bool,
) -> None:
    """Issue 19: giving up counts days of real failures (no answer, a rejection), not calls; a mark
    that only waited (its budget, the pace, a 429 or 503) is never given up."""
    state = root / ".session-manager"
    state.mkdir()
    mark = {
        "id": "a" * 32,
        "session_id": "s1",
        "agent": "worker",
        "status": "ended",
        "row_ids": None,
        "attempts": 500,
        "queued_at": "2026-01-01T00:00:00.000Z",
        "last_error": "HTTP 500",
        "failing_since": sm._iso_utc(sm._utc_now()) if failing_since == "recently" else failing_since,
    }
    (state / "history-outbox.jsonl").write_text(json.dumps(mark) + "\n")
    history.faults.status = fault
    synced = sm.sync_pending()
    assert ([row["session_id"] for row in synced["gave_up"]] == ["s1"]) is given_up
    assert ([row["session_id"] for row in synced["still_pending"]] == ["s1"]) is not given_up
    if given_up:
        abandoned = [
            json.loads(line) for line in (state / "history-abandoned.jsonl").read_text().splitlines()
        ]
        assert [row["session_id"] for row in abandoned] == ["s1"]


def test_restore_supersedes_a_pending_end_mark(
    root: Path, history: HistoryService, agent: dict[str, str]
) -> None:
    history.faults.status = 503
    sm.delete_session("s3")
    history.faults = Faults()
    sm.restore_session("s3")
    assert sm.sync_pending()["delivered"] == []
    assert history.row_of("s3")["status"] == "active"
    assert [body for _, body in history.patches] == []  # the row was never ended: nothing to undo


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("http://127.0.0.1:{port}", "at http://127.0.0.1:{port} (check ARIA_API_URL)"),
        ("http://127.0.0.1:{port}/api", "at http://127.0.0.1:{port} (check ARIA_API_URL)"),
        ("http://aria:s3cret-password@127.0.0.1:{port}", "at http://127.0.0.1:{port} (check ARIA_API_URL)"),
    ],
)
def test_a_refused_connection_names_the_variable_and_the_service_without_its_credentials(
    root: Path, monkeypatch: pytest.MonkeyPatch, url: str, shown: str
) -> None:
    port = closed_port()
    monkeypatch.setenv("ARIA_API_URL", url.format(port=port))
    write_index(root, "worker", {"agent:worker:cron:1": {"sessionId": "s1", "updatedAt": ago(300)}})

    result = sm.prune_sessions(max_age_minutes=60)

    pending = sm.sync_pending()["still_pending"]
    assert result["pruned_count"] == 1 and [mark["session_id"] for mark in pending] == ["s1"]
    assert pending[0]["last_error"] == "the history service refused the connection " + shown.format(port=port)
    assert "s3cret" not in json.dumps(result) + json.dumps(pending)
