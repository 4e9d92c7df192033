"""A light stand-in for aria-api's session endpoints, for the benchmark: rows in memory, a fixed
latency per request, keep-alive HTTP/1.1 on 127.0.0.1. Run alone: python3 history_stub.py PORT."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


class Rows:
    """agent_sessions rows, newest first, with what was PATCHed."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.by_id = {row["id"]: row for row in rows}
        self.patched = 0
        self.lock = threading.Lock()
        self.selections: dict[tuple[str | None, str | None], list[dict[str, Any]]] = {}

    def select(self, status: str | None, agent: str | None) -> list[dict[str, Any]]:
        """Rows with that status and agent, kept until the next PATCH changes a status."""
        with self.lock:
            chosen = self.selections.get((status, agent))
            if chosen is None:
                chosen = [
                    r
                    for r in self.rows
                    if (not status or r["status"] == status) and (not agent or r["agent_id"] == agent)
                ]
                self.selections[(status, agent)] = chosen
            return chosen


def make_handler(rows: Rows, latency: float) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            time.sleep(latency)
            url = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(url.query).items()}
            page, limit = int(query.get("page", 1)), min(int(query.get("limit", 20)), 100)
            status, agent = query.get("status"), query.get("agent_id")
            chosen = rows.select(status, agent)
            items = chosen[(page - 1) * limit : page * limit]
            self._send(
                200,
                {
                    "items": items,
                    "total": len(chosen),
                    "page": page,
                    "limit": limit,
                    "pages": max(1, -(-len(chosen) // limit)),
                },
            )

        def do_PATCH(self) -> None:
            time.sleep(latency)
            length = int(self.headers.get("Content-Length", 0))
            body = json.loads(self.rfile.read(length) or b"{}")
            row_id = self.path.rsplit("/", 1)[1]
            with rows.lock:
                rows.patched += 1
                row = rows.by_id.get(row_id)
                if row is not None:
                    row["status"] = body.get("status", row["status"])
                    rows.selections.clear()
            self._send(200, {"updated": True})

    return Handler


def serve(rows: Rows, latency: float) -> ThreadingHTTPServer:
    """Start the service in a daemon thread; its address is server.server_address."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(rows, latency))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    import sys

    # python3 history_stub.py ROWS.json LATENCY: serve those rows; print the port, then run until killed.
    with open(sys.argv[1], encoding="utf-8") as handle:
        served = serve(Rows(json.load(handle)), float(sys.argv[2]))
    print(served.server_address[1], flush=True)
    threading.Event().wait()
