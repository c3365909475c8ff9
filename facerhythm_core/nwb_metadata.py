"""NWB metadata of a session: the config's ``nwb`` section and the sessions table's
start time, checked before any job runs, and the new NWBFile and Subject made from it."""

from __future__ import annotations

import datetime as _dt
import uuid
from pathlib import Path
from typing import Mapping, Sequence

from .errors import NWBError

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


def make_subject(meta: Mapping):
    """The pynwb ``Subject`` of :func:`session_metadata`'s ``subject``, or None."""
    from pynwb.file import Subject

    s = dict(meta.get("subject") or {})
    if not s:
        return None
    if "date_of_birth" in s and isinstance(s["date_of_birth"], str):
        s["date_of_birth"] = parse_start_time(s["date_of_birth"], "nwb.subject.date_of_birth")
    return Subject(**{k: v for k, v in s.items() if k in SUBJECT_KEYS})


def new_nwbfile(meta: Mapping, session: str):
    """A new, empty ``NWBFile`` with :func:`session_metadata`'s metadata."""
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
        subject=make_subject(meta),
        was_generated_by=[("facerhythm", __version__)],
        **kw,
    )
