"""The floors the skill is measured against: the least work each job needs, with the standard library.

python3 floor.py load INDEX...                      json.load of every index
python3 floor.py rewrite INDEX                      load one index and write it back atomically
python3 floor.py prune PLAN.json                    per index: one load, drop the stale keys, one
                                                    atomic write; rename the stale transcripts;
                                                    the same PATCHes over 8 keep-alive connections
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import threading
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


def patch_all(host: str, port: int, row_ids: list[str]) -> None:
    local = threading.local()

    def patch(row_id: str) -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection(host, port, timeout=10)
        connection.request(
            "PATCH",
            f"/api/sessions/{row_id}",
            body=b'{"status": "ended"}',
            headers={"Content-Type": "application/json"},
        )
        response = connection.getresponse()
        response.read()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(patch, row_ids))


def main(argv: list[str]) -> None:
    job = argv[0]
    if job == "load":
        for path in argv[1:]:
            load(path)
    elif job == "rewrite":  # into a sibling file, so that the index the skill is measured on stays as it was
        store = load(argv[1])
        write_atomic(argv[1] + ".floor", json.dumps(store, ensure_ascii=False).encode("utf-8"))
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
        patch_all(plan["host"], plan["port"], plan["row_ids"])


if __name__ == "__main__":
    main(sys.argv[1:])
