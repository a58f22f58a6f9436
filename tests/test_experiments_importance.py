"""Tests for experiments/importance.py: flips by |Wh| bin against a NumPy re-derivation, exact
restoration of the weights, and the command line on a tiny run directory."""

import json

import numpy as np
import pytest
import tensorflow as tf

import zoo
from experiments import importance as imp
from tests.conftest import tiny_images
from training import MetaplasticAdam
from training.runner import RunConfig, build_tasks, run

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def trained():
    """A 64-32-4 `mlp_meta` trained a few steps on tiny images, and 200 of them."""
    images, labels = tiny_images(200, seed=5)
    x = (images[..., None] / 255.0).astype("float32")
    y = labels.astype("int64")
    tf.keras.utils.set_random_seed(0)
    # Glorot init (not the paper's narrow uniform): after a few steps its weights
    # differ enough in importance for the flips below to be told apart.
    model = zoo.mlp_meta(
        hidden_units=(32,),
        input_shape=(8, 8, 1),
        num_classes=4,
        kernel_initializer="glorot_uniform",
    )
    model.compile(
        MetaplasticAdam(0.01, meta=1.0),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=25, epochs=3, verbose=0)
    return model, x, y


def sign(a):
    return np.where(a >= 0, 1.0, -1.0)


def batch_norm(layer, h):
    gamma, beta, mean, variance = layer.get_weights()
    return (h - mean) / np.sqrt(variance + layer.epsilon) * gamma + beta


def numpy_loss(model, x, y, kernel_1=None):
    """Mean cross-entropy of the 1-hidden-layer `mlp_meta`, in inference mode, in NumPy
    (float64); `kernel_1` replaces the latent kernel of `dense_1`."""
    w1 = model.get_layer("dense_1").kernel.numpy() if kernel_1 is None else kernel_1
    w_out = model.get_layer("dense_out").kernel.numpy()
    h = x.reshape(len(x), -1).astype(np.float64) @ sign(w1)
    a = sign(batch_norm(model.get_layer("bn_1"), h))
    logits = batch_norm(model.get_layer("bn_out"), a @ sign(w_out))
    top = logits.max(axis=1, keepdims=True)
    log_z = top[:, 0] + np.log(np.exp(logits - top).sum(axis=1))
    return float(np.mean(log_z - logits[np.arange(len(y)), y]))


def test_matches_a_numpy_recomputation_with_the_same_draws(trained):
    model, x, y = trained
    result = imp.loss_increase_by_hidden_weight(
        model, layer="dense_1", x=x, y=y, bins=4, flips_per_bin=10, repeats=3, seed=7
    )
    assert result.base_loss == pytest.approx(numpy_loss(model, x, y), rel=1e-4)
    kernel = model.get_layer("dense_1").kernel.numpy()
    magnitude = np.abs(kernel).ravel()
    edges = np.linspace(0, magnitude.max(), 5)
    np.testing.assert_allclose(result.bin_edges, edges)
    bin_of = np.minimum(np.floor(magnitude / edges[1]).astype(int), 3)
    np.testing.assert_array_equal(result.counts, np.bincount(bin_of, minlength=4))
    assert result.counts.sum() == 64 * 32

    rng = np.random.default_rng(7)
    checked = 0
    for k in range(4):
        if result.counts[k] < 10:
            assert np.isnan(result.increases[k]).all()
            continue
        candidates = np.flatnonzero(bin_of == k)
        for r in range(3):
            chosen = rng.choice(candidates, size=10, replace=False)
            flipped = kernel.ravel().copy()
            flipped[chosen] *= -1
            expected = numpy_loss(
                model, x, y, flipped.reshape(kernel.shape)
            ) - numpy_loss(model, x, y)
            assert result.increases[k, r] == pytest.approx(expected, abs=2e-5)
            checked += 1
        assert result.mean_increase[k] == pytest.approx(result.increases[k].mean())
        assert result.mean_increase_per_weight[k] == pytest.approx(
            result.increases[k].mean() / 10
        )
    assert checked >= 9


def test_weights_are_restored_exactly(trained, monkeypatch):
    model, x, y = trained
    before = [w.copy() for w in model.get_weights()]
    imp.loss_increase_by_hidden_weight(
        model, layer="dense_out", x=x, y=y, bins=3, flips_per_bin=5, repeats=2
    )
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)

    # Also when the evaluation fails half-way, with some weights flipped.
    original = imp._mean_loss_function

    def failing(*args):
        mean_loss = original(*args)
        calls = []

        def loss():
            calls.append(1)
            if len(calls) == 3:
                raise RuntimeError("interrupted")
            return mean_loss()

        return loss

    monkeypatch.setattr(imp, "_mean_loss_function", failing)
    with pytest.raises(RuntimeError, match="interrupted"):
        imp.loss_increase_by_hidden_weight(
            model, layer="dense_1", x=x, y=y, bins=2, flips_per_bin=5, repeats=4
        )
    for old, new in zip(before, model.get_weights()):
        np.testing.assert_array_equal(old, new)


