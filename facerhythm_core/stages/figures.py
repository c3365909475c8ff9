"""Stages that draw: the QC and result figures of a session or joint group (PNG) and
the overlay video (MP4), from the stage files through their readers
(:mod:`facerhythm_core.results`, :mod:`facerhythm_core.events`).

Each function reads its inputs, draws with :mod:`facerhythm_core.plots` and writes
every output atomically; nothing here computes an analysis result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import FaceRhythmError, ROIError
from ..results import (
    as_list,
    key_labels,
    key_offsets,
    natural,
    read_rois,
    read_tca,
    read_videos_info,
    tracking_keys,
    violation_matrix,
    violation_share,
)
from ._common import _log

#: motion is estimated on at most this many frames per key (strided), to bound memory
MAX_MOTION_ROWS = 20000
#: spectrogram points read at a time (bounds memory for long sessions)
SPECTROGRAM_CHUNK = 256

# --------------------------------------------------------------------------- ROIs


def plot_rois(rois: str | Path, output: str | Path, *, session: str) -> Path:
    """ROI figure: the masks and seed points of ``rois.h5`` on its example frame.

    Raises
    ------
    ROIError
        ``rois.h5`` has no example image to draw on.
    """
    from .. import plots

    r = read_rois(rois)
    if r["image"] is None:
        raise ROIError(f"{rois} has no exampleImage to draw on")
    spacing = f", spacing {r['point_spacing']:g} px" if r["point_spacing"] else ""
    fig = plots.plot_rois(
        r["image"],
        r["masks"],
        r["points"],
        r["tracking_mask"],
        title=f"{session}: ROIs and {len(r['points'])} seed points{spacing}",
    )
    plots.save_figure(fig, output)
    _log("plot_rois").info("wrote %s", output)
    return Path(output)


# --------------------------------------------------------------------------- tracking


def _example_traces(f, keys, shares, home: np.ndarray, k: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``k`` example points spread over the range of motion, preferring never-violating
    points, and their displacement from home (T, k, 2) per key, in pixels."""
    from .. import plots

    var = np.zeros(len(home))
    ever_bad = np.zeros(len(home), bool)
    for key, s in zip(keys, shares):
        ds = f["points_tracked"][key]
        step = max(1, int(np.ceil(ds.shape[0] / MAX_MOTION_ROWS)))
        disp = ds[::step].astype(np.float64) - home[None]
        var += np.nan_to_num(np.nanvar(disp, axis=0)).sum(axis=1)
        if "violations" in f and key in f["violations"]:
            ever_bad[np.unique(f["violations"][key]["col"][()])] = True
    ids = plots.choose_example_points(np.sqrt(var), k, valid=~ever_bad)
    sorted_ids = np.sort(ids)  # h5py reads fancy indices in increasing order only
    traces = []
    for key in keys:
        a = f["points_tracked"][key][:, sorted_ids, :].astype(np.float64)
        a = a[:, np.searchsorted(sorted_ids, ids), :] - home[ids][None]
        traces.append(a)
    return ids, traces


def plot_tracking(
    tracking: str | Path,
    rois: str | Path,
    videos_info: str | Path,
    violations_out: str | Path,
    displacements_out: str | Path,
    *,
    session: str,
    n_example_points: int,
) -> dict:
    """Tracking QC figures: the share of violating points over time, and the
    displacement traces of ``n_example_points`` example points.

    Returns
    -------
    dict
        ``example_points``: the ids of the points drawn.
    """
    import h5py

    from .. import plots

    log = _log("plot_tracking")
    info = read_videos_info(videos_info)
    image = read_rois(rois)["image"]
    with h5py.File(tracking, "r") as f:
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
            shares,
            fr,
            offsets=offsets,
            fractions=fractions,
            labels=labels,
            title=f"{session}: points flagged as violating",
        )
        plots.save_figure(fig, violations_out)
        ids, traces = _example_traces(f, keys, shares, home, int(n_example_points))
    log.info("example points %s", ids.tolist())
    fig = plots.plot_displacement_traces(
        traces,
        fr,
        ids.tolist(),
        home[ids],
        image=image,
        offsets=offsets,
        labels=labels,
        title=f"{session}: displacement from home position",
    )
    plots.save_figure(fig, displacements_out)
    log.info("wrote %s and %s", violations_out, displacements_out)
    return {"example_points": ids.tolist()}


