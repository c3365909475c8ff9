"""Tracking QC figures: violations over time, displacement traces of example points."""

from facerhythm_core.runtime import limit_threads, setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
limit_threads(snakemake.threads)
stages.plot_tracking(
    snakemake.input.tracking,
    snakemake.input.rois,
    snakemake.input.videos_info,
    snakemake.output.violations,
    snakemake.output.displacements,
    session=snakemake.wildcards.session,
    n_example_points=snakemake.params.n_example_points,
)
