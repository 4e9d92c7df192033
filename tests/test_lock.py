"""The gateway's lock on sessions.json: stale locks broken, live ones waited for, always released."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    add_transcript,
    ago,
    fifo,
    leftovers,
    one_stale_subagent,
    paused_call,
    read_index,
    run_cli,
    run_raw,
    stale_agent,
    strict_json,
    write_index,
)

import session_manager as sm

HERE = Path(__file__).resolve().parent


@pytest.fixture
def agent(root: Path) -> Path:
    write_index(
        root,
        "main",
        {
            "agent:main:main": {"sessionId": "live", "updatedAt": ago(1)},
            **{f"agent:main:cron:{n}": {"sessionId": f"old-{n}", "updatedAt": ago(300)} for n in range(50)},
        },
    )
    for n in range(50):
        add_transcript(root, "main", f"old-{n}.jsonl", age_minutes=300)
    return root / "main" / "sessions"


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def write_lock(folder: Path, content: str, age_seconds: float = 0) -> Path:
    lock = folder / "sessions.json.lock"
    lock.write_text(content)
    if age_seconds:
        moment = time.time() - age_seconds
        os.utime(lock, (moment, moment))
    return lock


def iso(seconds_ago: float) -> str:
    return (datetime.now(timezone.utc) - timedelta(seconds=seconds_ago)).isoformat()


@pytest.mark.parametrize(
    "content, age",
    [
        (lambda: json.dumps({"pid": dead_pid(), "createdAt": iso(1)}), 0),  # holder is dead
        (lambda: json.dumps({"pid": os.getpid(), "createdAt": iso(45)}), 0),  # alive but older than 30 s
        (lambda: "", 40),  # unreadable, untouched 40 s
        (lambda: "{garbage", 40),
    ],
    ids=["dead-pid", "older-than-30s", "empty-and-old", "garbage-and-old"],
)
def test_stale_lock_is_broken(agent: Path, content: Any, age: float) -> None:
    write_lock(agent, content(), age)
    started = time.monotonic()
    result = sm.delete_session("old-1")
    assert result["removed_keys"] == ["agent:main:cron:1"]
    assert time.monotonic() - started < 5
    assert leftovers(agent) == []


@pytest.mark.parametrize(
    "content",
    [
        lambda: json.dumps({"pid": os.getpid(), "createdAt": iso(1)}),
        lambda: "",  # a gateway that has just created the file and not yet written into it
    ],
    ids=["live-pid", "empty-and-fresh"],
)
def test_live_lock_is_waited_for_then_a_clear_error(
    agent: Path, monkeypatch: pytest.MonkeyPatch, content: Any
) -> None:
    monkeypatch.setenv("SESSION_LOCK_TIMEOUT_SECONDS", "0.6")
    lock = write_lock(agent, content())
    before = (agent / "sessions.json").read_bytes()
    started = time.monotonic()
    with pytest.raises(
        sm.LockTimeout, match=r"sessions\.json\.lock is held by .*gave up after 0\.6 s"
    ) as caught:
        sm.prune_sessions(max_age_minutes=60, agent="main")
    waited = time.monotonic() - started
    assert 0.55 <= waited < 5
    assert caught.value.path == str(lock)
    assert (agent / "sessions.json").read_bytes() == before and lock.exists()
    assert len(list(agent.glob("*.deleted.*"))) == 0


def test_live_lock_released_by_its_holder_lets_the_call_through(agent: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                "import sys, time; sys.path.insert(0, sys.argv[1]); import session_manager as sm\n"
                "with sm.gateway_lock(sys.argv[2], 5):\n"
                "    print('held', flush=True); time.sleep(0.8)\n"
            ),
            str(HERE.parent),
            str(agent / "sessions.json.lock"),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline() == "held\n"
    started = time.monotonic()
    result = sm.delete_session("old-2")
    assert result["removed_keys"] == ["agent:main:cron:2"]
    assert 0.3 <= time.monotonic() - started < 8
    assert holder.wait(timeout=10) == 0
    assert leftovers(agent) == []


def test_lock_is_released_when_the_change_fails(agent: Path) -> None:
    paths = sm.Config.from_environment().agent_paths("main")

    def change(document: sm.IndexDocument) -> None:
        document.remove("agent:main:cron:3")
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        sm.rewrite_index(paths, sm.Config.from_environment(), change)
    assert "agent:main:cron:3" in read_index(agent.parent.parent, "main")
    assert leftovers(agent) == []


def test_sigterm_while_holding_the_lock_releases_it(agent: Path, tmp_path: Path) -> None:
    marker = tmp_path / "paused"
    before = (agent / "sessions.json").read_bytes()
    process = subprocess.Popen(
        [sys.executable, str(HERE / "skill_harness.py"), "call", "prune_sessions", "{}"],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "FAULT_STEP": "locked", "FAULT_ACTION": "pause", "FAULT_MARKER": str(marker)},
    )
    deadline = time.monotonic() + 30
    while not marker.exists():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.02)
    assert (agent / "sessions.json.lock").exists()
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=30)
    assert process.returncode == 128 + signal.SIGTERM
    assert json.loads(output)["error_type"] == "interrupted"
    assert (agent / "sessions.json").read_bytes() == before
    assert leftovers(agent) == []


def test_one_short_lock_hold_per_agent_per_call(
    root: Path, agent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_index(
        root,
        "other",
        {f"agent:other:cron:{n}": {"sessionId": f"o-{n}", "updatedAt": ago(300)} for n in range(30)},
    )
    holds: list[tuple[str, float]] = []
    original = sm.gateway_lock

    class Timed(AbstractContextManager[Any]):
        def __init__(self, path: str, timeout: float) -> None:
            self.inner, self.path = original(path, timeout), path

        def __enter__(self) -> Any:
            held = self.inner.__enter__()
            self.started = time.perf_counter()
            return held

        def __exit__(self, *exc: Any) -> None:
            holds.append((self.path, time.perf_counter() - self.started))
            self.inner.__exit__(*exc)

    monkeypatch.setattr(sm, "gateway_lock", Timed)
    result = sm.prune_sessions(max_age_minutes=60)
    assert result["pruned_count"] == 80
    assert sorted(Path(path).parent.parent.name for path, _ in holds) == ["main", "other"]
    assert max(seconds for _, seconds in holds) < 0.5


@pytest.mark.parametrize(
    ("pid", "protected"), [(os.getpid(), True), (None, False)], ids=["live-run", "dead-run"]
)
def test_a_transcript_lock_protects_as_long_as_its_run_lives(
    root: Path, pid: int | None, protected: bool
) -> None:
    write_index(root, "worker", {"agent:worker:cron:long": {"sessionId": "long", "updatedAt": ago(300)}})
    add_transcript(root, "worker", "long.jsonl", age_minutes=300)
    lock = root / "worker" / "sessions" / "long.jsonl.lock"
    lock.write_text(json.dumps({"pid": pid or dead_pid(), "createdAt": iso(600)}))  # a run of ten minutes
    result = sm.prune_sessions(max_age_minutes=60)
    assert (
        result["protected"]
        == [
            {
                "id": "long",
                "agentId": "worker",
                "key": "agent:worker:cron:long",
                "reason": "transcript_locked",
            }
        ]
    ) is protected
    assert (result["deleted_ids"] == []) is protected


def test_the_lock_appears_whole_never_empty(agent: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A lock created empty and killed before its write would hold the gateway for 30 s (§3): the
    content is in place before the lock's name exists."""
    seen: list[Any] = []
    link = os.link

    def observe(source: str, target: str) -> None:
        seen.append(json.loads(Path(source).read_text()))
        link(source, target)

    monkeypatch.setattr(os, "link", observe)
    held = sm._try_create_lock(str(agent / "sessions.json.lock"))
    assert held is not None
    held.release()
    assert [sorted(content) for content in seen] == [["createdAt", "pid"]]
    assert seen[0]["pid"] == os.getpid() and leftovers(agent) == []


