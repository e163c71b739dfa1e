"""The code's layout: no import cycles, the core imports nothing above it, small modules that say what
they hold, one `patronbot` command tree, and a README whose map matches the tree."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

from bot.settings import PROJECT_ROOT

PACKAGES = ("bot", "actions", "connectors", "nlu", "rasa_server", "console")
# Layers above the core: bot/ is imported by them and imports none of them.
ABOVE_THE_CORE = ("actions", "connectors", "nlu", "rasa_server", "console", "rasa", "rasa_sdk")
MAX_LINES = 400


def _modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            name = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts).removesuffix(".__init__")
            modules[name] = path
    return modules


def _imports(path: Path) -> set[str]:
    """Every module the file imports, at the top or inside a function (a lazy import is an import)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def _graph() -> dict[str, set[str]]:
    """Module -> the project's modules it imports (an imported name that is no module counts as its
    module)."""
    modules = _modules()
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        for imported in _imports(path):
            target = imported
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                graph[name].add(target)
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    nodes = sorted(set(graph) | {target for targets in graph.values() for target in targets})
    for root in nodes:
        if root in index:
            continue
        work = [(root, iter(sorted(graph.get(root, ()))))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back() -> None:
    assert _cycles(_graph()) == []


def _domain(module: str) -> str:
    """bot.crm.audit -> bot.crm; bot.settings -> bot.settings; actions.crm -> actions."""
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "bot" else parts[0]


def test_the_core_packages_form_layers() -> None:
    """Between bot's packages every arrow points one way (crm below privacy below ingest, ...)."""
    packages: dict[str, set[str]] = defaultdict(set)
    for module, targets in _graph().items():
        for target in targets:
            if _domain(module) != _domain(target):
                packages[_domain(module)].add(_domain(target))
    assert _cycles(packages) == []


def test_the_core_imports_nothing_above_it() -> None:
    offending = [
        f"{name} imports {target}"
        for name, path in _modules().items()
        if name.split(".")[0] == "bot"
        for target in sorted(_imports(path))
        if target.split(".")[0] in ABOVE_THE_CORE
    ]
    assert offending == []


def test_modules_are_small() -> None:
    big = {
        name: lines
        for name, path in _modules().items()
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert big == {}


def test_every_module_says_what_it_holds_and_packages_hold_no_code() -> None:
    missing = []
    for name, path in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        docstring = ast.get_docstring(tree)
        if not docstring:
            missing.append(f"{name}: no docstring")
        # A package's __init__ may name what the package offers (imports, __all__), nothing more.
        code = [
            node
            for node in tree.body[1:]
            if not isinstance(node, ast.Import | ast.ImportFrom)
            and not (isinstance(node, ast.Assign) and [ast.unparse(t) for t in node.targets] == ["__all__"])
        ]
        if path.name == "__init__.py" and code:
            missing.append(f"{name}: code in __init__.py")
    assert missing == []


def test_patronbot_help_lists_every_group_and_each_group_has_help() -> None:
    from bot.cli.main import build_parser

    result = subprocess.run(
        [str(Path(sys.executable).with_name("patronbot")), "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    groups = [
        "run",
        "train",
        "ingest",
        "chat",
        "db",
        "patron",
        "retention",
        "escalations",
        "reports",
        "faq",
        "segment",
        "interests",
        "personas",
        "campaign",
        "scheduler",
        "sender",
        "eval",
        "console",
        "staff",
    ]
    listed = re.findall(r"^ {4}(\w+)", result.stdout, flags=re.MULTILINE)
    assert sorted(listed) == sorted(groups)
    for group in groups:
        with pytest.raises(SystemExit) as done:
            build_parser().parse_args([group, "--help"])
        assert done.value.code == 0


def _where_things_are() -> list[str]:
    """The paths in the first column of README's "Where things are" table."""
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Where things are", 1)[1].split("\n## ", 1)[0]
    paths = []
    for line in section.splitlines():
        if line.startswith("| `"):
            paths += re.findall(r"`([^`]+)`", line.split("|")[1])
    return paths


def test_the_readme_map_matches_the_tree() -> None:
    paths = _where_things_are()
    assert paths, "README.md has no 'Where things are' table"
    missing = [path for path in paths if not (PROJECT_ROOT / path.rstrip("/")).exists()]
    assert missing == []
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    folders = {path.split("/")[0] for path in tracked if "/" in path and not path.startswith(".")}
    packages = {
        "/".join(Path(path).parts[:2]) for path in tracked if re.match(r"bot/\w+/__init__\.py$", path)
    }
    named = {path.rstrip("/") for path in paths}
    assert sorted((folders | packages) - named) == []


def test_every_docs_page_is_linked_from_the_readme() -> None:
    readme = (PROJECT_ROOT / "README.md").read_text(encoding="utf-8")
    pages = sorted(path.relative_to(PROJECT_ROOT).as_posix() for path in (PROJECT_ROOT / "docs").glob("*.md"))
    assert pages
    assert [page for page in pages if f"({page})" not in readme] == []
