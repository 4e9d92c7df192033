"""Where the skill finds its agents and its history service when the environment says little
(issue 28, item 4): OpenClaw's own folders without ARIA_AGENTS_DIR, and ARIA_API_URL=none for a
deployment with no history service at all."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import ago, closed_port, run_cli, write_index

import session_manager as sm

STALE = {"agent:main:cron:nightly": {"sessionId": "nightly-1", "updatedAt": ago(90)}}
ARIA_CONTAINER_ROOT = Path(sm.DEFAULT_AGENTS_DIR)


def environment_without_roots(home: Path, **variables: str) -> dict[str, str]:
    """The test's environment without the skill's folders, with ``home`` as HOME."""
    kept = {k: v for k, v in os.environ.items() if k not in ("ARIA_AGENTS_DIR", "OPENCLAW_STATE_DIR")}
    return {**kept, "HOME": str(home), "ARIA_API_URL": "none", **variables}


@pytest.fixture
def no_aria_container() -> None:
    if ARIA_CONTAINER_ROOT.exists():
        pytest.skip(f"{ARIA_CONTAINER_ROOT} exists on this machine: the default is Aria's container there")


# --- The agents root -----------------------------------------------------------------------------


@pytest.mark.usefixtures("no_aria_container")
@pytest.mark.parametrize(
    ("variables", "where"),
    [
        ({}, "home/.openclaw/agents"),  # OpenClaw's default state folder
        ({"OPENCLAW_STATE_DIR": "{tmp}/state"}, "state/agents"),  # the gateway's own variable
        ({"OPENCLAW_STATE_DIR": "{tmp}/state", "ARIA_AGENTS_DIR": "{tmp}/mine"}, "mine"),  # ours wins
    ],
)
def test_without_aria_agents_dir_the_root_is_where_openclaw_keeps_its_agents(
    tmp_path: Path, variables: dict[str, str], where: str
) -> None:
    (tmp_path / "home").mkdir()
    for decoy in {"home/.openclaw/agents", "state/agents", "mine"} - {where}:
        write_index(tmp_path / decoy, "other", STALE)
    write_index(tmp_path / where, "main", STALE)
    given = {name: value.format(tmp=tmp_path) for name, value in variables.items()}
    exit_code, answer, _ = run_cli(
        "session_manager", "list_sessions", env=environment_without_roots(tmp_path / "home", **given)
    )
    assert (exit_code, list(answer["agents"])) == (0, ["main"])


@pytest.mark.usefixtures("no_aria_container")
def test_no_agents_root_anywhere_says_which_variable_to_set(tmp_path: Path) -> None:
    environment = environment_without_roots(tmp_path)
    exit_code, answer, _ = run_cli("session_manager", "list_sessions", env=environment)
    assert (exit_code, answer["error_type"]) == (1, "configuration_error")
    assert ".openclaw/agents" in answer["error"] and "ARIA_AGENTS_DIR" in answer["error"]


# --- No history service: ARIA_API_URL=none ---------------------------------------------------------


@pytest.fixture
def history_off(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The agents root with one stale session, the history layer off, background delivery on."""
    write_index(root, "main", STALE)
    monkeypatch.setenv("ARIA_API_URL", "none")
    monkeypatch.setenv("SESSION_HISTORY_BACKGROUND", "1")
    return root


def state_files(root: Path) -> list[str]:
    state = root / sm.STATE_DIR_NAME
    return sorted(path.name for path in state.iterdir()) if state.exists() else []


@pytest.mark.parametrize(
    ("call", "answer_fields"),
    [
        (lambda: sm.prune_sessions(max_age_minutes=60), {"pruned_count": 1, "history": {"off": 1}}),
        (lambda: sm.delete_session("nightly-1"), {"pg_status_updated": False}),
        (lambda: sm.cleanup_after_delegation("nightly-1"), {"pg_status_updated": False}),
        (lambda: sm.sync_pending(), {"delivered": [], "still_pending": []}),
    ],
)
def test_with_history_off_nothing_is_queued_no_delivery_starts_and_the_answer_says_so(
    history_off: Path, call: object, answer_fields: dict[str, object]
) -> None:
    answer = call()  # type: ignore[operator]
    assert {field: answer[field] for field in answer_fields} == answer_fields
    assert answer["history_layer"] == sm.HISTORY_OFF_TEXT and answer.get("history_pending", 0) == 0
    assert "history_by_session" not in answer or answer["history_by_session"] == {}
    # No outbox, and no delivery process was even considered (its lock is taken before it starts).
    assert [name for name in state_files(history_off) if "history" in name] == []


def test_with_history_off_a_delete_says_so_per_session(history_off: Path) -> None:
    answer = sm.delete_session("nightly-1")
    assert answer["history"] == {"status": "off", "reason": sm.HISTORY_OFF_TEXT, "row_ids": []}
    assert "history layer off" in answer["message"]


def test_with_history_off_a_restore_marks_nothing(history_off: Path) -> None:
    sm.delete_session("nightly-1")
    answer = sm.restore_session("nightly-1")
    assert answer["restored_keys"] == ["agent:main:cron:nightly"] and answer["history"]["status"] == "off"
    assert [name for name in state_files(history_off) if "history" in name] == []


def test_with_history_off_stats_say_vanished_rows_are_unknown_and_why(history_off: Path) -> None:
    answer = sm.get_session_stats()
    assert answer["vanished_history_rows"] is None
    assert answer["vanished_history_rows_unknown"] == sm.HISTORY_OFF_TEXT


def test_with_history_off_reconcile_is_a_configuration_error(history_off: Path) -> None:
    exit_code, answer, _ = run_cli("session_manager", "reconcile_history")
    assert (exit_code, answer["error_type"]) == (1, "configuration_error")
    assert "ARIA_API_URL" in answer["error"]


def test_marks_queued_before_the_layer_was_turned_off_wait_counted_and_unsent(
    history_off: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ARIA_API_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("SESSION_HISTORY_BACKGROUND", "0")
    assert sm.delete_session("nightly-1")["history_pending"] == 1
    monkeypatch.setenv("ARIA_API_URL", "none")
    answer = sm.sync_pending()
    assert (answer["delivered"], len(answer["still_pending"])) == ([], 1)
    assert sm.get_session_stats()["pending_history_marks"] == 1
