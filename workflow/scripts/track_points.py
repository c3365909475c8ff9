"""Track a session's seed points through its videos -> results/{session}/tracking.h5."""

import datetime as _dt
import json
from pathlib import Path

import numpy as np

from facerhythm_core.runtime import set_threads, setup_logging

log = setup_logging(snakemake)
started = _dt.datetime.now(_dt.timezone.utc)

import h5py  # noqa: E402

from facerhythm_core.errors import VideoError  # noqa: E402
from facerhythm_core.io import atomic_output, write_provenance  # noqa: E402
from facerhythm_core.timing import read_timestamps_h5, stream_clocks  # noqa: E402
from facerhythm_core.tracking import (TrackingParams, load_frames_freeze,  # noqa: E402
                                      track_session, write_tracking_h5)

set_threads(snakemake.threads)
cfg = dict(snakemake.params.tracking)
vcfg = dict(snakemake.params.video)
params = TrackingParams.from_config(cfg)

with open(snakemake.input.videos_info) as fh:
    info = json.load(fh)
videos = [str(p) for p in snakemake.input.videos]
by_path = {str(Path(v["path"]).resolve()): int(v["num_frames"]) for v in info["videos"]}
try:
    num_frames = [by_path[str(Path(p).resolve())] for p in videos]
except KeyError as exc:
    raise VideoError(f"{exc} is not listed in {snakemake.input.videos_info}; rerun the probe step") from None

with h5py.File(snakemake.input.rois, "r") as f:
    points = f["point_positions"][()].astype(np.float32)
    mask = f["tracking_mask"][()].astype(bool) if "tracking_mask" in f else None

freeze_path = snakemake.input.get("frames_freeze")
frames_freeze = load_frames_freeze(freeze_path, sum(num_frames)) if freeze_path else None
contiguous = bool(cfg.get("contiguous") or False)
log.info("session %s: %d video(s), %d frames, %d points, contiguous=%s, frames_freeze=%s",
         snakemake.wildcards.session, len(videos), sum(num_frames), len(points), contiguous,
         "none" if frames_freeze is None else f"{int(frames_freeze.sum())} frames")
log.info("parameters: %s", params.to_dict())

with atomic_output(snakemake.output[0]) as tmp, h5py.File(tmp, "w") as f:
    def out_factory(key, shape):
        # ~1 MB chunks; positions are written block by block while tracking runs
        rows = int(max(1, min(shape[0], (1 << 20) // (8 * shape[1]))))
        return f.create_dataset(f"points_tracked/{key}", shape=shape, dtype="f4",
                                chunks=(rows, shape[1], 2))

    session = track_session(
        videos, points, mask, params,
        num_frames=num_frames, contiguous=contiguous, idx_start=cfg.get("idx_start", 0),
        frames_freeze=frames_freeze, chunk_size=vcfg.get("chunk_size", 128),
        prefetch=vcfg.get("prefetch", 2), decode_device=vcfg.get("decode_device", "cpu"),
        device=cfg.get("device", "cpu"), out_factory=out_factory)
    clocks = stream_clocks(read_timestamps_h5(snakemake.input.timestamps), contiguous,
                           info.get("timing_policy", "resample"))
    write_tracking_h5(f, session, frame_rate=float(info["frame_rate"]), clocks=clocks)
    stats = {k: {"n_rewinds": r.n_rewinds, "rewinds_capped": r.rewinds_capped,
                 "frames_processed": r.n_frames_processed, "seconds": round(r.seconds, 3),
                 "violation_fraction": r.violation_fraction}
             for k, r in session.results.items()}
    inputs = [snakemake.input.rois, snakemake.input.videos_info, snakemake.input.timestamps, *videos]
    if freeze_path:
        inputs.append(freeze_path)
    write_provenance(f, "track_points", params={"tracking": cfg, "resolved": params.to_dict(),
                                                "video": vcfg},
                     inputs=inputs, extra={"streams": stats, "probe_warnings": info.get("warnings", []),
                                         "clocks": {k: c["clock"] for k, c in clocks.items()}},
                     started=started)
for k, s in stats.items():
    log.info("stream %s: %s", k, s)
log.info("wrote %s", snakemake.output[0])