@pytest.mark.parametrize(
    ("named", "holds", "swept"),
    [
        ("dead", "dead", True),  # killed after writing the temporary, before linking it
        ("dead", "empty", True),  # killed between creating the temporary and writing it
        ("dead", "half", True),  # killed mid-write
        ("dead", "live", False),  # an older release's name (random digits): judged by its pid
        ("live", "empty", False),  # a process taking the lock at this instant, before its write
        ("live", "live", False),  # a process taking the lock at this instant
    ],
)
def test_a_lock_temporary_left_by_a_killed_call_is_swept(
    agent: Path, named: str, holds: str, swept: bool
) -> None:
    pids = {"dead": dead_pid(), "live": os.getpid()}
    left = agent / f".sessions.json.lock.{pids[named]:08x}abcd.tmp"
    whole = json.dumps({"pid": pids.get(holds, 0), "createdAt": iso(1)})
    left.write_text({"empty": "", "half": whole[:9]}.get(holds, whole))
    answer = sm.prune_sessions(max_age_minutes=60)
    assert answer["pruned_count"] == 50 and answer["errors"] == []
    assert left.exists() is not swept


def test_a_lock_temporary_swept_under_its_writer_is_written_again(
    agent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    link, tries = os.link, []

    def swept_first(source: str, target: str) -> None:
        tries.append(source)
        if len(tries) == 1:
            os.unlink(source)  # another call judged it a dead writer's in between
        link(source, target)

    monkeypatch.setattr(os, "link", swept_first)
    with sm.gateway_lock(str(agent / "sessions.json.lock"), 5.0):
        assert json.loads((agent / "sessions.json.lock").read_text())["pid"] == os.getpid()
    assert len(tries) == 2 and leftovers(agent) == []


@pytest.mark.parametrize(
    "code",
    [
        errno.EACCES,
        errno.EIO,
        errno.EMLINK,
        errno.ENOSYS,
        errno.EOPNOTSUPP,
        errno.EPERM,
        errno.EXDEV,
    ],
    ids=errno.errorcode.get,
)
def test_a_file_system_that_refuses_links_gets_its_lock_created_in_place(
    agent: Path, monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    def refuse(source: str, target: str) -> None:
        raise OSError(code, os.strerror(code), source, None, target)

    monkeypatch.setattr(os, "link", refuse)
    held = sm._try_create_lock(str(agent / "sessions.json.lock"))
    assert held is not None
    content = json.loads((agent / "sessions.json.lock").read_text())
    held.release()
    assert content["pid"] == os.getpid() and leftovers(agent) == []


SKILL = "session_manager"


def test_a_fifo_lock_older_than_30_seconds_is_broken_like_any_stale_lock(root: Path) -> None:
    stale_agent(root)
    lock = root / "main" / "sessions" / "sessions.json.lock"
    fifo(lock)
    os.utime(lock, (time.time() - 60, time.time() - 60))
    exit_code, output = run_raw(SKILL, "prune_sessions", '{"max_age_minutes": 60}', timeout=30)
    assert exit_code == 0 and strict_json(output.decode())["pruned_count"] == 6
    assert not lock.exists()


def test_a_lock_taken_over_during_a_stall_leaves_the_gateways_write(root: Path, tmp_path: Path) -> None:
    one_stale_subagent(root)
    process = paused_call("delete_session", '{"session_id": "sub-1"}', "locked", 2, tmp_path)
    # The gateway judges the lock stale, takes it, and writes a new session into the index.
    lock = root / "main" / "sessions" / "sessions.json.lock"
    lock.unlink()
    lock.write_text(json.dumps({"pid": os.getpid(), "createdAt": "2026-01-01T00:00:00.000Z"}))
    gateways = {
        **read_index(root, "main"),
        "agent:main:subagent:new": {"sessionId": "new", "updatedAt": ago(0)},
    }
    write_index(root, "main", gateways)
    lock.unlink()
    output, _ = process.communicate(timeout=60)
    answer = json.loads(output)
    assert (process.returncode, answer["error_type"]) == (1, "lock_timeout") and "taken over" in answer[
        "error"
    ]
    assert read_index(root, "main") == gateways
    assert (root / "main" / "sessions" / "sub-1.jsonl").exists() and sm.list_deleted()["total"] == 0


def test_a_held_lock_is_kept_fresh_so_the_gateway_never_judges_it_stale(root: Path, tmp_path: Path) -> None:
    one_stale_subagent(root)
    process = paused_call("delete_session", '{"session_id": "sub-1"}', "locked", 11, tmp_path)
    lock = root / "main" / "sessions" / "sessions.json.lock"
    first = json.loads(lock.read_text())["createdAt"]
    time.sleep(10.5)
    assert json.loads(lock.read_text())["createdAt"] > first
    process.communicate(timeout=60)
    assert process.returncode == 0 and read_index(root, "main") == {}


@pytest.mark.parametrize("where", ["sessions.json.lock", ".sessions.json.0123456789ab.tmp"])
def test_a_directory_in_place_of_a_lock_or_a_temporary_file(root: Path, where: str) -> None:
    one_stale_subagent(root, "m-1", "main")
    one_stale_subagent(root, "a-1", "analyst")
    (root / "main" / "sessions" / where).mkdir()
    os.utime(root / "main" / "sessions" / where, (time.time() - 60, time.time() - 60))  # "stale"
    code, answer, _ = run_cli(SKILL, "prune_sessions", '{"max_age_minutes": 60}')
    assert code == 0 and "a-1" in answer["deleted_ids"]
    if where.endswith(".lock"):
        assert [(e["agent"], e["error_type"]) for e in answer["errors"]] == [("main", "lock_timeout")]
        assert "is a directory" in answer["errors"][0]["error"]
    else:
        assert answer["deleted_ids"] == ["m-1", "a-1"] or sorted(answer["deleted_ids"]) == ["a-1", "m-1"]
    assert (root / "main" / "sessions" / where).is_dir()
