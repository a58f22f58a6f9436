"""Per-task BatchNorm state: save it, restore it, re-estimate it, and know when it applies.

With `RunConfig(batch_norm="task")` each task keeps its own BatchNorm state (gamma,
beta, moving mean and variance of every BatchNormalization layer): it is saved at the
end of the task, and an earlier task is evaluated with its own state instead of the live
one. Its moving statistics are first re-estimated under the current weights from
`recalibrate_bn` batches of its training data (`recalibrate`): statistics frozen at the
end of a task go stale as later tasks flip weights, while the paper's reference code,
which normalizes with batch statistics, adapts to them. `uses_task_statistics` is the
one rule saying when a task's own state applies; the runner, the analyses
(`experiments.importance`) and the benchmarks all follow it.

!!! example
    ```python
    from training import batchnorm

    states = batchnorm.TaskBatchNorm(model)
    states.save(0)                      # at the end of task 0
    ...                                 # learn task 1
    with states.evaluating(0, batches=task_0_batches.take(20)):
        model.evaluate(task_0_test)     # task 0 with its own, re-estimated statistics
    ```
"""

from __future__ import annotations

import contextlib
from collections.abc import Container, Iterator, Mapping, Sequence

import numpy as np
import tensorflow as tf

from training.config import RunConfig
from training.protocols import Task

__all__ = [
    "TaskBatchNorm",
    "batch_norm_layers",
    "get_state",
    "recalibrate",
    "recalibration_batches",
    "set_state",
    "statistics_drift",
    "uses_task_statistics",
]

# The BatchNorm arrays of a model, layer by layer: gamma, beta, moving mean, variance.
State = list[np.ndarray]


def batch_norm_layers(
    model: tf.keras.Model,
) -> list[tf.keras.layers.BatchNormalization]:
    """The BatchNormalization layers of `model`, in order."""
    return [
        layer
        for layer in model.layers
        if isinstance(layer, tf.keras.layers.BatchNormalization)
    ]


def get_state(model: tf.keras.Model) -> State:
    """A copy of every BatchNorm array of `model` (gamma, beta, moving mean and
    variance), layer by layer."""
    return [w for layer in batch_norm_layers(model) for w in layer.get_weights()]


def set_state(model: tf.keras.Model, state: Sequence[np.ndarray]) -> None:
    """Sets the BatchNorm arrays of `model` to `state` (from `get_state`).

    # Raises
        ValueError: if `state` does not hold the arrays of `model`'s BatchNorm layers.
    """
    layers = batch_norm_layers(model)
    expected = sum(len(layer.weights) for layer in layers)
    if len(state) != expected:
        raise ValueError(
            f"state must hold {expected} BatchNorm arrays for {model.name}, got "
            f"{len(state)}."
        )
    start = 0
    for layer in layers:
        count = len(layer.weights)
        layer.set_weights(state[start : start + count])
        start += count


def recalibrate(model: tf.keras.Model, batches: tf.data.Dataset) -> None:
    """Sets the BatchNorm moving statistics of `model` to the mean of the batch
    statistics of `batches` under the current weights.

    Each batch goes through the model in training mode with every BatchNorm momentum
    set to `k / (k + 1)` for the `k`-th batch (a running mean) and dropout off; gamma,
    beta, the weights, the momenta and the dropout rates are unchanged afterwards.

    # Arguments
        model: a model with BatchNormalization layers.
        batches: `(images, labels)` batches, e.g. `task.train_data(...).take(20)`.
    """
    layers = batch_norm_layers(model)
    dropouts = [
        layer for layer in model.layers if isinstance(layer, tf.keras.layers.Dropout)
    ]
    momenta = [layer.momentum for layer in layers]
    rates = [layer.rate for layer in dropouts]
    for layer in dropouts:
        layer.rate = 0.0
    try:
        for k, (images, _) in enumerate(batches):
            for layer in layers:
                layer.momentum = k / (k + 1)  # running mean of the batch statistics
            model(images, training=True)
    finally:
        for layer, momentum in zip(layers, momenta):
            layer.momentum = momentum
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate


