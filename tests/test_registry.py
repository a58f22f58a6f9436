"""zoo/registry.py: factories join the registry where they are defined; everything that
needs a model by name (export, pretrained, CLIs) reads it."""

import importlib.util
from pathlib import Path

import larq as lq
import pytest
import tensorflow as tf

import zoo
from zoo import pretrained, registry

REGISTRY_SOURCE = Path(registry.__file__)
# Small but valid values of every architecture argument (VGG-16 needs 32x32 inputs).
MLP_SMALL = dict(
    input_shape=(6, 6, 1), num_classes=3, hidden_units=(8, 6), batch_norm_affine=False
)
SMALL = {
    "mlp_meta": MLP_SMALL,
    "mlp_float": MLP_SMALL,
    "vgg16_meta": dict(input_shape=(32, 32, 1), num_classes=3, dense_units=(8,)),
    # 16x16: the smallest input VGG-Small's unpadded 6th convolution leaves room for.
    "vgg_small_meta": dict(input_shape=(16, 16, 2), num_classes=3, dense_units=(8, 6)),
}
# What a factory builds by default (the paper's networks).
MLP_DEFAULTS = dict(
    input_shape=(28, 28, 1),
    num_classes=10,
    hidden_units=(1024, 1024),
    batch_norm_affine=True,
)
DEFAULTS = {
    "mlp_meta": MLP_DEFAULTS,
    "mlp_float": MLP_DEFAULTS,
    "vgg16_meta": dict(input_shape=(32, 32, 3), num_classes=10, dense_units=(512, 512)),
    "vgg_small_meta": dict(
        input_shape=(32, 32, 3), num_classes=10, dense_units=(2048, 2048)
    ),
}


@pytest.fixture
def fresh():
    """A registry of its own, loaded from zoo/registry.py: the zoo's stays untouched."""
    spec = importlib.util.spec_from_file_location("fresh_registry", REGISTRY_SOURCE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def clear_session():
    yield
    tf.keras.backend.clear_session()


def test_register_model(fresh):
    @fresh.register_model(architecture=("width", "num_classes"), default_pretrained="p")
    def tiny(*, width=4, input_shape=(2,), num_classes=3, weights=None):
        return width

    @fresh.register_model(binary=False, name="tiny_float")
    def whatever(*, input_shape=(2,), num_classes=3):
        return None

    assert tiny(width=5) == 5  # returned unchanged
    spec = fresh.get_model("tiny")
    assert spec.factory is tiny and spec.name == "tiny"
    # input_shape and num_classes come first, once.
    assert spec.architecture == ("input_shape", "num_classes", "width")
    assert spec.binary and spec.default_pretrained == "p"
    assert spec.takes("weights") and not spec.takes("pretrained")
    assert spec.default("width") == 4 and spec.default("input_shape") == (2,)
    other = fresh.get_model("tiny_float")
    assert other.factory is whatever and not other.binary
    assert other.architecture == ("input_shape", "num_classes")
    assert other.default_pretrained is None
    assert fresh.models() == (spec, other)


def test_a_name_is_registered_once(fresh):
    @fresh.register_model()
    def tiny(*, input_shape=(2,), num_classes=3):
        return None

    def impostor(*, input_shape=(2,), num_classes=3):
        return None

    with pytest.raises(ValueError) as error:
        fresh.register_model(name="tiny")(impostor)
    assert str(error.value) == "a model named 'tiny' is already registered."
    assert fresh.get_model("tiny").factory is tiny
    fresh.register_model()(tiny)  # the same function again is a no-op
    assert fresh.model_names() == ("tiny",)


def test_get_model_errors(fresh):
    expected = (
        "unknown model {!r}; use one of mlp_float, mlp_meta, vgg16_meta, "
        "vgg_small_meta."
    )
    for name in ("resnet", "", None, 3, "MLP_META"):
        with pytest.raises(ValueError) as error:
            registry.get_model(name)
        assert str(error.value) == expected.format(name)
    with pytest.raises(ValueError) as error:
        fresh.get_model("mlp_meta")
    assert str(error.value) == "unknown model 'mlp_meta'; use one of ."


def test_model_names_and_the_binary_filter():
    assert (
        registry.model_names()
        == zoo.model_names()
        == (
            "mlp_float",
            "mlp_meta",
            "vgg16_meta",
            "vgg_small_meta",
        )
    )
    binary = ("mlp_meta", "vgg16_meta", "vgg_small_meta")
    assert registry.model_names(binary=True) == binary
    assert registry.model_names(binary=False) == ("mlp_float",)
    assert [spec.name for spec in registry.models()] == list(registry.model_names())
    for spec in registry.models():  # every factory is the one `zoo` exports
        assert getattr(zoo, spec.name) is spec.factory
        assert zoo.get_model(spec.name) is spec


def test_pretrained_tables_are_read_from_the_registry():
    assert dict(pretrained.ARCHITECTURE_ARGUMENTS) == {
        "mlp_meta": (
            "input_shape",
            "num_classes",
            "hidden_units",
            "batch_norm_affine",
        ),
        "vgg16_meta": ("input_shape", "num_classes", "dense_units"),
        "vgg_small_meta": ("input_shape", "num_classes", "dense_units"),
    }
    assert dict(pretrained.DEFAULT_PRETRAINED) == {
        "mlp_meta": "mlp_meta_fashion_mnist_stream",
        "vgg16_meta": "vgg16_meta_cifar10",
    }
    entries = zoo.pretrained_models()
    for spec in registry.models():
        assert (spec.name in pretrained.ARCHITECTURE_ARGUMENTS) == spec.takes(
            "pretrained"
        )
        if spec.default_pretrained is not None:  # a registered model of that factory
            assert entries[spec.default_pretrained].factory == spec.name


@pytest.mark.parametrize("name", registry.model_names())
def test_every_factory_builds_what_its_architecture_says(name):
    spec = registry.get_model(name)
    small = SMALL[name]
    assert set(small) == set(spec.architecture)
    assert all(spec.takes(argument) for argument in spec.architecture)
    # Defaults filled in from the factory's signature, sequences as tuples.
    assert pretrained.architecture(name, {}) == DEFAULTS[name]
    assert pretrained.architecture(name, {"num_classes": 4})["num_classes"] == 4

    model = spec.factory(**small)
    assert pretrained.architecture(name, {**small, "name": "ignored"}) == small
    assert model.input_shape == (None, *small["input_shape"])
    assert model.output_shape == (None, small["num_classes"])
    widths = small.get("hidden_units", small.get("dense_units"))
    hidden = [
        layer.units
        for layer in model.layers
        if layer.name.startswith("dense_") and layer.name != "dense_out"
    ]
    assert tuple(hidden) == widths
    # A model rebuilt from the architecture alone has the same weights' shapes.
    rebuilt = spec.factory(**pretrained.architecture(name, small))
    assert [w.shape for w in rebuilt.weights] == [w.shape for w in model.weights]
    quantized = (lq.layers.QuantDense, lq.layers.QuantConv2D)
    binary = [layer for layer in model.layers if isinstance(layer, quantized)]
    assert bool(binary) == spec.binary
