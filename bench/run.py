"""Benchmark of the session manager against the floor of each job, measured in the same run.

    python3 bench/run.py                 every size (about 15 minutes on 2 cores)
    python3 bench/run.py --quick         the two smaller sizes, 3 runs each
    python3 bench/run.py --sizes 4x2500 --runs 5

Each figure is the median wall time of whole processes, started the way the agent starts the skill
(`python3 run_skill.py session_manager <function> '<json>'`), beside the floor for the same job on
the same tree (bench/floor.py) and their ratio. Prints a table and writes bench/results/latest.json
(--quick: quick.json, which is not tracked).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

from history_stub import Rows, serve  # noqa: E402

#: name -> (agents, sessions per agent, share of entries with a large skillsSnapshot)
SIZES = {
    "4x50": (4, 50, 0.05),
    "4x500": (4, 500, 0.05),
    "4x2500": (4, 2500, 0.05),
    "1x100000": (1, 100_000, 0.01),
}
AGENTS = ["main", "analyst", "aria-talk", "aria-memeothy"]
STALE_SHARE = 0.8
ROW_SHARE = 0.9
MINUTE_MS = 60_000

TARGETS = {  # job -> the largest ratio to its floor (issues 5 and 9)
    "prune": 1.5,
    "history": 1.2,
    "prune_dry_run": 2.0,
    "get_session_stats": 2.0,
    "list_sessions": 2.0,
    "delete_session": 2.0,
    "start": 1.5,
}


@dataclass
class Tree:
    """A generated agents tree: what is stale, the history rows, and where the indexes are."""

    root: Path
    indexes: list[Path]
    stale_keys: dict[str, list[str]]
    stale_transcripts: list[str]
    stale_ids: list[str]
    stale_by_agent: dict[str, list[str]]
    rows: list[dict[str, Any]]
    marked_row_ids: list[str]


def skills_snapshot(rng: random.Random) -> dict[str, Any]:
    """A large nested object like the gateway's: 20-120 KB."""
    count = rng.randint(40, 240)
    return {
        "version": 3,
        "skills": [
            {
                "name": f"skill-{n}",
                "version": f"1.{n}.0",
                "enabled": n % 3 != 0,
                "description": "Does a useful thing for the agent when asked. " * rng.randint(4, 8),
                "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
            }
            for n in range(count)
        ],
    }


