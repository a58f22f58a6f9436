"""Image datasets, read offline first, and the `tf.data` pipelines that feed them to Keras.

`load_dataset` returns an `ImageDataset`: float32 images in [0, 1] of shape (N, H, W, C)
and int64 labels. It looks for the data, in order, in an explicit `data_dir`, in the
directory named by `$METAPLASTIC_DATA_DIR`, and last in tensorflow-datasets (which
downloads when online). A data directory holds the conventional sub-folders `mnist/`,
`fashion-mnist/` (IDX files, gzipped or not) and `cifar10/` (an image-folder tree
`{train,test}/<class>/*`) or the archive `cifar10-jpeg.tar.gz`. Any other image-folder
tree, or a `.tar.gz` of one, loads by passing its path as the name. Archives are
extracted once into a cache directory, and decoded images are cached there as `.npy`.

`make_pipeline` batches a dataset with seeded, per-epoch reshuffling, the paper's CIFAR
augmentations, and an optional per-batch `transform`, such as the fixed pixel permutation
of a permuted-MNIST task (no copy of the data per task).

!!! example
    ```python
    from training.data import (
        load_dataset, make_pipeline, permutation_transform, random_permutation
    )

    mnist = load_dataset("mnist")
    perm = random_permutation(28 * 28, seed=1)
    train = make_pipeline(
        mnist.x_train, mnist.y_train, batch_size=100, shuffle=True, seed=0,
        transform=permutation_transform(perm),
    )
    ```
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import math
import os
import shutil
import tarfile
import tempfile
import warnings
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import tensorflow as tf
from PIL import Image

__all__ = [
    "AUGMENTATIONS",
    "CACHE_DIR_ENV",
    "DATA_DIR_ENV",
    "DataError",
    "ImageDataset",
    "load_dataset",
    "make_pipeline",
    "permutation_transform",
    "random_permutation",
    "read_idx",
]

DATA_DIR_ENV = "METAPLASTIC_DATA_DIR"
CACHE_DIR_ENV = "METAPLASTIC_CACHE_DIR"
DEFAULT_CACHE_DIR = "~/.cache/metaplastic_zoo"

# The CIFAR augmentations of Laborieux et al. 2021: a random horizontal flip, then
# either a random crop of the zero-padded image or a small random rotation.
AUGMENTATIONS = ("flip_crop", "flip_rotate")
CROP_PADDING = 4
MAX_ROTATION_DEGREES = 15.0

_HINT = f"set {DATA_DIR_ENV} or pass data_dir"
_IMAGE_SUFFIXES = {
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".gif",
    ".ppm",
    ".pgm",
    ".tif",
    ".tiff",
    ".webp",
}
_ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
_GRAY_MODES = {"1", "L", "LA"}
_CACHE_FORMAT = 1


class DataError(ValueError):
    """A dataset is missing, malformed or inconsistent; the message is one line saying what
    was looked for, where, and what to do."""


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
    """An image classification dataset held in memory, split into train and test.

    # Arguments
        name: the dataset's name (`mnist`, `fashion_mnist`, `cifar10`, or a folder's name).
        x_train: float32 images in [0, 1], shape (N, H, W, C).
        y_train: int64 labels in [0, num_classes), shape (N,).
        x_test: float32 images in [0, 1], shape (M, H, W, C).
        y_test: int64 labels, shape (M,).
        class_names: one name per class, in label order.
        source: where the data was read from.

    # Raises
        DataError: if shapes, dtypes, image/label counts or label values are inconsistent.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str = ""

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "class_names", tuple(str(name) for name in self.class_names))
        for split in ("train", "test"):
            x, y = (
                np.asarray(getattr(self, f"x_{split}")),
                np.asarray(getattr(self, f"y_{split}")),
            )
            where = f"{self.name}: x_{split}"
            if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
                raise DataError(
                    f"{where} must be float images in [0, 1] of shape (N, H, W, C), "
                    f"got {x.dtype} {x.shape} (from {self.source})"
                )
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise DataError(
                    f"{self.name}: y_{split} must be integer labels of shape (N,), "
                    f"got {y.dtype} {y.shape} (from {self.source})"
                )
            if len(x) != len(y):
                raise DataError(
                    f"{self.name}: {len(x)} {split} images but {len(y)} {split} labels "
                    f"(from {self.source})"
                )
            if y.size and (y.min() < 0 or y.max() >= len(self.class_names)):
                raise DataError(
                    f"{self.name}: {split} labels span [{y.min()}, {y.max()}] but there are "
                    f"{len(self.class_names)} classes (from {self.source})"
                )
            set_(self, f"x_{split}", x.astype(np.float32, copy=False))
            set_(self, f"y_{split}", y.astype(np.int64, copy=False))
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{self.name}: train images are {self.x_train.shape[1:]} but test images are "
                f"{self.x_test.shape[1:]} (from {self.source})"
            )

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one image, (H, W, C)."""
        return tuple(self.x_train.shape[1:])

    def subset(
        self,
        *,
        train_indices: Sequence[int] | np.ndarray | None = None,
        test_indices: Sequence[int] | np.ndarray | None = None,
    ) -> ImageDataset:
        """Returns a dataset with the selected train and test examples (all when `None`).

        # Arguments
            train_indices: integer indices or a boolean mask into the train split.
            test_indices: integer indices or a boolean mask into the test split.

        # Returns
            A new `ImageDataset` with the same name, class names and source.
        """
        train = slice(None) if train_indices is None else np.asarray(train_indices)
        test = slice(None) if test_indices is None else np.asarray(test_indices)
        return dataclasses.replace(
            self,
            x_train=self.x_train[train],
            y_train=self.y_train[train],
            x_test=self.x_test[test],
            y_test=self.y_test[test],
        )

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, train={len(self.x_train)}, "
            f"test={len(self.x_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, source={self.source!r})"
        )


# Datasets by name ---------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class _Spec:
    name: str
    folders: tuple[str, ...]  # conventional sub-folders of a data directory
    archives: tuple[str, ...]  # conventional archives in a data directory
    class_names: tuple[str, ...] | None  # None: the image-folder tree's class folders
    tfds_name: str


_SPECS = {
    "mnist": _Spec("mnist", ("mnist",), (), tuple(str(i) for i in range(10)), "mnist"),
    "fashion_mnist": _Spec(
        "fashion_mnist",
        ("fashion-mnist", "fashion_mnist"),
        (),
        (
            "T-shirt/top",
            "Trouser",
            "Pullover",
            "Dress",
            "Coat",
            "Sandal",
            "Shirt",
            "Sneaker",
            "Bag",
            "Ankle boot",
        ),
        "fashion_mnist",
    ),
    "cifar10": _Spec(
        "cifar10",
        ("cifar10",),
        ("cifar10-jpeg.tar.gz", "cifar10.tar.gz", "cifar10.tgz"),
        None,
        "cifar10",
    ),
}
_ALIASES = {"fashion-mnist": "fashion_mnist", "cifar-10": "cifar10"}

# IDX files of MNIST-like datasets, by array; each may be gzipped, and some copies spell
# `train-images.idx3-ubyte`.
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_IDX_LOOKED_FOR = ", ".join(f"{base}[.gz]" for base in _IDX_FILES.values())
_IDX_DTYPES = {
    0x08: "u1",
    0x09: "i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def load_dataset(
    name: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ImageDataset:
    """Loads an image classification dataset into memory, from local files when possible.

    Sources, in order: `data_dir` when given (then the only source: a dataset missing there
    is an error); the directory in `$METAPLASTIC_DATA_DIR`; tensorflow-datasets, only if
    `download`. A data directory holds `mnist/`, `fashion-mnist/` (or `fashion_mnist/`)
    with IDX files, and `cifar10/` (a `{train,test}/<class>/*` tree) or
    `cifar10-jpeg.tar.gz`; `data_dir` may also be the dataset's own folder.

    # Arguments
        name: `mnist`, `fashion_mnist` (or `fashion-mnist`), `cifar10`, or the path of an
            image-folder dataset: a directory with `train/<class>/*` and `test/<class>/*`,
            or a `.tar.gz` of one (possibly inside a single top folder).
        data_dir: a directory holding the dataset.
        cache_dir: where archives are extracted and decoded images cached; default
            `$METAPLASTIC_CACHE_DIR`, else `~/.cache/metaplastic_zoo`.
        download: whether to fall back on tensorflow-datasets, which downloads when online.

    # Returns
        An `ImageDataset` of float32 images in [0, 1] and int64 labels.

    # Raises
        DataError: if the name is unknown, or the data is missing or malformed.
    """
    key = _ALIASES.get(str(name).lower(), str(name).lower())
    if key not in _SPECS:
        if _looks_like_path(str(name)):
            return _load_image_path(Path(name).expanduser(), cache_dir=cache_dir)
        raise DataError(
            f"unknown dataset {name!r}; known names: mnist, fashion_mnist (or fashion-mnist), "
            "cifar10, or the path of an image-folder directory or .tar.gz"
        )
    spec = _SPECS[key]

    if data_dir is not None:
        directory = Path(data_dir).expanduser()
        if not directory.is_dir():
            raise DataError(
                f"{key}: data_dir {directory} is not a directory; pass the data_dir that holds it"
            )
        dataset = _load_local(spec, directory, cache_dir=cache_dir)
        if dataset is None:
            raise DataError(
                _not_found(spec, directory) + "; pass the data_dir that holds it"
            )
        return dataset

    looked = []
    env_dir = os.environ.get(DATA_DIR_ENV)
    if env_dir:
        directory = Path(env_dir).expanduser()
        if directory.is_dir():
            dataset = _load_local(spec, directory, cache_dir=cache_dir)
            if dataset is not None:
                return dataset
            looked.append(_not_found(spec, directory) + f" (${DATA_DIR_ENV})")
        else:
            looked.append(f"{key}: ${DATA_DIR_ENV}={directory} is not a directory")
    else:
        looked.append(f"{key}: ${DATA_DIR_ENV} is not set")

    if not download:
        raise DataError(
            f"{'; '.join(looked)}; tensorflow-datasets not tried (download=False); {_HINT}"
        )
    return _load_tfds(spec, looked=looked)


def _looks_like_path(name: str) -> bool:
    return (
        os.sep in name
        or "/" in name
        or name.lower().endswith(_ARCHIVE_SUFFIXES)
        or Path(name).expanduser().exists()
    )


def _own_folders(spec: _Spec, directory: Path) -> list[Path]:
    """The conventional sub-folders, then `directory` itself unless another dataset's."""
    folders = [directory / folder for folder in spec.folders]
    others = {f for s in _SPECS.values() if s is not spec for f in s.folders}
    if directory.name.lower() not in others:
        folders.append(directory)
    return folders


