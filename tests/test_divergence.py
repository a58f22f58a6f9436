"""Tests for training/divergence.py: non-finite losses and weights stop `fit` before
the callbacks after the guard see the epoch; runaway losses and chance accuracies are
named."""

import math

import numpy as np
import pytest
import tensorflow as tf

from training.config import RunConfig
from training.divergence import (
    NonFiniteError,
    StopOnNonFinite,
    at_chance,
    chance_accuracy,
    divergence_warnings,
    loss_divergence,
    non_finite_variables,
)
from training.protocols import Task


def tiny_model() -> tf.keras.Model:
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential(
        [
            tf.keras.layers.Dense(4, input_shape=(3,), name="hidden"),
            tf.keras.layers.BatchNormalization(name="bn"),
            tf.keras.layers.Dense(2, name="out"),
        ]
    )
    model.compile(
        tf.keras.optimizers.legacy.Adam(0.01),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


class Recorder(tf.keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)


class Poison(tf.keras.callbacks.Callback):
    """Sets the BatchNorm moving variance to infinity after the last batch of `epoch`:
    the loss stays finite, a weight does not."""

    def __init__(self, epoch: int):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            variance = self.model.get_layer("bn").moving_variance
            variance.assign(tf.fill(variance.shape, math.inf))


def data(nan: bool = False):
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    if nan:
        x[5, 1] = np.nan
    return x, (x[:, 0] > 0).astype("int64")


def test_non_finite_variables_are_named():
    finite, nan = tf.Variable([1.0, 2.0], name="a"), tf.Variable([1.0, math.nan])
    count = tf.Variable(3, name="count")  # not a float: never non-finite
    assert non_finite_variables([finite, count]) == []
    assert non_finite_variables([finite, nan, count]) == [nan.name]


def test_a_nan_batch_loss_stops_fit_at_that_batch():
    model, recorder = tiny_model(), Recorder()
    x, y = data(nan=True)
    with pytest.raises(NonFiniteError, match=r"^loss nan at batch 1$"):
        model.fit(x, y, batch_size=8, epochs=2, verbose=0, shuffle=False,
                  callbacks=[StopOnNonFinite(), recorder])  # fmt: skip
    assert recorder.epochs == []


def test_a_non_finite_weight_stops_fit_before_later_callbacks_see_the_epoch():
    model, recorder = tiny_model(), Recorder()
    x, y = data()
    with pytest.raises(NonFiniteError, match=r"non-finite weights in \['bn/moving_var"):
        model.fit(x, y, batch_size=8, epochs=3, verbose=0,
                  callbacks=[Poison(epoch=1), StopOnNonFinite(), recorder])  # fmt: skip
    assert recorder.epochs == [0]  # epoch 1 never reached the recorder
    # A finite run goes through.
    model, recorder = tiny_model(), Recorder()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[StopOnNonFinite(), recorder])  # fmt: skip
    assert recorder.epochs == [0, 1]


def test_loss_divergence_against_the_first_epoch_or_a_uniform_guess():
    # A first epoch below a uniform guess's log(10) = 2.303 is the reference.
    assert loss_divergence(30.0, first_loss=0.5, num_classes=10) is None
    assert loss_divergence(51.0, first_loss=0.5, num_classes=10) == (
        "loss 51 is over 100 times the first epoch's (0.5)"
    )
    # A first epoch that diverged already is measured against a uniform guess.
    assert loss_divergence(374347.06, first_loss=374347.06, num_classes=10) == (
        "loss 374,347 is over 100 times that of a uniform guess (2.303)"
    )
    assert loss_divergence(2.0, first_loss=math.nan, num_classes=10) is None


def test_chance_is_the_most_frequent_label():
    labels = np.array([0, 1, 1, 1, 2, 3, 1, 0])
    assert chance_accuracy(labels) == 0.5
    assert chance_accuracy(np.array([], "int64")) == 0.0
    assert at_chance(0.54, 0.5) and at_chance(0.1, 0.5)
    assert not at_chance(0.55, 0.5)


