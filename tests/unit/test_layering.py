"""The package's import graph points down (settings and errors, then the core, then hook, operators, triggers)
and has no circle, counting imports made only for type checking."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_provider_milvus"
LAYERS = [  # a module may import only from its own layer or the ones before it
    {"", "exceptions", "version_compat", "local_server", "settings", "embeddings"},  # "": the package's __init__
    {"core"},
    {"hooks", "lineage"},
    {"triggers"},
    {"operators", "get_provider_info"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    modules = {module_name(p) for p in PACKAGE.rglob("*.py")}
    for path in PACKAGE.rglob("*.py"):
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            targets |= {n for n in names if n in modules}
        graph[module_name(path)] = targets - {module_name(path)}
    return graph


def layer(module: str) -> int:
    part = module.split(".")[1] if "." in module else ""
    return next((i for i, names in enumerate(LAYERS) if part in names), -1)


def test_the_import_graph_has_no_circle():
    graph = imports()
    state: dict[str, int] = {}

    def visit(module: str, stack: list[str]) -> None:
        state[module] = 1
        for target in graph.get(module, ()):
            if state.get(target) == 1:
                raise AssertionError(" -> ".join([*stack[stack.index(target) :], target]))
            if not state.get(target):
                visit(target, [*stack, target])
        state[module] = 2

    for module in sorted(graph):
        if not state.get(module):
            visit(module, [module])


def test_every_module_has_a_layer():
    assert sorted(module for module in imports() if layer(module) < 0) == []


def test_imports_point_down_the_layers():
    upward = [
        f"{module} imports {target}"
        for module, targets in imports().items()
        for target in targets
        if layer(target) > layer(module)
    ]
    assert upward == []
