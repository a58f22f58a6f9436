"""Tests for training/baselines.py: Fisher, EWC, random consolidation and SI against
per-example loops and NumPy re-derivations."""

import numpy as np
import pytest
import tensorflow as tf

import zoo
from training.baselines import (
    CONSOLIDATION_TARGETS,
    ElasticWeightConsolidation,
    SynapticIntelligence,
    consolidated_variables,
    diagonal_fisher,
    with_baseline,
)
from training.optimizers import MetaplasticAdam
from zoo import layers

LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def randomize_batch_norm(model, seed=0):
    """Non-trivial moving statistics and affine parameters (inference mode uses them)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            size = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(size=size))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size))
            layer.beta.assign(rng.normal(scale=0.3, size=size))
    return model


def conv_model():
    """Larq convolutions (real input, then binary input with pad_values=1), a strided
    dilated float convolution with bias, pooling, and a binary dense head."""
    inputs = tf.keras.Input((8, 8, 2))
    x = layers.binary_conv(4, first=True, name="conv_1")(inputs)
    x = layers.batch_norm(name="bn_1")(x)
    x = tf.keras.layers.MaxPool2D(name="pool_1")(x)
    x = layers.binary_conv(5, name="conv_2")(x)
    x = layers.batch_norm(name="bn_2")(x)
    x = tf.keras.layers.Conv2D(
        3, 3, strides=2, dilation_rate=1, padding="same", name="conv_3"
    )(x)
    x = tf.keras.layers.Conv2D(3, 2, dilation_rate=2, padding="valid", name="conv_4")(
        tf.keras.layers.ZeroPadding2D(2)(x)
    )
    x = tf.keras.layers.Flatten()(x)
    x = layers.binary_dense(3, name="dense_out")(x)
    return tf.keras.Model(inputs, layers.batch_norm(name="bn_out")(x))


def fallback_model():
    """A dense layer on 3D inputs (no closed form: one gradient per example)."""
    inputs = tf.keras.Input((4, 5))
    x = tf.keras.layers.Dense(6, name="dense_3d")(inputs)
    x = tf.keras.layers.Flatten()(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="dense_out")(x))


MODELS = {
    "mlp_meta": lambda: zoo.mlp_meta(
        hidden_units=(12, 10), input_shape=(6,), num_classes=3
    ),
    "mlp_float": lambda: zoo.mlp_float(
        hidden_units=(12, 10), input_shape=(6,), num_classes=3
    ),
    "conv": conv_model,
    "fallback": fallback_model,
}


def toy_data(shape, n=30, classes=3, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, *shape)).astype("float32")
    return x, rng.integers(0, classes, n)


def per_example_fisher(model, variables, x, y):
    """The definition: the mean of squared per-example NLL gradients, one at a time."""
    totals = [np.zeros(v.shape) for v in variables]
    for i in range(len(y)):
        with tf.GradientTape() as tape:
            logits = model(x[i : i + 1], training=False)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                y[i : i + 1].astype("int32"), logits
            )
        for total, g in zip(totals, tape.gradient(loss, variables)):
            total += g.numpy().astype("float64") ** 2
    return [total / len(y) for total in totals]


@pytest.mark.parametrize("name", MODELS)
def test_batched_fisher_matches_per_example_loop(name):
    tf.keras.utils.set_random_seed(0)
    model = randomize_batch_norm(MODELS[name]())
    x, y = toy_data(model.input_shape[1:])
    variables = consolidated_variables(model)
    assert variables and not any("bn" in v.name for v in variables)
    # 24 of 30 examples, in batches of 7 (a partial batch last), from a tf.data pipeline.
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(5)
    fisher = diagonal_fisher(model, data, num_samples=24, batch_size=7)
    expected = per_example_fisher(model, variables, x[:24], y[:24])
    for var, f, e in zip(variables, fisher, expected):
        assert f.shape == var.shape and np.abs(e).max() > 0
        np.testing.assert_allclose(
            f.numpy(), e, rtol=1e-5, atol=1e-6 * np.abs(e).max(), err_msg=var.name
        )


def linear_model(seed=0, inputs=4, classes=3):
    tf.keras.utils.set_random_seed(seed)
    x = tf.keras.Input((inputs,))
    return tf.keras.Model(x, tf.keras.layers.Dense(classes, name="dense_out")(x))


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def numpy_gradients(w, b, x, y):
    """Per-example NLL gradients of a linear softmax classifier: (N, in, out), (N, out)."""
    error = softmax(x @ w + b) - np.eye(w.shape[1])[y]
    return x[:, :, None] * error[:, None, :], error


def test_fisher_of_a_linear_classifier_is_the_numpy_definition():
    model = linear_model()
    x, y = toy_data((4,), n=40)
    w, b = (v.numpy().astype("float64") for v in model.trainable_variables)
    g_w, g_b = numpy_gradients(w, b, x.astype("float64"), y)
    fisher = diagonal_fisher(model, (x, y), num_samples=1000)  # all 40
    np.testing.assert_allclose(fisher[0].numpy(), (g_w**2).mean(0), rtol=1e-5)
    np.testing.assert_allclose(fisher[1].numpy(), (g_b**2).mean(0), rtol=1e-5)


def test_fisher_is_computed_at_the_binarized_weights():
    model = randomize_batch_norm(MODELS["mlp_meta"]())
    x, y = toy_data((6,))
    before = diagonal_fisher(model, (x, y))
    for var in consolidated_variables(model):
        var.assign(3.0 * var)  # same signs: same binary network, same gradients
    for a, b in zip(before, diagonal_fisher(model, (x, y))):
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6)


def mixed_model(seed=0):
    """A binary dense layer (kernel binarized, no bias), BatchNorm, then a float dense
    layer with bias: one binarized and two real-valued consolidated variables."""
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((5,))
    x = layers.binary_dense(4, first=True, name="dense_1")(inputs)
    x = layers.batch_norm(name="bn_1")(x)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="dense_out")(x))


def np_sign(w):
    """Larq's sign: sign(0) = +1."""
    return np.where(np.asarray(w) >= 0, 1.0, -1.0)


