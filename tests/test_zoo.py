"""Every zoo factory through the same checks: shapes, parameter counts, binary-layer
settings, training, unclipped kernel gradients, weights round-trip, argument errors."""

import contextlib
import logging
import math

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from zoo import mlp_float, mlp_meta, vgg16_meta, vgg_small_meta
from zoo.layers import BN_EPSILON

M = "M"
VGG16 = [64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M]
VGG_SMALL = [128, 128, M, 256, 256, M, 512, 512, M]
VGG_SMALL_UNPADDED = ("conv_6",)  # as the reference code's 6th convolution: no padding


def architecture(factory, kwargs):
    """The binary layers the factory should build: [(name, kind, fan_in, units)]."""
    if factory is mlp_meta:
        shape = kwargs.get("input_shape", (28, 28, 1))
        widths, convs = kwargs.get("hidden_units", (1024, 1024)), []
        layers, fan_in = [], math.prod(shape)
    else:
        shape = kwargs.get("input_shape", (32, 32, 3))
        convs = VGG16 if factory is vgg16_meta else VGG_SMALL
        default_units = (512, 512) if factory is vgg16_meta else (2048, 2048)
        widths = kwargs.get("dense_units", default_units)
        layers, channels, size = [], shape[-1], np.array(shape[:2])
        for filters in convs:
            if filters == M:
                size //= 2
            else:
                layers.append((f"conv_{len(layers) + 1}", "conv", channels, filters))
                channels = filters
                if factory is vgg_small_meta and layers[-1][0] in VGG_SMALL_UNPADDED:
                    size -= 2
        fan_in = int(np.prod(size)) * channels
    for units in widths:
        layers.append((f"dense_{len(layers) + 1}", "dense", fan_in, units))
        fan_in = units
    layers.append(("dense_out", "dense", fan_in, kwargs.get("num_classes", 10)))
    return layers


def expected_params(factory, kwargs):
    """(total, trainable): kernel + 4 BN variables per unit, 2 of them trainable."""
    total = trainable = 0
    for _, kind, fan_in, units in architecture(factory, kwargs):
        kernel = (9 if kind == "conv" else 1) * fan_in * units
        total += kernel + 4 * units
        trainable += kernel + 2 * units
    return total, trainable


# Small variants for the expensive checks (VGG-16 needs 32x32 inputs for its 5 pools).
CASES = {
    "mlp": (mlp_meta, dict(hidden_units=(32, 32))),
    "mlp_3_hidden": (
        mlp_meta,
        dict(hidden_units=(16, 8, 12), input_shape=(6, 6, 1), num_classes=3),
    ),
    "vgg16": (vgg16_meta, dict(dense_units=(16,), dropout=0.2)),
    # 16x16: the smallest input VGG-Small's unpadded 6th convolution leaves room for.
    "vgg_small": (vgg_small_meta, dict(input_shape=(16, 16, 3), dense_units=(16, 16))),
}
DEFAULTS = {"mlp": mlp_meta, "vgg16": vgg16_meta, "vgg_small": vgg_small_meta}
# Batch norm over 2 samples outputs about +-1 whatever the input, so gradients vanish.
BATCH_SIZE = 8


@pytest.fixture(autouse=True)
def clear_session():
    yield
    tf.keras.backend.clear_session()


def binary_layers(model):
    return [
        layer for layer in model.layers if isinstance(layer, lq.layers.QuantizerBase)
    ]


def random_batch(model, batch_size, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (batch_size, *model.input_shape[1:])).astype("float32")
    y = rng.integers(0, model.output_shape[-1], batch_size)
    return x, y


@pytest.mark.parametrize("name", DEFAULTS)
def test_default_parameter_counts(name):
    factory = DEFAULTS[name]
    model = factory()
    total, trainable = expected_params(factory, {})
    assert model.count_params() == total
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable
    assert model.output_shape == (None, 10)
    if factory is mlp_meta:
        assert total == 784 * 1024 + 1024 * 1024 + 1024 * 10 + 4 * (1024 + 1024 + 10)
    if factory is vgg_small_meta:  # 3x3x512 = 4,608 features into the classifier
        assert model.get_layer("dense_7").kernel.shape == (4608, 2048)
        assert total == 18_250_152


