"""Overlay video: a window of session frames with tracked points drawn on them."""

from facerhythm_core.runtime import limit_threads, setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
limit_threads(snakemake.threads)
stages.overlay_video(
    snakemake.input.tracking,
    snakemake.input.videos_info,
    snakemake.input.videos,
    snakemake.output[0],
    start=snakemake.params.start,
    n_frames=snakemake.params.n_frames,
)
