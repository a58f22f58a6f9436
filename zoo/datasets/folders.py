"""Image-folder datasets, as trees or as archives of trees.

A tree holds `train/<class>/<image>` and `test/<class>/<image>`; classes are the folder
names in sorted order, the same in both splits. An archive (`.tar.gz`, `.tgz`, `.tar`)
holds such a tree at its top or inside a single top folder; it is extracted once into
the cache (`zoo.datasets.cache`), under `<cache>/<archive name>-<size>-<mtime_ns>/tree`.
The decoded images are cached beside it (`.../decoded`), or, for a plain tree, under
`<cache>/folders/<tree name>-<hash of its path>`, keyed by the files' names, sizes and
mtimes.

Library choices, measured on the 60,000 JPEGs of `cifar10-jpeg.tar.gz` (32x32, quality
75) on 2 shared CPU cores (Python 3.11, Pillow 13 with libjpeg-turbo, TF 2.15):

- Decoding: Pillow (`Image.open(...).convert("RGB")`) takes 7.2-8.1 s.
  `tf.keras.utils.image_dataset_from_directory` takes 13.6 s and does not reproduce the
  pixels: its `tf.io.decode_image` uses the fast integer IDCT and exposes no
  `dct_method`, so 64.9 % of the pixels of all 60,000 images differ from Pillow's (by up to
  5 grey levels), which would silently change the data of cached runs and published
  numbers; it also resizes images of other sizes instead of refusing them, and reads only
  BMP, GIF, JPEG and PNG. `tf.data` + `tf.io.decode_jpeg(dct_method="INTEGER_ACCURATE")`
  is bit-identical to Pillow and takes 3.0 s, but only for JPEG, and its errors do not
  name the file; the 4-5 s it saves are spent once per archive (the decoded arrays are
  cached), against an extraction that takes 12-57 s here. Pillow stays the one decoder.
- Extraction: `tarfile`'s `extractall(filter="data")` (refuses absolute paths, `..`,
  links out of the tree and device files). `shutil.unpack_archive(filter="data")` calls
  the same function (56.9 s for both when measured back to back; the time is the
  filesystem's); `tf.keras.utils.get_file(extract=True)` copies the archive into its own
  cache first, keys that cache by file name only (a changed archive is not extracted
  again) and filters members by path only. What is kept by hand is the cache key and the
  atomic rename of a completed extraction.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from zoo.datasets.cache import (
    CACHE_DIR_ENV,
    cache_root,
    read_decoded,
    write_decoded,
)
from zoo.datasets.container import DataError, ImageDataset, from_uint8

__all__ = [
    "ARCHIVE_SUFFIXES",
    "IMAGE_SUFFIXES",
    "has_splits",
    "load_archive",
    "load_image_path",
    "load_image_tree",
]

IMAGE_SUFFIXES = frozenset(
    {
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
)
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# Pillow modes decoded as one grey channel.
_GRAY_MODES = {"1", "L", "LA"}


def has_splits(folder: Path) -> bool:
    """Whether `folder` holds `train/` and `test/` folders."""
    return (folder / "train").is_dir() and (folder / "test").is_dir()


def load_image_path(
    path: Path, *, cache_dir: str | os.PathLike | None = None
) -> ImageDataset:
    """An image-folder dataset given by the path of its tree or of an archive of it.

    # Arguments
        path: a tree (`train/<class>/*`, `test/<class>/*`) or a `.tar.gz` of one; the
            dataset is named after it (without the archive suffix).
        cache_dir: the cache's root (see `zoo.datasets.cache`).

    # Returns
        An `ImageDataset`.

    # Raises
        DataError: if the path is neither, or the tree is malformed.
    """
    if path.is_dir():
        return load_image_tree(path, name=path.name, cache_dir=cache_dir)
    if path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES):
        name = path.name
        for suffix in ARCHIVE_SUFFIXES:
            if name.lower().endswith(suffix):
                name = name[: -len(suffix)]
                break
        return load_archive(path, name=name, cache_dir=cache_dir)
    raise DataError(
        f"{path}: no such directory or .tar.gz archive; expected an image-folder dataset "
        "(train/<class>/*, test/<class>/*) or a .tar.gz of one"
    )


def load_archive(
    archive: Path, *, name: str, cache_dir: str | os.PathLike | None = None
) -> ImageDataset:
    """An image-folder dataset from an archive, extracted once and decoded once.

    The cache entry is keyed by the archive's name, size and mtime, so a changed archive
    gets a fresh one: `<cache>/<archive name>-<size>-<mtime_ns>/{tree,decoded}`.

    # Arguments
        archive: a `.tar.gz`, `.tgz` or `.tar` of an image-folder tree.
        name: the dataset's name.
        cache_dir: the cache's root (see `zoo.datasets.cache`).

    # Returns
        An `ImageDataset` whose source is the archive.

    # Raises
        DataError: if the archive cannot be extracted or holds no tree.
    """
    stat = archive.stat()
    entry = cache_root(cache_dir) / f"{archive.name}-{stat.st_size}-{stat.st_mtime_ns}"
    decoded = entry / "decoded"
    cached = read_decoded(decoded, fingerprint=entry.name)
    if cached is not None:
        return from_uint8(name, *cached, source=str(archive))
    tree = _extract(archive, entry)
    return load_image_tree(
        _split_root(tree, archive),
        name=name,
        cache_dir=cache_dir,
        source=str(archive),
        decoded=decoded,
        fingerprint=entry.name,
    )


def load_image_tree(
    root: Path,
    *,
    name: str,
    cache_dir: str | os.PathLike | None = None,
    source: str | None = None,
    decoded: Path | None = None,
    fingerprint: str | None = None,
) -> ImageDataset:
    """A dataset from `root/{train,test}/<class>/*`, decoded once and cached as `.npy`.

    # Arguments
        root: the tree.
        name: the dataset's name.
        cache_dir: the cache's root (see `zoo.datasets.cache`).
        source: where the data comes from, if not `root` (e.g. an archive).
        decoded, fingerprint: the cache folder of the decoded arrays and the key of their
            source; by default `<cache>/folders/<name>-<hash of the path>`, keyed by the
            files' names, sizes and mtimes.

    # Returns
        An `ImageDataset` of (N, H, W, 1) images if all are grey, else (N, H, W, 3).

    # Raises
        DataError: if the splits or class folders are missing or differ, a class has no
            image, an image cannot be decoded, or the images differ in size.
    """
    if not has_splits(root):
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
        decoded = cache_root(cache_dir) / "folders" / f"{root.name}-{key}"
        fingerprint = digest.hexdigest()
    cached = read_decoded(decoded, fingerprint=fingerprint)
    if cached is not None and cached[4] == tuple(train_classes):
        return from_uint8(name, *cached, source=source or str(root))

    images = _decode_images(files, root=root)
    arrays = (
        images[: len(train_files)],
        np.asarray(train_labels, np.int64),
        images[len(train_files) :],
        np.asarray(test_labels, np.int64),
        tuple(train_classes),
    )
    write_decoded(decoded, arrays, fingerprint=fingerprint)
    return from_uint8(name, *arrays, source=source or str(root))


def _entries(folder: Path) -> list[os.DirEntry]:
    """The visible entries of a folder, sorted by name."""
    with os.scandir(folder) as entries:
        visible = [
            e for e in entries if not e.name.startswith(".") and e.name != "__MACOSX"
        ]
    return sorted(visible, key=lambda e: e.name)


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
    if has_splits(tree):
        return tree
    tops = [Path(e.path) for e in _entries(tree) if e.is_dir()]
    if len(tops) == 1 and has_splits(tops[0]):
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
            if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES
        ]
        if not images:
            raise DataError(
                f"{folder / name}: no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
            )
        files += images
        labels += [label] * len(images)
    return classes, files, labels


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
