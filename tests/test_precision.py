"""Tests of zoo.precision: bf16 zoo models (bfloat16 binary layers, float32 variables,
batch normalization and logits), their exactness against float32, training, saving and
LCE conversion."""

import csv
import dataclasses
import json
import os
import platform
import warnings
from pathlib import Path

import keras_tuner
import larq as lq
import numpy as np
import pytest
import tensorflow as tf

from training.baselines import FisherEstimator
from training.cli import build_parser, config_from_args
from training.config import RunConfig
from training.optimizers import MetaplasticAdam
from training.packaging import package_run
from training.rundir import RunDirectory
from training.runner import restore_run, run
from tuning.hypermodel import MetaplasticHyperModel
from zoo import (
    export,
    layers,
    mlp_float,
    mlp_meta,
    registry,
    vgg16_meta,
    vgg_small_meta,
)
from zoo.datasets import load_dataset
from zoo.precision import (
    PRECISIONS,
    as_float32,
    bf16_instructions,
    check_precision,
    cpu_description,
    layer_policy,
    model_precision,
)
from zoo.saved_model import load_saved_model

CASES = {
    "mlp": (mlp_meta, dict(hidden_units=(32, 32))),
    "vgg16": (vgg16_meta, dict(dense_units=(16,), dropout=0.2)),
    # 16x16: VGG-Small's smallest input (its 6th convolution is unpadded).
    "vgg_small": (vgg_small_meta, dict(input_shape=(16, 16, 3), dense_units=(16, 16))),
}
LOSS = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)


@pytest.fixture(autouse=True)
def clear_session():
    yield
    tf.keras.backend.clear_session()


def signs(shape, seed):
    return np.random.default_rng(seed).choice([-1.0, 1.0], shape).astype("float32")


def bf16_round(x):
    """float32 values rounded to the nearest bfloat16, as float32."""
    return tf.cast(tf.cast(x, tf.bfloat16), tf.float32).numpy()


def binary_layers(model):
    return [layer for layer in model.layers if export.is_binary_layer(layer)]


# The dtypes of a bf16 model ---------------------------------------------------------


def test_check_precision():
    assert PRECISIONS == ("float32", "bf16")
    assert check_precision("bf16") == "bf16"
    for bad in ("bfloat16", "float16", None, 16):
        with pytest.raises(ValueError, match="^precision must be one of") as error:
            check_precision(bad)
        assert "\n" not in str(error.value)
    assert layer_policy("bf16").name == "mixed_bfloat16"
    assert layer_policy("float32").name == "float32"


@pytest.mark.parametrize("case", sorted(CASES))
def test_bf16_model_dtypes(case):
    factory, kwargs = CASES[case]
    model = factory(precision="bf16", **kwargs)
    assert model_precision(model) == "bf16"
    assert model.output.dtype == tf.float32  # logits
    hidden = binary_layers(model)
    assert len(hidden) >= 2
    for layer in hidden:  # binary input and kernel: bfloat16 compute, float32 kernel
        assert (layer.compute_dtype, layer.variable_dtype) == ("bfloat16", "float32")
        assert layer.kernel.dtype == tf.float32
        assert getattr(layer.kernel, "precision", None) == 1  # still Larq-quantized
        assert layer.input_quantizer.compute_dtype == "bfloat16"
        assert layer.kernel_quantizer.compute_dtype == "bfloat16"
        assert layer.output.dtype == tf.bfloat16
        assert layer.kernel_quantizer.clip_value is None  # unclipped, as in float32
        assert layer.input_quantizer.clip_value == 1.0
    first = model.get_layer("dense_1" if case == "mlp" else "conv_1")
    assert first.compute_dtype == "float32" and first.output.dtype == tf.float32
    norms = [
        x for x in model.layers if isinstance(x, tf.keras.layers.BatchNormalization)
    ]
    assert len(norms) == len(hidden) + 1
    for layer in norms:
        assert layer.compute_dtype == layer.variable_dtype == "float32"
        assert layer.output.dtype == tf.float32
        assert {v.dtype for v in layer.weights} == {tf.float32}  # gamma ... variance
    assert {v.dtype for v in model.weights} == {tf.float32}


