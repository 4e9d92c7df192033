"""The demo tree shipped in examples/: every function returns the card's keys; a prune is exact."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, interruptible, run_cli

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


def test_the_demo_shows_both_layers_in_a_short_summary(tmp_path: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "examples" / "demo.py"), str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stdout.strip().splitlines()
    assert len(lines) < 30
    assert "history: 8 rows marked ended in the history service (8 marked)" in lines
    assert "  all                       16      8" in lines
    answers = sorted(p.name for p in (tmp_path / "out").glob("*.json"))
    assert answers == [
        "1-get_session_stats.json",
        "2-prune_sessions-dry-run.json",
        "3-prune_sessions.json",
        "4-sync_pending.json",
        "5-get_session_stats.json",
    ]


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_ctrl_c_stops_the_demos_history_service(tmp_path: Path) -> None:
    import signal
    import time

    out = tmp_path / "out"
    demo = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "demo.py"), str(out)],
        stdout=subprocess.PIPE,
        text=True,
        preexec_fn=interruptible,
    )
    deadline = time.monotonic() + 60
    while not (out / "1-get_session_stats.json").exists():
        assert demo.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    services = children_of(demo.pid)
    assert services, "the demo runs its history service as a child process"
    demo.send_signal(signal.SIGINT)
    assert demo.wait(timeout=30) in (0, 130)
    for pid in services:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def card_example(section: str) -> dict[str, object]:
    """The first JSON example under a function's heading in SKILL.md."""
    text = (REPO / "SKILL.md").read_text().split(f"### {section}\n", 1)[1]
    block = text.split("```json\n", 1)[1].split("```", 1)[0]
    example: dict[str, object] = json.loads(block)
    return example


@pytest.mark.parametrize(
    ("function", "arguments", "fields"),
    [
        (
            "get_session_stats",
            {},
            (
                "total_sessions",
                "stale_sessions",
                "active_sessions",
                "by_agent",
                "by_type",
                "protected_sessions",
                "stale_unprotected_sessions",
                "orphaned_transcripts",
            ),
        ),
        (
            "prune_sessions",
            {"max_age_minutes": 60},
            ("total_sessions", "pruned_count", "kept_count", "archived_transcripts"),
        ),
    ],
)
def test_the_cards_example_numbers_are_the_demo_trees(
    demo: Path, function: str, arguments: dict[str, object], fields: tuple[str, ...]
) -> None:
    exit_code, answer, _ = run_cli("session_manager", function, json.dumps(arguments))
    example = card_example(function)
    assert exit_code == 0 and {f: example[f] for f in fields} == {f: answer[f] for f in fields}


# --- make demo on a system Python ----------------------------------------------------------------

REFUSING_PIP = """#!/bin/sh
for word in "$@"; do
  if [ "$word" = pip ]; then echo "error: externally-managed-environment" >&2; exit 1; fi
done
exec "{python}" "$@"
"""
WITHOUT_VENV = """#!/bin/sh
echo "The virtual environment was not created successfully because ensurepip is not available." >&2
exit 1
"""


def make_demo(tmp_path: Path, python_script: str) -> subprocess.CompletedProcess[str]:
    python = tmp_path / "python3"
    python.write_text(python_script.format(python=sys.executable))
    python.chmod(0o755)
    variables = [f"PYTHON={python}", f"VENV={tmp_path / 'venv'}", f"DEMO_OUTPUT={tmp_path / 'out'}"]
    return subprocess.run(
        ["make", "--no-print-directory", "demo", *variables],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_make_demo_runs_on_a_python_that_refuses_pip_installs(tmp_path: Path) -> None:
    completed = make_demo(tmp_path, REFUSING_PIP)
    assert completed.returncode == 0, completed.stderr
    assert (tmp_path / "out" / "3-prune_sessions.json").is_file()


def test_make_demo_without_the_venv_module_says_what_to_install(tmp_path: Path) -> None:
    completed = make_demo(tmp_path, WITHOUT_VENV)
    assert completed.returncode != 0 and "apt-get install python3-venv" in completed.stderr
    assert not (tmp_path / "venv").exists() and not (tmp_path / "out").exists()
