"""zoo/vgg.py against the paper's reference code (Laborieux et al. 2021, stream CIFAR-10,
`ConvBNN`): VGG-Small's unpadded 6th convolution (4,608 classifier inputs), dropout
after the hidden dense layers only, zero padding of the binary inputs, Xavier-normal
initialisation (what the reference script applies), and its Larq Compute Engine conversion. The checks every factory
shares are in tests/test_zoo.py."""

import warnings

import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from zoo import layers, vgg16_meta, vgg_small_meta
from zoo.vgg import (
    VGG16_CONVS,
    VGG_SMALL_CONVS,
    VGG_SMALL_UNPADDED,
    min_input_size,
)

BINARY_LAYERS = [f"conv_{i}" for i in range(1, 7)] + ["dense_7", "dense_8", "dense_out"]
# A small VGG-Small (16x16 is its smallest input) for the checks that build many.
SMALL = dict(input_shape=(16, 16, 3), dense_units=(16, 16), num_classes=4)


@pytest.fixture(autouse=True)
def clear_session():
    yield
    tf.keras.backend.clear_session()


@pytest.fixture(scope="module")
def default_model():
    tf.keras.utils.set_random_seed(0)
    model = vgg_small_meta()
    yield model
    tf.keras.backend.clear_session()


def kernel(model, name):
    return model.get_layer(name).kernel.numpy()


# Architecture ------------------------------------------------------------------------


def test_vgg_small_is_the_reference_convbnn(default_model):
    model = default_model
    assert [layer.name for layer in model.layers] == [
        "input",
        "conv_1", "bn_1",
        "conv_2", "pool_2", "bn_2",
        "conv_3", "bn_3",
        "conv_4", "pool_4", "bn_4",
        "conv_5", "bn_5",
        "conv_6", "pool_6", "bn_6",
        "flatten",
        "dense_7", "bn_7", "dropout_8",
        "dense_8", "bn_8", "dropout_out",
        "dense_out", "bn_out",
    ]  # fmt: skip
    shapes = {
        "conv_2": (32, 32, 128),
        "pool_2": (16, 16, 128),
        "conv_5": (8, 8, 512),
        "conv_6": (6, 6, 512),  # unpadded: 8x8 -> 6x6
        "pool_6": (3, 3, 512),
        "flatten": (4608,),
        "dense_7": (2048,),
        "bn_out": (10,),
    }
    for name, shape in shapes.items():
        assert model.get_layer(name).output_shape == (None, *shape), name
    assert model.get_layer("dense_7").kernel.shape == (3 * 3 * 512, 2048)
    for name in ("dropout_8", "dropout_out"):
        assert model.get_layer(name).rate == 0.5


def test_vgg_small_padding(default_model):
    convs = {
        layer.name: layer
        for layer in default_model.layers
        if isinstance(layer, lq.layers.QuantConv2D)
    }
    assert sorted(convs) == [f"conv_{i}" for i in range(1, 7)]
    for name, conv in convs.items():
        if name == "conv_6":
            assert conv.padding == "valid"
        else:  # zero padding, the binary inputs included (PyTorch's padding=1)
            assert (conv.padding, conv.pad_values) == ("same", 0.0), name

    ones = vgg_small_meta(**SMALL, pad_values=1.0)
    assert [ones.get_layer(f"conv_{i}").pad_values for i in range(1, 6)] == [
        0.0,  # the real-valued first layer stays zero-padded
        1.0,
        1.0,
        1.0,
        1.0,
    ]
    assert ones.get_layer("conv_6").padding == "valid"


def test_zero_and_one_padding_differ_only_on_the_border():
    zeros = vgg_small_meta(**SMALL, dropout=0.0)
    ones = vgg_small_meta(**SMALL, dropout=0.0, pad_values=1.0)
    ones.set_weights(zeros.get_weights())
    x = np.random.default_rng(0).uniform(size=(2, 16, 16, 3)).astype("float32")

    def conv_2(model):
        probe = tf.keras.Model(model.input, model.get_layer("conv_2").output)
        return probe(x, training=False).numpy()

    y0, y1 = conv_2(zeros), conv_2(ones)
    np.testing.assert_array_equal(y0[:, 1:-1, 1:-1], y1[:, 1:-1, 1:-1])
    # +1 padding adds the kernel's border weights: sign(W) summed over the padded taps.
    w = np.where(kernel(zeros, "conv_2") >= 0, 1.0, -1.0)
    top = y1[:, 0, 1:-1] - y0[:, 0, 1:-1]
    left = y1[:, 1:-1, 0] - y0[:, 1:-1, 0]
    np.testing.assert_array_equal(top, np.broadcast_to(w[0].sum((0, 1)), top.shape))
    np.testing.assert_array_equal(
        left, np.broadcast_to(w[:, 0].sum((0, 1)), left.shape)
    )