def session_key(agent: str, n: int, rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.45:
        return f"agent:{agent}:cron:job-{n % 97}:run:{n:08x}"
    if kind < 0.65:
        return f"agent:{agent}:cron:job-{n}"
    if kind < 0.85:
        return f"agent:{agent}:subagent:{n:08x}-5d6a-4e8b-9c1d-{n:012x}"
    if kind < 0.92:
        return f"agent:{agent}:telegram:direct:{1000 + n}"
    if kind < 0.97:
        return f"agent:{agent}:dashboard:{n:08x}"
    return f"agent:{agent}:hook:h{n}"


def generate(root: Path, agents: int, per_agent: int, snapshot_share: float, seed: int = 7) -> Tree:
    """Write a realistic tree: the key kinds of FORMATS.md, aliases, transcripts, large objects."""
    rng = random.Random(seed)
    now_ms = int(time.time() * 1000)
    tree = Tree(root, [], {}, [], [], {}, [], [])
    for agent in AGENTS[:agents]:
        folder = root / agent / "sessions"
        folder.mkdir(parents=True)
        store: dict[str, Any] = {}
        stale_keys: list[str] = []
        main_id = f"{agent}-main-0000"
        store[f"agent:{agent}:main"] = {"sessionId": main_id, "updatedAt": now_ms - MINUTE_MS}
        for n in range(per_agent - 1):
            key = session_key(agent, n, rng)
            while key in store:
                key += "x"
            stale = rng.random() < STALE_SHARE
            protected = agent == "main" and not (":cron:" in key or ":subagent:" in key)
            session_id = f"{n:08x}-{agent[:4]}-4aaa-8aaa-{rng.getrandbits(48):012x}"
            age_minutes = rng.uniform(120, 2880) if stale else rng.uniform(0, 30)
            entry: dict[str, Any] = {
                "sessionId": session_id,
                "updatedAt": now_ms - int(age_minutes * MINUTE_MS),
                "sessionFile": f"{session_id}.jsonl",
                "label": f"job {n}",
                "chatType": "direct",
                "model": "gpt-4o-mini",
                "modelProvider": "openai",
                "contextTokens": rng.randint(100, 90000),
                "inputTokens": rng.randint(10, 5000),
                "outputTokens": rng.randint(10, 5000),
                "origin": {"label": f"origin {n}", "provider": "cron"},
                "deliveryContext": {"channel": "internal", "to": f"user:{n}"},
                "systemPromptReport": {"chars": rng.randint(1000, 9000), "sections": ["identity", "tools"]},
            }
            if rng.random() < snapshot_share:
                entry["skillsSnapshot"] = skills_snapshot(rng)
            store[key] = entry
            if ":run:" in key and rng.random() < 0.3:  # the job's own key aliases the run's session
                alias = key.rsplit(":run:", 1)[0]
                if alias not in store:
                    store[alias] = {
                        "sessionId": session_id,
                        "updatedAt": entry["updatedAt"],
                        "label": "alias",
                    }
                    if stale and not protected:
                        stale_keys.append(alias)
            transcript = folder / f"{session_id}.jsonl"
            transcript.write_text(
                json.dumps({"type": "message", "text": "hello " * rng.randint(10, 200)}) + "\n"
            )
            if stale and not protected:
                stale_keys.append(key)
                tree.stale_transcripts.append(str(transcript))
                tree.stale_ids.append(session_id)
                tree.stale_by_agent.setdefault(agent, []).append(session_id)
            if rng.random() < ROW_SHARE:
                row = {
                    "id": f"{rng.getrandbits(32):08x}-{rng.getrandbits(16):04x}-4{rng.getrandbits(12):03x}-"
                    f"8{rng.getrandbits(12):03x}-{rng.getrandbits(48):012x}",
                    "agent_id": agent,
                    "session_type": "cron",
                    "status": "active",
                    "started_at": f"2026-{rng.randint(1, 11):02d}-{rng.randint(1, 28):02d}T00:00:00+00:00",
                    "ended_at": None,
                    "metadata": {"aria_session_id": session_id},
                }
                tree.rows.append(row)
                if stale and not protected:
                    tree.marked_row_ids.append(row["id"])
        index = folder / "sessions.json"
        index.write_text(json.dumps(store, indent=2, ensure_ascii=False), encoding="utf-8")
        index.chmod(0o600)
        tree.indexes.append(index)
        tree.stale_keys[str(index)] = stale_keys
    tree.rows.sort(key=lambda row: row["started_at"], reverse=True)
    return tree


def run_process(command: list[str], env: dict[str, str]) -> tuple[float, float, int]:
    """Wall seconds, peak resident MB and output size of one whole process (stdout read fully)."""
    with tempfile.NamedTemporaryFile(suffix=".json") as report:
        wrapped = [sys.executable, str(HERE / "peak.py"), report.name, *command]
        completed = subprocess.run(wrapped, capture_output=True, env=env, check=False)
        if completed.returncode != 0:
            raise RuntimeError(
                f"{command[:4]} exited {completed.returncode}: {completed.stderr.decode()[-500:]} "
                f"{completed.stdout[-500:]!r}"
            )
        measured = json.loads(Path(report.name).read_text())
    return measured["seconds"], measured["peak_mb"], len(completed.stdout)


def skill(function: str, arguments: dict[str, Any]) -> list[str]:
    return [sys.executable, str(REPO / "run_skill.py"), "session_manager", function, json.dumps(arguments)]


def floor(*arguments: str) -> list[str]:
    return [sys.executable, str(HERE / "floor.py"), *arguments]


def median_of(runs: int, measure: Any) -> tuple[float, float, int]:
    """Median seconds, largest peak memory and largest output of ``runs`` measurements."""
    results = [measure(n) for n in range(runs)]
    return statistics.median(r[0] for r in results), max(r[1] for r in results), max(r[2] for r in results)


def measure_size(name: str, runs: int, latency: float, work: Path) -> list[dict[str, Any]]:
    agents, per_agent, share = SIZES[name]
    pristine = work / f"{name}-pristine"
    tree = generate(pristine / "agents", agents, per_agent, share)
    index_mb = [index.stat().st_size / 1e6 for index in tree.indexes]
    rows = Rows([dict(row) for row in tree.rows])
    server = serve(rows, latency)
    host, port = server.server_address[0], server.server_address[1]
    base_env = {
        **os.environ,
        "ARIA_API_URL": f"http://{host}:{port}",
        "SESSION_HISTORY_BUDGET_SECONDS": "900",
        "SESSION_MANAGER_STATE_DIR": str(work / "state"),
        # The cost of the history step itself, against a fast stand-in without a limiter: no pace,
        # and the call delivers everything (what the real service allows is in the README).
        "SESSION_HISTORY_PACE": "1000000/1",
        "SESSION_HISTORY_BACKGROUND": "0",
    }
    results: list[dict[str, Any]] = []
    peak = 0.0

    def record(job: str, seconds: float, floor_seconds: float, memory: float, output: int) -> None:
        nonlocal peak
        peak = max(peak, memory)
        results.append(
            {
                "size": name,
                "job": job,
                "seconds": round(seconds, 4),
                "floor_seconds": round(floor_seconds, 4),
                "ratio": round(seconds / floor_seconds, 2),
                "target": TARGETS[job],
                "peak_mb": round(memory, 1),
                "output_bytes": output,
            }
        )

    def fresh_copy(n: int) -> tuple[Path, dict[str, str]]:
        target = work / f"{name}-run"
        shutil.rmtree(target, ignore_errors=True)
        shutil.rmtree(work / "state", ignore_errors=True)
        shutil.copytree(pristine, target)
        for row in rows.rows:
            row["status"] = "active"
        rows.patched = 0
        rows.selections.clear()
        return target, {**base_env, "ARIA_AGENTS_DIR": str(target / "agents")}

    reads_env = {**base_env, "ARIA_AGENTS_DIR": str(pristine / "agents")}
    indexes = [str(p) for p in tree.indexes]
    load_floor, _, _ = median_of(runs, lambda n: run_process(floor("load", *indexes), reads_env))
    base = f"http://{host}:{port}"
    # Stats also count the service's active rows of vanished sessions (issue 20): their floor reads them.
    stats_floor, _, _ = median_of(runs, lambda n: run_process(floor("stats", base, *indexes), reads_env))
    for job, function, arguments, floor_seconds in (
        ("list_sessions", "list_sessions", {}, load_floor),
        ("get_session_stats", "get_session_stats", {}, stats_floor),
        ("prune_dry_run", "prune_sessions", {"max_age_minutes": 60, "dry_run": True}, load_floor),
    ):
        seconds, memory, output = median_of(
            runs, lambda n, f=function, a=arguments: run_process(skill(f, a), reads_env)
        )
        record(job, seconds, floor_seconds, memory, output)

    def plan_file(target: Path) -> str:
        plan = {
            "stale_keys": {k.replace(str(pristine), str(target)): v for k, v in tree.stale_keys.items()},
            "transcripts": [t.replace(str(pristine), str(target)) for t in tree.stale_transcripts],
            "base": f"http://{host}:{port}",
            "wanted": tree.stale_by_agent,
        }
        path = work / "plan.json"
        path.write_text(json.dumps(plan))
        return str(path)

    def prune_floor(n: int) -> tuple[float, float, int]:
        target, env = fresh_copy(n)
        outcome = run_process(floor("prune", plan_file(target)), env)
        assert rows.patched == len(tree.marked_row_ids), "the floor must send the same PATCHes"
        return outcome

    def history_floor(n: int) -> tuple[float, float, int]:
        target, env = fresh_copy(n)
        outcome = run_process(floor("history", plan_file(target)), env)
        assert rows.patched == len(tree.marked_row_ids), "the floor must send the same PATCHes"
        return outcome

    def history_skill(n: int) -> tuple[float, float, int]:
        """The history step alone: sync_pending of an outbox that holds a prune's marks."""
        _, env = fresh_copy(n)
        state = work / "state"
        state.mkdir(parents=True, exist_ok=True)
        queued = time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
        marks = [
            {
                "id": f"{number:032x}",
                "session_id": sid,
                "agent": agent,
                "status": "ended",
                "row_ids": None,
                "attempts": 0,
                "queued_at": queued,
                "last_error": None,
                "txn": None,
                "confirmed": True,
            }
            for number, (agent, sid) in enumerate(
                (a, s) for a, ids in tree.stale_by_agent.items() for s in ids
            )
        ]
        (state / "history-outbox.jsonl").write_text("".join(json.dumps(m) + "\n" for m in marks))
        outcome = run_process(skill("sync_pending", {}), env)
        assert rows.patched == len(tree.marked_row_ids), f"skill sent {rows.patched} PATCHes"
        return outcome

    def prune_skill(n: int) -> tuple[float, float, int]:
        _, env = fresh_copy(n)
        outcome = run_process(skill("prune_sessions", {"max_age_minutes": 60}), env)
        assert rows.patched == len(tree.marked_row_ids), f"skill sent {rows.patched} PATCHes"
        return outcome

    floor_seconds, _, _ = median_of(runs, prune_floor)
    seconds, memory, output = median_of(runs, prune_skill)
    record("prune", seconds, floor_seconds, memory, output)
    floor_seconds, _, _ = median_of(runs, history_floor)
    seconds, memory, output = median_of(runs, history_skill)
    record("history", seconds, floor_seconds, memory, output)

    # One delete on a pristine copy, as the agent makes it after a delegation (no agent named):
    # the floor loads and writes that one agent's index.
    # the floor loads and writes that one agent's index and marks that one session's history row.
    target, env = fresh_copy(0)
    victims = tree.stale_by_agent[AGENTS[0]][: runs * 2]
    main_index = str(target / "agents" / AGENTS[0] / "sessions" / "sessions.json")

    def delete_floor(n: int) -> tuple[float, float, int]:
        plan = work / "delete-plan.json"
        plan.write_text(json.dumps({"base": f"http://{host}:{port}", "wanted": {AGENTS[0]: [victims[n]]}}))
        return run_process(floor("rewrite", main_index, str(plan)), env)

    rewrite_floor, _, _ = median_of(runs, delete_floor)
    seconds, memory, output = median_of(
        runs, lambda n: run_process(skill("cleanup_after_delegation", {"session_id": victims[runs + n]}), env)
    )
    record("delete_session", seconds, rewrite_floor, memory, output)
    _, httpx_mb, _ = run_process(floor("httpx"), env)
    _, python_mb, _ = run_process([sys.executable, "-c", "import json"], env)
    server.shutdown()
    results.append(
        {
            "size": name,
            "job": "memory",
            "peak_mb": round(peak, 1),
            # Issue 5's bound, plus what the user's HTTP client itself occupies (measured here).
            "limit_mb": round(3 * max(index_mb) + 40 + max(0.0, httpx_mb - python_mb), 1),
            "httpx_mb": round(httpx_mb - python_mb, 1),
            "largest_index_mb": round(max(index_mb), 1),
            "total_index_mb": round(sum(index_mb), 1),
            "sessions": agents * per_agent,
        }
    )
    shutil.rmtree(pristine, ignore_errors=True)
    shutil.rmtree(work / f"{name}-run", ignore_errors=True)
    return results


def measure_start(runs: int, work: Path) -> dict[str, Any]:
    empty = work / "empty-agents"
    empty.mkdir(exist_ok=True)
    env = {**os.environ, "ARIA_AGENTS_DIR": str(empty)}
    floor_seconds, _, _ = median_of(runs, lambda n: run_process([sys.executable, "-c", "import json"], env))
    seconds, memory, output = median_of(runs, lambda n: run_process(skill("list_sessions", {}), env))
    return {
        "size": "empty",
        "job": "start",
        "seconds": round(seconds, 4),
        "floor_seconds": round(floor_seconds, 4),
        "ratio": round(seconds / floor_seconds, 2),
        "target": TARGETS["start"],
        "peak_mb": round(memory, 1),
        "output_bytes": output,
    }


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "cpu": model,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d"),
    }


