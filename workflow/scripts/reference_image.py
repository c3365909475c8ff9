"""A session's reference image for ROI transfer: mean of its quietest frames, CLAHE."""

from facerhythm_core.runtime import limit_threads, setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
limit_threads(snakemake.threads)
stages.reference_image(
    snakemake.input.videos,
    snakemake.input.videos_info,
    snakemake.output[0],
    session=snakemake.wildcards.session,
    params=dict(snakemake.params.items()),
)