@pytest.mark.parametrize("case", CASES)
def test_architecture(case):
    factory, kwargs = CASES[case]
    model = factory(**kwargs)
    spec = architecture(factory, kwargs)
    total, trainable = expected_params(factory, kwargs)

    assert model.output_shape == (None, spec[-1][3])
    assert model.count_params() == total
    assert sum(int(np.prod(w.shape)) for w in model.trainable_weights) == trainable
    assert model.layers[-1].name == "bn_out"  # logits, no softmax

    layers = binary_layers(model)
    assert [layer.name for layer in layers] == [name for name, *_ in spec]
    for i, layer in enumerate(layers):
        assert isinstance(layer.kernel_quantizer, lq.quantizers.SteSign)
        assert layer.kernel_quantizer.clip_value is None
        assert layer.kernel_constraint is None
        assert not layer.use_bias and len(layer.weights) == 1
        assert layer.activation is tf.keras.activations.linear
        if i == 0:
            assert layer.input_quantizer is None
        else:
            assert isinstance(layer.input_quantizer, lq.quantizers.SteSign)
            assert layer.input_quantizer.clip_value == 1.0
        if isinstance(layer, lq.layers.QuantConv2D):
            assert layer.kernel_size == (3, 3)
            if factory is vgg_small_meta and layer.name in VGG_SMALL_UNPADDED:
                assert layer.padding == "valid"
            else:
                assert layer.padding == "same"
                # VGG-Small zero-pads its binary inputs as the reference code does.
                binary_pad = 0.0 if factory is vgg_small_meta else 1.0
                assert layer.pad_values == (0.0 if i == 0 else binary_pad)

        # conv -> (pool) -> BN, with PyTorch-like settings.
        following = model.layers[model.layers.index(layer) + 1]
        if isinstance(following, tf.keras.layers.MaxPool2D):
            assert following.name == layer.name.replace("conv", "pool")
            following = model.layers[model.layers.index(following) + 1]
        assert isinstance(following, tf.keras.layers.BatchNormalization)
        assert following.name == "bn_" + layer.name.split("_")[1]
        assert (following.momentum, following.epsilon) == (0.9, 1e-5)


def test_no_starved_weights_warning_during_construction(caplog):
    with caplog.at_level(logging.WARNING, logger="larq"):
        mlp_meta(hidden_units=(4,), input_shape=(3,))
    assert "starved" not in caplog.text
    # The warning is only silenced inside the factories.
    with caplog.at_level(logging.WARNING, logger="larq"):
        lq.layers.QuantDense(2, kernel_quantizer="ste_sign")
    assert "starved" in caplog.text


@pytest.mark.parametrize("case", CASES)
def test_training_step_changes_every_kernel(case):
    factory, kwargs = CASES[case]
    model = factory(**kwargs)
    model.compile(
        optimizer=tf.keras.optimizers.legacy.Adam(0.01),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    kernels = [layer.kernel for layer in binary_layers(model)]
    before = [k.numpy() for k in kernels]
    loss = model.train_on_batch(*random_batch(model, BATCH_SIZE))
    assert np.isfinite(loss)
    for kernel, old in zip(kernels, before):
        assert np.any(kernel.numpy() != old), kernel.name


@pytest.mark.parametrize("case", CASES)
def test_kernel_gradients_are_not_clipped(case):
    factory, kwargs = CASES[case]
    if factory is not mlp_meta:
        kwargs = {**kwargs, "dropout": 0.0}  # both gradients must see the same network
    model = factory(**kwargs)
    x, y = random_batch(model, BATCH_SIZE)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    kernels = [layer.kernel for layer in binary_layers(model)]
    signs = [np.where(k.numpy() >= 0, 1.0, -1.0).astype("float32") for k in kernels]

    def kernel_gradients(magnitude):
        for kernel, sign in zip(kernels, signs):
            kernel.assign(magnitude * sign)
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        return [g.numpy() for g in tape.gradient(loss, kernels)]

    large, small = kernel_gradients(3.0), kernel_gradients(0.5)
    for kernel, g_large, g_small in zip(kernels, large, small):
        # |W| = 3 gets a gradient, the same as |W| = 0.5: no STE clipping on kernels.
        assert np.count_nonzero(g_large) > 0, kernel.name
        np.testing.assert_allclose(g_large, g_small, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("case", CASES)
def test_weights_round_trip(case, tmp_path):
    factory, kwargs = CASES[case]
    model = factory(**kwargs)
    rng = np.random.default_rng(1)
    # Non-default values everywhere, BN statistics included (variances stay positive).
    model.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in model.get_weights()])
    x, _ = random_batch(model, 2)
    expected = model(x, training=False).numpy()

    formats = ["weights.h5"] + (["ckpt"] if factory is mlp_meta else [])
    for filename in formats:
        path = str(tmp_path / filename)
        model.save_weights(path)
        fresh = factory(**kwargs)
        assert not np.allclose(fresh(x, training=False).numpy(), expected)
        loaded = factory(**kwargs, weights=path)
        np.testing.assert_array_equal(loaded(x, training=False).numpy(), expected)


