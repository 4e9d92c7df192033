"""Proof that no secret goes on a command line (issue 26 H1): any local user reads
``/proc/<pid>/cmdline`` while a process runs. Two witnesses: the OpenClaw CLI wrapper of the tests
logs the arguments of every start (``write_cli``), and ``CommandLineWatch`` reads every process's
command line on this machine, every few milliseconds, while the real-gateway tests run.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path


class CommandLineWatch(threading.Thread):
    """Reads /proc/*/cmdline until stopped; ``seen`` holds each process whose command line held a
    secret (its pid and program, never the secret), ``scans`` how many sweeps were made."""

    def __init__(self, secrets: list[str], interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.secrets = [secret.encode() for secret in secrets]
        self.interval = interval
        self.seen: dict[int, str] = {}
        self.scans = 0
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    self.look(int(entry.name))
            self.scans += 1
            self.stopping.wait(self.interval)

    def look(self, pid: int) -> None:
        try:
            line = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return
        if any(secret in line for secret in self.secrets):
            self.seen[pid] = line.split(b"\0")[0].decode(errors="replace")

    def stop(self) -> dict[int, str]:
        self.stopping.set()
        self.join(timeout=10)
        return self.seen


def logged_starts(cli: Path) -> str:
    """Every argument list the CLI wrapper at ``cli`` was started with, as it logged them."""
    log = cli.with_name(cli.name + ".starts")
    return log.read_text() if log.exists() else ""
