"""A stand-in for aria-api's session endpoints, true to docs/FORMATS.md §5 (the real service at
33e053e), for the benchmark, the demo and the tests: HTTP/1.1 keep-alive on 127.0.0.1.

- Rows in memory, newest ``started_at`` first, ``GET /api/sessions`` (and ``/sessions``) with
  page, limit (default 25), status, agent_id, include_cron_events (cron rows hidden without it).
- ``PATCH /api/sessions/{id}``: a status; ``ended`` sets ``ended_at``, ``active`` leaves it; an
  unknown id answers 200 ``{"updated": true}``, an id that is not a UUID 500.
- The rate limiter of every non-GET request (§5): more than ``burst`` in 5 s blocks for 15 s,
  ``per_minute`` in 60 s for 30 s, ``per_hour`` in 3600 s for 300 s; while blocked, 429 with
  ``Retry-After: 60``; refused requests are not counted. ``scale`` divides every one of those
  durations (a faster clock for tests), the Retry-After included.
- The service's own sync inside GET (with ``agents_root``): when the last one is older than
  ``sync_interval`` it takes ``sync_delay`` seconds, then upserts one row per sessionId of every
  ``<root>/<agent>/sessions/sessions.json`` (id = uuid5 of ``openclaw_key:<key>``, status active,
  ended_at cleared, ``metadata.openclaw_session_id``); an entry without an integer ``updatedAt``
  fails it, and then every GET answers 500 with the database's detail.

Run alone: ``python3 history_stub.py ROWS.json LATENCY [OPTIONS.json]``: prints the port, then
serves until killed (OPTIONS are the keyword arguments of Service).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

NAMESPACE = uuid.UUID("6ba7b811-9dad-11d1-80b4-00c04fd430c8")
UUID_LENGTH = 36
CRON_TYPES = ("openclaw_cron", "openclaw_run")


def session_type_of(key: str) -> str:
    """The row's session_type, from the key (§5)."""
    if ":cron:" in key:
        return "openclaw_run" if ":run:" in key else "openclaw_cron"
    if ":subagent:" in key:
        return "openclaw_subagent"
    if key.endswith(":main"):
        return "openclaw_main"
    if "heartbeat" in key:
        return "openclaw_heartbeat"
    return "openclaw"


@dataclass
class Limiter:
    """aria-api's RateLimiter (security_middleware.py), with every duration divided by ``scale``."""

    burst: int = 50
    per_minute: int = 120
    per_hour: int = 2000
    scale: float = 1.0
    on: bool = True
    sent: list[float] = field(default_factory=list)
    blocked_until: float = 0.0
    refused: int = 0
    blocks: int = 0

    def allow(self) -> bool:
        if not self.on:
            return True
        now, s = time.monotonic(), self.scale
        if now < self.blocked_until:
            self.refused += 1
            return False
        self.sent = [moment for moment in self.sent if moment > now - 3600 / s]
        for count, window, block in (
            (self.burst, 5, 15),
            (self.per_minute, 60, 30),
            (self.per_hour, 3600, 300),
        ):
            if sum(1 for moment in self.sent if moment > now - window / s) >= count:
                self.blocked_until, self.blocks, self.refused = (
                    now + block / s,
                    self.blocks + 1,
                    self.refused + 1,
                )
                return False
        self.sent.append(now)
        return True


