"""Tests for zoo/datasets/provenance.py: the encoding of a dataset's images, on files
written here (and on the real CIFAR-10 archive when `$METAPLASTIC_DATA_DIR` has it)."""

import gzip
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.datasets import CACHE_DIR_ENV, DATA_DIR_ENV, load_dataset
from zoo.datasets.provenance import encoding_note, image_encoding, jpeg_quality

REAL_DATA_DIR = os.environ.get(DATA_DIR_ENV)


@pytest.fixture(autouse=True)
def isolated_cache(monkeypatch, tmp_path):
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))


def jpeg_bytes(quality):
    pixels = np.random.default_rng(quality).integers(0, 256, (16, 16, 3), np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def write_tree(root, *, suffix, quality=None):
    """root/{train,test}/{a,b}/0.<suffix>: two classes, one image each."""
    for split in ("train", "test"):
        for name in ("a", "b"):
            folder = Path(root) / split / name
            folder.mkdir(parents=True)
            if suffix == ".jpg":
                (folder / "0.jpg").write_bytes(jpeg_bytes(quality))
            else:
                pixels = np.zeros((4, 4, 3), np.uint8)
                Image.fromarray(pixels, "RGB").save(folder / f"0{suffix}")
    return Path(root)


@pytest.mark.parametrize("quality", [10, 30, 50, 75, 90, 100])
def test_jpeg_quality_reads_what_libjpeg_wrote(quality):
    image = Image.open(io.BytesIO(jpeg_bytes(quality)))
    assert jpeg_quality(image.quantization[0]) == quality


def test_jpeg_quality_of_foreign_tables_is_unknown():
    assert jpeg_quality([3] * 64) is None
    assert jpeg_quality([8, 6, 5]) is None  # not a table


def test_archive_of_jpegs_says_its_quality(tmp_path):
    tree = write_tree(tmp_path / "tree", suffix=".jpg", quality=60)
    archive = tmp_path / "shapes-jpeg.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tree, arcname="shapes")
    dataset = load_dataset(archive)
    encoding = image_encoding(dataset)
    assert encoding == {
        "source": "shapes-jpeg.tar.gz",
        "format": "JPEG",
        "jpeg_quality": 60,
    }
    note = encoding_note("shapes", encoding)
    assert "JPEG quality 60 re-encoding" in note and "shapes-jpeg.tar.gz" in note


def test_png_tree_and_idx_files_are_lossless(tmp_path):
    tree = write_tree(tmp_path / "pngs", suffix=".png")
    encoding = image_encoding(load_dataset(tree))
    assert encoding == {"source": "pngs", "format": "PNG"}
    assert encoding_note("pngs", encoding) is None

    folder = tmp_path / "data" / "mnist"
    folder.mkdir(parents=True)
    for split, n in (("train", 3), ("t10k", 2)):
        images = np.zeros((n, 4, 4), np.uint8)
        labels = np.arange(n, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            header = bytes([0, 0, 8, array.ndim]) + b"".join(
                int(d).to_bytes(4, "big") for d in array.shape
            )
            with gzip.open(folder / f"{split}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + array.tobytes())
    encoding = image_encoding(load_dataset("mnist", data_dir=tmp_path / "data"))
    assert encoding == {"source": "mnist", "format": "IDX"}


def test_real_cifar10_archive_is_jpeg_quality_75():
    archive = Path(REAL_DATA_DIR or "-") / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{DATA_DIR_ENV} is unset or has no cifar10-jpeg.tar.gz")
    with tarfile.open(archive) as tar:
        member = next(m for m in tar if m.name.endswith(".jpg"))
        image = Image.open(io.BytesIO(tar.extractfile(member).read()))
    assert image.format == "JPEG" and jpeg_quality(image.quantization[0]) == 75