def test_increase_grows_with_hidden_weight_when_large_weights_matter(trained):
    """A hand-made latent kernel whose |Wh| ranks the weights by importance (the loss
    increase of flipping each one alone, computed in NumPy): the measured increase must
    grow from bin to bin."""
    model, x, y = trained
    layer = model.get_layer("dense_1")
    kernel = layer.kernel.numpy()
    base = numpy_loss(model, x, y)
    single = np.empty(kernel.size)
    for i in range(kernel.size):
        flipped = kernel.ravel().copy()
        flipped[i] *= -1
        single[i] = numpy_loss(model, x, y, flipped.reshape(kernel.shape)) - base
    ranks = np.argsort(np.argsort(single, kind="stable"), kind="stable")
    magnitude = 0.1 + 3.9 * ranks / (kernel.size - 1)  # most important: |Wh| = 4
    layer.kernel.assign(sign(kernel) * magnitude.reshape(kernel.shape))
    try:
        assert numpy_loss(model, x, y) == pytest.approx(base)  # same signs
        result = imp.loss_increase_by_hidden_weight(
            model, layer="dense_1", x=x, y=y, bins=4, flips_per_bin=20, repeats=10
        )
    finally:
        layer.kernel.assign(kernel)
    assert np.all(np.diff(result.mean_increase) > 0)
    assert result.mean_increase[-1] > result.mean_increase[0] + 0.05
    assert result.mean_abs_wh == pytest.approx([0.55, 1.5, 2.5, 3.5], abs=0.15)


def test_sparse_bins_are_skipped_with_a_note(trained):
    model, x, y = trained
    result = imp.loss_increase_by_hidden_weight(
        model,
        layer="dense_out",
        x=x,
        y=y,
        bins=[0.0, 1e-6, 10.0],
        flips_per_bin=5,
        repeats=2,
    )
    assert result.counts[0] < 5 and result.counts[1] >= 5
    assert np.isnan(result.mean_increase[0]) and np.isfinite(result.mean_increase[1])
    (note,) = result.notes
    assert "fewer than 5 weights" in note and "bins [0]" in note
    data = result.to_json()
    assert data["mean_increase"][0] is None
    json.dumps(data)  # valid JSON


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"layer": "bn_1"}, "its binary layers are ['dense_1', 'dense_out']"),
        ({"layer": "dense_1", "bins": [1.0, 0.5]}, "increasing edges"),
        ({"layer": "dense_1", "bins": 0}, "bins must be a positive integer"),
        ({"layer": "dense_1", "flips_per_bin": 0}, "flips_per_bin"),
        ({"layer": "dense_1", "y": np.array([0, 1])}, "same, non-zero number"),
        ({"layer": "dense_1", "y": np.full(200, 7)}, "labels must lie in [0, 4)"),
    ],
)
def test_invalid_arguments(trained, kwargs, message):
    model, x, y = trained
    arguments = {"x": x, "y": y, **kwargs}
    with pytest.raises(ValueError) as error:
        imp.loss_increase_by_hidden_weight(model, **arguments)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_command_line_on_a_run_directory(tmp_path, tiny_data_dir, capsys):
    config = RunConfig(
        protocol="stream",
        datasets=("fashion_mnist",),
        num_tasks=2,
        epochs=1,
        hidden_units=(16,),
        batch_size=40,
        meta=1.0,
        evaluate="task",
        data_dir=str(tiny_data_dir),
        run_dir=str(tmp_path / "run"),
    )
    summary = run(config, verbose=0)
    out = tmp_path / "out"
    argv = ["--run-dir", config.run_dir, "--layer", "dense_1", "--out", str(out)]
    options = ["--bins", "3", "--flips", "10", "--repeats", "2", "--seed", "4"]
    assert imp.main(argv + options) == 0
    printed = capsys.readouterr().out
    assert "dense_1: base loss" in printed and "importance_dense_1.json" in printed
    assert (out / "importance_dense_1.png").read_bytes()[:8] == PNG_SIGNATURE
    data = json.loads((out / "importance_dense_1.json").read_text())
    tasks, (test,) = build_tasks(config)
    assert data["task_index"] == 1 and data["task"] == tasks[1].name

    # The model is the run's final one: same test accuracy as its summary.
    model, x, y, info = imp.load_run_model(config.run_dir, seed=4)
    assert info["task_index"] == 1 and len(x) == len(tasks[1].y_train)  # all of it
    model.compile(metrics=["accuracy"], loss="sparse_categorical_crossentropy")
    accuracy = model.evaluate(test.x_test, test.y_test, verbose=0, batch_size=1000)[1]
    assert accuracy == pytest.approx(summary["final_accuracy"]["test"])
    # And the JSON holds the numbers of the Python API with the same settings.
    result = imp.loss_increase_by_hidden_weight(
        model, layer="dense_1", x=x, y=y, bins=3, flips_per_bin=10, repeats=2, seed=4
    )
    np.testing.assert_allclose(
        np.array(data["result"]["mean_increase"], dtype=float), result.mean_increase
    )

    assert imp.main([*argv[:2], "--layer", "flatten", "--out", str(out)]) == 2
    error = capsys.readouterr().err.strip()
    assert "['dense_1', 'dense_out']" in error and "\n" not in error
    assert imp.main(["--run-dir", str(tmp_path), "--layer", "d", "--out", "o"]) == 2
    assert "not a run directory" in capsys.readouterr().err