def test_divergence_warnings_of_a_runs_rows():
    labels = np.array([0, 0, 0, 0, 1, 2, 3, 3])  # chance: always 0, 50 %
    images = np.zeros((8, 2, 2), "uint8")
    tasks = [Task(f"task_{i}", images, labels, images, labels) for i in (1, 2)]
    config = RunConfig(num_tasks=2, epochs=2, learning_rate=1e6)

    def row(index, task_epoch, loss, **accuracies):
        return {"task_index": index, "task": f"task_{index + 1}",
                "task_epoch": task_epoch, "loss": loss,
                **{f"acc/{k}": v for k, v in accuracies.items()}}  # fmt: skip

    healthy = [row(0, 1, 1.2), row(0, 2, 0.4, task_1=0.9), row(1, 1, 1.0),
               row(1, 2, 0.5, task_1=0.8, task_2=0.9)]  # fmt: skip
    assert (
        divergence_warnings(healthy, config=config, tasks=tasks, eval_tasks=tasks) == []
    )
    diverged = [row(0, 1, 0.9), row(0, 2, 95.0, task_1=0.52), row(1, 1, 3e5),
                row(1, 2, 2e5, task_1=0.9, task_2=0.2)]  # fmt: skip
    found = divergence_warnings(diverged, config=config, tasks=tasks, eval_tasks=tasks)
    assert found == [
        "task 1/2 (task_1), epoch 2/2: loss 95 is over 100 times the first epoch's "
        "(0.9): the run diverges; learning rate 1e+06 too large?",
        "task 1/2 (task_1) ends with task_1 no better than chance (52.00%; always "
        "answering its most frequent label: 50.00%); learning rate 1e+06 too large?",
        "task 2/2 (task_2) ends with task_2 no better than chance (20.00%; always "
        "answering its most frequent label: 50.00%); learning rate 1e+06 too large?",
    ]
    # At chance on the test set, yet fitting the training data: evaluation fails.
    stale = [row(0, 1, 0.5), {**row(0, 2, 0.05, task_1=0.1), "accuracy": 0.99}]
    (finding,) = divergence_warnings(
        stale, config=config, tasks=tasks, eval_tasks=tasks
    )
    assert finding.endswith(
        "yet it fits its training data (99.00%): BatchNorm moving statistics gone "
        "stale? (python benchmarks/bn_drift.py <run directory> measures them)"
    )
    # The findings of the first rows are the first findings.
    assert (
        divergence_warnings(diverged[:2], config=config, tasks=tasks, eval_tasks=tasks)
        == found[:2]
    )


def test_a_growing_baseline_penalty_is_not_divergence():
    # The rows of an EWC run (fig3ab quick, width 512): the penalty, part of the loss,
    # grows with every consolidated task while the task loss stays below 1.3.
    labels = np.array([0, 1, 2, 3])
    images = np.zeros((4, 2, 2), "uint8")
    tasks = [Task(f"task_{i}", images, labels, images, labels) for i in (1, 2, 3)]
    config = RunConfig(num_tasks=3, epochs=1, baseline="ewc")
    losses = [(0.3214, 0.0), (11.2590, 10.3802), (35.8914, 34.7469)]
    rows = [
        {
            "task_index": i,
            "task": f"task_{i + 1}",
            "task_epoch": 1,
            "loss": loss,
            "penalty": penalty,
            f"acc/task_{i + 1}": 0.9,
        }  # fmt: skip
        for i, (loss, penalty) in enumerate(losses)
    ]
    assert divergence_warnings(rows, config=config, tasks=tasks, eval_tasks=tasks) == []
    # The same loss without a penalty column diverges (over 100 times 0.3214).
    plain = [{k: v for k, v in row.items() if k != "penalty"} for row in rows]
    (finding,) = divergence_warnings(
        plain, config=config, tasks=tasks, eval_tasks=tasks
    )
    assert finding.startswith("task 3/3 (task_3), epoch 1/1: loss 35.8914 is over 100")
    # A task loss that runs away is still found, and named as the task loss.
    rows[2] = {**rows[2], "loss": 80.0, "penalty": 40.0}
    (finding,) = divergence_warnings(rows, config=config, tasks=tasks, eval_tasks=tasks)
    assert "task loss (without the penalty) 40 is over 100 times the first epoch's" in (
        finding
    )
    assert finding.endswith("learning rate 0.005 too large? (or ewc_lambda 5000)")