def _not_found(spec: _Spec, directory: Path) -> str:
    folders = _own_folders(spec, directory)
    places = " or ".join(str(folder) for folder in folders)
    if spec.class_names is not None:
        return f"{spec.name}: no IDX files found in {places} (looked for {_IDX_LOOKED_FOR})"
    archives = ", ".join(spec.archives)
    return (
        f"{spec.name}: no image-folder tree (train/<class>/*, test/<class>/*) found in {places}, "
        f"and no archive ({archives}) in {directory}"
    )


def _load_local(spec: _Spec, directory: Path, *, cache_dir) -> ImageDataset | None:
    """The dataset from a data directory, or `None` if it is not there."""
    if spec.class_names is not None:  # IDX files
        for folder in _own_folders(spec, directory):
            if folder.is_dir():
                dataset = _load_idx_folder(spec, folder)
                if dataset is not None:
                    return dataset
        return None
    folders = _own_folders(spec, directory)
    for folder in folders[: len(spec.folders)]:
        if _has_splits(folder):
            return _load_image_tree(folder, name=spec.name, cache_dir=cache_dir)
    for archive in spec.archives:
        if (directory / archive).is_file():
            return _load_archive(
                directory / archive, name=spec.name, cache_dir=cache_dir
            )
    if directory in folders and _has_splits(directory):
        return _load_image_tree(directory, name=spec.name, cache_dir=cache_dir)
    return None


