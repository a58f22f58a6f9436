"""The paper's reproduction suite: one command per figure or table of Laborieux et al.,
"Synaptic metaplasticity in binarized neural networks" (Nature Communications 2021).

The experiments and their runs are `training.paper.EXPERIMENTS`; each run of each seed
has its run directory `runs/paper/<experiment>/<scale>/<run>-seed<k>`, the one that
`python -m training paper EXPERIMENT RUN --scale S --seed K` uses, so runs started either
way are the same runs.

    python benchmarks/paper.py run fig2 --scale quick --seeds 0 1 2 --data-dir ../shared/data
    python benchmarks/paper.py collect fig2 --scale quick
    python benchmarks/paper.py table              # the README's "Reproduction" section

`run` trains every run x seed that is not finished (a run directory holding some epochs
resumes exactly where it stopped; a finished one is skipped), then collects. `collect`
reads the run directories and writes `benchmarks/results/paper/<experiment>-<scale>.json`
with PNG figures beside it:

- per run and seed: the final test accuracy of every task, their mean, ACC and BWT where
  there are several tasks learned one after another, wall time and epochs; a run not
  finished (still training, or interrupted) is listed as `partial` with how far it got,
  and left out of the statistics;
- per run: mean and sample standard deviation (ddof = 1) over the finished seeds;
- with per-task BatchNorm on distinct tasks (permuted MNIST, dataset sequences): the
  same accuracies with the finished tasks' BatchNorm statistics re-estimated from 20
  training batches under the final weights (`RunConfig.recalibrate_bn` behaviour,
  computed afterwards from the final checkpoint; beyond the paper), beside the paper
  protocol's;
- the comparisons the README draws (m = 1.35 against m = 0, metaplasticity against EWC,
  stream against joint): the difference of the mean accuracies, and whether it is
  within the noise (`NOISE_RULE`: Welch's t-test);
- the paper's value where its text gives one (`PAPER_VALUES`), how the experiment was
  run (`command`), the budget (the runs' summed wall time) and the machine.

The figures: Fig. 2a-e style task accuracies against epochs (mean over seeds, a band of
one standard deviation), Fig. 2g-h |Wh| histograms (m = 0 against the largest m, final
checkpoint of the first finished seed), Table 1 as bars, Fig. 3 accuracy against width,
streams as accuracy after each subset with the joint runs as horizontal lines, and Fig.
5c-e with `experiments.importance` (loss increase of flipping binary weights by |Wh|).
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import math
import os
import platform
import shlex
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
if __name__ == "__main__":  # one module, whether run or imported (tools.readme_tables)
    sys.modules.setdefault("benchmarks.paper", sys.modules[__name__])

from benchmarks.report import RESULTS_DIR, write_results  # noqa: E402
from tools import readme_tables  # noqa: E402
from training import paper  # noqa: E402
from training.config import RunConfig  # noqa: E402
from training.rundir import RunDirectory, summed_machine_seconds  # noqa: E402
from training.status import planned_epochs  # noqa: E402
from zoo.precision import PRECISIONS, cpu_description  # noqa: E402

__all__ = [
    "COMPARED_METRICS",
    "COMPARISONS",
    "NOISE_RULE",
    "PAPER_RESULTS_DIR",
    "PAPER_VALUES",
    "RECALIBRATION_BATCHES",
    "RUNS_ROOT",
    "catalog",
    "collect",
    "compare",
    "main",
    "mean_std",
    "new_figure",
    "relative",
    "run_experiment",
    "run_status",
    "save_figure",
    "welch",
]

RUNS_ROOT = ROOT / "runs" / "paper"
PAPER_RESULTS_DIR = RESULTS_DIR / "paper"
# Training batches that re-estimate a finished task's BatchNorm statistics (beyond the
# paper; the runner's `--recalibrate-bn` default).
RECALIBRATION_BATCHES = 20
P_THRESHOLD = 0.05
# What `compare` can test: each seed's mean accuracy with the paper's protocol, and the
# same with the finished tasks' BatchNorm statistics re-estimated (beyond the paper).
COMPARED_METRICS = ("mean_accuracy", "recalibrated_bn_mean_accuracy")
NOISE_RULE = (
    "a difference of mean final accuracies is within the noise when Welch's two-sided "
    f"t-test over the finished seeds (scipy.stats.ttest_ind, equal_var=False) gives "
    f"p >= {P_THRESHOLD}; undetermined with fewer than 2 finished seeds in either run "
    "or no spread in both."
)

_NOT_FOUND = (
    "not given in text: the copy of the paper reachable from here (abstract, "
    "introduction and Fig. 1 caption of the Nature article) gives no number for it; "
    "Table 1 and the figures' values could not be read"
)

# The paper's values, as read. `mean_accuracy_pct`: the mean final test accuracy over
# the tasks (%); `final_accuracy_pct`: task -> final accuracy (%); `source`: where it
# is read (short, for the README); `note`: how. A run not listed: not given in text.
PAPER_VALUES: Mapping[str, Mapping[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "fig4ab": MappingProxyType(
            {
                "m0": MappingProxyType(
                    dict(
                        mean_accuracy_pct=None,
                        final_accuracy_pct={"mnist": 20.0, "fashion_mnist": 85.0},
                        source="Fig. 1a caption, approximate",
                        note="Fig. 1a caption of the Nature article: a fully connected "
                        "network learns MNIST (epochs 0-50; 97 % reached) then "
                        "Fashion-MNIST (epochs 50-100): Fashion-MNIST reaches 85 % "
                        "while MNIST collapses to ~20 %. The caption does not say that "
                        "it is the m = 0 BNN of Fig. 4a, whose protocol it shares.",
                    )
                )
            }
        ),
    }
)

# The comparisons the README draws, per experiment: (a, b, what). The difference is
# a's mean accuracy minus b's.
_WIDTHS = (512, 1024, 2048, 4096)
COMPARISONS: Mapping[str, tuple[tuple[str, str, str], ...]] = MappingProxyType(
    {
        "fig2": (
            ("m1.35", "m0", "metaplasticity against none"),
            ("m1", "m0", "m = 1 against none"),
            ("m0.5", "m0", "m = 0.5 against none"),
            ("m1.35", "m1", "m = 1.35 against m = 1"),
        ),
        "fig2f": (
            ("m1.35", "m0", "metaplastic rule on a float network"),
            ("m1", "m0", "m = 1 against none, float network"),
            ("m0.5", "m0", "m = 0.5 against none, float network"),
            ("m1.35", "m1", "m = 1.35 against m = 1, float network"),
        ),
        "table1": (
            ("m1.35", "m0", "metaplasticity against none"),
            ("m1.35", "ewc", "metaplasticity against EWC"),
            ("ewc", "random", "EWC against random consolidation"),
        ),
        "fig3ab": tuple(
            (f"m1.35-w{w}", f"ewc-w{w}", f"metaplasticity against EWC, width {w}")
            for w in _WIDTHS
        ),
        "fig3cd": tuple(
            (f"m1.35-w{w}", f"m0-w{w}", f"interleaved, m = 1.35 against 0, width {w}")
            for w in _WIDTHS
        ),
        "fig4ab": (("m1.5", "m0", "metaplasticity against none"),),
        "supp6cd": (("m1.5", "m0", "metaplasticity against none"),),
        "stream_fmnist": (
            ("m2.5", "m0", "metaplastic stream against plain stream"),
            ("m2.5", "joint-m2.5", "stream against joint, m = 2.5"),
            ("m0", "joint-m0", "stream against joint, m = 0"),
            (
                "m2.5",
                "m2.5-affine",
                "BatchNorm without gamma and beta (the paper's) against with them",
            ),
            (
                "m2.5",
                "m2.5-chunks",
                "class-balanced subsets against the reference's random chunks",
            ),
        ),
        "stream_cifar10": (
            ("m13", "m0", "metaplastic stream against plain stream"),
            ("m13", "joint-m13", "stream against joint, m = 13"),
            ("m0", "joint-m0", "stream against joint, m = 0"),
        ),
    }
)

# The figures of each experiment (others: "curves", or "stream" for a stream).
_FIGURES = {
    "fig2": ("curves", "histograms"),
    "table1": ("bars",),
    "fig3ab": ("widths",),
    "fig3cd": ("widths",),
    "fig5cde": ("curves", "importance"),
}
# Fig. 5c-e (`experiments.importance`): the module's (the paper's) settings at the
# paper's scale; fewer draws and images at smaller scales.
IMPORTANCE_SETTINGS: Mapping[str, Mapping[str, int]] = MappingProxyType(
    {
        paper.PAPER_SCALE: MappingProxyType(
            dict(flips_per_bin=100, repeats=100, samples=10_000)
        ),
        "default": MappingProxyType(dict(flips_per_bin=100, repeats=20, samples=2_000)),
    }
)


# Run directories.


def home_of(name: str, run: str) -> tuple[str, str]:
    """The experiment and run whose directories hold run `run` of experiment `name`:
    itself, or the run of another experiment it shares (`Experiment.shared`: Table 1's
    metaplastic run is Fig. 2d's, trained once)."""
    shared = getattr(paper.experiment(name), "shared", None) or {}
    return tuple(shared.get(run, (name, run)))


def run_dir_of(name: str, run: str, scale: str, seed: int, runs_root: Path) -> Path:
    """`runs_root/<experiment>/<scale>/<run>-seed<seed>`, of the experiment that owns
    the run (`home_of`), as `training.paper.run_config` places it."""
    owner, owner_run = home_of(name, run)
    return Path(runs_root) / owner / scale / f"{owner_run}-seed{seed}"


def run_status(run_dir: Path) -> dict:
    """What a run directory holds.

    # Arguments
        run_dir: a run directory (it need not exist).

    # Returns
        `{"status": "missing"}`, or `{"status": "finished" | "partial", "config": ...,
        "completed_epochs": ..., "total_epochs": ..., "wall_time_s": ...,
        "machines": ...}` (`machines`: its training seconds by machine,
        `Progress.machine_seconds`), with the summary of a finished run and `running`
        (who holds it) for a partial one.

    # Raises
        ValueError: if its files cannot be read.
    """
    directory = RunDirectory(run_dir)
    if not directory.config_path.exists():
        return {"status": "missing"}
    config = directory.read_config()
    total = planned_epochs(config)
    progress = directory.load_progress()
    completed = progress.completed_epochs if progress else 0
    if directory.summary_path.exists() and completed >= total:
        summary = directory.read_summary()
        return {
            "status": "finished",
            "config": config,
            "summary": summary,
            "completed_epochs": completed,
            "total_epochs": total,
            "wall_time_s": summary["wall_time_s"],
            "machines": progress.machine_seconds(),
            "checkpoint": progress.checkpoint,
        }
    return {
        "status": "partial",
        "config": config,
        "completed_epochs": completed,
        "total_epochs": total,
        "wall_time_s": round(progress.wall_time, 1) if progress else 0.0,
        "machines": progress.machine_seconds() if progress else {},
        "running": directory.holder(),
    }


# Training.


def _suite_command(
    name: str,
    *,
    scale: str,
    seeds: Sequence[int],
    runs: Sequence[str] | None,
    precision: str | None,
    data_dir: str | None,
) -> str:
    words = ["python", "benchmarks/paper.py", "run", name, "--scale", scale, "--seeds"]
    words += [str(s) for s in seeds]
    if runs:
        words += ["--runs", *runs]
    if precision:
        words += ["--precision", precision]
    if data_dir:
        words += ["--data-dir", data_dir]
    return shlex.join(words)


def run_experiment(
    name: str,
    *,
    scale: str = paper.PAPER_SCALE,
    seeds: Sequence[int] = (0, 1, 2),
    runs: Sequence[str] | None = None,
    precision: str | None = None,
    data_dir: str | None = None,
    runs_root: Path = RUNS_ROOT,
    results_dir: Path = PAPER_RESULTS_DIR,
    fields: Mapping[str, Any] | None = None,
    verbose: int = 2,
    importance: Mapping[str, int] | None = None,
) -> tuple[Path, list[str]]:
    """Trains every run x seed of an experiment that is not finished, then collects.

    A run directory holding some epochs resumes after the last one (and ends exactly as
    an uninterrupted run); a finished one is skipped. A run that fails (e.g. a NaN loss)
    is reported and the others go on.

    # Arguments
        name: an experiment of `training.paper.EXPERIMENTS`.
        scale: `"paper"` or one of the experiment's smaller scales.
        seeds: the seeds to run.
        runs: the runs to train (default: all of the experiment's).
        precision: `"float32"` or `"bf16"`; default that of an existing run directory,
            else float32.
        data_dir: where the datasets are.
        runs_root: where the run directories are (`<experiment>/<scale>/<run>-seed<k>`).
        results_dir: where `collect` writes.
        fields: other `RunConfig` fields over the scale's (tests: tiny runs).
        verbose: the runner's verbosity (2: a line per epoch).
        importance: settings of the Fig. 5c-e analysis (see `collect`).

    # Returns
        `(results_path, failures)`: the JSON `collect` wrote, and one line per run that
        failed.

    # Raises
        ValueError: for an unknown experiment, scale, run, seed or precision.
    """
    from training.runner import run

    spec = paper.experiment(name)
    chosen = list(runs or spec.runs)
    for run_name in chosen:
        spec.fields_of(run_name, scale)  # ValueError for an unknown run or scale
    seeds = [int(s) for s in seeds]
    if not seeds or any(s < 0 for s in seeds) or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct integers >= 0, got {seeds}.")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    command = _suite_command(
        name,
        scale=scale,
        seeds=seeds,
        runs=runs,
        precision=precision,
        data_dir=data_dir,
    )
    failures = []
    for seed in seeds:
        for run_name in chosen:
            run_dir = run_dir_of(name, run_name, scale, seed, runs_root)
            where = f"{name} {run_name} seed {seed} ({scale})"
            status = run_status(run_dir)
            if status["status"] == "finished":
                print(f"{where}: finished, skipped", flush=True)
                continue
            extra = dict(fields or {})
            chosen_precision = precision or (
                status["config"].precision if "config" in status else None
            )
            if chosen_precision:
                extra["precision"] = chosen_precision
            if data_dir is not None:
                extra["data_dir"] = data_dir
            config = paper.run_config(
                name, run_name, scale=scale, seed=seed, run_dir=str(run_dir), **extra
            )
            print(
                f"{where}: "
                + (
                    f"resuming after epoch {status['completed_epochs']}/"
                    f"{status['total_epochs']}"
                    if status["status"] == "partial"
                    else "starting"
                )
                + f", {config.precision}",
                flush=True,
            )
            tf.keras.backend.clear_session()
            try:
                run(config, verbose=verbose)
            except ValueError as error:  # NaN loss, data, run directory in use, ...
                line = f"{where}: {(str(error).splitlines() or [''])[0]}"
                print(f"error: {line}", file=sys.stderr, flush=True)
                failures.append(line)
                continue
            RunDirectory(run_dir).record_command(command)
    path = collect(
        name,
        scale=scale,
        runs_root=runs_root,
        results_dir=results_dir,
        data_dir=data_dir,
        importance=importance,
    )
    return path, failures


