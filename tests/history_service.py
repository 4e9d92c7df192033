"""A stand-in for aria-api's two session endpoints, served over real HTTP on 127.0.0.1.

It behaves as docs/FORMATS.md §5 describes: newest-first pages, PATCH that answers
``{"updated": true}`` even for unknown ids, a 500 for an id that is not a UUID, and an optional
``X-API-Key`` check. Faults (latency, 500s, a share of failures, malformed bodies, hanging) can be
switched on to test the skill's history step.
"""

from __future__ import annotations

import json
import random
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

UUID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@dataclass
class Faults:
    """What the service does wrong; all off by default."""

    latency: float = 0.0
    status: int | None = None
    failure_share: float = 0.0
    malformed: bool = False
    hang: float = 0.0


@dataclass
class HistoryService:
    """Rows of agent_sessions in memory, behind GET/PATCH /api/sessions."""

    api_key: str | None = None
    rows: list[dict[str, Any]] = field(default_factory=list)
    faults: Faults = field(default_factory=Faults)
    requests: list[tuple[str, str]] = field(default_factory=list)
    patches: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    user_agents: set[str] = field(default_factory=set)
    arrivals: list[float] = field(default_factory=list)  # time.monotonic() of each request

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._release = threading.Event()  # set by reset: hanging requests end with their test
        self._random = random.Random(7)
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.server.expect_request(re.compile(r"^/api/sessions.*")).respond_with_handler(self._handle)

    def start(self) -> HistoryService:
        self.server.start()
        return self

    def stop(self) -> None:
        if self.server.is_running():
            self.server.clear()
            self.server.stop()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def add_row(
        self,
        session_id: str,
        agent: str = "main",
        status: str = "active",
        legacy: bool = False,
        started_at: str = "2026-11-01T00:00:00+00:00",
        session_type: str = "chat",
    ) -> str:
        row_id = str(uuid.uuid4())
        name = "openclaw_session_id" if legacy else "aria_session_id"
        self.rows.insert(
            0,
            {
                "id": row_id,
                "agent_id": agent,
                "session_type": session_type,
                "started_at": started_at,
                "ended_at": None,
                "status": status,
                "metadata": {name: session_id},
            },
        )
        return row_id

    def reset(self) -> None:
        """Forget rows, faults and logs, so one running server can serve many tests."""
        with self._lock:
            self.api_key = None
            self.rows.clear()
            self.faults = Faults()
            self.requests.clear()
            self.patches.clear()
            self.user_agents.clear()
            self.arrivals.clear()
            self._release.set()
            self._release = threading.Event()

    def row_of(self, session_id: str) -> dict[str, Any]:
        for row in self.rows:
            metadata = row["metadata"]
            if session_id in (metadata.get("aria_session_id"), metadata.get("openclaw_session_id")):
                return row
        raise KeyError(session_id)

    def _handle(self, request: Request) -> Response:
        with self._lock:
            self.arrivals.append(time.monotonic())
            self.requests.append((request.method, request.full_path))
            self.user_agents.add(request.headers.get("User-Agent", ""))
        faults = self.faults
        if faults.hang:  # accept, never answer in time, and never apply the request
            self._release.wait(faults.hang)
            return Response("too late", 503)
        if faults.latency:
            time.sleep(faults.latency)
        if self.api_key is not None and request.headers.get("X-API-Key") != self.api_key:
            return Response(json.dumps({"detail": "Invalid API key"}), 401, content_type="application/json")
        if faults.status is not None:
            return Response("Internal Server Error", faults.status)
        if faults.failure_share and self._random.random() < faults.failure_share:
            return Response("Bad Gateway", 502)
        if faults.malformed:
            return Response("{not json", 200, content_type="application/json")
        if request.method == "GET" and request.path == "/api/sessions":
            return self._page(request)
        if request.method == "PATCH" and request.path.startswith("/api/sessions/"):
            return self._patch(request.path.rsplit("/", 1)[1], request.get_json(silent=True) or {})
        return Response(json.dumps({"detail": "Not Found"}), 404, content_type="application/json")

    def _page(self, request: Request) -> Response:
        page = int(request.args.get("page", 1))
        limit = min(int(request.args.get("limit", 20)), 200)
        status = request.args.get("status") or None
        agent = request.args.get("agent_id") or None
        with self._lock:
            rows = [
                r
                for r in self.rows
                if (status is None or r["status"] == status) and (agent is None or r["agent_id"] == agent)
            ]
            rows.sort(key=lambda r: r["started_at"], reverse=True)
            items = [dict(r) for r in rows[(page - 1) * limit : page * limit]]
        body = {
            "items": items,
            "total": len(rows),
            "page": page,
            "limit": limit,
            "pages": max(1, -(-len(rows) // limit)),
        }
        return Response(json.dumps(body), 200, content_type="application/json")

    def _patch(self, row_id: str, body: dict[str, Any]) -> Response:
        if not UUID_PATTERN.match(row_id):
            return Response("Internal Server Error", 500)
        with self._lock:
            self.patches.append((row_id, body))
            for row in self.rows:
                if row["id"] == row_id:
                    row["status"] = body.get("status", row["status"])
                    row["ended_at"] = "now" if row["status"] == "ended" else None
        return Response(json.dumps({"updated": True}), 200, content_type="application/json")
