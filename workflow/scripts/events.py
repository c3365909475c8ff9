"""Rhythms aligned to a session's events (tca.h5, spectrograms.h5 -> events.h5)."""

from facerhythm_core.runtime import setup_logging

from facerhythm_core.events import compute_session_events
from facerhythm_core.io import atomic_output

log = setup_logging(snakemake)
session = snakemake.wildcards.session
inp = snakemake.input
with atomic_output(snakemake.output[0]) as tmp:
    summary = compute_session_events(
        inp.events,
        inp.tca,
        inp.spectrograms,
        inp.rois,
        inp.videos_info,
        tmp,
        dict(snakemake.params.events),
        session=session,
        log=log,
    )
log.info("session %s: %d event(s) skipped -> %s", session, len(summary["skipped"]), snakemake.output[0])
