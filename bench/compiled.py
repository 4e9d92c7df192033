"""What the install's byte-compiling saves a call (issue 28, item 3), as a ratio measured in one run.

    python3 bench/compiled.py [--runs N]

Installs the skill twice into a scratch folder with `run_skill.py session_manager --install`, once
as it is (its .pyc files beside it) and once without __pycache__, then times `list_sessions` on the
demo tree from each, in turns, with PYTHONDONTWRITEBYTECODE=1 (common in containers: without the
install's .pyc, every call compiles the 300 KB module again and keeps nothing).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def timed_call(folder: Path, env: dict[str, str]) -> float:
    command = [
        sys.executable,
        str(folder / "run_skill.py"),
        "session_manager",
        "list_sessions",
        '{"limit": 5}',
    ]
    started = time.perf_counter()
    subprocess.run(command, env=env, stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=15)
    runs = parser.parse_args().runs
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(scratch)
        install = [sys.executable, str(REPO / "run_skill.py"), "session_manager", "--install"]
        for name in ("compiled", "source-only"):
            subprocess.run([*install, str(base / name)], stdout=subprocess.DEVNULL, check=True)
        shutil.rmtree(base / "source-only" / "__pycache__")
        shutil.copytree(REPO / "examples" / "agents", base / "agents")
        env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "ARIA_AGENTS_DIR": str(base / "agents")}
        env["ARIA_API_URL"] = "none"
        times: dict[str, list[float]] = {"compiled": [], "source-only": []}
        for _ in range(runs):
            for name, values in times.items():
                values.append(timed_call(base / name, env))
    medians = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
    for name, median in medians.items():
        print(f"{name:12} median {median:.3f} s over {runs} calls")
    print(f"compiled / source-only: {medians['compiled'] / medians['source-only']:.2f}")


if __name__ == "__main__":
    main()
