"""The five functions of the card on a realistic tree: results, rules and what lands on disk."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from helpers import (
    add_transcript,
    ago,
    gateway_json,
    leftovers,
    read_index,
    snapshot,
    sqlite_era_agent,
    write_index,
)
from trees import EXPECTED_AT_60

import session_manager as sm

ARCHIVE_NAME = re.compile(r"^(?P<file>.+\.jsonl)\.deleted\.\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3}Z$")
CARD_LIST_KEYS = {
    "id",
    "sessionId",
    "key",
    "agentId",
    "session_type",
    "label",
    "updatedAt",
    "contextTokens",
    "model",
}


def archived_names(root: Path, agent: str) -> list[str]:
    return sorted(p.name for p in (root / agent / "sessions").iterdir() if ".deleted." in p.name)


def test_list_sessions_folds_aliases_and_sorts_newest_first(tree: Path) -> None:
    result = sm.list_sessions()
    assert result["session_count"] == len(EXPECTED_AT_60)
    rows = {row["id"]: row for row in result["sessions"]}
    assert set(rows) == set(EXPECTED_AT_60)
    assert all(set(row) >= CARD_LIST_KEYS for row in rows.values())
    hb = rows["cron-hb"]
    assert hb["keys"] == ["agent:main:cron:heartbeat", "agent:main:cron:heartbeat:run:r1"]
    assert hb["key"] == "agent:main:cron:heartbeat"
    assert (hb["session_type"], hb["label"], hb["contextTokens"]) == ("cron", "heartbeat", 500)
    assert hb["updatedAt"].endswith("+00:00")
    assert rows["tg-1"]["label"] == "telegram:42"
    assert rows["an-exp"]["label"] == "Report"
    assert rows["an-dash"]["updatedAt"] is None and rows["an-dash"]["last_activity"] is not None
    assert rows["run-9"]["transcripts"] == ["run-9.jsonl", "run-9-topic-7.jsonl"]
    activity = [row["idle_minutes"] for row in result["sessions"]]
    known = [minutes for minutes in activity if minutes is not None]
    assert known == sorted(known) and activity[-1] is None  # newest first, never-active last


def test_list_sessions_filters_by_agent_and_type(tree: Path) -> None:
    assert {row["id"] for row in sm.list_sessions(agent="analyst")["sessions"]} == {
        "an-main",
        "an-cron",
        "an-exp",
        "an-dash",
        "an-hook",
        "an-nots",
    }
    assert {row["id"] for row in sm.list_sessions(session_type="cron_run")["sessions"]} == {
        "cron-hb",
        "run-9",
    }
    assert [row["id"] for row in sm.list_sessions(session_type="subagent", agent="main")["sessions"]] == [
        "sub-1",
        "sub-2",
    ]


def test_prune_keeps_exactly_the_fresh_and_protected(tree: Path) -> None:
    result = sm.prune_sessions(max_age_minutes=60)
    pruned = {sid for sid, why in EXPECTED_AT_60.items() if why is None}
    assert set(result["deleted_ids"]) == pruned
    assert result["pruned_count"] == len(pruned)
    assert result["pruned_count"] + result["kept_count"] == result["total_sessions"] == len(EXPECTED_AT_60)
    assert {p["id"]: p["reason"] for p in result["protected"]} == {
        sid: why for sid, why in EXPECTED_AT_60.items() if why not in (None, "fresh")
    }
    assert result["errors"] == [] and result["dry_run"] is False and result["threshold_minutes"] == 60
    remaining = {
        entry["sessionId"] for agent in ("main", "analyst") for entry in read_index(tree, agent).values()
    }
    assert remaining == set(EXPECTED_AT_60) - pruned
    main_archives = archived_names(tree, "main")
    assert sorted(ARCHIVE_NAME.match(n)["file"] for n in main_archives) == [  # type: ignore[index]
        "cron-hb.jsonl",
        "run-9-topic-7.jsonl",
        "run-9.jsonl",
    ]
    assert [ARCHIVE_NAME.match(n)["file"] for n in archived_names(tree, "analyst")] == [  # type: ignore[index]
        "an-cron.jsonl",
        "an-dash.jsonl",
    ]
    assert leftovers(tree) == ["main/sessions/sub-2.jsonl.lock"]


def test_prune_dry_run_changes_nothing_and_counts_the_same(tree: Path) -> None:
    before = snapshot(tree)
    dry = sm.prune_sessions(max_age_minutes=60, dry_run=True)
    assert snapshot(tree) == before
    real = sm.prune_sessions(max_age_minutes=60)
    assert (dry["pruned_count"], sorted(dry["deleted_ids"])) == (
        real["pruned_count"],
        sorted(real["deleted_ids"]),
    )
    assert dry["dry_run"] is True


def test_prune_session_type_filter_counts_only_that_type(tree: Path) -> None:
    result = sm.prune_sessions(max_age_minutes=60, session_type="cron_run")
    assert sorted(result["deleted_ids"]) == ["cron-hb", "run-9"]
    assert result["total_sessions"] == 2 and result["kept_count"] == 0


def test_prune_uses_the_environment_default(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SESSION_STALE_MINUTES", "100000")
    result = sm.prune_sessions()
    assert result["threshold_minutes"] == 100000
    assert result["deleted_ids"] == ["an-nots"]  # the one session with no known activity


def test_running_conversation_is_protected_by_id_or_key(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ARIA_SESSION_ID", "run-9")
    result = sm.prune_sessions(max_age_minutes=60)
    assert "run-9" not in result["deleted_ids"]
    assert {
        "id": "run-9",
        "agentId": "main",
        "key": "agent:main:cron:digest:run:r9",
        "reason": "running_conversation",
    } in result["protected"]
    with pytest.raises(sm.ProtectedSession, match="not even with force"):
        sm.delete_session("agent:main:cron:digest:run:r9", force=True)


@pytest.mark.parametrize(
    ("reference", "reason"),
    [
        ("main-live", "main session"),
        ("agent:analyst:main", "main session"),
        ("tg-1", "main agent's own conversations"),
        ("sub-2", "live run is writing"),
    ],
)
def test_delete_refuses_protected_unless_forced(tree: Path, reference: str, reason: str) -> None:
    before = snapshot(tree)
    with pytest.raises(sm.ProtectedSession, match=reason):
        sm.delete_session(reference)
    assert snapshot(tree) == before
    forced = sm.delete_session(reference, force=True)
    assert forced["removed_keys"]


def test_delete_by_key_removes_every_alias_and_archives(tree: Path) -> None:
    result = sm.delete_session("agent:main:cron:heartbeat:run:r1")
    assert result["deleted"] == "cron-hb"
    assert result["removed_keys"] == ["agent:main:cron:heartbeat", "agent:main:cron:heartbeat:run:r1"]
    assert result["transcript_archived"] is True and result["pg_status_updated"] is False
    assert "agent:main:cron:heartbeat" not in read_index(tree, "main")
    assert not (tree / "main/sessions/cron-hb.jsonl").exists()
    [archive] = archived_names(tree, "main")
    assert ARCHIVE_NAME.match(archive)["file"] == "cron-hb.jsonl"  # type: ignore[index]
    assert (tree / "main/sessions" / archive).read_text() == '{"file": "cron-hb.jsonl"}\n'


def test_delete_dry_run_reports_without_changing(tree: Path) -> None:
    before = snapshot(tree)
    result = sm.delete_session("run-9", dry_run=True)
    assert result["removed_keys"] == ["agent:main:cron:digest:run:r9"]
    assert result["would_archive"] == ["run-9.jsonl", "run-9-topic-7.jsonl"]
    assert snapshot(tree) == before


def test_delete_missing_session_is_not_an_error(tree: Path) -> None:
    before = snapshot(tree)
    result = sm.delete_session("never-was")
    assert result["removed_keys"] == [] and result["transcript_archived"] is False
    assert result["found"] is False and "was found in any index" in result["message"]
    after = snapshot(tree)
    assert {k: v for k, v in after.items() if "sessions/" in k} == {
        k: v for k, v in before.items() if "sessions/" in k
    }
    assert result["history"]["status"] == "queued"  # the service is down here: the mark waits


def test_delete_missing_session_archives_a_leftover_transcript(tree: Path) -> None:
    add_transcript(tree, "main", "ghost.jsonl")
    result = sm.delete_session("ghost")
    assert result["removed_keys"] == [] and result["transcript_archived"] is True
    assert ARCHIVE_NAME.match(result["archived_files"]["ghost.jsonl"])


def test_alias_in_another_session_keeps_shared_transcript(root: Path) -> None:
    write_index(
        root,
        "worker",
        {
            "agent:worker:cron:a": {"sessionId": "s1", "updatedAt": ago(500), "sessionFile": "shared.jsonl"},
            "agent:worker:cron:b": {"sessionId": "s2", "updatedAt": ago(1), "sessionFile": "shared.jsonl"},
        },
    )
    add_transcript(root, "worker", "shared.jsonl")
    result = sm.delete_session("s1")
    assert result["kept_transcripts"] == ["shared.jsonl"] and result["transcript_archived"] is False
    assert (root / "worker/sessions/shared.jsonl").exists()


def test_session_file_outside_the_folder_is_never_touched(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.jsonl"
    outside.write_text("keep me")
    write_index(
        root,
        "worker",
        {
            "agent:worker:cron:a": {
                "sessionId": "s1",
                "updatedAt": ago(500),
                "sessionFile": "../../../outside.jsonl",
            },
            "agent:worker:cron:b": {"sessionId": "s2", "updatedAt": ago(500), "sessionFile": str(outside)},
        },
    )
    result = sm.prune_sessions(max_age_minutes=60)
    assert sorted(result["deleted_ids"]) == ["s1", "s2"]
    assert outside.read_text() == "keep me"


def test_absolute_session_file_of_a_relocated_volume_is_archived(root: Path) -> None:
    write_index(
        root,
        "worker",
        {
            "agent:worker:cron:a": {
                "sessionId": "s1",
                "updatedAt": ago(500),
                "sessionFile": "/app/agents/worker/sessions/custom-name.jsonl",
            },
        },
    )
    add_transcript(root, "worker", "custom-name.jsonl")
    assert list(sm.delete_session("s1")["archived_files"]) == ["custom-name.jsonl"]


def test_rewrite_keeps_format_order_unknown_fields_and_mode(root: Path) -> None:
    store = {
        f"agent:worker:cron:{n}": {
            "sessionId": f"s{n}",
            "updatedAt": ago(500 if n % 2 else 1),
            "ünïcode": "✓ ünïcode",
            "nested": {"list": [], "obj": {}},
        }
        for n in range(6)
    }
    path = write_index(root, "worker", store)
    path.chmod(0o644)
    sm.prune_sessions(max_age_minutes=60)
    expected = {key: value for key, value in store.items() if not int(key[-1]) % 2}
    assert path.read_bytes() == gateway_json(expected)
    assert path.stat().st_mode & 0o777 == 0o600
    assert leftovers(root) == []


def test_one_write_per_agent_per_call(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    writes: list[str] = []
    original = sm.write_atomic
    monkeypatch.setattr(
        sm, "write_atomic", lambda path, data, **rest: (writes.append(path), original(path, data, **rest))
    )
    sm.prune_sessions(max_age_minutes=60)
    indexes = [path for path in writes if path.endswith("sessions.json")]
    assert sorted(Path(p).parent.parent.name for p in indexes) == ["analyst", "main"]


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'"text"', b"", b"\xff\xfe{}"])
def test_unreadable_index_is_reported_and_left_byte_for_byte(tree: Path, content: bytes) -> None:
    broken = tree / "analyst/sessions/sessions.json"
    broken.write_bytes(content)
    before = snapshot(tree)
    result = sm.prune_sessions(max_age_minutes=60)
    assert broken.read_bytes() == content
    assert [(e["agent"], e["error_type"]) for e in result["errors"]] == [("analyst", "store_unreadable")]
    assert {"cron-hb", "run-9"} <= set(result["deleted_ids"])
    with pytest.raises(sm.StoreUnreadable, match="analyst"):
        sm.list_sessions(agent="analyst")
    assert snapshot(tree)["analyst/sessions/sessions.json"] == before["analyst/sessions/sessions.json"]


def test_stats_report_counts_types_oldest_and_disk(tree: Path) -> None:
    add_transcript(tree, "main", "orphan-1.jsonl", "x" * 100)
    (tree / "main/sessions/old.jsonl.deleted.2026-01-01T00-00-00.000Z").write_text("y" * 40)
    stats = sm.get_session_stats(stale_threshold_minutes=60)
    assert stats["total_sessions"] == 12
    assert stats["stale_sessions"] == 9 and stats["active_sessions"] == 3
    assert stats["by_agent"] == {"analyst": 6, "main": 6}
    assert stats["by_type"]["cron"] == 2 and stats["by_type"]["subagent"] == 3
    assert stats["oldest_session"]["id"] in {"an-nots"}
    assert stats["orphaned_transcripts"] == 1
    disk = stats["disk"]["main"]
    assert disk["archive_files"] == 1 and disk["archive_bytes"] == 40
    assert disk["orphaned_bytes"] == 100 and disk["transcript_files"] == 8
    assert disk["index_bytes"] == (tree / "main/sessions/sessions.json").stat().st_size
    assert stats["stale_threshold_minutes"] == 60


def test_cleanup_after_delegation_deletes_the_subagent(tree: Path) -> None:
    result = sm.cleanup_after_delegation("sub-1")
    assert result["removed_keys"] == ["agent:main:subagent:abc"] and result["transcript_archived"]
    with pytest.raises(sm.ProtectedSession):
        sm.cleanup_after_delegation("sub-2")


def test_same_session_id_in_two_agents_needs_an_agent(root: Path) -> None:
    for agent in ("one", "two"):
        write_index(root, agent, {f"agent:{agent}:cron:x": {"sessionId": "dup", "updatedAt": ago(500)}})
    for agent in ("one", "two"):
        add_transcript(root, agent, "nothing-to-do-with-dup.jsonl")
    with pytest.raises(sm.InvalidArgument, match="one, two"):
        sm.delete_session("dup")
    assert sm.delete_session("dup", agent="two")["agentId"] == "two"
    assert "agent:one:cron:x" in read_index(root, "one")


def test_sqlite_era_agent_without_its_cli_is_an_error_and_never_written(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENCLAW_CLI", str(tree / "no-such-openclaw"))
    sqlite_era_agent(tree, "analyst")
    before = snapshot(tree)
    listing = sm.list_sessions()
    assert listing["agents"] == {"main": {"sessions": 6, "store": "json"}}
    assert [(e["agent"], e["error_type"]) for e in listing["errors"]] == [("analyst", "gateway_unavailable")]
    assert "OPENCLAW_CLI" in listing["errors"][0]["error"]
    result = sm.prune_sessions(max_age_minutes=60)
    assert [e["error_type"] for e in result["errors"]] == ["gateway_unavailable"]
    assert not any(row.startswith("an-") for row in result["deleted_ids"])
    with pytest.raises(sm.GatewayUnavailable, match="OPENCLAW_CLI"):
        sm.delete_session("an-cron", agent="analyst")
    after = snapshot(tree)
    assert {k: v for k, v in after.items() if k.startswith("analyst/")} == {
        k: v for k, v in before.items() if k.startswith("analyst/")
    }


def test_missing_agents_root_names_the_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ARIA_AGENTS_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(sm.ConfigurationError, match="ARIA_AGENTS_DIR"):
        sm.list_sessions()


def test_symlinked_agent_leading_out_is_refused(root: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    write_index(elsewhere, "x", {"agent:x:cron:a": {"sessionId": "s", "updatedAt": ago(500)}})
    os.symlink(elsewhere / "x", root / "evil")
    assert sm.list_sessions()["agents"] == {}
    with pytest.raises(sm.UnsafePath):
        sm.prune_sessions(agent="evil")
    assert json.loads((elsewhere / "x/sessions/sessions.json").read_text())


@pytest.mark.parametrize(
    ("reference", "deleted_first", "found", "message"),
    [
        ("sub-1", False, True, "Session sub-1 removed from agent main"),
        ("sub-1", True, True, "Session sub-1 is not in any index (already removed); "),
        ("ghost-1", False, True, "Session ghost-1 is not in any index; 1 leftover transcripts"),
        ("no-such-id", False, False, "No session no-such-id was found in any index, nor in the audit log"),
    ],
)
def test_a_delete_says_whether_it_found_the_session(
    tree: Path, reference: str, deleted_first: bool, found: bool, message: str
) -> None:
    """A typo answers rc 0 like any repeated delete, but says plainly that nothing was found."""
    add_transcript(tree, "main", "ghost-1.jsonl", '{"left": "behind"}\n')
    if deleted_first:
        sm.delete_session(reference)

    answer = sm.delete_session(reference)

    assert (answer["deleted"], answer["found"]) == (reference, found)
    assert answer["message"].startswith(message), answer["message"]
