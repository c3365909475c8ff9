"""Build a session's ROIs: masks, seed points, tracking mask, example frame."""

import json

import numpy as np

from _common import setup_logging

from facerhythm_core.io import atomic_output, write_provenance
from facerhythm_core.rois import build_session_rois, save_rois_h5, save_example_png

log = setup_logging(snakemake)
with open(snakemake.input.videos_info) as fh:
    info = json.load(fh)
cfg = snakemake.params.rois
rois, tracking_mask = build_session_rois(
    source=snakemake.params.source,
    frame_shape=(info["height"], info["width"]),
    first_video=snakemake.params.first_video,
    roi_file=snakemake.input.get("roi_file"),
    polygons=snakemake.params.polygons,
    point_rois=cfg["point_rois"],
    tracking_rois=cfg["tracking_rois"],
    point_spacing=cfg["point_spacing"],
    use_file_points=cfg["use_file_points"],
    flip=cfg["flip_lr"],
)
log.info("%d ROI(s) %s; %d seed points; tracking mask %d px",
         len(rois.masks), rois.names, len(rois.point_positions), int(tracking_mask.sum()))
with atomic_output(snakemake.output.rois) as tmp:
    save_rois_h5(tmp, rois, extra={"tracking_mask": tracking_mask},
                 attrs={"point_spacing": cfg["point_spacing"], "source": snakemake.params.source})
    import h5py
    with h5py.File(tmp, "a") as f:
        inputs = [p for p in [snakemake.input.get("roi_file"), snakemake.params.first_video] if p]
        write_provenance(f, "rois", params={"source": snakemake.params.source, **cfg}, inputs=inputs)
with atomic_output(snakemake.output.example) as tmp:
    save_example_png(tmp, rois, tracking_mask)
