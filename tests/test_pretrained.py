"""The pretrained-model registry (zoo.pretrained) and publishing (zoo.publishing):
packaging, sha256 verification, loading by name, URL entries fetched with `get_file`,
factories with pretrained weights, further training."""

import functools
import hashlib
import importlib.util
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import zoo
from tests.conftest import tiny_images
from training.optimizers import MetaplasticAdam, is_binary_variable
from zoo import pretrained
from zoo.datasets import stratified_sample
from zoo.publishing import reseal_pretrained

KWARGS = {"hidden_units": (16,), "input_shape": (8, 8, 1), "num_classes": 4}
CARD = {
    "factory": "mlp_meta",
    "kwargs": KWARGS,
    "dataset": "tiny 8x8 images (tests/conftest.py)",
    "protocol": "single task",
    "hyperparameters": {"learning_rate": 0.01, "meta": 1.0, "batch_size": 32},
    "command": "pytest tests/test_pretrained.py",
    "epochs": 2,
    "wall_time_s": 1.0,
    "budget": "a few steps, for tests",
}
NAME = "tiny_mlp_meta"
HAS_LCE = importlib.util.find_spec("larq_compute_engine") is not None


def _data(n, seed):
    x, y = tiny_images(n, seed)
    return (x[..., None] / 255.0).astype(np.float32), y.astype(np.int64)


def _sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(directory):
    return sorted(
        p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()
    )


def _canonical_sha256(card):
    """The card's sha256 as the README defines it: sorted keys, no whitespace, without
    its own `card_sha256`."""
    content = {k: v for k, v in card.items() if k != "card_sha256"}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _edit_card(directory, edit):
    path = directory / "model_card.json"
    card = json.loads(path.read_text())
    edit(card)
    path.write_text(json.dumps(card, indent=2) + "\n")


