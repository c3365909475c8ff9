"""The ``events`` stage: rhythms aligned to a session's events -> ``events.h5``.

:func:`compute_session_events` reads the session's events file
(:mod:`.events_table`) and, for each label, cuts windows ``[-pre, +post]`` s around
every event (:mod:`.events_align`) out of (a) each TCA component's temporal factor
and (b) each ROI's normalised spectral power in each frequency bin, on the session
clock, and writes the per-event arrays with their mean and a confidence interval to
``events.h5`` (layout in docs/events.md). Events whose window is not covered by time
bins (the edges of a video and of the VQT's valid range), that fall between videos, or
whose window holds bins bridged across dropped frames are listed with the reason and
skipped, never silently dropped. :func:`read_events_h5` reads the file back and
:func:`figure_columns` arranges it for the events figure.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import numpy as np

from .errors import EventsError
from .events_align import Aligned, Stretch, align, lag_axis, mean_ci, roi_power, tca_stretches
from .events_table import Events, read_events
from .keys import natural
from .streams import decomposition_label, stream_labels, stream_spans

logger = logging.getLogger(__name__)


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
    from .tca_h5 import read_tca_h5

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
        keys = natural(sf["spectrograms"])
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