def overlay_video(
    tracking: str | Path,
    videos_info: str | Path,
    videos: Sequence[str | Path],
    output: str | Path,
    *,
    start: int,
    n_frames: int,
) -> dict:
    """Overlay video: ``n_frames`` session frames from frame ``start`` with the tracked
    points drawn on them (violating points marked).

    A ``start`` past the session's end falls back to frame 0 (with a warning).

    Returns
    -------
    dict
        :func:`facerhythm_core.overlay.write_overlay_video`'s summary.
    """
    import h5py

    from ..overlay import write_overlay_video

    log = _log("overlay_video")
    info = read_videos_info(videos_info)
    num_frames = [int(n) for n in info["num_frames"]]
    total = sum(num_frames)
    start = int(start)
    if start >= total:
        log.warning("report.overlay_start %d is past the session's %d frames; using frame 0", start, total)
        start = 0
    n = min(int(n_frames), total - start)
    # tracked rows on the session timeline: keys are back to back (one per video) or one
    # key spanning every frame (contiguous), so the concatenation lines up either way
    with h5py.File(tracking, "r") as f:
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
        raise FaceRhythmError(f"tracking.h5 holds {first} frames but the session's videos have {total}")
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
    res = write_overlay_video(output, list(videos), num_frames, pts, bad, start, fr, chunk_size=64)
    log.info("wrote %s (%s)", output, res)
    return res


# --------------------------------------------------------------------------- spectrograms


def _distinct_memberships(positions: np.ndarray, masks) -> dict:
    """Points in each ROI, with "all points" first; ROIs holding the same points would
    draw the same curves, so their names are merged (``"a = b"``)."""
    from .. import plots

    member = {"all points": np.ones(len(positions), bool), **plots.points_in_masks(positions, masks)}
    merged = {}
    for name, sel in member.items():
        same = next((k for k, v in merged.items() if np.array_equal(v, sel)), None)
        if same is None:
            merged[name] = sel
        else:
            merged[f"{same} = {name}"] = merged.pop(same)
    return merged


def _roi_mean_spectrograms(f, keys, offsets, member: dict) -> tuple[dict, list, np.ndarray]:
    """Mean magnitude spectrogram of each ROI's points per key, read in chunks of points.

    Returns
    -------
    means : dict
        ROI -> [(2, F, T_key) per key] (NaN for an ROI without points).
    times : list of ndarray
        Session time (s) of each key's bins.
    spec_mean : ndarray, shape (2, N, F)
        Each point's spectrum averaged over every time bin of the session.
    """
    means = {name: [] for name in member}
    per_point = []  # (2, N, F) time-sum per key
    times = []
    for key, t0 in zip(keys, offsets):
        ds = f["spectrograms"][key]
        _, N, F, T = ds.shape
        sums = {name: np.zeros((2, F, T)) for name in member}
        tm = np.zeros((2, N, F))
        for a in range(0, N, SPECTROGRAM_CHUNK):
            blk = ds[:, a : a + SPECTROGRAM_CHUNK]
            blk = np.abs(blk) if np.iscomplexobj(blk) else blk.astype(np.float64)
            tm[:, a : a + SPECTROGRAM_CHUNK] = blk.mean(axis=-1)
            for name, sel in member.items():
                s = sel[a : a + SPECTROGRAM_CHUNK]
                if s.any():
                    sums[name] += blk[:, s].sum(axis=1)
        for name, sel in member.items():
            means[name].append(sums[name] / sel.sum() if sel.any() else np.full((2, F, T), np.nan))
        per_point.append(tm * T)
        times.append(t0 + f["times"][key][()])
    total_t = sum(len(t) for t in times)
    return means, times, sum(per_point) / total_t


