"""IDX files, the format of MNIST and Fashion-MNIST, gzipped or not.

A folder of MNIST-like data holds `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
`t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte`, each possibly gzipped (`.gz`), and
some copies spell `train-images.idx3-ubyte`.
"""

from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zoo.datasets.container import DataError, ImageDataset, to_float

__all__ = ["IDX_FILES", "IDX_LOOKED_FOR", "load_idx_folder", "read_idx"]

# The IDX file of each array of an MNIST-like dataset.
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_LOOKED_FOR = ", ".join(f"{base}[.gz]" for base in IDX_FILES.values())
# The dtype of each IDX type code (the third byte of the magic number).
_DTYPES = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file (the MNIST format), gzipped or not.

    # Arguments
        path: the file.

    # Returns
        The array, with the file's dims and dtype in native byte order.

    # Raises
        DataError: if the file cannot be read, is not an IDX file, or is truncated.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            gzipped = file.read(2) == b"\x1f\x8b"
        with (gzip.open if gzipped else open)(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"cannot read IDX file {path}: {error}") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _DTYPES:
        raise DataError(
            f"{path} is not an IDX file (magic number {data[:4].hex() or 'missing'}, "
            "expected 0000 + dtype code + ndim)"
        )
    ndim, offset = data[3], 4 + 4 * data[3]
    if ndim == 0 or len(data) < offset:
        raise DataError(
            f"{path}: truncated or invalid IDX header ({ndim} dims, {len(data)} bytes)"
        )
    dims = tuple(int(d) for d in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_DTYPES[data[2]])
    expected = offset + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX file {problem}: header says {dims} {dtype.name}, "
            f"which needs {expected} bytes, but the file has {len(data)}"
        )
    array = np.frombuffer(data, dtype, count=math.prod(dims), offset=offset)
    return array.reshape(dims).astype(dtype.newbyteorder("="))


def _find(folder: Path, base: str) -> Path | None:
    dotted = base.replace("-idx", ".idx")
    for candidate in (base + ".gz", base, dotted + ".gz", dotted):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def load_idx_folder(
    folder: Path, *, name: str, class_names: Sequence[str]
) -> ImageDataset | None:
    """An MNIST-like dataset from a folder of IDX files, or `None` if it has none.

    # Arguments
        folder: the folder holding the four IDX files.
        name: the dataset's name.
        class_names: one name per label.

    # Returns
        An `ImageDataset` of (N, H, W, 1) images, or `None` if no IDX file is there.

    # Raises
        DataError: if some of the files are missing, unreadable or of the wrong shape.
    """
    paths = {key: _find(folder, base) for key, base in IDX_FILES.items()}
    if not any(paths.values()):
        return None
    missing = [f"{IDX_FILES[key]}[.gz]" for key, path in paths.items() if path is None]
    if missing:
        raise DataError(
            f"{name}: incomplete IDX files in {folder}: missing {', '.join(missing)}"
        )
    arrays = {}
    for key, path in paths.items():
        array = read_idx(path)
        if key.startswith("x") and (array.ndim != 3 or array.dtype != np.uint8):
            raise DataError(
                f"{path}: expected uint8 images of shape (N, H, W), "
                f"got {array.dtype} {array.shape}"
            )
        if key.startswith("y") and (array.ndim != 1 or array.dtype.kind not in "iu"):
            raise DataError(
                f"{path}: expected integer labels of shape (N,), got {array.dtype} {array.shape}"
            )
        arrays[key] = to_float(array)[..., None] if key.startswith("x") else array
    return ImageDataset(name, **arrays, class_names=class_names, source=str(folder))