def compared(variables, on):
    """What the penalty compares, re-derived: sign(Wh) of binary kernels with
    `on="binary"`, the (hidden) weights otherwise."""
    binary = [hasattr(v, "latent_variable") and on == "binary" for v in variables]
    return lambda index, w: np_sign(w) if binary[index] else np.asarray(w, "float64")


def test_consolidation_targets():
    assert CONSOLIDATION_TARGETS == ("binary", "latent")
    model = mixed_model()
    variables = consolidated_variables(model)
    assert [v.name for v in variables] == [
        "dense_1/kernel:0",
        "dense_out/kernel:0",
        "dense_out/bias:0",
    ]
    for on, binarized in (("binary", [True, False, False]), ("latent", [False] * 3)):
        for baseline in ("ewc", "ewc_random", "si"):
            consolidation = with_baseline(model, baseline, on=on).consolidation
            assert consolidation.on == on and consolidation.binarized == binarized
    assert with_baseline(model, "ewc").consolidation.on == "binary"  # the default
    assert with_baseline(model, "si").consolidation.on == "binary"
    float_model = MODELS["mlp_float"]()
    assert not any(
        with_baseline(float_model, "ewc", on="binary").consolidation.binarized
    )


@pytest.mark.parametrize("on", CONSOLIDATION_TARGETS)
def test_ewc_accumulators_equal_the_sum_over_tasks(on):
    model = mixed_model()
    variables = consolidated_variables(model)
    target = compared(variables, on)
    ewc = ElasticWeightConsolidation(variables, ewc_lambda=7.0, on=on)
    rng = np.random.default_rng(0)
    fishers, anchors = [], []
    for _ in range(3):
        for var in variables:
            var.assign(rng.normal(size=var.shape))
        fishers.append([rng.uniform(0, 2, v.shape) for v in variables])
        anchors.append([target(i, v.numpy()) for i, v in enumerate(variables)])
        ewc.add_task(variables, fishers[-1])
    for var in variables:
        var.assign(rng.normal(size=var.shape))
    w = [target(i, v.numpy()) for i, v in enumerate(variables)]

    penalty, gradients = ewc.penalty_and_gradients(variables)
    expected_penalty = sum(
        7.0 / 2 * np.sum(f * (wi - a) ** 2)
        for fs, anchor in zip(fishers, anchors)
        for f, a, wi in zip(fs, anchor, w)
    )
    np.testing.assert_allclose(float(penalty), expected_penalty, rtol=1e-5)
    for index, g in enumerate(gradients):
        expected = sum(
            7.0 * fs[index] * (w[index] - anchor[index])
            for fs, anchor in zip(fishers, anchors)
        )
        np.testing.assert_allclose(g.numpy(), expected, rtol=1e-5, atol=1e-5)
    assert int(ewc.tasks_consolidated.numpy()) == 3


