"""Weight importance against hidden weight in a trained BNN (Laborieux et al. 2021, Fig. 5c-e).

The metaplastic rule assumes that a binary weight with a large hidden weight `|Wh|` is
important: flipping it costs more loss. `loss_increase_by_hidden_weight` measures it,
as the reference code's `switch_sign_induced_loss_increase`
(`Continual_Learning_Fig-2abcdefgh-3abcd-5cde/models_utils.py`): the binary weights of
one layer are split into bins of `|Wh|` (by default 15 equal bins over `[0, max |Wh|]`);
for each bin, `flips_per_bin` weights drawn at random from it are flipped together, by
negating their hidden weights, and the increase of the loss on fixed training data
(model in inference mode) over the unflipped model is recorded; this is repeated
`repeats` times per bin with new draws. Bins holding fewer than `flips_per_bin`
weights are skipped (NaN), as in the reference. The weights are always restored exactly.

The paper's settings (Fig. 5c/d/e): 15 bins, 100 draws, 1000 / 2000 / 100 flipped
weights in the layers of its 784-4096-4096-10 MLP; 100 flips in a 1024 x 1024 layer flip
about the same fraction as 2000 in its 4096 x 4096 one.

Differences from the reference: bins are half-open `[lo, hi)` (the last one closed)
where the reference's strict inequalities drop weights on the edges, the maximum
included; weights with `Wh = 0` are never drawn (negating them does not flip the sign);
BatchNorm uses its moving statistics (the reference model normalizes with batch
statistics, even in eval mode).

!!! example
    ```python
    from experiments.importance import loss_increase_by_hidden_weight

    result = loss_increase_by_hidden_weight(model, layer="dense_2", x=x, y=y)
    print(result.mean_abs_wh, result.mean_increase_per_weight)
    ```

`python -m experiments.importance --run-dir RUN_DIR --layer dense_2 --out DIR` does it for
the model of a run directory written by `training.runner.run`, on its last trained
task's training data, and writes a PNG and a JSON.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tensorflow as tf

from training import plots
from training.assembly import restore_run
from training.batchnorm import (
    TaskBatchNorm,
    recalibration_batches,
    uses_task_statistics,
)
from training.optimizers import is_binary_variable
from zoo.validation import check_positive_int

__all__ = [
    "LossIncreaseResult",
    "binary_layer_names",
    "loss_increase_by_hidden_weight",
    "load_run_model",
    "main",
]

# Fig. 5c-e of the paper (reference code's calls of switch_sign_induced_loss_increase).
BINS = 15
REPEATS = 100
FLIPS_PER_BIN = 100  # the reference function's default; see the module docstring
SAMPLES = 10_000  # training images the CLI evaluates the loss on (at most)


@dataclass(frozen=True)
class LossIncreaseResult:
    """Loss increase caused by flipping binary weights, per bin of `|Wh|`.

    # Arguments
        layer: the layer whose weights were flipped.
        bin_edges: `B + 1` increasing edges of `|Wh|`.
        bin_centers: `B` midpoints of the bins.
        counts: binary weights in each bin (`Wh = 0` excluded).
        mean_abs_wh: mean `|Wh|` of the flipped weights per bin, over the draws.
        increases: `(B, repeats)`: `L(flipped) − L(original)` of every draw, all
            `flips_per_bin` weights flipped together; NaN rows for skipped bins.
        mean_increase, std_increase: mean and standard deviation of `increases` over
            the draws, per bin.
        mean_increase_per_weight, std_increase_per_weight: the same divided by
            `flips_per_bin` (the reference code's quantity).
        base_loss: mean loss of the unflipped model on the data.
        flips_per_bin, repeats, num_samples, seed: the settings.
        notes: what was skipped and why.
    """

    layer: str
    bin_edges: np.ndarray
    bin_centers: np.ndarray
    counts: np.ndarray
    mean_abs_wh: np.ndarray
    increases: np.ndarray
    mean_increase: np.ndarray
    std_increase: np.ndarray
    mean_increase_per_weight: np.ndarray
    std_increase_per_weight: np.ndarray
    base_loss: float
    flips_per_bin: int
    repeats: int
    num_samples: int
    seed: int
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict:
        """A JSON-ready dict (NaN as `null`)."""

        def clean(value):
            if isinstance(value, np.ndarray):
                return clean(value.tolist())
            if isinstance(value, (list, tuple)):
                return [clean(v) for v in value]
            if isinstance(value, float) and not np.isfinite(value):
                return None
            return value

        return {f.name: clean(getattr(self, f.name)) for f in dataclasses.fields(self)}


def binary_layer_names(model: tf.keras.Model) -> list[str]:
    """Names of the layers of `model` that hold a binary (latent) kernel."""
    return [
        layer.name
        for layer in model.layers
        if any(is_binary_variable(v) for v in layer.trainable_weights)
    ]


def _binary_kernel(model: tf.keras.Model, layer: str) -> tf.Variable:
    names = binary_layer_names(model)
    if layer not in names:
        raise ValueError(
            f"layer {layer!r} is not a binary layer of {model.name}; its binary layers "
            f"are {names}."
        )
    (kernel,) = [
        v for v in model.get_layer(layer).trainable_weights if is_binary_variable(v)
    ]
    return getattr(kernel, "latent_variable", kernel)


def _edges(bins, magnitudes: np.ndarray) -> np.ndarray:
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        if bins < 1:
            raise ValueError(f"bins must be a positive integer, got {bins}.")
        return np.linspace(0.0, float(magnitudes.max()), int(bins) + 1)
    try:
        edges = np.asarray(bins, dtype=np.float64)
    except (TypeError, ValueError):
        edges = np.array([])
    if edges.ndim != 1 or len(edges) < 2 or not (np.diff(edges) > 0).all():
        raise ValueError(
            f"bins must be a positive integer or at least 2 increasing edges, got "
            f"{bins!r}."
        )
    return edges


def _mean_loss_function(model: tf.keras.Model, x: np.ndarray, y: np.ndarray, batch):
    """Returns a function computing the model's mean cross-entropy on (x, y) now."""
    batches = [
        (tf.constant(x[i : i + batch]), tf.constant(y[i : i + batch]))
        for i in range(0, len(x), batch)
    ]

    @tf.function(reduce_retracing=True)
    def batch_loss(images, labels):
        logits = model(images, training=False)
        return tf.reduce_sum(
            tf.keras.losses.sparse_categorical_crossentropy(
                labels, logits, from_logits=True
            )
        )

    def mean_loss() -> float:
        total = sum(float(batch_loss(images, labels)) for images, labels in batches)
        return total / len(x)

    return mean_loss


def loss_increase_by_hidden_weight(
    model: tf.keras.Model,
    *,
    layer: str,
    x: np.ndarray,
    y: np.ndarray,
    bins: int | Sequence[float] = BINS,
    flips_per_bin: int = FLIPS_PER_BIN,
    repeats: int = REPEATS,
    batch_size: int = 1000,
    seed: int = 0,
) -> LossIncreaseResult:
    """Loss increase caused by flipping `flips_per_bin` binary weights of each `|Wh|` bin.

    For each bin `k` in order (skipping bins with fewer than `flips_per_bin` weights),
    each of the `repeats` draws takes `np.random.default_rng(seed).choice(candidates,
    flips_per_bin, replace=False)` (one generator for the whole call, candidates being
    the flat indices of the bin's weights in increasing order), negates those hidden
    weights, and records the mean cross-entropy on `(x, y)` (model in inference mode)
    minus that of the unflipped model. The original kernel is put back after every
    draw, and at the end even if an error occurs.

    # Arguments
        model: a Keras model returning logits, with binary layers (e.g. `zoo.mlp_meta`).
        layer: name of a binary layer of `model`.
        x, y: the fixed data the loss is computed on (images and integer labels).
        bins: number of equal bins over `[0, max |Wh|]`, or the bin edges.
        flips_per_bin: weights flipped together in each draw.
        repeats: draws per bin.
        batch_size: images per forward pass.
        seed: seed of the draws.

    # Returns
        A `LossIncreaseResult`.

    # Raises
        ValueError: for a layer that is not binary (the binary layers are listed), bad
            `bins`, counts, or data.
    """
    kernel = _binary_kernel(model, layer)
    flips = check_positive_int(flips_per_bin, "flips_per_bin")
    repeats = check_positive_int(repeats, "repeats")
    batch_size = check_positive_int(batch_size, "batch_size")
    x = np.asarray(x, dtype=np.float32)
    y = np.asarray(y).astype(np.int64).ravel()
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            f"x and y must hold the same, non-zero number of samples, got {len(x)} "
            f"and {len(y)}."
        )
    num_classes = int(model.output_shape[-1])
    if y.min() < 0 or y.max() >= num_classes:
        raise ValueError(
            f"labels must lie in [0, {num_classes}) for a model with {num_classes} "
            f"outputs, got [{y.min()}, {y.max()}]."
        )

    original = kernel.numpy()
    magnitudes = np.abs(original).ravel()
    edges = _edges(bins, magnitudes)
    num_bins = len(edges) - 1
    index = np.searchsorted(edges, magnitudes, side="right") - 1
    index[magnitudes == edges[-1]] = num_bins - 1  # the last bin is closed
    index[(magnitudes < edges[0]) | (magnitudes > edges[-1]) | (magnitudes == 0)] = -1
    counts = np.bincount(index[index >= 0], minlength=num_bins)

    rng = np.random.default_rng(seed)
    increases = np.full((num_bins, repeats), np.nan)
    mean_abs_wh = np.full(num_bins, np.nan)
    mean_loss = _mean_loss_function(model, x, y, batch_size)
    flat = original.ravel()
    try:
        base_loss = mean_loss()
        for k in np.flatnonzero(counts >= flips):
            candidates = np.flatnonzero(index == k)
            magnitude_sum = 0.0
            for r in range(repeats):
                chosen = rng.choice(candidates, size=flips, replace=False)
                flipped = flat.copy()
                flipped[chosen] = -flipped[chosen]
                kernel.assign(flipped.reshape(original.shape))
                increases[k, r] = mean_loss() - base_loss
                magnitude_sum += magnitudes[chosen].mean()
            mean_abs_wh[k] = magnitude_sum / repeats
    finally:
        kernel.assign(original)

    skipped = np.flatnonzero(counts < flips)
    notes = ()
    if len(skipped):
        notes = (
            f"{len(skipped)} of {num_bins} bins hold fewer than {flips} weights and "
            f"were skipped (NaN): bins {skipped.tolist()} with "
            f"{counts[skipped].tolist()} weights.",
        )
    done = counts >= flips
    mean, std = np.full(num_bins, np.nan), np.full(num_bins, np.nan)
    mean[done] = increases[done].mean(axis=1)
    std[done] = increases[done].std(axis=1)
    return LossIncreaseResult(
        layer=layer,
        bin_edges=edges,
        bin_centers=0.5 * (edges[:-1] + edges[1:]),
        counts=counts,
        mean_abs_wh=mean_abs_wh,
        increases=increases,
        mean_increase=mean,
        std_increase=std,
        mean_increase_per_weight=mean / flips,
        std_increase_per_weight=std / flips,
        base_loss=float(base_loss),
        flips_per_bin=flips,
        repeats=repeats,
        num_samples=len(x),
        seed=int(seed),
        notes=notes,
    )


