"""Crash safety: a prune killed with SIGKILL at any instant loses nothing, and the next calls finish it.

After each kill: (a) every index parses and holds every entry that was not being deleted, exactly;
(b) every transcript exists exactly once, where it was or archived, with its bytes; (c) a prune and
a cleanup_orphans complete the work and leave no lock or temporary file behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import add_transcript, ago, leftovers, run_cli, write_index

HERE = Path(__file__).resolve().parent
PRUNE = ["prune_sessions", '{"max_age_minutes": 60}']


def build(root: Path) -> dict[str, Any]:
    """Two agents with stale and fresh sessions; returns the indexes and transcripts as they were."""
    indexes: dict[str, dict[str, Any]] = {}
    for agent, stale in (("analyst", 12), ("main", 40)):
        store: dict[str, Any] = {f"agent:{agent}:main": {"sessionId": f"{agent}-main", "updatedAt": ago(1)}}
        for n in range(5):
            store[f"agent:{agent}:cron:fresh{n}"] = {"sessionId": f"{agent}-fresh-{n}", "updatedAt": ago(2)}
        for n in range(stale):
            store[f"agent:{agent}:cron:job{n}"] = {
                "sessionId": f"{agent}-stale-{n}",
                "updatedAt": ago(300),
                "label": f"job {n}",
                "n": n,
            }
        write_index(root, agent, store)
        indexes[agent] = store
        for entry in store.values():
            add_transcript(
                root, agent, f"{entry['sessionId']}.jsonl", f"{entry['sessionId']} says hi\n", age_minutes=300
            )
        for n in range(0, stale, 4):
            add_transcript(
                root, agent, f"{agent}-stale-{n}-topic-9.jsonl", f"topic of {n}\n", age_minutes=300
            )
    transcripts = {str(p.relative_to(root)): p.read_bytes() for p in root.glob("*/sessions/*.jsonl")}
    return {"indexes": indexes, "transcripts": transcripts}


def is_stale(entry: dict[str, Any]) -> bool:
    return "-stale-" in entry["sessionId"]


def check_nothing_lost(root: Path, before: dict[str, Any]) -> None:
    """Invariants (a) and (b)."""
    for agent, store in before["indexes"].items():
        index = json.loads((root / agent / "sessions" / "sessions.json").read_text("utf-8"))
        for key, entry in store.items():
            if not is_stale(entry):
                assert index[key] == entry, key
        assert all(index[key] == store[key] for key in index)
    for name, content in before["transcripts"].items():
        copies = [p for p in [root / name, *root.glob(name + ".deleted.*")] if p.exists()]
        assert len(copies) == 1, (name, copies)
        assert copies[0].read_bytes() == content


def check_next_calls_finish(root: Path, before: dict[str, Any]) -> None:
    """Invariant (c): the next prune and orphan cleanup complete the job."""
    assert run_cli("session_manager", *PRUNE)[0] == 0
    exit_code, cleanup, _ = run_cli("session_manager", "cleanup_orphans", "{}")
    assert exit_code == 0, cleanup
    for agent, store in before["indexes"].items():
        index = json.loads((root / agent / "sessions" / "sessions.json").read_text("utf-8"))
        assert index == {key: entry for key, entry in store.items() if not is_stale(entry)}
    for name in before["transcripts"]:
        stale = "-stale-" in name
        assert (root / name).exists() is not stale, name
        assert len(list(root.glob(name + ".deleted.*"))) == (1 if stale else 0), name
    assert leftovers(root) == []


def run_cli_prefix() -> list[str]:
    return [sys.executable, str(HERE / "skill_harness.py"), "call"]


STEPS = [
    ("after_intent", 1),
    ("locked", 1),
    ("after_commit", 1),
    ("before_replace", 1),
    ("after_replace", 1),
    ("before_release", 1),
    ("before_archive", 1),
    ("after_archive", 1),
    ("after_archive", 7),
    ("after_archived_record", 1),
    ("locked", 2),
    ("after_replace", 2),
    ("after_archive", 30),
    ("after_archived_record", 2),
    ("before_history", 1),
]


@pytest.mark.parametrize(("step", "nth"), STEPS, ids=[f"{s}-{n}" for s, n in STEPS])
def test_kill_at_each_step_boundary(root: Path, step: str, nth: int) -> None:
    before = build(root)
    completed = subprocess.run(
        [*run_cli_prefix(), *PRUNE],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "FAULT_STEP": step, "FAULT_NTH": str(nth), "FAULT_ACTION": "kill"},
    )
    assert completed.returncode == -signal.SIGKILL, f"step {step} #{nth} was never reached"
    check_nothing_lost(root, before)
    check_next_calls_finish(root, before)
    exit_code, deleted, _ = run_cli("session_manager", "list_deleted", '{"limit": 1000}')
    assert exit_code == 0
    assert sorted(row["session_id"] for row in deleted["deleted"]) == sorted(
        entry["sessionId"]
        for store in before["indexes"].values()
        for entry in store.values()
        if is_stale(entry)
    )


def test_kill_at_random_times(root: Path) -> None:
    rng = random.Random(20261125)
    timings = []
    for _run in range(3):
        build(root) if not list(root.iterdir()) else None
        started = time.monotonic()
        subprocess.run([*run_cli_prefix(), *PRUNE], capture_output=True, timeout=60)
        timings.append(time.monotonic() - started)
        for path in sorted(root.iterdir()):
            subprocess.run(["rm", "-rf", str(path)], check=True)
    span = max(timings)
    killed_mid_way = 0
    for _run in range(20):
        for path in sorted(root.iterdir()):
            subprocess.run(["rm", "-rf", str(path)], check=True)
        before = build(root)
        process = subprocess.Popen(
            [*run_cli_prefix(), *PRUNE], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(0.0, span))
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
        if any(root.glob("*/sessions/*.deleted.*")) or (root / ".session-manager").exists():
            killed_mid_way += 1
        check_nothing_lost(root, before)
        check_next_calls_finish(root, before)
    assert killed_mid_way >= 5, "the random kills should land inside the prune often enough to matter"
