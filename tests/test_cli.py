"""The command line the agent runs: one JSON document, exit codes, and thirty-odd kinds of bad input."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import (
    REPO,
    run_cli,
    run_raw,
    snapshot,
    stale_agent,
    strict_json,
)

import session_manager as sm

SKILL = "session_manager"

# (name, argv after run_skill.py, extra environment, expected exit code, expected error_type, text in error)
BAD_INPUT = [
    ("unknown skill", ["nope", "list_sessions", "{}"], {}, 2, "unknown_skill", "available: session_manager"),
    ("unknown function", [SKILL, "drop_everything", "{}"], {}, 2, "unknown_function", "prune_sessions"),
    ("broken JSON", [SKILL, "list_sessions", "{"], {}, 2, "invalid_json", "not valid JSON"),
    ("JSON list", [SKILL, "list_sessions", "[]"], {}, 2, "invalid_json", "JSON object"),
    ("JSON string", [SKILL, "list_sessions", '"main"'], {}, 2, "invalid_json", "JSON object"),
    ("JSON null", [SKILL, "list_sessions", "null"], {}, 2, "invalid_json", "JSON object"),
    (
        "unknown argument",
        [SKILL, "list_sessions", '{"foo": 1}'],
        {},
        2,
        "invalid_argument",
        "accepts: agent, session_type",
    ),
    (
        "misspelt argument",
        [SKILL, "prune_sessions", '{"max_age": 60}'],
        {},
        2,
        "invalid_argument",
        "accepts: max_age_minutes, dry_run, agent, session_type",
    ),
    (
        "negative minutes",
        [SKILL, "prune_sessions", '{"max_age_minutes": -5}'],
        {},
        2,
        "invalid_argument",
        "at least 0",
    ),
    (
        "minutes as text",
        [SKILL, "prune_sessions", '{"max_age_minutes": "60"}'],
        {},
        2,
        "invalid_argument",
        "number of minutes",
    ),
    (
        "minutes as boolean",
        [SKILL, "prune_sessions", '{"max_age_minutes": true}'],
        {},
        2,
        "invalid_argument",
        "number of minutes",
    ),
    (
        "minutes NaN",
        [SKILL, "prune_sessions", '{"max_age_minutes": NaN}'],
        {},
        2,
        "invalid_argument",
        "finite",
    ),
    (
        "minutes infinite",
        [SKILL, "prune_sessions", '{"max_age_minutes": Infinity}'],
        {},
        2,
        "invalid_argument",
        "finite",
    ),
    (
        "dry_run as text",
        [SKILL, "prune_sessions", '{"dry_run": "yes"}'],
        {},
        2,
        "invalid_argument",
        "true or false",
    ),
    (
        "force as text",
        [SKILL, "delete_session", '{"session_id": "run-9", "force": "true"}'],
        {},
        2,
        "invalid_argument",
        "true or false",
    ),
    (
        "unknown agent",
        [SKILL, "list_sessions", '{"agent": "ghost"}'],
        {},
        2,
        "unknown_agent",
        "known agents: analyst, main",
    ),
    ("agent with ..", [SKILL, "prune_sessions", '{"agent": "../main"}'], {}, 2, "unsafe_path", "path"),
    ("absolute agent", [SKILL, "prune_sessions", '{"agent": "/etc"}'], {}, 2, "unsafe_path", "path"),
    ("agent as number", [SKILL, "list_sessions", '{"agent": 5}'], {}, 2, "invalid_argument", "string"),
    (
        "agent in capitals",
        [SKILL, "list_sessions", '{"agent": "Main"}'],
        {},
        2,
        "invalid_argument",
        "lower-case slug",
    ),
    ("session_id missing", [SKILL, "delete_session", "{}"], {}, 2, "invalid_argument", "needs 'session_id'"),
    ("session_id empty", [SKILL, "delete_session", '{"session_id": ""}'], {}, 2, "invalid_argument", "empty"),
    (
        "session_id traversal",
        [SKILL, "delete_session", '{"session_id": "../../etc/passwd"}'],
        {},
        2,
        "unsafe_path",
        "looks like a path",
    ),
    (
        "session_id absolute",
        [SKILL, "delete_session", '{"session_id": "/etc/passwd"}'],
        {},
        2,
        "unsafe_path",
        "looks like a path",
    ),
    (
        "session_id number",
        [SKILL, "delete_session", '{"session_id": 123}'],
        {},
        2,
        "invalid_argument",
        "string",
    ),
    (
        "session_id null",
        [SKILL, "cleanup_after_delegation", '{"session_id": null}'],
        {},
        2,
        "invalid_argument",
        "string",
    ),
    (
        "session_id with spaces",
        [SKILL, "delete_session", '{"session_id": "a b"}'],
        {},
        2,
        "invalid_argument",
        "neither a sessionId",
    ),
    (
        "protected main session",
        [SKILL, "delete_session", '{"session_id": "agent:main:main"}'],
        {},
        2,
        "protected_session",
        "is an agent's main session; it is kept",
    ),
    (
        "running conversation",
        [SKILL, "delete_session", '{"session_id": "run-9", "force": true}'],
        {"ARIA_SESSION_ID": "run-9"},
        2,
        "protected_session",
        "not even with force",
    ),
    (
        "bad session_type",
        [SKILL, "list_sessions", '{"session_type": "cron run"}'],
        {},
        2,
        "invalid_argument",
        "session_type",
    ),
    (
        "threshold as list",
        [SKILL, "get_session_stats", '{"stale_threshold_minutes": []}'],
        {},
        2,
        "invalid_argument",
        "number of minutes",
    ),
    ("two JSON words", [SKILL, "list_sessions", "{}", "{}"], {}, 2, "invalid_argument", "too many"),
    (
        "dry run given twice",
        [SKILL, "prune_sessions", '{"dry_run": true, "dry_run": false, "max_age_minutes": 1}'],
        {},
        2,
        "invalid_argument",
        '"dry_run" is given twice',
    ),
    (
        "agent given twice",
        [SKILL, "prune_sessions", '{"agent": "work", "agent": "main", "max_age_minutes": 1}'],
        {},
        2,
        "invalid_argument",
        '"agent" is given twice',
    ),
    (
        "same value twice",
        [SKILL, "delete_session", '{"session_id": "sub-1", "session_id": "sub-1"}'],
        {},
        2,
        "invalid_argument",
        '"session_id" is given twice',
    ),
    ("limit zero", [SKILL, "list_deleted", '{"limit": 0}'], {}, 2, "invalid_argument", "from 1 to 10000"),
    (
        "negative retention",
        [SKILL, "cleanup_orphans", '{"archive_retention_days": -1}'],
        {},
        2,
        "invalid_argument",
        "between 0",
    ),
    (
        "nothing to restore",
        [SKILL, "restore_session", '{"session_id": "run-9"}'],
        {},
        2,
        "nothing_to_restore",
        "list_deleted",
    ),
    (
        "delete budget of zero",
        [SKILL, "delete_session", '{"session_id": "sub-1"}'],
        {"OPENCLAW_DELETE_BUDGET_SECONDS": "0"},
        1,
        "configuration_error",
        "OPENCLAW_DELETE_BUDGET_SECONDS='0' allows no work at all",
    ),
    (
        "delete budget of zero, written 0.0",
        [SKILL, "prune_sessions", "{}"],
        {"OPENCLAW_DELETE_BUDGET_SECONDS": "0.0"},
        1,
        "configuration_error",
        "set a number above 0 (default 60)",
    ),
    (
        "stale minutes variable",
        [SKILL, "prune_sessions", "{}"],
        {"SESSION_STALE_MINUTES": "soon"},
        1,
        "configuration_error",
        "SESSION_STALE_MINUTES",
    ),
    (
        "missing agents root",
        [SKILL, "list_sessions", "{}"],
        {"ARIA_AGENTS_DIR": "/nonexistent/agents"},
        1,
        "configuration_error",
        "ARIA_AGENTS_DIR",
    ),
]


@pytest.mark.parametrize(
    ("argv", "env", "code", "error_type", "text"),
    [case[1:] for case in BAD_INPUT],
    ids=[case[0] for case in BAD_INPUT],
)
def test_bad_input_gets_json_error_and_changes_nothing(
    tree: Path, argv: list[str], env: dict[str, str], code: int, error_type: str, text: str
) -> None:
    before = snapshot(tree.parent)
    exit_code, document, stderr = run_cli(*argv, env=env)
    assert (exit_code, document["error_type"]) == (code, error_type), document
    assert text in document["error"]
    assert set(document) == {"error", "error_type"}
    assert "Traceback" not in stderr
    assert snapshot(tree.parent) == before


def test_there_are_thirty_kinds_of_bad_input() -> None:
    assert len({case[0] for case in BAD_INPUT}) >= 30


def test_unreadable_store_of_a_named_agent_is_a_world_failure(tree: Path) -> None:
    (tree / "analyst/sessions/sessions.json").write_text("{torn")
    before = snapshot(tree.parent)
    exit_code, document, stderr = run_cli(SKILL, "prune_sessions", '{"agent": "analyst"}')
    assert (exit_code, document["error_type"]) == (1, "store_unreadable")
    assert "analyst/sessions/sessions.json is not valid JSON" in document["error"]
    assert snapshot(tree.parent) == before and "Traceback" not in stderr


def test_lock_held_by_a_live_process_times_out_with_its_holder(tree: Path) -> None:
    lock = tree / "main/sessions/sessions.json.lock"
    lock.write_text(json.dumps({"pid": os.getpid(), "createdAt": "2099-01-01T00:00:00.000Z"}))
    index_before = (tree / "main/sessions/sessions.json").read_bytes()
    exit_code, document, _ = run_cli(
        SKILL, "delete_session", '{"session_id": "run-9"}', env={"SESSION_LOCK_TIMEOUT_SECONDS": "0.3"}
    )
    assert (exit_code, document["error_type"]) == (1, "lock_timeout")
    assert f"held by pid {os.getpid()}" in document["error"]
    assert (tree / "main/sessions/sessions.json").read_bytes() == index_before
    assert lock.exists() and (tree / "main/sessions/run-9.jsonl").exists()


def test_exact_agent_command_line_prints_one_json_document(tree: Path) -> None:
    completed = subprocess.run(
        ["python3", str(REPO / "run_skill.py"), "session_manager", "list_sessions", "{}"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert completed.returncode == 0 and completed.stderr == ""
    assert json.loads(completed.stdout)["session_count"] == 12


@pytest.mark.parametrize(
    "argument", [None, "", "{}", "```json\n{}\n```", "```\n{}\n```", '  ```json {"agent": "main"} ```  ']
)
def test_arguments_may_be_omitted_or_fenced(tree: Path, argument: str | None) -> None:
    argv = [SKILL, "get_session_stats"] + ([] if argument is None else [argument])
    exit_code, document, _ = run_cli(*argv)
    assert exit_code == 0 and document["total_sessions"] in (6, 12)


def test_arguments_from_stdin(tree: Path) -> None:
    exit_code, document, _ = run_cli(SKILL, "list_sessions", "-", stdin='{"agent": "analyst"}')
    assert exit_code == 0 and document["session_count"] == 6


def test_help_lists_functions_arguments_and_defaults(tree: Path) -> None:
    top = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), "--help"], capture_output=True, text=True
    )
    assert top.returncode == 0 and "session_manager" in top.stdout
    detail = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), SKILL, "--help"], capture_output=True, text=True
    )
    assert detail.returncode == 0
    for expected in (
        "list_sessions",
        "prune_sessions",
        "max_age_minutes: number or null, default $SESSION_STALE_MINUTES or 60",
        "dry_run: true or false, default false",
        "session_id: string, required",
        "restore_session",
    ):
        assert expected in detail.stdout


def test_python_dash_m_runs_the_same_dispatcher(tree: Path) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "run_skill", "session_manager", "list_sessions", '{"agent": "main"}'],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert completed.returncode == 0 and json.loads(completed.stdout)["session_count"] == 6


def test_running_the_module_itself_points_to_the_dispatcher_and_changes_nothing(tree: Path) -> None:
    before = snapshot(tree)
    completed = subprocess.run(
        [sys.executable, "-m", "session_manager", "prune_sessions", '{"max_age_minutes": 1}'],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert (completed.returncode, completed.stdout) == (1, "")
    assert "python3 run_skill.py session_manager" in completed.stderr
    assert snapshot(tree) == before


def test_console_command_runs_the_same_dispatcher(tree: Path) -> None:
    command = shutil.which("aria-sessions")
    if command is None:
        pytest.skip("aria-sessions is not installed here; `pip install -e .` installs it")
    completed = subprocess.run([command, "get_session_stats", "{}"], capture_output=True, text=True)
    assert completed.returncode == 0 and json.loads(completed.stdout)["total_sessions"] == 12


def test_api_key_never_appears_in_output(tree: Path) -> None:
    secret = "sk-very-secret-key-123"
    outputs = [
        run_cli(SKILL, "prune_sessions", "{}", env={"ARIA_API_KEY": secret}),
        run_cli(SKILL, "delete_session", '{"session_id": "sub-1"}', env={"ARIA_API_KEY": secret}),
        run_cli(SKILL, "get_session_stats", "{}", env={"ARIA_API_KEY": secret}),
    ]
    for exit_code, document, stderr in outputs:
        assert exit_code == 0
        assert secret not in json.dumps(document) and secret not in stderr


def test_no_error_of_the_skill_is_also_a_builtin_error() -> None:
    """A handler of OSError or ValueError can never misfile one of the skill's errors (issue 29)."""

    def subclasses(cls: type) -> list[type]:
        return [cls, *(sub for child in cls.__subclasses__() for sub in subclasses(child))]

    builtin = (OSError, ValueError, TimeoutError, LookupError, ArithmeticError, RuntimeError)
    assert [cls.__name__ for cls in subclasses(sm.SessionManagerError) if issubclass(cls, builtin)] == []