@pytest.fixture(scope="module")
def trained():
    """A tiny mlp_meta trained a few steps, so BatchNorm statistics are realistic."""
    tf.keras.utils.set_random_seed(0)
    model = zoo.mlp_meta(**KWARGS)
    model.compile(
        MetaplasticAdam(0.01, meta=1.0),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    x, y = _data(128, seed=1)
    model.fit(x, y, batch_size=32, epochs=2, verbose=0)
    return model, _data(64, seed=2)


@pytest.fixture(scope="module")
def packaged(trained, tmp_path_factory):
    """The trained model packaged without LCE: (directory, card)."""
    model, test = trained
    root = tmp_path_factory.mktemp("saved_models")
    card = zoo.package_pretrained(
        model, name=NAME, card=CARD, directory=root, lce=False, verify_data=test
    )
    return root / NAME, card


@pytest.fixture
def registry():
    """Registrations made by a test are undone after it."""
    with pretrained.pretrained_scope():
        yield


def _register_copy(packaged, tmp_path, name=NAME):
    """Registers a private copy of the packaged directory, for tests that damage it."""
    directory = tmp_path / name
    shutil.copytree(packaged[0], directory)
    zoo.register_pretrained(
        name, factory="mlp_meta", kwargs=KWARGS, directory=directory
    )
    return directory


def _one_line_error(call, match):
    with pytest.raises(ValueError, match=match) as info:
        call()
    assert "\n" not in str(info.value)
    return str(info.value)


def test_card_lists_every_file_with_its_sha256(packaged, trained):
    directory, card = packaged
    saved = json.loads((directory / "model_card.json").read_text())
    assert saved == card
    listed = sorted(card["files"])
    assert listed == [p for p in _tree(directory) if p != "model_card.json"]
    assert "README.md" in listed and "model.tflite" not in listed
    assert "saved_model/saved_model.pb" in listed
    assert any(p.startswith("saved_model/variables/") for p in listed)
    for rel, info in card["files"].items():
        assert info == {
            "bytes": (directory / rel).stat().st_size,
            "sha256": _sha256(directory / rel),
        }
    model, (x, y) = trained
    accuracy = np.mean(model.predict(x, verbose=0).argmax(-1) == y)
    assert card["results"]["keras_test_accuracy"] == pytest.approx(accuracy)
    assert card["results"]["test_samples"] == len(x)
    assert card["kwargs"] == {
        "hidden_units": [16],
        "input_shape": [8, 8, 1],
        "num_classes": 4,
    }
    assert card["name"] == NAME and card["command"] == CARD["command"]
    assert list(card)[-1] == "card_sha256"
    assert card["card_sha256"] == _canonical_sha256(card)
    assert f"{100 * accuracy:.2f} %" in (directory / "README.md").read_text()


def test_load_pretrained_predicts_identically(packaged, trained, registry):
    zoo.register_pretrained(
        NAME, factory="mlp_meta", kwargs=KWARGS, directory=packaged[0]
    )
    model, (x, _) = trained
    loaded = zoo.load_pretrained(NAME)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    for a, b in zip(loaded.weights, model.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_factory_with_pretrained_name_predicts_identically(packaged, trained, registry):
    zoo.register_pretrained(
        NAME, factory="mlp_meta", kwargs=KWARGS, directory=packaged[0]
    )
    model, (x, _) = trained
    built = zoo.mlp_meta(**KWARGS, weights=NAME, name="mine")
    assert built.name == "mine"
    assert [layer.name for layer in built.layers] == [
        layer.name for layer in model.layers
    ]
    np.testing.assert_array_equal(
        built.predict(x, verbose=0), model.predict(x, verbose=0)
    )


def test_pretrained_true_loads_the_factory_default(packaged, trained, registry):
    default = zoo.get_model("mlp_meta").default_pretrained
    assert default == pretrained.DEFAULT_PRETRAINED["mlp_meta"]
    assert default == "mlp_meta_fashion_mnist_stream"
    zoo.register_pretrained(  # the default name, now the tiny model
        default,
        factory="mlp_meta",
        kwargs=KWARGS,
        directory=packaged[0],
        overwrite=True,
    )
    model, (x, _) = trained
    built = zoo.mlp_meta(**KWARGS, pretrained=True)
    np.testing.assert_array_equal(
        built.predict(x, verbose=0), model.predict(x, verbose=0)
    )


@pytest.mark.parametrize(
    "damage",
    [
        "flip_variables_byte",
        "flip_graph_byte",
        "delete_index",
        "delete_readme",
        "extra",
        "extra_top_level",
        "extra_folder",
        "edited_card",
        "card_without_sha256",
    ],
)
def test_damaged_model_is_refused_before_loading(
    packaged, tmp_path, registry, monkeypatch, damage
):
    directory = _register_copy(packaged, tmp_path)
    variables = directory / "saved_model" / "variables"
    if damage == "flip_variables_byte":
        path = next(variables.glob("variables.data-*"))
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))
        match = r"variables\.data-.*: sha256 mismatch, the file is corrupted or was modified"
    elif damage == "flip_graph_byte":
        path = directory / "saved_model" / "saved_model.pb"
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF
        path.write_bytes(bytes(data))
        match = r"saved_model\.pb: sha256 mismatch"
    elif damage == "delete_index":
        (variables / "variables.index").unlink()
        match = r"variables\.index: missing"
    elif damage == "delete_readme":
        (directory / "README.md").unlink()
        match = r"README\.md: missing"
    elif damage == "extra":
        (variables / "variables.data-00001-of-00002").write_bytes(b"\0" * 8)
        match = r"variables\.data-00001-of-00002: not listed in model_card\.json"
    elif damage == "extra_top_level":
        (directory / "notes.txt").write_text("unlisted")
        match = (
            r"notes\.txt: not listed in model_card\.json, the model was modified \(the "
            r"directory may hold only model_card\.json and the files it lists\)"
        )
    elif damage == "extra_folder":
        (directory / "extras" / "deep").mkdir(parents=True)
        (directory / "extras" / "deep" / "x.bin").write_bytes(b"\0")
        match = r"extras/deep/x\.bin: not listed in model_card\.json"
    elif damage == "edited_card":
        _edit_card(directory, lambda c: c["results"].update(keras_test_accuracy=0.99))
        match = r"model_card\.json: card_sha256 mismatch, the card was modified"
    else:
        _edit_card(directory, lambda c: c.pop("card_sha256"))
        match = (
            r"model_card\.json: no card_sha256, so edits to the card cannot be "
            r"detected; re-install / re-download the pretrained model, or re-seal a "
            r"card you trust with zoo\.publishing\.reseal_pretrained"
        )

    def fail(*args, **kwargs):
        raise AssertionError("a damaged model was loaded")

    monkeypatch.setattr(tf.keras.models, "load_model", fail)
    message = _one_line_error(lambda: zoo.load_pretrained(NAME), match)
    assert "re-install / re-download" in message
    _one_line_error(lambda: zoo.mlp_meta(**KWARGS, weights=NAME), match)


def test_card_sha256_ignores_formatting_only(packaged, trained, tmp_path, registry):
    directory = _register_copy(packaged, tmp_path)
    path = directory / "model_card.json"
    card = json.loads(path.read_text())
    shuffled = dict(reversed(list(card.items())))  # other key order, no indentation
    path.write_text(json.dumps(shuffled))
    model, (x, _) = trained
    np.testing.assert_array_equal(
        zoo.load_pretrained(NAME).predict(x, verbose=0), model.predict(x, verbose=0)
    )
    assert pretrained.pretrained_card(NAME) == card


