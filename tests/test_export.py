"""Tests of zoo.export (LCE conversion, inspection, verification) and `python -m zoo`."""

import numpy as np
import pytest
import tensorflow as tf

import zoo
from training.optimizers import MetaplasticAdam
from zoo import export, layers, mlp_meta, pretrained, vgg16_meta
from zoo.cli import main
from zoo.datasets import load_dataset, stratified_sample
from zoo.publishing import REQUIRED_CARD_KEYS


def randomize_batch_norm(model: tf.keras.Model, seed: int) -> None:
    """Random BN statistics and affine parameters (signed gamma), as after training."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            shape = layer.gamma.shape
            layer.set_weights(
                [
                    rng.uniform(0.5, 2.0, shape) * rng.choice([-1.0, 1.0], shape),
                    rng.normal(size=shape),
                    3 * rng.normal(size=shape),
                    rng.uniform(0.5, 4.0, shape),
                ]
            )


def inference(model: tf.keras.Model, x: np.ndarray) -> np.ndarray:
    return model(x, training=False).numpy()


@pytest.fixture
def lce():
    return pytest.importorskip("larq_compute_engine")


# to_lce_compatible and float_twin (no LCE needed) ------------------------------------


def test_to_lce_compatible_mlp_is_equivalent_with_1x1_binary_convs():
    model = mlp_meta(hidden_units=(96, 64, 32), input_shape=(8, 8, 1), num_classes=5)
    randomize_batch_norm(model, seed=1)
    converted = export.to_lce_compatible(model)

    assert [layer.name for layer in converted.layers] == [
        "input", "flatten", "dense_1", "bn_1",
        "dense_2_reshape", "dense_2_1x1", "bn_2",
        "dense_3_1x1", "bn_3",
        "dense_out_1x1", "bn_out", "bn_out_flat",
    ]  # fmt: skip
    # Consecutive binary dense layers stay in (1, 1, units) form between them.
    assert converted.get_layer("dense_3_1x1").input_shape == (None, 1, 1, 64)
    assert converted.get_layer("bn_3").input_shape == (None, 1, 1, 32)
    for name in ("dense_2", "dense_3", "dense_out"):
        conv = converted.get_layer(f"{name}_1x1")
        kernel = model.get_layer(name).kernel.numpy()
        np.testing.assert_array_equal(conv.kernel.numpy(), kernel[None, None])
        assert export.is_binary_layer(conv)
        assert conv.kernel_quantizer.clip_value is None
    # The real-input first layer is copied, not rewritten.
    assert not export.is_binary_layer(converted.get_layer("dense_1"))
    assert converted.output_shape == model.output_shape

    x = np.random.default_rng(0).uniform(size=(64, 8, 8, 1)).astype("float32")
    expected = inference(model, x)
    np.testing.assert_allclose(inference(converted, x), expected, rtol=1e-5, atol=1e-4)
    assert np.abs(expected).max() > 1.0  # not a trivially zero comparison


def test_to_lce_compatible_vgg16_is_equivalent():
    model = vgg16_meta(input_shape=(32, 32, 3), dropout=0.5)
    randomize_batch_norm(model, seed=2)
    converted = export.to_lce_compatible(model)

    assert [layer.name for layer in converted.layers][-12:] == [
        "flatten", "dropout_14", "dense_14_reshape", "dense_14_1x1", "bn_14",
        "dropout_15", "dense_15_1x1", "bn_15",
        "dropout_out", "dense_out_1x1", "bn_out", "bn_out_flat",
    ]  # fmt: skip
    for i in range(1, 14):  # convolutions are copied with their weights
        np.testing.assert_array_equal(
            converted.get_layer(f"conv_{i}").kernel.numpy(),
            model.get_layer(f"conv_{i}").kernel.numpy(),
        )
    x = np.random.default_rng(0).uniform(size=(4, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(
        inference(converted, x), inference(model, x), rtol=1e-5, atol=1e-4
    )


def test_to_lce_compatible_rejects_non_chains():
    inputs = tf.keras.Input((8,))
    x = layers.binary_dense(8, first=True, name="dense_1")(inputs)
    y = layers.binary_dense(8, name="dense_2")(x)
    model = tf.keras.Model(inputs, tf.keras.layers.Add()([x, y]))
    with pytest.raises(ValueError, match="not a chain of layers"):
        export.to_lce_compatible(model)
    with pytest.raises(ValueError, match="expected a tf.keras.Model"):
        export.to_lce_compatible("mlp_meta")


def test_float_twin_has_sign_kernels_and_identical_outputs():
    model = mlp_meta(hidden_units=(32,), input_shape=(6, 6, 1), num_classes=3)
    randomize_batch_norm(model, seed=3)
    kernel = model.get_layer("dense_1").kernel.numpy()
    kernel[0, 0] = 0.0  # larq's sign(0) is +1
    model.get_layer("dense_1").kernel.assign(kernel)
    twin = export.float_twin(model)

    for name in ("dense_1", "dense_out"):
        layer = twin.get_layer(name)
        assert layer.kernel_quantizer is None
        latent = model.get_layer(name).kernel.numpy()
        np.testing.assert_array_equal(
            layer.kernel.numpy(), np.where(latent >= 0, 1, -1)
        )
    x = np.random.default_rng(1).uniform(size=(16, 6, 6, 1)).astype("float32")
    np.testing.assert_array_equal(inference(twin, x), inference(model, x))


# Conversion of a briefly trained MLP ------------------------------------------------


@pytest.fixture(scope="module")
def tiny_data(tiny_data_dir):
    return load_dataset("mnist", data_dir=tiny_data_dir)


@pytest.fixture(scope="module")
def trained(tiny_data):
    """mlp_meta 64-64 on the tiny 8x8 four-class images, trained so BN is realistic."""
    pytest.importorskip("larq_compute_engine")
    tf.keras.utils.set_random_seed(0)
    model = mlp_meta(hidden_units=(64, 64), input_shape=(8, 8, 1), num_classes=4)
    model.compile(
        MetaplasticAdam(learning_rate=0.01, meta=1.35),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(tiny_data.x_train, tiny_data.y_train, epochs=3, batch_size=40, verbose=0)
    return model, export.convert_to_lce(model)


def numpy_logits(model: tf.keras.Model, x: np.ndarray) -> np.ndarray:
    """The MLP's inference pass re-derived in NumPy: sign kernels, BN, sign activations."""

    def sign(v):
        return np.where(v >= 0, 1.0, -1.0)

    h = x.reshape(len(x), -1).astype(np.float64)
    for i, tag in enumerate(("1", "2", "out")):
        if i > 0:
            h = sign(h)
        h = h @ sign(model.get_layer(f"dense_{tag}").kernel.numpy())
        gamma, beta, mean, var = model.get_layer(f"bn_{tag}").get_weights()
        h = gamma * (h - mean) / np.sqrt(var + layers.BN_EPSILON) + beta
    return h