# Reading the runs.


def _rows(run_dir: Path) -> list[dict]:
    """`metrics.csv` as dicts of floats (missing values absent)."""
    path = RunDirectory(run_dir).metrics_path
    if not path.exists():
        return []
    rows = []
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for key, value in row.items():
                if value in ("", None):
                    continue
                try:
                    parsed[key] = float(value)
                except ValueError:
                    parsed[key] = value
            rows.append(parsed)
    return rows


def _curve(rows: list[dict], tasks: Sequence[str]) -> tuple[list[float], np.ndarray]:
    """The epochs at which every task was evaluated, and the accuracies there
    (`(epochs, tasks)`)."""
    evaluated = [r for r in rows if all(f"acc/{t}" in r for t in tasks)]
    return (
        [r["epoch"] for r in evaluated],
        np.array([[r[f"acc/{t}"] for t in tasks] for r in evaluated]).reshape(
            len(evaluated), len(tasks)
        ),
    )


def _round(value, digits: int = 6):
    """`value` with its floats rounded to `digits` decimals, or to `digits`
    significant digits below 1 in magnitude, so that a small setting such as a weight
    decay of 1e-7 is written as itself, not as 0."""
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        if value and abs(value) < 1:
            return float(f"{value:.{digits}g}")
        return round(value, digits)
    if isinstance(value, dict):
        return {k: _round(v, digits) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_round(v, digits) for v in value]
    if isinstance(value, np.generic):
        return _round(value.item(), digits)
    return value


