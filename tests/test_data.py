"""Tests for training/data.py: the tf.data pipelines, augmentations and permutations, and
the datasets it re-exports from zoo.datasets."""

import gc
import os
import sys

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


def crop_candidates(image, padding=4, mode="constant"):
    """Every flip + pad-and-crop of one image (`mode` as in `np.pad`), in the order
    (flipped, dy, dx) with dy, dx in 0 ... 2 * padding (padding: no shift)."""
    h, w, _ = image.shape
    candidates = []
    for flipped in (image, image[:, ::-1]):
        pads = ((padding, padding), (padding, padding), (0, 0))
        padded = np.pad(flipped, pads, mode=mode)
        for dy in range(2 * padding + 1):
            for dx in range(2 * padding + 1):
                candidates.append(padded[dy : dy + h, dx : dx + w])
    return np.stack(candidates)


def resident_mib():
    with open("/proc/self/statm") as statm:
        pages = int(statm.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_pipeline_per_epoch_holds_one_copy_of_the_data():
    # The runner makes a pipeline per epoch; the old ones sit in reference cycles until
    # the cyclic garbage collector runs (here: never), so each must not hold its own
    # copy of the data. 20 pipelines of a 24 MiB set held 480 MiB more before the fix.
    x, y = toy_images(n=2000, size=32)
    megabytes = x.nbytes / 2**20
    enabled = gc.isenabled()
    gc.disable()
    try:
        before = None
        for seed in range(22):  # 2 to warm up: tracing, thread pools, allocator
            before = resident_mib() if seed == 2 else before
            pipeline = make_pipeline(
                x, y, batch_size=500, shuffle=True, seed=seed, augment="flip_crop"
            )
            assert sum(len(labels) for _, labels in pipeline) == 2000
        growth = resident_mib() - before
    finally:
        if enabled:
            gc.enable()
    assert growth < 4 * megabytes, f"{growth:.0f} MiB for 20 pipelines of {megabytes:.0f}"


def test_pipelines_of_the_same_array_read_it_as_at_the_first():
    x, y = toy_images()
    original = x.copy()
    list(make_pipeline(x, y, batch_size=4))
    x[:] = 0  # documented: the same array object keeps its first host copy
    again = np.concatenate([b for b, _ in make_pipeline(x, y, batch_size=4)])
    np.testing.assert_array_equal(again, original)
    copied = np.concatenate([b for b, _ in make_pipeline(x.copy(), y, batch_size=4)])
    np.testing.assert_array_equal(copied, np.zeros_like(original))


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


def augmented(x, *, seed, batch_size=None, epochs_count=1):
    """The augmented images of `epochs_count` epochs (one batch each), and the labels."""
    y = np.arange(len(x))
    pipeline = make_pipeline(
        x,
        y,
        batch_size=batch_size or len(x),
        augment="flip_rotate_or_crop",
        seed=seed,
    )
    return [
        (np.concatenate([b[0] for b in run]), np.concatenate([b[1] for b in run]))
        for run in epochs(pipeline, epochs_count)
    ]


def test_flip_rotate_or_crop_is_registered_with_the_old_ones():
    assert data.AUGMENTATIONS == ("flip_crop", "flip_rotate", "flip_rotate_or_crop")
    assert data.REFERENCE_ROTATION_DEGREES == 10.0
    assert data.ROTATION_PROBABILITY == 0.5 and data.CROP_PADDING == 4


def test_flip_rotate_or_crop_keeps_shape_dtype_and_pixel_values():
    x, _ = toy_images(n=48, size=32)
    ((images, labels),) = augmented(x, seed=0, batch_size=16)
    assert images.shape == x.shape and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0
    # Nearest neighbour and edge replication: every pixel is one of the image's pixels,
    # or 0 where a rotation leaves the image; never a blend of two pixels.
    for image, label in zip(images, labels):
        allowed = np.append(x[label], 0.0)
        assert np.isin(image, allowed).all()
    assert sum(not np.array_equal(i, x[k]) for i, k in zip(images, labels)) >= 40


def test_flip_rotate_or_crop_is_seeded_and_new_each_epoch():
    x, _ = toy_images(n=16, size=16)
    first, again, other = (
        augmented(x, seed=seed, epochs_count=2) for seed in (5, 5, 6)
    )
    for (images, labels), (images_again, labels_again) in zip(first, again):
        np.testing.assert_array_equal(images, images_again)
        np.testing.assert_array_equal(labels, labels_again)
    assert not np.array_equal(first[0][0], first[1][0])  # new draws each epoch
    assert not np.array_equal(first[0][0], other[0][0])


def test_flip_rotate_or_crop_takes_both_branches():
    """On a white image, a crop (edge replication) stays white; a rotation brings
    zeros into the corners, unless its angle is below ~1.3 degrees."""
    x = np.ones((256, 32, 32, 1), np.float32)
    ((images, _),) = augmented(x, seed=2, batch_size=64)
    has_zeros = (images == 0.0).any(axis=(1, 2, 3))
    assert 0.3 < has_zeros.mean() < 0.6  # 0.5 * (1 - 1.3 / 10) = 0.43 expected
    white = images[~has_zeros]
    np.testing.assert_array_equal(white, 1.0)
    corners = images[has_zeros][:, [0, 0, -1, -1], [0, -1, 0, -1], 0]
    assert (corners == 0.0).mean() > 0.9  # zeros only where rotated out of the image


def test_flip_rotate_or_crop_crops_replicate_the_edges():
    """A tiny 6x6 image of distinct values: the crops are exactly crops of the image
    padded by replicating its edge pixels (numpy's "edge" mode), never zeros."""
    image = (np.arange(1, 37, dtype=np.float32) / 36).reshape(6, 6, 1)
    x = np.repeat(image[None], 256, axis=0)
    ((images, _),) = augmented(x, seed=4, batch_size=128)
    edge = crop_candidates(image, mode="edge")
    crops = {}  # output index -> (dy, dx), the shift of the padded crop
    for i, output in enumerate(images):
        matches = np.flatnonzero((edge == output).all(axis=(1, 2, 3)))
        if matches.size:
            dy, dx = np.unravel_index(matches[0] % 81, (9, 9))
            crops[i] = (dy - 4, dx - 4)
        else:  # not a crop: a rotation, which reads the image or zeros
            assert np.isin(output, np.append(image, 0.0)).all()
    # ~half are crops, plus the rotations too small to move a pixel (shift 0, 0).
    assert len(crops) >= 96
    dy, dx = np.array(list(crops.values())).T
    assert {-4, 4} <= set(dy) and {-4, 4} <= set(dx)
    assert len(set(crops.values())) >= 40
    assert (images[list(crops)] > 0).all()  # no zero padding
    # Shifted by 4 down (right), the first 5 rows (columns) all repeat the top row
    # (left column), where a zero-padded crop has 4 rows (columns) of zeros.
    down = [i for i, shift in crops.items() if shift[0] == -4]
    right = [i for i, shift in crops.items() if shift[1] == -4]
    assert down and right
    for i in down:
        np.testing.assert_array_equal(images[i, :5], np.repeat(images[i, :1], 5, 0))
    for i in right:
        np.testing.assert_array_equal(
            images[i, :, :5], np.repeat(images[i, :, :1], 5, 1)
        )


def test_flip_rotate_or_crop_rotates_within_10_degrees():
    x = np.zeros((128, 33, 33, 1), np.float32)
    x[:, 16, 6:27, 0] = 1.0  # a horizontal bar through the centre: flips leave it alone
    ((images, _),) = augmented(x, seed=1, batch_size=64)
    assert set(np.unique(images)) <= {0.0, 1.0}  # nearest neighbour: no blending
    weights = images[..., 0]
    rows, cols = np.mgrid[:33, :33].astype(float)
    total = weights.sum((1, 2))
    # Central moments (about the bar's centroid: a crop shifts it, rotations do not).
    row_mean = (weights * rows).sum((1, 2)) / total
    col_mean = (weights * cols).sum((1, 2)) / total
    r, c = rows - row_mean[:, None, None], cols - col_mean[:, None, None]
    mu20, mu02 = (weights * c**2).sum((1, 2)), (weights * r**2).sum((1, 2))
    mu11 = (weights * r * c).sum((1, 2))
    angles = np.degrees(0.5 * np.arctan2(2 * mu11, mu20 - mu02))
    # Up to 10 degrees (the moments of a pixelated bar overshoot a little); the
    # bilinear "flip_rotate" goes up to 15.
    assert np.abs(angles).max() <= 11.0
    assert np.abs(angles).max() > 7 and (angles > 2).any() and (angles < -2).any()
    # Crops keep the bar horizontal and whole, as do rotations below ~2.9 degrees.
    flat = np.abs(angles) < 1e-6
    assert 0.3 < flat.mean() < 0.75
    np.testing.assert_array_equal(total[flat], 21.0)


def test_pipeline_argument_validation():
    x, y = toy_images()
    for batch_size in (0, -1, 2.5, True):
        with pytest.raises(ValueError) as info:
            make_pipeline(x, y, batch_size=batch_size)
        assert_one_line(info, "batch_size must be a positive integer")
    with pytest.raises(ValueError) as info:
        make_pipeline(x, y, batch_size=2, augment="mixup")
    assert_one_line(
        info,
        "unknown augment 'mixup'; use None, 'flip_crop', 'flip_rotate' or "
        "'flip_rotate_or_crop'",
    )
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
