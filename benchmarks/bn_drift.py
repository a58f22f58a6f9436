"""How stale a run's BatchNorm moving statistics are, and what that costs in accuracy.

For each run directory, at its last completed epoch: the task being learned, evaluated
on its test set with the live moving statistics (what the paper's protocol saves at the
task's end), then with them re-estimated from `--batches` training batches under the
same weights (`training.batchnorm.recalibrate`, as `--recalibrate-bn` does); per
BatchNorm layer, how far the moving statistics are from the statistics of the layer's
inputs on that test set (`training.batchnorm.statistics_drift`); and, after each epoch of
that task so far, its test accuracy and each binary layer's median |Wh| and fraction of
sign changes, as the run measured them. Writes
`benchmarks/results/bn_drift-<UTC stamp>.json`.

    python benchmarks/bn_drift.py runs/paper/fig2/paper/m1.35-seed0 --data-dir ../shared/data

A run may be in progress: the last checkpoint is read, nothing is written to the run.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.report import write_results  # noqa: E402
from training.assembly import restore_run  # noqa: E402
from training.batchnorm import (  # noqa: E402
    get_state,
    recalibrate,
    recalibration_batches,
    set_state,
    statistics_drift,
)
from training.rundir import RunDirectory  # noqa: E402


def task_curves(rows: list[dict], task: str) -> dict[str, list[list[float]]]:
    """Per epoch of `task`'s own training, from a run's metric rows (its progress):
    `"accuracy"`, its test accuracy with the live moving statistics,
    `"<layer>/abs_wh_q0.5"`, the median |Wh| of each binary layer, and
    `"<layer>/flipped"`, the fraction of its binary weights whose sign changed during
    the epoch; `[epoch, value]` pairs."""
    rows = [row for row in rows if row["task"] == task]
    columns = {"accuracy": f"acc/{task}"}
    if rows:
        columns.update(
            {k: k for k in rows[0] if k.endswith(("/abs_wh_q0.5", "/flipped"))}
        )
    return {
        name: [[int(row["epoch"]), float(row[column])] for row in rows if column in row]
        for name, column in columns.items()
    }


def measure(run_dir: str, *, data_dir: str | None, batches: int) -> dict:
    """The drift and both accuracies of one run directory's last epoch."""
    restored = restore_run(run_dir, data_dir=data_dir)
    config, model = restored.config, restored.model
    index = (restored.completed_epochs - 1) // config.epochs  # the last epoch's task
    task = restored.tasks[index]
    test = task.test_data(batch_size=1000)
    model.compile(metrics=["accuracy"], loss="sparse_categorical_crossentropy")

    def accuracy() -> float:
        return float(model.evaluate(test, verbose=0, return_dict=True)["accuracy"])

    live = get_state(model)
    drift = statistics_drift(model, test)
    running = accuracy()
    # The batches the runner re-estimates this task's statistics from.
    recalibrate(model, recalibration_batches(config, task, index, count=batches))
    recalibrated = accuracy()
    set_state(model, live)
    print(
        f"{run_dir}: epoch {restored.completed_epochs}, {task.name}: "
        f"{100 * running:.2f} % with the moving statistics, "
        f"{100 * recalibrated:.2f} % re-estimated from {batches} batches"
    )
    return {
        "run_dir": str(run_dir),
        "settings": {
            "protocol": config.protocol,
            "hidden_units": list(config.hidden_units),
            "meta": config.meta,
            "learning_rate": config.learning_rate,
            "weight_decay": config.weight_decay,
            "epochs_per_task": config.epochs,
            "seed": config.seed,
            "precision": config.precision,
        },
        "completed_epochs": restored.completed_epochs,
        "task": task.name,
        "accuracy_moving_statistics": running,
        "accuracy_recalibrated": recalibrated,
        "recalibration_batches": batches,
        "drift": drift,
        "by_epoch": task_curves(
            [
                row
                for row in RunDirectory(run_dir).load_progress().rows
                if row["epoch"] <= restored.completed_epochs
            ],
            task.name,
        ),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dirs", nargs="+", help="run directories to read")
    parser.add_argument("--data-dir", help="dataset directory")
    parser.add_argument(
        "--batches", type=int, default=20, help="training batches that re-estimate"
    )
    parser.add_argument("--output", type=Path, help="JSON path to write instead")
    args = parser.parse_args(argv)
    try:
        runs = [
            measure(d, data_dir=args.data_dir, batches=args.batches)
            for d in args.run_dirs
        ]
    except ValueError as error:  # not a run, no epoch yet, data missing, no BatchNorm
        parser.exit(2, f"bn_drift: {error}\n")
    write_results(
        "bn_drift",
        {
            "method": "per BatchNorm layer and unit (channel), |test-set mean of its "
            "inputs in inference mode - moving mean| / test-set std; shifted_fraction: "
            "units beyond 1 std; variance ratio: moving / test-set variance (+ epsilon)",
            "runs": runs,
        },
        output=args.output,
    )


if __name__ == "__main__":
    main()
