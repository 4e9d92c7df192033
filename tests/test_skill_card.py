"""SKILL.md as an agent reads it (issue 28, item 2): at most 8 KB, the user's five functions and
hygiene rules first, every function with one example answer whose keys the function answers,
every command in the form OpenClaw resolves."""

from __future__ import annotations

import json
import re

from helpers import REPO

import session_manager as sm

CARD = (REPO / "SKILL.md").read_text("utf-8")
SEED_FUNCTIONS = [
    "list_sessions",
    "delete_session",
    "prune_sessions",
    "get_session_stats",
    "cleanup_after_delegation",
]
SEED_RULES = ["After sub-agent delegation", "During work_cycle", "Before session review"]


def section(function: str) -> str:
    return CARD.split(f"### {function}\n", 1)[1].split("\n#", 1)[0]


def test_the_card_fits_in_8_kb() -> None:
    assert len(CARD.encode("utf-8")) <= 8 * 1024


def test_the_seed_functions_come_first_then_the_newer_ones() -> None:
    headings = re.findall(r"^### ([a-z_]+)$", CARD, re.MULTILINE)
    assert headings[:5] == SEED_FUNCTIONS and sorted(headings) == sorted(sm.FUNCTIONS)


def test_the_seed_rules_are_there_before_the_functions() -> None:
    rules = CARD.split("## Automatic Cleanup Rules", 1)[1].split("## Functions", 1)[0]
    assert "Aria MUST follow these session hygiene rules" in rules
    assert [rule for rule in SEED_RULES if f"**{rule}**" not in rules] == []


def test_each_function_has_one_example_answer_with_keys_it_answers() -> None:
    occasional = set(sm.OCCASIONAL_ANSWER_KEYS)
    for function in sm.FUNCTIONS:
        examples = re.findall(r"```json\n(.*?)```", section(function), re.DOTALL)
        assert len(examples) == 1, function
        unknown = set(json.loads(examples[0])) - set(sm.HELP[function][1]) - occasional
        assert unknown == set(), function


def test_every_command_runs_the_dispatcher_from_the_skills_folder() -> None:
    commands = re.findall(r"^python3 .*$", CARD, re.MULTILINE)
    assert commands and all(c.startswith("python3 {baseDir}/run_skill.py session_manager ") for c in commands)
    assert "/app/" not in CARD


def test_the_card_says_where_the_detail_is() -> None:
    assert "--help" in CARD.split("## Automatic Cleanup Rules", 1)[0]


def test_every_protection_reason_is_on_the_card() -> None:
    assert [reason.value for reason in sm.Protection if f"`{reason.value}`" not in CARD] == []