@pytest.mark.parametrize("case", sorted(CASES))
def test_float32_model_is_unchanged_by_default(case):
    factory, kwargs = CASES[case]
    model = factory(**kwargs)
    assert model_precision(model) == "float32"
    assert {layer.compute_dtype for layer in model.layers} == {"float32"}
    assert as_float32(model) is model


def test_bad_precision_is_one_line_error():
    with pytest.raises(ValueError, match="^precision must be one of .*'fp16'") as error:
        mlp_meta(hidden_units=(8,), precision="fp16")
    assert "\n" not in str(error.value)


def test_registry_knows_which_factories_take_a_precision():
    takes = {spec.name for spec in registry.models() if spec.takes("precision")}
    assert takes == {"mlp_meta", "vgg16_meta", "vgg_small_meta"}
    assert not registry.get_model("mlp_float").takes("precision")
    assert "precision" not in registry.get_model("mlp_meta").architecture
    assert mlp_float().dtype_policy.name == "float32"


# Exactness of bfloat16 binary layers ------------------------------------------------


def binary_pair(make, input_shape, seed=0):
    """The same binary layer built in float32 and bf16, with the same latent kernel."""
    x = np.random.default_rng(seed).normal(size=(8, *input_shape)).astype("float32")
    built = []
    for precision in ("float32", "bf16"):
        layer = make(precision)
        layer.build((None, *input_shape))
        built.append(layer)
    built[1].set_weights(built[0].get_weights())
    return built, x


@pytest.mark.parametrize(
    "make, input_shape",
    [
        (lambda p: layers.binary_dense(32, precision=p), (256,)),
        (lambda p: layers.binary_conv(16, precision=p), (6, 6, 28)),  # fan-in 252
    ],
    ids=["dense", "conv"],
)
def test_bf16_binary_layer_forward_is_exact_up_to_fan_in_256(make, input_shape):
    (f32, bf16), x = binary_pair(make, input_shape)
    y32, y16 = f32(x).numpy(), bf16(x)
    assert y16.dtype == tf.bfloat16
    y16 = tf.cast(y16, tf.float32).numpy()
    np.testing.assert_array_equal(y16, y32)  # integer sums, |s| <= 256: exact
    assert np.array_equal(y32, np.round(y32)) and np.abs(y32).max() > 16
    np.testing.assert_array_equal(bf16(np.sign(x) + (x == 0)).numpy(), y16)


@pytest.mark.parametrize(
    "make, input_shape",
    [
        (lambda p: layers.binary_dense(64, precision=p), (4096,)),
        (lambda p: layers.binary_conv(32, precision=p), (4, 4, 512)),  # fan-in 4608
    ],
    ids=["dense", "conv"],
)
def test_bf16_binary_layer_forward_rounds_only_the_sum(make, input_shape):
    """Products are exact and accumulated in float32: only the stored sum is rounded."""
    (f32, bf16), x = binary_pair(make, input_shape)
    y32 = f32(x).numpy()
    y16 = tf.cast(bf16(x), tf.float32).numpy()
    np.testing.assert_array_equal(y16, bf16_round(y32))
    assert np.all(np.abs(y16 - y32) <= np.abs(y32) * 2.0**-9)
    assert np.array_equal(np.sign(y16), np.sign(y32))  # never flips a sign


def test_bf16_model_forward_equals_float32():
    """Sums of 1152 +-1 terms are even: exact in bfloat16 up to 512 (tiny VGG-Small)."""
    model = vgg_small_meta(
        precision="bf16",
        input_shape=(16, 16, 3),
        dense_units=(16, 16),
        num_classes=4,
        dropout=0.0,
    )
    twin = as_float32(model)
    assert model_precision(twin) == "float32" and twin.name == model.name
    x = np.random.default_rng(0).uniform(size=(6, 16, 16, 3)).astype("float32")
    for training in (False, True):
        np.testing.assert_array_equal(
            model(x, training=training).numpy(), twin(x, training=training).numpy()
        )


# Quantizer gradients under a bfloat16 compute dtype ---------------------------------


