"""Run the real skill in its own process with a fault injected at a named step.

    python3 skill_harness.py call <function> '<json>'      one call through run_skill.main
    python3 skill_harness.py batch '<json list of [function, args]>'   several calls, JSON lines out

Environment: FAULT_STEP (a step name below), FAULT_NTH (which time the step is reached, default 1),
FAULT_ACTION (``kill``: SIGKILL itself; ``pause``: touch FAULT_MARKER and sleep FAULT_SLEEP seconds,
60 by default), and
FAULT_NO_LOCK=1 to run without the gateway's lock (to show what the lock prevents).
Steps: after_intent, locked, after_commit, before_replace, after_replace, before_release,
before_archive, after_archive, after_archived_record, before_history.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import run_skill
import session_manager as sm

STEP = os.environ.get("FAULT_STEP", "")
NTH = int(os.environ.get("FAULT_NTH", "1"))
ACTION = os.environ.get("FAULT_ACTION", "kill")
reached: dict[str, int] = {}


def reach(step: str) -> None:
    reached[step] = reached.get(step, 0) + 1
    if step != STEP or reached[step] != NTH:
        return
    if ACTION == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    Path(os.environ["FAULT_MARKER"]).touch()
    time.sleep(float(os.environ.get("FAULT_SLEEP", "60")))


def install() -> None:
    original_lock, original_archive = sm.gateway_lock, sm.archive_transcript
    original_append, original_stream = sm.AuditLog.append, sm.AuditLog.append_stream
    original_history, original_replace = sm.History.mark, os.replace

    class NoLock:
        def confirm(self) -> None:
            pass

    @contextlib.contextmanager
    def lock(path: str, timeout: float) -> Iterator[Any]:
        if os.environ.get("FAULT_NO_LOCK") == "1":
            yield NoLock()
            return
        with original_lock(path, timeout) as held:
            reach("locked")
            yield held
            reach("before_release")

    def stream(log: sm.AuditLog, pieces: Any, sync: bool = False, separate: bool = False) -> None:
        original_stream(log, pieces, sync, separate)
        if not separate:  # only the intent record is written in pieces
            reach("after_intent")

    def append(log: sm.AuditLog, records: list[dict[str, Any]], sync: bool = False) -> None:
        original_append(log, records, sync)
        for record in records:
            reach(
                {"intent": "after_intent", "commit": "after_commit", "archived": "after_archived_record"}.get(
                    str(record.get("event")), "other"
                )
            )

    def archive(paths: sm.AgentPaths, name: str, moment: Any) -> str:
        reach("before_archive")
        result = original_archive(paths, name, moment)
        reach("after_archive")
        return result

    def history(*args: Any, **kwargs: Any) -> Any:
        reach("before_history")
        return original_history(*args, **kwargs)

    def replace(source: Any, target: Any) -> None:
        index = str(target).endswith(sm.INDEX_NAME)
        if index:
            reach("before_replace")
        original_replace(source, target)
        if index:
            reach("after_replace")

    sm.gateway_lock, sm.archive_transcript = lock, archive  # type: ignore[assignment]
    sm.AuditLog.append, sm.AuditLog.append_stream = append, stream  # type: ignore[method-assign]
    sm.History.mark = history  # type: ignore[method-assign]
    os.replace = replace  # type: ignore[assignment]


def main() -> int:
    install()
    if sys.argv[1] == "call":
        return run_skill.main(["session_manager", *sys.argv[2:]])
    for function, arguments in json.loads(sys.argv[2]):
        try:
            result = sm.FUNCTIONS[function](**arguments)
        except sm.SessionManagerError as error:
            result = {"error": str(error), "error_type": error.error_type}
        print(json.dumps({"function": function, "arguments": arguments, "result": result}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