def statistics_drift(
    model: tf.keras.Model, images: tf.data.Dataset
) -> dict[str, dict[str, float]]:
    """How far each BatchNorm layer's moving statistics are from the statistics of its
    inputs on `images` under the model's current weights.

    The model runs in inference mode (every BatchNorm normalizes with its moving
    statistics, as at evaluation); for each BatchNorm layer, each unit's (channel's)
    input mean and variance over all of `images` (and positions, for convolutions) are
    compared with its moving mean and variance. Moving statistics describe the weights
    of the last training batches: when training flips many binary weights at every step
    they describe other weights than the evaluated ones, and evaluation suffers
    (`recalibrate` re-estimates them).

    # Arguments
        model: a model with BatchNormalization layers.
        images: `(images, labels)` batches, e.g. a task's test data.

    # Returns
        Layer name -> `units`; `max_mean_shift`, the largest `|mean - moving mean| /
        std` over the units (std of the data); `shifted_fraction`, the fraction of units
        where that exceeds 1; `variance_ratio_min` and `variance_ratio_max` of moving
        variance / data variance.

    # Raises
        ValueError: if `model` has no BatchNormalization layer.
    """
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError(f"{model.name} has no BatchNormalization layer.")
    probe = tf.keras.Model(model.inputs, [layer.input for layer in layers])
    sums: list[np.ndarray] = []
    squares: list[np.ndarray] = []
    count = np.zeros(len(layers))
    for batch, _ in images:
        outputs = probe(batch, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        for i, out in enumerate(outputs):
            x = tf.cast(out, tf.float64).numpy().reshape(-1, out.shape[-1])
            if len(sums) <= i:
                sums.append(np.zeros(x.shape[1]))
                squares.append(np.zeros(x.shape[1]))
            sums[i] += x.sum(axis=0)
            squares[i] += np.square(x).sum(axis=0)
            count[i] += x.shape[0]
    drift = {}
    for i, layer in enumerate(layers):
        mean = sums[i] / count[i]
        variance = np.maximum(squares[i] / count[i] - np.square(mean), 0.0)
        moving_mean = layer.moving_mean.numpy().astype(np.float64)
        moving_variance = layer.moving_variance.numpy().astype(np.float64)
        shift = np.abs(mean - moving_mean) / np.sqrt(variance + layer.epsilon)
        ratio = moving_variance / (variance + layer.epsilon)
        drift[layer.name] = {
            "units": int(mean.size),
            "max_mean_shift": float(shift.max()),
            "shifted_fraction": float(np.mean(shift > 1.0)),
            "variance_ratio_min": float(ratio.min()),
            "variance_ratio_max": float(ratio.max()),
        }
    return drift


def uses_task_statistics(
    config: RunConfig, task: int, *, current_task: int, saved: Container[int]
) -> bool:
    """Whether task `task` is evaluated with its own saved BatchNorm state.

    Only with per-task BatchNorm (`batch_norm="task"`) on distinct tasks (not a stream,
    whose subsets share one test set, nor joint training), for a task finished before
    the one being learned (`current_task`, evaluated with the live state: the state its
    model is saved with), and whose state was saved.

    # Arguments
        config: the run's configuration.
        task: index of the task to evaluate.
        current_task: index of the task being learned (or learned last).
        saved: the task indices with a saved state.

    # Returns
        `True` if `task`'s own state applies.
    """
    return (
        config.batch_norm == "task"
        and config.protocol != "stream"
        and not config.joint
        and task < current_task
        and task in saved
    )


def recalibration_batches(
    config: RunConfig, task: Task, index: int, *, count: int | None = None
) -> tf.data.Dataset | None:
    """The batches that re-estimate task `index`'s statistics before it is evaluated:
    the first `count` (default `config.recalibrate_bn`) training batches of `task`,
    shuffled with seed `index`; `None` for 0 (the saved statistics as they are)."""
    count = config.recalibrate_bn if count is None else count
    if not count:
        return None
    return task.train_data(batch_size=config.batch_size, seed=index).take(count)


class TaskBatchNorm:
    """The saved BatchNorm state of each task of a model.

    # Arguments
        model: the model whose BatchNorm layers are saved and restored.
        states: states saved before (e.g. by an interrupted run), by task index.
    """

    def __init__(
        self,
        model: tf.keras.Model,
        states: Mapping[int, Sequence[np.ndarray]] | None = None,
    ):
        self.model = model
        self.states: dict[int, State] = {
            int(task): list(state) for task, state in (states or {}).items()
        }

    def save(self, task: int) -> None:
        """Saves the model's current BatchNorm state as task `task`'s."""
        self.states[task] = get_state(self.model)

    def restore(self, task: int, *, batches: tf.data.Dataset | None = None) -> None:
        """Gives the model task `task`'s saved state, its moving statistics then
        re-estimated from `batches` if given (`recalibrate`).

        # Raises
            KeyError: if no state of `task` was saved.
        """
        set_state(self.model, self.states[task])
        if batches is not None:
            recalibrate(self.model, batches)

    @contextlib.contextmanager
    def evaluating(
        self, task: int, *, batches: tf.data.Dataset | None = None
    ) -> Iterator[None]:
        """Within the block, the model holds task `task`'s state (`restore`); the live
        state is put back at its end, even after an error."""
        live = get_state(self.model)
        try:
            self.restore(task, batches=batches)
            yield
        finally:
            set_state(self.model, live)
