"""Answers an agent can read (issue 8): bounded by default, exact totals, complete on request."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hostile
import pytest
from helpers import (
    REPO,
    add_transcript,
    ago,
    closed_port,
    one_stale_subagent,
    run_cli,
    write_index,
)

import session_manager as sm

BUDGET = 32 * 1024
AGENTS = ("main", "analyst", "aria-talk", "aria-memeothy")
PER_AGENT = 2500


def build_large_tree(root: Path) -> dict[str, list[str]]:
    """4 x 2,500 sessions: cron runs, sub-agents and chats, 80% stale, some aliases and long labels."""
    stale: dict[str, list[str]] = {}
    for agent in AGENTS:
        store: dict[str, Any] = {f"agent:{agent}:main": {"sessionId": f"{agent}-main", "updatedAt": ago(1)}}
        for n in range(PER_AGENT - 1):
            kind = (f"cron:job-{n % 50}:run:{n}", f"subagent:{n:08x}", f"cron:job-{n}")[n % 3]
            session_id = f"{agent}-{n:05d}"
            old = n % 5 != 0
            store[f"agent:{agent}:{kind}"] = {
                "sessionId": session_id,
                "updatedAt": ago(300 + n) if old else ago(5),
                "label": f"{'a long label ' * 30}{n}",
                "model": "gpt-4o-mini",
                "contextTokens": n,
            }
            if n % 7 == 0:
                store[f"agent:{agent}:hook:{n}"] = {"sessionId": session_id, "updatedAt": ago(300 + n)}
            # In the main agent only cron and sub-agent sessions may go (a hook alias protects one).
            if old and (agent != "main" or (n % 7 != 0 and kind.split(":")[0] in ("cron", "subagent"))):
                stale.setdefault(agent, []).append(session_id)
            if n % 10 == 0:
                add_transcript(root, agent, f"{session_id}.jsonl", age_minutes=300)
        write_index(root, agent, store)
    return stale


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, list[str]]]:
    root = tmp_path_factory.mktemp("large") / "agents"
    root.mkdir()
    return root, build_large_tree(root)


@pytest.fixture
def large(
    pristine: tuple[Path, dict[str, list[str]]], tmp_path: Path
) -> Iterator[tuple[Path, dict[str, list[str]]]]:
    """A fresh copy of the 4 x 2,500 tree, with the skill's environment pointing at it."""
    root = tmp_path / "agents"
    shutil.copytree(pristine[0], root)
    yield root, pristine[1]


def call(root: Path, function: str, arguments: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
    """One call as the agent makes it; asserts the printed answer fits the budget."""
    env = {
        **os.environ,
        "ARIA_AGENTS_DIR": str(root),
        "ARIA_API_URL": f"http://127.0.0.1:{closed_port()}",
        "SESSION_HISTORY_BUDGET_SECONDS": "2",
    }
    env.pop("ARIA_SESSION_ID", None)
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "run_skill.py"),
            "session_manager",
            function,
            json.dumps(arguments or {}),
        ],
        capture_output=True,
        env=env,
        timeout=300,
    )
    size = len(completed.stdout)
    answer: dict[str, Any] = json.loads(completed.stdout)
    full = (arguments or {}).get("detail") == "full" or (arguments or {}).get("limit") == "all"
    assert full or size <= BUDGET, f"{function} printed {size} bytes"
    return completed.returncode, answer


def test_every_default_answer_fits_and_counts_stay_exact(large: tuple[Path, dict[str, list[str]]]) -> None:
    root, stale = large
    total = len(AGENTS) * PER_AGENT
    doomed = sum(len(ids) for ids in stale.values())
    code, stats = call(root, "get_session_stats")
    assert code == 0 and stats["total_sessions"] == total
    code, listing = call(root, "list_sessions")
    assert (listing["session_count"], listing["has_more"], listing["next_offset"]) == (
        total,
        True,
        listing["returned"],
    )
    code, dry = call(root, "prune_sessions", {"dry_run": True})
    assert (dry["pruned_count"], dry["kept_count"]) == (doomed, total - doomed)
    assert dry["truncated"]["deleted_ids"] == doomed - len(dry["deleted_ids"]) and "detail" in dry["message"]
    code, pruned = call(root, "prune_sessions")
    assert code == 0 and pruned["pruned_count"] == doomed and pruned["history"] == {"queued": doomed}
    assert len(pruned["history_by_session"]) + pruned["truncated"]["history_by_session"] == doomed
    assert "list_deleted" in pruned["message"]
    for function, arguments in (
        ("list_deleted", {}),
        ("sync_pending", {}),
        ("cleanup_orphans", {"dry_run": True}),
        ("restore_session", {"session_id": stale["main"][0]}),
        ("delete_session", {"session_id": stale["main"][0]}),
        ("cleanup_after_delegation", {"session_id": stale["analyst"][1]}),
        ("get_session_stats", {}),
    ):
        code, answer = call(root, function, arguments)
        assert code == 0, answer


