"""Track a session's seed points through its videos -> results/{session}/tracking.h5."""

from facerhythm_core.runtime import limit_threads, setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
limit_threads(snakemake.threads)
stages.track_points(
    snakemake.input.rois,
    snakemake.input.videos_info,
    snakemake.input.timestamps,
    snakemake.input.videos,
    snakemake.output[0],
    session=snakemake.wildcards.session,
    frames_freeze=snakemake.input.get("frames_freeze"),
    params=dict(snakemake.params.items()),
)