def _load_tfds(spec: _Spec, *, looked: list[str]) -> ImageDataset:
    """The dataset from tensorflow-datasets, which downloads it when online."""
    try:
        import tensorflow_datasets as tfds

        (train, test), info = tfds.load(
            spec.tfds_name,
            split=["train", "test"],
            batch_size=-1,
            as_supervised=True,
            with_info=True,
            download=True,
        )
        (x_train, y_train), (x_test, y_test) = tfds.as_numpy(train), tfds.as_numpy(test)
        class_names = tuple(info.features["label"].names)
        source = f"tensorflow-datasets:{spec.tfds_name} ({info.data_dir})"
    except Exception as error:  # offline, missing builder, corrupt download...
        reason = " ".join(str(error).split())[:200]
        reason = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
        raise DataError(
            f"{'; '.join(looked)}; tensorflow-datasets could not load {spec.tfds_name} "
            f"({reason}); {_HINT}"
        ) from None
    return _image_dataset(
        spec.name, x_train, y_train, x_test, y_test, class_names, source=source
    )


def _scaled(images: np.ndarray) -> np.ndarray:
    """uint8 images as float32 in [0, 1]."""
    images = images.astype(np.float32)
    images /= 255
    return images


# IDX files ----------------------------------------------------------------------------


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
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES:
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
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = offset + math.prod(dims) * dtype.itemsize
    if len(data) != expected:
        problem = "truncated" if len(data) < expected else "has trailing bytes"
        raise DataError(
            f"{path}: IDX file {problem}: header says {dims} {dtype.name}, "
            f"which needs {expected} bytes, but the file has {len(data)}"
        )
    array = np.frombuffer(data, dtype, count=math.prod(dims), offset=offset)
    return array.reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, base: str) -> Path | None:
    dotted = base.replace("-idx", ".idx")
    for candidate in (base + ".gz", base, dotted + ".gz", dotted):
        if (folder / candidate).is_file():
            return folder / candidate
    return None


