"""The SQLite-era gateway's CLI failing in the ways the real one can (§7), played by a stand-in
script: too slow, refusing with a message that holds the token, printing stacks on stderr.

The real gateway is in tests/test_openclaw_end_to_end.py; these cases need a CLI that misbehaves
on cue, which the real one does not.
"""

from __future__ import annotations

import json
import os
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import hostile
import pytest
from helpers import (
    ago,
    measured_cli,
    run_cli,
    snapshot,
    sqlite_era_agent,
    write_index,
)
from history_service import HistoryService

import session_manager as sm

TOKEN = "s3cret-gateway-token"
STAND_IN = """#!{python}
import json, os, sys, time
arguments = sys.argv[1:]
mode = os.environ["FAKE_OPENCLAW"]
FAKE_STORE = os.environ["FAKE_STORE"]
sys.stderr.write("Traceback (most recent call last): token {token} at /root/.openclaw\\n")
if mode in ("preamble", "noise"):  # a preload in NODE_OPTIONS that prints (dotenv/config does)
    print("[dotenv@17.2.3] injecting env (2) from .env -- tip: {{ quiet: true }}")
if mode == "noise":
    print("no JSON follows")
    sys.exit(0)
if mode == "slow" or (mode == "slow-delete" and arguments[:2] == ["sessions", "delete"]):
    time.sleep(60)
if "FAKE_CALLS" in os.environ:
    with open(os.environ["FAKE_CALLS"], "a") as calls:
        calls.write(json.dumps(arguments) + "\\n")
    with open(os.environ["FAKE_CALLS"] + ".token", "a") as tokens:
        tokens.write(json.dumps(os.environ.get("OPENCLAW_GATEWAY_TOKEN")) + "\\n")
if arguments[:2] == ["gateway", "call"]:  # where the gateway keeps the agent (checked before a delete)
    agent = json.loads(arguments[arguments.index("--params") + 1])["agentId"]
    root = os.environ.get("FAKE_SERVED") or os.path.dirname(os.path.dirname(os.path.dirname(FAKE_STORE)))
    print(json.dumps({{"path": f"{{root}}/{{agent}}/agent/openclaw-agent.sqlite", "sessions": []}}))
    sys.exit(0)
if mode == "deletes" and arguments[:2] == ["sessions", "delete"]:
    keys = [a for a in arguments[2:] if a.startswith("agent:")]
    results = [{{"key": k, "ok": True, "status": "deleted"}} for k in keys]
    print(json.dumps({{"ok": True, "results": results}}))
    sys.exit(0)
if mode == "deletes":  # two agents, listed as --all-agents lists them
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.environ["FAKE_STORE"])))
    stores = [{{"agentId": a, "path": f"{{root}}/{{a}}/agent/openclaw-agent.sqlite"}} for a in ("ops", "qa")]
    rows = [
        {{"key": f"agent:{{a}}:subagent:{{n}}", "sessionId": f"{{a}}-{{n}}", "updatedAt": 1, "agentId": a}}
        for a in ("ops", "qa")
        for n in range(3)
    ]
    print(json.dumps({{"stores": stores, "sessions": rows}}))
    sys.exit(0)
if arguments[:2] == ["sessions", "delete"]:
    error = {{"type": "cli_error", "message": "auth {token} failed\\nstack"}}
    print(json.dumps({{"ok": False, "error": error}}))
    sys.exit(1)
rows = [{{"key": "agent:ops:subagent:a", "sessionId": "ops-a", "updatedAt": 1000000000000, "agentId": "ops"}}]
print(json.dumps({{"path": os.environ["FAKE_STORE"] or None, "sessions": [] if mode == "gone" else rows}}))
"""


@pytest.fixture
def sqlite_agent(
    root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, without_websockets: None
) -> Path:
    """Agent ops in the SQLite era beside a JSON-era agent main, with the stand-in as its CLI: the
    skill has no websockets package, the one case where the CLI deletes (besides a protocol or a
    pairing that only the CLI has)."""
    write_index(root, "main", {"agent:main:cron:x": {"sessionId": "main-x", "updatedAt": ago(500)}})
    store = sqlite_era_agent(root, "ops")
    cli = tmp_path / "openclaw"
    cli.write_text(STAND_IN.format(python=sys.executable, token=TOKEN))
    cli.chmod(0o755)
    monkeypatch.setenv("OPENCLAW_CLI", str(cli))
    monkeypatch.setenv("OPENCLAW_GATEWAY_TOKEN", TOKEN)
    monkeypatch.setenv("FAKE_STORE", str(store))
    monkeypatch.setenv("FAKE_OPENCLAW", "refuses")
    return root


