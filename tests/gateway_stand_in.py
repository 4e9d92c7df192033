"""A stand-in for the SQLite-era gateway's WebSocket protocol (docs/FORMATS.md §7), on 127.0.0.1 in
a thread of the test process: the frames and methods the skill uses, answered from a plan that a
test changes on cue (slow, a session changed, the connection dropped, frames that break the rules).

The real gateway is in tests/test_gateway_connection.py and tests/test_openclaw_end_to_end.py;
these cases need a gateway that misbehaves on cue, which the real one does not.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.server import ServerConnection, serve

TOKEN = "stand-in-gateway-token-77"


@dataclass
class Plan:
    """What the stand-in answers. Rows per agent; paths: the store each agent is "kept" in."""

    rows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    paths: dict[str, str] = field(default_factory=dict)
    agents: list[str] | None = None  # agents.list; None: those of ``rows``
    changed: set[str] = field(default_factory=set)  # keys refused as session-changed, still there
    gone: set[str] = field(default_factory=set)  # keys refused as session-changed, then described null
    refused: dict[str, str] = field(default_factory=dict)  # key -> the gateway's refusal message
    die_at: str | None = None  # the key whose delete drops the connection unanswered
    seconds_per_key: float = 0.0
    protocol: int = 4
    scopes: list[str] = field(default_factory=lambda: ["operator.admin"])
    starting: int = 0  # connects refused as "gateway starting" before one is let in
    busy: int = 0  # requests refused as retryable UNAVAILABLE before one is served
    page: int = 500  # the most rows a sessions.list page holds, whatever the client asks
    greeting: bool = True  # its first frame is connect.challenge (else another event)
    noise: bool = False  # events and a stale response before every response
    malformed: str | None = None  # a method answered with a frame that is no JSON object
    huge: str | None = None  # a method answered with a frame over 25 MiB
    silent: str | None = None  # a method never answered


class StandInGateway:
    """The server, its plan, and what it was sent."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.connections = 0
        self.open_connections = 0
        self.lock = threading.Lock()
        self.url = ""

    def handle(self, socket: ServerConnection) -> None:
        with self.lock:
            self.connections += 1
            self.open_connections += 1
        try:
            self.converse(socket)
        except ConnectionClosed:
            pass
        finally:
            with self.lock:
                self.open_connections -= 1

    def converse(self, socket: ServerConnection) -> None:
        plan = self.plan
        greeting = "connect.challenge" if plan.greeting else "welcome"
        socket.send(json.dumps({"type": "event", "event": greeting, "payload": {"nonce": "n", "ts": 1}}))
        for text in socket:
            frame = json.loads(text)
            method, parameters = frame["method"], frame.get("params") or {}
            with self.lock:
                self.requests.append((method, parameters))
            if method == "connect":
                if not self.connect(socket, frame["id"], parameters):
                    return
                continue
            if method == plan.silent:
                continue
            if method == "sessions.delete" and parameters.get("key") == plan.die_at:
                socket.close()  # websockets sends a close frame: the client sees the connection end
                return
            if plan.busy > 0:
                plan.busy -= 1
                self.error(socket, frame["id"], "UNAVAILABLE", "queue full", retryable=True, retryAfterMs=20)
                continue
            if plan.noise:
                socket.send(json.dumps({"type": "event", "event": "tick", "payload": {"ts": 2}}))
                socket.send(json.dumps({"type": "res", "id": "stale-1", "ok": True, "payload": {}}))
            if method == plan.malformed:
                socket.send("this is not JSON")
                continue
            if method == plan.huge:
                socket.send(
                    json.dumps(
                        {"type": "res", "id": frame["id"], "ok": True, "payload": {"x": "y" * (26 << 20)}}
                    )
                )
                continue
            self.answer(socket, frame["id"], method, parameters)

    def connect(self, socket: ServerConnection, ident: str, parameters: dict[str, Any]) -> bool:
        plan = self.plan
        if plan.starting > 0:
            plan.starting -= 1
            self.error(
                socket,
                ident,
                "UNAVAILABLE",
                "gateway starting; retry shortly",
                retryable=True,
                retryAfterMs=50,
            )
            return False
        if not parameters["minProtocol"] <= plan.protocol <= parameters["maxProtocol"]:
            details = {"code": "PROTOCOL_MISMATCH", "expectedProtocol": plan.protocol}
            self.error(socket, ident, "INVALID_REQUEST", "protocol mismatch", details=details)
            return False
        if (parameters.get("auth") or {}).get("token") != TOKEN:
            details = {"code": "AUTH_TOKEN_MISMATCH"}
            self.error(
                socket, ident, "INVALID_REQUEST", "unauthorized: gateway token mismatch", details=details
            )
            return False
        hello = {
            "type": "hello-ok",
            "protocol": plan.protocol,
            "auth": {"role": "operator", "scopes": plan.scopes},
        }
        socket.send(json.dumps({"type": "res", "id": ident, "ok": True, "payload": hello}))
        return True

    def answer(self, socket: ServerConnection, ident: str, method: str, parameters: dict[str, Any]) -> None:
        plan = self.plan
        if method == "agents.list":
            agents = plan.agents if plan.agents is not None else list(plan.rows)
            payload: dict[str, Any] = {"agents": [{"id": agent} for agent in agents]}
        elif method == "sessions.list":
            agent, offset = parameters["agentId"], parameters.get("offset", 0)
            rows = plan.rows.get(agent, [])
            size = min(parameters.get("limit", 100), plan.page)
            more = offset + size < len(rows)
            payload = {
                "path": plan.paths.get(agent, "(multiple)"),
                "sessions": rows[offset : offset + size],
                "hasMore": more,
                "nextOffset": offset + size if more else None,
            }
        elif method == "sessions.describe":
            key = parameters["key"]
            found = [row for rows in plan.rows.values() for row in rows if row["key"] == key]
            payload = {"session": None if key in plan.gone or not found else found[0]}
        elif method == "sessions.delete":
            return self.delete(socket, ident, parameters)
        else:
            return self.error(socket, ident, "INVALID_REQUEST", f"unknown method {method}")
        socket.send(json.dumps({"type": "res", "id": ident, "ok": True, "payload": payload}))

    def delete(self, socket: ServerConnection, ident: str, parameters: dict[str, Any]) -> None:
        plan, key = self.plan, parameters["key"]
        time.sleep(plan.seconds_per_key)
        if key in plan.changed or key in plan.gone:
            details = {"reason": "session-changed"}
            return self.error(
                socket,
                ident,
                "INVALID_REQUEST",
                f"Session {key} changed before deletion. Retry.",
                details=details,
            )
        if key in plan.refused:
            return self.error(socket, ident, "INVALID_REQUEST", plan.refused[key])
        payload = {"ok": True, "key": key, "deleted": True, "archived": []}
        socket.send(json.dumps({"type": "res", "id": ident, "ok": True, "payload": payload}))

    def error(self, socket: ServerConnection, ident: str, code: str, message: str, **extra: Any) -> None:
        error = {"code": code, "message": message, **extra}
        socket.send(json.dumps({"type": "res", "id": ident, "ok": False, "error": error}))

    def connections_left_open(self, within: float = 10.0) -> int:
        """How many connections are still open once the clients had ``within`` seconds to close
        them (the server's side of a close ends a moment after the client's)."""
        deadline = time.monotonic() + within
        while self.open_connections and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.open_connections

    def sent(self, method: str) -> list[dict[str, Any]]:
        with self.lock:
            return [parameters for name, parameters in self.requests if name == method]


@contextmanager
def stand_in_gateway(plan: Plan) -> Iterator[StandInGateway]:
    """The stand-in listening on 127.0.0.1 (a free port), served from a thread until the block ends."""
    gateway = StandInGateway(plan)
    with serve(gateway.handle, "127.0.0.1", 0, compression=None, max_size=None) as server:
        port = server.socket.getsockname()[1]
        gateway.url = f"ws://127.0.0.1:{port}"
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield gateway
        finally:
            server.shutdown()
            thread.join(timeout=10)
