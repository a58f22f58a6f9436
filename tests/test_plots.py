"""Tests for training/plots.py: PNG files written, figure contents, bad inputs rejected."""

import struct

import matplotlib.pyplot as plt
import numpy as np
import pytest
from matplotlib.patches import StepPatch

from training import plots

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_size(path):
    """(width, height) in pixels, from the PNG header."""
    with open(path, "rb") as file:
        header = file.read(24)
    assert header[:8] == PNG_SIGNATURE
    return struct.unpack(">II", header[16:24])


@pytest.fixture
def saved_figures(monkeypatch):
    """Records every figure the module saves (before it is cleared)."""
    figures = []
    original = plots._save

    def record(figure, path):
        figures.append(
            {
                "titles": [ax.get_title() for ax in figure.axes],
                "legends": [ax.get_legend() is not None for ax in figure.axes],
                "lines": [len(ax.lines) for ax in figure.axes],
                "ylim": [ax.get_ylim() for ax in figure.axes],
                "yscale": [ax.get_yscale() for ax in figure.axes],
                "bars": [len(ax.patches) for ax in figure.axes],
                # Counts and edges of step histograms (`Axes.stairs`).
                "stairs": [
                    [
                        (p.get_data().values.tolist(), p.get_data().edges.tolist())
                        for p in ax.patches
                        if isinstance(p, StepPatch)
                    ]
                    for ax in figure.axes
                ],
                "minor_yticks": [len(ax.get_yticks(minor=True)) for ax in figure.axes],
                "suptitle": figure.get_suptitle(),
            }
        )
        return original(figure, path)

    monkeypatch.setattr(plots, "_save", record)
    assert plt.get_fignums() == []
    yield figures
    assert plt.get_fignums() == []  # nothing left open


def test_task_accuracies(tmp_path, saved_figures):
    acc = np.linspace(0.1, 0.9, 6 * 3).reshape(6, 3)
    path = tmp_path / "new" / "dir" / "tasks.png"
    result = plots.plot_task_accuracies(
        acc,
        task_boundaries=[2, 4],
        path=path,
        task_names=["a", "b", "c"],
        title="PMNIST",
    )
    assert result == str(path)
    assert png_size(path) == (800, 450)
    assert path.stat().st_size > 5000
    (figure,) = saved_figures
    assert figure["titles"] == ["PMNIST"]
    assert figure["lines"] == [3 + 2]  # one per task, one per boundary
    assert figure["legends"] == [True]
    assert figure["ylim"] == [(0.0, 100.0)]


def test_task_accuracies_many_tasks_has_no_legend(tmp_path, saved_figures):
    # 60 stream subsets on one test set: T = 1; and 20 tasks: no legend.
    plots.plot_task_accuracies(
        np.full((60, 1), 0.5),
        task_boundaries=list(range(1, 60)),
        path=tmp_path / "s.png",
    )
    acc = np.random.default_rng(0).uniform(size=(40, 20))
    acc[:5, 10:] = np.nan  # not evaluated yet: a gap, not an error
    plots.plot_task_accuracies(acc, task_boundaries=[], path=tmp_path / "m.png")
    assert [f["lines"] for f in saved_figures] == [[1 + 59], [20]]
    assert [f["legends"] for f in saved_figures] == [[True], [False]]
    assert png_size(tmp_path / "m.png") == (800, 450)


def test_hidden_weight_histograms(tmp_path, saved_figures):
    weights = {
        "dense_1": np.array([0.5, -1.5, 2.0, -0.1, 0.2, 3.0, 0.0, -0.9]),  # 3/8 above 1
        "dense_2": np.full((4, 5), -0.25),
    }
    path = plots.plot_hidden_weight_histograms(
        weights, path=tmp_path / "h.png", title="Epoch 3", bins=10
    )
    assert png_size(path) == (800, 320)
    (figure,) = saved_figures
    assert figure["titles"] == ["dense_1: |Wh| > 1: 37.5%", "dense_2: |Wh| > 1: 0.0%"]
    assert figure["yscale"] == ["log", "log"]
    # One filled step patch per layer: the histogram of |Wh| in 10 bins.
    assert figure["bars"] == [1, 1]
    for (stairs,), layer in zip(figure["stairs"], weights.values()):
        counts, edges = np.histogram(np.abs(layer), bins=10)
        assert stairs[0] == counts.tolist()
        np.testing.assert_allclose(stairs[1], edges)
    assert figure["minor_yticks"] == [0, 0]
    assert figure["suptitle"] == "Epoch 3"
    # Four layers: a 2 x 3 grid.
    four = {f"l{i}": np.ones(3) for i in range(4)}
    assert png_size(
        plots.plot_hidden_weight_histograms(four, path=tmp_path / "4.png")
    ) == (
        1200,
        640,
    )


