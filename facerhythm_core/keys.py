"""Video keys of a session: natural order and start offsets.

Every stage file names a session's videos by result key (``"0"``, ``"1"``, ...; one
key for several videos tracked as one contiguous stream). Keys are listed in natural
order, so that ``"10"`` comes after ``"9"``; a key's start offset places its video on
the session's frame-count clock (videos back to back at the nominal frame rate).
The real session clock, from per-frame timestamps, is :mod:`.timing`'s.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

_DIGITS = re.compile(r"(\d+)")


def natural_key(key: str) -> list:
    """Sort key of a string in natural order: runs of digits compare as integers.

    ``"a10"`` -> ``["a", 10, ""]``; strings and integers alternate, so any two keys
    compare without a type error.
    """
    return [int(t) if t.isdigit() else t for t in _DIGITS.split(key)]


def natural(keys: Iterable[str]) -> list[str]:
    """``keys`` sorted in natural order (``"2"`` before ``"10"``), as a new list."""
    return sorted(keys, key=natural_key)


def start_offsets(num_frames: Sequence[int], frame_rate: float) -> np.ndarray:
    """Start time of each video within the session, videos back to back.

    Parameters
    ----------
    num_frames : sequence of int, (V,)
        Frames of each video, in session order.
    frame_rate : float
        Frames per second.

    Returns
    -------
    ndarray, float64, (V,)
        Seconds from the session's first frame: the cumulative durations of the videos
        before each one (0 for the first).
    """
    n = np.asarray(num_frames, dtype=np.float64)
    return np.concatenate([[0.0], np.cumsum(n)[:-1]]) / float(frame_rate)
