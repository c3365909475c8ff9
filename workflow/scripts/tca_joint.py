"""Joint TCA of a group of sessions -> results/joint/{group}/tca.h5 (see stages.tca_joint)."""

from facerhythm_core.runtime import limit_threads, setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
limit_threads(snakemake.threads)
stages.tca_joint(
    snakemake.input.spectrograms,
    snakemake.output[0],
    group=snakemake.params.group,
    sessions=snakemake.params.sessions,
    params=snakemake.params.tca,
)
