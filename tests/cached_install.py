"""An npm install kept in a cache folder and made once per machine, whoever asks first.

The folder is trusted only when every file of its manifest is there with its size and its check
command answers; anything less is installed again, never trusted (a half-installed tree once
passed for good because a marker file said it was complete). An install runs under an ``flock``
on ``<cache>.lock``: every other pytest worker or test run that asks waits for it, and the kernel
releases the lock if the installer dies. The tree is built in a private folder beside the cache
and renamed into place only once its manifest is written and its check answers.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MANIFEST = ".manifest.json"
TEXT_CUT = 2000
LOCK_WAIT_SECONDS = 1800
INSTALL_TIMEOUT_SECONDS = 900


class RegistryUnreachable(Exception):
    """The npm registry cannot be reached: the packages cannot be installed here."""


class StepFailed(RuntimeError):
    """A command of a test's set-up failed; the message carries its exit code and its output."""


@dataclass(frozen=True)
class Recipe:
    """What a cache holds: an npm project (its package.json and any files beside it), how to ask
    the registry whether it can be installed, and a command that answers only when it works."""

    package_json: Mapping[str, Any]
    check: Sequence[str]  # run in the cache folder; a first word with a slash is a path in it
    probe: Sequence[str] = ()  # a command that fails when the registry cannot serve the packages
    files: Mapping[str, str] = field(default_factory=dict)
    # Run in the fresh tree before its manifest is written: whatever the packages change in their
    # own folder on their first run (so that a later run finds every file as the manifest says).
    first_run: Sequence[Sequence[str]] = ()


def cached_install(cache: Path, recipe: Recipe) -> Path:
    """``cache``, holding ``recipe``'s packages: as found when it is whole, else installed anew."""
    cache.parent.mkdir(parents=True, exist_ok=True)
    with _held(cache.with_name(cache.name + ".lock")):
        if trusted(cache, recipe):
            return cache
        _sweep_leftovers(cache)
        _probe_registry(recipe)
        fresh = Path(tempfile.mkdtemp(prefix=f"{cache.name}.partial-", dir=cache.parent))
        try:
            _install(fresh, recipe)
            write_manifest(fresh)
            if not trusted(fresh, recipe):
                raise StepFailed(f"the install in {fresh} is not whole after npm install")
            _replace(fresh, cache)
        finally:
            shutil.rmtree(fresh, ignore_errors=True)
    return cache


def trusted(cache: Path, recipe: Recipe) -> bool:
    """Every file of the manifest there with its size, every link with its target, and the check
    command answering."""
    try:
        manifest = json.loads((cache / MANIFEST).read_text())
        files, links = manifest["files"], manifest["links"]
    except (OSError, ValueError, KeyError, TypeError):
        return False
    for name, size in files.items():
        try:
            if os.lstat(cache / name).st_size != size:
                return False
        except OSError:
            return False
    for name, target in links.items():
        try:
            if os.readlink(cache / name) != target:
                return False
        except OSError:
            return False
    return _answers(cache, recipe)


def write_manifest(folder: Path) -> None:
    """Every regular file under ``folder`` with its size, and every link with its target."""
    files: dict[str, int] = {}
    links: dict[str, str] = {}
    for top, folders, names in os.walk(folder):
        for name in [*names, *folders]:
            path = Path(top, name)
            relative = str(path.relative_to(folder))
            if path.is_symlink():
                links[relative] = os.readlink(path)
            elif name in names:
                files[relative] = path.lstat().st_size
    files.pop(MANIFEST, None)
    temporary = folder / (MANIFEST + ".tmp")
    temporary.write_text(json.dumps({"files": files, "links": links}, sort_keys=True))
    temporary.replace(folder / MANIFEST)


def run_step(what: str, command: Sequence[str], **options: Any) -> subprocess.CompletedProcess[str]:
    """Run one set-up command; StepFailed, with its exit code and output, when it fails."""
    options.setdefault("timeout", INSTALL_TIMEOUT_SECONDS)
    try:
        completed = subprocess.run(
            list(command), capture_output=True, text=True, stdin=subprocess.DEVNULL, **options
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise StepFailed(f"{what} could not run: {error}") from error
    if completed.returncode != 0:
        raise StepFailed(describe_failure(what, completed.returncode, completed.stderr, completed.stdout))
    return completed


def describe_failure(what: str, code: int | None, stderr: str, stdout: str = "") -> str:
    """A failed step in a readable length: its exit code, the end of its stderr, then of its stdout."""
    parts = [f"{what} failed (exit code {code})"]
    for name, text in (("stderr", stderr), ("stdout", stdout)):
        text = text.strip()
        if text:
            cut = f"[... {len(text) - TEXT_CUT} characters before]\n" if len(text) > TEXT_CUT else ""
            parts.append(f"{name}:\n{cut}{text[-TEXT_CUT:]}")
    if len(parts) == 1:
        parts.append("it printed nothing")
    return "\n".join(parts)


@contextmanager
def _held(lock_path: Path) -> Iterator[None]:
    """An exclusive flock on ``lock_path``, waited for; the kernel drops it if this process dies."""
    with open(lock_path, "a") as lock:
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StepFailed(
                        f"another install has held {lock_path} for over {LOCK_WAIT_SECONDS} s"
                    ) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _sweep_leftovers(cache: Path) -> None:
    """Folders an installer that died left beside the cache (none is live: the lock is ours)."""
    for pattern in (f"{cache.name}.partial-*", f"{cache.name}.old-*"):
        for leftover in cache.parent.glob(pattern):
            shutil.rmtree(leftover, ignore_errors=True)


def _probe_registry(recipe: Recipe) -> None:
    if not recipe.probe:
        return
    try:
        run_step(" ".join(recipe.probe), recipe.probe, timeout=120)
    except StepFailed as failure:
        raise RegistryUnreachable(str(failure)) from failure


def _install(folder: Path, recipe: Recipe) -> None:
    for name, text in recipe.files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / "package.json").write_text(json.dumps(recipe.package_json, indent=2) + "\n")
    command = ["npm", "install", "--ignore-scripts", "--no-audit", "--no-fund", "--loglevel=error"]
    run_step(f"npm install in {folder}", command, cwd=folder)
    for step in recipe.first_run:
        run_step(f"{' '.join(step)} in {folder}", _in_folder(folder, step), cwd=folder)


def _in_folder(folder: Path, command: Sequence[str]) -> list[str]:
    """``command`` with its first word, when it has a slash, taken as a path in ``folder``."""
    program, *arguments = command
    return [str(folder / program) if "/" in program else program, *arguments]


def _answers(cache: Path, recipe: Recipe) -> bool:
    try:
        completed = subprocess.run(
            _in_folder(cache, recipe.check),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
            cwd=cache,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return completed.returncode == 0


def _replace(fresh: Path, cache: Path) -> None:
    """The fresh tree at the cache's name; the old one, if any, moved aside and removed."""
    if cache.exists() or cache.is_symlink():
        aside = cache.with_name(f"{cache.name}.old-{os.getpid()}")
        cache.rename(aside)
        shutil.rmtree(aside, ignore_errors=True)
    fresh.rename(cache)
