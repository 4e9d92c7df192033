"""Beside a live gateway: a gateway-like writer (Node, docs/FORMATS.md §3) and several skill
processes pruning and deleting at once. With the lock nothing is lost; without it, writes are."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import add_transcript, ago, leftovers, write_index

HERE = Path(__file__).resolve().parent
NODE = shutil.which("node")
STALE = 240
WRITER_SECONDS = 4.0

pytestmark = pytest.mark.skipif(NODE is None, reason="Node.js is needed to run the gateway-like writer")


def build_busy_agent(root: Path) -> None:
    store: dict[str, Any] = {
        "agent:main:main": {"sessionId": "main-live", "updatedAt": ago(1), "totalTokens": 0}
    }
    for n in range(STALE):
        key = f"agent:main:cron:job{n}" + (f":run:r{n}" if n % 2 else "")
        store[key] = {
            "sessionId": f"stale-{n}",
            "updatedAt": ago(300),
            "skillsSnapshot": {"blob": "x" * 4000},
        }
    write_index(root, "main", store)
    for n in range(STALE):
        add_transcript(root, "main", f"stale-{n}.jsonl", f"transcript {n}\n", age_minutes=300)


def run_round(root: Path, locked: bool) -> dict[str, Any]:
    """Writer plus three skill processes; returns what the writer committed and the skill deleted."""
    folder = root / "main" / "sessions"
    log = root.parent / "writer.log"
    log.write_text("")
    env = {**os.environ, "FAULT_NO_LOCK": "0" if locked else "1"}
    writer = subprocess.Popen(
        [NODE or "node", str(HERE / "gateway_writer.js"), str(folder), str(WRITER_SECONDS), str(log), "25"]
    )
    time.sleep(0.3)
    even = [f"stale-{n}" for n in range(0, STALE, 2)]
    batches = [
        [["prune_sessions", {"max_age_minutes": 60, "session_type": "cron_run", "detail": "full"}]],
        [["delete_session", {"session_id": sid}] for sid in even[::2]],
        [["delete_session", {"session_id": sid}] for sid in even[1::2]],
    ]
    skills = [
        subprocess.Popen(
            [sys.executable, str(HERE / "skill_harness.py"), "batch", json.dumps(batch)],
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        for batch in batches
    ]
    outputs = [skill.communicate(timeout=120)[0] for skill in skills]
    assert writer.wait(timeout=60) == 0
    lines = log.read_text().split()
    deleted: dict[str, list[str]] = {}
    errors: list[dict[str, Any]] = []
    for output in outputs:
        for line in output.splitlines():
            result = json.loads(line)["result"]
            if "error" in result:
                errors.append(result)
                continue
            errors += result.get("errors", [])
            if result.get("removed_keys"):
                deleted[result["deleted"]] = result["removed_keys"]
            for sid in result.get("deleted_ids", []):
                deleted[sid] = []
    return {
        "committed": [int(x) for x in lines if x.isdigit()],
        "problems": [x for x in lines if not x.isdigit()],
        "deleted": deleted,
        "errors": errors,
        "index": json.loads((folder / "sessions.json").read_text()),
    }


def test_with_the_lock_no_gateway_write_is_lost(root: Path) -> None:
    build_busy_agent(root)
    outcome = run_round(root, locked=True)
    committed, index = outcome["committed"], outcome["index"]
    assert outcome["problems"] == [] and outcome["errors"] == []
    # What matters is that no write is lost; the rate depends on the machine's load, so the only
    # bound is that the writer really ran beside the skill (it aims at 25 writes a second).
    assert len(committed) >= 10, f"writer managed only {len(committed)} writes"
    missing = [seq for seq in committed if f"agent:main:cron:writer-{seq}" not in index]
    assert missing == []
    assert index["agent:main:main"]["totalTokens"] == max(committed)
    assert set(outcome["deleted"]) == {f"stale-{n}" for n in range(STALE)}
    assert not any(entry["sessionId"].startswith("stale-") for entry in index.values())
    folder = root / "main" / "sessions"
    for n in range(STALE):
        assert not (folder / f"stale-{n}.jsonl").exists()
        [archive] = folder.glob(f"stale-{n}.jsonl.deleted.*")
        assert archive.read_text() == f"transcript {n}\n"
    assert leftovers(root) == []


def test_without_the_lock_gateway_writes_are_lost(root: Path) -> None:
    """The same round with the skill's lock switched off: proof that the test above can fail."""
    lost: list[int] = []
    for _attempt in range(3):
        shutil.rmtree(root)
        root.mkdir()
        build_busy_agent(root)
        outcome = run_round(root, locked=False)
        lost = [
            seq for seq in outcome["committed"] if f"agent:main:cron:writer-{seq}" not in outcome["index"]
        ]
        if lost:
            break
    assert lost, "without the lock no write was lost in three rounds"
