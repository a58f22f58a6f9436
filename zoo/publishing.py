"""Publishing pretrained models: package a trained model with its cards, archive it.

`package_pretrained` writes a pretrained model directory (see `zoo.model_directory`):
the SavedModel, the Larq Compute Engine flatbuffer with its measured accuracy, and the
model card in JSON and markdown, every file listed with its sha256.
`archive_pretrained` turns a registered, verified model into a reproducible `.tar.gz`
to host; `zoo.register_pretrained` then makes its URL loadable by name.
`reseal_pretrained` adds its own sha256 to the card of a directory written before cards
recorded one, after checking every file it lists; `refresh_card` adds what cards hold
now (usage, data, per-class accuracy) to an older card, leaving the model files as
they are; `migrate_task_batch_norm` moves an older directory's per-task BatchNorm states
from `task_batch_norm.npz` into the TensorFlow checkpoint written now.

```python
import zoo

card = zoo.package_pretrained(model, name="my_mlp", card={...}, verify_data=(x, y))
path, sha256 = zoo.archive_pretrained("my_mlp")  # after registering its directory
zoo.publishing.reseal_pretrained("saved_models/old_model")  # a card without card_sha256
```
"""

import datetime
import gzip
import importlib.util
import json
import os
import shutil
import tarfile
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Tuple

import larq as lq
import numpy as np
import tensorflow as tf

from zoo import export, pretrained
from zoo.datasets import sample_description
from zoo.model_directory import (
    CARD,
    CARD_MARKDOWN,
    CARD_SHA256,
    FLATBUFFER,
    SAVED_MODEL,
    TASK_BATCH_NORM,
    TASK_BATCH_NORM_FILES,
    TASK_BATCH_NORM_NPZ,
    PathType,
    directory_files,
    file_sha256,
    read_card,
    seal_card,
    verify_files,
    verify_pretrained,
)
from zoo.saved_model import load_saved_model, quiet_tensorflow

__all__ = [
    "LCE_SAMPLE_SEED",
    "REQUIRED_CARD_KEYS",
    "WRITTEN_CARD_KEYS",
    "archive_pretrained",
    "migrate_task_batch_norm",
    "package_pretrained",
    "refresh_card",
    "reseal_pretrained",
]

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
WRITTEN_CARD_KEYS = (
    "name",
    "usage",
    "results",
    "software",
    "created",
    "files",
    CARD_SHA256,
)
# Seed of the class-stratified test images the flatbuffer is checked on (`lce_samples`).
LCE_SAMPLE_SEED = 0


def _jsonable(value):
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


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


def _check_class_names(class_names, model: tf.keras.Model) -> None:
    if class_names is not None and len(class_names) != model.output_shape[-1]:
        raise ValueError(
            f"{len(class_names)} class_names for a model with "
            f"{model.output_shape[-1]} outputs; pass one name per output"
        )


def _task_batch_norm_arrays(states, model: tf.keras.Model) -> dict:
    """`task_batch_norm` checked against `model`'s BatchNorm layers, as the arrays of
    the `TASK_BATCH_NORM` checkpoint (keys `zoo.pretrained.task_batch_norm_key`)."""
    layers = {
        layer.name: layer
        for layer in model.layers
        if isinstance(layer, tf.keras.layers.BatchNormalization)
    }
    if not isinstance(states, Mapping) or not states or not layers:
        raise ValueError(
            "`task_batch_norm` should map task names to {BatchNorm layer name: arrays} "
            f"of a model with BatchNorm, got {type(states).__name__} for a model with "
            f"{len(layers)} BatchNorm layers"
        )
    arrays = {}
    for task, state in states.items():
        try:
            pretrained.check_pretrained_name(task)  # a file-name-safe key part
        except ValueError:
            raise ValueError(
                "`task_batch_norm` task names take letters, digits, '_', '-' and '.', "
                f"got {task!r}"
            ) from None
        if not isinstance(state, Mapping) or set(state) != set(layers):
            got = sorted(state) if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(
                f"`task_batch_norm[{task!r}]` should hold the arrays of the BatchNorm "
                f"layers {sorted(layers)}, got {got}"
            )
        for name, layer in layers.items():
            values = [np.asarray(v, np.float32) for v in state[name]]
            expected = [tuple(w.shape) for w in layer.weights]
            if [v.shape for v in values] != expected:
                raise ValueError(
                    f"`task_batch_norm[{task!r}][{name!r}]` should hold arrays of shapes "
                    f"{expected}, got {[v.shape for v in values]}"
                )
            for weight, value in zip(layer.weights, values):
                arrays[pretrained.task_batch_norm_key(task, layer, weight)] = value
    last = list(states)[-1]  # the card says the model carries the last task's state
    for layer in layers.values():
        for weight in layer.weights:
            key = pretrained.task_batch_norm_key(last, layer, weight)
            if not np.array_equal(arrays[key], weight.numpy().astype(np.float32)):
                raise ValueError(
                    f"`task_batch_norm`'s last task, {last!r}, should be the state the "
                    f"model holds, but its {key} differs; give the model that state or "
                    "put its task last"
                )
    return arrays


