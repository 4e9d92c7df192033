"""The modules' shape, checked from their syntax trees: session_manager reads in newspaper order
(its public functions first, then one section per noun, as its table of contents says), the
dispatcher defines everything above its first user, no function is longer than a screen, and
session_manager never imports its dispatcher."""

from __future__ import annotations

import ast
from pathlib import Path

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


def test_the_dispatcher_defines_everything_above_its_first_user() -> None:
    assert later_definitions_used(syntax_tree("run_skill.py")) == []


def section_headers(module: str) -> list[tuple[str, int]]:
    """Each ``# --- title ---`` line of a module: its title and line number."""
    lines = (REPO / module).read_text("utf-8").splitlines()
    return [
        (line.removeprefix("# --- ").rstrip("- ").strip(), number)
        for number, line in enumerate(lines, 1)
        if line.startswith("# --- ")
    ]


def table_of_contents(docstring: str) -> list[tuple[str, list[str]]]:
    """The module docstring's contents: each item's section title and the names it points to."""
    items: list[str] = []
    for line in docstring.splitlines():
        if line.startswith("- "):
            items.append(line[2:])
        elif line.startswith("  ") and items:
            items[-1] += " " + line.strip()
    contents = []
    for item in items:
        title, _, names = item.partition(" -> ")
        contents.append((title, [name.split(" (")[0].strip() for name in names.split(",")]))
    return contents


def section_of_each_definition(module: str) -> dict[str, str]:
    """Each top-level definition and assignment of a module, by the section it lies in."""
    headers = section_headers(module)
    found = {}
    for node in syntax_tree(module).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            name = node.name
        elif isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            name = node.target.id
        else:
            continue
        above = [title for title, line in headers if line < node.lineno]
        found[name] = above[-1] if above else ""
    return found


def test_the_public_functions_come_first_within_the_first_fifth() -> None:
    """After the docstring and imports, a reader meets the public functions (FUNCTIONS, in their
    order) before anything else, and all of them within the first fifth of the file."""
    import session_manager

    tree = syntax_tree("session_manager.py")
    definitions = [node for node in tree.body if not isinstance(node, (ast.Expr, ast.Import, ast.ImportFrom))]
    first = [getattr(node, "name", None) for node in definitions[: len(session_manager.FUNCTIONS)]]
    assert first == list(session_manager.FUNCTIONS)
    length = len((REPO / "session_manager.py").read_text("utf-8").splitlines())
    last_public_line = definitions[len(session_manager.FUNCTIONS) - 1].end_lineno or 0
    assert last_public_line <= length / 5, (last_public_line, length)


def test_the_table_of_contents_is_the_section_headers_and_names_what_each_holds() -> None:
    import session_manager

    contents = table_of_contents(session_manager.__doc__ or "")
    assert [title for title, _ in contents] == [title for title, _ in section_headers("session_manager.py")]
    where = section_of_each_definition("session_manager.py")
    misplaced = {
        name: where.get(name) for title, names in contents for name in names if where.get(name) != title
    }
    assert misplaced == {}


def test_the_table_of_contents_check_finds_a_misplaced_name() -> None:
    """The rule itself, on a docstring whose item points to a name of another section."""
    contents = table_of_contents("- The audit log -> AuditLog, Mark\n- Errors -> SessionManagerError\n")
    where = section_of_each_definition("session_manager.py")
    assert [name for title, names in contents for name in names if where.get(name) != title] == ["Mark"]


#: What a first parameter may not be in a free function: the configuration, the call's context,
#: or a noun (the function is then a method in disguise and belongs in the noun's class).
NOUNS = {
    "Config", "Call", "AgentStore", "JsonStore", "SqliteStore", "History", "Outbox", "AuditLog",
    "HistoryClient", "HistoryReport", "StateFolder", "OpenClawCli", "AgentWalk", "Search",
}  # fmt: skip
NOUN_PARAMETERS = {"config", "call", "store", "history", "outbox", "client", "report", "walk", "search"}


