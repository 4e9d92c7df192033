"""The skill's own state folder (audit log, history outbox): unwritable, corrupt, a file, inside a
sessions folder or reached through a link (issues 12 and 18)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import (
    outbox,
    run_cli,
    snapshot,
    stale_agent,
    write_index,
)
from history_service import HistoryService

import session_manager as sm

SKILL = "session_manager"


def agents_snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the agents' folders (the skill's own state folder aside)."""
    return {name: data for name, data in snapshot(root).items() if not name.startswith(".session-manager")}


def test_an_outbox_that_cannot_be_written_stops_the_deletion_before_it_starts(root: Path) -> None:
    stale_agent(root)
    (root / ".session-manager" / "history-outbox.jsonl").mkdir(parents=True)
    before = agents_snapshot(root)
    exit_code, answer, _ = run_cli(SKILL, "prune_sessions", '{"max_age_minutes": 60, "agent": "main"}')
    assert (exit_code, answer["error_type"]) == (1, "store_write_failed")
    assert "nothing was deleted" in answer["error"]
    assert agents_snapshot(root) == before and sm.list_deleted()["total"] == 0


CORRUPT_OUTBOX = [
    {"id": 1, "session_id": "x"},
    {"id": "a", "session_id": "x", "row_ids": 5},
    {"id": "b", "session_id": "x", "attempts": "many"},
    {"id": "c", "session_id": ["x"]},
    ["not", "an", "object"],
]


def test_corrupt_outbox_records_are_set_aside_not_fatal(root: Path, history: HistoryService) -> None:
    state = root / ".session-manager"
    state.mkdir()
    good = {
        "id": "g",
        "session_id": "s1",
        "agent": "main",
        "status": "ended",
        "attempts": 0,
        "queued_at": None,
    }
    history.add_row("s1")
    lines = [json.dumps(record) for record in [*CORRUPT_OUTBOX, good]]
    (state / "history-outbox.jsonl").write_text("\n".join(lines) + "\n")
    assert sm.get_session_stats()["pending_history_marks"] == 1
    synced = sm.sync_pending()
    assert [row["session_id"] for row in synced["delivered"]] == ["s1"] and synced["still_pending"] == []
    abandoned = [json.loads(line) for line in (state / "history-abandoned.jsonl").read_text().splitlines()]
    assert [entry["record"] for entry in abandoned] == CORRUPT_OUTBOX[:4]
    assert outbox(root) == []


CORRUPT_AUDIT = [
    {"event": "commit", "txn": "t1", "agent": "main", "sessions": [1, 2]},
    {"event": "commit", "txn": "t2", "agent": "main", "sessions": {"s": 5}},
    {"event": "intent", "txn": "t3", "agent": "main", "sessions": {"s": {"entries": "text"}}},
    {"event": "archived", "txn": "t4", "agent": "main", "sessions": {"s": {"transcripts": ["a"]}}},
    {"event": "commit", "txn": 7, "agent": "main", "sessions": {"s": {"keys": ["k"]}}},
    "a string",
]


def test_corrupt_audit_records_do_not_stop_later_calls(root: Path) -> None:
    stale_agent(root, count=2)
    assert sm.prune_sessions(max_age_minutes=60)["pruned_count"] == 2
    with (root / ".session-manager" / "audit.jsonl").open("a") as log:
        log.write("".join(json.dumps(record) + "\n" for record in CORRUPT_AUDIT))
    assert sm.list_deleted()["total"] == 2
    assert sm.cleanup_orphans()["errors"] == []
    assert sm.restore_session("main-old-1")["restored_keys"] == ["agent:main:cron:main-old-1"]


def test_a_state_dir_that_is_a_file_fails_only_the_calls_that_write(root: Path) -> None:
    stale_agent(root)
    (root / ".session-manager").write_text("not a folder")
    before = snapshot(root)
    for function in ("list_sessions", "get_session_stats", "list_deleted"):
        exit_code, answer, _ = run_cli(SKILL, function, "{}")
        assert exit_code == 0 and "error" not in answer
    exit_code, answer, _ = run_cli(SKILL, "prune_sessions", '{"max_age_minutes": 60, "agent": "main"}')
    assert (exit_code, answer["error_type"]) == (1, "store_write_failed")
    assert snapshot(root) == before


@pytest.mark.parametrize("inside", ["main/sessions", "main/sessions/deeper"])
def test_a_state_dir_inside_a_sessions_folder_is_refused(root: Path, inside: str) -> None:
    stale_agent(root)
    before = snapshot(root)
    exit_code, answer, _ = run_cli(
        SKILL, "list_sessions", "{}", env={"SESSION_MANAGER_STATE_DIR": str(root / inside)}
    )
    assert (exit_code, answer["error_type"]) == (1, "configuration_error")
    assert "outside every <agent>/sessions" in answer["error"]
    assert snapshot(root) == before


@pytest.mark.parametrize(
    "link", ["state-folder-is-a-link-to-a-sessions-folder", "sessions-folder-is-a-link-to-the-state"]
)
def test_a_state_folder_reached_through_a_link_is_refused(root: Path, link: str) -> None:
    (root / "main").mkdir()
    if link == "state-folder-is-a-link-to-a-sessions-folder":
        write_index(root, "main", {})
        (root / "state").symlink_to(root / "main" / "sessions")
    else:
        (root / "state").mkdir()
        (root / "main" / "sessions").symlink_to(root / "state")
        write_index(root, "main", {})
    code, answer, _ = run_cli(
        SKILL, "cleanup_orphans", "{}", env={"SESSION_MANAGER_STATE_DIR": str(root / "state")}
    )
    assert (code, answer["error_type"]) == (1, "configuration_error")
    assert sorted(p.name for p in (root / "state").iterdir()) == ["sessions.json"]
