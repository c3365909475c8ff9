"""TCA figures (per session or joint group): component maps/spectra/time courses, and
EVR + convergence. One PNG per decomposition in each output folder."""

from facerhythm_core.runtime import limit_threads, setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
limit_threads(snakemake.threads)
stages.plot_tca(
    snakemake.input.tca,
    snakemake.input.rois,
    snakemake.input.videos_info,
    snakemake.output.components,
    snakemake.output.fit,
    label=snakemake.params.label,
    sessions=list(snakemake.params.sessions),
    joint=bool(snakemake.params.joint),
)
