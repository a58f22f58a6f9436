"""Per-epoch diagnostics of metaplasticity: sign flips and magnitudes of hidden weights.

In a metaplastic binarized network the hidden (latent) weights `Wh` of binary layers
grow in magnitude as they consolidate, and consolidated weights stop flipping sign.
`MetaplasticityDiagnostics` measures both each epoch, per binary layer: the fraction of
binary weights whose sign changed during the epoch and quantiles of `|Wh|`. It adds them
to the epoch `logs`, so that callbacks after it (`CSVLogger`, `TensorBoard`, `History`)
record them, and optionally writes them with a histogram of `Wh` to TensorBoard.

!!! example
    ```python
    from training.callbacks import MetaplasticityDiagnostics

    model.fit(
        train,
        epochs=20,
        callbacks=[
            MetaplasticityDiagnostics(log_dir="run/diagnostics"),
            tf.keras.callbacks.CSVLogger("run/metrics.csv"),  # after it: sees its keys
        ],
    )
    ```
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from tensorboard.plugins.histogram import metadata as histogram_metadata

from training.optimizers import is_binary_variable, layer_name

__all__ = ["MetaplasticityDiagnostics"]

# Buckets of a TensorBoard histogram, as `tf.summary.histogram` makes them by default.
HISTOGRAM_BUCKETS = 30


def _signs(weights: np.ndarray) -> np.ndarray:
    """`sign(w)` as int8, with `sign(0) = +1` as in `larq.math.sign`."""
    signs = np.ones(weights.shape, np.int8)
    signs[weights < 0] = -1
    return signs


def _negative(weights: np.ndarray) -> np.ndarray:
    """`sign(w) == -1` (`_signs`): two weights have different signs exactly where
    this differs; cheaper to compute and compare than the signs."""
    return weights < 0


def _histogram_buckets(
    values: np.ndarray, bucket_count: int = HISTOGRAM_BUCKETS
) -> np.ndarray:
    """The buckets `tf.summary.histogram` writes for `values`, computed with NumPy.

    TensorBoard's own bucketing (`tensorboard.plugins.histogram.summary_v2._buckets`)
    builds a one-hot matrix of `values.size x bucket_count` floats, ~0.1 s per million
    weights; this counts the same buckets, from the same float64 arithmetic, in a
    few milliseconds.

    # Arguments
        values: the data, any shape; it must not be empty.
        bucket_count: number of buckets, at least 1.

    # Returns
        A float64 array of shape `(bucket_count, 3)`: left edge, right edge and count
        of each bucket; equal-width buckets from the minimum to the maximum, the
        maximum counted in the last one. If every value is the same, every edge is that
        value and the last bucket counts them all.
    """
    data = np.asarray(values, dtype=np.float64).ravel()
    low, high = data.min(), data.max()
    counts = np.zeros(bucket_count, np.float64)
    if low == high:
        counts[-1] = data.size
        edges = np.full(bucket_count, high)
        return np.stack([edges, edges, counts], axis=1)
    width = (high - low) / bucket_count
    # floor((x - min) / width), clamped into the last bucket, as TensorBoard does.
    indices = np.floor((data - low) / width).astype(np.int32)
    np.minimum(indices, bucket_count - 1, out=indices)
    counts += np.bincount(indices, minlength=bucket_count)
    edges = np.linspace(low, high, bucket_count + 1)
    edges[-1] = high
    return np.stack([edges[:-1], edges[1:], counts], axis=1)


class MetaplasticityDiagnostics(tf.keras.callbacks.Callback):
    """Logs sign flips and `|Wh|` quantiles of the binary hidden weights every epoch.

    Binary weights are the variables of the model for which
    `training.optimizers.is_binary_variable` is true (Larq latent kernels of precision 1),
    found when training starts (or at the first epoch when used by hand), grouped by
    layer: the variable's name scope, e.g. `dense_2` for `dense_2/kernel:0`.

    At the end of each epoch these Python floats are added to `logs`:

    - `"{layer}/flipped"`: fraction of the layer's binary weights whose sign differs from
      the start of the epoch; `"flipped"`: the same over all binary weights. A weight of
      exactly zero counts as positive, as in `larq.math.sign`. NaN when there is no
      snapshot from `on_epoch_begin` of the same epoch (e.g. a model built by its first
      batch), so that CSV columns stay the same every epoch;
    - `"{layer}/abs_wh_q{q}"` for each `q` in `quantiles` (e.g. `abs_wh_q0.99`) and
      `"{layer}/abs_wh_max"`: quantiles (linear interpolation) and maximum of `|Wh|`.

    Put the callback before `CSVLogger` or `TensorBoard` in the callback list so that
    they see these keys. The same values, with `"epoch"`, are appended to `history`.
    A model without binary weights logs nothing and triggers one warning.

    # Arguments
        quantiles: quantiles of `|Wh|` to log, each in [0, 1].
        log_dir: if given, a TensorBoard log folder for the same scalars plus a histogram
            of `Wh` per layer (`"{layer}/wh"`), written with step = epoch (pass
            `initial_epoch` to successive `fit` calls for one continuous axis).
        per_layer_logs: add the per-layer values to `logs`; if `False`, only `"flipped"`
            goes to `logs` (short progress bars) and the rest to `history` only.

    # Raises
        ValueError: if a quantile is outside [0, 1].
    """

    def __init__(
        self,
        *,
        quantiles: Sequence[float] = (0.5, 0.9, 0.99),
        log_dir: str | None = None,
        per_layer_logs: bool = True,
    ):
        super().__init__()
        quantiles = tuple(float(q) for q in quantiles)
        if any(not 0.0 <= q <= 1.0 for q in quantiles):
            raise ValueError(f"quantiles must lie in [0, 1], got {quantiles}.")
        self.quantiles = quantiles
        self.log_dir = None if log_dir is None else str(log_dir)
        self.per_layer_logs = per_layer_logs
        self.history: list[dict[str, float]] = []
        self._variables: dict[str, list[tf.Variable]] | None = None  # layer -> kernels
        self._signs: dict[str, np.ndarray] | None = None
        self._signs_epoch: int | None = None
        self._writer = None
        self._warned = False

    def _binary_variables(self) -> dict[str, list[tf.Variable]]:
        """Layer -> its binary variables; searched once the model is built."""
        if self._variables is not None:
            return self._variables
        if not self.model.built:  # subclassed or deferred model: no variables yet
            return {}
        variables: dict[str, list[tf.Variable]] = {}
        seen = set()
        for var in self.model.weights:
            if is_binary_variable(var) and id(var) not in seen:
                seen.add(id(var))
                variables.setdefault(layer_name(var), []).append(var)
        if not variables and not self._warned:
            self._warned = True
            warnings.warn(
                "MetaplasticityDiagnostics: the model has no binary (precision 1) "
                "variables; nothing will be logged.",
                stacklevel=2,
            )
        self._variables = variables
        return variables

    def _latent_weights(self) -> dict[str, np.ndarray]:
        """Layer -> its binary hidden weights, flattened (latent, never quantized)."""
        return {
            layer: np.concatenate(
                [
                    np.asarray(getattr(v, "latent_variable", v).numpy()).ravel()
                    for v in vs
                ]
            )
            for layer, vs in self._binary_variables().items()
        }

    def on_train_begin(self, logs=None):
        self._variables = None  # the model may have changed since the last fit
        self._binary_variables()
        if self.log_dir is not None and self._variables and self._writer is None:
            self._writer = tf.summary.create_file_writer(self.log_dir)

    def on_epoch_begin(self, epoch, logs=None):
        self._signs = {
            layer: _negative(w) for layer, w in self._latent_weights().items()
        }
        self._signs_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        weights = self._latent_weights()
        if not weights:
            return
        scalars: dict[str, float] = {}
        before = self._signs if self._signs_epoch == epoch else None
        flipped, total = 0, 0
        for layer, w in weights.items():
            if before is not None and before.get(layer, np.empty(0)).shape == w.shape:
                count = int(np.count_nonzero(_negative(w) != before[layer]))
                scalars[f"{layer}/flipped"] = count / w.size
                flipped, total = flipped + count, total + w.size
            else:  # no snapshot (model built during this epoch): keep the CSV columns
                scalars[f"{layer}/flipped"] = math.nan
            magnitude = np.abs(w)
            for q, value in zip(self.quantiles, np.quantile(magnitude, self.quantiles)):
                scalars[f"{layer}/abs_wh_q{q:g}"] = float(value)
            scalars[f"{layer}/abs_wh_max"] = float(magnitude.max())
        all_measured = total == sum(w.size for w in weights.values())
        scalars["flipped"] = flipped / total if all_measured else math.nan
        if logs is not None:
            logs.update(
                scalars if self.per_layer_logs else {"flipped": scalars["flipped"]}
            )
        self.history.append({"epoch": epoch, **scalars})
        self._write_summaries(epoch, scalars, weights)

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write_summaries(self, epoch, scalars, weights):
        if self.log_dir is None:
            return
        if self._writer is None:  # used by hand, without on_train_begin
            self._writer = tf.summary.create_file_writer(self.log_dir)
        metadata = histogram_metadata.create_summary_metadata(
            display_name=None, description=None
        )
        with self._writer.as_default(step=epoch):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
            for layer, w in weights.items():
                # What `tf.summary.histogram(f"{layer}/wh", w)` writes.
                tf.summary.write(
                    f"{layer}/wh", _histogram_buckets(w), metadata=metadata
                )
        self._writer.flush()
