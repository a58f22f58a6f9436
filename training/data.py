"""The `tf.data` pipelines that feed an image dataset to Keras, and the datasets' re-exports.

`make_pipeline` batches a dataset with seeded, per-epoch reshuffling, the paper's CIFAR
augmentations, and an optional per-batch `transform`, such as the fixed pixel permutation
of a permuted-MNIST task (no copy of the data per task).

The datasets themselves (`load_dataset`, `ImageDataset`, `DataError`, `read_idx`) live in
`zoo.datasets`; they are re-exported here, so `training.data.load_dataset` keeps working.

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

import math
import weakref
from collections.abc import Callable, Sequence

import numpy as np
import tensorflow as tf

from zoo.datasets import (
    CACHE_DIR_ENV,
    DATA_DIR_ENV,
    DataError,
    ImageDataset,
    load_dataset,
    read_idx,
)
from zoo.validation import check_positive_int

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

# The CIFAR augmentations. "flip_rotate_or_crop" is the reference code's (Laborieux et
# al. 2021, stream CIFAR-10): a random horizontal flip, then, per image, either a random
# rotation of up to 10 degrees or a random crop of the image padded by replicating its
# edges. "flip_crop" (zero padding) and "flip_rotate" (up to 15 degrees, bilinear) each
# apply one kind of transformation to every image.
AUGMENTATIONS = ("flip_crop", "flip_rotate", "flip_rotate_or_crop")
CROP_PADDING = 4
MAX_ROTATION_DEGREES = 15.0
# flip_rotate_or_crop's rotation: torchvision's RandomRotation(10) of the reference code.
REFERENCE_ROTATION_DEGREES = 10.0
# flip_rotate_or_crop's probability of rotating an image (else it is cropped): the
# reference's RandomChoice between two transformations.
ROTATION_PROBABILITY = 0.5


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

    The host copy of `x` (and of `y`) is made at the first pipeline of that array and
    shared by every later pipeline of the same array object, for as long as the array
    lives: a new pipeline per epoch (as `training.runner` makes, to resume exactly) costs
    no memory, even before the garbage collector frees the old one. So a pipeline reads
    the array as it was at its first pipeline: to feed modified values, pass a new array
    (`x.copy()`), not the same one modified in place.

    # Arguments
        x: float images in [0, 1], shape (N, H, W, C).
        y: integer labels, shape (N,).
        batch_size: examples per batch.
        shuffle: whether to shuffle the whole set, differently each epoch.
        seed: seed of the shuffle and the augmentation; `None` for a random one.
        augment: `None`, `"flip_crop"` (random horizontal flip, then a random crop of the
            image zero-padded by 4 pixels), `"flip_rotate"` (random horizontal flip, then
            a random rotation of up to 15 degrees either way, bilinear) or
            `"flip_rotate_or_crop"` (the reference code's: random horizontal flip, then
            with equal probability a random rotation of up to 10 degrees either way,
            nearest-neighbour, or a random crop of the image padded by 4 pixels that
            replicate its edges; see `_augment`).
        transform: a function applied to each batch of images, after augmentation, such
            as `permutation_transform(perm)`.
        drop_remainder: whether to drop the last batch if it is smaller.
        prefetch: whether to prefetch batches.

    # Returns
        A `tf.data.Dataset` that can be iterated for any number of epochs.

    # Raises
        ValueError: if an argument is invalid.
    """
    check_positive_int(batch_size, "batch_size")
    if augment is not None and augment not in AUGMENTATIONS:
        names = ", ".join(map(repr, AUGMENTATIONS[:-1]))
        raise ValueError(
            f"unknown augment {augment!r}; use None, {names} or {AUGMENTATIONS[-1]!r}"
        )
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

    images = _host_tensor(x, np.float32)
    labels = _host_tensor(y, np.int64)
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


# Host copies of the arrays given to `make_pipeline`, by (id(array), dtype); an entry
# leaves when its array is freed (`weakref.finalize`), so an id is never reused stale.
_HOST_TENSORS: dict[tuple[int, str], tf.Tensor] = {}


def _host_tensor(array: np.ndarray, dtype: type) -> tf.Tensor:
    """The host `tf.Tensor` copy of `array` as `dtype`, made once per array object.

    A pipeline's tensors are only freed with its traced functions, which sit in
    reference cycles: without this cache, a pipeline per epoch would hold one more copy
    of the training set per epoch until the cyclic garbage collector runs.
    """
    key = (id(array), np.dtype(dtype).str)
    tensor = _HOST_TENSORS.get(key)
    if tensor is None:
        with tf.device("/cpu:0"):  # the input pipeline runs on the host
            tensor = tf.constant(array.astype(dtype, copy=False))
        _HOST_TENSORS[key] = tensor
        weakref.finalize(array, _HOST_TENSORS.pop, key, None).atexit = False
    return tensor


