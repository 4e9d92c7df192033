"""A full disk or a read-only folder during a write: the old index stays whole, the error is clear.

These run on a real tmpfs mounted for the test (root only); elsewhere they are skipped, saying why.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import add_transcript, ago, leftovers, run_cli, snapshot, write_index


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "volume"
    mount_point.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(
            f"cannot mount a tmpfs here ({mounted.stderr.strip() or 'not root'}); "
            "these tests need root to make a real full or read-only volume"
        )
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def build(volume: Path) -> Path:
    agents = volume / "agents"
    write_index(
        agents,
        "main",
        {
            **{
                f"agent:main:subagent:{n}": {
                    "sessionId": f"fresh-{n}",
                    "updatedAt": ago(1),
                    "pad": "p" * 2000,
                }
                for n in range(30)
            },
            **{
                f"agent:main:cron:{n}": {"sessionId": f"old-{n}", "updatedAt": ago(300), "pad": "p" * 2000}
                for n in range(40)
            },
        },
    )
    for n in range(40):
        add_transcript(agents, "main", f"old-{n}.jsonl", age_minutes=300)
    return agents


def fill(volume: Path) -> None:
    descriptor = os.open(volume / "filler", os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            os.write(descriptor, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(descriptor)


@pytest.mark.parametrize(
    ("free_bytes", "message"),
    [
        (0, "cannot write the lock"),  # nothing left: even the lock file cannot be written
        (8192, "index was left as it was"),  # the lock fits, the new index does not
    ],
    ids=["full", "almost-full"],
)
def test_disk_full_keeps_the_old_index(
    small_volume: Path, tmp_path: Path, free_bytes: int, message: str
) -> None:
    agents = build(small_volume)
    state = tmp_path / "state"
    fill(small_volume)
    filler = small_volume / "filler"
    os.truncate(filler, max(0, filler.stat().st_size - free_bytes))
    before = snapshot(agents)
    exit_code, document, stderr = run_cli(
        "session_manager",
        "prune_sessions",
        '{"max_age_minutes": 60}',
        env={"ARIA_AGENTS_DIR": str(agents), "SESSION_MANAGER_STATE_DIR": str(state)},
    )
    # Every agent failed: the whole answer, with the first agent's error, exit 1.
    assert (exit_code, document["error_type"]) == (1, "store_write_failed"), document
    assert document["errors"][0]["error_type"] == "store_write_failed"
    assert "No space left on device" in document["errors"][0]["error"]
    assert message in document["errors"][0]["error"]
    assert document["pruned_count"] == 0 and "Traceback" not in stderr
    assert snapshot(agents) == before
    assert leftovers(agents) == []
    exit_code, document, _ = run_cli(
        "session_manager",
        "delete_session",
        '{"session_id": "old-1"}',
        env={"ARIA_AGENTS_DIR": str(agents), "SESSION_MANAGER_STATE_DIR": str(state)},
    )
    assert (exit_code, document["error_type"]) == (1, "store_write_failed")
    assert snapshot(agents) == before
    os.unlink(small_volume / "filler")
    exit_code, document, _ = run_cli(
        "session_manager",
        "prune_sessions",
        '{"max_age_minutes": 60}',
        env={"ARIA_AGENTS_DIR": str(agents), "SESSION_MANAGER_STATE_DIR": str(state)},
    )
    assert exit_code == 0 and document["pruned_count"] == 40


def test_read_only_volume_fails_clearly_and_changes_nothing(small_volume: Path, tmp_path: Path) -> None:
    agents = build(small_volume)
    subprocess.run(["mount", "-o", "remount,ro", str(small_volume)], check=True)
    before = snapshot(agents)
    for state in (tmp_path / "state", None):
        env = {"ARIA_AGENTS_DIR": str(agents)}
        if state is not None:
            env["SESSION_MANAGER_STATE_DIR"] = str(state)
        exit_code, document, stderr = run_cli(
            "session_manager", "delete_session", '{"session_id": "old-1"}', env=env
        )
        assert (exit_code, document["error_type"]) == (1, "store_write_failed"), document
        assert "Read-only file system" in document["error"] and "Traceback" not in stderr
        assert snapshot(agents) == before
