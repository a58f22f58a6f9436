"""Test configuration: two logical CPU devices, so that tf.distribute is testable here."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

# Must run before TensorFlow initialises its runtime; harmless for single-device tests.
_cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    _cpu, [tf.config.LogicalDeviceConfiguration()] * 2
)


import gzip  # noqa: E402
import struct  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402


def write_idx(path, array: np.ndarray) -> None:
    """Writes `array` (uint8) as a gzipped IDX file, the format of MNIST's files."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape
    )
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def tiny_images(n: int, seed: int, size: int = 8, classes: int = 4):
    """Learnable tiny images: each class lights its own block of pixels, plus noise."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    images = rng.integers(0, 60, (n, size, size))
    for c in range(classes):
        rows = slice(c * size // classes, (c + 1) * size // classes)
        images[labels == c, rows, :] += 180
    return images.clip(0, 255).astype(np.uint8), labels.astype(np.uint8)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory):
    """A data directory with MNIST- and Fashion-MNIST-like IDX files of 8x8 images."""
    root = tmp_path_factory.mktemp("data")
    for offset, folder in enumerate(("mnist", "fashion-mnist")):
        (root / folder).mkdir()
        for split, n, seed in (("train", 240, 1), ("t10k", 80, 2)):
            x, y = tiny_images(n, seed + 10 * offset)
            write_idx(root / folder / f"{split}-images-idx3-ubyte.gz", x)
            write_idx(root / folder / f"{split}-labels-idx1-ubyte.gz", y)
    return root


@pytest.fixture(scope="session")
def mirrored_strategy():
    """One MirroredStrategy over the two logical CPUs for the whole session: strategies
    created later in one process reuse collective instance keys and clash."""
    return tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
