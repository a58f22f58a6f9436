"""Pretrained models of the zoo: a registry of verified SavedModels, fetched and loaded.

A pretrained model is a directory `saved_models/<name>/` shipped with the package, or a
`.tar.gz` of that directory fetched from a URL (and cached) by `tf.keras.utils.get_file`:

    saved_model/      Keras SavedModel with the float32 latent weights: training goes on
    model.tflite      Larq Compute Engine flatbuffer (when LCE was installed to package it)
    model_card.json   data, protocol, command, budget, accuracies, sha256 of every file,
                      and `card_sha256`, the sha256 of the card itself
    README.md         the same card, in markdown

Before anything is loaded, the card is checked against its own `card_sha256`, every
file it lists against its sha256, and the directory may hold nothing else, at any
depth: a corrupted or modified model is refused (`zoo.model_directory`).
Writing such a directory and its archive is `zoo.publishing`'s job; the factories that
build pretrained architectures come from `zoo.registry`.

```python
import zoo

model = zoo.load_pretrained("mlp_meta_fashion_mnist_stream")  # the verified SavedModel
model = zoo.mlp_meta(pretrained=True)  # the factory's model, pretrained weights copied in
model = zoo.load_pretrained("my_pmnist", task="task_1")  # a permuted-MNIST model: task 1's BN
zoo.register_pretrained("my_mlp", factory="mlp_meta", kwargs={"hidden_units": (512,)},
                        url="https://example.org/my_mlp.tar.gz", sha256="...")
```
"""

import contextlib
import dataclasses
import inspect
import os
import re
import shutil
from pathlib import Path
from types import MappingProxyType
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from zoo import registry
from zoo.model_directory import (  # noqa: F401  (re-exported for readers of a model)
    CARD,
    CARD_MARKDOWN,
    FLATBUFFER,
    REINSTALL_HINT,
    SAVED_MODEL,
    TASK_BATCH_NORM,
    TASK_BATCH_NORM_NPZ,
    PathType,
    read_card,
    verify_pretrained,
)
from zoo.saved_model import load_saved_model, quiet_tensorflow

# Where `tf.keras.utils.get_file` caches archives, under its cache directory.
CACHE_SUBDIR = "metaplastic_zoo"


class _FromRegistry(Mapping):
    """A read-only mapping, factory name -> value, read from `zoo.registry` at every
    access: it lists every factory registered so far, whatever the import order."""

    def __init__(self, value: Callable[[registry.ModelSpec], Any]):
        self._value = value

    def _current(self) -> dict:
        values = ((spec.name, self._value(spec)) for spec in registry.models())
        return {name: value for name, value in values if value is not None}

    def __getitem__(self, name: str):
        return self._current()[name]

    def __iter__(self):
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())

    def __repr__(self) -> str:
        return repr(self._current())


# Factories that build pretrained models (those taking `pretrained=`), and the
# arguments that shape their weights.
ARCHITECTURE_ARGUMENTS = _FromRegistry(
    lambda spec: spec.architecture if spec.takes("pretrained") else None
)
# The model `factory(pretrained=True)` loads.
DEFAULT_PRETRAINED = _FromRegistry(lambda spec: spec.default_pretrained)
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL_SCHEMES = ("http://", "https://", "file://")
# Layers a zoo factory names (`layers.py`): one the pretrained model lacks is an error.
_ZOO_LAYER = re.compile(r"^(conv|dense|bn)_(\d+|out)$")


@dataclasses.dataclass(frozen=True)
class PretrainedEntry:
    """Where a pretrained model is and what builds it.

    # Arguments
        name: the registered name.
        factory: the zoo factory that builds its architecture (`mlp_meta`, ...).
        kwargs: the factory arguments it was built with.
        url: where a `.tar.gz` of its directory (from `archive_pretrained`) is, if any.
        sha256: the archive's sha256, with `url`.
        directory: its directory, if not the shipped `saved_models/<name>/`.
    """

    name: str
    factory: str
    kwargs: Mapping[str, Any]
    url: Optional[str] = None
    sha256: Optional[str] = None
    directory: Optional[str] = None


def _entry(name, factory, kwargs, **where) -> PretrainedEntry:
    return PretrainedEntry(name, factory, MappingProxyType(dict(kwargs)), **where)


