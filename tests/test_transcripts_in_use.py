"""A transcript in use is never touched, by any path: leftovers of an unindexed id, orphans,
the running conversation's files, a run that starts writing after the read (issues 12 and 18)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    add_transcript,
    ago,
    paused_call,
    read_index,
    run_cli,
    snapshot,
    write_index,
)

import session_manager as sm

HERE = Path(__file__).resolve().parent


SKILL = "session_manager"


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


def lock_of_this_process(root: Path, agent: str, transcript: str) -> None:
    lock = root / agent / "sessions" / (transcript + ".lock")
    lock.write_text(json.dumps({"pid": os.getpid(), "createdAt": "2020-01-01T00:00:00.000Z"}))


@pytest.mark.parametrize(
    ("case", "call"),
    [
        ("forced-delete-of-a-locked-transcript", ("delete_session", {"session_id": "sub-1", "force": True})),
        ("session-file-of-the-running-conversation", ("delete_session", {"session_id": "sub-1"})),
        ("session-file-of-the-running-conversation", ("prune_sessions", {"max_age_minutes": 60})),
    ],
)
def test_a_transcript_in_use_stays_where_it_is(
    root: Path, monkeypatch: pytest.MonkeyPatch, case: str, call: tuple[str, dict[str, Any]]
) -> None:
    entry: dict[str, Any] = {"sessionId": "sub-1", "updatedAt": ago(300)}
    (root / "main" / "sessions").mkdir(parents=True)
    if case == "forced-delete-of-a-locked-transcript":
        in_use = "sub-1.jsonl"
        lock_of_this_process(root, "main", in_use)
    else:
        in_use = "talk-now.jsonl"
        entry["sessionFile"] = in_use
        monkeypatch.setenv("ARIA_SESSION_ID", "talk-now")
    write_index(root, "main", {"agent:main:subagent:sub-1": entry})
    add_transcript(root, "main", in_use, "in use\n", age_minutes=300)
    function, arguments = call
    code, _, _ = run_cli(SKILL, function, json.dumps(arguments))
    assert code == 0 and read_index(root, "main") == {}
    assert (root / "main" / "sessions" / in_use).read_text() == "in use\n"
    assert not list((root / "main" / "sessions").glob(in_use + ".deleted.*"))


@pytest.mark.parametrize("function", ["delete_session", "prune_sessions"])
def test_a_run_that_starts_writing_after_the_read_keeps_its_transcript(
    root: Path, tmp_path: Path, function: str
) -> None:
    """Another run takes the transcript a stale entry's sessionFile names between the read and the
    archive: the lock is read again just before the rename."""
    write_index(
        root,
        "main",
        {
            "agent:main:subagent:sub-1": {
                "sessionId": "sub-1",
                "updatedAt": ago(300),
                "sessionFile": "run-2.jsonl",
            }
        },
    )
    add_transcript(root, "main", "run-2.jsonl", "in use\n", age_minutes=300)
    arguments = '{"session_id": "sub-1"}' if function == "delete_session" else '{"max_age_minutes": 60}'
    process = paused_call(function, arguments, "after_replace", 2, tmp_path)
    lock_of_this_process(root, "main", "run-2.jsonl")
    process.communicate(timeout=60)
    assert process.returncode == 0 and read_index(root, "main") == {}
    assert (root / "main" / "sessions" / "run-2.jsonl").read_text() == "in use\n"


@pytest.mark.parametrize("use", ["live-lock", "running-conversation", "written-seconds-ago"])
def test_an_orphan_in_use_keeps_its_name_even_beside_its_twin_archive(
    root: Path, monkeypatch: pytest.MonkeyPatch, use: str
) -> None:
    write_index(root, "main", {})
    orphan = add_transcript(
        root,
        "main",
        "o-1.jsonl",
        "still written\n",
        age_minutes=None if use == "written-seconds-ago" else 300,
    )
    os.link(orphan, orphan.parent / "o-1.jsonl.deleted.2020-01-01T00-00-00.000Z")  # a rename cut in half
    if use == "live-lock":
        lock_of_this_process(root, "main", "o-1.jsonl")
    elif use == "running-conversation":
        monkeypatch.setenv("ARIA_SESSION_ID", "o-1")
    code, answer, _ = run_cli(SKILL, "cleanup_orphans", "{}")
    assert code == 0 and orphan.read_text() == "still written\n"
    assert [item["file"] for item in answer["skipped"]] == ["o-1.jsonl"]
