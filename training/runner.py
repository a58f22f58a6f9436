"""The protocol runner: teaches a BNN a sequence of tasks and measures what it forgets.

`run(config)` builds the protocol's tasks, trains a zoo model on them one after another
with `model.fit`, evaluates every task after every epoch, and writes a run directory
(`training.rundir`): `config.json`, `metrics.csv`, `summary.json`, `plots/`,
`checkpoint/`, `tensorboard/`.

Running the same configuration into the same directory again continues from the last
completed epoch and ends with the same weights and metrics as an uninterrupted run.
With `baseline="ewc" | "ewc_random" | "si"` the model is trained with that
continual-learning baseline (`training.baselines`), consolidated at the end of each task.
With `batch_norm="task"` each task keeps its own BatchNorm state (`training.batchnorm`).
One process at a time writes a run directory; a damaged last checkpoint is recomputed
from the one before. A NaN or infinite loss or weight stops the run before anything of
its epoch is saved (`NonFiniteError`); a run that diverges otherwise (a loss grown a
hundredfold, a task learned to chance accuracy) gets a `RunWarning` and a line in the
summary's `warnings`.

!!! example
    ```python
    from training.runner import RunConfig, run

    summary = run(RunConfig(protocol="permuted", datasets=("mnist",), num_tasks=5,
                            epochs=5, meta=1.35, run_dir="runs/pmnist-m1.35"))
    print(summary["average_accuracy"])
    ```
"""

from __future__ import annotations

import random
import sys
import time
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.python.eager import context as eager_context

from training import baselines, metrics, plots
from training.assembly import (
    RestoredRun,
    build_model,
    build_tasks,
    check_batch_size,
    check_meta_layers,
    load_initial_weights,
    make_optimizer,
    model_shape,
    optimizer_steps,
    restore_run,
)
from training.batchnorm import (
    TaskBatchNorm,
    recalibration_batches,
    uses_task_statistics,
)
from training.callbacks import MetaplasticityDiagnostics
from training.config import RunConfig
from training.divergence import (
    NonFiniteError,
    StopOnNonFinite,
    divergence_warnings,
    epoch_name,
    likely_cause,
    non_finite_variables,
)
from training.optimizers import (
    MetaplasticAdam,
    is_binary_variable,
    is_kernel_variable,
    layer_name,
)
from training.protocols import Task
from training.rundir import Progress, RunDirectory, RunDirectoryError
from zoo.precision import bf16_instructions, cpu_description

# `build_tasks`, `build_model`, `make_optimizer`, `restore_run` and `RestoredRun` live in
# `training.assembly`; they stay importable from here, where they were first.
__all__ = [
    "NonFiniteError",
    "RestoredRun",
    "RunConfig",
    "RunDirectoryError",
    "RunWarning",
    "build_model",
    "build_tasks",
    "make_optimizer",
    "restore_run",
    "run",
]

# The seed of epoch e of a run is `seed * _EPOCH_SEED + e` (modulo 2**32: NumPy's seeds
# are 32 bits): it depends only on the epoch, so that a resumed run repeats the same
# draws.
_EPOCH_SEED = 100_003
# Seed offset of the data each baseline consolidates on (EWC's Fisher samples).
_CONSOLIDATION_SEED = 50_021
# The Keras backend whose seed generator `tf.keras.utils.set_random_seed` seeds.
_KERAS_BACKEND = getattr(
    sys.modules.get(tf.keras.utils.set_random_seed.__module__), "backend", None
)


class _EpochSeeder:
    """Seeds Python, NumPy and TensorFlow at the start of an epoch with the same effect
    as `tf.keras.utils.set_random_seed`, without its cost where that changes nothing.

    `tf.random.set_seed` also empties TensorFlow's cache of kernels, so that stateful
    random ops (e.g. dropout's `RandomUniform`) restart their sequences; every compiled
    function (the train step, the evaluation step) is then instantiated again at its
    next call, which costs 0.2-0.5 s per epoch. Only the kernels of those random ops
    hold state that the cache keeps between epochs (eager ones get new seeds, hence
    new kernels, each epoch; `tf.data` and the stateless ops take their seeds as
    inputs), so the cache is emptied only while a function that TensorFlow holds
    contains one: an op with a `seed2` attribute, which every legacy stateful random
    op has. A function's ops never change, so each is inspected once. The first call
    always empties it: kernels from before it (building the model, seeded with the
    run's seed, which is also its first epoch's with `seed=0`) are not known.
    """

    def __init__(self):
        self._inspected: set[str] = set()
        self._stateful_random = False
        self._emptied = False  # the cache, by an earlier call

    def __call__(self, seed: int) -> None:
        """Seeds everything with `seed`, as `tf.keras.utils.set_random_seed(seed)`."""
        if (
            not self._emptied
            or self._holds_stateful_random_ops()
            or not _seed_keeping_kernels(seed)
        ):
            tf.keras.utils.set_random_seed(seed)
            self._emptied = True

    def _holds_stateful_random_ops(self) -> bool:
        if self._stateful_random:
            return True
        ctx = eager_context.context()
        for name in ctx.list_function_names() - self._inspected:
            self._inspected.add(name)
            function = ctx.get_function_def(name)
            if any("seed2" in node.attr for node in function.node_def):
                self._stateful_random = True
                return True
        return False


