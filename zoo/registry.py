"""The registry of model factories: every zoo model announces itself where it is defined.

A factory joins the registry with the `register_model` decorator, in its own module; the
runner, the tuner, the command lines, the LCE export and the pretrained loader read the
registry instead of keeping their own lists of names. This module imports no model
module, so anything may import it.

```python
from zoo import registry

@registry.register_model(architecture=("input_shape", "num_classes", "hidden_units"))
def my_mlp(*, hidden_units=(256,), input_shape=(28, 28, 1), num_classes=10, ...):
    ...

registry.model_names()                 # ("mlp_float", "mlp_meta", "my_mlp", ...)
registry.get_model("my_mlp").factory   # the function
```
"""

import dataclasses
import inspect
from typing import Callable, Optional, Sequence, Tuple

__all__ = ["ModelSpec", "register_model", "get_model", "model_names", "models"]

# Arguments every factory takes and that shape the weights.
_COMMON_ARCHITECTURE = ("input_shape", "num_classes")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """What the rest of the project needs to know about a zoo model factory.

    # Arguments
        name: the factory's name (`zoo.<name>`, `--model <name>`).
        factory: the keyword-only function that returns a built `tf.keras.Model`.
        architecture: the factory arguments that shape the weights (a pretrained model
            or a checkpoint only fits a model built with the same values).
        binary: whether the model has binary (Larq precision-1) kernels; a float model
            is trained with the metaplastic rule on its float kernels instead.
        default_pretrained: the pretrained model `factory(pretrained=True)` loads.
    """

    name: str
    factory: Callable
    architecture: Tuple[str, ...]
    binary: bool = True
    default_pretrained: Optional[str] = None

    def takes(self, argument: str) -> bool:
        """Whether the factory has an argument named `argument`."""
        return argument in inspect.signature(self.factory).parameters

    def default(self, argument: str):
        """The factory's default value of `argument`."""
        return inspect.signature(self.factory).parameters[argument].default


_MODELS: dict = {}


def register_model(
    *,
    architecture: Sequence[str] = (),
    binary: bool = True,
    default_pretrained: Optional[str] = None,
    name: Optional[str] = None,
) -> Callable[[Callable], Callable]:
    """Returns a decorator that registers a model factory under its function name.

    # Arguments
        architecture: the factory arguments, besides `input_shape` and `num_classes`,
            that shape the weights (e.g. `("hidden_units",)`).
        binary: whether the model has binary kernels.
        default_pretrained: the pretrained model name `factory(pretrained=True)` loads.
        name: the registered name, if not the function's name.

    # Returns
        A decorator that registers the factory and returns it unchanged.

    # Raises
        ValueError: if another factory is registered under the same name.
    """

    def decorator(factory: Callable) -> Callable:
        key = name or factory.__name__
        previous = _MODELS.get(key)
        if previous is not None and previous.factory is not factory:
            same_place = (
                previous.factory.__module__ == factory.__module__
                and previous.factory.__qualname__ == factory.__qualname__
            )
            if (
                not same_place
            ):  # a module re-imported (e.g. importlib.reload) may replace
                raise ValueError(f"a model named {key!r} is already registered.")
        _MODELS[key] = ModelSpec(
            name=key,
            factory=factory,
            architecture=_COMMON_ARCHITECTURE
            + tuple(a for a in architecture if a not in _COMMON_ARCHITECTURE),
            binary=binary,
            default_pretrained=default_pretrained,
        )
        return factory

    return decorator


def get_model(name: str) -> ModelSpec:
    """Returns the registered model `name`.

    # Arguments
        name: a registered factory name (see `model_names`).

    # Returns
        Its `ModelSpec`.

    # Raises
        ValueError: if no model of that name is registered (one line listing the names).
    """
    if not isinstance(name, str) or name not in _MODELS:
        raise ValueError(
            f"unknown model {name!r}; use one of {', '.join(model_names())}."
        )
    return _MODELS[name]


def model_names(*, binary: Optional[bool] = None) -> Tuple[str, ...]:
    """The registered model names, sorted; only binary (or float) ones if `binary` is
    `True` (or `False`)."""
    return tuple(
        sorted(n for n, s in _MODELS.items() if binary is None or s.binary == binary)
    )


def models() -> Tuple[ModelSpec, ...]:
    """Every registered `ModelSpec`, sorted by name."""
    return tuple(_MODELS[n] for n in model_names())
