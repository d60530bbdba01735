import argparse

import pytest

from edge_detect.cli._types import non_negative_int, positive_float, positive_int, unit_float


@pytest.mark.parametrize(
    "parse, text, expected",
    [(positive_int, "3", 3), (non_negative_int, "0", 0), (unit_float, "0.25", 0.25), (positive_float, "1.5", 1.5)],
)
def test_valid(parse, text, expected):
    assert parse(text) == expected


@pytest.mark.parametrize(
    "parse, text, message",
    [
        (positive_int, "0", "expected a positive integer, got 0"),
        (positive_int, "x", "expected a positive integer, got 'x'"),
        (non_negative_int, "-1", "expected an integer >= 0, got -1"),
        (unit_float, "1.5", "expected a number in [0, 1], got 1.5"),
        (positive_float, "0", "expected a positive number, got 0.0"),
    ],
)
def test_invalid_says_expected_vs_actual(parse, text, message):
    with pytest.raises(argparse.ArgumentTypeError) as err:
        parse(text)
    assert str(err.value) == message
