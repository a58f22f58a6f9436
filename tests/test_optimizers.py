"""Tests for training/optimizers.py: MetaplasticAdam against a NumPy re-derivation."""

import math
import re

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

import zoo
from training.optimizers import (
    MetaplasticAdam,
    _metaplastic_adam_update,
    is_binary_variable,
    is_kernel_variable,
)

LR, BETA_1, BETA_2, EPS = 0.01, 0.9, 0.999, 1e-8
LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def reference_step(w, m, v, g, t, *, meta, lr=LR, weight_decay=0.0):
    """The paper's rule, re-derived in float64 NumPy from its definition."""
    g = g + weight_decay * w
    m = BETA_1 * m + (1 - BETA_1) * g
    v = BETA_2 * v + (1 - BETA_2) * g * g
    lr_t = lr * math.sqrt(1 - BETA_2**t) / (1 - BETA_1**t)
    step = lr_t * m / (np.sqrt(v) + EPS)
    damped = np.sign(w) * m > 0  # the step pushes w towards zero
    step = np.where(damped, step * (1 - np.tanh(meta * np.abs(w)) ** 2), step)
    return w - step, m, v, damped


def binary_dense(units, name, input_quantizer=None):
    return lq.layers.QuantDense(
        units,
        input_quantizer=input_quantizer,
        kernel_quantizer=lq.quantizers.SteSign(clip_value=None),
        use_bias=False,
        name=name,
    )


def tiny_model(seed=0, batch_norm=True):
    """Real input -> binary dense -> BN -> sign -> binary dense -> (BN)."""
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((6,))
    x = binary_dense(8, "bin_1")(inputs)
    if batch_norm:
        x = tf.keras.layers.BatchNormalization(name="bn_1")(x)
    x = binary_dense(3, "bin_2", input_quantizer="ste_sign")(x)
    if batch_norm:
        x = tf.keras.layers.BatchNormalization(name="bn_2")(x)
    return tf.keras.Model(inputs, x)


def toy_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n)


def run_explicit_gradients(optimizer, variables, steps, seed=1, scale=1.0):
    """Applies `steps` random gradients (changing sign each step) inside tf.function."""
    rng = np.random.default_rng(seed)
    grads = [
        [rng.normal(scale=scale, size=v.shape).astype("float32") for v in variables]
        for _ in range(steps)
    ]

    @tf.function
    def apply(gs):
        optimizer.apply_gradients(zip(gs, variables))

    for gs in grads:
        apply([tf.constant(g) for g in gs])
    return grads