def flip(var, entries, scale=1.0):
    """Multiplies the hidden weights by `scale`, then flips the signs of `entries`."""
    w = _latent_numpy(var) * scale
    for entry in entries:
        w[entry] = -w[entry]
    var.assign(w)


def _latent_numpy(var):
    return getattr(var, "latent_variable", var).numpy().copy()


@pytest.mark.parametrize("baseline", ["ewc", "si"])
def test_binary_penalty_acts_only_on_flipped_signs(baseline):
    """The paper's penalty: only binary weights whose sign differs from the anchor's
    get a gradient, `lambda F (sign(W) - sign(W*))` (EWC) or `2 c Omega (sign(W) -
    sign(W*))` (SI), whatever the hidden weights' magnitude (straight-through,
    unclipped); real-valued variables keep the quadratic penalty on their values."""
    model = mixed_model(seed=1)
    variables = consolidated_variables(model)
    kernel = variables[0]
    rng = np.random.default_rng(2)
    importance = [rng.uniform(0.5, 2.0, v.shape) for v in variables]
    anchors = [_latent_numpy(v) for v in variables]
    if baseline == "ewc":
        consolidation = ElasticWeightConsolidation(variables, ewc_lambda=3.0)
        consolidation.add_task(variables, importance)
        scale = 3.0  # lambda F (V - V*), V = sign(Wh) or W
    else:
        consolidation = SynapticIntelligence(variables, c=0.5)  # anchor: W now
        for var, i in zip(consolidation.importance, importance):
            var.assign(i)
        scale = 2 * 0.5  # 2 c Omega (V - V*)

    # Larger hidden weights of the same signs: the binary network is unchanged.
    flip(kernel, [], scale=4.0)
    penalty, gradients = consolidation.penalty_and_gradients(variables)
    assert abs(float(penalty)) < 1e-5  # float32 rounding of the real-valued terms
    np.testing.assert_array_equal(gradients[0].numpy(), 0.0)

    flipped = [(0, 0), (2, 3), (4, 1)]
    flip(kernel, flipped, scale=0.5)
    for var in variables[1:]:  # float variables move without flipping
        var.assign(var.numpy() + 0.25)
    penalty, gradients = consolidation.penalty_and_gradients(variables)
    sign_now, sign_then = np_sign(_latent_numpy(kernel)), np_sign(anchors[0])
    expected = np.zeros(kernel.shape)
    for entry in flipped:
        assert sign_now[entry] != sign_then[entry]
        expected[entry] = scale * importance[0][entry] * 2 * sign_now[entry]
    np.testing.assert_allclose(gradients[0].numpy(), expected, rtol=1e-6)
    assert np.count_nonzero(gradients[0].numpy()) == len(flipped)
    for g, i in zip(gradients[1:], importance[1:]):
        np.testing.assert_allclose(g.numpy(), scale * i * 0.25, rtol=1e-5)
    half = 0.5 if baseline == "ewc" else 1.0  # EWC: lambda / 2; SI: c
    strength = 3.0 if baseline == "ewc" else 0.5
    expected_penalty = (
        strength
        * half
        * (
            sum(4.0 * importance[0][e] for e in flipped)
            + sum(np.sum(i * 0.25**2) for i in importance[1:])
        )
    )
    np.testing.assert_allclose(float(penalty), expected_penalty, rtol=1e-5)

    # The same as differentiating the penalty through the kernel's own quantizer,
    # the zoo's unclipped straight-through sign.
    with tf.GradientTape() as tape:
        latent = tf.convert_to_tensor(kernel.latent_variable)
        tape.watch(latent)
        binary = kernel.quantizer(latent)
        difference = binary - tf.constant(sign_then, tf.float32)
        value = (
            strength
            * half
            * tf.reduce_sum(tf.constant(importance[0], tf.float32) * difference**2)
        )
    np.testing.assert_allclose(
        tape.gradient(value, latent).numpy(), gradients[0].numpy(), rtol=1e-6
    )