def relative(path: Path) -> str:
    """`path` relative to the project's root when it lies inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


def mean_std(values: Sequence[float]) -> dict:
    """Mean, sample standard deviation (ddof = 1; `None` for one value) and count."""
    values = [float(v) for v in values]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {
        "mean": float(np.mean(values)),
        "std": float(np.std(values, ddof=1)) if len(values) > 1 else None,
        "n": len(values),
    }


def _model_accuracy(model: tf.keras.Model, task) -> float:
    correct = total = 0
    for images, labels in task.test_data(batch_size=1000):
        predicted = tf.argmax(model(images, training=False), axis=-1)
        labels = tf.cast(tf.reshape(labels, [-1]), predicted.dtype)
        correct += int(tf.reduce_sum(tf.cast(predicted == labels, tf.int64)))
        total += int(tf.size(labels))
    return correct / total


def recalibrated_accuracies(
    run_dir: Path,
    *,
    batches: int = RECALIBRATION_BATCHES,
    data_dir: str | None = None,
    restored=None,
) -> dict:
    """Final test accuracies of a finished per-task-BatchNorm run, every finished task
    evaluated with its saved BatchNorm state as the paper does, and with that state's
    moving statistics first re-estimated from `batches` training batches under the
    final weights (`RunConfig.recalibrate_bn`).

    # Arguments
        run_dir: a finished run directory.
        batches: the recalibration batches.
        data_dir: where the datasets are (default: the run's, else the environment's).
        restored: the run's `training.assembly.RestoredRun`, if already restored.

    # Returns
        `{"batches", "paper_protocol": {task: accuracy}, "recalibrated": {task:
        accuracy}, "recalibrated_mean_accuracy", "paper_protocol_mean_accuracy"}`.
    """
    from training.assembly import restore_run
    from training.batchnorm import (
        TaskBatchNorm,
        recalibration_batches,
        uses_task_statistics,
    )

    restored = restored or restore_run(run_dir, data_dir=data_dir)
    config, model = restored.config, restored.model
    last = min(
        (restored.completed_epochs - 1) // config.epochs, len(restored.tasks) - 1
    )
    states = TaskBatchNorm(model, restored.bn_states)
    out = {"batches": batches, "paper_protocol": {}, "recalibrated": {}}
    for count, key in ((0, "paper_protocol"), (batches, "recalibrated")):
        recalibrating = dataclasses.replace(config, recalibrate_bn=count)
        for j, task in enumerate(restored.eval_tasks):
            if uses_task_statistics(
                recalibrating, j, current_task=last, saved=restored.bn_states
            ):
                with states.evaluating(
                    j, batches=recalibration_batches(recalibrating, task, j)
                ):
                    accuracy = _model_accuracy(model, task)
            else:
                accuracy = _model_accuracy(model, task)
            out[key][task.name] = accuracy
        out[f"{key}_mean_accuracy"] = float(np.mean(list(out[key].values())))
    return out


def _hidden_weights(model: tf.keras.Model) -> dict[str, np.ndarray]:
    """Hidden layer -> its latent binary weights (float kernels for a float model),
    the output layer left out."""
    from training.optimizers import is_binary_variable, is_kernel_variable, layer_name

    variables = [v for v in model.trainable_variables if is_binary_variable(v)] or [
        v for v in model.trainable_variables if is_kernel_variable(v)
    ]
    weights = {layer_name(v): np.asarray(v.numpy()) for v in variables}
    hidden = dict(list(weights.items())[:-1])
    return hidden or weights


def _uses_recalibration(config: RunConfig, tasks: int) -> bool:
    return (
        config.batch_norm == "task"
        and config.protocol != "stream"
        and not config.joint
        and tasks > 1
    )


def _previous(path: Path) -> dict:
    """An earlier results file, or `{}`."""
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def _post_hoc_cache(record: Mapping[str, Any]) -> dict:
    """The post-hoc analyses of an earlier results file, by run directory."""
    cached = {}
    for run in record.get("runs", {}).values():
        for entry in run.get("seeds", {}).values():
            if "post_hoc" in entry:
                cached[entry["run_dir"]] = entry["post_hoc"]
    return cached


def _differing_settings(stored: Mapping[str, Any], expected: RunConfig) -> list[str]:
    """The fields, other than the seed and the precision, in which the run
    configuration `stored` (a results file's) differs from `expected`."""
    try:
        have = RunConfig.from_json(stored).identity()
    except (TypeError, ValueError):
        return ["config"]
    want = expected.identity()
    return sorted(
        k for k in want if k not in ("seed", "precision") and have.get(k) != want[k]
    )


def outdated_settings(record: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings in which a results file's finished runs differ from their
    experiment's today (a default changed since they ran, say).

    # Arguments
        record: a results file of `collect`, as parsed JSON.

    # Returns
        `{run: {field: the value it ran with}}`, for the runs with such fields only
        (seed and precision are not settings of the experiment).
    """
    outdated: dict[str, dict[str, Any]] = {}
    name = record.get("experiment")
    if name not in paper.EXPERIMENTS:
        return outdated
    for run_name, run in record.get("runs", {}).items():
        if run_name not in paper.experiment(name).runs:
            continue
        owner, owner_run = home_of(name, run_name)
        for seed_text, entry in run.get("seeds", {}).items():
            if entry.get("status") != "finished" or not entry.get("config"):
                continue
            expected = paper.run_config(
                owner, owner_run, scale=record["scale"], seed=int(seed_text)
            )
            ran = RunConfig.from_json(entry["config"]).to_json()
            for field in _differing_settings(entry["config"], expected):
                outdated.setdefault(run_name, {})[field] = ran.get(field)
    return outdated


def _kept_seeds(
    record: Mapping[str, Any],
    run_name: str,
    found: Mapping[str, dict],
    expected: Any,
) -> dict[str, dict]:
    """The finished seeds of `run_name` in an earlier results file whose run
    directories are not here (another machine or session trained them) or not
    finished (a rerun still training): kept, marked `kept_from_results_file`, when
    their settings are those of the runs found here (else of the experiment,
    `expected(seed)`); a seed trained with other settings is left out, with a line
    saying why. A kept seed with a rerun in progress names it in `rerun_in_progress`
    and counts until the rerun finishes."""
    kept = {}
    previous = record.get("runs", {}).get(run_name, {}).get("seeds", {})
    reference = next((s["config"] for s in found.values()), None)
    for seed_text, entry in previous.items():
        here = found.get(seed_text)
        if entry.get("status") != "finished" or (
            here is not None and here["status"] == "finished"
        ):
            continue
        wanted = (
            RunConfig.from_json(dict(reference, seed=int(seed_text)))
            if reference is not None
            else expected(int(seed_text))
        )
        differing = _differing_settings(entry.get("config", {}), wanted)
        if differing:
            print(
                f"{run_name} seed {seed_text}: the earlier results file's run used "
                f"other settings ({', '.join(differing)}); left out",
                flush=True,
            )
            continue
        kept[seed_text] = dict(entry, kept_from_results_file=True)
        if here is not None:
            rerun = {
                k: here[k] for k in ("run_dir", "completed_epochs", "total_epochs")
            }
            kept[seed_text]["rerun_in_progress"] = rerun
            print(
                f"{run_name} seed {seed_text}: its rerun in {rerun['run_dir']} is at "
                f"epoch {rerun['completed_epochs']}/{rerun['total_epochs']}; the "
                "earlier results file's finished run counts until it finishes",
                flush=True,
            )
    return kept


def pooled_curve(groups: Sequence[tuple[list, np.ndarray, np.ndarray | None, int]]):
    """Mean and sample standard deviation over every seed of several curves, exactly
    as if computed over the seeds' own curves.

    # Arguments
        groups: curves `(epochs, mean, std, n)` over `n` seeds each, `mean` and `std`
            arrays `(epochs, tasks)`; a single seed is its accuracies with std `None`.

    # Returns
        `(epochs, mean, std, n)` over every seed, truncated to the shortest curve
        (std `None` for one seed), or `None` if the curves' epochs disagree.
    """
    length = min(len(epochs) for epochs, *_ in groups)
    epochs = list(groups[0][0][:length])
    if any(list(e[:length]) != epochs for e, *_ in groups):
        return None
    total = sum(n for *_, n in groups)
    first = sum(n * np.asarray(mean)[:length] for _, mean, _, n in groups)
    second = sum(
        n * np.asarray(mean)[:length] ** 2
        + (0 if std is None else (n - 1) * np.asarray(std)[:length] ** 2)
        for _, mean, std, n in groups
    )
    mean = first / total
    std = (
        np.sqrt(np.maximum(second - total * mean**2, 0) / (total - 1))
        if total > 1
        else None
    )
    return epochs, mean, std, total


def _importance(
    run_dir: Path, settings: Mapping[str, int], data_dir: str | None
) -> dict:
    """Fig. 5c-e on a finished run: `experiments.importance` on every binary layer."""
    from experiments.importance import (
        binary_layer_names,
        load_run_model,
        loss_increase_by_hidden_weight,
    )

    model, x, y, info = load_run_model(
        run_dir, samples=settings["samples"], data_dir=data_dir, seed=0
    )
    layers = {}
    for layer in binary_layer_names(model):
        result = loss_increase_by_hidden_weight(
            model,
            layer=layer,
            x=x,
            y=y,
            flips_per_bin=settings["flips_per_bin"],
            repeats=settings["repeats"],
            seed=0,
        ).to_json()
        result.pop("increases")  # every draw: (bins, repeats); the means suffice
        layers[layer] = result
    return {"settings": dict(settings), "task": info["task"], "layers": layers}


def collect(
    name: str,
    *,
    scale: str = paper.PAPER_SCALE,
    runs_root: Path = RUNS_ROOT,
    results_dir: Path = PAPER_RESULTS_DIR,
    data_dir: str | None = None,
    importance: Mapping[str, int] | None = None,
) -> Path:
    """Reads an experiment's run directories at one scale and writes its results file
    `<results_dir>/<experiment>-<scale>.json` and its figures beside it.

    Post-hoc analyses (re-estimated BatchNorm statistics, Fig. 5c-e) of a run whose
    final checkpoint has not changed since the last results file are read from it
    instead of computed again. Run directories stay out of git: a finished seed of the
    last results file (for a run shared with another experiment, of that
    experiment's) whose run directory is not here is kept, marked
    `kept_from_results_file`, with its curve, when it ran with the settings of the run
    directories found (else of the experiment); one that ran otherwise is left out
    with a printed line. A seed whose run directory is here but not finished (a
    rerun still training) is kept the same way until the rerun finishes.

    # Arguments
        name: an experiment of `training.paper.EXPERIMENTS`.
        scale: the scale whose runs to read.
        runs_root: where the run directories are.
        results_dir: where to write.
        data_dir: where the datasets are, for the post-hoc analyses (default: each
            run's own, else `$METAPLASTIC_DATA_DIR`).
        importance: Fig. 5c-e settings (`flips_per_bin`, `repeats`, `samples`);
            default `IMPORTANCE_SETTINGS` of the scale.

    # Returns
        The path of the JSON file.

    # Raises
        ValueError: for an unknown experiment or scale, or if no run directory of the
            experiment exists at that scale.
    """
    spec = paper.experiment(name)
    if scale not in spec.scale_names():
        spec.fields_of(next(iter(spec.runs)), scale)  # the scale's ValueError
    started = time.perf_counter()
    results_dir = Path(results_dir)
    json_path = results_dir / f"{name}-{scale}.json"
    previous = _previous(json_path)
    owner_records = {
        owner: _previous(results_dir / f"{owner}-{scale}.json")
        for owner, _ in (home_of(name, r) for r in spec.runs)
        if owner != name
    }
    cached = _post_hoc_cache(previous)
    for record in owner_records.values():
        cached.update(_post_hoc_cache(record))
    curve_notes: list[str] = []
    directories_read = 0
    figures = _FIGURES.get(name) or (
        ("stream",) if spec.fields.get("protocol") == "stream" else ("curves",)
    )
    settings = dict(
        importance or IMPORTANCE_SETTINGS.get(scale, IMPORTANCE_SETTINGS["default"])
    )
    runs: dict[str, dict] = {}
    curves: dict[str, dict] = {}
    histogram_sources: dict[str, Path] = {}
    for run_name in spec.runs:
        owner, owner_run = home_of(name, run_name)
        seed_dirs = sorted(
            (
                p
                for p in (Path(runs_root) / owner / scale).glob(f"{owner_run}-seed*")
                if p.name.rpartition("-seed")[2].isdigit()
            ),
            key=lambda p: int(p.name.rpartition("-seed")[2]),
        )
        seeds: dict[str, dict] = {}
        finished_rows: list[tuple[list[float], np.ndarray]] = []
        task_names: list[str] = []
        for run_dir in seed_dirs:
            seed_text = run_dir.name.rpartition("-seed")[2]
            if not seed_text.isdigit():
                continue
            status = run_status(run_dir)
            if status["status"] == "missing":
                continue
            directories_read += 1
            config = status["config"]
            entry = {
                "status": status["status"],
                "run_dir": relative(run_dir),
                "config": config.to_json(),
                "completed_epochs": status["completed_epochs"],
                "total_epochs": status["total_epochs"],
                "wall_time_s": status["wall_time_s"],
                "machines": status["machines"],
            }
            if status["status"] == "partial":
                entry["running"] = status["running"]
                seeds[seed_text] = entry
                continue
            summary = status["summary"]
            task_names = list(summary["final_accuracy"])
            entry.update(
                final_accuracy=summary["final_accuracy"],
                mean_accuracy=summary["mean_accuracy"],
                warnings=summary.get("warnings", []),
            )
            num_trained = len(summary["accuracy_matrix"])
            if "backward_transfer" in summary and num_trained > 1:
                entry["acc"] = summary["final_average_accuracy"]
                entry["bwt"] = summary["backward_transfer"]
            wants_recalibration = _uses_recalibration(config, num_trained)
            wants_importance = "importance" in figures
            key = {
                "checkpoint": status["checkpoint"],
                "epochs": status["completed_epochs"],
            }
            post_hoc = cached.get(entry["run_dir"])
            if post_hoc and {k: post_hoc.get(k) for k in key} != key:
                post_hoc = None
            if (
                post_hoc
                and wants_importance
                and post_hoc.get("importance", {}).get("settings") != settings
            ):
                post_hoc = None
            if post_hoc is None and (wants_recalibration or wants_importance):
                post_hoc = dict(key)
                tf.keras.backend.clear_session()
                if wants_recalibration:
                    print(f"{entry['run_dir']}: re-estimating BatchNorm", flush=True)
                    post_hoc["recalibrated_bn"] = recalibrated_accuracies(
                        run_dir, data_dir=data_dir
                    )
                if wants_importance:
                    print(f"{entry['run_dir']}: Fig. 5c-e analysis", flush=True)
                    post_hoc["importance"] = _importance(run_dir, settings, data_dir)
            if post_hoc:
                entry["post_hoc"] = post_hoc
                recal = post_hoc.get("recalibrated_bn")
                if recal:
                    entry["recalibrated_bn"] = {
                        "batches": recal["batches"],
                        "final_accuracy": recal["recalibrated"],
                        "mean_accuracy": recal["recalibrated_mean_accuracy"],
                        # The paper protocol evaluated again from the checkpoint: it
                        # must agree with the run's own numbers.
                        "paper_protocol_check_max_abs_diff": max(
                            abs(
                                recal["paper_protocol"][t]
                                - summary["final_accuracy"][t]
                            )
                            for t in task_names
                        ),
                    }
            epochs_done, accuracies = _curve(_rows(run_dir), task_names)
            # Each seed's own curve, so that a later results file can draw it without
            # the run directory.
            entry["curve"] = _round(
                {"epochs": epochs_done, "accuracy": accuracies.tolist()}, 4
            )
            seeds[seed_text] = entry
            if "histograms" in figures:
                histogram_sources.setdefault(run_name, run_dir)
            finished_rows.append((epochs_done, accuracies))
        groups = [(epochs, acc, None, 1) for epochs, acc in finished_rows]
        # A run shared with another experiment: its seeds are that experiment's.
        source, source_run = (
            (previous, run_name) if owner == name else (owner_records[owner], owner_run)
        )
        kept = _kept_seeds(
            source,
            source_run,
            seeds,
            lambda seed, o=owner, r=owner_run: paper.run_config(
                o, r, scale=scale, seed=seed
            ),
        )
        without_curve = []
        for seed_text, entry in kept.items():
            task_names = task_names or list(entry["final_accuracy"])
            seeds[seed_text] = entry
            if entry.get("curve"):
                curve = entry["curve"]
                groups.append((curve["epochs"], np.array(curve["accuracy"]), None, 1))
            else:
                without_curve.append(seed_text)
        if without_curve:
            # A results file written before seeds kept their own curves: its curve is
            # the mean and spread of exactly these seeds, pooled in whole.
            before = source["runs"][source_run]
            before_finished = {
                k for k, e in before["seeds"].items() if e.get("status") == "finished"
            }
            curve = before.get("curve")
            if curve and before_finished == set(without_curve):
                groups.append(
                    (
                        curve["epochs"],
                        np.array(curve["mean"]),
                        None if curve["std"] is None else np.array(curve["std"]),
                        len(without_curve),
                    )
                )
            else:
                curve_notes.append(
                    f"{run_name}: the curve leaves out seeds "
                    f"{', '.join(without_curve)} (kept from an earlier results file "
                    "without their curves)"
                )
        seeds = dict(sorted(seeds.items(), key=lambda item: int(item[0])))
        finished = [s for s in seeds.values() if s["status"] == "finished"]
        statistics = {
            "seeds_finished": len(finished),
            "seeds_partial": len(seeds) - len(finished),
            "mean_accuracy": mean_std([s["mean_accuracy"] for s in finished]),
            "final_accuracy": {
                t: mean_std([s["final_accuracy"][t] for s in finished])
                for t in task_names
            },
            "wall_time_s": sum(s["wall_time_s"] for s in finished),
            "machines": summed_machine_seconds(finished),
        }
        if finished and all("bwt" in s for s in finished):
            statistics["acc"] = mean_std([s["acc"] for s in finished])
            statistics["bwt"] = mean_std([s["bwt"] for s in finished])
        recalibrated = [
            _seed_metric(s, "recalibrated_bn_mean_accuracy") for s in finished
        ]
        if finished and None not in recalibrated:
            statistics["recalibrated_bn_mean_accuracy"] = mean_std(recalibrated)
        runs[run_name] = {
            "shared_with": None if owner == name else f"{owner} {owner_run}",
            "fields": _round(json.loads(json.dumps(spec.fields_of(run_name, scale)))),
            "seeds": seeds,
            "statistics": statistics,
            "paper": _paper_value(name, run_name),
        }
        pooled = pooled_curve(groups) if groups else None
        if groups and pooled is None:
            curve_notes.append(f"{run_name}: no curve, its seeds' epochs disagree")
        if pooled:
            epochs_pooled, mean, std, n = pooled
            curves[run_name] = {
                "epochs": epochs_pooled,
                "tasks": task_names,
                "mean": mean,
                "std": std,
                "n": n,
                "config": finished[0]["config"],
            }
            runs[run_name]["curve"] = _round(
                {
                    "epochs": curves[run_name]["epochs"],
                    "tasks": task_names,
                    "mean": curves[run_name]["mean"].tolist(),
                    "std": None
                    if curves[run_name]["std"] is None
                    else curves[run_name]["std"].tolist(),
                    "seeds": n,
                },
                4,
            )
    present = {r: v for r, v in runs.items() if v["seeds"]}
    if not directories_read:
        raise ValueError(
            f"no run directory of {name} at scale {scale!r} under "
            f"{Path(runs_root) / name / scale}; run `python benchmarks/paper.py run "
            f"{name} --scale {scale}` first."
        )
    comparisons = [
        compare(runs, a, b, what)
        for a, b, what in COMPARISONS.get(name, ())
        if a in runs and b in runs and (a in present or b in present)
    ]
    configs = [s["config"] for r in present.values() for s in r["seeds"].values()]
    precisions = sorted({c["precision"] for c in configs})
    seeds_found = sorted({int(s) for r in present.values() for s in r["seeds"]})
    data_dirs = sorted({c["data_dir"] for c in configs if c.get("data_dir")})
    command = _suite_command(
        name,
        scale=scale,
        seeds=seeds_found,
        runs=None if len(present) == len(spec.runs) else list(present),
        precision=precisions[0]
        if precisions != ["float32"] and len(precisions) == 1
        else None,
        data_dir=data_dirs[0] if len(data_dirs) == 1 else None,
    )
    stem = results_dir / f"{name}-{scale}"
    written = _figures(
        spec, scale, figures, curves, runs, histogram_sources, stem, data_dir
    )
    histogram_path = Path(f"{stem}-histograms.png")
    if "histograms" in figures and histogram_path not in written:
        # No run directory to draw Fig. 2g-h from: keep the earlier file's.
        for run_name, entry in previous.get("runs", {}).items():
            if run_name in runs and "hidden_weights" in entry:
                runs[run_name]["hidden_weights"] = entry["hidden_weights"]
        if histogram_path.exists() and any(
            "hidden_weights" in r for r in runs.values()
        ):
            written.append(histogram_path)
    wall = [s["wall_time_s"] for r in present.values() for s in r["seeds"].values()]
    fields = {
        "command": command,
        "written_by": shlex.join(["python", *sys.argv]) if sys.argv[0] else "python",
        "experiment": name,
        "figure": spec.figure,
        "title": spec.title,
        "authors_command": spec.command,
        "notes": spec.notes,
        "scale": scale,
        "scale_fields": _round(
            json.loads(json.dumps(dict(spec.scales.get(scale, {}))))
        ),
        "precisions": precisions,
        "budget": {
            "wall_time_s": round(sum(wall), 1),
            "runs_finished": sum(
                r["statistics"]["seeds_finished"] for r in runs.values()
            ),
            "runs_partial": sum(
                r["statistics"]["seeds_partial"] for r in runs.values()
            ),
            "note": "sum of the training wall times of every run directory read "
            "and of the seeds kept from the earlier results file (evaluation, "
            "checkpoints and plots included; partial runs so far); "
            "`collect_time_s` is this file's post-hoc analyses and figures; "
            "`machines` splits the wall time by the machine that trained (CPU, CPUs "
            "and instruction class; 'not recorded' before runs recorded it)",
            "collect_time_s": None,
            "machines": summed_machine_seconds(
                [s for r in present.values() for s in r["seeds"].values()]
            ),
        },
        # The machine that wrote this file; each seed's `machines` (and the budget's)
        # give where the training ran.
        "host": _machine(),
        "accuracy_unit": "fraction in [0, 1]; differences too (x 100 for points)",
        "statistics_rule": "mean and sample standard deviation (ddof = 1) over the "
        "finished seeds; partial runs are listed but left out",
        "recalibration": f"per-task BatchNorm runs: `recalibrated_bn` re-estimates each "
        f"finished task's BatchNorm statistics from {RECALIBRATION_BATCHES} training "
        f"batches under the final weights before evaluating it (beyond the paper; "
        f"`mean_accuracy` is the paper's protocol, statistics frozen at each task's end)",
        "noise_rule": NOISE_RULE,
        "comparisons": comparisons,
        "runs": runs,
        "figures": [relative(p) for p in written],
        "kept_rule": "a finished seed of the earlier results file whose run "
        "directory is not here, or not finished (`rerun_in_progress`), is kept "
        "(`kept_from_results_file`) when its settings, "
        "but for seed and precision, are those of the run directories found (else of "
        "the experiment); the curves pool every seed",
        "not_shown": _not_shown(figures, curves) + curve_notes,
    }
    fields["budget"]["collect_time_s"] = round(time.perf_counter() - started, 1)
    return write_results(name, _round(fields), output=json_path)


def _machine() -> dict:
    return {
        "platform": platform.platform(),
        "processor": cpu_description(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


def _paper_value(name: str, run: str) -> dict:
    value = PAPER_VALUES.get(name, {}).get(run)
    if value is None:
        return {
            "mean_accuracy_pct": None,
            "final_accuracy_pct": None,
            "source": "not given in text",
            "note": _NOT_FOUND,
        }
    return json.loads(json.dumps(dict(value)))


def _seed_metric(seed: Mapping[str, Any], metric: str) -> float | None:
    """One finished seed's value of a `COMPARED_METRICS` metric (`None` if absent)."""
    if metric == "recalibrated_bn_mean_accuracy":
        return (seed.get("recalibrated_bn") or {}).get("mean_accuracy")
    return seed.get("mean_accuracy")


def compare(
    runs: Mapping[str, dict],
    a: str,
    b: str,
    what: str,
    *,
    metric: str = "mean_accuracy",
) -> dict:
    """The difference of two runs' mean final accuracies over their finished seeds,
    and whether it is within the noise (`NOISE_RULE`).

    # Arguments
        runs: run name -> its entry in a results file (with `seeds`).
        a, b: the runs compared (the difference is a - b).
        what: what the comparison shows.
        metric: one of `COMPARED_METRICS`: each seed's mean accuracy with the paper's
            protocol (`"mean_accuracy"`), or with the finished tasks' BatchNorm
            statistics re-estimated after the last task (beyond the paper,
            `"recalibrated_bn_mean_accuracy"`).

    # Returns
        `{"a", "b", "what", "metric", "n", "mean", "difference", "standard_error",
        "p_value", "within_noise", "reason"}`; `within_noise` is `None` when
        undetermined (`reason` says why).

    # Raises
        ValueError: for a metric not in `COMPARED_METRICS`.
    """
    if metric not in COMPARED_METRICS:
        raise ValueError(
            f"cannot compare {metric!r}: the metric must be one of "
            f"{', '.join(COMPARED_METRICS)}."
        )
    values: dict[str, list[float]] = {}
    missing = False
    for run in (a, b):
        seeds = runs.get(run, {}).get("seeds", {})
        found = [
            _seed_metric(s, metric) for s in seeds.values() if s["status"] == "finished"
        ]
        missing = missing or None in found
        values[run] = [v for v in found if v is not None]
    result = {
        "a": a,
        "b": b,
        "what": what,
        "metric": metric,
        "n": [len(values[a]), len(values[b])],
        "mean": [float(np.mean(values[r])) if values[r] else None for r in (a, b)],
        "difference": None,
        "standard_error": None,
        "p_value": None,
        "within_noise": None,
        "reason": None,
    }
    if missing:  # never a test over a subset of the finished seeds
        result["mean"] = [None, None]
        result["reason"] = f"a finished seed has no {metric}"
        return result
    if not values[a] or not values[b]:
        result["reason"] = "a run has no finished seed"
        return result
    result.update(welch(values[a], values[b]))
    return result


def welch(a: Sequence[float], b: Sequence[float]) -> dict:
    """Mean(a) - mean(b) over per-seed values, and whether it is within the noise by
    `NOISE_RULE` (Welch's two-sided t-test, p >= `P_THRESHOLD`).

    # Arguments
        a, b: one value per finished seed of each side, at least one each.

    # Returns
        `{"n", "mean", "difference", "standard_error", "p_value", "within_noise",
        "reason"}`; `within_noise` is `None` when undetermined (fewer than 2 values on
        a side, or no spread on both), and `reason` then says why.

    # Raises
        ValueError: if a side has no value.
    """
    if not len(a) or not len(b):
        raise ValueError("welch needs at least one value on each side")
    result = {
        "n": [len(a), len(b)],
        "mean": [float(np.mean(a)), float(np.mean(b))],
        "standard_error": None,
        "p_value": None,
        "within_noise": None,
        "reason": None,
    }
    result["difference"] = result["mean"][0] - result["mean"][1]
    if min(len(a), len(b)) < 2:
        result["reason"] = "fewer than 2 finished seeds"
        return result
    var_a, var_b = np.var(a, ddof=1), np.var(b, ddof=1)
    result["standard_error"] = float(math.sqrt(var_a / len(a) + var_b / len(b)))
    if var_a == 0 and var_b == 0:
        result["reason"] = "no spread in either run"
        return result
    from scipy import stats

    p_value = float(stats.ttest_ind(a, b, equal_var=False).pvalue)
    result["p_value"] = p_value
    result["within_noise"] = bool(p_value >= P_THRESHOLD)
    return result


def _not_shown(figures: Sequence[str], curves: Mapping[str, dict]) -> list[str]:
    notes = []
    if not curves:
        notes.append("no figure: no run is finished yet")
    return notes


# Figures.


def new_figure(width: float, height: float):
    """A matplotlib figure of `width` x `height` inches drawn off-screen (Agg)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure, path: Path) -> Path:
    """Writes `figure` as PNG to `path` (creating its folder), then clears it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, format="png")
    figure.clear()
    return path


def _colors(count: int) -> list:
    from matplotlib import colormaps

    if count <= 10:
        return [colormaps["tab10"](i) for i in range(count)]
    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.95, count)]


def _run_label(run: str, curve: Mapping[str, Any] | None) -> str:
    n = f", {curve['n']} seed{'s' if curve['n'] > 1 else ''}" if curve else ""
    return f"{run}{n}"


def _figures(
    spec, scale, figures, curves, runs, histogram_sources, stem: Path, data_dir
) -> list[Path]:
    written = []
    if not curves:
        return written
    title = f"{spec.figure}: {spec.name}, {scale} scale"
    if "curves" in figures:
        written.append(_plot_curves(curves, title, stem.with_suffix(".png")))
    if "stream" in figures:
        written.append(_plot_stream(curves, title, stem.with_suffix(".png")))
    if "bars" in figures:
        written.append(_plot_bars(runs, title, stem.with_suffix(".png")))
    if "widths" in figures:
        written.append(_plot_widths(runs, curves, title, stem.with_suffix(".png")))
    if "histograms" in figures and histogram_sources:
        path = _plot_histograms(
            histogram_sources, runs, title, Path(f"{stem}-histograms.png"), data_dir
        )
        if path:
            written.append(path)
    if "importance" in figures:
        path = _plot_importance(runs, title, Path(f"{stem}-importance.png"))
        if path:
            written.append(path)
    return written


def _band(ax, x, mean, std, color, label, **kwargs):
    x = np.asarray(x)
    ax.plot(x, 100 * mean, color=color, label=label, **kwargs)
    if std is not None:
        ax.fill_between(
            x,
            100 * (mean - std),
            100 * (mean + std),
            color=color,
            alpha=0.2,
            linewidth=0,
        )


def _plot_curves(curves: Mapping[str, dict], title: str, path: Path) -> Path:
    """Fig. 2a-e / 4a-b style: one panel per run, test accuracy of each task against
    epochs (mean over seeds, one standard deviation as a band), task switches dashed."""
    count = len(curves)
    columns = min(count, 2)
    rows = -(-count // columns)
    figure = new_figure(6.0 * columns, 3.6 * rows + 0.6)
    axes = []
    for index, (run, curve) in enumerate(curves.items()):
        ax = figure.add_subplot(rows, columns, index + 1)
        axes.append(ax)
        tasks = curve["tasks"]
        colors = _colors(len(tasks))
        epochs = curve["epochs"]
        for t, (task, color) in enumerate(zip(tasks, colors)):
            std = None if curve["std"] is None else curve["std"][:, t]
            _band(
                ax,
                epochs,
                curve["mean"][:, t],
                std,
                color,
                task,
                marker="o" if len(epochs) <= 40 else None,
                markersize=2.5,
            )
        per_task = curve["config"]["epochs"]
        end = max(epochs) if epochs else per_task
        for boundary in np.arange(per_task, end, per_task):
            ax.axvline(boundary + 0.5, color="grey", linestyle="--", linewidth=0.8)
        ax.set_ylim(0, 100)
        ax.set_xlim(0, end + 1)
        ax.set_title(_run_label(run, curve), fontsize="medium")
        ax.set_xlabel("epoch")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
        if len(tasks) <= 12:
            ax.legend(fontsize="x-small", loc="lower left", ncol=2)
    figure.suptitle(title)
    figure.tight_layout()
    return save_figure(figure, path)


def _plot_stream(curves: Mapping[str, dict], title: str, path: Path) -> Path:
    """Stream runs: test accuracy after each subset (mean, band of one standard
    deviation); joint runs as horizontal lines at their final accuracy."""
    figure = new_figure(8.0, 4.8)
    ax = figure.add_subplot()
    streams = {r: c for r, c in curves.items() if not c["config"]["joint"]}
    joints = {r: c for r, c in curves.items() if c["config"]["joint"]}
    colors = _colors(max(len(streams), len(joints), 1))
    subsets = 1
    for (run, curve), color in zip(streams.items(), colors):
        per_task = curve["config"]["epochs"]
        x = np.asarray(curve["epochs"]) / per_task  # the subset just learned
        subsets = max(subsets, int(x[-1]) if len(x) else 1)
        std = None if curve["std"] is None else curve["std"][:, 0]
        _band(
            ax,
            x,
            curve["mean"][:, 0],
            std,
            color,
            _run_label(run, curve),
            marker="o",
            markersize=3,
        )
    for (run, curve), color in zip(joints.items(), colors):
        mean = 100 * curve["mean"][-1, 0]
        ax.axhline(
            mean,
            color=color,
            linestyle="--",
            linewidth=1.2,
            label=f"{_run_label(run, curve)}: {mean:.1f} %",
        )
        if curve["std"] is not None:
            std = 100 * curve["std"][-1, 0]
            ax.axhspan(mean - std, mean + std, color=color, alpha=0.12, linewidth=0)
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, subsets + 0.5)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("subsets learned")
    ax.set_ylabel("test accuracy (%)")
    values = [100 * c["mean"][:, 0] for c in curves.values()]
    low = min(float(v.min()) for v in values)
    ax.set_ylim(max(0.0, 5 * math.floor(low / 5) - 5), 101)
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="lower right")
    ax.set_title(title, fontsize="medium")
    figure.tight_layout()
    return save_figure(figure, path)