def plot_spectrograms(
    spectrograms: str | Path,
    rois: str | Path,
    videos_info: str | Path,
    spectrograms_out: str | Path,
    power_spectrum_out: str | Path,
    *,
    session: str,
) -> dict:
    """Spectral QC figures: the mean spectrogram of the points in each ROI (per axis),
    and the mean spectrum per ROI (mean over points with its 25-75 % band).

    Returns
    -------
    dict
        ``points_per_roi``: ROI -> number of points ("all points" first).
    """
    import h5py

    from .. import plots

    log = _log("plot_spectrograms")
    info = read_videos_info(videos_info)
    masks = read_rois(rois)["masks"]
    with h5py.File(spectrograms, "r") as f:
        keys = natural(list(f["spectrograms"].keys()))
        freqs = f["frequencies"][()]
        pos = f["point_positions"][()]
        fr = float(f.attrs.get("frame_rate", info["frame_rate"]))
        offsets = key_offsets(keys, info["num_frames"], fr)
        labels = key_labels(keys, info)
        member = _distinct_memberships(pos, masks)
        means, times, spec_mean = _roi_mean_spectrograms(f, keys, offsets, member)
    counts = {k: int(v.sum()) for k, v in member.items()}
    log.info(
        "%s: %d key(s), %d points, %d frequencies; points per ROI %s", session, len(keys), len(pos), len(freqs), counts
    )
    empty = [name for name, sel in member.items() if not sel.any()]
    if empty:
        log.warning("ROIs without any tracked point (left out): %s", empty)
    means = {k: v for k, v in means.items() if k not in empty}
    fig = plots.plot_mean_spectrograms(
        means,
        times,
        freqs,
        offsets=offsets,
        labels=labels,
        title=f"{session}: mean spectrogram of the points in each ROI",
    )
    plots.save_figure(fig, spectrograms_out)
    spectra = {name: spec_mean[:, sel] for name, sel in member.items() if name not in empty}
    fig = plots.plot_power_spectrum(
        spectra, freqs, title=f"{session}: mean spectrum per ROI (line: mean over points, band: 25-75 %)"
    )
    plots.save_figure(fig, power_spectrum_out)
    log.info("wrote %s and %s", spectrograms_out, power_spectrum_out)
    return {"points_per_roi": counts}


# --------------------------------------------------------------------------- TCA


class _Timeline:
    """Where each decomposition key lies on its session's clock.

    Keys are ``"video"`` (one session) or ``"session/video"`` (joint); video key ``i``
    is the session's video ``i``, a contiguous key is ``"0"``.
    """

    def __init__(self, infos: dict, sessions: Sequence[str]):
        self.infos, self.first = infos, sessions[0]

    def split(self, key: str) -> tuple[str, str]:
        """(session, video key) of a decomposition key."""
        if "/" in key:
            s, v = key.split("/", 1)
            return s, v
        return self.first, key

    def start(self, session: str, key: str) -> float:
        """Session time (s) where a video key starts."""
        info = self.infos[session]
        starts = np.concatenate([[0.0], np.cumsum(info["num_frames"])[:-1]]) / info["frame_rate"]
        try:
            return float(starts[int(key)])
        except (ValueError, IndexError):
            return 0.0

    def axis(self, key: str, times: dict, n: int) -> tuple[str, float, np.ndarray]:
        """(session, start, session times (n,)) of a key's ``n`` time bins; bins
        without stored times count frames from the key's start."""
        s, v = self.split(key)
        t0 = self.start(s, v)
        t = times[key] + t0 if key in times else t0 + np.arange(n, dtype=float)
        return s, t0, t


