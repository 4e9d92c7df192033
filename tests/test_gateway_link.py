"""The skill's side of the gateway connection (issue 21), with a stand-in for the helper: a script
as OPENCLAW_CLI that speaks the helper's protocol when the skill loads it (NODE_OPTIONS holds the
helper), and can be slow, refuse a changed session or die on cue. The real gateway is in
tests/test_gateway_connection.py; these cases need a gateway that misbehaves on cue.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import ago, write_index
from history_service import HistoryService

import session_manager as sm

STAND_IN = """#!{python}
import json, os, sys, time
if "--import=data:text/javascript" not in os.environ.get("NODE_OPTIONS", ""):
    print(json.dumps({{"ok": False, "error": {{"message": "only the helper is played here"}}}}))
    sys.exit(1)
with open(os.environ["HELPER_PIDS"], "a") as pids:
    pids.write(f"{{os.getpid()}}\\n")
plan = json.loads(os.environ["HELPER_PLAN"])
print(json.dumps({{"ready": True}}), flush=True)
for number, line in enumerate(sys.stdin):
    request = json.loads(line)
    if request["op"] == "list":
        for agent in request["agents"]:
            rows, path = plan["rows"][agent], plan["paths"][agent]
            print(json.dumps({{"agent": agent, "path": path, "sessions": rows}}), flush=True)
        continue
    with open(os.environ["HELPER_LOG"], "a") as log:
        log.write(json.dumps(request) + "\\n")
    if request["key"] == plan.get("die_at"):
        os._exit(1)
    time.sleep(plan.get("seconds_per_key", 0))
    if request["key"] in plan.get("changed", []):
        answer = {{"key": request["key"], "status": "changed", "error": "Session changed. Retry."}}
    elif request["key"] in plan.get("gone", []):
        answer = {{"key": request["key"], "status": "not_found", "error": "Session changed. Retry."}}
    else:
        answer = {{"key": request["key"], "status": "deleted", "archived": []}}
    print(json.dumps(answer), flush=True)
