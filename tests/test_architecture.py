"""The project's layering: zoo < training < tuning, experiments; no import cycle.

Checked on the source with `tools/import_graph.py` (imports inside functions count too),
so a hidden import that dodges a cycle at run time still fails here.
"""

import importlib.util
from pathlib import Path

import pytest

_PATH = Path(__file__).resolve().parent.parent / "tools" / "import_graph.py"
_spec = importlib.util.spec_from_file_location("import_graph", _PATH)
import_graph = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(import_graph)


@pytest.fixture(scope="module")
def graph():
    return import_graph.import_graph()


def test_graph_sees_every_package_and_function_level_imports(graph, tmp_path):
    assert {"zoo", "zoo.registry", "training.runner", "tuning.search"} <= set(graph)
    # An import inside a function is an edge like any other.
    module = tmp_path / "probe.py"
    module.write_text(
        "def f():\n    from zoo import registry\n    import training.cli\n"
    )
    found = import_graph.imports_of("zoo.probe", module, import_graph.project_modules())
    assert found == {"zoo.registry", "training.cli"}


def test_no_import_cycle(graph):
    assert import_graph.cycles(graph) == []


def test_no_upward_import(graph):
    assert import_graph.upward_imports(graph) == []


def test_cycle_and_upward_detection_on_a_toy_graph():
    toy = {"zoo.a": {"zoo.b"}, "zoo.b": {"zoo.a"}, "zoo.c": {"training.x"}}
    assert import_graph.cycles(toy) == [["zoo.a", "zoo.b"]]
    assert import_graph.upward_imports(toy) == [("zoo.c", "training.x")]
    assert import_graph.upward_imports({"tuning.a": {"experiments.b"}}) == [
        ("tuning.a", "experiments.b")
    ]