def test_accuracy_comparison(tmp_path, saved_figures):
    runs = {"m=1.35": [0.9, 0.8, 0.95], "m=0": [0.3, 0.4, 0.97]}
    path = plots.plot_accuracy_comparison(runs, path=tmp_path / "c.png", title="PMNIST")
    assert png_size(path) == (600, 450)
    (figure,) = saved_figures
    assert figure["bars"] == [6]
    assert figure["legends"] == [True]
    assert figure["titles"] == ["PMNIST"]


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda p: plots.plot_task_accuracies(
                np.ones(5), task_boundaries=[], path=p
            ),
            "shape",
        ),
        (
            lambda p: plots.plot_task_accuracies(
                np.ones((0, 2)), task_boundaries=[], path=p
            ),
            "shape",
        ),
        (
            lambda p: plots.plot_task_accuracies(
                np.ones((3, 2, 1)), task_boundaries=[], path=p
            ),
            "shape",
        ),
        (
            lambda p: plots.plot_task_accuracies(
                np.full((3, 2), 95.0), task_boundaries=[], path=p
            ),
            "[0, 1]",
        ),
        (
            lambda p: plots.plot_task_accuracies(
                np.ones((3, 2)), task_boundaries=[4], path=p
            ),
            "[0, 3]",
        ),
        (
            lambda p: plots.plot_task_accuracies(
                np.ones((3, 2)), task_boundaries=[], path=p, task_names=["a"]
            ),
            "2 task names",
        ),
        (lambda p: plots.plot_hidden_weight_histograms({}, path=p), "empty"),
        (
            lambda p: plots.plot_hidden_weight_histograms({"d": np.array([])}, path=p),
            "no weights",
        ),
        (
            lambda p: plots.plot_hidden_weight_histograms(
                {"d": np.array([np.inf])}, path=p
            ),
            "non-finite",
        ),
        (
            lambda p: plots.plot_hidden_weight_histograms(
                {"d": np.ones(2)}, path=p, bins=0
            ),
            "bins",
        ),
        (lambda p: plots.plot_accuracy_comparison({}, path=p), "empty"),
        (
            lambda p: plots.plot_accuracy_comparison(
                {"a": [0.5], "b": [0.5, 0.6]}, path=p
            ),
            "same number",
        ),
        (lambda p: plots.plot_accuracy_comparison({"a": []}, path=p), "non-empty"),
        (lambda p: plots.plot_accuracy_comparison({"a": [[0.5]]}, path=p), "flat"),
        (lambda p: plots.plot_accuracy_comparison({"a": [50.0]}, path=p), "[0, 1]"),
    ],
)
def test_invalid_inputs(tmp_path, call, message):
    assert_refused_in_one_line(tmp_path, call, message)


def assert_refused_in_one_line(tmp_path, call, message):
    """`call(path)` raises a one-line ValueError, writes nothing, leaves no figure."""
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError) as error:
        call(path)
    assert message in str(error.value)
    assert "\n" not in str(error.value)
    assert not path.exists()
    assert plt.get_fignums() == []


@pytest.fixture
def saved_figure_objects(monkeypatch):
    """The figures the module saves, inspected before they are cleared."""
    inspected = []
    original = plots._save

    def inspect(figure, path):
        axes = figure.axes
        inspected.append(
            {
                "axes": len(axes),
                "suptitle": figure.get_suptitle(),
                "titles": [ax.get_title() for ax in axes],
                "lines": [len(ax.lines) for ax in axes],
                "segments": [
                    len(c.get_segments())
                    for ax in axes
                    for c in ax.collections
                    if hasattr(c, "get_segments") and c.get_segments()
                ],
                "errorbar_xy": [
                    (c.lines[0].get_xdata().tolist(), c.lines[0].get_ydata().tolist())
                    for ax in axes
                    for c in ax.containers
                ],
            }
        )
        return original(figure, path)

    monkeypatch.setattr(plots, "_save", inspect)
    yield inspected
    assert plt.get_fignums() == []


