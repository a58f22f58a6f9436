"""Tests for training/data.py: dataset loading from files written here, and the pipelines."""

import gzip
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from training import data
from training.data import (
    CACHE_DIR_ENV,
    DATA_DIR_ENV,
    DataError,
    ImageDataset,
    load_dataset,
    make_pipeline,
    permutation_transform,
    random_permutation,
    read_idx,
)

# The real data directory, read before the fixture below hides it from unit tests.
REAL_DATA_DIR = os.environ.get(DATA_DIR_ENV)
IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_CODES = {np.dtype("u1"): 0x08, np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D}


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch, tmp_path):
    """No data directory from the environment; caches under tmp_path, never in ~/.cache."""
    monkeypatch.delenv(DATA_DIR_ENV, raising=False)
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path / "cache"))


@pytest.fixture
def counters(monkeypatch):
    """Counts archive extractions and image decodings."""
    counts = {"extract": 0, "decode": 0}
    extractall, decode = tarfile.TarFile.extractall, data._decode_images

    def counting_extractall(self, *args, **kwargs):
        counts["extract"] += 1
        return extractall(self, *args, **kwargs)

    def counting_decode(*args, **kwargs):
        counts["decode"] += 1
        return decode(*args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extractall", counting_extractall)
    monkeypatch.setattr(data, "_decode_images", counting_decode)
    return counts


def write_idx(path, array, *, gz=True):
    array = np.asarray(array)
    big_endian = array.astype(array.dtype.newbyteorder(">"))
    header = bytes([0, 0, IDX_CODES[big_endian.dtype], array.ndim])
    header += np.asarray(array.shape, ">u4").tobytes()
    payload = header + big_endian.tobytes()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(payload))
    else:
        path.write_bytes(payload)
    return path


