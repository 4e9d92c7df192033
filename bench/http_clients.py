"""Why the history client is the standard library's: the same PATCHes through each client.

    python3 bench/http_clients.py [COUNT] [LATENCY]

Sends COUNT (1,780) PATCHes over 8 connections to a local service answering in LATENCY (0.002) s,
with http.client on 8 threads, and, where httpx is installed, httpx on 8 threads, httpx's async
client, and httpcore alone. Prints the seconds each took.
"""

from __future__ import annotations

import asyncio
import http.client
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from history_stub import Rows, serve

BODY = b'{"status": "ended"}'
HEADERS = {"Content-Type": "application/json"}


def timed(label: str, send: Any) -> None:
    started = time.perf_counter()
    send()
    print(f"{label:24s} {time.perf_counter() - started:6.2f} s")


def with_http_client(port: int, ids: list[str]) -> None:
    local = threading.local()

    def patch(row_id: str) -> None:
        connection = getattr(local, "connection", None)
        if connection is None:
            connection = local.connection = http.client.HTTPConnection("127.0.0.1", port)
        connection.request("PATCH", f"/api/sessions/{row_id}", body=BODY, headers=HEADERS)
        connection.getresponse().read()

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(patch, ids))


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 1780
    latency = float(sys.argv[2]) if len(sys.argv) > 2 else 0.002
    ids = [str(uuid.uuid4()) for _ in range(count)]
    server = serve(Rows([]), latency)
    port = server.server_address[1]
    base = f"http://127.0.0.1:{port}"
    print(f"{count} PATCHes over 8 connections, service latency {latency * 1000:g} ms")
    timed("http.client, 8 threads", lambda: with_http_client(port, ids))
    try:
        import httpcore
        import httpx
    except ImportError:
        print("httpx is not installed: pip install httpx to compare it")
        return

    def httpx_threads() -> None:
        with (
            httpx.Client(base_url=base, limits=httpx.Limits(max_connections=8)) as client,
            ThreadPoolExecutor(8) as pool,
        ):
            list(
                pool.map(
                    lambda row_id: client.patch(f"/api/sessions/{row_id}", content=BODY, headers=HEADERS), ids
                )
            )

    async def httpx_async() -> None:
        async with httpx.AsyncClient(base_url=base, limits=httpx.Limits(max_connections=8)) as client:
            gate = asyncio.Semaphore(8)

            async def one(row_id: str) -> None:
                async with gate:
                    await client.patch(f"/api/sessions/{row_id}", content=BODY, headers=HEADERS)

            await asyncio.gather(*(one(row_id) for row_id in ids))

    def httpcore_threads() -> None:
        with httpcore.ConnectionPool(max_connections=8) as pool, ThreadPoolExecutor(8) as workers:
            list(
                workers.map(
                    lambda row_id: pool.request(
                        "PATCH", f"{base}/api/sessions/{row_id}", content=BODY, headers=HEADERS
                    ),
                    ids,
                )
            )

    timed("httpx, 8 threads", httpx_threads)
    timed("httpx async", lambda: asyncio.run(httpx_async()))
    timed("httpcore, 8 threads", httpcore_threads)
    server.shutdown()


if __name__ == "__main__":
    main()