def _load_idx_folder(spec: _Spec, folder: Path) -> ImageDataset | None:
    """An MNIST-like dataset from a folder of IDX files, or `None` if it has none."""
    paths = {key: _find_idx(folder, base) for key, base in _IDX_FILES.items()}
    if not any(paths.values()):
        return None
    missing = [f"{_IDX_FILES[key]}[.gz]" for key, path in paths.items() if path is None]
    if missing:
        raise DataError(
            f"{spec.name}: incomplete IDX files in {folder}: missing {', '.join(missing)}"
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
        arrays[key] = _scaled(array)[..., None] if key.startswith("x") else array
    return ImageDataset(
        spec.name, **arrays, class_names=spec.class_names, source=str(folder)
    )


# Image-folder trees and their archives ------------------------------------------------


def _cache_root(cache_dir) -> Path:
    return Path(
        cache_dir or os.environ.get(CACHE_DIR_ENV) or DEFAULT_CACHE_DIR
    ).expanduser()


def _has_splits(folder: Path) -> bool:
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def _entries(folder: Path) -> list[os.DirEntry]:
    """The visible entries of a folder, sorted by name."""
    with os.scandir(folder) as entries:
        visible = [
            e for e in entries if not e.name.startswith(".") and e.name != "__MACOSX"
        ]
    return sorted(visible, key=lambda e: e.name)


def _load_image_path(path: Path, *, cache_dir) -> ImageDataset:
    """An image-folder dataset given by the path of its tree or of a `.tar.gz` of it."""
    if path.is_dir():
        return _load_image_tree(path, name=path.name, cache_dir=cache_dir)
    if path.is_file() and path.name.lower().endswith(_ARCHIVE_SUFFIXES):
        name = path.name
        for suffix in _ARCHIVE_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        return _load_archive(path, name=name, cache_dir=cache_dir)
    raise DataError(
        f"{path}: no such directory or .tar.gz archive; expected an image-folder dataset "
        "(train/<class>/*, test/<class>/*) or a .tar.gz of one"
    )


def _load_archive(archive: Path, *, name: str, cache_dir) -> ImageDataset:
    """An image-folder dataset from an archive, extracted once and decoded once.

    The cache entry is keyed by the archive's name, size and mtime, so a changed archive
    gets a fresh one: `<cache>/<name>-<size>-<mtime_ns>/{tree,decoded}`.
    """
    stat = archive.stat()
    entry = _cache_root(cache_dir) / f"{archive.name}-{stat.st_size}-{stat.st_mtime_ns}"
    decoded = entry / "decoded"
    cached = _read_decoded(decoded, fingerprint=entry.name)
    if cached is not None:
        return _image_dataset(name, *cached, source=str(archive))
    tree = _extract(archive, entry)
    return _load_image_tree(
        _split_root(tree, archive),
        name=name,
        cache_dir=cache_dir,
        source=str(archive),
        decoded=decoded,
        fingerprint=entry.name,
    )


def _extract(archive: Path, entry: Path) -> Path:
    """Extracts `archive` into `entry/tree` unless already there; safe against traversal."""
    tree = entry / "tree"
    if tree.is_dir():
        return tree
    try:
        entry.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix="tree.partial-", dir=entry))
    except OSError as error:
        raise DataError(
            f"cannot create cache directory {entry} to extract {archive} ({error}); "
            f"set {CACHE_DIR_ENV} or pass cache_dir"
        ) from None
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(partial, filter="data")
        partial.rename(tree)
    except (tarfile.TarError, OSError, EOFError, zlib.error) as error:
        shutil.rmtree(partial, ignore_errors=True)
        if not tree.is_dir():  # not extracted meanwhile by another process
            raise DataError(f"cannot extract {archive} into {entry}: {error}") from None
    return tree


