"""`ImageDataset`, the in-memory image classification dataset every source returns, and
`DataError`, the one-line error of every source."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

__all__ = ["DataError", "ImageDataset", "from_uint8", "to_float"]


class DataError(ValueError):
    """A dataset is missing, malformed or inconsistent; the message is one line saying what
    was looked for, where, and what to do."""


@dataclasses.dataclass(frozen=True, eq=False)
class ImageDataset:
    """An image classification dataset held in memory, split into train and test.

    # Arguments
        name: the dataset's name (`mnist`, `fashion_mnist`, `cifar10`, or a folder's name).
        x_train: float32 images in [0, 1], shape (N, H, W, C).
        y_train: int64 labels in [0, num_classes), shape (N,).
        x_test: float32 images in [0, 1], shape (M, H, W, C).
        y_test: int64 labels, shape (M,).
        class_names: one name per class, in label order.
        source: where the data was read from.

    # Raises
        DataError: if shapes, dtypes, image/label counts or label values are inconsistent.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]
    source: str = ""

    def __post_init__(self):
        set_ = object.__setattr__
        set_(self, "class_names", tuple(str(name) for name in self.class_names))
        for split in ("train", "test"):
            x, y = (
                np.asarray(getattr(self, f"x_{split}")),
                np.asarray(getattr(self, f"y_{split}")),
            )
            where = f"{self.name}: x_{split}"
            if x.ndim != 4 or not np.issubdtype(x.dtype, np.floating):
                raise DataError(
                    f"{where} must be float images in [0, 1] of shape (N, H, W, C), "
                    f"got {x.dtype} {x.shape} (from {self.source})"
                )
            if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
                raise DataError(
                    f"{self.name}: y_{split} must be integer labels of shape (N,), "
                    f"got {y.dtype} {y.shape} (from {self.source})"
                )
            if len(x) != len(y):
                raise DataError(
                    f"{self.name}: {len(x)} {split} images but {len(y)} {split} labels "
                    f"(from {self.source})"
                )
            if y.size and (y.min() < 0 or y.max() >= len(self.class_names)):
                raise DataError(
                    f"{self.name}: {split} labels span [{y.min()}, {y.max()}] but there are "
                    f"{len(self.class_names)} classes (from {self.source})"
                )
            set_(self, f"x_{split}", x.astype(np.float32, copy=False))
            set_(self, f"y_{split}", y.astype(np.int64, copy=False))
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise DataError(
                f"{self.name}: train images are {self.x_train.shape[1:]} but test images are "
                f"{self.x_test.shape[1:]} (from {self.source})"
            )

    @property
    def num_classes(self) -> int:
        """The number of classes."""
        return len(self.class_names)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """The shape of one image, (H, W, C)."""
        return tuple(self.x_train.shape[1:])

    def subset(
        self,
        *,
        train_indices: Sequence[int] | np.ndarray | None = None,
        test_indices: Sequence[int] | np.ndarray | None = None,
    ) -> ImageDataset:
        """Returns a dataset with the selected train and test examples (all when `None`).

        # Arguments
            train_indices: integer indices or a boolean mask into the train split.
            test_indices: integer indices or a boolean mask into the test split.

        # Returns
            A new `ImageDataset` with the same name, class names and source.
        """
        train = slice(None) if train_indices is None else np.asarray(train_indices)
        test = slice(None) if test_indices is None else np.asarray(test_indices)
        return dataclasses.replace(
            self,
            x_train=self.x_train[train],
            y_train=self.y_train[train],
            x_test=self.x_test[test],
            y_test=self.y_test[test],
        )

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, train={len(self.x_train)}, "
            f"test={len(self.x_test)}, input_shape={self.input_shape}, "
            f"num_classes={self.num_classes}, source={self.source!r})"
        )


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 pixels as float32 in [0, 1] (`pixel / 255`)."""
    images = images.astype(np.float32)
    images /= 255
    return images


def from_uint8(
    name: str,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    class_names: Sequence[str],
    *,
    source: str,
) -> ImageDataset:
    """An `ImageDataset` from uint8 images of shape (N, H, W, C), scaled to [0, 1].

    # Raises
        DataError: as `ImageDataset`.
    """
    return ImageDataset(
        name,
        x_train=to_float(x_train),
        y_train=y_train,
        x_test=to_float(x_test),
        y_test=y_test,
        class_names=class_names,
        source=source,
    )
