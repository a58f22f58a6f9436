"""Tests for training/callbacks.py: MetaplasticityDiagnostics on tiny Larq models."""

import csv
import glob
import math
import warnings

import larq as lq
import numpy as np
import pytest
import tensorflow as tf
from tensorboard.plugins.histogram import summary_v2 as histogram_summary

from training.callbacks import (
    MetaplasticityDiagnostics,
    _histogram_buckets,
    _negative,
    _signs,
)

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
QUANTILES = (0.5, 0.9, 0.99)


def binary_dense(units, name):
    return lq.layers.QuantDense(
        units,
        kernel_quantizer=lq.quantizers.SteSign(clip_value=None),
        use_bias=False,
        name=name,
    )


def tiny_model(seed=0):
    """Input (4) -> binary 4x3 -> float dense -> binary 3x2."""
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((4,))
    x = binary_dense(3, "bin_a")(inputs)
    x = tf.keras.layers.Dense(3, name="float")(x)
    return tf.keras.Model(inputs, binary_dense(2, "bin_b")(x))


def toy_data(n=32, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)).astype("float32"), rng.integers(0, 2, n)


def expected_keys(layers, quantiles=QUANTILES):
    keys = {"flipped"}
    for layer in layers:
        keys |= {f"{layer}/flipped", f"{layer}/abs_wh_max"}
        keys |= {f"{layer}/abs_wh_q{q:g}" for q in quantiles}
    return keys


def test_flips_and_quantiles_by_hand():
    model = tiny_model()
    kernel_a, kernel_b = (
        model.get_layer("bin_a").kernel,
        model.get_layer("bin_b").kernel,
    )
    a0 = np.array(
        [[0.0, -0.2, 0.7], [0.3, -1.0, 2.5], [-0.1, 0.4, 0.05], [1.2, -3.0, 0.6]]
    )
    b0 = np.array([[0.5, -0.5], [1.0, -1.0], [0.2, 0.0]])
    kernel_a.assign(a0)
    kernel_b.assign(b0)
    callback = MetaplasticityDiagnostics()  # created before the model is known
    callback.set_model(model)
    callback.on_epoch_begin(0)

    # bin_a: 3 of 12 flip. 0 -> -0.5 flips (0 counts as +), -0.2 -> 0 flips,
    # 0.7 -> -1.5 flips; 0.3 -> 0 and magnitude changes do not.
    a1 = a0.copy()
    a1[0] = [-0.5, 0.0, -1.5]
    a1[1, 0], a1[1, 1], a1[3, 1] = 0.0, -4.0, -0.01
    # bin_b: 3 of 6 flip.
    b1 = np.array([[-0.5, 0.5], [-1.0, -1.0], [0.2, 0.0]])
    kernel_a.assign(a1)
    kernel_b.assign(b1)
    logs = {"loss": 1.5}
    callback.on_epoch_end(0, logs)

    assert set(logs) == {"loss"} | expected_keys(["bin_a", "bin_b"])
    assert logs["loss"] == 1.5
    assert logs["bin_a/flipped"] == 0.25
    assert logs["bin_b/flipped"] == 0.5
    assert logs["flipped"] == pytest.approx(6 / 18)
    for layer, w in (("bin_a", a1), ("bin_b", b1)):
        w = np.abs(w.astype("float32"))
        for q in QUANTILES:
            assert logs[f"{layer}/abs_wh_q{q:g}"] == pytest.approx(
                np.quantile(w, q), rel=1e-6
            )
        assert logs[f"{layer}/abs_wh_max"] == pytest.approx(w.max())
    assert logs["bin_a/abs_wh_max"] == 4.0
    assert logs["bin_a/abs_wh_q0.5"] == pytest.approx(0.45)  # (0.4 + 0.5) / 2
    assert all(type(v) is float for v in logs.values())
    assert callback.history == [
        {"epoch": 0, **{k: v for k, v in logs.items() if k != "loss"}}
    ]

    # No snapshot for epoch 1: flips unknown (NaN), magnitudes still logged.
    logs = {}
    callback.on_epoch_end(1, logs)
    assert math.isnan(logs["flipped"]) and math.isnan(logs["bin_a/flipped"])
    assert logs["bin_a/abs_wh_max"] == 4.0
    assert len(callback.history) == 2


def test_per_layer_values_can_stay_out_of_logs():
    model = tiny_model()
    kernel = model.get_layer("bin_a").kernel
    kernel.assign(np.full(kernel.shape, 0.5))
    callback = MetaplasticityDiagnostics(per_layer_logs=False)
    callback.set_model(model)
    callback.on_epoch_begin(0)
    kernel.assign(np.full(kernel.shape, -0.5))
    logs = {"loss": 1.0}
    callback.on_epoch_end(0, logs)
    assert set(logs) == {"loss", "flipped"}
    assert callback.history[0]["bin_a/flipped"] == 1.0
    assert callback.history[0]["bin_a/abs_wh_max"] == 0.5


def test_zero_sign_matches_larq():
    w = np.array([-2.0, -0.0, 0.0, 1e-30, -1e-30, 3.0], "float32")
    np.testing.assert_array_equal(_signs(w), lq.math.sign(tf.constant(w)).numpy())
    assert _signs(w).dtype == np.int8


