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
