"""The search space: metaplasticity m, learning rate and (optionally) hidden width.

`MetaplasticHyperModel` is a Keras Tuner `HyperModel`: it declares the hyperparameters
of a binary zoo model trained with `MetaplasticAdam`, and `build(hp)` returns that model
compiled for a set of values. Keras Tuner calls `build` when a tuner is created, to
record the search space. A trial, though, is a whole continual-learning run
(`tuning.search`): `config_overrides(hp)` turns the same values into `RunConfig` fields,
and `training.runner.run` builds the same model (both go through
`training.assembly.build_model` and `make_optimizer`) and trains it task after task.
`build(tuner.get_best_hyperparameters()[0])` gives the best trial's starting point.

!!! example
    ```python
    import keras_tuner
    from tuning.hypermodel import MetaplasticHyperModel

    hypermodel = MetaplasticHyperModel(meta_range=(0.0, 3.0), per_layer_meta=True)
    model = hypermodel.build(keras_tuner.HyperParameters())
    ```
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras_tuner
import tensorflow as tf

import zoo  # noqa: F401  (the zoo's models join the registry on import)
from training.assembly import build_model, make_optimizer
from training.config import RunConfig
from training.optimizers import is_binary_variable, layer_name
from zoo import registry
from zoo.precision import DEFAULT_PRECISION, check_precision
from zoo.validation import check_choice, check_positive_int, check_units

__all__ = ["MetaplasticHyperModel", "binary_layer_names"]


def binary_layer_names(model: tf.keras.Model) -> list[str]:
    """The names of the layers of `model` that hold binary latent kernels, in order.

    # Arguments
        model: a built zoo model.

    # Returns
        Layer names such as `["dense_1", "dense_2", "dense_out"]`.
    """
    names = []
    for variable in model.trainable_variables:
        if is_binary_variable(variable):
            name = layer_name(variable)
            if name not in names:
                names.append(name)
    return names


def _check_range(value, argument: str, *, positive: bool) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(
            f"{argument} must be a pair (min, max), got {value!r}."
        ) from None
    bound = "0 < min < max" if positive else "0 <= min < max"
    ok = math.isfinite(low) and math.isfinite(high) and low < high
    ok = ok and (low > 0 if positive else low >= 0)
    if not ok:
        raise ValueError(f"{argument} must be finite with {bound}, got {value!r}.")
    return low, high


def _check_default(value, low: float, high: float, argument: str) -> float | None:
    if value is None:
        return None
    if not low <= float(value) <= high:
        raise ValueError(f"{argument} must lie in [{low}, {high}], got {value!r}.")
    return float(value)


class MetaplasticHyperModel(keras_tuner.HyperModel):
    """A zoo model with `MetaplasticAdam`, its m and learning rate to be tuned.

    Hyperparameters: `learning_rate` (log scale, or fixed with `learning_rate`), then
    either `meta` (one m for every binary layer) or `meta_<layer>` (one per binary layer,
    e.g. `meta_dense_1`, ..., `meta_dense_out`), and, with `hidden_units_choices`,
    `hidden_units` (the width of every hidden layer of `mlp_meta`).

    # Arguments
        model: the name of a binary zoo model (`zoo.registry.model_names(binary=True)`:
            `"mlp_meta"`, `"vgg16_meta"`, `"vgg_small_meta"`, ...).
        input_shape: shape of one sample.
        num_classes: number of output logits.
        meta_range: (min, max) of m, uniform; 0 <= min < max.
        meta_default: the value of m tried first (default: `min`).
        per_layer_meta: one m per binary layer instead of one for all.
        learning_rate_range: (min, max) of the learning rate, log-uniform; 0 < min < max.
        learning_rate_default: the learning rate tried first (default: `min`).
        learning_rate: a fixed learning rate (`hp.Fixed`) instead of searching
            `learning_rate_range`, to tune m alone (e.g. the paper's 0.005).
        hidden_units_choices: widths to choose from for every hidden layer of a model
            with `hidden_units` such as `mlp_meta` (e.g. `(256, 512, 1024)`); `None`
            keeps `hidden_units`.
        hidden_units: the fixed widths of such a model (their count is kept when
            widths are tuned).
        precision: the compute precision of the model, `"float32"` or `"bf16"`
            (`zoo.precision`), not tuned.
        name: the hypermodel's name.

    # Raises
        ValueError: for an unknown model, an invalid range (min >= max, negative m,
            learning rate <= 0), a default outside its range or invalid widths.
    """

    def __init__(
        self,
        *,  # Keyword arguments only
        model: str = "mlp_meta",
        input_shape: Sequence[int] = (28, 28, 1),
        num_classes: int = 10,
        meta_range: Sequence[float] = (0.0, 3.0),
        meta_default: float | None = None,
        per_layer_meta: bool = False,
        learning_rate_range: Sequence[float] = (1e-4, 1e-2),
        learning_rate_default: float | None = None,
        learning_rate: float | None = None,
        hidden_units_choices: Sequence[int] | None = None,
        hidden_units: Sequence[int] = (512, 512),
        precision: str = DEFAULT_PRECISION,
        name: str | None = None,
    ):
        super().__init__(name=name, tunable=True)
        self.model = check_choice(model, "model", registry.model_names(binary=True))
        self.input_shape = tuple(int(d) for d in input_shape)
        self.num_classes = check_positive_int(num_classes, "num_classes")
        self.meta_range = _check_range(meta_range, "meta_range", positive=False)
        self.meta_default = _check_default(
            meta_default, *self.meta_range, "meta_default"
        )
        self.learning_rate_range = _check_range(
            learning_rate_range, "learning_rate_range", positive=True
        )
        self.learning_rate_default = _check_default(
            learning_rate_default, *self.learning_rate_range, "learning_rate_default"
        )
        if learning_rate is not None and not (
            math.isfinite(float(learning_rate)) and float(learning_rate) > 0
        ):
            raise ValueError(
                f"learning_rate must be a finite number > 0, got {learning_rate!r}."
            )
        self.learning_rate = None if learning_rate is None else float(learning_rate)
        self.per_layer_meta = bool(per_layer_meta)
        self.hidden_units = check_units(hidden_units, "hidden_units")
        self.precision = check_precision(precision)
        takes_widths = registry.get_model(model).takes("hidden_units")
        if hidden_units_choices is not None:
            hidden_units_choices = check_units(
                hidden_units_choices, "hidden_units_choices"
            )
            if not takes_widths:
                raise ValueError(
                    f"hidden_units_choices applies to models with hidden_units, "
                    f"not {model}."
                )
        self.hidden_units_choices = hidden_units_choices
        self.layer_names = []
        if per_layer_meta:  # the names do not depend on the widths: build a tiny one
            tiny = (1,) * len(self.hidden_units) if takes_widths else None
            self.layer_names = binary_layer_names(self._model(tiny))

    def declare(self, hp: keras_tuner.HyperParameters) -> dict:
        """Declares the hyperparameters in `hp` and returns their values.

        # Arguments
            hp: the trial's hyperparameters.

        # Returns
            `{"learning_rate": float, "meta": float or {layer: float},
            "hidden_units": tuple}`.
        """
        low, high = self.learning_rate_range
        if self.learning_rate is not None:
            learning_rate = hp.Fixed("learning_rate", self.learning_rate)
        else:
            learning_rate = hp.Float(
                "learning_rate",
                min_value=low,
                max_value=high,
                sampling="log",
                default=self.learning_rate_default,
            )
        low, high = self.meta_range
        if self.per_layer_meta:
            meta = {
                layer: hp.Float(f"meta_{layer}", low, high, default=self.meta_default)
                for layer in self.layer_names
            }
        else:
            meta = hp.Float("meta", low, high, default=self.meta_default)
        hidden_units = self.hidden_units
        if self.hidden_units_choices is not None:
            width = hp.Choice("hidden_units", list(self.hidden_units_choices))
            hidden_units = (int(width),) * len(self.hidden_units)
        return {
            "learning_rate": float(learning_rate),
            "meta": meta,
            "hidden_units": hidden_units,
        }

    def config_overrides(self, hp: keras_tuner.HyperParameters) -> dict:
        """The `RunConfig` fields that `hp` sets (`model`, `learning_rate`, `meta`,
        `hidden_units`); `meta` is a `{layer: m}` mapping with `per_layer_meta`.

        # Arguments
            hp: hyperparameters holding values for this search space.

        # Returns
            A dict to pass to `dataclasses.replace(config, **overrides)`.
        """
        return self._overrides(self.declare(hp.copy()))

    def build(self, hp: keras_tuner.HyperParameters) -> tf.keras.Model:
        """The compiled zoo model with `MetaplasticAdam` for the values in `hp`.

        The model and optimizer are those a run of `RunConfig(**config_overrides(hp))`
        starts from (`training.assembly.build_model` with `RunConfig`'s default seed,
        `make_optimizer`).

        # Arguments
            hp: the trial's hyperparameters.

        # Returns
            A compiled `tf.keras.Model` (logits, sparse categorical cross-entropy,
            accuracy).
        """
        config = RunConfig(**self._overrides(self.declare(hp)))
        model = build_model(
            config, input_shape=self.input_shape, num_classes=self.num_classes
        )
        model.compile(
            make_optimizer(config),
            loss=tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            metrics=["accuracy"],
        )
        return model

    def _model(self, hidden_units: tuple[int, ...] | None) -> tf.keras.Model:
        widths = {} if hidden_units is None else {"hidden_units": hidden_units}
        return registry.get_model(self.model).factory(
            input_shape=self.input_shape, num_classes=self.num_classes, **widths
        )

    def _overrides(self, values: dict) -> dict:
        overrides = {"model": self.model, "precision": self.precision, **values}
        if isinstance(overrides["meta"], dict):
            overrides["meta"] = dict(overrides["meta"])
        return overrides
