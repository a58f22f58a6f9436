"""The `weights=` and `pretrained=` arguments of zoo factories: resolve, check, load.

A factory's `weights` is `None` (random initialization), a weights file (Keras HDF5 or
a TensorFlow checkpoint prefix) or the name of a registered pretrained model
(`zoo.pretrained`); `pretrained=True` stands for the factory's default pretrained model
(`zoo.registry` `default_pretrained`). A factory resolves them before it builds anything
and loads them into the model it built:

```python
weights = pretrained_weights(weights, pretrained=pretrained, factory="mlp_meta")
input_shape = layers.validate_arguments(...)
check_weights(weights, factory="mlp_meta", input_shape=input_shape, num_classes=10,
              architecture={"hidden_units": hidden_units})
...
return load_weights(model, weights)
```
"""

import os
from typing import Mapping, Optional, Sequence, Union

import tensorflow as tf

from zoo.pretrained import (
    check_pretrained,
    default_pretrained,
    is_pretrained_name,
    load_pretrained_weights,
    pretrained_models,
)

__all__ = [
    "WeightsType",
    "check_weights",
    "load_weights",
    "pretrained_weights",
    "resolve_weights",
]

WeightsType = Union[None, str, os.PathLike]


def _weights_file(weights) -> Optional[str]:
    """The path of an existing `.h5` file or TensorFlow checkpoint prefix, else `None`."""
    if isinstance(weights, (str, os.PathLike)):
        path = os.fspath(weights)
        if path.endswith(".h5") and os.path.isfile(path):
            return path
        if os.path.isfile(path + ".index"):
            return path
    return None


def resolve_weights(weights: WeightsType) -> Optional[str]:
    """Returns the file or pretrained model `weights` refers to, or `None` (random).

    # Arguments
        weights: `None`, a path to a Keras HDF5 weights file (`.h5`, `.weights.h5`) or
            to a TensorFlow checkpoint prefix (with its `.index` file next to it), or the
            name of a registered pretrained model (see `zoo.pretrained`).

    # Returns
        A path that `tf.keras.Model.load_weights` accepts, a pretrained model name, or
        `None`.

    # Raises
        ValueError: if `weights` is none of the above.
    """
    if weights is None:
        return None
    path = _weights_file(weights)
    if path is not None:
        return path
    if is_pretrained_name(weights):
        return weights
    raise ValueError(
        f"`weights` should be None or a path to a weights file (an existing .h5 file or "
        f"TensorFlow checkpoint prefix) or a pretrained model name "
        f"({', '.join(sorted(pretrained_models()))}), got {weights!r}."
    )


def pretrained_weights(
    weights: WeightsType, *, pretrained: bool, factory: str
) -> WeightsType:
    """Returns the weights a factory loads: `weights`, or its default pretrained model.

    # Arguments
        weights: the factory's `weights` argument.
        pretrained: the factory's `pretrained` argument.
        factory: the factory's registered name (`mlp_meta`, ...).

    # Returns
        `weights`, or with `pretrained=True` the name of the factory's default
        pretrained model (`zoo.pretrained.default_pretrained`).

    # Raises
        ValueError: if `pretrained` is not a bool, is combined with `weights`, or the
            factory has no default pretrained model.
    """
    if not isinstance(pretrained, bool):
        raise ValueError(f"`pretrained` should be True or False, got {pretrained!r}.")
    if not pretrained:
        return weights
    if weights is not None:
        raise ValueError(
            f"pass either pretrained=True or `weights`, not both (got weights={weights!r})."
        )
    return default_pretrained(factory)


def check_weights(
    weights: WeightsType,
    *,
    factory: str,
    input_shape: Sequence[int],
    num_classes: int,
    architecture: Optional[Mapping[str, object]] = None,
) -> Optional[str]:
    """Checks a factory's `weights`, before it builds anything.

    # Arguments
        weights: see `resolve_weights`.
        factory: the calling factory's name; a pretrained `weights` must be one of its
            models.
        input_shape: the validated sample shape the factory builds for.
        num_classes: its number of output logits.
        architecture: the factory's other arguments that shape the weights (e.g.
            `{"hidden_units": (1024, 1024)}`), checked against a pretrained `weights`.

    # Returns
        `resolve_weights(weights)`.

    # Raises
        ValueError: if `weights` is invalid, or does not fit the pretrained model it
            names.
    """
    resolved = resolve_weights(weights)
    if resolved is not None and _weights_file(resolved) is None:
        check_pretrained(
            resolved,
            factory=factory,
            input_shape=input_shape,
            num_classes=num_classes,
            **(architecture or {}),
        )
    return resolved


def load_weights(model: tf.keras.Model, weights: WeightsType) -> tf.keras.Model:
    """Loads `weights` (see `resolve_weights`) into `model`, if any.

    A pretrained model name loads that model's verified SavedModel and copies its
    weights into `model` layer by layer (see `zoo.pretrained.load_pretrained_weights`).

    # Arguments
        model: a built model.
        weights: `None`, a path to a weights file, or a pretrained model name.

    # Returns
        `model`, for chaining.

    # Raises
        ValueError: if `weights` is not accepted by `resolve_weights`, or a pretrained
            model is missing, modified or does not match `model`.
    """
    path = resolve_weights(weights)
    if path is None:
        return model
    if _weights_file(path) is None:
        return load_pretrained_weights(model, path)
    model.load_weights(path)
    return model