def test_every_hidden_binary_layer_becomes_lce_bconv2d(trained):
    model, flatbuffer = trained
    report = export.lce_op_report(flatbuffer, model)
    assert report["ops"] == {
        "RESHAPE": 3,
        "LceBconv2d": 2,
        "FULLY_CONNECTED": 1,
        "LceQuantize": 1,
    }
    assert report["binary_layers"] == report["converted"] == ["dense_2", "dense_out"]
    assert report["not_converted"] == []
    assert report["float_layers"] == ["dense_1"]  # real-valued pixels in
    assert report["float_ops_on_binary_input"] == 0
    assert report["all_binary_converted"]
    assert report["size_bytes"] == len(flatbuffer)


def test_lce_logits_match_keras_and_numpy(trained, tiny_data):
    model, flatbuffer = trained
    x, y = tiny_data.x_test, tiny_data.y_test
    keras_logits = inference(model, x)
    np.testing.assert_allclose(keras_logits, numpy_logits(model, x), atol=1e-3)

    for indirect in (False, True):
        lce_logits = export.lce_predict(flatbuffer, x, use_indirect_bgemm=indirect)
        np.testing.assert_allclose(lce_logits, numpy_logits(model, x), atol=1e-3)

    result = export.verify_lce(flatbuffer, model, x, y, batch_size=32)
    assert result["samples"] == len(x) == 80
    assert result["argmax_agreement"] == 1.0
    assert result["max_abs_logit_diff"] < 1e-3
    assert result["keras_accuracy"] == result["lce_accuracy"]
    assert result["keras_accuracy"] == pytest.approx(
        np.mean(keras_logits.argmax(-1) == y)
    )
    assert result["keras_accuracy"] > 0.5  # 4 classes: the model did learn
    with pytest.raises(ValueError, match=r"inputs of shape \(N, 8, 8, 1\)"):
        export.verify_lce(flatbuffer, model, np.zeros((2, 9, 9, 1)), None)


