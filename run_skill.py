"""Run a skill function from the shell: ``run_skill.py <skill> <function> '<json args>'``.

Prints exactly one JSON document on stdout: the function's result (exit 0), or
``{"error", "error_type"}`` with exit 2 for a caller's mistake and 1 for a failure of the world.
"""

from __future__ import annotations

import importlib
import json
import os
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
_SURROGATE = re.compile(r"[\ud800-\udfff]")
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


MAX_ARGUMENT_DEPTH = 32


def _check_argument_values(value: Any) -> None:
    """Arguments are a few flat values: refuse deep nesting (whatever this Python's parser allows)
    and strings that are not Unicode text (an escape such as "\\ud83d" alone names no character)."""
    waiting = [(value, 0)]
    while waiting:
        item, depth = waiting.pop()
        if depth > MAX_ARGUMENT_DEPTH:
            raise UsageError(
                f"the arguments are not valid JSON (nested deeper than {MAX_ARGUMENT_DEPTH}); "
                'pass an object such as \'{"agent": "main"}\'',
                "invalid_json",
            )
        if isinstance(item, dict):
            waiting += [(key, depth + 1) for key in item] + [(inner, depth + 1) for inner in item.values()]
        elif isinstance(item, list):
            waiting += [(inner, depth + 1) for inner in item]
        elif isinstance(item, str) and _SURROGATE.search(item):
            raise UsageError(
                "an argument holds an unpaired surrogate escape (half of an emoji?); send whole characters",
                "invalid_argument",
            )