def test_every_error_type_is_documented_in_the_readme_and_the_card() -> None:

    def subclasses(cls: type) -> list[type]:
        return [cls, *(sub for child in cls.__subclasses__() for sub in subclasses(child))]

    emitted = {cls.error_type for cls in subclasses(sm.SessionManagerError)} - {"error"}
    emitted |= set(
        re.findall(
            r'"([a-z_]+)",\s*(?:CALLER_MISTAKE|WORLD_FAILURE|128|130)', (REPO / "run_skill.py").read_text()
        )
    )
    emitted |= {"unknown_skill", "unknown_function", "invalid_json"}
    assert {"internal_error", "os_error", "interrupted"} <= emitted
    for document in ("README.md", "SKILL.md"):
        text = (REPO / document).read_text()
        assert [kind for kind in sorted(emitted) if f"`{kind}`" not in text] == [], document


@pytest.mark.parametrize(
    ("argv", "names"),
    [([], "name a skill and a function"), ([SKILL], "name a function after the skill")],
)
def test_a_call_that_names_too_little_is_a_json_error_with_usage_on_stderr(
    argv: list[str], names: str
) -> None:
    exit_code, document, stderr = run_cli(*argv)
    assert (exit_code, document["error_type"]) == (2, "invalid_argument")
    assert names in document["error"] and stderr.startswith("usage:")