def test_paging_visits_every_session_exactly_once(large: tuple[Path, dict[str, list[str]]]) -> None:
    root, _ = large
    seen: list[str] = []
    offset: int | None = 0
    while offset is not None:
        code, page = call(root, "list_sessions", {"limit": 1000, "offset": offset, "detail": "full"})
        assert code == 0 and page["offset"] == offset and page["returned"] == len(page["sessions"])
        assert page["session_count"] == len(AGENTS) * PER_AGENT
        seen += [f"{row['agentId']}/{row['id']}" for row in page["sessions"]]
        offset = page["next_offset"]
    assert len(seen) == len(set(seen)) == len(AGENTS) * PER_AGENT


def test_a_real_prune_in_full_and_its_record(large: tuple[Path, dict[str, list[str]]]) -> None:
    root, stale = large
    doomed = {sid for ids in stale.values() for sid in ids}
    code, pruned = call(root, "prune_sessions", {"detail": "full"})
    assert code == 0 and "truncated" not in pruned
    assert len(pruned["deleted_ids"]) == pruned["pruned_count"] == len(doomed)
    assert set(pruned["deleted_ids"]) == doomed and len(pruned["history_by_session"]) == len(doomed)
    recorded: set[str] = set()
    offset: int | None = 0
    while offset is not None:
        code, page = call(root, "list_deleted", {"limit": 5000, "offset": offset, "detail": "full"})
        recorded |= {row["session_id"] for row in page["deleted"]}
        offset = page["next_offset"]
    assert recorded == doomed


# --- The rules, as small tables ----------------------------------------------------------------


def test_the_order_is_newest_first_then_agent_then_session_id(root: Path) -> None:
    same = ago(10)
    write_index(root, "b", {"agent:b:cron:x": {"sessionId": "x", "updatedAt": same}})
    write_index(
        root,
        "a",
        {
            "agent:a:cron:z": {"sessionId": "z", "updatedAt": same},
            "agent:a:cron:y": {"sessionId": "y", "updatedAt": same},
            "agent:a:cron:new": {"sessionId": "new", "updatedAt": ago(1)},
            "agent:a:cron:never": {"sessionId": "never"},
        },
    )
    rows = sm.list_sessions()["sessions"]
    assert [(row["agentId"], row["id"]) for row in rows] == [
        ("a", "new"),
        ("a", "y"),
        ("a", "z"),
        ("b", "x"),
        ("a", "never"),
    ]


# (min_idle_minutes, sessions listed)
IDLE_FILTER = [
    (None, ["fresh", "hour", "day", "never"]),
    (30, ["hour", "day", "never"]),
    (120, ["day", "never"]),
]


@pytest.mark.parametrize(("minutes", "listed"), IDLE_FILTER)
def test_min_idle_minutes_keeps_sessions_idle_at_least_that_long(
    root: Path, minutes: float | None, listed: list[str]
) -> None:
    write_index(
        root,
        "main",
        {
            "agent:main:cron:fresh": {"sessionId": "fresh", "updatedAt": ago(1)},
            "agent:main:cron:hour": {"sessionId": "hour", "updatedAt": ago(60)},
            "agent:main:cron:day": {"sessionId": "day", "updatedAt": ago(1440)},
            "agent:main:cron:never": {"sessionId": "never"},
        },
    )
    result = sm.list_sessions(min_idle_minutes=minutes)
    assert [row["id"] for row in result["sessions"]] == listed and result["session_count"] == len(listed)