def test_binary_kernels_follow_reference_rule_over_many_steps():
    model = tiny_model()
    kernel = model.get_layer("bin_1").kernel
    gamma = model.get_layer("bn_1").gamma
    assert is_binary_variable(kernel) and not is_binary_variable(gamma)
    w0 = np.random.default_rng(3).uniform(-0.02, 0.02, kernel.shape).astype("float32")
    kernel.assign(w0)
    variables = [kernel, gamma]
    gamma0 = gamma.numpy().astype("float64")

    steps = 25
    grads = run_explicit_gradients(MetaplasticAdam(LR, meta=1.3), variables, steps)

    w, m, v = w0.astype("float64"), 0.0, 0.0
    g_, gm, gv = gamma0, 0.0, 0.0
    crossed = np.zeros(w.shape, bool)
    damped_any, undamped_any = np.zeros(w.shape, bool), np.zeros(w.shape, bool)
    for t, (g, g_gamma) in enumerate(grads, start=1):
        new_w, m, v, damped = reference_step(w, m, v, g.astype("float64"), t, meta=1.3)
        crossed |= np.sign(new_w) != np.sign(w)
        damped_any |= damped
        undamped_any |= ~damped
        w = new_w
        g_, gm, gv, _ = reference_step(g_, gm, gv, g_gamma.astype("float64"), t, meta=0)

    # The test exercised both branches and zero crossings.
    assert (
        crossed.mean() > 0.2 and damped_any.mean() > 0.8 and undamped_any.mean() > 0.8
    )
    np.testing.assert_allclose(kernel.numpy(), w, rtol=1e-6, atol=1e-7)
    # Non-binary variables get plain Adam.
    np.testing.assert_allclose(gamma.numpy(), g_, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("metaplastic_variables", ["kernels", "binary"])
def test_float_kernels_follow_reference_rule_with_kernels_option(
    metaplastic_variables,
):
    tf.keras.utils.set_random_seed(0)
    inputs = tf.keras.Input((6,))
    x = tf.keras.layers.Dense(8, name="float_1")(inputs)  # kernel and bias
    x = tf.keras.layers.BatchNormalization(name="bn_1")(x)
    model = tf.keras.Model(inputs, x)
    kernel, bias = model.get_layer("float_1").kernel, model.get_layer("float_1").bias
    gamma = model.get_layer("bn_1").gamma
    assert is_kernel_variable(kernel) and not is_binary_variable(kernel)
    assert not is_kernel_variable(bias) and not is_kernel_variable(gamma)
    rng = np.random.default_rng(4)
    kernel0 = rng.uniform(-0.05, 0.05, kernel.shape).astype("float32")
    initial = [kernel0, bias.numpy(), gamma.numpy()]
    for var, value in zip((kernel, bias, gamma), initial):
        var.assign(value)

    optimizer = MetaplasticAdam(
        LR, meta=1.3, metaplastic_variables=metaplastic_variables
    )
    grads = run_explicit_gradients(optimizer, [kernel, bias, gamma], steps=25)
    # The rule with sign(W), |W| of the float kernel; bias and BatchNorm: plain Adam.
    metas = (1.3 if metaplastic_variables == "kernels" else 0.0, 0.0, 0.0)
    for index, (var, meta) in enumerate(zip((kernel, bias, gamma), metas)):
        w, m, v = initial[index].astype("float64"), 0.0, 0.0
        crossed = np.zeros(w.shape, bool)
        for t, gs in enumerate(grads, start=1):
            new_w, m, v, _ = reference_step(
                w, m, v, gs[index].astype("float64"), t, meta=meta
            )
            crossed |= np.sign(new_w) != np.sign(w)
            w = new_w
        np.testing.assert_allclose(var.numpy(), w, rtol=1e-6, atol=1e-7)
        if index == 0:
            assert crossed.mean() > 0.2  # the damping branch mattered
    if metaplastic_variables == "kernels":
        assert optimizer.meta_for_layer("float_1") == 1.3


def test_large_hidden_weights_are_consolidated():
    model = tiny_model()
    kernel = model.get_layer("bin_1").kernel
    kernel.assign(np.full(kernel.shape, 1.5, "float32"))
    # A gradient of constant sign pushes every weight towards zero.
    optimizer = MetaplasticAdam(LR, meta=2.0)
    for _ in range(5):
        optimizer.apply_gradients([(tf.ones(kernel.shape), kernel)])
    plain = tiny_model()
    plain_kernel = plain.get_layer("bin_1").kernel
    plain_kernel.assign(np.full(kernel.shape, 1.5, "float32"))
    adam = MetaplasticAdam(LR, meta=0.0)
    for _ in range(5):
        adam.apply_gradients([(tf.ones(kernel.shape), plain_kernel)])
    moved_meta = 1.5 - kernel.numpy()
    moved_adam = 1.5 - plain_kernel.numpy()
    np.testing.assert_allclose(moved_adam, 5 * LR, rtol=1e-4)
    damping = 1 - math.tanh(2.0 * 1.5) ** 2  # ~0.0099
    np.testing.assert_allclose(moved_meta, 5 * LR * damping, rtol=1e-3)


@pytest.mark.parametrize("default_meta", [0.5, 0.0])
def test_per_layer_meta_and_weight_decay(default_meta):
    """With weight decay, an m = 0 layer (Adam with the L2 term) takes the fused
    update kernel too: same numbers as the NumPy rule."""
    model = tiny_model()
    k1, k2 = model.get_layer("bin_1").kernel, model.get_layer("bin_2").kernel
    rng = np.random.default_rng(5)
    init = [rng.uniform(-1.5, 1.5, k.shape).astype("float32") for k in (k1, k2)]
    for k, w in zip((k1, k2), init):
        k.assign(w)
    optimizer = MetaplasticAdam(
        LR, meta={"bin_2": 3.0}, default_meta=default_meta, weight_decay=1e-3
    )
    grads = run_explicit_gradients(optimizer, [k1, k2], steps=20, seed=7)
    for index, (kernel, meta) in enumerate(((k1, default_meta), (k2, 3.0))):
        w, m, v = init[index].astype("float64"), 0.0, 0.0
        for t, gs in enumerate(grads, start=1):
            w, m, v, _ = reference_step(
                w, m, v, gs[index].astype("float64"), t, meta=meta, weight_decay=1e-3
            )
        np.testing.assert_allclose(kernel.numpy(), w, rtol=1e-6, atol=1e-7)
    assert optimizer.meta_for_layer("bin_1") == default_meta
    assert optimizer.meta_for_layer("bin_2") == 3.0


def fit_weights(optimizer, jit_compile=False, epochs=3, seed=0):
    model = tiny_model(seed)
    model.compile(optimizer, LOSS, jit_compile=jit_compile)
    x, y = toy_data()
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0)
    return model, [w.numpy() for w in model.weights]