"""


@pytest.fixture
def ops(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, history: HistoryService
) -> dict[str, Any]:
    """Agent ops in the SQLite era: its main session and ten stale sub-agents (s9 the stalest),
    one with a run in progress; the stand-in helper as its gateway, a history row per session."""
    (root / "ops/sessions").mkdir(parents=True)
    (root / "ops/agent").mkdir()
    database = root / "ops/agent/openclaw-agent.sqlite"
    database.write_bytes(b"SQLite format 3\0")
    write_index(root, "main", {})
    rows = [{"key": "agent:ops:main", "sessionId": "ops-main", "updatedAt": ago(1), "agentId": "ops"}]
    rows += [
        {
            "key": f"agent:ops:subagent:s{n}",
            "sessionId": f"ops-s{n}",
            "updatedAt": ago(100 + n),
            "agentId": "ops",
        }
        for n in range(10)
    ]
    rows.append(
        {
            "key": "agent:ops:subagent:busy",
            "sessionId": "ops-busy",
            "updatedAt": ago(500),
            "hasActiveRun": True,
        }
    )
    for row in rows:
        history.add_row(row["sessionId"], agent="ops")
    cli = tmp_path / "openclaw"
    cli.write_text(STAND_IN.format(python=sys.executable))
    cli.chmod(0o755)
    plan = {"rows": {"ops": rows}, "paths": {"ops": str(database)}}
    monkeypatch.setenv("OPENCLAW_CLI", str(cli))
    monkeypatch.setenv("HELPER_PIDS", str(tmp_path / "pids"))
    monkeypatch.setenv("HELPER_LOG", str(tmp_path / "requests.jsonl"))
    monkeypatch.setenv("HELPER_PLAN", json.dumps(plan))
    return {"rows": rows, "plan": plan, "tmp": tmp_path, "history": history, "monkeypatch": monkeypatch}


def requests_sent(ops: dict[str, Any]) -> list[dict[str, Any]]:
    log = ops["tmp"] / "requests.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def plan(ops: dict[str, Any], **changes: Any) -> None:
    ops["monkeypatch"].setenv("HELPER_PLAN", json.dumps({**ops["plan"], **changes}))


def helpers_alive(ops: dict[str, Any]) -> list[int]:
    pids = [int(line) for line in (ops["tmp"] / "pids").read_text().split()]
    return [pid for pid in pids if sm._pid_alive(pid) and not _zombie(pid)]


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    except OSError:
        return True


STALEST_FIRST = [f"agent:ops:subagent:s{n}" for n in range(9, -1, -1)]


def test_every_delete_names_the_session_as_listed_stalest_first_and_the_helper_ends_with_the_call(
    ops: dict[str, Any],
) -> None:
    answer = sm.prune_sessions(agent="ops", max_age_minutes=60)

    sent = requests_sent(ops)
    listed = {row["key"]: row for row in ops["rows"]}
    assert [request["key"] for request in sent] == STALEST_FIRST
    assert all(
        (r["agentId"], r["expectedSessionId"], r["expectedSessionUpdatedAt"])
        == ("ops", listed[r["key"]]["sessionId"], listed[r["key"]]["updatedAt"])
        for r in sent
    )
    assert answer["pruned_count"] == 10 and answer["gateway_path"] == "one gateway connection"
    assert [(row["key"], row["reason"]) for row in answer["protected"]] == [
        ("agent:ops:subagent:busy", "active_run")
    ]
    assert helpers_alive(ops) == []


@pytest.mark.parametrize(
    ("since_the_listing", "reason"),
    [("changed", "changed since it was listed: kept"), ("gone", "already gone")],
)
def test_a_session_changed_or_gone_since_the_listing_is_skipped_and_its_row_stays_active(
    ops: dict[str, Any], since_the_listing: str, reason: str
) -> None:
    plan(ops, **{since_the_listing: ["agent:ops:subagent:s4"]})
    answer = sm.prune_sessions(agent="ops", max_age_minutes=60)
    assert answer["skipped"] == [{"id": "ops-s4", "agentId": "ops", "reason": reason}]
    assert answer["pruned_count"] == 9 and "ops-s4" not in answer["deleted_ids"]
    assert ops["history"].row_of("ops-s4")["status"] == "active"
    assert ops["history"].row_of("ops-s5")["status"] == "ended"
    assert sm.sync_pending()["still_pending"] == []  # no mark waits for it either


# A budget of 0 is refused (test_cli's bad-input table); 0.001 is spent before most deletes start.
@pytest.mark.parametrize(("budget", "seconds_per_key"), [(0.5, 0.3), (1.0, 0.3), (0.001, 0.0)])
def test_a_prune_past_its_budget_starts_no_more_deletes_and_counts_the_rest(
    ops: dict[str, Any], budget: float, seconds_per_key: float
) -> None:
    ops["monkeypatch"].setenv("OPENCLAW_DELETE_BUDGET_SECONDS", str(budget))
    plan(ops, seconds_per_key=seconds_per_key)
    answer = sm.prune_sessions(agent="ops", max_age_minutes=60)

    sent = [request["key"] for request in requests_sent(ops)]
    assert sent == STALEST_FIRST[: len(sent)]  # the stalest, in order
    assert answer["pruned_count"] == len(sent) and answer["remaining"] == 10 - len(sent)
    assert set(answer["deleted_ids"]) == {key.replace("agent:ops:subagent:", "ops-") for key in sent}
    assert answer["skipped"] == [] and answer["errors"] == []
    second = sm.prune_sessions(agent="ops", max_age_minutes=60)  # the stand-in still lists them all
    assert second["pruned_count"] + second.get("remaining", 0) == 10


def test_a_helper_that_dies_mid_prune_leaves_the_key_in_flight_uncertain_and_starts_no_other(
    ops: dict[str, Any],
) -> None:
    plan(ops, die_at=STALEST_FIRST[3])
    answer = sm.prune_sessions(agent="ops", max_age_minutes=60)

    assert [request["key"] for request in requests_sent(ops)] == STALEST_FIRST[:4]
    assert set(answer["deleted_ids"]) == {"ops-s9", "ops-s8", "ops-s7"} and answer["remaining"] == 6
    (skipped,) = answer["skipped"]
    assert skipped["id"] == "ops-s6" and skipped["reason"].startswith("no answer from the gateway")
    assert helpers_alive(ops) == []


def test_a_cli_that_does_not_load_the_helper_is_used_as_the_cli(ops: dict[str, Any], tmp_path: Path) -> None:
    """A CLI that is no Node program (or resets NODE_OPTIONS): every step goes through it."""
    plain = tmp_path / "plain-openclaw"
    plain.write_text(f'#!/bin/sh\nunset NODE_OPTIONS\nexec {sys.executable} {tmp_path / "openclaw"} "$@"\n')
    plain.chmod(0o755)
    ops["monkeypatch"].setenv("OPENCLAW_CLI", str(plain))
    answer = sm.list_sessions()
    assert "did not load the helper" in answer["gateway_path"]
    assert [e["agent"] for e in answer["errors"]] == ["ops"]  # the stand-in plays no CLI: ops unreadable
    assert requests_sent(ops) == []


def test_a_long_answer_is_read_in_time_that_grows_with_its_length() -> None:
    """A listing of many sessions is one long line: reading it must not cost its length squared."""
    size = 48 << 20
    writer = f"import sys; sys.stdout.buffer.write(b'{{\"pad\": \"' + b'x' * {size} + b'\"}}\\n')"
    process = subprocess.Popen([sys.executable, "-c", writer], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    link = sm.GatewayLink(process)
    started = time.monotonic()
    answer = link.answer(timeout=120)
    seconds = time.monotonic() - started
    link.close()
    assert len(answer["pad"]) == size
    assert seconds < 10  # 0.65 s here; 16.5 s before (the buffer was copied and searched per read)