def test_negative_differs_exactly_where_signs_differ():
    rng = np.random.default_rng(0)
    a = rng.normal(size=1000).astype("float32")
    a[:4] = [0.0, -0.0, np.nan, -1e-30]
    b = np.where(rng.random(1000) < 0.3, -a, a)
    np.testing.assert_array_equal(_negative(a) != _negative(b), _signs(a) != _signs(b))


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(1).normal(size=(300, 70)).astype("float32"),
        np.random.default_rng(2).uniform(-3, 1, size=1001),
        np.array([0.5, 0.5, 0.5], "float32"),  # a single value
        np.array([-1.0, 2.0]),
        np.arange(30.0),  # values on the bucket edges
    ],
)
def test_histogram_buckets_are_tensorboards(values):
    expected = histogram_summary._buckets(tf.constant(values)).numpy()
    buckets = _histogram_buckets(values)
    assert buckets.shape == expected.shape == (30, 3) and buckets.dtype == np.float64
    np.testing.assert_array_equal(buckets[:, 2], expected[:, 2])  # counts
    np.testing.assert_allclose(buckets[:, :2], expected[:, :2], rtol=1e-15)
    assert buckets[-1, 1] == expected[-1, 1] == values.max()


def read_csv(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def read_scalars(log_dir, histogram_values=None):
    """Tag -> {step: value} of the scalar summaries, and the set of histogram tags;
    fills `histogram_values` (if given) with {(tag, step): buckets}."""
    scalars, histograms = {}, set()
    for event_file in glob.glob(f"{log_dir}/events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(event_file):
            for value in event.summary.value:
                array = tf.make_ndarray(value.tensor)
                if value.metadata.plugin_data.plugin_name == "histograms":
                    histograms.add(value.tag)
                    if histogram_values is not None:
                        histogram_values[value.tag, event.step] = array
                else:
                    scalars.setdefault(value.tag, {})[event.step] = float(array)
    return scalars, histograms


def test_fit_writes_csv_columns_and_tensorboard(tmp_path):
    model = tiny_model()
    model.compile(tf.keras.optimizers.legacy.Adam(0.05), LOSS)
    x, y = toy_data()
    callback = MetaplasticityDiagnostics(
        quantiles=(0.5, 0.75), log_dir=str(tmp_path / "tb")
    )
    csv_path = tmp_path / "metrics.csv"
    history = model.fit(
        x,
        y,
        batch_size=8,
        epochs=2,
        verbose=0,
        shuffle=False,
        callbacks=[callback, tf.keras.callbacks.CSVLogger(str(csv_path))],
    )
    keys = expected_keys(["bin_a", "bin_b"], quantiles=(0.5, 0.75))
    rows = read_csv(csv_path)
    assert len(rows) == 2
    # CSVLogger adds (empty) `val_` columns for every key when there is no validation.
    assert set(rows[0]) == {"epoch"} | {
        p + k for k in keys | {"loss"} for p in ("", "val_")
    }
    assert [entry["epoch"] for entry in callback.history] == [0, 1]
    for row, entry in zip(rows, callback.history):
        for key in keys:
            assert float(row[key]) == pytest.approx(entry[key], rel=1e-6)
        assert history.history["flipped"][int(row["epoch"])] == entry["flipped"]
    # lr 0.05 on weights of order 0.5 flips some signs, but not all.
    assert 0.0 < callback.history[0]["flipped"] < 1.0
    for layer in ("bin_a", "bin_b"):
        final = np.abs(model.get_layer(layer).kernel.numpy())
        assert float(rows[-1][f"{layer}/abs_wh_max"]) == pytest.approx(
            final.max(), rel=1e-6
        )

    buckets = {}
    scalars, histograms = read_scalars(tmp_path / "tb", buckets)
    assert set(scalars) == keys
    assert histograms == {"bin_a/wh", "bin_b/wh"}
    # Every epoch, the buckets `tf.summary.histogram` would write.
    assert sorted(buckets) == [(t, e) for t in ("bin_a/wh", "bin_b/wh") for e in (0, 1)]
    final = model.get_layer("bin_b").kernel.numpy()
    expected = histogram_summary._buckets(tf.constant(final)).numpy()
    np.testing.assert_array_equal(buckets["bin_b/wh", 1][:, 2], expected[:, 2])
    np.testing.assert_allclose(buckets["bin_b/wh", 1], expected, rtol=1e-15)
    assert scalars["flipped"] == {
        0: pytest.approx(callback.history[0]["flipped"]),
        1: pytest.approx(callback.history[1]["flipped"]),
    }


def test_model_built_by_first_batch():
    tf.keras.utils.set_random_seed(0)
    model = tf.keras.Sequential([binary_dense(2, "bin")])  # no input shape: unbuilt
    model.compile(tf.keras.optimizers.legacy.Adam(0.05), LOSS)
    callback = MetaplasticityDiagnostics()
    x, y = toy_data()
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[callback])
    assert set(history.history) == {"loss"} | expected_keys(["bin"])
    first, second = callback.history
    assert math.isnan(first["flipped"]) and math.isnan(first["bin/flipped"])
    assert (
        0.0 <= second["flipped"] <= 1.0 and second["flipped"] == second["bin/flipped"]
    )
    assert first["bin/abs_wh_max"] > 0.0


def test_model_without_binary_variables_warns_once():
    model = tf.keras.Sequential([tf.keras.Input((4,)), tf.keras.layers.Dense(2)])
    model.compile("sgd", LOSS)
    callback = MetaplasticityDiagnostics(log_dir=None)
    x, y = toy_data(8)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            history = model.fit(x, y, epochs=2, verbose=0, callbacks=[callback])
    ours = [w for w in caught if "no binary" in str(w.message)]
    assert len(ours) == 1
    assert set(history.history) == {"loss"}
    assert callback.history == []


@pytest.mark.parametrize("quantiles", [(0.5, 1.5), (-0.1,)])
def test_invalid_quantiles(quantiles):
    with pytest.raises(ValueError, match=r"quantiles must lie in \[0, 1\]"):
        MetaplasticityDiagnostics(quantiles=quantiles)