def _tca_time_panels(name: str, d: dict, timeline: _Timeline, *, label: str, joint: bool, files: dict):
    """The time panels of one decomposition: title -> [(session times, time factor)],
    and title -> [video start times] (the boundaries drawn)."""
    panels, bounds = {}, {}
    t_fac, times = d["time"], d["times"]
    if isinstance(t_fac, dict):  # concatenated elements, split back per key
        for k, fac in t_fac.items():
            s, t0, t = timeline.axis(k, times, len(fac))
            title = s if joint else label
            panels.setdefault(title, []).append((t, fac))
            bounds.setdefault(title, []).append(t0)
    elif d["stack"] is not None:  # one shared time axis, e.g. stacked sessions/videos
        t = next(iter(times.values())) if times else np.arange(len(t_fac), dtype=float)
        panels[f"{label} (shared by every {d['stack_dim']})"] = [(t, t_fac)]
    else:  # one video (separate mode): the decomposition is named after its key
        _, _, t = timeline.axis(name, times, len(t_fac))
        panels[files.get(name, label)] = [(t, t_fac)]
    return panels, bounds


def plot_tca(
    tca: str | Path,
    rois: str | Path | Sequence[str | Path],
    videos_info: str | Path | Sequence[str | Path],
    components_dir: str | Path,
    fit_dir: str | Path,
    *,
    label: str,
    sessions: Sequence[str],
    joint: bool = False,
) -> list[str]:
    """TCA figures of a session or joint group: one PNG per decomposition in each folder,
    the components (maps, spectra, time courses) and the fit (EVR, convergence).

    Parameters
    ----------
    tca : path
        ``tca.h5`` of the session or group.
    rois, videos_info : path or sequence of path
        One per session in ``sessions``; a joint group's maps are drawn on its first
        session's example frame.
    components_dir, fit_dir : path
        Output folders (created).
    label : str
        Names the session or group in the titles.
    sessions : sequence of str
    joint : bool
        ``tca`` is a joint group's.

    Returns
    -------
    list of str
        The decompositions drawn.
    """
    from .. import plots
    from ..streams import decomposition_label, stream_labels

    log = _log("plot_tca")
    sessions = list(sessions)
    infos = {s: read_videos_info(p) for s, p in zip(sessions, as_list(videos_info))}
    r = read_rois(as_list(rois)[0])  # joint: the first session's frame
    res = read_tca(tca)
    pos = res["point_positions"]
    if isinstance(pos, dict):  # joint: sessions share one point set; draw on the first
        pos = pos.get(sessions[0], next(iter(pos.values())))
    if pos is None:
        pos = r["points"]
    decs = res["decompositions"]
    # per session: decompositions and time panels named by video file (keys stay "0", "1")
    every_key = sorted({k for d in decs.values() for k in d["times"]} or set(decs), key=lambda k: (len(k), k))
    files = stream_labels(every_key, [v["path"] for v in infos[sessions[0]]["videos"]]) if not joint else {}
    timeline = _Timeline(infos, sessions)
    out_comp, out_fit = Path(components_dir), Path(fit_dir)
    out_comp.mkdir(parents=True, exist_ok=True)
    out_fit.mkdir(parents=True, exist_ok=True)
    for name, d in decs.items():
        panels, bounds = _tca_time_panels(name, d, timeline, label=label, joint=joint, files=files)
        if joint:
            ttl = f"{label}: TCA components" + ("" if len(decs) == 1 else f" (decomposition {name!r})")
        else:
            ttl = f"{label}: TCA components of {decomposition_label(name, list(d['times']) or [name], files)}"
        fig = plots.plot_tca_components(
            d["points_x"],
            d["points_y"],
            d["frequency"],
            res["frequencies"],
            panels,
            pos,
            image=r["image"],
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
    return list(decs)


# --------------------------------------------------------------------------- events


def plot_events(events: str | Path, output: str | Path, *, session: str) -> int:
    """Event-triggered averages of the TCA components, one column per (decomposition,
    label), from ``events.h5``. Returns the number of columns drawn."""
    from .. import plots
    from ..events import figure_columns, read_events_h5

    ev = read_events_h5(events)
    columns = figure_columns(ev)
    fig = plots.plot_event_triggered(
        columns,
        title=f"{session}: TCA components around events (mean, {100 * ev['attrs']['ci']:g}% CI)",
    )
    plots.save_figure(fig, output, dpi=90)
    _log("plot_events").info("%d panel column(s) -> %s", len(columns), output)
    return len(columns)
