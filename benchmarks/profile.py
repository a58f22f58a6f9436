"""Profile: where a training step's time goes, and how near this CPU's limit it runs.

For `mlp_meta` 4096-4096 (batch 100) and `vgg16_meta` (batch 64), float32 and bf16,
`MetaplasticAdam` on synthetic data:

- **step time**: the median of individually timed training steps (the function `fit`
  calls once per step, `model.make_train_function()`), without the profiler;
- **top ops**: a few steps under the TensorFlow profiler; the op events of the trace
  (`name:type` on the executor threads of the `.xplane.pb`) summed by self time per
  step, and grouped into categories (convolution forward, input gradient, weight
  gradient, matmul, optimizer update, batchnorm, quantizers/elementwise, other). The two
  executor threads run ops side by side, so op time can add up to more than the step;
- **share of the limit**: achieved GFLOPS (FLOPs counted from the layer shapes, divided
  by the median step time) over the peak of the same precision and the model's main op,
  measured here: one VGG-size 3x3 convolution (batch 64, 32x32x256 -> 256, forward) for
  convnets, one 4096x4096x4096 matmul for MLPs. One call of it follows each timed step,
  and the share is the median over these pairs; the ops are also timed alone.

This 2-core machine alternates between full and about half speed, so every time is a
median over repetitions; the full run first waits (up to 10 minutes) for the 1-minute
load average to fall to 1.5 and records it. Prints a table and writes JSON to
`benchmarks/results/`.

    python benchmarks/profile.py           # the issue's configurations, ~2 minutes
    python benchmarks/profile.py --quick   # tiny models, a smoke run in seconds
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.tsl.profiler.protobuf import xplane_pb2  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import zoo  # noqa: E402
from benchmarks.report import write_results  # noqa: E402
from benchmarks.timing import synthetic_data  # noqa: E402
from training.optimizers import MetaplasticAdam  # noqa: E402

LEARNING_RATE, META = 0.005, 1.35  # the paper's permuted-MNIST settings
PRECISIONS = ("float32", "bf16")
TOP_OPS = 10

# name -> (factory, kwargs, input shape, batch size, timed steps, profiled steps)
CONFIGS = {
    "mlp_meta-4096": (
        zoo.mlp_meta,
        {"hidden_units": (4096, 4096)},
        (28, 28, 1),
        100,
        40,
        5,
    ),
    "vgg16_meta": (zoo.vgg16_meta, {}, (32, 32, 3), 64, 21, 3),
}
QUICK = {
    "mlp_meta-256": (
        zoo.mlp_meta,
        {"hidden_units": (256, 256)},
        (28, 28, 1),
        100,
        5,
        2,
    ),
}

# name -> (operand shapes, FLOPs per call, timed calls)
PEAK_OPS = {
    "conv3x3 64x32x32x256->256 forward": (
        ((64, 32, 32, 256), (3, 3, 256, 256)),
        2 * 64 * 32 * 32 * 9 * 256 * 256,
        11,
    ),
    "matmul 4096x4096 @ 4096x4096": (((4096, 4096), (4096, 4096)), 2 * 4096**3, 9),
}
QUICK_PEAK_OPS = {
    "conv3x3 8x16x16x64->64 forward": (
        ((8, 16, 16, 64), (3, 3, 64, 64)),
        2 * 8 * 16 * 16 * 9 * 64 * 64,
        5,
    ),
    "matmul 512x512 @ 512x512": (((512, 512), (512, 512)), 2 * 512**3, 5),
}

CATEGORIES = (
    "conv forward",
    "conv input-gradient",
    "conv weight-gradient",
    "matmul",
    "optimizer update",
    "batchnorm",
    "quantizers/elementwise",
    "other",
)
ELEMENTWISE = {
    "Sign", "Tanh", "Abs", "Mul", "AddV2", "Add", "Sub", "RealDiv", "DivNoNan",
    "SelectV2", "Select", "Less", "LessEqual", "Greater", "GreaterEqual", "Cast",
    "Maximum", "Minimum", "ZerosLike", "OnesLike", "Square", "Sqrt", "Rsqrt", "Neg",
    "LogicalAnd", "AddN", "Relu", "ReluGrad", "Reciprocal", "Pow", "Exp", "Identity",
}  # fmt: skip


def category(name: str, op_type: str) -> str:
    """The category of one op, from its type and its name scope."""
    if (
        "ApplyAdam" in op_type
        or "_metaplastic_adam_update" in name
        or ("/update" in name and name.startswith("MetaplasticAdam/MetaplasticAdam"))
    ):
        return "optimizer update"
    if "Conv2DBackpropInput" in op_type:
        return "conv input-gradient"
    if "Conv2DBackpropFilter" in op_type:
        return "conv weight-gradient"
    if "Conv2D" in op_type:
        return "conv forward"
    if "MatMul" in op_type:
        return "matmul"
    if "BatchNorm" in op_type or "batchnorm" in name.lower() or "/bn" in name:
        return "batchnorm"
    if op_type.lstrip("_").replace("MklNative", "").replace("Mkl", "") in ELEMENTWISE:
        return "quantizers/elementwise"
    return "other"


def _kernel_layers(model: tf.keras.Model) -> list:
    layers = []
    for layer in model.layers:
        if isinstance(layer, tf.keras.Model):
            layers.extend(_kernel_layers(layer))
        elif isinstance(layer, (tf.keras.layers.Dense, tf.keras.layers.Conv2D)):
            layers.append(layer)
    return layers


def training_flops(model: tf.keras.Model, batch_size: int) -> dict:
    """FLOPs of one training step, counted from the layer shapes.

    A matmul or convolution costs `2*M*N*K` forward, as much again for the input
    gradient and for the weight gradient; the first layer needs no input gradient.

    # Returns
        `forward`, `input_gradient`, `weight_gradient` and `total` FLOPs per step.
    """
    forward = []
    for layer in _kernel_layers(model):
        kernel = layer.kernel.shape
        if isinstance(layer, tf.keras.layers.Conv2D):
            _, height, width, _ = layer.output_shape
            forward.append(2 * batch_size * height * width * int(np.prod(kernel)))
        else:
            forward.append(2 * batch_size * int(np.prod(kernel)))
    counts = {
        "forward": sum(forward),
        "input_gradient": sum(forward[1:]),
        "weight_gradient": sum(forward),
    }
    counts["total"] = sum(counts.values())
    return counts


def op_self_times(xplane: Path) -> dict:
    """Total self time in microseconds per `(name, type)` over the trace's op events.

    Op events are the `name:type` events of the host's executor threads
    (`tf_Compute/...`), and the `ExecutorState::ProcessAsync` events of asynchronous
    ops, named by their stats: the XLA-compiled `_metaplastic_adam_update` runs as a
    `StatefulPartitionedCall` there. An op nested in another is subtracted from it.
    """
    space = xplane_pb2.XSpace()
    space.ParseFromString(xplane.read_bytes())
    totals = collections.Counter()
    for plane in space.planes:
        if plane.name != "/host:CPU":
            continue
        for line in plane.lines:
            if not line.name.startswith("tf_Compute"):
                continue
            events = []
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if name.startswith("ExecutorState::ProcessAsync::"):
                    op_name, op_type = _stat(plane, event, "name", "kernel_type")
                elif ":" in name and "::" not in name:
                    op_name, _, op_type = name.rpartition(":")
                else:  # executor bookkeeping, tf.data, memory events
                    continue
                events.append((event.offset_ps, event.duration_ps, op_name, op_type))
            events.sort(key=lambda e: (e[0], -e[1]))
            for _, duration, op_name, op_type in events:
                totals[(op_name, op_type)] += duration / 1e6
            for parent, child_us in _child_times(events).items():
                totals[parent] -= child_us
    return dict(totals)


def _stat(plane, event, *keys: str) -> list[str]:
    """String values of the named stats of one trace event."""
    values = {}
    for stat in event.stats:
        key = plane.stat_metadata[stat.metadata_id].name
        if stat.ref_value:
            values[key] = plane.stat_metadata[stat.ref_value].name
        else:
            values[key] = stat.str_value
    return [values.get(key, "?") for key in keys]


def _child_times(events: list) -> collections.Counter:
    """Microseconds of directly nested op events per parent `(name, type)`."""
    children = collections.Counter()
    stack = []  # [end_ps, key]
    for start, duration, op_name, op_type in events:
        while stack and stack[-1][0] <= start:
            stack.pop()
        if stack:
            children[stack[-1][1]] += duration / 1e6
        stack.append((start + duration, (op_name, op_type)))
    return children


def profile_training(name: str, config: tuple, precision: str, peak_ops: dict) -> dict:
    """Median step time, FLOPs, share of the limit, top ops and categories.

    Each timed step is followed by one call of the microbenchmark of the model's main op
    (`peak_ops`, conv for convnets, matmul otherwise) in the same precision, so that
    each pair sees the same machine state; the share of the limit is the median of the
    pair shares.
    """
    factory, kwargs, input_shape, batch_size, steps, profiled_steps = config
    model = factory(input_shape=input_shape, precision=precision, **kwargs)
    model.compile(
        MetaplasticAdam(LEARNING_RATE, meta=META),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    train_step = model.make_train_function()  # what `fit` calls once per step
    batches = iter(synthetic_data(input_shape, batch_size))
    for _ in range(2):  # tracing, XLA compilation of the update, allocation
        float(train_step(batches)["loss"])

    flops = training_flops(model, batch_size)
    convolutional = any(
        isinstance(layer, tf.keras.layers.Conv2D) for layer in _kernel_layers(model)
    )
    main_op = "conv" if convolutional else "matmul"
    peak_op = next(op for op in peak_ops if op.startswith(main_op))
    peak = peak_call(*peak_ops[peak_op][:2], convolutional, precision)
    step_seconds, peak_gflops, shares = [], [], []
    for _ in range(steps):
        start = time.perf_counter()
        float(train_step(batches)["loss"])  # wait for the step
        step_seconds.append(time.perf_counter() - start)
        peak_gflops.append(peak())
        shares.append(flops["total"] / step_seconds[-1] / 1e9 / peak_gflops[-1])
    step_ms = 1e3 * statistics.median(step_seconds)

    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        start = time.perf_counter()
        for _ in range(profiled_steps):
            float(train_step(batches)["loss"])
        profiled_ms = 1e3 * (time.perf_counter() - start) / profiled_steps
        tf.profiler.experimental.stop()
        (xplane,) = Path(logdir).glob("plugins/profile/*/*.xplane.pb")
        totals = op_self_times(xplane)

    ops = [
        {
            "name": op_name,
            "type": op_type,
            "category": category(op_name, op_type),
            "ms_per_step": us / 1e3 / profiled_steps,
        }
        for (op_name, op_type), us in totals.items()
    ]
    ops.sort(key=lambda op: -op["ms_per_step"])
    op_ms = sum(op["ms_per_step"] for op in ops)
    categories = {key: 0.0 for key in CATEGORIES}
    for op in ops:
        categories[op["category"]] += op["ms_per_step"]
        op["share_of_op_time"] = op["ms_per_step"] / op_ms if op_ms else 0.0
    return {
        "model": name,
        "precision": precision,
        "main_op": main_op,
        "batch_size": batch_size,
        "timed_steps": steps,
        "profiled_steps": profiled_steps,
        "step_ms": step_ms,
        "step_ms_all": [1e3 * s for s in step_seconds],
        "flops_per_step": flops,
        "achieved_gflops": flops["total"] / step_ms / 1e6,
        "peak_op": peak_op,
        "peak_gflops": statistics.median(peak_gflops),
        "peak_gflops_all": peak_gflops,
        "share_of_limit": statistics.median(shares),
        "share_of_limit_all": shares,
        "profiled_step_ms": profiled_ms,
        "op_ms_per_step": op_ms,
        "top_ops": ops[:TOP_OPS],
        "categories": {
            key: {"ms_per_step": ms, "share_of_op_time": ms / op_ms if op_ms else 0.0}
            for key, ms in sorted(categories.items(), key=lambda kv: -kv[1])
        },
    }


def _conv(x: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
    return tf.nn.conv2d(x, kernel, 1, "SAME")


def peak_call(shapes: tuple, flops: int, conv: bool, precision: str) -> Callable:
    """One timed call of a conv or matmul microbenchmark, returning its GFLOPS."""
    op = tf.function(_conv if conv else tf.matmul)
    dtype = tf.float32 if precision == "float32" else tf.bfloat16
    operands = [
        tf.cast(tf.random.stateless_normal(s, seed=(0, i)), dtype)
        for i, s in enumerate(shapes)
    ]
    for _ in range(2):  # tracing, oneDNN primitive creation
        op(*operands).numpy()

    def call() -> float:
        start = time.perf_counter()
        op(*operands).numpy()
        return flops / (time.perf_counter() - start) / 1e9

    return call


def measure_peak(peak_ops: dict) -> dict:
    """GFLOPS per op and precision, median over timed calls, measured alone."""
    results = {}
    for op_name, (shapes, flops, calls) in peak_ops.items():
        for precision in PRECISIONS:
            call = peak_call(shapes, flops, op_name.startswith("conv"), precision)
            gflops = [call() for _ in range(calls)]
            results.setdefault(precision, {})[op_name] = {
                "gflops": statistics.median(gflops),
                "gflops_best": max(gflops),
                "calls": calls,
            }
            print(
                f"{'peak':>14} | {precision:7} | {op_name}: "
                f"{statistics.median(gflops):.0f} GFLOPS (best {max(gflops):.0f})",
                flush=True,
            )
    return results


def wait_for_quiet(max_load: float, max_wait_s: float) -> tuple[float, float, float]:
    """Waits up to `max_wait_s` for the 1-minute load average to drop to `max_load`.

    # Returns
        The load averages when the wait ended.
    """
    deadline = time.monotonic() + max_wait_s
    while os.getloadavg()[0] > max_load and time.monotonic() < deadline:
        load = os.getloadavg()[0]
        print(f"load average {load:.2f} > {max_load}, waiting", flush=True)
        time.sleep(30)
    return os.getloadavg()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke configuration")
    parser.add_argument("--output", type=Path, help="JSON path (default: results dir)")
    args = parser.parse_args(argv)
    configs, peak_ops = (QUICK, QUICK_PEAK_OPS) if args.quick else (CONFIGS, PEAK_OPS)

    load = os.getloadavg() if args.quick else wait_for_quiet(1.5, 600)
    print(
        f"profile, TF {tf.__version__}, {os.cpu_count()} CPUs, "
        f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}",
        flush=True,
    )
    peak = measure_peak(peak_ops)
    results = []
    for name, config in configs.items():
        for precision in PRECISIONS:
            tf.keras.backend.clear_session()
            result = profile_training(name, config, precision, peak_ops)
            results.append(result)
            top_category, top = next(iter(result["categories"].items()))
            print(
                f"{name:>14} | {precision:7} | {result['step_ms']:8.1f} ms/step | "
                f"{result['achieved_gflops']:6.1f} of "
                f"{result['peak_gflops']:.0f} GFLOPS "
                f"({100 * result['share_of_limit']:.0f} %) | top: {top_category} "
                f"{100 * top['share_of_op_time']:.0f} % of op time",
                flush=True,
            )
            for op in result["top_ops"]:
                print(
                    f"{'':>14}   {op['ms_per_step']:8.2f} ms "
                    f"{100 * op['share_of_op_time']:5.1f} %  "
                    f"{op['type']:<30} {op['name']}"
                )

    write_results(
        "profile",
        {
            "method": "step_ms: median of individually timed steps without the "
            "profiler; ops: self time of the trace's op events per profiled step, "
            "shares of the summed op time (two executor threads run ops side by "
            "side, so op time may exceed the step); peak_gflops: median GFLOPS of "
            "the microbenchmark of the model's main op (conv or matmul) in the "
            "same precision, one call after each timed step; share_of_limit: "
            "median over these (step, call) pairs of achieved / peak",
            "load_average": list(load),
            "load_average_after": list(os.getloadavg()),
            "peak": peak,
            "results": results,
        },
        output=args.output,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
