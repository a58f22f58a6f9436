"""Side-by-side timing shared by the benchmarks: ABBA pairs of blocks, their medians.

This project's 2-core machine switches between full and about half speed whatever
runs, and other processes come and go, so rates from separate runs do not compare. Two
variants A and B are therefore timed in short blocks that alternate in ABBA order (AB,
BA, AB, ...); each adjacent pair of blocks, run under nearly the same machine state,
gives one ratio. Benchmarks report the **median of the pair ratios**, with the best pair
beside it, never alone.

```python
from benchmarks.timing import paired_ratios, summary

ratios, a_s, b_s = paired_ratios(run_adam_block, run_meta_block, pairs=12)
result = summary(ratios, [n / s for s in a_s], [n / s for s in b_s], "adam", "meta")
```
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import tensorflow as tf

__all__ = ["paired_ratios", "summary", "synthetic_data", "training_block"]


def paired_ratios(
    a: Callable[[], None], b: Callable[[], None], *, pairs: int
) -> tuple[list[float], list[float], list[float]]:
    """Times `pairs` pairs of blocks in ABBA order.

    # Arguments
        a: runs one timed block of variant A (and waits for its results).
        b: runs one timed block of variant B.
        pairs: number of adjacent pairs of blocks.

    # Returns
        Per pair: the ratio of block rates `b / a` (= seconds of `a` / seconds of `b`),
        and the seconds of the `a` block and of the `b` block.
    """
    ratios, a_seconds, b_seconds = [], [], []
    for pair in range(pairs):
        seconds = {}
        for block in (a, b) if pair % 2 == 0 else (b, a):
            start = time.perf_counter()
            block()
            seconds[block] = time.perf_counter() - start
        a_seconds.append(seconds[a])
        b_seconds.append(seconds[b])
        ratios.append(seconds[a] / seconds[b])
    return ratios, a_seconds, b_seconds


def summary(
    ratios: list[float],
    a_rates: list[float],
    b_rates: list[float],
    a: str,
    b: str,
    *,
    unit: str | None = None,
) -> dict:
    """Median and best pair ratio, median and best rates of A and B, and the raw pairs.

    # Arguments
        ratios: per-pair ratios `b / a` (from `paired_ratios`).
        a_rates, b_rates: per-block rates of A and B.
        a, b: names of A and B, prefixes of the rate keys (`"<a>_per_s"`, ...).
        unit: the rates' unit, recorded as `"unit"` when given.

    # Returns
        A JSON-ready dict.
    """
    return {
        "ratio": statistics.median(ratios),
        "ratio_best": max(ratios),
        **({"unit": unit} if unit else {}),
        f"{a}_per_s": statistics.median(a_rates),
        f"{a}_per_s_best": max(a_rates),
        f"{b}_per_s": statistics.median(b_rates),
        f"{b}_per_s_best": max(b_rates),
        "pair_ratios": ratios,
        f"{a}_blocks_per_s": a_rates,
        f"{b}_blocks_per_s": b_rates,
    }


def synthetic_data(input_shape: tuple[int, ...], batch_size: int) -> tf.data.Dataset:
    """Eight fixed random batches in memory, repeated forever: no input pipeline cost."""
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch_size * 8, *input_shape)).astype("float32")
    y = rng.integers(0, 10, batch_size * 8).astype("int64")
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch_size).cache().repeat()


def training_block(
    train_step: Callable, batches, steps: int, *, warmup: int = 2
) -> Callable[[], None]:
    """A timed block of `steps` training steps, run `warmup` times first.

    # Arguments
        train_step: `model.make_train_function()`, what `fit` calls once per step.
        batches: an iterator of batches (e.g. `iter(synthetic_data(...))`).
        steps: training steps per block.
        warmup: blocks run before timing (tracing, XLA compilation, allocation).

    # Returns
        A function running one block and waiting for its last step.
    """

    def block():
        for _ in range(steps):
            logs = train_step(batches)
        float(logs["loss"])  # wait for the last step

    for _ in range(warmup):
        block()
    return block
