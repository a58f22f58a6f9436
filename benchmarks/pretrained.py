"""The shipped pretrained models, measured as a user gets them.

For every pretrained model in `saved_models/` (or those named with `--names`), builds it
with its factory's `pretrained=True` / `weights=NAME` (sha256-verified), evaluates the
Keras model on its dataset's whole test split, runs the shipped LCE flatbuffer
(`model.tflite`) on the same images with LCE's interpreter, and compares both with the
accuracies the model card states. `--samples N` measures a seeded, class-stratified
sample of N test images instead (`zoo.datasets.stratified_sample`, `--seed`), never
the first N. Prints a markdown table and writes JSON to
`benchmarks/results/pretrained-<UTC time>.json`.

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
from zoo import export, pretrained  # noqa: E402
from zoo.datasets import load_dataset, sample_description  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


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
    started = time.perf_counter()
    result = export.verify_lce(
        (directory / pretrained.FLATBUFFER).read_bytes(),
        model,
        data.x_test,
        data.y_test,
        samples=samples,
        seed=seed,
    )
    return {
        "name": name,
        "factory": call,
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
        "seconds": round(time.perf_counter() - started, 1),
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
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS_DIR / f"pretrained-{stamp}.json"
    path.write_text(json.dumps({"rows": rows}, indent=2) + "\n")
    print(f"Wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
