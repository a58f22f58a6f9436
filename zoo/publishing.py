"""Publishing pretrained models: package a trained model with its cards, archive it.

`package_pretrained` writes a pretrained model directory (see `zoo.model_directory`):
the SavedModel, the Larq Compute Engine flatbuffer with its measured accuracy, and the
model card in JSON and markdown, every file listed with its sha256.
`archive_pretrained` turns a registered, verified model into a reproducible `.tar.gz`
to host; `zoo.register_pretrained` then makes its URL loadable by name.
`reseal_pretrained` adds its own sha256 to the card of a directory written before cards
recorded one, after checking every file it lists.

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
from typing import Any, Mapping, Optional, Tuple

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
    PathType,
    directory_files,
    file_sha256,
    read_card,
    seal_card,
    verify_files,
)
from zoo.saved_model import quiet_tensorflow

__all__ = [
    "LCE_SAMPLE_SEED",
    "REQUIRED_CARD_KEYS",
    "archive_pretrained",
    "package_pretrained",
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
_WRITTEN_CARD_KEYS = ("name", "results", "software", "created", "files", CARD_SHA256)
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
        *_sequence_lines(card.get("sequence")),
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
    and every other file's size and sha256, then the card's own sha256
    (`zoo.model_directory.card_sha256`). Nothing is left behind on failure.

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
        overwrite: replace an existing `directory/name/`.

    # Returns
        The model card written to `model_card.json`.

    # Raises
        ValueError: for an invalid name or card, a model that does not match the card's
            factory and kwargs, invalid `verify_data`, or an existing directory without
            `overwrite`.
    """
    pretrained.check_pretrained_name(name)
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