def test_reseal_adds_card_sha256_and_changes_nothing_else(
    packaged, trained, tmp_path, registry
):
    """The migration of directories packaged before cards recorded their sha256."""
    directory = _register_copy(packaged, tmp_path)
    _edit_card(directory, lambda c: c.pop("card_sha256"))  # a card of before
    old_text = (directory / "model_card.json").read_text()
    others = {rel: _sha256(directory / rel) for rel in packaged[1]["files"]}
    _one_line_error(lambda: zoo.load_pretrained(NAME), "no card_sha256")

    sealed = reseal_pretrained(directory)
    assert sealed == packaged[1]  # the card as package_pretrained wrote it
    assert (directory / "model_card.json").read_text() == (
        old_text[: old_text.rindex("}")].rstrip()
        + f',\n  "card_sha256": "{_canonical_sha256(sealed)}"\n}}\n'
    )  # one line added, at the end
    assert {rel: _sha256(directory / rel) for rel in others} == others
    assert _tree(directory) == _tree(packaged[0])
    model, (x, _) = trained
    np.testing.assert_array_equal(
        zoo.load_pretrained(NAME).predict(x, verbose=0), model.predict(x, verbose=0)
    )
    # Sealing a sealed card changes nothing.
    before = (directory / "model_card.json").read_bytes()
    assert reseal_pretrained(directory) == sealed
    assert (directory / "model_card.json").read_bytes() == before


@pytest.mark.parametrize("damage", ["flip_readme_byte", "extra_top_level"])
def test_reseal_refuses_a_modified_directory(packaged, tmp_path, registry, damage):
    directory = _register_copy(packaged, tmp_path)
    _edit_card(directory, lambda c: c.pop("card_sha256"))
    if damage == "flip_readme_byte":
        readme = directory / "README.md"
        readme.write_bytes(readme.read_bytes()[:-1] + b"!")
        match = r"README\.md: sha256 mismatch"
    else:
        (directory / "extra.txt").write_text("unlisted")
        match = r"extra\.txt: not listed in model_card\.json"
    card_before = (directory / "model_card.json").read_bytes()
    _one_line_error(lambda: reseal_pretrained(directory), match)
    assert (directory / "model_card.json").read_bytes() == card_before


def test_shipped_cards_are_sealed():
    """The shipped models' cards record their own sha256 (saved_models/ migrated with
    `reseal_pretrained`), and their directories verify."""
    for name in pretrained.pretrained_models():
        try:
            card = pretrained.pretrained_card(name)
        except ValueError as error:
            if "is not shipped" in str(error):
                continue
            raise
        assert card["card_sha256"] == _canonical_sha256(card)


def test_missing_card_is_refused(packaged, tmp_path, registry):
    directory = _register_copy(packaged, tmp_path)
    (directory / "model_card.json").unlink()
    _one_line_error(lambda: zoo.load_pretrained(NAME), r"model_card\.json: missing")


