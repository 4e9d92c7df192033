"""The test set-up's npm install (tests/cached_install.py): made once however many ask, trusted
only when whole, and every failed set-up step saying why.

A tiny local package stands in for OpenClaw (npm installs it without the registry in about a
second); the probe, which runs only when an install starts, counts the installs.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cached_install import (
    MANIFEST,
    TEXT_CUT,
    Recipe,
    RegistryUnreachable,
    StepFailed,
    cached_install,
    describe_failure,
    trusted,
)
from openclaw_gateway import OPENCLAW_RECIPE, OpenClawHome, run_gateway

HERE = Path(__file__).resolve().parent


def tiny_recipe(counter: Path, probe_sleep: float = 0) -> Recipe:
    """A package of three files under a folder of two and a marker its first run removes; its
    check needs index.js."""
    return Recipe(
        package_json={"name": "tiny-cache", "private": True, "dependencies": {"tiny": "file:./tiny"}},
        files={
            "tiny/package.json": '{"name": "tiny", "version": "1.0.0", "main": "index.js"}\n',
            "tiny/index.js": "module.exports = 42;\n",
            "tiny/lib/util.js": "module.exports = () => 'util';\n",
            "tiny/.first-run-pending": "as OpenClaw's package lifecycle marker\n",
        },
        first_run=[["rm", "node_modules/tiny/.first-run-pending"]],
        check=["node", "-e", "process.exit(require('./tiny/index.js') === 42 ? 0 : 1)"],
        probe=["sh", "-c", f'echo "$$" >> "{counter}"; sleep {probe_sleep}'],
    )


def installs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def delete_a_random_file(cache: Path) -> None:
    files = json.loads((cache / MANIFEST).read_text())["files"]
    (cache / random.choice(sorted(files))).unlink()


def truncate_a_file(cache: Path) -> None:
    (cache / "tiny/lib/util.js").write_text("")


def delete_the_manifest(cache: Path) -> None:
    (cache / MANIFEST).unlink()


def break_a_link(cache: Path) -> None:
    (cache / "node_modules/tiny").unlink()


def leave_it_whole(cache: Path) -> None:
    (cache / "an-extra-file").write_text("files the manifest does not name are allowed\n")


@pytest.mark.parametrize(
    ("damage", "installed_again"),
    [
        (break_a_link, True),
        (delete_a_random_file, True),
        (delete_the_manifest, True),
        (leave_it_whole, False),
        (truncate_a_file, True),
    ],
)
def test_a_cache_is_installed_again_unless_every_file_of_its_manifest_is_there(
    tmp_path: Path, damage: Callable[[Path], None], installed_again: bool
) -> None:
    counter, cache = tmp_path / "installs", tmp_path / "cache"
    recipe = tiny_recipe(counter)
    cached_install(cache, recipe)
    assert installs(counter) == 1 and trusted(cache, recipe)

    damage(cache)
    cached_install(cache, recipe)

    assert installs(counter) == (2 if installed_again else 1)
    assert trusted(cache, recipe)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cache.lock", "installs"]


def test_what_the_first_run_changes_is_done_before_the_manifest(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cached_install(cache, tiny_recipe(tmp_path / "installs"))

    files = json.loads((cache / MANIFEST).read_text())["files"]
    assert "tiny/.first-run-pending" not in files and "tiny/index.js" in files
    assert not (cache / "tiny/.first-run-pending").exists()


def test_a_cache_whose_check_does_not_answer_is_installed_again(tmp_path: Path) -> None:
    counter, cache = tmp_path / "installs", tmp_path / "cache"
    cached_install(cache, tiny_recipe(counter))
    failing = Recipe(**{**tiny_recipe(counter).__dict__, "check": ["false"]})

    with pytest.raises(StepFailed, match="not whole"):
        cached_install(cache, failing)

    assert installs(counter) == 2


def start_installer(cache: Path, counter: Path, probe_sleep: float, **options: Any) -> subprocess.Popen[str]:
    """Another process asking for ``cache``, as a pytest worker does; it prints the cache folder."""
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "from pathlib import Path; from test_cached_install import tiny_recipe;"
        "from cached_install import cached_install;"
        "print(cached_install(Path(sys.argv[2]), tiny_recipe(Path(sys.argv[3]), float(sys.argv[4]))))"
    )
    command = [sys.executable, "-c", script, str(HERE), str(cache), str(counter), str(probe_sleep)]
    return subprocess.Popen(command, text=True, **options)


def test_workers_asking_at_once_share_one_install(tmp_path: Path) -> None:
    """Four processes ask for the same cache together: one installs, the others wait for it."""
    counter, cache = tmp_path / "installs", tmp_path / "cache"
    workers = [start_installer(cache, counter, 1, stdout=subprocess.PIPE) for _ in range(4)]
    answers = [worker.communicate(timeout=300)[0].strip() for worker in workers]

    assert [worker.returncode for worker in workers] == [0, 0, 0, 0]
    assert answers == [str(cache)] * 4
    assert installs(counter) == 1 and trusted(cache, tiny_recipe(counter))


def test_an_installer_killed_mid_install_leaves_the_lock_free_and_its_leftovers_swept(tmp_path: Path) -> None:
    counter, cache = tmp_path / "installs", tmp_path / "cache"
    killed = start_installer(cache, counter, 60, start_new_session=True)
    deadline = time.monotonic() + 60
    while installs(counter) == 0 and time.monotonic() < deadline:  # it holds the lock now
        time.sleep(0.05)
    (tmp_path / "cache.partial-left-by-a-dead-installer").mkdir()
    os.killpg(killed.pid, signal.SIGKILL)
    killed.wait()

    started = time.monotonic()
    cached_install(cache, tiny_recipe(counter))

    assert time.monotonic() - started < 60  # not the lock wait: the kernel dropped the dead one's lock
    assert installs(counter) == 2 and trusted(cache, tiny_recipe(counter))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "cache.lock", "installs"]


def test_a_failed_npm_install_says_why_and_leaves_no_cache(tmp_path: Path) -> None:
    counter, cache = tmp_path / "installs", tmp_path / "cache"
    broken = Recipe(
        **{**tiny_recipe(counter).__dict__, "package_json": {"dependencies": {"tiny": "file:./missing.tgz"}}}
    )

    with pytest.raises(StepFailed) as failure:
        cached_install(cache, broken)

    message = str(failure.value)
    assert message.startswith("npm install in ") and "failed (exit code " in message
    assert "stderr:" in message and "missing.tgz" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache.lock", "installs"]


def test_a_registry_that_cannot_be_reached_is_said_so(tmp_path: Path) -> None:
    unreachable = Recipe(
        **{**tiny_recipe(tmp_path / "installs").__dict__, "probe": ["sh", "-c", "echo offline >&2; exit 1"]}
    )

    with pytest.raises(RegistryUnreachable, match="offline"):
        cached_install(tmp_path / "cache", unreachable)


@pytest.mark.parametrize(
    ("code", "stderr", "stdout", "expected"),
    [
        (1, "", "", "step failed (exit code 1)\nit printed nothing"),
        (2, "boom\n", "", "step failed (exit code 2)\nstderr:\nboom"),
        (3, "err", "out", "step failed (exit code 3)\nstderr:\nerr\nstdout:\nout"),
        (None, "", "still starting", "step failed (exit code None)\nstdout:\nstill starting"),
        (
            4,
            "x" * (TEXT_CUT + 5),
            "",
            f"step failed (exit code 4)\nstderr:\n[... 5 characters before]\n{'x' * TEXT_CUT}",
        ),
    ],
)
def test_a_failed_step_is_described_by_its_exit_code_and_output(
    code: int | None, stderr: str, stdout: str, expected: str
) -> None:
    assert describe_failure("step", code, stderr, stdout) == expected


def failing_cli(tmp_path: Path) -> Path:
    """An ``openclaw`` that fails as a broken install does: the cause on stderr, exit code 7."""
    cli = tmp_path / "openclaw"
    cli.write_text(
        "#!/bin/sh\necho \"Error [ERR_MODULE_NOT_FOUND]: Cannot find module 'x.mjs'\" >&2\nexit 7\n"
    )
    cli.chmod(0o755)
    return cli


@pytest.mark.parametrize(
    ("step", "what"),
    [
        (lambda home: home.import_stores(["ops"]), "openclaw doctor --fix failed (exit code 7)"),
        (lambda home: home.sessions(), "openclaw sessions --json failed (exit code 7)"),
        (lambda home: run_gateway(home).__enter__(), "the gateway's start on port"),
    ],
)
def test_a_failed_gateway_step_reports_the_commands_stderr_and_exit_code(
    tmp_path: Path, step: Callable[[OpenClawHome], object], what: str
) -> None:
    home = OpenClawHome(tmp_path / "home", failing_cli(tmp_path))
    home.home.mkdir()

    with pytest.raises(StepFailed) as failure:
        step(home)

    assert what in str(failure.value)
    assert "ERR_MODULE_NOT_FOUND" in str(failure.value)


def test_the_openclaw_cache_is_whole_and_answers(openclaw_cache: Path) -> None:
    manifest = json.loads((openclaw_cache / MANIFEST).read_text())
    assert len(manifest["files"]) > 10_000
    assert trusted(openclaw_cache, OPENCLAW_RECIPE)


FAKE_GATEWAY = """#!{python}
import socket, sys, time
port = int(sys.argv[sys.argv.index("--port") + 1])
server = socket.socket()
try:
    server.bind(("127.0.0.1", port))
except OSError:
    print(f"listen EADDRINUSE: address already in use 127.0.0.1:{{port}}", flush=True)
    sys.exit(1)
server.listen()
time.sleep(600)
"""


def test_a_gateway_that_lost_its_port_to_another_process_starts_again_on_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers' gateways were once given one port: the second test then spoke to the first's
    gateway. The start now proves its own process group listens, and tries another port."""
    import openclaw_gateway

    cli = tmp_path / "openclaw"
    cli.write_text(FAKE_GATEWAY.format(python=sys.executable))
    cli.chmod(0o755)
    home = OpenClawHome(tmp_path / "home", cli)
    home.home.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        ports = iter([busy, openclaw_gateway.free_port()])
        monkeypatch.setattr(openclaw_gateway, "free_port", lambda: next(ports))

        with run_gateway(home) as url:
            port = int(url.rsplit(":", 1)[1])
            assert port != busy
            assert "EADDRINUSE" in (home.home / "gateway.log").read_text()
