"""Probe a session's videos: frame counts, rate, size and clock; fail early on bad input."""

from facerhythm_core.runtime import setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
stages.probe_videos(
    snakemake.input.videos,
    snakemake.output.info,
    snakemake.output.timestamps,
    session=snakemake.wildcards.session,
    timestamps=snakemake.input.get("timestamps"),
    params={**dict(snakemake.params.items()), "tca": snakemake.config["tca"]},
)
