"""Fixtures: agent trees in tmp_path, the skill's environment, a CLI runner, a history service."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from history_service import HistoryService
from hypothesis import settings

import session_manager

# Property tests assert behaviour, not speed: hypothesis's default 200 ms deadline per example
# would fail them on a loaded 2-core machine for being slow, not wrong.
settings.register_profile("project", deadline=None)
settings.load_profile("project")

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


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty agents root, with the skill's environment pointing at it and no history service."""
    agents = tmp_path / "agents"
    agents.mkdir()
    for name in ("ARIA_API_KEY", "ARIA_SESSION_ID", "SESSION_STALE_MINUTES", "SESSION_MANAGER_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARIA_AGENTS_DIR", str(agents))
    monkeypatch.setenv("ARIA_API_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("SESSION_HISTORY_BUDGET_SECONDS", "3")
    return agents


@pytest.fixture
def tree(root: Path) -> Path:
    """The realistic two-agent tree of tests/trees.py in the agents root."""
    from trees import build_tree  # trees imports this module's helpers

    build_tree(root)
    return root


@pytest.fixture(scope="session")
def history_server() -> Iterator[HistoryService]:
    service = HistoryService().start()
    yield service
    service.stop()


@pytest.fixture
def history(history_server: HistoryService, monkeypatch: pytest.MonkeyPatch, root: Path) -> HistoryService:
    """A running history service, empty, that the skill's environment points at."""
    history_server.reset()
    monkeypatch.setenv("ARIA_API_URL", history_server.url)
    return history_server


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


def leftovers(root: Path) -> list[str]:
    """Temporary files and locks the skill must never leave behind."""
    return sorted(
        str(path.relative_to(root))
        for path in root.rglob("*")
        if path.name.endswith((".tmp", ".lock")) or ".stale." in path.name
    )


__all__ = ["session_manager"]