def _split_root(tree: Path, archive: Path) -> Path:
    """The folder holding `train/` and `test/`: the tree or its single top folder."""
    if _has_splits(tree):
        return tree
    tops = [Path(e.path) for e in _entries(tree) if e.is_dir()]
    if len(tops) == 1 and _has_splits(tops[0]):
        return tops[0]
    raise DataError(
        f"{archive}: no train/ and test/ folders at the top of the archive or inside a single "
        "top folder; expected train/<class>/* and test/<class>/*"
    )


def _list_split(folder: Path) -> tuple[list[str], list[Path], list[int]]:
    """Class names, image files and labels of one split folder."""
    classes = [e.name for e in _entries(folder) if e.is_dir()]
    if not classes:
        raise DataError(
            f"{folder}: no class folders; expected {folder.name}/<class>/<image>"
        )
    files, labels = [], []
    for label, name in enumerate(classes):
        images = [
            Path(e.path)
            for e in _entries(folder / name)
            if e.is_file() and os.path.splitext(e.name)[1].lower() in _IMAGE_SUFFIXES
        ]
        if not images:
            raise DataError(
                f"{folder / name}: no images ({', '.join(sorted(_IMAGE_SUFFIXES))})"
            )
        files += images
        labels += [label] * len(images)
    return classes, files, labels


