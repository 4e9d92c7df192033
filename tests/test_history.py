"""The second layer: marking history rows ended over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hostile
import pytest
from helpers import (
    ago,
    closed_port,
    measured_cli,
    one_stale_subagent,
    read_index,
    run_cli,
    write_index,
)
from history_service import HistoryService

import session_manager as sm


def test_delete_marks_the_row_ended_with_the_api_key(
    tree: Path, history: HistoryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    history.api_key = "secret-key"
    monkeypatch.setenv("ARIA_API_KEY", "secret-key")
    row = history.add_row("run-9")
    other = history.add_row("sub-1")
    result = sm.delete_session("run-9")
    assert result["pg_status_updated"] is True
    assert result["history"] == {"status": "marked", "reason": None, "row_ids": [row]}
    assert "PG marked ended" in result["message"]
    assert history.row_of("run-9")["status"] == "ended"
    assert history.row_of("sub-1")["status"] == "active" and history.patches == [(row, {"status": "ended"})]
    assert other not in [patched for patched, _ in history.patches]
    assert {agent.split("/")[0] for agent in history.user_agents} == {"python-httpx"}


@pytest.mark.parametrize("suffix", ["", "/", "/api", "/api/"])
def test_api_url_with_or_without_api_suffix(
    tree: Path, history: HistoryService, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    monkeypatch.setenv("ARIA_API_URL", history.url + suffix)
    history.add_row("cron-hb")
    assert sm.delete_session("cron-hb")["pg_status_updated"] is True


def test_legacy_rows_and_rows_deep_in_the_pages_are_found(tree: Path, history: HistoryService) -> None:
    history.add_row("an-cron", agent="analyst", legacy=True, started_at="2020-01-01T00:00:00+00:00")
    for n in range(350):
        history.add_row(f"noise-{n}", agent="analyst", started_at="2026-11-20T00:00:00+00:00")
    for n in range(300):
        history.add_row(f"other-agent-{n}", agent="main", started_at="2026-11-20T00:00:00+00:00")
    result = sm.prune_sessions(max_age_minutes=60, agent="analyst", detail="full")
    assert result["history_by_session"]["an-cron"]["status"] == "marked"
    assert history.row_of("an-cron")["status"] == "ended"
    pages = [path for method, path in history.requests if method == "GET"]
    assert len(pages) == 4  # 351 rows of this agent, 100 to a page: the scan ends at the last page
    assert all("agent_id=analyst" in path and "status=active" in path for path in pages)


def test_lookup_stops_reading_pages_once_every_row_is_found(tree: Path, history: HistoryService) -> None:
    for n in range(500):
        history.add_row(f"noise-{n}", started_at="2026-01-01T00:00:00+00:00")
    history.add_row("sub-1", started_at="2026-11-24T00:00:00+00:00")
    sm.delete_session("sub-1")
    assert [method for method, _ in history.requests] == ["GET", "PATCH"]


def test_session_without_a_row_is_reported_not_failed(tree: Path, history: HistoryService) -> None:
    result = sm.delete_session("cron-hb")
    assert result["pg_status_updated"] is False
    assert result["history"]["status"] == "no_history_row"
    assert "no history row" in result["message"]
    assert history.patches == []


def test_missing_session_still_gets_its_row_ended(tree: Path, history: HistoryService) -> None:
    history.add_row("gone-already")
    result = sm.delete_session("gone-already")
    assert result["removed_keys"] == [] and result["pg_status_updated"] is True
    assert history.row_of("gone-already")["status"] == "ended"


def test_service_down_never_undoes_the_filesystem_part(tree: Path) -> None:
    result = sm.delete_session("run-9")
    assert result["removed_keys"] == ["agent:main:cron:digest:run:r9"] and result["transcript_archived"]
    assert result["pg_status_updated"] is False and result["history"]["status"] == "queued"
    assert "refused" in result["history"]["reason"] and result["history_pending"] == 1
    assert "agent:main:cron:digest:run:r9" not in read_index(tree, "main")


def test_wrong_api_key_is_a_failure_that_does_not_leak_the_key(
    tree: Path, history: HistoryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    history.api_key = "right"
    monkeypatch.setenv("ARIA_API_KEY", "wrong-key-value")
    history.add_row("sub-1")
    result = sm.delete_session("sub-1")
    assert result["pg_status_updated"] is False and result["history"]["status"] == "queued"
    assert result["history_error"] == {
        "error": "the history service rejected the session lookup with HTTP 401 (check ARIA_API_KEY)",
        "error_type": "history_configuration_error",
    }
    assert "wrong-key-value" not in str(result)
    outbox = (tree / ".session-manager" / "history-outbox.jsonl").read_text()
    assert "wrong-key-value" not in outbox and "sub-1" in outbox


def test_prune_marks_every_deleted_session(root: Path, history: HistoryService) -> None:
    write_index(
        root,
        "worker",
        {f"agent:worker:cron:{n}": {"sessionId": f"w{n}", "updatedAt": ago(300)} for n in range(20)},
    )
    rows = {f"w{n}": history.add_row(f"w{n}", agent="worker") for n in range(0, 20, 2)}
    result = sm.prune_sessions(max_age_minutes=60)
    assert result["pruned_count"] == 20
    assert result["history"] == {"marked": 10, "no_history_row": 10}
    assert sorted(row for row, _ in history.patches) == sorted(rows.values())


@pytest.mark.parametrize(
    ("row_before", "patches"),
    [
        ("ended", 0),  # the PATCH under way when the delivery died had reached the service
        ("active", 1),  # it had not: the row still waits for its mark
    ],
)
def test_a_mark_a_killed_delivery_may_have_sent_is_looked_at_again_never_sent_twice(
    tree: Path, history: HistoryService, monkeypatch: pytest.MonkeyPatch, row_before: str, patches: int
) -> None:
    row = history.add_row("run-9")
    monkeypatch.setenv("ARIA_API_URL", f"http://127.0.0.1:{closed_port()}")
    assert sm.delete_session("run-9")["history_pending"] == 1
    # What a delivery process killed mid-PATCH leaves: the mark with its row, and its sending record.
    outbox = tree / ".session-manager" / "history-outbox.jsonl"
    records = [json.loads(line) for line in outbox.read_text().splitlines()]
    mark = next(record for record in records if record.get("session_id") == "run-9")
    mark |= {"row_ids": [row], "service_id": None}
    outbox.write_text("".join(json.dumps(record) + "\n" for record in [*records, {"sending": mark["id"]}]))
    history.row_of("run-9")["status"] = row_before
    monkeypatch.setenv("ARIA_API_URL", history.url)
    answer = sm.sync_pending()
    assert [item["outcome"] for item in answer["delivered"]] == ["marked"]
    assert (len(history.patches), history.row_of("run-9")["status"]) == (patches, "ended")


SKILL = "session_manager"


@pytest.mark.parametrize(
    "handler",
    [
        hostile.drip_body,
        hostile.drip_headers,
        hostile.processing_forever,
        hostile.endless_chunks,
        hostile.gzip_bomb,
    ],
    ids=["dripped-body", "dripped-headers", "102-forever", "endless-chunks", "gzip-bomb"],
)
def test_a_hostile_service_costs_a_delete_its_budget_and_no_memory(
    root: Path, service: Callable[..., hostile.HostileService], handler: hostile.Handler
) -> None:
    one_stale_subagent(root)
    hostile.bomb_body()  # made before the clock starts: the service answers at once
    hostile_service = service(handler)
    code, answer, seconds, peak_kib = measured_cli(
        "delete_session", '{"session_id": "sub-1"}', env={"ARIA_API_URL": hostile_service.url}
    )
    assert (code, answer["removed_keys"], answer["history"]["status"]) == (
        0,
        ["agent:main:subagent:sub-1"],
        "queued",
    )
    assert seconds < 20  # a 3 s budget plus its grace; before: 42 s to 74 s
    assert peak_kib < 250_000  # before: 2.1 GB (bomb) to 7.2 GB (endless body)


@pytest.mark.parametrize(
    ("running", "arguments"),
    [
        (None, {"session_id": "m-live", "agent": "analyst"}),
        ("agent:main:telegram:direct:7", {"session_id": "m-live", "agent": "analyst"}),
    ],
    ids=["main-session-named-in-another-agent", "running-conversation-by-its-key"],
)
def test_a_live_sessions_row_is_never_ended_by_a_delete_in_the_wrong_agent(
    root: Path, history: HistoryService, monkeypatch: pytest.MonkeyPatch, running: str | None, arguments: Any
) -> None:
    write_index(root, "main", {"agent:main:main": {"sessionId": "m-live", "updatedAt": ago(1)}})
    write_index(root, "analyst", {})
    if running:
        monkeypatch.setenv("ARIA_SESSION_ID", running)
    live_row = history.add_row("m-live", agent="main")
    code, answer, _ = run_cli(SKILL, "delete_session", json.dumps(arguments))
    assert code == 0 and "agent analyst" in answer["message"]
    assert history.row_of("m-live")["status"] == "active"
    assert [row_id for row_id, _ in history.patches] == [] and live_row


def test_a_row_that_moved_between_pages_is_marked_by_a_later_lookup(
    root: Path, service: Callable[..., hostile.HostileService]
) -> None:
    one_stale_subagent(root, "target")
    rows = [hostile.row(f"other-{n}") for n in range(150)] + [hostile.row("target")]
    served = {"pages": 0}

    def listing(target: str) -> bytes:
        page = hostile.pages_of(rows, target)
        served["pages"] += 1
        if served["pages"] == 1:
            del rows[:60]  # another client ends 60 rows of page 1 meanwhile: the target moves up
        return page

    listing_service = service(listing, listing=True)
    env = {"ARIA_API_URL": listing_service.url}
    first = run_cli(SKILL, "delete_session", '{"session_id": "target"}', env=env)[1]
    assert first["history"]["status"] == "queued" and listing_service.patched == []
    assert run_cli(SKILL, "sync_pending", "{}", env=env)[1]["delivered"][0]["outcome"] == "marked"
    assert listing_service.patched == [rows[-1]["id"]]


@pytest.mark.parametrize("listing", ["bad-id-first", "page-repeated-forever", "agent-filter-ignored"])
def test_a_mark_reaches_exactly_the_sessions_own_rows(
    root: Path, service: Callable[..., hostile.HostileService], listing: str
) -> None:
    one_stale_subagent(root)
    good = hostile.row("sub-1")
    if listing == "bad-id-first":
        rows = [hostile.row("sub-1", row_id="not-a-uuid"), good]
        answer_of: Callable[[str], bytes] = lambda target: hostile.pages_of(rows, target)  # noqa: E731
        expected = [good["id"]]
    elif listing == "page-repeated-forever":  # with a second session of the call never on it
        store = read_index(root, "main")
        write_index(
            root,
            "main",
            {**store, "agent:main:subagent:sub-2": {"sessionId": "sub-2", "updatedAt": ago(300)}},
        )
        rows = [good, *(hostile.row(f"o-{n}") for n in range(99))]
        answer_of = lambda target: json.dumps({"items": rows, "total": 10**9, "pages": 10**9}).encode()  # noqa: E731
        expected = [good["id"]]
    else:
        rows = [hostile.row("sub-1", agent="analyst")]
        answer_of = lambda target: hostile.pages_of(rows, target)  # noqa: E731
        expected = []
    listing_service = service(answer_of, listing=True)
    code, answer, _ = run_cli(
        SKILL, "prune_sessions", '{"max_age_minutes": 60}', env={"ARIA_API_URL": listing_service.url}
    )
    assert code == 0 and listing_service.patched == expected  # before: the repeated page, 50 times
    assert answer["history"].get("marked", 0) == len(expected)


@pytest.mark.parametrize("status", list(sm.MarkStatus))
def test_every_mark_status_says_which_rows_it_changes_and_whether_the_store_holds_its_session(
    status: sm.MarkStatus,
) -> None:
    assert status.rows_to_change in sm.MarkStatus and status.rows_to_change is not status
    assert isinstance(status.held_when_done, bool)
