"""Windows of values around events on the session clock, and their mean and CI.

A :class:`Stretch` is one run of time bins on the session clock (a video's
spectrogram bins or TCA temporal factor); :func:`align` cuts the windows
``[-pre, +post]`` s around each event out of the stretch the event falls in, by linear
interpolation, and says why an event was skipped (edge of the time bins, unrecorded
time, bins bridged across dropped frames); :func:`mean_ci` averages them with a
Student-t confidence interval. :func:`roi_power` and :func:`tca_stretches` turn a
session's spectrograms and TCA factors into stretches.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from .errors import EventsError


@dataclass
class Stretch:
    """One stretch of values on the session clock: a video's time bins.

    Attributes
    ----------
    name : str
        What it is (e.g. the video file), for messages.
    times : ndarray, float64, (T,)
        Increasing session times (s) of the samples.
    values : ndarray, (T, ...)
    gap : ndarray, (T,), optional
        Share of each sample's window bridged across dropped frames (``gap_fraction``).
    span : (float, float)
        Session times of the first and last frame of the video(s) the stretch comes
        from: an event inside ``span`` belongs to this stretch.
    """

    name: str
    times: np.ndarray
    values: np.ndarray
    gap: np.ndarray | None
    span: tuple[float, float]


@dataclass
class Aligned:
    """Windows of one analysis around the events of one label.

    Attributes
    ----------
    lags : ndarray, (L,)
        Seconds relative to the event.
    traces : ndarray, float32, (n_used, L, ...)
        One window per used event.
    used : ndarray, int64, (n_used,)
        Index of each used event in the events file's rows (file order).
    skipped : list of (int, str)
        Index and reason of each event of this label that belongs to the analysed
        videos (or to no video) but could not be used.
    n_elsewhere : int
        Events of this label in videos this analysis does not cover (another video's
        separate decomposition): neither used nor skipped.
    """

    lags: np.ndarray
    traces: np.ndarray
    used: np.ndarray
    skipped: list
    n_elsewhere: int = 0


def lag_axis(step: float, pre: float, post: float) -> np.ndarray:
    """Lags ``k * step`` from ``-pre`` to ``+post`` (s), including 0."""
    if not step > 0:
        raise EventsError(f"time-bin step must be > 0 s, got {step}")
    eps = 1e-9 * step
    k0 = -int(math.floor(pre / step + 1e-9))
    k1 = int(math.floor(post / step + 1e-9))
    lags = np.round(np.arange(k0, k1 + 1, dtype=np.float64) * step, 12)
    return lags[(lags >= -pre - eps) & (lags <= post + eps)]


def _interp(times: np.ndarray, values: np.ndarray, tq: np.ndarray) -> tuple[np.ndarray, int, int]:
    """Linear interpolation of ``values`` (T, ...) at ``tq`` inside ``times``; also the
    first and last sample index used."""
    i = np.clip(np.searchsorted(times, tq, side="right") - 1, 0, len(times) - 2)
    w = (tq - times[i]) / (times[i + 1] - times[i])
    w = np.clip(w, 0.0, 1.0).reshape((-1,) + (1,) * (values.ndim - 1))
    out = values[i] * (1 - w) + values[i + 1] * w
    lo = int(i[0])
    hi = int(i[-1]) + (1 if w.ravel()[-1] > 0 else 0)
    return out, lo, hi


def align(
    times: np.ndarray,
    stretches: Sequence[Stretch],
    lags: np.ndarray,
    recorded: Sequence[tuple[float, float]],
    max_gap_fraction: float = 0.1,
    indices: np.ndarray | None = None,
) -> Aligned:
    """Cut windows ``times[i] + lags`` out of the stretches.

    Parameters
    ----------
    times : ndarray, (n,)
        Event times (s, session clock).
    stretches : sequence of Stretch
        The analysed stretches (at least one sample each).
    lags : ndarray, (L,)
    recorded : sequence of (start, end)
        Every video of the session (s, session clock); an event in none of them is in
        unrecorded time.
    max_gap_fraction : float
        A window touching a sample whose ``gap`` exceeds this is skipped.
    indices : ndarray, optional
        Index of each event in the file (default ``arange(n)``).

    Returns
    -------
    Aligned
    """
    times = np.asarray(times, np.float64)
    idx = np.arange(len(times)) if indices is None else np.asarray(indices, np.int64)
    tail = stretches[0].values.shape[1:] if stretches else ()
    traces, used, skipped, elsewhere = [], [], [], 0
    for t, k in zip(times, idx):
        home = [s for s in stretches if s.span[0] <= t <= s.span[1]]
        if not home:
            if any(a <= t <= b for a, b in recorded):
                elsewhere += 1
            else:
                skipped.append((int(k), f"{t:g} s is in no video (unrecorded time between videos)"))
            continue
        s = home[0]
        tq = t + lags
        eps = 1e-9 * max(1.0, abs(t))
        if len(s.times) < 2 or tq[0] < s.times[0] - eps or tq[-1] > s.times[-1] + eps:
            skipped.append(
                (
                    int(k),
                    f"edge: window {tq[0]:.3f}-{tq[-1]:.3f} s reaches past the "
                    f"time bins of {s.name} ({s.times[0]:.3f}-{s.times[-1]:.3f} s)"
                    if len(s.times)
                    else f"edge: {s.name} has no time bins",
                )
            )
            continue
        vals, lo, hi = _interp(s.times, s.values, tq)
        if s.gap is not None and hi >= lo:
            worst = float(np.max(s.gap[lo : hi + 1]))
            if worst > max_gap_fraction:
                skipped.append(
                    (
                        int(k),
                        f"timing gap: up to {100 * worst:.0f}% of the window's time "
                        f"bins bridged across dropped frames in {s.name} "
                        f"(events.max_gap_fraction {max_gap_fraction:g})",
                    )
                )
                continue
        traces.append(vals.astype(np.float32))
        used.append(int(k))
    arr = np.stack(traces) if traces else np.zeros((0, len(lags)) + tuple(tail), np.float32)
    return Aligned(np.asarray(lags, np.float64), arr, np.asarray(used, np.int64), skipped, elsewhere)


def mean_ci(traces: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean over events and its Student-t confidence interval.

    ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)`` with the sample standard deviation
    (``ddof=1``). With fewer than two events the bounds are NaN; with none, the mean too.

    Parameters
    ----------
    traces : ndarray, (n, ...)
    level : float
        Confidence level in (0, 1).

    Returns
    -------
    mean, low, high : ndarray, float64, shape ``traces.shape[1:]``
    """
    from scipy import stats

    x = np.asarray(traces, np.float64)
    n = x.shape[0]
    shape = x.shape[1:]
    if n == 0:
        nan = np.full(shape, np.nan)
        return nan, nan.copy(), nan.copy()
    mean = x.mean(axis=0)
    if n < 2:
        nan = np.full(shape, np.nan)
        return mean, nan, nan.copy()
    half = stats.t.ppf((1 + level) / 2, n - 1) * x.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, mean - half, mean + half


