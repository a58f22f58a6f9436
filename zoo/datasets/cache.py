"""The cache of extracted archives and decoded images.

Its root is `cache_dir` when given, else `$METAPLASTIC_CACHE_DIR`, else
`~/.cache/metaplastic_zoo`. Decoded images are stored as one folder per dataset:

    <folder>/x_train.npy  y_train.npy  x_test.npy  y_test.npy   uint8 images, int64 labels
    <folder>/meta.json    {"format": 1, "fingerprint": ..., "class_names": [...]}

`meta.json` is written last, so a folder without it is incomplete and ignored; a
fingerprint that differs from the source's (its files' names, sizes and mtimes) marks a
stale entry, which is decoded again and overwritten.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import numpy as np

__all__ = [
    "CACHE_DIR_ENV",
    "DEFAULT_CACHE_DIR",
    "cache_root",
    "read_decoded",
    "write_decoded",
]

CACHE_DIR_ENV = "METAPLASTIC_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/metaplastic_zoo"

# Version of the on-disk layout above; a cache of another version is decoded again.
_FORMAT = 1
_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cache's root: `cache_dir`, else `$METAPLASTIC_CACHE_DIR`, else the default."""
    return Path(
        cache_dir or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    ).expanduser()


def read_decoded(folder: Path, *, fingerprint: str) -> tuple | None:
    """Cached decoded arrays and class names.

    # Arguments
        folder: the cache folder of one dataset.
        fingerprint: the fingerprint of the source the cache must have been made from.

    # Returns
        `(x_train, y_train, x_test, y_test, class_names)`, or `None` if the cache is
        absent, incomplete, stale or unreadable.
    """
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if meta.get("format") != _FORMAT or meta.get("fingerprint") != fingerprint:
            return None
        arrays = tuple(np.load(folder / f"{key}.npy") for key in _ARRAYS)
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return (*arrays, tuple(meta["class_names"]))


def write_decoded(folder: Path, arrays: tuple, *, fingerprint: str) -> None:
    """Caches decoded arrays, or warns if the folder is not writable.

    # Arguments
        folder: the cache folder of one dataset.
        arrays: `(x_train, y_train, x_test, y_test, class_names)`.
        fingerprint: the fingerprint of their source.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)
        for key, array in zip(_ARRAYS, arrays):
            partial = folder / f".{key}.{os.getpid()}.npy"
            np.save(partial, array)
            os.replace(partial, folder / f"{key}.npy")
        meta = {
            "format": _FORMAT,
            "fingerprint": fingerprint,
            "class_names": list(arrays[4]),
        }
        partial = folder / f".meta.{os.getpid()}.json"
        partial.write_text(json.dumps(meta))
        os.replace(partial, folder / "meta.json")
    except OSError as error:
        warnings.warn(
            f"could not cache decoded images in {folder}: {error}", stacklevel=3
        )
