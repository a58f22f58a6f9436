"""Loading Keras models saved with `model.save`, without their optimizer.

The zoo loads every saved model with `compile=False`: converting, verifying or copying
weights never needs the optimizer, so the zoo never needs the training library that
defines it, and models compiled with any optimizer load.

How `MetaplasticAdam` gets registered: `training/optimizers.py` registers it with
`tf.keras.utils.register_keras_serializable(package="metaplastic")` when `training` is
imported; the zoo never imports `training`. To get the model back compiled with its
`MetaplasticAdam`, to train it further, import `training` first:

```python
import tensorflow as tf
import training  # registers MetaplasticAdam with Keras
from zoo.saved_model import load_saved_model

model = load_saved_model("runs/pmnist/model")  # weights only, not compiled
model = tf.keras.models.load_model("runs/pmnist/model")  # compiled, MetaplasticAdam
```
"""

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator, Union

import tensorflow as tf

from zoo.layers import silence_starved_weights_warning

__all__ = ["load_saved_model", "quiet_tensorflow"]


@contextlib.contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """Hides TensorFlow's Python warnings (untraced functions, compiled metrics)."""
    logger = tf.get_logger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def load_saved_model(path: Union[str, os.PathLike]) -> tf.keras.Model:
    """Loads a Keras model saved with `model.save` (SavedModel directory, .keras, .h5).

    Larq's layers and quantizers register themselves with Keras when `larq` is
    imported; the optimizer is not restored (`compile=False`), so a model compiled with
    `MetaplasticAdam` loads without `training` (see the module docstring).

    # Arguments
        path: the SavedModel directory or model file.

    # Returns
        The `tf.keras.Model`, not compiled.

    # Raises
        ValueError: if nothing is at `path` or it does not hold a Keras model.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise ValueError(
            f"{path} does not exist; pass a SavedModel directory (or .keras/.h5 file) "
            "written by model.save"
        )
    try:
        with quiet_tensorflow(), silence_starved_weights_warning():
            model = tf.keras.models.load_model(path, compile=False)
    except Exception as error:  # noqa: BLE001  (many formats, many failure modes)
        first_line = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise ValueError(
            f"could not load a Keras model from {path}: {first_line}"
        ) from error
    if not isinstance(model, tf.keras.Model):
        raise ValueError(
            f"{path} holds a SavedModel without Keras metadata; save the model with "
            "tf.keras.Model.save"
        )
    return model
