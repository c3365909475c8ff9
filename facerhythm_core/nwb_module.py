"""The ``face_rhythm`` processing module of a session's NWB file: one writer per result.

- ``tracked_points``: every tracked point's (x, y) in pixels per frame (TimeSeries);
- ``points`` and ``rois``: the points' home positions and ROI membership, the ROIs;
- ``spectral_power``: the normalised spectral power of each ROI in each frequency band
  (DecompositionSeries, bands in a FrequencyBandsTable with their half-power limits);
- per TCA decomposition: the temporal factors (TimeSeries) and the spatial, frequency
  and component factors as tables;

and the events, one EventsTable per label (:func:`events_tables`). The mapping is
explained in docs/nwb.md.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .keys import natural
from .nwb_clock import Clock

logger = logging.getLogger(__name__)

#: the processing module that holds our results
MODULE = "face_rhythm"


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


def _table(name: str, description: str, columns: Mapping[str, tuple[str, np.ndarray]]):
    from hdmf.common import DynamicTable, VectorData

    cols = [VectorData(name=c, description=d, data=v) for c, (d, v) in columns.items()]
    n = len(next(iter(columns.values()))[1])
    return DynamicTable(name=name, description=description, columns=cols, id=list(range(n)))


def events_tables(events, clock: Clock, existing: set) -> list:
    """One pynwb ``EventsTable`` per label of :class:`.events_table.Events`, named after
    the label (``{label}_face_rhythm`` when ``existing`` has that name)."""
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
    from pynwb import ProcessingModule

    from . import __version__
    from .streams import stream_labels

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
    keys = natural(tr["points_tracked"])
    names = stream_labels(keys, vpaths)
    home = tr["point_positions"][()].astype(np.float64)
    pts = _add_tracked_points(mod, tr, keys, names, home, info, clock, compression, summary)
    used, roi_table = _add_points_and_rois(mod, home, paths["rois"])
    freqs = _add_spectral_power(mod, paths["spectrograms"], used, roi_table, pts, clock, summary)
    _add_tca(mod, paths["tca"], keys, names, info, freqs, clock, summary)
    return mod, summary, [tr]


def _add_tracked_points(
    mod, tr, keys: list, names: Mapping, home: np.ndarray, info: Mapping, clock: Clock, compression: bool, summary
):
    """``tracked_points``: (frame, point, xy) pixels of the videos one after another,
    written from ``tracking.h5`` in slabs; returns the TimeSeries."""
    from pynwb import TimeSeries

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
    return pts


def _add_points_and_rois(mod, home: np.ndarray, rois_path):
    """``points`` (home position and ROI membership of each point) and ``rois`` (the
    ROIs holding points); returns {ROI: membership (N,)} of those ROIs and the table."""
    from .plots import points_in_masks
    from .rois import load_rois_h5

    rois = load_rois_h5(rois_path)
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
    return used, roi_table


def _add_spectral_power(mod, spectrograms_path, used: Mapping, roi_table, pts, clock: Clock, summary) -> np.ndarray:
    """``spectral_power``: (time bin, ROI, band) mean normalised power of each ROI, its
    bands with their half-power limits; returns the band centres (F,) Hz."""
    import h5py
    from hdmf.common import DynamicTableRegion
    from pynwb.misc import DecompositionSeries, FrequencyBandsTable

    from .events_align import roi_power

    with h5py.File(spectrograms_path, "r") as sf:
        skeys = natural(sf["spectrograms"])
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
    return freqs


def _add_tca(mod, tca_path, keys: list, names: Mapping, info: Mapping, freqs: np.ndarray, clock: Clock, summary):
    """Each decomposition of ``tca.h5`` as ``tca_{label}_time`` (TimeSeries) and the
    ``_points``, ``_frequency`` and ``_components`` tables."""
    from .events_align import tca_stretches
    from .streams import decomposition_label, stream_spans
    from .tca_h5 import read_tca_h5

    tca = read_tca_h5(tca_path)
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
        rank = _add_decomposition(mod, name, d, base, label, stretches, dkeys, names, freqs, clock)
        summary["tca"][label] = {"name": base, "rank": int(rank)}


def _add_decomposition(
    mod,
    name: str,
    d: Mapping,
    base: str,
    label: str,
    stretches: list,
    dkeys: list,
    names: Mapping,
    freqs: np.ndarray,
    clock: Clock,
) -> int:
    """One decomposition (``read_tca_h5``'s entry ``d``) under the names ``{base}_*``;
    returns its rank."""
    from pynwb import TimeSeries

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
    mod.add(_table(f"{base}_components", f"components of the TCA of {label}, in descending explained variance", comp))
    return rank
