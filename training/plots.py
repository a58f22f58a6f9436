"""Figures of a continual-learning run, saved as PNG files.

- `plot_task_accuracies`: test accuracy of every task after each epoch, with the task
  switches marked (Fig. 2 of Laborieux et al., 2021);
- `plot_hidden_weight_histograms`: distribution of `|Wh|` per binary layer, the fraction
  of consolidated weights (`|Wh| > 1`) in the titles;
- `plot_accuracy_comparison`: final accuracy per task of several runs side by side;
- `plot_quadratic_landscape`: the 2-D quadratic binary task (Fig. 5a): loss contours,
  the four binary points, the hidden-weight trajectory and the real optimum;
- `plot_hidden_weight_divergence`: `|Wh|` over time coloured by importance, and growth
  rate vs importance (Fig. 5b, `experiments.toy_quadratic`);
- `plot_loss_increase_by_hidden_weight`: loss increase caused by flipping weights, per
  bin of `|Wh|` (Fig. 5b-e, `experiments.importance`).

Figures are built as `matplotlib.figure.Figure` objects rendered by the Agg canvas, so
no display is needed, the global pyplot backend is left alone and no figure stays open.

!!! example
    ```python
    from training.plots import plot_task_accuracies

    plot_task_accuracies(acc, task_boundaries=[20, 40], path="run/plots/tasks.png")
    ```
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from zoo.validation import check_positive_int

__all__ = [
    "plot_task_accuracies",
    "plot_hidden_weight_histograms",
    "plot_accuracy_comparison",
    "plot_quadratic_landscape",
    "plot_hidden_weight_divergence",
    "plot_loss_increase_by_hidden_weight",
]

# Above this many lines or bars, a legend hides the data.
MAX_LEGEND_ENTRIES = 12


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, path: str | os.PathLike) -> str:
    """Saves `figure` as PNG at `path` (creating parent folders) and releases it."""
    path = os.fspath(path)
    parent = os.path.dirname(path)
    if parent:
        os.makedirs(parent, exist_ok=True)
    figure.savefig(path, format="png")
    figure.clear()
    return path


def _grid_layout(figure: Figure, rows: int, columns: int, *, suptitle: bool) -> None:
    """Places a `rows x columns` grid of axes with fixed margins, in inches: room for
    tick labels, axis labels and titles of the usual size, without measuring them as
    `tight_layout` does (which draws every tick label, ~0.5 s a figure)."""
    width, height = figure.get_size_inches()
    left, right, bottom = 0.8, 0.2, 0.55
    top = 0.35 + (0.35 if suptitle else 0.0)  # axes title, figure title
    across, down = 0.85, 0.85  # y labels of the next column; x label + next title
    axes_width = (width - left - right - (columns - 1) * across) / columns
    axes_height = (height - top - bottom - (rows - 1) * down) / rows
    figure.subplots_adjust(
        left=left / width,
        right=1.0 - right / width,
        bottom=bottom / height,
        top=1.0 - top / height,
        wspace=across / axes_width,
        hspace=down / axes_height,
    )


def _check_names(names: Sequence[str] | None, count: int, default: str) -> list[str]:
    if names is None:
        return [f"{default}_{i + 1}" for i in range(count)]
    names = [str(name) for name in names]
    if len(names) != count:
        raise ValueError(f"expected {count} task names, got {len(names)}.")
    return names


def _colors(count: int) -> list:
    """Distinct colours for up to 10 series, a continuous colour map beyond."""
    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.95, count)]


def plot_task_accuracies(
    epoch_accuracy,
    *,
    task_boundaries: Sequence[int],
    path: str | os.PathLike,
    task_names: Sequence[str] | None = None,
    title: str | None = None,
) -> str:
    """Test accuracy of each task after every epoch, one line per task.

    Epoch `e` (0-based row of `epoch_accuracy`) is drawn at x = `e + 1`, the number of
    epochs trained; a task boundary `b` (the first epoch of a new task) is a dashed
    vertical line at x = `b`, i.e. through the last epoch of the previous task.

    # Arguments
        epoch_accuracy: array of shape `(E, T)`, accuracy (fraction in [0, 1]) of each of
            `T` tasks after each of `E` epochs; NaN leaves a gap (task not evaluated).
        task_boundaries: epoch indices in `[0, E]` where a new task starts.
        path: PNG file to write; parent folders are created.
        task_names: one name per column, default `task_1, task_2, ...`; a legend is drawn
            when `T <= 12`.
        title: figure title.

    # Returns
        `path`, as a string.

    # Raises
        ValueError: if `epoch_accuracy` is not 2-D with at least one row and column, has
            values outside [0, 1], or a boundary or the names do not fit its shape.
    """
    acc = np.asarray(epoch_accuracy, dtype=np.float64)
    if acc.ndim != 2 or 0 in acc.shape:
        raise ValueError(
            f"epoch_accuracy must have shape (epochs, tasks), got {acc.shape}."
        )
    num_epochs, num_tasks = acc.shape
    finite = acc[~np.isnan(acc)]
    if finite.size and (finite.min() < 0.0 or finite.max() > 1.0):
        raise ValueError("epoch_accuracy must hold fractions in [0, 1] (or NaN).")
    boundaries = [int(b) for b in task_boundaries]
    if any(not 0 <= b <= num_epochs for b in boundaries):
        raise ValueError(
            f"task_boundaries must lie in [0, {num_epochs}], got {boundaries}."
        )
    names = _check_names(task_names, num_tasks, "task")

    figure = _new_figure(8.0, 4.5)
    ax = figure.add_subplot()
    epochs = np.arange(1, num_epochs + 1)
    marker = "o" if num_epochs <= 30 else None
    for column, (name, color) in enumerate(zip(names, _colors(num_tasks))):
        ax.plot(
            epochs,
            100.0 * acc[:, column],
            marker=marker,
            markersize=3,
            color=color,
            label=name,
        )
    for boundary in boundaries:
        ax.axvline(boundary, color="grey", linestyle="--", linewidth=1)
    ax.set_xlim(0, num_epochs + 0.5)
    ax.set_ylim(0, 100)
    ax.set_xlabel("Epoch")
    ax.set_ylabel("Test accuracy (%)")
    ax.grid(alpha=0.3)
    if num_tasks <= MAX_LEGEND_ENTRIES:
        ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize="small")
    if title:
        ax.set_title(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_hidden_weight_histograms(
    weights_by_layer: Mapping[str, np.ndarray],
    *,
    path: str | os.PathLike,
    title: str | None = None,
    bins: int = 100,
) -> str:
    """Histograms of the hidden weights' magnitude `|Wh|`, one subplot per layer.

    Counts are log-scaled; a dashed line marks `|Wh| = 1` and each subplot title gives
    the fraction of weights with `|Wh| > 1`. Each histogram is one filled step patch
    (`Axes.stairs`), the count axis has no minor ticks and the layout is fixed rather
    than measured, so that a figure of millions of weights takes ~0.2 s: the runner
    draws one per task.

    # Arguments
        weights_by_layer: layer name -> array of latent weights (any shape).
        path: PNG file to write; parent folders are created.
        title: figure title.
        bins: number of histogram bins.

    # Returns
        `path`, as a string.

    # Raises
        ValueError: if there are no layers, a layer has no weights or non-finite ones,
            or `bins` is not a positive integer.
    """
    if not weights_by_layer:
        raise ValueError("weights_by_layer is empty: nothing to plot.")
    bins = check_positive_int(bins, "bins")
    magnitudes = {}
    for name, weights in weights_by_layer.items():
        weights = np.abs(np.asarray(weights, dtype=np.float64)).ravel()
        if weights.size == 0:
            raise ValueError(f"layer {name!r} has no weights.")
        if not np.isfinite(weights).all():
            raise ValueError(f"layer {name!r} has non-finite weights.")
        magnitudes[str(name)] = weights

    columns = min(len(magnitudes), 3)
    rows = -(-len(magnitudes) // columns)
    figure = _new_figure(4.0 * columns, 3.2 * rows)
    for index, (name, weights) in enumerate(magnitudes.items()):
        ax = figure.add_subplot(rows, columns, index + 1)
        counts, edges = np.histogram(weights, bins=int(bins))
        ax.stairs(counts, edges, fill=True, color="tab:blue")
        ax.set_yscale("log")
        ax.yaxis.set_minor_locator(NullLocator())  # ticks at powers of 10 suffice
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=1)
        ax.set_title(
            f"{name}: |Wh| > 1: {np.mean(weights > 1.0):.1%}", fontsize="medium"
        )
        ax.set_xlabel("|Wh|")
        ax.set_ylabel("count")
    if title:
        figure.suptitle(title)
    _grid_layout(figure, rows, columns, suptitle=bool(title))
    return _save(figure, path)


def plot_accuracy_comparison(
    final_accuracies: Mapping[str, Sequence[float]],
    *,
    path: str | os.PathLike,
    title: str | None = None,
    task_names: Sequence[str] | None = None,
) -> str:
    """Grouped bar chart of the final accuracy per task of several runs.

    # Arguments
        final_accuracies: run label -> accuracy (fraction in [0, 1]) on each task, the
            same number of tasks for every run, e.g. `{"m=1.35": [...], "m=0": [...]}`.
        path: PNG file to write; parent folders are created.
        title: figure title.
        task_names: one name per task, default `task_1, task_2, ...`.

    # Returns
        `path`, as a string.

    # Raises
        ValueError: if there are no runs, runs have different numbers of tasks or no
            tasks, an accuracy is outside [0, 1], or the names do not fit.
    """
    if not final_accuracies:
        raise ValueError("final_accuracies is empty: nothing to plot.")
    labels = [str(label) for label in final_accuracies]
    try:
        acc = np.array(
            [np.asarray(a, dtype=np.float64) for a in final_accuracies.values()]
        )
    except ValueError:
        raise ValueError(
            "every run must have the same number of task accuracies."
        ) from None
    if acc.ndim != 2 or acc.shape[1] == 0:
        raise ValueError(
            f"every run must have a flat, non-empty list of task accuracies, got shape "
            f"{acc.shape}."
        )
    if np.isnan(acc).any() or acc.min() < 0.0 or acc.max() > 1.0:
        raise ValueError("accuracies must be fractions in [0, 1].")
    num_runs, num_tasks = acc.shape
    names = _check_names(task_names, num_tasks, "task")

    figure = _new_figure(min(24.0, max(6.0, 1.0 + 0.25 * num_tasks * num_runs)), 4.5)
    ax = figure.add_subplot()
    width = 0.8 / num_runs
    positions = np.arange(num_tasks)
    for index, (label, color) in enumerate(zip(labels, _colors(num_runs))):
        offset = (index - (num_runs - 1) / 2) * width
        ax.bar(positions + offset, 100.0 * acc[index], width, label=label, color=color)
    ax.set_xticks(positions)
    rotate = num_tasks > 8
    ax.set_xticklabels(
        names, rotation=45 if rotate else 0, ha="right" if rotate else "center"
    )
    ax.set_ylim(0, 100)
    ax.set_ylabel("Test accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    if num_runs <= MAX_LEGEND_ENTRIES:
        ax.legend(loc="best", fontsize="small")
    if title:
        ax.set_title(title)
    figure.tight_layout()
    return _save(figure, path)


def plot_quadratic_landscape(
    *,
    hessian,
    optimum,
    trajectory,
    path: str | os.PathLike,
    title: str | None = None,
) -> str:
    """A 2-D quadratic binary problem: loss contours, binary points and trajectory.

    Draws the contours of `L(W) = ½ (W − W*)ᵀ H (W − W*)` over the plane, the four
    binary points `{−1, +1}²` (the best one filled), the unit box they span, the
    hidden-weight trajectory (arrows from step to step) and the real optimum `W*`.

    # Arguments
        hessian: `H`, shape `(2, 2)`, symmetric.
        optimum: `W*`, shape `(2,)`.
        trajectory: hidden weights at each step, shape `(T + 1, 2)`, `T >= 0`.
        path: PNG file to write; parent folders are created.
        title: figure title.

    # Returns
        `path`, as a string.

    # Raises
        ValueError: if the shapes are not those above or values are not finite.
    """
    hessian = np.asarray(hessian, dtype=np.float64)
    optimum = np.asarray(optimum, dtype=np.float64)
    trajectory = np.asarray(trajectory, dtype=np.float64)
    if (
        hessian.shape != (2, 2)
        or optimum.shape != (2,)
        or trajectory.ndim != 2
        or trajectory.shape[1:] != (2,)
        or len(trajectory) == 0
    ):
        raise ValueError(
            f"expected hessian (2, 2), optimum (2,) and trajectory (T + 1, 2), got "
            f"{hessian.shape}, {optimum.shape} and {trajectory.shape}."
        )
    if not all(np.isfinite(a).all() for a in (hessian, optimum, trajectory)):
        raise ValueError("hessian, optimum and trajectory must be finite.")

    corners = np.array([[-1.0, -1.0], [-1.0, 1.0], [1.0, -1.0], [1.0, 1.0]])
    diff = corners - optimum
    corner_loss = 0.5 * np.einsum("ni,ij,nj->n", diff, hessian, diff)
    extent = 1.15 * max(np.abs(trajectory).max(), np.abs(optimum).max(), 1.5)
    grid = np.linspace(-extent, extent, 200)
    gx, gy = np.meshgrid(grid, grid)
    points = np.stack([gx, gy], axis=-1) - optimum
    loss = 0.5 * np.einsum("...i,ij,...j->...", points, hessian, points)

    figure = _new_figure(6.0, 6.0)
    ax = figure.add_subplot()
    filled = ax.contourf(gx, gy, loss, levels=30, cmap="Oranges")
    figure.colorbar(filled, ax=ax, shrink=0.8, label="L(W)")
    box = np.array([[-1, -1], [-1, 1], [1, 1], [1, -1], [-1, -1]])
    ax.plot(box[:, 0], box[:, 1], color="black", linewidth=1)
    best = int(np.argmin(corner_loss))
    for index, (x, y) in enumerate(corners):
        ax.plot(
            x,
            y,
            "o",
            markersize=9,
            markeredgecolor="black",
            markerfacecolor="black" if index == best else "white",
        )
        ax.annotate(
            f"L={corner_loss[index]:.2f}",
            (x, y),
            textcoords="offset points",
            xytext=(6, 6),
            fontsize="small",
        )
    ax.plot(
        trajectory[:, 0],
        trajectory[:, 1],
        "o-",
        color="tab:blue",
        markersize=3,
        linewidth=1,
        label="hidden weights Wh",
    )
    for start, end in zip(trajectory[:-1], trajectory[1:]):
        ax.annotate(
            "",
            xy=end,
            xytext=start,
            arrowprops={"arrowstyle": "->", "color": "tab:blue", "linewidth": 1},
        )
    ax.plot(*trajectory[0], "s", color="tab:blue", markersize=7, label="Wh at start")
    ax.plot(*optimum, "*", color="tab:red", markersize=16, label="optimum W*")
    ax.plot([], [], "o", color="black", label="best binary point")
    ax.set_xlim(-extent, extent)
    ax.set_ylim(-extent, extent)
    ax.set_aspect("equal")
    ax.set_xlabel("Wh (component 1)")
    ax.set_ylabel("Wh (component 2)")
    ax.legend(loc="lower left", fontsize="small")
    if title:
        ax.set_title(title, fontsize="medium")
    figure.tight_layout()
    return _save(figure, path)


def plot_hidden_weight_divergence(
    magnitudes,
    *,
    importance,
    growth_rate,
    path: str | os.PathLike,
    title: str | None = None,
    max_lines: int = 500,
) -> str:
    """`|Wh|` over time coloured by importance (left), growth rate vs importance (right).

    # Arguments
        magnitudes: `|Wh|` at every step, shape `(T + 1, d)`.
        importance: importance of each component (e.g. the loss increase of flipping
            it), shape `(d,)`.
        growth_rate: growth rate of each `|Wh|`, shape `(d,)`.
        path: PNG file to write; parent folders are created.
        title: figure title.
        max_lines: at most this many trajectories are drawn (evenly spaced in
            importance order); the scatter shows every component.

    # Returns
        `path`, as a string.

    # Raises
        ValueError: if the shapes disagree or values are not finite.
    """
    from matplotlib.collections import LineCollection
    from matplotlib.colors import Normalize

    magnitudes = np.asarray(magnitudes, dtype=np.float64)
    importance = np.asarray(importance, dtype=np.float64)
    growth_rate = np.asarray(growth_rate, dtype=np.float64)
    if (
        magnitudes.ndim != 2
        or 0 in magnitudes.shape
        or importance.shape != (magnitudes.shape[1],)
        or growth_rate.shape != importance.shape
    ):
        raise ValueError(
            f"expected magnitudes (T + 1, d) and importance, growth_rate (d,), got "
            f"{magnitudes.shape}, {importance.shape} and {growth_rate.shape}."
        )
    if not all(np.isfinite(a).all() for a in (magnitudes, importance, growth_rate)):
        raise ValueError("magnitudes, importance and growth_rate must be finite.")
    max_lines = check_positive_int(max_lines, "max_lines")

    order = np.argsort(importance)
    shown = order[np.unique(np.linspace(0, len(order) - 1, max_lines).astype(int))]
    norm = Normalize(importance.min(), importance.max())
    steps = np.arange(magnitudes.shape[0])
    figure = _new_figure(11.0, 4.5)
    left, right = figure.add_subplot(1, 2, 1), figure.add_subplot(1, 2, 2)
    lines = LineCollection(
        [np.column_stack([steps, magnitudes[:, i]]) for i in shown],
        cmap="viridis",
        norm=norm,
        linewidths=0.6,
    )
    lines.set_array(importance[shown])
    left.add_collection(lines)
    left.set_xlim(0, steps[-1])
    left.set_ylim(0, 1.05 * magnitudes.max())
    left.set_xlabel("step")
    left.set_ylabel("|Wh|")
    left.set_title("hidden weights, coloured by importance", fontsize="medium")
    figure.colorbar(lines, ax=left, label="importance")
    right.scatter(importance, growth_rate, s=8, c=importance, cmap="viridis", norm=norm)
    right.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    right.set_xlabel("importance")
    right.set_ylabel("growth rate of |Wh| (per step)")
    right.set_title("divergence speed vs importance", fontsize="medium")
    right.grid(alpha=0.3)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    return _save(figure, path)


def _field(result, name: str) -> np.ndarray:
    if isinstance(result, Mapping):
        value = result.get(name)
    else:
        value = getattr(result, name, None)
    if value is None:
        raise ValueError(
            f"result has no {name!r}: pass a LossIncreaseResult or a dict."
        )
    return np.asarray(value, dtype=np.float64)


def plot_loss_increase_by_hidden_weight(
    result,
    *,
    path: str | os.PathLike,
    title: str | None = None,
    ylabel: str = "loss increase per flipped weight",
) -> str:
    """Loss increase caused by flipping binary weights, against their `|Wh|` (Fig. 5b-e).

    One point per bin of `|Wh|` at the mean `|Wh|` of its flipped weights, with the
    standard deviation over draws as error bar; bins without a value (NaN: too few
    weights) are left out.

    # Arguments
        result: a `experiments.importance.LossIncreaseResult`, or any object or mapping
            with arrays `mean_abs_wh`, `mean_increase` and `std_increase` (one value
            per bin; the result's `per_weight` arrays are plotted when it has them).
        path: PNG file to write; parent folders are created.
        title: figure title.
        ylabel: y-axis label.

    # Returns
        `path`, as a string.

    # Raises
        ValueError: if a field is missing, the arrays differ in length, or no bin has
            a value.
    """
    names = ("mean_abs_wh", "mean_increase", "std_increase")
    per_weight = ("mean_increase_per_weight", "std_increase_per_weight")
    has_per_weight = all(
        (name in result) if isinstance(result, Mapping) else hasattr(result, name)
        for name in per_weight
    )
    if has_per_weight:
        names = ("mean_abs_wh", *per_weight)
    x, y, err = (_field(result, name).ravel() for name in names)
    if not len(x) == len(y) == len(err):
        raise ValueError(
            f"mean_abs_wh, mean_increase and std_increase must have one value per bin, "
            f"got lengths {len(x)}, {len(y)} and {len(err)}."
        )
    valid = np.isfinite(x) & np.isfinite(y)
    if not valid.any():
        raise ValueError("no bin has a value to plot (all NaN).")

    figure = _new_figure(6.0, 4.5)
    ax = figure.add_subplot()
    ax.errorbar(
        x[valid],
        y[valid],
        yerr=np.nan_to_num(err[valid]),
        fmt="o",
        color="tab:blue",
        capsize=3,
    )
    ax.axhline(0.0, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel("|Wh| of the flipped weights")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title, fontsize="medium", pad=14)  # clear of the y offset text
    figure.tight_layout()
    return _save(figure, path)
