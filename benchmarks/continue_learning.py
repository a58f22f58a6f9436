"""Continue learning from a pretrained model: what a new task costs the old one, per m.

Loads pretrained model `--name` (a registered name, default
`mlp_meta_fashion_mnist_stream`, or the path of a pretrained model directory), measures
its test accuracy on its own dataset (task A, the model card's `dataset`, or
`--dataset`), then, for each m of `--metas` (default 2.5 and 0), starting every time
from the same pretrained weights, trains it on a new task B for `--epochs` epochs with a
fresh `MetaplasticAdam(lr, meta=m)`:

- `--new-task mnist` (default; any `training.data.load_dataset` name whose images have
  task A's shape), or `permuted`: task A's dataset under a fixed random pixel permutation.
- BatchNorm per task, as the protocol runner's `--bn task`: A's BatchNorm state is saved
  before B (training on B starts from it); after B, B is evaluated with its own state,
  then A's gamma/beta are restored and A's moving statistics re-estimated under the
  current weights from `--recalibrate-batches` (20) training batches of A
  (`training.batchnorm`). A is also evaluated with its saved statistics frozen, for
  comparison.

Every m runs once per seed of `--seeds` (the seed shuffles B's batches and, for
`--new-task permuted`, draws B's permutation). Prints a markdown table (task A before /
after, task B, per m: mean ± std over the seeds) and the first m against each other one
(Welch's t-test over the seeds, `benchmarks.paper.welch`), and writes JSON to `--output`
(default `benchmarks/results/continue_learning-<new task>.json`; the README's "Keep
learning" table is rendered from the default model's two files by
`python benchmarks/paper.py table`).

    python benchmarks/continue_learning.py --epochs 5 --seeds 0 1 2
    python benchmarks/continue_learning.py --new-task permuted --metas 2.5 1.35 0
    python benchmarks/continue_learning.py --name path/to/saved_models/my_model --epochs 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.paper import RECALIBRATION_BATCHES, mean_std, welch  # noqa: E402
from tools import readme_tables  # noqa: E402
from training.batchnorm import TaskBatchNorm  # noqa: E402
from training.data import (  # noqa: E402
    DATA_DIR_ENV,
    ImageDataset,
    load_dataset,
    make_pipeline,
    permutation_transform,
    random_permutation,
)
from training.optimizers import MetaplasticAdam  # noqa: E402
from zoo import pretrained  # noqa: E402
from zoo.precision import cpu_description  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"
DEFAULT_NAME = "mlp_meta_fashion_mnist_stream"
# m of the paper's stream Fashion-MNIST experiment (Fig. 3), and plain Adam.
DEFAULT_METAS = (2.5, 0.0)
# The paper's learning rate for MLPs (Laborieux et al. 2021); the card's is preferred.
DEFAULT_LEARNING_RATE = 0.005
# Batches of task A that re-estimate its BatchNorm statistics after B (the paper
# suite's `--recalibrate-bn` when it re-estimates; the runner's default, 0, keeps the
# saved statistics, which this benchmark reports as "BN frozen").
RECALIBRATE_BATCHES = RECALIBRATION_BATCHES
TASK_A = 0  # the pretrained task; B is learned next
PERMUTED = "permuted"
# Per-seed values summarized (mean ± std) per m, and those compared between m.
SUMMARIZED = (
    "task_a_before",
    "task_a_after",
    "forgetting",
    "task_a_after_frozen_bn",
    "task_b",
)
COMPARED = ("task_a_after", "task_b")


def _run_name(meta: float) -> str:
    return f"m{meta:g}"


def _resolve_name(name: str) -> str:
    """A registered name, or a pretrained model directory registered on the fly."""
    if pretrained.is_pretrained_name(name):
        return name
    directory = Path(name).expanduser()
    if not (directory / pretrained.CARD).is_file():
        raise ValueError(
            f"{name} is neither a registered pretrained model "
            f"({', '.join(sorted(pretrained.pretrained_models()))}) nor a directory "
            f"with {pretrained.CARD}"
        )
    card = json.loads((directory / pretrained.CARD).read_text(encoding="utf-8"))
    registered = card.get("name") or directory.name
    pretrained.register_pretrained(
        registered,
        factory=card["factory"],
        kwargs=card["kwargs"],
        directory=directory,
        overwrite=True,
    )
    return registered


def _permuted(x: np.ndarray, perm: np.ndarray) -> np.ndarray:
    n, h, w, c = x.shape
    return x.reshape(n, h * w, c)[:, perm].reshape(x.shape)


def _subset(x: np.ndarray, y: np.ndarray, limit: int | None, seed: int) -> tuple:
    if limit is None or limit >= len(x):
        return x, y
    index = np.sort(np.random.default_rng(seed).choice(len(x), limit, replace=False))
    return x[index], y[index]


def _tasks(
    data_a: ImageDataset, data_b: ImageDataset | None, args, seed: int
) -> tuple[dict, dict]:
    """Tasks A and B of one seed; B is A permuted when `data_b` is `None`."""
    x_a, y_a = _subset(data_a.x_test, data_a.y_test, args.test_samples, seed)
    task_a = {
        "x_train": data_a.x_train,
        "y_train": data_a.y_train,
        "x_test": x_a,
        "y_test": y_a,
    }
    if data_b is None:
        height, width = data_a.input_shape[:2]
        perm = random_permutation(height * width, seed=seed)
        x_b, y_b = _subset(data_a.x_train, data_a.y_train, args.train_samples, seed)
        task_b = {
            "name": f"{data_a.name} permuted (seed {seed})",
            "x_train": x_b,
            "y_train": y_b,
            "x_test": _permuted(x_a, perm),
            "y_test": y_a,
            "transform": permutation_transform(perm),
        }
    else:
        x_b, y_b = _subset(data_b.x_train, data_b.y_train, args.train_samples, seed)
        x_bt, y_bt = _subset(data_b.x_test, data_b.y_test, args.test_samples, seed)
        task_b = {
            "name": data_b.name,
            "x_train": x_b,
            "y_train": y_b,
            "x_test": x_bt,
            "y_test": y_bt,
            "transform": None,
        }
    return task_a, task_b


def _accuracy(model: tf.keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    logits = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(logits.argmax(-1) == y))


def _check_fits(model: tf.keras.Model, data: ImageDataset, what: str) -> None:
    shape, classes = tuple(model.inputs[0].shape[1:]), int(model.outputs[0].shape[-1])
    if data.input_shape != shape or data.num_classes > classes:
        raise ValueError(
            f"{what} {data.name} has {data.input_shape} images and {data.num_classes} "
            f"classes but the model takes {shape} images and {classes} classes; choose "
            f"another task (or --new-task {PERMUTED})"
        )


def continue_learning(
    model: tf.keras.Model,
    pretrained_weights: list,
    *,
    meta: float,
    task_a: dict,
    task_b: dict,
    epochs: int,
    learning_rate: float,
    batch_size: int,
    recalibrate_batches: int,
    seed: int,
    verbose: int,
) -> dict:
    """Trains on task B from the pretrained weights; returns the accuracies on A and B."""
    model.set_weights(pretrained_weights)
    batch_norm = TaskBatchNorm(model)
    batch_norm.save(TASK_A)  # task A's BatchNorm state, saved before B
    tf.keras.utils.set_random_seed(seed)
    model.compile(
        MetaplasticAdam(learning_rate, meta=meta),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    train_b = make_pipeline(
        task_b["x_train"],
        task_b["y_train"],
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
        transform=task_b["transform"],
    )
    started = time.perf_counter()
    history = model.fit(train_b, epochs=epochs, verbose=verbose)
    wall_time = time.perf_counter() - started
    b_accuracy = _accuracy(model, task_b["x_test"], task_b["y_test"])

    with batch_norm.evaluating(TASK_A):  # A's gamma/beta and (stale) statistics
        a_frozen = _accuracy(model, task_a["x_test"], task_a["y_test"])
    batches = make_pipeline(
        task_a["x_train"],
        task_a["y_train"],
        batch_size=batch_size,
        shuffle=True,
        seed=seed,
    )
    with batch_norm.evaluating(TASK_A, batches=batches.take(recalibrate_batches)):
        a_after = _accuracy(model, task_a["x_test"], task_a["y_test"])
    return {
        "meta": meta,
        "task_a_after": a_after,
        "task_a_after_frozen_bn": a_frozen,
        "task_b": b_accuracy,
        "train_loss": [float(v) for v in history.history["loss"]],
        "train_accuracy": [float(v) for v in history.history["accuracy"]],
        "wall_time_s": wall_time,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--name",
        default=DEFAULT_NAME,
        help="registered pretrained model name, or a pretrained model directory",
    )
    parser.add_argument(
        "--dataset", help="task A's dataset (default: the model card's `dataset`)"
    )
    parser.add_argument(
        "--new-task",
        default="mnist",
        help=f"task B: a dataset name, or {PERMUTED!r} (task A's pixels permuted)",
    )
    parser.add_argument("--epochs", type=int, default=5, help="epochs on task B")
    parser.add_argument(
        "--metas",
        type=float,
        nargs="+",
        default=list(DEFAULT_METAS),
        help="values of m",
    )
    parser.add_argument(
        "--lr", type=float, help="learning rate (default: the card's, else 0.005)"
    )
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument(
        "--recalibrate-batches",
        type=int,
        default=RECALIBRATE_BATCHES,
        help="training batches of A that re-estimate its BatchNorm statistics",
    )
    parser.add_argument(
        "--train-samples", type=int, help="train on this many images of B (default all)"
    )
    parser.add_argument(
        "--test-samples",
        type=int,
        help="evaluate on this many test images (default all)",
    )
    parser.add_argument(
        "--seeds",
        "--seed",
        type=int,
        nargs="+",
        default=[0],
        help="seeds: every m trains once per seed (3 or more to test against the noise)",
    )
    parser.add_argument(
        "--data-dir",
        default=os.environ.get(DATA_DIR_ENV),
        help=f"data directory (default ${DATA_DIR_ENV})",
    )
    parser.add_argument("--cache-dir", help="cache of fetched pretrained archives")
    parser.add_argument(
        "--output",
        type=Path,
        help="results file (default benchmarks/results/continue_learning-<new task>.json)",
    )
    parser.add_argument("--verbose", type=int, default=2, help="Keras fit verbosity")
    args = parser.parse_args(argv)
    for option in ("epochs", "batch_size", "recalibrate_batches"):
        if getattr(args, option) <= 0:
            parser.error(f"--{option.replace('_', '-')} must be positive")

    if len(set(args.seeds)) != len(args.seeds):
        parser.error("--seeds must not repeat a seed")
    if len({_run_name(m) for m in args.metas}) != len(args.metas):
        parser.error("--metas must not repeat a value")

    try:
        name = _resolve_name(args.name)
        card = pretrained.pretrained_card(name, cache_dir=args.cache_dir)
        model = pretrained.load_pretrained(name, cache_dir=args.cache_dir)
        dataset_a = args.dataset or card.get("dataset")
        try:
            data_a = load_dataset(dataset_a, data_dir=args.data_dir)
        except ValueError as error:
            source = "--dataset" if args.dataset else "the model card's `dataset`"
            raise ValueError(f"task A ({source}): {error}") from error
        _check_fits(model, data_a, "task A")
        data_b = None
        if args.new_task != PERMUTED:
            data_b = load_dataset(args.new_task, data_dir=args.data_dir)
            _check_fits(model, data_b, "task B")
    except ValueError as error:  # DataError included
        print(f"error: {error}", file=sys.stderr)
        return 2

    hyperparameters = card.get("hyperparameters")
    card_lr = (
        hyperparameters.get("learning_rate")
        if isinstance(hyperparameters, dict)
        else None
    )
    learning_rate = args.lr or card_lr or DEFAULT_LEARNING_RATE
    weights = model.get_weights()
    runs = {_run_name(meta): {"meta": meta, "seeds": {}} for meta in args.metas}
    for seed in args.seeds:
        task_a, task_b = _tasks(data_a, data_b, args, seed)
        model.set_weights(weights)
        before = _accuracy(model, task_a["x_test"], task_a["y_test"])
        print(
            f"seed {seed}: {name}, task A ({data_a.name}) test accuracy "
            f"{100 * before:.2f} % ({len(task_a['y_test']):,} images); task B: "
            f"{task_b['name']}, {len(task_b['y_train']):,} training images, "
            f"{args.epochs} epoch(s), lr {learning_rate}",
            flush=True,
        )
        for meta in args.metas:
            print(
                f"seed {seed}, m = {meta:g}: training on {task_b['name']}", flush=True
            )
            row = continue_learning(
                model,
                weights,
                meta=meta,
                task_a=task_a,
                task_b=task_b,
                epochs=args.epochs,
                learning_rate=learning_rate,
                batch_size=args.batch_size,
                recalibrate_batches=args.recalibrate_batches,
                seed=seed,
                verbose=args.verbose,
            )
            row = {
                "task_b_name": task_b["name"],
                "task_a_before": before,
                "forgetting": before - row["task_a_after"],
                **row,
            }
            runs[_run_name(meta)]["seeds"][str(seed)] = row
    for run in runs.values():
        seeds = run["seeds"].values()
        run["stats"] = {
            metric: mean_std([s[metric] for s in seeds]) for metric in SUMMARIZED
        }
        run["wall_time_s"] = sum(s["wall_time_s"] for s in seeds)
    first, *others = runs
    comparisons = [
        {
            "a": first,
            "b": other,
            "metric": metric,
            **welch(
                [s[metric] for s in runs[first]["seeds"].values()],
                [s[metric] for s in runs[other]["seeds"].values()],
            ),
        }
        for other in others
        for metric in COMPARED
    ]

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = args.output or RESULTS_DIR / f"continue_learning-{args.new_task}.json"
    record = {
        "pretrained": name,
        "card": {
            k: card.get(k)
            for k in ("factory", "kwargs", "dataset", "protocol", "command", "results")
        },
        "task_a": data_a.name,
        "task_b": f"{data_a.name} permuted" if data_b is None else data_b.name,
        "command": "python benchmarks/continue_learning.py "
        + shlex.join(sys.argv[1:] if argv is None else argv),
        "config": {
            **{k: v for k, v in vars(args).items() if k != "output"},
            "learning_rate": learning_rate,
        },
        "runs": runs,
        "comparisons": comparisons,
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_description(),
            "cpus": os.cpu_count(),
            "tensorflow": tf.__version__,
        },
        "created": stamp,
    }
    print("\n" + readme_tables.render_continue_learning([record]))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
