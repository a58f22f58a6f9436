"""The shipped pretrained models, measured as a user gets them.

For every pretrained model in `saved_models/` (or those named with `--names`), builds it
with its factory's `pretrained=True` / `weights=NAME` (sha256-verified), evaluates the
Keras model on its dataset's whole test split, runs the shipped LCE flatbuffer
(`model.tflite`) on the same images with LCE's interpreter, and compares both with the
accuracies the model card states. A model trained on permuted tasks is measured on
its last task's permuted test images, rebuilt from the card's permutation seed; one
that ships every task's BatchNorm state (its card's `task_batch_norm`) also on every
task's, with that task's state (`zoo.load_pretrained(name, task=...)`, Keras only).
`--samples N` measures a seeded, class-stratified sample of N test images instead
(`zoo.datasets.stratified_sample`, `--seed`), never the first N. Prints a markdown
table and writes JSON to `benchmarks/results/pretrained.json` with, per model, what
its card says of its training and data, and its files' sizes; the README's table of
pretrained models is generated from that file (`tools/readme_tables.py`).

    python benchmarks/pretrained.py --data-dir ../shared/data
    python benchmarks/pretrained.py --names mlp_meta_fashion_mnist_stream --samples 1000
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

import zoo  # noqa: E402
from training.protocols import permuted_tasks  # noqa: E402
from zoo import export, pretrained  # noqa: E402
from zoo.datasets import load_dataset, sample_description  # noqa: E402
from zoo.model_directory import FLATBUFFER, SAVED_MODEL  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "benchmarks" / "results"
RESULTS_FILE = RESULTS_DIR / "pretrained.json"


def _bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _tasks(card: dict, data) -> list | None:
    """The permuted tasks of a card (from its seed), or `None`."""
    protocol = card.get("protocol") or {}
    if "permutations" not in protocol:
        return None
    return permuted_tasks(
        data, num_tasks=protocol["tasks"], seed=protocol["permutations"]["seed"]
    )


def test_images(card: dict, data) -> tuple:
    """The test images and labels a pretrained model is measured on: its dataset's, or
    for permuted tasks its last task's permuted ones (from the card's seed)."""
    tasks = _tasks(card, data)
    if tasks is None:
        return data.x_test, data.y_test
    return tasks[-1].test_images(), tasks[-1].y_test


def task_accuracies(model, directory: Path, card: dict, data) -> dict | None:
    """Keras test accuracy of every permuted task of a model that ships every task's
    BatchNorm state, each with its own (`zoo.pretrained.set_task_batch_norm`), by task
    name; `None` for other models. `model` ends with the last task's state, the one
    it was saved with."""
    shipped = (card.get("task_batch_norm") or {}).get("tasks")
    tasks = _tasks(card, data)
    if not shipped or tasks is None:
        return None
    accuracies = {}
    for task in tasks:
        pretrained.set_task_batch_norm(model, directory, task.name)
        logits = model.predict(task.test_images(), batch_size=256, verbose=0)
        accuracies[task.name] = float((logits.argmax(-1) == task.y_test).mean())
    return accuracies


def card_summary(card: dict) -> dict:
    """What the README's table says of a model's training, from its card."""
    protocol = card.get("protocol") or {}
    hyper = card.get("hyperparameters") or {}
    data = card.get("data") or {}
    return {
        "dataset": card["dataset"],
        "data_note": data.get("note"),
        "protocol": protocol.get("name"),
        "tasks": protocol.get("tasks"),
        "epochs_per_task": protocol.get("epochs_per_task"),
        "evaluated_task": protocol.get("evaluated_task"),
        "epochs": card.get("epochs"),
        "meta": hyper.get("meta"),
        "learning_rate": hyper.get("learning_rate"),
        "lr_schedule": hyper.get("lr_schedule"),
        "batch_size": hyper.get("batch_size"),
        "augment": hyper.get("augment"),
        "precision": hyper.get("precision", "float32"),
        "runs": len(str(card.get("command", "")).splitlines()),
        "wall_time_s": card.get("wall_time_s"),
        "kwargs": card.get("kwargs"),
    }


def measure(
    name: str, *, data_dir: str | None, samples: int | None, seed: int = 0
) -> dict:
    """Keras and LCE test accuracy of pretrained model `name`, built by its factory
    (`pretrained=True` for a factory's default model), on the whole test split or a
    class-stratified sample of `samples` images drawn with `seed`."""
    directory = pretrained.pretrained_directory(name)
    card = json.loads((directory / pretrained.CARD).read_text())
    entry = pretrained.pretrained_models()[name]
    spec = zoo.get_model(entry.factory)
    if spec.default_pretrained == name:
        call = f"zoo.{entry.factory}(pretrained=True)"
        model = spec.factory(pretrained=True)
    else:
        call = f"zoo.{entry.factory}(weights={name!r})"
        model = spec.factory(**entry.kwargs, weights=name)
    data = load_dataset(card["dataset"], data_dir=data_dir)
    x_test, y_test = test_images(card, data)
    started = time.perf_counter()
    result = export.verify_lce(
        (directory / pretrained.FLATBUFFER).read_bytes(),
        model,
        x_test,
        y_test,
        samples=samples,
        seed=seed,
    )
    tasks = task_accuracies(model, directory, card, data)
    return {
        "name": name,
        "factory": call,
        "default": spec.default_pretrained == name,
        "dataset": card["dataset"],
        "samples": result["samples"],
        "total": result["total"],
        "seed": result["seed"],
        "keras_accuracy": result["keras_accuracy"],
        "lce_accuracy": result["lce_accuracy"],
        "argmax_agreement": result["argmax_agreement"],
        "max_abs_logit_diff": result["max_abs_logit_diff"],
        "card_keras_accuracy": card["results"]["keras_test_accuracy"],
        "card_lce_accuracy": (card["results"].get("lce") or {}).get("test_accuracy"),
        "task_accuracy": tasks,
        "mean_task_accuracy": None
        if tasks is None
        else sum(tasks.values()) / len(tasks),
        "card_task_accuracy": (card.get("task_batch_norm") or {}).get(
            "keras_test_accuracy"
        ),
        "seconds": round(time.perf_counter() - started, 1),
        "card": card_summary(card),
        "bytes": {
            "saved_model": _bytes(directory / SAVED_MODEL),
            "flatbuffer": _bytes(directory / FLATBUFFER),
            "directory": _bytes(directory),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--names", nargs="+", help="pretrained names (default: all)")
    parser.add_argument("--data-dir", default=os.environ.get("METAPLASTIC_DATA_DIR"))
    parser.add_argument(
        "--samples",
        type=int,
        help="test images, a class-stratified sample (default: all)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of that sample")
    parser.add_argument(
        "--output", help=f"results file (default: {RESULTS_FILE.relative_to(ROOT)})"
    )
    args = parser.parse_args(argv)
    names = args.names or [
        name
        for name in pretrained.pretrained_models()
        if (Path(pretrained.__file__).parents[1] / "saved_models" / name).exists()
    ]
    rows = []
    for name in names:
        try:
            rows.append(
                measure(
                    name, data_dir=args.data_dir, samples=args.samples, seed=args.seed
                )
            )
        except ValueError as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            return 2
    lines = [
        "| model | test images | Keras accuracy | LCE accuracy | argmax agreement "
        "| card (Keras / LCE) |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        card_lce = r["card_lce_accuracy"]
        lines.append(
            f"| `{r['factory']}` on {r['dataset']} "
            f"| {sample_description(r['samples'], r['total'], seed=r['seed'])} "
            f"| {100 * r['keras_accuracy']:.2f} % | {100 * r['lce_accuracy']:.2f} % "
            f"| {100 * r['argmax_agreement']:.2f} % "
            f"| {100 * r['card_keras_accuracy']:.2f} / "
            + ("—" if card_lce is None else f"{100 * card_lce:.2f}")
            + " % |"
        )
    print("\n".join(lines))
    RESULTS_DIR.mkdir(exist_ok=True)
    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/pretrained.py " + " ".join(argv or sys.argv[1:]),
        "rows": rows,
    }
    path = Path(args.output) if args.output else RESULTS_FILE
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