def test_quadratic_landscape(tmp_path, saved_figure_objects):
    trajectory = np.array([[0.01, 0.02], [0.4, -0.1], [0.8, 0.1], [1.2, -0.05]])
    path = plots.plot_quadratic_landscape(
        hessian=[[2.4, 0.2], [0.2, 0.8]],
        optimum=[1.5, 0.5],
        trajectory=trajectory,
        path=tmp_path / "q.png",
        title="2-D",
    )
    assert png_size(path) == (600, 600)
    (figure,) = saved_figure_objects
    assert figure["axes"] == 2  # the landscape and its colour bar
    assert figure["titles"][0] == "2-D"
    # Unit box, 4 binary points, trajectory, start, optimum, legend entry.
    assert figure["lines"][0] == 1 + 4 + 1 + 1 + 1 + 1


def test_hidden_weight_divergence(tmp_path, saved_figure_objects):
    rng = np.random.default_rng(0)
    importance = rng.uniform(0, 10, 50)
    magnitudes = np.outer(np.arange(11), importance / 10)
    path = plots.plot_hidden_weight_divergence(
        magnitudes,
        importance=importance,
        growth_rate=importance / 10,
        path=tmp_path / "d.png",
        title="divergence",
        max_lines=20,
    )
    assert png_size(path) == (1100, 450)
    (figure,) = saved_figure_objects
    assert figure["suptitle"] == "divergence"
    assert figure["segments"] == [20]  # at most max_lines trajectories drawn
    assert figure["axes"] == 3  # two panels and the colour bar


def test_loss_increase_by_hidden_weight(tmp_path, saved_figure_objects):
    result = {
        "mean_abs_wh": [0.2, 1.1, np.nan, 3.0],
        "mean_increase": [0.01, 0.02, np.nan, 0.05],
        "std_increase": [0.001, 0.002, np.nan, 0.003],
    }
    path = plots.plot_loss_increase_by_hidden_weight(
        result, path=tmp_path / "i.png", title="dense_2"
    )
    assert png_size(path) == (600, 450)
    # An object with per-weight values plots those.
    from types import SimpleNamespace

    per_weight = SimpleNamespace(
        mean_abs_wh=np.array([1.0, 2.0]),
        mean_increase=np.array([10.0, 20.0]),
        std_increase=np.array([1.0, 1.0]),
        mean_increase_per_weight=np.array([0.1, 0.2]),
        std_increase_per_weight=np.array([0.01, 0.01]),
    )
    plots.plot_loss_increase_by_hidden_weight(per_weight, path=tmp_path / "w.png")
    first, second = saved_figure_objects
    assert first["titles"] == ["dense_2"]
    assert first["errorbar_xy"] == [([0.2, 1.1, 3.0], [0.01, 0.02, 0.05])]
    assert second["errorbar_xy"] == [([1.0, 2.0], [0.1, 0.2])]


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda p: plots.plot_quadratic_landscape(
                hessian=np.eye(3), optimum=[0, 0], trajectory=np.zeros((2, 2)), path=p
            ),
            "expected hessian (2, 2)",
        ),
        (
            lambda p: plots.plot_quadratic_landscape(
                hessian=np.eye(2),
                optimum=[0, 0],
                trajectory=[[0.0, np.nan]],
                path=p,
            ),
            "finite",
        ),
        (
            lambda p: plots.plot_hidden_weight_divergence(
                np.ones((3, 4)), importance=np.ones(5), growth_rate=np.ones(4), path=p
            ),
            "expected magnitudes (T + 1, d)",
        ),
        (
            lambda p: plots.plot_hidden_weight_divergence(
                np.ones((3, 4)),
                importance=np.ones(4),
                growth_rate=np.ones(4),
                path=p,
                max_lines=0,
            ),
            "max_lines must be a positive integer",
        ),
        (
            lambda p: plots.plot_loss_increase_by_hidden_weight(
                {"mean_abs_wh": [1.0], "mean_increase": [1.0]}, path=p
            ),
            "no 'std_increase'",
        ),
        (
            lambda p: plots.plot_loss_increase_by_hidden_weight(
                {
                    "mean_abs_wh": [1.0, 2.0],
                    "mean_increase": [1.0],
                    "std_increase": [0],
                },
                path=p,
            ),
            "one value per bin",
        ),
        (
            lambda p: plots.plot_loss_increase_by_hidden_weight(
                {"mean_abs_wh": [np.nan], "mean_increase": [1.0], "std_increase": [0]},
                path=p,
            ),
            "all NaN",
        ),
    ],
)
def test_invalid_analysis_inputs(tmp_path, call, message):
    assert_refused_in_one_line(tmp_path, call, message)