def _load_image_tree(
    root: Path,
    *,
    name: str,
    cache_dir,
    source: str | None = None,
    decoded: Path | None = None,
    fingerprint: str | None = None,
) -> ImageDataset:
    """A dataset from `root/{train,test}/<class>/*`, decoded once and cached as `.npy`.

    Without a given cache location (a plain folder, not an archive), the decoded arrays are
    cached under `<cache>/folders/`, keyed by the files' names, sizes and mtimes.
    """
    if not _has_splits(root):
        raise DataError(
            f"{root}: no train/ and test/ folders; expected train/<class>/* and test/<class>/*"
        )
    train_classes, train_files, train_labels = _list_split(root / "train")
    test_classes, test_files, test_labels = _list_split(root / "test")
    if train_classes != test_classes:
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"{root}: train/ and test/ have different class folders "
            f"(only in train: {only_train[:5]}, only in test: {only_test[:5]})"
        )
    files = train_files + test_files
    if decoded is None:
        digest = hashlib.sha1(str(root.resolve()).encode())
        key = digest.hexdigest()[:12]
        for file in files:
            stat = file.stat()
            digest.update(
                f"{file.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}\n".encode()
            )
        decoded = _cache_root(cache_dir) / "folders" / f"{root.name}-{key}"
        fingerprint = digest.hexdigest()
    cached = _read_decoded(decoded, fingerprint=fingerprint)
    if cached is not None and cached[4] == tuple(train_classes):
        return _image_dataset(name, *cached, source=source or str(root))

    images = _decode_images(files, root=root)
    arrays = (
        images[: len(train_files)],
        np.asarray(train_labels, np.int64),
        images[len(train_files) :],
        np.asarray(test_labels, np.int64),
        tuple(train_classes),
    )
    _write_decoded(decoded, arrays, fingerprint=fingerprint)
    return _image_dataset(name, *arrays, source=source or str(root))


def _decode_images(files: list[Path], *, root: Path) -> np.ndarray:
    """Decodes same-size images into uint8 (N, H, W, C): C=1 if all are grayscale, else 3."""
    buffer, size, all_gray = None, None, True
    for i, path in enumerate(files):
        try:
            with Image.open(path) as image:
                image_size, gray = image.size, image.mode in _GRAY_MODES
                if size is None or image_size == size:
                    pixels = np.asarray(image.convert("L" if gray else "RGB"))
        except (OSError, ValueError, Image.DecompressionBombError) as error:
            raise DataError(f"cannot decode image {path}: {error}") from None
        if size is None:
            size = image_size
            buffer = np.empty((len(files), size[1], size[0], 3), np.uint8)
        elif image_size != size:
            raise DataError(
                f"{root}: image {path} is {image_size[0]}x{image_size[1]} but {files[0]} is "
                f"{size[0]}x{size[1]}; all images must have the same size"
            )
        buffer[i] = pixels[..., None] if gray else pixels
        all_gray &= gray
    return np.ascontiguousarray(buffer[..., :1]) if all_gray else buffer


def _image_dataset(
    name, x_train, y_train, x_test, y_test, class_names, *, source
) -> ImageDataset:
    return ImageDataset(
        name,
        x_train=_scaled(x_train),
        y_train=y_train,
        x_test=_scaled(x_test),
        y_test=y_test,
        class_names=class_names,
        source=source,
    )


_DECODED = ("x_train", "y_train", "x_test", "y_test")