_REGISTRY = {
    # Stream Fashion-MNIST (Fig. 3): 60 subsets of 1,000 images, m = 2.5.
    "mlp_meta_fashion_mnist_stream": _entry(
        "mlp_meta_fashion_mnist_stream",
        "mlp_meta",
        {"hidden_units": (1024, 1024), "input_shape": (28, 28, 1), "num_classes": 10},
    ),
    # Permuted MNIST at the paper's Fig. 2 setting: 6 tasks x 40 epochs, m = 1.35.
    "mlp_meta_permuted_mnist": _entry(
        "mlp_meta_permuted_mnist",
        "mlp_meta",
        {
            "hidden_units": (4096, 4096),
            "input_shape": (28, 28, 1),
            "num_classes": 10,
            "batch_norm_affine": True,
        },
    ),
    "vgg16_meta_cifar10": _entry(
        "vgg16_meta_cifar10",
        "vgg16_meta",
        {"input_shape": (32, 32, 3), "num_classes": 10},
    ),
}


# Registry ---------------------------------------------------------------------------


def _normalized(value):
    """JSON and tuples alike: sequences become tuples (recursively), ints stay ints."""
    if isinstance(value, (list, tuple)):
        return tuple(_normalized(v) for v in value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def check_pretrained_name(name: Any) -> str:
    """Returns `name` if it may name a pretrained model (letters, digits, `_-.`).

    # Raises
        ValueError: if it cannot.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"pretrained model names take letters, digits, '_', '-' and '.', got {name!r}"
        )
    return name


def pretrained_factory(
    factory: str, kwargs: Mapping[str, Any], *, what: str
) -> Callable:
    """Returns the zoo factory that builds a pretrained `factory` model from `kwargs`.

    # Arguments
        factory: a registered factory name with pretrained support
            (`ARCHITECTURE_ARGUMENTS`).
        kwargs: the factory arguments the model is built with.
        what: what is being checked, to start the error message.

    # Returns
        The factory function (`zoo.registry.get_model(factory).factory`).

    # Raises
        ValueError: for an unknown factory, or `kwargs` with an argument it does not take.
    """
    if factory not in ARCHITECTURE_ARGUMENTS:
        raise ValueError(
            f"{what}: unknown factory {factory!r}; use one of "
            f"{', '.join(ARCHITECTURE_ARGUMENTS)}"
        )
    if not isinstance(kwargs, Mapping):
        raise ValueError(
            f"{what}: `kwargs` should be a dict of {factory} arguments, got {kwargs!r}"
        )
    function = registry.get_model(factory).factory
    parameters = set(inspect.signature(function).parameters)
    parameters -= {"weights", "pretrained", "input_tensor"}
    unknown = sorted(set(kwargs) - parameters)
    if unknown:
        raise ValueError(
            f"{what}: {factory} takes no argument(s) {', '.join(unknown)} in `kwargs`"
        )
    return function


def architecture(factory: str, kwargs: Mapping[str, Any]) -> dict:
    """Returns the factory arguments that shape the weights, defaults filled in.

    # Arguments
        factory: a registered zoo factory name (see `zoo.registry`).
        kwargs: the arguments the model is built with.

    # Returns
        A dict such as `{"input_shape": (28, 28, 1), "num_classes": 10,
        "hidden_units": (1024, 1024)}`, sequences as tuples.

    # Raises
        ValueError: if `factory` is not registered.
    """
    spec = registry.get_model(factory)
    return {
        key: _normalized(kwargs[key] if key in kwargs else spec.default(key))
        for key in spec.architecture
    }


def register_pretrained(
    name: str,
    *,
    factory: str,
    kwargs: Mapping[str, Any],
    url: Optional[str] = None,
    sha256: Optional[str] = None,
    directory: Optional[PathType] = None,
    overwrite: bool = False,
) -> PretrainedEntry:
    """Registers a pretrained model, e.g. one you host, under `name`.

    Its directory (`directory`, else the shipped `saved_models/<name>/`) is used when it
    exists; otherwise the `.tar.gz` at `url` (as `archive_pretrained` writes it: one
    folder `<name>/`) is fetched, checked against `sha256`, cached and extracted.

    # Arguments
        name: the name to load it by (letters, digits, `_`, `-`, `.`).
        factory: the zoo factory of its architecture (`mlp_meta`, `vgg16_meta`,
            `vgg_small_meta`).
        kwargs: the factory arguments it was built with (`input_shape`, `num_classes`,
            `hidden_units` / `dense_units`; defaults are the factory's).
        url: `https://`, `http://` or `file://` URL of the archive.
        sha256: hex sha256 of the archive; required with `url`.
        directory: a local pretrained model directory.
        overwrite: replace an entry already registered under `name`.

    # Returns
        The new `PretrainedEntry`.

    # Raises
        ValueError: for an invalid or taken name, an unknown factory or argument, a URL
            without a valid sha256, or neither `url` nor `directory`.
    """
    check_pretrained_name(name)
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"pretrained model {name!r} is already registered; pass overwrite=True to "
            "replace it"
        )
    pretrained_factory(factory, kwargs, what=f"pretrained model {name!r}")
    if url is None and directory is None:
        raise ValueError(
            f"pretrained model {name!r}: pass `url` (with `sha256`) or `directory`"
        )
    if url is not None:
        if not isinstance(url, str) or not url.startswith(_URL_SCHEMES):
            raise ValueError(
                f"pretrained model {name!r}: `url` should start with "
                f"{', '.join(_URL_SCHEMES)}, got {url!r}"
            )
        if not isinstance(sha256, str) or not _SHA256.match(sha256.lower()):
            raise ValueError(
                f"pretrained model {name!r}: `sha256` should be the 64 hex digits of the "
                f"archive's sha256 (archive_pretrained returns it), got {sha256!r}"
            )
        sha256 = sha256.lower()
    elif sha256 is not None:
        raise ValueError(
            f"pretrained model {name!r}: `sha256` is the hash of the archive at `url`; "
            "pass `url` too"
        )
    entry = _entry(
        name,
        factory,
        kwargs,
        url=url,
        sha256=sha256,
        directory=None if directory is None else os.fspath(directory),
    )
    _REGISTRY[name] = entry
    return entry


def pretrained_models() -> dict:
    """Returns the registered pretrained models, name -> `PretrainedEntry`."""
    return dict(_REGISTRY)


@contextlib.contextmanager
def pretrained_scope() -> Iterator[None]:
    """Undoes, at the end of the `with` block, every registration made inside it.

    Like `tf.keras.utils.custom_object_scope`: registrations (and `overwrite=True`
    replacements of registered models) last until the block ends, e.g. in a test.

    ```python
    with zoo.pretrained.pretrained_scope():
        zoo.register_pretrained("mine", factory="mlp_meta", kwargs={}, directory="mine")
        model = zoo.load_pretrained("mine")
    "mine" in zoo.pretrained_models()  # False
    ```
    """
    saved = dict(_REGISTRY)
    try:
        yield
    finally:
        _REGISTRY.clear()
        _REGISTRY.update(saved)


def is_pretrained_name(name) -> bool:
    """Returns whether `name` is a registered pretrained model name."""
    return isinstance(name, str) and name in _REGISTRY


def _registered(name) -> PretrainedEntry:
    if not is_pretrained_name(name):
        raise ValueError(
            f"unknown pretrained model {name!r}; registered: "
            f"{', '.join(sorted(_REGISTRY)) or 'none'}; add one with "
            "zoo.pretrained.register_pretrained"
        )
    return _REGISTRY[name]


def default_pretrained(factory: str) -> str:
    """Returns the name of the model `factory(pretrained=True)` loads.

    # Arguments
        factory: a registered zoo factory name.

    # Returns
        The registered pretrained model name (`zoo.registry` `default_pretrained`).

    # Raises
        ValueError: if the factory is unknown or has no default pretrained model.
    """
    name = registry.get_model(factory).default_pretrained
    if name is None:
        candidates = sorted(n for n, e in _REGISTRY.items() if e.factory == factory)
        raise ValueError(
            f"{factory} has no default pretrained model; pass `weights=` a registered "
            f"{factory} model name ({', '.join(candidates) or 'none registered'}) "
            "instead of pretrained=True"
        )
    return name


def check_pretrained(
    name: str,
    *,
    factory: Optional[str],
    input_shape: Sequence[int],
    num_classes: int,
    **arguments,
) -> None:
    """Checks that a factory call fits pretrained model `name`, before it builds anything.

    # Arguments
        name: a registered pretrained model name.
        factory: the factory being called.
        input_shape: the sample shape it builds for.
        num_classes: its number of classes.
        **arguments: its other architecture arguments (`hidden_units`, `dense_units`).

    # Raises
        ValueError: if `name` belongs to another factory, an argument differs from the
            pretrained model's, or the model is neither shipped nor at a URL.
    """
    entry = _registered(name)
    if factory != entry.factory:
        raise ValueError(
            f"pretrained model {name} is a {entry.factory} model; build it with "
            f"zoo.{entry.factory}(weights={name!r}) or zoo.load_pretrained({name!r})"
        )
    expected = architecture(entry.factory, entry.kwargs)
    requested = {"input_shape": input_shape, "num_classes": num_classes, **arguments}
    differences = [
        f"{key}={_normalized(value)!r} (it has {expected[key]!r})"
        for key, value in requested.items()
        if key in expected and _normalized(value) != expected[key]
    ]
    if differences:
        raise ValueError(
            f"pretrained model {name} does not fit the requested model: "
            f"{'; '.join(differences)}; pass the pretrained model's values"
        )
    _local_directory(entry, required=entry.url is None)


# Locating, fetching and verifying ---------------------------------------------------


def _shipped_roots() -> list:
    """Where shipped models are: the installed package's `zoo/saved_models/` (see
    setup.py), then `saved_models/` at the root of a source checkout."""
    package = Path(__file__).resolve().parent
    return [package / "saved_models", package.parent / "saved_models"]


def _local_directory(entry: PretrainedEntry, *, required: bool) -> Optional[Path]:
    if entry.directory is not None:
        candidates = [Path(entry.directory).expanduser()]
    else:
        candidates = [root / entry.name for root in _shipped_roots()]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    if required:
        looked = ", ".join(str(c) for c in dict.fromkeys(candidates))
        raise ValueError(
            f"pretrained model {entry.name} is not shipped in this installation; "
            f"looked in {looked}; package it with zoo.package_pretrained or "
            "register its archive's URL with zoo.register_pretrained"
        )
    return None


def _cache_base(cache_dir: Optional[PathType]) -> Path:
    if cache_dir is None:
        cache_dir = os.environ.get("KERAS_HOME") or Path.home() / ".keras"
    return Path(cache_dir).expanduser()


def _fetch(entry: PretrainedEntry, cache_dir: Optional[PathType]) -> Path:
    """Downloads (or finds in the cache), checks and extracts the entry's archive."""
    base = _cache_base(cache_dir)
    # get_file falls back on /tmp/.keras when its cache directory does not exist yet.
    base.mkdir(parents=True, exist_ok=True)
    # Extract afresh: no stale file survives from an earlier version.
    shutil.rmtree(base / CACHE_SUBDIR / entry.name, ignore_errors=True)
    try:
        with quiet_tensorflow():
            archive = tf.keras.utils.get_file(
                fname=f"{entry.name}.tar.gz",
                origin=entry.url,
                file_hash=entry.sha256,
                hash_algorithm="sha256",
                extract=True,
                cache_subdir=CACHE_SUBDIR,
                cache_dir=os.fspath(base),
            )
    except ValueError as error:
        if "hash" not in str(error):
            raise ValueError(
                f"pretrained model {entry.name}: could not fetch {entry.url}: "
                f"{_first_line(error)}"
            ) from error
        raise ValueError(
            f"pretrained model {entry.name}: {entry.url}: sha256 mismatch, the file is "
            "corrupted or was modified; re-download it, or check the sha256 given to "
            "register_pretrained"
        ) from None
    except Exception as error:  # noqa: BLE001  (urllib, tarfile, OS errors)
        raise ValueError(
            f"pretrained model {entry.name}: could not fetch {entry.url}: "
            f"{_first_line(error)}"
        ) from error
    directory = Path(archive).parent / entry.name
    if not directory.is_dir():
        raise ValueError(
            f"pretrained model {entry.name}: {entry.url} holds no folder {entry.name}/; "
            "publish the archive written by zoo.archive_pretrained"
        )
    return directory


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _check_card(entry: PretrainedEntry, card: dict, directory: Path) -> None:
    factory, kwargs = card.get("factory"), card.get("kwargs")
    if (
        factory != entry.factory
        or not isinstance(kwargs, Mapping)
        or architecture(factory, kwargs) != architecture(entry.factory, entry.kwargs)
    ):
        raise ValueError(
            f"{directory / CARD}: a {factory} model with {kwargs}, but {entry.name} is "
            f"registered as {entry.factory} with {dict(entry.kwargs)}; register it with "
            "the card's factory and kwargs"
        )


def _verified(name: str, cache_dir: Optional[PathType]) -> Tuple[Path, dict]:
    entry = _registered(name)
    directory = _local_directory(entry, required=entry.url is None)
    if directory is None:
        directory = _fetch(entry, cache_dir)
    card = verify_pretrained(directory)
    _check_card(entry, card, directory)
    return directory, card


def pretrained_directory(name: str, *, cache_dir: Optional[PathType] = None) -> Path:
    """Returns the verified directory of a pretrained model (fetched if need be).

    # Arguments
        name: a registered pretrained model name.
        cache_dir: where fetched archives are cached (under `metaplastic_zoo/`); default
            `$KERAS_HOME`, else `~/.keras`.

    # Returns
        The directory; its `model.tflite`, if any, is the LCE flatbuffer.

    # Raises
        ValueError: if the name is unknown, the model is not shipped and has no URL, the
            download fails, or a file is missing or modified.
    """
    return _verified(name, cache_dir)[0]


def pretrained_card(name: str, *, cache_dir: Optional[PathType] = None) -> dict:
    """Returns the verified model card of a pretrained model (see `pretrained_directory`)."""
    return _verified(name, cache_dir)[1]


# Loading ----------------------------------------------------------------------------


def _load_saved_model(path: Path) -> tf.keras.Model:
    try:
        return load_saved_model(path)
    except ValueError as error:
        raise ValueError(f"{error}; {REINSTALL_HINT}") from error


def load_pretrained(
    name: str, *, task: Optional[str] = None, cache_dir: Optional[PathType] = None
) -> tf.keras.Model:
    """Loads a pretrained model's SavedModel, after checking every file's sha256.

    The model holds the float32 latent weights and BatchNorm statistics it was saved
    with; it is not compiled: `model.compile(MetaplasticAdam(...), ...)` and `fit` go on
    training it. A model of tasks learned one after another with per-task BatchNorm
    (the paper's protocol) is saved with its last task's BatchNorm state and ships
    every task's (its card's `task_batch_norm`): `task=` gives the model that one, the
    state its card's accuracy of that task was measured with.

    ```python
    model = zoo.load_pretrained("my_pmnist", task="task_1")  # a permuted-MNIST model
    ```

    # Arguments
        name: a registered pretrained model name (see `pretrained_models`).
        task: a task name of the card's `task_batch_norm["tasks"]`, for that task's
            BatchNorm state; default the state the model was saved with.
        cache_dir: where fetched archives are cached (under `metaplastic_zoo/`); default
            `$KERAS_HOME`, else `~/.keras`.

    # Returns
        The `tf.keras.Model`, not compiled.

    # Raises
        ValueError: if the name is unknown, the model is not shipped and has no URL, the
            download fails, a file is missing or modified, the SavedModel does not
            load, or `task` is not one of its tasks.
    """
    directory, card = _verified(name, cache_dir)
    model = _load_saved_model(directory / SAVED_MODEL)
    if task is not None:
        set_task_batch_norm(model, directory, task)
    return model


def _layers_with_weights(model: tf.keras.Model) -> dict:
    return {layer.name: layer for layer in model.layers if layer.weights}


def _weight_name(weight) -> str:
    """`gamma` for `bn_1/gamma:0`."""
    return weight.name.split("/")[-1].split(":")[0]


def _signature(layer) -> list:
    return [(_weight_name(w), tuple(w.shape)) for w in layer.weights]


def task_batch_norm_key(task: str, layer: tf.keras.layers.Layer, weight) -> str:
    """The key of one BatchNorm array of one task in the `task_batch_norm`
    checkpoint: `task/layer/weight`, e.g. `task_1/bn_1/moving_mean`."""
    return f"{task}/{layer.name}/{_weight_name(weight)}"


def _read_task_batch_norm(directory: Path, shipped: Mapping, keys: list) -> list:
    """The arrays of `keys` from a directory's per-task BatchNorm states: its
    TensorFlow checkpoint, or the `.npz` of a directory written before it."""
    if shipped.get("file") == TASK_BATCH_NORM_NPZ:
        with np.load(directory / TASK_BATCH_NORM_NPZ) as arrays:
            return [arrays[key] for key in keys]
    reader = tf.train.load_checkpoint(str(directory / TASK_BATCH_NORM))
    return [reader.get_tensor(key) for key in keys]


def set_task_batch_norm(model: tf.keras.Model, directory: PathType, task: str) -> None:
    """Gives `model` the BatchNorm state a pretrained model directory ships for `task`.

    For measuring every task of one loaded model without loading it again; the
    directory is not verified here (`pretrained_directory` verifies it).

    # Arguments
        model: the pretrained model (its layer names), e.g. from `load_pretrained`.
        directory: its pretrained model directory.
        task: a task name of its card's `task_batch_norm["tasks"]`.

    # Raises
        ValueError: if the model ships one BatchNorm state, `task` is not one of its
            tasks, or the states do not fit `model`.
    """
    directory = Path(directory)
    card = read_card(directory)
    name = card.get("name", directory.name)
    shipped = card.get("task_batch_norm") or {}
    tasks = list(shipped.get("tasks") or [])
    if not tasks:
        raise ValueError(
            f"pretrained model {name} ships one BatchNorm state, not one per task; "
            "load it without `task`"
        )
    if task not in tasks:
        raise ValueError(
            f"pretrained model {name} has no BatchNorm state of task {task!r}; its "
            f"tasks are {', '.join(tasks)}"
        )
    layers = [
        layer
        for layer in model.layers
        if isinstance(layer, tf.keras.layers.BatchNormalization)
    ]
    keys = [
        task_batch_norm_key(task, layer, weight)
        for layer in layers
        for weight in layer.weights
    ]
    try:
        arrays = iter(_read_task_batch_norm(directory, shipped, keys))
        for layer in layers:
            layer.set_weights([next(arrays) for _ in layer.weights])
    except (OSError, KeyError, ValueError, tf.errors.OpError) as error:
        raise ValueError(
            f"pretrained model {name}: its per-task BatchNorm states do not fit its "
            f"model ({_first_line(error)}); {REINSTALL_HINT}"
        ) from None


def matching_layers(
    source: tf.keras.Model, target: tf.keras.Model, *, what: str
) -> list:
    """Pairs the layers of `source` and `target` that hold weights, by name.

    # Arguments
        source: the model whose weights are copied (e.g. a loaded pretrained model).
        target: the model they go into, e.g. built by a zoo factory.
        what: what is being matched, to start the error message.

    # Returns
        A list of `(source_layer, target_layer)` pairs with the same weight names and
        shapes.

    # Raises
        ValueError: if a layer of `source` is missing from `target`, a zoo-named layer
            of `target` is missing from `source`, or weights differ.
    """
    sources, targets = _layers_with_weights(source), _layers_with_weights(target)
    missing = [n for n in sources if n not in targets]
    unexpected = [n for n in targets if n not in sources and _ZOO_LAYER.match(n)]
    if missing or unexpected:
        raise ValueError(
            f"{what}: the layers differ (missing {missing}, unexpected {unexpected}); "
            "build the model with the pretrained model's factory arguments"
        )
    pairs = []
    for name, layer in sources.items():
        if _signature(layer) != _signature(targets[name]):
            raise ValueError(
                f"{what}: layer {name} has weights {_signature(targets[name])} but the "
                f"pretrained model's are {_signature(layer)}; build the model with the "
                "pretrained model's factory arguments"
            )
        pairs.append((layer, targets[name]))
    return pairs


def load_pretrained_weights(
    model: tf.keras.Model,
    name: str,
    *,
    task: Optional[str] = None,
    cache_dir: Optional[PathType] = None,
) -> tf.keras.Model:
    """Copies a pretrained model's weights into `model`, layer by layer (by name).

    # Arguments
        model: a model of the pretrained model's architecture (same layer names, weight
            names and shapes), e.g. from its factory.
        name: a registered pretrained model name.
        task: see `load_pretrained`.
        cache_dir: see `load_pretrained`.

    # Returns
        `model`, for chaining.

    # Raises
        ValueError: as `load_pretrained`, or if the layers do not match.
    """
    source = load_pretrained(name, task=task, cache_dir=cache_dir)
    for source_layer, target_layer in matching_layers(
        source, model, what=f"pretrained model {name}"
    ):
        target_layer.set_weights(source_layer.get_weights())
    return model
