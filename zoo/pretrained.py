"""Pretrained models of the zoo: a registry of verified SavedModels with model cards.

A pretrained model is a directory `saved_models/<name>/` shipped with the package, or a
`.tar.gz` of that directory fetched from a URL (and cached) by `tf.keras.utils.get_file`:

    saved_model/      Keras SavedModel with the float32 latent weights: training goes on
    model.tflite      Larq Compute Engine flatbuffer (when LCE was installed to package it)
    model_card.json   data, protocol, command, budget, accuracies, sha256 of every file
    README.md         the same card, in markdown

Before anything is loaded, every file the card lists is checked against its sha256 and
the SavedModel may hold no unlisted file: a corrupted or modified model is refused.

```python
import zoo

model = zoo.load_pretrained("mlp_meta_fashion_mnist_stream")  # the verified SavedModel
model = zoo.mlp_meta(pretrained=True)  # the factory's model, pretrained weights copied in
zoo.register_pretrained("my_mlp", factory="mlp_meta", kwargs={"hidden_units": (512,)},
                        url="https://example.org/my_mlp.tar.gz", sha256="...")
```
"""

import dataclasses
import datetime
import gzip
import hashlib
import importlib.util
import inspect
import json
import os
import re
import shutil
import tarfile
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

import larq as lq
import numpy as np
import tensorflow as tf

from zoo.export import load_saved_model, quiet_tensorflow

PathType = Union[str, os.PathLike]

# What a pretrained model directory holds.
SAVED_MODEL = "saved_model"
FLATBUFFER = "model.tflite"
CARD = "model_card.json"
CARD_MARKDOWN = "README.md"
# Where `tf.keras.utils.get_file` caches archives, under its cache directory.
CACHE_SUBDIR = "metaplastic_zoo"

# Factories that build pretrained models, and the arguments that shape their weights.
ARCHITECTURE_ARGUMENTS = MappingProxyType(
    {
        "mlp_meta": ("input_shape", "num_classes", "hidden_units"),
        "vgg16_meta": ("input_shape", "num_classes", "dense_units"),
        "vgg_small_meta": ("input_shape", "num_classes", "dense_units"),
    }
)
# The model `factory(pretrained=True)` loads.
DEFAULT_PRETRAINED = MappingProxyType(
    {
        "mlp_meta": "mlp_meta_fashion_mnist_stream",
        "vgg16_meta": "vgg16_meta_cifar10",
    }
)
# What a model card must say, besides factory and kwargs (see `package_pretrained`).
REQUIRED_CARD_KEYS = (
    "dataset",
    "protocol",
    "hyperparameters",
    "command",
    "epochs",
    "wall_time_s",
    "budget",
)
# Keys `package_pretrained` writes itself.
_WRITTEN_CARD_KEYS = ("name", "results", "software", "created", "files")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_URL_SCHEMES = ("http://", "https://", "file://")
# Layers a zoo factory names (`layers.py`): one the pretrained model lacks is an error.
_ZOO_LAYER = re.compile(r"^(conv|dense|bn)_(\d+|out)$")
_REINSTALL = "re-install / re-download the pretrained model"


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
    "vgg16_meta_cifar10": _entry(
        "vgg16_meta_cifar10",
        "vgg16_meta",
        {"input_shape": (32, 32, 3), "num_classes": 10},
    ),
}


# Registry ---------------------------------------------------------------------------


def _factory(name: str):
    import zoo.mlp
    import zoo.vgg

    return getattr(zoo.mlp, name, None) or getattr(zoo.vgg, name)


