"""The floors the skill is measured against: the least work each job needs.

python3 floor.py load INDEX...                      json.load of every index
python3 floor.py rewrite INDEX [PLAN.json]          load one index and write it back atomically
                                                    (and, with a plan, its history step as below)
python3 floor.py history PLAN.json                  the history step alone: per agent, the pages of
                                                    active rows until every pruned session's row is
                                                    found, then one PATCH per row, with a bare
                                                    httpx.Client over 8 keep-alive connections
python3 floor.py httpx                              import httpx and make a client (its memory)
python3 floor.py stats BASE INDEX...                 json.load of every index, and every page of the
                                                    service's active rows (what get_session_stats
                                                    reads to count the rows of vanished sessions)
python3 floor.py prune PLAN.json                    per index: one load, drop the stale keys, one
                                                    atomic write; rename the stale transcripts;
                                                    then the history step as above
"""

from __future__ import annotations

import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any


def load(path: str) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def write_atomic(path: str, data: bytes) -> None:
    temporary = path + ".floor.tmp"
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(descriptor, data)
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(temporary, path)
    folder = os.open(os.path.dirname(path), os.O_RDONLY)
    os.fsync(folder)
    os.close(folder)


def lookup_and_patch(base: str, wanted: dict[str, list[str]], width: int = 8) -> int:
    """The same requests as the skill's history step, with nothing around them; returns the PATCHes."""
    import httpx

    limits = httpx.Limits(max_connections=width, max_keepalive_connections=width)
    query = {
        "limit": 100,
        "status": "active",
        "include_cron_events": "true",
        "include_runtime_events": "true",
    }
    row_ids: list[str] = []
    with httpx.Client(base_url=base, limits=limits, timeout=10) as client, ThreadPoolExecutor(width) as pool:
        for agent, ids in wanted.items():
            missing = set(ids)

            def page(number: int, agent: str = agent) -> dict[str, Any]:
                answer: dict[str, Any] = client.get(
                    "/api/sessions", params={**query, "page": number, "agent_id": agent}
                ).json()
                return answer

            def take(body: dict[str, Any], missing: set[str] = missing) -> None:
                for item in body["items"]:
                    session_id = item["metadata"].get("aria_session_id")
                    if session_id in missing:
                        missing.discard(session_id)
                        row_ids.append(item["id"])

            first = page(1)
            take(first)
            number, pages = 2, first["pages"]
            while missing and number <= pages:
                batch = range(number, min(number + width, pages + 1))
                for body in pool.map(page, batch):
                    take(body)
                number += len(batch)
        body, headers = b'{"status": "ended"}', {"Content-Type": "application/json"}
        list(
            pool.map(
                lambda row_id: client.patch(f"/api/sessions/{row_id}", content=body, headers=headers), row_ids
            )
        )
    return len(row_ids)


def all_active_rows(base: str) -> int:
    """Every page of the service's active rows, one after the other; returns how many rows."""
    import httpx

    query = {
        "limit": 100,
        "status": "active",
        "include_cron_events": "true",
        "include_runtime_events": "true",
    }
    rows, number = 0, 1
    with httpx.Client(base_url=base, timeout=10) as client:
        while True:
            body = client.get("/api/sessions", params={**query, "page": number}).json()
            rows += len(body["items"])
            if not body["items"] or number >= body["pages"]:
                return rows
            number += 1


def main(argv: list[str]) -> None:
    job = argv[0]
    if job == "load":
        for path in argv[1:]:
            load(path)
    elif job == "rewrite":  # into a sibling file, so that the index the skill is measured on stays as it was
        store = load(argv[1])
        write_atomic(argv[1] + ".floor", json.dumps(store, ensure_ascii=False).encode("utf-8"))
        if len(argv) > 2:
            with open(argv[2], encoding="utf-8") as handle:
                plan = json.load(handle)
            lookup_and_patch(plan["base"], plan["wanted"])
    elif job == "prune":
        with open(argv[1], encoding="utf-8") as handle:
            plan = json.load(handle)
        for index, keys in plan["stale_keys"].items():
            store = load(index)
            for key in keys:
                store.pop(key, None)
            write_atomic(index, json.dumps(store, ensure_ascii=False).encode("utf-8"))
        for source in plan["transcripts"]:
            os.rename(source, source + ".deleted.2026-01-01T00-00-00.000Z")
        lookup_and_patch(plan["base"], plan["wanted"])
    elif job == "stats":
        for path in argv[2:]:
            load(path)
        all_active_rows(argv[1])
    elif job == "httpx":  # the client's own footprint: import it and make one client
        import httpx

        httpx.Client()
    elif job == "history":
        with open(argv[1], encoding="utf-8") as handle:
            plan = json.load(handle)
        lookup_and_patch(plan["base"], plan["wanted"])


if __name__ == "__main__":
    main(sys.argv[1:])