def readme_variables() -> list[str]:
    table = (REPO / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z_]+)` \|", table, re.MULTILINE)


@pytest.mark.parametrize("function", ["list_sessions", "prune_sessions", "restore_session", "sync_pending"])
def test_each_function_has_its_own_help(function: str) -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), SKILL, function, "--help"],
        capture_output=True,
        text=True,
    )
    assert completed.returncode == 0 and completed.stdout.startswith(
        f"usage: run_skill.py {SKILL} {function}"
    )
    for part in ("arguments:", "example:", "answer keys:", 'detail: string, default "summary"'):
        assert part in completed.stdout
    variables = readme_variables()
    assert len(variables) >= 9 and [v for v in variables if v not in completed.stdout] == []


def test_help_keys_are_the_keys_of_the_real_answers(tree: Path) -> None:
    """Both ways: every key the help names is in the answer, and every key of the answer is named
    by the help (as a key of that function, or as one that answers carry only at times)."""

    examples = {
        "delete_session": {"session_id": "sub-1"},
        "cleanup_after_delegation": {"session_id": "cron-hb"},
        "restore_session": {"session_id": "sub-1"},
    }
    for function, (_, keys) in sm.HELP.items():
        answer = sm.FUNCTIONS[function](**examples.get(function, {}))
        assert [key for key in keys if key not in answer] == [], function
        unnamed = [key for key in answer if key not in keys and key not in sm.OCCASIONAL_ANSWER_KEYS]
        assert unnamed == [], function


@pytest.mark.parametrize(
    ("module", "package"), [("dateutil", "python-dateutil"), ("httpcore", "httpx"), ("httpx", "httpx")]
)
@pytest.mark.parametrize("function", ["get_session_stats", "prune_sessions", "list_sessions"])
def test_a_missing_package_is_a_configuration_error_that_names_it(
    tree: Path, module: str, package: str, function: str
) -> None:
    """As if the package were not installed (the import system finds no module by that name)."""
    before = snapshot(tree.parent)
    hide = f"import sys; sys.modules[{module!r}] = None; sys.path.insert(0, {str(REPO)!r}); import run_skill"
    completed = subprocess.run(
        [
            sys.executable,
            "-c",
            f"{hide}; sys.exit(run_skill.main(['session_manager', {function!r}, '{{}}']))",
        ],
        capture_output=True,
        text=True,
    )
    document = json.loads(completed.stdout)
    assert (completed.returncode, document["error_type"]) == (1, "configuration_error")
    assert f"python3 -m pip install {package}" in document["error"] and "Traceback" not in completed.stderr
    assert snapshot(tree.parent) == before


@pytest.mark.parametrize(
    ("broken", "code", "error_type"),
    [
        ((), 0, None),
        (("main",), 0, None),
        (("analyst", "main"), 1, "store_unreadable"),
    ],
)
def test_a_prune_in_which_every_agent_failed_fails_with_its_whole_answer(
    tree: Path, broken: tuple[str, ...], code: int, error_type: str | None
) -> None:
    for agent in broken:
        (tree / agent / "sessions" / "sessions.json").write_text("{not json")

    exit_code, answer, _ = run_cli(SKILL, "prune_sessions", '{"dry_run": true}')

    assert (exit_code, answer.get("error_type")) == (code, error_type)
    assert len(answer["errors"]) == len(broken) and "pruned_count" in answer
    if error_type:
        assert answer["error"].startswith("every agent failed (2); the first, ")


# (argv after the skill, exit code, error_type)
EDGES: list[tuple[list[str | bytes], int, str]] = [
    (["list_sessions", "[" * 50_000], 2, "invalid_json"),
    (["list_sessions", '{"agent": ' + "[" * 5000 + "]" * 5000 + "}"], 2, "invalid_json"),
    (["list_sessions", '{"agent": "\\ud83d"}'], 2, "invalid_argument"),
    (["delete_session", '{"session_id": "agent:main:x\\udc00"}'], 2, "invalid_argument"),
    (["list_sessions", b'{"agent": "\xff\xfe"}'], 2, "invalid_argument"),
    ([b"list_\xffsessions", "{}"], 2, "invalid_argument"),
]


@pytest.mark.parametrize(("argv", "code", "error_type"), EDGES, ids=range(len(EDGES)))
def test_odd_input_is_the_callers_mistake_in_strict_utf8_json(
    root: Path, argv: list[str | bytes], code: int, error_type: str
) -> None:
    stale_agent(root)
    before = snapshot(root)
    exit_code, output = run_raw(SKILL, *argv)
    answer = strict_json(output.decode("utf-8"))
    assert (exit_code, answer["error_type"]) == (code, error_type)
    assert snapshot(root) == before


def test_arguments_from_a_closed_stdin_are_the_callers_mistake(root: Path) -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), SKILL, "list_sessions", "-"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        env=os.environ,
        close_fds=True,
        preexec_fn=lambda: os.close(0),
    )
    answer = json.loads(completed.stdout)
    assert (completed.returncode, answer["error_type"]) == (2, "invalid_argument")
