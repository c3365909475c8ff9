"""Spectral QC: mean spectrogram per ROI and axis, mean spectrum per ROI."""

from facerhythm_core.runtime import setup_logging

log = setup_logging(snakemake)

from facerhythm_core.runtime import limit_threads  # noqa: E402

limit_threads(snakemake.threads)

import h5py  # noqa: E402
import numpy as np  # noqa: E402

from facerhythm_core import plots  # noqa: E402
from facerhythm_core.results import key_labels, key_offsets, natural, read_rois, read_videos_info  # noqa: E402

session = snakemake.wildcards.session
info = read_videos_info(snakemake.input.videos_info)
rois = read_rois(snakemake.input.rois)
CHUNK = 256  # points read at a time (bounds memory for long sessions)

with h5py.File(snakemake.input.spectrograms, "r") as f:
    keys = natural(list(f["spectrograms"].keys()))
    freqs = f["frequencies"][()]
    pos = f["point_positions"][()]
    fr = float(f.attrs.get("frame_rate", info["frame_rate"]))
    offsets = key_offsets(keys, info["num_frames"], fr)
    labels = key_labels(keys, info)
    member = plots.points_in_masks(pos, rois["masks"])
    member = {"all points": np.ones(len(pos), bool), **member}
    # ROIs holding the same points would draw the same curves: merge their names
    merged = {}
    for name, sel in member.items():
        same = next((k for k, v in merged.items() if np.array_equal(v, sel)), None)
        if same is None:
            merged[name] = sel
        else:
            merged[f"{same} = {name}"] = merged.pop(same)
    member = merged
    means = {name: [] for name in member}
    per_point = []  # (2, N, F) time-mean per key
    times = []
    for key, t0 in zip(keys, offsets):
        ds = f["spectrograms"][key]
        _, N, F, T = ds.shape
        sums = {name: np.zeros((2, F, T)) for name in member}
        tm = np.zeros((2, N, F))
        for a in range(0, N, CHUNK):
            blk = ds[:, a : a + CHUNK]
            blk = np.abs(blk) if np.iscomplexobj(blk) else blk.astype(np.float64)
            tm[:, a : a + CHUNK] = blk.mean(axis=-1)
            for name, sel in member.items():
                s = sel[a : a + CHUNK]
                if s.any():
                    sums[name] += blk[:, s].sum(axis=1)
        for name, sel in member.items():
            means[name].append(sums[name] / sel.sum() if sel.any() else np.full((2, F, T), np.nan))
        per_point.append(tm * T)
        times.append(t0 + f["times"][key][()])
    total_t = sum(len(t) for t in times)
spec_mean = sum(per_point) / total_t
log.info(
    "%s: %d key(s), %d points, %d frequencies; points per ROI %s",
    session,
    len(keys),
    len(pos),
    len(freqs),
    {k: int(v.sum()) for k, v in member.items()},
)
empty = [name for name, sel in member.items() if not sel.any()]
if empty:
    log.warning("ROIs without any tracked point (left out): %s", empty)
means = {k: v for k, v in means.items() if k not in empty}
fig = plots.plot_mean_spectrograms(
    means, times, freqs, offsets=offsets, labels=labels, title=f"{session}: mean spectrogram of the points in each ROI"
)
plots.save_figure(fig, snakemake.output.spectrograms)
spectra = {name: spec_mean[:, sel] for name, sel in member.items() if name not in empty}
fig = plots.plot_power_spectrum(
    spectra, freqs, title=f"{session}: mean spectrum per ROI (line: mean over points, band: 25-75 %)"
)
plots.save_figure(fig, snakemake.output.power_spectrum)
log.info("wrote %s and %s", snakemake.output.spectrograms, snakemake.output.power_spectrum)
