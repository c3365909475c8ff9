"""Judging a video's frame timestamps: regularity, gaps, cut-short copies, the policy.

:func:`analyze_timestamps` describes a video's timestamps (nominal rate, median
interval, jitter, gaps from dropped frames, header against decodable frame counts) as
a :class:`VideoTiming`; :func:`check_timing` applies the integrity policy
(``video.timing``, ``video.allow_truncated``). The timestamps come from
:mod:`facerhythm_core.timing`; ``docs/timing.md`` explains the choices.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field

import numpy as np

from .errors import ConfigError, VideoError

logger = logging.getLogger(__name__)

#: an interval longer than this many median intervals is a gap (dropped frames)
GAP_FACTOR = 1.5
#: largest deviation of a frame from the best-fit constant-rate line, in median
#: intervals, that still counts as regular (jitter well inside one frame)
JITTER_TOLERANCE = 0.25
#: header and decodable frame counts may differ by this many frames, or this fraction
#: of the header count, before a video counts as cut short
TRUNCATION_TOLERANCE_FRAMES = 2
TRUNCATION_TOLERANCE_FRACTION = 0.005

TIMING_POLICIES = ("resample", "strict", "ignore")


@dataclass(frozen=True)
class Gap:
    """A run of missing frames: after frame ``after`` the next frame came ``interval``
    seconds later, about ``n_missing`` frame intervals too late."""

    after: int
    time: float
    interval: float
    n_missing: int


@dataclass(frozen=True)
class VideoTiming:
    """How regular a video's clock is (one entry of ``videos.json``'s ``timing``).

    Attributes
    ----------
    source : str
        ``"packets"`` (container), ``"file"`` (user timestamps) or ``"none"``.
    n_frames_header, n_frames_decodable : int or None, int
    nominal_rate : float
        1 / median interval, Hz: the rate an irregular video is resampled at.
    median_interval : float
        Seconds.
    jitter : float
        Largest deviation of a frame time from the best-fit constant-rate line,
        seconds (gaps included).
    jitter_frames : float
        ``jitter`` in median intervals.
    gaps : list of Gap
    n_missing : int
        Frames missing in gaps, in total.
    start, end : float
        First and last frame time, seconds (source clock).
    regular : bool
        No gap, no non-positive interval and jitter within ``JITTER_TOLERANCE`` frames.
    truncated : bool
        Header and decodable frame counts disagree beyond the tolerance.
    """

    source: str
    n_frames_header: int | None
    n_frames_decodable: int
    nominal_rate: float
    median_interval: float
    jitter: float
    jitter_frames: float
    gaps: list = field(default_factory=list)
    n_missing: int = 0
    start: float = 0.0
    end: float = 0.0
    regular: bool = True
    truncated: bool = False

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VideoTiming":
        d = dict(d)
        d["gaps"] = [Gap(**g) for g in d.get("gaps", [])]
        return cls(**d)

    def describe(self) -> str:
        """One line for logs and error messages."""
        parts = [
            f"{self.n_frames_decodable} frames, median interval "
            f"{self.median_interval * 1e3:.3f} ms ({self.nominal_rate:.4g} Hz), jitter "
            f"{self.jitter * 1e3:.3f} ms ({self.jitter_frames:.2f} frames)"
        ]
        if self.gaps:
            shown = ", ".join(f"{g.n_missing} after frame {g.after} (t={g.time:.3f} s)" for g in self.gaps[:3])
            more = f" and {len(self.gaps) - 3} more" if len(self.gaps) > 3 else ""
            parts.append(f"{len(self.gaps)} gap(s), {self.n_missing} frame(s) missing: {shown}{more}")
        return "; ".join(parts)


def analyze_timestamps(
    times: np.ndarray,
    source: str,
    n_frames_header: int | None = None,
    duration_header: float | None = None,
    header_rate: float | None = None,
) -> VideoTiming:
    """Describe a video's frame times.

    Parameters
    ----------
    times : ndarray, float64, (n,)
        Frame times in seconds, presentation order.
    source : str
        Where they came from (recorded).
    n_frames_header, duration_header, header_rate
        From the container, for the cut-short check (the frame count, else the
        duration times the rate).
    """
    t = np.asarray(times, dtype=np.float64)
    n = len(t)
    if n < 2:
        med = 1.0 / header_rate if header_rate else 0.0
        return VideoTiming(
            source,
            n_frames_header,
            n,
            1.0 / med if med else 0.0,
            med,
            0.0,
            0.0,
            start=float(t[0]) if n else 0.0,
            end=float(t[-1]) if n else 0.0,
            truncated=_truncated(n, n_frames_header, duration_header, header_rate),
        )
    d = np.diff(t)
    med = float(np.median(d))
    if not med > 0:
        med = float(np.mean(d)) if np.mean(d) > 0 else 1.0
    # deviation from the best-fit constant-rate line (least squares over the index)
    idx = np.arange(n, dtype=np.float64)
    slope, icpt = np.polyfit(idx, t, 1)
    jitter = float(np.max(np.abs(t - (icpt + slope * idx))))
    big = np.flatnonzero(d > GAP_FACTOR * med)
    gaps = [Gap(int(i), float(t[i]), float(d[i]), int(round(d[i] / med)) - 1) for i in big]
    n_missing = int(sum(g.n_missing for g in gaps))
    regular = not gaps and bool(np.all(d > 0)) and jitter <= JITTER_TOLERANCE * med
    return VideoTiming(
        source=source,
        n_frames_header=n_frames_header,
        n_frames_decodable=n,
        nominal_rate=1.0 / med,
        median_interval=med,
        jitter=jitter,
        jitter_frames=jitter / med,
        gaps=gaps,
        n_missing=n_missing,
        start=float(t[0]),
        end=float(t[-1]),
        regular=regular,
        truncated=_truncated(n, n_frames_header, duration_header, header_rate or 1.0 / med),
    )


def _truncated(n: int, header_n: int | None, duration: float | None, rate: float | None) -> bool:
    expected = header_n
    if expected is None and duration and rate:
        expected = int(round(duration * rate))
    if not expected:
        return False
    tol = max(TRUNCATION_TOLERANCE_FRAMES, TRUNCATION_TOLERANCE_FRACTION * expected)
    return expected - n > tol


def check_timing(
    timing: VideoTiming,
    path: str,
    policy: str = "resample",
    allow_truncated: bool = False,
    log: logging.Logger | None = None,
) -> str:
    """Apply the integrity policy to one video; return what to do with its clock.

    Returns
    -------
    {"regular", "resample", "ignore"}
        ``"regular"``: use frame index / rate as always; ``"resample"``: put the
        tracks on a uniform grid before the spectral stage; ``"ignore"``: irregular but
        treated as regular on request (warned).

    Raises
    ------
    VideoError
        A cut-short copy without ``video.allow_truncated``, or irregular timing under
        ``video.timing: strict``; the message names the file and the numbers.
    """
    log = log or logger
    if policy not in TIMING_POLICIES:
        raise ConfigError(f"video.timing must be one of {TIMING_POLICIES}, got {policy!r}")
    if timing.truncated:
        header = timing.n_frames_header
        missing = (header - timing.n_frames_decodable) if header else None
        what = (
            f"its header promises {header} frames but only {timing.n_frames_decodable} decode "
            f"({missing / header:.0%} missing)"
            if header
            else f"its header promises {timing.end - timing.start:.3f} s or more but only "
            f"{timing.n_frames_decodable} frames decode"
        )
        if not allow_truncated:
            raise VideoError(
                f"{path} looks cut short: {what}. Copy the complete file again; or, to analyse "
                "the frames that are there, set `video.allow_truncated: true` in the config "
                "(recorded in provenance and the run summary)."
            )
        log.warning(
            "%s is cut short: %s; analysing the %d decodable frames (video.allow_truncated: true)",
            path,
            what,
            timing.n_frames_decodable,
        )
    if timing.regular:
        return "regular"
    problem = f"{path} has irregular frame timing: {timing.describe()}"
    if policy == "strict":
        raise VideoError(
            f"{problem}. video.timing is 'strict'. Set `video.timing: resample` to put the "
            "tracks on a uniform grid at the nominal rate (docs/timing.md), or `ignore` to "
            "treat the frames as evenly spaced (frequencies will be wrong)."
        )
    if policy == "ignore":
        log.warning(
            "%s; video.timing is 'ignore': frames are treated as evenly spaced, so frequencies and times may be wrong",
            problem,
        )
        return "ignore"
    log.warning(
        "%s; the tracks will be resampled to a uniform %.6g Hz grid before the spectral stage (video.timing: resample)",
        problem,
        timing.nominal_rate,
    )
    return "resample"