@pytest.mark.parametrize("baseline", ["ewc", "si"])
def test_float_models_are_penalized_alike_for_both_targets(baseline):
    model = MODELS["mlp_float"]()
    variables = consolidated_variables(model)
    x, y = toy_data((6,))
    results = []
    for on in CONSOLIDATION_TARGETS:
        tf.keras.utils.set_random_seed(0)
        for var in variables:
            var.assign(tf.random.normal(var.shape))
        wrapped = with_baseline(model, baseline, on=on, fisher_samples=30)
        if baseline == "si":
            for var in wrapped.consolidation.path_integral:
                var.assign(tf.random.uniform(var.shape))
        wrapped.consolidate((x, y))
        for var in variables:
            var.assign_add(tf.random.normal(var.shape, stddev=0.1))
        penalty, gradients = wrapped.consolidation.penalty_and_gradients(variables)
        results.append((float(penalty), [g.numpy() for g in gradients]))
    (binary_penalty, binary), (latent_penalty, latent) = results
    assert latent_penalty > 0
    np.testing.assert_allclose(binary_penalty, latent_penalty, rtol=1e-6)
    for a, b in zip(binary, latent):
        np.testing.assert_allclose(a, b, rtol=1e-6)


@pytest.mark.parametrize("baseline", ["ewc", "si"])
@pytest.mark.parametrize("on", CONSOLIDATION_TARGETS)
def test_penalty_gradient_is_added_to_the_hidden_weights_before_the_step(baseline, on):
    """One SGD step of `fit`: every variable moves by -lr (task gradient + penalty
    gradient), the penalty gradient re-derived in NumPy (for `on="binary"`, on the
    binarized kernel, passed straight through to its hidden weights)."""
    model = mixed_model(seed=2)
    variables = consolidated_variables(model)
    x, y = toy_data((5,), n=16, seed=3)
    target = compared(variables, on)
    strength, lr = 2.0, 0.1
    rng = np.random.default_rng(4)
    importance = [rng.uniform(0.5, 2.0, v.shape) for v in variables]
    anchors = [target(i, _latent_numpy(v)) for i, v in enumerate(variables)]
    if baseline == "ewc":
        wrapped = with_baseline(model, "ewc", ewc_lambda=strength, on=on)
        wrapped.consolidation.add_task(variables, importance)
        factor = strength
    else:
        wrapped = with_baseline(model, "si", si_c=strength, on=on)
        for var, i in zip(wrapped.consolidation.importance, importance):
            var.assign(i)
        factor = 2 * strength
    flip(variables[0], [(0, 0), (1, 2), (3, 3)], scale=0.7)
    for var in variables[1:]:
        var.assign(var.numpy() - 0.2)

    before = [_latent_numpy(v).astype("float64") for v in model.trainable_variables]
    with tf.GradientTape() as tape:
        task_loss = LOSS(y, model(x, training=True))
    task_gradients = tape.gradient(task_loss, model.trainable_variables)
    penalty_gradients = {
        id(v): factor * i * (target(k, _latent_numpy(v)) - a)
        for k, (v, i, a) in enumerate(zip(variables, importance, anchors))
    }
    assert np.any(penalty_gradients[id(variables[0])] != 0)
    wrapped.compile(tf.keras.optimizers.legacy.SGD(lr), LOSS)
    wrapped.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    for var, w, g in zip(model.trainable_variables, before, task_gradients):
        expected = w - lr * (g.numpy() + penalty_gradients.get(id(var), 0.0))
        np.testing.assert_allclose(
            _latent_numpy(var), expected, rtol=1e-5, atol=1e-6, err_msg=var.name
        )


def test_binary_si_keeps_its_path_integral_and_anchor_on_hidden_weights():
    """Omega's denominator and the anchor are hidden weights (reference
    `update_omega`); only the penalty compares signs."""
    model = mixed_model(seed=5)
    variables = consolidated_variables(model)
    si = SynapticIntelligence(variables, c=1.0, xi=0.1, on="binary")
    start = [_latent_numpy(v) for v in variables]
    rng = np.random.default_rng(6)
    omega = [rng.normal(size=v.shape) for v in variables]
    for var, o in zip(si.path_integral, omega):
        var.assign(o)
    flip(variables[0], [(1, 1)], scale=1.5)
    end = [_latent_numpy(v) for v in variables]
    si.consolidate(model)
    for var, o, s, e in zip(si.importance, omega, start, end):
        np.testing.assert_allclose(var.numpy(), o / ((e - s) ** 2 + 0.1), rtol=1e-5)
    for var, e in zip(si.anchor, end):
        np.testing.assert_array_equal(var.numpy(), e)
    for var in si.path_integral:
        np.testing.assert_array_equal(var.numpy(), 0.0)