def test_url_entry_is_fetched_checked_and_cached(packaged, trained, tmp_path, registry):
    zoo.register_pretrained(
        NAME, factory="mlp_meta", kwargs=KWARGS, directory=packaged[0]
    )
    archive, sha256 = zoo.archive_pretrained(NAME, output_dir=tmp_path / "dist")
    assert archive == tmp_path / "dist" / f"{NAME}.tar.gz"
    assert sha256 == _sha256(archive)
    # Reproducible: the same bytes again.
    assert zoo.archive_pretrained(NAME, output_dir=tmp_path / "again")[1] == sha256

    zoo.register_pretrained(
        NAME,
        factory="mlp_meta",
        kwargs=KWARGS,
        url=archive.as_uri(),
        sha256=sha256,
        overwrite=True,
    )
    cache = tmp_path / "cache"
    model, (x, _) = trained
    loaded = zoo.load_pretrained(NAME, cache_dir=cache)
    np.testing.assert_array_equal(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    cached = cache / "metaplastic_zoo"
    assert (cached / f"{NAME}.tar.gz").read_bytes() == archive.read_bytes()
    assert _tree(cached / NAME) == _tree(packaged[0])

    # The factory path honours $KERAS_HOME, so nothing goes to ~/.keras.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("KERAS_HOME", str(tmp_path / "keras_home"))
        built = zoo.mlp_meta(**KWARGS, weights=NAME)
    np.testing.assert_array_equal(
        built.predict(x, verbose=0), model.predict(x, verbose=0)
    )
    assert (
        tmp_path / "keras_home" / "metaplastic_zoo" / NAME / "model_card.json"
    ).is_file()


def test_url_entry_with_wrong_sha256_is_refused(packaged, tmp_path, registry):
    zoo.register_pretrained(
        NAME, factory="mlp_meta", kwargs=KWARGS, directory=packaged[0]
    )
    archive, sha256 = zoo.archive_pretrained(NAME, output_dir=tmp_path)
    wrong = ("0" if sha256[0] != "0" else "1") + sha256[1:]
    zoo.register_pretrained(
        "mirror",
        factory="mlp_meta",
        kwargs=KWARGS,
        url=archive.as_uri(),
        sha256=wrong,
    )
    message = _one_line_error(
        lambda: zoo.load_pretrained("mirror", cache_dir=tmp_path / "cache"),
        "sha256 mismatch, the file is corrupted or was modified",
    )
    assert archive.as_uri() in message
    assert not (tmp_path / "cache" / "metaplastic_zoo" / "mirror").exists()


def test_unshipped_default_gives_a_clear_error(tmp_path, registry):
    for name, entry in zoo.pretrained_models().items():  # as if not shipped
        zoo.register_pretrained(
            name,
            factory=entry.factory,
            kwargs=entry.kwargs,
            directory=tmp_path / name,
            overwrite=True,
        )
    message = _one_line_error(
        lambda: zoo.mlp_meta(pretrained=True),
        "pretrained model mlp_meta_fashion_mnist_stream is not shipped in this "
        "installation; ",
    )
    assert str(tmp_path / "mlp_meta_fashion_mnist_stream") in message
    _one_line_error(
        lambda: zoo.vgg16_meta(pretrained=True),
        "pretrained model vgg16_meta_cifar10 is not shipped",
    )
    _one_line_error(lambda: zoo.load_pretrained("vgg16_meta_cifar10"), "is not shipped")
    _one_line_error(
        lambda: zoo.vgg_small_meta(pretrained=True),
        "vgg_small_meta has no default pretrained model",
    )


def test_pretrained_argument_errors(packaged, registry):
    zoo.register_pretrained(
        NAME, factory="mlp_meta", kwargs=KWARGS, directory=packaged[0]
    )
    _one_line_error(
        lambda: zoo.mlp_meta(**KWARGS, weights=NAME, pretrained=True),
        "pass either pretrained=True or `weights`, not both",
    )
    _one_line_error(
        lambda: zoo.mlp_meta(pretrained="yes"), "`pretrained` should be True or False"
    )
    _one_line_error(lambda: zoo.load_pretrained("imagenet"), "unknown pretrained model")
    _one_line_error(
        lambda: zoo.vgg_small_meta(weights=NAME),
        f"pretrained model {NAME} is a mlp_meta model",
    )
    _one_line_error(
        lambda: zoo.mlp_float(**KWARGS, weights=NAME), "is a mlp_meta model"
    )


@pytest.mark.parametrize(
    "changed, match",
    [
        ({"num_classes": 10}, r"num_classes=10 \(it has 4\)"),
        ({"hidden_units": (16, 16)}, r"hidden_units=\(16, 16\) \(it has \(16,\)\)"),
        ({"input_shape": (8, 8, 3)}, r"input_shape=\(8, 8, 3\) \(it has \(8, 8, 1\)\)"),
    ],
)
def test_mismatched_arguments_give_one_line_error(packaged, registry, changed, match):
    zoo.register_pretrained(
        NAME, factory="mlp_meta", kwargs=KWARGS, directory=packaged[0]
    )
    message = _one_line_error(
        lambda: zoo.mlp_meta(**{**KWARGS, **changed}, weights=NAME), match
    )
    assert message.startswith(f"pretrained model {NAME} does not fit")


def test_card_disagreeing_with_registry_is_refused(packaged, registry):
    zoo.register_pretrained(
        NAME,
        factory="mlp_meta",
        kwargs={**KWARGS, "num_classes": 10},
        directory=packaged[0],
    )
    _one_line_error(lambda: zoo.load_pretrained(NAME), "registered as mlp_meta with")


def test_loaded_model_trains_with_metaplastic_adam(packaged, registry):
    """The first MetaplasticAdam step on the loaded latent weights, re-derived in NumPy:
    Adam's first step is lr * g / (|g| + eps'), damped by 1 - tanh(m |W|)^2 where
    sign(W) * g > 0."""
    zoo.register_pretrained(
        NAME, factory="mlp_meta", kwargs=KWARGS, directory=packaged[0]
    )
    model = zoo.load_pretrained(NAME)
    binary = [v for v in model.trainable_variables if is_binary_variable(v)]
    assert [v.name for v in binary] == ["dense_1/kernel:0", "dense_out/kernel:0"]
    x, y = _data(32, seed=3)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, binary)
    before = [v.numpy() for v in binary]

    lr, meta, beta_2, eps = 0.01, 1.5, 0.999, 1e-8
    model.compile(MetaplasticAdam(lr, meta=meta, epsilon=eps), loss=loss_fn)
    model.fit(x, y, batch_size=len(x), epochs=1, shuffle=False, verbose=0)
    for w, g, v in zip(before, grads, binary):
        g = g.numpy()
        step = lr * g / (np.abs(g) + eps / np.sqrt(1 - beta_2))
        damping = np.where(np.sign(w) * g > 0, 1 - np.tanh(meta * np.abs(w)) ** 2, 1)
        expected = w - step * damping
        assert not np.allclose(v.numpy(), w)
        np.testing.assert_allclose(v.numpy(), expected, rtol=1e-4, atol=1e-6)


