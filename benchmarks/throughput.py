"""Throughput: MetaplasticAdam vs plain legacy Adam, as ratios measured side by side.

Two measurements, each with and without XLA:

- **update**: one `apply_gradients` on a single binary (Larq) 4096×4096 kernel, the
  optimizer alone, where the cost of the metaplastic rule shows undiluted;
- **training**: training steps of `mlp_meta` (1024 and 4096 wide, batch 100) and
  `vgg16_meta` (batch 64) on synthetic data.

Shared 2-core machines alternate between full speed and about half speed, and other
processes come and go, so absolute rates from separate runs are not comparable. Both
optimizers are therefore timed in short blocks of steps that alternate in ABBA order
(AB, BA, AB, ...); each adjacent pair of blocks, run under nearly the same machine state,
gives one ratio `metaplastic samples/s / Adam samples/s`. The report is the **median of
the pair ratios**, with the best pair beside it, never alone. Prints a table and writes
JSON to `benchmarks/results/`.

    python benchmarks/throughput.py                 # the issue's configurations
    python benchmarks/throughput.py --quick         # a smoke run in under a minute
    python benchmarks/throughput.py --only update   # the update microbenchmark alone
    python benchmarks/throughput.py --weight-decay 1e-7   # the paper's L2 term, on
                                                          # the metaplastic side only
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
import zoo.layers  # noqa: E402
from benchmarks.report import write_results  # noqa: E402
from benchmarks.timing import (  # noqa: E402
    paired_ratios,
    summary,
    synthetic_data,
    training_block,
)
from training.optimizers import MetaplasticAdam  # noqa: E402

LEARNING_RATE, META = 0.005, 1.35  # the paper's permuted-MNIST settings

# name -> (factory, factory kwargs, input shape, batch size, steps per timed block)
CONFIGS = {
    "mlp_meta-1024": (
        zoo.mlp_meta,
        {"hidden_units": (1024, 1024)},
        (28, 28, 1),
        100,
        20,
    ),
    "mlp_meta-4096": (
        zoo.mlp_meta,
        {"hidden_units": (4096, 4096)},
        (28, 28, 1),
        100,
        4,
    ),
    "vgg16_meta": (zoo.vgg16_meta, {}, (32, 32, 3), 64, 1),
}
QUICK = {
    "mlp_meta-256": (zoo.mlp_meta, {"hidden_units": (256, 256)}, (28, 28, 1), 100, 10),
}
# The update microbenchmark: kernel width, updates per timed block.
UPDATE_WIDTH, UPDATE_STEPS = 4096, 5
QUICK_UPDATE_WIDTH, QUICK_UPDATE_STEPS = 512, 20


def binary_kernel(width: int) -> tf.Variable:
    """The latent kernel of a built binary dense layer of `zoo`, `width`×`width`."""
    layer = zoo.layers.binary_dense(width, first=True)
    layer.build((None, width))
    return layer.kernel


def update_block(
    optimizer: tf.keras.optimizers.legacy.Optimizer,
    width: int,
    steps: int,
    jit_compile: bool,
) -> Callable[[], None]:
    """A block of `steps` updates of a fresh binary kernel by `optimizer`."""
    kernel = binary_kernel(width)
    gradient = tf.random.stateless_normal((width, width), seed=(0, 1))

    @tf.function(jit_compile=jit_compile)
    def update():
        optimizer.apply_gradients([(gradient, kernel)])

    def block():
        for _ in range(steps):
            update()
        kernel.read_value().numpy()  # wait for the last update

    return block


def benchmark_update(
    *, width: int, steps: int, jit_compile: bool, pairs: int, weight_decay: float = 0.0
) -> dict:
    """One `apply_gradients` on a binary `width`×`width` kernel, Adam vs metaplastic
    (with `weight_decay`, which legacy Adam does not have)."""
    blocks = {
        "adam": update_block(
            tf.keras.optimizers.legacy.Adam(LEARNING_RATE, epsilon=1e-8),
            width,
            steps,
            jit_compile,
        ),
        "metaplastic_adam": update_block(
            MetaplasticAdam(LEARNING_RATE, meta=META, weight_decay=weight_decay),
            width,
            steps,
            jit_compile,
        ),
    }
    for block in blocks.values():  # tracing, compilation, slots
        block()
    ratios, adam_s, meta_s = paired_ratios(
        blocks["adam"], blocks["metaplastic_adam"], pairs=pairs
    )
    result = {
        "benchmark": "update",
        "kernel": [width, width],
        "xla": jit_compile,
        "weight_decay": weight_decay,
        "updates_per_block": steps,
        "pairs": pairs,
        **summary(
            ratios,
            [steps / s for s in adam_s],
            [steps / s for s in meta_s],
            "adam",
            "metaplastic",
            unit="updates/s",
        ),
    }
    print(
        f"{'update ' + str(width):>14} | xla={str(jit_compile):5} | "
        f"ms per update: adam {1e3 / result['adam_per_s']:7.2f}, "
        f"metaplastic {1e3 / result['metaplastic_per_s']:7.2f} | "
        f"ratio median {result['ratio']:.3f}, best {result['ratio_best']:.3f}",
        flush=True,
    )
    return result


def benchmark_training(
    name: str,
    config: tuple,
    *,
    jit_compile: bool,
    pairs: int,
    precision: str = "float32",
    weight_decay: float = 0.0,
) -> dict:
    """Training steps of one zoo model, Adam vs metaplastic (with `weight_decay`), in
    ABBA blocks.

    In bf16 the binary layers compute in bfloat16 while the latent kernels, hence the
    optimizer's update, stay float32 (`zoo.precision`).
    """
    factory, kwargs, input_shape, batch_size, steps = config
    blocks = {}
    for key, optimizer in (
        ("adam", tf.keras.optimizers.legacy.Adam(LEARNING_RATE, epsilon=1e-8)),
        (
            "metaplastic_adam",
            MetaplasticAdam(LEARNING_RATE, meta=META, weight_decay=weight_decay),
        ),
    ):
        model = factory(input_shape=input_shape, precision=precision, **kwargs)
        model.compile(
            optimizer,
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            jit_compile=jit_compile,
        )
        blocks[key] = training_block(
            model.make_train_function(),
            iter(synthetic_data(input_shape, batch_size)),
            steps,
        )
    ratios, adam_s, meta_s = paired_ratios(
        blocks["adam"], blocks["metaplastic_adam"], pairs=pairs
    )
    samples = batch_size * steps
    result = {
        "benchmark": "training",
        "model": name,
        "precision": precision,
        "xla": jit_compile,
        "weight_decay": weight_decay,
        "batch_size": batch_size,
        "steps_per_block": steps,
        "pairs": pairs,
        **summary(
            ratios,
            [samples / s for s in adam_s],
            [samples / s for s in meta_s],
            "adam",
            "metaplastic",
            unit="samples/s",
        ),
    }
    print(
        f"{name:>14} | {precision:7} | xla={str(jit_compile):5} | samples/s: adam "
        f"{result['adam_per_s']:8.1f}, metaplastic {result['metaplastic_per_s']:8.1f} | "
        f"ratio median {result['ratio']:.3f}, best {result['ratio_best']:.3f}",
        flush=True,
    )
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke configuration")
    parser.add_argument("--models", nargs="*", help=f"subset of {sorted(CONFIGS)}")
    parser.add_argument(
        "--only", choices=("update", "training"), help="run one benchmark only"
    )
    parser.add_argument(
        "--pairs", type=int, help="ABBA pairs of timed blocks (default 16, quick 4)"
    )
    parser.add_argument("--no-xla", action="store_true", help="skip the XLA runs")
    parser.add_argument(
        "--precisions",
        nargs="+",
        choices=("float32", "bf16"),
        default=["float32", "bf16"],
        help="precisions of the training benchmark (default both)",
    )
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=0.0,
        help="L2 coefficient of MetaplasticAdam (the paper's runs: 1e-7); Adam has none",
    )
    parser.add_argument("--output", type=Path, help="JSON path (default: results dir)")
    args = parser.parse_args(argv)
    if not args.weight_decay >= 0:
        parser.error(f"--weight-decay must be a number >= 0, got {args.weight_decay}")

    configs = QUICK if args.quick else CONFIGS
    unknown = set(args.models or ()) - set(configs)
    if unknown:
        parser.error(f"unknown models {sorted(unknown)}; choose from {sorted(configs)}")
    names = args.models or list(configs)
    pairs = args.pairs or (4 if args.quick else 16)
    if pairs < 1:
        parser.error("--pairs must be at least 1")
    width, steps = (
        (QUICK_UPDATE_WIDTH, QUICK_UPDATE_STEPS)
        if args.quick
        else (UPDATE_WIDTH, UPDATE_STEPS)
    )
    print(
        f"metaplastic/Adam throughput ratios over {pairs} ABBA pairs of blocks, "
        f"TF {tf.__version__}, {os.cpu_count()} CPUs",
        flush=True,
    )
    results = []
    for jit_compile in (False,) if args.no_xla else (False, True):
        if args.only != "training":
            tf.keras.backend.clear_session()
            results.append(
                benchmark_update(
                    width=width,
                    steps=steps,
                    jit_compile=jit_compile,
                    pairs=pairs,
                    weight_decay=args.weight_decay,
                )
            )
        if args.only != "update":
            for name in names:
                for precision in args.precisions:
                    tf.keras.backend.clear_session()
                    results.append(
                        benchmark_training(
                            name,
                            configs[name],
                            jit_compile=jit_compile,
                            pairs=pairs,
                            precision=precision,
                            weight_decay=args.weight_decay,
                        )
                    )

    write_results(
        "throughput",
        {
            "method": "median over ABBA pairs of the per-pair ratio "
            "metaplastic/adam of block rates; ratio_best is the best pair",
            "pairs": pairs,
            "weight_decay": args.weight_decay,
            "results": results,
        },
        output=args.output,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
