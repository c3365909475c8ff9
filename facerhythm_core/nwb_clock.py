"""Times in an NWB file: the session clock, or an acquisition file's frame times.

NWB times are seconds from ``session_start_time``. Without an acquisition file they
are the session clock's (docs/timing.md); when the session's acquisition NWB file
holds its videos' frame times (ImageSeries with ``external_file``), our results are
put on those times through a :class:`Clock`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import NWBError


class Clock:
    """Session clock (s) -> NWB time (s from ``session_start_time``).

    Identity unless an acquisition file gave frame times of the session's videos: then
    piecewise linear through (our frame time, their frame time) pairs, extended at the
    ends with the end segments' slopes.
    """

    def __init__(self, ours: np.ndarray | None = None, theirs: np.ndarray | None = None, source: str = "session clock"):
        self.ours, self.theirs, self.source = ours, theirs, source

    def __call__(self, t) -> np.ndarray:
        t0 = np.asarray(t, np.float64)
        if self.ours is None:
            return t0.copy()
        t = np.atleast_1d(t0)
        x, y = self.ours, self.theirs
        out = np.interp(t, x, y)
        if len(x) > 1:
            lo, hi = t < x[0], t > x[-1]
            out[lo] = y[0] + (t[lo] - x[0]) * (y[1] - y[0]) / (x[1] - x[0])
            out[hi] = y[-1] + (t[hi] - x[-1]) * (y[-1] - y[-2]) / (x[-1] - x[-2])
        return out.reshape(t0.shape)


def _image_series_times(nwbfile, video_paths: Sequence[str], n_frames: Sequence[int]) -> list:
    """Per video, its frame times from an ImageSeries of the acquisition file whose
    ``external_file`` names it (matched by file name), or None."""
    from pynwb.image import ImageSeries

    found: list = [None] * len(video_paths)
    names = [Path(v).name for v in video_paths]
    for obj in nwbfile.objects.values():
        if not isinstance(obj, ImageSeries) or obj.external_file is None:
            continue
        files = [Path(str(f)).name for f in obj.external_file[:]]
        starts = (
            list(np.asarray(obj.starting_frame[:], np.int64)) if obj.starting_frame is not None else [0] * len(files)
        )
        stamps = np.asarray(obj.timestamps[:], np.float64) if obj.timestamps is not None else None
        for j, fname in enumerate(files):
            if fname not in names:
                continue
            i = names.index(fname)
            s = int(starts[j]) if j < len(starts) else 0
            n = int(n_frames[i])
            if stamps is not None:
                t = stamps[s : s + n]
                if len(t) != n:
                    raise NWBError(
                        f"ImageSeries {obj.name!r} of the acquisition file has {len(t)} frame "
                        f"time(s) for {video_paths[i]} (from frame {s}) but the video has {n} "
                        "frames; the file does not describe this video"
                    )
            else:
                t = float(obj.starting_time or 0.0) + (s + np.arange(n)) / float(obj.rate)
            found[i] = (obj.name, t)
    return found


def acquisition_clock(nwbfile, video_paths: Sequence[str], frame_times: Sequence[np.ndarray]) -> Clock:
    """The :class:`Clock` from an acquisition file's ImageSeries of the session's videos.

    Raises
    ------
    NWBError
        When some but not all videos have frame times there (a mixed clock would put
        some results on the wrong times).
    """
    found = _image_series_times(nwbfile, video_paths, [len(t) for t in frame_times])
    have = [f is not None for f in found]
    if not any(have):
        return Clock()
    if not all(have):
        missing = [v for v, h in zip(video_paths, have) if not h]
        raise NWBError(
            f"the acquisition file has frame times (an ImageSeries with "
            f"external_file) for some videos of the session but not for {missing}; "
            "give every video's ImageSeries, or none"
        )
    ours = np.concatenate([np.asarray(t, np.float64) for t in frame_times])
    theirs = np.concatenate([t for _, t in found])
    if np.any(np.diff(ours) <= 0) or np.any(np.diff(theirs) <= 0):
        raise NWBError(
            "frame times of the session's videos in the acquisition file are not "
            "increasing across the videos in recording order"
        )
    return Clock(ours, theirs, "frame times of ImageSeries " + ", ".join(sorted({n for n, _ in found})))
