"""What ships: the sdist carries the tests and their helpers (pytest runs from it) and the licence."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from helpers import REPO


def test_the_sdist_holds_what_pytest_needs_and_collects_from_it(tmp_path: Path) -> None:
    tracked = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True)
    source = tmp_path / "source"
    for name in tracked.stdout.split():
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, source / name)
    build = "import setuptools.build_meta as b, sys; print(b.build_sdist(sys.argv[1]))"
    made = subprocess.run(
        [sys.executable, "-c", build, str(tmp_path / "dist")],
        cwd=source,
        capture_output=True,
        text=True,
        check=True,
    )
    archive = tmp_path / "dist" / made.stdout.split()[-1]
    with tarfile.open(archive) as sdist:
        names = {"/".join(name.split("/")[1:]) for name in sdist.getnames()}
        sdist.extractall(tmp_path / "unpacked", filter="data")
    for needed in (
        "LICENSE",
        "tests/conftest.py",
        "tests/helpers.py",
        "tests/golden/same_answers.jsonl",
        "tests/history_service.py",
        "tests/trees.py",
        "tests/gateway_writer.js",
    ):
        assert needed in names
    [unpacked] = (tmp_path / "unpacked").iterdir()
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=unpacked,
        capture_output=True,
        text=True,
    )
    assert collected.returncode == 0, collected.stdout[-2000:]