def test_register_pretrained_errors(registry):
    url, sha = "https://example.org/x.tar.gz", "a" * 64
    cases = [
        (dict(name="bad/name", url=url, sha256=sha), "names take"),
        (dict(name="x", factory="resnet", url=url, sha256=sha), "unknown factory"),
        (dict(name="x", kwargs={"depth": 3}, url=url, sha256=sha), "takes no argument"),
        (dict(name="x"), "pass `url`"),
        (dict(name="x", url="ftp://x/a.tar.gz", sha256=sha), "`url` should start"),
        (dict(name="x", url=url), "`sha256` should be"),
        (dict(name="x", url=url, sha256="abc"), "`sha256` should be"),
        (dict(name="x", directory="d", sha256=sha), "pass `url` too"),
        (
            dict(name="mlp_meta_fashion_mnist_stream", directory="d"),
            "already registered",
        ),
    ]
    for arguments, match in cases:
        register = functools.partial(
            zoo.register_pretrained,
            **{"factory": "mlp_meta", "kwargs": KWARGS, **arguments},
        )
        _one_line_error(register, match)
    assert "x" not in zoo.pretrained_models()
    entry = zoo.register_pretrained(
        "x", factory="mlp_meta", kwargs=KWARGS, url=url, sha256=sha.upper()
    )
    assert entry.sha256 == sha and zoo.pretrained_models()["x"] == entry
    assert zoo.pretrained_models()["x"].kwargs == KWARGS


def test_pretrained_scope_undoes_registrations(tmp_path):
    before = zoo.pretrained_models()
    with pretrained.pretrained_scope():
        zoo.register_pretrained(
            "x", factory="mlp_meta", kwargs=KWARGS, directory=tmp_path
        )
        zoo.register_pretrained(
            "vgg16_meta_cifar10",
            factory="vgg16_meta",
            kwargs={"num_classes": 3},
            directory=tmp_path,
            overwrite=True,
        )
        assert "x" in zoo.pretrained_models()
        replaced = zoo.pretrained_models()["vgg16_meta_cifar10"]
        assert replaced.kwargs == {"num_classes": 3}
    assert zoo.pretrained_models() == before
    assert zoo.pretrained_models()["vgg16_meta_cifar10"].directory is None


def test_package_refuses_to_overwrite_and_checks_the_card(trained, packaged):
    model, _ = trained
    directory = packaged[0].parent
    _one_line_error(
        lambda: zoo.package_pretrained(
            model, name=NAME, card=CARD, directory=directory
        ),
        "exists; pass overwrite=True",
    )
    short = {k: v for k, v in CARD.items() if k != "command"}
    _one_line_error(
        lambda: zoo.package_pretrained(
            model, name="x", card=short, directory=directory
        ),
        "the model card lacks command",
    )
    _one_line_error(
        lambda: zoo.package_pretrained(
            model, name="x", card={**CARD, "card_sha256": "0" * 64}, directory=directory
        ),
        "package_pretrained writes the card's .*card_sha256",
    )
    other = {**CARD, "kwargs": {**KWARGS, "hidden_units": (8,)}}
    _one_line_error(
        lambda: zoo.package_pretrained(
            model, name="x", card=other, directory=directory
        ),
        "layer dense_1 has weights",
    )
    assert sorted(p.name for p in directory.iterdir()) == [NAME]