def methods_in_disguise(tree: ast.Module) -> list[str]:
    found = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.args.args:
            first = node.args.args[0]
            annotation = ast.unparse(first.annotation) if first.annotation else ""
            if first.arg in NOUN_PARAMETERS or annotation in NOUNS:
                found.append(f"{node.name}({first.arg}: {annotation})")
    return found


def test_no_free_function_takes_the_configuration_or_a_noun_first() -> None:
    assert methods_in_disguise(syntax_tree("session_manager.py")) == []


def test_the_method_in_disguise_check_finds_one() -> None:
    tree = ast.parse(
        "def _queue(config: Config, marks: list) -> None: ...\ndef _fine(marks: list) -> None: ...\n"
    )
    assert methods_in_disguise(tree) == ["_queue(config: Config)"]


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


def test_the_define_before_use_check_finds_what_it_looks_for() -> None:
    """The rule itself, on a three-line module that breaks it."""
    tree = ast.parse("def first():\n    return second()\ndef second():\n    return 1\n")
    assert later_definitions_used(tree) == ["first (line 1) -> second (line 3)"]


def replaced_names(tree: ast.Module) -> set[str]:
    """What a module assigns under ``sm``: ``sm.name`` or ``sm.Class.method``, by its dotted name."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in ast.walk(node):
                if isinstance(target, ast.Attribute) and isinstance(target.ctx, ast.Store):
                    dotted = ast.unparse(target)
                    if dotted.startswith("sm."):
                        found.add(dotted.removeprefix("sm."))
    return found


def hook_exists(module: object, dotted: str) -> bool:
    owner = module
    for part in dotted.split("."):
        if not hasattr(owner, part):
            return False
        owner = getattr(owner, part)
    return True


def test_the_crash_harness_replaces_only_declared_test_hooks() -> None:
    """tests/skill_harness.py may swap names only where session_manager says it may (TEST_HOOKS)."""
    import session_manager

    replaced = replaced_names(ast.parse((REPO / "tests" / "skill_harness.py").read_text("utf-8")))
    assert replaced and replaced <= set(session_manager.TEST_HOOKS)
    assert all(hook_exists(session_manager, name) for name in session_manager.TEST_HOOKS)


def test_tests_monkeypatch_only_declared_test_hooks() -> None:
    import re

    import session_manager

    patched = set()
    for path in (REPO / "tests").glob("test_*.py"):
        text = path.read_text("utf-8")
        patched |= set(re.findall(r'setattr\(sm, "(\w+)"', text))
        patched |= {f"{owner}.{name}" for owner, name in re.findall(r'setattr\(sm\.(\w+), "(\w+)"', text)}
    assert patched and patched <= set(session_manager.TEST_HOOKS)


#: The store seam: the classes of the two kinds of store and the base they share (issue 17).
STORE_CLASSES = ("AgentStore", "JsonStore", "SqliteStore")
KIND_NAMES = {"JSON_STORE", "SQLITE_STORE", "JsonStore", "SqliteStore"}


def mentions_a_kind(node: ast.AST) -> bool:
    """Whether an expression names a kind of store: its constant, its class, or a ``.kind`` / ``.store``."""
    for child in ast.walk(node):
        if isinstance(child, ast.Name) and child.id in KIND_NAMES:
            return True
        if isinstance(child, ast.Attribute) and child.attr in ("kind", "store"):
            return True
        if isinstance(child, ast.Constant) and child.value in ("json", "sqlite"):
            return True
    return False


def kind_comparisons(tree: ast.Module) -> list[str]:
    """Every place outside STORE_CLASSES that compares a kind of store (==, in, is, isinstance)."""
    found = []
    for statement in tree.body:
        if getattr(statement, "name", None) in STORE_CLASSES:
            continue
        for node in ast.walk(statement):
            compared = isinstance(node, ast.Compare) and mentions_a_kind(node)
            checked = (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in ("isinstance", "type")
                and mentions_a_kind(node)
            )
            if compared or checked:
                found.append(f"{getattr(statement, 'name', 'line')} (line {node.lineno})")
    return found


def test_the_kind_of_store_is_compared_nowhere_outside_the_store_classes() -> None:
    """At most two places may compare kinds (the issue's bound); today none does: AgentStore.open
    chooses by the gateway's files, and recorded kinds are looked up in STORE_KINDS."""
    places = kind_comparisons(syntax_tree("session_manager.py"))
    assert len(places) <= 2, places
    assert places == []


def test_a_store_is_made_only_where_its_kind_is_chosen() -> None:
    """No code names a kind's class to make a store: AgentStore.open takes the kind from STORE_KINDS
    (so that a new kind is its class and its registration there, nothing more)."""
    tree = syntax_tree("session_manager.py")
    makers = {
        statement.name
        for statement in tree.body
        if isinstance(statement, (ast.FunctionDef, ast.ClassDef))
        for node in ast.walk(statement)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
        if node.func.id in ("JsonStore", "SqliteStore")
    }
    assert makers == set()
    (store_class,) = [
        node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == "AgentStore"
    ]
    (opener,) = [
        node for node in store_class.body if isinstance(node, ast.FunctionDef) and node.name == "open"
    ]
    assert "STORE_KINDS" in names_used(opener)


def test_every_reason_and_status_is_written_once() -> None:
    """A protection reason, a mark status, a history outcome or a skip reason is a member of its
    enum; its text appears nowhere else in the module (issue 29: closed sets are never prose)."""
    import session_manager

    tree = syntax_tree("session_manager.py")
    # The words an on/off variable accepts are another idea than the history layer being off.
    switch = next(
        n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "_switch_from_environment"
    )
    words = {id(node) for node in ast.walk(switch)}
    texts = [
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in words
    ]
    members = [
        *session_manager.Protection,
        *session_manager.MarkStatus,
        *session_manager.HistoryStatus,
        *session_manager.Skip,
    ]
    assert {member.value: texts.count(member.value) for member in members} == {m.value: 1 for m in members}
    assert set(session_manager.PROTECTION_MESSAGES) == set(session_manager.Protection)


@pytest.mark.parametrize(
    ("source", "found"),
    [
        ("def f(store):\n    return store.kind == 'json'\n", ["f (line 2)"]),
        ("def f(store):\n    return isinstance(store, SqliteStore)\n", ["f (line 2)"]),
        ("def f(deletion):\n    return deletion.store in (JSON_STORE, SQLITE_STORE)\n", ["f (line 2)"]),
        ("class SqliteStore:\n    def f(self, s):\n        return isinstance(s, SqliteStore)\n", []),
        ("def f(store):\n    return store.remove([])\n", []),
    ],
)
def test_the_kind_check_finds_what_it_looks_for(source: str, found: list[str]) -> None:
    assert kind_comparisons(ast.parse(source)) == found


def test_the_module_holds_no_javascript_and_sets_no_node_options() -> None:
    """Issue 27: the SQLite era goes through the gateway's protocol from Python, not a helper
    preloaded into the CLI's Node."""
    source = (REPO / "session_manager.py").read_text("utf-8")
    assert '"NODE_OPTIONS":' not in source and "--import=" not in source and "import {" not in source


def test_the_tests_javascript_parses_without_openclaw(tmp_path: Path) -> None:
    """Issue 29 item 7: the only JavaScript left is the tests' (a gateway-like writer, a one-request
    client); Node's own parser checks both, with no OpenClaw installed."""
    import shutil
    import subprocess

    from openclaw_gateway import REQUEST_SCRIPT

    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH: the JavaScript of the tests cannot be parsed here")
    client = tmp_path / "request.mjs"
    client.write_text(REQUEST_SCRIPT)
    for script in (REPO / "tests" / "gateway_writer.js", client):
        completed = subprocess.run([node, "--check", str(script)], capture_output=True, text=True, timeout=60)
        assert completed.returncode == 0, completed.stderr
