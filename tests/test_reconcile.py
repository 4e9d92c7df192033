"""reconcile_history (issue 20): the rows of sessions that left every store, whoever removed them,
end; nothing else changes. Against the stand-in true to the real aria-api (its sync from the
indexes inside GET, bench/history_stub.py)."""

from __future__ import annotations

import json
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, ago, read_index, run_cli, snapshot, sqlite_era_agent, write_index

import session_manager as sm

sys.path.insert(0, str(REPO / "bench"))
from history_stub import Rows, Service

SKILL = "session_manager"


@pytest.fixture
def service(root: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    served = Service(Rows([]), agents_root=str(root), sync_interval=3600)
    monkeypatch.setenv("ARIA_API_URL", served.url)
    yield served
    served.stop()


def sync_now(served: Service) -> None:
    served.sync.last = float("-inf")
    urllib.request.urlopen(f"{served.url}/api/sessions?limit=1", timeout=60).read()


def statuses(served: Service) -> dict[str, str]:
    with served.rows.lock:
        return {row["id"]: row["status"] for row in served.rows.rows}


def session_of(served: Service, row_id: str) -> str:
    return str(served.rows.by_id[row_id]["metadata"].get("openclaw_session_id"))


def foreign_rows(served: Service) -> None:
    """A row of an agent the skill does not see, and one of no OpenClaw session at all."""
    with served.rows.lock:
        for row in (
            {"agent_id": "elsewhere", "metadata": {"openclaw_session_id": "far-away"}},
            {"agent_id": "main", "metadata": {"engine": "chat"}},
        ):
            served.rows.upsert(
                {"id": str(uuid.uuid4()), "status": "active", "started_at": "2026-01-01", **row}
            )


@pytest.fixture
def retention(root: Path, service: Service) -> list[str]:
    """220 sessions imported by the service's sync, then 20 removed by the gateway's retention."""
    store = {
        f"agent:main:cron:job:run:{n}": {"sessionId": f"run-{n}", "updatedAt": ago(300)} for n in range(220)
    }
    write_index(root, "main", store)
    sync_now(service)
    foreign_rows(service)
    gone = [f"run-{n}" for n in range(0, 220, 11)]
    write_index(root, "main", {k: v for k, v in store.items() if v["sessionId"] not in gone})
    return gone


def test_a_dry_run_lists_the_vanished_and_changes_nothing(
    root: Path, service: Service, retention: list[str]
) -> None:
    before, files = statuses(service), snapshot(root)
    answer = sm.reconcile_history(dry_run=True, detail="full")
    assert (answer["rows_ended"], answer["present_rows"], answer["rows_read"]) == (20, 200, 222)
    assert sorted(item["id"] for item in answer["sessions"]) == sorted(retention)
    assert answer["by_agent"] == {"main": 20} and answer["by_type"] == {"openclaw_run": 20}
    assert answer["skipped"] == {"not_an_openclaw_session": 1, "agent_not_in_scope": 1}
    assert statuses(service) == before and snapshot(root) == files and service.rows.patches == []


def test_the_real_run_ends_exactly_the_vanished_rows(
    root: Path, service: Service, retention: list[str]
) -> None:
    before = statuses(service)
    code, answer, _ = run_cli(SKILL, "reconcile_history", "{}")
    assert code == 0 and answer["rows_ended"] == 20 and answer["history"] == {"marked": 20}
    after = statuses(service)
    changed = {row_id for row_id in after if after[row_id] != before[row_id]}
    assert sorted(session_of(service, row_id) for row_id in changed) == sorted(retention)
    assert all(after[row_id] == "ended" for row_id in changed)
    audit = [
        json.loads(line) for line in (root / ".session-manager" / "audit.jsonl").read_text().splitlines()
    ]
    assert [record["event"] for record in audit] == ["reconciled"]
    assert sorted(audit[0]["sessions"]) == sorted(retention) and sm.list_deleted()["total"] == 0
    assert sm.reconcile_history()["rows_ended"] == 0  # nothing left to do


def test_an_agent_whose_store_cannot_be_read_ends_none_of_its_rows(
    root: Path, service: Service, retention: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (root / "main" / "sessions" / "sessions.json").write_text("{ torn")
    sqlite_era_agent(root, "ops")
    with service.rows.lock:
        service.rows.upsert(
            {
                "id": str(uuid.uuid4()),
                "agent_id": "ops",
                "status": "active",
                "started_at": "2026-01-01",
                "metadata": {"openclaw_session_id": "ops-1"},
            }
        )
    monkeypatch.setenv("OPENCLAW_CLI", str(root / "no-such-openclaw"))
    before = statuses(service)
    answer = sm.reconcile_history()
    assert answer["rows_ended"] == 0 and statuses(service) == before
    assert sorted((e["agent"], e["error_type"]) for e in answer["unreadable_agents"]) == [
        ("main", "store_unreadable"),
        ("ops", "gateway_unavailable"),
    ]
    assert answer["skipped"]["store_unreadable"] == 221


def test_a_session_that_enters_an_index_while_reconcile_runs_keeps_its_row(
    root: Path, service: Service, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows first, stores second: a session written to an index after the rows were read is seen."""
    write_index(root, "main", {"agent:main:subagent:back": {"sessionId": "back", "updatedAt": ago(300)}})
    sync_now(service)
    write_index(root, "main", {})  # it left (a restore of an older backup will bring it back)
    original = sm.History.active_rows

    def rows_then_the_session_returns(history: sm.History) -> list[dict[str, Any]]:
        rows = original(history)
        write_index(root, "main", {"agent:main:subagent:back": {"sessionId": "back", "updatedAt": ago(0)}})
        return rows

    monkeypatch.setattr(sm.History, "active_rows", rows_then_the_session_returns)
    answer = sm.reconcile_history()
    assert (answer["rows_ended"], answer["present_rows"]) == (0, 1)
    assert list(statuses(service).values()) == ["active"]


def test_a_row_too_recent_to_judge_is_left_alone(root: Path, service: Service) -> None:
    """The service's sync also lists sessions the gateway holds in memory before they reach its
    store: a row that started minutes ago may be one of those."""
    two_minutes_ago = int(time.time() * 1000) - 2 * 60_000  # not ago(): that counts from the run's start
    write_index(root, "main", {"agent:main:subagent:new": {"sessionId": "new", "updatedAt": two_minutes_ago}})
    sync_now(service)
    write_index(root, "main", {})
    answer = sm.reconcile_history()
    assert answer["rows_ended"] == 0 and answer["skipped"] == {"too_recent": 1}


def test_a_named_agent_reconciles_only_its_own_rows(root: Path, service: Service) -> None:
    for agent in ("main", "analyst"):
        write_index(
            root, agent, {f"agent:{agent}:subagent:x": {"sessionId": f"{agent}-x", "updatedAt": ago(300)}}
        )
    sync_now(service)
    for agent in ("main", "analyst"):
        write_index(root, agent, {})
    answer = sm.reconcile_history(agent="analyst")
    assert [item["id"] for item in answer["sessions"]] == ["analyst-x"]
    assert sorted(statuses(service).values()) == ["active", "ended"]
    assert read_index(root, "main") == {}


def test_an_unreachable_service_reconciles_nothing_and_says_so(root: Path) -> None:
    write_index(root, "main", {})
    code, answer, _ = run_cli(SKILL, "reconcile_history", "{}")
    assert code == 0 and answer["rows_ended"] == 0
    assert answer["history_error"]["error_type"] == "history_step_failed"
    assert "could not be read" in answer["history_error"]["error"]


def test_stats_count_the_rows_reconcile_would_end(root: Path, service: Service, retention: list[str]) -> None:
    assert sm.get_session_stats()["vanished_history_rows"] == 20
    sm.reconcile_history()
    assert sm.get_session_stats()["vanished_history_rows"] == 0


def test_stats_leave_out_the_rows_whose_marks_wait_in_the_outbox(
    root: Path, service: Service, retention: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prune of 10 more with a pace of one mark an hour: 9 marks wait; their rows are being
    ended already, and only the 20 that retention removed are for reconcile_history."""
    monkeypatch.setenv("SESSION_HISTORY_PACE", "1/3600")
    doomed = [f"run-{n}" for n in range(1, 12) if f"run-{n}" not in retention]
    assert len(doomed) == 10
    for session_id in doomed:
        sm.delete_session(session_id)

    assert sm.sync_pending()["message"].startswith("0 delivered, 9 still pending")
    assert sm.get_session_stats()["vanished_history_rows"] == 20


def test_stats_say_when_they_cannot_tell(root: Path) -> None:
    write_index(root, "main", {})
    stats = sm.get_session_stats()
    assert stats["vanished_history_rows"] is None and "refused" in stats["vanished_history_rows_unknown"]


@pytest.mark.parametrize(("index", "ended"), [("file", 20), ("dangling-link", 0)])
def test_an_index_that_is_a_dangling_link_is_unreadable_not_empty(
    root: Path, service: Service, retention: list[str], index: str, ended: int
) -> None:
    """A dangling sessions.json once counted as an empty store: every row of that agent, its
    main session's too, was ended."""
    path = root / "main" / "sessions" / "sessions.json"
    if index == "dangling-link":
        path.unlink()
        path.symlink_to(root / "main" / "sessions" / "moved-away.json")

    answer = sm.reconcile_history(dry_run=True)

    assert answer["rows_ended"] == ended
    assert sm.get_session_stats()["vanished_history_rows"] == (ended if index == "file" else 0)


def add_row(served: Service, agent: str, **names: str) -> str:
    row_id = str(uuid.uuid4())
    with served.rows.lock:
        served.rows.upsert(
            {
                "id": row_id,
                "agent_id": agent,
                "status": "active",
                "started_at": "2026-01-01",
                "metadata": names,
            }
        )
    return row_id


@pytest.mark.parametrize(
    ("case", "names", "row_agent", "ended"),
    [
        # (a) the row names the live run-1 as its OpenClaw session, and another aria_session_id
        (
            "aria id beside a live one",
            {"aria_session_id": "elsewhere-1", "openclaw_session_id": "run-1"},
            "main",
            False,
        ),
        # (b) the service took agent_id from the key: agent:ops:... lives in main's folder
        ("key of another agent", {"openclaw_session_id": "crossed-1"}, "ops", False),
        ("gone everywhere", {"openclaw_session_id": "nowhere-1"}, "main", True),
    ],
)
def test_a_row_is_gone_only_when_no_store_holds_any_id_it_names(
    root: Path,
    service: Service,
    retention: list[str],
    case: str,
    names: dict[str, str],
    row_agent: str,
    ended: bool,
) -> None:
    index = json.loads((root / "main" / "sessions" / "sessions.json").read_text())
    index["agent:ops:subagent:crossed"] = {"sessionId": "crossed-1", "updatedAt": ago(300)}
    write_index(root, "main", index)
    write_index(root, "ops", {})
    row = add_row(service, row_agent, **names)

    answer = sm.reconcile_history()

    assert answer["rows_ended"] == 20 + ended
    assert statuses(service)[row] == ("ended" if ended else "active")


def test_while_a_store_cannot_be_read_no_row_found_in_none_of_the_others_is_ended(
    root: Path, service: Service, retention: list[str]
) -> None:
    """Its sessions may be any agent's (the key decides the agent, not the folder)."""
    (root / "ops" / "sessions").mkdir(parents=True)
    (root / "ops" / "sessions" / "sessions.json").write_text("{ torn")
    before = statuses(service)

    answer = sm.reconcile_history()

    assert answer["rows_ended"] == 0 and statuses(service) == before
    assert answer["skipped"]["store_unreadable"] == 20