def _plot_bars(runs: Mapping[str, dict], title: str, path: Path) -> Path:
    """Table 1: mean final accuracy of each run (bar, one standard deviation), each
    seed as a dot, the paper's value as a cross."""
    shown = {r: v for r, v in runs.items() if v["statistics"]["seeds_finished"]}
    figure = new_figure(max(5.0, 1.6 * len(shown) + 2), 4.5)
    ax = figure.add_subplot()
    colors = _colors(len(shown))
    for i, (entry, color) in enumerate(zip(shown.values(), colors)):
        stats = entry["statistics"]["mean_accuracy"]
        ax.bar(
            i,
            100 * stats["mean"],
            yerr=100 * (stats["std"] or 0),
            color=color,
            alpha=0.8,
            capsize=4,
        )
        seeds = [
            100 * s["mean_accuracy"]
            for s in entry["seeds"].values()
            if s["status"] == "finished"
        ]
        ax.plot([i] * len(seeds), seeds, "o", color="black", markersize=3)
        ax.text(
            i,
            50 * stats["mean"],
            f"{100 * stats['mean']:.1f} %",
            ha="center",
            va="center",
            color="white",
            fontweight="bold",
        )
        value = entry["paper"].get("mean_accuracy_pct")
        if value is not None:
            ax.plot(i, value, "x", color="red", markersize=9, label="paper")
    ax.set_xticks(range(len(shown)))
    ax.set_xticklabels(
        [
            _run_label(r, {"n": v["statistics"]["seeds_finished"]})
            for r, v in shown.items()
        ]
    )
    ax.set_ylim(0, 100)
    ax.set_ylabel("mean final test accuracy (%)")
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title, fontsize="medium")
    figure.tight_layout()
    return save_figure(figure, path)