class _RepeatedKey(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object_without_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object, refused when it names a key twice: json.loads would keep the last silently,
    so '{"dry_run": true, "dry_run": false}' would run a real prune."""
    value: dict[str, Any] = {}
    for key, item in pairs:
        if key in value:
            raise _RepeatedKey(key[:64])
        value[key] = item
    return value


def parse_arguments(raw: str) -> dict[str, Any]:
    """The JSON object of arguments; accepts an empty string and a Markdown code fence."""
    fenced = _FENCE.match(raw)
    text = (fenced.group(1) if fenced else raw).strip()
    if not text:
        return {}
    try:
        value = json.loads(text, object_pairs_hook=_object_without_repeats)
    except _RepeatedKey as repeated:
        raise UsageError(
            f'the argument "{repeated.key}" is given twice; pass each argument once (nothing was changed)',
            "invalid_argument",
        ) from None
    except (ValueError, RecursionError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise UsageError(
            f'the arguments are not valid JSON ({reason}); pass an object such as \'{{"agent": "main"}}\'',
            "invalid_json",
        ) from None
    if not isinstance(value, dict):
        raise UsageError('the arguments must be a JSON object such as \'{"agent": "main"}\'', "invalid_json")
    _check_argument_values(value)
    return value


def parameters(function: Callable[..., Any]) -> list[tuple[str, Any]]:
    """A function's parameter names with their defaults (REQUIRED where there is none).

    Read from the code object rather than with inspect, which costs the agent's every call ~7 ms."""
    function = getattr(function, "__wrapped__", function)  # the function under a decorator
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


_TYPE_WORDS = {"str": "string", "float": "number", "int": "integer", "bool": "true or false", "None": "null"}


def _argument_type(function: Callable[..., Any], parameter: str) -> str:
    """An argument's type in words, from the function's annotation ("str | None": string or null)."""
    annotation = str(function.__annotations__.get(parameter, "any"))
    return " or ".join(_TYPE_WORDS.get(part.strip(), part.strip()) for part in annotation.split("|"))


def _argument_lines(function: Callable[..., Any], table: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for parameter, default in parameters(function):
        kind = _argument_type(function, parameter)
        if default is REQUIRED:
            lines.append(f"      {parameter}: {kind}, required")
        else:
            shown = DEFAULT_NOTES.get(parameter) if default is None else None
            lines.append(f"      {parameter}: {kind}, default {shown or json.dumps(default)}")
        meaning = table.get(parameter, {}).get("description")
        lines += [f"        {meaning}"] if meaning else []
    return lines or ["      (no arguments)"]


def tool_schema(name: str, function: Callable[..., Any], table: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """One function as a tool for a function-calling model: its first docstring line, and its
    arguments as a JSON Schema object (each from the module's PARAMETERS, with the default)."""
    properties: dict[str, Any] = {}
    required = []
    for parameter, default in parameters(function):
        properties[parameter] = dict(table[parameter])
        if default is REQUIRED:
            required.append(parameter)
        elif default is not None:
            properties[parameter]["default"] = default
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    return {
        "name": name,
        "description": (function.__doc__ or "").strip().splitlines()[0],
        "parameters": schema | ({"required": required} if required else {}),
    }


def skill_document(module: ModuleType) -> dict[str, Any]:
    """skill.json: the module's SKILL_CARD, a tool per function, and the command that runs one."""
    table = module.PARAMETERS
    tools = [tool_schema(name, function, table) for name, function in module.FUNCTIONS.items()]
    return {**module.SKILL_CARD, "tools": tools, "run": module.SKILL_RUN}


def _environment_lines(module: ModuleType) -> list[str]:
    variables: dict[str, str] = getattr(module, "ENVIRONMENT", {})
    return ["environment:"] + [f"  {name}: {meaning}" for name, meaning in variables.items()]


def describe_functions(prefix: str, module: ModuleType) -> str:
    """Help text: each function with its arguments, defaults and first docstring line."""
    lines = [
        f"usage: {prefix} <function> '<json args>'",
        f"       {prefix} <function> --help",
        f"       {prefix} --schema          (skill.json: every function as a JSON Schema tool)",
        f"       {prefix} --install [FOLDER] (copy the skill there, byte-compiled; default: OpenClaw's",
        "                                     $OPENCLAW_STATE_DIR/skills or ~/.openclaw/skills)",
        "",
        "functions:",
    ]
    for name, function in module.FUNCTIONS.items():
        lines.append(f"  {name}")
        summary = (function.__doc__ or "").strip().splitlines()[0]
        lines.append(f"      {summary}")
        lines += _argument_lines(function, getattr(module, "PARAMETERS", {}))
    lines += [
        "",
        "The JSON may be omitted ({}), given as '-' to read it from stdin, or wrapped in a",
        "Markdown code fence.",
        "",
        *_environment_lines(module),
    ]
    return "\n".join(lines)


def describe_function(prefix: str, module: ModuleType, name: str) -> str:
    """One function's help: what it does, its arguments, an example call and its answer's keys."""
    function = module.FUNCTIONS[name]
    example, answer = getattr(module, "HELP", {}).get(name, ("{}", ()))
    lines = [f"usage: {prefix} {name} '<json args>'", ""]
    lines += [line.strip() for line in (function.__doc__ or "").strip().splitlines()]
    arguments = _argument_lines(function, getattr(module, "PARAMETERS", {}))
    lines += ["", "arguments:", *arguments, "", "example:", f"  {prefix} {name} '{example}'"]
    if answer:
        occasional = [key for key in getattr(module, "OCCASIONAL_ANSWER_KEYS", ()) if key not in answer]
        lines += ["", "answer keys:", f"  {', '.join(answer)}"]
        lines += [f"  and when there is something to say: {', '.join(occasional)}"] if occasional else []
    if "detail" in dict(parameters(function)):
        lines += [
            "",
            'answers stay under 32 KiB: a list cut to fit is counted in "truncated";',
            '"detail": "full" returns every list whole.',
        ]
    lines += [
        "",
        'errors: {"error", "error_type"}, exit 2 for a mistake in the call, 1 for a failure of the world.',
        "",
        *_environment_lines(module),
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


# --- Installing the skill -------------------------------------------------------------------------

#: What may sit in a skill's folder beside its files: compiled modules, OpenClaw's install record.
FOLDER_EXTRAS = ("__pycache__", ".openclaw")
COMPILED_FILES = ("session_manager.py", "run_skill.py")


def default_install_folder(name: str) -> str:
    """OpenClaw's folder of managed skills: $OPENCLAW_STATE_DIR/skills, else ~/.openclaw/skills."""
    state = os.environ.get("OPENCLAW_STATE_DIR", "").strip() or "~/.openclaw"
    return os.path.join(os.path.expanduser(state), "skills", name)


def _release(version: str) -> tuple[int, ...]:
    numbers = re.match(r"\d+(?:\.\d+)*", version)
    return tuple(int(part) for part in numbers.group(0).split(".")) if numbers else ()


def missing_packages(floors: dict[str, str]) -> list[str]:
    """The packages this Python lacks, or has older than their floor, as pip requirements."""
    from importlib import metadata

    missing = []
    for package, floor in floors.items():
        try:
            installed = _release(metadata.version(package))
        except metadata.PackageNotFoundError:
            installed = ()
        if installed < _release(floor):
            missing.append(f"{package}>={floor}")
    return missing


def _install_target(folder: str, source: str, files: tuple[str, ...], name: str) -> str:
    """The real path of the folder to install into; refused when it is this checkout or holds
    anything but the skill (an install never overwrites or mixes with someone else's files)."""
    target = os.path.realpath(os.path.expanduser(folder))
    if target == source:
        raise UsageError(
            f"{folder} is the folder the skill is installed from; name another", "invalid_argument"
        )
    if os.path.lexists(target) and not os.path.isdir(target):
        raise UsageError(
            f"{folder} exists and is not a folder; name a folder of the skill's own", "invalid_argument"
        )
    strangers = (
        sorted(set(os.listdir(target)) - set(files) - set(FOLDER_EXTRAS)) if os.path.isdir(target) else []
    )
    if strangers:
        raise UsageError(
            f"{folder} holds files that are not the skill's ({', '.join(strangers[:5])}); install into a "
            f"folder of its own, such as {default_install_folder(name)}",
            "invalid_argument",
        )
    return target


def _write_replacing(path: str, content: bytes) -> None:
    """Write a file whole, then put it in place in one rename: a call running meanwhile reads the
    old file or the new one, never a part."""
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "wb") as handle:
        handle.write(content)
    os.replace(temporary, path)


def _compile(path: str) -> str:
    """Byte-compile an installed module where it lies, checked by the source's hash, not its time:
    valid after a copy that resets times (openclaw skills install), never stale after an edit."""
    import py_compile

    mode = py_compile.PycInvalidationMode.CHECKED_HASH
    return str(py_compile.compile(path, doraise=True, invalidation_mode=mode))


def _other_python3() -> str | None:
    """Why the skill's commands (``python3`` on PATH) would not run the Python that installs it,
    if they would not: its packages were checked, and its modules compiled, for this one."""
    import shutil

    found = shutil.which("python3")
    if found and os.path.dirname(os.path.abspath(found)) == os.path.dirname(os.path.abspath(sys.executable)):
        return None
    return (
        f"python3 on PATH is {found or 'missing'}, not {sys.executable}, which this install checked and "
        "compiled for: run the install with the python3 that runs the skill, or put its folder first on "
        "the gateway's PATH"
    )


def install_skill(module: ModuleType, folder: str | None) -> dict[str, Any]:
    """Put the skill's files (and nothing else) into ``folder``, byte-compiled for this Python,
    with skill.json's command naming the folder; refused, changing nothing, if this Python lacks a
    package the skill needs."""
    name, files = module.SKILL_CARD["name"], module.SKILL_FILES
    missing = missing_packages(module.PACKAGES)
    if missing:
        raise module.ConfigurationError(
            f"{sys.executable} lacks {', '.join(missing)}, which the skill needs; install them for it "
            f"({sys.executable} -m pip install {' '.join(repr(m) for m in missing)}, or in a venv whose "
            "python3 runs the skill), then install again. Nothing was installed"
        )
    source = os.path.dirname(os.path.realpath(__file__))
    target = _install_target(folder or default_install_folder(name), source, files, name)
    os.makedirs(target, exist_ok=True)
    document = skill_document(module)
    document["run"] = document["run"].replace("{baseDir}", target)
    for file in files:
        if file == "skill.json":
            content = (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode("utf-8")
        else:
            with open(os.path.join(source, file), "rb") as handle:
                content = handle.read()
        _write_replacing(os.path.join(target, file), content)
    compiled = [_compile(os.path.join(target, file)) for file in COMPILED_FILES]
    other_python = _other_python3()
    return {
        "installed": target,
        "files": list(files),
        "compiled": [os.path.relpath(path, target) for path in compiled],
        "python": sys.executable,
        "run": document["run"],
        **({"warning": other_python} if other_python else {}),
        "message": f"{name} is installed in {target} for {sys.executable}; give it its variables "
        "(README, Installing) and try: "
        + document["run"].replace("{{tool}}", "list_sessions").replace("'{{args_json}}'", "'{\"limit\": 5}'"),
    }


#: Variables whose values never reach stdout (session_manager.SECRET_VARIABLES, the same names,
#: also keeps them out of every text it cuts, so that no prefix of one is printed either).
SECRET_VARIABLES = ("ARIA_API_KEY", "OPENCLAW_GATEWAY_TOKEN")
#: The longest error message printed; what comes beyond is cut (an echoed argument can be any size).
MESSAGE_CAP = 1000


def _redact(text: str) -> str:
    """Remove the deployment's secrets from JSON text bound for stdout, whatever put them there:
    each as it is and as JSON escapes it (a secret holding '"' or '\\' is printed escaped)."""
    for name in SECRET_VARIABLES:
        secret = os.environ.get(name, "").strip()
        if len(secret) < 4:  # shorter ones are refused as configuration errors: never mangle the JSON
            continue
        for form in dict.fromkeys((secret, json.dumps(secret, ensure_ascii=False)[1:-1])):
            text = text.replace(form, "[redacted]")
    return text


def _finite(value: Any) -> Any:
    """``value`` with every number that JSON cannot hold (NaN, Infinity) as null, as Node does."""
    if isinstance(value, float) and value - value != 0:
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(item) for item in value]
    return value


def _emit(document: dict[str, Any]) -> None:
    """Print one strict JSON document as UTF-8: no NaN, no unpaired surrogate, no secret."""
    try:
        text = json.dumps(document, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except ValueError:
        text = json.dumps(_finite(document), ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    text = _redact(_SURROGATE.sub("\ufffd", text)) + "\n"
    try:
        binary = getattr(sys.stdout, "buffer", None)
        if binary is not None:
            sys.stdout.flush()
            binary.write(text.encode("utf-8"))
            binary.flush()
        else:
            sys.stdout.write(text)
            sys.stdout.flush()
    except BrokenPipeError:
        pass


def _error(message: str, error_type: str, code: int) -> int:
    if len(message) > MESSAGE_CAP:
        message = message[: MESSAGE_CAP - 1] + "…"
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


def _read_stdin() -> str:
    """The JSON arguments given on stdin ('-'); a closed or unreadable stdin is the caller's mistake."""
    try:
        if sys.stdin is None:
            raise OSError("stdin is closed")
        return sys.stdin.read()
    except (OSError, ValueError, UnicodeDecodeError) as error:
        raise UsageError(
            f"the arguments were to come from stdin ('-'), which could not be read ({type(error).__name__}); "
            "pass the JSON object as the last word instead",
            "invalid_argument",
        ) from None


def _usage_error(message: str, usage: str) -> UsageError:
    """A command line that names too little: the usage goes to stderr, the error to stdout."""
    print(usage, file=sys.stderr)
    return UsageError(message, "invalid_argument")


def _skill_option(argv: list[str], module: ModuleType, prefix: str) -> int | None:
    """Print the skill's help or its skill.json, or install it, when the command line asks; the
    exit code, or None for a function call."""
    if argv[1] in ("-h", "--help"):
        print(describe_functions(prefix, module))
        return 0
    if argv[1:] == ["--schema"]:
        print(json.dumps(skill_document(module), indent=2, ensure_ascii=False))
        return 0
    if argv[1] == "--install" and len(argv) <= 3:
        try:
            _emit(install_skill(module, argv[2] if len(argv) == 3 else None))
        except module.SessionManagerError as error:
            return _error(str(error), error.error_type, error.exit_code)
        return 0
    return None


def run(argv: list[str], prefix: str | None = None) -> int:
    """Parse the command line, call the function, print its JSON; return the exit code.

    ``prefix`` is how the user calls a skill's functions (``aria-sessions``); by default
    ``run_skill.py <skill>``.
    """
    if argv in (["-h"], ["--help"]):
        print(general_help())
        return 0
    if not argv:
        raise _usage_error(
            f"name a skill and a function, for example: run_skill.py {SKILLS[0]} list_sessions '{{}}'",
            general_help(),
        )
    module = _load_skill(argv[0])
    prefix = prefix or f"run_skill.py {argv[0]}"
    if len(argv) == 1:
        raise _usage_error(
            f"name a function after the skill: one of {', '.join(module.FUNCTIONS)}",
            describe_functions(prefix, module),
        )
    option = _skill_option(argv, module, prefix)
    if option is not None:
        return option
    name = argv[1]
    function = module.FUNCTIONS.get(name)
    if function is None:
        raise UsageError(
            f"unknown function {name!r}; available: {', '.join(module.FUNCTIONS)}", "unknown_function"
        )
    if len(argv) == 3 and argv[2] in ("-h", "--help"):
        print(describe_function(prefix, module, name))
        return 0
    if len(argv) > 3:
        raise UsageError(
            "too many arguments: pass one JSON object, quoted as a single word", "invalid_argument"
        )
    raw = argv[2] if len(argv) == 3 else ""
    if raw == "-":
        raw = _read_stdin()
    arguments = parse_arguments(raw)
    check_argument_names(name, function, arguments)
    try:
        result = module.run_function(name, arguments)
    except module.SessionManagerError as error:
        return _error(str(error), error.error_type, error.exit_code)
    _emit(result)
    # A whole answer that failed all the same (a prune in which every agent failed) says so.
    return 1 if isinstance(result, dict) and "error_type" in result else 0


def _check_text(argv: list[str]) -> list[str]:
    """Refuse command-line words that are not UTF-8 (Python keeps their bytes as lone surrogates)."""
    for position, word in enumerate(argv, start=1):
        try:
            word.encode("utf-8")
        except UnicodeEncodeError:
            raise UsageError(
                f"word {position} of the command line is not UTF-8 text; send the arguments as UTF-8 JSON",
                "invalid_argument",
            ) from None
    return argv


def main(argv: list[str] | None = None, prefix: str | None = None) -> int:
    """Entry point: never lets a traceback reach the agent."""
    _install_signal_handlers()
    after_signal = (
        "the lock was released and the index left whole; the history marks of anything deleted "
        "wait in the outbox (sync_pending delivers them)"
    )
    try:
        return run(_check_text(list(sys.argv[1:] if argv is None else argv)), prefix)
    except UsageError as error:
        return _error(str(error), error.error_type, CALLER_MISTAKE)
    except Terminated as stop:
        return _error(
            f"interrupted by signal {stop.signal_number}; {after_signal}",
            "interrupted",
            128 + stop.signal_number,
        )
    except KeyboardInterrupt:
        return _error(f"interrupted; {after_signal}", "interrupted", 130)
    except OSError as error:
        return _error(
            f"{error.strerror or error}: {error.filename or ''}".strip(": "), "os_error", WORLD_FAILURE
        )
    except Exception as error:
        return _error(
            f"internal error: {type(error).__name__}: {error}. Nothing is left half-done (every change is "
            "recorded in the audit log before it is made); report this with the command that caused it",
            "internal_error",
            WORLD_FAILURE,
        )


def console_main() -> None:
    """The ``aria-sessions`` command: the session manager without the skill name."""
    sys.exit(main(["session_manager", *sys.argv[1:]], prefix="aria-sessions"))


if __name__ == "__main__":
    sys.exit(main())
