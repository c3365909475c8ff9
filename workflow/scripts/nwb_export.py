"""A session's results as one NWB file (new, or a copy of its acquisition file)."""

from facerhythm_core.runtime import setup_logging

from facerhythm_core.io import atomic_output
from facerhythm_core.nwb import FAILING, export_session_nwb, inspect_nwb

log = setup_logging(snakemake)
session = snakemake.wildcards.session
keys = ("tracking", "spectrograms", "tca", "rois", "videos_info", "timestamps", "events", "acquisition")
paths = {k: snakemake.input.get(k) for k in keys}
with atomic_output(snakemake.output[0]) as tmp:
    summary = export_session_nwb(
        paths,
        tmp,
        dict(snakemake.params.meta),
        session=session,
        compression=bool(snakemake.params.compression),
        log=log,
    )
    log.info("session %s: %s", session, summary)
    for m in inspect_nwb(tmp):
        (log.warning if m["importance"] in FAILING else log.info)(
            "nwbinspector %s %s at %s (%s): %s", m["importance"], m["check"], m["location"], m["object"], m["message"]
        )
log.info("wrote %s", snakemake.output[0])
