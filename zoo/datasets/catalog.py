"""The datasets known by name, where `load_dataset` looks for them, and in what order."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from zoo.datasets.container import DataError, ImageDataset
from zoo.datasets.folders import (
    ARCHIVE_SUFFIXES,
    has_splits,
    load_archive,
    load_image_path,
    load_image_tree,
)
from zoo.datasets.idx import IDX_LOOKED_FOR, load_idx_folder
from zoo.datasets.tfds import load_tfds

__all__ = ["DATASETS", "DATA_DIR_ENV", "canonical_name", "load_dataset"]

DATA_DIR_ENV = "METAPLASTIC_DATA_DIR"

_HINT = f"set {DATA_DIR_ENV} or pass data_dir"


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

# The names `load_dataset` knows (besides the paths of image-folder datasets).
DATASETS = tuple(_SPECS)


def canonical_name(dataset: str | os.PathLike) -> str:
    """The short name of a dataset, for run names and presets.

    `fashion-mnist` -> `fashion_mnist`, `cifar-10` -> `cifar10`; a path -> its last
    component without suffixes (`data/cifar10-jpeg.tar.gz` -> `cifar10_jpeg`).

    # Arguments
        dataset: a dataset name or the path of an image-folder dataset.

    # Returns
        A lower-case name made of letters, digits and `_`.
    """
    name = str(dataset).rstrip("/").rpartition("/")[2].split(".")[0].lower()
    return _ALIASES.get(name, name).replace("-", "_")


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
            return load_image_path(Path(name).expanduser(), cache_dir=cache_dir)
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
    try:
        return load_tfds(spec.tfds_name, name=spec.name)
    except DataError as error:
        raise DataError(f"{'; '.join(looked)}; {error}; {_HINT}") from None


def _looks_like_path(name: str) -> bool:
    return (
        os.sep in name
        or "/" in name
        or name.lower().endswith(ARCHIVE_SUFFIXES)
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
        return (
            f"{spec.name}: no IDX files found in {places} (looked for {IDX_LOOKED_FOR})"
        )
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
                dataset = load_idx_folder(
                    folder, name=spec.name, class_names=spec.class_names
                )
                if dataset is not None:
                    return dataset
        return None
    folders = _own_folders(spec, directory)
    for folder in folders[: len(spec.folders)]:
        if has_splits(folder):
            return load_image_tree(folder, name=spec.name, cache_dir=cache_dir)
    for archive in spec.archives:
        if (directory / archive).is_file():
            return load_archive(
                directory / archive, name=spec.name, cache_dir=cache_dir
            )
    if directory in folders and has_splits(directory):
        return load_image_tree(directory, name=spec.name, cache_dir=cache_dir)
    return None
