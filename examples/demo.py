"""The main job on a copy of the demo tree, with both layers: the sessions and their history rows.

    python3 examples/demo.py [OUTPUT_FOLDER]        (make demo)

Copies examples/agents to a scratch folder (times shifted to "now"), starts the stand-in history
service on 127.0.0.1 with one active row per session, runs get_session_stats, a dry-run prune, a
prune and sync_pending exactly as the agent runs them, and prints a short before/after summary.
The full JSON answers go to OUTPUT_FOLDER (default ./demo-output). The service is stopped when the
demo ends, also on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent


def history_rows(agents: Path) -> list[dict[str, Any]]:
    """One active row per session of the tree, as aria-api would hold them."""
    rows = []
    for index in sorted(agents.glob("*/sessions/sessions.json")):
        agent = index.parent.parent.name
        ids = {entry["sessionId"] for entry in json.loads(index.read_text()).values()}
        for number, session_id in enumerate(sorted(ids)):
            rows.append(
                {
                    "id": f"00000000-0000-4000-8000-{len(rows):04d}{number:08d}",
                    "agent_id": agent,
                    "session_type": "chat",
                    "started_at": "2025-11-01T00:00:00+00:00",
                    "ended_at": None,
                    "status": "active",
                    "metadata": {"aria_session_id": session_id},
                }
            )
    return rows


def start_service(rows_file: Path) -> tuple[subprocess.Popen[str], str]:
    service = subprocess.Popen(
        [sys.executable, str(REPO / "bench" / "history_stub.py"), str(rows_file), "0.002"],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert service.stdout is not None
    port = service.stdout.readline().strip()
    return service, f"http://127.0.0.1:{port}"


def run(function: str, arguments: dict[str, Any], env: dict[str, str], output: Path) -> dict[str, Any]:
    """One call as the agent makes it; its answer is saved to OUTPUT/<n>-<function>.json."""
    completed = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), "session_manager", function, json.dumps(arguments)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    answer: dict[str, Any] = json.loads(completed.stdout)
    number = len(list(output.glob("*.json"))) + 1
    name = f"{number}-{function}{'-dry-run' if arguments.get('dry_run') else ''}.json"
    (output / name).write_text(json.dumps(answer, indent=2, ensure_ascii=False) + "\n")
    return answer


def ended_rows(base: str) -> int:
    import httpx

    return int(httpx.get(f"{base}/api/sessions", params={"status": "ended", "limit": 1}).json()["total"])


def summary(
    before: dict[str, Any],
    dry: dict[str, Any],
    pruned: dict[str, Any],
    after: dict[str, Any],
    synced: dict[str, Any],
    ended: int,
) -> list[str]:
    """What a person reads in ten seconds: per agent before and after, both layers, protections."""
    lines = ["", "sessions per agent      before  after"]
    for agent, count in before["by_agent"].items():
        lines.append(f"  {agent:20s} {count:7d} {after['by_agent'].get(agent, 0):6d}")
    lines.append(f"  {'all':20s} {before['total_sessions']:7d} {after['total_sessions']:6d}")
    reasons = Counter(item["reason"] for item in pruned["protected"])
    lines += [
        "",
        f"dry run: {dry['pruned_count']} of {dry['total_sessions']} sessions would go (idle over "
        f"{dry['threshold_minutes']} min)",
        f"prune:   {pruned['pruned_count']} sessions removed from the indexes, "
        f"{pruned['archived_transcripts']} transcripts archived (<file>.deleted.<stamp>)",
        f"history: {ended} rows marked ended in the history service "
        f"({', '.join(f'{n} {status}' for status, n in pruned['history'].items()) or 'none'})",
        f"kept as protected though idle: {sum(reasons.values())} "
        f"({', '.join(f'{n} {reason}' for reason, n in sorted(reasons.items()))})",
        f"sync_pending: {synced['message']}",
    ]
    return lines


def main() -> int:
    output = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-output").resolve()
    shutil.rmtree(output, ignore_errors=True)
    output.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="aria-demo-") as scratch:
        agents = Path(scratch) / "agents"
        shutil.copytree(HERE / "agents", agents)
        subprocess.run([sys.executable, str(HERE / "shift_times.py"), str(agents)], check=True)
        rows_file = Path(scratch) / "rows.json"
        rows_file.write_text(json.dumps(history_rows(agents)))
        service, base = start_service(rows_file)
        try:
            env = {
                **os.environ,
                "ARIA_AGENTS_DIR": str(agents),
                "ARIA_API_URL": base,
                "SESSION_MANAGER_STATE_DIR": str(Path(scratch) / "state"),
                # The demo's service lives only as long as the demo: no delivery process outlives it.
                "SESSION_HISTORY_BACKGROUND": "0",
            }
            before = run("get_session_stats", {}, env, output)
            dry = run("prune_sessions", {"max_age_minutes": 60, "dry_run": True}, env, output)
            pruned = run("prune_sessions", {"max_age_minutes": 60}, env, output)
            synced = run("sync_pending", {}, env, output)
            after = run("get_session_stats", {}, env, output)
            ended = ended_rows(base)
        finally:
            service.terminate()
            service.wait(timeout=10)
    print("\n".join(summary(before, dry, pruned, after, synced, ended)))
    print(f"\nthe full answers: {output}/ ({', '.join(sorted(p.name for p in output.glob('*.json')))})")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        sys.exit(130)
