"""ROI figure: masks and seed points on the example frame (see stages.plot_rois)."""

from facerhythm_core.runtime import limit_threads, setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
limit_threads(snakemake.threads)
stages.plot_rois(snakemake.input.rois, snakemake.output[0], session=snakemake.wildcards.session)
