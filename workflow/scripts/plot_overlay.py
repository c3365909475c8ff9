"""Overlay video: a window of session frames with tracked points drawn on them."""

from facerhythm_core.runtime import set_threads, setup_logging

log = setup_logging(snakemake)
set_threads(snakemake.threads)

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from facerhythm_core.overlay import write_overlay_video  # noqa: E402
from facerhythm_core.results import read_videos_info, tracking_keys, violation_matrix  # noqa: E402

info = read_videos_info(snakemake.input.videos_info)
videos = list(snakemake.input.videos)
num_frames = [int(n) for n in info["num_frames"]]
total = sum(num_frames)
start = int(snakemake.params.start)
if start >= total:
    log.warning("report.overlay_start %d is past the session's %d frames; using frame 0", start, total)
    start = 0
n = min(int(snakemake.params.n_frames), total - start)

# tracked rows on the session timeline: keys are back to back (one per video) or one
# key spanning every frame (contiguous), so the concatenation lines up either way
with h5py.File(snakemake.input.tracking, "r") as f:
    fr = float(f.attrs.get("frame_rate", info["frame_rate"]))
    pts, bad = [], []
    first = 0
    for key in tracking_keys(f):
        T = f["points_tracked"][key].shape[0]
        a, b = max(start, first), min(start + n, first + T)
        if a < b:
            pts.append(f["points_tracked"][key][a - first : b - first])
            bad.append(violation_matrix(f, key, (a - first, b - first)))
        first += T
if first != total:
    raise SystemExit(f"tracking.h5 holds {first} frames but the session's videos have {total}")
pts = np.concatenate(pts)
bad = np.concatenate(bad)
log.info(
    "overlay: session frames %d-%d of %d, %d points, %d violating point-frames",
    start,
    start + n - 1,
    total,
    pts.shape[1],
    int(bad.sum()),
)
res = write_overlay_video(snakemake.output[0], videos, num_frames, pts, bad, start, fr, chunk_size=64)
log.info("wrote %s (%s)", snakemake.output[0], res)
