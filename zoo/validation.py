"""Argument checks shared by the whole project: one place, one wording.

Each check returns the value it accepted (normalised: `int` for integers, `float` for
reals) and raises a one-line `ValueError` naming the argument and the value it got,
never the surrounding configuration.

```python
from zoo.validation import check_positive_int

epochs = check_positive_int(epochs, "epochs")  # ValueError: epochs must be a positive
                                               # integer, got 0.
```
"""

import math
import numbers
from typing import Any, Collection, Optional, Sequence, Tuple

__all__ = [
    "is_positive_int",
    "check_positive_int",
    "check_nonnegative_int",
    "check_real",
    "check_choice",
    "check_units",
]


def is_positive_int(value: Any) -> bool:
    """Whether `value` is an integer (not a bool) greater than 0."""
    return (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value > 0
    )


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_positive_int(value: Any, name: str) -> int:
    """Returns `value` as an int if it is a positive integer.

    # Arguments
        value: the value to check.
        name: the argument's name, for the error message.

    # Returns
        `int(value)`.

    # Raises
        ValueError: if `value` is not an integer >= 1 (bools are refused).
    """
    if not is_positive_int(value):
        raise ValueError(f"{name} must be a positive integer, got {_shown(value)}.")
    return int(value)


def check_nonnegative_int(value: Any, name: str) -> int:
    """Returns `value` as an int if it is an integer >= 0.

    # Arguments
        value: the value to check.
        name: the argument's name, for the error message.

    # Returns
        `int(value)`.

    # Raises
        ValueError: if `value` is not an integer >= 0 (bools are refused).
    """
    if not (
        isinstance(value, numbers.Integral)
        and not isinstance(value, bool)
        and value >= 0
    ):
        raise ValueError(f"{name} must be an integer >= 0, got {_shown(value)}.")
    return int(value)


def check_real(
    value: Any,
    name: str,
    *,
    low: Optional[float] = None,
    high: Optional[float] = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Returns `value` as a float if it is a finite real number within bounds.

    # Arguments
        value: the value to check.
        name: the argument's name, for the error message.
        low, high: bounds, if any.
        low_open, high_open: whether the bound itself is excluded.

    # Returns
        `float(value)`.

    # Raises
        ValueError: if `value` is not a finite real (bools are refused) or is out of
            bounds.
    """
    ok = (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(value)
    )
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        bounds = []
        if low is not None:
            bounds.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            bounds.append(f"{'<' if high_open else '<='} {high:g}")
        wanted = "a finite number" + (f" {' and '.join(bounds)}" if bounds else "")
        raise ValueError(f"{name} must be {wanted}, got {_shown(value)}.")
    return float(value)


def check_choice(value: Any, name: str, choices: Collection) -> Any:
    """Returns `value` if it is one of `choices`.

    # Raises
        ValueError: if it is not; the message lists the choices.
    """
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"{name} must be one of {listed}; got {_shown(value)}.")
    return value


def check_units(value: Any, name: str) -> Tuple[int, ...]:
    """Returns a non-empty sequence of positive layer widths as a tuple of ints.

    # Raises
        ValueError: if `value` is not a non-empty sequence of positive integers.
    """
    if (
        isinstance(value, (str, bytes))
        or not isinstance(value, Sequence)
        or not value
        or not all(is_positive_int(u) for u in value)
    ):
        raise ValueError(
            f"{name} must be a non-empty sequence of positive integers, "
            f"got {_shown(value)}."
        )
    return tuple(int(u) for u in value)
