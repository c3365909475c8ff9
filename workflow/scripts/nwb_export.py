"""A session's results as one NWB file (new, or a copy of its acquisition file)."""

from facerhythm_core.runtime import setup_logging

from facerhythm_core import stages

setup_logging(snakemake)
keys = ("tracking", "spectrograms", "tca", "rois", "videos_info", "timestamps", "events", "acquisition")
stages.nwb_export(
    {k: snakemake.input.get(k) for k in keys},
    snakemake.output[0],
    session=snakemake.wildcards.session,
    meta=snakemake.params.meta,
    compression=snakemake.params.compression,
)
