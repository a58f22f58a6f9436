"""Keras Tuner search whose trials are whole continual-learning runs.

A trial trains a zoo model on every task of a protocol (`training.runner.run`) with the
trial's m and learning rate, and scores it with a continual-learning objective,
`cl_objective` (maximized): the mean accuracy over all tasks after the last one (task
sequences, permuted tasks) or the final accuracy (streams). Accuracies are measured on
a validation split carved from the training data (`RunConfig.validation_split`); the
test set is read once, by `summarize_search`, to evaluate the best hyperparameters
retrained on the full training data.

Each trial writes its run directory to `<directory>/<project>/trials/<trial_id>`, so a
search that is interrupted and started again keeps its finished trials (Keras Tuner
reloads them), re-runs the trial that was running, and that trial resumes from its
last completed epoch.

Distributed tuning uses Keras Tuner's chief/worker mode: with `KERASTUNER_TUNER_ID`
(`chief`, `tuner0`, `tuner1`, ...), `KERASTUNER_ORACLE_IP` and
`KERASTUNER_ORACLE_PORT` set, the chief's `search()` serves the oracle (Keras Tuner's own
gRPC server) and the workers run trials; all of them need the same `directory`.
`distributed_role()` says which one this process is.

!!! example
    ```python
    from training.runner import RunConfig
    from tuning.hypermodel import MetaplasticHyperModel
    from tuning.search import make_tuner, summarize_search

    base = RunConfig(protocol="permuted", num_tasks=3, epochs=1, hidden_units=(512, 512))
    tuner = make_tuner("bayesian", base_config=base,
                       hypermodel=MetaplasticHyperModel(hidden_units=(512, 512)),
                       max_trials=12, directory="tuning_runs", project_name="pmnist")
    tuner.search()
    print(summarize_search(tuner)["best_hyperparameters"])
    ```
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
from pathlib import Path

import keras_tuner

from training.runner import RunConfig, run
from tuning.hypermodel import MetaplasticHyperModel
from zoo.validation import check_choice, check_positive_int

__all__ = [
    "OBJECTIVE",
    "ORACLE_IP_ENV",
    "ORACLE_PORT_ENV",
    "TUNERS",
    "TUNER_ID_ENV",
    "ContinualLearningTuner",
    "distributed_role",
    "make_tuner",
    "summarize_search",
    "trial_config",
]

OBJECTIVE = keras_tuner.Objective("cl_objective", direction="max")
TUNERS = ("random", "bayesian", "hyperband")

# Keras Tuner's distributed mode is configured by these environment variables (its
# documented interface; the module that reads them, `keras_tuner.src.distribute`, is
# private, so they are read here the way it reads them).
TUNER_ID_ENV = "KERASTUNER_TUNER_ID"
ORACLE_IP_ENV = "KERASTUNER_ORACLE_IP"
ORACLE_PORT_ENV = "KERASTUNER_ORACLE_PORT"


def distributed_role() -> str | None:
    """This process's part in a distributed search, from the `KERASTUNER_*` variables.

    # Returns
        `"chief"` (serves the oracle; its tuner ID contains `chief`), `"worker"` (runs
        trials), or `None` when `KERASTUNER_ORACLE_IP` is unset (a local search).

    # Raises
        ValueError: if `KERASTUNER_ORACLE_IP` is set without `KERASTUNER_ORACLE_PORT`
            or `KERASTUNER_TUNER_ID`.
    """
    if ORACLE_IP_ENV not in os.environ:
        return None
    missing = [v for v in (ORACLE_PORT_ENV, TUNER_ID_ENV) if v not in os.environ]
    if missing:
        raise ValueError(f"{ORACLE_IP_ENV} is set but not {' nor '.join(missing)}.")
    return "chief" if "chief" in os.environ[TUNER_ID_ENV] else "worker"


def trial_config(
    base_config: RunConfig,
    hypermodel: MetaplasticHyperModel,
    hp: keras_tuner.HyperParameters,
    *,
    validation_split: float,
    run_dir: str,
) -> RunConfig:
    """The `RunConfig` of one trial: `base_config` with the values in `hp`.

    # Arguments
        base_config: the protocol, data and budget shared by all trials.
        hypermodel: the search space.
        hp: the trial's hyperparameters; Hyperband's `tuner/epochs` sets the epochs
            per task.
        validation_split: the fraction of training data held out to score the trial
            (0: train on all of it and evaluate on the test set).
        run_dir: the trial's run directory.

    # Returns
        A `RunConfig`.
    """
    overrides = hypermodel.config_overrides(hp)
    if "tuner/epochs" in hp.values:
        overrides["epochs"] = int(hp.values["tuner/epochs"])
    return dataclasses.replace(
        base_config,
        **overrides,
        validation_split=validation_split,
        run_dir=run_dir,
    )


class ContinualLearningTuner:
    """Mixin for Keras Tuner tuners: a trial is a whole continual-learning run.

    Put it before a Keras Tuner class (`RandomSearch`, `BayesianOptimization`,
    `Hyperband`); `make_tuner` does this. It replaces only `run_trial`: the trial's
    `RunConfig` is `trial_config(base_config, hypermodel, hp)`, and `training.runner.run`
    trains it on every task of the protocol, from the model `hypermodel.build(hp)`
    returns (both use `training.assembly.build_model`; the run seeds it with
    `base_config.seed`).
    The search loop, the reloading of finished trials and the distributed mode are
    Keras Tuner's own.

    # Arguments
        base_config: the protocol, data and budget shared by all trials.
        validation_split: fraction of each dataset's training data that scores trials.
        **kwargs: passed to the Keras Tuner class (`hypermodel` must be a
            `MetaplasticHyperModel`).
    """

    def __init__(
        self, *args, base_config: RunConfig, validation_split: float = 0.1, **kwargs
    ):
        if not 0 < validation_split < 1:
            raise ValueError(
                f"validation_split must be in (0, 1) so that trials never see the test "
                f"set, got {validation_split}."
            )
        self.base_config = base_config
        self.validation_split = validation_split
        kwargs.setdefault("objective", OBJECTIVE)
        super().__init__(*args, **kwargs)

    def trial_run_dir(self, trial_id: str) -> Path:
        return Path(self.project_dir) / "trials" / str(trial_id)

    def run_trial(self, trial, *args, **kwargs) -> dict:
        config = trial_config(
            self.base_config,
            self.hypermodel,
            trial.hyperparameters,
            validation_split=self.validation_split,
            run_dir=str(self.trial_run_dir(trial.trial_id)),
        )
        Path(config.run_dir).mkdir(parents=True, exist_ok=True)
        (Path(config.run_dir) / "tuner_id.txt").write_text(self.tuner_id)
        summary = run(config, verbose=0)
        objective = float(summary["mean_accuracy"])
        print(
            f"[{self.tuner_id}] trial {trial.trial_id}: cl_objective {objective:.4f}",
            flush=True,
        )
        return {OBJECTIVE.name: objective}


class ContinualRandomSearch(ContinualLearningTuner, keras_tuner.RandomSearch):
    """`RandomSearch` over whole continual-learning runs."""


class ContinualBayesianOptimization(
    ContinualLearningTuner, keras_tuner.BayesianOptimization
):
    """`BayesianOptimization` over whole continual-learning runs."""


class ContinualHyperband(ContinualLearningTuner, keras_tuner.Hyperband):
    """`Hyperband` over whole continual-learning runs; its budget is epochs per task."""


def make_tuner(
    kind: str,
    *,
    base_config: RunConfig,
    hypermodel: MetaplasticHyperModel,
    max_trials: int = 12,
    directory: str = "tuning_runs",
    project_name: str = "search",
    validation_split: float = 0.1,
    max_epochs: int | None = None,
    factor: int = 3,
    seed: int = 0,
    overwrite: bool = False,
) -> keras_tuner.Tuner:
    """A Keras Tuner tuner whose trials are continual-learning runs.

    # Arguments
        kind: `"random"`, `"bayesian"` or `"hyperband"`.
        base_config: the protocol, data and budget shared by all trials (its
            `run_dir` and `validation_split` are replaced per trial).
        hypermodel: the search space.
        max_trials: trials of random search and Bayesian optimization (Hyperband's
            count follows from `max_epochs` and `factor`).
        directory: the tuner's directory, shared by the chief and all workers.
        project_name: the search's folder in `directory`.
        validation_split: fraction of training data that scores trials.
        max_epochs: Hyperband's largest budget, in epochs per task (default:
            `base_config.epochs`).
        factor: Hyperband's reduction factor.
        seed: the tuner's random seed (trials all use `base_config.seed`).
        overwrite: start afresh instead of continuing the search in `directory`.

    # Returns
        The tuner; call `search()` then `summarize_search(tuner)`.

    # Raises
        ValueError: for an unknown `kind` or invalid counts.
    """
    check_choice(kind, "tuner", TUNERS)
    check_positive_int(max_trials, "max_trials")
    common = dict(
        base_config=base_config,
        validation_split=validation_split,
        hypermodel=hypermodel,
        directory=directory,
        project_name=project_name,
        seed=seed,
        overwrite=overwrite,
    )
    if kind == "random":
        return ContinualRandomSearch(max_trials=max_trials, **common)
    if kind == "bayesian":
        return ContinualBayesianOptimization(max_trials=max_trials, **common)
    max_epochs = base_config.epochs if max_epochs is None else max_epochs
    check_positive_int(max_epochs, "max_epochs")
    return ContinualHyperband(
        max_epochs=max_epochs, factor=factor, hyperband_iterations=1, **common
    )


def _objective(trial) -> float | None:
    if trial.score is not None:
        return float(trial.score)
    if trial.metrics.exists(OBJECTIVE.name):
        return float(trial.metrics.get_best_value(OBJECTIVE.name))
    return None


def _trial_order(trial_id: str) -> tuple:
    return (0, int(trial_id), "") if trial_id.isdigit() else (1, 0, trial_id)


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def summarize_search(
    tuner: keras_tuner.Tuner, *, retrain: bool = True, verbose: int = 1
) -> dict:
    """Writes the search's results and retrains the best hyperparameters.

    Writes to the project directory: `results.csv` and `results.md` (one row per
    trial: id, worker, status, hyperparameters, objective), `best_hyperparameters.json`,
    and with `retrain` the run directory `best/trial_<id>/` of the best hyperparameters trained on
    the full training data (no validation split) and evaluated once on the test set;
    then `search_summary.json` with all of it.

    # Arguments
        tuner: a tuner from `make_tuner` whose search is over (on the chief when
            distributed).
        retrain: retrain the best hyperparameters and evaluate them on the test set.
        verbose: 1 prints the results table, the best hyperparameters and the test
            accuracies; 0 is silent.

    # Returns
        `{"trials": [row, ...], "best_trial_id", "best_objective",
        "best_hyperparameters", "test_accuracy": {task: acc}, "test_mean_accuracy",
        "best_run_dir"}` (the last three only with `retrain`).

    # Raises
        ValueError: if no trial has completed.
    """
    project = Path(tuner.project_dir)
    trials = sorted(
        tuner.oracle.trials.values(), key=lambda t: _trial_order(t.trial_id)
    )
    rows = []
    for trial in trials:
        worker_file = tuner.trial_run_dir(trial.trial_id) / "tuner_id.txt"
        values = {
            k: v
            for k, v in trial.hyperparameters.values.items()
            if k == "tuner/epochs" or not k.startswith("tuner/")
        }
        rows.append(
            {
                "trial": trial.trial_id,
                "worker": worker_file.read_text() if worker_file.exists() else "",
                "status": str(trial.status),
                **values,
                OBJECTIVE.name: _objective(trial),
            }
        )
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    columns.remove(OBJECTIVE.name)
    columns.append(OBJECTIVE.name)
    with (project / "results.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    table = "\n".join(
        ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        + ["| " + " | ".join(_format(r.get(c)) for c in columns) + " |" for r in rows]
    )
    (project / "results.md").write_text(table + "\n")

    scored = [t for t in trials if _objective(t) is not None]
    if not scored:
        raise ValueError(f"no completed trial in {project}.")
    # The best objective; among equal ones the first trial, so that a search reloaded
    # from its directory names the same best trial (Keras Tuner's order of tied
    # trials changes with reloading).
    best = min(scored, key=lambda t: (-_objective(t), _trial_order(t.trial_id)))
    best_values = {
        k: v
        for k, v in best.hyperparameters.values.items()
        if k == "tuner/epochs" or not k.startswith("tuner/")
    }
    result = {
        "trials": rows,
        "best_trial_id": best.trial_id,
        "best_objective": _objective(best),
        "best_hyperparameters": best_values,
    }
    (project / "best_hyperparameters.json").write_text(
        json.dumps(
            {
                "trial": best.trial_id,
                "hyperparameters": best_values,
                OBJECTIVE.name: result["best_objective"],
            },
            indent=2,
        )
    )
    if verbose:
        print(table)
        print(f"Best trial {best.trial_id}: {json.dumps(best_values)}")
    if retrain:
        config = trial_config(
            tuner.base_config,
            tuner.hypermodel,
            best.hyperparameters,
            validation_split=0.0,
            run_dir=str(project / "best" / f"trial_{best.trial_id}"),
        )
        summary = run(config, verbose=0)
        result.update(
            test_accuracy=summary["final_accuracy"],
            test_mean_accuracy=summary["mean_accuracy"],
            best_run_dir=config.run_dir,
            best_wall_time_s=summary["wall_time_s"],
        )
        if verbose:
            print(
                "Best hyperparameters retrained on all training data, test accuracy: "
                + ", ".join(
                    f"{k} {100 * v:.2f}%" for k, v in summary["final_accuracy"].items()
                )
                + f"; mean {100 * summary['mean_accuracy']:.2f}%"
            )
    (project / "search_summary.json").write_text(json.dumps(result, indent=2))
    return result