def _save_checkpoint(prefix: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes `arrays` as the TensorFlow checkpoint `prefix` (`.index` and
    `.data-00000-of-00001`, the format of a SavedModel's variables), byte for byte
    the same for the same arrays; `tf.train.load_checkpoint(prefix)` reads it."""
    keys = sorted(arrays)
    tf.raw_ops.SaveV2(
        prefix=str(prefix),
        tensor_names=keys,
        shape_and_slices=[""] * len(keys),
        tensors=[tf.constant(arrays[key]) for key in keys],
    )


def _lce_version() -> Optional[str]:
    try:
        from importlib.metadata import version

        return version("larq-compute-engine")
    except Exception:  # noqa: BLE001  (not installed)
        return None


def _lce_results(model, flatbuffer: bytes, x, y, samples: Optional[int]) -> dict:
    result = export.verify_lce(
        flatbuffer, model, x, y, samples=samples, seed=LCE_SAMPLE_SEED
    )
    results = {
        "test_accuracy": result["lce_accuracy"],
        "keras_test_accuracy": result["keras_accuracy"],
        "agreement": result["argmax_agreement"],
        "max_abs_logit_diff": result["max_abs_logit_diff"],
        "samples": result["samples"],
    }
    if result["seed"] is not None:  # a class-stratified sample of the test images
        results.update(total=result["total"], sample_seed=result["seed"])
    return results


def _percent(value) -> str:
    return "—" if value is None else f"{100 * value:.2f} %"


def _usage(model: tf.keras.Model, class_names, verify_data) -> dict:
    """What a user must know to feed the model and train it further."""
    shape = list(model.input_shape[1:])
    pixels = ""
    if verify_data is not None:
        x = verify_data[0]
        if float(np.min(x)) >= 0.0 and float(np.max(x)) <= 1.0:
            pixels = (
                ", pixels in [0, 1] as `zoo.datasets.load_dataset` gives them (no mean "
                "or standard-deviation normalization)"
            )
    activation = getattr(model.layers[-1], "activation", None)
    logits = activation is None or activation is tf.keras.activations.linear
    return {
        "input": f"float32 images of shape {shape}{pixels}",
        "output": (
            f"{model.output_shape[-1]} logits (no softmax), in the order of class_names"
            if logits
            else f"{model.output_shape[-1]} outputs of {activation.__name__}"
        ),
        "class_names": None if class_names is None else list(class_names),
        "continue_training": (
            "the SavedModel loads uncompiled (saved without optimizer state): import "
            "training, then model.compile(training.MetaplasticAdam(learning_rate=..., "
            "meta=...), loss=tf.keras.losses.SparseCategoricalCrossentropy("
            "from_logits=True), metrics=['accuracy']) and fit; the latent weights are "
            "the float32 hidden weights Wh, so metaplasticity resumes from them"
        ),
    }


def _per_class_accuracy(predicted, y, class_names, num_classes: int) -> dict:
    """Accuracy on the test images of each class present, by class name."""
    names = class_names or [str(c) for c in range(num_classes)]
    return {
        str(name): round(float(np.mean(predicted[y == c] == c)), 6)
        for c, name in enumerate(names)
        if np.any(y == c)
    }


def _accuracy_row(title: str, accuracy: Mapping[str, float]) -> list:
    """`title:` then a one-row markdown table of accuracies, by name; none if empty."""
    if not accuracy:
        return []
    return [
        f"{title}:",
        "",
        "| " + " | ".join(accuracy) + " |",
        "|" + "---|" * len(accuracy),
        "| " + " | ".join(_percent(a) for a in accuracy.values()) + " |",
        "",
    ]


def _sequence_lines(sequence: Optional[Mapping[str, Any]]) -> list:
    """The accuracy matrix of a model trained on a sequence of tasks, as markdown."""
    if not sequence:
        return []
    tasks = list(sequence["tasks"])
    lines = [
        "Test accuracy of every task (columns) after learning each task (rows); "
        f"{sequence['batch_norm']}:",
        "",
        "| after | " + " | ".join(tasks) + " |",
        "|---|" + "---|" * len(tasks),
    ]
    for task, row in zip(tasks, sequence["accuracy_matrix"]):
        lines.append(f"| {task} | " + " | ".join(_percent(a) for a in row) + " |")
    return lines + [""]


def _task_batch_norm_lines(card: Mapping[str, Any]) -> list:
    """Each task's accuracy with the BatchNorm state shipped for it, as markdown."""
    shipped = card.get("task_batch_norm")
    if not shipped:
        return []
    accuracy = shipped.get("keras_test_accuracy") or {}
    lines = [
        " and ".join(f"`{rel}`" for rel in TASK_BATCH_NORM_FILES)
        + " (a TensorFlow checkpoint, keys `task/layer/weight`) hold the BatchNorm "
        "state of every task "
        f"({', '.join(shipped['tasks'])}): `zoo.load_pretrained({card['name']!r}, "
        "task=...)` loads the model with that task's; the SavedModel and "
        f"`{FLATBUFFER}` carry {shipped['tasks'][-1]}'s. "
        + (
            f"BatchNorm states: {shipped['statistics']}."
            if shipped.get("statistics")
            else ""
        ),
        "",
    ]
    return lines + _accuracy_row(
        "Keras test accuracy of every task with its own BatchNorm state", accuracy
    )


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
        images = sample_description(
            lce["samples"],
            lce.get("total", lce["samples"]),
            seed=lce.get("sample_seed"),
            what="test images",
        )
        lce_line = (
            f"{_percent(lce['test_accuracy'])} on {images}; "
            f"agrees with Keras on {_percent(lce['agreement'])}, largest logit difference "
            f"{lce['max_abs_logit_diff']:.3g}"
        )
    elif FLATBUFFER in sizes:
        lce_line = "converted, not verified (no test data given)"
    keras_line = _percent(results.get("keras_test_accuracy"))
    if results.get("test_samples"):
        keras_line += f" on {results['test_samples']:,} test images"
    usage = card.get("usage") or {}
    data = card.get("data") or {}
    dataset = card["dataset"]
    if data.get("source"):
        dataset = f"{dataset} (read from `{data['source']}`)"
    rows = [
        ("dataset", dataset),
        *([("data copy", data["note"])] if data.get("note") else []),
        ("input", usage.get("input")),
        ("output", usage.get("output")),
        ("protocol", listed(card["protocol"])),
        ("hyperparameters", listed(card["hyperparameters"])),
        ("epochs", card["epochs"]),
        ("wall time", f"{card['wall_time_s']} s"),
        ("budget", card["budget"]),
        ("Keras test accuracy", keras_line),
        ("LCE test accuracy", lce_line),
        ("to train further", usage.get("continue_training")),
    ]
    statistics = card.get("batch_norm_statistics")
    if statistics:
        rows.insert(
            rows.index(("LCE test accuracy", lce_line)),
            (
                "BatchNorm statistics",
                f"re-estimated from {statistics['recalibrated_batches']} training "
                f"batches of {statistics['task']} under the final weights (beyond the "
                "paper); with the moving statistics the run ended with, the Keras test "
                f"accuracy is {_percent(statistics['keras_test_accuracy_as_trained'])}",
            ),
        )
    rows = [(key, value) for key, value in rows if value is not None]
    per_class = results.get("per_class_accuracy") or {}
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
        *_accuracy_row("Keras test accuracy per class", per_class),
        *_sequence_lines(card.get("sequence")),
        *_task_batch_norm_lines(card),
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
    class_names: Optional[Sequence[str]] = None,
    task_batch_norm: Optional[Mapping[str, Mapping[str, Sequence[Any]]]] = None,
    overwrite: bool = False,
) -> dict:
    """Writes a pretrained model directory: SavedModel, LCE flatbuffer, model cards.

    `directory/name/` receives `saved_model/` (the model, without optimizer state),
    `model.tflite` (when `lce` and Larq Compute Engine is installed, converted by
    `zoo.export.convert_to_lce`), `README.md` and `model_card.json`: the given card plus
    the name, `usage` (input shape and pixel range, outputs, class names, how to compile
    the uncompiled SavedModel to train further), the Keras (and LCE) test accuracy on
    `verify_data` with the Keras accuracy of each class, the software versions and
    every other file's size and sha256, then the card's own sha256
    (`zoo.model_directory.card_sha256`). A card's `data` (`source`, `note`: on which
    copy of the dataset the accuracies were measured) is shown in its markdown.
    A model of tasks learned one after another with per-task BatchNorm also ships
    every task's BatchNorm state (`task_batch_norm`), in the TensorFlow checkpoint
    `task_batch_norm` (`.index` and `.data-00000-of-00001`, keys `task/layer/weight`),
    which `zoo.load_pretrained(name, task=...)` reads; the card's `task_batch_norm`
    lists its tasks (and keeps what the given card says of them, e.g. accuracies).
    Nothing is left behind on failure.

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
            a time, slow on x86): a class-stratified sample drawn with seed
            `LCE_SAMPLE_SEED` (see `zoo.datasets.stratified_sample`); default all.
        class_names: the name of each label, in label order (default: the labels).
        task_batch_norm: `{task name: {BatchNorm layer name: its arrays}}`, the arrays
            in the order of the layer's weights (`layer.get_weights()`), the last task
            being the one `model` holds; default none.
        overwrite: replace an existing `directory/name/`.

    # Returns
        The model card written to `model_card.json`.

    # Raises
        ValueError: for an invalid name or card, a model that does not match the card's
            factory and kwargs, invalid `verify_data` or `task_batch_norm`, or an
            existing directory without `overwrite`.
    """
    pretrained.check_pretrained_name(name)
    if not isinstance(card, Mapping):
        raise ValueError(f"`card` should be a dict, got {type(card).__name__}")
    missing = [k for k in ("factory", "kwargs", *REQUIRED_CARD_KEYS) if k not in card]
    if missing:
        raise ValueError(
            f"the model card lacks {', '.join(missing)}; add them to `card`"
        )
    reserved = [k for k in WRITTEN_CARD_KEYS if k in card and k != "name"]
    if reserved or card.get("name", name) != name:
        raise ValueError(
            f"package_pretrained writes the card's {', '.join(WRITTEN_CARD_KEYS)}; "
            "remove them from `card`"
        )
    factory = pretrained.pretrained_factory(
        card["factory"], card["kwargs"], what=f"the model card of {name}"
    )
    built = factory(**card["kwargs"])
    pretrained.matching_layers(
        model, built, what=f"model {model.name!r} vs card's {card['factory']}"
    )
    del built
    if verify_data is not None:
        verify_data = _check_verify_data(verify_data, model)
    _check_class_names(class_names, model)
    task_arrays = None
    if task_batch_norm is not None:
        task_arrays = _task_batch_norm_arrays(task_batch_norm, model)
    elif "task_batch_norm" in card:
        raise ValueError(
            "the model card has `task_batch_norm` but no states were given; pass "
            "task_batch_norm= or remove it from `card`"
        )
    target = Path(directory).expanduser() / name
    if target.exists() and not overwrite:
        raise ValueError(f"{target} exists; pass overwrite=True to replace it")
    target.parent.mkdir(parents=True, exist_ok=True)

    written = {
        "name": name,
        **{k: _jsonable(v) for k, v in card.items() if k != "name"},
    }
    written["kwargs"] = _jsonable(card["kwargs"])
    written["usage"] = _usage(model, class_names, verify_data)
    if task_arrays is not None:
        written["task_batch_norm"] = {
            **_jsonable(card.get("task_batch_norm") or {}),
            "checkpoint": TASK_BATCH_NORM,
            "tasks": list(task_batch_norm),
        }
    results = {"keras_test_accuracy": None, "test_samples": None, "lce": None}
    partial = target.parent / f".{name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    try:
        partial.mkdir()
        with quiet_tensorflow():
            model.save(partial / SAVED_MODEL, include_optimizer=False, save_format="tf")
        shutil.rmtree(partial / SAVED_MODEL / "assets", ignore_errors=True)  # empty
        if task_arrays is not None:
            _save_checkpoint(partial / TASK_BATCH_NORM, task_arrays)
        if verify_data is not None:
            x, y = verify_data
            logits = model.predict(x, batch_size=256, verbose=0)
            predicted = logits.argmax(-1)
            results["keras_test_accuracy"] = float(np.mean(predicted == y))
            results["test_samples"] = int(len(x))
            results["per_class_accuracy"] = _per_class_accuracy(
                predicted, np.asarray(y), class_names, logits.shape[-1]
            )
        lce_available = importlib.util.find_spec("larq_compute_engine") is not None
        if lce and lce_available:
            flatbuffer = export.convert_to_lce(model, path=partial / FLATBUFFER)
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
        files = directory_files(partial)
        sizes = {rel: (partial / rel).stat().st_size for rel in files}
        (partial / CARD_MARKDOWN).write_text(
            _markdown_card(written, sizes), encoding="utf-8"
        )
        written["files"] = {
            rel: {
                "bytes": (partial / rel).stat().st_size,
                "sha256": file_sha256(partial / rel),
            }
            for rel in directory_files(partial)
        }
        written = seal_card(written)
        _write_card(partial, written)
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return written


def _write_card(directory: Path, card: dict) -> None:
    """Writes `directory/model_card.json` in one step (a partial file, then renamed)."""
    partial = directory / f".{CARD}.partial-{os.getpid()}"
    try:
        partial.write_text(json.dumps(card, indent=2) + "\n", encoding="utf-8")
        os.replace(partial, directory / CARD)
    finally:
        partial.unlink(missing_ok=True)


def reseal_pretrained(directory: PathType) -> dict:
    """Records the card's own sha256 in a pretrained model directory written without it.

    The migration for directories packaged before cards recorded `card_sha256`:
    every file the card lists is checked against its size and sha256 and the
    directory must hold nothing else (`zoo.model_directory.verify_files`); then
    `model_card.json` is rewritten with `card_sha256` added (or replaced) as its last
    field, every other field and every other file unchanged. Only re-seal a card whose
    content you trust: the new sha256 vouches for the card as it is.

    # Arguments
        directory: a pretrained model directory.

    # Returns
        The sealed model card.

    # Raises
        ValueError: if the card is malformed, or a listed file is missing or modified,
            or an unlisted file is there.
    """
    directory = Path(directory).expanduser()
    card = read_card(directory)
    verify_files(directory, card)
    sealed = seal_card(card)
    if sealed != card or list(sealed) != list(card):
        _write_card(directory, sealed)
    return sealed


def refresh_card(
    directory: PathType,
    *,
    verify_data: tuple,
    class_names: Optional[Sequence[str]] = None,
    data: Optional[Mapping[str, Any]] = None,
) -> dict:
    """Brings the card of a pretrained model directory up to what cards say now.

    For directories written before cards held `usage`, `data` and the per-class
    accuracy: the directory is verified, its SavedModel loaded and measured again on
    `verify_data` (whose Keras accuracy must be the card's), and `model_card.json` and
    `README.md` are written again with `usage`, `data` and
    `results.per_class_accuracy` added. The SavedModel and the flatbuffer are left
    byte for byte as they are (their LCE results stand: same file, same images).

    # Arguments
        directory: a pretrained model directory.
        verify_data: `(x_test, y_test)`, the images its card's accuracy was measured on.
        class_names: the name of each label, in label order.
        data: the card's `data` (where the images come from, see
            `zoo.datasets.provenance`).

    # Returns
        The new model card.

    # Raises
        ValueError: if the directory fails verification, `verify_data` does not fit
            the model, or the Keras accuracy differs from the card's.
    """
    directory = Path(directory).expanduser()
    card = verify_pretrained(directory)
    model = load_saved_model(directory / SAVED_MODEL)
    x, y = _check_verify_data(verify_data, model)
    _check_class_names(class_names, model)
    logits = model.predict(x, batch_size=256, verbose=0)
    predicted = logits.argmax(-1)
    accuracy = float(np.mean(predicted == y))
    recorded = card["results"].get("keras_test_accuracy")
    if (
        recorded is None
        or abs(accuracy - recorded) > 1e-4
        or len(x) != card["results"].get("test_samples")
    ):
        raise ValueError(
            f"{directory}: Keras test accuracy {accuracy:.4f} on {len(x):,} images now, "
            f"{recorded} on {card['results'].get('test_samples')} on its card; pass "
            "the images it was measured on (another copy of the dataset?)"
        )
    fresh = {k: v for k, v in card.items() if k not in ("files", CARD_SHA256)}
    if data is not None:
        fresh["data"] = _jsonable(dict(data))
    fresh["usage"] = _usage(model, class_names, (x, y))
    fresh["results"] = {
        **card["results"],
        "per_class_accuracy": _per_class_accuracy(
            predicted, y, class_names, logits.shape[-1]
        ),
    }
    return _write_cards(directory, fresh, card["files"])


def _write_cards(directory: Path, card: dict, files: Mapping[str, Any]) -> dict:
    """Writes `README.md` and `model_card.json` of an existing directory again: `card`
    (without `files` and `card_sha256`) with the `files` table of the other files
    (their entries; the markdown's is made here), sealed. Returns the sealed card."""
    files = {rel: files[rel] for rel in sorted(files) if rel != CARD_MARKDOWN}
    sizes = {rel: entry["bytes"] for rel, entry in files.items()}  # as package's
    markdown = _markdown_card(card, sizes).encode("utf-8")
    partial = directory / f".{CARD_MARKDOWN}.partial-{os.getpid()}"
    try:
        partial.write_bytes(markdown)
        os.replace(partial, directory / CARD_MARKDOWN)
    finally:
        partial.unlink(missing_ok=True)
    files[CARD_MARKDOWN] = {
        "bytes": len(markdown),
        "sha256": file_sha256(directory / CARD_MARKDOWN),
    }
    sealed = seal_card({**card, "files": dict(sorted(files.items()))})
    _write_card(directory, sealed)
    return sealed


def migrate_task_batch_norm(directory: PathType) -> dict:
    """Moves the per-task BatchNorm states of an older pretrained model directory from
    `task_batch_norm.npz` into the TensorFlow checkpoint `task_batch_norm`.

    For directories written before `package_pretrained` wrote the checkpoint (both
    load; this brings an older one to what is written now): the directory is verified,
    every array of the `.npz` is written to the checkpoint under the same key, then
    `README.md` and the card list the checkpoint's files (the card's
    `task_batch_norm["checkpoint"]` replaces its `"file"`) and the `.npz` is removed.
    The SavedModel and the flatbuffer are left byte for byte as they are; a directory
    that ships no `.npz` is left as it is, and one whose migration fails as it was.

    # Arguments
        directory: a pretrained model directory.

    # Returns
        The model card (the new one after a migration).

    # Raises
        ValueError: if the directory fails verification.
    """
    directory = Path(directory).expanduser()
    card = verify_pretrained(directory)
    shipped = card.get("task_batch_norm") or {}
    if shipped.get("file") != TASK_BATCH_NORM_NPZ:
        return card
    with np.load(directory / TASK_BATCH_NORM_NPZ) as npz:
        arrays = {key: npz[key] for key in npz.files}
    fresh = {k: v for k, v in card.items() if k not in ("files", CARD_SHA256)}
    fresh["task_batch_norm"] = {
        **{k: v for k, v in shipped.items() if k not in ("file", "tasks")},
        "checkpoint": TASK_BATCH_NORM,
        "tasks": shipped["tasks"],
    }
    files = {k: v for k, v in card["files"].items() if k != TASK_BATCH_NORM_NPZ}
    markdown = (directory / CARD_MARKDOWN).read_bytes()  # put back on failure
    try:
        _save_checkpoint(directory / TASK_BATCH_NORM, arrays)
        for rel in TASK_BATCH_NORM_FILES:
            files[rel] = {
                "bytes": (directory / rel).stat().st_size,
                "sha256": file_sha256(directory / rel),
            }
        sealed = _write_cards(directory, fresh, files)
    except BaseException:
        for rel in TASK_BATCH_NORM_FILES:
            (directory / rel).unlink(missing_ok=True)
        (directory / CARD_MARKDOWN).write_bytes(markdown)
        raise
    (directory / TASK_BATCH_NORM_NPZ).unlink()
    return sealed


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
        ValueError: as `zoo.pretrained.pretrained_directory`.
    """
    directory = pretrained.pretrained_directory(name, cache_dir=cache_dir)
    card = json.loads((directory / CARD).read_text(encoding="utf-8"))  # verified
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
    return path, file_sha256(path)