def _normalized(value):
    """JSON and tuples alike: sequences become tuples (recursively), ints stay ints."""
    if isinstance(value, (list, tuple)):
        return tuple(_normalized(v) for v in value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _check_factory(factory, kwargs, what: str) -> None:
    if factory not in ARCHITECTURE_ARGUMENTS:
        raise ValueError(
            f"{what}: unknown factory {factory!r}; use one of "
            f"{', '.join(ARCHITECTURE_ARGUMENTS)}"
        )
    if not isinstance(kwargs, Mapping):
        raise ValueError(
            f"{what}: `kwargs` should be a dict of {factory} arguments, got {kwargs!r}"
        )
    parameters = set(inspect.signature(_factory(factory)).parameters)
    parameters -= {"weights", "pretrained", "input_tensor"}
    unknown = sorted(set(kwargs) - parameters)
    if unknown:
        raise ValueError(
            f"{what}: {factory} takes no argument(s) {', '.join(unknown)} in `kwargs`"
        )


def architecture(factory: str, kwargs: Mapping[str, Any]) -> dict:
    """Returns the factory arguments that shape the weights, defaults filled in.

    # Arguments
        factory: a zoo factory name with pretrained support (`ARCHITECTURE_ARGUMENTS`).
        kwargs: the arguments the model is built with.

    # Returns
        A dict such as `{"input_shape": (28, 28, 1), "num_classes": 10,
        "hidden_units": (1024, 1024)}`, sequences as tuples.
    """
    parameters = inspect.signature(_factory(factory)).parameters
    return {
        key: _normalized(kwargs[key] if key in kwargs else parameters[key].default)
        for key in ARCHITECTURE_ARGUMENTS[factory]
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
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"pretrained model names take letters, digits, '_', '-' and '.', got {name!r}"
        )
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"pretrained model {name!r} is already registered; pass overwrite=True to "
            "replace it"
        )
    _check_factory(factory, kwargs, f"pretrained model {name!r}")
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
        factory: a zoo factory name.

    # Returns
        The registered pretrained model name.

    # Raises
        ValueError: if the factory has no default pretrained model.
    """
    if factory not in DEFAULT_PRETRAINED:
        candidates = sorted(n for n, e in _REGISTRY.items() if e.factory == factory)
        raise ValueError(
            f"{factory} has no default pretrained model; pass `weights=` a registered "
            f"{factory} model name ({', '.join(candidates) or 'none registered'}) "
            "instead of pretrained=True"
        )
    return DEFAULT_PRETRAINED[factory]


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
            f"looked in {looked}; package it with zoo.pretrained.package_pretrained or "
            "register its archive's URL with zoo.pretrained.register_pretrained"
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
            "publish the archive written by zoo.pretrained.archive_pretrained"
        )
    return directory


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _files(directory: Path) -> list:
    """Every file under `directory`, as sorted POSIX paths relative to it."""
    return sorted(
        path.relative_to(directory).as_posix()
        for path in directory.rglob("*")
        if path.is_file()
    )


def verify_pretrained(directory: PathType) -> dict:
    """Checks a pretrained model directory against its model card, loading nothing.

    Every file the card lists must be there with its size and sha256, and the SavedModel
    must hold no file the card does not list.

    # Arguments
        directory: a pretrained model directory (with `model_card.json`).

    # Returns
        The model card.

    # Raises
        ValueError: naming the first missing, modified or unlisted file.
    """
    directory = Path(directory)
    card_path = directory / CARD
    if not card_path.is_file():
        raise ValueError(f"{card_path}: missing, the model is incomplete; {_REINSTALL}")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        files = card["files"]
        listed = {rel: (int(f["bytes"]), str(f["sha256"])) for rel, f in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{card_path}: not a model card with a `files` table "
            f"({_first_line(error)}); {_REINSTALL}"
        ) from None
    if f"{SAVED_MODEL}/saved_model.pb" not in listed:
        raise ValueError(f"{card_path}: lists no SavedModel; {_REINSTALL}")
    root = directory.resolve()
    for rel, (size, digest) in sorted(listed.items()):
        path = directory / rel
        if root not in path.resolve().parents:
            raise ValueError(f"{card_path}: lists {rel!r}, outside {directory}")
        if not path.is_file():
            raise ValueError(f"{path}: missing, the model is incomplete; {_REINSTALL}")
        if path.stat().st_size != size or _sha256(path) != digest:
            raise ValueError(
                f"{path}: sha256 mismatch, the file is corrupted or was modified; "
                f"{_REINSTALL}"
            )
    for rel in _files(directory / SAVED_MODEL):
        if f"{SAVED_MODEL}/{rel}" not in listed:
            raise ValueError(
                f"{directory / SAVED_MODEL / rel}: not listed in {CARD}, the model was "
                f"modified; {_REINSTALL}"
            )
    return card


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
        raise ValueError(f"{error}; {_REINSTALL}") from error


def load_pretrained(
    name: str, *, cache_dir: Optional[PathType] = None
) -> tf.keras.Model:
    """Loads a pretrained model's SavedModel, after checking every file's sha256.

    The model holds the float32 latent weights and BatchNorm statistics it was saved
    with; it is not compiled: `model.compile(MetaplasticAdam(...), ...)` and `fit` go on
    training it.

    # Arguments
        name: a registered pretrained model name (see `pretrained_models`).
        cache_dir: where fetched archives are cached (under `metaplastic_zoo/`); default
            `$KERAS_HOME`, else `~/.keras`.

    # Returns
        The `tf.keras.Model`, not compiled.

    # Raises
        ValueError: if the name is unknown, the model is not shipped and has no URL, the
            download fails, a file is missing or modified, or the SavedModel does not
            load.
    """
    directory, _ = _verified(name, cache_dir)
    return _load_saved_model(directory / SAVED_MODEL)


def _layers_with_weights(model: tf.keras.Model) -> dict:
    return {layer.name: layer for layer in model.layers if layer.weights}


def _signature(layer) -> list:
    return [
        (w.name.split("/")[-1].split(":")[0], tuple(w.shape)) for w in layer.weights
    ]


def _matching_layers(source: tf.keras.Model, target: tf.keras.Model, what: str) -> list:
    """Pairs the layers of `source` and `target` by name, checking weight names/shapes."""
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
    model: tf.keras.Model, name: str, *, cache_dir: Optional[PathType] = None
) -> tf.keras.Model:
    """Copies a pretrained model's weights into `model`, layer by layer (by name).

    # Arguments
        model: a model of the pretrained model's architecture (same layer names, weight
            names and shapes), e.g. from its factory.
        name: a registered pretrained model name.
        cache_dir: see `load_pretrained`.

    # Returns
        `model`, for chaining.

    # Raises
        ValueError: as `load_pretrained`, or if the layers do not match.
    """
    source = load_pretrained(name, cache_dir=cache_dir)
    for source_layer, target_layer in _matching_layers(
        source, model, f"pretrained model {name}"
    ):
        target_layer.set_weights(source_layer.get_weights())
    return model


# Packaging --------------------------------------------------------------------------


def _check_verify_data(verify_data, model: tf.keras.Model) -> tuple:
    try:
        x, y = verify_data
        x, y = np.asarray(x, np.float32), np.asarray(y)
    except (TypeError, ValueError):
        raise ValueError(
            "`verify_data` should be a tuple (x_test, y_test) of images and labels"
        ) from None
    expected = tuple(model.inputs[0].shape[1:])
    if x.shape[1:] != expected or y.shape != (len(x),) or not len(x):
        raise ValueError(
            f"`verify_data` should hold images of shape (N, {', '.join(map(str, expected))})"
            f" and N labels, N > 0, got {x.shape} and {y.shape}"
        )
    return x, y


def _lce_version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("larq-compute-engine")
    except Exception:  # noqa: BLE001  (not installed)
        return None


def _lce_results(model, flatbuffer: bytes, x, y, samples: Optional[int]) -> dict:
    from zoo.export import verify_lce

    n = len(x) if samples is None else min(int(samples), len(x))
    result = verify_lce(flatbuffer, model, x[:n], y[:n])
    return {
        "test_accuracy": result["lce_accuracy"],
        "keras_test_accuracy": result["keras_accuracy"],
        "agreement": result.get("argmax_agreement", result.get("agreement")),
        "max_abs_logit_diff": result["max_abs_logit_diff"],
        "samples": n,
    }


def _percent(value) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def _markdown_card(card: dict, sizes: dict) -> str:
    results = card["results"]
    lce = results.get("lce") or {}
    kwargs = ", ".join(f"{k}={v!r}" for k, v in card["kwargs"].items())

    def listed(value):
        if isinstance(value, Mapping):
            return ", ".join(f"{k} = {v}" for k, v in value.items())
        return value

    lce_line = "not converted (Larq Compute Engine was not installed)"
    if lce.get("test_accuracy") is not None:
        lce_line = (
            f"{_percent(lce['test_accuracy'])} on {lce['samples']:,} test images; "
            f"agrees with Keras on {_percent(lce['agreement'])}, largest logit difference "
            f"{lce['max_abs_logit_diff']:.3g}"
        )
    elif FLATBUFFER in sizes:
        lce_line = "converted, not verified (no test data given)"
    keras_line = _percent(results.get("keras_test_accuracy"))
    if results.get("test_samples"):
        keras_line += f" on {results['test_samples']:,} test images"
    rows = [
        ("dataset", card["dataset"]),
        ("protocol", listed(card["protocol"])),
        ("hyperparameters", listed(card["hyperparameters"])),
        ("epochs", card["epochs"]),
        ("wall time", f"{card['wall_time_s']} s"),
        ("budget", card["budget"]),
        ("Keras test accuracy", keras_line),
        ("LCE test accuracy", lce_line),
    ]
    lines = [
        f"# {card['name']}",
        "",
        f"`zoo.{card['factory']}({kwargs})`, pretrained. Load it with "
        f"`zoo.load_pretrained({card['name']!r})` (the SavedModel, to train further) or "
        f"`zoo.{card['factory']}(weights={card['name']!r})`; `{FLATBUFFER}` is the Larq "
        "Compute Engine flatbuffer. Every file's sha256 is in `model_card.json`.",
        "",
        "| | |",
        "|---|---|",
        *(f"| {key} | {value} |" for key, value in rows),
        "",
        "Training command:",
        "",
        "```bash",
        str(card["command"]),
        "```",
        "",
        "| file | bytes |",
        "|---|---|",
        *(f"| `{rel}` | {size:,} |" for rel, size in sorted(sizes.items())),
        "",
    ]
    return "\n".join(lines)


def package_pretrained(
    model: tf.keras.Model,
    *,
    name: str,
    card: Mapping[str, Any],
    directory: PathType = "saved_models",
    lce: bool = True,
    verify_data: Optional[tuple] = None,
    lce_samples: Optional[int] = None,
    overwrite: bool = False,
) -> dict:
    """Writes a pretrained model directory: SavedModel, LCE flatbuffer, model cards.

    `directory/name/` receives `saved_model/` (the model, without optimizer state),
    `model.tflite` (when `lce` and Larq Compute Engine is installed, converted by
    `zoo.export.convert_to_lce`), `README.md` and `model_card.json`: the given card plus
    the name, the Keras (and LCE) test accuracy on `verify_data`, the software versions
    and every other file's size and sha256. Nothing is left behind on failure.

    # Arguments
        model: the trained model, built by the card's factory with the card's kwargs.
        name: the pretrained model's name, and its directory's.
        card: `factory`, `kwargs` and what a reader needs to trust the numbers: `dataset`,
            `protocol`, `hyperparameters`, `command` (the exact training command),
            `epochs`, `wall_time_s`, `budget`; other keys are kept.
        directory: where to write `name/` (default: the repository's `saved_models/`
            when run from its root).
        lce: whether to convert to an LCE flatbuffer (skipped, and said so in the card,
            when Larq Compute Engine is not installed).
        verify_data: `(x_test, y_test)` to measure the test accuracies on, if any.
        lce_samples: how many of those images the flatbuffer is checked on (one image at
            a time, slow on x86); default all.
        overwrite: replace an existing `directory/name/`.

    # Returns
        The model card written to `model_card.json`.

    # Raises
        ValueError: for an invalid name or card, a model that does not match the card's
            factory and kwargs, invalid `verify_data`, or an existing directory without
            `overwrite`.
    """
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(
            f"pretrained model names take letters, digits, '_', '-' and '.', got {name!r}"
        )
    if not isinstance(card, Mapping):
        raise ValueError(f"`card` should be a dict, got {type(card).__name__}")
    missing = [k for k in ("factory", "kwargs", *REQUIRED_CARD_KEYS) if k not in card]
    if missing:
        raise ValueError(
            f"the model card lacks {', '.join(missing)}; add them to `card`"
        )
    reserved = [k for k in _WRITTEN_CARD_KEYS if k in card and k != "name"]
    if reserved or card.get("name", name) != name:
        raise ValueError(
            f"package_pretrained writes the card's {', '.join(_WRITTEN_CARD_KEYS)}; "
            "remove them from `card`"
        )
    _check_factory(card["factory"], card["kwargs"], f"the model card of {name}")
    built = _factory(card["factory"])(**card["kwargs"])
    _matching_layers(model, built, f"model {model.name!r} vs card's {card['factory']}")
    del built
    if verify_data is not None:
        verify_data = _check_verify_data(verify_data, model)
    target = Path(directory).expanduser() / name
    if target.exists() and not overwrite:
        raise ValueError(f"{target} exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)

    written = {
        "name": name,
        **{k: _jsonable(v) for k, v in card.items() if k != "name"},
    }
    written["kwargs"] = _jsonable(card["kwargs"])
    results = {"keras_test_accuracy": None, "test_samples": None, "lce": None}
    partial = target.parent / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
        with quiet_tensorflow():
            model.save(partial / SAVED_MODEL, include_optimizer=False, save_format="tf")
        shutil.rmtree(partial / SAVED_MODEL / "assets", ignore_errors=True)  # empty
        if verify_data is not None:
            x, y = verify_data
            logits = model.predict(x, batch_size=256, verbose=0)
            results["keras_test_accuracy"] = float(np.mean(logits.argmax(-1) == y))
            results["test_samples"] = int(len(x))
        lce_available = importlib.util.find_spec("larq_compute_engine") is not None
        if lce and lce_available:
            from zoo.export import convert_to_lce

            flatbuffer = convert_to_lce(model, path=partial / FLATBUFFER)
            results["lce"] = {"target": "arm"}
            if verify_data is not None:
                results["lce"].update(
                    _lce_results(model, flatbuffer, *verify_data, lce_samples)
                )
        elif lce:
            results["lce"] = {"skipped": "larq_compute_engine was not installed"}
        written["results"] = results
        written["software"] = {
            "tensorflow": tf.__version__,
            "larq": getattr(lq, "__version__", None),
            "larq_compute_engine": _lce_version() if lce and lce_available else None,
        }
        written["created"] = datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        )
        sizes = {rel: (partial / rel).stat().st_size for rel in _files(partial)}
        (partial / CARD_MARKDOWN).write_text(
            _markdown_card(written, sizes), encoding="utf-8"
        )
        written["files"] = {
            rel: {
                "bytes": (partial / rel).stat().st_size,
                "sha256": _sha256(partial / rel),
            }
            for rel in _files(partial)
        }
        (partial / CARD).write_text(
            json.dumps(written, indent=2) + "\n", encoding="utf-8"
        )
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return written


def archive_pretrained(
    name: str, *, output_dir: PathType = "dist", cache_dir: Optional[PathType] = None
) -> Tuple[Path, str]:
    """Writes `output_dir/<name>.tar.gz` of a verified pretrained model, to publish it.

    The archive holds one folder `<name>/` with the model card and every file it lists;
    it is byte-for-byte reproducible (sorted, zero timestamps and owners). Host it and
    register its URL and sha256 with `register_pretrained`.

    # Arguments
        name: a registered pretrained model name.
        output_dir: where to write the archive (created if need be).
        cache_dir: see `load_pretrained`.

    # Returns
        A tuple `(path, sha256)` of the archive.

    # Raises
        ValueError: as `pretrained_directory`.
    """
    directory, card = _verified(name, cache_dir)
    output_dir = Path(output_dir).expanduser()
    output_dir.mkdir(parents=True, exist_ok=True)
    path = output_dir / f"{name}.tar.gz"
    with (
        open(path, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as compressed,
        tarfile.open(fileobj=compressed, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for rel in sorted({CARD, *card["files"]}):
            info = tar.gettarinfo(directory / rel, arcname=f"{name}/{rel}")
            info.mtime, info.mode = 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(directory / rel, "rb") as f:
                tar.addfile(info, f)
    return path, _sha256(path)