def quantizer_gradient(quantizer, x, dy):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x)
    return y, tape.gradient(y, x, output_gradients=tf.cast(dy, x.dtype))


def test_kernel_quantizer_passes_the_unclipped_gradient_in_bf16():
    x = np.array([-300.0, -2.5, -1.0, -1e-3, 0.0, 0.5, 1.0, 1.5, 7.0], "float32")
    dy = np.linspace(-1, 1, x.size).astype("float32")
    quantizer = layers.binary_kernel_quantizer(precision="bf16")
    y, grad = quantizer_gradient(quantizer, tf.cast(x, tf.bfloat16), dy)
    assert y.dtype == grad.dtype == tf.bfloat16
    np.testing.assert_array_equal(y.numpy().astype("float32"), np.where(x >= 0, 1, -1))
    np.testing.assert_array_equal(grad.numpy().astype("float32"), bf16_round(dy))
    y32, grad32 = quantizer_gradient(layers.binary_kernel_quantizer(), x, dy)
    np.testing.assert_array_equal(y32.numpy(), y.numpy().astype("float32"))


def test_input_quantizer_gradient_in_bf16_equals_float32():
    """ste_sign clips its gradient at |x| <= 1 in both precisions. On values rounded to
    bfloat16 (the layer casts its input before quantizing) the masks are identical."""
    rng = np.random.default_rng(0)
    x = bf16_round(rng.normal(scale=1.5, size=1000).astype("float32"))
    x[:6] = [-1.0, 1.0, 0.0, 1.0078125, -1.0078125, 0.9960938]  # at and around +-1
    dy = bf16_round(rng.normal(size=x.size).astype("float32"))
    policy = layer_policy("bf16")
    y16, g16 = quantizer_gradient(
        lq.quantizers.SteSign(clip_value=1.0, dtype=policy), tf.cast(x, tf.bfloat16), dy
    )
    y32, g32 = quantizer_gradient(lq.quantizers.get(layers.INPUT_QUANTIZER), x, dy)
    np.testing.assert_array_equal(y16.numpy().astype("float32"), y32.numpy())
    np.testing.assert_array_equal(g16.numpy().astype("float32"), g32.numpy())
    np.testing.assert_array_equal(g32.numpy(), np.where(np.abs(x) <= 1, dy, 0))
    # Float32 values in (1, 1 + 2^-8] round to 1 in bfloat16 and pass the gradient.
    _, g = quantizer_gradient(
        lq.quantizers.SteSign(dtype=policy), tf.constant([1.003], tf.bfloat16), [1.0]
    )
    assert g.numpy().astype("float32").tolist() == [1.0]


# Training ---------------------------------------------------------------------------


def one_step(precision, x, y, weights=None):
    model = mlp_meta(
        hidden_units=(64, 64), input_shape=(8, 8, 1), num_classes=4, precision=precision
    )
    if weights is not None:
        model.set_weights(weights)
    model.compile(MetaplasticAdam(learning_rate=0.01, meta=1.35), loss=LOSS)
    before = model.get_weights()
    loss = model.train_on_batch(x, y)
    return model, before, loss


def test_bf16_training_step_matches_float32(tiny_data_dir):
    data = load_dataset("mnist", data_dir=tiny_data_dir)
    x, y = data.x_train[:40], data.y_train[:40]
    tf.keras.utils.set_random_seed(0)
    f32, before, loss32 = one_step("float32", x, y)
    bf16, before16, loss16 = one_step("bf16", x, y, weights=before)
    assert bf16.optimizer.is_metaplastic(bf16.get_layer("dense_2").kernel)
    assert loss16 == pytest.approx(loss32, rel=1e-6)  # forward pass identical
    for v32, v16, w in zip(f32.weights, bf16.weights, before):
        assert v16.dtype == tf.float32, v16.name
        step32, step16 = v32.numpy() - w, v16.numpy() - w
        if v16.trainable:
            assert np.any(step16 != 0), v16.name
        # Adam's first step is about lr * sign(g): bf16 gradients change it only where
        # |g| is tiny.
        assert np.mean(np.isclose(step16, step32, rtol=1e-2, atol=1e-5)) > 0.97, (
            v16.name
        )


