"""Rhythms aligned to a session's events (tca.h5, spectrograms.h5 -> events.h5)."""

from facerhythm_core.runtime import setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
stages.events(
    snakemake.input.events,
    snakemake.input.tca,
    snakemake.input.spectrograms,
    snakemake.input.rois,
    snakemake.input.videos_info,
    snakemake.output[0],
    session=snakemake.wildcards.session,
    params=snakemake.params.events,
)