@pytest.mark.parametrize("factory", DEFAULTS.values())
def test_invalid_weights(factory, tmp_path):
    (tmp_path / "weights.txt").write_text("not weights")
    for weights in [
        str(tmp_path / "missing.h5"),
        str(tmp_path / "missing_checkpoint"),
        str(tmp_path / "weights.txt"),
        str(tmp_path),
        "imagenet",
        3,
        True,
        ["weights.h5"],
    ]:
        with pytest.raises(ValueError, match="`weights` should be None or a path"):
            factory(weights=weights)


@pytest.mark.parametrize("factory", DEFAULTS.values())
@pytest.mark.parametrize("num_classes", [0, -1, 2.5, "10", True, None])
def test_invalid_num_classes(factory, num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        factory(num_classes=num_classes)


@pytest.mark.parametrize("units", [(), (0,), (32, -1), (32.0,), 32, "32", None])
def test_invalid_units(units):
    with pytest.raises(ValueError, match="hidden_units"):
        mlp_meta(hidden_units=units)
    with pytest.raises(ValueError, match="dense_units"):
        vgg_small_meta(dense_units=units)


@pytest.mark.parametrize(
    "factory, input_shape",
    [
        (mlp_meta, ()),
        (mlp_meta, (28, 28, 0)),
        (mlp_meta, (None, 28, 1)),
        (mlp_meta, 784),
        (vgg16_meta, (32, 32)),
        (vgg16_meta, (16, 16, 3)),  # too small for 5 max-pools
        (vgg_small_meta, (4, 4, 3)),
        (vgg_small_meta, (15, 32, 3)),  # too small for the unpadded 6th convolution
        (vgg_small_meta, "32x32x3"),
    ],
)
def test_invalid_input_shape(factory, input_shape):
    with pytest.raises(ValueError, match="input_shape"):
        factory(input_shape=input_shape)


def test_invalid_dropout():
    with pytest.raises(ValueError, match="dropout"):
        vgg_small_meta(dropout=1.0)


@pytest.mark.parametrize(
    "factory, kwargs, message",
    [
        (
            mlp_meta,
            {"num_classes": 0},
            "num_classes must be a positive integer, got 0.",
        ),
        (
            mlp_float,
            {"hidden_units": (32, 0)},
            "hidden_units must be a non-empty sequence of positive integers, "
            "got (32, 0).",
        ),
        (
            vgg16_meta,
            {"dense_units": []},
            "dense_units must be a non-empty sequence of positive integers, got [].",
        ),
        (
            vgg_small_meta,
            {"dropout": -0.1},
            "dropout must be a finite number >= 0 and < 1, got -0.1.",
        ),
    ],
)
def test_argument_errors_are_one_line(factory, kwargs, message):
    """The shared checks of zoo.validation: the argument and its value, nothing else."""
    with pytest.raises(ValueError) as error:
        factory(**kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize("case", ["mlp", "vgg_small"])
def test_input_tensor(case):
    factory, kwargs = CASES[case]
    shape = kwargs.get("input_shape", (28, 28, 1))
    kwargs = {**kwargs, "input_shape": (1, 2, 3)}  # ignored in favour of input_tensor

    image = tf.keras.Input(shape)
    model = factory(**kwargs, input_tensor=image)
    assert model.inputs[0] is image
    assert model.input_shape == (None, *shape)

    # A tensor computed from an Input: the model starts from that Input.
    image = tf.keras.Input(shape)
    model = factory(**kwargs, input_tensor=tf.keras.layers.Rescaling(2.0)(image))
    assert model.inputs[0] is image
    assert model.layers[1].name.startswith("rescaling")
    total, _ = expected_params(factory, {**kwargs, "input_shape": shape})
    assert model.count_params() == total

    with pytest.raises(ValueError, match="input_tensor"):
        factory(input_tensor=np.zeros((1, *shape), "float32"))


def test_mlp_float_has_the_shape_of_mlp_meta():
    kwargs = dict(hidden_units=(16, 8, 12), input_shape=(6, 6, 1), num_classes=3)
    model, binary = mlp_float(**kwargs), mlp_meta(**kwargs)
    assert model.count_params() == binary.count_params()
    assert not binary_layers(model)
    names = [layer.name for layer in model.layers]
    assert names == [
        "input",
        "flatten",
        "dense_1",
        "bn_1",
        "relu_1",
        "dense_2",
        "bn_2",
        "relu_2",
        "dense_3",
        "bn_3",
        "relu_3",
        "dense_out",
        "bn_out",  # logits: no ReLU, no softmax
    ]
    for name in ("dense_1", "dense_2", "dense_3", "dense_out"):
        layer = model.get_layer(name)
        assert type(layer) is tf.keras.layers.Dense and not layer.use_bias
        assert layer.activation is tf.keras.activations.linear
    bn = model.get_layer("bn_1")
    assert (bn.momentum, bn.epsilon) == (0.9, 1e-5)
    assert mlp_float().count_params() == mlp_meta().count_params()

    # Forward pass, by hand: dense -> BN (inference) -> ReLU, ..., dense -> BN.
    rng = np.random.default_rng(2)
    model.set_weights([rng.uniform(0.5, 1.5, w.shape) for w in model.get_weights()])
    x, _ = random_batch(model, 4)
    h = x.reshape(4, -1).astype("float64")
    for tag in ("1", "2", "3", "out"):
        h = h @ model.get_layer(f"dense_{tag}").kernel.numpy()
        gamma, beta, mean, var = model.get_layer(f"bn_{tag}").get_weights()
        h = gamma * (h - mean) / np.sqrt(var + 1e-5) + beta
        if tag != "out":
            h = np.maximum(h, 0.0)
    np.testing.assert_allclose(model(x, training=False).numpy(), h, rtol=1e-5)


def test_mlp_float_trains_and_round_trips(tmp_path):
    kwargs = dict(hidden_units=(16,), input_shape=(6,), num_classes=3)
    model = mlp_float(**kwargs)
    model.compile(
        optimizer=tf.keras.optimizers.legacy.Adam(0.01),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    kernels = [model.get_layer(n).kernel for n in ("dense_1", "dense_out")]
    before = [k.numpy() for k in kernels]
    model.train_on_batch(*random_batch(model, BATCH_SIZE))
    assert all(np.any(k.numpy() != b) for k, b in zip(kernels, before))
    path = str(tmp_path / "weights.h5")
    model.save_weights(path)
    x, _ = random_batch(model, 2)
    loaded = mlp_float(**kwargs, weights=path)
    np.testing.assert_array_equal(
        loaded(x, training=False).numpy(), model(x, training=False).numpy()
    )
    for bad in ({"hidden_units": ()}, {"num_classes": 0}, {"input_shape": (0,)}):
        with pytest.raises(ValueError):
            mlp_float(**bad)


def seeded_kernels(factory, strategy=None, **kwargs):
    """The kernels of `factory(**kwargs)` built after `set_random_seed(0)`, in
    `strategy`'s scope if given: one array per kernel, or (under a strategy) one list
    of arrays per kernel, a replica's copy each."""
    tf.keras.utils.set_random_seed(0)
    scope = strategy.scope() if strategy is not None else contextlib.nullcontext()
    with scope:
        model = factory(hidden_units=(8, 8), **kwargs)
    kernels = [w for w in model.weights if w.name.endswith("kernel:0")]
    if strategy is None:
        return [k.numpy() for k in kernels]
    return [
        [r.numpy() for r in strategy.experimental_local_results(k)] for k in kernels
    ]


@pytest.mark.parametrize(
    "factory, kwargs, limit",
    [
        (mlp_meta, {}, 0.05),  # the paper's uniform in [-0.05, 0.05]
        (mlp_float, {}, 0.05),
        # An unseeded instance passed by a user (each layer gets its own copy).
        (
            mlp_meta,
            {"kernel_initializer": tf.keras.initializers.RandomUniform(-0.1, 0.1)},
            0.1,
        ),
    ],
    ids=["mlp_meta", "mlp_float", "mlp_meta_instance"],
)
def test_seeded_initial_kernels_match_under_mirrored_strategy(
    factory, kwargs, limit, mirrored_strategy
):
    single = seeded_kernels(factory, **kwargs)
    mirrored = seeded_kernels(factory, mirrored_strategy, **kwargs)
    assert [k.shape for k in single] == [(784, 8), (8, 8), (8, 10)]
    for kernel, replicas in zip(single, mirrored):
        assert len(replicas) == 2
        for replica in replicas:
            np.testing.assert_array_equal(replica, kernel)
    # No two layers draw the same stream (a shared seed would repeat its start).
    assert not np.array_equal(single[1].ravel(), single[2].ravel()[:64])

    # Uniform in [-limit, limit]: bounds, mean, standard deviation limit / sqrt(3),
    # and the empirical CDF (Kolmogorov-Smirnov distance below its 0.1 % critical
    # value, 1.95 / sqrt(n)).
    values = np.sort(np.concatenate([k.ravel() for k in single]).astype("float64"))
    n = values.size
    assert -limit <= values[0] < -0.99 * limit and 0.99 * limit < values[-1] <= limit
    assert abs(values.mean()) < 4 * limit / math.sqrt(3 * n)
    assert values.std() == pytest.approx(limit / math.sqrt(3), rel=0.03)
    cdf = (values + limit) / (2 * limit)
    ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
    assert ks < 1.95 / math.sqrt(n)


@pytest.mark.parametrize("factory", [mlp_meta, vgg16_meta, vgg_small_meta])
def test_pretrained_argument(factory, tmp_path):
    """`pretrained` is a keyword-only bool, False by default, exclusive with `weights`
    (the pretrained registry itself is tested in tests/test_pretrained.py)."""
    import inspect

    parameter = inspect.signature(factory).parameters["pretrained"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY
    assert parameter.default is False
    path = tmp_path / "weights.h5"
    path.write_bytes(b"")
    for kwargs, match in [
        ({"pretrained": True, "weights": str(path)}, "not both"),
        ({"pretrained": 1}, "`pretrained` should be True or False"),
        ({"pretrained": "mlp_meta_fashion_mnist_stream"}, "should be True or False"),
    ]:
        with pytest.raises(ValueError, match=match):
            factory(**kwargs)


@pytest.mark.parametrize("factory", [mlp_meta, mlp_float])
def test_batch_norm_without_gamma_and_beta(factory):
    kwargs = dict(hidden_units=(16, 8), input_shape=(4, 4, 1), num_classes=3)
    plain = factory(batch_norm_affine=False, **kwargs)
    affine = factory(**kwargs)
    assert affine.count_params() - plain.count_params() == 2 * (16 + 8 + 3)
    norms = [
        layer
        for layer in plain.layers
        if isinstance(layer, tf.keras.layers.BatchNormalization)
    ]
    assert len(norms) == 3 and all(not n.scale and not n.center for n in norms)
    # Inference normalizes with the moving statistics alone: (h - mean) / sqrt(var + eps).
    rng = np.random.default_rng(0)
    for layer in norms:
        units = layer.moving_mean.shape
        layer.set_weights([rng.normal(size=units), rng.uniform(0.5, 2.0, units)])
    x = rng.uniform(size=(5, 4, 4, 1)).astype("float32")
    dense_out = tf.keras.Model(plain.input, plain.get_layer("dense_out").output)
    mean, var = plain.get_layer("bn_out").get_weights()
    expected = (dense_out(x).numpy() - mean) / np.sqrt(var + BN_EPSILON)
    np.testing.assert_allclose(plain(x, training=False), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(
        ValueError, match="batch_norm_affine must be one of True, False"
    ):
        factory(batch_norm_affine="no", **kwargs)
