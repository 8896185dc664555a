"""Shared by the data modules: a check for fractions, from :mod:`course_utils.checks`.

Standard library only (no torch), so that ``python -m course_utils.data.prose``
runs under a bare interpreter: the one the prose snapshot was read from.
"""

from __future__ import annotations

from ..checks import check_number

__all__ = ["_check_fraction"]


def _check_fraction(name: str, value: float, low_open: bool = True, high_open: bool = True) -> float:
    """A number in the interval (0, 1), with ends closed where ``*_open`` is False."""
    return check_number(name, value, 0, 1, low_open=low_open, high_open=high_open)
