"""Tests for training/protocols.py: task sequences, streams and joint training."""

import numpy as np
import pytest

from training.protocols import (
    dataset_sequence,
    joint_task,
    permuted_tasks,
    stream_subsets,
)
from zoo.datasets import ImageDataset


def dataset(n_train=120, n_test=40, size=4, classes=3, seed=0, name="toy"):
    rng = np.random.default_rng(seed)
    return ImageDataset(
        name=name,
        x_train=rng.uniform(size=(n_train, size, size, 1)).astype("float32"),
        y_train=np.arange(n_train, dtype="int64") % classes,
        x_test=rng.uniform(size=(n_test, size, size, 1)).astype("float32"),
        y_test=np.arange(n_test, dtype="int64") % classes,
        class_names=tuple(str(c) for c in range(classes)),
        source="memory",
    )


def all_batches(data):
    xs, ys = zip(*[(x.numpy(), y.numpy()) for x, y in data])
    return np.concatenate(xs), np.concatenate(ys)


def test_permuted_tasks_apply_their_permutation_without_copying():
    d = dataset()
    tasks = permuted_tasks(d, num_tasks=3, seed=4)
    assert [t.name for t in tasks] == ["task_1", "task_2", "task_3"]
    assert tasks[0].permutation is None
    assert all(t.x_train is d.x_train for t in tasks)  # no copy per task
    assert not np.array_equal(tasks[1].permutation, tasks[2].permutation)
    again = permuted_tasks(d, num_tasks=3, seed=4)
    np.testing.assert_array_equal(again[2].permutation, tasks[2].permutation)

    x, y = all_batches(tasks[2].test_data(batch_size=16))
    expected = d.x_test.reshape(40, 16, 1)[:, tasks[2].permutation].reshape(
        d.x_test.shape
    )
    np.testing.assert_array_equal(x, expected)
    np.testing.assert_array_equal(y, d.y_test)
    # The same images as NumPy arrays, for evaluations outside tf.data.
    np.testing.assert_array_equal(tasks[2].test_images(), x)
    assert tasks[0].test_images() is d.x_test


def test_training_order_depends_only_on_seed():
    task = permuted_tasks(dataset(), num_tasks=2, seed=0)[1]
    a = all_batches(task.train_data(batch_size=32, seed=7))[1]
    b = all_batches(task.train_data(batch_size=32, seed=7))[1]
    c = all_batches(task.train_data(batch_size=32, seed=8))[1]
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert sorted(a.tolist()) == sorted(c.tolist())


def test_stream_subsets_are_class_balanced_and_disjoint():
    d = dataset(n_train=130, classes=3)  # 44, 43, 43 samples per class
    subsets = stream_subsets(d, num_subsets=4, seed=1)
    seen = []
    for subset in subsets:
        counts = np.bincount(subset.y_train, minlength=3)
        assert counts.tolist() == [10, 10, 10]  # 43 // 4 * 4 = 40 per class kept
        assert subset.x_test is d.x_test
        seen.append(subset.x_train.reshape(len(subset.x_train), -1))
    rows = np.concatenate(seen)
    assert len(np.unique(rows, axis=0)) == 120
    with pytest.raises(ValueError, match="fewer than num_subsets"):
        stream_subsets(d, num_subsets=50)
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="num_subsets must be a positive integer"):
            stream_subsets(d, num_subsets=bad)


def test_stream_chunks_are_the_reference_split():
    # The reference: one random permutation of the training set cut into consecutive
    # chunks, so class counts vary from subset to subset.
    d = dataset(n_train=100, classes=3)
    subsets = stream_subsets(d, num_subsets=3, seed=5, split="chunks")
    assert [s.name for s in subsets] == ["subset_1", "subset_2", "subset_3"]
    flat = d.x_train.reshape(100, -1)
    rows = [  # which training images each subset holds
        np.flatnonzero(
            (flat[:, None] == s.x_train.reshape(len(s.x_train), -1)[None])
            .all(-1)
            .any(1)
        )
        for s in subsets
    ]
    expected = np.random.default_rng(5).permutation(100)[:99].reshape(3, 33)
    for got, want, subset in zip(rows, expected, subsets):
        np.testing.assert_array_equal(got, np.sort(want))
        np.testing.assert_array_equal(subset.y_train, d.y_train[np.sort(want)])
        assert subset.x_test is d.x_test
    counts = [np.bincount(s.y_train, minlength=3) for s in subsets]
    assert len({tuple(c) for c in counts}) > 1  # not balanced
    again = stream_subsets(d, num_subsets=3, seed=5, split="chunks")
    np.testing.assert_array_equal(again[1].x_train, subsets[1].x_train)
    # The default split is unchanged by the option's existence.
    balanced = stream_subsets(d, num_subsets=3, seed=5)
    assert all(np.all(np.bincount(s.y_train) == 11) for s in balanced)
    with pytest.raises(ValueError, match="split"):
        stream_subsets(d, num_subsets=3, split="random")
    with pytest.raises(ValueError, match="fewer than num_subsets"):
        stream_subsets(d, num_subsets=101, split="chunks")


def test_dataset_sequence_checks_shapes():
    tasks = dataset_sequence([dataset(name="a"), dataset(name="b", seed=1)])
    assert [t.name for t in tasks] == ["a", "b"]
    with pytest.raises(ValueError, match="needs one shape"):
        dataset_sequence([dataset(name="a"), dataset(name="c", size=5)])
    with pytest.raises(ValueError, match="num_tasks must be a positive integer"):
        permuted_tasks(dataset(), num_tasks=0)


def test_joint_task_mixes_every_task_in_each_batch():
    d = dataset(n_train=90)
    tasks = permuted_tasks(d, num_tasks=3, seed=0)
    joint = joint_task(tasks)
    assert joint.num_train == 270
    batches = list(joint.train_data(batch_size=90, seed=0))
    x = np.concatenate([b[0].numpy() for b in batches]).reshape(270, -1)
    assert len(x) == 270
    # Every sample is a sample of one of the tasks, and each task appears entirely.
    flat = d.x_train.reshape(90, -1)
    for task in tasks:
        version = flat if task.permutation is None else flat[:, task.permutation]
        matches = (x[:, None, :] == version[None]).all(-1).any(1)
        assert matches.sum() == 90
    # The first batch already holds samples of several tasks.
    first = batches[0][0].numpy().reshape(90, -1)
    identity = (first[:, None, :] == flat[None]).all(-1).any(1)
    assert 0 < identity.sum() < 90

    stream = stream_subsets(d, num_subsets=3)
    union = joint_task(stream)
    assert union.members == () and len(union.y_train) == 90
