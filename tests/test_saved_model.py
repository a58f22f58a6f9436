"""zoo/saved_model.py: a model compiled with MetaplasticAdam loads in the zoo without
`training` (weights only); `import training` first gives the optimizer back too."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

import zoo
from training.optimizers import MetaplasticAdam
from zoo.saved_model import load_saved_model

ROOT = Path(__file__).resolve().parents[1]
# Run in a fresh interpreter: this process has imported `training` already.
LOAD_WITHOUT_TRAINING = """
import json, sys
import numpy as np
from zoo.saved_model import load_saved_model
model = load_saved_model(sys.argv[1])
x = np.load(sys.argv[2])
print(json.dumps({
    "training_imported": any(m.split(".")[0] == "training" for m in sys.modules),
    "compiled": model.compiled_loss is not None,
    "optimizer": type(model.optimizer).__name__,
    "logits": model(x, training=False).numpy().tolist(),
}))
"""


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny mlp_meta trained one step with MetaplasticAdam, saved in each format."""
    tf.keras.utils.set_random_seed(0)
    model = zoo.mlp_meta(hidden_units=(8,), input_shape=(4, 4, 1), num_classes=3)
    model.compile(
        MetaplasticAdam(0.01, meta=1.3),
        loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 4, 4, 1)).astype("float32")
    model.fit(x, np.arange(16) % 3, batch_size=16, verbose=0)
    root = tmp_path_factory.mktemp("saved")
    paths = [root / "saved_model", root / "model.keras", root / "model.h5"]
    for path in paths:
        model.save(path)
    np.save(root / "x.npy", x[:4])
    return model, paths, root / "x.npy"


def test_loads_without_training(saved):
    model, paths, x_path = saved
    expected = model(np.load(x_path), training=False).numpy()
    for path in paths:
        done = subprocess.run(
            [sys.executable, "-c", LOAD_WITHOUT_TRAINING, str(path), str(x_path)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        result = json.loads(done.stdout.strip().splitlines()[-1])
        assert not result["training_imported"] and not result["compiled"]
        # A SavedModel keeps a bare `RestoredOptimizer` (slots only), the others none.
        assert result["optimizer"] in ("NoneType", "RestoredOptimizer")
        np.testing.assert_array_equal(np.array(result["logits"], "float32"), expected)


def test_import_training_restores_the_optimizer(saved):
    model, paths, _ = saved
    loaded = load_saved_model(paths[0])
    assert loaded.compiled_loss is None and not isinstance(
        loaded.optimizer, MetaplasticAdam
    )
    assert [w.shape for w in loaded.weights] == [w.shape for w in model.weights]
    compiled = tf.keras.models.load_model(paths[0])  # `training` is imported here
    assert isinstance(compiled.optimizer, MetaplasticAdam)
    assert compiled.optimizer.get_config()["meta"] == pytest.approx(1.3)
    assert compiled.compiled_loss is not None


def test_errors_are_one_line(tmp_path):
    class Plain(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
        def double(self, x):
            return 2 * x

    tf.saved_model.save(Plain(), str(tmp_path / "plain"))
    (tmp_path / "empty").mkdir()
    missing, plain, empty = (tmp_path / n for n in ("missing", "plain", "empty"))
    expected = {
        missing: f"{missing} does not exist; pass a SavedModel directory "
        "(or .keras/.h5 file) written by model.save",
        plain: f"{plain} holds a SavedModel without Keras metadata; "
        "save the model with tf.keras.Model.save",
    }
    for path, message in expected.items():
        with pytest.raises(ValueError) as error:
            load_saved_model(path)
        assert str(error.value) == message
    with pytest.raises(ValueError) as error:
        load_saved_model(empty)
    message = str(error.value)
    assert message.startswith(f"could not load a Keras model from {empty}: ")
    assert "\n" not in message