# (limit, offset, ids returned, has_more, next_offset) over five sessions s0 (newest) .. s4
PAGES = [
    (2, 0, ["s0", "s1"], True, 2),
    (2, 2, ["s2", "s3"], True, 4),
    (2, 4, ["s4"], False, None),
    (10, 0, ["s0", "s1", "s2", "s3", "s4"], False, None),
    ("all", 3, ["s3", "s4"], False, None),
    (3, 9, [], False, None),
]


@pytest.mark.parametrize(("limit", "offset", "ids", "more", "next_offset"), PAGES)
def test_pages(
    root: Path, limit: Any, offset: int, ids: list[str], more: bool, next_offset: int | None
) -> None:
    write_index(
        root, "main", {f"agent:main:cron:{n}": {"sessionId": f"s{n}", "updatedAt": ago(n)} for n in range(5)}
    )
    page = sm.list_sessions(limit=limit, offset=offset)
    assert [row["id"] for row in page["sessions"]] == ids
    assert (page["returned"], page["has_more"], page["next_offset"], page["session_count"]) == (
        len(ids),
        more,
        next_offset,
        5,
    )


@pytest.mark.parametrize(
    ("arguments", "complaint"),
    [
        ({"limit": 0}, "limit must be"),
        ({"limit": 10_001}, "limit must be"),
        ({"limit": "ten"}, "limit must be"),
        ({"limit": True}, "limit must be"),
        ({"offset": -1}, "offset must be"),
        ({"min_idle_minutes": -5}, "at least 0"),
        ({"detail": "everything"}, 'detail must be "summary"'),
    ],
)
def test_paging_arguments_are_checked(root: Path, arguments: dict[str, Any], complaint: str) -> None:
    with pytest.raises(sm.InvalidArgument, match=complaint):
        sm.list_sessions(**arguments)


def test_a_row_cuts_long_texts_and_long_lists_unless_full(root: Path) -> None:
    store = {
        f"agent:main:cron:alias{n}": {"sessionId": "big", "updatedAt": ago(500), "label": "x" * 5000}
        for n in range(30)
    }
    write_index(root, "main", store)
    for n in range(15):
        add_transcript(root, "main", f"big-topic-{n}.jsonl")
    [row] = sm.list_sessions()["sessions"]
    assert len(row["keys"]) == 10 and len(row["transcripts"]) == 10 and len(row["label"]) == 200
    assert row["truncated"] == {"keys": 20, "transcripts": 5}
    [whole] = sm.list_sessions(detail="full")["sessions"]
    assert len(whole["keys"]) == 30 and len(whole["transcripts"]) == 15 and "truncated" not in whole


# (items in each list, items shown, truncated)
FITS = [
    ({"a": 3, "b": 0}, {"a": 3, "b": 0}, None),
    ({"a": 250}, {"a": 100}, {"a": 150}),
    ({"a": 150, "b": 150}, {"a": 100, "b": 100}, {"a": 50, "b": 50}),
]


@pytest.mark.parametrize(("sizes", "shown", "truncated"), FITS)
def test_fit_answer_caps_lists_at_a_hundred(
    sizes: dict[str, int], shown: dict[str, int], truncated: dict[str, int] | None
) -> None:
    answer = sm._fit_answer({name: list(range(n)) for name, n in sizes.items()}, tuple(sizes), False, "hint")
    assert {name: len(answer[name]) for name in sizes} == shown
    assert answer.get("truncated") == truncated
    assert ("hint" in answer.get("message", "")) is (truncated is not None)


def test_fit_answer_shrinks_the_largest_list_until_the_answer_fits() -> None:
    answer = {"big": ["x" * 900] * 100, "small": ["y" * 10] * 100, "count": 200}
    fitted = sm._fit_answer(answer, ("big", "small"), False, "hint")
    assert len(json.dumps(fitted, separators=(",", ":"))) <= BUDGET
    assert (len(fitted["big"]), len(fitted["small"])) == (25, 100)
    assert fitted["truncated"] == {"big": 75} and fitted["count"] == 200


def test_fit_answer_leaves_a_full_answer_whole() -> None:
    answer = {"big": list(range(5000))}
    assert sm._fit_answer(dict(answer), ("big",), True, "hint") == answer


SKILL = "session_manager"


