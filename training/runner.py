"""The protocol runner: teaches a BNN a sequence of tasks and measures what it forgets.

`run(config)` builds the protocol's tasks, trains a zoo model on them one after another
with `model.fit`, evaluates every task after every epoch, and writes a run directory:

    run_dir/
      config.json        the full configuration
      metrics.csv        one row per epoch: loss, accuracy on every task, diagnostics
      summary.json       accuracy matrix, average accuracy, BWT, forgetting, wall time
      plots/             task accuracies vs epoch, |Wh| histograms at the end of each task
      checkpoint/        weights + optimizer state of the last completed epoch
      tensorboard/       diagnostics scalars and histograms

Running the same configuration into the same directory again continues from the last
completed epoch and ends with the same weights and metrics as an uninterrupted run.
With `baseline="ewc" | "ewc_random" | "si"` the model is trained with that
continual-learning baseline (`training.baselines`), consolidated at the end of each task.

!!! example
    ```python
    from training.runner import RunConfig, run

    summary = run(RunConfig(protocol="permuted", datasets=("mnist",), num_tasks=5,
                            epochs=5, meta=1.35, run_dir="runs/pmnist-m1.35"))
    print(summary["average_accuracy"])
    ```
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

import zoo
from training import baselines, metrics, plots
from training.callbacks import MetaplasticityDiagnostics
from training.data import ImageDataset, load_dataset
from training.optimizers import (
    MetaplasticAdam,
    is_binary_variable,
    is_kernel_variable,
    layer_name,
)
from training.protocols import (
    Task,
    dataset_sequence,
    joint_task,
    permuted_tasks,
    stream_subsets,
)

__all__ = ["RunConfig", "run", "build_tasks", "RunDirectoryError"]

PROTOCOLS = ("permuted", "sequence", "stream")
MODELS = ("mlp_meta", "mlp_float", "vgg16_meta", "vgg_small_meta")
MLP_MODELS = ("mlp_meta", "mlp_float")  # take `hidden_units`
BASELINES = (None, *baselines.BASELINES)
BN_SCENARIOS = ("task", "domain")
EVALUATE = ("epoch", "task")
AUGMENTATIONS = (None, "flip_crop", "flip_rotate")


# Seed offset of the data each baseline consolidates on (EWC's Fisher samples).
_CONSOLIDATION_SEED = 50_021


class RunDirectoryError(ValueError):
    """The run directory holds another run, or is damaged."""


@dataclass
class RunConfig:
    """Everything that defines a run; saved as `config.json` in the run directory.

    # Arguments
        protocol: `"permuted"` (N permutations of one dataset), `"sequence"` (one task per
            dataset) or `"stream"` (one dataset in `num_tasks` class-balanced subsets).
        datasets: dataset names or image-folder paths (`training.data.load_dataset`).
        num_tasks: permuted tasks or stream subsets (ignored for sequences).
        joint: train on the union of all tasks at once (the upper-bound reference).
        model: a zoo model name; `hidden_units` applies to `mlp_meta` and `mlp_float`.
            `"mlp_float"` (full precision) is trained with the metaplastic rule on its
            float kernels (`MetaplasticAdam(metaplastic_variables="kernels")`).
        meta: the metaplasticity m of `MetaplasticAdam` (0 is plain Adam), or a mapping
            from binary layer name to m (layers not named get 0).
        baseline: `None`, or a continual-learning baseline with task boundaries
            (`training.baselines`): `"ewc"`, `"ewc_random"` (EWC with shuffled Fisher
            values, the paper's control) or `"si"` (Synaptic Intelligence). It
            combines with any `meta` (the paper's EWC runs use `meta=0`).
        ewc_lambda: EWC strength (paper: 5e3).
        fisher_samples: training examples of each task's Fisher estimate (reference
            code: 5000).
        si_c, si_xi: SI strength (Zenke et al. 2017: 0.1) and damping (reference
            code: 0.1).
        learning_rate, batch_size, epochs: optimizer step, batch, epochs per task.
        optimizer_per_task: a fresh optimizer (new Adam moments) for every task, as in the
            paper's permuted-MNIST experiment; else one optimizer for the whole run.
        batch_norm: `"task"`: BatchNorm state saved at the end of each task and restored to
            evaluate it; `"domain"`: one shared BatchNorm state.
        recalibrate_bn: with `batch_norm="task"`, re-estimate a finished task's BatchNorm
            statistics under the current weights from this many batches of its training
            data before evaluating it (its saved gamma and beta are kept). The paper's
            reference code normalizes with batch statistics, which adapt to the weights
            the same way; statistics frozen at the end of the task go stale as later
            tasks flip weights. 0 evaluates with the saved statistics as they are.
        augment: CIFAR augmentation (`None`, `"flip_crop"`, `"flip_rotate"`).
        evaluate: `"epoch"`: every task after every epoch; `"task"`: at task ends only.
        seed: seeds the permutations, splits, initial weights, shuffling and dropout.
        validation_split: when > 0, this seeded random fraction of each dataset's
            training images is held out and used as its evaluation set in place of the
            test set (for hyperparameter search: `tuning`); the test set is not read.
        jit_compile: compile the training step with XLA (not with a distribution strategy).
        data_dir: where datasets are looked for first (see `training.data`).
        run_dir: the run directory.
        initial_weights: start from these weights instead of random ones: another run
            directory (the weights of its last completed epoch), a pretrained model name
            or a weights file (as a zoo factory's `weights=`). A fresh optimizer starts
            with them; resuming this run restores its own checkpoint instead.
    """

    protocol: str = "permuted"
    datasets: tuple[str, ...] = ("mnist",)
    num_tasks: int = 5
    joint: bool = False
    model: str = "mlp_meta"
    hidden_units: tuple[int, ...] = (1024, 1024)
    meta: float | dict[str, float] = 1.35
    baseline: str | None = None
    ewc_lambda: float = baselines.EWC_LAMBDA
    fisher_samples: int = baselines.FISHER_SAMPLES
    si_c: float = baselines.SI_C
    si_xi: float = baselines.SI_XI
    learning_rate: float = 0.005
    batch_size: int = 100
    epochs: int = 5
    optimizer_per_task: bool = True
    batch_norm: str = "task"
    recalibrate_bn: int = 20
    augment: str | None = None
    evaluate: str = "epoch"
    seed: int = 0
    validation_split: float = 0.0
    jit_compile: bool = False
    data_dir: str | None = None
    run_dir: str = "runs/run"
    initial_weights: str | None = None

    def __post_init__(self):
        self.datasets = tuple(self.datasets)
        self.hidden_units = tuple(self.hidden_units)
        checks = [
            (self.protocol in PROTOCOLS, f"protocol must be one of {PROTOCOLS}"),
            (self.model in MODELS, f"model must be one of {MODELS}"),
            (
                self.batch_norm in BN_SCENARIOS,
                f"batch_norm must be one of {BN_SCENARIOS}",
            ),
            (self.evaluate in EVALUATE, f"evaluate must be one of {EVALUATE}"),
            (self.augment in AUGMENTATIONS, f"augment must be one of {AUGMENTATIONS}"),
            (len(self.datasets) >= 1, "datasets must name at least one dataset"),
            (
                self.protocol == "sequence" or len(self.datasets) == 1,
                f"protocol {self.protocol!r} takes one dataset",
            ),
        ]
        checks.append(
            (self.baseline in BASELINES, f"baseline must be one of {BASELINES}")
        )
        for name, bound in (("ewc_lambda", ">= 0"), ("si_c", ">= 0"), ("si_xi", "> 0")):
            value = getattr(self, name)
            checks.append(
                (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and np.isfinite(value)
                    and (value > 0 if bound == "> 0" else value >= 0),
                    f"{name} must be finite and {bound}",
                )
            )
        for name in ("num_tasks", "batch_size", "epochs", "fisher_samples"):
            value = getattr(self, name)
            checks.append(
                (
                    isinstance(value, int) and value >= 1,
                    f"{name} must be a positive integer",
                )
            )
        checks.append((self.learning_rate > 0, "learning_rate must be > 0"))
        checks.append(
            (
                isinstance(self.recalibrate_bn, int) and self.recalibrate_bn >= 0,
                "recalibrate_bn must be an integer >= 0",
            )
        )
        if isinstance(self.meta, Mapping):
            self.meta = {str(k): float(v) for k, v in self.meta.items()}
            metas = list(self.meta.values())
        else:
            metas = [self.meta]
        checks.append(
            (
                all(np.isfinite(m) and m >= 0 for m in metas),
                "meta must be finite, >= 0",
            )
        )
        checks.append(
            (
                0 <= self.validation_split < 1,
                "validation_split must be in [0, 1)",
            )
        )
        for ok, message in checks:
            if not ok:
                raise ValueError(f"{message}; got {dataclasses.asdict(self)}.")

    def to_json(self) -> dict:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    def identity(self) -> dict:
        """The fields that must match for a run directory to be resumed."""
        return {
            k: v for k, v in self.to_json().items() if k not in ("data_dir", "run_dir")
        }


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
        tasks = stream_subsets(data[0], num_subsets=config.num_tasks, seed=config.seed)
        d = data[0]
        eval_tasks = [Task("test", d.x_train[:0], d.y_train[:0], d.x_test, d.y_test)]
    if config.joint:
        tasks = [joint_task(tasks)]
    return tasks, eval_tasks


def _build_model(
    config: RunConfig, input_shape, num_classes: int, synchronized_bn: bool
):
    tf.keras.utils.set_random_seed(config.seed)
    kwargs = {"hidden_units": config.hidden_units} if config.model in MLP_MODELS else {}
    model = getattr(zoo, config.model)(
        input_shape=input_shape, num_classes=num_classes, **kwargs
    )
    if not synchronized_bn:
        return model

    # Distributed: BatchNorm statistics over the global batch, as on one device.
    def clone(layer):
        layer_config = layer.get_config()
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            layer_config["synchronized"] = True
        return layer.__class__.from_config(layer_config)

    synced = tf.keras.models.clone_model(model, clone_function=clone)
    synced.set_weights(model.get_weights())
    return synced


def _last_checkpoint(run_dir: Path) -> tuple[str, _RunState]:
    """The checkpoint of a run directory's last completed epoch, and its state."""
    state = _RunState(run_dir)
    if not state.load() or not state.checkpoint:
        raise ValueError(f"{run_dir} holds no completed epoch to load.")
    checkpoint = state.checkpoint
    if not Path(checkpoint + ".index").exists():  # the run directory was moved
        checkpoint = str(run_dir / "checkpoint" / Path(checkpoint).name)
    return checkpoint, state


def _read_model_weights(checkpoint: str, model, build) -> None:
    """Copies a run checkpoint's model weights into `model`.

    The checkpoint is read into a scratch model from `build()`: read into `model`
    directly, its optimizer slots would be restored into whatever optimizer `model`
    is compiled with next.
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


@dataclass
class RestoredRun:
    """A run directory's configuration, tasks and model at its last completed epoch."""

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
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.exists():
        raise ValueError(f"{run_dir} has no config.json: not a run directory.")
    saved = json.loads(config_path.read_text())
    known = {f.name for f in dataclasses.fields(RunConfig)}
    config = RunConfig(**{k: v for k, v in saved.items() if k in known})
    if data_dir is not None:
        config.data_dir = str(data_dir)
    elif config.data_dir is not None and not Path(config.data_dir).exists():
        config.data_dir = None  # relative to where the run was started: use the env
    checkpoint, state = _last_checkpoint(run_dir)
    tasks, eval_tasks = build_tasks(config)
    input_shape = eval_tasks[0].x_test.shape[1:]
    num_classes = int(max(t.y_test.max() for t in eval_tasks)) + 1

    def build():
        return _build_model(config, input_shape, num_classes, False)

    model = build()
    _read_model_weights(checkpoint, model, build)
    return RestoredRun(
        config, model, tasks, eval_tasks, checkpoint, state.completed_epochs,
        state.bn_states,
    )  # fmt: skip


def _load_initial_weights(model, source: str, build) -> None:
    """Copies `source`'s weights (run directory, pretrained name or weights file) in."""
    path = Path(source)
    try:
        if (path / "config.json").exists():
            _read_model_weights(_last_checkpoint(path)[0], model, build)
        else:
            zoo.layers.load_weights(model, source)
    except (ValueError, OSError, tf.errors.OpError) as error:
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(f"initial_weights {source!r}: {first_line}") from None


def _bn_layers(model) -> list:
    return [
        layer
        for layer in model.layers
        if isinstance(layer, tf.keras.layers.BatchNormalization)
    ]


def _get_bn(bn_layers) -> list[np.ndarray]:
    """Every BatchNorm array (gamma, beta, moving mean and variance), layer by layer."""
    return [w for layer in bn_layers for w in layer.get_weights()]


def _set_bn(bn_layers, arrays: list[np.ndarray]) -> None:
    start = 0
    for layer in bn_layers:
        count = len(layer.weights)
        layer.set_weights(arrays[start : start + count])
        start += count


def _recalibrate_bn(model: tf.keras.Model, batches: tf.data.Dataset) -> None:
    """Sets BatchNorm moving statistics to the mean of the batch statistics of `batches`
    under the current weights; nothing else changes (dropout is off meanwhile)."""
    bn_layers = _bn_layers(model)
    dropouts = [
        layer for layer in model.layers if isinstance(layer, tf.keras.layers.Dropout)
    ]
    momenta = [layer.momentum for layer in bn_layers]
    rates = [layer.rate for layer in dropouts]
    for layer in dropouts:
        layer.rate = 0.0
    try:
        for k, (images, _) in enumerate(batches):
            for layer in bn_layers:
                layer.momentum = k / (k + 1)  # running mean of the batch statistics
            model(images, training=True)
    finally:
        for layer, momentum in zip(bn_layers, momenta):
            layer.momentum = momentum
        for layer, rate in zip(dropouts, rates):
            layer.rate = rate


def _hidden_weights(model) -> dict[str, np.ndarray]:
    """Layer -> its binary hidden weights; the float kernels if there are none."""
    weights = {
        layer_name(v): v.numpy()
        for v in model.trainable_variables
        if is_binary_variable(v)
    }
    return weights or {
        layer_name(v): v.numpy()
        for v in model.trainable_variables
        if is_kernel_variable(v)
    }


def _new_optimizer(config: RunConfig) -> MetaplasticAdam:
    """The optimizer of a run: `MetaplasticAdam` with the run's learning rate and m,
    on the binary kernels, or on the float kernels of `mlp_float` (paper, Fig. 2f)."""
    return MetaplasticAdam(
        config.learning_rate,
        meta=config.meta,
        metaplastic_variables="kernels" if config.model == "mlp_float" else "binary",
    )


class _RunState:
    """What survives an interruption: completed epochs, metric rows, BatchNorm states."""

    def __init__(self, run_dir: Path):
        self.dir = run_dir
        self.progress_path = run_dir / "checkpoint" / "progress.json"
        self.bn_path = run_dir / "checkpoint" / "bn_states.npz"
        self.completed_epochs = 0
        self.rows: list[dict] = []
        self.bn_states: dict[int, list[np.ndarray]] = {}
        self.checkpoint: str | None = None
        self.wall_time = 0.0

    def load(self) -> bool:
        if not self.progress_path.exists():
            return False
        try:
            progress = json.loads(self.progress_path.read_text())
            self.completed_epochs = progress["completed_epochs"]
            self.rows = progress["rows"]
            self.checkpoint = progress["checkpoint"]
            self.wall_time = progress["wall_time"]
            states = np.load(self.bn_path) if self.bn_path.exists() else {}
            for task in progress["bn_tasks"]:
                count = progress["bn_arrays"]
                self.bn_states[task] = [states[f"t{task}_{i}"] for i in range(count)]
        except (OSError, ValueError, KeyError) as error:
            raise RunDirectoryError(
                f"cannot resume from {self.dir}: damaged progress files ({error}); "
                f"use a new run directory."
            ) from None
        return True

    def save(self, checkpoint: str) -> None:
        self.checkpoint = checkpoint
        count = len(next(iter(self.bn_states.values()))) if self.bn_states else 0
        arrays = {
            f"t{t}_{i}": a for t, s in self.bn_states.items() for i, a in enumerate(s)
        }
        tmp = self.bn_path.with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, self.bn_path)
        progress = {
            "completed_epochs": self.completed_epochs,
            "rows": self.rows,
            "checkpoint": checkpoint,
            "wall_time": self.wall_time,
            "bn_tasks": sorted(self.bn_states),
            "bn_arrays": count,
        }
        tmp = self.progress_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(progress))
        os.replace(tmp, self.progress_path)