def test_meta_zero_is_legacy_adam():
    _, adam = fit_weights(tf.keras.optimizers.legacy.Adam(LR, epsilon=EPS))
    _, meta0 = fit_weights(MetaplasticAdam(LR, meta=0.0))
    _, meta = fit_weights(MetaplasticAdam(LR, meta=1.35))
    for a, b in zip(adam, meta0):
        np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(adam, meta))


def test_xla_and_graph_match_eager():
    _, graph = fit_weights(MetaplasticAdam(LR, meta=1.35))
    _, xla = fit_weights(MetaplasticAdam(LR, meta=1.35), jit_compile=True)
    for a, b in zip(graph, xla):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def binary_kernels_and_slots_after_steps(jit_compile, weight_decay, steps=10):
    """Applies random gradients to the binary kernels of `tiny_model` inside a
    `tf.function` (XLA-compiled or not); returns each kernel and its `m`, `v` slots."""
    model = tiny_model()
    kernels = [model.get_layer(n).kernel for n in ("bin_1", "bin_2")]
    rng = np.random.default_rng(6)
    for kernel in kernels:
        kernel.assign(rng.uniform(-0.02, 0.02, kernel.shape).astype("float32"))
    optimizer = MetaplasticAdam(LR, meta=1.3, weight_decay=weight_decay)

    @tf.function(jit_compile=jit_compile)
    def apply(gs):
        optimizer.apply_gradients(zip(gs, kernels))

    for _ in range(steps):
        apply([rng.normal(size=k.shape).astype("float32") for k in kernels])
    return [
        array.numpy()
        for kernel in kernels
        for array in (
            kernel,
            optimizer.get_slot(kernel, "m"),
            optimizer.get_slot(kernel, "v"),
        )
    ]


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
def test_xla_step_equals_per_variable_update_exactly(weight_decay):
    """Inside an XLA-compiled step the update kernel is inlined into the step's own
    cluster; outside, each binary kernel gets its own compiled update. Same numbers."""
    graph = binary_kernels_and_slots_after_steps(False, weight_decay)
    xla = binary_kernels_and_slots_after_steps(True, weight_decay)
    for a, b in zip(graph, xla):
        np.testing.assert_array_equal(b, a)


def test_update_kernel_makes_three_passes_over_the_weights():
    """Memory traffic is what the update costs: XLA must compile it into three loops
    (`m`, `v`, then the weights), as fused Adam, with no temporary array between."""
    shape = (64, 32)
    variables = [tf.Variable(tf.zeros(shape)) for _ in ("var", "m", "v")]
    args = [v.handle for v in variables] + [tf.zeros(shape)]
    args += [tf.constant(c) for c in (LR, BETA_1, BETA_2, EPS, 1.3, 1e-7)]
    hlo = _metaplastic_adam_update.experimental_get_compiler_ir(*args)(
        stage="optimized_hlo"
    )
    entry = hlo[hlo.index("ENTRY") :]
    loops = re.findall(r"= f32\[64,32\]\{1,0\} fusion\(", entry)
    assert len(loops) == 3, entry


def smooth_model(seed=0):
    """Binary kernel on real inputs, then a float layer: no sign activation whose
    near-zero gradients Adam would amplify into order-lr steps."""
    tf.keras.utils.set_random_seed(seed)
    inputs = tf.keras.Input((6,))
    x = binary_dense(8, "bin_1")(inputs)
    return tf.keras.Model(inputs, tf.keras.layers.Dense(3, name="float")(x))


