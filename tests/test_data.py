"""Tests for training/data.py: the tf.data pipelines, augmentations and permutations, and
the datasets it re-exports from zoo.datasets."""

import numpy as np
import pytest
import tensorflow as tf

import zoo.datasets
from training import data
from training.data import (
    make_pipeline,
    permutation_transform,
    random_permutation,
)


def assert_one_line(error_info, *substrings):
    message = str(error_info.value)
    assert "\n" not in message
    for substring in substrings:
        assert substring in message, message


def test_datasets_are_re_exported_from_zoo():
    for name in ("load_dataset", "ImageDataset", "DataError", "read_idx"):
        assert getattr(data, name) is getattr(zoo.datasets, name), name
    assert (data.DATA_DIR_ENV, data.CACHE_DIR_ENV) == (
        "METAPLASTIC_DATA_DIR",
        "METAPLASTIC_CACHE_DIR",
    )


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
    for num_pixels in (0, 2.0, True):
        with pytest.raises(ValueError) as info:
            random_permutation(num_pixels, seed=1)
        assert_one_line(
            info, f"num_pixels must be a positive integer, got {num_pixels!r}"
        )
    np.testing.assert_array_equal(  # NumPy integers count as integers
        random_permutation(np.int64(16), seed=5), random_permutation(16, seed=5)
    )
