"""The files of a pretrained model directory, and how they are checked.

`zoo.publishing` writes such a directory, `zoo.pretrained` verifies it before loading:

    saved_model/      Keras SavedModel with the float32 latent weights
    model.tflite      Larq Compute Engine flatbuffer (optional)
    task_batch_norm.index, task_batch_norm.data-00000-of-00001
                      the BatchNorm state of every task, for a model of tasks learned
                      one after another with per-task BatchNorm (optional): a
                      TensorFlow checkpoint, keys `task/layer/weight`, read with
                      `tf.train.load_checkpoint("task_batch_norm")` (directories
                      written before it held `task_batch_norm.npz`, which still loads)
    model_card.json   the model card; its `files` table lists every other file with its
                      size in bytes and its sha256, and `card_sha256` is the sha256 of
                      the card itself (see `card_sha256`)
    README.md         the same card, in markdown

The directory holds nothing else: any file the card does not list, at the top level or
below, is refused, as is a card whose content no longer matches its `card_sha256`.

```python
from zoo.model_directory import verify_pretrained

card = verify_pretrained("saved_models/mlp_meta_fashion_mnist_stream")  # loads nothing
```
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Mapping, Union

__all__ = [
    "CARD",
    "CARD_MARKDOWN",
    "CARD_SHA256",
    "FLATBUFFER",
    "REINSTALL_HINT",
    "SAVED_MODEL",
    "TASK_BATCH_NORM",
    "TASK_BATCH_NORM_FILES",
    "TASK_BATCH_NORM_NPZ",
    "card_sha256",
    "directory_files",
    "file_sha256",
    "read_card",
    "seal_card",
    "verify_files",
    "verify_pretrained",
]

PathType = Union[str, os.PathLike]

# What a pretrained model directory holds.
SAVED_MODEL = "saved_model"
FLATBUFFER = "model.tflite"
CARD = "model_card.json"
CARD_MARKDOWN = "README.md"
# The prefix of the TensorFlow checkpoint of every task's BatchNorm state.
TASK_BATCH_NORM = "task_batch_norm"
# Its files (a one-shard TensorFlow checkpoint).
TASK_BATCH_NORM_FILES = (
    f"{TASK_BATCH_NORM}.index",
    f"{TASK_BATCH_NORM}.data-00000-of-00001",
)
# What directories written before the checkpoint held instead (read, never written).
TASK_BATCH_NORM_NPZ = "task_batch_norm.npz"
# The card's field holding the sha256 of the card itself.
CARD_SHA256 = "card_sha256"
# How every error about a damaged pretrained model ends.
REINSTALL_HINT = "re-install / re-download the pretrained model"


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


def file_sha256(path: PathType) -> str:
    """Returns the hex sha256 of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def directory_files(directory: PathType) -> list:
    """Everything under `directory` but its folders, as sorted POSIX relative paths.

    Symbolic links are listed, not followed, whatever they point to.
    """
    directory = Path(directory)
    found = []
    for root, folders, files in os.walk(directory):
        root = Path(root)
        links = [f for f in folders if (root / f).is_symlink()]
        found += [(root / name).relative_to(directory).as_posix() for name in files]
        found += [(root / name).relative_to(directory).as_posix() for name in links]
    return sorted(found)


def card_sha256(card: Mapping[str, Any]) -> str:
    """The sha256 a model card records of itself, under `CARD_SHA256`.

    It is the sha256 of the card's canonical JSON without that field: UTF-8, keys
    sorted, no whitespace (`json.dumps(..., sort_keys=True, separators=(",", ":"))`),
    so re-indenting the file keeps it and any change of a value does not.

    # Arguments
        card: a model card (with or without `CARD_SHA256`).

    # Returns
        The hex sha256.
    """
    content = {key: value for key, value in card.items() if key != CARD_SHA256}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def seal_card(card: Mapping[str, Any]) -> dict:
    """Returns a copy of `card` with its `CARD_SHA256` (last), see `card_sha256`."""
    content = {key: value for key, value in card.items() if key != CARD_SHA256}
    return {**content, CARD_SHA256: card_sha256(content)}


