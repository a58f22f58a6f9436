"""zoo/ is the ground floor: it never imports training/, tuning/ or experiments/, and
modules import each other without a cycle. Every import counts, the ones inside
functions included (read with `ast`, nothing is executed)."""

import ast
from pathlib import Path
from typing import Optional

import pytest

ZOO = Path(__file__).resolve().parents[1] / "zoo"
UPPER_PACKAGES = ("training", "tuning", "experiments")


def module_name(path: Path) -> str:
    parts = path.relative_to(ZOO.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict:
    """Every module of zoo/ (subpackages included), name -> path."""
    return {module_name(path): path for path in sorted(ZOO.rglob("*.py"))}


def imported_names(path: Path, package: Optional[str] = None) -> list:
    """Every module name an `import` statement of the file names, anywhere in it.

    `from a import b` names `a.b` when that is a zoo module, else `a`; relative imports
    are resolved against `package`, by default the file's package in zoo/.
    """
    known = modules()
    if package is None:
        name = module_name(path)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    names = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                names.append(full if full in known else base)
    return names


def zoo_graph() -> dict:
    """module -> the zoo modules it imports (a package's `__init__` is its own node)."""
    known = modules()
    return {
        name: sorted({n for n in imported_names(path) if n in known} - {name})
        for name, path in known.items()
    }


def find_cycle(graph: dict) -> list:
    """A cycle of `graph` as a list of nodes (first == last), or `[]`."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in graph.get(node, ()):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return []

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return []


def test_the_graph_reader_sees_every_kind_of_import(tmp_path):
    source = tmp_path / "m.py"
    source.write_text(
        "import os\n"
        "from zoo import layers, registry\n"
        "from . import export\n"
        "def f():\n"
        "    import training.optimizers\n"
        "    from tuning.search import search\n"
    )
    names = imported_names(source, package="zoo")
    assert "training.optimizers" in names and "tuning.search" in names
    assert {"zoo.layers", "zoo.registry", "os"} <= set(names)
    assert "zoo" not in names  # `from zoo import layers` is an import of zoo.layers
    assert "zoo.export" in names
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) == []


def test_zoo_has_the_expected_modules():
    assert {
        "zoo",
        "zoo.registry",
        "zoo.validation",
        "zoo.layers",
        "zoo.saved_model",
        "zoo.pretrained",
        "zoo.publishing",
        "zoo.weights",
        "zoo.export",
        "zoo.mlp",
        "zoo.vgg",
        "zoo.cli",
    } <= set(modules())


@pytest.mark.parametrize("name", sorted(modules()))
def test_zoo_never_imports_upper_layers(name):
    upward = [
        imported
        for imported in imported_names(modules()[name])
        if imported.split(".")[0] in UPPER_PACKAGES
    ]
    assert upward == [], f"{name} imports {upward}"


def test_zoo_imports_have_no_cycle():
    graph = zoo_graph()
    assert find_cycle(graph) == []
    # The ground rules of the layering, by name: the registries import no model
    # module, only the package's __init__ imports the factories.
    assert graph["zoo.registry"] == [] and graph["zoo.validation"] == []
    factories = {"zoo.mlp", "zoo.vgg"}
    assert [m for m, targets in graph.items() if factories & set(targets)] == ["zoo"]
    assert not {"zoo.export", "zoo.publishing"} & set(graph["zoo.pretrained"])


if __name__ == "__main__":  # print the graph: python tests/test_zoo_imports.py
    for module, targets in zoo_graph().items():
        print(f"{module} -> {', '.join(targets) or '-'}")
