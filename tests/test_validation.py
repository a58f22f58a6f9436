"""zoo/validation.py: every check accepts what it should, normalises it, and refuses the
rest with a one-line message naming the argument and the value."""

import math

import numpy as np
import pytest

from zoo.validation import (
    check_choice,
    check_nonnegative_int,
    check_positive_int,
    check_real,
    check_units,
    is_positive_int,
)


def refused(call, message):
    with pytest.raises(ValueError) as error:
        call()
    assert str(error.value) == message
    return str(error.value)


def test_is_positive_int():
    for value in (1, 7, np.int64(3), np.uint8(255)):
        assert is_positive_int(value)
    for value in (0, -1, 1.0, 2.5, True, False, "1", None, (1,), np.float32(4)):
        assert not is_positive_int(value)


def test_check_positive_int():
    accepted = check_positive_int(np.int64(5), "epochs")
    assert accepted == 5 and type(accepted) is int


@pytest.mark.parametrize(
    "value, shown", [(0, "0"), (-3, "-3"), (True, "True"), (2.0, "2.0"), ("3", "'3'")]
)
def test_check_positive_int_refuses(value, shown):
    refused(
        lambda: check_positive_int(value, "epochs"),
        f"epochs must be a positive integer, got {shown}.",
    )


def test_long_values_are_cut_to_60_characters():
    value = list(range(100))
    message = refused(
        lambda: check_positive_int(value, "n"),
        f"n must be a positive integer, got {repr(value)[:57]}....",
    )
    assert len(message) == len("n must be a positive integer, got .") + 60


def test_check_nonnegative_int():
    assert check_nonnegative_int(0, "seed") == 0
    assert type(check_nonnegative_int(np.int32(4), "seed")) is int
    for value, shown in [(-1, "-1"), (False, "False"), (0.0, "0.0")]:
        refused(
            lambda value=value: check_nonnegative_int(value, "seed"),
            f"seed must be an integer >= 0, got {shown}.",
        )


def test_check_real_accepts_and_normalises():
    accepted = check_real(np.float32(0.25), "dropout", low=0, high=1, high_open=True)
    assert accepted == 0.25 and type(accepted) is float
    assert check_real(0, "dropout", low=0, high=1, high_open=True) == 0.0
    assert check_real(2, "meta", high=2) == 2.0  # a closed bound is in
    assert check_real(-3, "shift") == -3.0  # no bounds: any finite number


@pytest.mark.parametrize(
    "value, bounds, message",
    [
        (
            1,
            dict(low=0, high=1, high_open=True),
            "a finite number >= 0 and < 1, got 1.",
        ),
        (0.0, dict(low=0, low_open=True), "a finite number > 0, got 0.0."),
        (2.5, dict(high=2), "a finite number <= 2, got 2.5."),
        (1e-4, dict(low=0.001), "a finite number >= 0.001, got 0.0001."),
        (math.nan, dict(low=0), "a finite number >= 0, got nan."),
        (math.inf, {}, "a finite number, got inf."),
        (True, {}, "a finite number, got True."),
        ("0.5", {}, "a finite number, got '0.5'."),
        (None, {}, "a finite number, got None."),
    ],
)
def test_check_real_refuses(value, bounds, message):
    refused(lambda: check_real(value, "x", **bounds), f"x must be {message}")


def test_check_choice():
    assert check_choice("stream", "protocol", ("sequence", "stream")) == "stream"
    refused(
        lambda: check_choice("streams", "protocol", ("sequence", "stream")),
        "protocol must be one of 'sequence', 'stream'; got 'streams'.",
    )
    refused(lambda: check_choice(3, "k", [1, 2]), "k must be one of 1, 2; got 3.")


def test_check_units():
    accepted = check_units([3, np.int64(4)], "hidden_units")
    assert accepted == (3, 4) and all(type(u) is int for u in accepted)
    assert check_units((1024, 1024), "dense_units") == (1024, 1024)


@pytest.mark.parametrize(
    "value", [(), [], (0,), (32, -1), (32.0,), (True,), 32, "32", b"32", None]
)
def test_check_units_refuses(value):
    refused(
        lambda: check_units(value, "hidden_units"),
        "hidden_units must be a non-empty sequence of positive integers, "
        f"got {value!r}.",
    )
