"""TCA figures (per session or joint group): component maps/spectra/time courses, and
EVR + convergence. One PNG per decomposition in each output folder."""

from facerhythm_core.runtime import setup_logging

log = setup_logging(snakemake)

from facerhythm_core.runtime import limit_threads  # noqa: E402

limit_threads(snakemake.threads)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from facerhythm_core import plots  # noqa: E402
from facerhythm_core.results import as_list, read_rois, read_tca, read_videos_info  # noqa: E402
from facerhythm_core.streams import decomposition_label, stream_labels  # noqa: E402

joint = bool(snakemake.params.joint)
label = snakemake.params.label
sessions = list(snakemake.params.sessions)
infos = {s: read_videos_info(p) for s, p in zip(sessions, as_list(snakemake.input.videos_info))}
rois = read_rois(as_list(snakemake.input.rois)[0])  # joint: the first session's frame
res = read_tca(snakemake.input.tca)
freqs = res["frequencies"]
pos = res["point_positions"]
if isinstance(pos, dict):  # joint: sessions share one point set; draw on the first
    pos = pos.get(sessions[0], next(iter(pos.values())))
if pos is None:
    pos = rois["points"]


# per session: decompositions and time panels named by video file (keys stay "0", "1")
every_key = sorted(
    {k for d in res["decompositions"].values() for k in d["times"]} or set(res["decompositions"]),
    key=lambda k: (len(k), k),
)
files = stream_labels(every_key, [v["path"] for v in infos[sessions[0]]["videos"]]) if not joint else {}


def start_of(session, key):
    """Session time (s) where a video key starts (key i = video i; a contiguous key is '0')."""
    info = infos[session]
    starts = np.concatenate([[0.0], np.cumsum(info["num_frames"])[:-1]]) / info["frame_rate"]
    try:
        return float(starts[int(key)])
    except (ValueError, IndexError):
        return 0.0


def split_key(k):
    """'session/video' for joint keys, else (this session, k)."""
    if "/" in k:
        s, v = k.split("/", 1)
        return s, v
    return sessions[0], k


out_comp = Path(snakemake.output.components)
out_fit = Path(snakemake.output.fit)
out_comp.mkdir(parents=True, exist_ok=True)
out_fit.mkdir(parents=True, exist_ok=True)
for name, d in res["decompositions"].items():
    panels, bounds = {}, {}
    t_fac, times = d["time"], d["times"]
    if isinstance(t_fac, dict):  # concatenated elements, split back per key
        for k, fac in t_fac.items():
            s, v = split_key(k)
            t0 = start_of(s, v)
            t = times[k] + t0 if k in times else t0 + np.arange(len(fac), dtype=float)
            title = s if joint else label
            panels.setdefault(title, []).append((t, fac))
            bounds.setdefault(title, []).append(t0)
    else:
        if d["stack"] is not None:  # one shared time axis, e.g. stacked sessions/videos
            t = next(iter(times.values())) if times else np.arange(len(t_fac), dtype=float)
            title = f"{label} (shared by every {d['stack_dim']})"
        else:  # one video (separate mode): the decomposition is named after its key
            s, v = split_key(name)
            t0 = start_of(s, v)
            t = times[name] + t0 if name in times else t0 + np.arange(len(t_fac), dtype=float)
            title = files.get(name, label)
        panels[title] = [(t, t_fac)]
    if joint:
        ttl = f"{label}: TCA components" + ("" if len(res["decompositions"]) == 1 else f" (decomposition {name!r})")
    else:
        ttl = f"{label}: TCA components of {decomposition_label(name, list(d['times']) or [name], files)}"
    fig = plots.plot_tca_components(
        d["points_x"],
        d["points_y"],
        d["frequency"],
        freqs,
        panels,
        pos,
        image=rois["image"],
        evr=d["evr"],
        stack_factor=d["stack"],
        stack_names=d["stack_names"],
        stack_label=d["stack_dim"] or "session",
        boundaries=bounds,
        title=ttl,
    )
    plots.save_figure(fig, out_comp / f"{name}.png", dpi=90)
    fig = plots.plot_tca_fit(
        d["evr"],
        d["errors"],
        d["evr_model"],
        d["rel_error"],
        sweep=d["sweep"],
        title=ttl.replace("TCA components", "TCA fit"),
    )
    plots.save_figure(fig, out_fit / f"{name}.png")
    log.info("decomposition %s: rank %d, EVR %s", name, d["points_x"].shape[1], np.round(d["evr"], 4).tolist())
log.info("wrote %s and %s", out_comp, out_fit)
