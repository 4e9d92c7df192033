"""The structural rules behind issue 5's speed targets (the timings themselves live in bench/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import REPO, add_transcript, ago, write_index

import session_manager as sm


def test_a_single_delete_reads_only_its_own_agents_index(root: Path) -> None:
    write_index(root, "main", {"agent:main:subagent:x": {"sessionId": "sub-x", "updatedAt": ago(5)}})
    add_transcript(root, "main", "sub-x.jsonl")
    for other in ("analyst", "aria-talk", "aria-memeothy"):
        folder = root / other / "sessions"
        folder.mkdir(parents=True)
        (folder / "sessions.json").write_text("{ this index would fail any read")
    result = sm.cleanup_after_delegation("sub-x")
    assert result["removed_keys"] == ["agent:main:subagent:x"]
    assert sm.delete_session("agent:main:subagent:gone")["removed_keys"] == []


@pytest.mark.parametrize(
    ("function", "arguments"),
    # get_session_stats asks the history service how many rows of vanished sessions are still
    # active (issue 20), so it loads httpx; listings and dry runs still load nothing of the kind.
    [("list_sessions", "{}"), ("prune_sessions", '{"dry_run": true}')],
)
def test_reading_calls_load_no_network_or_thread_machinery(root: Path, function: str, arguments: str) -> None:
    write_index(root, "main", {"agent:main:cron:a": {"sessionId": "a", "updatedAt": ago(500)}})
    script = (
        "import sys, io, contextlib; sys.path.insert(0, sys.argv[1]); import run_skill\n"
        "before = set(sys.modules)\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    code = run_skill.main(['session_manager', sys.argv[2], sys.argv[3]])\n"
        "heavy = ['http.client', 'concurrent.futures', 'ctypes', 'urllib.parse', 'dateutil', 'httpx']\n"
        "print(code, [name for name in heavy if name in set(sys.modules) - before])"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(REPO), function, arguments],
        capture_output=True,
        text=True,
        check=True,
    )
    assert completed.stdout.split(" ", 1) == ["0", "[]\n"]


def test_a_prune_parses_each_index_once_when_nothing_changed_in_between(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pre-read parse is reused under the lock when the file is provably the same one."""
    for agent in ("main", "analyst"):
        write_index(
            root,
            agent,
            {
                f"agent:{agent}:cron:{n}": {"sessionId": f"{agent}-{n}", "updatedAt": ago(500)}
                for n in range(20)
            },
        )
    parsed: list[str] = []
    original = sm.parse_index_text

    def counting(text: str, path: str) -> sm.IndexDocument:
        parsed.append(Path(path).parent.parent.name)
        return original(text, path)

    monkeypatch.setattr(sm, "parse_index_text", counting)
    assert sm.prune_sessions(max_age_minutes=60)["pruned_count"] == 40
    assert sorted(parsed) == ["analyst", "main"]
    assert json.loads((root / "main" / "sessions" / "sessions.json").read_text()) == {}


def test_a_prune_reads_the_index_again_when_the_gateway_wrote_in_between(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_index(
        root,
        "main",
        {f"agent:main:cron:{n}": {"sessionId": f"s{n}", "updatedAt": ago(500)} for n in range(3)},
    )
    original = sm.rewrite_index

    def gateway_writes_first(*args: object, **kwargs: object) -> object:
        store = json.loads(path.read_text())
        store["agent:main:cron:new"] = {"sessionId": "new", "updatedAt": ago(0)}
        path.write_text(json.dumps(store, indent=2))
        return original(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sm, "rewrite_index", gateway_writes_first)
    assert sm.prune_sessions(max_age_minutes=60)["pruned_count"] == 3
    assert list(json.loads(path.read_text())) == ["agent:main:cron:new"]


def test_marking_history_loads_httpx_without_its_async_back_ends() -> None:
    """httpcore would import trio and anyio (about 100 ms) for async back-ends a sync client never
    uses; they stay importable afterwards for anyone who wants them."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import session_manager as sm\n"
        "httpx = sm._import_httpx(); httpx.Client().close()\n"
        "loaded = sorted(name for name in ('trio', 'anyio') if name in sys.modules)\n"
        "usable = all(sys.modules.get(name, 1) is not None for name in ('trio', 'anyio'))\n"
        "print(loaded, usable, httpx.__name__)"
    )
    completed = subprocess.run(
        [sys.executable, "-c", script, str(REPO)], capture_output=True, text=True, check=True
    )
    assert completed.stdout == "[] True httpx\n"