def test_random_consolidation_permutes_each_layer():
    model = MODELS["mlp_meta"]()
    variables = consolidated_variables(model)
    rng = np.random.default_rng(1)
    fisher = [rng.uniform(0, 1, v.shape).astype("float32") for v in variables]

    def importance(shuffle, seed):
        ewc = ElasticWeightConsolidation(variables, shuffle=shuffle, seed=seed)
        ewc.add_task(variables, fisher)
        return [a.numpy() for a in ewc.fisher_sum]

    plain, shuffled = importance(False, 0), importance(True, 0)
    for f, p, s in zip(fisher, plain, shuffled):
        np.testing.assert_array_equal(p, f)
        np.testing.assert_array_equal(np.sort(s, axis=None), np.sort(f, axis=None))
        assert np.mean(s != f) > 0.9
    for a, b in zip(shuffled, importance(True, 0)):  # seeded
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(shuffled[0], importance(True, 1)[0])


def simulate(baseline, w, b, tasks, steps, lr, strength, xi=0.1):
    """NumPy re-derivation of SGD with EWC or SI on a linear softmax classifier."""
    params = [w.copy(), b.copy()]
    zeros = [np.zeros_like(p) for p in params]
    a, bsum, csum = list(zeros), list(zeros), list(zeros)  # EWC
    omega, importance, anchor = list(zeros), list(zeros), [p.copy() for p in params]
    penalties = []
    for x, y in tasks:
        for _ in range(steps):
            g_w, g_b = numpy_gradients(params[0], params[1], x, y)
            task_grads = [g_w.mean(0), g_b.mean(0)]
            if baseline == "ewc":
                penalty = sum(
                    strength / 2 * np.sum(ai * p**2 - 2 * bi * p + ci)
                    for p, ai, bi, ci in zip(params, a, bsum, csum)
                )
                extra = [strength * (ai * p - bi) for p, ai, bi in zip(params, a, bsum)]
            else:
                penalty = sum(
                    strength * np.sum(o * (p - t) ** 2)
                    for p, o, t in zip(params, importance, anchor)
                )
                extra = [
                    2 * strength * o * (p - t)
                    for p, o, t in zip(params, importance, anchor)
                ]
            penalties.append(penalty)
            new = [p - lr * (g + e) for p, g, e in zip(params, task_grads, extra)]
            omega = [
                o - g * (n - p) for o, g, n, p in zip(omega, task_grads, new, params)
            ]
            params = new
        if baseline == "ewc":
            g_w, g_b = numpy_gradients(params[0], params[1], x, y)
            fisher = [(g_w**2).mean(0), (g_b**2).mean(0)]
            a = [ai + f for ai, f in zip(a, fisher)]
            bsum = [bi + f * p for bi, f, p in zip(bsum, fisher, params)]
            csum = [ci + f * p * p for ci, f, p in zip(csum, fisher, params)]
        else:
            importance = [
                i + o / ((p - t) ** 2 + xi)
                for i, o, p, t in zip(importance, omega, params, anchor)
            ]
            omega = [np.zeros_like(p) for p in params]
            anchor = [p.copy() for p in params]
    return params, penalties, (a, bsum, csum), (omega, importance, anchor)


