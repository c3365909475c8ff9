"""Event-triggered averages of the TCA components, one column per label (events.h5 -> PNG)."""

from facerhythm_core.runtime import setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
stages.plot_events(snakemake.input[0], snakemake.output[0], session=snakemake.wildcards.session)
