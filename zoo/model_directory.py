"""The files of a pretrained model directory, and how they are checked.

`zoo.publishing` writes such a directory, `zoo.pretrained` verifies it before loading:

    saved_model/      Keras SavedModel with the float32 latent weights
    model.tflite      Larq Compute Engine flatbuffer (optional)
    model_card.json   the model card; its `files` table lists every other file with its
                      size in bytes and its sha256
    README.md         the same card, in markdown

```python
from zoo.model_directory import verify_pretrained

card = verify_pretrained("saved_models/mlp_meta_fashion_mnist_stream")  # loads nothing
```
"""

import hashlib
import json
import os
from pathlib import Path
from typing import Union

__all__ = [
    "CARD",
    "CARD_MARKDOWN",
    "FLATBUFFER",
    "REINSTALL_HINT",
    "SAVED_MODEL",
    "directory_files",
    "file_sha256",
    "verify_pretrained",
]

PathType = Union[str, os.PathLike]

# What a pretrained model directory holds.
SAVED_MODEL = "saved_model"
FLATBUFFER = "model.tflite"
CARD = "model_card.json"
CARD_MARKDOWN = "README.md"
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
    """Every file under `directory`, as sorted POSIX paths relative to it."""
    directory = Path(directory)
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
        raise ValueError(
            f"{card_path}: missing, the model is incomplete; {REINSTALL_HINT}"
        )
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        files = card["files"]
        listed = {rel: (int(f["bytes"]), str(f["sha256"])) for rel, f in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(
            f"{card_path}: not a model card with a `files` table "
            f"({_first_line(error)}); {REINSTALL_HINT}"
        ) from None
    if f"{SAVED_MODEL}/saved_model.pb" not in listed:
        raise ValueError(f"{card_path}: lists no SavedModel; {REINSTALL_HINT}")
    root = directory.resolve()
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
    for rel in directory_files(directory / SAVED_MODEL):
        if f"{SAVED_MODEL}/{rel}" not in listed:
            raise ValueError(
                f"{directory / SAVED_MODEL / rel}: not listed in {CARD}, the model was "
                f"modified; {REINSTALL_HINT}"
            )
    return card
