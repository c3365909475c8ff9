"""A session's ROIs carried over from its template session by image registration."""

from pathlib import Path

from facerhythm_core.runtime import setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
stages.rois_from_template(
    snakemake.input.videos_info,
    snakemake.input.first_video,
    snakemake.input.template_rois,
    snakemake.input.template_reference,
    snakemake.input.reference,
    snakemake.output.rois,
    snakemake.output.example,
    snakemake.output.qc,
    session=snakemake.wildcards.session,
    params=dict(snakemake.params.items()),
    others=dict(zip(snakemake.params.others, snakemake.input.others)),
    # Snakemake deletes a failed job's outputs: the QC figure of a failure goes beside the log
    failed_qc=Path(snakemake.log[0]).with_suffix(".qc_failed.png"),
)
