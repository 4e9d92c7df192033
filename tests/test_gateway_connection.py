"""The skill over one connection to the real SQLite-era gateway (OpenClaw 2026.9.6, issue 21):
the stalest first within a time budget, deletes that keep a session changed since it was listed,
cron runs deleted and their rows marked.

One agent of 80 stale sub-agent sessions, three stale and two fresh cron runs, imported once by
``openclaw doctor --fix``, with the real gateway on 127.0.0.1. The two tests run in order on the
same gateway: the first stops at its budget, the second finishes while another client changes a
session. What the gateway holds is read back with ``openclaw sessions --json``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from command_lines import logged_starts
from helpers import REPO, ago
from history_service import HistoryService
from openclaw_gateway import (
    TOKEN,
    OpenClawHome,
    gateway_request,
    imported_home,
    run_gateway,
    skill_environment,
)

import session_manager as sm

pytestmark = pytest.mark.usefixtures("no_secret_on_command_lines")

# Enough that the other client's two requests (a Node start each, 2-8 s) land long before the
# prune reaches s1 and s0 (about half a second a delete): 150 cost 35 s more of a 5-minute suite.
STALE_SUBAGENTS = 80
PRUNE_OPS = json.dumps({"agent": "ops", "max_age_minutes": 60})


def layout() -> dict[str, dict[str, Any]]:
    """Agent ops: its main session, 80 stale sub-agents (s0 the least stale, at 200 minutes),
    three cron runs older than all of them, two fresh runs and a fresh cron job."""
    ages = {"agent:ops:main": ("ops-main", 1), "agent:ops:cron:job": ("ops-job", 5)}
    ages |= {f"agent:ops:subagent:s{n}": (f"ops-s{n}", 200 + n) for n in range(STALE_SUBAGENTS)}
    ages |= {f"agent:ops:cron:job:run:old{n}": (f"ops-old-run{n}", 1000 + n) for n in range(3)}
    ages |= {f"agent:ops:cron:job:run:new{n}": (f"ops-new-run{n}", 2) for n in range(2)}
    return {key: {"sessionId": sid, "updatedAt": ago(minutes)} for key, (sid, minutes) in ages.items()}


def stalest_first(sessions: dict[str, dict[str, Any]]) -> list[str]:
    """The stale keys a 60-minute prune deletes, in the order it deletes them."""
    limit = int(time.time() * 1000) - 60 * 60_000
    stale = [key for key, row in sessions.items() if row["updatedAt"] < limit and key != "agent:ops:main"]
    return sorted(stale, key=lambda key: sessions[key]["updatedAt"])


@pytest.fixture(scope="module")
def gateway(
    openclaw_cache: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OpenClawHome, str]]:
    home = imported_home(openclaw_cache, tmp_path_factory.mktemp("connection"), {"ops": layout()})
    with run_gateway(home) as url:
        yield home, url
    assert TOKEN not in logged_starts(home.cli)


@pytest.fixture
def home(
    gateway: tuple[OpenClawHome, str],
    history_server: HistoryService,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> OpenClawHome:
    """The skill's environment on the running gateway, with an active history row per session."""
    own, url = gateway
    for name, value in skill_environment(own, url, tmp_path / "state").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ARIA_API_URL", history_server.url)
    monkeypatch.setenv("SESSION_HISTORY_BUDGET_SECONDS", "30")
    monkeypatch.delenv("ARIA_SESSION_ID", raising=False)
    history_server.reset()
    for entry in layout().values():
        history_server.add_row(entry["sessionId"], agent="ops")
    return own


def ended_rows(history: HistoryService) -> set[str]:
    return {
        entry["sessionId"]
        for entry in layout().values()
        if history.row_of(entry["sessionId"])["status"] == "ended"
    }


def test_a_prune_past_its_budget_deletes_the_stalest_and_says_how_many_remain(
    home: OpenClawHome, history_server: HistoryService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_DELETE_BUDGET_SECONDS", "5")
    before = home.sessions()
    order = stalest_first(before)

    answer = sm.prune_sessions(agent="ops", max_age_minutes=60)

    deleted = answer["pruned_count"]
    gone = set(before) - set(home.sessions())
    assert 0 < deleted < len(order) and answer["remaining"] == len(order) - deleted
    assert gone == set(order[:deleted])  # the stalest, and nothing the gateway did not confirm
    assert set(answer["deleted_ids"]) == {before[key]["sessionId"] for key in gone}
    assert ended_rows(history_server) == set(answer["deleted_ids"])
    assert answer["errors"] == [] and answer["skipped"] == []
    assert answer["gateway_path"] == "one connection over the gateway protocol"


def test_a_session_changed_while_the_prune_runs_is_kept_and_the_rest_goes(
    home: OpenClawHome, history_server: HistoryService, gateway: tuple[OpenClawHome, str], tmp_path: Path
) -> None:
    """After the listing, another client resumes s0 (the least stale: its turn comes last, a minute
    later) and deletes s1 (as the gateway's run retention removes runs): s0 is kept because it
    changed, s1 is reported gone, never as changed, and neither row is marked by this prune."""
    before = home.sessions()
    order = stalest_first(before)
    changed, taken = order[-1], order[-2]
    assert len(order) > 60 and (changed, taken) == ("agent:ops:subagent:s0", "agent:ops:subagent:s1")
    prune = subprocess.Popen(
        [sys.executable, str(REPO / "run_skill.py"), "session_manager", "prune_sessions", PRUNE_OPS],
        stdout=subprocess.PIPE,
        env={**os.environ, "OPENCLAW_DELETE_BUDGET_SECONDS": "600"},
    )
    audit = tmp_path / "state" / "audit.jsonl"
    deadline = time.monotonic() + 120
    while not (audit.exists() and '"event": "intent"' in audit.read_text()):
        assert prune.poll() is None and time.monotonic() < deadline, "the prune never began deleting"
        time.sleep(0.2)
    patched = gateway_request(home, gateway[1], "sessions.patch", {"key": changed, "label": "resumed"})
    removed = gateway_request(home, gateway[1], "sessions.delete", {"key": taken, "agentId": "ops"})
    output, _ = prune.communicate(timeout=600)
    answer = json.loads(output)

    after = home.sessions()
    assert patched["entry"]["updatedAt"] > before[changed]["updatedAt"] and removed["deleted"] is True
    assert prune.returncode == 0 and answer["errors"] == []
    assert {row["id"]: row["reason"] for row in answer["skipped"]} == {
        "ops-s0": "changed since it was listed: kept",
        "ops-s1": "already gone",
    }
    assert set(before) - set(after) == set(order) - {changed} and changed in after
    assert {key for key in after if ":run:new" in key} == {
        "agent:ops:cron:job:run:new0",
        "agent:ops:cron:job:run:new1",
    }
    assert "remaining" not in answer and answer["pruned_count"] == len(order) - 2
    assert ended_rows(history_server) == {before[key]["sessionId"] for key in order} - {"ops-s0", "ops-s1"}
