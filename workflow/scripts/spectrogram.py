"""Variable-Q spectrograms of a session's tracked points (tracking.h5 -> spectrograms.h5)."""

from facerhythm_core.runtime import set_threads, setup_logging

from facerhythm_core.io import atomic_output
from facerhythm_core.spectrogram import SpectrogramParams, compute_session_spectrograms

log = setup_logging(snakemake)
set_threads(snakemake.threads)
session = snakemake.params.get("session", None) or snakemake.wildcards.session
params = SpectrogramParams.from_mapping(dict(snakemake.params.spectrogram))
log.info("session %s: spectrograms from %s with %s", session, snakemake.input.tracking, params)
with atomic_output(snakemake.output[0]) as tmp:
    summary = compute_session_spectrograms(snakemake.input.tracking, tmp, params,
                                           session=session, log=log)
log.info("session %s: done in %.2f s -> %s", session, summary["seconds"], snakemake.output[0])