class Rows:
    """agent_sessions rows, newest first, with what was PATCHed."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.by_id = {row["id"]: row for row in rows}
        self.patched = 0
        self.patches: list[str] = []
        self.lock = threading.Lock()
        self.selections: dict[tuple[Any, ...], list[dict[str, Any]]] = {}

    def select(self, status: str | None, agent: str | None, cron: bool) -> list[dict[str, Any]]:
        """Rows with that status and agent (newest first), kept until a change."""
        with self.lock:
            chosen = self.selections.get((status, agent, cron))
            if chosen is None:
                chosen = [
                    r
                    for r in self.rows
                    if (not status or r["status"] == status)
                    and (not agent or r["agent_id"] == agent)
                    and (cron or r.get("session_type") not in CRON_TYPES)
                ]
                chosen.sort(key=lambda r: r.get("started_at") or "", reverse=True)
                self.selections[(status, agent, cron)] = chosen
            return chosen

    def upsert(self, row: dict[str, Any]) -> None:
        existing = self.by_id.get(row["id"])
        if existing is None:
            self.rows.append(row)
            self.by_id[row["id"]] = row
        else:
            existing.update(row)
        self.selections.clear()


@dataclass
class Sync:
    """The service's OpenClaw sync from the agents' indexes, run inside GET (§5)."""

    root: Path | None = None
    interval: float = 30.0
    delay: float = 0.0
    last: float = float("-inf")
    runs: int = 0
    error: str | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, rows: Rows) -> None:
        """Sync when due; a failed sync leaves ``error`` for every GET until one succeeds."""
        if self.root is None:
            return
        with self.lock:
            if time.monotonic() - self.last < self.interval:
                return
            time.sleep(self.delay)
            self.last, self.runs = time.monotonic(), self.runs + 1
            found = self._read()
            if isinstance(found, str):
                self.error = found
                return
            self.error = None
            with rows.lock:
                for row in found:
                    rows.upsert(row)

    def _read(self) -> list[dict[str, Any]] | str:
        rows: dict[str, dict[str, Any]] = {}
        richness: dict[str, int] = {}
        for index in sorted(self.root.glob("*/sessions/sessions.json")) if self.root else []:
            try:
                store = json.loads(index.read_text("utf-8"))
            except (OSError, ValueError):
                continue
            agent = index.parent.parent.name
            for key, entry in store.items() if isinstance(store, dict) else []:
                if not isinstance(entry, dict) or not isinstance(entry.get("sessionId"), str):
                    continue
                updated = entry.get("updatedAt")
                if type(updated) is not int:
                    return (
                        "(sqlalchemy.dialects.postgresql.asyncpg.IntegrityError) <class "
                        "'asyncpg.exceptions.NotNullViolationError'>: null value in column \"started_at\" "
                        'of relation "agent_sessions" violates not-null constraint'
                    )
                if richness.get(entry["sessionId"], -1) >= len(entry):
                    continue  # aliases folded, keeping the richest key
                richness[entry["sessionId"]] = len(entry)
                started = datetime.fromtimestamp(updated / 1000, tz=timezone.utc).isoformat()
                rows[entry["sessionId"]] = {
                    "id": str(uuid.uuid5(NAMESPACE, f"openclaw_key:{key}")),
                    "agent_id": key.split(":")[1] if key.startswith("agent:") else agent,
                    "session_type": session_type_of(key),
                    "started_at": started,
                    "ended_at": None,
                    "status": "active",
                    "metadata": {"openclaw_session_id": entry["sessionId"]},
                }
        return list(rows.values())


def make_handler(rows: Rows, latency: float, limiter: Limiter, sync: Sync) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            time.sleep(latency)
            url = urlsplit(self.path)
            if url.path not in ("/api/sessions", "/sessions"):
                self._send(404, {"detail": "Not Found"})
                return
            sync.run(rows)
            if sync.error is not None:
                error = {
                    "error": "Internal server error",
                    "detail": sync.error[:200],
                    "type": "IntegrityError",
                }
                self._send(500, {**error, "path": url.path})
                return
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            page, limit = int(query.get("page", 1)), int(query.get("limit", 25))
            chosen = rows.select(
                query.get("status"), query.get("agent_id"), query.get("include_cron_events") == "true"
            )
            items = chosen[(page - 1) * limit : page * limit]
            body = {"items": items, "total": len(chosen), "page": page, "limit": limit}
            self._send(200, {**body, "pages": max(1, -(-len(chosen) // limit))})

        def do_PATCH(self) -> None:
            time.sleep(latency)
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            with rows.lock:
                allowed = limiter.allow()
            if not allowed:
                retry = f"{60 / limiter.scale:g}" if limiter.scale != 1 else "60"
                self._send(429, {"detail": "Rate limit exceeded: rate_limited"}, {"Retry-After": retry})
                return
            row_id = self.path.rsplit("/", 1)[1]
            try:
                uuid.UUID(row_id)
            except ValueError:
                self._send(
                    500, {"error": "Internal server error", "detail": f"badly formed id {row_id[:50]}"}
                )
                return
            with rows.lock:
                rows.patched += 1
                rows.patches.append(row_id)
                row = rows.by_id.get(row_id)
                if row is not None:
                    row["status"] = body.get("status", row["status"])
                    if row["status"] == "ended":
                        row["ended_at"] = datetime.now(timezone.utc).isoformat()
                    rows.selections.clear()
            self._send(200, {"updated": True})

    return Handler


class Service:
    """The stand-in, started in daemon threads: its ``url``, ``rows``, ``limiter`` and ``sync``."""

    def __init__(
        self,
        rows: Rows,
        latency: float = 0.0,
        limiter: Limiter | None = None,
        agents_root: str | None = None,
        sync_interval: float = 30.0,
        sync_delay: float = 0.0,
    ) -> None:
        self.rows = rows
        self.limiter = limiter or Limiter(on=False)
        self.sync = Sync(Path(agents_root) if agents_root else None, sync_interval, sync_delay)
        self.server = ThreadingHTTPServer(
            ("127.0.0.1", 0), make_handler(rows, latency, self.limiter, self.sync)
        )
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve(rows: Rows, latency: float) -> ThreadingHTTPServer:
    """The benchmark's service: no limiter, no sync; its address is server.server_address."""
    return Service(rows, latency).server


if __name__ == "__main__":
    import sys

    with open(sys.argv[1], encoding="utf-8") as handle:
        loaded = Rows(json.load(handle))
    options = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    limits = options.pop("limiter", None)
    service = Service(loaded, float(sys.argv[2]), Limiter(**limits) if limits else None, **options)
    print(service.server.server_address[1], flush=True)
    threading.Event().wait()