@pytest.mark.parametrize("on", CONSOLIDATION_TARGETS)
@pytest.mark.parametrize("baseline, strength", [("ewc", 3.0), ("si", 2.0)])
def test_training_with_a_baseline_follows_numpy(baseline, strength, on):
    model = linear_model(seed=3)
    w0, b0 = (v.numpy().astype("float64") for v in model.trainable_variables)
    tasks = [toy_data((4,), n=32, seed=s) for s in (1, 2, 3)]
    steps, lr = 4, 0.5
    kwargs = {"ewc_lambda": strength} if baseline == "ewc" else {"si_c": strength}
    wrapped = with_baseline(model, baseline, on=on, **kwargs)
    histories = []
    for x, y in tasks:
        wrapped.compile(tf.keras.optimizers.legacy.SGD(lr), LOSS)
        history = wrapped.fit(
            x, y, batch_size=32, epochs=steps, shuffle=False, verbose=0
        )
        histories.append(history.history)
        wrapped.consolidate((x, y))

    data = [(x.astype("float64"), y) for x, y in tasks]
    params, penalties, ewc, si = simulate(baseline, w0, b0, data, steps, lr, strength)
    for var, expected in zip(model.trainable_variables, params):
        np.testing.assert_allclose(var.numpy(), expected, rtol=1e-4, atol=1e-5)
    logged = [p for h in histories for p in h["penalty"]]
    np.testing.assert_allclose(logged, penalties, rtol=1e-3, atol=1e-6)
    assert max(penalties) > 0.01  # the penalty acted
    consolidation = wrapped.consolidation
    if baseline == "ewc":
        a, bsum, csum = ewc
        for accumulators, expected in zip(
            (consolidation.fisher_sum, consolidation.fisher_weight_sum), (a, bsum)
        ):
            for variable, e in zip(accumulators, expected):
                np.testing.assert_allclose(variable.numpy(), e, rtol=1e-4, atol=1e-7)
        np.testing.assert_allclose(
            consolidation.fisher_weight_sq_total.numpy(),
            sum(c.sum() for c in csum),
            rtol=1e-4,
        )
    else:
        for accumulators, expected in zip(
            (
                consolidation.path_integral,
                consolidation.importance,
                consolidation.anchor,
            ),
            si,
        ):
            for variable, e in zip(accumulators, expected):
                np.testing.assert_allclose(variable.numpy(), e, rtol=1e-4, atol=1e-6)
    assert int(consolidation.tasks_consolidated.numpy()) == 3


def test_logged_loss_is_task_loss_plus_penalty():
    model = linear_model(seed=4)
    x, y = toy_data((4,), n=32, seed=5)
    wrapped = with_baseline(model, "ewc", ewc_lambda=50.0)
    wrapped.consolidate((x, y))
    for var in model.trainable_variables:
        var.assign_add(tf.fill(var.shape, 0.3))
    penalty, _ = wrapped.consolidation.penalty_and_gradients(
        consolidated_variables(model)
    )
    task_loss = float(LOSS(y, model(x)))
    wrapped.compile(tf.keras.optimizers.legacy.SGD(0.0), LOSS)  # weights stay put
    logs = wrapped.fit(x, y, batch_size=32, epochs=1, verbose=0).history
    assert float(penalty) > 0.1
    np.testing.assert_allclose(logs["penalty"][0], float(penalty), rtol=1e-5)
    np.testing.assert_allclose(logs["loss"][0], task_loss + float(penalty), rtol=1e-5)


@pytest.mark.parametrize("on", CONSOLIDATION_TARGETS)
@pytest.mark.parametrize("baseline", ["ewc_random", "si"])
def test_metaplastic_adam_and_xla(baseline, on):
    x, y = toy_data((6,), n=40, seed=6)

    def train(jit_compile, strength=1.0):
        tf.keras.utils.set_random_seed(0)
        model = zoo.mlp_meta(hidden_units=(12, 10), input_shape=(6,), num_classes=3)
        key = "si_c" if baseline == "si" else "ewc_lambda"
        wrapped = with_baseline(model, baseline, on=on, **{key: strength})
        for task in range(2):
            wrapped.compile(
                MetaplasticAdam(0.05, meta=1.35), LOSS, jit_compile=jit_compile
            )
            wrapped.fit(x, (y + task) % 3, batch_size=8, epochs=2, verbose=0)
            wrapped.consolidate((x, (y + task) % 3))
        return [v.numpy() for v in model.weights]

    graph, xla = train(False), train(True)
    for a, b in zip(graph, xla):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-5)
    unregularized = train(False, strength=0.0)
    assert not all(np.allclose(a, b) for a, b in zip(graph, unregularized))


