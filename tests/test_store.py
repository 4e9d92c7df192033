"""sessions.json as the gateway writes it: exact bytes after a rewrite, refusal of anything else."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import (
    ago,
    fifo,
    one_stale_subagent,
    read_index,
    run_cli,
    run_raw,
    stale_agent,
    strict_json,
    write_index,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import session_manager as sm

NODE = shutil.which("node")

RICH_STORE: dict[str, Any] = {
    "agent:main:main": {
        "sessionId": "a",
        "updatedAt": 1764000000000,
        "ratio": 0.1,
        "tiny": 1e-7,
        "huge": 1e21,
        "negzero": -0.0,
        "text": 'héllo ✓ \u0001 \n " \\ / \u2028 😀',
    },
    "agent:main:cron:x": {"sessionId": "b", "list": [], "obj": {}, "deep": [[], {}, [{"q": 1}]]},
    "agent:main:subagent:y": {"sessionId": "c", "skillsSnapshot": {"prompt": "x" * 300}},
    "global": {"sessionId": "d", "n": None, "t": True, "f": False},
}


def node_stringify(store: dict[str, Any]) -> bytes:
    """What the gateway itself writes for this store: JSON.stringify(store, null, 2)."""
    assert NODE is not None
    script = (
        "let s='';process.stdin.on('data',d=>s+=d).on('end',()=>process.stdout.write("
        "JSON.stringify(JSON.parse(s), null, 2)))"
    )
    return subprocess.run(
        [NODE, "-e", script], input=json.dumps(store).encode(), capture_output=True, check=True
    ).stdout


def light(store: dict[str, Any]) -> dict[str, Any]:
    """A store as a parse holds it: only the fields the skill reads."""
    return {
        key: sm._project_entry(entry) if isinstance(entry, dict) else entry for key, entry in store.items()
    }


def paths_for(tmp_path: Path) -> sm.AgentPaths:
    folder = tmp_path / "sessions"
    folder.mkdir(exist_ok=True)
    return sm.AgentPaths("main", str(folder), str(folder.parent.parent))


@pytest.mark.skipif(
    NODE is None, reason="Node.js is not installed, so the gateway's own output is unavailable"
)
@pytest.mark.parametrize(
    "removed", [[], ["agent:main:cron:x"], ["agent:main:main", "global"], list(RICH_STORE)]
)
def test_rewrite_equals_what_the_gateway_writes(tmp_path: Path, removed: list[str]) -> None:
    paths = paths_for(tmp_path)
    Path(paths.index).write_bytes(node_stringify(RICH_STORE))
    document = sm._read_index_document(paths)
    assert document.entries == light(json.loads(Path(paths.index).read_text("utf-8")))
    assert json.loads(document.value_text("agent:main:subagent:y")) == RICH_STORE["agent:main:subagent:y"]
    for key in removed:
        document.remove(key)
    expected = node_stringify({k: v for k, v in RICH_STORE.items() if k not in removed})
    assert document.render() == expected


@pytest.mark.skipif(
    NODE is None, reason="Node.js is not installed, so the gateway's own output is unavailable"
)
def test_added_entries_are_written_as_the_gateway_would(tmp_path: Path) -> None:
    paths = paths_for(tmp_path)
    Path(paths.index).write_bytes(node_stringify({"global": RICH_STORE["global"]}))
    document = sm._read_index_document(paths)
    document.add("agent:main:cron:x", RICH_STORE["agent:main:cron:x"])
    assert document.render() == node_stringify(
        {"global": RICH_STORE["global"], "agent:main:cron:x": RICH_STORE["agent:main:cron:x"]}
    )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=12,
)
stores = st.dictionaries(st.text(min_size=1, max_size=12), json_values, max_size=8)


@settings(max_examples=300, deadline=None)
@given(store=stores, data=st.data())
def test_removing_keys_keeps_every_other_entry_byte_for_byte(
    store: dict[str, Any], data: st.DataObject
) -> None:
    text = json.dumps(store, indent=2, ensure_ascii=False)
    removed = data.draw(st.lists(st.sampled_from(sorted(store)), unique=True) if store else st.just([]))
    document = sm.parse_index_text(text, "sessions.json")
    assert document.entries == light(store)
    for key in removed:
        document.remove(key)
    kept = {k: v for k, v in store.items() if k not in removed}
    assert document.render() == json.dumps(kept, indent=2, ensure_ascii=False).encode()


@pytest.mark.parametrize("text", ['{"a": 1, "a": 2}', ' \n{"a" :1 ,"b":[1,2]}\n ', '{"a":{"b":{}}}'])
def test_unusual_but_valid_indexes_are_read_as_json_does(tmp_path: Path, text: str) -> None:
    paths = paths_for(tmp_path)
    Path(paths.index).write_text(text)
    document = sm._read_index_document(paths)
    assert document.entries == light(json.loads(text))
    assert json.loads(document.render()) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "not valid JSON"),
        ("[]", "holds a list"),
        ("3", "holds a number"),
        ("", "not valid JSON"),
        ('{"a": 1} trailing', "not valid JSON"),
    ],
)
def test_what_is_not_an_object_of_sessions_is_refused(tmp_path: Path, text: str, message: str) -> None:
    paths = paths_for(tmp_path)
    Path(paths.index).write_text(text)
    with pytest.raises(sm.StoreUnreadable, match=message):
        sm._read_index_document(paths)
    with pytest.raises(sm.StoreUnreadable, match=message):
        sm._load_index(paths)


def test_missing_index_is_empty_and_written_as_the_gateway_writes_empty(tmp_path: Path) -> None:
    document = sm._read_index_document(paths_for(tmp_path))
    assert document.entries == {} and document.render() == b"{}"


def test_atomic_write_leaves_no_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "sessions.json"
    sm.write_atomic(str(target), b"{}")
    assert [p.name for p in tmp_path.iterdir()] == ["sessions.json"]
    assert target.stat().st_mode & 0o777 == 0o600


SKILL = "session_manager"


# (where the FIFO is, the call, what its answer must say)
FIFOS: list[tuple[str, str, str, Callable[[dict[str, Any]], bool]]] = [
    (
        "main/sessions/sessions.json",
        "list_sessions",
        "{}",
        lambda a: a["errors"][0]["error_type"] == "store_unreadable",
    ),
    (
        "main/sessions/sessions.json",
        "prune_sessions",
        "{}",
        lambda a: a["errors"][0]["error_type"] == "store_unreadable",
    ),
    (
        "main/sessions/sessions.json.lock",
        "prune_sessions",
        '{"agent": "main"}',
        lambda a: a["error_type"] == "lock_timeout",
    ),
    (
        "main/sessions/main-old-0.jsonl.lock",
        "prune_sessions",
        '{"max_age_minutes": 60}',
        lambda a: a["pruned_count"] == 5,
    ),
    (
        ".session-manager/audit.jsonl",
        "list_deleted",
        "{}",
        lambda a: a["error_type"] == "store_unreadable" and "move it aside" in a["error"],
    ),
    (
        ".session-manager/history-outbox.jsonl",
        "get_session_stats",
        "{}",
        lambda a: a["error_type"] == "store_unreadable" and "move it aside" in a["error"],
    ),
    (
        ".session-manager/audit.jsonl.flock",
        "prune_sessions",
        '{"agent": "main"}',
        lambda a: a["error_type"] == "store_write_failed",
    ),
]


@pytest.mark.parametrize(("where", "function", "arguments", "answer_ok"), FIFOS)
def test_a_fifo_never_blocks_a_call(
    root: Path, where: str, function: str, arguments: str, answer_ok: Callable[[dict[str, Any]], bool]
) -> None:
    stale_agent(root)
    if where.endswith("sessions.json"):
        (root / where).unlink()
    fifo(root / where)
    started = time.monotonic()
    _, output = run_raw(SKILL, function, arguments, env={"SESSION_LOCK_TIMEOUT_SECONDS": "1"}, timeout=30)
    assert time.monotonic() - started < 20
    assert answer_ok(strict_json(output.decode("utf-8"))), output


def cut_label_index(age: int) -> str:
    """Two entries whose labels were cut mid-emoji, as Node writes them: a lone surrogate escape."""
    store = {
        "agent:main:cron:cut": {"sessionId": "cut", "updatedAt": ago(age), "label": "ok HALF"},
        "agent:main:cron:keep": {"sessionId": "keep", "updatedAt": ago(1), "label": "HALF"},
    }
    return json.dumps(store, indent=2).replace("HALF", "\\ud83d")


@pytest.mark.parametrize("age", [1, 300])
def test_a_label_cut_mid_emoji_is_listed_and_pruned(root: Path, age: int) -> None:
    path = root / "main" / "sessions" / "sessions.json"
    path.parent.mkdir(parents=True)
    path.write_text(cut_label_index(age))
    exit_code, output = run_raw(SKILL, "list_sessions", "{}")
    rows = strict_json(output.decode("utf-8"))["sessions"]
    assert exit_code == 0 and {row["label"] for row in rows} == {"ok \ufffd", "\ufffd"}
    exit_code, output = run_raw(SKILL, "prune_sessions", '{"max_age_minutes": 60}')
    assert exit_code == 0 and strict_json(output.decode("utf-8"))["pruned_count"] == (1 if age > 60 else 0)
    assert path.read_text().count('"label": "\\ud83d"') == 1  # the kept entry, byte for byte
    if age > 60:
        restored = sm.restore_session("cut")
        assert restored["restored_keys"] == ["agent:main:cron:cut"]
        assert '"label": "ok \\ud83d"' in path.read_text()


# (what the index holds, whether it is JSON the gateway reads)
NOT_JSON = [
    ('{"agent:main:cron:a": {"sessionId": "a", "updatedAt": NaN}}', "NaN"),
    ('{"agent:main:cron:a": {"sessionId": "a", "contextTokens": Infinity}}', "Infinity"),
    ('{"agent:main:cron:a": {"sessionId": "a", "contextTokens": -Infinity}}', "Infinity"),
    ('{"agent:main:cron:a": {"sessionId": "a", "deep": ' + "[" * 100_000 + "]" * 100_000 + "}}", "nested"),
]


@pytest.mark.parametrize(("text", "why"), NOT_JSON, ids=[why for _, why in NOT_JSON])
def test_an_index_that_is_not_json_is_reported_and_left_alone(root: Path, text: str, why: str) -> None:
    stale_agent(root, "analyst")
    path = root / "main" / "sessions" / "sessions.json"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    before = path.read_bytes()
    for function in ("list_sessions", "prune_sessions"):
        exit_code, output = run_raw(
            SKILL, function, '{"max_age_minutes": 60}' if function == "prune_sessions" else "{}"
        )
        answer = strict_json(output.decode("utf-8"))
        assert exit_code == 0 and [e["agent"] for e in answer["errors"]] == ["main"]
        assert answer["errors"][0]["error_type"] == "store_unreadable"
    assert path.read_bytes() == before
    assert read_index(root, "analyst") == {}


def test_a_number_too_large_for_a_double_prints_as_null(root: Path) -> None:
    path = root / "main" / "sessions" / "sessions.json"
    path.parent.mkdir(parents=True)
    store = {"agent:main:cron:a": {"sessionId": "a", "updatedAt": ago(1), "contextTokens": "BIG"}}
    path.write_text(json.dumps(store).replace('"BIG"', "1e400"))
    exit_code, output = run_raw(SKILL, "list_sessions", "{}")
    assert exit_code == 0 and strict_json(output.decode())["sessions"][0]["contextTokens"] is None


def test_an_index_linked_out_of_the_root_is_refused(root: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere.json"
    outside.write_text(json.dumps({"agent:main:cron:x": {"sessionId": "x", "updatedAt": ago(300)}}))
    folder = root / "main" / "sessions"
    folder.mkdir(parents=True)
    (folder / "sessions.json").symlink_to(outside)
    stale_agent(root, "analyst", count=1)
    before = outside.read_bytes()
    for function in ("list_sessions", "prune_sessions", "get_session_stats"):
        answer = sm.FUNCTIONS[function]()
        assert [(e["agent"], e["error_type"]) for e in answer["errors"]] == [("main", "store_unreadable")]
    with pytest.raises(sm.StoreUnreadable, match="outside the agents root"):
        sm.delete_session("x", agent="main")
    assert outside.read_bytes() == before and (folder / "sessions.json").is_symlink()


def test_an_index_linked_inside_the_root_still_works(root: Path) -> None:
    stale_agent(root, "shared", count=2)
    folder = root / "main" / "sessions"
    folder.mkdir(parents=True)
    (folder / "sessions.json").symlink_to(root / "shared" / "sessions" / "sessions.json")
    assert sm.list_sessions(agent="main")["session_count"] == 2


def test_a_key_in_another_agents_index_is_found_there(root: Path) -> None:
    write_index(root, "main", {})
    write_index(root, "analyst", {"agent:main:subagent:x": {"sessionId": "x", "updatedAt": ago(5)}})
    code, answer, _ = run_cli(SKILL, "delete_session", '{"session_id": "agent:main:subagent:x"}')
    assert code == 0 and "any index" not in answer["message"] and 'pass "agent"' in answer["message"]
    code, answer, _ = run_cli(
        SKILL, "delete_session", '{"session_id": "agent:main:subagent:x", "agent": "analyst"}'
    )
    assert code == 0 and answer["removed_keys"] == ["agent:main:subagent:x"]


def test_an_index_that_is_a_link_stays_a_link(root: Path) -> None:
    one_stale_subagent(root)
    folder = root / "main" / "sessions"
    (folder / "sessions.json").rename(folder / "store.json")
    (folder / "sessions.json").symlink_to("store.json")
    (folder / "store.json.lock").write_text(
        json.dumps({"pid": os.getpid(), "createdAt": "2099-01-01T00:00:00.000Z"})
    )
    code, answer, _ = run_cli(
        SKILL, "delete_session", '{"session_id": "sub-1"}', env={"SESSION_LOCK_TIMEOUT_SECONDS": "1"}
    )
    assert (code, answer["error_type"]) == (1, "lock_timeout")  # the gateway holds the lock beside the file
    (folder / "store.json.lock").unlink()
    code, answer, _ = run_cli(SKILL, "delete_session", '{"session_id": "sub-1"}')
    assert (
        code == 0
        and (folder / "sessions.json").is_symlink()
        and json.loads((folder / "store.json").read_text()) == {}
    )
