"""Events (trials, stimuli, licks) and rhythms aligned to them.

An events file is a table (TSV or CSV, one header row) with a ``time`` column (seconds
on the session clock, docs/timing.md) and a ``label`` column; other columns are kept
as text. :func:`check_events_file` lists every problem with such a file, naming the
file, the line and the column, before any job runs.

:func:`compute_session_events` is the ``events`` stage: for each label it cuts windows
``[-pre, +post]`` s around every event out of (a) each TCA component's temporal factor
and (b) each ROI's normalised spectral power in each frequency bin, on the session
clock, and writes the per-event arrays with their mean and a confidence interval to
``events.h5`` (layout in docs/events.md). Events whose window is not covered by time
bins (the edges of a video and of the VQT's valid range), that fall between videos, or
whose window holds bins bridged across dropped frames are listed with the reason and
skipped, never silently dropped.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Mapping, Sequence

import numpy as np

from .errors import EventsError
from .streams import decomposition_label, stream_labels, stream_spans

logger = logging.getLogger(__name__)

#: columns every events file needs
REQUIRED_COLUMNS = ("time", "label")
#: at most this many bad rows are listed per file
MAX_LISTED = 20


# --------------------------------------------------------------------------- reading


@dataclass
class Events:
    """The rows of an events file, in file order.

    Attributes
    ----------
    path : str
    time : ndarray, float64, (n,)
        Seconds on the session clock.
    label : list of str
    line : ndarray, int64, (n,)
        Line of each event in the file (1-based, as an editor shows it).
    extra : dict of str -> list of str
        The file's other columns, one cell text per event.
    """

    path: str
    time: np.ndarray
    label: list
    line: np.ndarray
    extra: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.time)

    @property
    def labels(self) -> list[str]:
        """Distinct labels in order of first appearance."""
        return list(dict.fromkeys(self.label))


def _delimiter(path: Path, header: str) -> str:
    if path.suffix.lower() == ".csv":
        return ","
    if path.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    return "\t" if "\t" in header else ","


def _parse(path: Path) -> tuple[Events | None, list[str]]:
    """Read an events file; return the events read and the problems found."""
    where = f"events file {path}"
    if not path.is_file():
        return None, [f"{where}: not found"]
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        return None, [f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8"]
    rows = [(i, ln) for i, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.lstrip().startswith("#")]
    if not rows:
        return None, [f"{where}: empty (need a header row with `time` and `label`, then one row per event)"]
    delim = _delimiter(path, rows[0][1])
    parsed = list(csv.reader([ln for _, ln in rows], delimiter=delim))
    header = [c.strip() for c in parsed[0]]
    hline = rows[0][0]
    problems = []
    if any(not c for c in header):
        problems.append(f"{where}, line {hline}: a column has no name (header {header})")
    dup = sorted({c for c in header if c and header.count(c) > 1})
    if dup:
        problems.append(f"{where}, line {hline}: column(s) {dup} appear more than once")
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        sep = "tab" if delim == "\t" else "comma"
        problems.append(
            f"{where}, line {hline}: no {' or '.join(f'`{c}`' for c in missing)} "
            f"column ({sep}-separated header has {header}); the file needs a `time` "
            "column (s, session clock) and a `label` column"
        )
    if problems:
        return None, problems
    ti, li = header.index("time"), header.index("label")
    others = [(j, c) for j, c in enumerate(header) if c not in REQUIRED_COLUMNS]
    times, labels, lines = [], [], []
    extra: dict[str, list[str]] = {c: [] for _, c in others}
    for (lineno, _), cells in zip(rows[1:], parsed[1:]):
        if len(cells) != len(header):
            problems.append(f"{where}, line {lineno}: {len(cells)} cell(s) but the header has {len(header)} column(s)")
            continue
        cell = cells[ti].strip()
        try:
            t = float(cell)
        except ValueError:
            problems.append(f"{where}, line {lineno}, column `time`: {cell!r} is not a number of seconds")
            continue
        if not math.isfinite(t):
            problems.append(f"{where}, line {lineno}, column `time`: {cell!r} is not finite")
            continue
        lab = cells[li].strip()
        if not lab:
            problems.append(f"{where}, line {lineno}, column `label`: empty; every event needs a label")
            continue
        if "/" in lab:
            problems.append(
                f"{where}, line {lineno}, column `label`: {lab!r} contains '/', which "
                "names groups in HDF5 and NWB files; use another character"
            )
            continue
        times.append(t)
        labels.append(lab)
        lines.append(lineno)
        for j, c in others:
            extra[c].append(cells[j].strip())
    if not times and not problems:
        problems.append(f"{where}: a header but no events")
    ev = Events(str(path), np.asarray(times, np.float64), labels, np.asarray(lines, np.int64), extra)
    return ev, problems


def _clip(problems: list[str]) -> list[str]:
    if len(problems) <= MAX_LISTED:
        return problems
    return problems[:MAX_LISTED] + [f"... and {len(problems) - MAX_LISTED} more problem(s)"]


def outside_extent(events: Events, extent: tuple[float, float], tol: float = 0.0) -> list[str]:
    """Problems for events outside ``extent`` (s, session clock), naming their lines."""
    lo, hi = extent
    bad = np.flatnonzero((events.time < lo - tol) | (events.time > hi + tol))
    return [
        f"events file {events.path}, line {events.line[i]}, column `time`: "
        f"{events.time[i]:g} s is outside the session ({lo:.3f}-{hi:.3f} s on the session "
        "clock, docs/timing.md)"
        for i in bad
    ]


def read_events(path: str | Path, extent: tuple[float, float] | None = None, tol: float = 0.0) -> Events:
    """Read and check an events file.

    Parameters
    ----------
    path : path
        TSV or CSV (by suffix; otherwise tab if the header has one, else comma) with a
        header row holding ``time`` and ``label``. Blank lines and lines starting with
        ``#`` are skipped; line numbers count them.
    extent : (float, float), optional
        First and last frame time of the session (s, session clock); events outside it
        (by more than ``tol`` s) are errors.

    Raises
    ------
    EventsError
        Listing every bad row by file, line and column.
    """
    ev, problems = _parse(Path(path))
    if ev is not None and extent is not None:
        problems += outside_extent(ev, extent, tol)
    if problems:
        raise EventsError("\n".join(_clip(problems)))
    return ev


def check_events_file(path: str | Path, extent: tuple[float, float] | None = None, tol: float = 0.0) -> list[str]:
    """Every problem :func:`read_events` would raise, as lines (empty when fine)."""
    ev, problems = _parse(Path(path))
    if ev is not None and extent is not None:
        problems += outside_extent(ev, extent, tol)
    return _clip(problems)


# --------------------------------------------------------------------------- session extent


def session_extent(
    videos: Sequence[str], timestamp_files: Sequence[str] | None = None, cache_dir: str | Path | None = None
) -> tuple[tuple[float, float], float] | None:
    """First and last frame time (s, session clock) of a session, before probing.

    Built as the probe step builds the session clock (docs/timing.md): user timestamp
    files as they are; container timestamps placed back to back. Per video, the first
    and last time and the median interval are cached in ``cache_dir`` by file size and
    modification time. Returns ``((start, end), median_interval)``, or None when a video
    or timestamp file does not exist yet (e.g. the demo's, made by a rule).
    """
    from .timing import load_timestamp_file, read_container_timestamps, session_offsets

    files = list(timestamp_files) if timestamp_files else [None] * len(videos)
    if not all(Path(v).is_file() for v in videos) or not all(f is None or Path(f).is_file() for f in files):
        return None
    cache = Path(cache_dir) / "video_extents.json" if cache_dir else None
    known: dict = {}
    if cache is not None and cache.exists():
        try:
            known = json.loads(cache.read_text())
        except ValueError:
            known = {}
    timings, sources, changed = [], [], False
    for v, f in zip(videos, files):
        src = f if f is not None else v
        st = os.stat(src)
        key = f"{Path(src).resolve()}|{st.st_size}|{st.st_mtime_ns}"
        if key not in known:
            t = load_timestamp_file(f) if f is not None else read_container_timestamps(v).times
            med = float(np.median(np.diff(t))) if len(t) > 1 else 0.0
            known[key] = [float(t[0]), float(t[-1]), med]
            changed = True
        start, end, med = known[key]
        timings.append(SimpleNamespace(start=start, end=end, median_interval=med))
        sources.append("file" if f is not None else "packets")
    if cache is not None and changed:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_name(f".{cache.name}.{os.getpid()}")
        tmp.write_text(json.dumps(known))
        os.replace(tmp, cache)
    offsets = session_offsets(timings, sources)
    starts = [t.start + o for t, o in zip(timings, offsets)]
    ends = [t.end + o for t, o in zip(timings, offsets)]
    return (min(starts), max(ends)), float(np.median([t.median_interval for t in timings]))


# --------------------------------------------------------------------------- alignment


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


# --------------------------------------------------------------------------- the stage


@dataclass
class EventParams:
    """The config's ``events`` section."""

    pre: float = 1.0
    post: float = 2.0
    ci: float = 0.95
    max_gap_fraction: float = 0.1

    @classmethod
    def from_mapping(cls, cfg: Mapping | None) -> "EventParams":
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise EventsError(f"unknown events parameter(s) {sorted(unknown)}")
        p = cls(**cfg)
        if p.pre < 0 or p.post <= 0:
            raise EventsError(f"events.pre must be >= 0 and events.post > 0 s, got {p.pre}, {p.post}")
        if not 0 < p.ci < 1:
            raise EventsError(f"events.ci must be in (0, 1), got {p.ci}")
        return p


def _write_aligned(g, a: Aligned, level: float, events: Events) -> None:
    import h5py

    mean, lo, hi = mean_ci(a.traces, level)
    g.create_dataset("traces", data=a.traces.astype(np.float32))
    g.create_dataset("mean", data=mean.astype(np.float32))
    g.create_dataset("ci_low", data=lo.astype(np.float32))
    g.create_dataset("ci_high", data=hi.astype(np.float32))
    g.create_dataset("event_index", data=a.used)
    g.create_dataset("event_time", data=events.time[a.used] if len(a.used) else np.zeros(0))
    g.create_dataset("skipped_index", data=np.asarray([i for i, _ in a.skipped], np.int64))
    g.create_dataset("skipped_reason", data=[r for _, r in a.skipped], dtype=h5py.string_dtype())
    g.attrs["n_events"] = len(a.used)
    g.attrs["n_skipped"] = len(a.skipped)
    g.attrs["n_elsewhere"] = a.n_elsewhere


def compute_session_events(
    events_path,
    tca_path,
    spectrograms_path,
    rois_path,
    videos_info_path,
    output_path,
    params: EventParams | Mapping | None = None,
    session: str = "session",
    log: logging.Logger | None = None,
) -> dict:
    """The events stage: event-aligned TCA factors and ROI spectral power -> events.h5.

    Parameters
    ----------
    events_path : path
        The session's events file (:func:`read_events`).
    tca_path, spectrograms_path, rois_path, videos_info_path : path
        ``tca.h5``, ``spectrograms.h5``, ``rois.h5`` and ``videos.json`` of the session.
    output_path : path
        HDF5 file to write (layout in docs/events.md).
    params : EventParams or mapping
        The config's ``events`` section.

    Returns
    -------
    dict
        Per label: events, and per analysis how many were used and skipped.

    Raises
    ------
    EventsError
        A bad events file (every bad row named), or an event outside the session.
    """
    import h5py

    from .io import write_provenance
    from .plots import points_in_masks
    from .rois import load_rois_h5
    from .tca import read_tca_h5

    log = log or logger
    started = _dt.datetime.now(_dt.timezone.utc)
    p = params if isinstance(params, EventParams) else EventParams.from_mapping(params)
    info = json.loads(Path(videos_info_path).read_text())
    recorded = [(float(a), float(b)) for a, b in zip(info["session_start"], info["session_end"])]
    paths = [v["path"] for v in info["videos"]]
    tol = 0.5 / float(info["frame_rate"])
    events = read_events(events_path, (min(a for a, _ in recorded), max(b for _, b in recorded)), tol)
    log.info(
        "session %s: %d events (%s) from %s",
        session,
        len(events),
        ", ".join(f"{lab}: {events.label.count(lab)}" for lab in events.labels),
        events_path,
    )
    labels_arr = np.asarray(events.label, dtype=object)
    summary: dict = {"labels": {}, "skipped": []}

    # spectral power per ROI, one stretch per video key
    rois = load_rois_h5(rois_path)
    with h5py.File(spectrograms_path, "r") as sf:
        if "session_times" not in sf:
            raise EventsError(
                f"session {session}: {spectrograms_path} has no session_times (written "
                "before per-frame timestamps); re-run the spectrogram and tca rules"
            )
        keys = [k for k in sf["spectrograms"]]
        keys.sort(key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
        spans = stream_spans(keys, info)
        names = stream_labels(keys, paths)
        freqs = sf["frequencies"][()].astype(np.float64)
        home = sf["point_positions"][()]
        member = {k: v for k, v in points_in_masks(home, rois.masks).items() if v.any()}
        empty = [k for k in rois.masks if k not in member]
        if empty:
            log.warning("session %s: ROI(s) %s hold no tracked point; left out", session, empty)
        if not member:
            raise EventsError(f"session {session}: no ROI of {rois_path} holds a tracked point")
        spec_stretches = []
        for k in keys:
            t = sf["session_times"][k][()].astype(np.float64)
            g = sf["gap_fraction"][k][()].astype(np.float64) if "gap_fraction" in sf else None
            spec_stretches.append(Stretch(names[k], t, roi_power(sf["spectrograms"][k], member), g, spans[k]))
    tca = read_tca_h5(tca_path)
    decs = {n: d for n, d in tca.items() if isinstance(d, dict) and "factors" in d}

    def step_of(stretches):
        steps = [np.median(np.diff(s.times)) for s in stretches if len(s.times) > 1]
        if not steps:
            raise EventsError(f"session {session}: fewer than two time bins per video; nothing to align events to")
        return float(min(steps))

    def note(label, what, a):
        for i, reason in a.skipped:
            msg = f"{label} event at {events.time[i]:g} s (line {events.line[i]}) skipped for {what}: {reason}"
            log.warning("session %s: %s", session, msg)
            summary["skipped"].append(msg)

    with h5py.File(output_path, "w") as out:
        out.attrs.update(
            session=session,
            pre=p.pre,
            post=p.post,
            ci=p.ci,
            max_gap_fraction=p.max_gap_fraction,
            clock="session",
            units="s",
            events_file=str(events_path),
        )
        str_dt = h5py.string_dtype()
        ge = out.create_group("events")
        ge.create_dataset("time", data=events.time)
        ge.create_dataset("label", data=events.label, dtype=str_dt)
        ge.create_dataset("line", data=events.line)
        for c, vals in events.extra.items():
            ge.create_dataset(f"columns/{c}", data=vals, dtype=str_dt)
        out.create_dataset("labels", data=events.labels, dtype=str_dt)

        sp = out.create_group("spectral")
        sp.create_dataset("frequencies", data=freqs)
        sp.create_dataset("rois", data=list(member), dtype=str_dt)
        sp.attrs["what"] = (
            "mean over each ROI's points and both axes of the normalised "
            "spectrogram; traces (event, lag, roi, frequency)"
        )
        lags = lag_axis(step_of(spec_stretches), p.pre, p.post)
        sp.create_dataset("lags", data=lags)
        for lab in events.labels:
            sel = np.flatnonzero(labels_arr == lab)
            a = align(events.time[sel], spec_stretches, lags, recorded, p.max_gap_fraction, sel)
            _write_aligned(sp.create_group(lab), a, p.ci, events)
            note(lab, "the spectral power", a)
            summary["labels"].setdefault(lab, {"events": int(len(sel))})["spectral"] = {
                "used": int(len(a.used)),
                "skipped": len(a.skipped),
            }

        gt = out.create_group("tca")
        for name, d in decs.items():
            dkeys = [k.decode() if isinstance(k, bytes) else str(k) for k in d["attrs"].get("keys", [])]
            stretches = tca_stretches(d, spans, names)
            g = gt.create_group(name)
            dlabel = decomposition_label(name, dkeys, names)
            g.attrs["label"] = dlabel
            fr = np.asarray(d["factors"]["frequency"])
            fr = np.abs(fr) if np.iscomplexobj(fr) else fr
            g.create_dataset("peak_frequency", data=freqs[np.argmax(fr, axis=0)])
            g.create_dataset("evr", data=np.asarray(d["evr"]))
            if not stretches:
                log.warning(
                    "session %s: decomposition %s (%s) has no session_times; re-run the "
                    "tca rule to align its factors to events",
                    session,
                    name,
                    dlabel,
                )
                continue
            lags = lag_axis(step_of(stretches), p.pre, p.post)
            g.create_dataset("lags", data=lags)
            for lab in events.labels:
                sel = np.flatnonzero(labels_arr == lab)
                a = align(events.time[sel], stretches, lags, recorded, p.max_gap_fraction, sel)
                _write_aligned(g.create_group(lab), a, p.ci, events)
                note(lab, f"TCA {dlabel}", a)
                summary["labels"][lab][f"tca {dlabel}"] = {"used": int(len(a.used)), "skipped": len(a.skipped)}
        write_provenance(
            out,
            "events",
            params=p.__dict__,
            inputs=[events_path, tca_path, spectrograms_path, rois_path, videos_info_path],
            extra={"session": session, "summary": summary},
            started=started,
        )
    for lab, s in summary["labels"].items():
        log.info("session %s: %s: %s", session, lab, s)
    return summary


def figure_columns(ev: Mapping) -> list[dict]:
    """The columns of the events figure from :func:`read_events_h5`'s dict: one per
    (decomposition, label), with each component's mean and CI against the lag.

    Returns
    -------
    list of dict
        ``title``, ``lags`` (L,), ``mean``, ``low``, ``high`` (L, R), ``n`` (events
        used), ``n_skipped``, ``components`` (R labels such as ``"C1 8.0 Hz"``).
    """
    cols = []
    for name, g in ev.get("tca", {}).items():
        if "lags" not in g:
            continue
        peaks = np.asarray(g["peak_frequency"])
        comps = [f"C{r + 1} {peaks[r]:.3g} Hz" for r in range(len(peaks))]
        for lab in ev["labels"]:
            a = g.get(lab)
            if a is None:
                continue
            at = a["attrs"]
            if int(at["n_events"]) == 0 and int(at["n_skipped"]) == 0:
                continue  # no event of this label in this decomposition's videos
            cols.append(
                {
                    "title": f"{g['attrs']['label']}: {lab}",
                    "lags": np.asarray(g["lags"]),
                    "mean": np.asarray(a["mean"]),
                    "low": np.asarray(a["ci_low"]),
                    "high": np.asarray(a["ci_high"]),
                    "n": int(at["n_events"]),
                    "n_skipped": int(at["n_skipped"]),
                    "components": comps,
                }
            )
    return cols


def read_events_h5(path: str | Path) -> dict:
    """Read an ``events.h5`` back into nested dicts of arrays (strings decoded)."""
    import h5py

    def tree(g):
        out = {}
        for k, v in g.items():
            if isinstance(v, h5py.Group):
                out[k] = tree(v)
                out[k]["attrs"] = {a: _dec(x) for a, x in v.attrs.items()}
            else:
                x = v[()]
                if v.dtype.kind == "O" or h5py.check_string_dtype(v.dtype):
                    x = [_dec(s) for s in np.atleast_1d(x)]
                out[k] = x
        return out

    with h5py.File(path, "r") as f:
        out = tree(f)
        out["attrs"] = {a: _dec(x) for a, x in f.attrs.items()}
    return out


def _dec(x):
    return x.decode() if isinstance(x, bytes) else x
