"""Training throughput in bf16 against float32, measured side by side (issue 13).

`precision="bf16"` (`zoo.precision`) runs the binary layers in bfloat16 through oneDNN;
latent weights, batch normalization and the loss stay float32. Three measurements:

- **training**: training steps (`MetaplasticAdam`, synthetic data) of `vgg16_meta`
  and `vgg_small_meta` (batch 64) and `mlp_meta` 4096-4096 (batch 100), float32 vs bf16;
- **pipeline**: `vgg16_meta` bf16 training steps fed by the real CIFAR-10 pipeline
  (`training.data.make_pipeline`, `flip_crop` augmentation) vs by synthetic tensors
  held in memory, and the pipeline's own rate;
- **peak**: GFLOPS of a VGG-size 3x3 convolution (batch 64, 32x32x256 -> 256; forward,
  and forward + both gradients) and of matrix products (the 4096-wide MLP layer at
  batch 100, and 2048^3), float32 vs bfloat16: the machine's limits, which a training
  step's achieved GFLOPS can be set against;
- **onednn**: training steps of `vgg16_meta` in each precision under `ONEDNN_VERBOSE=1`
  (in a subprocess): the instruction set oneDNN reports, and time per primitive and
  kernel, median over 3 steps (which shows whether convolutions run on AMX, AVX-512
  BF16 or plain AVX-512 kernels).

Shared 2-core machines alternate between full speed and about half speed, so the two
variants are timed in short blocks that alternate in ABBA order (AB, BA, AB, ...); each
adjacent pair of blocks gives one ratio `bf16 samples/s / float32 samples/s` (or
`real / synthetic`). The report is the **median of the pair ratios**, with the best pair
beside it, never alone. Prints a table and writes JSON to
`benchmarks/results/precision-<UTC timestamp>.json`.

    python benchmarks/precision.py --data-dir ../shared/data  # everything, 10 pairs
    python benchmarks/precision.py --quick            # a smoke run in about a minute
    python benchmarks/precision.py --only training --models vgg16_meta --pairs 16
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402, F401  (the zoo's models join the registry on import)
from benchmarks.report import write_results  # noqa: E402
from benchmarks.timing import (  # noqa: E402
    paired_ratios,
    summary,
    synthetic_data,
    training_block,
)  # noqa: E402
from training.data import load_dataset, make_pipeline  # noqa: E402
from training.optimizers import MetaplasticAdam  # noqa: E402
from zoo import registry  # noqa: E402
from zoo.precision import bf16_instructions, cpu_description, cpu_flags  # noqa: E402

LEARNING_RATE, META = 0.005, 1.35
# Bytes an Adam-type update moves per float32 parameter: reads the variable, m, v and
# the gradient, writes the variable, m and v.
UPDATE_BYTES_PER_PARAMETER = 7 * 4

# name -> (factory, factory kwargs, input shape, batch size, steps per timed block)
CONFIGS = {
    "vgg16_meta": ("vgg16_meta", {}, (32, 32, 3), 64, 2),
    "vgg_small_meta": ("vgg_small_meta", {}, (32, 32, 3), 64, 2),
    "mlp_meta-4096": ("mlp_meta", {"hidden_units": (4096, 4096)}, (28, 28, 1), 100, 4),
}
QUICK = {
    "vgg_small_meta-16": (
        "vgg_small_meta",
        {"dense_units": (64, 64)},
        (16, 16, 3),
        32,
        2,
    ),
    "mlp_meta-1024": ("mlp_meta", {"hidden_units": (1024, 1024)}, (28, 28, 1), 100, 4),
}
PIPELINE_MODEL = "vgg16_meta"


def compiled_model(factory: str, kwargs: dict, input_shape, precision: str):
    tf.keras.utils.set_random_seed(0)
    model = registry.get_model(factory).factory(
        input_shape=input_shape, precision=precision, **kwargs
    )
    model.compile(
        MetaplasticAdam(LEARNING_RATE, meta=META),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def benchmark_training(name: str, config, *, pairs: int) -> dict:
    """Training steps of one zoo model, float32 vs bf16, in ABBA blocks."""
    factory, kwargs, input_shape, batch_size, steps = config
    blocks, parameters = {}, 0
    for precision in ("float32", "bf16"):
        model = compiled_model(factory, kwargs, input_shape, precision)
        parameters = model.count_params()
        blocks[precision] = training_block(
            model.make_train_function(),
            iter(synthetic_data(input_shape, batch_size)),
            steps,
        )
    ratios, f32_s, bf16_s = paired_ratios(
        blocks["float32"], blocks["bf16"], pairs=pairs
    )
    samples = batch_size * steps
    result = {
        "benchmark": "training",
        "model": name,
        "batch_size": batch_size,
        "steps_per_block": steps,
        "pairs": pairs,
        "parameters": parameters,
        **summary(
            ratios,
            [samples / s for s in f32_s],
            [samples / s for s in bf16_s],
            "float32",
            "bf16",
        ),
    }
    print(
        f"{name:>18} | samples/s float32 {result['float32_per_s']:7.1f} "
        f"(best {result['float32_per_s_best']:7.1f}), bf16 {result['bf16_per_s']:7.1f} "
        f"(best {result['bf16_per_s_best']:7.1f}) | bf16/float32 median "
        f"{result['ratio']:.2f}, best {result['ratio_best']:.2f}",
        flush=True,
    )
    return result


def benchmark_pipeline(*, pairs: int, data_dir: str | None, steps: int) -> dict:
    """vgg16_meta bf16 steps on the real CIFAR-10 pipeline vs synthetic tensors."""
    factory, kwargs, input_shape, batch_size, _ = CONFIGS[PIPELINE_MODEL]
    cifar = load_dataset("cifar10", data_dir=data_dir)
    real = make_pipeline(
        cifar.x_train,
        cifar.y_train,
        batch_size=batch_size,
        shuffle=True,
        seed=0,
        augment="flip_crop",
        drop_remainder=True,  # one batch shape: one trace of the training step
    ).repeat()
    real_batches = iter(real)
    start, count = time.perf_counter(), 0
    for _ in range(4 * steps * pairs):  # the pipeline alone, after a warm-up
        next(real_batches)
        count += 1
    pipeline_alone = count * batch_size / (time.perf_counter() - start)

    model = compiled_model(factory, kwargs, input_shape, "bf16")
    train_step = model.make_train_function()
    synthetic = training_block(
        train_step, iter(synthetic_data(input_shape, batch_size)), steps
    )
    real_block = training_block(train_step, real_batches, steps)
    ratios, synthetic_s, real_s = paired_ratios(synthetic, real_block, pairs=pairs)
    samples = batch_size * steps
    result = {
        "benchmark": "pipeline",
        "model": PIPELINE_MODEL,
        "precision": "bf16",
        "augment": "flip_crop",
        "batch_size": batch_size,
        "steps_per_block": steps,
        "pairs": pairs,
        "pipeline_alone_per_s": pipeline_alone,
        "real_step_ms": 1e3 * statistics.median(real_s) / steps,
        "synthetic_step_ms": 1e3 * statistics.median(synthetic_s) / steps,
        **summary(
            ratios,
            [samples / s for s in synthetic_s],
            [samples / s for s in real_s],
            "synthetic",
            "real",
        ),
    }
    print(
        f"{'pipeline':>18} | {PIPELINE_MODEL} bf16 step ms: real "
        f"{result['real_step_ms']:.0f}, synthetic {result['synthetic_step_ms']:.0f} | "
        f"real/synthetic rate median {result['ratio']:.3f}, best "
        f"{result['ratio_best']:.3f} | pipeline alone {pipeline_alone:.0f} images/s",
        flush=True,
    )
    return result


def _flops_block(op: Callable, operands, repeats: int) -> Callable[[], None]:
    function = tf.function(op)

    def block():
        for _ in range(repeats):
            result = function(*operands)
        tf.nest.map_structure(lambda t: t.numpy(), result)  # wait for the last one

    block()  # tracing, oneDNN primitive creation
    return block


def _conv_forward(x, k):
    return tf.nn.conv2d(x, k, 1, "SAME")


def _conv_training(x, k):
    with tf.GradientTape() as tape:
        tape.watch([x, k])
        y = tf.nn.conv2d(x, k, 1, "SAME")
    return tape.gradient(y, [x, k], output_gradients=tf.ones_like(y))


def _matmul(a, b):
    return tf.matmul(a, b)


# name -> (op, operand shapes, FLOPs per call, calls per block)
PEAK_OPS = {
    "conv3x3 64x32x32x256->256 forward": (
        _conv_forward,
        ((64, 32, 32, 256), (3, 3, 256, 256)),
        2 * 64 * 32 * 32 * 9 * 256 * 256,
        2,
    ),
    "conv3x3 64x32x32x256->256 forward+gradients": (
        _conv_training,
        ((64, 32, 32, 256), (3, 3, 256, 256)),
        3 * 2 * 64 * 32 * 32 * 9 * 256 * 256,
        1,
    ),
    "matmul 100x4096 @ 4096x4096": (
        _matmul,
        ((100, 4096), (4096, 4096)),
        2 * 100 * 4096 * 4096,
        20,
    ),
    "matmul 2048x2048 @ 2048x2048": (
        _matmul,
        ((2048, 2048), (2048, 2048)),
        2 * 2048**3,
        4,
    ),
}


def benchmark_peak(*, pairs: int) -> list:
    """GFLOPS of convolutions and matrix products, float32 vs bfloat16, ABBA."""
    results = []
    for name, (op, shapes, flops, repeats) in PEAK_OPS.items():
        blocks = {}
        for dtype in (tf.float32, tf.bfloat16):
            operands = [
                tf.cast(tf.random.stateless_normal(s, seed=(0, i)), dtype)
                for i, s in enumerate(shapes)
            ]
            blocks[dtype.name] = _flops_block(op, operands, repeats)
        ratios, f32_s, bf16_s = paired_ratios(
            blocks["float32"], blocks["bfloat16"], pairs=pairs
        )
        work = flops * repeats / 1e9
        result = {
            "benchmark": "peak",
            "op": name,
            "pairs": pairs,
            "flops_per_call": flops,
            **summary(
                ratios,
                [work / s for s in f32_s],
                [work / s for s in bf16_s],
                "float32_gflops",
                "bf16_gflops",
            ),
        }
        print(
            f"{'peak':>18} | {name}: GFLOPS float32 "
            f"{result['float32_gflops_per_s']:.0f} (best "
            f"{result['float32_gflops_per_s_best']:.0f}), bf16 "
            f"{result['bf16_gflops_per_s']:.0f} (best "
            f"{result['bf16_gflops_per_s_best']:.0f}) | ratio median "
            f"{result['ratio']:.2f}, best {result['ratio_best']:.2f}",
            flush=True,
        )
        results.append(result)
    return results


def memory_bandwidth(megabytes: int = 256, repeats: int = 7) -> dict:
    """Copy bandwidth (bytes read + written per second) of one large NumPy copy."""
    a = np.ones(megabytes * 2**20 // 4, np.float32)
    b = np.empty_like(a)
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(b, a)
        seconds.append(time.perf_counter() - start)
    moved = 2 * a.nbytes
    return {
        "copy_gb_per_s": moved / statistics.median(seconds) / 1e9,
        "copy_gb_per_s_best": moved / min(seconds) / 1e9,
    }


def update_bound(result: dict, bandwidth: dict) -> dict:
    """The optimizer update's share of a step if it ran at the copy bandwidth."""
    moved = result["parameters"] * UPDATE_BYTES_PER_PARAMETER
    update_ms = 1e3 * moved / (bandwidth["copy_gb_per_s"] * 1e9)
    step_ms = {
        p: 1e3 * result["batch_size"] / result[f"{p}_per_s"]
        for p in ("float32", "bf16")
    }
    return {
        "update_bytes": moved,
        "update_ms_at_copy_bandwidth": update_ms,
        "step_ms": step_ms,
        "update_share": {p: update_ms / ms for p, ms in step_ms.items()},
    }


