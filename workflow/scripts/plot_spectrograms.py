"""Spectral QC: mean spectrogram per ROI and axis, mean spectrum per ROI."""

from facerhythm_core.runtime import limit_threads, setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
limit_threads(snakemake.threads)
stages.plot_spectrograms(
    snakemake.input.spectrograms,
    snakemake.input.rois,
    snakemake.input.videos_info,
    snakemake.output.spectrograms,
    snakemake.output.power_spectrum,
    session=snakemake.wildcards.session,
)
