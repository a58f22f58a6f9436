"""Continual-learning accuracy: metaplasticity against the baselines on permuted MNIST.

For every hidden width and method, learns 10 permuted-MNIST tasks one after another
with the project's runner (`training.runner.run`) and reports, after the last task, the
mean test accuracy over all tasks, the accuracy on task 1 and the backward transfer
(BWT). Methods: metaplastic (m = 1.35), plain Adam (m = 0), EWC (lambda = 5e3, m = 0),
SI (m = 0) and joint training on all tasks at once (m = 0, the upper bound). The paper
(Laborieux et al. 2021, Fig. 2) trains 20-40 epochs per task; pick `--epochs` so that the
whole benchmark fits the budget: it prints a markdown table and writes JSON, markdown
and a figure to `benchmarks/results/`. Every run directory is resumable: re-running the
same command continues where an interruption stopped it.

    python benchmarks/accuracy.py --data-dir ../shared/data --epochs 4
    python benchmarks/accuracy.py --quick          # a smoke run on 2 tasks, 1 epoch
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import RunConfig  # noqa: E402
from training.runner import run  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# method -> RunConfig fields (Fig. 2 of the paper: m = 1.35; EWC lambda = 5e3).
METHODS = {
    "meta (m=1.35)": dict(meta=1.35),
    "adam (m=0)": dict(meta=0.0),
    "ewc (lambda=5e3)": dict(meta=0.0, baseline="ewc", ewc_lambda=5e3),
    "si": dict(meta=0.0, baseline="si"),
    "joint": dict(meta=0.0, joint=True),
}


def _run_one(width: int, method: str, args: argparse.Namespace) -> dict:
    slug = method.split(" ")[0]
    config = RunConfig(
        protocol="permuted",
        datasets=("mnist",),
        num_tasks=args.tasks,
        hidden_units=(width, width),
        epochs=args.epochs,
        evaluate="task",
        seed=args.seed,
        data_dir=args.data_dir,
        run_dir=str(
            Path(args.runs) / f"pmnist{args.tasks}-w{width}-e{args.epochs}-{slug}"
        ),
        **METHODS[method],
    )
    started = time.perf_counter()
    summary = run(config, verbose=0)
    accuracies = list(summary["final_accuracy"].values())
    row = {
        "width": width,
        "method": method,
        "mean_accuracy": summary["mean_accuracy"],
        "task1_accuracy": accuracies[0],
        "bwt": summary.get("backward_transfer"),
        "wall_time_s": summary["wall_time_s"],
        "final_accuracy": accuracies,
        "run_dir": summary["run_dir"],
    }
    print(
        f"width {width:5d} {method:18s} mean {100 * row['mean_accuracy']:6.2f}%  "
        f"task 1 {100 * row['task1_accuracy']:6.2f}%  "
        f"({time.perf_counter() - started:.0f} s this call)",
        flush=True,
    )
    return row


def _table(rows: list[dict]) -> str:
    lines = [
        "| width | method | mean accuracy (%) | task 1 at end (%) | BWT (points) "
        "| wall time (s) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        bwt = "" if r["bwt"] is None else f"{100 * r['bwt']:+.1f}"
        lines.append(
            f"| {r['width']} | {r['method']} | {100 * r['mean_accuracy']:.2f} "
            f"| {100 * r['task1_accuracy']:.2f} | {bwt} | {r['wall_time_s']:.0f} |"
        )
    return "\n".join(lines)


def _figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    widths = sorted({r["width"] for r in rows})
    methods = list(dict.fromkeys(r["method"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method in methods:
        points = sorted((r["width"], r) for r in rows if r["method"] == method)
        xs = [w for w, _ in points]
        for ax, key in zip(axes, ("mean_accuracy", "task1_accuracy")):
            ax.plot(xs, [100 * r[key] for _, r in points], "o-", label=method)
    for ax, title in zip(axes, ("mean accuracy over all tasks", "task 1 at the end")):
        ax.set_xscale("log", base=2)
        ax.set_xticks(widths, [str(w) for w in widths])
        ax.set_xlabel("hidden units per layer")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[512, 1024])
    parser.add_argument("--methods", nargs="+", default=list(METHODS), metavar="M")
    parser.add_argument("--tasks", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=4, help="epochs per task")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=os.environ.get("METAPLASTIC_DATA_DIR"))
    parser.add_argument("--runs", default="runs/accuracy-benchmark")
    parser.add_argument("--quick", action="store_true", help="2 tasks, 1 epoch, 64")
    args = parser.parse_args(argv)
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if args.quick:
        args.widths, args.tasks, args.epochs = [64], 2, 1

    started = time.perf_counter()
    rows = [_run_one(w, m, args) for w in args.widths for m in args.methods]
    total = time.perf_counter() - started

    table = _table(rows)
    print(
        f"\n{args.tasks} permuted-MNIST tasks, {args.epochs} epochs per task, "
        f"lr {RunConfig.learning_rate:g}, batch {RunConfig.batch_size}, "
        f"seed {args.seed}\n"
    )
    print(table)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    # A smoke run's numbers are not results: keep them beside its run directories.
    results = Path(args.runs) if args.quick else RESULTS_DIR
    results.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in vars(args).items() if k != "runs"}
    out = results / f"accuracy-{stamp}"
    out.with_suffix(".json").write_text(
        json.dumps({"settings": settings, "total_s": total, "rows": rows}, indent=2)
    )
    out.with_suffix(".md").write_text(
        f"{args.tasks} permuted-MNIST tasks, {args.epochs} epochs per task\n\n"
        + table
        + "\n"
    )
    _figure(rows, out.with_suffix(".png"))
    print(f"\nTotal {total / 60:.1f} min. Wrote {out}.json/.md/.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