def _listed(card: Mapping[str, Any]) -> dict:
    """The card's `files` table as `{relative path: (bytes, sha256)}`."""
    return {
        rel: (int(f["bytes"]), str(f["sha256"])) for rel, f in card["files"].items()
    }


def read_card(directory: PathType) -> dict:
    """Reads a pretrained model directory's card, checking its form but not its sha256.

    # Arguments
        directory: a pretrained model directory (with `model_card.json`).

    # Returns
        The model card.

    # Raises
        ValueError: if the card is missing, not JSON, or has no valid `files` table
            listing a SavedModel.
    """
    card_path = Path(directory) / CARD
    if not card_path.is_file():
        raise ValueError(
            f"{card_path}: missing, the model is incomplete; {REINSTALL_HINT}"
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        _listed(card)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{card_path}: not a model card with a `files` table "
            f"({_first_line(error)}); {REINSTALL_HINT}"
        ) from None
    if f"{SAVED_MODEL}/saved_model.pb" not in card["files"]:
        raise ValueError(f"{card_path}: lists no SavedModel; {REINSTALL_HINT}")
    return card


def verify_files(directory: PathType, card: Mapping[str, Any]) -> None:
    """Checks that a directory holds exactly its card and the files the card lists.

    Every listed file must be inside `directory` with its size and sha256; nothing else
    may be there, at the top level or below (folders aside). The card's own sha256 is
    not checked here (see `verify_pretrained`).

    # Arguments
        directory: a pretrained model directory.
        card: its model card (from `read_card`).

    # Raises
        ValueError: naming the first missing, modified or unlisted file.
    """
    directory = Path(directory)
    card_path = directory / CARD
    root = directory.resolve()
    listed = _listed(card)
    for rel, (size, digest) in sorted(listed.items()):
        path = directory / rel
        if root not in path.resolve().parents:
            raise ValueError(f"{card_path}: lists {rel!r}, outside {directory}")
        if not path.is_file():
            raise ValueError(
                f"{path}: missing, the model is incomplete; {REINSTALL_HINT}"
            )
        if path.stat().st_size != size or file_sha256(path) != digest:
            raise ValueError(
                f"{path}: sha256 mismatch, the file is corrupted or was modified; "
                f"{REINSTALL_HINT}"
            )
    for rel in directory_files(directory):
        if rel != CARD and rel not in listed:
            raise ValueError(
                f"{directory / rel}: not listed in {CARD}, the model was modified (the "
                f"directory may hold only {CARD} and the files it lists); "
                f"{REINSTALL_HINT}"
            )


def verify_pretrained(directory: PathType) -> dict:
    """Checks a pretrained model directory against its model card, loading nothing.

    First the card itself: its content must match its `CARD_SHA256` (see
    `card_sha256`). Then every file the card lists must be there with its size and
    sha256, and the directory must hold nothing else (see `verify_files`).

    # Arguments
        directory: a pretrained model directory (with `model_card.json`).

    # Returns
        The model card.

    # Raises
        ValueError: naming an edited card, or the first missing, modified or unlisted
            file.
    """
    card = read_card(directory)
    card_path = Path(directory) / CARD
    recorded = card.get(CARD_SHA256)
    if recorded is None:
        raise ValueError(
            f"{card_path}: no {CARD_SHA256}, so edits to the card cannot be detected; "
            f"{REINSTALL_HINT}, or re-seal a card you trust with "
            "zoo.publishing.reseal_pretrained"
        )
    if recorded != card_sha256(card):
        raise ValueError(
            f"{card_path}: {CARD_SHA256} mismatch, the card was modified; "
            f"{REINSTALL_HINT}"
        )
    verify_files(directory, card)
    return card
