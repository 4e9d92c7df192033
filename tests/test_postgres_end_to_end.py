"""End to end against PostgreSQL: a prune leaves exactly the pruned sessions' rows ended."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import add_transcript, ago, run_cli, write_index
from postgres import PostgresServer, server_binaries


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    binaries = server_binaries()
    if binaries is None:
        pytest.skip(
            "PostgreSQL's server (initdb, pg_ctl) is not installed and could not be installed "
            "here; `make test` installs it with apt-get where it can"
        )
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("psycopg is not installed; `pip install -e '.[test]'` installs it")
    server = PostgresServer(binaries).start()
    yield server.dsn
    server.stop()


@pytest.fixture
def service(database: str) -> Iterator[Any]:
    import psycopg
    from pg_history_service import PgHistoryService

    with psycopg.connect(database, autocommit=True) as connection:
        connection.execute("TRUNCATE agent_sessions")
    running = PgHistoryService(database).start()
    yield running
    running.stop()


def insert_row(dsn: str, session_id: str, agent: str, status: str = "active", legacy: bool = False) -> None:
    import psycopg

    name = "openclaw_session_id" if legacy else "aria_session_id"
    ended = "now() - interval '3 days'" if status != "active" else "NULL"
    with psycopg.connect(dsn, autocommit=True) as connection:
        connection.execute(
            f"INSERT INTO agent_sessions (agent_id, session_type, status, ended_at, metadata) "
            f"VALUES (%s, 'chat', %s, {ended}, %s::jsonb)",
            (agent, status, json.dumps({name: session_id})),
        )


def rows(dsn: str) -> dict[str, tuple[str, Any]]:
    import psycopg

    with psycopg.connect(dsn) as connection:
        found = connection.execute(
            "SELECT coalesce(metadata->>'aria_session_id', metadata->>'openclaw_session_id'), "
            "status, ended_at FROM agent_sessions"
        ).fetchall()
    return {sid: (status, ended) for sid, status, ended in found}


def test_prune_ends_exactly_the_pruned_rows(root: Path, database: str, service: Any) -> None:
    write_index(
        root,
        "main",
        {
            "agent:main:main": {"sessionId": "main-live", "updatedAt": ago(400)},
            "agent:main:cron:a": {"sessionId": "cron-a", "updatedAt": ago(400)},
            "agent:main:cron:a:run:1": {"sessionId": "cron-a", "updatedAt": ago(300)},
            "agent:main:subagent:b": {"sessionId": "sub-b", "updatedAt": ago(120)},
            "agent:main:subagent:c": {"sessionId": "sub-c", "updatedAt": ago(5)},
        },
    )
    write_index(
        root,
        "analyst",
        {
            "agent:analyst:cron:d": {"sessionId": "cron-d", "updatedAt": ago(90)},
            "agent:analyst:explicit:e": {"sessionId": "exp-e", "updatedAt": ago(10)},
        },
    )
    for agent, name in (("main", "cron-a"), ("main", "sub-b"), ("analyst", "cron-d")):
        add_transcript(root, agent, f"{name}.jsonl")
    for agent, session_id in (
        ("main", "main-live"),
        ("main", "cron-a"),
        ("main", "sub-c"),
        ("analyst", "exp-e"),
        ("main", "unrelated"),
    ):
        insert_row(database, session_id, agent)
    insert_row(database, "sub-b", "main", legacy=True)
    insert_row(database, "cron-d", "analyst")
    insert_row(database, "long-gone", "main", status="ended")
    before = rows(database)

    exit_code, result, stderr = run_cli(
        "session_manager", "prune_sessions", '{"max_age_minutes": 60}', env={"ARIA_API_URL": service.url}
    )
    assert exit_code == 0, stderr
    assert sorted(result["deleted_ids"]) == ["cron-a", "cron-d", "sub-b"]
    assert result["history"] == {"marked": 3} and result["history_pending"] == 0

    after = rows(database)
    for session_id in ("cron-a", "cron-d", "sub-b"):
        status, ended_at = after[session_id]
        assert status == "ended" and ended_at is not None
    for session_id in ("main-live", "sub-c", "exp-e", "unrelated", "long-gone"):
        assert after[session_id] == before[session_id]


def test_non_uuid_row_id_gets_a_500_as_the_real_service_does(service: Any) -> None:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        service.url + "/api/sessions/not-a-uuid",
        method="PATCH",
        data=b'{"status": "ended"}',
        headers={"Content-Type": "application/json"},
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(request, timeout=10)
    assert caught.value.code == 500