def _untuned(dataset: tf.data.Dataset | None) -> tf.data.Dataset | None:
    """`dataset` with `tf.data`'s autotuning off: the same elements in the same order,
    produced with the default parallelism and prefetch buffer instead of tuned ones.

    Deleting an iterator of an autotuned dataset waits for its tuning thread, up to
    ~0.5 s, and `fit` and `evaluate` delete theirs before returning: that was a
    quarter of a small epoch. The runner's pipelines gather whole batches per element
    (`training.data.make_pipeline`), so tuning gains nothing there.
    """
    if dataset is None:
        return None
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


def _seed_keeping_kernels(seed: int) -> bool:
    """Does what `tf.keras.utils.set_random_seed(seed)` does but empty TensorFlow's
    kernel cache; returns `False`, having done nothing, if this TensorFlow or Keras
    keeps its seeds elsewhere, or if TensorFlow's global seed was never set (its op
    seed generator does not exist yet; building a run's model sets it)."""
    ctx = eager_context.context()
    keras_seeds = getattr(_KERAS_BACKEND, "_SEED_GENERATOR", None)
    if keras_seeds is None or not (hasattr(ctx, "_seed") and hasattr(ctx, "_rng")):
        return False
    random.seed(seed)
    np.random.seed(seed)
    # `tf.random.set_seed` in eager mode (`context.Context._set_global_seed`) but the
    # kernel cache: the global seed, and the generator of the op seeds of random ops
    # created without one.
    ctx._seed = seed
    ctx._rng = random.Random(seed)
    keras_seeds.generator = random.Random(seed)
    return True


class RunWarning(UserWarning):
    """Something the person running a run should know: it diverges, or a damaged
    checkpoint was skipped."""


def _hidden_weights(model: tf.keras.Model) -> dict[str, np.ndarray]:
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


def _number(value: float) -> str:
    """A metric as Keras' progress bar shows it (4 decimals, or 4 digits)."""
    return f"{value:.4f}" if 1e-3 <= abs(value) < 1e5 or value == 0 else f"{value:.4g}"


class _TaskProgressBar(tf.keras.callbacks.ProgbarLogger):
    """Keras' progress bar without its `Epoch x/y` header: the runner fits one epoch at
    a time with the run's epoch numbers, so x/y would count the whole run's epochs."""

    def __init__(self):
        super().__init__(count_mode="steps")

    def set_params(self, params):
        super().set_params(params)
        self.epochs = 1  # no header


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


