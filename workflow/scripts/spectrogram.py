"""Variable-Q spectrograms of a session's tracked points (tracking.h5 -> spectrograms.h5)."""

from facerhythm_core.runtime import limit_threads, setup_logging, tune_heap

from facerhythm_core import stages

setup_logging(snakemake)
limit_threads(snakemake.threads)
tune_heap()
stages.spectrogram(
    snakemake.input.tracking,
    snakemake.output[0],
    session=snakemake.params.get("session", None) or snakemake.wildcards.session,
    params=snakemake.params.spectrogram,
)
