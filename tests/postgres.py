"""A throw-away PostgreSQL server on 127.0.0.1 for the test session, and the history service's table."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

SCHEMA = """
CREATE TABLE agent_sessions (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    agent_id varchar(100),
    session_type varchar(50),
    started_at timestamptz DEFAULT now(),
    ended_at timestamptz,
    messages_count integer DEFAULT 0,
    tokens_used integer DEFAULT 0,
    cost_usd numeric(10, 6) DEFAULT 0,
    status varchar(50) DEFAULT 'active',
    metadata jsonb DEFAULT '{}'::jsonb
);
CREATE INDEX idx_agent_sessions_aria_sid ON agent_sessions ((metadata->>'aria_session_id'));
CREATE INDEX idx_agent_sessions_status ON agent_sessions (status);
"""


def server_binaries() -> Path | None:
    """The folder holding initdb and pg_ctl, or None when PostgreSQL's server is not installed."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """initdb + pg_ctl in a temporary folder; as root, the server runs as the 'postgres' user."""

    def __init__(self, binaries: Path) -> None:
        self.binaries = binaries
        self.base = Path(tempfile.mkdtemp(prefix="aria-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self.run_as: list[str] = []
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.base, user.pw_uid, user.pw_gid)
            self.run_as = ["runuser", "-u", "postgres", "--"]

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=aria dbname=postgres"

    def _run(self, *command: str) -> None:
        subprocess.run([*self.run_as, *command], check=True, capture_output=True, timeout=120)

    def start(self) -> PostgresServer:
        self._run(
            str(self.binaries / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "aria",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        options = f"-h 127.0.0.1 -p {self.port} -k {self.base} -F"
        self._run(
            str(self.binaries / "pg_ctl"),
            "-D",
            str(self.data),
            "-o",
            options,
            "-l",
            str(self.base / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        import psycopg

        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(SCHEMA)
        return self

    def stop(self) -> None:
        try:
            self._run(str(self.binaries / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)
