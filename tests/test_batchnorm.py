"""Tests for training/batchnorm.py: re-estimated statistics against NumPy batch moments,
exact save/restore, and the truth table of when a task's own statistics apply."""

import itertools

import numpy as np
import pytest
import tensorflow as tf

from training import batchnorm
from training.batchnorm import (
    TaskBatchNorm,
    get_state,
    recalibrate,
    recalibration_batches,
    set_state,
    statistics_drift,
    uses_task_statistics,
)
from training.config import RunConfig
from training.protocols import Task


def tiny_model(momentum=0.9, dropout=0.5):
    """Dropout, then two BatchNorm layers around a dense layer (3 -> 2)."""
    inputs = tf.keras.Input((3,))
    x = tf.keras.layers.Dropout(dropout)(inputs)
    x = tf.keras.layers.BatchNormalization(momentum=momentum, name="bn_in")(x)
    x = tf.keras.layers.Dense(2, name="dense")(x)
    outputs = tf.keras.layers.BatchNormalization(momentum=momentum, name="bn_out")(x)
    return tf.keras.Model(inputs, outputs)


def random_state(model, seed):
    rng = np.random.default_rng(seed)
    return [rng.uniform(0.5, 2.0, w.shape).astype("float32") for w in get_state(model)]


def test_statistics_drift_against_numpy_moments():
    """Each layer's inputs in inference mode (the first BatchNorm sees the data, the
    second the dense layer of the first's inference output), against NumPy."""
    tf.keras.utils.set_random_seed(1)
    model = tiny_model(dropout=0.0)
    set_state(model, random_state(model, seed=2))
    rng = np.random.default_rng(3)
    x = rng.normal(1.0, 2.0, (60, 3)).astype("float32")
    batches = tf.data.Dataset.from_tensor_slices((x, np.zeros(60))).batch(16)
    drift = statistics_drift(model, batches)

    bn_in, dense, bn_out = (model.get_layer(n) for n in ("bn_in", "dense", "bn_out"))
    hidden = dense(bn_in(x, training=False)).numpy().astype(np.float64)
    for layer, data in ((bn_in, x.astype(np.float64)), (bn_out, hidden)):
        mean, var = data.mean(0), data.var(0)
        shift = np.abs(mean - layer.moving_mean.numpy()) / np.sqrt(var + layer.epsilon)
        ratio = layer.moving_variance.numpy() / (var + layer.epsilon)
        got = drift[layer.name]
        assert got["units"] == data.shape[1]
        np.testing.assert_allclose(got["max_mean_shift"], shift.max(), rtol=1e-5)
        assert got["shifted_fraction"] == pytest.approx(np.mean(shift > 1.0))
        np.testing.assert_allclose(got["variance_ratio_min"], ratio.min(), rtol=1e-5)
        np.testing.assert_allclose(got["variance_ratio_max"], ratio.max(), rtol=1e-5)


def test_statistics_drift_is_zero_after_recalibrating_on_the_same_data():
    """Convolutions: statistics per channel over images and positions; recalibrating
    on the very batches leaves no drift in the first BatchNorm (the later ones see the
    inference output of the earlier, not the training one)."""
    tf.keras.utils.set_random_seed(4)
    inputs = tf.keras.Input((5, 5, 2))
    x = tf.keras.layers.Conv2D(3, 3, name="conv")(inputs)
    outputs = tf.keras.layers.BatchNormalization(name="bn")(x)
    model = tf.keras.Model(inputs, outputs)
    images = np.random.default_rng(5).normal(size=(32, 5, 5, 2)).astype("float32")
    batches = tf.data.Dataset.from_tensor_slices((images, np.zeros(32))).batch(32)
    before = statistics_drift(model, batches)["bn"]
    assert before["units"] == 3 and before["max_mean_shift"] > 0.01
    recalibrate(model, batches)
    after = statistics_drift(model, batches)["bn"]
    assert after["max_mean_shift"] < 1e-3 and after["shifted_fraction"] == 0.0
    # Keras keeps the unbiased batch variance (n / (n - 1) = 1.0035 times the
    # population one), compared with the data variance + epsilon.
    assert 0.99 < after["variance_ratio_min"] <= after["variance_ratio_max"] < 1.01


def test_statistics_drift_needs_batch_normalization():
    inputs = tf.keras.Input((3,))
    model = tf.keras.Model(inputs, tf.keras.layers.Dense(2)(inputs))
    data = tf.data.Dataset.from_tensor_slices((np.zeros((4, 3)), np.zeros(4))).batch(2)
    with pytest.raises(ValueError, match="no BatchNormalization"):
        statistics_drift(model, data)


