"""A session's ROIs from an ROI file or config polygons: masks, seed points, example frame."""

from facerhythm_core.runtime import setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
stages.rois(
    snakemake.input.videos_info,
    snakemake.input.first_video,
    snakemake.output.rois,
    snakemake.output.example,
    roi_file=snakemake.input.get("roi_file"),
    params=dict(snakemake.params.items()),
)
