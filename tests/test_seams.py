"""The three ideas that each have one place (issue 17): the kind of store, protection, a mark's
status. Each table is an input and what the one place decides for it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from helpers import ago, run_cli, snapshot, write_index

import session_manager as sm

SKILL = "session_manager"


# --- The kind of store ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "kind"),
    [
        ({"sessions/sessions.json": "{}"}, "json"),
        ({"sessions/sessions.json": "{}", "agent/openclaw-agent.sqlite": ""}, "sqlite"),
        ({"sessions/.keep": "", "agent/openclaw-agent.sqlite": ""}, "sqlite"),
        ({"sessions/.keep": "", "agent/other.sqlite": ""}, "json"),
    ],
)
def test_the_kind_of_an_agents_store_comes_from_its_gateways_files(
    root: Path, files: dict[str, str], kind: str
) -> None:
    for name, text in files.items():
        (root / "main" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "main" / name).write_text(text)
    config = sm.Config.from_environment()
    store = sm.AgentStore.open(sm.Call(config), config.agent_paths("main"))
    assert (store.kind, type(store)) == (kind, sm.STORE_KINDS[kind])


def audit_of_a_deletion_from(root: Path, kind: Any) -> None:
    """An audit log holding one committed deletion of sub-9 from main, made in a store of ``kind``."""
    commit: dict[str, Any] = {"keys": ["agent:main:subagent:9"], "entries": {}}
    if kind is not None:
        commit["store"] = kind
    base = {"txn": "t" * 32, "agent": "main", "reason": "delete", "time": "2026-11-30T10:00:00.000Z"}
    entry = json.dumps({"sessionId": "sub-9", "updatedAt": ago(600)})
    records = [
        {**base, "event": "intent", "sessions": {"sub-9": {"entries": {"agent:main:subagent:9": entry}}}},
        {**base, "event": "commit", "sessions": {"sub-9": commit}},
    ]
    state = root / ".session-manager"
    state.mkdir(exist_ok=True)
    (state / "audit.jsonl").write_text("".join(json.dumps(record) + "\n" for record in records))


@pytest.mark.parametrize(
    ("kind", "listed_as", "restore"),
    [
        (None, "json", (0, None)),  # records from before the SQLite era name no kind: sessions.json
        ("json", "json", (0, None)),
        ("sqlite", "sqlite", (1, "store_not_live")),  # the gateway has no undelete
        ("rpc", "rpc", (2, "nothing_to_restore")),  # a kind this version does not know: listed, kept
    ],
)
def test_a_recorded_deletion_is_listed_and_restored_as_its_kind_of_store_allows(
    root: Path, kind: Any, listed_as: str, restore: tuple[int, str | None]
) -> None:
    write_index(root, "main", {"agent:main:main": {"sessionId": "m", "updatedAt": ago(1)}})
    audit_of_a_deletion_from(root, kind)
    assert [(d["session_id"], d["store"]) for d in sm.list_deleted()["deleted"]] == [("sub-9", listed_as)]
    before = snapshot(root / "main")
    code, answer, _ = run_cli(SKILL, "restore_session", '{"session_id": "sub-9"}')
    assert (code, answer.get("error_type")) == restore
    if restore[1] is not None:
        assert snapshot(root / "main") == before
    if kind == "rpc":
        assert "does not know ('rpc')" in answer["error"] and "nothing was changed" in answer["error"]


# --- Protection ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protection", "force", "refusal"),
    [
        (None, False, None),
        (
            sm.Protection.MAIN_SESSION,
            False,
            "is an agent's main session; it is kept: deleting it is the user's",
        ),
        (sm.Protection.MAIN_SESSION, True, None),
        (sm.Protection.GLOBAL_SESSION, True, None),
        (sm.Protection.MAIN_AGENT_CONVERSATION, True, None),
        (sm.Protection.TRANSCRIPT_LOCKED, False, "a live run is writing right now; it is kept"),
        (
            sm.Protection.RUNNING_CONVERSATION,
            True,
            "(ARIA_SESSION_ID); it cannot be deleted, not even with force",
        ),
        (sm.Protection.GATEWAY_OWNED, True, "whose delete cannot remove runs"),
        (sm.Protection.ACTIVE_RUN, True, "which its delete would cancel, not even with force"),
    ],
)
def test_a_delete_is_refused_by_its_protection_unless_force_lifts_it(
    protection: sm.Protection | None, force: bool, refusal: str | None
) -> None:
    if refusal is None:
        sm._refuse_protected(protection, "s-1", "agent:main:x", force)
        return
    with pytest.raises(sm.ProtectedSession) as raised:
        sm._refuse_protected(protection, "s-1", "agent:main:x", force)
    assert str(raised.value).startswith("session s-1 (agent:main:x) ") and refusal in str(raised.value)


@pytest.mark.parametrize("protection", list(sm.Protection))
def test_no_refusal_invites_the_agent_to_force_it(protection: sm.Protection) -> None:
    with pytest.raises(sm.ProtectedSession) as raised:
        sm._refuse_protected(protection, "s-1", "agent:main:main", force=False)
    assert '"force"' not in str(raised.value) and "anyway" not in str(raised.value)


def test_a_protection_prints_as_its_reason() -> None:
    item = {"reason": sm.Protection.TRANSCRIPT_LOCKED}
    assert json.dumps(item) == '{"reason": "transcript_locked"}'
    assert f"{sm.Protection.MAIN_SESSION}" == "main_session"


# --- A mark's status -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "looks_for", "held_when_done"),
    [(sm.MarkStatus.ENDED, "active", False), (sm.MarkStatus.ACTIVE, "ended", True)],
)
def test_a_mark_looks_for_the_rows_it_changes(
    status: sm.MarkStatus, looks_for: str, held_when_done: bool
) -> None:
    assert (status.rows_to_change.value, status.held_when_done) == (looks_for, held_when_done)


@pytest.mark.parametrize(
    ("status", "readable"),
    [("ended", True), ("active", True), (None, True), ("completed", False), (3, False), ([], False)],
)
def test_an_outbox_record_is_a_mark_only_with_a_known_status(status: Any, readable: bool) -> None:
    record: dict[str, Any] = {"id": "o-1", "session_id": "s-1", "agent": "main"}
    if status is not None:
        record["status"] = status
    marks, unreadable = sm._marks_of_records([record])
    assert (len(marks), len(unreadable)) == ((1, 0) if readable else (0, 1))
    if readable:
        assert marks[0].as_record()["status"] == (status or "ended")