def _prepare_run_dir(config: RunConfig, overwrite: bool) -> Path:
    run_dir = Path(config.run_dir)
    config_path = run_dir / "config.json"
    if config_path.exists() and not overwrite:
        previous = json.loads(config_path.read_text())
        for field in dataclasses.fields(RunConfig):  # fields added since it was written
            if field.name not in previous:
                previous[field.name] = field.default
        previous_identity = {
            k: v for k, v in previous.items() if k not in ("data_dir", "run_dir")
        }
        if previous_identity != config.identity():
            changed = sorted(
                k
                for k in config.identity()
                if previous_identity.get(k) != config.identity()[k]
            )
            raise RunDirectoryError(
                f"{run_dir} holds a run with another configuration (differs in {changed}); "
                f"choose another run directory or pass overwrite=True (--overwrite)."
            )
    elif overwrite and run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    (run_dir / "checkpoint").mkdir(parents=True, exist_ok=True)
    (run_dir / "plots").mkdir(exist_ok=True)
    config_path.write_text(json.dumps(config.to_json(), indent=2))
    return run_dir


def _write_metrics_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _task_matrix(
    rows: list[dict], eval_tasks: list[Task], num_tasks: int
) -> np.ndarray:
    """Accuracy matrix R[i, j]: accuracy on eval task j after the last epoch of task i."""
    ends = {}
    for row in rows:
        ends[row["task_index"]] = row  # the last row of each task
    return np.array(
        [
            [ends[i][f"acc/{t.name}"] for t in eval_tasks]
            for i in sorted(ends)
            if i < num_tasks
        ]
    )


