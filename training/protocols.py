"""Continual-learning protocols: the sequences of tasks a network learns one after another.

A `Task` is training and test data plus an optional fixed pixel permutation applied inside
the `tf.data` pipeline (no copy of the dataset per task). The builders return lists of
tasks:

- `permuted_tasks`: N permutations of one dataset (permuted MNIST, Fig. 2 of the paper);
- `dataset_sequence`: different datasets of the same image shape (MNIST -> Fashion-MNIST);
- `stream_subsets`: one dataset split into K class-balanced subsets learned in turn, all
  evaluated on the full test set (stream Fashion-MNIST / CIFAR-10, Fig. 3);
- `joint_task`: the union of tasks, shuffled together: the non-sequential upper bound.

!!! example
    ```python
    from training.protocols import permuted_tasks
    from zoo.datasets import load_dataset

    tasks = permuted_tasks(load_dataset("mnist"), num_tasks=5, seed=0)
    train = tasks[1].train_data(batch_size=100, seed=0)
    ```
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf

from training.data import make_pipeline, permutation_transform, random_permutation
from zoo.datasets import ImageDataset
from zoo.validation import check_choice, check_positive_int

__all__ = ["Task", "permuted_tasks", "dataset_sequence", "stream_subsets", "joint_task"]


@dataclass(frozen=True, eq=False)
class Task:
    """One task of a protocol: data, and the pixel permutation that defines it (if any).

    # Arguments
        name: a short name used in metrics and plots (`task_1`, `fashion_mnist`, ...).
        x_train, y_train, x_test, y_test: images (float32 in [0, 1], NHWC) and labels.
        permutation: optional permutation of the H*W pixel positions, applied to every
            image of this task inside the pipeline.
        members: for a joint task, the tasks whose union it is.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    permutation: np.ndarray | None = None
    members: tuple[Task, ...] = field(default=())

    @property
    def num_train(self) -> int:
        return (
            sum(len(t.y_train) for t in self.members)
            if self.members
            else len(self.y_train)
        )

    def test_images(self) -> np.ndarray:
        """The test images as the model sees them: permuted, if this task permutes.

        # Returns
            A float32 array shaped as `x_test`.
        """
        if self.permutation is None:
            return self.x_test
        n, height, width, channels = self.x_test.shape
        flat = self.x_test.reshape(n, height * width, channels)[:, self.permutation]
        return flat.reshape(self.x_test.shape)

    def _transform(self):
        return (
            None
            if self.permutation is None
            else permutation_transform(self.permutation)
        )

    def train_data(
        self, *, batch_size: int, seed: int, augment: str | None = None
    ) -> tf.data.Dataset:
        """Shuffled training batches; the same seed gives the same order.

        # Arguments
            batch_size: samples per batch.
            seed: shuffling (and augmentation) seed.
            augment: `None`, `"flip_crop"` or `"flip_rotate"` (see `training.data`).

        # Returns
            A `tf.data.Dataset` of `(images, labels)` batches.
        """
        if not self.members:
            return make_pipeline(
                self.x_train,
                self.y_train,
                batch_size=batch_size,
                shuffle=True,
                seed=seed,
                augment=augment,
                transform=self._transform(),
            )
        # Joint task: every member's samples (with its own permutation), mixed at the
        # sample level so that each batch holds all tasks.
        parts = [
            member.train_data(batch_size=1024, seed=seed + i, augment=augment).unbatch()
            for i, member in enumerate(self.members)
        ]
        sizes = np.array([len(m.y_train) for m in self.members], dtype="float64")
        mixed = tf.data.Dataset.sample_from_datasets(
            parts,
            weights=list(sizes / sizes.sum()),
            seed=seed,
            stop_on_empty_dataset=False,
        )
        return mixed.batch(batch_size).prefetch(tf.data.AUTOTUNE)

    def test_data(self, *, batch_size: int = 1000) -> tf.data.Dataset:
        """Test batches in a fixed order (for a joint task: those of its first member)."""
        if self.members:
            return self.members[0].test_data(batch_size=batch_size)
        return make_pipeline(
            self.x_test, self.y_test, batch_size=batch_size, transform=self._transform()
        )


def permuted_tasks(
    dataset: ImageDataset, *, num_tasks: int, seed: int = 0, identity_first: bool = True
) -> list[Task]:
    """Tasks that each apply one fixed random pixel permutation to the whole dataset.

    # Arguments
        dataset: the dataset to permute (e.g. MNIST).
        num_tasks: number of tasks.
        seed: seed of the permutations: the same seed gives the same tasks.
        identity_first: task 1 is the unpermuted dataset.

    # Returns
        A list of `Task`s named `task_1` ... `task_N`.

    # Raises
        ValueError: if `num_tasks` is not a positive integer.
    """
    check_positive_int(num_tasks, "num_tasks")
    height, width = dataset.input_shape[:2]
    rng = np.random.default_rng(seed)
    tasks = []
    for index in range(num_tasks):
        permutation = None
        if index > 0 or not identity_first:
            permutation = random_permutation(
                height * width, seed=int(rng.integers(2**31))
            )
        tasks.append(
            Task(
                f"task_{index + 1}",
                dataset.x_train,
                dataset.y_train,
                dataset.x_test,
                dataset.y_test,
                permutation,
            )
        )
    return tasks


