"""Every function's answer on the demo tree, byte for byte, with the files each call leaves.

    python3 tests/same_answers.py            print the record (JSON lines) to stdout
    python3 tests/same_answers.py --write    rewrite tests/golden/same_answers.jsonl

A restructure must not change what the skill says or writes: tests/test_same_answers.py runs this
script and compares its output with the golden record made before the change. The clock is frozen
at the moment the demo tree describes (``session_manager._utc_now``, a declared test hook) and the
random ids count up (``_new_id``, the other hook); the history service is the stand-in of
bench/history_stub.py with one active row per session, started as examples/demo.py starts it, and
one more of a session no index holds (as the gateway's retention leaves them).
Two runs print the same bytes. Files are recorded by digest (the skill's own state files too),
the scratch folder's path as <scratch>.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
GOLDEN = REPO / "tests" / "golden" / "same_answers.jsonl"
NOW = datetime(2025, 11, 25, 12, 0, tzinfo=timezone.utc)  # the moment examples/agents describes
RUNNING = "8f14e45f-ceea-4e1a-9b0e-2f6b5c3d1a01"
# A session the gateway's own retention removed: its row is still active (what reconcile_history ends).
GONE = "0c0c0c0c-0000-4000-8000-00000000beef"

#: (function, arguments): reads first, then dry runs, changes, undo, and callers' mistakes.
CALLS: list[tuple[str, Any]] = [
    ("list_sessions", {}),
    ("list_sessions", {"agent": "main", "detail": "full"}),
    ("list_sessions", {"min_idle_minutes": 60, "limit": 3, "offset": 2}),
    ("list_sessions", {"session_type": "cron"}),
    ("get_session_stats", {}),
    ("get_session_stats", {"agent": "analyst", "stale_threshold_minutes": 30}),
    ("prune_sessions", {"max_age_minutes": 60, "dry_run": True}),
    ("delete_session", {"session_id": "9a8b7c6d-1e2f-4a3b-8c4d-5e6f7a8b9c0d", "dry_run": True}),
    ("delete_session", {"session_id": "9a8b7c6d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"}),
    ("delete_session", {"session_id": "9a8b7c6d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"}),
    ("delete_session", {"session_id": RUNNING}),
    ("delete_session", {"session_id": "agent:analyst:main"}),
    ("list_deleted", {}),
    ("restore_session", {"session_id": "9a8b7c6d-1e2f-4a3b-8c4d-5e6f7a8b9c0d"}),
    ("restore_session", {"session_id": "no-such-session"}),
    ("prune_sessions", {"max_age_minutes": 60}),
    ("prune_sessions", {"max_age_minutes": 60, "detail": "full"}),
    ("cleanup_after_delegation", {"session_id": "4b7c0f2e-5d6a-4e8b-9c1d-2a3b4c5d6e70"}),
    ("cleanup_orphans", {"dry_run": True, "archive_retention_days": 30}),
    ("cleanup_orphans", {"archive_retention_days": 30}),
    ("list_deleted", {"agent": "main", "limit": 2, "offset": 1}),
    ("sync_pending", {}),
    ("get_session_stats", {}),
    ("list_sessions", {"agent": "../etc"}),
    ("list_sessions", {"agent": "nobody"}),
    ("list_sessions", {"limit": 0}),
    ("prune_sessions", {"max_age_minutes": "soon"}),
    ("delete_session", {}),
    ("list_sessions", "not json"),
    ("reconcile_history", {"dry_run": True}),
    ("reconcile_history", {}),
    ("get_session_stats", {}),
]


def demo_tree(scratch: Path) -> Path:
    """A copy of examples/agents whose transcripts were last written two hours before NOW."""
    root = scratch / "agents"
    shutil.copytree(REPO / "examples" / "agents", root)
    moment = NOW.timestamp() - 7200
    for transcript in root.glob("*/sessions/*.jsonl"):
        os.utime(transcript, (moment, moment))
    return root


@contextlib.contextmanager
def history_service(root: Path, scratch: Path) -> Iterator[str]:
    """The demo's stand-in history service, one active row per session of the tree."""
    sys.path.insert(0, str(REPO / "examples"))
    from demo import history_rows, start_service

    rows = history_rows(root)
    rows.append(
        {**rows[0], "id": "00000000-0000-4000-8000-999999999999", "metadata": {"openclaw_session_id": GONE}}
    )
    (scratch / "rows.json").write_text(json.dumps(rows))
    service, url = start_service(scratch / "rows.json")
    try:
        yield url
    finally:
        service.terminate()
        service.wait(timeout=10)


def files_of(scratch: Path) -> dict[str, str]:
    """Every file under scratch with a digest of its bytes."""
    files = {}
    for path in sorted(scratch.rglob("*")):
        if not path.is_file() or path.name == "rows.json":
            continue
        name = str(path.relative_to(scratch))
        # The pace's record is of real send times (it paces real requests): its presence counts.
        timing = path.name == "history-pace.json"
        files[name] = "sent times" if timing else hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    return files


def answer_of(function: str, arguments: Any) -> tuple[int, str]:
    """One call through run_skill.main, exactly as the command line makes it: exit code, stdout."""
    import run_skill

    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    buffer = io.BytesIO()
    stdout = io.TextIOWrapper(buffer, encoding="utf-8")
    with contextlib.redirect_stdout(stdout):
        code = run_skill.main(["session_manager", function, raw])
        stdout.flush()
    return code, buffer.getvalue().decode("utf-8")


def record() -> list[str]:
    sys.path.insert(0, str(REPO))
    import session_manager

    numbers = iter(range(1, 1_000_000))
    session_manager._utc_now = lambda: NOW  # the declared test hooks: the clock and random ids
    session_manager._new_id = lambda: f"{next(numbers):032x}"
    lines = []
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        root = demo_tree(scratch)
        with history_service(root, scratch) as url:
            os.environ.update(ARIA_AGENTS_DIR=str(root), ARIA_API_URL=url, ARIA_SESSION_ID=RUNNING)
            os.environ.update(SESSION_HISTORY_PACE="100000/1", SESSION_HISTORY_BACKGROUND="0")
            for name in ("ARIA_API_KEY", "SESSION_MANAGER_STATE_DIR", "SESSION_STALE_MINUTES"):
                os.environ.pop(name, None)
            for function, arguments in CALLS:
                code, answer = answer_of(function, arguments)
                answer = answer.replace(str(scratch), "<scratch>")
                step = {"call": [function, arguments], "exit": code, "answer": answer}
                lines.append(json.dumps({**step, "files": files_of(scratch)}, ensure_ascii=False))
    return lines


def main() -> int:
    lines = record()
    if sys.argv[1:] == ["--write"]:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text("\n".join(lines) + "\n", "utf-8")
    else:
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
