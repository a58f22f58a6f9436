"""Prints the project's import graph and checks its layering.

`python tools/import_graph.py` lists, for every module of zoo/, training/, tuning/ and
experiments/, the project modules it imports (module level and inside functions alike),
then any cycle and any import that goes up a layer. Layers, lowest first:

    zoo  <  training  <  tuning, experiments

A module may import its own package and the packages below it; tuning and experiments
do not import each other. Exit code 0 when the graph is clean, 1 otherwise.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("zoo", "training", "tuning", "experiments")
LAYER = {"zoo": 0, "training": 1, "tuning": 2, "experiments": 2}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            modules[module_name(path)] = path
    return modules


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The longest project module that `name` (a dotted import) refers to."""
    while name:
        if name in modules:
            return name
        name = name.rpartition(".")[0]
    return None


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules imported anywhere in `path` (including inside functions)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[: len(anchor) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            # `from zoo import layers` imports the module zoo.layers; `from zoo import
            # mlp_meta` a name of the package zoo itself.
            names = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                for alias in node.names
            ]
        for name in names:
            target = _resolve(name, modules)
            if target is not None and target != module:
                found.add(target)
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the project modules it imports."""
    modules = project_modules()
    return {m: imports_of(m, p, modules) for m, p in modules.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Imports of a higher layer, or between tuning and experiments."""
    bad = []
    for module, targets in graph.items():
        own = module.split(".")[0]
        for target in targets:
            other = target.split(".")[0]
            if other != own and LAYER[other] >= LAYER[own]:
                bad.append((module, target))
    return sorted(bad)


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), sorted."""
    index, low, on_stack, stack, result = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                result.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(result)


def main() -> int:
    graph = import_graph()
    modules = project_modules()
    for module in sorted(graph):
        lines = sum(1 for _ in modules[module].open())
        targets = ", ".join(sorted(graph[module])) or "-"
        print(f"{module} ({lines} lines) -> {targets}")
    found_cycles = cycles(graph)
    upward = upward_imports(graph)
    print(f"\ncycles: {found_cycles or 'none'}")
    print(
        "upward imports: "
        + (", ".join(f"{a} -> {b}" for a, b in upward) if upward else "none")
    )
    return 1 if found_cycles or upward else 0


if __name__ == "__main__":
    sys.exit(main())
