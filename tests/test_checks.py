"""The argument checks of course_utils.checks: one convention for the whole library.

A wrong type is a TypeError, a right type with a wrong value a ValueError, and
the message names the argument, the rule and what was given."""

import math

import numpy as np
import pytest

from course_utils.checks import check_bool, check_int, check_number, check_one_of


def test_check_int_accepts_and_returns_plain_ints():
    assert check_int("n", 3, minimum=1) == 3
    assert check_int("n", 0) == 0
    got = check_int("n", np.int64(5), minimum=0, maximum=5)  # numpy integers count as ints
    assert got == 5 and type(got) is int


@pytest.mark.parametrize("value, error, message", [
    (0, ValueError, "n must be an int >= 1, got 0"),
    (-2, ValueError, "n must be an int >= 1, got -2"),
    (1.0, TypeError, "n must be an int, got float"),
    (True, TypeError, "n must be an int, got bool"),  # True is an int to Python, never a count here
    ("3", TypeError, "n must be an int, got str"),
    (None, TypeError, "n must be an int, got NoneType"),
])
def test_check_int_wrong_type_is_type_error_wrong_value_is_value_error(value, error, message):
    with pytest.raises(error) as info:
        check_int("n", value, minimum=1)
    assert str(info.value) == message


def test_check_int_bounds_and_hint():
    with pytest.raises(ValueError) as info:
        check_int("eos", 20, 0, 19, hint="the vocabulary")
    assert str(info.value) == "eos must be an int in [0, 19] (the vocabulary), got 20"
    with pytest.raises(ValueError, match=r"k must be an int <= 4, got 5"):
        check_int("k", 5, maximum=4)


def test_check_number():
    assert check_number("p", 1, 0, 1) == 1.0 and type(check_number("p", 1, 0, 1)) is float
    assert check_number("x", -1e9) == -1e9  # no bounds: any finite number
    assert check_number("t", math.inf, low=0, allow_inf=True) == math.inf
    cases = [
        (dict(value=0.0, low=0, low_open=True), "lr must be a finite number > 0, got 0.0"),
        (dict(value=1.5, low=0, high=1, low_open=True), "lr must be a number in (0, 1], got 1.5"),
        (dict(value=1.0, low=0, high=1, high_open=True), "lr must be a number in [0, 1), got 1.0"),
        (dict(value=math.nan, low=0, high=1), "lr must be a number in [0, 1], got nan"),
        (dict(value=math.inf, low=0), "lr must be a finite number >= 0, got inf"),
        (dict(value=math.nan, low=0, allow_inf=True), "lr must be a number >= 0, got nan"),
        (dict(value=2.0, high=1, hint="a rate"), "lr must be a finite number <= 1 (a rate), got 2.0"),
    ]
    for kwargs, message in cases:
        with pytest.raises(ValueError) as info:
            check_number("lr", **kwargs)
        assert str(info.value) == message
    for bad, type_name in ((True, "bool"), ("0.1", "str"), (None, "NoneType")):
        with pytest.raises(TypeError) as info:
            check_number("lr", bad, low=0)
        assert str(info.value) == f"lr must be a number, got {type_name}"


def test_check_bool_and_check_one_of():
    assert check_bool("progress", False) is False
    for bad in (1, "yes", None):
        with pytest.raises(TypeError, match=r"progress must be True or False, got"):
            check_bool("progress", bad)
    assert check_one_of("cell", "lstm", ("rnn", "lstm")) == "lstm"
    with pytest.raises(ValueError) as info:
        check_one_of("cell", "gru", ("rnn", "lstm"))
    assert str(info.value) == "cell must be one of ('rnn', 'lstm'), got 'gru'"
