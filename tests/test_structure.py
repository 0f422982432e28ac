"""The package's import structure: no module imports another that imports it back (function-level imports
included, which hide a circle from Python but not from a reader), and the shared spine does not depend on
the methods that use it."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

PACKAGE = Path(__file__).resolve().parents[1] / "llmshearing"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> Dict[str, Set[str]]:
    """module -> the llmshearing modules it imports anywhere in its source."""
    files = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph = {}
    for name, path in files.items():
        imported = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("llmshearing"):
                for alias in node.names:  # `from pkg import module` imports the module
                    full = f"{node.module}.{alias.name}"
                    imported.add(full if full in files else node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names if alias.name.startswith("llmshearing"))
        graph[name] = {other for other in imported if other in files and other != name}
    return graph


def circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(graph[node]):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
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

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_check_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_one_that_imports_it_back():
    assert circles(import_graph()) == []


def test_the_shared_spine_and_conversion_do_not_import_a_method():
    methods = ("llmshearing.sheared", "llmshearing.minitron", "llmshearing.surgeon", "llmshearing.training")
    graph = import_graph()
    # (checkpoint_plan.py reads the plan a checkpoint carries, and derives that of a checkpoint written before
    # plans were stored through Sheared's L0 module: the one place that may, and it is not listed here)
    spine = [name for name in graph if name.startswith("llmshearing.convert")
             or name in ("llmshearing.plan", "llmshearing.shape", "llmshearing.slicing")]
    offending = {name: sorted(other for other in graph[name] if other.startswith(methods)) for name in spine}
    assert {name: others for name, others in offending.items() if others} == {}