BUDGET_BYTES = 32 * 1024


def nested_page(target: str) -> bytes:
    return b'{"items": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize("world", ["hostile-page", "idna-host", "odd-cli-answer"])
def test_an_error_after_the_commit_never_replaces_the_deletions_answer(
    root: Path,
    service: Callable[..., hostile.HostileService],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    world: str,
) -> None:
    one_stale_subagent(root)
    env: dict[str, str] = {}
    if world == "hostile-page":
        env["ARIA_API_URL"] = service(nested_page, listing=True).url
    elif world == "idna-host":
        env["ARIA_API_URL"] = "http://" + "a" * 64 + ".invalid:1"
    code, answer, _ = run_cli(SKILL, "delete_session", '{"session_id": "sub-1"}', env=env)
    assert code == 0 and answer["removed_keys"] == ["agent:main:subagent:sub-1"], answer
    assert answer["history"]["status"] == "queued"
    assert sm.list_deleted()["total"] == 1


def many_agents(root: Path, count: int, store: Callable[[int], dict[str, Any]]) -> None:
    for n in range(count):
        write_index(root, f"agent-{n:05d}", store(n))


@pytest.mark.parametrize(
    ("world", "call"),
    [
        ("10000-agents", ("list_sessions", {"agent": "nobody"})),
        ("one-session-in-3000-agents", ("delete_session", {"session_id": "dup"})),
        ("60kb-session-id", ("get_session_stats", {})),
        ("60kb-session-id", ("delete_session", {"session_id": "agent:main:subagent:big"})),
        ("50kb-model", ("get_session_stats", {})),
        ("100kb-key", ("delete_session", {"session_id": "tg-1"})),
        ("none", ("list_sessions", {"agent": "x" * 100_000})),
        ("none", ("delete_session", {"session_id": "x" * 100_000})),
        ("none", ("list_sessions", {"detail": "x" * 100_000})),
        ("none", ("list_sessions", {"x" * 100_000: 1})),
        ("none", ("no_such_function_" + "x" * 100_000, {})),
    ],
)
def test_no_answer_passes_32_kib(root: Path, world: str, call: tuple[str, dict[str, Any]]) -> None:
    big = "x" * 60_000
    if world == "10000-agents":
        many_agents(root, 10_000, lambda n: {})
    elif world == "one-session-in-3000-agents":
        for n in range(3_000):
            name = f"agent-with-a-rather-long-name-{n:05d}"
            write_index(root, name, {f"agent:{name}:subagent:d": {"sessionId": "dup", "updatedAt": ago(5)}})
    elif world == "60kb-session-id":
        write_index(root, "main", {"agent:main:subagent:big": {"sessionId": big, "updatedAt": ago(5)}})
    elif world == "50kb-model":
        model = {"name": "m", "notes": "n" * 50_000}
        write_index(
            root, "main", {"agent:main:subagent:m": {"sessionId": "m", "updatedAt": ago(5), "model": model}}
        )
    elif world == "100kb-key":
        write_index(
            root, "main", {"agent:main:telegram:" + "x" * 100_000: {"sessionId": "tg-1", "updatedAt": ago(5)}}
        )
    else:
        write_index(root, "main", {})
    function, arguments = call
    completed = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), SKILL, function, json.dumps(arguments)],
        capture_output=True,
        env=os.environ,
        timeout=120,
    )
    assert json.loads(completed.stdout) and len(completed.stdout) <= BUDGET_BYTES


def test_a_page_always_advances_however_large_a_session(root: Path) -> None:
    store = {
        f"agent:main:subagent:{n}": {"sessionId": f"{n}-" + "x" * 60_000, "updatedAt": ago(n)}
        for n in range(3)
    }
    write_index(root, "main", store)
    seen = []
    for offset in range(3):
        code, answer, _ = run_cli(SKILL, "list_sessions", json.dumps({"limit": 1, "offset": offset}))
        assert (
            code == 0
            and answer["returned"] == 1
            and answer["next_offset"] == (offset + 1 if offset < 2 else None)
        )
        assert len(json.dumps(answer, ensure_ascii=False, separators=(",", ":")).encode()) <= BUDGET_BYTES
        seen.append(answer["sessions"][0]["id"])
    assert len(set(seen)) == 3
