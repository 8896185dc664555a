"""Shared by the data modules: the label value that losses ignore and a check for fractions.

``IGNORE_INDEX`` is defined once, with the loss that skips it
(:mod:`course_utils.transformer`); the checks are those of :mod:`course_utils.checks`.
"""

from __future__ import annotations

from ..checks import check_number
from ..transformer import IGNORE_INDEX

__all__ = ["IGNORE_INDEX", "_check_fraction"]


def _check_fraction(name: str, value: float, low_open: bool = True, high_open: bool = True) -> float:
    """A number in the interval (0, 1), with ends closed where ``*_open`` is False."""
    return check_number(name, value, 0, 1, low_open=low_open, high_open=high_open)
