"""Render one bundled demo video (deterministic) and its ground truth JSON."""

from facerhythm_core.runtime import setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
stages.demo_video(snakemake.wildcards.demo, snakemake.output.video, snakemake.output.truth)