def _read_decoded(folder: Path, *, fingerprint: str) -> tuple | None:
    """Cached decoded arrays and class names, or `None` if absent, stale or unreadable."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        if (
            meta.get("format") != _CACHE_FORMAT
            or meta.get("fingerprint") != fingerprint
        ):
            return None
        arrays = tuple(np.load(folder / f"{key}.npy") for key in _DECODED)
    except (OSError, ValueError, KeyError, EOFError):
        return None
    return (*arrays, tuple(meta["class_names"]))


def _write_decoded(folder: Path, arrays: tuple, *, fingerprint: str) -> None:
    """Caches decoded arrays; `meta.json` is written last and marks the cache complete."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "meta.json").unlink(missing_ok=True)
        for key, array in zip(_DECODED, arrays):
            partial = folder / f".{key}.{os.getpid()}.npy"
            np.save(partial, array)
            os.replace(partial, folder / f"{key}.npy")
        meta = {
            "format": _CACHE_FORMAT,
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


# tf.data pipelines --------------------------------------------------------------------


def make_pipeline(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    augment: str | None = None,
    transform: Callable[[tf.Tensor], tf.Tensor] | None = None,
    drop_remainder: bool = False,
    prefetch: bool = True,
) -> tf.data.Dataset:
    """A `tf.data` pipeline of (float32 images, int64 labels) batches.

    The data is held once; batches are gathered from it by (shuffled) indices, then
    augmented, then transformed. With a seed, every run yields the same sequence of epochs.

    # Arguments
        x: float images in [0, 1], shape (N, H, W, C).
        y: integer labels, shape (N,).
        batch_size: examples per batch.
        shuffle: whether to shuffle the whole set, differently each epoch.
        seed: seed of the shuffle and the augmentation; `None` for a random one.
        augment: `None`, `"flip_crop"` (random horizontal flip, then a random crop of the
            image zero-padded by 4 pixels) or `"flip_rotate"` (random horizontal flip, then
            a random rotation of up to 15 degrees either way).
        transform: a function applied to each batch of images, after augmentation, such
            as `permutation_transform(perm)`.
        drop_remainder: whether to drop the last batch if it is smaller.
        prefetch: whether to prefetch batches.

    # Returns
        A `tf.data.Dataset` that can be iterated for any number of epochs.

    # Raises
        ValueError: if an argument is invalid.
    """
    if not _is_positive_int(batch_size):
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    if augment is not None and augment not in AUGMENTATIONS:
        names = " or ".join(map(repr, AUGMENTATIONS))
        raise ValueError(f"unknown augment {augment!r}; use None, {names}")
    if transform is not None and not callable(transform):
        raise ValueError(
            f"transform must be a function of a batch of images, got {transform!r}"
        )
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"x must be float images in [0, 1] of shape (N, H, W, C), got {x.dtype} {x.shape}"
        )
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or len(y) != len(x):
        raise ValueError(
            f"y must be {len(x)} integer labels of shape (N,), got {y.dtype} {y.shape}"
        )

    with tf.device("/cpu:0"):  # the input pipeline runs on the host
        images = tf.constant(x.astype(np.float32, copy=False))
        labels = tf.constant(y.astype(np.int64, copy=False))
    indices = tf.data.Dataset.range(len(x))
    if shuffle:
        indices = indices.shuffle(
            max(len(x), 1), seed=seed, reshuffle_each_iteration=True
        )
    indices = indices.batch(batch_size, drop_remainder=drop_remainder)
    # One random number per batch seeds the stateless augmentation ops; new ones each epoch.
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

    def batch(index, random=None):
        batch_images = tf.gather(images, index)
        if augment is not None:
            batch_images = _augment(batch_images, augment, random)
        if transform is not None:
            batch_images = transform(batch_images)
        return batch_images, tf.gather(labels, index)

    dataset = tf.data.Dataset.zip((indices, randoms)) if augment else indices
    dataset = dataset.map(
        batch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    return dataset.prefetch(tf.data.AUTOTUNE) if prefetch else dataset


def _augment(images: tf.Tensor, kind: str, random: tf.Tensor) -> tf.Tensor:
    """Random flip then crop or rotation of a batch, from stateless ops seeded by `random`."""
    n = tf.shape(images)[0]
    flip = tf.random.stateless_uniform([n], seed=tf.stack([random, 0])) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    seed = tf.stack([random, 1])
    zeros, ones = tf.zeros([n]), tf.ones([n])
    if kind == "flip_crop":
        # Output (x, y) reads input (x + dx, y + dy), zero outside: a crop of the padded image.
        shift = tf.random.stateless_uniform(
            [n, 2],
            seed=seed,
            minval=-CROP_PADDING,
            maxval=CROP_PADDING + 1,
            dtype=tf.int32,
        )
        shift = tf.cast(shift, tf.float32)
        transforms = [ones, zeros, shift[:, 0], zeros, ones, shift[:, 1], zeros, zeros]
        interpolation = "NEAREST"
    else:
        limit = math.radians(MAX_ROTATION_DEGREES)
        angle = tf.random.stateless_uniform([n], seed=seed, minval=-limit, maxval=limit)
        height = tf.cast(tf.shape(images)[1], tf.float32) - 1
        width = tf.cast(tf.shape(images)[2], tf.float32) - 1
        cos, sin = tf.cos(angle), tf.sin(angle)
        # Rotation about the image centre, as in Keras' RandomRotation.
        x_offset = (width - (cos * width - sin * height)) / 2
        y_offset = (height - (sin * width + cos * height)) / 2
        transforms = [cos, -sin, x_offset, sin, cos, y_offset, zeros, zeros]
        interpolation = "BILINEAR"
    output = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=tf.stack(transforms, axis=1),
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode="CONSTANT",
    )
    output.set_shape(images.shape)
    return output


