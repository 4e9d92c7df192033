"""Where the skill finds its agents and its history service when the environment says little
(issue 28, item 4): OpenClaw's own folders without ARIA_AGENTS_DIR, and ARIA_API_URL=none for a
deployment with no history service at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import hostile
import pytest
from helpers import (
    REPO,
    ago,
    closed_port,
    run_cli,
    run_raw,
    snapshot,
    stale_agent,
    strict_json,
    write_index,
)
from history_service import HistoryService

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


SKILL = "session_manager"


def test_a_missing_dateutil_is_refused_before_any_change(root: Path) -> None:
    stale_agent(root)
    before = snapshot(root)
    script = (
        "import sys; sys.modules['dateutil'] = None; sys.path.insert(0, sys.argv[1]); import run_skill;"
        "sys.exit(run_skill.main(['session_manager', 'prune_sessions', '{}']))"
    )
    completed = subprocess.run([sys.executable, "-c", script, str(REPO)], capture_output=True, text=True)
    answer = json.loads(completed.stdout)
    assert (completed.returncode, answer["error_type"]) == (1, "configuration_error")
    assert "pip install python-dateutil" in answer["error"]
    assert snapshot(root) == before


def test_an_api_key_with_a_trailing_carriage_return_is_sent_without_it(
    root: Path, history: HistoryService
) -> None:
    ids = stale_agent(root)
    for sid in ids:
        history.add_row(sid)
    history.api_key = "sk-the-key"
    exit_code, answer, _ = run_cli(
        SKILL,
        "prune_sessions",
        '{"max_age_minutes": 60}',
        env={"ARIA_API_KEY": "sk-the-key\r\n", "ARIA_API_URL": history.url},
    )
    assert exit_code == 0 and answer["history"] == {"marked": len(ids)}


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ARIA_API_KEY", "sk-secret\x01tail"),
        ("ARIA_API_KEY", "sk-secret\nsecond-line"),
        ("ARIA_API_KEY", "sk-sécret-key"),
        ("ARIA_API_URL", "ftp://user:sk-secret@aria-api"),
        ("ARIA_API_URL", "http://user:sk-secret@aria-api:port-not-a-number"),
        ("ARIA_API_URL", "http://aria-api:8000/api\r?sk-secret"),
    ],
)
def test_an_unusable_environment_value_fails_every_call_up_front_without_showing_it(
    root: Path, variable: str, value: str
) -> None:
    stale_agent(root)
    before = snapshot(root)
    for function in ("prune_sessions", "list_sessions"):
        exit_code, output = run_raw(SKILL, function, "{}", env={variable: value})
        answer = strict_json(output.decode("utf-8"))
        assert (exit_code, answer["error_type"]) == (1, "configuration_error")
        assert variable in answer["error"] and b"sk-secret" not in output
    assert snapshot(root) == before


KEY = 'k3y"with\\quote-0123456789'


@pytest.mark.parametrize("where", ["label", "label-cut-mid-key", "row-id-echo"])
def test_no_secret_is_printed_in_any_form(
    root: Path, service: Callable[..., hostile.HostileService], where: str
) -> None:
    label = "x" * 190 + KEY if where == "label-cut-mid-key" else f"about {KEY}"
    write_index(
        root, "main", {"agent:main:subagent:s": {"sessionId": "s", "updatedAt": ago(300), "label": label}}
    )
    listing = service(lambda target: hostile.pages_of([hostile.row("s", row_id=KEY)], target), listing=True)
    env = {"ARIA_API_KEY": KEY, "ARIA_API_URL": listing.url}
    printed = [
        run_cli(SKILL, "list_sessions", "{}", env=env)[1],
        run_cli(SKILL, "delete_session", '{"session_id": "s"}', env=env)[1],
    ]
    text = json.dumps(printed, ensure_ascii=False)
    for form in (KEY, json.dumps(KEY)[1:-1], KEY[:8]):
        assert form not in text and form not in json.dumps(printed)


@pytest.mark.parametrize("variable", ["ARIA_API_KEY", "OPENCLAW_GATEWAY_TOKEN"])
def test_a_secret_too_short_to_redact_is_refused(root: Path, variable: str) -> None:
    code, answer, _ = run_cli(SKILL, "list_sessions", "{}", env={variable: "ab"})
    assert (code, answer["error_type"]) == (1, "configuration_error") and "ab" not in answer["error"].split(
        variable
    )[1]
