"""Run a command; write its wall time and peak resident memory to a file.

    python3 peak.py REPORT COMMAND...

The benchmark's own process is large (it holds the generated tree), and on Linux a child's
ru_maxrss counts what it had when forked: forking from this small process keeps that out.
"""

from __future__ import annotations

import json
import os
import sys
import time


def main() -> int:
    report, command = sys.argv[1], sys.argv[2:]
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        finally:
            os._exit(127)
    _, status, usage = os.wait4(pid, 0)
    elapsed = time.perf_counter() - started
    with open(report, "w") as handle:
        json.dump({"seconds": elapsed, "peak_mb": usage.ru_maxrss / 1024}, handle)
    return os.waitstatus_to_exitcode(status)


if __name__ == "__main__":
    sys.exit(main())