@pytest.mark.skipif(not HAS_LCE, reason="larq_compute_engine is not installed")
def test_package_with_lce_flatbuffer(trained, tmp_path, registry):
    from zoo.export import lce_predict

    model, (x, y) = trained
    card = zoo.package_pretrained(
        model, name=NAME, card=CARD, directory=tmp_path, verify_data=(x, y)
    )
    directory = tmp_path / NAME
    flatbuffer = (directory / "model.tflite").read_bytes()
    assert (
        card["files"]["model.tflite"]["sha256"]
        == hashlib.sha256(flatbuffer).hexdigest()
    )
    lce_classes = lce_predict(flatbuffer, x).argmax(-1)
    keras_classes = model.predict(x, verbose=0).argmax(-1)
    lce = card["results"]["lce"]
    assert lce["samples"] == len(x)
    assert lce["test_accuracy"] == pytest.approx(np.mean(lce_classes == y))
    assert lce["agreement"] == pytest.approx(np.mean(lce_classes == keras_classes))
    assert lce["agreement"] >= 0.95 and lce["max_abs_logit_diff"] < 1e-3
    zoo.register_pretrained(
        NAME, factory="mlp_meta", kwargs=KWARGS, directory=directory
    )
    assert pretrained.pretrained_directory(NAME) == directory
    path = directory / "model.tflite"
    path.write_bytes(flatbuffer[:-1] + bytes([flatbuffer[-1] ^ 1]))
    _one_line_error(
        lambda: zoo.load_pretrained(NAME), r"model\.tflite: sha256 mismatch"
    )

    # lce_samples: a class-stratified sample of the test images, said so in the cards.
    card = zoo.package_pretrained(
        model,
        name="sampled",
        card=CARD,
        directory=tmp_path,
        verify_data=(x, y),
        lce_samples=20,
    )
    lce = card["results"]["lce"]
    assert (lce["samples"], lce["total"], lce["sample_seed"]) == (20, len(x), 0)
    indices = stratified_sample(y, 20, seed=0)
    lce_classes = lce_predict(flatbuffer, x[indices]).argmax(-1)
    assert lce["test_accuracy"] == pytest.approx(np.mean(lce_classes == y[indices]))
    readme = (tmp_path / "sampled" / "README.md").read_text()
    assert f"on 20 of {len(x)} test images, stratified by class, seed 0;" in readme


# The shipped models, on the real test sets when $METAPLASTIC_DATA_DIR points at them --

# Test images per shipped model: all for the MLPs (fast), a class-stratified sample for
# VGG-16 on CI (CIFAR-10's first 300 test images are all airplanes: 84.00 % against
# 83.43 % on the whole split). Over 400 seeds, 300-image samples score 83.53 % on
# average, standard deviation 2.1 points: 8 points is over 3 deviations.
SHIPPED_SAMPLES = {"mlp_meta": None, "vgg16_meta": 300}
SHIPPED_SAMPLE_TOLERANCE = 0.08


@pytest.mark.skipif(not HAS_LCE, reason="larq_compute_engine is not installed")
@pytest.mark.parametrize("name", sorted(pretrained.pretrained_models()))
def test_shipped_model_scores_what_its_card_says(name):
    # Built as a user builds it: the factory's `pretrained=True` for its default
    # model, `weights=name` with the registered arguments otherwise. A model trained on
    # permuted tasks is measured on its last task's test images, rebuilt from the
    # card's permutation seed, as its card's accuracy is.
    from training.protocols import permuted_tasks
    from zoo.datasets import DATA_DIR_ENV, load_dataset
    from zoo.export import verify_lce

    entry = pretrained.pretrained_models()[name]
    data_dir = os.environ.get(DATA_DIR_ENV)
    try:
        directory = pretrained.pretrained_directory(name)
    except ValueError as error:
        pytest.skip(f"{name} is not shipped in this checkout: {error}")
    card = json.loads((directory / "model_card.json").read_text())
    if not data_dir:
        pytest.skip(f"{DATA_DIR_ENV} is unset: no {card['dataset']} test set")
    factory = getattr(zoo, entry.factory)
    if pretrained.DEFAULT_PRETRAINED.get(entry.factory) == name:
        model = factory(pretrained=True)
    else:
        model = factory(**entry.kwargs, weights=name)
    data = load_dataset(card["dataset"], data_dir=data_dir, download=False)
    x_test, y_test = data.x_test, data.y_test
    permutations = (card.get("protocol") or {}).get("permutations")
    if permutations:
        tasks = permuted_tasks(
            data, num_tasks=card["protocol"]["tasks"], seed=permutations["seed"]
        )
        x_test, y_test = tasks[-1].test_images(), tasks[-1].y_test
    n = SHIPPED_SAMPLES[entry.factory]
    flatbuffer = (directory / "model.tflite").read_bytes()
    result = verify_lce(flatbuffer, model, x_test, y_test, samples=n, seed=0)
    assert result["total"] == len(y_test)
    assert result["samples"] == (n or len(y_test))
    assert result["argmax_agreement"] >= 0.999
    assert abs(result["lce_accuracy"] - result["keras_accuracy"]) <= 0.001
    if n is None:  # the whole test set: exactly the card's numbers
        assert result["keras_accuracy"] == pytest.approx(
            card["results"]["keras_test_accuracy"], abs=1e-6
        )
        assert result["lce_accuracy"] == pytest.approx(
            card["results"]["lce"]["test_accuracy"], abs=1e-6
        )
    else:
        assert result["seed"] == 0
        assert result["keras_accuracy"] == pytest.approx(
            card["results"]["keras_test_accuracy"], abs=SHIPPED_SAMPLE_TOLERANCE
        )


