"""Deployment: LCE flatbuffer size and latency against the float TFLite twin and Keras.

For `mlp_meta` 1024-1024 on 28x28x1 and `vgg16_meta` on 32x32x3 (random weights unless
`--weights-mlp` / `--weights-vgg` give a SavedModel path or a pretrained name), converts
the model with `zoo.export.convert_to_lce` and its float twin (`sign(Wh)` as float32
kernels, same outputs) with the standard TFLite converter, then:

- sizes: whole flatbuffers, and each kernel layer's constant bytes in both, against the
  targets (VGG-16: the LCE flatbuffer >= 20x smaller; MLP: every hidden binary layer
  >= 30x smaller), PASS/FAIL per target;
- agreement: LCE's logits against Keras' on random images;
- latency per image at batch 1 of Keras (`model(x, training=False)` in a `tf.function`),
  float TFLite (with its default XNNPACK delegate), LCE, and LCE with
  `use_indirect_bgemm=True`: after a warm-up, rounds of consecutive calls, the engine
  order rotating each round so that machine noise hits all alike; median and best
  round, and ratios to float TFLite.

LCE's optimized kernels are written for 64-bit ARM (aarch64); on x86 its Python
interpreter runs portable reference code, so x86 latencies are information only.
Prints markdown tables and writes JSON to `benchmarks/results/deployment-<UTC time>.json`.

    python benchmarks/deployment.py                    # random weights
    python benchmarks/deployment.py --weights-mlp runs/pmnist/model
    python benchmarks/deployment.py --quick            # a smoke run in seconds
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

import larq_compute_engine as lce  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from zoo import export  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"

# Size targets: whole-model ratio for VGG-16, every hidden binary layer for the MLP.
VGG_MODEL_RATIO_TARGET = 20.0
MLP_LAYER_RATIO_TARGET = 30.0

# name -> (factory name, factory kwargs, input shape, calls per timed round)
CONFIGS = {
    "mlp_meta": ("mlp_meta", {"hidden_units": (1024, 1024)}, (28, 28, 1), 200),
    "vgg16_meta": ("vgg16_meta", {}, (32, 32, 3), 10),
}
QUICK = {
    "mlp_meta": ("mlp_meta", {"hidden_units": (256, 256)}, (28, 28, 1), 20),
}
ENGINES = ("keras", "float_tflite", "lce", "lce_indirect_bgemm")
X86_NOTE = (
    "LCE's fast kernels target 64-bit ARM (aarch64); on {machine} its interpreter runs "
    "portable code: these latencies are information only, not LCE's ARM performance."
)


def build_model(config: tuple, weights: str | None) -> tuple:
    factory, kwargs, input_shape, _ = config
    if weights is None:
        tf.keras.utils.set_random_seed(0)
        model = zoo.get_model(factory).factory(input_shape=input_shape, **kwargs)
        options = "".join(f" {key}={value}" for key, value in kwargs.items())
        return model, f"{factory}{options} (random weights)"
    return export.load_model(weights)


def sizes(
    model: tf.keras.Model, lce_flatbuffer: bytes, float_flatbuffer: bytes
) -> dict:
    layers = export.binary_layer_sizes(lce_flatbuffer, float_flatbuffer, model)
    return {
        "lce_bytes": len(lce_flatbuffer),
        "float_tflite_bytes": len(float_flatbuffer),
        "model_ratio": len(float_flatbuffer) / len(lce_flatbuffer),
        "layers": layers,
        "hidden_binary_min_ratio": min(
            (row["ratio"] for row in layers if row["binary"]), default=None
        ),
    }


def targets(name: str, size: dict) -> list:
    if name.startswith("vgg"):
        return [
            {
                "target": f"LCE flatbuffer >= {VGG_MODEL_RATIO_TARGET:g}x smaller",
                "value": size["model_ratio"],
                "pass": size["model_ratio"] >= VGG_MODEL_RATIO_TARGET,
            }
        ]
    return [
        {
            "target": f"{row['layer']} >= {MLP_LAYER_RATIO_TARGET:g}x smaller",
            "value": row["ratio"],
            "pass": row["ratio"] >= MLP_LAYER_RATIO_TARGET,
        }
        for row in size["layers"]
        if row["binary"]
    ]


def runners(model, lce_flatbuffer: bytes, float_flatbuffer: bytes, x1, threads: int):
    """One zero-argument callable per engine, each running one batch-1 inference."""
    keras_call = tf.function(lambda t: model(t, training=False))
    x_tensor = tf.constant(x1)

    def keras():
        return keras_call(x_tensor).numpy()

    tflite = tf.lite.Interpreter(model_content=float_flatbuffer, num_threads=threads)
    tflite.allocate_tensors()
    (inp,), (out,) = tflite.get_input_details(), tflite.get_output_details()

    def float_tflite():
        tflite.set_tensor(inp["index"], x1)
        tflite.invoke()
        return tflite.get_tensor(out["index"])

    def lce_runner(indirect: bool):
        # The wrapper's own per-image call (what Interpreter.predict loops over).
        interpreter = export.lce_interpreter(
            lce_flatbuffer, num_threads=threads, use_indirect_bgemm=indirect
        ).interpreter
        return lambda: interpreter.predict([x1])[0]

    return {
        "keras": keras,
        "float_tflite": float_tflite,
        "lce": lce_runner(False),
        "lce_indirect_bgemm": lce_runner(True),
    }


def latencies(run: dict, *, rounds: int, calls: int, warmup: int) -> dict:
    for fn in run.values():  # warm-up: tracing, allocation, caches
        for _ in range(warmup):
            fn()
    times = {name: [] for name in run}
    names = list(run)
    for r in range(rounds):  # rotate the order so that noise hits every engine alike
        for name in names[r % len(names) :] + names[: r % len(names)]:
            fn = run[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append(1e3 * (time.perf_counter() - start) / calls)
    result = {}
    for name, values in times.items():
        result[name] = {
            "median_ms": statistics.median(values),
            "best_ms": min(values),
            "all_ms": values,
        }
    base = result["float_tflite"]
    for values in result.values():
        values["median_vs_float_tflite"] = values["median_ms"] / base["median_ms"]
        values["best_vs_float_tflite"] = values["best_ms"] / base["best_ms"]
    return result


def benchmark(name: str, config: tuple, weights, args) -> dict:
    model, source = build_model(config, weights)
    input_shape = tuple(model.inputs[0].shape[1:])
    print(f"\n## {name}: {source}, input {input_shape}", flush=True)
    lce_flatbuffer = export.convert_to_lce(model)
    float_flatbuffer = export.float_twin_tflite(model)
    size = sizes(model, lce_flatbuffer, float_flatbuffer)
    report = export.lce_op_report(lce_flatbuffer, model)

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(args.verify_samples, *input_shape)).astype("float32")
    agreement = export.verify_lce(lce_flatbuffer, model, x)
    calls = args.calls or config[3]
    run = runners(model, lce_flatbuffer, float_flatbuffer, x[:1], args.threads)
    latency = latencies(run, rounds=args.rounds, calls=calls, warmup=args.warmup)
    return {
        "model": name,
        "weights": source,
        "input_shape": input_shape,
        "ops": report["ops"],
        "binary_layers_converted": f"{len(report['converted'])}/"
        f"{len(report['binary_layers'])}",
        "sizes": size,
        "targets": targets(name, size),
        "agreement_random_inputs": agreement,
        "calls_per_round": calls,
        "latency": latency,
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:.2f} MiB" if n >= 2**20 else f"{n / 2**10:.1f} KiB"


def print_tables(results: list, note: str) -> None:
    print("\n### Size: LCE flatbuffer vs float TFLite twin\n")
    print("| model | LCE | float TFLite | ratio | target | result |")
    print("|---|---|---|---|---|---|")
    for res in results:
        size = res["sizes"]
        for target in res["targets"]:
            print(
                f"| `{res['model']}` | {_mib(size['lce_bytes'])} | "
                f"{_mib(size['float_tflite_bytes'])} | {size['model_ratio']:.1f}x | "
                f"{target['target']} ({target['value']:.1f}x) | "
                f"{'PASS' if target['pass'] else 'FAIL'} |"
            )
    print("\n### Per layer (constant bytes of each kernel op)\n")
    print("| model | layer | LCE op | LCE | float TFLite | ratio |")
    print("|---|---|---|---|---|---|")
    for res in results:
        for row in res["sizes"]["layers"]:
            print(
                f"| `{res['model']}` | {row['layer']} | {row['lce_op']} | "
                f"{_mib(row['lce_bytes'])} | {_mib(row['float_bytes'])} | "
                f"{row['ratio']:.1f}x |"
            )
    print("\n### Latency per image, batch 1 (ms; ratio to float TFLite)\n")
    print(f"_{note}_\n")
    print("| model | " + " | ".join(ENGINES) + " |")
    print("|---|" + "---|" * len(ENGINES))
    for res in results:
        for stat in ("median", "best"):
            cells = [
                f"{lat[f'{stat}_ms']:.3f} ({lat[f'{stat}_vs_float_tflite']:.2f}x)"
                for lat in (res["latency"][engine] for engine in ENGINES)
            ]
            print(f"| `{res['model']}` {stat} | " + " | ".join(cells) + " |")
    print("\n### LCE vs Keras on random images\n")
    print(
        "| model | binary layers as LceBconv2d | argmax agreement | max abs logit diff |"
    )
    print("|---|---|---|---|")
    for res in results:
        check = res["agreement_random_inputs"]
        print(
            f"| `{res['model']}` | {res['binary_layers_converted']} | "
            f"{100 * check['argmax_agreement']:.2f} % ({check['samples']} images) | "
            f"{check['max_abs_logit_diff']:.2g} |"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke configuration")
    parser.add_argument("--models", nargs="*", help=f"subset of {sorted(CONFIGS)}")
    parser.add_argument("--weights-mlp", help="SavedModel path or pretrained name")
    parser.add_argument("--weights-vgg", help="SavedModel path or pretrained name")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds per engine")
    parser.add_argument("--calls", type=int, help="inferences per round (per model)")
    parser.add_argument("--warmup", type=int, default=5, help="warm-up calls")
    parser.add_argument(
        "--threads", type=int, default=1, help="threads of every engine"
    )
    parser.add_argument(
        "--verify-samples", type=int, default=64, help="random images for agreement"
    )
    parser.add_argument("--output", type=Path, help="JSON path (default: results dir)")
    args = parser.parse_args(argv)

    # Same thread count for all engines (TensorFlow's must be set before it starts).
    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    configs = QUICK if args.quick else CONFIGS
    unknown = set(args.models or ()) - set(configs)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {sorted(configs)}")
    weights = {"mlp_meta": args.weights_mlp, "vgg16_meta": args.weights_vgg}
    note = X86_NOTE.format(machine=platform.machine())
    print(
        f"TF {tf.__version__}, LCE {lce.__version__}, {platform.machine()}, "
        f"{os.cpu_count()} CPUs, {args.threads} thread(s) per engine\n{note}",
        flush=True,
    )
    results = []
    for name in args.models or list(configs):
        tf.keras.backend.clear_session()
        try:
            results.append(benchmark(name, configs[name], weights.get(name), args))
        except (ValueError, ImportError) as error:
            print(f"error: {name}: {error}", file=sys.stderr)
            return 2
    print_tables(results, note)

    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    output = args.output or RESULTS_DIR / f"deployment-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "date": stamp,
                "tensorflow": tf.__version__,
                "larq_compute_engine": lce.__version__,
                "machine": platform.machine(),
                "cpus": os.cpu_count(),
                "threads": args.threads,
                "rounds": args.rounds,
                "note": note,
                "targets": {
                    "vgg16_meta_model_ratio": VGG_MODEL_RATIO_TARGET,
                    "mlp_meta_hidden_binary_layer_ratio": MLP_LAYER_RATIO_TARGET,
                },
                "results": results,
            },
            indent=2,
        )
    )
    print(f"\nwrote {output}")
    all_pass = all(t["pass"] for res in results for t in res["targets"])
    print("size targets:", "all PASS" if all_pass else "some FAIL")
    return 0


if __name__ == "__main__":
    sys.exit(main())
