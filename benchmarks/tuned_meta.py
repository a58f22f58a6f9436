"""Tuning where m matters: a Keras Tuner search of m, then the tuned m against m = 0.

The setting (`SETTING`) is a scaled Fig. 2 of the paper: 6 permuted-MNIST tasks learned
one after another, 3 epochs each, `mlp_meta` 512-512, learning rate 0.005 (the paper's),
the paper's protocol (BatchNorm statistics saved per task, weight decay 1e-7). Two steps,
each resuming where it stopped:

1. `python -m tuning search` (Bayesian optimization, 8 trials) over m in [0, 6] at the
   fixed learning rate; every trial is a whole 6-task run scored on a 10 % validation
   split of the training data (`cl_objective`, the mean accuracy over the 6 tasks after
   the last one). The test set is not read.
2. The best m and m = 0, trained on all the training data with seeds 0, 1, 2 and
   evaluated on the test set; the difference of the mean accuracies and whether it is
   within the noise (Welch's t-test, `benchmarks.paper.NOISE_RULE`).

    python benchmarks/tuned_meta.py --data-dir ../shared/data

writes `benchmarks/results/tuned_meta.json` (every trial, the best m, per-seed test
accuracies, statistics, wall times) and `tuned_meta.png` (validation objective against m;
test accuracy of both runs), and the README's "Tuning" table is generated from it
(`python benchmarks/paper.py table`). Run directories go to `runs/tuning/` (outside git).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shlex
import sys
import time
from collections.abc import Sequence
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import paper as suite  # noqa: E402
from benchmarks.report import RESULTS_DIR, write_results  # noqa: E402
from training.config import RunConfig  # noqa: E402
from training.runner import run  # noqa: E402
from tuning import cli as tuning_cli  # noqa: E402

__all__ = ["SEARCH", "SETTING", "main", "search_arguments"]

# The protocol and budget shared by the trials and the comparison runs.
SETTING = dict(
    protocol="permuted",
    datasets=("mnist",),
    num_tasks=6,
    epochs=3,
    hidden_units=(512, 512),
    learning_rate=0.005,
    batch_size=100,
)
# The search: what `python -m tuning search` is given besides the setting.
SEARCH = dict(
    tuner="bayesian", max_trials=8, meta_range=(0.0, 6.0), validation_split=0.1, seed=0
)
RUNS_ROOT = ROOT / "runs" / "tuning"
PROJECT = "pmnist6-512"
RESULTS = RESULTS_DIR / "tuned_meta.json"


def search_arguments(
    setting: dict,
    *,
    directory: Path,
    project: str,
    data_dir: str | None,
    max_trials: int = SEARCH["max_trials"],
) -> list[str]:
    """The `python -m tuning search` arguments of the search over m on `setting`.

    # Arguments
        setting: the protocol and budget (`SETTING`, or a smaller one for tests).
        directory: the tuner's directory.
        project: the search's name in it.
        data_dir: dataset directory (`None`: tensorflow-datasets).
        max_trials: the search's trials.

    # Returns
        The argument list, without the program name.
    """
    words = ["search", "--protocol", setting["protocol"], "--datasets"]
    words += list(setting["datasets"])
    words += ["--tasks", str(setting["num_tasks"]), "--epochs", str(setting["epochs"])]
    words += ["--hidden-units", *(str(u) for u in setting["hidden_units"])]
    words += ["--batch-size", str(setting["batch_size"])]
    words += ["--lr", str(setting["learning_rate"]), "--tuner", SEARCH["tuner"]]
    words += ["--max-trials", str(max_trials), "--meta-range"]
    words += [str(v) for v in SEARCH["meta_range"]]
    words += ["--validation-split", str(SEARCH["validation_split"])]
    words += ["--seed", str(SEARCH["seed"]), "--directory", str(directory)]
    words += ["--project", project, "--no-retrain", "--quiet"]
    if data_dir:
        words += ["--data-dir", data_dir]
    return words


def _trials(project_dir: Path) -> list[dict]:
    """Every trial of the search: its m, objective and wall time."""
    trials = []
    with (project_dir / "results.csv").open() as f:
        for row in csv.DictReader(f):
            summary = project_dir / "trials" / row["trial"] / "summary.json"
            wall = (
                json.loads(summary.read_text())["wall_time_s"]
                if summary.exists()
                else None
            )
            objective = row["cl_objective"]
            trials.append(
                {
                    "trial": row["trial"],
                    "status": row["status"],
                    "meta": float(row["meta"]),
                    "validation_mean_accuracy": float(objective) if objective else None,
                    "wall_time_s": wall,
                }
            )
    return trials


def _train(config: RunConfig) -> dict:
    """Trains (or resumes) a comparison run; the entry of one seed."""
    status = suite.run_status(Path(config.run_dir))
    if (
        status["status"] == "finished"
        and status["config"].identity() != config.identity()
    ):
        raise ValueError(
            f"{config.run_dir} holds a finished run of another configuration (a "
            f"search of other settings?); move it away or use another --runs-root."
        )
    if status["status"] == "finished":
        summary = status["summary"]
    else:
        summary = run(config, verbose=0)
    return {
        "status": "finished",
        "mean_accuracy": float(summary["mean_accuracy"]),
        "final_accuracy": summary["final_accuracy"],
        "bwt": summary.get("backward_transfer"),
        "wall_time_s": summary["wall_time_s"],
        "run_dir": suite.relative(Path(config.run_dir)),
    }


def _plot(trials: Sequence[dict], runs: dict, path: Path) -> Path:
    figure = suite.new_figure(9.0, 3.6)
    left, right = figure.subplots(1, 2)
    done = [t for t in trials if t["validation_mean_accuracy"] is not None]
    left.scatter(
        [t["meta"] for t in done],
        [100 * t["validation_mean_accuracy"] for t in done],
        color="tab:blue",
    )
    left.set_xlabel("m")
    left.set_ylabel("validation mean accuracy over the tasks (%)")
    left.set_title("search (one trial per point)")
    names = list(runs)
    for i, name in enumerate(names):
        values = [100 * s["mean_accuracy"] for s in runs[name]["seeds"].values()]
        right.scatter([i] * len(values), values, color="tab:orange", zorder=3)
        right.bar(i, sum(values) / len(values), color="lightgray")
    right.set_xticks(range(len(names)))
    right.set_xticklabels(
        [f"{n} (m = {runs[n]['meta']:.3g})" for n in names], fontsize=8
    )
    right.set_ylabel("test mean accuracy over the tasks (%)")
    right.set_title("tuned m against m = 0 (dots: seeds)")
    figure.tight_layout()
    return suite.save_figure(figure, path)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python benchmarks/tuned_meta.py",
        description="Search m on 6-task permuted MNIST, then compare the tuned m "
        "with m = 0 on the test set over several seeds.",
    )
    parser.add_argument("--data-dir", help="dataset directory")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument(
        "--max-trials", type=int, default=SEARCH["max_trials"], help="search trials"
    )
    parser.add_argument("--runs-root", type=Path, default=RUNS_ROOT)
    parser.add_argument("--output", type=Path, default=RESULTS)
    parser.add_argument(
        "--setting",
        type=json.loads,
        default={},
        help="JSON fields replacing SETTING's (e.g. '{\"epochs\": 1}'; the results "
        "file records them)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    setting = {**SETTING, **args.setting}
    unknown = sorted(set(setting) - set(SETTING))
    if unknown:
        print(f"error: --setting: unknown fields {unknown}", file=sys.stderr)
        return 2
    setting["datasets"] = tuple(setting["datasets"])
    setting["hidden_units"] = tuple(setting["hidden_units"])
    words = search_arguments(
        setting,
        directory=args.runs_root,
        project=PROJECT,
        data_dir=args.data_dir,
        max_trials=args.max_trials,
    )
    start = time.time()
    code = tuning_cli.main(words)
    if code:
        return code
    project_dir = args.runs_root / PROJECT
    best = json.loads((project_dir / "best_hyperparameters.json").read_text())
    best_meta = float(best["hyperparameters"]["meta"])
    trials = _trials(project_dir)
    runs = {}
    try:
        for name, meta in (("tuned", best_meta), ("m0", 0.0)):
            runs[name] = {"meta": meta, "seeds": {}}
            for seed in args.seeds:
                config = RunConfig(
                    **setting,
                    meta=meta,
                    seed=seed,
                    data_dir=args.data_dir,
                    run_dir=str(project_dir / "compare" / f"{name}-seed{seed}"),
                )
                runs[name]["seeds"][str(seed)] = _train(config)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for entry in runs.values():
        entry["stats"] = suite.mean_std(
            [s["mean_accuracy"] for s in entry["seeds"].values()]
        )
    comparison = suite.compare(
        runs, "tuned", "m0", "the tuned m against m = 0 (Adam), test set"
    )
    search_wall = sum(t["wall_time_s"] or 0.0 for t in trials)
    compare_wall = sum(
        s["wall_time_s"] for entry in runs.values() for s in entry["seeds"].values()
    )
    path = write_results(
        "tuned_meta",
        {
            "setting": {
                k: list(v) if isinstance(v, tuple) else v for k, v in setting.items()
            },
            "protocol_defaults": "the paper's: BatchNorm statistics saved per task "
            "(recalibrate_bn 0), weight decay 1e-7, one optimizer per task",
            "search": {
                "command": "python -m tuning "
                + shlex.join(
                    search_arguments(
                        setting,
                        directory=Path(suite.relative(args.runs_root)),
                        project=PROJECT,
                        data_dir=args.data_dir,
                        max_trials=args.max_trials,
                    )
                ),
                **{
                    k: list(v) if isinstance(v, tuple) else v for k, v in SEARCH.items()
                },
                "max_trials": args.max_trials,
                "objective": "mean validation accuracy over the tasks after the last one",
                "trials": trials,
                "best_trial": best["trial"],
                "best_meta": best_meta,
                "best_validation_mean_accuracy": best["cl_objective"],
                "wall_time_s": round(search_wall, 1),
            },
            "runs": runs,
            "comparison": comparison,
            "noise_rule": suite.NOISE_RULE,
            "budget_s": round(search_wall + compare_wall, 1),
            "session_wall_time_s": round(time.time() - start, 1),
        },
        output=args.output,
    )
    print(f"wrote {_plot(trials, runs, path.with_suffix('.png'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