def test_bf16_training_reduces_the_loss_and_checkpoints_exactly(
    tmp_path, tiny_data_dir
):
    data = load_dataset("mnist", data_dir=tiny_data_dir)
    tf.keras.utils.set_random_seed(0)
    model = mlp_meta(
        hidden_units=(64, 64), input_shape=(8, 8, 1), num_classes=4, precision="bf16"
    )
    model.compile(MetaplasticAdam(learning_rate=0.01, meta=1.35), loss=LOSS)
    history = model.fit(data.x_train, data.y_train, epochs=3, batch_size=40, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.7 * losses[0]
    checkpoint = tf.train.Checkpoint(model=model)
    path = checkpoint.write(str(tmp_path / "ckpt"))
    # A checkpoint of a bf16 model restores into a float32 one and back, bit for bit.
    other = mlp_meta(hidden_units=(64, 64), input_shape=(8, 8, 1), num_classes=4)
    tf.train.Checkpoint(model=other).read(path).assert_existing_objects_matched()
    for a, b in zip(model.get_weights(), other.get_weights()):
        np.testing.assert_array_equal(a, b)


# Saving and LCE conversion ----------------------------------------------------------


@pytest.fixture(scope="module")
def trained_bf16(tiny_data_dir):
    """A bf16 mlp_meta 64-64 trained on the tiny four-class images."""
    data = load_dataset("mnist", data_dir=tiny_data_dir)
    tf.keras.utils.set_random_seed(0)
    model = mlp_meta(
        hidden_units=(64, 64), input_shape=(8, 8, 1), num_classes=4, precision="bf16"
    )
    model.compile(MetaplasticAdam(learning_rate=0.01, meta=1.35), loss=LOSS)
    model.fit(data.x_train, data.y_train, epochs=3, batch_size=40, verbose=0)
    return model, data


def test_saved_bf16_model_reloads_in_bf16(trained_bf16, tmp_path):
    model, data = trained_bf16
    model.save(tmp_path / "model", include_optimizer=False, save_format="tf")
    loaded = load_saved_model(tmp_path / "model")
    assert model_precision(loaded) == "bf16"
    assert loaded.get_layer("dense_2").compute_dtype == "bfloat16"
    assert loaded.get_layer("bn_2").compute_dtype == "float32"
    x = data.x_test
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_as_float32_keeps_weights_and_predictions(trained_bf16):
    model, data = trained_bf16
    twin = as_float32(model)
    assert {layer.compute_dtype for layer in twin.layers} == {"float32"}
    assert [w.name for w in twin.weights] == [w.name for w in model.weights]
    for a, b in zip(twin.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(twin(data.x_test).numpy(), model(data.x_test).numpy())


def test_bf16_model_converts_to_lce_with_full_agreement(trained_bf16):
    pytest.importorskip("larq_compute_engine")
    model, data = trained_bf16
    flatbuffer = export.convert_to_lce(model)
    report = export.lce_op_report(flatbuffer, model)
    assert report["binary_layers"] == report["converted"] == ["dense_2", "dense_out"]
    assert report["all_binary_converted"]
    result = export.verify_lce(flatbuffer, model, data.x_test, data.y_test)
    assert result["samples"] == 80
    assert result["argmax_agreement"] == 1.0
    assert result["max_abs_logit_diff"] < 1e-3
    assert result["keras_accuracy"] == result["lce_accuracy"] > 0.5
    float_flatbuffer = export.float_twin_tflite(model)
    sizes = export.binary_layer_sizes(flatbuffer, float_flatbuffer, model)
    assert [s["layer"] for s in sizes] == ["dense_1", "dense_2", "dense_out"]


# Runs: RunConfig, command lines, resume ---------------------------------------------


def tiny_config(tmp_path, data_dir, **overrides):
    values = dict(
        protocol="permuted",
        datasets=("mnist",),
        num_tasks=2,
        epochs=2,
        hidden_units=(32, 32),
        batch_size=40,
        learning_rate=0.01,
        meta=1.35,
        precision="bf16",
        data_dir=str(data_dir),
        run_dir=str(tmp_path / "run"),
    )
    return RunConfig(**{**values, **overrides})


def test_run_config_precision(tmp_path):
    assert RunConfig().precision == "float32"
    config = RunConfig(model="vgg_small_meta", precision="bf16")
    assert config.to_json()["precision"] == "bf16"
    assert RunConfig.from_json(config.to_json()).precision == "bf16"
    old = {k: v for k, v in config.to_json().items() if k != "precision"}
    assert RunConfig.from_json(old).precision == "float32"  # before the field existed
    assert RunConfig.saved_identity(old) == RunConfig.from_json(old).identity()
    assert (
        config.identity() != dataclasses.replace(config, precision="float32").identity()
    )
    for bad, match in (
        (dict(precision="half"), "^precision must be one of"),
        (
            dict(model="mlp_float", precision="bf16"),
            "not available for model 'mlp_float'",
        ),
    ):
        with pytest.raises(ValueError, match=match) as error:
            RunConfig(**bad)
        assert "\n" not in str(error.value)


def test_command_lines_take_a_precision():
    args = build_parser().parse_args(["permuted", "--precision", "bf16"])
    config = config_from_args(args)
    assert config.precision == "bf16" and config.run_dir.endswith("-bf16")
    default = config_from_args(build_parser().parse_args(["permuted"]))
    assert default.precision == "float32" and "bf16" not in default.run_dir
    with pytest.raises(SystemExit):
        build_parser().parse_args(["permuted", "--precision", "float16"])


def test_hypermodel_builds_the_runs_precision():
    hypermodel = MetaplasticHyperModel(
        input_shape=(8, 8, 1), num_classes=4, hidden_units=(8,), precision="bf16"
    )
    hp = keras_tuner.HyperParameters()
    assert hypermodel.config_overrides(hp)["precision"] == "bf16"
    assert model_precision(hypermodel.build(hp)) == "bf16"


def test_cpu_bfloat16_instructions_are_read_from_the_flags(tmp_path):
    info = tmp_path / "cpuinfo"
    for flags, expected in (
        ("fpu sse2 avx2 fma avx512f amx_bf16 amx_tile", True),
        ("fpu avx512f avx512_bf16", True),
        ("fpu sse2 avx avx2 fma", False),  # e.g. an AVX2-only AMD EPYC
    ):
        info.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {flags}\n")
        assert bf16_instructions(str(info)) is expected
    info.write_text("processor\t: 0\nmodel name\t: x\n")  # no flags line
    assert bf16_instructions(str(info)) is None
    assert bf16_instructions(str(tmp_path / "missing")) is None


def test_cpu_description_names_the_model_the_cpus_and_the_best_instructions(
    tmp_path,
):
    info = tmp_path / "cpuinfo"
    count = len(os.sched_getaffinity(0))
    cpus = f"{count} CPU{'s' if count != 1 else ''}"
    for flags, expected in (
        ("fpu sse2 avx2 fma avx512f amx_bf16 amx_tile avx512_bf16", "AMX"),
        ("fpu avx2 avx512f avx512_bf16", "AVX-512 BF16"),
        ("fpu avx2 avx512f", "AVX-512"),
        ("fpu sse2 avx avx2 fma", "AVX2"),
    ):
        info.write_text(
            f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n"
        )
        assert cpu_description(str(info)) == f"AMD EPYC, {cpus}, {expected}"
    info.write_text("processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: fpu sse2\n")
    assert cpu_description(str(info)).startswith("Some CPU, ")
    assert cpu_description(str(info)).count(",") == 1  # no instruction class
    unknown = platform.processor() or "unknown CPU"
    assert cpu_description(str(tmp_path / "missing")) == f"{unknown}, {cpus}"


def test_bf16_run_resumes_exactly(tmp_path, tiny_data_dir):
    whole = tiny_config(tmp_path / "a", tiny_data_dir)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        first = run(whole, verbose=0)
    # Where bfloat16 is emulated the run says so, once: float32 is faster there.
    emulated = [w for w in caught if "no bfloat16 instructions" in str(w.message)]
    assert len(emulated) == (bf16_instructions() is False)
    assert first["mean_accuracy"] > 0.5
    split = tiny_config(tmp_path / "b", tiny_data_dir)
    run(split, verbose=0, stop_after_epochs=1)
    run(split, verbose=0, stop_after_epochs=3)
    assert run(split, verbose=0)["accuracy_matrix"] == first["accuracy_matrix"]
    for directory in (whole.run_dir, split.run_dir):
        assert (
            json.loads((Path(directory) / "config.json").read_text())["precision"]
            == "bf16"
        )
    a, b = (
        RunDirectory(d).last_checkpoint()[0] for d in (whole.run_dir, split.run_dir)
    )
    reader_a, reader_b = tf.train.load_checkpoint(a), tf.train.load_checkpoint(b)
    # The object graph names a restored optimizer's slots without its name scope.
    names = [
        n
        for n in reader_a.get_variable_to_shape_map()
        if "save_counter" not in n and n != "_CHECKPOINTABLE_OBJECT_GRAPH"
    ]
    assert len(names) > 10
    for name in names:
        value = reader_a.get_tensor(name)
        assert getattr(value, "dtype", np.float32) != tf.bfloat16.as_numpy_dtype, name
        np.testing.assert_array_equal(value, reader_b.get_tensor(name), err_msg=name)
    restored = restore_run(whole.run_dir)
    assert model_precision(restored.model) == "bf16"


@pytest.mark.parametrize("baseline", ["ewc", "si"])
def test_bf16_runs_with_baselines(tmp_path, tiny_data_dir, baseline):
    config = tiny_config(
        tmp_path,
        tiny_data_dir,
        baseline=baseline,
        ewc_lambda=50.0,
        si_c=5.0,
        epochs=1,
        evaluate="task",
    )
    summary = run(config, verbose=0)
    with open(Path(config.run_dir) / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["penalty"]) == 0 < float(rows[-1]["penalty"])
    assert np.isfinite(summary["mean_accuracy"]) and summary["mean_accuracy"] > 0.4


def test_fisher_of_a_bf16_model_equals_its_float32_twins(tiny_data_dir):
    """EWC's closed-form per-example gradients, conv and dense, in float32 statistics;
    they differ only by the bfloat16 rounding of the backpropagated gradients."""
    data = load_dataset("mnist", data_dir=tiny_data_dir)
    model = vgg_small_meta(
        precision="bf16",
        input_shape=(16, 16, 1),  # VGG-Small's smallest input
        dense_units=(16,),
        num_classes=4,
        dropout=0.0,
    )
    images = data.x_train[:32].repeat(2, axis=1).repeat(2, axis=2)  # 8x8 -> 16x16
    sample = (images, data.y_train[:32])
    fisher16 = FisherEstimator(model)(sample, num_samples=32)
    fisher32 = FisherEstimator(as_float32(model))(sample, num_samples=32)
    assert len(fisher16) == len(fisher32) >= 5
    for a, b in zip(fisher16, fisher32):
        assert a.dtype == tf.float32
        a, b = a.numpy(), b.numpy()
        assert b.max() > 0
        assert np.abs(a - b).sum() < 0.01 * b.sum()
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.999


def test_bf16_run_packages_as_a_float32_pretrained_model(tmp_path, tiny_data_dir):
    config = tiny_config(
        tmp_path, tiny_data_dir, protocol="sequence", datasets=("fashion_mnist",)
    )
    summary = run(config, verbose=0)
    card = package_run(
        config.run_dir, name="tiny_bf16", directory=tmp_path / "models", command="x"
    )
    assert card["hyperparameters"]["precision"] == "bf16"
    assert "precision" not in card["kwargs"]  # weights fit either precision
    keras = card["results"]["keras_test_accuracy"]
    assert keras == pytest.approx(summary["final_accuracy"]["fashion_mnist"], abs=1e-6)
    if card["results"]["lce"].get("agreement") is not None:
        assert card["results"]["lce"]["agreement"] == 1.0
    saved = load_saved_model(tmp_path / "models" / "tiny_bf16" / "saved_model")
    assert model_precision(saved) == "float32"
    restored = restore_run(config.run_dir).model
    for a, b in zip(saved.get_weights(), restored.get_weights()):
        np.testing.assert_array_equal(a, b)
