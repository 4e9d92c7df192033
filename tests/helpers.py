"""What the tests share: agent trees written as the gateway writes them, snapshots, the CLI runner.

Tests import these from here; conftest.py holds only the fixtures.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
NOW_MS = int(time.time() * 1000)
MINUTE_MS = 60_000


def ago(minutes: float) -> int:
    """An updatedAt (epoch ms) that many minutes before the test run started."""
    return NOW_MS - int(minutes * MINUTE_MS)


def gateway_json(store: dict[str, Any]) -> bytes:
    """The bytes the gateway writes: JSON.stringify(store, null, 2), no trailing newline."""
    return json.dumps(store, indent=2, ensure_ascii=False).encode("utf-8")


def write_index(root: Path, agent: str, store: dict[str, Any]) -> Path:
    folder = root / agent / "sessions"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "sessions.json"
    path.write_bytes(gateway_json(store))
    path.chmod(0o600)
    return path


def read_index(root: Path, agent: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((root / agent / "sessions" / "sessions.json").read_text("utf-8"))
    return result


def add_transcript(
    root: Path, agent: str, name: str, content: str = '{"type":"message"}\n', age_minutes: float | None = None
) -> Path:
    path = root / agent / "sessions" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    if age_minutes is not None:
        moment = time.time() - age_minutes * 60
        os.utime(path, (moment, moment))
    return path


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root with its bytes, to prove that nothing changed."""
    return {
        str(path.relative_to(root)): path.read_bytes()
        for path in sorted(root.rglob("*"))
        if path.is_file() and not path.is_symlink()
    }


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def run_cli(
    *args: str, env: dict[str, str] | None = None, stdin: str | None = None, timeout: float = 60
) -> tuple[int, Any, str]:
    """Run the exact command line the agent uses; returns exit code, parsed JSON and stderr."""
    completed = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        input=stdin,
        timeout=timeout,
        cwd=REPO,
    )
    try:
        document = json.loads(completed.stdout)
    except ValueError:
        document = completed.stdout
    return completed.returncode, document, completed.stderr


def sqlite_era_agent(root: Path, agent: str) -> Path:
    """An agent of the SQLite-era gateway under ``root``: its sessions folder and a database file
    (which the skill never opens: its presence makes the agent SQLite-era); the database's path."""
    (root / agent / "sessions").mkdir(parents=True, exist_ok=True)
    (root / agent / "agent").mkdir(exist_ok=True)
    database = root / agent / "agent" / "openclaw-agent.sqlite"
    database.write_bytes(b"SQLite format 3\0")
    return database


def leftovers(root: Path) -> list[str]:
    """Temporary files and locks the skill must never leave behind."""
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.name.endswith((".tmp", ".lock")) or ".stale." in path.name
    )


def interruptible() -> None:
    """For ``preexec_fn``: SIGINT as a terminal sends it. A run started in the background (nohup, a
    CI runner) hands its children SIGINT ignored, and Python then installs no KeyboardInterrupt
    handler, so a test of Ctrl-C would test nothing."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


SKILL = "session_manager"
HERE = Path(__file__).resolve().parent


def fifo(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)


def measured_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 150
) -> tuple[int, Any, float, int]:
    """The skill's command line in a wrapper that reports its peak memory: exit code, answer,
    seconds, and the largest resident size (KiB) of the skill and of what it started."""
    wrapper = (
        "import resource, subprocess, sys, time\n"
        "started = time.monotonic()\n"
        "done = subprocess.run(sys.argv[1:], capture_output=True, text=True)\n"
        "sys.stdout.write(done.stdout)\n"
        "print(time.monotonic() - started, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(done.returncode)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, str(REPO / "run_skill.py"), SKILL, *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
    )
    *answer, figures = completed.stdout.strip().splitlines()
    seconds, peak = figures.split()
    return completed.returncode, json.loads("\n".join(answer)), float(seconds), int(peak)


def one_stale_subagent(root: Path, session_id: str = "sub-1", agent: str = "main") -> None:
    write_index(
        root,
        agent,
        {f"agent:{agent}:subagent:{session_id}": {"sessionId": session_id, "updatedAt": ago(300)}},
    )
    add_transcript(root, agent, f"{session_id}.jsonl", age_minutes=300)


def outbox(root: Path) -> list[dict[str, Any]]:
    """The marks waiting in the outbox, as the skill reads them (confirmations folded in)."""
    import session_manager as sm

    assert os.environ["ARIA_AGENTS_DIR"] == str(root)
    return [mark.as_record() for mark in sm.Outbox(sm.Config.from_environment()).read()]


def paused_call(
    function: str, arguments: str, step: str, seconds: float, tmp_path: Path
) -> subprocess.Popen[str]:
    """The skill in its own process, paused ``seconds`` at ``step`` (tests/skill_harness.py); returns
    once it is paused there, so that the test can act as another process would meanwhile."""
    marker = tmp_path / "paused"
    env = {
        "FAULT_STEP": step,
        "FAULT_ACTION": "pause",
        "FAULT_SLEEP": str(seconds),
        "FAULT_MARKER": str(marker),
    }
    process = subprocess.Popen(
        [sys.executable, str(HERE / "skill_harness.py"), "call", function, arguments],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **env},
    )
    deadline = time.monotonic() + 30
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return process


def run_raw(*args: str | bytes, env: dict[str, str] | None = None, timeout: float = 60) -> tuple[int, bytes]:
    completed = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), *args],
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=timeout,
        cwd=REPO,
    )
    return completed.returncode, completed.stdout


def stale_agent(root: Path, agent: str = "main", count: int = 6) -> list[str]:
    ids = [f"{agent}-old-{n}" for n in range(count)]
    write_index(
        root, agent, {f"agent:{agent}:cron:{sid}": {"sessionId": sid, "updatedAt": ago(300)} for sid in ids}
    )
    for sid in ids:
        add_transcript(root, agent, f"{sid}.jsonl", age_minutes=300)
    return ids


def strict_json(text: str) -> Any:
    """Parse as a strict consumer would: NaN and Infinity are not JSON."""

    def refuse(name: str) -> Any:
        raise ValueError(f"{name} is not JSON")

    return json.loads(text, parse_constant=refuse)


def session_manager_origins(command: list[str], env: dict[str, str]) -> list[str]:
    """Run ``command`` (a Python, then its arguments) under ``python -v`` without writing bytecode;
    the lines that say where session_manager's code came from (its .pyc, or its source)."""
    verbose = [command[0], "-v", *command[1:]]
    completed = subprocess.run(
        verbose, capture_output=True, text=True, env={**env, "PYTHONDONTWRITEBYTECODE": "1"}, timeout=60
    )
    assert completed.returncode == 0, completed.stdout
    return [
        line
        for line in completed.stderr.splitlines()
        if "code object from" in line and "session_manager" in line
    ]
