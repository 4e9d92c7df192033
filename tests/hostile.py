"""Hostile peers for the hardening tests: an HTTP service that misbehaves below HTTP's level (drips
bytes, never ends a body, sends a decompression bomb, shifts its pages) and stand-in OpenClaw
CLIs that leave children behind. Real sockets and processes on 127.0.0.1, nothing mocked."""

from __future__ import annotations

import functools
import json
import socket
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

Handler = Callable[[socket.socket, str, str], None]


def send_answer(connection: socket.socket, body: bytes, status: str = "200 OK", extra: str = "") -> None:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    connection.sendall(head.encode() + body)


def drip_body(connection: socket.socket, method: str, target: str) -> None:
    """Headers at once, then a 200-byte body one byte every half second."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n")
    for _ in range(200):
        connection.sendall(b" ")
        time.sleep(0.5)


def drip_headers(connection: socket.socket, method: str, target: str) -> None:
    """A header line one byte every half second, without end."""
    connection.sendall(b"HTTP/1.1 200 OK\r\nX-Slow: ")
    for _ in range(400):
        connection.sendall(b"a")
        time.sleep(0.5)


def processing_forever(connection: socket.socket, method: str, target: str) -> None:
    """One '102 Processing' after another, never an answer."""
    for _ in range(400):
        connection.sendall(b"HTTP/1.1 102 Processing\r\n\r\n")
        time.sleep(0.2)


def endless_chunks(connection: socket.socket, method: str, target: str) -> None:
    """A chunked body that never ends, as fast as the socket takes it."""
    connection.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"%x\r\n%s\r\n" % (1 << 16, b"[" * (1 << 16))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        connection.sendall(chunk)


@functools.cache
def bomb_body() -> bytes:
    """About 1 MB of gzip that inflates to 1 GiB of zeros (made once: it takes a few seconds)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    block = bytes(1 << 20)
    return b"".join(packer.compress(block) for _ in range(1024)) + packer.flush()


def gzip_bomb(connection: socket.socket, method: str, target: str) -> None:
    """A small gzip body that inflates to 1 GiB of zeros."""
    send_answer(connection, bomb_body(), extra="Content-Encoding: gzip\r\n")


class HostileService:
    """An HTTP/1.1 server on 127.0.0.1 whose every request is answered by ``handler``."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.requests: list[tuple[str, str]] = []
        self.stopping = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self.stopping:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            buffer = b""
            try:
                while True:
                    while b"\r\n\r\n" not in buffer:
                        data = connection.recv(65536)
                        if not data:
                            return
                        buffer += data
                    head, _, buffer = buffer.partition(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    method, target, _ = lines[0].split(" ", 2)
                    length = next(
                        (
                            int(v)
                            for k, _, v in (h.partition(":") for h in lines[1:])
                            if k.lower() == "content-length"
                        ),
                        0,
                    )
                    while len(buffer) < length:
                        buffer += connection.recv(65536)
                    buffer = buffer[length:]
                    self.requests.append((method, target))
                    self.handler(connection, method, target)
            except OSError:
                return

    def stop(self) -> None:
        self.stopping = True
        self.listener.close()


def row(session_id: str, agent: str = "main", row_id: str | None = None) -> dict[str, Any]:
    return {
        "id": row_id or str(uuid.uuid4()),
        "agent_id": agent,
        "status": "active",
        "metadata": {"openclaw_session_id": session_id},
    }


def pages_of(rows: list[dict[str, Any]], target: str, limit_default: int = 100) -> bytes:
    query = parse_qs(urlsplit(target).query)
    page, limit = int(query.get("page", ["1"])[0]), int(query.get("limit", [str(limit_default)])[0])
    items = rows[(page - 1) * limit : page * limit]
    pages = max(1, -(-len(rows) // limit))
    return json.dumps(
        {"items": items, "total": len(rows), "page": page, "limit": limit, "pages": pages}
    ).encode()


class ListingService(HostileService):
    """A history service over ``rows`` whose listing is ``listing(target)``; PATCHes are recorded."""

    def __init__(self, listing: Callable[[str], bytes]) -> None:
        self.patched: list[str] = []
        self.listing = listing
        super().__init__(self._route)

    def _route(self, connection: socket.socket, method: str, target: str) -> None:
        if method == "PATCH":
            self.patched.append(target.rsplit("/", 1)[1])
            send_answer(connection, b'{"updated": true}')
        else:
            send_answer(connection, self.listing(target))


DETACHING_CLI = """#!{python}
import json, os, subprocess, sys, time
arguments = sys.argv[1:]
mode = os.environ["FAKE_OPENCLAW"]
store = os.environ["FAKE_STORE"]
# A helper that outlives the CLI, in a session of its own (out of reach of a process-group kill),
# holding the CLI's stdout open.
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
if arguments[:2] == ["sessions", "delete"]:
    keys = [a for a in arguments[2:] if a.startswith("agent:")]
    odd = {{"archived": 5, "error": ["x"]}} if mode == "odd" else {{}}
    results = [{{"key": k, "ok": True, "status": "deleted", **odd}} for k in keys]
    sys.stdout.write(json.dumps({{"ok": True, "results": results}}) + chr(10))
    sys.stdout.flush()
else:
    row = {{"key": "agent:ops:subagent:a", "sessionId": "ops-a", "updatedAt": 10**12, "agentId": "ops"}}
    sys.stdout.write('{{"path": ' + json.dumps(store) + ', "sessions": [' + json.dumps(row))
    for _ in range(3_000_000 if mode == "huge" else 0):  # about 300 MB, written as it is made
        sys.stdout.write(", " + json.dumps(row))
    sys.stdout.write("]}}" + chr(10))
    sys.stdout.flush()
if mode == "hangs":
    time.sleep(60)
"""


def detaching_cli(folder: Path) -> Path:
    """A stand-in OpenClaw CLI that answers, then leaves a detached child holding its stdout."""
    cli = folder / "openclaw"
    cli.write_text(DETACHING_CLI.format(python=sys.executable))
    cli.chmod(0o755)
    return cli