@pytest.mark.parametrize("pad_values", [0.5, -1.0, 2, True, "0", None, float("nan")])
def test_invalid_pad_values(pad_values):
    with pytest.raises(ValueError) as error:
        vgg_small_meta(**SMALL, pad_values=pad_values)
    assert str(error.value).startswith("pad_values must be")
    assert "\n" not in str(error.value)


def test_minimum_input_size():
    assert min_input_size(VGG16_CONVS) == 32
    assert min_input_size(VGG_SMALL_CONVS) == 8  # were every convolution padded
    assert min_input_size(VGG_SMALL_CONVS, VGG_SMALL_UNPADDED) == 16
    model = vgg_small_meta(**SMALL)  # 16 -> 8 -> 4 -> conv_6: 2 -> 1
    assert model.get_layer("flatten").output_shape == (None, 512)
    assert vgg_small_meta(**{**SMALL, "input_shape": (24, 16, 1)}).get_layer(
        "flatten"
    ).output_shape == (None, 2 * 1 * 512)
    for shape in [(15, 16, 3), (16, 15, 3), (8, 8, 3)]:
        with pytest.raises(ValueError) as error:
            vgg_small_meta(**{**SMALL, "input_shape": shape})
        assert "height and width >= 16" in str(error.value)


# Dropout -----------------------------------------------------------------------------


def dropout_layout(model):
    """The layers that come right before each dropout layer, by name."""
    names = [layer.name for layer in model.layers]
    return {
        name: names[i - 1] for i, name in enumerate(names) if name.startswith("dropout")
    }


def test_vgg_small_dropout_follows_the_hidden_dense_layers_only():
    assert dropout_layout(vgg_small_meta(**SMALL)) == {
        "dropout_8": "bn_7",
        "dropout_out": "bn_8",
    }
    three = vgg_small_meta(**{**SMALL, "dense_units": (8, 8, 8)}, dropout=0.25)
    assert dropout_layout(three) == {
        "dropout_8": "bn_7",
        "dropout_9": "bn_8",
        "dropout_out": "bn_9",
    }
    assert {three.get_layer(n).rate for n in dropout_layout(three)} == {0.25}
    one = vgg_small_meta(**{**SMALL, "dense_units": (8,)})
    assert dropout_layout(one) == {"dropout_out": "bn_7"}
    assert dropout_layout(vgg_small_meta(**SMALL, dropout=0.0)) == {}


def test_vgg16_keeps_dropout_before_every_dense_layer():
    model = vgg16_meta(dense_units=(16, 16), dropout=0.5)
    assert dropout_layout(model) == {
        "dropout_14": "flatten",
        "dropout_15": "bn_14",
        "dropout_out": "bn_15",
    }
    assert dropout_layout(vgg16_meta(dense_units=(16,))) == {}  # 0.0 by default


# Initialisation ----------------------------------------------------------------------


def test_vgg_small_default_init_is_xavier_normal(default_model):
    for name in BINARY_LAYERS:
        weights = kernel(default_model, name)
        receptive = int(np.prod(weights.shape[:-2]))  # 3x3 for a conv, 1 for a dense
        fan_in, fan_out = receptive * weights.shape[-2], receptive * weights.shape[-1]
        std = np.sqrt(2.0 / (fan_in + fan_out))  # PyTorch's xavier_normal_
        values = weights.ravel()
        # conv_1 has the fewest values (3,456): its std is within ~1.2 % (1 sigma).
        assert np.std(values) == pytest.approx(std, rel=0.05), name
        assert abs(np.mean(values)) < 0.1 * std, name
        # Gaussian, not truncated: some values beyond 2 sigma.
        assert np.mean(np.abs(values) > 2 * std) > 0.03, name
    first = [kernel(default_model, n).ravel()[:100] for n in BINARY_LAYERS]
    for i in range(len(first)):  # each layer draws its own values
        for j in range(i):
            assert not np.allclose(first[i], first[j])


def test_vgg_small_default_init_warns_nothing_and_follows_the_global_seed():
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tf.keras.utils.set_random_seed(3)
        a = vgg_small_meta(**SMALL)
    # Keras warns when one unseeded initializer instance is called more than once.
    assert not [w for w in caught if "unseeded" in str(w.message)]
    tf.keras.utils.set_random_seed(3)
    b = vgg_small_meta(**SMALL)
    c = vgg_small_meta(**SMALL)
    for name in BINARY_LAYERS:
        np.testing.assert_array_equal(kernel(a, name), kernel(b, name))
        assert not np.array_equal(kernel(a, name), kernel(c, name))


def test_vgg16_keeps_glorot_uniform():
    import inspect

    default = inspect.signature(vgg16_meta).parameters["kernel_initializer"].default
    assert default == "glorot_uniform"
    model = vgg16_meta(dense_units=(16,))
    values = kernel(model, "conv_13")  # fan_in = fan_out = 9 * 512
    limit = np.sqrt(6 / (2 * 9 * 512))
    assert np.abs(values).max() <= limit
    assert np.std(values) == pytest.approx(limit / np.sqrt(3), rel=0.02)


