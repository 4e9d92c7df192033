"""What an adversarial pass broke (issue 12), one class of defect per section, each several ways in.

Every case states the world before, the call, and what must hold after; most also assert that
nothing else on disk changed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, add_transcript, ago, interruptible, read_index, run_cli, snapshot, write_index
from history_service import HistoryService

import session_manager as sm

HERE = Path(__file__).resolve().parent
SKILL = "session_manager"


def strict_json(text: str) -> Any:
    """Parse as a strict consumer would: NaN and Infinity are not JSON."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def run_raw(*args: str | bytes, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, bytes]:
    completed = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), *args],
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=REPO,
    )
    return completed.returncode, completed.stdout


def agents_snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the agents' folders (the skill's own state folder aside)."""
    return {name: data for name, data in snapshot(root).items() if not name.startswith(".session-manager")}


def outbox(root: Path) -> list[dict[str, Any]]:
    """The marks waiting in the outbox, as the skill reads them (confirmations folded in)."""
    assert os.environ["ARIA_AGENTS_DIR"] == str(root)
    return [mark.as_record() for mark in sm._read_outbox(sm.Config.from_environment())]


# --- 1. A transcript that any key points to is never touched, and every path protects ------------


def live_topic(root: Path) -> None:
    """The issue's example: a live topic thread whose transcript is named like another session id."""
    write_index(
        root,
        "main",
        {
            "agent:main:telegram:group:-100:topic:42": {
                "sessionId": "tg1",
                "sessionFile": "tg1-topic-42.jsonl",
                "updatedAt": ago(0),
            }
        },
    )
    add_transcript(root, "main", "tg1-topic-42.jsonl", "live topic\n")


