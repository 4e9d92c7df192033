"""Where the time goes in the largest case: the phases of a listing and a prune of one agent with
100,000 sessions, timed inside the skill's own process.

    python3 bench/profile.py [SESSIONS]
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

import run as bench  # noqa: E402

PHASES = {  # function or Class.method of session_manager -> what it does
    "AgentStore.read": "read, parse and group the index, list the folder",
    "_session_item": "build the listing's items",
    "AuditLog.append_stream": "write the audit intent (each entry's text)",
    "rewrite_index": "hold the lock: check, change and write the index",
    "JsonStore.archive_session_transcripts": "rename the transcripts",
    "History.mark": "history: look up rows and PATCH them",
}


def owner_of(sm: Any, name: str) -> tuple[Any, str]:
    """Where a phase's function lives: the module, or the class of a ``Class.method``."""
    *classes, attribute = name.split(".")
    return (getattr(sm, classes[0]) if classes else sm), attribute


def timed_phases(sm: Any) -> dict[str, float]:
    spent = dict.fromkeys(PHASES, 0.0)
    for name in PHASES:
        owner, attribute = owner_of(sm, name)
        original: Callable[..., Any] = getattr(owner, attribute)

        def wrapper(
            *args: Any, __original: Callable[..., Any] = original, __name: str = name, **kwargs: Any
        ) -> Any:
            started = time.perf_counter()
            try:
                return __original(*args, **kwargs)
            finally:
                spent[__name] += time.perf_counter() - started

        setattr(owner, attribute, wrapper)
    return spent


def main() -> None:
    sessions = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
    with tempfile.TemporaryDirectory(prefix="aria-profile-") as scratch:
        work = Path(scratch)
        tree = bench.generate(work / "agents", 1, sessions, 0.01)
        rows_file = work / "rows.json"
        rows_file.write_text(json.dumps(tree.rows))
        stub = subprocess.Popen(
            [sys.executable, str(HERE / "history_stub.py"), str(rows_file), "0.002"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert stub.stdout is not None
        port = int(stub.stdout.readline())
        os.environ.update(
            ARIA_AGENTS_DIR=str(work / "agents"),
            ARIA_API_URL=f"http://127.0.0.1:{port}",
            SESSION_HISTORY_BUDGET_SECONDS="900",
            SESSION_MANAGER_STATE_DIR=str(work / "state"),
        )
        import gc

        gc.disable()  # as session_manager.run_function does
        import session_manager as sm

        index_mb = tree.indexes[0].stat().st_size / 1e6
        print(
            f"one agent, {sessions} sessions, index {index_mb:.0f} MB, "
            f"{len(tree.marked_row_ids)} rows to mark"
        )
        for job, function, arguments in (
            ("list_sessions", "list_sessions", {}),
            ("prune", "prune_sessions", {"max_age_minutes": 60}),
        ):
            spent = timed_phases(sm)
            started = time.perf_counter()
            result = getattr(sm, function)(**arguments)
            output = json.dumps(result, ensure_ascii=False, separators=(",", ":"))
            total = time.perf_counter() - started
            for name in PHASES:
                owner, attribute = owner_of(sm, name)
                setattr(owner, attribute, getattr(owner, attribute).__kwdefaults__["__original"])
            print(f"\n{job}: {total:.2f} s in all ({len(output) / 1e6:.0f} MB of JSON output)")
            for name, seconds in spent.items():
                if seconds:
                    print(f"  {seconds:6.2f} s  {PHASES[name]} ({name})")
            print(f"  {total - sum(spent.values()):6.2f} s  everything else (planning, results, output)")
        stub.terminate()
        shutil.rmtree(work / "agents", ignore_errors=True)


if __name__ == "__main__":
    main()
