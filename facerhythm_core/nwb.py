"""NWB export of a session's results (pynwb; the mapping is explained in docs/nwb.md).

One file per session, ``results/{session}/{session}.nwb``: session metadata and the
subject from the config's ``nwb`` section or from the session's own acquisition NWB
file (:mod:`.nwb_metadata`), a processing module ``face_rhythm`` with the tracked
points, ROI spectral power and TCA factors, and the events, one EventsTable per label
in ``/events`` (:mod:`.nwb_module`). Times are seconds from ``session_start_time``: the
session clock (docs/timing.md), or, when an acquisition NWB file holds the video's
frame times, those times (:mod:`.nwb_clock`).

With an acquisition file (the sessions table's ``nwb`` column) its contents are copied
with our results added (``NWBHDF5IO.export``); the original is opened read-only.
:func:`export_session_nwb` is the ``nwb_export`` stage; :func:`read_nwb_results` reads
a file back and :func:`inspect_nwb` checks it with nwbinspector.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import NWBError
from .nwb_clock import Clock, acquisition_clock
from .nwb_metadata import SUBJECT_KEYS, new_nwbfile, parse_start_time
from .nwb_module import MODULE, build_module, events_tables

logger = logging.getLogger(__name__)


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
        :func:`.nwb_metadata.session_metadata` of the session.
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
            nwbfile = new_nwbfile(meta, session)
            clock = Clock()
        mod, summary, opened = build_module(paths, clock, compression, session, log)
        nwbfile.add_processing_module(mod)
        if events is not None:
            existing = set(nwbfile.events) if nwbfile.events else set()
            for t in events_tables(events, clock, existing):
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
