"""The skill against the real SQLite-era gateway: OpenClaw 2026.9.6 from the npm registry (§7).

Once per run, a four-agent JSON-era tree is imported by ``openclaw doctor --fix`` (the upgrade a
user makes); each test works on its own copy, with the real gateway started on 127.0.0.1 with a
token where it needs one, and the real HTTP history stand-in. What the gateway holds is read back
with ``openclaw sessions --json``, never from its database.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from command_lines import logged_starts
from helpers import ago, closed_port, run_cli, snapshot
from history_service import HistoryService
from openclaw_gateway import (
    TOKEN,
    OpenClawHome,
    imported_home,
    run_gateway,
    skill_environment,
    write_json_era_agents,
)

import session_manager as sm

pytestmark = pytest.mark.usefixtures("no_secret_on_command_lines")

SQLITE_AGENTS = ["main", "ops", "analyst", "research"]


def layout_of(agent: str) -> dict[str, dict[str, Any]]:
    """Each agent: its main session, stale and fresh sub-agents, a cron job and a stale and a fresh
    run of it, a stale dashboard chat. Session ids are ``<agent>-<name>``."""
    entries = {
        f"agent:{agent}:main": (f"{agent}-main", 1),
        f"agent:{agent}:subagent:old1": (f"{agent}-old1", 200),
        f"agent:{agent}:subagent:old2": (f"{agent}-old2", 300),
        f"agent:{agent}:subagent:fresh": (f"{agent}-fresh", 5),
        f"agent:{agent}:cron:job": (f"{agent}-job", 400),
        f"agent:{agent}:cron:job:run:r1": (f"{agent}-run", 400),
        f"agent:{agent}:cron:job:run:r2": (f"{agent}-run2", 5),
        f"agent:{agent}:dashboard:old": (f"{agent}-dash", 500),
    }
    return {key: {"sessionId": sid, "updatedAt": ago(minutes)} for key, (sid, minutes) in entries.items()}


def expected_gone(agent: str, connected: bool = True) -> set[str]:
    """What a 60-minute prune removes: stale and unprotected (the main agent keeps its own chats;
    a stale cron run goes where the gateway connection can delete it, never through the CLI)."""
    gone = {f"agent:{agent}:subagent:old1", f"agent:{agent}:subagent:old2", f"agent:{agent}:cron:job"}
    gone |= {f"agent:{agent}:cron:job:run:r1"} if connected else set()
    return gone if agent == "main" else gone | {f"agent:{agent}:dashboard:old"}


@pytest.fixture(scope="session")
def imported(openclaw_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> OpenClawHome:
    layout = {agent: layout_of(agent) for agent in SQLITE_AGENTS}
    return imported_home(openclaw_cache, tmp_path_factory.mktemp("openclaw"), layout)


@pytest.fixture(scope="module")
def running(
    imported: OpenClawHome, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[OpenClawHome, str]]:
    """A copy of the imported state with the real gateway running on it, shared by this module's
    tests (each gateway start costs 10-40 s here). A JSON-era agent ``legacy`` is written after
    the start (the gateway's startup imports every legacy store it finds): one root holds both."""
    home = imported.copy_to(tmp_path_factory.mktemp("running") / "home")
    with run_gateway(home) as url:
        write_json_era_agents(home.agents_root, {"legacy": layout_of("legacy")})
        yield home, url
    starts = logged_starts(home.cli)
    assert "sessions --all-agents" in starts and TOKEN not in starts  # the CLI ran, the token never in argv


@pytest.fixture
def home(running: tuple[OpenClawHome, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> OpenClawHome:
    """The running gateway's state, with the skill's environment (its own state folder) pointing at it."""
    own, url = running
    for name, value in skill_environment(own, url, tmp_path / "state").items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("ARIA_API_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.delenv("ARIA_SESSION_ID", raising=False)
    return own


@pytest.fixture
def rows(history_server: HistoryService, monkeypatch: pytest.MonkeyPatch) -> HistoryService:
    """The history stand-in with an active row for every session of every agent."""
    history_server.reset()
    monkeypatch.setenv("ARIA_API_URL", history_server.url)
    for agent in [*SQLITE_AGENTS, "legacy"]:
        for key, entry in layout_of(agent).items():
            history_server.add_row(entry["sessionId"], agent=agent, session_type=row_type(key))
    return history_server


def test_without_the_connection_the_cli_prunes_and_leaves_cron_runs_to_the_gateway(
    home: OpenClawHome, rows: HistoryService, without_websockets: None
) -> None:
    """Without the websockets package every step goes through the CLI, which lists cron runs but
    whose delete cannot remove them (runs first, on agent research alone)."""
    before = home.sessions()

    listed = sm.list_sessions(agent="research")
    result = sm.prune_sessions(agent="research", max_age_minutes=60)

    gone = expected_gone("research", connected=False)
    assert listed["session_count"] == len(layout_of("research"))
    assert "pip install websockets" in listed["gateway_path"] == result["gateway_path"]
    assert set(before) - set(home.sessions()) == gone and result["errors"] == []
    assert {row["key"]: row["reason"] for row in result["protected"]} == {
        "agent:research:cron:job:run:r1": "gateway_owned"
    }
    assert {sid for sid in layout_ids("research") if rows.row_of(sid)["status"] == "ended"} == {
        before[key]["sessionId"] for key in gone
    }


def test_a_wrong_token_is_said_to_be_wrong_on_every_path_and_changes_nothing(
    home: OpenClawHome, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = home.sessions()
    monkeypatch.setenv("OPENCLAW_GATEWAY_TOKEN", "not-the-gateway-token")
    listed = sm.list_sessions()
    pruned = sm.prune_sessions(max_age_minutes=60, dry_run=True)  # the JSON-era agent stays as it is
    for answer in (listed, pruned):
        assert {e["agent"] for e in answer["errors"]} == set(SQLITE_AGENTS)
        assert all("refused the token" in e["error"] for e in answer["errors"])
        assert "not-the-gateway-token" not in json.dumps(answer)
    with pytest.raises(sm.GatewayUnavailable, match="refused the token"):
        sm.delete_session("agent:analyst:subagent:fresh")
    assert home.sessions() == before


def test_with_no_cli_installed_every_function_works_over_the_protocol(
    home: OpenClawHome, rows: HistoryService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OPENCLAW_CLI points nowhere, the gateway is up: everything but the cron runs, which only the
    CLI lists, and every answer that leaves them out says so (on agent main)."""
    monkeypatch.setenv("OPENCLAW_CLI", str(tmp_path / "no-openclaw-here"))
    before = home.sessions()
    listed = sm.list_sessions(agent="main")
    assert listed["session_count"] == 6 and "cron runs not listed" in listed["not_listed"]
    assert sm.get_session_stats(agent="main")["total_sessions"] == 6
    assert sm.prune_sessions(agent="main", max_age_minutes=60, dry_run=True)["pruned_count"] == 3
    pruned = sm.prune_sessions(agent="main", max_age_minutes=60)
    gone = {key for key in expected_gone("main") if ":run:" not in key}
    assert set(before) - set(home.sessions()) == gone and pruned["errors"] == []
    assert "no-openclaw-here" in pruned["not_listed"]  # the runs: left to the gateway's retention
    deleted = sm.delete_session("agent:main:subagent:fresh")
    assert deleted["removed_keys"] == ["agent:main:subagent:fresh"]
    assert {row["session_id"] for row in sm.list_deleted()["deleted"]} >= {"main-fresh", "main-old1"}
    with pytest.raises(sm.StoreNotLive):
        sm.restore_session("main-fresh")
    assert sm.cleanup_orphans(dry_run=True)["errors"] == []
    reconciled = sm.reconcile_history(agent="main", dry_run=True)
    assert reconciled["present_rows"] >= 1 and "cron runs not listed" in reconciled["not_listed"]
    assert rows.row_of("main-run")["status"] == "active"  # a run the reading left out: unknown
    assert sm.sync_pending()["still_pending"] == []


def test_a_gateway_of_another_state_folder_deletes_nothing_here(
    home: OpenClawHome, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ARIA_AGENTS_DIR on a copy of the state, OPENCLAW_GATEWAY_URL on the original's gateway
    (issue 26 H2): every path refuses, naming the folder the gateway keeps."""
    copy = home.copy_to(tmp_path / "copy")
    monkeypatch.setenv("ARIA_AGENTS_DIR", str(copy.agents_root))
    before, copied = home.sessions(), copy.sessions()
    with pytest.raises(sm.GatewayUnavailable) as refused:
        sm.prune_sessions(agent="ops", max_age_minutes=60)
    assert str(home.agents_root / "ops") in str(refused.value) and "ARIA_AGENTS_DIR" in str(refused.value)
    with pytest.raises(sm.GatewayUnavailable, match="ARIA_AGENTS_DIR"):
        sm.delete_session("agent:ops:subagent:old1", agent="ops")
    assert home.sessions() == before and copy.sessions() == copied


def row_type(key: str) -> str:
    """The session_type the history service gives a key's row (§5: openclaw_run, openclaw_cron, ...)."""
    kind = key.split(":")[2]
    return "openclaw_run" if ":run:" in key else f"openclaw_{kind}"


def layout_ids(agent: str) -> set[str]:
    return {entry["sessionId"] for entry in layout_of(agent).values()}


def test_stats_and_a_prune_of_four_imported_agents_through_the_real_gateway(
    home: OpenClawHome, rows: HistoryService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stats over the protocol start no Node and say that cron runs are not listed; the prune reads
    them with one CLI listing and deletes every key over the connection."""
    before = home.sessions()
    starts = tmp_path / "cli-starts"
    logged = tmp_path / "openclaw"
    logged.write_text(f'#!/bin/sh\necho "$*" >> "{starts}"\nexec "{home.cli}" "$@"\n')
    logged.chmod(0o755)
    monkeypatch.setenv("OPENCLAW_CLI", str(logged))
    stats = sm.get_session_stats()
    assert not starts.exists()  # no Node process
    runs = {
        agent: len([k for k in before if k.startswith(f"agent:{agent}:") and ":run:" in k])
        for agent in SQLITE_AGENTS
    }
    kept = {
        agent: len([k for k in before if k.startswith(f"agent:{agent}:")]) - runs[agent]
        for agent in SQLITE_AGENTS
    }
    assert stats["by_agent"] == kept | {"legacy": 8}  # research was pruned above, in its own test
    assert stats["agents"]["ops"] == {"sessions": 6, "store": "sqlite"}
    assert stats["agents"]["legacy"] == {"sessions": 8, "store": "json"}
    assert stats["gateway_path"] == "one connection over the gateway protocol"
    assert "cron runs not listed" in stats["not_listed"] and "ops" in stats["not_listed"]
    # Rows of sessions pruned above are vanished; those of cron runs, which stats cannot see, are
    # unknown, and so are a cron job's (a job's key may alias its last run's session, §5).
    keys = [key for agent in SQLITE_AGENTS for key in layout_of(agent)]
    vanished = [key for key in keys if key not in before and ":cron:" not in key]
    assert stats["vanished_history_rows"] == len(vanished)

    result = sm.prune_sessions(max_age_minutes=60)
    assert starts.read_text().splitlines() == ["sessions --all-agents --json --limit all"]  # the runs

    after = home.sessions()
    gone = set().union(*(expected_gone(agent) for agent in SQLITE_AGENTS)) & set(before)
    assert "agent:research:cron:job:run:r1" in gone  # what the CLI could not delete, the connection does
    assert result["errors"] == [] and result["skipped"] == []
    assert "gateway_owned" not in {row["reason"] for row in result["protected"]}
    assert set(before) - set(after) == gone and set(after) <= set(before)
    assert all(after[key]["updatedAt"] == before[key]["updatedAt"] for key in after)
    pruned = {before[key]["sessionId"] for key in gone} | {
        f"legacy-{name}"
        for name in ("old1", "old2", "job", "run", "dash")  # JSON era: runs go too
    }
    assert set(result["deleted_ids"]) == pruned
    assert result["gateway_path"] == "one connection over the gateway protocol" and "not_listed" not in result
    for key in gone:
        agent, session_id = before[key]["agentId"], before[key]["sessionId"]
        assert list((home.agents_root / agent / "sessions").glob(f"{session_id}.jsonl.deleted.*.zst")), key
    every = {
        entry["sessionId"] for agent in [*SQLITE_AGENTS, "legacy"] for entry in layout_of(agent).values()
    }
    assert {sid for sid in every if rows.row_of(sid)["status"] == "ended"} == pruned
    assert result["history"] == {"marked": len(pruned)}


def test_sqlite_era_deletions_are_listed_not_restored_and_their_archives_expire(home: OpenClawHome) -> None:
    answer = sm.delete_session("agent:ops:subagent:fresh")
    assert answer["removed_keys"] == ["agent:ops:subagent:fresh"] and answer["transcript_archived"]
    (archive,) = answer["archived_files"].values()
    assert archive.startswith("ops-fresh.jsonl.deleted.") and archive.endswith(".zst")
    (row,) = sm.list_deleted()["deleted"]
    assert (row["session_id"], row["store"]) == ("ops-fresh", "sqlite")
    assert row["transcripts"] == {"ops-fresh.jsonl": archive}
    with pytest.raises(sm.StoreNotLive, match=archive.replace(".", r"\.")):
        sm.restore_session("ops-fresh")
    run = sm.delete_session("agent:ops:cron:job:run:r2")  # the CLI answers not_found for a run
    assert run["removed_keys"] == ["agent:ops:cron:job:run:r2"] and run["transcript_archived"]
    with pytest.raises(sm.ProtectedSession, match="Cannot delete the main session"):
        sm.delete_session("agent:ops:main", force=True)  # the gateway's own refusal, reported

    folder = home.agents_root / "ops" / "sessions"
    archives = sorted(p.name for p in folder.iterdir() if ".deleted." in p.name)
    assert archive in archives and all(name.endswith(".zst") for name in archives)
    others = {"ops-x.jsonl.reset.2026-01-01T00-00-00.000Z": b"r", "stray.jsonl": b"s", "notes.txt": b"n"}
    for name, data in others.items():
        (folder / name).write_bytes(data)
    database = snapshot(home.agents_root / "ops" / "agent")
    cleaned = sm.cleanup_orphans(archive_retention_days=0)
    assert [r["file"] for r in cleaned["deleted_archives"] if r["agent"] == "ops"] == archives
    assert sorted(p.name for p in folder.iterdir()) == sorted(others)
    assert snapshot(home.agents_root / "ops" / "agent").keys() == database.keys()
    assert "agent:ops:main" in home.sessions()


def test_gateway_down_changes_nothing_and_says_what_to_start(home: OpenClawHome) -> None:
    """Down, as the CLI sees it: nothing listens where OPENCLAW_GATEWAY_URL points."""
    before = home.sessions()
    environment = {"OPENCLAW_GATEWAY_URL": f"ws://127.0.0.1:{closed_port()}"}
    listing = run_cli("session_manager", "list_sessions", '{"agent": "analyst"}', env=environment)
    assert listing[0] == 0 and listing[1]["session_count"] == len(
        [key for key in before if key.startswith("agent:analyst:")]
    )  # reads need no gateway
    assert (
        "did not answer" in listing[1]["gateway_path"]
        and "openclaw gateway run" in listing[1]["gateway_path"]
    )

    code, answer, stderr = run_cli(
        "session_manager", "delete_session", '{"session_id": "analyst-fresh"}', env=environment
    )
    assert code == 1 and answer["error_type"] == "gateway_unavailable"
    assert "openclaw gateway run" in answer["error"] and "nothing was changed" in answer["error"]
    code, pruned, _ = run_cli(
        "session_manager", "prune_sessions", '{"agent": "analyst", "max_age_minutes": 1}', env=environment
    )
    assert code == 1 and pruned["error_type"] == "gateway_unavailable"
    assert TOKEN not in json.dumps([answer, pruned]) + stderr
    assert home.sessions() == before
    assert sm.list_deleted()["total"] == 0
