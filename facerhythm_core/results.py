"""Readers of the stage files (per docs/architecture.md and the file-format contract)
into plain arrays: the one ``videos.json`` reader of the stages, and what the figure
stages (facerhythm_core.stages.figures) hand to facerhythm_core.plots."""

from __future__ import annotations

import json
import os

import h5py
import numpy as np

from facerhythm_core.errors import FaceRhythmError
from facerhythm_core.keys import natural, start_offsets
from facerhythm_core.rois import load_rois_h5


def as_list(x):
    """A Snakemake input entry or a stage argument as a list of paths (a single file
    comes as a str or a path)."""
    return [x] if isinstance(x, (str, os.PathLike)) else list(x)


def read_rois(path):
    """Example image (H, W, 3), masks {name: (H, W)}, seed points (N, 2), tracking mask."""
    rois = load_rois_h5(path)
    with h5py.File(path, "r") as f:
        tmask = f["tracking_mask"][()].astype(bool) if "tracking_mask" in f else None
        spacing = f.attrs.get("point_spacing")
    return {
        "image": rois.example_image,
        "masks": rois.masks,
        "points": rois.point_positions,
        "tracking_mask": tmask,
        "point_spacing": None if spacing is None else float(spacing),
    }


def read_videos_info(path):
    """``videos.json`` (written by the probe stage) as a dict: ``videos`` (one record
    per video: ``path``, ``num_frames``, ``fps``, ...), ``frame_rate`` (Hz),
    ``num_frames``, ``height``, ``width``; docs/file_formats.md lists every key."""
    with open(path) as fh:
        return json.load(fh)


def key_offsets(keys, num_frames, frame_rate):
    """Session start time (s) of each tracked/spectrogram key.

    One key per video (videos tracked separately) -> cumulative video durations; a
    single key for several videos (contiguous tracking) -> 0.
    """
    starts = start_offsets(num_frames, frame_rate)
    if len(keys) == len(starts):
        return [float(s) for s in starts]
    if len(keys) == 1:
        return [0.0]
    raise FaceRhythmError(
        f"{len(keys)} result keys {list(keys)} for {len(starts)} videos: expected "
        "one key per video, or a single key (contiguous tracking)"
    )


def key_labels(keys, info):
    """'video N (file name)' per key, or 'all videos' for a single contiguous key."""
    vids = info["videos"]
    if len(keys) == len(vids):
        return [f"video {i + 1}" for i in range(len(keys))]
    return ["all videos"]


def tracking_keys(f):
    return natural(list(f["points_tracked"].keys()))


def violation_matrix(f, key, rows=None):
    """(T, N) bool violation matrix of a key (optionally only rows [a, b))."""
    T, N = f["points_tracked"][key].shape[:2]
    a, b = (0, T) if rows is None else rows
    out = np.zeros((b - a, N), bool)
    if "violations" not in f or key not in f["violations"]:
        return out
    g = f["violations"][key]
    r = g["row"][()].astype(np.int64)
    c = g["col"][()].astype(np.int64)
    d = g["data"][()].astype(bool) if "data" in g else np.ones(len(r), bool)
    sel = (r >= a) & (r < b) & d
    out[r[sel] - a, c[sel]] = True
    return out


def violation_share(f, key):
    """Fraction of points violating in each frame, (T,)."""
    T, N = f["points_tracked"][key].shape[:2]
    if "violations" not in f or key not in f["violations"]:
        return np.zeros(T)
    g = f["violations"][key]
    r = g["row"][()].astype(np.int64)
    c = g["col"][()].astype(np.int64)
    d = g["data"][()].astype(bool) if "data" in g else np.ones(len(r), bool)
    pairs = np.unique(np.stack([r[d], c[d]], 1), axis=0) if d.any() else np.zeros((0, 2), np.int64)
    return np.bincount(pairs[:, 0], minlength=T)[:T] / max(N, 1)


def read_tca(path):
    """The figures' view of a tca.h5 (read by :func:`facerhythm_core.tca_h5.read_tca_h5`):
    joint keys flattened ('session/video'), the stacking axis picked out.

    Returns
    -------
    dict
        ``decompositions``: {name: {"points_x", "points_y", "frequency", "time" (array or
        {key: array}), "stack" (array or None), "stack_dim", "stack_names", "evr",
        "evr_model", "rel_error", "errors", "times" {key: seconds}, "sweep"}}, plus
        ``frequencies`` and ``point_positions`` (array or {session: array}), ``sessions``.
    """
    from facerhythm_core.tca_h5 import read_tca_h5

    raw = read_tca_h5(path, fitted=False)
    out = {"decompositions": {}}
    for name, d in raw.items():
        if not (isinstance(d, dict) and "factors" in d):
            continue
        fac, attrs = d["factors"], d["attrs"]
        dims = [x.decode() if isinstance(x, bytes) else str(x) for x in attrs.get("dims", [])]
        stack_dim = dims[0] if len(dims) == 4 else None
        t = fac["time"]
        out["decompositions"][name] = {
            "points_x": fac["points_x"],
            "points_y": fac["points_y"],
            "frequency": fac["frequency"],
            "time": _flat(t) if isinstance(t, dict) else t,
            "stack_dim": stack_dim,
            "stack": fac.get(stack_dim) if stack_dim else None,
            "stack_names": d["labels"].get(f"{stack_dim}_names") if stack_dim else None,
            "evr": d["evr"],
            "errors": d["errors"],
            "evr_model": d["evr_model"],
            "rel_error": float(attrs["rel_error"]) if "rel_error" in attrs else None,
            "times": _flat(d["times"]),
            "sweep": _flat(d["rank_sweep"]) if d["rank_sweep"] is not None else None,
        }
    out["frequencies"] = raw.get("frequencies")
    pp = raw.get("point_positions")
    out["point_positions"] = _flat(pp) if isinstance(pp, dict) else pp
    out["sessions"] = raw.get("sessions")
    return out


def _flat(tree: dict, prefix: str = "") -> dict:
    """Nested dicts -> one dict keyed 'a/b'."""
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}/"))
        else:
            out[f"{prefix}{k}"] = v
    return out