def _batch_norm_state(model, shift=0.0):
    """`{layer name: arrays}` of `model`'s BatchNorm layers, moving means shifted."""
    return {
        layer.name: [
            w.numpy() + (shift if "moving_mean" in w.name else 0.0)
            for w in layer.weights
        ]
        for layer in model.layers
        if isinstance(layer, tf.keras.layers.BatchNormalization)
    }


def _package_two_tasks(model, directory, verify_data=None):
    """Packages `model` as `directory/tasks` with two tasks' BatchNorm states, the
    first with shifted moving means: (states, card)."""
    states = {
        "task_1": _batch_norm_state(model, 0.5),
        "task_2": _batch_norm_state(model),
    }
    card = zoo.package_pretrained(
        model,
        name="tasks",
        card={**CARD, "task_batch_norm": {"statistics": "saved at each task's end"}},
        directory=directory,
        lce=False,
        verify_data=verify_data,
        task_batch_norm=states,
    )
    return states, card


def test_every_task_batch_norm_state_ships_and_loads(trained, tmp_path, registry):
    # A model of tasks learned one after another ships each task's BatchNorm state;
    # load_pretrained(task=...) gives the model that state, nothing else changes.
    model, test = trained
    states, card = _package_two_tasks(model, tmp_path, verify_data=test)
    assert card["task_batch_norm"] == {
        "statistics": "saved at each task's end",
        "checkpoint": "task_batch_norm",
        "tasks": ["task_1", "task_2"],
    }
    assert {
        "task_batch_norm.index",
        "task_batch_norm.data-00000-of-00001",
    } <= set(card["files"])
    assert (
        "`zoo.load_pretrained('tasks', task=...)`"
        in (tmp_path / "tasks" / "README.md").read_text()
    )
    zoo.register_pretrained(
        "tasks", factory="mlp_meta", kwargs=KWARGS, directory=tmp_path / "tasks"
    )
    first = zoo.load_pretrained("tasks", task="task_1")
    for layer in first.layers:
        if layer.name in states["task_1"]:
            for weight, expected in zip(layer.weights, states["task_1"][layer.name]):
                np.testing.assert_array_equal(weight.numpy(), expected)
    # The same as setting those arrays on the saved model by hand.
    by_hand = zoo.load_pretrained("tasks")
    for layer in by_hand.layers:
        if layer.name in states["task_1"]:
            layer.set_weights(states["task_1"][layer.name])
    x = test[0][:16]
    np.testing.assert_allclose(first(x), by_hand(x), atol=1e-6)
    assert not np.allclose(first(x), zoo.load_pretrained("tasks")(x), atol=1e-3)
    np.testing.assert_allclose(
        zoo.load_pretrained("tasks", task="task_2")(x), model(x), atol=1e-5
    )
    built = zoo.pretrained.load_pretrained_weights(
        zoo.mlp_meta(**KWARGS), "tasks", task="task_1"
    )
    np.testing.assert_allclose(built(x), first(x), atol=1e-6)
    # One loaded model, its states switched in place (what benchmarks/pretrained.py
    # does to measure every task without loading the model again).
    switched = zoo.load_pretrained("tasks")
    zoo.pretrained.set_task_batch_norm(switched, tmp_path / "tasks", "task_1")
    np.testing.assert_allclose(switched(x), first(x), atol=1e-6)
    zoo.pretrained.set_task_batch_norm(switched, tmp_path / "tasks", "task_2")
    np.testing.assert_allclose(switched(x), model(x), atol=1e-5)
    _one_line_error(
        lambda: zoo.load_pretrained("tasks", task="task_3"),
        "has no BatchNorm state of task 'task_3'; its tasks are task_1, task_2",
    )