def run(
    config: RunConfig,
    *,
    strategy: tf.distribute.Strategy | None = None,
    overwrite: bool = False,
    verbose: int = 1,
    stop_after_epochs: int | None = None,
) -> dict:
    """Runs (or resumes) a continual-learning protocol and writes its run directory.

    # Arguments
        config: the run's configuration.
        strategy: a `tf.distribute` strategy (e.g. `MirroredStrategy` over local GPUs,
            `MultiWorkerMirroredStrategy` with `TF_CONFIG`); BatchNorm is then
            synchronized so that the run matches a single-device run of the same global
            batch.
        overwrite: delete an existing run directory instead of resuming it.
        verbose: 0 silent; 1 a progress bar per epoch and a line per task; 2 a line per
            epoch and a line per task.
        stop_after_epochs: stop (as an interruption would) once this many epochs of the
            whole run are complete; resuming continues from there.

    # Returns
        The summary (also written to `summary.json`).

    # Raises
        ValueError: for an invalid configuration, data errors (`DataError`), or a run
            directory holding another run (`RunDirectoryError`).
    """
    if strategy is not None and config.jit_compile:
        raise ValueError(
            "jit_compile (XLA) does not combine with tf.distribute strategies on CPU; "
            "drop jit_compile or the strategy."
        )
    if strategy is not None and config.baseline is not None:
        raise ValueError(
            f"baseline {config.baseline!r} does not run under tf.distribute "
            f"strategies; drop the baseline or the strategy."
        )
    run_dir = _prepare_run_dir(config, overwrite)
    state = _RunState(run_dir)
    resumed = state.load()
    tasks, eval_tasks = build_tasks(config)
    first = eval_tasks[0]
    input_shape = first.x_test.shape[1:]
    num_classes = int(max(t.y_test.max() for t in eval_tasks)) + 1
    distributed = strategy is not None
    strategy = strategy or tf.distribute.get_strategy()

    with strategy.scope():
        model = _build_model(
            config, input_shape, num_classes, synchronized_bn=distributed
        )
    if config.initial_weights and not (resumed and state.checkpoint):
        _load_initial_weights(
            model,
            config.initial_weights,
            lambda: _build_model(config, input_shape, num_classes, False),
        )
    if config.baseline is not None:
        model = baselines.with_baseline(
            model,
            config.baseline,
            ewc_lambda=config.ewc_lambda,
            fisher_samples=config.fisher_samples,
            si_c=config.si_c,
            si_xi=config.si_xi,
            seed=config.seed,
        )
    bn_layers = _bn_layers(model)
    test_data = {t.name: t.test_data(batch_size=1000) for t in eval_tasks}
    diagnostics = MetaplasticityDiagnostics(
        log_dir=str(run_dir / "tensorboard"), per_layer_logs=False
    )
    # Sign flips and |Wh| of binary weights; a float model has none.
    binary = any(is_binary_variable(v) for v in model.trainable_variables)
    callbacks = [diagnostics] if binary else []
    checkpoint_dir = run_dir / "checkpoint"

    def compile_model():
        with strategy.scope():
            optimizer = _new_optimizer(config)
            model.compile(
                optimizer,
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
                jit_compile=config.jit_compile,
            )
        return optimizer

    def evaluate(task_index: int) -> dict:
        """Test accuracies while training task `task_index`: earlier tasks with their own
        (re-estimated) BatchNorm state, the current and later ones with the live one."""
        current = _get_bn(bn_layers)
        accuracies = {}
        for j, task in enumerate(eval_tasks):
            use_task_bn = (
                config.batch_norm == "task"
                and config.protocol != "stream"
                and not config.joint
                and j < task_index
                and j in state.bn_states
            )
            if use_task_bn:
                _set_bn(bn_layers, state.bn_states[j])
                if config.recalibrate_bn:
                    batches = task.train_data(batch_size=config.batch_size, seed=j)
                    _recalibrate_bn(model, batches.take(config.recalibrate_bn))
            result = model.evaluate(test_data[task.name], verbose=0, return_dict=True)
            accuracies[f"acc/{task.name}"] = float(result["accuracy"])
            if use_task_bn:
                _set_bn(bn_layers, current)
        return accuracies

    optimizer = compile_model()
    epochs_per_task = config.epochs
    if resumed and state.checkpoint:
        next_task = state.completed_epochs // epochs_per_task
        starts_task = state.completed_epochs % epochs_per_task == 0
        keep_optimizer = not (
            config.optimizer_per_task and starts_task and next_task > 0
        )
        objects = {
            "model": model,
            **({"optimizer": optimizer} if keep_optimizer else {}),
        }
        tf.train.Checkpoint(**objects).restore(state.checkpoint).expect_partial()
        if verbose:
            print(f"Resuming {run_dir} after epoch {state.completed_epochs}.")

    started = time.perf_counter() - state.wall_time
    global_epoch = 0
    for task_index, task in enumerate(tasks):
        trained = False  # in this invocation
        for task_epoch in range(epochs_per_task):
            if global_epoch < state.completed_epochs:
                global_epoch += 1
                continue
            trained = True
            if stop_after_epochs is not None and global_epoch >= stop_after_epochs:
                return {"stopped_after_epochs": global_epoch, "run_dir": str(run_dir)}
            if task_epoch == 0 and task_index > 0 and config.optimizer_per_task:
                optimizer = compile_model()
            # Seeds depend only on the epoch, so that a resumed run repeats the same draws.
            tf.keras.utils.set_random_seed(config.seed * 100_003 + global_epoch)
            train = task.train_data(
                batch_size=config.batch_size,
                seed=config.seed * 100_003 + global_epoch,
                augment=config.augment,
            )
            history = model.fit(
                train,
                initial_epoch=global_epoch,
                epochs=global_epoch + 1,
                callbacks=callbacks,
                verbose=verbose,
            )
            if task_epoch == epochs_per_task - 1:
                state.bn_states[task_index] = _get_bn(bn_layers)
                if config.baseline is not None:
                    # Fisher / importance of the task, with its BatchNorm state; saved
                    # with this epoch's checkpoint.
                    model.consolidate(
                        task.train_data(
                            batch_size=config.batch_size,
                            seed=config.seed * 100_003
                            + _CONSOLIDATION_SEED
                            + task_index,
                        )
                    )
            diagnosed = diagnostics.history[-1] if callbacks else {}
            row = {
                "epoch": global_epoch + 1,
                "task_index": task_index,
                "task": task.name,
                "task_epoch": task_epoch + 1,
                **{k: float(v[-1]) for k, v in history.history.items()},
                **{k: v for k, v in diagnosed.items() if k != "epoch"},
            }
            if config.evaluate == "epoch" or task_epoch == epochs_per_task - 1:
                row.update(evaluate(task_index))
            state.rows.append(row)
            global_epoch += 1
            state.completed_epochs = global_epoch
            state.wall_time = time.perf_counter() - started
            path = tf.train.Checkpoint(model=model, optimizer=optimizer).write(
                str(checkpoint_dir / f"epoch-{global_epoch}")
            )
            state.save(path)
            _remove_old_checkpoints(checkpoint_dir, keep=path)
            _write_metrics_csv(run_dir / "metrics.csv", state.rows)
        if not trained:
            continue
        plots.plot_hidden_weight_histograms(
            _hidden_weights(model),
            path=str(run_dir / "plots" / f"hidden_weights_{task.name}.png"),
            title=f"|Wh| after {task.name}",
        )
        if verbose:
            accuracies = {
                k[4:]: v for k, v in state.rows[-1].items() if k.startswith("acc/")
            }
            mean_seen = np.mean(
                [accuracies[t.name] for t in eval_tasks[: task_index + 1]]
            )
            print(
                f"Task {task_index + 1}/{len(tasks)} ({task.name}) done: mean accuracy over "
                f"seen tasks {100 * mean_seen:.2f}%; "
                + ", ".join(f"{n} {100 * a:.2f}%" for n, a in accuracies.items()),
                flush=True,
            )
    return _finish(config, run_dir, state, tasks, eval_tasks, verbose)


