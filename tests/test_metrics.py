"""Tests for training/metrics.py on small hand-computed accuracy matrices."""

import json

import numpy as np
import pytest

from training.metrics import (
    average_accuracy,
    average_accuracy_curve,
    backward_transfer,
    forgetting,
    summarize,
)

# Three tasks; task 0 peaks after task 1 (0.92), so forgetting != -BWT.
R3 = np.array(
    [
        [0.90, 0.10, 0.20],
        [0.92, 0.95, 0.30],
        [0.60, 0.85, 0.90],
    ]
)
# Two tasks trained, four evaluated (columns 2 and 3 never trained).
R_WIDE = np.array(
    [
        [0.80, 0.10, 0.30, 0.50],
        [0.70, 0.90, 0.20, 0.40],
    ]
)


def test_average_accuracy():
    assert average_accuracy(R3) == pytest.approx((0.60 + 0.85 + 0.90) / 3)
    assert average_accuracy(R3, after_task=0) == pytest.approx(0.90)
    assert average_accuracy(R3, after_task=1) == pytest.approx((0.92 + 0.95) / 2)
    assert average_accuracy(R3, after_task=-2) == pytest.approx((0.92 + 0.95) / 2)
    assert average_accuracy(R3, after_task=0, seen_only=False) == pytest.approx(0.40)
    assert average_accuracy(R_WIDE) == pytest.approx(0.80)
    assert average_accuracy(R_WIDE, seen_only=False) == pytest.approx(0.55)
    assert isinstance(average_accuracy(R3), float)


def test_average_accuracy_curve():
    np.testing.assert_allclose(
        average_accuracy_curve(R3), [0.90, 0.935, 2.35 / 3], rtol=0, atol=1e-12
    )
    np.testing.assert_allclose(average_accuracy_curve(R_WIDE), [0.80, 0.80], atol=1e-12)


def test_backward_transfer():
    # ((0.60 - 0.90) + (0.85 - 0.95)) / 2
    assert backward_transfer(R3) == pytest.approx(-0.20)
    assert backward_transfer(R_WIDE) == pytest.approx(-0.10)
    assert backward_transfer([[0.5, 0.1], [0.7, 0.6]]) == pytest.approx(0.20)
    assert backward_transfer([[0.42]]) == 0.0


def test_forgetting():
    # Task 0: max(0.90, 0.92) - 0.60; task 1: 0.95 - 0.85.
    np.testing.assert_allclose(forgetting(R3), [0.32, 0.10], atol=1e-12)
    np.testing.assert_allclose(forgetting(R_WIDE), [0.10], atol=1e-12)
    # Improvement after the last task gives negative forgetting.
    np.testing.assert_allclose(forgetting([[0.5, 0.0], [0.7, 0.6]]), [-0.2], atol=1e-12)
    assert forgetting([[0.42, 0.1]]).shape == (0,)


def test_summarize_is_json_serialisable():
    summary = summarize(R3, task_names=["a", "b", "c"])
    assert json.loads(json.dumps(summary)) == summary
    assert summary["num_tasks_trained"] == 3
    assert summary["num_tasks_evaluated"] == 3
    assert summary["final_average_accuracy"] == pytest.approx(2.35 / 3)
    assert summary["average_accuracy_curve"] == pytest.approx([0.90, 0.935, 2.35 / 3])
    assert summary["backward_transfer"] == pytest.approx(-0.20)
    assert summary["forgetting"] == pytest.approx({"a": 0.32, "b": 0.10})
    assert summary["average_forgetting"] == pytest.approx(0.21)
    assert summary["final_accuracy"] == pytest.approx({"a": 0.60, "b": 0.85, "c": 0.90})
    assert summary["accuracy_matrix"] == R3.tolist()
    assert all(type(v) is float for v in summary["average_accuracy_curve"])


def test_summarize_defaults_and_single_task():
    summary = summarize([[0.75, 0.25]])
    assert json.loads(json.dumps(summary)) == summary
    assert summary["task_names"] == ["task_1", "task_2"]
    assert summary["backward_transfer"] == 0.0
    assert summary["forgetting"] == {}
    assert summary["average_forgetting"] == 0.0
    assert summary["final_accuracy"] == {"task_1": 0.75, "task_2": 0.25}


@pytest.mark.parametrize(
    "matrix, message",
    [
        (np.zeros(3), "must be 2-D"),
        (np.zeros((2, 2, 2)), "must be 2-D"),
        (np.zeros((0, 3)), "no rows"),
        (np.zeros((3, 2)), "fewer columns than rows"),
        ([[0.5, float("nan")]], "NaN"),
        ([[0.5, 1.2]], "[0, 1]"),
        ([[-0.1, 0.5]], "[0, 1]"),
        ([[0.5], [0.5, 0.5]], "rectangular"),
        ([["a"]], "rectangular array of numbers"),
    ],
)
def test_invalid_matrices(matrix, message):
    functions = (
        average_accuracy,
        average_accuracy_curve,
        backward_transfer,
        forgetting,
        summarize,
    )
    for function in functions:
        with pytest.raises(ValueError) as error:
            function(matrix)
        assert message in str(error.value)
        assert "\n" not in str(error.value)


def test_invalid_arguments():
    with pytest.raises(ValueError, match="after_task=3 is out of range for 3"):
        average_accuracy(R3, after_task=3)
    with pytest.raises(ValueError, match="after_task=-4"):
        average_accuracy(R3, after_task=-4)
    with pytest.raises(ValueError, match="expected 3 task names"):
        summarize(R3, task_names=["a", "b"])
    with pytest.raises(ValueError, match="unique"):
        summarize(R3, task_names=["a", "b", "a"])
