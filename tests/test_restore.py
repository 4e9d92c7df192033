"""Undo and cleanup: the audit trail, restore_session round trips, list_deleted, cleanup_orphans."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    add_transcript,
    ago,
    leftovers,
    read_index,
    run_cli,
    snapshot,
    stale_agent,
    write_index,
)
from history_service import HistoryService

import session_manager as sm

HERE = Path(__file__).resolve().parent


def transcripts(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.glob("*/sessions/*.jsonl")}


def test_prune_then_restore_each_puts_everything_back(tree: Path) -> None:
    indexes = {agent: read_index(tree, agent) for agent in ("main", "analyst")}
    files = transcripts(tree)
    pruned = sm.prune_sessions(max_age_minutes=60)["deleted_ids"]
    listed = sm.list_deleted()
    assert sorted(row["session_id"] for row in listed["deleted"]) == sorted(pruned)
    assert all(row["reason"] == "prune" for row in listed["deleted"])
    for session_id in pruned:
        result = sm.restore_session(session_id)
        assert result["restored"] == session_id and result["missing_archives"] == []
    for agent, index in indexes.items():
        assert read_index(tree, agent) == index
    assert transcripts(tree) == files
    assert not list(tree.glob("*/sessions/*.deleted.*"))
    assert sm.list_deleted()["deleted"] == []
    assert leftovers(tree) == ["main/sessions/sub-2.jsonl.lock"]


def test_audit_log_lives_outside_every_sessions_folder(tree: Path) -> None:
    sm.delete_session("run-9")
    audit = tree / ".session-manager" / "audit.jsonl"
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["event"] for r in records] == ["intent", "commit", "archived"]
    intent = records[0]
    assert intent["reason"] == "delete" and intent["agent"] == "main"
    text = intent["sessions"]["run-9"]["entries"]["agent:main:cron:digest:run:r9"]
    assert json.loads(text)["sessionFile"] == "run-9.jsonl"  # the entry's exact text in the index
    archived = records[2]["sessions"]["run-9"]["transcripts"]
    assert sorted(archived) == ["run-9-topic-7.jsonl", "run-9.jsonl"]
    assert not [p for p in tree.glob("*/sessions/*") if p.name.startswith("audit")]


def test_delegation_cleanup_is_recorded_with_its_reason(tree: Path) -> None:
    sm.cleanup_after_delegation("sub-1")
    [row] = sm.list_deleted(agent="main")["deleted"]
    assert (row["session_id"], row["reason"], row["keys"]) == (
        "sub-1",
        "delegation_cleanup",
        ["agent:main:subagent:abc"],
    )


def test_restore_by_key_or_txn(tree: Path) -> None:
    sm.delete_session("cron-hb")
    assert sm.restore_session("agent:main:cron:heartbeat:run:r1")["restored_keys"] == [
        "agent:main:cron:heartbeat",
        "agent:main:cron:heartbeat:run:r1",
    ]
    sm.delete_session("cron-hb")
    txn = sm.list_deleted()["deleted"][0]["txn"]
    assert sm.restore_session(txn)["restored"] == "cron-hb"


def test_restore_refuses_when_a_key_exists_again(tree: Path) -> None:
    sm.delete_session("run-9")
    index = read_index(tree, "main")
    index["agent:main:cron:digest:run:r9"] = {"sessionId": "someone-else", "updatedAt": ago(1)}
    write_index(tree, "main", index)
    before = snapshot(tree)
    with pytest.raises(sm.RestoreConflict, match="exists again"):
        sm.restore_session("run-9")
    assert snapshot(tree) == before


def test_restore_refuses_when_a_transcript_exists_again(tree: Path) -> None:
    sm.delete_session("run-9")
    add_transcript(tree, "main", "run-9.jsonl", "a new run wrote this\n")
    before = snapshot(tree)
    with pytest.raises(sm.RestoreConflict, match=r"run-9\.jsonl exists again"):
        sm.restore_session("run-9")
    assert snapshot(tree) == before


def test_restore_marks_the_history_row_active(tree: Path, history: HistoryService) -> None:
    history.add_row("run-9")
    sm.delete_session("run-9")
    assert history.row_of("run-9")["status"] == "ended"
    history.rows[0]["status"] = "ended"
    result = sm.restore_session("run-9")
    assert [body for _, body in history.patches][-1] == {"status": "active"}
    assert "message" in result


def test_restore_after_archives_expired_brings_keys_back(tree: Path) -> None:
    sm.delete_session("cron-hb")
    for archive in tree.glob("main/sessions/cron-hb.jsonl.deleted.*"):
        archive.unlink()
    result = sm.restore_session("cron-hb")
    assert result["restored_transcripts"] == [] and len(result["missing_archives"]) == 1
    assert "agent:main:cron:heartbeat" in read_index(tree, "main")


def test_restore_after_a_crash_between_index_and_archives(tree: Path) -> None:
    before_index, before_files = read_index(tree, "main"), transcripts(tree)
    killed = subprocess.run(
        [sys.executable, str(HERE / "skill_harness.py"), "call", "delete_session", '{"session_id": "run-9"}'],
        env={**os.environ, "FAULT_STEP": "after_replace", "FAULT_ACTION": "kill"},
        capture_output=True,
    )
    assert killed.returncode < 0
    for name in ("run-9.jsonl", "run-9-topic-7.jsonl"):  # the crash left them orphaned but old enough
        os.utime(tree / "main/sessions" / name, (time.time() - 3600, time.time() - 3600))
    cleanup = sm.cleanup_orphans()
    assert sorted(o["file"] for o in cleanup["archived_orphans"]) == ["run-9-topic-7.jsonl", "run-9.jsonl"]
    [row] = sm.list_deleted(agent="main")["deleted"]
    assert row["keys"] == ["agent:main:cron:digest:run:r9"] and len(row["transcripts"]) == 2
    sm.restore_session("run-9")
    assert read_index(tree, "main").keys() == before_index.keys()
    assert transcripts(tree) == before_files


# --- cleanup_orphans ----------------------------------------------------------------------------


def stamp(days_ago: float) -> str:
    return sm._archive_stamp(datetime.now(timezone.utc) - timedelta(days=days_ago))


def test_cleanup_orphans_does_each_thing_and_lists_it(root: Path) -> None:
    write_index(
        root,
        "worker",
        {
            "agent:worker:cron:live": {"sessionId": "live", "updatedAt": ago(1)},
            "agent:worker:cron:no-file-stale": {"sessionId": "gone", "updatedAt": ago(500)},
            "agent:worker:cron:no-file-fresh": {"sessionId": "new", "updatedAt": ago(1)},
        },
    )
    folder = root / "worker" / "sessions"
    add_transcript(root, "worker", "live.jsonl", age_minutes=600)
    add_transcript(root, "worker", "orphan-old.jsonl", "orphan\n", age_minutes=600)
    add_transcript(root, "worker", "orphan-new.jsonl", age_minutes=1)
    add_transcript(root, "worker", "orphan-locked.jsonl", age_minutes=600)
    (folder / "orphan-locked.jsonl.lock").write_text(
        json.dumps({"pid": os.getpid(), "createdAt": datetime.now(timezone.utc).isoformat()})
    )
    old_archive = folder / f"x.jsonl.deleted.{stamp(40)}"
    young_archive = folder / f"y.jsonl.deleted.{stamp(2)}"
    old_reset = folder / f"z.jsonl.reset.{stamp(31)}"
    for archive in (old_archive, young_archive, old_reset):
        archive.write_text("a")
    recent = time.time()
    os.utime(old_archive, (recent, recent))  # age comes from the name, not mtime
    os.utime(young_archive, (recent - 90 * 86400, recent - 90 * 86400))

    before = snapshot(root)
    dry = sm.cleanup_orphans(dry_run=True)
    assert snapshot(root) == before
    result = sm.cleanup_orphans()
    for report in (dry, result):
        assert [o["file"] for o in report["archived_orphans"]] == ["orphan-old.jsonl"]
        assert [(r["id"], r["keys"]) for r in report["removed_keys"]] == [
            ("gone", ["agent:worker:cron:no-file-stale"])
        ]
        assert sorted(a["file"] for a in report["deleted_archives"]) == sorted(
            [old_archive.name, old_reset.name]
        )
        assert {(s["file"], s["reason"]) for s in report["skipped"]} == {
            ("orphan-new.jsonl", "recently_modified"),
            ("orphan-locked.jsonl", "transcript_locked"),
        }
    assert not old_archive.exists() and not old_reset.exists() and young_archive.exists()
    assert set(read_index(root, "worker")) == {"agent:worker:cron:live", "agent:worker:cron:no-file-fresh"}
    [archived] = folder.glob("orphan-old.jsonl.deleted.*")
    assert archived.read_text() == "orphan\n"


def test_cleanup_orphans_expires_old_audit_records(root: Path) -> None:
    write_index(
        root,
        "worker",
        {
            "agent:worker:cron:a": {"sessionId": "a", "updatedAt": ago(500)},
            "agent:worker:cron:b": {"sessionId": "b", "updatedAt": ago(500)},
        },
    )
    sm.delete_session("a")
    audit = root / ".session-manager" / "audit.jsonl"
    aged: list[dict[str, Any]] = []
    for line in audit.read_text().splitlines():
        record = json.loads(line)
        record["time"] = (datetime.now(timezone.utc) - timedelta(days=45)).isoformat()
        aged.append(record)
    audit.write_text("".join(json.dumps(r) + "\n" for r in aged))
    sm.delete_session("b")
    result = sm.cleanup_orphans()
    assert result["audit_records_expired"] == 3
    assert [row["session_id"] for row in sm.list_deleted()["deleted"]] == ["b"]


def test_cleanup_finishes_a_rename_cut_between_link_and_unlink(root: Path) -> None:
    write_index(root, "worker", {"agent:worker:cron:live": {"sessionId": "live", "updatedAt": ago(1)}})
    transcript = add_transcript(root, "worker", "gone.jsonl", "bytes\n", age_minutes=600)
    archive = transcript.with_name(f"gone.jsonl.deleted.{stamp(1)}")
    os.link(transcript, archive)  # what a crash between the two steps of link + unlink leaves
    result = sm.cleanup_orphans()
    assert result["archived_orphans"] == [{"agent": "worker", "file": "gone.jsonl", "archive": archive.name}]
    assert not transcript.exists() and archive.read_text() == "bytes\n"
    assert list(transcript.parent.glob("gone.jsonl*")) == [archive]


def test_archiving_works_without_renameat2(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sm, "_renameat2", False)
    result = sm.delete_session("run-9")
    assert sorted(result["archived_files"]) == ["run-9-topic-7.jsonl", "run-9.jsonl"]
    assert not (tree / "main/sessions/run-9.jsonl").exists()
    assert sm.restore_session("run-9")["restored_transcripts"] == ["run-9.jsonl", "run-9-topic-7.jsonl"]


def test_archive_never_overwrites_an_existing_archive(tree: Path) -> None:
    moment = datetime.now(timezone.utc)
    paths = sm.Config.from_environment().agent_paths("main")
    taken = tree / "main/sessions" / f"run-9.jsonl.deleted.{sm._archive_stamp(moment)}"
    taken.write_text("an older archive\n")
    name = sm.archive_transcript(paths, "run-9.jsonl", moment)
    assert name != taken.name and taken.read_text() == "an older archive\n"
    assert (tree / "main/sessions" / name).read_text() == '{"file": "run-9.jsonl"}\n'


SKILL = "session_manager"


def test_a_delete_racing_a_prune_leaves_the_prunes_record_restorable(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale_agent(root, count=3)
    original = sm.rewrite_index
    racing = {"done": False}

    def prune_gets_there_first(*args: Any, **kwargs: Any) -> Any:
        if not racing["done"]:
            racing["done"] = True
            assert sm.prune_sessions(max_age_minutes=60)["pruned_count"] == 3
        return original(*args, **kwargs)

    monkeypatch.setattr(sm, "rewrite_index", prune_gets_there_first)
    result = sm.delete_session("main-old-1")
    assert result["removed_keys"] == [] and "another call" in result["message"]
    listed = {row["session_id"]: row for row in sm.list_deleted()["deleted"]}
    assert listed["main-old-1"]["reason"] == "prune" and listed["main-old-1"]["keys"]
    monkeypatch.setattr(sm, "rewrite_index", original)
    assert sm.restore_session("main-old-1")["restored_keys"] == ["agent:main:cron:main-old-1"]


def test_orphan_cleanup_waits_for_a_restore_in_progress(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stale_agent(root, count=2)
    assert sm.prune_sessions(max_age_minutes=60)["pruned_count"] == 2
    original = sm._rename_archives_back
    seen: dict[str, Any] = {}

    def cleanup_in_between(paths: sm.AgentPaths, deletion: sm.Deletion) -> Any:
        renamed = original(paths, deletion)
        # Another process's cleanup, while the archives are back and the keys are not yet.
        seen["code"], seen["answer"], _ = run_cli(
            SKILL, "cleanup_orphans", "{}", env={"SESSION_LOCK_TIMEOUT_SECONDS": "0.5"}
        )
        return renamed

    monkeypatch.setattr(sm, "_rename_archives_back", cleanup_in_between)
    restored = sm.restore_session("main-old-0")
    assert restored["restored_transcripts"] == ["main-old-0.jsonl"]
    assert seen["code"] == 0 and seen["answer"]["archived_orphans"] == []
    assert [e["error_type"] for e in seen["answer"]["errors"]] == ["lock_timeout"]
    monkeypatch.setattr(sm, "_rename_archives_back", original)
    assert sm.cleanup_orphans()["archived_orphans"] == []
    assert (root / "main" / "sessions" / "main-old-0.jsonl").exists()
    assert "agent:main:cron:main-old-0" in read_index(root, "main")