# oneDNN kernels ---------------------------------------------------------------------


ONEDNN_STEPS = 3


def onednn_step(factory: str, precision: str) -> None:
    """Runs 2 + `ONEDNN_STEPS` training steps, marking the measured ones on stdout."""
    kwargs, input_shape, batch_size = next(
        (c[1], c[2], c[3]) for c in CONFIGS.values() if c[0] == factory
    )
    model = compiled_model(factory, kwargs, input_shape, precision)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch_size, *input_shape)).astype("float32")
    y = rng.integers(0, 10, batch_size)
    for _ in range(2):
        model.train_on_batch(x, y)
    for _ in range(ONEDNN_STEPS):
        print("MEASURED STEP", flush=True)  # ONEDNN_VERBOSE also writes to stdout
        model.train_on_batch(x, y)
        sys.stdout.flush()


def parse_onednn(log: str) -> dict:
    """Time per (primitive, kernel, propagation) of the marked steps (median over the
    steps), and the instruction set line."""
    isa, steps = None, []
    for line in log.splitlines():
        if line.startswith("MEASURED STEP"):
            steps.append(collections.defaultdict(lambda: [0, 0.0]))
        if not line.startswith("onednn_verbose,"):
            continue
        fields = line.split(",")
        if "isa:" in line and isa is None:
            isa = line.split("isa:", 1)[1]
        if steps and len(fields) > 6 and fields[1] == "exec":
            key = f"{fields[3]} | {fields[4]} | {fields[5]}"
            steps[-1][key][0] += 1
            steps[-1][key][1] += float(fields[-1])
    keys = {k for step in steps for k in step}
    rows = sorted(
        (
            (
                k,
                steps[0][k][0] if k in steps[0] else 0,
                statistics.median(step[k][1] if k in step else 0.0 for step in steps),
            )
            for k in keys
        ),
        key=lambda row: -row[2],
    )
    return {
        "isa": isa,
        "steps": len(steps),
        "total_ms": statistics.median(sum(v[1] for v in s.values()) for s in steps),
        "kernels": [{"kernel": k, "calls": n, "ms": ms} for k, n, ms in rows],
        "amx": any("amx" in k for k, _, _ in rows),
    }


