"""Run a skill function from the shell: ``run_skill.py <skill> <function> '<json args>'``.

Prints exactly one JSON document on stdout: the function's result (exit 0), or
``{"error", "error_type"}`` with exit 2 for a caller's mistake and 1 for a failure of the world.
"""

from __future__ import annotations

import gc
import importlib
import json
import re
import signal
import sys
from collections.abc import Callable
from types import FrameType, ModuleType
from typing import Any

SKILLS = ("session_manager",)
CALLER_MISTAKE = 2
WORLD_FAILURE = 1
DEFAULT_NOTES = {
    "max_age_minutes": "$SESSION_STALE_MINUTES or 60",
    "stale_threshold_minutes": "$SESSION_STALE_MINUTES or 60",
    "agent": "all agents",
    "session_type": "all types",
}
REQUIRED = object()
_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*[ \t]*\n?(.*?)\n?[ \t]*```\s*$", re.DOTALL)


class UsageError(Exception):
    """The command line itself is wrong; carries the error_type to report."""

    def __init__(self, message: str, error_type: str) -> None:
        super().__init__(message)
        self.error_type = error_type


class Terminated(BaseException):
    """A termination signal arrived; raised so that locks are released on the way out."""

    def __init__(self, signal_number: int) -> None:
        super().__init__(signal_number)
        self.signal_number = signal_number


def parse_arguments(raw: str) -> dict[str, Any]:
    """The JSON object of arguments; accepts an empty string and a Markdown code fence."""
    fenced = _FENCE.match(raw)
    text = (fenced.group(1) if fenced else raw).strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise UsageError(
            f'the arguments are not valid JSON ({error}); pass an object such as \'{{"agent": "main"}}\'',
            "invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise UsageError('the arguments must be a JSON object such as \'{"agent": "main"}\'', "invalid_json")
    return value


def parameters(function: Callable[..., Any]) -> list[tuple[str, Any]]:
    """A function's parameter names with their defaults (REQUIRED where there is none).

    Read from the code object rather than with inspect, which costs the agent's every call ~7 ms."""
    code = function.__code__
    names = code.co_varnames[: code.co_argcount]
    defaults = tuple(function.__defaults__ or ())
    return list(zip(names, (REQUIRED,) * (len(names) - len(defaults)) + defaults, strict=True))


def check_argument_names(name: str, function: Callable[..., Any], arguments: dict[str, Any]) -> None:
    """Refuse argument names the function does not take, saying which it does."""
    accepted = [parameter for parameter, _ in parameters(function)]
    unknown = sorted(set(arguments) - set(accepted))
    if unknown:
        raise UsageError(
            f"{name} does not take {', '.join(map(repr, unknown))}; "
            f"it accepts: {', '.join(accepted) or 'no arguments'}",
            "invalid_argument",
        )
    required = [
        parameter
        for parameter, default in parameters(function)
        if default is REQUIRED and parameter not in arguments
    ]
    if required:
        raise UsageError(
            f'{name} needs {", ".join(map(repr, required))}, for example \'{{"{required[0]}": "..."}}\'',
            "invalid_argument",
        )


def describe_functions(skill: str, module: ModuleType) -> str:
    """Help text: each function with its arguments, defaults and first docstring line."""
    lines = [f"usage: run_skill.py {skill} <function> '<json args>'", "", "functions:"]
    for name, function in module.FUNCTIONS.items():
        lines.append(f"  {name}")
        summary = (function.__doc__ or "").strip().splitlines()[0]
        lines.append(f"      {summary}")
        for parameter, default in parameters(function):
            if default is REQUIRED:
                lines.append(f"      {parameter} (required)")
            else:
                shown = DEFAULT_NOTES.get(parameter) if default is None else None
                lines.append(f"      {parameter} (default: {shown or json.dumps(default)})")
    lines += [
        "",
        "The JSON may be omitted ({}), given as '-' to read it from stdin, or wrapped in a",
        "Markdown code fence. Environment: ARIA_AGENTS_DIR, ARIA_API_URL, ARIA_API_KEY,",
        "ARIA_SESSION_ID, SESSION_STALE_MINUTES.",
    ]
    return "\n".join(lines)


def general_help() -> str:
    return "\n".join(
        [
            "usage: run_skill.py <skill> <function> '<json args>'",
            "       run_skill.py <skill> --help",
            "",
            f"skills: {', '.join(SKILLS)}",
        ]
    )


def _emit(document: dict[str, Any]) -> None:
    try:
        sys.stdout.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")) + "\n")
        sys.stdout.flush()
    except BrokenPipeError:
        pass


def _error(message: str, error_type: str, code: int) -> int:
    _emit({"error": message, "error_type": error_type})
    return code


def _raise_terminated(signal_number: int, frame: FrameType | None) -> None:
    raise Terminated(signal_number)


def _install_signal_handlers() -> None:
    for name in ("SIGTERM", "SIGHUP"):
        number = getattr(signal, name, None)
        if number is not None:
            signal.signal(number, _raise_terminated)


def _load_skill(skill: str) -> ModuleType:
    if skill not in SKILLS:
        raise UsageError(f"unknown skill {skill!r}; available: {', '.join(SKILLS)}", "unknown_skill")
    return importlib.import_module(skill)


def run(argv: list[str]) -> int:
    """Parse the command line, call the function, print its JSON; return the exit code."""
    if not argv or argv[0] in ("-h", "--help"):
        print(general_help())
        return 0
    module = _load_skill(argv[0])
    if len(argv) == 1 or argv[1] in ("-h", "--help"):
        print(describe_functions(argv[0], module))
        return 0
    name = argv[1]
    function = module.FUNCTIONS.get(name)
    if function is None:
        raise UsageError(
            f"unknown function {name!r}; available: {', '.join(module.FUNCTIONS)}", "unknown_function"
        )
    if len(argv) > 3:
        raise UsageError(
            "too many arguments: pass one JSON object, quoted as a single word", "invalid_argument"
        )
    raw = argv[2] if len(argv) == 3 else ""
    if raw == "-":
        raw = sys.stdin.read()
    arguments = parse_arguments(raw)
    check_argument_names(name, function, arguments)
    try:
        result = function(**arguments)
    except module.SessionManagerError as error:
        return _error(str(error), error.error_type, error.exit_code)
    _emit(result)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point: never lets a traceback reach the agent."""
    # A call lives for a second or two and makes no cycles worth collecting, while a large index
    # is millions of live objects that every full collection would walk again: about 20% of a
    # 100,000-session listing.
    gc.disable()
    _install_signal_handlers()
    try:
        return run(list(sys.argv[1:] if argv is None else argv))
    except UsageError as error:
        return _error(str(error), error.error_type, CALLER_MISTAKE)
    except Terminated as stop:
        return _error(
            f"interrupted by signal {stop.signal_number}; the lock was released and the index left whole",
            "interrupted",
            128 + stop.signal_number,
        )
    except KeyboardInterrupt:
        return _error("interrupted; the lock was released and the index left whole", "interrupted", 130)
    except OSError as error:
        return _error(
            f"{error.strerror or error}: {error.filename or ''}".strip(": "), "os_error", WORLD_FAILURE
        )
    except Exception as error:
        return _error(f"internal error: {type(error).__name__}: {error}", "internal_error", WORLD_FAILURE)


def console_main() -> None:
    """The ``aria-sessions`` command: the session manager without the skill name."""
    sys.exit(main(["session_manager", *sys.argv[1:]]))


if __name__ == "__main__":
    sys.exit(main())
