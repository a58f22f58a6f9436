"""What a run is made of: its tasks, its model and its optimizer, built from a
`RunConfig`, and a run directory's model rebuilt from its last checkpoint.

The runner (`training.runner.run`) assembles a run from these; the analyses
(`experiments.importance`), packaging (`training.packaging`) and the tuner
(`tuning`) use the same functions, so that they see exactly the model a run trained.

!!! example
    ```python
    from training.assembly import restore_run

    restored = restore_run("runs/pmnist-m1.35")  # its model at the last epoch
    restored.model.evaluate(restored.eval_tasks[0].test_data())
    ```
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from training.config import RunConfig
from training.data import ImageDataset, load_dataset
from training.optimizers import MetaplasticAdam, layer_name
from training.protocols import (
    Task,
    dataset_sequence,
    joint_task,
    permuted_tasks,
    stream_subsets,
)
from training.rundir import RunDirectory
from zoo import registry
from zoo.weights import load_weights

__all__ = [
    "RestoredRun",
    "build_model",
    "build_tasks",
    "check_batch_size",
    "check_meta_layers",
    "load_initial_weights",
    "make_optimizer",
    "model_shape",
    "optimizer_steps",
    "read_model_weights",
    "restore_run",
]


def _hold_out_validation(
    data: ImageDataset, fraction: float, seed: int
) -> ImageDataset:
    """`data` with a seeded random `fraction` of its training images as the test split."""
    count = len(data.y_train)
    held_out = int(round(fraction * count))
    if not 1 <= held_out < count:
        raise ValueError(
            f"validation_split {fraction} of {count} training images of {data.name} "
            f"leaves no validation or no training images."
        )
    order = np.random.default_rng(seed).permutation(count)
    validation, train = np.sort(order[:held_out]), np.sort(order[held_out:])
    return dataclasses.replace(
        data,
        x_train=data.x_train[train],
        y_train=data.y_train[train],
        x_test=data.x_train[validation],
        y_test=data.y_train[validation],
    )


def build_tasks(config: RunConfig) -> tuple[list[Task], list[Task]]:
    """The tasks to train on, in order, and the tasks to evaluate after each epoch.

    With `config.validation_split > 0` every task is evaluated on images held out from
    its dataset's training split, never on the test split.

    # Arguments
        config: the run's configuration.

    # Returns
        `(tasks, eval_tasks)`.

    # Raises
        ValueError: if a dataset cannot be loaded (`DataError`) or split.
    """
    data = [load_dataset(name, data_dir=config.data_dir) for name in config.datasets]
    if config.validation_split > 0:
        data = [
            _hold_out_validation(d, config.validation_split, config.seed) for d in data
        ]
    if config.protocol == "permuted":
        tasks = permuted_tasks(data[0], num_tasks=config.num_tasks, seed=config.seed)
        eval_tasks = tasks
    elif config.protocol == "sequence":
        tasks = eval_tasks = dataset_sequence(data)
    else:
        tasks = stream_subsets(
            data[0],
            num_subsets=config.num_tasks,
            seed=config.seed,
            split=config.stream_split,
        )
        d = data[0]
        eval_tasks = [Task("test", d.x_train[:0], d.y_train[:0], d.x_test, d.y_test)]
    if config.joint:
        tasks = [joint_task(tasks)]
    return tasks, eval_tasks


def model_shape(eval_tasks: list[Task]) -> tuple[tuple[int, ...], int]:
    """The input shape and number of classes of a model for `eval_tasks`.

    # Arguments
        eval_tasks: the tasks a run evaluates (`build_tasks(config)[1]`).

    # Returns
        `(input_shape, num_classes)`: the shape of one image and the number of logits
        (the largest test label + 1).
    """
    input_shape = eval_tasks[0].x_test.shape[1:]
    num_classes = int(max(t.y_test.max() for t in eval_tasks)) + 1
    return input_shape, num_classes


def build_model(
    config: RunConfig,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    synchronized_bn: bool = False,
) -> tf.keras.Model:
    """The run's zoo model with its initial weights (seeded by `config.seed`).

    # Arguments
        config: the run's configuration (`model`, `hidden_units`, `precision`,
            `batch_norm_affine`, `seed`).
        input_shape: shape of one image.
        num_classes: number of output logits.
        synchronized_bn: BatchNorm statistics over the global batch of a
            `tf.distribute` strategy, as on one device (build it in the strategy's
            scope).

    # Returns
        A built `tf.keras.Model` returning logits.
    """
    tf.keras.utils.set_random_seed(config.seed)
    spec = registry.get_model(config.model)
    kwargs = {"hidden_units": config.hidden_units} if spec.takes("hidden_units") else {}
    if spec.takes("precision"):
        kwargs["precision"] = config.precision
    if spec.takes("batch_norm_affine"):
        kwargs["batch_norm_affine"] = config.batch_norm_affine
    model = spec.factory(input_shape=input_shape, num_classes=num_classes, **kwargs)
    if not synchronized_bn:
        return model

    def clone(layer):
        layer_config = layer.get_config()
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer_config["synchronized"] = True
        return layer.__class__.from_config(layer_config)

    synced = tf.keras.models.clone_model(model, clone_function=clone)
    synced.set_weights(model.get_weights())
    return synced


def make_optimizer(
    config: RunConfig, *, decay_steps: int | None = None
) -> MetaplasticAdam:
    """The optimizer of a run: `MetaplasticAdam` with the run's learning rate, m and
    weight decay, on the binary kernels, or on the float kernels of a float model such
    as `mlp_float` (paper, Fig. 2f).

    # Arguments
        config: the run's configuration.
        decay_steps: the optimizer's lifetime in steps, over which
            `lr_schedule="cosine"` decays the learning rate to 0 (`optimizer_steps`).

    # Returns
        A `MetaplasticAdam`.

    # Raises
        ValueError: if `config.lr_schedule` is `"cosine"` without `decay_steps`.
    """
    binary = registry.get_model(config.model).binary
    learning_rate = config.learning_rate
    if config.lr_schedule == "cosine":
        if not isinstance(decay_steps, int) or decay_steps < 1:
            raise ValueError(
                f"lr_schedule 'cosine' needs the optimizer's steps (decay_steps >= 1), "
                f"got {decay_steps!r}."
            )
        learning_rate = tf.keras.optimizers.schedules.CosineDecay(
            config.learning_rate, decay_steps
        )
    return MetaplasticAdam(
        learning_rate,
        meta=config.meta,
        weight_decay=config.weight_decay,
        metaplastic_variables="binary" if binary else "kernels",
    )


def optimizer_steps(config: RunConfig, tasks: list[Task], task_index: int) -> int:
    """The training steps of the optimizer that starts at task `task_index`: that
    task's epochs with `optimizer_per_task`, else every remaining task's.

    # Arguments
        config: the run's configuration (batch size, epochs, `optimizer_per_task`).
        tasks: the tasks the run trains on.
        task_index: the task the optimizer starts with.

    # Returns
        A number of steps (batches, the last one of an epoch possibly short).
    """
    lifetime = tasks[task_index : task_index + 1]
    if not config.optimizer_per_task:
        lifetime = tasks[task_index:]
    return sum(
        config.epochs * math.ceil(task.num_train / config.batch_size)
        for task in lifetime
    )


def check_batch_size(config: RunConfig, tasks: list[Task]) -> None:
    """Refuses a batch larger than a task's training set (one short step per epoch).

    # Arguments
        config: the run's configuration.
        tasks: the tasks it trains on.

    # Raises
        ValueError: naming the batch size and the smallest task's training images.
    """
    smallest = min(tasks, key=lambda t: t.num_train)
    if config.batch_size > smallest.num_train:
        raise ValueError(
            f"batch_size {config.batch_size} is larger than the "
            f"{smallest.num_train} training images of task {smallest.name}."
        )


def check_meta_layers(config: RunConfig, model: tf.keras.Model) -> None:
    """Refuses a per-layer `meta` mapping naming layers without metaplastic kernels,
    before training rather than at its first step.

    # Arguments
        config: the run's configuration; a float `meta` is always accepted.
        model: the run's built model.

    # Raises
        ValueError: listing the unknown names and the model's metaplastic layers.
    """
    if not isinstance(config.meta, dict):
        return
    optimizer = make_optimizer(config)
    layers = sorted(
        {
            layer_name(v).rpartition("/")[2]
            for v in model.trainable_variables
            if optimizer.is_metaplastic(v)
        }
    )
    unknown = sorted(set(config.meta) - set(layers))
    if unknown:
        kind = "binary" if registry.get_model(config.model).binary else "kernel"
        raise ValueError(
            f"meta names no {kind} layer of {config.model}: {unknown}; its {kind} "
            f"layers are {layers}."
        )


def read_model_weights(checkpoint: str, model: tf.keras.Model, build: Callable) -> None:
    """Copies a run checkpoint's model weights into `model`.

    The checkpoint is read into a scratch model from `build()`: read into `model`
    directly, its optimizer slots would be restored into whatever optimizer `model`
    is compiled with next.

    # Arguments
        checkpoint: a checkpoint prefix written by the runner.
        model: the model to copy the weights into.
        build: returns a new model of the same architecture.

    # Raises
        ValueError: if the checkpoint does not fit the model (one line).
    """
    scratch = build()
    status = tf.train.Checkpoint(model=scratch).read(checkpoint).expect_partial()
    try:
        status.assert_existing_objects_matched()
        model.set_weights(scratch.get_weights())
    except (AssertionError, ValueError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"checkpoint {checkpoint} does not fit the model: {first_line}"
        ) from None


def load_initial_weights(model: tf.keras.Model, source: str, build: Callable) -> None:
    """Copies `source`'s weights into `model` (`RunConfig.initial_weights`).

    # Arguments
        model: the run's model.
        source: a run directory (the weights of its last completed epoch), a
            pretrained model name or a weights file (as a zoo factory's `weights=`).
        build: returns a new model of the same architecture.

    # Raises
        ValueError: naming `source` and what is wrong with it, in one line.
    """
    directory = RunDirectory(source)
    try:
        if directory.config_path.exists():
            read_model_weights(directory.last_checkpoint()[0], model, build)
        else:
            load_weights(model, source)
    except (ValueError, OSError, tf.errors.OpError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"initial_weights {source!r}: {first_line}") from None


@dataclass
class RestoredRun:
    """A run directory's configuration, tasks and model at its last completed epoch.

    # Arguments
        config: the run's configuration.
        model: its model, with the weights and live BatchNorm state of the last
            completed epoch.
        tasks, eval_tasks: as `build_tasks(config)`.
        checkpoint: the checkpoint read.
        completed_epochs: epochs completed.
        bn_states: the BatchNorm state of each finished task, by task index (see
            `training.batchnorm.TaskBatchNorm`).
    """

    config: RunConfig
    model: tf.keras.Model
    tasks: list[Task]
    eval_tasks: list[Task]
    checkpoint: str
    completed_epochs: int
    bn_states: dict


def restore_run(
    run_dir: str | os.PathLike, *, data_dir: str | os.PathLike | None = None
) -> RestoredRun:
    """Rebuilds a run directory's model from its last checkpoint, with its tasks.

    # Arguments
        run_dir: a directory written by `run`.
        data_dir: where the datasets are; default the run's `data_dir` if it exists
            from here, else `$METAPLASTIC_DATA_DIR`.

    # Returns
        A `RestoredRun`; its model holds the live BatchNorm state of the last task.

    # Raises
        ValueError: if the directory is not a run, holds no completed epoch, or its
            checkpoint does not fit its configuration.
    """
    directory = RunDirectory(run_dir)
    config = directory.read_config()
    if data_dir is not None:
        config.data_dir = str(data_dir)
    elif config.data_dir is not None and not Path(config.data_dir).exists():
        config.data_dir = None  # relative to where the run was started: use the env
    checkpoint, progress = directory.last_checkpoint()
    tasks, eval_tasks = build_tasks(config)
    input_shape, num_classes = model_shape(eval_tasks)

    def build():
        return build_model(config, input_shape=input_shape, num_classes=num_classes)

    model = build()
    read_model_weights(checkpoint, model, build)
    return RestoredRun(
        config, model, tasks, eval_tasks, checkpoint, progress.completed_epochs,
        progress.bn_states,
    )  # fmt: skip