def make_idx_folder(folder, *, n_train=5, n_test=3, label=None, seed=0, gz=True):
    """Writes a tiny MNIST-like dataset of 4x3 images; returns its arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, 4, 3), dtype=np.uint8),
        "y_train": rng.integers(0, 10, n_train).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, 4, 3), dtype=np.uint8),
        "y_test": rng.integers(0, 10, n_test).astype(np.uint8),
    }
    if label is not None:
        arrays["y_train"][:], arrays["y_test"][:] = label, label
    for key, array in arrays.items():
        write_idx(Path(folder) / IDX_NAMES[key], array, gz=gz)
    return arrays


def make_image_tree(
    root,
    *,
    classes=("b_cat", "a_dog"),
    per_class=(2, 1),
    size=(5, 4),
    mode="L",
    suffix=".png",
    seed=0,
):
    """Writes root/{train,test}/<class>/NNN<suffix>; returns {path: uint8 pixels}."""
    rng = np.random.default_rng(seed)
    shape = (size[1], size[0]) if mode == "L" else (size[1], size[0], 3)
    written = {}
    for split, count in zip(("train", "test"), per_class):
        for name in classes:
            folder = Path(root) / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 256, shape, dtype=np.uint8)
                path = folder / f"{i:03d}{suffix}"
                Image.fromarray(pixels, mode).save(path)
                written[path] = pixels
    return written


def make_archive(path, root, *, arcname):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        tar.add(root, arcname=arcname)
    return Path(path)


def assert_one_line(error_info, *substrings):
    message = str(error_info.value)
    assert "\n" not in message
    for substring in substrings:
        assert substring in message, message


def scaled(pixels):
    return np.float32(pixels) / np.float32(255)


# IDX files -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", ["u1", ">i4", ">f4"])
@pytest.mark.parametrize("gz", [True, False])
def test_read_idx_round_trip(tmp_path, dtype, gz):
    array = (np.arange(24).reshape(2, 3, 4) * 7 % 256).astype(dtype)
    result = read_idx(write_idx(tmp_path / "a-idx3-ubyte", array, gz=gz))
    assert result.shape == (2, 3, 4)
    assert result.dtype == np.dtype(dtype).newbyteorder("=")
    np.testing.assert_array_equal(result, array)


def test_read_idx_rejects_truncated_and_malformed_files(tmp_path):
    payload = gzip.decompress(
        write_idx(tmp_path / "x", np.zeros((3, 2, 2), np.uint8)).read_bytes()
    )
    truncated = tmp_path / "truncated-idx3-ubyte"
    truncated.write_bytes(payload[:-1])
    with pytest.raises(DataError) as info:
        read_idx(truncated)
    assert_one_line(
        info, str(truncated), "truncated", "(3, 2, 2)", "needs 28 bytes", "has 27"
    )

    bad_gzip = tmp_path / "bad-idx3-ubyte.gz"
    bad_gzip.write_bytes(gzip.compress(payload)[:-10])
    with pytest.raises(DataError) as info:
        read_idx(bad_gzip)
    assert_one_line(info, "cannot read IDX file", str(bad_gzip))

    not_idx = tmp_path / "image.png"
    not_idx.write_bytes(b"\x89PNG\r\n\x1a\n....")
    with pytest.raises(DataError) as info:
        read_idx(not_idx)
    assert_one_line(info, str(not_idx), "not an IDX file", "89504e47")

    with pytest.raises(DataError) as info:
        read_idx(tmp_path / "missing")
    assert_one_line(info, "cannot read IDX file", "missing")


def test_load_idx_dataset_exact_values(tmp_path):
    arrays = make_idx_folder(tmp_path / "mnist")
    dataset = load_dataset("mnist", data_dir=tmp_path)
    assert dataset.name == "mnist"
    assert dataset.source == str(tmp_path / "mnist")
    assert dataset.x_train.shape == (5, 4, 3, 1) and dataset.x_test.shape == (
        3,
        4,
        3,
        1,
    )
    assert dataset.x_train.dtype == np.float32 and dataset.y_train.dtype == np.int64
    np.testing.assert_array_equal(dataset.x_train[..., 0], scaled(arrays["x_train"]))
    np.testing.assert_array_equal(dataset.x_test[..., 0], scaled(arrays["x_test"]))
    np.testing.assert_array_equal(dataset.y_train, arrays["y_train"])
    np.testing.assert_array_equal(dataset.y_test, arrays["y_test"])
    assert dataset.x_train.max() <= 1.0 and dataset.x_train.min() >= 0.0
    assert dataset.class_names == tuple("0123456789")
    assert dataset.num_classes == 10 and dataset.input_shape == (4, 3, 1)


def test_fashion_mnist_alias_and_data_dir_at_dataset_folder(tmp_path):
    arrays = make_idx_folder(tmp_path / "fashion_mnist", gz=False)
    for name in ("fashion-mnist", "fashion_mnist"):
        dataset = load_dataset(name, data_dir=tmp_path)
        assert (
            dataset.name == "fashion_mnist" and dataset.class_names[0] == "T-shirt/top"
        )
        np.testing.assert_array_equal(dataset.y_test, arrays["y_test"])
    direct = load_dataset("fashion_mnist", data_dir=tmp_path / "fashion_mnist")
    assert direct.source == str(tmp_path / "fashion_mnist")

    make_idx_folder(tmp_path / "mnist")
    with pytest.raises(
        DataError
    ) as info:  # another dataset's folder is not taken for it
        load_dataset("fashion_mnist", data_dir=tmp_path / "mnist")
    assert_one_line(info, "no IDX files found in", "mnist")


def test_missing_empty_and_incomplete_data_dirs(tmp_path):
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path / "nowhere")
    assert_one_line(info, "mnist: data_dir", "nowhere", "is not a directory")

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as info:
        load_dataset("fashion_mnist", data_dir=tmp_path / "empty")
    assert_one_line(
        info,
        "fashion_mnist: no IDX files found in",
        str(tmp_path / "empty" / "fashion-mnist"),
        "train-images-idx3-ubyte[.gz]",
    )

    make_idx_folder(tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert_one_line(info, "incomplete IDX files", "missing t10k-labels-idx1-ubyte")


def test_mismatched_image_and_label_counts(tmp_path):
    make_idx_folder(tmp_path / "mnist")
    write_idx(tmp_path / "mnist" / IDX_NAMES["y_train"], np.zeros(4, np.uint8))
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert_one_line(
        info, "mnist: 5 train images but 4 train labels", str(tmp_path / "mnist")
    )


def test_truncated_idx_in_dataset_names_the_file(tmp_path):
    make_idx_folder(tmp_path / "mnist", gz=False)
    path = tmp_path / "mnist" / IDX_NAMES["x_test"]
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(DataError) as info:
        load_dataset("mnist", data_dir=tmp_path)
    assert_one_line(info, str(path), "truncated")


def test_unknown_name_lists_known_names():
    with pytest.raises(DataError) as info:
        load_dataset("imagenet")
    assert_one_line(
        info, "unknown dataset 'imagenet'", "mnist, fashion_mnist", "cifar10"
    )


# Sources and their order -------------------------------------------------------------


def test_explicit_data_dir_beats_environment(tmp_path, monkeypatch):
    make_idx_folder(tmp_path / "env" / "mnist", label=1)
    make_idx_folder(tmp_path / "explicit" / "mnist", label=2)
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "env"))
    explicit = load_dataset("mnist", data_dir=tmp_path / "explicit")
    assert explicit.source == str(tmp_path / "explicit" / "mnist")
    assert set(explicit.y_train) == {2}
    from_env = load_dataset("mnist")
    assert from_env.source == str(tmp_path / "env" / "mnist")
    assert set(from_env.y_train) == {1}


def test_tfds_is_tried_last_and_fails_cleanly(tmp_path, monkeypatch):
    import tensorflow_datasets as tfds

    calls = []

    def offline_load(name, **kwargs):
        calls.append(name)
        raise ConnectionError("Failed to resolve 'storage.googleapis.com'\n(offline)")

    monkeypatch.setattr(tfds, "load", offline_load)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(DATA_DIR_ENV, str(tmp_path / "empty"))
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist")
    assert calls == ["fashion_mnist"]
    assert_one_line(
        info,
        f"no IDX files found in {tmp_path / 'empty' / 'fashion-mnist'}",
        f"${DATA_DIR_ENV}",
        "tensorflow-datasets could not load fashion_mnist",
        "ConnectionError",
        "(offline)",
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__

    with pytest.raises(DataError) as info:  # no download: tfds is not tried
        load_dataset("mnist", download=False)
    assert calls == ["fashion_mnist"]
    assert_one_line(info, "download=False", str(tmp_path / "empty"))

    make_idx_folder(tmp_path / "empty" / "mnist")  # local data: tfds is not tried
    assert load_dataset("mnist").source == str(tmp_path / "empty" / "mnist")
    assert calls == ["fashion_mnist"]

    monkeypatch.delenv(DATA_DIR_ENV)
    with pytest.raises(DataError) as info:
        load_dataset("cifar10")
    assert calls == ["fashion_mnist", "cifar10"]
    assert_one_line(
        info, f"${DATA_DIR_ENV} is not set", "tensorflow-datasets could not load"
    )


# Image folders and archives ----------------------------------------------------------


def test_grayscale_png_tree_exact(tmp_path):
    written = make_image_tree(tmp_path / "shapes", per_class=(2, 1), mode="L")
    dataset = load_dataset(tmp_path / "shapes")  # a path-like works as well as a string
    assert dataset.name == "shapes" and dataset.class_names == ("a_dog", "b_cat")
    assert dataset.x_train.shape == (4, 4, 5, 1) and dataset.x_test.shape == (
        2,
        4,
        5,
        1,
    )
    np.testing.assert_array_equal(dataset.y_train, [0, 0, 1, 1])
    np.testing.assert_array_equal(dataset.y_test, [0, 1])
    root = tmp_path / "shapes"
    expected_train = [
        written[root / "train" / c / f"{i:03d}.png"]
        for c in ("a_dog", "b_cat")
        for i in range(2)
    ]
    np.testing.assert_array_equal(
        dataset.x_train[..., 0], scaled(np.stack(expected_train))
    )
    np.testing.assert_array_equal(
        dataset.x_test[1, ..., 0], scaled(written[root / "test" / "b_cat" / "000.png"])
    )


def test_rgb_jpeg_tree_and_mixed_modes(tmp_path):
    make_image_tree(tmp_path / "rgb", mode="RGB", suffix=".jpg", size=(6, 6))
    dataset = load_dataset(str(tmp_path / "rgb"))
    assert dataset.input_shape == (6, 6, 3)
    # JPEG is lossy: compare with PIL's decoding of the same file.
    path = tmp_path / "rgb" / "train" / "a_dog" / "001.jpg"
    np.testing.assert_array_equal(
        dataset.x_train[1], scaled(np.asarray(Image.open(path)))
    )

    make_image_tree(tmp_path / "mixed", mode="L", size=(3, 3))
    gray = tmp_path / "mixed" / "test" / "a_dog" / "000.png"
    Image.fromarray(np.full((3, 3, 3), (10, 20, 30), np.uint8)).save(gray)
    mixed = load_dataset(str(tmp_path / "mixed"))
    assert mixed.input_shape == (3, 3, 3)
    np.testing.assert_array_equal(
        mixed.x_test[0], scaled(np.full((3, 3, 3), (10, 20, 30)))
    )
    first = np.asarray(Image.open(tmp_path / "mixed" / "train" / "a_dog" / "000.png"))
    np.testing.assert_array_equal(
        mixed.x_train[0], scaled(np.repeat(first[..., None], 3, -1))
    )


def test_image_tree_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "empty"))
    assert_one_line(info, str(tmp_path / "empty"), "no train/ and test/ folders")

    (tmp_path / "noclass" / "train").mkdir(parents=True)
    (tmp_path / "noclass" / "test").mkdir()
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "noclass"))
    assert_one_line(info, "no class folders")

    make_image_tree(tmp_path / "differ")
    (tmp_path / "differ" / "test" / "b_cat").rename(
        tmp_path / "differ" / "test" / "c_cow"
    )
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "differ"))
    assert_one_line(
        info, "different class folders", "only in train: ['b_cat']", "['c_cow']"
    )

    make_image_tree(tmp_path / "noimages")
    for path in (tmp_path / "noimages" / "test" / "a_dog").iterdir():
        path.unlink()
    (tmp_path / "noimages" / "test" / "a_dog" / "notes.txt").write_text("not an image")
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "noimages"))
    assert_one_line(info, str(tmp_path / "noimages" / "test" / "a_dog"), "no images")

    make_image_tree(tmp_path / "sizes", size=(5, 4))
    odd = tmp_path / "sizes" / "train" / "b_cat" / "001.png"
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(odd)
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "sizes"))
    assert_one_line(info, f"image {odd} is 6x4", "is 5x4", "same size")

    make_image_tree(tmp_path / "corrupt")
    bad = tmp_path / "corrupt" / "test" / "b_cat" / "000.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "corrupt"))
    assert_one_line(info, f"cannot decode image {bad}")

    with pytest.raises(DataError) as info:
        load_dataset(str(tmp_path / "nowhere.tar.gz"))
    assert_one_line(info, "nowhere.tar.gz", "no such directory or .tar.gz archive")


def test_archive_extracted_once_and_decoded_once(tmp_path, counters):
    make_image_tree(tmp_path / "tree", mode="RGB", size=(4, 4))
    archive = make_archive(tmp_path / "toy.tar.gz", tmp_path / "tree", arcname="toy")
    first = load_dataset(str(archive))
    assert counters == {"extract": 1, "decode": 1}
    assert first.name == "toy" and first.source == str(archive)
    assert first.class_names == ("a_dog", "b_cat") and first.x_train.shape == (
        4,
        4,
        4,
        3,
    )
    reference = load_dataset(str(tmp_path / "tree"))
    np.testing.assert_array_equal(first.x_train, reference.x_train)
    counters["decode"] = 0

    second = load_dataset(str(archive))  # decoded cache: neither extracted nor decoded
    assert counters == {"extract": 1, "decode": 0}
    np.testing.assert_array_equal(second.x_train, first.x_train)
    np.testing.assert_array_equal(second.y_test, first.y_test)
    assert second.class_names == first.class_names

    (entry,) = [
        p for p in (tmp_path / "cache").iterdir() if p.name.startswith("toy.tar.gz-")
    ]
    for path in (entry / "decoded").iterdir():
        path.unlink()
    load_dataset(str(archive))  # extracted tree reused, decoded again
    assert counters == {"extract": 1, "decode": 1}

    os.utime(archive, ns=(0, 10**18))  # a changed archive gets a fresh cache entry
    load_dataset(str(archive))
    assert counters == {"extract": 2, "decode": 2}

    explicit = load_dataset(str(archive), cache_dir=tmp_path / "elsewhere")
    assert counters["extract"] == 3
    assert any((tmp_path / "elsewhere").iterdir())
    np.testing.assert_array_equal(explicit.x_test, first.x_test)


def test_archive_path_traversal_is_refused(tmp_path):
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        payload = b"x"
        member = tarfile.TarInfo("../../escaped.txt")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    with pytest.raises(DataError) as info:
        load_dataset(str(archive))
    assert_one_line(info, f"cannot extract {archive}")
    assert not list(tmp_path.rglob("escaped.txt"))


def test_cifar10_from_data_dir_archive_or_folder(tmp_path, counters):
    make_image_tree(
        tmp_path / "src", classes=("airplane", "truck"), mode="RGB", size=(3, 3)
    )
    make_archive(
        tmp_path / "data" / "cifar10-jpeg.tar.gz", tmp_path / "src", arcname="cifar10"
    )
    (tmp_path / "data" / "mnist").mkdir()
    from_archive = load_dataset("cifar10", data_dir=tmp_path / "data")
    assert from_archive.name == "cifar10" and from_archive.class_names == (
        "airplane",
        "truck",
    )
    assert from_archive.source == str(tmp_path / "data" / "cifar10-jpeg.tar.gz")

    (tmp_path / "src").rename(tmp_path / "data" / "cifar10")
    from_folder = load_dataset("cifar10", data_dir=tmp_path / "data")
    assert from_folder.source == str(tmp_path / "data" / "cifar10")
    np.testing.assert_array_equal(from_folder.x_train, from_archive.x_train)
    direct = load_dataset("cifar10", data_dir=tmp_path / "data" / "cifar10")
    assert direct.source == str(tmp_path / "data" / "cifar10")
    assert counters == {
        "extract": 1,
        "decode": 2,
    }  # the folder's decoding is cached too

    (tmp_path / "data" / "cifar10").rename(tmp_path / "data" / "other")
    (tmp_path / "data" / "cifar10-jpeg.tar.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path / "data")
    assert_one_line(info, "cifar10: no image-folder tree", "cifar10-jpeg.tar.gz")


def test_folder_cache_invalidated_when_files_change(tmp_path, counters):
    make_image_tree(tmp_path / "tree")
    load_dataset(str(tmp_path / "tree"))
    load_dataset(str(tmp_path / "tree"))
    assert counters["decode"] == 1
    path = tmp_path / "tree" / "test" / "a_dog" / "000.png"
    Image.fromarray(np.full((4, 5), 7, np.uint8)).save(path)
    os.utime(path, ns=(0, 10**18))
    changed = load_dataset(str(tmp_path / "tree"))
    assert counters["decode"] == 2
    np.testing.assert_array_equal(changed.x_test[0], np.full((4, 5, 1), scaled(7)))


# ImageDataset ------------------------------------------------------------------------


def test_image_dataset_validation_subset_and_repr():
    x, y = np.zeros((4, 2, 2, 1), np.float32), np.array([0, 1, 2, 1])
    dataset = ImageDataset(
        "toy", x, y, x[:2], y[:2], class_names=("a", "b", "c"), source="here"
    )
    assert dataset.y_train.dtype == np.int64 and dataset.num_classes == 3
    small = dataset.subset(train_indices=dataset.y_train == 1, test_indices=[1])
    np.testing.assert_array_equal(small.y_train, [1, 1])
    assert (
        small.x_test.shape == (1, 2, 2, 1) and small.class_names == dataset.class_names
    )
    assert repr(small) == (
        "ImageDataset(name='toy', train=2, test=1, input_shape=(2, 2, 1), num_classes=3, "
        "source='here')"
    )
    with pytest.raises(DataError) as info:
        ImageDataset("toy", x, y[:3], x, y, class_names="abc", source="here")
    assert_one_line(info, "toy: 4 train images but 3 train labels (from here)")
    with pytest.raises(DataError) as info:
        ImageDataset("toy", x, y, x, y, class_names=("a", "b"), source="here")
    assert_one_line(info, "train labels span [0, 2] but there are 2 classes")
    with pytest.raises(DataError) as info:
        ImageDataset("toy", x.astype(np.uint8), y, x, y, class_names="abc")
    assert_one_line(info, "x_train must be float images")


# Pipelines ---------------------------------------------------------------------------


def toy_images(n=10, size=8, channels=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, channels), dtype=np.float32), np.arange(n) % 3


def epochs(dataset, count=2):
    return [list(dataset.as_numpy_iterator()) for _ in range(count)]


def test_pipeline_batches_in_order():
    x, y = toy_images()
    (epoch,) = epochs(make_pipeline(x, y, batch_size=4), 1)
    assert [len(labels) for _, labels in epoch] == [4, 4, 2]
    images, labels = epoch[0]
    assert images.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_array_equal(np.concatenate([b[0] for b in epoch]), x)
    np.testing.assert_array_equal(np.concatenate([b[1] for b in epoch]), y)
    dropped = make_pipeline(x, y, batch_size=4, drop_remainder=True, prefetch=False)
    assert dropped.element_spec[0].shape.as_list() == [4, 8, 8, 3]
    assert len(list(dropped)) == 2


def test_seeded_shuffle_reproducible_and_new_each_epoch():
    x, y = toy_images(n=20)
    y = np.arange(20)

    def orders(seed):
        runs = epochs(make_pipeline(x, y, batch_size=8, shuffle=True, seed=seed), 3)
        return [np.concatenate([labels for _, labels in run]) for run in runs]

    first, again, other = orders(7), orders(7), orders(8)
    for epoch, repeat in zip(first, again):
        np.testing.assert_array_equal(epoch, repeat)
    for epoch in first:
        np.testing.assert_array_equal(np.sort(epoch), y)
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(
        first[1], first[2]
    )
    assert not np.array_equal(first[0], other[0])
    batch = next(iter(make_pipeline(x, y, batch_size=20, shuffle=True, seed=7)))
    np.testing.assert_array_equal(batch[0].numpy(), x[batch[1].numpy()])  # pairs kept


def crop_candidates(image, padding=4):
    """Every flip + pad-and-crop of one image."""
    h, w, _ = image.shape
    candidates = []
    for flipped in (image, image[:, ::-1]):
        padded = np.pad(flipped, ((padding, padding), (padding, padding), (0, 0)))
        for dy in range(2 * padding + 1):
            for dx in range(2 * padding + 1):
                candidates.append(padded[dy : dy + h, dx : dx + w])
    return np.stack(candidates)


def test_flip_crop_is_a_flip_and_padded_crop():
    x, y = toy_images(n=16)
    y = np.arange(16)
    run, repeat = (
        epochs(make_pipeline(x, y, batch_size=16, augment="flip_crop", seed=3), 2)
        for _ in range(2)
    )
    images, labels = run[0][0]
    assert images.shape == x.shape and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    for image, label in zip(images, labels):
        distances = np.abs(crop_candidates(x[label]) - image).max(axis=(1, 2, 3))
        assert distances.min() == 0.0
    changed = [
        not np.array_equal(image, x[label]) for image, label in zip(images, labels)
    ]
    assert sum(changed) >= 8
    np.testing.assert_array_equal(run[0][0][0], repeat[0][0][0])  # same seed, same run
    np.testing.assert_array_equal(run[1][0][0], repeat[1][0][0])
    assert not np.array_equal(run[0][0][0], run[1][0][0])  # new augmentation each epoch


def test_flip_rotate_keeps_centre_and_range():
    x = np.ones((12, 9, 9, 1), np.float32)
    x[:, 4, 4, 0] = np.linspace(0.1, 0.9, 12)
    y = np.arange(12)
    pipeline = make_pipeline(x, y, batch_size=12, augment="flip_rotate", seed=0)
    ((images, labels),) = epochs(pipeline, 1)[0]
    assert images.shape == x.shape and images.min() >= 0.0 and images.max() <= 1.0
    np.testing.assert_allclose(images[:, 4, 4, 0], x[labels, 4, 4, 0], atol=1e-5)
    rows, cols = np.mgrid[:9, :9]
    # The ring 2 <= r <= 3 rotates onto itself, away from the centre pixel's neighbours.
    ring = (4 <= (rows - 4) ** 2 + (cols - 4) ** 2) & (
        (rows - 4) ** 2 + (cols - 4) ** 2 <= 9
    )
    np.testing.assert_allclose(images[:, ring, 0], 1.0, atol=1e-5)
    assert (images[:, 0, 0, 0] < 1.0).mean() > 0.9  # corners rotate out of the image


def test_flip_rotate_angles_within_15_degrees():
    x = np.zeros((64, 33, 33, 1), np.float32)
    x[:, 16, 6:27, 0] = 1.0  # a horizontal bar through the centre: flips leave it alone
    pipeline = make_pipeline(
        x, np.zeros(64, int), batch_size=64, augment="flip_rotate", seed=1
    )
    ((images, _),) = epochs(pipeline, 1)[0]
    rows, cols = np.mgrid[:33, :33] - 16.0
    weights = images[..., 0]
    mu20, mu02 = (weights * cols**2).sum((1, 2)), (weights * rows**2).sum((1, 2))
    mu11 = (weights * rows * cols).sum((1, 2))
    angles = np.degrees(
        0.5 * np.arctan2(2 * mu11, mu20 - mu02)
    )  # the bar's orientation
    assert np.abs(angles).max() <= 15.5
    assert np.abs(angles).max() > 12 and (angles > 0).any() and (angles < 0).any()


def test_pipeline_argument_validation():
    x, y = toy_images()
    for batch_size in (0, -1, 2.5, True):
        with pytest.raises(ValueError) as info:
            make_pipeline(x, y, batch_size=batch_size)
        assert_one_line(info, "batch_size must be a positive integer")
    with pytest.raises(ValueError) as info:
        make_pipeline(x, y, batch_size=2, augment="mixup")
    assert_one_line(info, "unknown augment 'mixup'", "'flip_crop' or 'flip_rotate'")
    with pytest.raises(ValueError) as info:
        make_pipeline(x[..., 0], y, batch_size=2)
    assert_one_line(info, "shape (N, H, W, C)")
    with pytest.raises(ValueError) as info:
        make_pipeline(x, y[:3], batch_size=2)
    assert_one_line(info, "y must be 10 integer labels")


# Permutations ------------------------------------------------------------------------


def test_permutation_transform_exact():
    x, y = toy_images(n=5, size=4, channels=2)
    perm = random_permutation(16, seed=5)
    np.testing.assert_array_equal(perm, random_permutation(16, seed=5))
    np.testing.assert_array_equal(np.sort(perm), np.arange(16))
    assert not np.array_equal(perm, random_permutation(16, seed=6))
    expected = x.reshape(5, 16, 2)[:, perm].reshape(x.shape)
    transform = permutation_transform(perm)
    np.testing.assert_array_equal(transform(x).numpy(), expected)
    batches = epochs(make_pipeline(x, y, batch_size=2, transform=transform), 1)[0]
    np.testing.assert_array_equal(
        np.concatenate([images for images, _ in batches]), expected
    )
    pipeline = make_pipeline(x, y, batch_size=2, transform=transform)
    assert pipeline.element_spec[0].shape[1:] == (4, 4, 2)


def test_permutation_validation():
    with pytest.raises(ValueError) as info:
        permutation_transform([0, 0, 1])
    assert_one_line(info, "perm must be a permutation")
    with pytest.raises(ValueError) as info:
        permutation_transform(np.arange(9))(tf.zeros([1, 4, 4, 1]))
    assert_one_line(info, "perm has 9 positions but images are 4x4")
    with pytest.raises(ValueError):
        random_permutation(0, seed=1)


# Real data, when $METAPLASTIC_DATA_DIR points at it ----------------------------------


@pytest.mark.parametrize(
    "name, folder", [("mnist", "mnist"), ("fashion_mnist", "fashion-mnist")]
)
def test_real_mnist_like(name, folder):
    if not REAL_DATA_DIR or not (Path(REAL_DATA_DIR) / folder).is_dir():
        pytest.skip(f"{DATA_DIR_ENV} is unset or has no {folder}/")
    dataset = load_dataset(name, data_dir=REAL_DATA_DIR)
    assert dataset.x_train.shape == (60000, 28, 28, 1)
    assert dataset.x_test.shape == (10000, 28, 28, 1)
    assert dataset.x_train.dtype == np.float32 and dataset.y_train.dtype == np.int64
    assert dataset.num_classes == 10
    assert 0.0 <= dataset.x_train.min() and dataset.x_train.max() <= 1.0
    train_counts = np.bincount(dataset.y_train, minlength=10)
    test_counts = np.bincount(dataset.y_test, minlength=10)
    assert train_counts.sum() == 60000 and test_counts.sum() == 10000
    assert train_counts.min() > 5000 and test_counts.min() > 800
    mean = dataset.x_train.mean(dtype=np.float64)
    assert abs(mean - {"mnist": 0.1307, "fashion_mnist": 0.2860}[name]) < 1e-3
