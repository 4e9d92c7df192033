"""By hand, not in CI: a 4 x 200 prune against the real aria-api (docs/FORMATS.md §5), with the
skill's defaults (its pace, delivery in the background) and another client writing every 2 s.

    REAL_ARIA_API=../shared/tools/real_aria_api.py ARIA_MOLTBOT_GIT=... PGVECTOR_GIT=... \\
        python3 bench/real_service.py [--agents 4] [--per-agent 200]

It builds the tree, lets the service's own sync import it (one GET), prunes through the command
line, then watches the service's table until every pruned session's row is ended. It prints the
minutes to the last mark, the 429s the skill met (its delivery log) and the other client's, and
what the service logged. REAL_ARIA_API names the tool that runs the real service (the project's
shared tools; it needs local git copies of two public repositories, see its docstring).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
MINUTE_MS = 60_000


def tree(root: Path, agents: int, per_agent: int) -> list[str]:
    """Agents of sub-agent sessions, three in four idle for five hours; the stale ids."""
    now, stale = int(time.time() * 1000), []
    for a in range(agents):
        agent = ["main", "analyst", "aria-talk", "aria-memeothy"][a] if a < 4 else f"agent-{a}"
        store = {}
        for n in range(per_agent):
            session_id = str(uuid.uuid4())
            updated = now - (300 if n % 4 else 1) * MINUTE_MS
            store[f"agent:{agent}:subagent:{session_id}"] = {"sessionId": session_id, "updatedAt": updated}
            stale += [session_id] if n % 4 else []
        folder = root / agent / "sessions"
        folder.mkdir(parents=True)
        (folder / "sessions.json").write_text(json.dumps(store, indent=2))
    return stale


class OtherClient(threading.Thread):
    """Another skill behind the same IP: one PATCH every 2 s; counts what it sent and was refused."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.sent, self.refused, self.stopping = url, 0, 0, threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(2.0):
            request = urllib.request.Request(
                f"{self.url}/api/sessions/{uuid.uuid4()}",
                data=b'{"status": "ended"}',
                method="PATCH",
                headers={"Content-Type": "application/json"},
            )
            try:
                urllib.request.urlopen(request, timeout=30).read()
                self.sent += 1
            except urllib.error.HTTPError as error:
                self.refused += error.code == 429
            except OSError:
                pass