def benchmark_onednn(factory: str) -> dict:
    results = {}
    for precision in ("float32", "bf16"):
        env = dict(os.environ, ONEDNN_VERBOSE="1")
        process = subprocess.run(
            [sys.executable, __file__, "--onednn-step", factory, precision],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        results[precision] = parse_onednn(process.stdout + process.stderr)
        top = results[precision]["kernels"][:3]
        print(
            f"{'onednn ' + precision:>18} | {factory}: {results[precision]['isa']} | "
            f"oneDNN {results[precision]['total_ms']:.0f} ms/step | AMX: "
            f"{results[precision]['amx']} | top: "
            + "; ".join(f"{k['kernel']} {k['ms']:.0f} ms" for k in top),
            flush=True,
        )
    return {"benchmark": "onednn", "model": factory, **results}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke configuration")
    parser.add_argument("--models", nargs="*", help=f"subset of {sorted(CONFIGS)}")
    parser.add_argument(
        "--only",
        choices=("training", "pipeline", "peak", "onednn"),
        help="one benchmark only",
    )
    parser.add_argument(
        "--pairs", type=int, help="ABBA pairs of timed blocks (default 10, quick 3)"
    )
    parser.add_argument("--data-dir", help="dataset directory (pipeline benchmark)")
    parser.add_argument("--output", type=Path, help="JSON path (default: results dir)")
    parser.add_argument("--onednn-step", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.onednn_step:
        onednn_step(*args.onednn_step)
        return 0

    configs = QUICK if args.quick else CONFIGS
    unknown = set(args.models or ()) - set(configs)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {sorted(configs)}")
    names = args.models or list(configs)
    pairs = args.pairs or (3 if args.quick else 10)
    if pairs < 1:
        parser.error("--pairs must be at least 1")
    print(
        f"bf16/float32 training throughput over {pairs} ABBA pairs of blocks, "
        f"TF {tf.__version__}, {os.cpu_count()} CPUs",
        flush=True,
    )
    results = []
    bandwidth = memory_bandwidth()
    print(f"{'memory':>18} | copy {bandwidth['copy_gb_per_s']:.1f} GB/s", flush=True)
    if args.only in (None, "training"):
        for name in names:
            tf.keras.backend.clear_session()
            result = benchmark_training(name, configs[name], pairs=pairs)
            if configs[name][0] == "mlp_meta":
                result["memory_bound"] = update_bound(result, bandwidth)
            results.append(result)
    if args.only in (None, "pipeline") and not args.quick:
        tf.keras.backend.clear_session()
        results.append(benchmark_pipeline(pairs=pairs, data_dir=args.data_dir, steps=2))
    if args.only in (None, "peak"):
        tf.keras.backend.clear_session()
        results.extend(benchmark_peak(pairs=pairs))
    if args.only in (None, "onednn") and not args.quick:
        results.append(benchmark_onednn(PIPELINE_MODEL))

    write_results(
        "precision",
        {
            "method": "median over ABBA pairs of the per-pair ratio of block "
            "rates (bf16/float32, or real/synthetic); ratio_best is the best pair",
            "processor": _processor(),
            "pairs": pairs,
            "memory": bandwidth,
            "results": results,
        },
        output=args.output,
    )
    return 0


# CPU flags that decide how fast bfloat16 can be: AVX-512 BF16 dot products (about 2x
# float32 FMA throughput) and AMX tiles (an order of magnitude more).
BF16_FLAGS = ("avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def _processor() -> dict:
    flags = cpu_flags() or frozenset()
    return {
        "name": cpu_description(),
        "bf16_flags": {f: f in flags for f in BF16_FLAGS},
        # False: bfloat16 is emulated here (training runs warn).
        "bf16_instructions": bf16_instructions(),
    }


if __name__ == "__main__":
    sys.exit(main())