# --------------------------------------------------------------------------- inputs


def roi_power(spec_dset, membership: Mapping[str, np.ndarray], chunk: int | None = None) -> np.ndarray:
    """Mean normalised power of each ROI per frequency and time bin.

    The mean over the ROI's points and over both axes (x and y) of the spectrogram TCA
    decomposes (magnitude for complex spectrograms), read ``chunk`` points at a time.

    Parameters
    ----------
    spec_dset : ndarray or h5py.Dataset, (2, N, F, T)
    membership : mapping of ROI name -> bool (N,)
        Every ROI must hold at least one point.
    chunk : int, optional
        Points read at a time (default: about 64 MB of spectrogram per read).

    Returns
    -------
    ndarray, float64, (T, n_roi, F)
    """
    _, n, f, t = spec_dset.shape
    if chunk is None:
        chunk = max(1, (64 << 20) // max(1, 2 * f * t * np.dtype(spec_dset.dtype).itemsize))
    sel = np.stack([np.asarray(m, bool) for m in membership.values()])  # (n_roi, N)
    acc = np.zeros((len(sel), f, t), np.float64)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        block = np.asarray(spec_dset[:, a:b])
        block = np.abs(block) if np.iscomplexobj(block) else block
        both = block.sum(axis=0, dtype=np.float64)  # (b-a, F, T)
        acc += np.tensordot(sel[:, a:b].astype(np.float64), both, axes=(1, 0))
    acc /= (2.0 * sel.sum(axis=1))[:, None, None]
    return np.ascontiguousarray(acc.transpose(2, 0, 1))


def tca_stretches(dec: Mapping, spans: Mapping[str, tuple[float, float]], labels: Mapping[str, str]) -> list[Stretch]:
    """The temporal factors of one decomposition (from ``read_tca_h5``) as stretches.

    Each element key (video) with ``session_times`` gives one stretch of its time
    factor (T_k, R). A factor shared by stacked videos (``tca.videos: stack``) is
    scaled by each video's loading on the stacked axis. Complex factors enter as
    magnitudes.
    """
    fac = dec["factors"]["time"]
    st, gaps = dec.get("session_times", {}), dec.get("gap_fraction", {})
    keys = [k.decode() if isinstance(k, bytes) else str(k) for k in dec["attrs"].get("keys", [])]
    dims = [d.decode() if isinstance(d, bytes) else str(d) for d in dec["attrs"].get("dims", [])]
    stack_dim = dims[0] if len(dims) == 4 else None
    out = []
    for j, k in enumerate(keys):
        if k not in st or k not in spans:
            continue
        if isinstance(fac, Mapping):
            f = fac[k]
        else:
            f = fac
            if stack_dim is not None and stack_dim in dec["factors"]:
                f = f * np.asarray(dec["factors"][stack_dim])[j][None, :]
        f = np.abs(f) if np.iscomplexobj(f) else np.asarray(f)
        t = np.asarray(st[k], np.float64)
        if len(t) != len(f):
            raise EventsError(
                f"time factor of {labels.get(k, k)} has {len(f)} samples but "
                f"session_times has {len(t)}; re-run the tca rule"
            )
        g = np.asarray(gaps[k], np.float64) if k in gaps else None
        out.append(Stretch(labels.get(k, k), t, f.astype(np.float64), g, spans[k]))
    return out