def test_task_batch_norm_npz_of_older_directories_loads_and_migrates(
    trained, tmp_path, registry, monkeypatch
):
    # Directories written before the checkpoint shipped task_batch_norm.npz: they
    # load the same states, and migrate_task_batch_norm moves them into the
    # checkpoint package_pretrained writes now, byte for byte.
    model, test = trained
    _, card = _package_two_tasks(model, tmp_path / "new")
    new, old = tmp_path / "new" / "tasks", tmp_path / "old" / "tasks"
    shutil.copytree(new, old)
    checkpoint = tf.train.load_checkpoint(str(old / "task_batch_norm"))
    np.savez(
        old / "task_batch_norm.npz",
        **{
            key: checkpoint.get_tensor(key)
            for key in checkpoint.get_variable_to_shape_map()
        },
    )
    legacy = json.loads(json.dumps(card))
    del legacy["card_sha256"]
    legacy["task_batch_norm"] = {
        "statistics": "saved at each task's end",
        "file": "task_batch_norm.npz",
        "tasks": ["task_1", "task_2"],
    }
    for suffix in ("index", "data-00000-of-00001"):
        (old / f"task_batch_norm.{suffix}").unlink()
        del legacy["files"][f"task_batch_norm.{suffix}"]
    npz = (old / "task_batch_norm.npz").read_bytes()
    legacy["files"]["task_batch_norm.npz"] = {
        "bytes": len(npz),
        "sha256": hashlib.sha256(npz).hexdigest(),
    }
    readme = (old / "README.md").read_text().replace(
        "`task_batch_norm.index` and `task_batch_norm.data-00000-of-00001` (a "
        "TensorFlow checkpoint, keys `task/layer/weight`) hold",
        "`task_batch_norm.npz` holds",
    )
    assert "`task_batch_norm.npz` holds" in readme  # as older directories' say
    (old / "README.md").write_text(readme)
    legacy["files"]["README.md"] = {
        "bytes": len(readme.encode()),
        "sha256": hashlib.sha256(readme.encode()).hexdigest(),
    }
    (old / "model_card.json").write_text(json.dumps(legacy))
    reseal_pretrained(old)
    x = test[0][:16]
    for name, directory in (("new", new), ("old", old)):
        zoo.register_pretrained(
            name, factory="mlp_meta", kwargs=KWARGS, directory=directory
        )
    np.testing.assert_array_equal(
        zoo.load_pretrained("old", task="task_1")(x),
        zoo.load_pretrained("new", task="task_1")(x),
    )
    listed = zoo.model_directory.directory_files
    before = {rel: (old / rel).read_bytes() for rel in listed(old)}

    def fail(card):
        raise OSError("disk full")

    with monkeypatch.context() as patch:  # fails once README.md is written
        patch.setattr(zoo.publishing, "seal_card", fail)
        with pytest.raises(OSError, match="disk full"):
            zoo.publishing.migrate_task_batch_norm(old)
    assert {rel: (old / rel).read_bytes() for rel in listed(old)} == before
    migrated = zoo.publishing.migrate_task_batch_norm(old)
    assert migrated["task_batch_norm"] == card["task_batch_norm"]
    assert sorted(migrated["files"]) == sorted(card["files"])
    assert not (old / "task_batch_norm.npz").exists()
    for suffix in ("index", "data-00000-of-00001"):
        name = f"task_batch_norm.{suffix}"
        assert (old / name).read_bytes() == (new / name).read_bytes()
    assert (old / "README.md").read_text() == (new / "README.md").read_text()
    assert zoo.model_directory.verify_pretrained(old) == migrated
    np.testing.assert_array_equal(
        zoo.load_pretrained("old", task="task_1")(x),
        zoo.load_pretrained("new", task="task_1")(x),
    )
    assert zoo.publishing.migrate_task_batch_norm(old) == migrated  # nothing left to do
    wider = zoo.mlp_meta(**{**KWARGS, "hidden_units": (32,)})
    _one_line_error(
        lambda: zoo.pretrained.set_task_batch_norm(wider, old, "task_1"),
        "its per-task BatchNorm states do not fit its model",
    )


def test_task_batch_norm_errors(trained, packaged, tmp_path, registry):
    model, test = trained
    _register_copy(packaged, tmp_path)
    _one_line_error(
        lambda: zoo.load_pretrained(NAME, task="task_1"),
        "ships one BatchNorm state, not one per task",
    )

    def package(states, card=CARD):
        zoo.package_pretrained(
            model,
            name="x",
            card=card,
            directory=tmp_path / "out",
            lce=False,
            task_batch_norm=states,
        )

    state = _batch_norm_state(model)
    renamed = {f"other_{name}": arrays for name, arrays in state.items()}
    _one_line_error(lambda: package({"t": renamed}), "should hold the arrays of")
    short = {name: arrays[:-1] for name, arrays in state.items()}
    _one_line_error(lambda: package({"t": short}), "should hold arrays of shapes")
    _one_line_error(lambda: package({"a/b": state}), "task names take letters")
    shifted = _batch_norm_state(model, 0.5)
    _one_line_error(
        lambda: package({"a": state, "b": shifted}),
        "last task, 'b', should be the state the model holds",
    )
    _one_line_error(
        lambda: package(None, card={**CARD, "task_batch_norm": {}}),
        "no states were given",
    )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
