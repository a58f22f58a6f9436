"""Training throughput: MetaplasticAdam vs plain legacy Adam, side by side.

For each model and XLA setting, both optimizers train the same architecture on the same
synthetic data; timed epochs alternate between them (after a warm-up epoch each) and the
median and best samples/s of each are reported with their ratios. Prints a table and
writes JSON to `benchmarks/results/`.

Shared 2-core machines deliver bursts of full speed and stretches of roughly half speed
(seen here as a bimodal samples/s, whatever the optimizer), so alternate many epochs and
read the best-of ratio next to the median one.

    python benchmarks/throughput.py                 # the issue's configurations
    python benchmarks/throughput.py --quick         # a smoke run in a few seconds
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from training.optimizers import MetaplasticAdam  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# name -> (factory, factory kwargs, input shape, batch size, steps per timed epoch)
CONFIGS = {
    "mlp_meta-1024": (
        zoo.mlp_meta,
        {"hidden_units": (1024, 1024)},
        (28, 28, 1),
        100,
        60,
    ),
    "mlp_meta-4096": (
        zoo.mlp_meta,
        {"hidden_units": (4096, 4096)},
        (28, 28, 1),
        100,
        12,
    ),
    "vgg16_meta": (zoo.vgg16_meta, {}, (32, 32, 3), 64, 3),
}
QUICK = {
    "mlp_meta-256": (zoo.mlp_meta, {"hidden_units": (256, 256)}, (28, 28, 1), 100, 10),
}


def synthetic_data(input_shape, batch_size: int, steps: int) -> tf.data.Dataset:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch_size * steps, *input_shape)).astype("float32")
    y = rng.integers(0, 10, batch_size * steps)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).cache()


def compiled_model(factory, kwargs, input_shape, optimizer, jit_compile: bool):
    model = factory(input_shape=input_shape, **kwargs)
    model.compile(
        optimizer,
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit_compile,
    )
    return model


def time_epoch(model, data, samples: int) -> float:
    start = time.perf_counter()
    model.fit(data, epochs=1, verbose=0)
    return samples / (time.perf_counter() - start)


def benchmark(name, config, *, jit_compile: bool, repeats: int) -> dict:
    factory, kwargs, input_shape, batch_size, steps = config
    data = synthetic_data(input_shape, batch_size, steps)
    samples = batch_size * steps
    optimizers = {
        "adam": tf.keras.optimizers.legacy.Adam(0.005, epsilon=1e-8),
        "metaplastic_adam": MetaplasticAdam(0.005, meta=1.35),
    }
    models = {
        key: compiled_model(factory, kwargs, input_shape, opt, jit_compile)
        for key, opt in optimizers.items()
    }
    for model in models.values():  # warm-up: tracing, XLA compilation, allocation
        model.fit(data, epochs=1, verbose=0)
    rates = {key: [] for key in models}
    for _ in range(repeats):  # alternate so that machine noise hits both alike
        for key, model in models.items():
            rates[key].append(time_epoch(model, data, samples))
    medians = {key: statistics.median(values) for key, values in rates.items()}
    best = {key: max(values) for key, values in rates.items()}
    result = {
        "model": name,
        "xla": jit_compile,
        "batch_size": batch_size,
        "samples_per_epoch": samples,
        "adam_samples_per_s": medians["adam"],
        "metaplastic_samples_per_s": medians["metaplastic_adam"],
        "ratio": medians["metaplastic_adam"] / medians["adam"],
        "adam_best_samples_per_s": best["adam"],
        "metaplastic_best_samples_per_s": best["metaplastic_adam"],
        "ratio_best": best["metaplastic_adam"] / best["adam"],
        "all_samples_per_s": rates,
    }
    print(
        f"{name:>14} | xla={str(jit_compile):5} | median: adam {medians['adam']:8.1f}, "
        f"metaplastic {medians['metaplastic_adam']:8.1f}, ratio {result['ratio']:.3f} | "
        f"best: adam {best['adam']:8.1f}, metaplastic {best['metaplastic_adam']:8.1f}, "
        f"ratio {result['ratio_best']:.3f}",
        flush=True,
    )
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke configuration")
    parser.add_argument("--models", nargs="*", help=f"subset of {sorted(CONFIGS)}")
    parser.add_argument(
        "--repeats", type=int, default=7, help="timed epochs per optimizer"
    )
    parser.add_argument("--no-xla", action="store_true", help="skip the XLA runs")
    parser.add_argument("--output", type=Path, help="JSON path (default: results dir)")
    args = parser.parse_args(argv)

    configs = QUICK if args.quick else CONFIGS
    unknown = set(args.models or ()) - set(configs)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {sorted(configs)}")
    names = args.models or list(configs)
    print(
        f"samples/s over {args.repeats} alternating epochs, TF {tf.__version__}, "
        f"{os.cpu_count()} CPUs",
        flush=True,
    )
    results = []
    for jit_compile in (False,) if args.no_xla else (False, True):
        for name in names:
            tf.keras.backend.clear_session()
            result = benchmark(
                name, configs[name], jit_compile=jit_compile, repeats=args.repeats
            )
            results.append(result)

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS_DIR / f"throughput-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "date": stamp,
                "tensorflow": tf.__version__,
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "repeats": args.repeats,
                "results": results,
            },
            indent=2,
        )
    )
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
