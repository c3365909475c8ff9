"""Tests of facerhythm_core.keys: natural order of video keys, start offsets."""

import numpy as np

from facerhythm_core.keys import natural, natural_key, start_offsets
from facerhythm_core.results import key_offsets


def test_natural_order_puts_10_after_9_and_compares_mixed_keys():
    assert natural(["10", "9", "0", "1"]) == ["0", "1", "9", "10"]
    assert natural(["s/10", "s/2", "a", "s/1"]) == ["a", "s/1", "s/2", "s/10"]
    assert natural_key("a10b") == ["a", 10, "b"]
    keys = ["1", "0"]
    assert natural(keys) == ["0", "1"] and keys == ["1", "0"]  # a new list


def test_start_offsets_are_cumulative_durations():
    np.testing.assert_array_equal(start_offsets([30, 60, 90], 30.0), [0.0, 1.0, 3.0])
    assert start_offsets([5], 10.0).tolist() == [0.0]
    assert key_offsets(["0", "1", "2"], [30, 60, 90], 30.0) == [0.0, 1.0, 3.0]
    assert key_offsets(["0"], [30, 60, 90], 30.0) == [0.0]
