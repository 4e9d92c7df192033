"""The module's shape, checked from its syntax tree: the reader never scrolls down to find what a
line calls, no function is longer than a screen, and session_manager never imports its dispatcher."""

from __future__ import annotations

import ast

import pytest
from helpers import REPO

MODULES = ("session_manager.py", "run_skill.py")
LONGEST_FUNCTION = 50


def syntax_tree(module: str) -> ast.Module:
    return ast.parse((REPO / module).read_text("utf-8"))


def top_level_definitions(tree: ast.Module) -> dict[str, int]:
    """Each module-level function and class with the line it starts on."""
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return {node.name: node.lineno for node in tree.body if isinstance(node, kinds)}


def names_used(node: ast.AST) -> set[str]:
    return {child.id for child in ast.walk(node) if isinstance(child, ast.Name)}


def later_definitions_used(tree: ast.Module) -> list[str]:
    """'user -> used' for every top-level statement that names a function or class defined below it."""
    defined = top_level_definitions(tree)
    found = []
    for statement in tree.body:
        for name in sorted(names_used(statement)):
            if name in defined and defined[name] > statement.lineno:
                user = getattr(statement, "name", f"line {statement.lineno}")
                found.append(f"{user} (line {statement.lineno}) -> {name} (line {defined[name]})")
    return found


@pytest.mark.parametrize("module", MODULES)
def test_everything_is_defined_above_its_first_user(module: str) -> None:
    assert later_definitions_used(syntax_tree(module)) == []


@pytest.mark.parametrize("module", MODULES)
def test_no_function_is_longer_than_fifty_lines(module: str) -> None:
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    lengths = {
        f"{node.name} (line {node.lineno})": (node.end_lineno or node.lineno) - node.lineno + 1
        for node in ast.walk(syntax_tree(module))
        if isinstance(node, functions)
    }
    assert {name: length for name, length in lengths.items() if length > LONGEST_FUNCTION} == {}


def test_session_manager_does_not_import_its_dispatcher() -> None:
    imported = set()
    for node in ast.walk(syntax_tree("session_manager.py")):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module or "")
    assert "run_skill" not in imported


def test_the_checks_find_what_they_look_for() -> None:
    """The rule itself, on a three-line module that breaks it."""
    tree = ast.parse("def first():\n    return second()\ndef second():\n    return 1\n")
    assert later_definitions_used(tree) == ["first (line 1) -> second (line 3)"]


def test_the_crash_harness_replaces_only_declared_test_hooks() -> None:
    """tests/skill_harness.py may swap module names only where session_manager says it may (TEST_HOOKS)."""
    import session_manager

    harness = ast.parse((REPO / "tests" / "skill_harness.py").read_text("utf-8"))
    replaced = {
        target.attr
        for node in ast.walk(harness)
        if isinstance(node, ast.Assign)
        for target in ast.walk(node)
        if isinstance(target, ast.Attribute)
        and isinstance(target.value, ast.Name)
        and target.value.id == "sm"
        if isinstance(target.ctx, ast.Store)
    }
    assert replaced and replaced <= set(session_manager.TEST_HOOKS)
    assert all(hasattr(session_manager, name) for name in session_manager.TEST_HOOKS)


def test_tests_monkeypatch_only_declared_test_hooks() -> None:
    import re

    import session_manager

    patched = set()
    for path in (REPO / "tests").glob("test_*.py"):
        patched |= set(re.findall(r'setattr\(sm, "(\w+)"', path.read_text("utf-8")))
    assert patched and patched <= set(session_manager.TEST_HOOKS)