def test_mirrored_strategy_matches_single_device(mirrored_strategy):
    with mirrored_strategy.scope():
        model = smooth_model()
        model.compile(MetaplasticAdam(LR, meta=1.35), LOSS)
    x, y = toy_data()
    model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)

    single = smooth_model()
    single.compile(MetaplasticAdam(LR, meta=1.35), LOSS)
    single.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    for a, b in zip(single.weights, model.weights):
        # Every replica's copy, not only the first one's (what `b.numpy()` reads).
        replicas = mirrored_strategy.experimental_local_results(b)
        assert len(replicas) == 2
        for replica in replicas:
            np.testing.assert_allclose(
                replica.numpy(), a.numpy(), rtol=1e-5, atol=1e-6, err_msg=b.name
            )
    # ... and the replicas really were damped (m = 0 gives other weights).
    plain = smooth_model()
    plain.compile(MetaplasticAdam(LR, meta=0.0), LOSS)
    plain.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0)
    assert not np.allclose(
        plain.weights[0].numpy(), model.weights[0].numpy(), atol=1e-4
    )


def test_latent_kernels_grow_past_one():
    """No clipping and no zeroed kernel gradients: |Wh| is free to grow in zoo models."""
    tf.keras.utils.set_random_seed(0)
    model = zoo.mlp_meta(hidden_units=(16, 16), input_shape=(6,), num_classes=3)
    model.compile(MetaplasticAdam(0.1, meta=0.5), LOSS)
    x, y = toy_data(256)
    model.fit(x, y, batch_size=32, epochs=8, verbose=0)
    kernels = [v for v in model.trainable_variables if is_binary_variable(v)]
    assert len(kernels) == 3
    for kernel in kernels:
        assert np.abs(kernel.numpy()).max() > 1.0, (
            kernel.name
        )  # a clip would stop it at 1


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"meta": -1.0}, "meta must be finite and >= 0"),
        ({"meta": float("nan")}, "meta must be finite"),
        ({"meta": float("inf")}, "meta must be finite"),
        ({"meta": "high"}, "meta must be a number"),
        ({"meta": {"bin_1": -2}}, "meta['bin_1']"),
        ({"learning_rate": 0.0}, "learning_rate must be a finite number > 0"),
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"weight_decay": -1.0}, "weight_decay"),
        ({"amsgrad": True}, "amsgrad"),
        ({"metaplastic_variables": "all"}, "metaplastic_variables must be one of"),
    ],
)
def test_invalid_arguments(kwargs, message):
    with pytest.raises(ValueError) as error:
        MetaplasticAdam(**kwargs)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_unknown_layer_name_fails_when_training_starts():
    model = tiny_model()
    model.compile(MetaplasticAdam(LR, meta={"bin_1": 1.0, "dense_99": 2.0}), LOSS)
    x, y = toy_data()
    with pytest.raises(
        ValueError, match=r"dense_99.*binary layers are \['bin_1', 'bin_2'\]"
    ):
        model.fit(x, y, epochs=1, verbose=0)


def test_config_round_trip():
    schedule = tf.keras.optimizers.schedules.ExponentialDecay(0.01, 100, 0.5)
    for optimizer in (
        MetaplasticAdam(0.002, meta=2.5, weight_decay=1e-4, epsilon=1e-7),
        MetaplasticAdam(schedule, meta={"bin_1": 1.0}, default_meta=0.3),
        MetaplasticAdam(0.01, meta=0.5, metaplastic_variables="kernels"),
    ):
        config = optimizer.get_config()
        clone = MetaplasticAdam.from_config(config)
        assert clone.get_config() == config
        serialized = tf.keras.optimizers.serialize(optimizer)
        restored = tf.keras.optimizers.deserialize(
            serialized, use_legacy_optimizer=True
        )
        assert isinstance(restored, MetaplasticAdam)
        assert restored.get_config() == config


@pytest.mark.parametrize("save_format", ["tf", "h5"])
def test_compiled_model_saves_and_loads(tmp_path, save_format):
    model, _ = fit_weights(MetaplasticAdam(LR, meta={"bin_2": 2.0}, default_meta=1.0))
    path = str(tmp_path / ("model.h5" if save_format == "h5" else "model"))
    model.save(path, save_format=save_format)
    loaded = tf.keras.models.load_model(path)  # no custom_objects needed
    assert isinstance(loaded.optimizer, MetaplasticAdam)
    assert loaded.optimizer.meta == {"bin_2": 2.0}
    assert loaded.optimizer.default_meta == 1.0
    x, y = toy_data()
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    loaded.fit(x, y, epochs=1, verbose=0)  # training continues
