"""The demo tree shipped in examples/: every function returns the card's keys; a prune is exact."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO, run_cli

CARD_KEYS = {
    "list_sessions": {"session_count", "sessions"},
    "delete_session": {"deleted", "removed_keys", "transcript_archived", "pg_status_updated", "message"},
    "prune_sessions": {
        "total_sessions",
        "pruned_count",
        "kept_count",
        "dry_run",
        "deleted_ids",
        "errors",
        "threshold_minutes",
    },
    "get_session_stats": {
        "total_sessions",
        "stale_sessions",
        "active_sessions",
        "by_agent",
        "stale_threshold_minutes",
    },
    "cleanup_after_delegation": {
        "deleted",
        "removed_keys",
        "transcript_archived",
        "pg_status_updated",
        "message",
    },
}
KEPT_AT_60 = {
    "8f14e45f-ceea-4e1a-9b0e-2f6b5c3d1a01",  # main:main, fresh and protected
    "1c9b7a31-77d2-4c55-a1f0-3e2d9b8c4a02",  # main's telegram chat: the main agent's own conversation
    "0e1f2a3b-4c5d-4e6f-8a7b-8c9d0e1f2a3b",  # main's dashboard chat: likewise
    "4b7c0f2e-5d6a-4e8b-9c1d-2a3b4c5d6e70",  # fresh sub-agent
    "a0000000-aaaa-4aaa-8aaa-000000000001",  # analyst:main
    "a0000000-aaaa-4aaa-8aaa-000000000004",  # fresh
    "b0000000-bbbb-4bbb-8bbb-000000000001",  # aria-talk:main
    "c0000000-cccc-4ccc-8ccc-000000000002",  # fresh cron run
}
ARCHIVE = re.compile(r"^.+\.jsonl\.deleted\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}Z$")


@pytest.fixture
def demo(root: Path) -> Path:
    shutil.rmtree(root)
    shutil.copytree(REPO / "examples" / "agents", root)
    subprocess.run([sys.executable, str(REPO / "examples" / "shift_times.py"), str(root)], check=True)
    return root


def all_session_ids(root: Path) -> set[str]:
    return {
        entry["sessionId"]
        for index in root.glob("*/sessions/sessions.json")
        for entry in json.loads(index.read_text()).values()
    }


def test_every_card_function_returns_the_card_keys(demo: Path) -> None:
    calls = {
        "list_sessions": "{}",
        "get_session_stats": "{}",
        "prune_sessions": '{"dry_run": true}',
        "delete_session": '{"session_id": "b0000000-bbbb-4bbb-8bbb-000000000003"}',
        "cleanup_after_delegation": '{"session_id": "a0000000-aaaa-4aaa-8aaa-000000000004"}',
    }
    for function, argument in calls.items():
        exit_code, document, _ = run_cli("session_manager", function, argument)
        assert exit_code == 0, document
        assert CARD_KEYS[function] <= set(document), function


def test_real_prune_leaves_exactly_the_fresh_and_protected(demo: Path) -> None:
    before = all_session_ids(demo)
    exit_code, result, _ = run_cli("session_manager", "prune_sessions", '{"max_age_minutes": 60}')
    assert exit_code == 0
    assert all_session_ids(demo) == KEPT_AT_60
    assert set(result["deleted_ids"]) == before - KEPT_AT_60
    assert result["pruned_count"] == 8 and result["kept_count"] == 8
    archives = [p.name for p in demo.glob("*/sessions/*.deleted.*") if "2026-09-01" not in p.name]
    assert len(archives) == 9 and all(ARCHIVE.match(name) for name in archives)
    for session_id in before - KEPT_AT_60:
        assert not list(demo.glob(f"*/sessions/{session_id}.jsonl"))
