"""The one check of numeric arguments: every public function and command validates its numbers here.

In the manner of scikit-learn's ``validate_params``: a value is checked against a
type (an integer, a real number) and an interval, NumPy scalars count as their
Python kind, ``bool`` is never a number, and the error names the argument, the
accepted range and the received value. ``None`` passes only where the caller
says it means something (``allow_none=True``): zero always means zero, never
"the default". The module imports neither Keras nor TensorFlow, so the data
tools and the command line use it too.
"""

from __future__ import annotations

import math
import numbers

__all__ = ["check_int", "check_number", "check_positive_int"]


def _range_text(low, high, low_open: bool = False, high_open: bool = False) -> str:
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _outside(value, low, high, low_open: bool, high_open: bool) -> bool:
    if low is not None and (value <= low if low_open else value < low):
        return True
    return high is not None and (value >= high if high_open else value > high)


def check_int(value, name: str, *, low: int | None = None, high: int | None = None, allow_none: bool = False):
    """``value`` as a Python int in ``[low, high]``, or a ValueError naming ``name`` and the value.

    NumPy integers are accepted; bools, floats (even ``2.0``) and strings are not.

    Parameters
    ----------
    value : object
        What the caller received.
    name : str
        The argument's or option's name, as the user wrote it.
    low, high : int, optional
        Inclusive bounds; None leaves that side open.
    allow_none : bool
        Let ``None`` through unchanged (where None has a documented meaning).

    Examples
    --------
    >>> import numpy as np
    >>> check_int(np.int64(3), "k", low=1)
    3
    >>> check_int(0, "batch_size", low=1)
    Traceback (most recent call last):
    ...
    ValueError: `batch_size` must be an integer >= 1. Received: batch_size=0
    """
    if value is None and allow_none:
        return None
    kind = f"an integer {_range_text(low, high)}".rstrip()
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or _outside(value, low, high, False, False):
        none = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be {kind}{none}. Received: {name}={value!r}")
    return int(value)


def check_number(
    value,
    name: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    allow_none: bool = False,
) -> float | None:
    """``value`` as a finite Python float in the interval, or a ValueError naming ``name`` and the value.

    Integers and NumPy numbers are accepted; NaN, infinities, bools and strings are not.

    Parameters
    ----------
    value : object
        What the caller received.
    name : str
        The argument's or option's name.
    low, high : float, optional
        The bounds; None leaves that side open.
    low_open, high_open : bool
        Exclude the bound itself (``learning_rate`` > 0, a ratio < 1).
    allow_none : bool
        Let ``None`` through unchanged.

    Examples
    --------
    >>> check_number(1e-3, "learning_rate", low=0, low_open=True)
    0.001
    >>> check_number(float("nan"), "learning_rate", low=0, low_open=True)
    Traceback (most recent call last):
    ...
    ValueError: `learning_rate` must be a finite number > 0. Received: learning_rate=nan
    """
    if value is None and allow_none:
        return None
    kind = f"a finite number {_range_text(low, high, low_open, high_open)}".rstrip()
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(value)
        or _outside(value, low, high, low_open, high_open)
    ):
        none = " or None" if allow_none else ""
        raise ValueError(f"`{name}` must be {kind}{none}. Received: {name}={value!r}")
    return float(value)


def check_positive_int(value, name: str) -> int:
    """``check_int(value, name, low=1)``: the common case of a count or a size.

    Examples
    --------
    >>> check_positive_int(4, "batch_size")
    4
    """
    return check_int(value, name, low=1)
