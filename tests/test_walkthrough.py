"""The README's walkthrough, run as written (issue 28, item 6): its code block itself, read from
README.md, in a fresh HOME with the real OpenClaw 2026.9.6 as `openclaw` on PATH, from a JSON-era
tree to a prune through the running gateway. Then what the install must have left (issue 28, done
when): the skill eligible in OpenClaw, its folder holding only the skill, its module loaded from
__pycache__ without writing bytecode, and the card's first command listing the gateway's sessions.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, ago, session_manager_origins
from openclaw_gateway import TOKEN, free_port, write_cli, write_json_era_agents

import session_manager as sm

pytestmark = pytest.mark.usefixtures("no_secret_on_command_lines")

MARKER = "<!-- walkthrough:"
TREE = {
    "main": {
        "agent:main:main": {"sessionId": "main-1", "updatedAt": ago(1)},
        "agent:main:cron:nightly": {"sessionId": "nightly-1", "updatedAt": ago(300)},
        "agent:main:subagent:helper": {"sessionId": "helper-1", "updatedAt": ago(200)},
        "agent:main:subagent:fresh": {"sessionId": "fresh-1", "updatedAt": ago(5)},
    },
    "analyst": {
        "agent:analyst:main": {"sessionId": "analyst-1", "updatedAt": ago(500)},
        "agent:analyst:cron:report": {"sessionId": "report-1", "updatedAt": ago(400)},
    },
}
STALE_UNPROTECTED = {"nightly-1", "helper-1", "report-1"}


def walkthrough_block() -> str:
    """The first bash block after the walkthrough's marker in README.md."""
    text = (REPO / "README.md").read_text("utf-8").split(MARKER, 1)[1]
    block = re.search(r"```bash\n(.*?)```", text, re.DOTALL)
    assert block is not None, "README.md has no walkthrough block after its marker"
    return block.group(1)


def stop_session(session: int) -> None:
    """SIGTERM, then SIGKILL, to every process of a session and their children (the gateway that
    the block left running renames itself, and starts a worker in a session of its own)."""
    for sent in (signal.SIGTERM, signal.SIGKILL):
        members = _session_tree(session)
        for pid in members:
            try:
                os.kill(pid, sent)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 20
        while members and time.monotonic() < deadline:
            members = members & _session_tree(session)
            time.sleep(0.2)


def _session_tree(session: int) -> set[int]:
    """The live processes of a session, and every descendant of one of them."""
    parents: dict[int, int] = {}
    tree = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] == "Z":
            continue
        parents[int(entry.name)] = int(fields[1])
        if int(fields[3]) == session:
            tree.add(int(entry.name))
    grown = True
    while grown:
        children = {pid for pid, parent in parents.items() if parent in tree} - tree
        tree |= children
        grown = bool(children)
    return tree


