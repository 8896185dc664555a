"""Shared by the data modules: argument checks and the label value that losses ignore."""

from __future__ import annotations

from typing import Any

IGNORE_INDEX = -100  # label value that the loss ignores (PyTorch and Hugging Face default)


def _check_int(name: str, value: Any, minimum: int) -> None:
    """Raise ``TypeError`` unless ``value`` is an int (not a bool), ``ValueError`` if it is below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")


def _check_fraction(name: str, value: float, low_open: bool = True, high_open: bool = True) -> None:
    """Raise ``ValueError`` unless ``value`` is in the interval (0, 1), with ends closed where ``*_open`` is False."""
    ok = (0 < value if low_open else 0 <= value) and (value < 1 if high_open else value <= 1)
    if not ok:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise ValueError(f"{name} must be in {lo}0, 1{hi}, got {value}")

