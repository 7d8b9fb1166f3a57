"""Is a user-given value a number? Hydra passes `true`, `inf` and `abc` through as given, and Python counts a
bool as an int, so an option that takes a number says no to those itself, with its own one-line message."""

from __future__ import annotations

import math
import numbers
from typing import Any


def is_number(value: Any) -> bool:
    """An int or float (inf and nan included), never a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_finite_number(value: Any) -> bool:
    """A number that is neither inf nor nan."""
    return is_number(value) and math.isfinite(value)


def is_whole_number(value: Any) -> bool:
    """An int, never a bool (a float such as 1.5 or 2.0 is not one)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
