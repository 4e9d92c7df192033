"""The decision rules, one table each: what a key is, what is protected, what is stale, what an
archive is called, and how an answer is cut. Each row is an input and the decision it must give."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import session_manager as sm

NOW = datetime(2025, 11, 25, 12, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("key", "session_type"),
    [
        ("agent:main:main", "main"),
        ("global", "global"),
        ("agent:main:cron:heartbeat", "cron"),
        ("agent:main:cron:heartbeat:run:7d1e", "cron_run"),
        ("agent:main:cron:run", "cron"),  # a job named "run" is no run
        ("agent:main:subagent:4b7c", "subagent"),
        ("agent:main:telegram:direct:5521", "telegram"),
        ("agent:main:main:thread:9", "main"),
        ("agent:main", "other"),
        ("agent:main:", "other"),
        ("not-a-key", "other"),
    ],
)
def test_session_type_of_a_key(key: str, session_type: str) -> None:
    assert sm._session_type_of(key) == session_type


def config(running: str | None = None) -> sm.Config:
    return sm.Config("/agents", "http://127.0.0.1:1", None, running, 60.0, 10.0, "/state", 5.0, 8)


def session(agent: str, session_id: str, *keys: str, idle_minutes: float | None = None) -> sm.Session:
    made = sm.Session(agent, session_id, list(keys), {key: {} for key in keys})
    made.last_active = None if idle_minutes is None else NOW - timedelta(minutes=idle_minutes)
    return made


@pytest.mark.parametrize(
    ("agent", "keys", "running", "protection"),
    [
        ("main", ["agent:main:main"], None, "main_session"),
        ("analyst", ["agent:analyst:main"], None, "main_session"),
        ("main", ["global"], None, "global_session"),
        ("main", ["agent:main:telegram:direct:1"], None, "main_agent_conversation"),
        ("analyst", ["agent:analyst:telegram:direct:1"], None, None),
        ("main", ["agent:main:cron:a"], None, None),
        ("main", ["agent:main:cron:a:run:1"], None, None),
        ("main", ["agent:main:subagent:x"], None, None),
        ("main", ["agent:main:subagent:x", "agent:main:main"], None, "main_session"),  # any key protects
        ("main", ["agent:main:subagent:x"], "s-1", "running_conversation"),
        ("main", ["agent:main:subagent:x"], "agent:main:subagent:x", "running_conversation"),
        ("main", ["agent:main:subagent:x"], "someone-else", None),
    ],
)
def test_protection_of_a_session(
    agent: str, keys: list[str], running: str | None, protection: str | None
) -> None:
    paths = sm.AgentPaths(agent, f"/agents/{agent}/sessions", "/agents")
    store = sm.JsonStore(sm.Call(config(running)), paths)
    found = store.protection_by_rules(session(agent, "s-1", *keys), ())
    assert found == protection


@pytest.mark.parametrize(
    ("idle_minutes", "threshold", "stale"),
    [
        (61, 60, True),
        (60, 60, False),  # stale means idle for longer than the threshold
        (59, 60, False),
        (None, 60, True),  # never active: nothing says it is in use
        (0.5, 0, True),
        (10_000, 20_000, False),
    ],
)
def test_staleness(idle_minutes: float | None, threshold: float, stale: bool) -> None:
    assert (
        session("main", "s", "agent:main:cron:a", idle_minutes=idle_minutes).is_stale(NOW, threshold) is stale
    )


@pytest.mark.parametrize(
    ("moment", "stamp"),
    [
        (datetime(2026, 9, 1, 8, 15, tzinfo=timezone.utc), "2026-09-01T08-15-00.000Z"),
        (datetime(2026, 9, 1, 8, 15, 7, 123456, tzinfo=timezone.utc), "2026-09-01T08-15-07.123Z"),
        (datetime(2026, 9, 1, 10, 15, tzinfo=timezone(timedelta(hours=2))), "2026-09-01T08-15-00.000Z"),
    ],
)
def test_archive_stamp_is_the_gateways(moment: datetime, stamp: str) -> None:
    assert sm._archive_stamp(moment) == stamp


@pytest.mark.parametrize(
    ("name", "made"),
    [
        ("a.jsonl.deleted.2026-09-01T08-15-00.000Z", datetime(2026, 9, 1, 8, 15, tzinfo=timezone.utc)),
        ("a.jsonl.reset.2026-09-01T08-15-00Z", datetime(2026, 9, 1, 8, 15, tzinfo=timezone.utc)),
        (
            "a-topic-7.jsonl.deleted.2026-09-01T08-15-00.250Z",
            datetime(2026, 9, 1, 8, 15, 0, 250000, timezone.utc),
        ),
        ("a.jsonl", None),
        ("a.jsonl.deleted.yesterday", None),
        ("a.jsonl.bak.2026-09-01T08-15-00.000Z", None),
    ],
)
def test_when_an_archive_was_made_comes_from_its_name(name: str, made: datetime | None) -> None:
    assert sm._stamp_time(name) == made


def test_an_archive_never_overwrites_an_earlier_one(tmp_path: Path) -> None:
    paths = sm.AgentPaths("main", str(tmp_path), str(tmp_path))
    moment = datetime(2026, 9, 1, 8, 15, tzinfo=timezone.utc)
    for content in ("first", "second"):
        (tmp_path / "a.jsonl").write_text(content)
        sm.archive_transcript(paths, "a.jsonl", moment)
    assert {p.name: p.read_text() for p in tmp_path.iterdir()} == {
        "a.jsonl.deleted.2026-09-01T08-15-00.000Z": "first",
        "a.jsonl.deleted.2026-09-01T08-15-00.001Z": "second",
    }


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("short", "short"),
        ("x" * sm.TEXT_CAP, "x" * sm.TEXT_CAP),
        ("x" * (sm.TEXT_CAP + 1), "x" * (sm.TEXT_CAP - 1) + "…"),
        (42, 42),
    ],
)
def test_texts_from_the_index_are_cut(text: Any, shown: Any) -> None:
    assert sm._short(text) == shown


@pytest.mark.parametrize(
    ("items", "full", "shown", "truncated"),
    [
        (10, False, 10, None),
        (sm.LIST_CAP, False, sm.LIST_CAP, None),
        (sm.LIST_CAP + 1, False, sm.LIST_CAP, {"ids": 1}),
        (5_000, False, sm.LIST_CAP, {"ids": 5_000 - sm.LIST_CAP}),
        (5_000, True, 5_000, None),
    ],
)
def test_growing_lists_are_cut_and_counted(items: int, full: bool, shown: int, truncated: Any) -> None:
    answer = sm._fit_answer({"count": items, "ids": list(range(items))}, ("ids",), full, "see list_deleted")
    assert (len(answer["ids"]), answer.get("truncated"), answer["count"]) == (shown, truncated, items)


def test_a_list_too_large_for_the_budget_halves_until_the_answer_fits() -> None:
    rows = [{"id": f"{n:04d}", "label": "x" * 400} for n in range(100)]  # 40 KiB in all
    answer = sm._fit_answer({"rows": rows}, ("rows",), False, "see list_deleted")
    assert (len(answer["rows"]), answer["truncated"]) == (50, {"rows": 50})
    assert "see list_deleted" in answer["message"]
    assert len(sm.json.dumps(answer)) <= sm.ANSWER_BUDGET_BYTES
