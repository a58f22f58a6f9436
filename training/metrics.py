"""Continual-learning metrics computed from a task accuracy matrix.

`R` has shape `(T_trained, T_eval)`: `R[i, j]` is the test accuracy (a fraction in
[0, 1]) on task `j` after training on tasks `0..i`. Rows are the ends of tasks; columns
may include tasks not trained yet when `T_eval > T_trained`.

- average accuracy: mean of a row over the tasks seen so far;
- backward transfer (Lopez-Paz & Ranzato, 2017): how much learning later tasks changed
  the accuracy on earlier ones (negative: forgetting);
- forgetting (Chaudhry et al., 2018): per task, best accuracy reached before the last
  task minus the final accuracy.

!!! example
    ```python
    import numpy as np
    from training.metrics import backward_transfer, summarize

    R = np.array([[0.9, 0.1], [0.7, 0.8]])
    backward_transfer(R)  # 0.7 - 0.9 = -0.2
    summarize(R, task_names=["mnist", "fashion_mnist"])["forgetting"]  # {"mnist": 0.2}
    ```
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = [
    "average_accuracy",
    "average_accuracy_curve",
    "backward_transfer",
    "forgetting",
    "summarize",
]


def _check_matrix(R) -> np.ndarray:
    """`R` as a float64 array, or a one-line `ValueError` saying what is wrong."""
    try:
        R = np.asarray(R, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(
            "accuracy matrix must be a rectangular array of numbers."
        ) from None
    if R.ndim != 2:
        raise ValueError(
            f"accuracy matrix must be 2-D (tasks trained, tasks evaluated), got shape {R.shape}."
        )
    if R.shape[0] == 0:
        raise ValueError("accuracy matrix has no rows: train at least one task.")
    if R.shape[1] < R.shape[0]:
        raise ValueError(
            f"accuracy matrix must evaluate every trained task: shape {R.shape} has fewer "
            f"columns than rows."
        )
    if np.isnan(R).any():
        raise ValueError("accuracy matrix contains NaN.")
    if R.min() < 0.0 or R.max() > 1.0:
        raise ValueError(
            f"accuracies must be fractions in [0, 1], got values in [{R.min():g}, {R.max():g}]."
        )
    return R


def average_accuracy(R, *, after_task: int = -1, seen_only: bool = True) -> float:
    """Mean test accuracy after training task `after_task`.

    # Arguments
        R: accuracy matrix, shape `(T_trained, T_eval)`.
        after_task: row of `R` (negative counts from the end: -1 is the last task).
        seen_only: average over tasks `0..after_task` only; if `False`, over all
            evaluated tasks (including tasks not trained yet).

    # Returns
        The average accuracy, a Python float.

    # Raises
        ValueError: if `R` is not a valid accuracy matrix or `after_task` is out of range.
    """
    R = _check_matrix(R)
    num_trained = R.shape[0]
    if not -num_trained <= after_task < num_trained:
        raise ValueError(
            f"after_task={after_task} is out of range for {num_trained} trained tasks."
        )
    row = after_task % num_trained
    return float(R[row, : row + 1].mean() if seen_only else R[row].mean())


def average_accuracy_curve(R) -> np.ndarray:
    """Average accuracy over the tasks seen so far, after each task.

    # Arguments
        R: accuracy matrix, shape `(T_trained, T_eval)`.

    # Returns
        A float64 array of shape `(T_trained,)`: entry `i` is the mean of `R[i, :i + 1]`.

    # Raises
        ValueError: if `R` is not a valid accuracy matrix.
    """
    R = _check_matrix(R)
    return np.array([R[i, : i + 1].mean() for i in range(R.shape[0])])


def backward_transfer(R) -> float:
    """Backward transfer (BWT) of Lopez-Paz & Ranzato (2017).

    `BWT = mean over i < T-1 of R[T-1, i] - R[i, i]`, with `T` the number of trained
    tasks. Negative values measure forgetting.

    # Arguments
        R: accuracy matrix, shape `(T_trained, T_eval)`.

    # Returns
        BWT as a Python float; `0.0` when only one task was trained.

    # Raises
        ValueError: if `R` is not a valid accuracy matrix.
    """
    R = _check_matrix(R)
    last = R.shape[0] - 1
    if last == 0:
        return 0.0
    return float(np.mean(R[last, :last] - np.diag(R)[:last]))


def forgetting(R) -> np.ndarray:
    """Forgetting of each earlier task (Chaudhry et al., 2018).

    For task `i < T-1`: the best accuracy on it at the end of tasks `i..T-2`, minus its
    accuracy after the last task.

    # Arguments
        R: accuracy matrix, shape `(T_trained, T_eval)`.

    # Returns
        A float64 array of shape `(T_trained - 1,)`; empty for a single task.

    # Raises
        ValueError: if `R` is not a valid accuracy matrix.
    """
    R = _check_matrix(R)
    last = R.shape[0] - 1
    return np.array(
        [R[i:last, i].max() - R[last, i] for i in range(last)], dtype=np.float64
    )


def summarize(R, *, task_names: Sequence[str] | None = None) -> dict:
    """All metrics of `R` as a JSON-serialisable dict (plain floats, lists and dicts).

    # Arguments
        R: accuracy matrix, shape `(T_trained, T_eval)`.
        task_names: one name per evaluated task (column); default `task_1, task_2, ...`.

    # Returns
        A dict with `num_tasks_trained`, `num_tasks_evaluated`, `final_average_accuracy`
        (over seen tasks), `average_accuracy_curve`, `backward_transfer`, `forgetting`
        (name -> value, tasks before the last), `average_forgetting` (0.0 for one task),
        `final_accuracy` (name -> accuracy after the last task, every evaluated task),
        `task_names` and `accuracy_matrix` (nested lists).

    # Raises
        ValueError: if `R` is not a valid accuracy matrix or `task_names` does not have
            one unique name per column.
    """
    R = _check_matrix(R)
    num_trained, num_eval = R.shape
    if task_names is None:
        task_names = [f"task_{j + 1}" for j in range(num_eval)]
    task_names = [str(name) for name in task_names]
    if len(task_names) != num_eval:
        raise ValueError(
            f"expected {num_eval} task names (one per column), got {len(task_names)}."
        )
    if len(set(task_names)) != num_eval:
        raise ValueError(f"task names must be unique, got {task_names}.")
    forgot = forgetting(R)
    return {
        "num_tasks_trained": num_trained,
        "num_tasks_evaluated": num_eval,
        "final_average_accuracy": average_accuracy(R),
        "average_accuracy_curve": [float(a) for a in average_accuracy_curve(R)],
        "backward_transfer": backward_transfer(R),
        "forgetting": {name: float(f) for name, f in zip(task_names, forgot)},
        "average_forgetting": float(forgot.mean()) if forgot.size else 0.0,
        "final_accuracy": {name: float(a) for name, a in zip(task_names, R[-1])},
        "task_names": task_names,
        "accuracy_matrix": R.tolist(),
    }