def dataset_sequence(datasets: Sequence[ImageDataset]) -> list[Task]:
    """One task per dataset, in the given order (e.g. MNIST then Fashion-MNIST).

    # Raises
        ValueError: if the datasets are empty or differ in image shape or class count.
    """
    if not datasets:
        raise ValueError("dataset_sequence needs at least one dataset.")
    first = datasets[0]
    for other in datasets[1:]:
        if (
            other.input_shape != first.input_shape
            or other.num_classes != first.num_classes
        ):
            raise ValueError(
                f"{other.name} has images {other.input_shape} and {other.num_classes} "
                f"classes but {first.name} has {first.input_shape} and "
                f"{first.num_classes}; a sequence needs one shape and class count."
            )
    names = [d.name for d in datasets]
    return [
        Task(
            name if names.count(name) == 1 else f"{name}_{i + 1}",
            d.x_train,
            d.y_train,
            d.x_test,
            d.y_test,
        )
        for i, (name, d) in enumerate(zip(names, datasets))
    ]


STREAM_SPLITS = ("balanced", "chunks")


def stream_subsets(
    dataset: ImageDataset, *, num_subsets: int, seed: int = 0, split: str = "balanced"
) -> list[Task]:
    """Splits the training set into subsets learned one after another.

    `split="balanced"`: every subset holds the same number of samples of each class,
    `n // num_subsets` with `n` the size of the rarest class (the rest is dropped);
    Fashion-MNIST in 60 subsets: 1,000 images, 100 per class. `split="chunks"`: one
    seeded random permutation of the training set cut into `num_subsets` consecutive
    chunks of `N // num_subsets` images (the reference code's split; class counts vary
    from subset to subset). All subsets share the full test set.

    # Arguments
        dataset: the dataset to stream (e.g. Fashion-MNIST, 60 subsets in the paper).
        num_subsets: number of subsets.
        seed: seed of the split.
        split: `"balanced"` or `"chunks"`.

    # Returns
        A list of `Task`s named `subset_1` ... `subset_K`.

    # Raises
        ValueError: if `num_subsets` is not positive or exceeds a class's sample count.
    """
    check_positive_int(num_subsets, "num_subsets")
    check_choice(split, "split", STREAM_SPLITS)
    rng = np.random.default_rng(seed)
    if split == "chunks":
        size = len(dataset.y_train) // num_subsets
        if size == 0:
            raise ValueError(
                f"{dataset.name} has {len(dataset.y_train)} training samples, fewer "
                f"than num_subsets={num_subsets}."
            )
        order = rng.permutation(len(dataset.y_train))[: size * num_subsets]
        return _subsets(dataset, np.sort(order.reshape(num_subsets, size), axis=1))
    by_class = [
        np.flatnonzero(dataset.y_train == c) for c in np.unique(dataset.y_train)
    ]
    per_subset = min(len(i) for i in by_class) // num_subsets
    if per_subset == 0:
        raise ValueError(
            f"the rarest class of {dataset.name} has {min(len(i) for i in by_class)} training "
            f"samples, fewer than num_subsets={num_subsets}."
        )
    # Each subset takes `per_subset` shuffled samples of every class.
    per_class = [
        rng.permutation(i)[: per_subset * num_subsets].reshape(num_subsets, -1)
        for i in by_class
    ]
    return _subsets(
        dataset,
        [
            np.sort(np.concatenate([chunks[k] for chunks in per_class]))
            for k in range(num_subsets)
        ],
    )


def _subsets(dataset: ImageDataset, indices: Sequence[np.ndarray]) -> list[Task]:
    """One task per row of training indices, all with the full test set."""
    return [
        Task(
            f"subset_{k + 1}",
            dataset.x_train[rows],
            dataset.y_train[rows],
            dataset.x_test,
            dataset.y_test,
        )
        for k, rows in enumerate(indices)
    ]


def joint_task(tasks: Sequence[Task], name: str = "joint") -> Task:
    """The union of `tasks`, trained at once: the non-sequential reference.

    Stream subsets (which share one test set and have no permutation) are merged into
    one plain task; otherwise each member keeps its permutation.
    """
    if not tasks:
        raise ValueError("joint_task needs at least one task.")
    if all(t.permutation is None and t.x_test is tasks[0].x_test for t in tasks):
        return Task(
            name,
            np.concatenate([t.x_train for t in tasks]),
            np.concatenate([t.y_train for t in tasks]),
            tasks[0].x_test,
            tasks[0].y_test,
        )
    first = tasks[0]
    return Task(
        name,
        first.x_train[:0],
        first.y_train[:0],
        first.x_test,
        first.y_test,
        members=tuple(tasks),
    )
