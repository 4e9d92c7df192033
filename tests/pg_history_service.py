"""A stand-in for aria-api's session endpoints over a real PostgreSQL table (docs/FORMATS.md §5)."""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

QUERY = """
SELECT id::text AS id, agent_id, session_type, started_at, ended_at, status, metadata
FROM agent_sessions
WHERE (%(status)s::text IS NULL OR status = %(status)s) AND (%(agent)s::text IS NULL OR agent_id = %(agent)s)
ORDER BY started_at DESC
LIMIT %(limit)s OFFSET %(offset)s
"""
COUNT = """
SELECT count(*) AS n FROM agent_sessions
WHERE (%(status)s::text IS NULL OR status = %(status)s) AND (%(agent)s::text IS NULL OR agent_id = %(agent)s)
"""
UPDATE = """
UPDATE agent_sessions
SET status = %(status)s::text, ended_at = CASE WHEN %(status)s::text = 'ended' THEN now() ELSE ended_at END
WHERE id = %(id)s::uuid
"""


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


class PgHistoryService:
    """GET /api/sessions and PATCH /api/sessions/{id}, answering as aria-api does."""

    def __init__(self, dsn: str) -> None:
        self.dsn = dsn
        self.server = HTTPServer(host="127.0.0.1", port=0, threaded=True)
        self.server.expect_request(re.compile(r"^/api/sessions.*")).respond_with_handler(self._handle)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.port}"

    def start(self) -> PgHistoryService:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.clear()
        self.server.stop()

    def _handle(self, request: Request) -> Response:
        try:
            with psycopg.connect(self.dsn, autocommit=True, row_factory=dict_row) as connection:
                if request.method == "GET" and request.path == "/api/sessions":
                    return self._page(connection, request)
                if request.method == "PATCH" and request.path.startswith("/api/sessions/"):
                    body = request.get_json(silent=True) or {}
                    connection.execute(
                        UPDATE, {"status": body.get("status"), "id": request.path.rsplit("/", 1)[1]}
                    )
                    return Response(json.dumps({"updated": True}), 200, content_type="application/json")
        except psycopg.Error:
            return Response("Internal Server Error", 500)  # as aria-api does for an id that is not a UUID
        return Response(json.dumps({"detail": "Not Found"}), 404, content_type="application/json")

    def _page(self, connection: psycopg.Connection[Any], request: Request) -> Response:
        page, limit = int(request.args.get("page", 1)), min(int(request.args.get("limit", 20)), 100)
        where = {"status": request.args.get("status") or None, "agent": request.args.get("agent_id") or None}
        rows = connection.execute(QUERY, {**where, "limit": limit, "offset": (page - 1) * limit}).fetchall()
        total = connection.execute(COUNT, where).fetchone()["n"]  # type: ignore[index]
        body = {
            "items": [{k: _jsonable(v) for k, v in row.items()} for row in rows],
            "total": total,
            "page": page,
            "limit": limit,
            "pages": max(1, -(-total // limit)),
        }
        return Response(json.dumps(body), 200, content_type="application/json")
