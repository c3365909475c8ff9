"""A session's reference image for ROI transfer: mean of its quietest frames, CLAHE."""

import json

import numpy as np

from facerhythm_core.runtime import set_threads, setup_logging

from facerhythm_core.alignment import reference_image_from_videos
from facerhythm_core.io import atomic_output

log = setup_logging(snakemake)
set_threads(snakemake.threads)
cfg = snakemake.params.alignment
with open(snakemake.input.videos_info) as fh:
    info = json.load(fh)
log.info("reference image of %s from %s at %.4f Hz (ds_factor %d, keep %.3g %% quietest, "
         "max_frames %s)", snakemake.wildcards.session, list(snakemake.input.videos),
         info["frame_rate"], cfg["ds_factor"], cfg["ptile_keep"], cfg["max_frames"])
image, details = reference_image_from_videos(
    list(snakemake.input.videos), info["frame_rate"], ds_factor=cfg["ds_factor"],
    ptile_keep=cfg["ptile_keep"], max_frames=cfg["max_frames"], clip_limit=cfg["clip_limit"],
    grid_size=cfg["grid_size"], vqt_params=cfg["vqt"],
    chunk_size=snakemake.params.video["chunk_size"])
for p, idx in details["frames_kept"].items():
    log.info("%s: %d frames scored, %d kept", p, details["frames_scored"][p], len(idx))
with atomic_output(snakemake.output[0]) as tmp:
    with open(tmp, "wb") as fh:
        np.save(fh, image.astype(np.float32), allow_pickle=False)
log.info("wrote %s (%dx%d)", snakemake.output[0], image.shape[1], image.shape[0])
