"""TCA of one session: results/{session}/spectrograms.h5 -> results/{session}/tca.h5."""

from facerhythm_core.runtime import limit_threads, setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
limit_threads(snakemake.threads)
stages.tca(
    snakemake.input.spectrograms,
    snakemake.output[0],
    session=snakemake.params.session,
    params=snakemake.params.tca,
    videos_info=snakemake.input.get("videos_info"),
)