class Walkthrough:
    """The block run once in a fresh HOME; what it printed, and how to run what it installed."""

    def __init__(self, base: Path, cache: Path) -> None:
        self.home = base / "home"
        self.state = self.home / ".openclaw"
        self.skill = self.state / "skills" / "aria-sessionmanager"
        bin_folder = base / "bin"
        bin_folder.mkdir(parents=True)
        write_cli(cache, bin_folder / "openclaw")
        write_json_era_agents(self.state / "agents", json.loads(json.dumps(TREE)))
        kept = {k: v for k, v in os.environ.items() if not k.startswith(("ARIA_", "OPENCLAW_", "SESSION_"))}
        path = os.pathsep.join(
            [str(bin_folder), str(Path(sys.executable).parent), "/usr/local/bin:/usr/bin:/bin"]
        )
        # The token is the test's own, so that the processes of the machine can be searched for it.
        self.env = kept | {
            "HOME": str(self.home),
            "PATH": path,
            "NO_COLOR": "1",
            "OPENCLAW_GATEWAY_PORT": str(free_port()),
            "OPENCLAW_GATEWAY_TOKEN": TOKEN,
        }
        self.output = ""

    def run(self) -> subprocess.Popen[str]:
        return subprocess.Popen(
            ["bash", "-e", "-c", walkthrough_block()],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def skill_env(self) -> dict[str, str]:
        """What the block's last commands ran with: the skill's venv first, its variables set."""
        venv = self.home / ".venvs" / "aria-sessionmanager" / "bin"
        return self.env | {
            "PATH": f"{venv}{os.pathsep}{self.env['PATH']}",
            "OPENCLAW_STATE_DIR": str(self.state),
            "ARIA_API_URL": "none",
        }

    def answers(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.output.splitlines() if line.startswith("{")]


@pytest.fixture(scope="module")
def walkthrough(openclaw_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Walkthrough]:
    done = Walkthrough(tmp_path_factory.mktemp("walkthrough"), openclaw_cache)
    process = done.run()
    try:
        done.output, _ = process.communicate(timeout=900)
        assert process.returncode == 0, done.output[-6000:]
        yield done
    finally:
        stop_session(process.pid)


def test_the_walkthrough_ends_with_a_prune_that_deletes_through_the_gateway(walkthrough: Walkthrough) -> None:
    *_, listing, dry_run, prune = walkthrough.answers()
    assert listing["session_count"] == 6 and {row["store"] for row in listing["agents"].values()} == {
        "sqlite"
    }
    assert dry_run["dry_run"] is True and dry_run["pruned_count"] == len(STALE_UNPROTECTED)
    assert (prune["pruned_count"], set(prune["deleted_ids"])) == (len(STALE_UNPROTECTED), STALE_UNPROTECTED)
    assert prune["gateway_path"] == "one connection over the gateway protocol" and prune["errors"] == []
    assert prune["history_layer"] == sm.HISTORY_OFF_TEXT


def test_openclaw_finds_the_installed_skill_eligible(walkthrough: Walkthrough) -> None:
    command = ["openclaw", "skills", "info", "aria-sessionmanager", "--agent", "main", "--json"]
    completed = subprocess.run(
        command, capture_output=True, text=True, env=walkthrough.skill_env(), timeout=180, check=True
    )
    info = json.loads(completed.stdout)
    assert (info["eligible"], info["emoji"], info["baseDir"]) == (True, "🧹", str(walkthrough.skill))
    assert "python3" in info["requirements"]["bins"] and info["primaryEnv"] == "OPENCLAW_GATEWAY_TOKEN"


def test_the_installed_folder_holds_the_skill_and_nothing_else(walkthrough: Walkthrough) -> None:
    assert sorted(path.name for path in walkthrough.skill.iterdir()) == sorted(
        [*sm.SKILL_FILES, "__pycache__"]
    )


def test_the_installed_module_is_loaded_from_its_pycache_without_writing_bytecode(
    walkthrough: Walkthrough,
) -> None:
    command = ["python3", str(walkthrough.skill / "run_skill.py"), "session_manager", "--help"]
    origins = session_manager_origins(command, walkthrough.skill_env())
    assert len(origins) == 1 and str(walkthrough.skill / "__pycache__" / "session_manager.") in origins[0]


def test_the_cards_first_command_lists_the_gateways_sessions(walkthrough: Walkthrough) -> None:
    card = (walkthrough.skill / "SKILL.md").read_text("utf-8")
    first = re.search(r"^python3 \{baseDir\}/run_skill\.py .*$", card, re.MULTILINE)
    assert first is not None
    command = shlex.split(first.group(0).replace("{baseDir}", str(walkthrough.skill)))
    completed = subprocess.run(
        command, capture_output=True, text=True, env=walkthrough.skill_env(), timeout=120
    )
    answer = json.loads(completed.stdout)
    assert completed.returncode == 0 and answer["gateway_path"] == "one connection over the gateway protocol"
    kept = {row["sessionId"] for row in answer["sessions"]}
    assert answer["session_count"] == 6 - len(STALE_UNPROTECTED) and not kept & STALE_UNPROTECTED