@pytest.mark.parametrize("on", CONSOLIDATION_TARGETS)
def test_consolidated_model_shares_layers_and_checkpoints_accumulators(tmp_path, on):
    model = MODELS["mlp_meta"]()
    wrapped = with_baseline(model, "si", on=on)
    assert [layer.name for layer in wrapped.layers] == [
        layer.name for layer in model.layers
    ]
    assert all(a is b for a, b in zip(wrapped.weights, model.weights))
    assert len(wrapped.weights) == len(model.weights)  # accumulators are not weights

    for var in wrapped.consolidation.importance:
        var.assign(tf.fill(var.shape, 2.5))
    path = tf.train.Checkpoint(model=wrapped).write(str(tmp_path / "ckpt"))
    names = [name for name, _ in tf.train.list_variables(path)]
    plain = tf.train.Checkpoint(model=model).write(str(tmp_path / "plain"))
    plain_names = {name for name, _ in tf.train.list_variables(plain)}
    assert plain_names < set(names)
    assert {n for n in names if n not in plain_names} == {
        n for n in names if n.startswith("model/consolidation/")
    }

    fresh = with_baseline(MODELS["mlp_meta"](), "si", on=on)
    tf.train.Checkpoint(model=fresh).read(path).assert_consumed()
    for var in fresh.consolidation.importance:
        np.testing.assert_array_equal(var.numpy(), 2.5)
    for a, b in zip(fresh.consolidation.anchor, wrapped.consolidation.anchor):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


@pytest.mark.parametrize("baseline", ["ewc", "ewc_random", "si"])
@pytest.mark.parametrize("on", CONSOLIDATION_TARGETS)
def test_restored_consolidation_gives_the_same_penalty(tmp_path, baseline, on):
    """A checkpoint of the consolidation state (both targets: the same structure)
    restores the penalty and its gradients exactly."""
    x, y = toy_data((6,), n=40, seed=7)

    def build():
        tf.keras.utils.set_random_seed(0)
        return with_baseline(
            MODELS["mlp_meta"](), baseline, on=on, fisher_samples=40, seed=3
        )

    wrapped = build()
    wrapped.compile(tf.keras.optimizers.legacy.SGD(0.05), LOSS)
    for task in range(2):
        wrapped.fit(x, (y + task) % 3, batch_size=8, epochs=1, verbose=0)
        wrapped.consolidate((x, (y + task) % 3))
    wrapped.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = tf.train.Checkpoint(model=wrapped).write(str(tmp_path / "ckpt"))
    variables = consolidated_variables(wrapped)
    penalty, gradients = wrapped.consolidation.penalty_and_gradients(variables)
    assert float(penalty) > 0

    fresh = build()  # not compiled: the checkpoint's optimizer is left unread
    status = tf.train.Checkpoint(model=fresh).read(path)
    status.assert_existing_objects_matched().expect_partial()
    assert fresh.consolidation.on == on
    assert int(fresh.consolidation.tasks_consolidated.numpy()) == 2
    restored, restored_gradients = fresh.consolidation.penalty_and_gradients(
        consolidated_variables(fresh)
    )
    assert float(restored) == float(penalty)
    for a, b in zip(restored_gradients, gradients):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_distribution_strategy_is_refused(mirrored_strategy):
    with mirrored_strategy.scope():
        model = with_baseline(linear_model(), "ewc")
        model.compile(tf.keras.optimizers.legacy.SGD(0.1), LOSS)
    x, y = toy_data((4,), n=8)
    with pytest.raises(ValueError, match="tf.distribute") as error:
        model.fit(x, y, batch_size=4, verbose=0)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"baseline": "lwf"}, "baseline must be one of"),
        ({"baseline": "ewc", "ewc_lambda": -1.0}, "ewc_lambda must be a finite"),
        ({"baseline": "ewc", "ewc_lambda": float("nan")}, "ewc_lambda"),
        ({"baseline": "ewc", "fisher_samples": 0}, "num_samples must be a positive"),
        ({"baseline": "si", "si_c": -0.1}, "si_c must be a finite number >= 0"),
        ({"baseline": "si", "si_xi": 0.0}, "si_xi must be a finite number > 0"),
        ({"baseline": "ewc", "on": "sign"}, "on must be one of"),
        ({"baseline": "si", "on": None}, "on must be one of"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message) as error:
        with_baseline(linear_model(), **kwargs)
    assert "\n" not in str(error.value)


def test_invalid_fisher_data():
    model = linear_model()
    with pytest.raises(ValueError, match="data must be a tf.data.Dataset"):
        diagonal_fisher(model, np.zeros((3, 4)))
    empty = (np.zeros((0, 4), "float32"), np.zeros(0, "int64"))
    with pytest.raises(ValueError, match="no examples"):
        diagonal_fisher(model, empty)
    with pytest.raises(ValueError, match="EWC needs"):
        with_baseline(model, "ewc").consolidate()
    with pytest.raises(ValueError, match="accumulators"):
        SynapticIntelligence(model.trainable_variables[:1]).penalty_and_gradients(
            model.trainable_variables
        )
