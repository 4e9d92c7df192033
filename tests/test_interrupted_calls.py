"""A call stopped part-way (a signal, SIGKILL at a step, a bug in a later agent, an audit log that
cannot grow): what it deleted stays whole, restorable, and every history mark survives (issues 12
and 18)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    add_transcript,
    interruptible,
    one_stale_subagent,
    outbox,
    read_index,
    snapshot,
    stale_agent,
)
from history_service import HistoryService

import session_manager as sm

HERE = Path(__file__).resolve().parent


def harness(step: str, action: str, marker: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HERE / "skill_harness.py"), "call", "prune_sessions", '{"max_age_minutes": 60}'],
        stdout=subprocess.PIPE,
        text=True,
        env={
            **os.environ,
            "FAULT_STEP": step,
            "FAULT_ACTION": action,
            "FAULT_MARKER": str(marker),
            **(env or {}),
        },
        preexec_fn=interruptible,
    )


def wait_for(path: Path, process: subprocess.Popen[str], seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert process.poll() is None, "the call ended before reaching the step"
        assert time.monotonic() < deadline, "the call never reached the step"
        time.sleep(0.02)


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_after_the_commit_leaves_every_mark_in_the_outbox(
    root: Path, tmp_path: Path, signal_number: int
) -> None:
    ids = stale_agent(root)
    marker = tmp_path / "reached"
    process = harness("before_history", "pause", marker)
    wait_for(marker, process)
    process.send_signal(signal_number)
    output, _ = process.communicate(timeout=30)
    answer = json.loads(output)
    assert answer["error_type"] == "interrupted" and "sync_pending" in answer["error"]
    assert read_index(root, "main") == {}
    queued = outbox(root)
    assert sorted(m["session_id"] for m in queued) == sorted(ids) and all(m["confirmed"] for m in queued)


def age_outbox(root: Path, minutes: float) -> None:
    """Make the queued marks look ``minutes`` old, as if the call that queued them died that long ago."""
    path = root / ".session-manager" / "history-outbox.jsonl"
    moment = (datetime.now(timezone.utc) - timedelta(minutes=minutes)).isoformat()
    path.write_text("".join(json.dumps({**m, "queued_at": moment}) + "\n" for m in outbox(root)))


# (step at which the call is killed, whether its deletions reached the index)
KILLS = [("after_replace", True), ("before_replace", False), ("after_commit", False)]


@pytest.mark.parametrize(("step", "deleted"), KILLS)
def test_a_killed_prune_leaves_marks_that_the_index_settles(
    root: Path, tmp_path: Path, history: HistoryService, step: str, deleted: bool
) -> None:
    ids = stale_agent(root)
    rows = {sid: history.add_row(sid) for sid in ids}
    process = harness(step, "kill", tmp_path / "unused")
    process.communicate(timeout=30)
    assert process.returncode == -signal.SIGKILL
    assert (read_index(root, "main") == {}) is deleted
    assert sorted(m["session_id"] for m in outbox(root)) == sorted(ids)
    assert not any(m["confirmed"] for m in outbox(root))
    # Within the grace the marks belong to a call that may still be running: left alone.
    assert sm.sync_pending()["delivered"] == [] and len(outbox(root)) == len(ids)
    age_outbox(root, 10)
    synced = sm.sync_pending()
    assert synced["still_pending"] == [] and outbox(root) == []
    outcomes = {row["session_id"]: row["outcome"] for row in synced["delivered"]}
    if deleted:
        assert outcomes == dict.fromkeys(ids, "marked")
        assert {history.row_of(sid)["status"] for sid in ids} == {"ended"}
    else:
        assert set(outcomes.values()) == {"dropped: its deletion never happened"}
        assert history.patches == [] and rows


def test_a_later_agent_that_breaks_the_call_loses_no_earlier_mark(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = stale_agent(root, "alpha")
    stale_agent(root, "zeta")
    original = sm.AgentStore.read

    def breaks_on_zeta(store: sm.AgentStore, for_change: bool = False) -> sm.AgentStore:
        if store.paths.agent == "zeta":
            raise RuntimeError("a bug met in zeta's store")
        return original(store, for_change)

    monkeypatch.setattr(sm.AgentStore, "read", breaks_on_zeta)
    with pytest.raises(RuntimeError):
        sm.prune_sessions(max_age_minutes=60)
    assert read_index(root, "alpha") == {}
    assert sorted(m["session_id"] for m in outbox(root)) == sorted(first)
    assert all(m["confirmed"] for m in outbox(root))


def harness_call(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(HERE / "skill_harness.py"), "call", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )


@pytest.mark.parametrize("stop", ["after_archive", "before_archive"])
def test_a_run_killed_after_its_commit_leaves_a_deletion_that_restores_whole(root: Path, stop: str) -> None:
    one_stale_subagent(root)
    add_transcript(root, "main", "sub-1-topic-3.jsonl", "topic\n", age_minutes=300)
    before = snapshot(root / "main")
    harness_call(
        "delete_session", '{"session_id": "sub-1"}', env={"FAULT_STEP": stop, "FAULT_ACTION": "kill"}
    )
    (listed,) = sm.list_deleted()["deleted"]
    assert sorted(listed["transcripts"]) == ["sub-1-topic-3.jsonl", "sub-1.jsonl"]
    sm.cleanup_orphans()  # what the next calls do; the orphans it archives stay the deletion's
    restored = sm.restore_session("sub-1")
    assert restored["missing_archives"] == [] and snapshot(root / "main") == before


def test_an_audit_log_that_cannot_grow_after_the_commit_loses_no_archive(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one_stale_subagent(root)
    original = sm.AuditLog.append

    def full_after_commit(log: sm.AuditLog, records: list[dict[str, Any]], sync: bool = False) -> None:
        if any(record["event"] == "archived" for record in records):
            raise sm.StoreWriteFailed("No space left on device")
        original(log, records, sync)

    monkeypatch.setattr(sm.AuditLog, "append", full_after_commit)
    answer = sm.delete_session("sub-1")
    assert answer["removed_keys"] == ["agent:main:subagent:sub-1"] and "audit log" in answer["errors"][0]
    monkeypatch.setattr(sm.AuditLog, "append", original)
    assert sm.restore_session("sub-1")["restored_transcripts"] == ["sub-1.jsonl"]
    assert (root / "main" / "sessions" / "sub-1.jsonl").exists()


def test_a_restore_killed_in_its_history_step_is_marked_active_by_the_next_call(
    root: Path, history: HistoryService
) -> None:
    one_stale_subagent(root)
    history.add_row("sub-1")
    sm.delete_session("sub-1")
    assert history.row_of("sub-1")["status"] == "ended"
    harness_call(
        "restore_session",
        '{"session_id": "sub-1"}',
        env={"FAULT_STEP": "before_history", "FAULT_ACTION": "kill"},
    )
    assert "agent:main:subagent:sub-1" in read_index(root, "main")
    sm.sync_pending()
    assert history.row_of("sub-1")["status"] == "active"
