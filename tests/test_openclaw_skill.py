"""SKILL.md as OpenClaw reads it (issue 28, items 1 and 3), with the real OpenClaw 2026.9.6 (no
gateway needed): the folder `run_skill.py session_manager --install` builds, installed with
`openclaw skills install <folder> --global` into a fresh HOME (which copies it and resets its
times), `openclaw skills info` gating it on its requirements, its compiled module used where it
landed, and the card's first command run from there.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

from cached_install import run_step
from helpers import REPO, ago, session_manager_origins, write_index
from openclaw_gateway import write_cli

SKILL_FILES = ("SKILL.md", "session_manager.py", "run_skill.py", "skill.json")


def skill_info(cli: Path, env: dict[str, str]) -> dict[str, Any]:
    command = [str(cli), "skills", "info", "aria-sessionmanager", "--json"]
    info: dict[str, Any] = json.loads(run_step("openclaw skills info", command, env=env, timeout=180).stdout)
    return info


def test_openclaw_installs_the_skill_gates_it_on_its_variables_and_its_first_command_runs(
    openclaw_cache: Path, tmp_path: Path
) -> None:
    cli = write_cli(openclaw_cache, tmp_path / "openclaw")
    folder = tmp_path / "build" / "aria-sessionmanager"
    build = [sys.executable, str(REPO / "run_skill.py"), "session_manager", "--install", str(folder)]
    run_step("run_skill.py --install", build, timeout=120)
    (tmp_path / "home").mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("ARIA_", "OPENCLAW_"))}
    env |= {"HOME": str(tmp_path / "home"), "NO_COLOR": "1"}
    install = [str(cli), "skills", "install", str(folder), "--global"]
    run_step("openclaw skills install", install, env=env, timeout=300)

    unset = skill_info(cli, env)
    assert unset["eligible"] is False and unset["missing"]["env"] == ["ARIA_API_URL"]
    assert unset["emoji"] == "🧹" and unset["requirements"]["bins"] == ["python3"]
    assert unset["always"] is False  # `always` in the openclaw block would turn the gating off
    root = tmp_path / "agents"
    write_index(root, "main", {"agent:main:cron:nightly": {"sessionId": "nightly-1", "updatedAt": ago(90)}})
    env |= {"ARIA_AGENTS_DIR": str(root), "ARIA_API_URL": "none"}
    ready = skill_info(cli, env)
    assert ready["eligible"] is True

    installed = Path(ready["baseDir"])
    ours = [path.name for path in installed.iterdir() if path.name not in ("__pycache__", ".openclaw")]
    assert sorted(ours) == sorted(SKILL_FILES)  # .openclaw: the install's own record
    card = (installed / "SKILL.md").read_text("utf-8")
    first = re.search(r"^python3 \{baseDir\}/run_skill\.py .*$", card, re.MULTILINE)
    assert first is not None and "/app/skills" not in card
    command = shlex.split(first.group(0).replace("{baseDir}", str(installed)))
    completed = subprocess.run(
        [sys.executable, *command[1:]], capture_output=True, text=True, env=env, timeout=60
    )
    assert completed.returncode == 0, completed.stdout
    assert json.loads(completed.stdout)["session_count"] == 1
    origins = session_manager_origins([sys.executable, *command[1:]], env)
    assert len(origins) == 1 and str(installed / "__pycache__") in origins[0]
