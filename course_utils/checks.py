"""Argument checks shared by the whole library, with one convention.

A value of the wrong *type* raises ``TypeError``; a value of the right type but
outside its range raises ``ValueError``. Both messages name the argument, say
what it must be and what was given, so a reader can fix the call without
opening the source::

    check_int("n_layer", 0, minimum=1)   # ValueError: n_layer must be an int >= 1, got 0
    check_int("n_layer", 2.0, minimum=1) # TypeError: n_layer must be an int, got float
    check_number("lr", 0.0, low=0, low_open=True)  # ValueError: lr must be a number > 0, got 0.0

``bool`` is a subclass of ``int`` in Python, but ``True`` is never accepted
where a count or a number is expected: it is almost always a mistake.
Each check returns the value (as a plain ``int``, ``float`` or ``bool``), so it
can be used inline: ``self.k = check_number("k", k, low=0)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Container
from typing import Any

__all__ = ["check_int", "check_number", "check_bool", "check_one_of"]


def _range(low: float | None, high: float | None, low_open: bool = False, high_open: bool = False) -> str:
    """The allowed range in words. Example: ``_range(0, 1, high_open=True)`` -> ``"in [0, 1)"``."""
    if low is not None and high is not None:
        return f"in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    if low is not None:
        return f"{'>' if low_open else '>='} {low}"
    if high is not None:
        return f"{'<' if high_open else '<='} {high}"
    return ""


def _hint(hint: str) -> str:
    return f" ({hint})" if hint else ""


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None, hint: str = "") -> int:
    """``value`` as an ``int``: an integer (numpy integers too, not a bool) in ``[minimum, maximum]``.

    ``hint`` is added to the message in parentheses. Examples:
    ``check_int("n", 3, minimum=1)`` -> ``3``;
    ``check_int("top_k", 0, minimum=1, hint="or None for no top-k")`` -> ValueError
    ``top_k must be an int >= 1 (or None for no top-k), got 0``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an int{_hint(hint)}, got {type(value).__name__}")
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be an int {_range(minimum, maximum)}{_hint(hint)}, got {value!r}")
    return int(value)


def check_number(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                 low_open: bool = False, high_open: bool = False, allow_inf: bool = False, hint: str = "") -> float:
    """``value`` as a ``float``: a real number (not a bool) between ``low`` and ``high``.

    The bounds are included unless ``low_open`` / ``high_open``; ``None`` means
    no bound. NaN is always refused, infinities unless ``allow_inf``.
    Examples: ``check_number("dropout", 0.1, 0, 1, high_open=True)`` -> ``0.1``;
    ``check_number("top_p", 1.5, 0, 1, low_open=True)`` -> ValueError
    ``top_p must be a number in (0, 1], got 1.5``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number{_hint(hint)}, got {type(value).__name__}")
    in_range = ((low is None or (value > low if low_open else value >= low))
                and (high is None or (value < high if high_open else value <= high)))
    if not in_range or math.isnan(value) or (math.isinf(value) and not allow_inf):
        bounded = low is not None and high is not None  # then the range itself says "finite"
        what = "a number" if allow_inf or bounded else "a finite number"
        bounds = _range(low, high, low_open, high_open)
        raise ValueError(f"{name} must be {what}{' ' + bounds if bounds else ''}{_hint(hint)}, got {value!r}")
    return float(value)


def check_bool(name: str, value: Any) -> bool:
    """``value`` if it is ``True`` or ``False``; TypeError otherwise (``1`` and ``"yes"`` are not bools).
    Example: ``check_bool("progress", "yes")`` -> TypeError ``progress must be True or False, got 'yes'``."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_one_of(name: str, value: Any, choices: Container) -> Any:
    """``value`` if it is one of ``choices``; ValueError otherwise.
    Example: ``check_one_of("cell", "gru", ("rnn", "lstm"))`` -> ValueError
    ``cell must be one of ('rnn', 'lstm'), got 'gru'``."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value