def test_recalibration_averages_the_batch_statistics():
    tf.keras.utils.set_random_seed(0)
    model = tiny_model()
    rng = np.random.default_rng(0)
    batches = [rng.normal(loc=i, size=(8, 3)).astype("float32") for i in range(3)]
    data = tf.data.Dataset.from_tensor_slices((np.stack(batches), np.zeros(3)))
    gamma, beta = (w.copy() for w in model.get_layer("bn_in").get_weights()[:2])
    kernel = model.get_layer("dense").kernel.numpy().copy()
    recalibrate(model, data)
    bn_in = model.get_layer("bn_in")
    np.testing.assert_allclose(
        bn_in.moving_mean.numpy(), np.mean([b.mean(0) for b in batches], 0), rtol=1e-5
    )
    np.testing.assert_allclose(
        bn_in.moving_variance.numpy(),
        np.mean([b.var(0) for b in batches], 0),
        rtol=1e-5,
    )
    # The second layer sees the first one's batch-normalized output (dropout off).
    outputs = []
    for b in batches:
        normalized = (b - b.mean(0)) / np.sqrt(b.var(0) + bn_in.epsilon) * gamma + beta
        outputs.append(normalized @ kernel + model.get_layer("dense").bias.numpy())
    bn_out = model.get_layer("bn_out")
    np.testing.assert_allclose(
        bn_out.moving_mean.numpy(), np.mean([o.mean(0) for o in outputs], 0),
        rtol=1e-4, atol=1e-6,
    )  # fmt: skip
    np.testing.assert_allclose(
        bn_out.moving_variance.numpy(), np.mean([o.var(0) for o in outputs], 0),
        rtol=1e-4,
    )  # fmt: skip
    # Gamma, beta, the weights, the momenta and the dropout rate are unchanged.
    np.testing.assert_array_equal(bn_in.gamma.numpy(), gamma)
    np.testing.assert_array_equal(bn_in.beta.numpy(), beta)
    np.testing.assert_array_equal(model.get_layer("dense").kernel.numpy(), kernel)
    assert bn_in.momentum == bn_out.momentum == 0.9 and model.layers[1].rate == 0.5


def test_state_round_trip_is_exact():
    model = tiny_model()
    layers = batchnorm.batch_norm_layers(model)
    assert [len(layer.weights) for layer in layers] == [4, 4]
    original = get_state(model)
    assert [a.shape for a in original] == [(3,)] * 4 + [(2,)] * 4
    state = random_state(model, 1)
    set_state(model, state)
    for saved, restored in zip(state, get_state(model)):
        np.testing.assert_array_equal(saved, restored)
    state[0][:] = 0  # get_state returned copies, set_state took values
    assert get_state(model)[0].min() >= 0.5
    with pytest.raises(ValueError, match="state must hold 8 BatchNorm arrays"):
        set_state(model, original[:4])


def test_task_batch_norm_evaluates_a_task_with_its_own_state():
    model = tiny_model()
    first, second = random_state(model, 1), random_state(model, 2)
    set_state(model, first)
    states = TaskBatchNorm(model)
    states.save(0)
    set_state(model, second)  # the live state
    x = np.random.default_rng(3).normal(size=(4, 3)).astype("float32")
    live = model(x, training=False).numpy()
    with states.evaluating(0):
        for expected, actual in zip(first, get_state(model)):
            np.testing.assert_array_equal(expected, actual)
        own = model(x, training=False).numpy()
    assert not np.allclose(own, live)
    np.testing.assert_array_equal(model(x, training=False).numpy(), live)
    # The live state comes back after an error too.
    with pytest.raises(RuntimeError), states.evaluating(0):
        raise RuntimeError
    for expected, actual in zip(second, get_state(model)):
        np.testing.assert_array_equal(expected, actual)
    with pytest.raises(KeyError):
        states.restore(1)

    # Restored from saved states (an interrupted run), with re-estimation.
    batches = tf.data.Dataset.from_tensor_slices((x[None], np.zeros(1)))
    resumed = TaskBatchNorm(model, {0: first})
    resumed.restore(0, batches=batches)
    restored = get_state(model)
    np.testing.assert_array_equal(restored[0], first[0])  # gamma kept
    np.testing.assert_allclose(restored[2], x.mean(0), rtol=1e-5)  # moving mean


@pytest.mark.parametrize(
    "batch_norm, protocol, joint, task, current, saved",
    list(
        itertools.product(
            ("task", "domain"), ("permuted", "stream"), (False, True), (0, 1, 2), (1,),
            (True, False),
        )
    ),
)  # fmt: skip
def test_when_a_task_uses_its_own_statistics(
    batch_norm, protocol, joint, task, current, saved
):
    config = RunConfig(protocol=protocol, batch_norm=batch_norm, joint=joint)
    expected = (
        batch_norm == "task" and protocol == "permuted" and not joint and task == 0
        and saved
    )  # fmt: skip
    applies = uses_task_statistics(
        config, task, current_task=current, saved={task} if saved else set()
    )
    assert applies == expected


def test_recalibration_batches_are_the_tasks_first_training_batches():
    rng = np.random.default_rng(0)
    x = rng.random((50, 2, 2, 1), dtype=np.float32)
    y = rng.integers(0, 2, 50)
    task = Task("t", x, y, x[:5], y[:5])
    config = RunConfig(batch_size=8, recalibrate_bn=3)
    batches = list(recalibration_batches(config, task, 4))
    expected = list(task.train_data(batch_size=8, seed=4).take(3))
    assert len(batches) == 3
    for (a, _), (b, _) in zip(batches, expected):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    off = RunConfig(recalibrate_bn=0)
    assert recalibration_batches(off, task, 4) is None
    # `count` overrides the config's number: the same batches, fewer or none.
    fewer = list(recalibration_batches(config, task, 4, count=2))
    assert len(fewer) == 2
    np.testing.assert_array_equal(fewer[1][0].numpy(), batches[1][0].numpy())
    assert recalibration_batches(config, task, 4, count=0) is None