def skill(root: Path, api_url: str, function: str, arguments: str) -> dict[str, Any]:
    """One call of the skill's command line, with its defaults, against that root and service."""
    env = {**os.environ, "ARIA_AGENTS_DIR": str(root), "ARIA_API_URL": api_url}
    for name in ("SESSION_HISTORY_PACE", "SESSION_HISTORY_BACKGROUND", "SESSION_MANAGER_STATE_DIR"):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), "session_manager", function, arguments],
        capture_output=True,
        text=True,
        env=env,
    )
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def reconcile(tool: Any, root: Path) -> None:
    """220 cron runs imported by the service's sync, 20 then removed by the gateway's retention,
    a row of another agent and one of no OpenClaw session: a dry run, then the real run."""
    now = int(time.time() * 1000)
    store = {
        f"agent:main:cron:job:run:{n}": {"sessionId": f"run-{n:03d}", "updatedAt": now - 300 * MINUTE_MS}
        for n in range(220)
    }
    folder = root / "main" / "sessions"
    folder.mkdir(parents=True)
    (folder / "sessions.json").write_text(json.dumps(store, indent=2))
    with tool.real_aria_api(root) as api:
        urllib.request.urlopen(f"{api.url}/api/sessions?limit=1", timeout=120).read()  # the sync
        api.sql(
            "insert into agent_sessions (id, agent_id, session_type, started_at, status, metadata) values "
            "(gen_random_uuid(), 'elsewhere', 'openclaw', now() - interval '1 day', 'active', "
            """'{"openclaw_session_id": "far-away"}'), """
            "(gen_random_uuid(), 'main', 'chat', now() - interval '1 day', 'active', '{}') returning id"
        )
        gone = {f"run-{n:03d}" for n in range(0, 220, 11)}
        (folder / "sessions.json").write_text(
            json.dumps({k: v for k, v in store.items() if v["sessionId"] not in gone}, indent=2)
        )
        table = "select id, status from agent_sessions order by id"
        before = api.sql(table)
        dry = skill(root, api.url, "reconcile_history", '{"dry_run": true, "detail": "full"}')
        listed = sorted(item["id"] for item in dry["sessions"])
        print(
            f"dry run: {dry['rows_read']} rows read, {dry['openclaw_rows']} OpenClaw, "
            f"{dry['present_rows']} present, {dry['rows_ended']} would end, skipped {dry['skipped']}; "
            f"lists the 20: {listed == sorted(gone)}; "
            f"table unchanged: {api.sql(table) == before}"
        )
        started = time.monotonic()
        real = skill(root, api.url, "reconcile_history", "{}")
        print(
            f"real run in {time.monotonic() - started:.1f} s: {real['rows_ended']} ended, "
            f"history {real['history']}, {real['history_pending']} wait"
        )
        after = dict(map(tuple, api.sql(table)))
        changed = {row_id for row_id, status in before if after[row_id] != status}
        ended = api.sql(
            "select metadata->>'openclaw_session_id' from agent_sessions where status = 'ended' order by 1"
        )
        print(
            f"rows changed: {len(changed)}; "
            f"ended are exactly the 20: {sorted(r[0] for r in ended) == sorted(gone)}"
        )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--agents", type=int, default=4)
    parser.add_argument("--per-agent", type=int, default=200)
    parser.add_argument("--limit-minutes", type=float, default=30)
    parser.add_argument("--reconcile", action="store_true", help="the reconcile_history run instead")
    options = parser.parse_args()
    spec = importlib.util.spec_from_file_location("real_aria_api", os.environ["REAL_ARIA_API"])
    assert spec and spec.loader
    tool = importlib.util.module_from_spec(spec)
    sys.modules["real_aria_api"] = tool  # its dataclasses look themselves up there
    spec.loader.exec_module(tool)
    work = Path(tempfile.mkdtemp(prefix="aria-real-"))
    root = work / "agents"
    if options.reconcile:
        reconcile(tool, root)
        return 0
    stale = tree(root, options.agents, options.per_agent)
    with tool.real_aria_api(root) as api:
        urllib.request.urlopen(f"{api.url}/api/sessions?limit=1", timeout=120).read()  # the sync
        print(f"rows after the sync: {api.sql('select count(*) from agent_sessions')[0][0]}", flush=True)
        env = {**os.environ, "ARIA_AGENTS_DIR": str(root), "ARIA_API_URL": api.url}
        for name in ("SESSION_HISTORY_PACE", "SESSION_HISTORY_BACKGROUND", "SESSION_MANAGER_STATE_DIR"):
            env.pop(name, None)
        other = OtherClient(api.url)
        other.start()
        started = time.monotonic()
        done = subprocess.run(
            [
                sys.executable,
                str(REPO / "run_skill.py"),
                "session_manager",
                "prune_sessions",
                '{"max_age_minutes": 60}',
            ],
            capture_output=True,
            text=True,
            env=env,
        )
        answer = json.loads(done.stdout)
        print(
            f"prune returned in {time.monotonic() - started:.1f} s: pruned {answer['pruned_count']}, "
            f"{answer['history_pending']} marks wait ({answer.get('history_delivery')})",
            flush=True,
        )
        quoted = ",".join(f"'{s}'" for s in stale)
        ended, last = 0, time.monotonic()
        while time.monotonic() - started < options.limit_minutes * 60:
            query = (
                "select count(*) from agent_sessions where status = 'ended' "
                f"and metadata->>'openclaw_session_id' in ({quoted})"
            )
            count = int(api.sql(query)[0][0])
            if count != ended:
                ended, last = count, time.monotonic()
                print(f"{(last - started) / 60:5.1f} min: {ended} of {len(stale)} rows ended", flush=True)
            if ended == len(stale):
                break
            time.sleep(10)
        other.stopping.set()
        log = root / ".session-manager" / "history-delivery.log"
        delivery = log.read_text() if log.exists() else ""
        abandoned = root / ".session-manager" / "history-abandoned.jsonl"
        print(f"last mark after {(last - started) / 60:.1f} min; {ended} of {len(stale)} ended")
        print(
            f"429s met by the skill: {delivery.count('HTTP 429')} "
            f"(delivery log lines: {delivery.count(chr(10))})"
        )
        print(f"other client: {other.sent} sent, {other.refused} refused with 429")
        print(f"service log: {api.log.read_text().count(' 429 ')} answers 429")
        print(f"marks given up: {len(abandoned.read_text().splitlines()) if abandoned.exists() else 0}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
