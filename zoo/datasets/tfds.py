"""Datasets from tensorflow-datasets, the last source tried: it downloads when online."""

from __future__ import annotations

from zoo.datasets.container import DataError, ImageDataset, from_uint8

__all__ = ["load_tfds"]


def load_tfds(tfds_name: str, *, name: str) -> ImageDataset:
    """A dataset's train and test splits from tensorflow-datasets, downloaded if needed.

    # Arguments
        tfds_name: the tensorflow-datasets builder (`mnist`, `fashion_mnist`, `cifar10`).
        name: the dataset's name.

    # Returns
        An `ImageDataset` whose source names the builder and its data directory.

    # Raises
        DataError: if tensorflow-datasets is not installed, offline, or fails; one line
            with the reason.
    """
    try:
        # Imported only when the local sources have failed: it adds 0.5 s to an
        # import, and most loads read local files.
        import tensorflow_datasets as tfds

        (train, test), info = tfds.load(
            tfds_name,
            split=["train", "test"],
            batch_size=-1,
            as_supervised=True,
            with_info=True,
            download=True,
        )
        (x_train, y_train), (x_test, y_test) = tfds.as_numpy(train), tfds.as_numpy(test)
        class_names = tuple(info.features["label"].names)
        source = f"tensorflow-datasets:{tfds_name} ({info.data_dir})"
    except Exception as error:  # offline, missing builder, corrupt download...
        reason = " ".join(str(error).split())[:200]
        reason = f"{type(error).__name__}: {reason}" if reason else type(error).__name__
        raise DataError(
            f"tensorflow-datasets could not load {tfds_name} ({reason})"
        ) from None
    return from_uint8(
        name, x_train, y_train, x_test, y_test, class_names, source=source
    )
