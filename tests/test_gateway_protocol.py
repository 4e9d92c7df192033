"""The skill's client of the gateway protocol (issue 27), against a stand-in WebSocket gateway on
127.0.0.1 that misbehaves on cue (tests/gateway_stand_in.py): what it sends, the deadline, the
budget, the fallbacks, and frames that break the rules. OPENCLAW_CLI points nowhere: nothing here
may start Node. The real gateway is in tests/test_gateway_connection.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from gateway_stand_in import TOKEN, Plan, StandInGateway, stand_in_gateway
from helpers import ago, run_cli, sqlite_era_agent, write_index
from history_service import HistoryService

import session_manager as sm

STALEST_FIRST = [f"agent:ops:subagent:s{n}" for n in range(9, -1, -1)]


def ops_rows() -> list[dict[str, Any]]:
    """Agent ops: its main session, ten stale sub-agents (s9 the stalest), one with a run going."""
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
    busy = {
        "key": "agent:ops:subagent:busy",
        "sessionId": "ops-busy",
        "updatedAt": ago(500),
        "agentId": "ops",
    }
    return [*rows, busy | {"hasActiveRun": True}]


@pytest.fixture
def gateway(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, history: HistoryService
) -> Iterator[StandInGateway]:
    """ops in the SQLite era, its gateway the stand-in, a history row for each of its sessions."""
    database = sqlite_era_agent(root, "ops")
    write_index(root, "main", {})
    rows = ops_rows()
    for row in rows:
        history.add_row(row["sessionId"], agent="ops")
    monkeypatch.setenv("OPENCLAW_CLI", str(tmp_path / "no-such-openclaw"))
    monkeypatch.setenv("OPENCLAW_GATEWAY_TOKEN", TOKEN)
    with stand_in_gateway(Plan(rows={"ops": rows}, paths={"ops": str(database)})) as served:
        monkeypatch.setenv("OPENCLAW_GATEWAY_URL", served.url)
        yield served
    assert served.connections_left_open() == 0  # every call closed its connection


def deleted_keys(gateway: StandInGateway) -> list[str]:
    return [request["key"] for request in gateway.sent("sessions.delete")]


# --- Deleting: what is sent, in which order, within the budget -----------------------------------


def test_every_delete_names_the_session_as_listed_stalest_first_over_one_connection(
    gateway: StandInGateway, history: HistoryService
) -> None:
    answer = sm.prune_sessions(agent="ops", max_age_minutes=60)

    listed = {row["key"]: row for row in ops_rows()}
    sent = gateway.sent("sessions.delete")
    assert [request["key"] for request in sent] == STALEST_FIRST
    assert all(
        (r["agentId"], r["expectedSessionId"], r["deleteTranscript"])
        == ("ops", listed[r["key"]]["sessionId"], True)
        for r in sent
    )
    assert [r["expectedSessionUpdatedAt"] for r in sent] == [listed[r["key"]]["updatedAt"] for r in sent]
    assert (
        answer["pruned_count"] == 10 and answer["gateway_path"] == "one connection over the gateway protocol"
    )
    assert [(row["key"], row["reason"]) for row in answer["protected"]] == [
        ("agent:ops:subagent:busy", "active_run")
    ]
    assert gateway.connections == 1 and history.row_of("ops-s5")["status"] == "ended"
    # The runs sessions.list hides are read by the CLI, which is not there: said, not dropped.
    assert "cron runs not listed" in answer["not_listed"] and "no-such-openclaw" in answer["not_listed"]


@pytest.mark.parametrize(
    ("since_the_listing", "reason"),
    [
        ("changed", "changed since it was listed: kept"),
        ("gone", "already gone"),  # the gateway refuses a missing key as changed: described again
    ],
)
def test_a_session_changed_or_gone_since_the_listing_is_skipped_and_its_row_stays_active(
    gateway: StandInGateway, history: HistoryService, since_the_listing: str, reason: str
) -> None:
    getattr(gateway.plan, since_the_listing).add("agent:ops:subagent:s4")
    answer = sm.prune_sessions(agent="ops", max_age_minutes=60)
    assert answer["skipped"] == [{"id": "ops-s4", "agentId": "ops", "reason": reason}]
    assert answer["pruned_count"] == 9 and "ops-s4" not in answer["deleted_ids"]
    assert history.row_of("ops-s4")["status"] == "active" and history.row_of("ops-s5")["status"] == "ended"
    assert sm.sync_pending()["still_pending"] == []


# A budget of 0 is refused (test_cli's bad-input table); 0.001 is spent before most deletes start.
@pytest.mark.parametrize(("budget", "seconds_per_key"), [(0.5, 0.3), (1.0, 0.3), (0.001, 0.0)])
def test_a_prune_past_its_budget_starts_no_more_deletes_and_counts_the_rest(
    gateway: StandInGateway, monkeypatch: pytest.MonkeyPatch, budget: float, seconds_per_key: float
) -> None:
    monkeypatch.setenv("OPENCLAW_DELETE_BUDGET_SECONDS", str(budget))
    gateway.plan.seconds_per_key = seconds_per_key
    answer = sm.prune_sessions(agent="ops", max_age_minutes=60)

    sent = deleted_keys(gateway)
    assert sent == STALEST_FIRST[: len(sent)]
    assert answer["pruned_count"] == len(sent) and answer["remaining"] == 10 - len(sent)
    assert set(answer["deleted_ids"]) == {key.replace("agent:ops:subagent:", "ops-") for key in sent}
    assert answer["skipped"] == [] and answer["errors"] == []


def test_a_connection_dropped_mid_prune_leaves_the_key_in_flight_uncertain_and_starts_no_other(
    gateway: StandInGateway,
) -> None:
    gateway.plan.die_at = STALEST_FIRST[3]
    answer = sm.prune_sessions(agent="ops", max_age_minutes=60)

    assert deleted_keys(gateway) == STALEST_FIRST[:4]
    assert set(answer["deleted_ids"]) == {"ops-s9", "ops-s8", "ops-s7"} and answer["remaining"] == 6
    (skipped,) = answer["skipped"]
    assert skipped["id"] == "ops-s6" and skipped["reason"].startswith("no answer from the gateway")


def test_a_refusal_of_one_key_is_that_sessions_skip_and_the_rest_goes(gateway: StandInGateway) -> None:
    gateway.plan.refused["agent:ops:subagent:s2"] = "Session is pinned."
    answer = sm.prune_sessions(agent="ops", max_age_minutes=60)
    assert answer["skipped"] == [
        {"id": "ops-s2", "agentId": "ops", "reason": "the gateway refused: Session is pinned."}
    ]
    assert answer["pruned_count"] == 9


# --- Opening the connection: what each failure does to a listing and to a delete ----------------


@pytest.mark.parametrize(
    ("change", "listing_error", "path_says"),
    [
        # The operator must act: nothing goes through any path.
        ({"token": "wrong"}, "refused the token", "none: the gateway refused the token"),
        ({"url": "ws://192.0.2.1:18789"}, "travel in clear", "none: OPENCLAW_GATEWAY_URL is a ws:// URL"),
        ({"url": "http://127.0.0.1:1"}, "must be a ws:// or wss:// URL", "none: OPENCLAW_GATEWAY_URL must"),
        # Not a gateway that answers as one: the CLI lists (it is not installed here), nothing is deleted.
        ({"greeting": False}, "OPENCLAW_CLI", "did not greet as an OpenClaw gateway"),
        ({"agents": []}, "openclaw agents add ops", "one connection"),  # not in agents.list: said once
        ({"paths": {}}, "under ARIA_AGENTS_DIR", "one connection"),  # a gateway of another state folder
        # The CLI could stand in (its own Node client, its paired device): it is not installed here.
        (
            {"protocol": 5},
            "OPENCLAW_CLI",
            "the openclaw CLI, one process per step: the gateway speaks protocol 5",
        ),
        ({"scopes": ["operator.read"]}, "OPENCLAW_CLI", "pair a device"),
    ],
)
def test_a_connection_that_cannot_serve_says_why_and_changes_nothing(
    gateway: StandInGateway,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, Any],
    listing_error: str,
    path_says: str | None,
) -> None:
    for name, value in change.items():
        if name == "token":
            monkeypatch.setenv("OPENCLAW_GATEWAY_TOKEN", value)
        elif name == "url":
            monkeypatch.setenv("OPENCLAW_GATEWAY_URL", value)
        else:
            setattr(gateway.plan, name, value)
    listed = sm.list_sessions()
    dry = sm.prune_sessions(max_age_minutes=60, dry_run=True)
    pruned = sm.prune_sessions(max_age_minutes=60)

    for answer in (listed, dry, pruned):
        (error,) = answer["errors"]
        assert error["agent"] == "ops" and listing_error in error["error"], error
        assert TOKEN not in str(answer) and "wrong" not in str(answer.get("gateway_path"))
        if path_says is not None:
            assert path_says in answer["gateway_path"]
    assert gateway.sent("sessions.delete") == [] and pruned["pruned_count"] == 0


@pytest.mark.parametrize(("starting", "busy"), [(3, 0), (0, 3)])
def test_a_gateway_that_says_try_again_soon_is_tried_again(
    gateway: StandInGateway, starting: int, busy: int
) -> None:
    gateway.plan.starting, gateway.plan.busy = starting, busy
    answer = sm.list_sessions(agent="ops")
    assert (
        answer["session_count"] == 12 and answer["gateway_path"] == "one connection over the gateway protocol"
    )
    assert gateway.connections == 1 + starting


def test_without_the_websockets_package_the_cli_is_used_and_named(
    gateway: StandInGateway, without_websockets: None
) -> None:
    answer = sm.list_sessions()
    assert "pip install websockets" in answer["gateway_path"] and gateway.connections == 0
    code, printed, _ = run_cli("session_manager", "list_sessions", "{}")  # the same in a process of its own
    assert code == 0 and "pip install websockets" in printed["gateway_path"]


# --- Frames: pages, noise, and frames that break the rules ---------------------------------------


def test_a_listing_of_many_pages_is_read_whole(gateway: StandInGateway) -> None:
    gateway.plan.page = 3
    answer = sm.list_sessions(agent="ops", limit="all")
    assert answer["session_count"] == 12 and len(gateway.sent("sessions.list")) == 4


def test_events_and_stale_responses_between_requests_are_passed_over(gateway: StandInGateway) -> None:
    gateway.plan.noise = True
    answer = sm.prune_sessions(agent="ops", max_age_minutes=60)
    assert answer["pruned_count"] == 10 and answer["errors"] == []


@pytest.mark.parametrize(
    ("fault", "said"),
    [
        ("malformed", "not a JSON object"),
        ("huge", "broke while we waited"),  # over the 25 MiB cap: the client closes, never holds it
        ("silent", "did not answer sessions.list in time"),
    ],
)
def test_a_frame_that_breaks_the_rules_is_an_error_of_the_agent_in_bounded_time(
    gateway: StandInGateway, monkeypatch: pytest.MonkeyPatch, fault: str, said: str
) -> None:
    monkeypatch.setenv("OPENCLAW_TIMEOUT_SECONDS", "2")
    setattr(gateway.plan, fault, "sessions.list")
    answer = sm.list_sessions()
    (error,) = answer["errors"]
    assert error["agent"] == "ops" and said in error["error"]


# --- A partial listing: what the reading left out is unknown, never gone ------------------------


def test_rows_of_cron_runs_the_listing_left_out_are_unknown_and_the_rest_are_reconciled(
    gateway: StandInGateway, history: HistoryService
) -> None:
    """Without the CLI the gateway's protocol lists no cron run: their rows stay as they are
    (item 4); a sub-agent's row that no store holds is ended as ever."""
    history.add_row("ops-gone-sub", agent="ops", session_type="openclaw_subagent")
    history.add_row("ops-run-9", agent="ops", session_type="openclaw_run")
    history.add_row("ops-cron-9", agent="ops", session_type="openclaw_cron")
    stats = sm.get_session_stats()
    answer = sm.reconcile_history()
    assert stats["vanished_history_rows"] == 1 and "cron runs not listed" in stats["not_listed"]
    assert history.row_of("ops-gone-sub")["status"] == "ended"
    assert (
        history.row_of("ops-run-9")["status"] == "active"
        and history.row_of("ops-cron-9")["status"] == "active"
    )
    assert history.row_of("ops-s3")["status"] == "active"
    assert answer["rows_ended"] == 1 and answer["skipped"] == {"cron_runs_unlisted": 2}
    assert "cron runs not listed" in answer["not_listed"]


def test_a_key_the_reading_may_have_left_out_is_not_found_with_the_reason(gateway: StandInGateway) -> None:
    """A cron run's key, with no CLI to list runs: "not found" as far as the skill can see, and the
    answer says the stores were not read whole."""
    answer = sm.delete_session("agent:ops:cron:nightly:run:r7", agent="ops")
    assert answer["found"] is False and "not read whole" in answer["message"]
    assert "cron runs not listed" in answer["not_listed"]