def test_a_cli_that_hangs_is_stopped_and_the_json_era_agents_still_answer(
    sqlite_agent: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAKE_OPENCLAW", "slow")
    monkeypatch.setenv("OPENCLAW_TIMEOUT_SECONDS", "1")
    started = time.monotonic()
    code, answer, stderr = run_cli("session_manager", "list_sessions", "{}")
    assert time.monotonic() - started < 30  # the stand-in sleeps 60 s
    assert code == 0 and answer["agents"] == {"main": {"sessions": 1, "store": "json"}}
    (error,) = answer["errors"]
    assert error["agent"] == "ops" and error["error_type"] == "gateway_unavailable"
    assert "within 1 s" in error["error"] and "OPENCLAW_TIMEOUT_SECONDS" in error["error"]
    assert TOKEN not in json.dumps(answer) + stderr and "Traceback" not in json.dumps(answer) + stderr


def test_a_refused_delete_changes_nothing_and_never_shows_the_token_or_stderr(sqlite_agent: Path) -> None:
    before = snapshot(sqlite_agent)
    code, answer, stderr = run_cli("session_manager", "delete_session", '{"session_id": "ops-a"}')
    assert code == 1 and answer["error_type"] == "gateway_unavailable"
    assert "auth [redacted] failed" in answer["error"] and "openclaw gateway run" in answer["error"]
    assert TOKEN not in json.dumps(answer) + stderr and "Traceback" not in json.dumps(answer) + stderr
    after = snapshot(sqlite_agent)
    assert {k: v for k, v in after.items() if not k.startswith(".session-manager/")} == before
    synced = sm.sync_pending()  # the queued mark was dropped with the abort
    assert synced["delivered"] == synced["still_pending"] == []
    assert sm.list_deleted()["total"] == 0


def test_a_prune_that_the_gateway_refuses_is_that_agents_error(sqlite_agent: Path) -> None:
    result = sm.prune_sessions(max_age_minutes=60)
    assert result["deleted_ids"] == ["main-x"]
    assert [(e["agent"], e["error_type"]) for e in result["errors"]] == [("ops", "gateway_unavailable")]
    assert os.path.exists(sqlite_agent / "ops/agent/openclaw-agent.sqlite")


@pytest.mark.parametrize(
    ("listed_after", "outcome", "row_status"),
    [("gone", "marked", "ended"), ("refuses", "dropped: its deletion never happened", "active")],
)
def test_a_delete_stopped_by_its_timeout_leaves_the_listing_to_decide_its_history_mark(
    sqlite_agent: Path,
    history: HistoryService,
    monkeypatch: pytest.MonkeyPatch,
    listed_after: str,
    outcome: str,
    row_status: str,
) -> None:
    """The CLI was stopped mid-delete: the session may or may not be gone. Its mark waits
    unconfirmed; past the grace, the CLI's listing says whether the deletion happened."""
    history.add_row("ops-a", agent="ops")
    monkeypatch.setenv("FAKE_OPENCLAW", "slow-delete")
    monkeypatch.setenv("OPENCLAW_TIMEOUT_SECONDS", "1")
    with pytest.raises(sm.GatewayUnavailable, match="did not finish within 6 s"):
        sm.delete_session("ops-a")
    assert sm.sync_pending()["delivered"] == []  # within the grace: the call may still be running
    later = sm._utc_now() + timedelta(seconds=sm.UNCONFIRMED_GRACE_SECONDS + 60)
    monkeypatch.setattr(sm, "_utc_now", lambda: later)
    monkeypatch.setenv("FAKE_OPENCLAW", listed_after)
    assert [(row["session_id"], row["outcome"]) for row in sm.sync_pending()["delivered"]] == [
        ("ops-a", outcome)
    ]
    assert history.row_of("ops-a")["status"] == row_status


@pytest.mark.parametrize(
    ("store", "says"),
    [
        ("elsewhere/agents/ops/agent/openclaw-agent.sqlite", "another state folder than ARIA_AGENTS_DIR"),
        (None, "does not know agent 'ops'"),
    ],
)
def test_a_cli_that_reads_another_state_or_lacks_the_agent_is_never_trusted(
    sqlite_agent: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, store: str | None, says: str
) -> None:
    """Its rows would be another gateway's sessions: the agent is an error, and nothing is sent."""
    if store is None:
        monkeypatch.setenv("FAKE_OPENCLAW", "gone")
        monkeypatch.setenv("FAKE_STORE", "")  # no store: the CLI did not read the agent
    else:
        monkeypatch.setenv("FAKE_STORE", str(tmp_path / store))
    listing = sm.list_sessions()
    assert [(e["agent"], e["error_type"]) for e in listing["errors"]] == [("ops", "gateway_unavailable")]
    assert says in listing["errors"][0]["error"]
    with pytest.raises(sm.GatewayUnavailable, match=says):
        sm.delete_session("ops-a", agent="ops")


def test_a_cli_that_cannot_start_is_gateway_unavailable(sqlite_agent: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken-openclaw"
    broken.write_text("#!/nonexistent/interpreter\n")
    broken.chmod(0o755)
    code, answer, _ = run_cli(
        "session_manager",
        "delete_session",
        '{"session_id": "ops-a", "agent": "ops"}',
        env={"OPENCLAW_CLI": str(broken)},
    )
    assert code == 1 and answer["error_type"] == "gateway_unavailable"
    assert "could not be started" in answer["error"] and "OPENCLAW_CLI" in answer["error"]


def test_a_prune_of_several_sqlite_era_agents_lists_once_and_deletes_in_one_call(
    sqlite_agent: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Each CLI call starts Node anew (2-5 s): one listing and one delete serve every agent."""
    sqlite_era_agent(sqlite_agent, "qa")
    monkeypatch.setenv("FAKE_OPENCLAW", "deletes")
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    result = sm.prune_sessions(max_age_minutes=60)
    assert result["errors"] == [] and result["pruned_count"] == 7  # main-x, and three in each
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert len(calls) == 4 and calls[0] == ["sessions", "--all-agents", "--json", "--limit", "all"]
    assert [[*call[:3], json.loads(call[4])["agentId"]] for call in calls[1:3]] == [
        ["gateway", "call", "sessions.list", "ops"],
        ["gateway", "call", "sessions.list", "qa"],
    ]  # the gateway it reaches keeps them under ARIA_AGENTS_DIR: proven before the delete
    keys = [f"agent:{a}:subagent:{n}" for a in ("ops", "qa") for n in range(3)]
    assert calls[3] == ["sessions", "delete", *keys, "--yes", "--json"]  # the token in its environment
    tokens = [json.loads(line) for line in (tmp_path / "calls.jsonl.token").read_text().splitlines()]
    assert tokens[3] == TOKEN
    assert result["gateway_path"].startswith("the openclaw CLI") and "websockets" in result["gateway_path"]
    assert {(d["agentId"], d["store"]) for d in sm.list_deleted()["deleted"]} >= {
        ("ops", "sqlite"),
        ("qa", "sqlite"),
    }


@pytest.mark.parametrize(
    "said", ["connect ECONNREFUSED 127.0.0.1:18789 (ECONNREFUSED).", "gateway closed (1006)", "timeout. "]
)
def test_the_clis_own_full_stop_is_never_doubled(said: str) -> None:
    message = str(sm._unreachable(said))
    assert ".." not in message and f"{said.rstrip('. ')}. Start it" in message


def test_a_cli_whose_gateway_keeps_another_state_folder_deletes_nothing(
    sqlite_agent: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Issue 26 H2: the CLI reads the stores under ARIA_AGENTS_DIR (its state folder is set to the
    one above it), but the gateway it deletes through serves another: no delete is sent."""
    sqlite_era_agent(sqlite_agent, "qa")
    monkeypatch.setenv("FAKE_OPENCLAW", "deletes")
    monkeypatch.setenv("FAKE_CALLS", str(tmp_path / "calls.jsonl"))
    monkeypatch.setenv("FAKE_SERVED", str(tmp_path / "other-state/agents"))
    result = sm.prune_sessions(max_age_minutes=60)
    assert {e["agent"] for e in result["errors"]} == {"ops", "qa"}
    assert all("other-state" in e["error"] and "ARIA_AGENTS_DIR" in e["error"] for e in result["errors"])
    calls = [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]
    assert [call[:2] for call in calls] == [
        ["sessions", "--all-agents"],
        ["gateway", "call"],
        ["gateway", "call"],
    ]
    assert result["deleted_ids"] == ["main-x"]  # of the JSON era: the SQLite-era agents lost nothing


@pytest.mark.parametrize(
    ("mode", "listed", "said"),
    [
        ("preamble", 1, None),  # the answer after what a preload printed is found
        ("noise", None, "no JSON answer (if something prints on its stdout before it"),
    ],
)
def test_a_preload_that_prints_before_the_clis_answer_is_passed_over_or_named(
    sqlite_agent: Path, monkeypatch: pytest.MonkeyPatch, mode: str, listed: int | None, said: str | None
) -> None:
    """Issue 26 L3: the CLI's listing behind a line a Node preload printed on the same stdout."""
    monkeypatch.setenv("FAKE_OPENCLAW", mode)
    answer = sm.list_sessions()
    if listed is not None:
        assert answer["agents"]["ops"]["sessions"] == listed and answer["errors"] == []
    else:
        (error,) = answer["errors"]
        assert error["agent"] == "ops" and said in error["error"]


SKILL = "session_manager"


@pytest.fixture
def detaching_cli(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, without_websockets: None
) -> Path:
    """A SQLite-era agent whose CLI leaves children behind; the skill without websockets, so that
    its deletes go through the CLI too."""
    store = sqlite_era_agent(root, "ops")
    monkeypatch.setenv("OPENCLAW_CLI", str(hostile.detaching_cli(tmp_path)))
    monkeypatch.setenv("FAKE_STORE", str(store))
    monkeypatch.setenv("OPENCLAW_TIMEOUT_SECONDS", "2")
    return root


@pytest.mark.parametrize(
    ("mode", "call", "expected"),
    [
        ("answers", ("list_sessions", {}), {"ops": {"sessions": 1, "store": "sqlite"}}),
        ("hangs", ("list_sessions", {}), {"ops": {"sessions": 1, "store": "sqlite"}}),
        ("answers", ("delete_session", {"session_id": "ops-a"}), ["agent:ops:subagent:a"]),
        ("hangs", ("delete_session", {"session_id": "ops-a"}), ["agent:ops:subagent:a"]),
    ],
)
def test_a_cli_that_leaves_a_child_holding_its_output_is_answered_in_time(
    detaching_cli: Path, mode: str, call: tuple[str, dict[str, Any]], expected: Any
) -> None:
    function, arguments = call
    code, answer, seconds, _ = measured_cli(function, json.dumps(arguments), env={"FAKE_OPENCLAW": mode})
    assert code == 0 and seconds < 15  # before: 60 s, the child's life
    assert (answer["agents"] if function == "list_sessions" else answer["removed_keys"]) == expected


def test_a_cli_listing_too_large_to_hold_is_refused_in_bounded_memory(detaching_cli: Path) -> None:
    code, answer, _, peak_kib = measured_cli(
        "list_sessions", "{}", env={"FAKE_OPENCLAW": "huge", "OPENCLAW_TIMEOUT_SECONDS": "60"}
    )
    assert code == 0 and answer["errors"][0]["error_type"] == "gateway_unavailable"
    assert "MiB" in answer["errors"][0]["error"] and peak_kib < 400_000  # before: 915 MB for 300 MB


def test_an_odd_cli_answer_after_a_delete_keeps_the_deletions_answer(detaching_cli: Path) -> None:
    code, answer, _ = run_cli(
        SKILL, "delete_session", '{"session_id": "ops-a"}', env={"FAKE_OPENCLAW": "odd"}
    )
    assert code == 0 and answer["removed_keys"] == ["agent:ops:subagent:a"], answer
