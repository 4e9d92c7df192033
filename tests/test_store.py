"""sessions.json as the gateway writes it: exact bytes after a rewrite, refusal of anything else."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
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
