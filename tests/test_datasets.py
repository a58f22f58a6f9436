"""Tests for zoo/datasets/: IDX files, image folders, archives, the decoded cache and the
order of the sources, on files written here (and on the real data when
`$METAPLASTIC_DATA_DIR` points at it)."""

import gzip
import hashlib
import io
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo.datasets import (
    CACHE_DIR_ENV,
    DATA_DIR_ENV,
    DATASETS,
    DataError,
    ImageDataset,
    canonical_name,
    load_dataset,
    read_idx,
    sample_description,
    stratified_sample,
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
    """Counts archive extractions and images decoded (opened with Pillow)."""
    counts = {"extract": 0, "decoded": 0}
    extractall, open_image = tarfile.TarFile.extractall, Image.open

    def counting_extractall(self, *args, **kwargs):
        counts["extract"] += 1
        return extractall(self, *args, **kwargs)

    def counting_open(*args, **kwargs):
        counts["decoded"] += 1
        return open_image(*args, **kwargs)

    monkeypatch.setattr(tarfile.TarFile, "extractall", counting_extractall)
    monkeypatch.setattr(Image, "open", counting_open)
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


def test_canonical_names():
    assert DATASETS == ("mnist", "fashion_mnist", "cifar10")
    cases = {
        "mnist": "mnist",
        "Fashion-MNIST": "fashion_mnist",
        "fashion_mnist": "fashion_mnist",
        "cifar-10": "cifar10",
        "data/shapes/": "shapes",
        "/data/cifar10-jpeg.tar.gz": "cifar10_jpeg",
        Path("runs/my-images"): "my_images",
    }
    assert {str(k): canonical_name(k) for k in cases} == {
        str(k): v for k, v in cases.items()
    }


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
    assert counters == {"extract": 1, "decoded": 6}  # 2 classes x (2 train + 1 test)
    assert first.name == "toy" and first.source == str(archive)
    assert first.class_names == ("a_dog", "b_cat") and first.x_train.shape == (
        4,
        4,
        4,
        3,
    )
    reference = load_dataset(str(tmp_path / "tree"))
    np.testing.assert_array_equal(first.x_train, reference.x_train)
    counters["decoded"] = 0

    second = load_dataset(str(archive))  # decoded cache: neither extracted nor decoded
    assert counters == {"extract": 1, "decoded": 0}
    np.testing.assert_array_equal(second.x_train, first.x_train)
    np.testing.assert_array_equal(second.y_test, first.y_test)
    assert second.class_names == first.class_names

    (entry,) = [
        p for p in (tmp_path / "cache").iterdir() if p.name.startswith("toy.tar.gz-")
    ]
    for path in (entry / "decoded").iterdir():
        path.unlink()
    load_dataset(str(archive))  # extracted tree reused, decoded again
    assert counters == {"extract": 1, "decoded": 6}

    os.utime(archive, ns=(0, 10**18))  # a changed archive gets a fresh cache entry
    load_dataset(str(archive))
    assert counters == {"extract": 2, "decoded": 12}

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
    # Decoded twice (archive, folder), 6 images each; the folder's decoding is cached.
    assert counters == {"extract": 1, "decoded": 12}

    (tmp_path / "data" / "cifar10").rename(tmp_path / "data" / "other")
    (tmp_path / "data" / "cifar10-jpeg.tar.gz").unlink()
    with pytest.raises(DataError) as info:
        load_dataset("cifar10", data_dir=tmp_path / "data")
    assert_one_line(info, "cifar10: no image-folder tree", "cifar10-jpeg.tar.gz")


def test_folder_cache_invalidated_when_files_change(tmp_path, counters):
    make_image_tree(tmp_path / "tree")
    load_dataset(str(tmp_path / "tree"))
    load_dataset(str(tmp_path / "tree"))
    assert counters["decoded"] == 6
    path = tmp_path / "tree" / "test" / "a_dog" / "000.png"
    Image.fromarray(np.full((4, 5), 7, np.uint8)).save(path)
    os.utime(path, ns=(0, 10**18))
    changed = load_dataset(str(tmp_path / "tree"))
    assert counters["decoded"] == 12  # every image again, not only the changed one
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


# Stratified samples -----------------------------------------------------------------


def _allotted(labels, n):
    """What `stratified_sample` gives each class: n * count / N, rounded down or up."""
    counts = np.bincount(labels)
    exact = n * counts / len(labels)
    return np.floor(exact).astype(int), np.ceil(exact).astype(int)


@pytest.mark.parametrize("n", [1, 7, 300, 305, 9999])
def test_stratified_sample_of_a_class_sorted_split(n):
    labels = np.repeat(np.arange(10), 1000)  # sorted by class, like CIFAR-10's test
    indices = stratified_sample(labels, n, seed=0)
    assert indices.dtype == np.int64 and len(indices) == n
    assert np.all(np.diff(indices) > 0)  # sorted, no repeat
    counts = np.bincount(labels[indices], minlength=10)
    assert counts.min() >= n // 10 and counts.max() <= -(-n // 10)  # n / k, +-1
    assert counts.sum() == n


def test_stratified_sample_keeps_unequal_classes_in_proportion():
    labels = np.repeat([0, 1, 2, 5], [5, 95, 880, 20])
    labels = np.random.default_rng(0).permutation(labels)
    for n, seed in [(100, 0), (100, 1), (333, 2), (999, 3)]:
        indices = stratified_sample(labels, n, seed=seed)
        counts = np.bincount(labels[indices], minlength=6)
        low, high = _allotted(labels, n)
        assert np.all((low <= counts) & (counts <= high)) and counts.sum() == n
        assert counts[3] == counts[4] == 0  # absent classes stay absent


def test_stratified_sample_is_seeded_and_draws_within_classes():
    labels = np.repeat(np.arange(4), 250)
    first = stratified_sample(labels, 40, seed=3)
    np.random.seed(0)  # the global state plays no part
    np.testing.assert_array_equal(stratified_sample(labels, 40, seed=3), first)
    other = stratified_sample(labels, 40, seed=4)
    assert not np.array_equal(other, first)
    np.testing.assert_array_equal(np.bincount(labels[other]), [10, 10, 10, 10])
    # Drawn across each class, not its first images.
    assert np.all(first[labels[first] == 0].max() > 100)
    assert len(set(first) - set(range(0, 1000, 25))) > 30


def test_stratified_sample_of_everything_is_the_split_in_order():
    labels = np.array([2, 0, 1, 1, 0], dtype=np.uint8)
    for n in (5, 6, 10**6):
        everything = stratified_sample(labels, n, seed=7)
        np.testing.assert_array_equal(everything, np.arange(5))
    assert stratified_sample(np.array([], np.int64), 3, seed=0).tolist() == []
    assert stratified_sample([4, 4, 4], 2, seed=0).tolist() in ([0, 1], [0, 2], [1, 2])


@pytest.mark.parametrize(
    "labels, n, seed, match",
    [
        (np.arange(5), 0, 0, "n must be a positive integer, got 0."),
        (np.arange(5), -3, 0, "n must be a positive integer, got -3."),
        (np.arange(5), 2.5, 0, "n must be a positive integer, got 2.5."),
        (np.arange(5), True, 0, "n must be a positive integer, got True."),
        (np.arange(5), 2, -1, "seed must be an integer >= 0, got -1."),
        (np.zeros((5, 2), int), 2, 0, r"labels must be integer class labels of shape"),
        (np.linspace(0, 1, 5), 2, 0, r"labels must be .*, got float64 \(5,\)\."),
    ],
)
def test_stratified_sample_errors_are_one_line(labels, n, seed, match):
    with pytest.raises(ValueError, match=match) as info:
        stratified_sample(labels, n, seed=seed)
    assert "\n" not in str(info.value)


def test_sample_description():
    what = "cifar10 test images"
    assert (
        sample_description(300, 10000, seed=0, what=what)
        == "300 of 10,000 cifar10 test images, stratified by class, seed 0"
    )
    assert sample_description(10000, 10000, seed=None, what=what) == (
        "all 10,000 cifar10 test images"
    )
    assert sample_description(50, 80, seed=None) == "50 images"


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
    # A stratified sample of the test split: every class in proportion (MNIST's test
    # classes are unequal: 892 to 1,135 images).
    counts = np.bincount(dataset.y_test[stratified_sample(dataset.y_test, 300, seed=0)])
    low, high = _allotted(dataset.y_test, 300)
    assert np.all((low <= counts) & (counts <= high)) and counts.sum() == 300


# The first 3 training and test JPEGs of `airplane` and `automobile` in the real
# `cifar10-jpeg.tar.gz`, decoded as uint8 (6, 32, 32, 3) per split: the sha256 of the
# pixels of the decoded cache written by the loader since the tarball was published. A
# decoder that changes one pixel (another IDCT, another library) changes these.
CIFAR10_SAMPLE_SHA256 = {
    "train": "e371e8edb226b20e1d27fa93ae1dc05f1e1c574452375471fee2af1f1814633b",
    "test": "ee833c24e5a1fde42e9b9a27c376fa9e63b44653c2284874d3da5c421dc4964c",
}


def test_real_cifar10_jpegs_decode_as_cached(tmp_path):
    archive = Path(REAL_DATA_DIR or "-") / "cifar10-jpeg.tar.gz"
    if not archive.is_file():
        pytest.skip(f"{DATA_DIR_ENV} is unset or has no cifar10-jpeg.tar.gz")
    wanted = {
        f"cifar10/{split}/{name}/{i:04d}.jpg"
        for split in ("train", "test")
        for name in ("airplane", "automobile")
        for i in range(3)
    }
    with tarfile.open(archive) as tar:  # test/ comes first, then train/
        for member in tar:
            if member.name in wanted:
                tar.extract(member, tmp_path / "sample", filter="data")
                wanted.remove(member.name)
                if not wanted:
                    break
    dataset = load_dataset(tmp_path / "sample" / "cifar10")
    assert dataset.class_names == ("airplane", "automobile")
    assert dataset.input_shape == (32, 32, 3)
    np.testing.assert_array_equal(dataset.y_train, [0, 0, 0, 1, 1, 1])
    for split in ("train", "test"):
        pixels = np.round(getattr(dataset, f"x_{split}") * 255).astype(np.uint8)
        digest = hashlib.sha256(pixels.tobytes()).hexdigest()
        assert digest == CIFAR10_SAMPLE_SHA256[split], split