def test_verify_lce_on_a_stratified_sample(trained, tiny_data):
    model, flatbuffer = trained
    order = np.argsort(tiny_data.y_test, kind="stable")  # by class, like CIFAR-10
    x, y = tiny_data.x_test[order], tiny_data.y_test[order]
    result = export.verify_lce(flatbuffer, model, x, y, samples=20, seed=1)
    assert (result["samples"], result["total"], result["seed"]) == (20, 80, 1)
    indices = stratified_sample(y, 20, seed=1)
    counts = np.bincount(y[indices], minlength=4)
    assert np.all(np.abs(counts - 20 * np.bincount(y, minlength=4) / 80) < 1)
    classes = inference(model, x[indices]).argmax(-1)
    assert result["keras_accuracy"] == pytest.approx(np.mean(classes == y[indices]))
    assert result["lce_accuracy"] == result["keras_accuracy"]
    everything = export.verify_lce(flatbuffer, model, x, y, samples=500)
    assert (everything["samples"], everything["total"], everything["seed"]) == (
        80,
        80,
        None,
    )
    assert everything == export.verify_lce(flatbuffer, model, x, y)
    with pytest.raises(ValueError, match="samples must be a positive integer, got 0."):
        export.verify_lce(flatbuffer, model, x, y, samples=0)
    with pytest.raises(ValueError, match="`samples` draws a class-stratified sample"):
        export.verify_lce(flatbuffer, model, x, samples=5)