OUTPUT_BUDGET = 32 * 1024  # issue 8: every default answer at most 32 KiB, at any store size


def table(results: list[dict[str, Any]]) -> str:
    lines = [
        "| size | job | skill s | floor s | ratio | target | peak MB | output KiB (≤ 32) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results:
        if row["job"] == "memory":
            verdict = "ok" if row["peak_mb"] <= row["limit_mb"] else "MISSED"
            lines.append(
                f"| {row['size']} | peak memory (largest index {row['largest_index_mb']} MB, "
                f"all {row['total_index_mb']} MB) | | | | ≤ {row['limit_mb']} MB | "
                f"{row['peak_mb']} {verdict} | |"
            )
            continue
        verdict = "ok" if row["ratio"] <= row["target"] else "MISSED"
        fits = "ok" if row["output_bytes"] <= OUTPUT_BUDGET else "OVER"
        lines.append(
            f"| {row['size']} | {row['job']} | {row['seconds']:.3f} | {row['floor_seconds']:.3f} | "
            f"{row['ratio']:.2f} {verdict} | ≤ {row['target']} | {row['peak_mb']} | "
            f"{row['output_bytes'] / 1024:.1f} {fits} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", default=",".join(SIZES), help="comma-separated: " + ", ".join(SIZES))
    parser.add_argument(
        "--runs", type=int, default=5, help="runs per figure (the 100,000 size uses at most 3)"
    )
    parser.add_argument("--latency", type=float, default=0.002, help="history service latency, seconds")
    parser.add_argument("--quick", action="store_true", help="the two smaller sizes, 3 runs")
    parser.add_argument(
        "--out", default=None, help="the figures' file (default results/latest.json; --quick: quick.json)"
    )
    options = parser.parse_args()
    sizes = ["4x50", "4x500"] if options.quick else options.sizes.split(",")
    # A quick run must not replace the tracked figures of a full one.
    options.out = options.out or str(HERE / "results" / ("quick.json" if options.quick else "latest.json"))
    runs = 3 if options.quick else options.runs
    results: list[dict[str, Any]] = []
    # Measure the skill as deployed: byte-compiled once (PYTHONDONTWRITEBYTECODE would otherwise
    # make every call compile the module from source, about 30 ms).
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "session_manager.py")], check=True)
    with tempfile.TemporaryDirectory(prefix="aria-bench-") as scratch:
        work = Path(scratch)
        results.append(measure_start(max(runs, 9), work))
        for name in sizes:
            print(f"measuring {name} ...", file=sys.stderr, flush=True)
            results += measure_size(name, min(runs, 3) if name == "1x100000" else runs, options.latency, work)
    report = {"machine": machine(), "latency_seconds": options.latency, "runs": runs, "results": results}
    Path(options.out).parent.mkdir(parents=True, exist_ok=True)
    Path(options.out).write_text(json.dumps(report, indent=2) + "\n")
    print(f"machine: {report['machine']}")
    print(table(results))
    missed = [
        r
        for r in results
        if (r.get("ratio", 0) > r.get("target", 99))
        or r.get("peak_mb", 0) > r.get("limit_mb", 1e9)
        or r.get("output_bytes", 0) > OUTPUT_BUDGET
    ]
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