def load_run_model(
    run_dir: str | os.PathLike,
    *,
    task: int | None = None,
    samples: int = SAMPLES,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> tuple[tf.keras.Model, np.ndarray, np.ndarray, dict]:
    """Rebuilds the model of a run directory (last checkpoint) and samples its training data.

    # Arguments
        run_dir: a directory written by `training.runner.run`.
        task: index of the task whose training data is used; default the last trained
            task. An earlier task gets its own BatchNorm state, re-estimated, when
            the runner would evaluate it so (`training.batchnorm`).
        samples: at most this many training images of that task (a seeded shuffle).
        data_dir: where the datasets are; default the run's `data_dir` if it exists
            from here, else `$METAPLASTIC_DATA_DIR`.
        seed: seed of the shuffle that picks the images.

    # Returns
        `(model, x, y, info)`; `info` holds the run directory, checkpoint, task index and
        name.

    # Raises
        ValueError: if the directory holds no finished epoch or the checkpoint does not
            fit the configuration.
    """
    restored = restore_run(run_dir, data_dir=data_dir)
    config, model, tasks = restored.config, restored.model, restored.tasks
    last = min((restored.completed_epochs - 1) // config.epochs, len(tasks) - 1)
    task_index = last if task is None else task
    if not 0 <= task_index <= last:
        raise ValueError(
            f"task must be a trained task index in [0, {last}], got {task_index}."
        )
    chosen = tasks[task_index]
    if uses_task_statistics(
        config, task_index, current_task=last, saved=restored.bn_states
    ):  # as the runner evaluates it
        TaskBatchNorm(model, restored.bn_states).restore(
            task_index, batches=recalibration_batches(config, chosen, task_index)
        )
    samples = check_positive_int(samples, "samples")
    images, labels = next(iter(chosen.train_data(batch_size=samples, seed=seed)))
    info = {
        "run_dir": str(run_dir),
        "checkpoint": restored.checkpoint,
        "task_index": task_index,
        "task": chosen.name,
        "config": config.to_json(),
    }
    return model, images.numpy(), labels.numpy(), info


def summary_lines(result: LossIncreaseResult) -> list[str]:
    """A table of the result, one line per bin, for the command line."""
    lines = [
        f"{result.layer}: base loss {result.base_loss:.4f} on {result.num_samples} "
        f"images; {result.flips_per_bin} weights flipped per draw, {result.repeats} "
        f"draws per bin",
        "  |Wh| bin          weights   mean |Wh|   loss increase (mean ± std)   per weight",
    ]
    for k in range(len(result.counts)):
        lo, hi = result.bin_edges[k], result.bin_edges[k + 1]
        if np.isnan(result.mean_increase[k]):
            value = "skipped (too few weights)"
        else:
            value = (
                f"{result.mean_abs_wh[k]:9.3f}   {result.mean_increase[k]:+.5f} ± "
                f"{result.std_increase[k]:.5f}         "
                f"{result.mean_increase_per_weight[k]:+.2e}"
            )
        lines.append(f"  [{lo:5.2f}, {hi:5.2f})  {result.counts[k]:9d}   {value}")
    return lines + list(result.notes)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m experiments.importance --run-dir RUN_DIR --layer dense_2 --out DIR`:
    loss increase by `|Wh|` bin for the run's model; writes
    `importance_<layer>.png` and `.json` to DIR and prints the table. Returns the exit
    code (2 for invalid input)."""
    parser = argparse.ArgumentParser(
        prog="python -m experiments.importance",
        description="Loss increase caused by flipping binary weights, per bin of |Wh| "
        "(Laborieux et al. 2021, Fig. 5c-e).",
    )
    parser.add_argument("--run-dir", required=True, help="a training run directory")
    parser.add_argument("--layer", required=True, help="a binary layer, e.g. dense_2")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--bins", type=int, default=BINS)
    parser.add_argument("--flips", type=int, default=FLIPS_PER_BIN)
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--samples", type=int, default=SAMPLES)
    parser.add_argument("--task", type=int, default=None, help="default: the last")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        model, x, y, info = load_run_model(
            args.run_dir,
            task=args.task,
            samples=args.samples,
            data_dir=args.data_dir,
            seed=args.seed,
        )
        result = loss_increase_by_hidden_weight(
            model,
            layer=args.layer,
            x=x,
            y=y,
            bins=args.bins,
            flips_per_bin=args.flips,
            repeats=args.repeats,
            seed=args.seed,
        )
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    png = plots.plot_loss_increase_by_hidden_weight(
        result,
        path=out / f"importance_{args.layer}.png",
        title=f"{Path(args.run_dir).name}, {args.layer}: {result.flips_per_bin} flips "
        f"x {result.repeats} draws per bin",
    )
    payload = {
        **info,
        "result": result.to_json(),
        "png": png,
        "wall_time_s": round(time.perf_counter() - started, 1),
    }
    json_path = out / f"importance_{args.layer}.json"
    json_path.write_text(json.dumps(payload, indent=2))
    print("\n".join(summary_lines(result)))
    print(f"wrote {png} and {json_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