def _augment(images: tf.Tensor, kind: str, random: tf.Tensor) -> tf.Tensor:
    """Augments a batch with stateless random ops seeded by `random`, one draw per image.

    Every kind first flips each image horizontally with probability 1/2, then:

    - `"flip_crop"`: shifts it by (dx, dy), each uniform in {-4, ..., 4}, filling with
      zeros: a random 32x32 crop of the image zero-padded by 4 pixels.
    - `"flip_rotate"`: rotates it about its centre by an angle uniform in [-15, 15]
      degrees, bilinear interpolation, zero fill.
    - `"flip_rotate_or_crop"`: the reference code's CIFAR-10 augmentation (Laborieux et
      al. 2021, stream CIFAR-10: torchvision's `RandomHorizontalFlip(0.5)` then
      `RandomChoice([RandomRotation(10), RandomCrop(32, padding=4,
      padding_mode="edge")])`): with probability 1/2 a rotation about the centre by an
      angle uniform in [-10, 10] degrees, nearest-neighbour like PIL's default, zero
      fill; otherwise a shift as in `"flip_crop"` but filled by replicating the edge
      pixels: a random crop of the edge-padded image. Both keep the pixel values
      (no interpolation between pixels).
    """
    n = tf.shape(images)[0]
    flip = tf.random.stateless_uniform([n], seed=tf.stack([random, 0])) < 0.5
    images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)
    seed = tf.stack([random, 1])
    if kind == "flip_crop":
        return _transform(images, _shift_transforms(n, seed), "NEAREST", "CONSTANT")
    if kind == "flip_rotate":
        transforms = _rotation_transforms(images, MAX_ROTATION_DEGREES, seed)
        return _transform(images, transforms, "BILINEAR", "CONSTANT")
    rotations = _rotation_transforms(images, REFERENCE_ROTATION_DEGREES, seed)
    rotated = _transform(images, rotations, "NEAREST", "CONSTANT")
    shifts = _shift_transforms(n, tf.stack([random, 2]))
    cropped = _transform(images, shifts, "NEAREST", "NEAREST")  # edge replication
    rotate = (
        tf.random.stateless_uniform([n], seed=tf.stack([random, 3]))
        < ROTATION_PROBABILITY
    )
    return tf.where(rotate[:, None, None, None], rotated, cropped)


def _shift_transforms(n: tf.Tensor, seed: tf.Tensor) -> tf.Tensor:
    """Projective transforms, (n, 8): output (x, y) reads input (x + dx, y + dy), with
    dx and dy uniform integers in [-CROP_PADDING, CROP_PADDING]: a crop of the padded
    image."""
    shift = tf.random.stateless_uniform(
        [n, 2], seed=seed, minval=-CROP_PADDING, maxval=CROP_PADDING + 1, dtype=tf.int32
    )
    shift = tf.cast(shift, tf.float32)
    zeros, ones = tf.zeros([n]), tf.ones([n])
    return tf.stack(
        [ones, zeros, shift[:, 0], zeros, ones, shift[:, 1], zeros, zeros], axis=1
    )


def _rotation_transforms(
    images: tf.Tensor, max_degrees: float, seed: tf.Tensor
) -> tf.Tensor:
    """Projective transforms, (n, 8): rotations about the image centre (as in Keras'
    RandomRotation) by angles uniform in [-max_degrees, max_degrees]."""
    n = tf.shape(images)[0]
    limit = math.radians(max_degrees)
    angle = tf.random.stateless_uniform([n], seed=seed, minval=-limit, maxval=limit)
    height = tf.cast(tf.shape(images)[1], tf.float32) - 1
    width = tf.cast(tf.shape(images)[2], tf.float32) - 1
    cos, sin = tf.cos(angle), tf.sin(angle)
    x_offset = (width - (cos * width - sin * height)) / 2
    y_offset = (height - (sin * width + cos * height)) / 2
    zeros = tf.zeros([n])
    return tf.stack([cos, -sin, x_offset, sin, cos, y_offset, zeros, zeros], axis=1)


def _transform(
    images: tf.Tensor, transforms: tf.Tensor, interpolation: str, fill_mode: str
) -> tf.Tensor:
    """Applies one projective transform per image; outside the image, `fill_mode`
    `"CONSTANT"` reads zeros and `"NEAREST"` the nearest edge pixel."""
    output = tf.raw_ops.ImageProjectiveTransformV3(
        images=images,
        transforms=transforms,
        output_shape=tf.shape(images)[1:3],
        fill_value=0.0,
        interpolation=interpolation,
        fill_mode=fill_mode,
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
    check_positive_int(num_pixels, "num_pixels")
    return np.random.default_rng(seed).permutation(num_pixels).astype(np.int64)


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