def _plot_widths(runs, curves, title: str, path: Path) -> Path:
    """Fig. 3: mean final accuracy against the hidden width, one line per method."""
    methods: dict[str, list[tuple[int, dict]]] = {}
    for run, entry in runs.items():
        if not entry["statistics"]["seeds_finished"]:
            continue
        method = run.rpartition("-w")[0] or run
        config = curves[run]["config"] if run in curves else entry["fields"]
        methods.setdefault(method, []).append(
            (int(config["hidden_units"][0]), entry["statistics"]["mean_accuracy"])
        )
    figure = new_figure(6.5, 4.5)
    ax = figure.add_subplot()
    widths = set()
    for (method, points), color in zip(methods.items(), _colors(len(methods))):
        points.sort()
        x = [w for w, _ in points]
        widths.update(x)
        y = [100 * s["mean"] for _, s in points]
        err = [100 * (s["std"] or 0) for _, s in points]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, color=color, label=method)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sorted(widths))
    ax.set_xticklabels([str(w) for w in sorted(widths)])
    ax.set_xlabel("hidden units per layer")
    ax.set_ylabel("mean final test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    ax.set_title(title, fontsize="medium")
    figure.tight_layout()
    return save_figure(figure, path)


def _plot_histograms(sources, runs, title, path: Path, data_dir) -> Path | None:
    """Fig. 2g-h: |Wh| of each hidden layer at the end, m = 0 against the largest m
    (final checkpoint of the first finished seed of each)."""
    from training.assembly import restore_run

    metas = {
        run: entry["fields"]["meta"]
        for run, entry in runs.items()
        if run in sources and isinstance(entry["fields"]["meta"], (int, float))
    }
    if len(metas) < 2:
        return None
    low = min(metas, key=metas.get)
    high = max(metas, key=metas.get)
    weights = {}
    for run in (low, high):
        tf.keras.backend.clear_session()
        model = restore_run(sources[run], data_dir=data_dir).model
        weights[run] = _hidden_weights(model)
        for layer, values in weights[run].items():
            magnitude = np.abs(values)
            runs[run].setdefault("hidden_weights", {})[layer] = _round(
                {
                    "run_dir": relative(sources[run]),
                    "fraction_abs_wh_above_1": float(np.mean(magnitude > 1.0)),
                    "abs_wh_quantiles": {
                        str(q): float(np.quantile(magnitude, q))
                        for q in (0.5, 0.9, 0.99)
                    },
                    "max_abs_wh": float(magnitude.max()),
                }
            )
    layers = list(weights[low])
    figure = new_figure(5.0 * len(layers), 4.0)
    for index, layer in enumerate(layers):
        ax = figure.add_subplot(1, len(layers), index + 1)
        top = max(float(np.abs(weights[r][layer]).max()) for r in (low, high))
        bins = np.linspace(0.0, top, 80)
        for run, color in ((low, "tab:orange"), (high, "tab:blue")):
            magnitude = np.abs(weights[run][layer]).ravel()
            ax.hist(
                magnitude,
                bins=bins,
                log=True,
                histtype="step",
                linewidth=1.5,
                color=color,
                label=f"{run} (m = {metas[run]:g}): |Wh| > 1: "
                f"{np.mean(magnitude > 1):.1%}",
            )
        ax.axvline(1.0, color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlabel("|Wh|")
        ax.set_ylabel("weights")
        ax.set_title(layer, fontsize="medium")
        ax.legend(fontsize="x-small")
    figure.suptitle(f"{title}: hidden weights at the end")
    figure.tight_layout()
    return save_figure(figure, path)


def _plot_importance(runs, title: str, path: Path) -> Path | None:
    """Fig. 5c-e: loss increase per flipped weight against |Wh|, one panel per binary
    layer (first finished seed of the first run)."""
    for run, entry in runs.items():
        for seed, seed_entry in entry["seeds"].items():
            analysis = seed_entry.get("post_hoc", {}).get("importance")
            if not analysis:
                continue
            layers = analysis["layers"]
            figure = new_figure(4.8 * len(layers), 4.0)
            for index, (layer, result) in enumerate(layers.items()):
                ax = figure.add_subplot(1, len(layers), index + 1)
                x = np.array(result["mean_abs_wh"], dtype=float)
                y = np.array(result["mean_increase_per_weight"], dtype=float)
                err = np.array(result["std_increase_per_weight"], dtype=float)
                valid = np.isfinite(x) & np.isfinite(y)
                if valid.any():
                    ax.errorbar(
                        x[valid],
                        y[valid],
                        yerr=np.nan_to_num(err[valid]),
                        fmt="o",
                        capsize=3,
                    )
                else:
                    ax.text(
                        0.5,
                        0.5,
                        "every bin has fewer weights than a draw flips",
                        ha="center",
                        va="center",
                        transform=ax.transAxes,
                        fontsize="small",
                    )
                ax.axhline(0.0, color="grey", linestyle="--", linewidth=0.8)
                ax.set_xlabel("|Wh| of the flipped weights")
                ax.set_ylabel("loss increase per flipped weight")
                ax.set_title(
                    f"{layer}: {result['flips_per_bin']} flips x {result['repeats']} "
                    f"draws per bin",
                    fontsize="small",
                )
                ax.grid(alpha=0.3)
            figure.suptitle(f"{title}: {run} seed {seed}, {analysis['task']}")
            figure.tight_layout()
            return save_figure(figure, path)
    return None


# The README table.


def _setting(spec) -> str:
    """The paper's setting of an experiment in a few words."""
    fields = spec.fields
    protocol = fields.get("protocol")
    datasets = " then ".join(fields.get("datasets", ()))
    epochs = fields.get("epochs")
    if protocol == "permuted":
        what = f"{fields.get('num_tasks')} permuted {datasets} tasks"
    elif protocol == "stream":
        what = f"{datasets} in {fields.get('num_tasks')} subsets"
    else:
        what = datasets
    widths = {
        tuple(r.get("hidden_units", fields.get("hidden_units", ())))
        for r in spec.runs.values()
    }
    model = fields.get("model", "mlp_meta")
    if model.startswith("mlp"):
        shapes = sorted({w[0] for w in widths if w})
        shape = (
            "-".join(map(str, next(iter(widths))))
            if len(widths) == 1
            else f"widths {', '.join(map(str, shapes))}"
        )
        model = f"{model} {shape}"
    joint = ", joint" if fields.get("joint") else ""
    names = list(spec.runs)
    shown = ", ".join(names) if len(names) <= 4 else f"{len(names)}: {names[0]}, ..."
    return f"{what}{joint}, {epochs} epochs each, {model}; runs {shown}"


def catalog() -> list[dict]:
    """The paper's experiments for the README table, in order: `experiment`, `figure`,
    `setting`, `runs`, `paper_values` (run -> value) and `command` (the suite's
    command at the paper's scale)."""
    entries = []
    for name in paper.experiment_names():
        spec = paper.experiment(name)
        entries.append(
            {
                "experiment": name,
                "figure": spec.figure,
                "setting": _setting(spec),
                "runs": list(spec.runs),
                "paper_values": {
                    run: _paper_value(name, run)
                    for run in spec.runs
                    if run in PAPER_VALUES.get(name, {})
                },
                "command": _suite_command(
                    name,
                    scale=paper.PAPER_SCALE,
                    seeds=(0, 1, 2),
                    runs=None,
                    precision=None,
                    data_dir="../shared/data",
                ),
            }
        )
    return entries


# Command line.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/paper.py",
        description="The paper's reproduction suite: train, collect, tabulate.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    run = commands.add_parser("run", help="train what is not finished, then collect")
    collect_parser = commands.add_parser(
        "collect", help="write the results JSON and figures from the run directories"
    )
    for p in (run, collect_parser):
        p.add_argument("experiment", help=", ".join(paper.experiment_names()))
        p.add_argument(
            "--scale",
            default=paper.PAPER_SCALE,
            help="paper (default) or a smaller scale of the experiment, e.g. quick",
        )
        p.add_argument("--data-dir", help="dataset directory")
        p.add_argument(
            "--runs-root",
            type=Path,
            default=RUNS_ROOT,
            help="where the run directories are (default runs/paper)",
        )
        p.add_argument(
            "--results-dir",
            type=Path,
            default=PAPER_RESULTS_DIR,
            help="where to write (default benchmarks/results/paper)",
        )
    run.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    run.add_argument("--runs", nargs="+", help="default: every run of the experiment")
    run.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="default: an existing run directory's, else float32",
    )
    run.add_argument("--quiet", action="store_true", help="no line per epoch")
    table = commands.add_parser(
        "table", help="rewrite the README's generated sections from the results files"
    )
    table.add_argument(
        "--check",
        action="store_true",
        help="only say whether they are up to date (exit 1 if not)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The command line; returns the exit code (2 for bad input, 1 if a run failed or
    the README is stale with `table --check`)."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "run":
            _, failures = run_experiment(
                args.experiment,
                scale=args.scale,
                seeds=args.seeds,
                runs=args.runs,
                precision=args.precision,
                data_dir=args.data_dir,
                runs_root=args.runs_root,
                results_dir=args.results_dir,
                verbose=0 if args.quiet else 2,
            )
            for line in failures:
                print(f"failed: {line}", file=sys.stderr)
            return 1 if failures else 0
        if args.command == "collect":
            collect(
                args.experiment,
                scale=args.scale,
                runs_root=args.runs_root,
                results_dir=args.results_dir,
                data_dir=args.data_dir,
            )
            return 0
        if args.check:
            stale = readme_tables.stale_sections()
            for name in stale:
                print(
                    f"README section {name!r} is stale: run python benchmarks/paper.py "
                    f"table"
                )
            return 1 if stale else 0
        changed = readme_tables.update_readme()
        print(
            f"README: rewrote {', '.join(changed)}" if changed else "README: up to date"
        )
        return 0
    except ValueError as error:
        print(f"error: {(str(error).splitlines() or [''])[0]}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
