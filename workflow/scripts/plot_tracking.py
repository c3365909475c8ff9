"""Tracking QC figures: violations over time, displacement traces of example points."""

from facerhythm_core.runtime import setup_logging

log = setup_logging(snakemake)

from facerhythm_core.runtime import limit_threads  # noqa: E402

limit_threads(snakemake.threads)

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from facerhythm_core import plots  # noqa: E402
from facerhythm_core.results import (  # noqa: E402
    key_labels,
    key_offsets,
    read_rois,
    read_videos_info,
    tracking_keys,
    violation_share,
)

session = snakemake.wildcards.session
info = read_videos_info(snakemake.input.videos_info)
rois = read_rois(snakemake.input.rois)
k = int(snakemake.params.n_example_points)
# motion is estimated on at most this many frames per key (strided), to bound memory
MAX_ROWS = 20000

with h5py.File(snakemake.input.tracking, "r") as f:
    fr = float(f.attrs.get("frame_rate", info["frame_rate"]))
    keys = tracking_keys(f)
    home = f["point_positions"][()].astype(np.float64)
    offsets = key_offsets(keys, info["num_frames"], fr)
    labels = key_labels(keys, info)
    shares = [violation_share(f, key) for key in keys]
    vf = f["violation_fraction"][()] if "violation_fraction" in f else None
    fractions = None if vf is None else [float(x) for x in np.atleast_1d(vf)[: len(keys)]]
    log.info(
        "%s: %d key(s), %d points, frames %s",
        session,
        len(keys),
        len(home),
        [f["points_tracked"][key].shape[0] for key in keys],
    )

    fig = plots.plot_violations(
        shares, fr, offsets=offsets, fractions=fractions, labels=labels, title=f"{session}: points flagged as violating"
    )
    plots.save_figure(fig, snakemake.output.violations)

    # example points: spread over the range of motion, preferring never-violating points
    var = np.zeros(len(home))
    ever_bad = np.zeros(len(home), bool)
    for key, s in zip(keys, shares):
        ds = f["points_tracked"][key]
        step = max(1, int(np.ceil(ds.shape[0] / MAX_ROWS)))
        disp = ds[::step].astype(np.float64) - home[None]
        var += np.nan_to_num(np.nanvar(disp, axis=0)).sum(axis=1)
        if "violations" in f and key in f["violations"]:
            ever_bad[np.unique(f["violations"][key]["col"][()])] = True
    ids = plots.choose_example_points(np.sqrt(var), k, valid=~ever_bad)
    sorted_ids = np.sort(ids)
    traces = []
    for key in keys:
        a = f["points_tracked"][key][:, sorted_ids, :].astype(np.float64)
        a = a[:, np.searchsorted(sorted_ids, ids), :] - home[ids][None]
        traces.append(a)
log.info("example points %s", ids.tolist())
fig = plots.plot_displacement_traces(
    traces,
    fr,
    ids.tolist(),
    home[ids],
    image=rois["image"],
    offsets=offsets,
    labels=labels,
    title=f"{session}: displacement from home position",
)
plots.save_figure(fig, snakemake.output.displacements)
log.info("wrote %s and %s", snakemake.output.violations, snakemake.output.displacements)
