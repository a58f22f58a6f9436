"""Divergence: non-finite values stop a run; runaway losses and chance accuracies warn.

A learning rate far too large sends a binarized network's hidden weights to infinity:
the loss turns NaN and nothing learned afterwards means anything. `StopOnNonFinite`
stops `model.fit` at the first non-finite batch loss, and at the end of each epoch
checks the epoch's loss and every variable of the model and its optimizer, before the
callbacks after it record the epoch; it raises `NonFiniteError`. A run that stays finite
can still diverge: `loss_divergence` says when a loss has grown by two orders of
magnitude over a reference, and `at_chance` when an accuracy is no better than always
answering the most frequent label (`chance_accuracy`); `divergence_warnings` applies
both to the metric rows of a run (`training.runner`).

!!! example
    ```python
    from training.divergence import NonFiniteError, StopOnNonFinite

    try:
        model.fit(train, epochs=5, callbacks=[StopOnNonFinite(), *callbacks])
    except NonFiniteError as error:
        print(f"diverged: {error}")  # e.g. "loss nan at batch 2"
    ```
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from training.config import RunConfig
from training.protocols import Task

__all__ = [
    "CHANCE_MARGIN",
    "LOSS_GROWTH",
    "NonFiniteError",
    "StopOnNonFinite",
    "at_chance",
    "chance_accuracy",
    "divergence_warnings",
    "epoch_name",
    "likely_cause",
    "loss_divergence",
    "non_finite_variables",
]

# A loss this many times its reference (the first epoch's, or a uniform guess's) means
# the run diverges: two orders of magnitude.
LOSS_GROWTH = 100.0
# An accuracy less than this above the accuracy of a constant answer is at chance.
CHANCE_MARGIN = 0.05


class NonFiniteError(ValueError):
    """Training produced a NaN or infinite loss or weight."""


def non_finite_variables(variables: Iterable[tf.Variable]) -> list[str]:
    """The names of the variables that hold a NaN or an infinity, in order."""
    names = []
    for variable in variables:
        value = tf.convert_to_tensor(variable)
        if value.dtype.is_floating and not bool(
            tf.reduce_all(tf.math.is_finite(value))
        ):
            names.append(variable.name)
    return names


class StopOnNonFinite(tf.keras.callbacks.Callback):
    """Raises `NonFiniteError` at the first non-finite loss or weight.

    After every batch it checks the batch's loss, as `tf.keras.callbacks.TerminateOnNaN`
    does; at the end of every epoch the epoch's loss and every variable of the model and
    of its optimizer (moments included). Raising stops `fit` at once: put it first in
    the callback list, so that the callbacks after it never see a non-finite epoch.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteError(f"loss {float(loss)} at batch {batch + 1}")

    def on_epoch_end(self, epoch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteError(f"epoch loss {float(loss)}")
        optimizer = self.model.optimizer
        variables = [*self.model.weights, *(optimizer.variables() if optimizer else [])]
        bad = non_finite_variables(variables)
        if bad:
            raise NonFiniteError(
                f"non-finite weights in {bad[:3]}"
                + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            )


def chance_accuracy(labels: np.ndarray) -> float:
    """The accuracy of always answering the most frequent of `labels`."""
    labels = np.asarray(labels).ravel()
    if not labels.size:
        return 0.0
    return float(np.bincount(labels.astype(np.int64)).max() / labels.size)


def at_chance(accuracy: float, chance: float) -> bool:
    """Whether `accuracy` is within `CHANCE_MARGIN` of `chance` (or below it)."""
    return accuracy < chance + CHANCE_MARGIN


def loss_divergence(
    loss: float, *, first_loss: float, num_classes: int, name: str = "loss"
) -> str | None:
    """Why `loss` diverges, or `None`.

    The reference is the smaller of the first epoch's loss and the cross-entropy of a
    uniform guess over `num_classes` (`log(num_classes)`): a loss `LOSS_GROWTH` times
    larger diverges, also when the first epoch already did.

    # Arguments
        loss: an epoch's training loss.
        first_loss: the loss of the run's first epoch.
        num_classes: number of classes of the model.
        name: what the phrase calls the loss.

    # Returns
        A phrase such as `"loss 374,347 is over 100 times that of a uniform guess
        (2.303)"`, or `None`.
    """
    uniform = math.log(max(num_classes, 2))
    if math.isfinite(first_loss) and first_loss < uniform:
        reference, what = first_loss, "the first epoch's"
    else:
        reference, what = uniform, "that of a uniform guess"
    if not loss > LOSS_GROWTH * reference:
        return None
    return f"{name} {loss:,.6g} is over {LOSS_GROWTH:g} times {what} ({reference:.4g})"


def epoch_name(
    task_index: int, task: str, num_tasks: int, task_epoch: int, epochs: int
) -> str:
    """`"task 2/5 (task_2), epoch 3/20"` for `task_index=1, task_epoch=2` (0-based)."""
    return (
        f"task {task_index + 1}/{num_tasks} ({task}), epoch {task_epoch + 1}/{epochs}"
    )


def likely_cause(config: RunConfig) -> str:
    """`"learning rate 0.5 too large?"`, with the baseline's strength if any."""
    strength = {"ewc": "ewc_lambda", "ewc_random": "ewc_lambda", "si": "si_c"}.get(
        config.baseline
    )
    return f"learning rate {config.learning_rate:g} too large?" + (
        f" (or {strength} {getattr(config, strength):g})" if strength else ""
    )


def _penalty(row: Mapping) -> float:
    """The row's baseline penalty, 0 where it has none (or an empty or NaN one)."""
    try:
        penalty = float(row.get("penalty") or 0.0)
    except (TypeError, ValueError):
        return 0.0
    return penalty if math.isfinite(penalty) else 0.0


def _task_loss(row: Mapping) -> float:
    """The row's loss without its baseline penalty."""
    return float(row["loss"]) - _penalty(row)


def divergence_warnings(
    rows: Sequence[Mapping], *, config: RunConfig, tasks: Sequence[Task],
    eval_tasks: Sequence[Task],
) -> list[str]:  # fmt: skip
    """Why a run diverges, judged from its metric rows (`metrics.csv`).

    The first epoch whose loss diverges (`loss_divergence`), and every task that ends
    with a task it learned no better than chance (`at_chance`): the task itself, each
    task of a joint run, the test set of a stream.

    # Arguments
        rows: the run's metric rows so far, in order (`loss`, `task_index`,
            `task_epoch`, `acc/<task>`, ...).
        config: the run's configuration.
        tasks, eval_tasks: as `training.assembly.build_tasks(config)`.

    # Returns
        One line per finding, in the order of the rows; the findings of a prefix of
        `rows` are a prefix of these.
    """
    num_classes = int(max(t.y_test.max() for t in eval_tasks)) + 1
    found: list[str] = []
    first_loss = _task_loss(rows[0]) if rows else math.nan
    loss_diverged = False
    for row in rows:
        index, task_epoch = row["task_index"], row["task_epoch"]
        why = loss_divergence(
            _task_loss(row),
            first_loss=first_loss,
            num_classes=num_classes,
            name="task loss (without the penalty)" if _penalty(row) else "loss",
        )
        if why and not loss_diverged:
            loss_diverged = True
            where = epoch_name(
                index, row["task"], len(tasks), task_epoch - 1, config.epochs
            )
            found.append(f"{where}: {why}: the run diverges; {likely_cause(config)}")
        if task_epoch != config.epochs:
            continue
        if config.joint:
            learned = eval_tasks
        elif config.protocol == "stream":
            learned = eval_tasks[:1]
        else:
            learned = eval_tasks[index : index + 1]
        for task in learned:
            accuracy, chance = row.get(f"acc/{task.name}"), chance_accuracy(task.y_test)
            if accuracy is None or not at_chance(accuracy, chance):
                continue
            fitted = row.get("accuracy")  # the epoch's training accuracy
            if loss_diverged:
                cause = likely_cause(config)
            elif fitted is not None and not at_chance(fitted, chance):
                # It learned its training data: evaluation, not learning, fails.
                cause = (
                    f"yet it fits its training data ({100 * fitted:.2f}%): BatchNorm "
                    "moving statistics gone stale? (python benchmarks/bn_drift.py "
                    "<run directory> measures them)"
                )
            else:
                cause = (
                    f"learning rate {config.learning_rate:g} too small or too large, "
                    "or too few epochs?"
                )
            found.append(
                f"task {index + 1}/{len(tasks)} ({row['task']}) ends with {task.name} "
                f"no better than chance ({100 * accuracy:.2f}%; always answering its "
                f"most frequent label: {100 * chance:.2f}%); {cause}"
            )
    return found