class _Run:
    """One invocation of `run`: the model, its tasks and its run directory.

    Building it follows a fixed order (tasks, seeded model, initial weights, baseline,
    optimizer, checkpoint) so that a resumed run draws the same random numbers as an
    uninterrupted one. It writes nothing: the run directory is only written once the
    data are loaded, the model is built and the configuration fits them (`train`).
    """

    def __init__(
        self,
        config: RunConfig,
        directory: RunDirectory,
        strategy: tf.distribute.Strategy | None,
        verbose: int,
        resume: bool = True,
    ):
        self.config = config
        self.directory = directory
        self.verbose = verbose
        self.progress = (self._resume_point() if resume else None) or Progress()
        self.tasks, self.eval_tasks = build_tasks(config)
        check_batch_size(config, self.tasks)
        self.strategy = strategy or tf.distribute.get_strategy()
        if config.precision == "bf16" and bf16_instructions() is False:
            warnings.warn(
                "this CPU has no bfloat16 instructions (avx512_bf16, amx_bf16): bf16 is "
                "emulated and trains slower than float32; use precision float32 here",
                RunWarning,
                stacklevel=2,
            )
        self.model = self._build_model(synchronized_bn=strategy is not None)
        check_meta_layers(config, self.model)
        self.batch_norm = TaskBatchNorm(self.model, self.progress.bn_states)
        self.test_data = {
            t.name: _untuned(t.test_data(batch_size=1000)) for t in self.eval_tasks
        }
        self.diagnostics = MetaplasticityDiagnostics(
            log_dir=str(directory.tensorboard_dir), per_layer_logs=False
        )
        # Sign flips and |Wh| of binary weights; a float model has none.
        binary = any(is_binary_variable(v) for v in self.model.trainable_variables)
        self.callbacks = [self.diagnostics] if binary else []
        # The optimizer a resumed run restores started with the task in progress.
        started_at = (
            min(self.progress.completed_epochs // config.epochs, len(self.tasks) - 1)
            if config.optimizer_per_task
            else 0
        )
        self.optimizer = self._compile(started_at)
        self.seed_epoch = _EpochSeeder()
        if self.progress.checkpoint:
            self._restore_checkpoint()
        self.progbar = _TaskProgressBar() if verbose == 1 else None

    def _resume_point(self) -> Progress | None:
        """The last intact saved epoch; warns about newer ones that are damaged."""
        progress, damaged = self.directory.resume_point()
        if damaged:
            warnings.warn(
                f"{self.directory.path}: damaged {'; '.join(damaged)}; resuming after "
                f"epoch {progress.completed_epochs} instead, recomputing the epochs "
                f"after it.",
                RunWarning,
                stacklevel=2,
            )
        return progress

    def _build_model(self, synchronized_bn: bool) -> tf.keras.Model:
        config = self.config
        input_shape, num_classes = model_shape(self.eval_tasks)
        with self.strategy.scope():
            model = build_model(
                config,
                input_shape=input_shape,
                num_classes=num_classes,
                synchronized_bn=synchronized_bn,
            )
        if config.initial_weights and not self.progress.checkpoint:
            load_initial_weights(
                model,
                config.initial_weights,
                lambda: build_model(
                    config, input_shape=input_shape, num_classes=num_classes
                ),
            )
        if config.baseline is not None:
            model = baselines.with_baseline(
                model,
                config.baseline,
                on=config.baseline_on,
                ewc_lambda=config.ewc_lambda,
                fisher_samples=config.fisher_samples,
                si_c=config.si_c,
                si_xi=config.si_xi,
                seed=config.seed,
            )
        return model

    def _compile(self, task_index: int = 0) -> MetaplasticAdam:
        """Compiles the model with a new optimizer that starts at task `task_index`,
        and returns it."""
        steps = optimizer_steps(self.config, self.tasks, task_index)
        with self.strategy.scope():
            optimizer = make_optimizer(self.config, decay_steps=steps)
            self.model.compile(
                optimizer,
                loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                metrics=["accuracy"],
                jit_compile=self.config.jit_compile,
            )
        return optimizer

    def _restore_checkpoint(self) -> None:
        """Restores the last completed epoch: the model, and the optimizer unless the
        next epoch starts a task with a fresh one."""
        completed, epochs = self.progress.completed_epochs, self.config.epochs
        fresh_optimizer = (
            self.config.optimizer_per_task
            and completed % epochs == 0
            and completed // epochs > 0
        )
        objects = {"model": self.model}
        if not fresh_optimizer:
            objects["optimizer"] = self.optimizer
        path = self.directory.checkpoint_path(self.progress)
        tf.train.Checkpoint(**objects).restore(path).expect_partial()
        if self.verbose:
            print(f"Resuming {self.directory.path} after epoch {completed}.")

    def train(self, stop_after_epochs: int | None) -> dict:
        """Trains the epochs not completed yet; returns the summary, or
        `{"stopped_after_epochs": ..., "run_dir": ...}` if `stop_after_epochs` stops it."""
        # Each epoch adds the time since the previous one (or since this call) to the
        # progress, under this machine's name: a resume elsewhere is told apart.
        self.clock = time.perf_counter()
        self.machine = cpu_description()
        epochs = self.config.epochs
        for task_index, task in enumerate(self.tasks):
            done = self.progress.completed_epochs - task_index * epochs
            if done >= epochs:
                continue  # in an earlier invocation
            for task_epoch in range(max(done, 0), epochs):
                global_epoch = task_index * epochs + task_epoch
                if stop_after_epochs is not None and global_epoch >= stop_after_epochs:
                    return {
                        "stopped_after_epochs": global_epoch,
                        "run_dir": str(self.directory.path),
                    }
                self._train_epoch(task_index, task, task_epoch)
            self._report_task(task_index, task)
        return self._summarize()

    def _train_epoch(self, task_index: int, task: Task, task_epoch: int) -> None:
        """Trains one epoch, evaluates, checks that every value is finite, and saves the
        epoch in the run directory.

        # Raises
            NonFiniteError: at a NaN or infinite loss or weight, before anything of the
                epoch is saved.
        """
        config = self.config
        global_epoch = task_index * config.epochs + task_epoch
        last_epoch = task_epoch == config.epochs - 1
        if task_epoch == 0 and task_index > 0 and config.optimizer_per_task:
            self.optimizer = self._compile(task_index)
        seed = (config.seed * _EPOCH_SEED + global_epoch) % 2**32
        self.seed_epoch(seed)
        train = _untuned(
            task.train_data(
                batch_size=config.batch_size, seed=seed, augment=config.augment
            )
        )
        where = self._where(task_index, task_epoch)
        if self.verbose == 1:  # Keras' own header would count the run's epochs
            print(where[0].upper() + where[1:], flush=True)
        started = time.perf_counter()
        try:
            history = self.model.fit(
                train,
                initial_epoch=global_epoch,
                epochs=global_epoch + 1,
                callbacks=[StopOnNonFinite(), *self.callbacks]
                + ([self.progbar] if self.progbar else []),
                verbose=1 if self.verbose == 1 else 0,
            )
            if last_epoch:
                self._end_task(task_index, task)
            diagnosed = self.diagnostics.history[-1] if self.callbacks else {}
            row = {
                "epoch": global_epoch + 1,
                "task_index": task_index,
                "task": task.name,
                "task_epoch": task_epoch + 1,
                **{k: float(v[-1]) for k, v in history.history.items()},
                **{k: v for k, v in diagnosed.items() if k != "epoch"},
            }
            if config.evaluate == "epoch" or last_epoch:
                row.update(self._evaluate(task_index))
            self._check_finite(row)
        except NonFiniteError as error:
            raise NonFiniteError(
                f"{where}: {error}; {likely_cause(self.config)} Nothing of this epoch "
                f"was saved ({self.directory.path} holds "
                f"{self.progress.completed_epochs} completed epochs) and resuming "
                f"fails the same way: change the configuration in a new run directory "
                f"or pass overwrite=True (--overwrite)."
            ) from None
        if self.verbose == 2:
            logs = history.history.items()
            print(
                f"{where[0].upper() + where[1:]}: "
                + " - ".join(f"{k} {_number(v[-1])}" for k, v in logs)
                + f" - {time.perf_counter() - started:.1f} s",
                flush=True,
            )
        self.progress.rows.append(row)
        self.progress.completed_epochs = global_epoch + 1
        now = time.perf_counter()
        self.progress.add_training_time(now - self.clock, self.machine)
        self.clock = now
        checkpoint = tf.train.Checkpoint(model=self.model, optimizer=self.optimizer)
        self.directory.save_epoch(checkpoint, self.progress)
        self._warn_divergence()

    def _where(self, task_index: int, task_epoch: int) -> str:
        return epoch_name(
            task_index, self.tasks[task_index].name, len(self.tasks), task_epoch,
            self.config.epochs,
        )  # fmt: skip

    def _check_finite(self, row: dict) -> None:
        """Raises `NonFiniteError` if the epoch's loss or accuracies, or any variable
        of the model or the optimizer, is NaN or infinite."""
        values = {k: v for k, v in row.items() if k == "loss" or k.startswith("acc/")}
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        if bad:
            raise NonFiniteError(f"non-finite {bad[0]} {row[bad[0]]}")
        bad = non_finite_variables([*self.model.weights, *self.optimizer.variables()])
        if bad:
            raise NonFiniteError(f"non-finite weights in {bad[:3]}")

    def _divergence(self, rows: list[dict]) -> list[str]:
        return divergence_warnings(
            rows, config=self.config, tasks=self.tasks, eval_tasks=self.eval_tasks
        )

    def _warn_divergence(self) -> None:
        """Warns (`RunWarning`) about the divergence the last epoch revealed."""
        found = self._divergence(self.progress.rows)
        previous = self._divergence(self.progress.rows[:-1])
        for message in found[len(previous) :]:
            warnings.warn(message, RunWarning, stacklevel=2)

    def _end_task(self, task_index: int, task: Task) -> None:
        """Saves the task's BatchNorm state (not in a stream: one state serves the
        whole stream, as in the paper) and consolidates its baseline, if any."""
        if self.config.protocol != "stream":
            self.batch_norm.save(task_index)
            self.progress.bn_states = self.batch_norm.states
        if self.config.baseline is not None:
            # Fisher / importance of the task, with its BatchNorm state; saved with
            # this epoch's checkpoint.
            seed = self.config.seed * _EPOCH_SEED + _CONSOLIDATION_SEED + task_index
            self.model.consolidate(
                _untuned(task.train_data(batch_size=self.config.batch_size, seed=seed))
            )

    def _evaluate(self, task_index: int) -> dict:
        """Test accuracies while training task `task_index`: earlier tasks with their
        own (re-estimated) BatchNorm state, the current and later ones with the live
        one (`training.batchnorm.uses_task_statistics`)."""
        accuracies = {}
        for j, task in enumerate(self.eval_tasks):
            own = uses_task_statistics(
                self.config, j, current_task=task_index, saved=self.batch_norm.states
            )
            if own:
                batches = _untuned(recalibration_batches(self.config, task, j))
                with self.batch_norm.evaluating(j, batches=batches):
                    accuracy = self._accuracy(task)
            else:
                accuracy = self._accuracy(task)
            accuracies[f"acc/{task.name}"] = accuracy
        return accuracies

    def _accuracy(self, task: Task) -> float:
        result = self.model.evaluate(
            self.test_data[task.name], verbose=0, return_dict=True
        )
        return float(result["accuracy"])

    def _report_task(self, task_index: int, task: Task) -> None:
        """At the end of a task trained in this invocation: the |Wh| histogram, and a
        line of accuracies."""
        plots.plot_hidden_weight_histograms(
            _hidden_weights(self.model),
            path=str(self.directory.plots_dir / f"hidden_weights_{task.name}.png"),
            title=f"|Wh| after {task.name}",
        )
        if not self.verbose:
            return
        accuracies = {
            k[4:]: v for k, v in self.progress.rows[-1].items() if k.startswith("acc/")
        }
        mean_seen = np.mean(
            [accuracies[t.name] for t in self.eval_tasks[: task_index + 1]]
        )
        print(
            f"Task {task_index + 1}/{len(self.tasks)} ({task.name}) done: mean accuracy "
            f"over seen tasks {100 * mean_seen:.2f}%; "
            + ", ".join(f"{n} {100 * a:.2f}%" for n, a in accuracies.items()),
            flush=True,
        )

    def _summarize(self) -> dict:
        """Writes the accuracy plot and `summary.json`; returns the summary."""
        config, progress = self.config, self.progress
        rows = [r for r in progress.rows if any(k.startswith("acc/") for k in r)]
        names = [t.name for t in self.eval_tasks]
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
            path=str(self.directory.plots_dir / "task_accuracies.png"),
            title=f"{config.protocol} {'/'.join(config.datasets)}, m = {config.meta}"
            + (f", {config.baseline}" if config.baseline else ""),
        )
        matrix = _task_matrix(progress.rows, self.eval_tasks, len(self.tasks))
        summary = {
            "warnings": self._divergence(progress.rows),
            "final_accuracy": {n: float(a) for n, a in zip(names, matrix[-1])},
            "mean_accuracy": float(np.mean(matrix[-1])),  # over every evaluated task
            "accuracy_matrix": matrix.tolist(),
        }
        if config.protocol != "stream" and not config.joint:
            summary.update(metrics.summarize(matrix, task_names=names))
        summary.update(
            {
                "epochs": progress.completed_epochs,
                "wall_time_s": round(progress.wall_time, 1),
                "machines": progress.machine_seconds(),
                "run_dir": str(self.directory.path),
                "config": config.to_json(),
            }
        )
        self.directory.write_summary(summary)
        if self.verbose:
            print(f"Run directory: {self.directory.path}")
        return summary


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
        The summary (also written to `summary.json`); its `warnings` list says why the
        run diverges, if it does (each also issued as a `RunWarning`).

    # Raises
        ValueError: for an invalid configuration (a batch larger than a task, a `meta`
            mapping naming no binary layer), data errors (`DataError`), or a run
            directory holding another run, in use by another process, or without an
            intact checkpoint (`RunDirectoryError`).
        NonFiniteError: (a `ValueError`) at a NaN or infinite loss or weight; nothing
            of that epoch is saved.
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
    directory = RunDirectory(config.run_dir)
    with directory.lock():
        if not overwrite:
            directory.check_config(config)
        session = _Run(config, directory, strategy, verbose, resume=not overwrite)
        # Only now that the data loaded and the model fits the configuration.
        RunDirectory.prepare(config, overwrite=overwrite)
        return session.train(stop_after_epochs)
