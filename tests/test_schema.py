"""skill.json (issue 28, item 5): every function as a tool with a JSON Schema of its arguments,
generated from the PARAMETERS table that --help reads too, and true to the argument checks: a
value the schema allows is never refused as a bad argument, and one it forbids always is."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import REPO, write_index
from jsonschema import Draft202012Validator

import run_skill
import session_manager as sm

SCHEMA = run_skill.skill_document(sm)
TOOLS = {tool["name"]: tool for tool in SCHEMA["tools"]}

#: Values tried for every argument: each is judged by the schema, then by the function.
CANDIDATES: list[Any] = [
    None, True, False, 0, 1, -1, 0.5, 10_000, 10_001, 10**9, 10**9 + 1, 99_999.5, 100_000,
    "", "main", "Main", "all", "summary", "full", "cron_run", "../x", "agent:main:main", "global",
    "a" * 65, [], {},
]  # fmt: skip
#: A value the checks accept for each required argument, so that the others are what is tried.
REQUIRED_VALUES = {"session_id": "no-such-session-1"}
REFUSED = {"invalid_argument", "unsafe_path"}


def call(function: str, arguments: dict[str, Any]) -> dict[str, Any]:
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        run_skill.main(["session_manager", function, json.dumps(arguments)])
    answer: dict[str, Any] = json.loads(buffer.getvalue())
    return answer


def test_the_committed_skill_json_is_the_generated_one() -> None:
    """Regenerate with `make skill.json`."""
    assert json.loads((REPO / "skill.json").read_text("utf-8")) == SCHEMA


def test_the_run_command_names_the_skills_folder_and_the_catalogues_placeholders() -> None:
    assert SCHEMA["run"] == "python3 {baseDir}/run_skill.py session_manager {{tool}} '{{args_json}}'"
    assert list(TOOLS) == list(sm.FUNCTIONS)


def test_every_public_function_has_its_card_section_dispatcher_entry_help_and_checks() -> None:
    card = re.findall(r"^### ([a-z_]+)$", (REPO / "SKILL.md").read_text("utf-8"), re.MULTILINE)
    assert sorted(card) == sorted(sm.FUNCTIONS) == sorted(sm.HELP)
    for name, function in sm.FUNCTIONS.items():
        assert function.__module__ == "session_manager" and getattr(sm, name) is function
        assert [
            argument for argument, _ in run_skill.parameters(function) if argument not in sm.PARAMETERS
        ] == []
        example, answer_keys = sm.HELP[name]
        assert isinstance(json.loads(example), dict) and answer_keys, name


@pytest.mark.parametrize("name", list(sm.FUNCTIONS))
def test_each_tool_is_a_valid_json_schema_with_the_arguments_and_defaults_of_help(name: str) -> None:
    parameters = TOOLS[name]["parameters"]
    Draft202012Validator.check_schema(parameters)
    signature = run_skill.parameters(sm.FUNCTIONS[name])
    assert list(parameters["properties"]) == [argument for argument, _ in signature]
    required = [argument for argument, default in signature if default is run_skill.REQUIRED]
    assert parameters.get("required", []) == required
    for argument, default in signature:
        schema = parameters["properties"][argument]
        assert schema.get("default", None if default is run_skill.REQUIRED else default) == (
            None if default is run_skill.REQUIRED else default
        )
        assert schema["description"] in run_skill.describe_function("x", sm, name)


@pytest.fixture
def everyone(root: Path) -> Path:
    """An agent for every candidate that is an agent id, so that naming one is never an error."""
    for candidate in CANDIDATES:
        if isinstance(candidate, str) and sm.AGENT_ID_PATTERN.match(candidate):
            write_index(root, candidate, {})
    return root


@pytest.mark.parametrize(
    ("name", "argument"),
    [(name, argument) for name, tool in TOOLS.items() for argument in tool["parameters"]["properties"]],
)
def test_the_checks_refuse_exactly_what_the_schema_forbids(everyone: Path, name: str, argument: str) -> None:
    schema = Draft202012Validator(TOOLS[name]["parameters"]["properties"][argument])
    disagreements = []
    for value in CANDIDATES:
        arguments = {key: v for key, v in REQUIRED_VALUES.items() if key != argument} | {argument: value}
        arguments = {key: v for key, v in arguments.items() if key in TOOLS[name]["parameters"]["properties"]}
        if "dry_run" in TOOLS[name]["parameters"]["properties"] and argument != "dry_run":
            arguments.setdefault("dry_run", True)
        refused = call(name, arguments).get("error_type") in REFUSED
        if refused == schema.is_valid(value):
            disagreements.append((value, "refused" if refused else "accepted"))
    assert disagreements == []


def test_the_command_line_prints_skill_json() -> None:
    completed = subprocess.run(
        [sys.executable, str(REPO / "run_skill.py"), "session_manager", "--schema"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert completed.returncode == 0 and json.loads(completed.stdout) == SCHEMA
