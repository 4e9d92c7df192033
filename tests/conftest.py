"""Fixtures: an agents root in tmp_path with the skill's environment, the test tree, a history service."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import hostile
import pytest
from cached_install import RegistryUnreachable
from helpers import closed_port
from history_service import HistoryService
from hypothesis import settings

# Property tests assert behaviour, not speed: hypothesis's default 200 ms deadline per example
# would fail them on a loaded 2-core machine for being slow, not wrong.
settings.register_profile("project", deadline=None)
settings.load_profile("project")

# The stand-ins of most tests have no limiter, and they check a call's delivery within the call:
# no pace, and no delivery process, for every call a test starts (the processes inherit this).
# tests/test_delivery.py, which tests both against a stand-in true to the service, sets its own.
os.environ["SESSION_HISTORY_PACE"] = "100000/1"
os.environ["SESSION_HISTORY_BACKGROUND"] = "0"


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty agents root, with the skill's environment pointing at it and no history service."""
    agents = tmp_path / "agents"
    agents.mkdir()
    for name in ("ARIA_API_KEY", "ARIA_SESSION_ID", "SESSION_STALE_MINUTES", "SESSION_MANAGER_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARIA_AGENTS_DIR", str(agents))
    monkeypatch.setenv("ARIA_API_URL", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("SESSION_HISTORY_BUDGET_SECONDS", "3")
    return agents


@pytest.fixture
def tree(root: Path) -> Path:
    """The realistic two-agent tree of tests/trees.py in the agents root."""
    from trees import build_tree

    build_tree(root)
    return root


@pytest.fixture(scope="session")
def history_server() -> Iterator[HistoryService]:
    service = HistoryService().start()
    yield service
    service.stop()


@pytest.fixture
def history(history_server: HistoryService, monkeypatch: pytest.MonkeyPatch, root: Path) -> HistoryService:
    """A running history service, empty, that the skill's environment points at."""
    history_server.reset()
    monkeypatch.setenv("ARIA_API_URL", history_server.url)
    return history_server


@pytest.fixture
def without_websockets(monkeypatch: pytest.MonkeyPatch) -> None:
    """The skill as on a machine without the websockets package: in this process and in the skill
    processes a test starts (a package on PYTHONPATH whose import fails)."""
    import sys

    for name in ("websockets", "websockets.sync", "websockets.sync.client", "websockets.exceptions"):
        monkeypatch.setitem(sys.modules, name, None)
    hidden = str(Path(__file__).resolve().parent / "no_websockets")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [hidden, os.environ.get("PYTHONPATH")])))


@pytest.fixture(scope="module")
def no_secret_on_command_lines() -> Iterator[None]:
    """Every process's command line on this machine is read while the module's tests run: none
    may hold the real gateway's token (issue 26 H1), nor may any start of the OpenClaw CLI
    wrappers of the module (their logs, tests/command_lines.py)."""
    from command_lines import CommandLineWatch
    from openclaw_gateway import TOKEN

    watch = CommandLineWatch([TOKEN])
    watch.start()
    yield
    seen = watch.stop()
    assert watch.scans > 10 and seen == {}, f"the gateway token was on the command line of {seen}"


@pytest.fixture(scope="session")
def openclaw_cache() -> Path:
    """Node 24 and OpenClaw 2026.9.6 from the npm registry, installed once per machine (every
    worker asks; the first installs, the others wait); where the registry cannot be reached, the
    tests that need them are skipped with the reason."""
    from openclaw_gateway import install

    try:
        return install()
    except RegistryUnreachable as error:
        pytest.skip(f"the real OpenClaw gateway cannot be installed here: {error}")


@pytest.fixture
def service() -> Iterator[Callable[..., hostile.HostileService]]:
    """Start HTTP services on 127.0.0.1 that misbehave as asked (tests/hostile.py); all stopped after."""
    started: list[hostile.HostileService] = []

    def start(handler: Any, listing: bool = False) -> hostile.HostileService:
        made = hostile.ListingService(handler) if listing else hostile.HostileService(handler)
        started.append(made)
        return made

    yield start
    for made in started:
        made.stop()


# The longest modules start first, each on a worker of its own (make test runs whole modules per
# worker): the run then lasts about as long as its longest module instead of ending with one that
# started last. The real-gateway modules lead; they also start the OpenClaw install soonest.
LONGEST_FIRST = (
    "test_openclaw_end_to_end.py",
    "test_gateway_connection.py",
    "test_walkthrough.py",
    "test_delivery.py",
    "test_history.py",
    "test_answers.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: place for place, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))