def random_permutation(num_pixels: int, *, seed: int | None) -> np.ndarray:
    """A random permutation of pixel positions, the same for the same seed.

    # Arguments
        num_pixels: the number of pixel positions, H * W.
        seed: the seed of NumPy's default generator.

    # Returns
        An int64 array holding a permutation of `range(num_pixels)`.

    # Raises
        ValueError: if `num_pixels` is not a positive integer.
    """
    if not _is_positive_int(num_pixels):
        raise ValueError(f"num_pixels must be a positive integer, got {num_pixels!r}")
    return np.random.default_rng(seed).permutation(num_pixels).astype(np.int64)


def _is_positive_int(value) -> bool:
    return (
        isinstance(value, (int, np.integer))
        and not isinstance(value, bool)
        and value > 0
    )


def permutation_transform(
    perm: Sequence[int] | np.ndarray,
) -> Callable[[tf.Tensor], tf.Tensor]:
    """A function that permutes the pixels of a batch of images, for `make_pipeline`.

    Output pixel `i` (row-major over H * W, all channels) is input pixel `perm[i]`: for
    NumPy arrays, `x.reshape(n, h * w, c)[:, perm].reshape(x.shape)`.

    # Arguments
        perm: a permutation of `range(H * W)`.

    # Returns
        A function from a float (B, H, W, C) batch to the permuted batch, same shape.

    # Raises
        ValueError: if `perm` is not a permutation, or (when called) does not fit the images.
    """
    perm = np.asarray(perm)
    if (
        perm.ndim != 1
        or perm.size == 0
        or perm.dtype.kind not in "iu"
        or not np.array_equal(np.sort(perm), np.arange(perm.size))
    ):
        raise ValueError(
            f"perm must be a permutation of range(n), got {perm.dtype} {perm.shape}"
        )
    indices = tf.constant(perm, tf.int32)
    num_pixels = perm.size

    def permute(images: tf.Tensor) -> tf.Tensor:
        images = tf.convert_to_tensor(images)
        height, width = images.shape[1], images.shape[2]
        if height is not None and width is not None and height * width != num_pixels:
            raise ValueError(
                f"perm has {num_pixels} positions but images are {height}x{width}"
            )
        shape = tf.shape(images)
        flat = tf.reshape(images, [shape[0], num_pixels, shape[3]])
        permuted = tf.reshape(tf.gather(flat, indices, axis=1), shape)
        permuted.set_shape(images.shape)
        return permuted

    return permute