def _remove_old_checkpoints(directory: Path, keep: str) -> None:
    """Removes checkpoint files other than `keep` and the one before it."""
    keep_name = Path(keep).name
    epochs = sorted(
        {
            int(p.name.split(".")[0].split("-")[1])
            for p in directory.glob("epoch-*.index")
        }
    )
    current = int(keep_name.split("-")[1])
    for epoch in epochs:
        if epoch < current - 1:
            for p in directory.glob(f"epoch-{epoch}.*"):
                p.unlink(missing_ok=True)


def _finish(config, run_dir, state, tasks, eval_tasks, verbose) -> dict:
    rows = [r for r in state.rows if any(k.startswith("acc/") for k in r)]
    names = [t.name for t in eval_tasks]
    epoch_accuracy = np.array([[r[f"acc/{n}"] for n in names] for r in rows])
    boundaries = [
        i
        for i, r in enumerate(rows)
        if i > 0 and r["task_index"] != rows[i - 1]["task_index"]
    ]
    plots.plot_task_accuracies(
        epoch_accuracy,
        task_boundaries=boundaries,
        task_names=names,
        path=str(run_dir / "plots" / "task_accuracies.png"),
        title=f"{config.protocol} {'/'.join(config.datasets)}, m = {config.meta}"
        + (f", {config.baseline}" if config.baseline else ""),
    )
    matrix = _task_matrix(state.rows, eval_tasks, len(tasks))
    summary = {
        "final_accuracy": {n: float(a) for n, a in zip(names, matrix[-1])},
        "mean_accuracy": float(np.mean(matrix[-1])),  # over every evaluated task
        "accuracy_matrix": matrix.tolist(),
    }
    if config.protocol != "stream" and not config.joint:
        summary.update(metrics.summarize(matrix, task_names=names))
    summary.update(
        {
            "epochs": state.completed_epochs,
            "wall_time_s": round(state.wall_time, 1),
            "run_dir": str(run_dir),
            "config": config.to_json(),
        }
    )
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if verbose:
        print(f"Run directory: {run_dir}")
    return summary