def running_leftover(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The running conversation's transcripts with no key (its key was lost)."""
    write_index(root, "main", {})
    add_transcript(root, "main", "run1-topic-3.jsonl", "running topic\n", age_minutes=300)
    monkeypatch.setenv("ARIA_SESSION_ID", "run1")


def locked_leftover(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A transcript with no key that a live run is writing (its lock names this test's pid)."""
    write_index(root, "main", {})
    add_transcript(root, "main", "busy.jsonl", "being written\n", age_minutes=300)
    lock = root / "main" / "sessions" / "busy.jsonl.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "createdAt": "2020-01-01T00:00:00.000Z"}))


def alias_file(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A sub-agent's sessionFile names a file that looks like another id's transcript."""
    write_index(
        root,
        "analyst",
        {
            "agent:analyst:subagent:a": {
                "sessionId": "sub-a",
                "sessionFile": "other.jsonl",
                "updatedAt": ago(2),
            }
        },
    )
    add_transcript(root, "analyst", "other.jsonl", "sub-a writes here\n")


# (setup, session id to delete, file that must stay, reason it stays)
KEPT_LEFTOVERS: list[tuple[Callable[..., None], str, str, str]] = [
    (
        lambda root, mp: live_topic(root),
        "tg1-topic-42",
        "main/sessions/tg1-topic-42.jsonl",
        "referenced_by_a_key",
    ),
    (running_leftover, "run1-topic-3", "main/sessions/run1-topic-3.jsonl", "running_conversation"),
    (locked_leftover, "busy", "main/sessions/busy.jsonl", "transcript_locked"),
    (alias_file, "other", "analyst/sessions/other.jsonl", "referenced_by_a_key"),
]


@pytest.mark.parametrize("dry_run", [True, False])
@pytest.mark.parametrize(("setup", "session_id", "kept", "reason"), KEPT_LEFTOVERS)
def test_a_delete_of_an_unindexed_id_never_archives_a_transcript_in_use(
    root: Path,
    monkeypatch: pytest.MonkeyPatch,
    setup: Callable[..., None],
    session_id: str,
    kept: str,
    reason: str,
    dry_run: bool,
) -> None:
    setup(root, monkeypatch)
    before = snapshot(root)
    result = sm.delete_session(session_id, dry_run=dry_run, force=True)
    assert result["removed_keys"] == [] and result["archived_files"] == {} and result["would_archive"] == []
    assert [(k["file"], k["reason"]) for k in result["kept_transcripts"]] == [(Path(kept).name, reason)]
    after = snapshot(root)
    assert after[kept] == before[kept] and not any(".deleted." in name for name in after)


@pytest.mark.parametrize("call", ["delete_session", "cleanup_after_delegation"])
def test_a_free_leftover_is_archived_and_the_dry_run_says_so_first(root: Path, call: str) -> None:
    write_index(root, "main", {"agent:main:cron:x": {"sessionId": "x", "updatedAt": ago(1)}})
    add_transcript(root, "main", "gone.jsonl", "left behind\n", age_minutes=300)
    add_transcript(root, "main", "gone-topic-1.jsonl", "left behind too\n", age_minutes=300)
    if call == "delete_session":
        preview = sm.delete_session("gone", dry_run=True)
        assert sorted(preview["would_archive"]) == ["gone-topic-1.jsonl", "gone.jsonl"]
    result = sm.FUNCTIONS[call]("gone")
    assert sorted(result["archived_files"]) == ["gone-topic-1.jsonl", "gone.jsonl"]
    assert not (root / "main" / "sessions" / "gone.jsonl").exists()


def test_the_running_conversation_is_refused_even_when_no_index_holds_it(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_index(root, "main", {})
    add_transcript(root, "main", "me.jsonl", "this very conversation\n", age_minutes=300)
    monkeypatch.setenv("ARIA_SESSION_ID", "me")
    before = snapshot(root)
    with pytest.raises(sm.ProtectedSession, match="not even with force"):
        sm.delete_session("me", force=True)
    assert snapshot(root) == before


def test_orphan_cleanup_keeps_the_running_conversations_transcripts(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    running_leftover(root, monkeypatch)
    add_transcript(root, "main", "true-orphan.jsonl", "nobody\n", age_minutes=300)
    result = sm.cleanup_orphans()
    assert [o["file"] for o in result["archived_orphans"]] == ["true-orphan.jsonl"]
    assert {"agent": "main", "file": "run1-topic-3.jsonl", "reason": "running_conversation"} in result[
        "skipped"
    ]
    assert (root / "main" / "sessions" / "run1-topic-3.jsonl").exists()


# --- 2. A mark is queued durably before the commit it follows ------------------------------------


def stale_agent(root: Path, agent: str = "main", count: int = 6) -> list[str]:
    ids = [f"{agent}-old-{n}" for n in range(count)]
    write_index(
        root, agent, {f"agent:{agent}:cron:{sid}": {"sessionId": sid, "updatedAt": ago(300)} for sid in ids}
    )
    for sid in ids:
        add_transcript(root, agent, f"{sid}.jsonl", age_minutes=300)
    return ids


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
    original = sm.read_agent

    def breaks_on_zeta(store: sm.AgentStore, for_change: bool = False) -> sm.AgentStore:
        if store.paths.agent == "zeta":
            raise RuntimeError("a bug met in zeta's store")
        return original(store, for_change)

    monkeypatch.setattr(sm, "read_agent", breaks_on_zeta)
    with pytest.raises(RuntimeError):
        sm.prune_sessions(max_age_minutes=60)
    assert read_index(root, "alpha") == {}
    assert sorted(m["session_id"] for m in outbox(root)) == sorted(first)
    assert all(m["confirmed"] for m in outbox(root))


def test_an_outbox_that_cannot_be_written_stops_the_deletion_before_it_starts(root: Path) -> None:
    stale_agent(root)
    (root / ".session-manager" / "history-outbox.jsonl").mkdir(parents=True)
    before = agents_snapshot(root)
    exit_code, answer, _ = run_cli(SKILL, "prune_sessions", '{"max_age_minutes": 60, "agent": "main"}')
    assert (exit_code, answer["error_type"]) == (1, "store_write_failed")
    assert "nothing was deleted" in answer["error"]
    assert agents_snapshot(root) == before and sm.list_deleted()["total"] == 0


def test_a_missing_dateutil_is_refused_before_any_change(root: Path) -> None:
    stale_agent(root)
    before = snapshot(root)
    script = (
        "import sys; sys.modules['dateutil'] = None; sys.path.insert(0, sys.argv[1]); import run_skill;"
        "sys.exit(run_skill.main(['session_manager', 'prune_sessions', '{}']))"
    )
    completed = subprocess.run([sys.executable, "-c", script, str(REPO)], capture_output=True, text=True)
    answer = json.loads(completed.stdout)
    assert (completed.returncode, answer["error_type"]) == (1, "configuration_error")
    assert "pip install python-dateutil" in answer["error"]
    assert snapshot(root) == before


# --- 3. Every value from the environment is checked once, and never printed ----------------------


def test_an_api_key_with_a_trailing_carriage_return_is_sent_without_it(
    root: Path, history: HistoryService
) -> None:
    ids = stale_agent(root)
    for sid in ids:
        history.add_row(sid)
    history.api_key = "sk-the-key"
    exit_code, answer, _ = run_cli(
        SKILL,
        "prune_sessions",
        '{"max_age_minutes": 60}',
        env={"ARIA_API_KEY": "sk-the-key\r\n", "ARIA_API_URL": history.url},
    )
    assert exit_code == 0 and answer["history"] == {"marked": len(ids)}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ARIA_API_KEY", "sk-secret\x01tail"),
        ("ARIA_API_KEY", "sk-secret\nsecond-line"),
        ("ARIA_API_KEY", "sk-sécret-key"),
        ("ARIA_API_URL", "ftp://user:sk-secret@aria-api"),
        ("ARIA_API_URL", "http://user:sk-secret@aria-api:port-not-a-number"),
        ("ARIA_API_URL", "http://aria-api:8000/api\r?sk-secret"),
    ],
)
def test_an_unusable_environment_value_fails_every_call_up_front_without_showing_it(
    root: Path, variable: str, value: str
) -> None:
    stale_agent(root)
    before = snapshot(root)
    for function in ("prune_sessions", "list_sessions"):
        exit_code, output = run_raw(SKILL, function, "{}", env={variable: value})
        answer = strict_json(output.decode("utf-8"))
        assert (exit_code, answer["error_type"]) == (1, "configuration_error")
        assert variable in answer["error"] and b"sk-secret" not in output
    assert snapshot(root) == before


# --- 4. Nothing but a regular file is opened without checking, and every wait is bounded ---------


def fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


# (where the FIFO is, the call, what its answer must say)
FIFOS: list[tuple[str, str, str, Callable[[dict[str, Any]], bool]]] = [
    (
        "main/sessions/sessions.json",
        "list_sessions",
        "{}",
        lambda a: a["errors"][0]["error_type"] == "store_unreadable",
    ),
    (
        "main/sessions/sessions.json",
        "prune_sessions",
        "{}",
        lambda a: a["errors"][0]["error_type"] == "store_unreadable",
    ),
    (
        "main/sessions/sessions.json.lock",
        "prune_sessions",
        '{"agent": "main"}',
        lambda a: a["error_type"] == "lock_timeout",
    ),
    (
        "main/sessions/main-old-0.jsonl.lock",
        "prune_sessions",
        '{"max_age_minutes": 60}',
        lambda a: a["pruned_count"] == 5,
    ),
    (
        ".session-manager/audit.jsonl",
        "list_deleted",
        "{}",
        lambda a: a["error_type"] == "store_unreadable" and "move it aside" in a["error"],
    ),
    (
        ".session-manager/history-outbox.jsonl",
        "get_session_stats",
        "{}",
        lambda a: a["error_type"] == "store_unreadable" and "move it aside" in a["error"],
    ),
    (
        ".session-manager/audit.jsonl.flock",
        "prune_sessions",
        '{"agent": "main"}',
        lambda a: a["error_type"] == "store_write_failed",
    ),
]


@pytest.mark.parametrize(("where", "function", "arguments", "answer_ok"), FIFOS)
def test_a_fifo_never_blocks_a_call(
    root: Path, where: str, function: str, arguments: str, answer_ok: Callable[[dict[str, Any]], bool]
) -> None:
    stale_agent(root)
    if where.endswith("sessions.json"):
        (root / where).unlink()
    fifo(root / where)
    started = time.monotonic()
    _, output = run_raw(SKILL, function, arguments, env={"SESSION_LOCK_TIMEOUT_SECONDS": "1"}, timeout=30)
    assert time.monotonic() - started < 20
    assert answer_ok(strict_json(output.decode("utf-8"))), output


# --- 5 and 9. Read what the gateway writes; write and print only strict JSON ---------------------


def cut_label_index(age: int) -> str:
    """Two entries whose labels were cut mid-emoji, as Node writes them: a lone surrogate escape."""
    store = {
        "agent:main:cron:cut": {"sessionId": "cut", "updatedAt": ago(age), "label": "ok HALF"},
        "agent:main:cron:keep": {"sessionId": "keep", "updatedAt": ago(1), "label": "HALF"},
    }
    return json.dumps(store, indent=2).replace("HALF", "\\ud83d")


@pytest.mark.parametrize("age", [1, 300])
def test_a_label_cut_mid_emoji_is_listed_and_pruned(root: Path, age: int) -> None:
    path = root / "main" / "sessions" / "sessions.json"
    path.parent.mkdir(parents=True)
    path.write_text(cut_label_index(age))
    exit_code, output = run_raw(SKILL, "list_sessions", "{}")
    rows = strict_json(output.decode("utf-8"))["sessions"]
    assert exit_code == 0 and {row["label"] for row in rows} == {"ok \ufffd", "\ufffd"}
    exit_code, output = run_raw(SKILL, "prune_sessions", '{"max_age_minutes": 60}')
    assert exit_code == 0 and strict_json(output.decode("utf-8"))["pruned_count"] == (1 if age > 60 else 0)
    assert path.read_text().count('"label": "\\ud83d"') == 1  # the kept entry, byte for byte
    if age > 60:
        restored = sm.restore_session("cut")
        assert restored["restored_keys"] == ["agent:main:cron:cut"]
        assert '"label": "ok \\ud83d"' in path.read_text()


# (what the index holds, whether it is JSON the gateway reads)
NOT_JSON = [
    ('{"agent:main:cron:a": {"sessionId": "a", "updatedAt": NaN}}', "NaN"),
    ('{"agent:main:cron:a": {"sessionId": "a", "contextTokens": Infinity}}', "Infinity"),
    ('{"agent:main:cron:a": {"sessionId": "a", "contextTokens": -Infinity}}', "Infinity"),
    ('{"agent:main:cron:a": {"sessionId": "a", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}}", "nested"),
]


@pytest.mark.parametrize(("text", "why"), NOT_JSON, ids=[why for _, why in NOT_JSON])
def test_an_index_that_is_not_json_is_reported_and_left_alone(root: Path, text: str, why: str) -> None:
    stale_agent(root, "analyst")
    path = root / "main" / "sessions" / "sessions.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    before = path.read_bytes()
    for function in ("list_sessions", "prune_sessions"):
        exit_code, output = run_raw(
            SKILL, function, '{"max_age_minutes": 60}' if function == "prune_sessions" else "{}"
        )
        answer = strict_json(output.decode("utf-8"))
        assert exit_code == 0 and [e["agent"] for e in answer["errors"]] == ["main"]
        assert answer["errors"][0]["error_type"] == "store_unreadable"
    assert path.read_bytes() == before
    assert read_index(root, "analyst") == {}


def test_a_number_too_large_for_a_double_prints_as_null(root: Path) -> None:
    path = root / "main" / "sessions" / "sessions.json"
    path.parent.mkdir(parents=True)
    store = {"agent:main:cron:a": {"sessionId": "a", "updatedAt": ago(1), "contextTokens": "BIG"}}
    path.write_text(json.dumps(store).replace('"BIG"', "1e400"))
    exit_code, output = run_raw(SKILL, "list_sessions", "{}")
    assert exit_code == 0 and strict_json(output.decode())["sessions"][0]["contextTokens"] is None


# --- 6. A delete that loses a race to a prune records nothing ------------------------------------


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


# --- 7. Restoring and orphan cleanup take turns --------------------------------------------------


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


# --- 8. A sessions.json that leads out of the root is not followed --------------------------------


def test_an_index_linked_out_of_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps({"agent:main:cron:x": {"sessionId": "x", "updatedAt": ago(300)}}))
    folder = root / "main" / "sessions"
    folder.mkdir(parents=True)
    (folder / "sessions.json").symlink_to(outside)
    stale_agent(root, "analyst", count=1)
    before = outside.read_bytes()
    for function in ("list_sessions", "prune_sessions", "get_session_stats"):
        answer = sm.FUNCTIONS[function]()
        assert [(e["agent"], e["error_type"]) for e in answer["errors"]] == [("main", "store_unreadable")]
    with pytest.raises(sm.StoreUnreadable, match="outside the agents root"):
        sm.delete_session("x", agent="main")
    assert outside.read_bytes() == before and (folder / "sessions.json").is_symlink()


def test_an_index_linked_inside_the_root_still_works(root: Path) -> None:
    stale_agent(root, "shared", count=2)
    folder = root / "main" / "sessions"
    folder.mkdir(parents=True)
    (folder / "sessions.json").symlink_to(root / "shared" / "sessions" / "sessions.json")
    assert sm.list_sessions(agent="main")["session_count"] == 2


# --- 10. The error contract at its edges ---------------------------------------------------------


# (argv after the skill, exit code, error_type)
EDGES: list[tuple[list[str | bytes], int, str]] = [
    (["list_sessions", "[" * 50_000], 2, "invalid_json"),
    (["list_sessions", '{"agent": ' + "[" * 5000 + "]" * 5000 + "}"], 2, "invalid_json"),
    (["list_sessions", '{"agent": "\\ud83d"}'], 2, "invalid_argument"),
    (["delete_session", '{"session_id": "agent:main:x\\udc00"}'], 2, "invalid_argument"),
    (["list_sessions", b'{"agent": "\xff\xfe"}'], 2, "invalid_argument"),
    ([b"list_\xffsessions", "{}"], 2, "invalid_argument"),
]


@pytest.mark.parametrize(("argv", "code", "error_type"), EDGES, ids=range(len(EDGES)))
def test_odd_input_is_the_callers_mistake_in_strict_utf8_json(
    root: Path, argv: list[str | bytes], code: int, error_type: str
) -> None:
    stale_agent(root)
    before = snapshot(root)
    exit_code, output = run_raw(SKILL, *argv)
    answer = strict_json(output.decode("utf-8"))
    assert (exit_code, answer["error_type"]) == (code, error_type)
    assert snapshot(root) == before


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


def test_a_fifo_lock_older_than_30_seconds_is_broken_like_any_stale_lock(root: Path) -> None:
    stale_agent(root)
    lock = root / "main" / "sessions" / "sessions.json.lock"
    fifo(lock)
    os.utime(lock, (time.time() - 60, time.time() - 60))
    exit_code, output = run_raw(SKILL, "prune_sessions", '{"max_age_minutes": 60}', timeout=30)
    assert exit_code == 0 and strict_json(output.decode())["pruned_count"] == 6
    assert not lock.exists()
