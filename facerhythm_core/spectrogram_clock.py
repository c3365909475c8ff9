"""The clock of one tracked stream in the spectral stage (docs/timing.md).

A regular stream goes to the VQT as tracked; an irregular one (``clock = "resample"``)
is read through :class:`ResampledTracks`, its tracks put on a uniform grid at the
nominal rate. Either way each time bin gets a session-clock time and the share of its
window that was bridged across a gap.
"""

from __future__ import annotations

import numpy as np

from .errors import SpectrogramError


class StreamClock:
    """One tracked stream's clock in the spectral stage: the frame times, and, for an
    irregular stream, the uniform grid its tracks are resampled onto."""

    def __init__(self, times: np.ndarray | None, clock: str, n_frames: int, fs: float):
        from .timing import UniformGrid

        self.times, self.clock = times, clock
        self.grid = UniformGrid(times, fs) if clock == "resample" else None
        self.n_samples = len(self.grid) if self.grid is not None else int(n_frames)
        self.fs = fs

    def source(self, dset):
        """The tracks as the VQT sees them: as stored, or resampled onto the grid."""
        return dset if self.grid is None else ResampledTracks(dset, self.grid)

    def write(self, out, key: str, x_axis: np.ndarray, win_size: int) -> None:
        """``session_times/{key}`` (s, session clock, per time bin) and
        ``gap_fraction/{key}`` (share of each bin's window bridged across a gap)."""
        from .timing import bin_gap_fraction

        if self.grid is not None:
            t = self.grid.start + np.asarray(x_axis, np.float64) / self.fs
            gap = bin_gap_fraction(self.grid.in_gap, x_axis, win_size)
        elif self.times is not None:
            t = np.interp(x_axis, np.arange(len(self.times)), self.times)
            gap = np.zeros(len(x_axis), np.float32)
        else:  # a tracking file from before timestamps: the frame-rate clock
            t = np.asarray(x_axis, np.float64) / self.fs
            gap = np.zeros(len(x_axis), np.float32)
        ds = out.create_dataset(f"session_times/{key}", data=t)
        ds.attrs["clock"] = self.clock
        ds.attrs["units"] = "s"
        out.create_dataset(f"gap_fraction/{key}", data=gap)


class ResampledTracks:
    """Read access ``[:, a:b, :]`` / ``[()]`` to (T, N, 2) tracks, resampled in time."""

    def __init__(self, dset, grid):
        self._dset, self._grid = dset, grid
        self.shape = (len(grid),) + tuple(dset.shape[1:])
        self.dtype = np.dtype(np.float32)

    def __getitem__(self, index):
        block = self._dset[()] if index == () else self._dset[(slice(None),) + tuple(index[1:])]
        return self._grid.apply(block, axis=0)


def stream_clock(tr, key: str, n_frames: int, fs: float, session: str, log) -> StreamClock:
    """The clock of video ``key`` from ``tracking.h5`` (``tr``): its ``timestamps/{key}``
    and their ``clock`` attribute (``regular``, ``resample`` or ``ignore``), checked
    against the tracked frame count; the frame-rate clock for a file without timestamps."""
    if "timestamps" not in tr or key not in tr["timestamps"]:
        return StreamClock(None, "regular", n_frames, fs)
    ds = tr["timestamps"][key]
    times, clock = ds[()], str(ds.attrs.get("clock", "regular"))
    if len(times) != n_frames:
        raise SpectrogramError(
            f"session {session}: timestamps/{key} has {len(times)} times for "
            f"{n_frames} tracked frames; re-run the tracking rule"
        )
    c = StreamClock(times, clock, n_frames, fs)
    if c.grid is not None:
        log.info(
            "session %s video %s: irregular clock, %d frames resampled to %d samples at %.6g Hz (%d inside gaps)",
            session,
            key,
            n_frames,
            c.n_samples,
            fs,
            int(c.grid.in_gap.sum()),
        )
    return c
