"""The export stage: a session's results as one NWB file, checked by nwbinspector."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

from ..io import atomic_output
from ._common import _log


def nwb_export(
    paths: Mapping[str, str | Path | None],
    output: str | Path,
    *,
    session: str,
    meta: Mapping,
    compression: bool = True,
) -> dict:
    """A session's results as one NWB file (new, or a copy of its acquisition file).

    Parameters
    ----------
    paths : mapping
        ``tracking``, ``spectrograms``, ``tca``, ``rois``, ``videos_info``,
        ``timestamps``, ``events`` and ``acquisition`` -> path, or None where the
        session has no such file (see :func:`facerhythm_core.nwb.export_session_nwb`).
    output : path
        The ``.nwb`` file.
    session : str
    meta : mapping
        The session's NWB metadata (subject, experimenter, start time, ...).
    compression : bool
        Compress the large datasets (gzip).

    Returns
    -------
    dict
        The export summary. nwbinspector's messages go to the log, the failing ones as
        warnings.
    """
    from ..nwb import FAILING, export_session_nwb, inspect_nwb

    log = _log("nwb_export")
    with atomic_output(output) as tmp:
        summary = export_session_nwb(
            dict(paths), tmp, dict(meta), session=session, compression=bool(compression), log=log
        )
        log.info("session %s: %s", session, summary)
        for m in inspect_nwb(tmp):
            (log.warning if m["importance"] in FAILING else log.info)(
                "nwbinspector %s %s at %s (%s): %s",
                m["importance"],
                m["check"],
                m["location"],
                m["object"],
                m["message"],
            )
    log.info("wrote %s", output)
    return summary