def test_binary_layer_sizes_are_bit_packed(trained):
    model, flatbuffer = trained
    sizes = {
        row["layer"]: row
        for row in export.binary_layer_sizes(
            flatbuffer, export.float_twin_tflite(model), model
        )
    }
    assert list(sizes) == ["dense_1", "dense_2", "dense_out"]
    # 1 bit per weight, input channels packed in 32-bit words, vs float32.
    assert sizes["dense_2"]["lce_kernel_bytes"] == 64 * (64 // 32) * 4
    assert sizes["dense_2"]["float_kernel_bytes"] == 64 * 64 * 4
    assert sizes["dense_out"]["lce_kernel_bytes"] == 4 * (64 // 32) * 4
    assert sizes["dense_out"]["float_kernel_bytes"] == 4 * 64 * 4
    assert sizes["dense_2"]["binary"] and sizes["dense_out"]["binary"]
    assert sizes["dense_1"]["lce_op"] == "FULLY_CONNECTED"
    assert sizes["dense_1"]["lce_bytes"] == sizes["dense_1"]["float_bytes"]
    for row in sizes.values():
        assert row["ratio"] == pytest.approx(row["float_bytes"] / row["lce_bytes"])


def test_plain_lce_conversion_of_binary_dense_is_detected(trained, lce):
    model, _ = trained
    plain = lce.convert_keras_model(model)  # QuantDense is not bit-packed by LCE
    assert export.lce_op_report(plain)["float_ops_on_binary_input"] == 2
    assert not export.lce_op_report(plain)["all_binary_converted"]
    with pytest.raises(
        ValueError, match=r"2 of 2 binary layers .*\(dense_2, dense_out\)"
    ):
        export.check_lce_conversion(plain, model)
    with pytest.raises(ValueError, match="not a TFLite flatbuffer"):
        export.lce_op_report(b"not a flatbuffer")


# Command line -----------------------------------------------------------------------


def test_cli_converts_a_saved_model_and_verifies_it(
    trained, tiny_data, tiny_data_dir, tmp_path, capsys
):
    model, flatbuffer = trained
    model.save(tmp_path / "saved")  # compiled with MetaplasticAdam
    output = tmp_path / "model.tflite"
    argv = ["convert", str(tmp_path / "saved"), "--output", str(output)]
    data = ["--dataset", "mnist", "--data-dir", str(tiny_data_dir), "--samples", "50"]

    assert main(argv + data) == 0
    printed = capsys.readouterr().out
    assert "binary layers: 2/2 became LceBconv2d (dense_2, dense_out)" in printed
    assert "stay float32: dense_1" in printed
    assert (
        "verification on 50 of 80 mnist test images, stratified by class, seed 0: "
        "argmax agreement 100.00 %"
    ) in printed
    x = tiny_data.x_test[:10]
    np.testing.assert_allclose(
        export.lce_predict(output.read_bytes(), x), inference(model, x), atol=1e-3
    )
    assert len(output.read_bytes()) == len(flatbuffer)


def test_cli_converts_a_factory_model_with_random_weights(tmp_path, capsys, lce):
    output = tmp_path / "mlp_meta.tflite"
    assert main(["convert", "mlp_meta", "--output", str(output)]) == 0
    assert "model: mlp_meta (random weights)" in capsys.readouterr().out
    report = export.lce_op_report(output.read_bytes())
    assert report["binary_ops"] == 2 and report["all_binary_converted"]
    # 784-1024-1024-10: the float first layer dominates; 1024x1024 binary is 128 KiB.
    assert 784 * 1024 * 4 + 1024**2 // 8 < report["size_bytes"] < 3.3 * 2**20


def test_load_model_finds_factories_and_pretrained_names(tmp_path):
    small = mlp_meta(hidden_units=(8,), input_shape=(4, 4, 1), num_classes=3)
    card = {
        "factory": "mlp_meta",
        "kwargs": {"hidden_units": (8,), "input_shape": (4, 4, 1), "num_classes": 3},
        **{key: "-" for key in REQUIRED_CARD_KEYS},
    }
    zoo.package_pretrained(small, name="tiny", card=card, directory=tmp_path, lce=False)
    x = np.random.default_rng(0).uniform(size=(5, 4, 4, 1)).astype("float32")
    with pretrained.pretrained_scope():
        zoo.register_pretrained(
            "tiny",
            factory="mlp_meta",
            kwargs=card["kwargs"],
            directory=tmp_path / "tiny",
        )
        loaded, source = export.load_model("tiny")
        assert source == "pretrained tiny"
        np.testing.assert_array_equal(inference(loaded, x), inference(small, x))
    # A pretrained model directory given by path is verified, then loaded.
    loaded, source = export.load_model(tmp_path / "tiny")
    assert source == f"pretrained model directory {tmp_path / 'tiny'}"
    np.testing.assert_array_equal(inference(loaded, x), inference(small, x))
    (tmp_path / "tiny" / "extra.txt").write_text("unlisted")
    with pytest.raises(ValueError, match=r"extra\.txt: not listed in model_card\.json"):
        export.load_model(tmp_path / "tiny")
    # Binary factories only (the registry's), built with random weights.
    model, source = export.load_model("vgg_small_meta", input_shape=(16, 16, 1))
    assert source == "vgg_small_meta (random weights)"
    assert model.input_shape == (None, 16, 16, 1) and model.output_shape == (None, 10)
    for name in ("tiny", "mlp_float"):
        with pytest.raises(ValueError, match=f"unknown model '{name}'; ") as error:
            export.load_model(name)
        assert "(mlp_meta, vgg16_meta, vgg_small_meta)" in str(error.value)


def test_cli_bad_input_is_one_line_exit_2(tmp_path, tiny_data_dir, capsys):
    output = str(tmp_path / "out.tflite")
    not_saved = tmp_path / "not_a_saved_model"
    not_saved.mkdir()
    (not_saved / "notes.txt").write_text("not a model")
    cases = [
        (["convert", str(tmp_path / "missing"), "-o", output], "does not exist"),
        (["convert", "no_such_model", "-o", output], "unknown model 'no_such_model'"),
        (
            ["convert", "vgg16_meta", "-o", output, "--dataset", "mnist"]
            + ["--data-dir", str(tiny_data_dir)],
            "height and width >= 32",
        ),
        (["convert", "mlp_meta", "-o", output, "--samples", "5"], "needs --dataset"),
        (
            ["convert", "mlp_meta", "-o", output, "--dataset", "mnist"]
            + ["--samples", "0"],
            "error: --samples must be a positive integer, got 0.\n",
        ),
        (
            ["convert", "mlp_meta", "-o", output, "--batch-size", "-2"],
            "error: --batch-size must be a positive integer, got -2.\n",
        ),
        (
            ["convert", "mlp_meta", "-o", output, "--seed", "1"],
            "error: --seed needs --dataset: the images to sample\n",
        ),
        (
            ["convert", "mlp_meta", "-o", output, "--dataset", "mnist", "--seed", "-1"],
            "error: --seed must be an integer >= 0, got -1.\n",
        ),
        (
            ["convert", "mlp_meta", "-o", output, "--dataset", "no_such_data"],
            "error: unknown dataset 'no_such_data'; known names: mnist",
        ),
        (
            ["convert", str(not_saved), "-o", output],
            f"error: {not_saved} is not a SavedModel directory (no saved_model.pb); ",
        ),
        # Usage errors: one line too, with the exit code argparse gives them.
        (
            ["convert", "mlp_meta", "-o", output, "--samples", "abc"],
            "error: argument --samples: invalid int value: 'abc' "
            "(see python -m zoo convert --help)\n",
        ),
        (["convert", "mlp_meta"], "the following arguments are required: --output/-o"),
        (["convert", "mlp_meta", "-o", output, "--target", "x86"], "invalid choice"),
        ([], "error: the following arguments are required: command"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err
        assert err.count("\n") == 1 and err.startswith("error: ")
    assert not (tmp_path / "out.tflite").exists()


def test_lce_converts_batch_norm_without_gamma_and_beta(lce):
    # The paper's stream network: BatchNorm normalizes only (no affine parameters).
    model = mlp_meta(
        hidden_units=(64, 64),
        input_shape=(8, 8, 1),
        num_classes=4,
        batch_norm_affine=False,
    )
    rng = np.random.default_rng(3)
    for layer in model.layers:
        if isinstance(layer, tf.keras.layers.BatchNormalization):
            units = layer.moving_mean.shape
            layer.set_weights(
                [3 * rng.normal(size=units), rng.uniform(0.5, 4.0, units)]
            )
    flatbuffer = export.convert_to_lce(model)
    assert export.lce_op_report(flatbuffer, model)["all_binary_converted"]
    x = rng.uniform(size=(64, 8, 8, 1)).astype("float32")
    result = export.verify_lce(flatbuffer, model, x)
    assert result["argmax_agreement"] == 1.0
    assert result["max_abs_logit_diff"] < 1e-3