@pytest.mark.parametrize(
    "initializer, std",
    [
        ("random_normal", 0.05),
        ({"class_name": "RandomNormal", "config": {"stddev": 0.02}}, 0.02),
        (tf.keras.initializers.RandomNormal(stddev=0.01), 0.01),
        (tf.keras.initializers.TruncatedNormal(stddev=0.01, seed=4), 0.0088),
        (lambda shape, dtype=None: tf.fill(shape, 0.003), 0.0),
    ],
    ids=["name", "config", "instance", "seeded", "callable"],
)
def test_kernel_initializer_identifiers(initializer, std):
    model = vgg_small_meta(**SMALL, kernel_initializer=initializer)
    for name in BINARY_LAYERS:
        values = kernel(model, name)
        if std:
            assert np.std(values) == pytest.approx(std, rel=0.25), name
        else:
            np.testing.assert_allclose(values, 0.003)


def test_initializer_instances_are_never_shared_between_layers():
    # dense_8 and dense_9 have the same shape: an instance called twice would repeat.
    kwargs = {**SMALL, "dense_units": (8, 8, 8)}
    for initializer in (
        tf.keras.initializers.RandomNormal(stddev=0.01),
        tf.keras.initializers.RandomNormal(stddev=0.01, seed=7),
    ):
        model = vgg_small_meta(**kwargs, kernel_initializer=initializer)
        assert not np.array_equal(kernel(model, "dense_8"), kernel(model, "dense_9"))
    # A seeded instance: reproducible, whatever the global seed.
    seeded = [
        vgg_small_meta(
            **kwargs,
            kernel_initializer=tf.keras.initializers.RandomNormal(stddev=0.01, seed=7),
        )
        for _ in range(2)
    ]
    for name in BINARY_LAYERS[:-2]:
        np.testing.assert_array_equal(kernel(seeded[0], name), kernel(seeded[1], name))

    instance = tf.keras.initializers.GlorotNormal(seed=1)
    copy = layers.layer_initializer(instance, seed_offset=3)
    assert copy is not instance and copy.get_config()["seed"] == 4
    assert instance.get_config()["seed"] == 1  # the argument is left untouched
    assert layers.layer_initializer("glorot_uniform") == "glorot_uniform"


@pytest.mark.parametrize("initializer", ["nonsense", 3, True, ["random_normal"]])
def test_invalid_kernel_initializer(initializer):
    for factory in (vgg_small_meta, vgg16_meta):
        with pytest.raises(ValueError) as error:
            factory(kernel_initializer=initializer)
        assert str(error.value).startswith(
            "kernel_initializer must be a Keras initializer"
        )


def test_keyword_only_arguments():
    import inspect

    parameters = inspect.signature(vgg_small_meta).parameters
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in parameters.values())
    assert parameters["pad_values"].default == 0.0
    assert parameters["kernel_initializer"].default is None
    assert parameters["dropout"].default == 0.5


# Larq Compute Engine -----------------------------------------------------------------


def lce_inputs(n, shape, seed):
    """Pixels in multiples of 1/4: the first layer's sums (+-1 weights) are exact in
    float32 whatever the summation order, so Keras and TFLite binarize them alike."""
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 5, (n, *shape)) / 4).astype("float32")


def randomize_batch_norm(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, n) * rng.choice([-1.0, 1.0], n),
                    rng.normal(0, 0.3, n),
                    rng.normal(0, 3, n),
                    rng.uniform(5, 50, n),
                ]
            )


@pytest.mark.parametrize("pad_values, quantize_ops", [(0.0, 6), (1.0, 4)])
def test_lce_converts_vgg_small_and_agrees(pad_values, quantize_ops):
    pytest.importorskip("larq_compute_engine")
    from zoo import export

    tf.keras.utils.set_random_seed(1)
    model = vgg_small_meta(
        input_shape=(16, 16, 3), dense_units=(64, 64), pad_values=pad_values
    )
    randomize_batch_norm(model, seed=2)
    flatbuffer = export.convert_to_lce(model)
    report = export.lce_op_report(flatbuffer, model)
    assert report["all_binary_converted"]
    assert report["converted"] == BINARY_LAYERS[1:]
    assert report["ops"]["LceBconv2d"] == 8 and report["ops"]["CONV_2D"] == 1
    # Zero padding: conv_3 and conv_5 write float outputs, each then quantized apart.
    assert report["ops"]["LceQuantize"] == quantize_ops

    x = lce_inputs(64, (16, 16, 3), seed=3)
    expected = model(x, training=False).numpy()
    lce_logits = export.lce_predict(flatbuffer, x)
    np.testing.assert_allclose(lce_logits, expected, atol=1e-3)
    np.testing.assert_array_equal(lce_logits.argmax(-1), expected.argmax(-1))
    assert np.abs(expected).max() > 1.0  # not a trivially zero comparison
