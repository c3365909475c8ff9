"""NWB export of a session's results (pynwb; the mapping is explained in docs/nwb.md).

One file per session, ``results/{session}/{session}.nwb``: session metadata and the
subject from the config's ``nwb`` section (or from the session's own acquisition NWB
file), and a processing module ``face_rhythm`` holding

- ``tracked_points``: every tracked point's (x, y) in pixels per frame (TimeSeries);
- ``points`` and ``rois``: the points' home positions and ROI membership, the ROIs;
- ``spectral_power``: the normalised spectral power of each ROI in each frequency band
  (DecompositionSeries, bands in a FrequencyBandsTable with their half-power limits);
- per TCA decomposition: the temporal factors (TimeSeries) and the spatial, frequency
  and component factors as tables;

and the events, one EventsTable per label in ``/events``. Times are seconds from
``session_start_time``: the session clock (docs/timing.md), or, when an acquisition NWB
file holds the video's frame times, those times.

With an acquisition file (the sessions table's ``nwb`` column) its contents are copied
with our results added (``NWBHDF5IO.export``); the original is opened read-only.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import re
import uuid
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import NWBError

logger = logging.getLogger(__name__)

#: the processing module that holds our results
MODULE = "face_rhythm"
#: metadata keys of the config's ``nwb`` section that go onto the NWBFile as they are
FILE_KEYS = (
    "session_description",
    "experiment_description",
    "experimenter",
    "lab",
    "institution",
    "keywords",
    "protocol",
    "notes",
    "related_publications",
)
SUBJECT_KEYS = ("subject_id", "species", "sex", "age", "description", "strain", "genotype", "date_of_birth", "weight")


# --------------------------------------------------------------------------- metadata


def parse_start_time(text: str, where: str) -> _dt.datetime:
    """An ISO 8601 date-time with a UTC offset (``2024-03-01T10:00:00+01:00`` or ``...Z``).

    Raises
    ------
    NWBError
        Naming ``where`` when the text is not such a time or has no offset (a time
        without one would be read in the local zone of whichever machine runs the job).
    """
    s = str(text).strip()
    try:
        t = _dt.datetime.fromisoformat(s.replace("Z", "+00:00") if s.endswith("Z") else s)
    except ValueError:
        raise NWBError(f"{where}: {s!r} is not an ISO 8601 date-time; write e.g. 2024-03-01T10:00:00+01:00") from None
    if t.tzinfo is None or t.utcoffset() is None:
        raise NWBError(f"{where}: {s!r} has no UTC offset; add one, e.g. {s}+01:00 or {s}Z")
    return t


def session_metadata(nwb_cfg: Mapping, session: str, table_start: str | None = None) -> dict:
    """The NWB metadata of one session: the config's ``nwb`` section with the session's
    own entry in ``nwb.sessions`` laid over it (the subject key by key), and the
    sessions table's ``session_start_time`` over both.

    Returns
    -------
    dict
        JSON-able: the keys of :data:`FILE_KEYS` that are set, ``subject`` (dict),
        ``session_start_time`` (str or None) and ``start_time_source`` (where it came
        from, for messages).
    """
    base = {k: v for k, v in nwb_cfg.items() if k not in ("enabled", "sessions", "compression")}
    own = dict((nwb_cfg.get("sessions") or {}).get(session) or {})
    subject = {**(base.pop("subject", None) or {}), **(own.pop("subject", None) or {})}
    meta = {**base, **own}
    source = None
    if table_start:
        meta["session_start_time"], source = table_start, "the sessions table's session_start_time column"
    elif own.get("session_start_time"):
        source = f"config nwb.sessions.{session}.session_start_time"
    elif meta.get("session_start_time"):
        source = "config nwb.session_start_time"
    meta["start_time_source"] = source
    meta["subject"] = {k: v for k, v in subject.items() if v is not None}
    return {k: v for k, v in meta.items() if v is not None or k in ("session_start_time",)}


def check_export(sessions: Sequence, nwb_cfg: Mapping) -> list[str]:
    """Problems that stop NWB export, before any job runs (empty when export is off).

    Every session needs a ``session_start_time`` (table column, or the config), unless
    its acquisition NWB file (``nwb`` column) provides one; such a file must exist and
    be an NWB file. Times must carry a UTC offset.
    """
    if not nwb_cfg.get("enabled"):
        return []
    problems = []
    for s in sessions:
        start = getattr(s, "session_start_time", None)
        meta = session_metadata(nwb_cfg, s.session, start)
        acq = getattr(s, "nwb", None)
        if acq:
            problems += [f"session {s.session!r}: {p}" for p in _check_acquisition(acq)]
        if meta.get("session_start_time"):
            try:
                parse_start_time(meta["session_start_time"], meta["start_time_source"])
            except NWBError as exc:
                problems.append(f"session {s.session!r}: {exc}")
        elif not acq:
            problems.append(
                f"session {s.session!r}: NWB export (nwb.enabled) needs the session's start time: "
                "give it in a `session_start_time` column of the sessions table, in the config "
                f"as nwb.sessions.{s.session}.session_start_time or nwb.session_start_time "
                "(ISO 8601 with a UTC offset, e.g. 2024-03-01T10:00:00+01:00), or name the "
                "session's acquisition NWB file in an `nwb` column"
            )
    return problems


def _check_acquisition(path: str) -> list[str]:
    import h5py

    p = Path(path)
    if not p.is_file():
        return [f"acquisition NWB file not found: {path}"]
    try:
        with h5py.File(p, "r") as f:
            if "nwb_version" not in f.attrs:
                return [f"{path} is HDF5 but not an NWB file (no nwb_version attribute)"]
    except OSError as exc:
        return [f"{path} is not a readable NWB (HDF5) file: {exc}"]
    return []


# --------------------------------------------------------------------------- pieces


def band_limits(filters: np.ndarray, fs: float, n_fft: int | None = None) -> np.ndarray:
    """Half-power band of each VQT filter, Hz.

    The filters' frequency responses are evaluated on a fine grid and, around each
    peak, the band where the power is at least half the peak's is returned.

    Parameters
    ----------
    filters : ndarray, complex, (F, W)
        The filter bank as stored in ``spectrograms.h5`` (``filters``).
    fs : float
        Sample rate, Hz.

    Returns
    -------
    ndarray, float64, (F, 2)
        ``[low, high]`` per filter.
    """
    h = np.asarray(filters)
    n = n_fft or max(1 << 16, 1 << int(np.ceil(np.log2(8 * h.shape[1]))))
    resp = np.abs(np.fft.fft(h, n=n, axis=1)[:, : n // 2 + 1]) ** 2
    f = np.arange(n // 2 + 1) * fs / n
    out = np.empty((len(h), 2))
    for i, r in enumerate(resp):
        k = int(np.argmax(r))
        half = r[k] / 2
        lo = k
        while lo > 0 and r[lo - 1] >= half:
            lo -= 1
        hi = k
        while hi < len(r) - 1 and r[hi + 1] >= half:
            hi += 1
        out[i] = f[lo], f[hi]
    return out


def _times_kwargs(t: np.ndarray) -> dict:
    """``starting_time`` and ``rate`` for evenly spaced times (NWB best practice),
    else ``timestamps``."""
    t = np.asarray(t, np.float64)
    if len(t) > 2:
        d = np.diff(t)
        med = float(np.median(d))
        if med > 0 and float(np.max(np.abs(d - med))) <= 1e-6 * med:
            return {"starting_time": float(t[0]), "rate": float((len(t) - 1) / (t[-1] - t[0]))}
    return {"timestamps": t}


def _safe(name: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.\-]+", "_", str(name)).strip("_")
    return s or "unnamed"


class _Concat:
    """Time-major concatenation of (T_k, ...) datasets, read in slabs (for writing big
    arrays without loading them)."""

    def __init__(self, parts: Sequence):
        self.parts = list(parts)
        self.edges = np.cumsum([0] + [p.shape[0] for p in self.parts])
        self.shape = (int(self.edges[-1]),) + tuple(self.parts[0].shape[1:])
        self.dtype = np.dtype(self.parts[0].dtype)

    def read(self, sel: tuple) -> np.ndarray:
        t = sel[0]
        a, b = t.indices(self.shape[0])[:2]
        out = []
        for p, e0, e1 in zip(self.parts, self.edges[:-1], self.edges[1:]):
            lo, hi = max(a, e0), min(b, e1)
            if lo < hi:
                out.append(np.asarray(p[(slice(lo - e0, hi - e0),) + tuple(sel[1:])]))
        return np.concatenate(out, axis=0)


def _chunked(concat: _Concat, compression: bool):
    from hdmf.backends.hdf5 import H5DataIO
    from hdmf.data_utils import GenericDataChunkIterator

    class _It(GenericDataChunkIterator):
        def __init__(self, src, **kw):
            self._src = src
            super().__init__(**kw)

        def _get_data(self, selection):
            return self._src.read(selection)

        def _get_maxshape(self):
            return self._src.shape

        def _get_dtype(self):
            return self._src.dtype

    it = _It(concat, buffer_gb=0.25, chunk_mb=4.0)
    return H5DataIO(it, compression="gzip", compression_opts=4) if compression else it


# --------------------------------------------------------------------------- the clock


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


# --------------------------------------------------------------------------- export


def _subject(meta: Mapping):
    from pynwb.file import Subject

    s = dict(meta.get("subject") or {})
    if not s:
        return None
    if "date_of_birth" in s and isinstance(s["date_of_birth"], str):
        s["date_of_birth"] = parse_start_time(s["date_of_birth"], "nwb.subject.date_of_birth")
    return Subject(**{k: v for k, v in s.items() if k in SUBJECT_KEYS})


def _new_file(meta: Mapping, session: str):
    from pynwb import NWBFile

    from . import __version__

    start = parse_start_time(meta["session_start_time"], meta.get("start_time_source") or "nwb")
    kw = {k: meta[k] for k in FILE_KEYS if meta.get(k) not in (None, "", [])}
    for k in ("experimenter", "keywords", "related_publications"):
        if isinstance(kw.get(k), str):
            kw[k] = [kw[k]]
    kw.setdefault("session_description", f"facerhythm results of session {session}")
    return NWBFile(
        identifier=str(uuid.uuid4()),
        session_start_time=start,
        session_id=session,
        subject=_subject(meta),
        was_generated_by=[("facerhythm", __version__)],
        **kw,
    )


def _table(name: str, description: str, columns: Mapping[str, tuple[str, np.ndarray]]):
    from hdmf.common import DynamicTable, VectorData

    cols = [VectorData(name=c, description=d, data=v) for c, (d, v) in columns.items()]
    n = len(next(iter(columns.values()))[1])
    return DynamicTable(name=name, description=description, columns=cols, id=list(range(n)))


def _events_tables(events, clock: Clock, existing: set) -> list:
    from hdmf.common import VectorData
    from pynwb.event import DurationVectorData, EventsTable, TimestampVectorData

    tables = []
    labels = np.asarray(events.label, dtype=object)
    for lab in events.labels:
        sel = np.flatnonzero(labels == lab)
        name = _safe(lab)
        if name in existing:
            name = f"{name}_face_rhythm"
        cols = [
            TimestampVectorData(
                name="timestamp",
                data=clock(events.time[sel]),
                description=f"time of each {lab!r} event, s from session_start_time",
            )
        ]
        for c, vals in events.extra.items():
            v = [vals[i] for i in sel]
            try:
                num = np.asarray([float(x) for x in v], np.float64)
            except ValueError:
                num = None
            desc = f"column `{c}` of {Path(events.path).name}"
            if c == "duration" and num is not None:
                cols.append(DurationVectorData(name="duration", data=num, description=desc + " (s)"))
            else:
                cname = f"column_{c}" if c in ("id", "timestamp", "duration", "annotation") else _safe(c)
                cols.append(VectorData(name=cname, description=desc, data=num if num is not None else v))
        tables.append(
            EventsTable(
                name=name,
                columns=cols,
                id=list(range(len(sel))),
                description=f"{lab!r} events of the sessions table's events file {Path(events.path).name}",
                source_description="events file of the facerhythm sessions table",
            )
        )
    return tables


def build_module(
    paths: Mapping[str, str],
    clock: Clock,
    compression: bool = True,
    session: str = "session",
    log: logging.Logger | None = None,
):
    """The ``face_rhythm`` ProcessingModule of one session, and what was put in it.

    Parameters
    ----------
    paths : mapping
        ``tracking``, ``spectrograms``, ``tca``, ``rois``, ``videos_info``.
    clock : Clock
        Session clock -> NWB time.

    Returns
    -------
    (ProcessingModule, dict, list)
        The module, a summary, and the open HDF5 files whose data is read while the
        module is written (close them after writing).
    """
    import h5py
    from pynwb import ProcessingModule, TimeSeries
    from pynwb.misc import DecompositionSeries, FrequencyBandsTable
    from hdmf.common import DynamicTableRegion

    from . import __version__
    from .events_align import roi_power, tca_stretches
    from .streams import decomposition_label, stream_labels, stream_spans
    from .plots import points_in_masks
    from .rois import load_rois_h5
    from .tca_h5 import read_tca_h5

    log = log or logger
    info = json.loads(Path(paths["videos_info"]).read_text())
    vpaths = [v["path"] for v in info["videos"]]
    mod = ProcessingModule(
        name=MODULE,
        description=(
            f"facerhythm {__version__}: facial points tracked by Lucas-Kanade optical flow, "
            "Variable-Q spectrograms of their motion, and a non-negative CP decomposition (TCA) "
            f"of those; times on the {clock.source} (docs/nwb.md)"
        ),
    )
    summary: dict = {"clock": clock.source}
    tr = h5py.File(paths["tracking"], "r")
    keys = sorted(tr["points_tracked"], key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
    names = stream_labels(keys, vpaths)
    home = tr["point_positions"][()].astype(np.float64)
    parts = [tr["points_tracked"][k] for k in keys]
    times = np.concatenate(
        [
            tr["timestamps"][k][()]
            if "timestamps" in tr and k in tr["timestamps"]
            else np.arange(p.shape[0]) / float(info["frame_rate"]) + info["session_start"][int(k)]
            for k, p in zip(keys, parts)
        ]
    )
    pts = TimeSeries(
        name="tracked_points",
        data=_chunked(_Concat(parts), compression),
        unit="pixels",
        description=(
            "(x, y) position of every tracked point in each frame, pixels from the "
            "top-left corner of the frame; axes (frame, point, xy); the videos of the "
            f"session one after another: {', '.join(names[k] for k in keys)}"
        ),
        comments="point i is row i of the `points` table",
        **_times_kwargs(clock(times)),
    )
    mod.add(pts)
    summary["tracked_points"] = [int(len(times)), int(home.shape[0]), 2]

    rois = load_rois_h5(paths["rois"])
    member = points_in_masks(home, rois.masks)
    cols = {
        "home_x": ("x of the point's home (seed) position, pixels", home[:, 0]),
        "home_y": ("y of the point's home (seed) position, pixels", home[:, 1]),
    }
    for r, m in member.items():
        cols[f"in_{_safe(r)}"] = (f"whether the point lies inside ROI {r!r}", m.astype(bool))
    mod.add(_table("points", "the tracked points: home position and ROI membership", cols))
    used = {r: m for r, m in member.items() if m.any()}
    roi_table = _table(
        "rois",
        "the session's regions of interest (ROIs) with tracked points",
        {
            "roi_name": ("name of the ROI", list(used)),
            "n_points": ("number of tracked points inside", np.asarray([int(m.sum()) for m in used.values()])),
        },
    )
    mod.add(roi_table)

    with h5py.File(paths["spectrograms"], "r") as sf:
        skeys = sorted(sf["spectrograms"], key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k))
        freqs = sf["frequencies"][()].astype(np.float64)
        limits = band_limits(sf["filters"][()], float(sf.attrs["fs"]))
        power = np.concatenate([roi_power(sf["spectrograms"][k], used) for k in skeys]).astype(np.float32)
        st = np.concatenate([sf["session_times"][k][()] for k in skeys])
        gap = np.concatenate([sf["gap_fraction"][k][()] for k in skeys]) if "gap_fraction" in sf else None
    bands = FrequencyBandsTable()
    for f, (lo, hi) in zip(freqs, limits):
        bands.add_band(band_name=f"{f:.3g} Hz", band_limits=np.asarray([lo, hi]), band_mean=float(f))
    region = DynamicTableRegion(
        name="source_channels",
        data=list(range(len(used))),
        table=roi_table,
        description="the ROI of each channel (rows of the `rois` table)",
    )
    spec = DecompositionSeries(
        name="spectral_power",
        data=power,
        metric="power",
        unit="a.u.",
        bands=bands,
        source_timeseries=pts,
        source_channels=region,
        description=(
            "normalised spectral power of each ROI in each frequency band: the mean over "
            "the ROI's points and both axes of the Variable-Q spectrogram of their "
            "displacement, normalised per time bin and tilted by f^beta (the values TCA "
            "decomposes); axes (time bin, ROI, band); bands from a Variable-Q filter "
            "bank (band_mean = centre, band_limits = half-power band)"
        ),
        comments=(
            "time bins of the session's videos one after another"
            + (
                ""
                if gap is None or not np.any(gap > 0)
                else "; some bins bridge dropped frames (gap_fraction in spectrograms.h5)"
            )
        ),
        **_times_kwargs(clock(st)),
    )
    mod.add(spec)
    summary["spectral_power"] = list(power.shape)

    tca = read_tca_h5(paths["tca"])
    spans = stream_spans(keys, info)
    summary["tca"] = {}
    taken: set = set()
    for name, d in tca.items():
        if not (isinstance(d, dict) and "factors" in d):
            continue
        dkeys = [k.decode() if isinstance(k, bytes) else str(k) for k in d["attrs"].get("keys", [])]
        label = decomposition_label(name, dkeys, names)
        base = f"tca_{_safe(label)}"
        if base in taken:
            base = f"{base}_{_safe(name)}"
        taken.add(base)
        stretches = tca_stretches(d, spans, names)
        fac = d["factors"]
        px, py = np.asarray(fac["points_x"]), np.asarray(fac["points_y"])
        fr = np.asarray(fac["frequency"])
        rank = px.shape[1]
        if np.iscomplexobj(px) or np.iscomplexobj(fr):
            px, py, fr = np.abs(px), np.abs(py), np.abs(fr)
        if stretches:
            tt = np.concatenate([s.times for s in stretches])
            tv = np.concatenate([s.values for s in stretches]).astype(np.float32)
            mod.add(
                TimeSeries(
                    name=f"{base}_time",
                    data=tv,
                    unit="a.u.",
                    **_times_kwargs(clock(tt)),
                    description=(
                        f"temporal factors of the TCA of {label}: one column per component, "
                        "in descending explained variance (rows of the "
                        f"`{base}_components` table); axes (time bin, component)"
                    ),
                    comments=f"facerhythm tca.h5 decomposition {name!r}",
                )
            )
        mod.add(
            _table(
                f"{base}_points",
                f"spatial (points) factors of the TCA of {label}; row i = tracked point i (`points` table)",
                {
                    "x_loading": ("loading of each component on the point's x displacement", px.astype(np.float32)),
                    "y_loading": ("loading of each component on the point's y displacement", py.astype(np.float32)),
                },
            )
        )
        mod.add(
            _table(
                f"{base}_frequency",
                f"frequency factors of the TCA of {label}; one row per frequency band of `spectral_power`",
                {
                    "frequency": ("centre frequency of the band, Hz", freqs),
                    "loading": ("loading of each component on the band", fr.astype(np.float32)),
                },
            )
        )
        comp = {
            "explained_variance_ratio": (
                "share of the tensor's variance the component explains",
                np.asarray(d["evr"], np.float64),
            ),
            "weight": ("the component's weight (norm) in the CP model", np.asarray(d["weights"], np.float64)),
            "peak_frequency": ("frequency (Hz) of the largest frequency loading", freqs[np.argmax(fr, axis=0)]),
        }
        dims = [x.decode() if isinstance(x, bytes) else str(x) for x in d["attrs"].get("dims", [])]
        if len(dims) == 4 and dims[0] in fac:
            comp[f"{dims[0]}_loading"] = (
                f"loading of each component on each {dims[0]} ({', '.join(names.get(k, k) for k in dkeys)})",
                np.asarray(fac[dims[0]]).T.astype(np.float32),
            )
        mod.add(
            _table(f"{base}_components", f"components of the TCA of {label}, in descending explained variance", comp)
        )
        summary["tca"][label] = {"name": base, "rank": int(rank)}
    return mod, summary, [tr]


def export_session_nwb(
    paths: Mapping[str, str | None],
    output_path,
    meta: Mapping,
    session: str = "session",
    compression: bool = True,
    log: logging.Logger | None = None,
) -> dict:
    """The ``nwb_export`` stage: a session's results -> one NWB file.

    Parameters
    ----------
    paths : mapping
        ``tracking``, ``spectrograms``, ``tca``, ``rois``, ``videos_info``,
        ``timestamps`` (timestamps.h5), and optionally ``events`` (the events file) and
        ``acquisition`` (the session's acquisition NWB file, read-only).
    output_path : path
        The NWB file to write (the caller renames it into place).
    meta : mapping
        :func:`session_metadata` of the session.
    compression : bool
        gzip the tracked points.

    Returns
    -------
    dict
        What was written.
    """
    from pynwb import NWBHDF5IO

    from .events_table import read_events
    from .timing import read_timestamps_h5

    log = log or logger
    info = json.loads(Path(paths["videos_info"]).read_text())
    frame_times = [v["times"] for v in read_timestamps_h5(paths["timestamps"])]
    events = None
    if paths.get("events"):
        tol = 0.5 / float(info["frame_rate"])
        events = read_events(paths["events"], (min(info["session_start"]), max(info["session_end"])), tol)
    acq = paths.get("acquisition")
    src = None
    opened = []
    try:
        if acq:
            src = NWBHDF5IO(str(acq), "r")
            nwbfile = src.read()
            clock = acquisition_clock(nwbfile, [v["path"] for v in info["videos"]], frame_times)
            if MODULE in nwbfile.processing:
                raise NWBError(
                    f"acquisition file {acq} already has a processing module {MODULE!r}; "
                    "give the file from acquisition, not a facerhythm export"
                )
            mine = meta.get("session_start_time")
            if mine and parse_start_time(mine, meta.get("start_time_source") or "nwb") != nwbfile.session_start_time:
                log.warning(
                    "session %s: session_start_time %s from %s differs from the acquisition "
                    "file's %s; the acquisition file's is kept",
                    session,
                    mine,
                    meta.get("start_time_source"),
                    nwbfile.session_start_time.isoformat(),
                )
            log.info("session %s: results added to a copy of %s; times on the %s", session, acq, clock.source)
        else:
            if not meta.get("session_start_time"):
                raise NWBError(
                    f"session {session}: NWB export needs session_start_time (sessions "
                    "table column, or nwb.session_start_time in the config)"
                )
            nwbfile = _new_file(meta, session)
            clock = Clock()
        mod, summary, opened = build_module(paths, clock, compression, session, log)
        nwbfile.add_processing_module(mod)
        if events is not None:
            existing = set(nwbfile.events) if nwbfile.events else set()
            for t in _events_tables(events, clock, existing):
                nwbfile.add_events_table(t)
            summary["events"] = {lab: int(events.label.count(lab)) for lab in events.labels}
        if src is not None:
            with NWBHDF5IO(str(output_path), "w") as out:
                out.export(src_io=src, nwbfile=nwbfile)
            moved = relink_external_files(output_path, Path(acq).parent)
            if moved:
                log.info("session %s: external_file paths made relative to the copy: %s", session, moved)
        else:
            with NWBHDF5IO(str(output_path), "w") as out:
                out.write(nwbfile)
    finally:
        for f in opened:
            f.close()
        if src is not None:
            src.close()
    summary["session_start_time"] = nwbfile.session_start_time.isoformat()
    return summary


def relink_external_files(path, source_dir) -> dict:
    """Keep a copied file's ``external_file`` entries (ImageSeries) pointing at the same
    files: relative entries, which NWB resolves from the file's folder, are rewritten
    relative to the copy's folder. Returns {dataset: new entries} for what changed."""
    import os

    import h5py

    out_dir = Path(path).resolve().parent
    changed = {}
    with h5py.File(path, "r+") as f:
        found = []
        f.visititems(
            lambda name, obj: (
                found.append(name)
                if (isinstance(obj, h5py.Dataset) and name.split("/")[-1] == "external_file")
                else None
            )
        )
        for name in found:
            ds = f[name]
            old = [v.decode() if isinstance(v, bytes) else str(v) for v in ds[()]]
            new = [v if os.path.isabs(v) else os.path.relpath((Path(source_dir) / v).resolve(), out_dir) for v in old]
            if new != old:
                ds[...] = np.asarray(new, dtype=object)
                changed[name] = new
    return changed


def read_nwb_results(path) -> dict:
    """Read what :func:`export_session_nwb` wrote back into plain arrays.

    Returns
    -------
    dict
        ``session_start_time`` (str), ``subject`` (dict), ``tracked_points`` and
        ``tracked_points_times``, ``spectral_power``, ``spectral_times``,
        ``frequencies``, ``band_limits``, ``rois``, ``points`` (dict of columns),
        ``tca`` {name: {"time", "times", "x_loading", "y_loading", "frequency_loading",
        "explained_variance_ratio", ...}}, ``events`` {table: {column: values}}.
    """
    from pynwb import NWBHDF5IO

    with NWBHDF5IO(str(path), "r") as io:
        nwb = io.read()
        mod = nwb.processing[MODULE]
        pts, spec = mod["tracked_points"], mod["spectral_power"]
        out = {
            "session_start_time": nwb.session_start_time.isoformat(),
            "identifier": nwb.identifier,
            "subject": (
                {k: getattr(nwb.subject, k) for k in SUBJECT_KEYS if getattr(nwb.subject, k, None) is not None}
                if nwb.subject
                else {}
            ),
            "tracked_points": pts.data[:],
            "tracked_points_times": np.asarray(pts.get_timestamps()[:]),
            "spectral_power": spec.data[:],
            "spectral_times": np.asarray(spec.get_timestamps()[:]),
            "frequencies": np.asarray(spec.bands["band_mean"].data[:]),
            "band_limits": np.asarray(spec.bands["band_limits"].data[:]),
            "rois": list(mod["rois"]["roi_name"].data[:]),
            "points": {c: np.asarray(mod["points"][c].data[:]) for c in mod["points"].colnames},
            "tca": {},
            "events": {},
        }
        for name in mod.data_interfaces:
            if name.startswith("tca_") and name.endswith("_components"):
                base = name[: -len("_components")]
                comp = mod[name]
                d = {c: np.asarray(comp[c].data[:]) for c in comp.colnames}
                if f"{base}_time" in mod.data_interfaces:
                    ts = mod[f"{base}_time"]
                    d["time"], d["times"] = ts.data[:], np.asarray(ts.get_timestamps()[:])
                d["x_loading"] = np.asarray(mod[f"{base}_points"]["x_loading"].data[:])
                d["y_loading"] = np.asarray(mod[f"{base}_points"]["y_loading"].data[:])
                d["frequency_loading"] = np.asarray(mod[f"{base}_frequency"]["loading"].data[:])
                d["description"] = mod[f"{base}_components"].description
                out["tca"][base] = d
        for name, t in (nwb.events or {}).items():
            out["events"][name] = {
                c: (np.asarray(t[c].data[:]) if c != "timestamp" else np.asarray(t[c].data[:], np.float64))
                for c in t.colnames
            }
    return out


def inspect_nwb(path) -> list[dict]:
    """Run nwbinspector (PyNWB validation and every best-practice check) on a file.

    Returns
    -------
    list of dict
        One per message: ``importance`` (ERROR, PYNWB_VALIDATION, CRITICAL,
        BEST_PRACTICE_VIOLATION or BEST_PRACTICE_SUGGESTION), ``check``, ``location``,
        ``object``, ``message``; most important first.
    """
    from nwbinspector import inspect_nwbfile

    out = []
    for m in inspect_nwbfile(nwbfile_path=str(path)):
        if m is None:
            continue
        out.append(
            {
                "importance": m.importance.name,
                "check": m.check_function_name,
                "location": m.location,
                "object": f"{m.object_type} {m.object_name!r}",
                "message": m.message,
                "rank": m.importance.value,
            }
        )
    out.sort(key=lambda d: -d.pop("rank"))
    return out


#: nwbinspector levels a written file must not reach
FAILING = ("ERROR", "PYNWB_VALIDATION", "CRITICAL", "BEST_PRACTICE_VIOLATION")
