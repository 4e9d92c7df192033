"""`run_skill.py session_manager --install [FOLDER]` (issue 28, item 3): the skill's four files and
nothing else, its packages checked first, byte-compiled so that a copy or PYTHONDONTWRITEBYTECODE
still loads the .pyc, skill.json's command naming the folder."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, session_manager_origins, snapshot, write_index

import session_manager as sm

COMMAND = [sys.executable, str(REPO / "run_skill.py"), "session_manager", "--install"]


def install(*folder: str, env: dict[str, str] | None = None, python: str = sys.executable) -> tuple[int, Any]:
    completed = subprocess.run(
        [python, *COMMAND[1:], *folder],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )
    return completed.returncode, json.loads(completed.stdout)


def loaded_from(folder: Path, env: dict[str, str]) -> list[str]:
    """Where session_manager's code came from, for one call of the installed skill."""
    command = [sys.executable, str(folder / "run_skill.py"), "session_manager", "list_sessions"]
    return session_manager_origins(command, {**os.environ, **env})


def test_the_folder_gets_the_skills_files_compiled_and_its_own_command(tmp_path: Path) -> None:
    folder = tmp_path / "skills" / "aria-sessionmanager"
    exit_code, answer = install(str(folder))
    assert exit_code == 0 and answer["installed"] == str(folder)
    assert sorted(path.name for path in folder.iterdir()) == sorted([*sm.SKILL_FILES, "__pycache__"])
    for name in ("SKILL.md", "run_skill.py", "session_manager.py"):
        assert (folder / name).read_bytes() == (REPO / name).read_bytes()
    installed = json.loads((folder / "skill.json").read_text("utf-8"))
    committed = json.loads((REPO / "skill.json").read_text("utf-8"))
    assert (
        installed["run"] == f"python3 {folder}/run_skill.py session_manager {{{{tool}}}} '{{{{args_json}}}}'"
    )
    assert {**installed, "run": committed["run"]} == committed


def test_the_compiled_modules_are_used_after_a_copy_that_resets_times_and_never_after_an_edit(
    tmp_path: Path,
) -> None:
    install(str(tmp_path / "built"))
    copy = tmp_path / "copied"
    shutil.copytree(tmp_path / "built", copy)  # copytree keeps times: reset them, as openclaw does
    for path in copy.rglob("*"):
        os.utime(path, (1, 1))
    root = tmp_path / "agents"
    write_index(root, "main", {})
    env = {"ARIA_AGENTS_DIR": str(root), "ARIA_API_URL": "none"}
    assert [str(copy / "__pycache__") in line for line in loaded_from(copy, env)] == [True]
    with open(copy / "session_manager.py", "a") as source:
        source.write("\n# edited\n")
    # The edited source is compiled again, not the stale .pyc.
    assert loaded_from(copy, env) == [f"# code object from {copy / 'session_manager.py'}"]


def test_installing_again_upgrades_in_place_and_keeps_openclaws_record(tmp_path: Path) -> None:
    folder = tmp_path / "aria-sessionmanager"
    install(str(folder))
    (folder / "SKILL.md").write_text("an older card")
    (folder / ".openclaw").mkdir()  # what `openclaw skills install` leaves beside the files
    assert install(str(folder))[0] == 0
    assert (folder / "SKILL.md").read_bytes() == (REPO / "SKILL.md").read_bytes()
    assert (folder / ".openclaw").is_dir()


def test_without_a_folder_it_goes_to_openclaws_managed_skills(tmp_path: Path) -> None:
    exit_code, answer = install(env={"OPENCLAW_STATE_DIR": str(tmp_path / "state")})
    assert exit_code == 0
    assert answer["installed"] == str(tmp_path / "state" / "skills" / "aria-sessionmanager")


@pytest.mark.parametrize(
    ("prepare", "says"),
    [
        (lambda folder: (folder.mkdir(), (folder / "notes.txt").write_text("mine")), "notes.txt"),
        (lambda folder: folder.write_text("a file"), "is not a folder"),
    ],
)
def test_a_folder_that_is_not_the_skills_own_is_refused_and_left_alone(
    tmp_path: Path, prepare: Any, says: str
) -> None:
    folder = tmp_path / "target"
    prepare(folder)
    before = snapshot(tmp_path)
    exit_code, answer = install(str(folder))
    assert (exit_code, answer["error_type"]) == (2, "invalid_argument") and says in answer["error"]
    assert snapshot(tmp_path) == before


def test_the_checkout_itself_is_refused() -> None:
    exit_code, answer = install(str(REPO))
    assert (exit_code, answer["error_type"]) == (2, "invalid_argument")


@pytest.fixture(scope="module")
def bare_python(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A Python with none of the skill's packages: a venv without pip or site-packages."""
    bare = tmp_path_factory.mktemp("bare")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    return str(bare / "bin" / "python")


def test_a_python_without_the_packages_is_told_which_and_nothing_is_installed(
    tmp_path: Path, bare_python: str
) -> None:
    folder = tmp_path / "aria-sessionmanager"
    exit_code, answer = install(str(folder), python=bare_python)
    assert (exit_code, answer["error_type"]) == (1, "configuration_error")
    assert all(f"{package}>={floor}" in answer["error"] for package, floor in sm.PACKAGES.items())
    assert not folder.exists()


def test_the_packages_checked_are_pyprojects_dependencies() -> None:
    text = (REPO / "pyproject.toml").read_text()
    dependencies = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    declared = dict(line.strip().strip('",').split(">=") for line in dependencies.strip().splitlines())
    assert declared == sm.PACKAGES


def test_an_installed_skill_run_by_a_python_without_its_packages_names_the_package(
    tmp_path: Path, bare_python: str
) -> None:
    folder = tmp_path / "aria-sessionmanager"
    install(str(folder))
    write_index(tmp_path / "agents", "main", {})
    env = {**os.environ, "ARIA_AGENTS_DIR": str(tmp_path / "agents"), "ARIA_API_URL": "none"}
    command = [bare_python, str(folder / "run_skill.py"), "session_manager", "list_sessions"]
    completed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=60)
    answer = json.loads(completed.stdout)
    assert (completed.returncode, answer["error_type"]) == (1, "configuration_error")
    assert "python-dateutil" in answer["error"] or "httpx" in answer["error"]
