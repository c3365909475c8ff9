"""Run one stage of the ORIGINAL face-rhythm 0.3.3 on benchmark inputs.

Runs ONLY under benchmarks/.venv-ref/bin/python (see setup_reference_venv.sh), one stage
per process so that the driver can measure each stage's wall time and peak RSS alone.
Imports nothing from our product: inputs and outputs are plain HDF5/JSON.

    run_reference.py track        --params P.json --inputs inputs.h5 --out tracking.h5     --metrics m.json
    run_reference.py spectrogram  --params P.json --tracking tracking.h5 --out spectrograms.h5 --metrics m.json
    run_reference.py tca          --params P.json --spectrograms spectrograms.h5 --out tca.h5 --metrics m.json

P.json holds the case parameters with our config-schema names (sections ``tracking``,
``spectrogram``, ``tca``, plus ``videos``); they are mapped here onto the reference's
``util.get_default_parameters()`` layout, so unnamed parameters keep the reference's
pipeline defaults. The stage code follows ``pipelines.pipeline_basic``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import resource
import sys
import time
from pathlib import Path

import h5py
import numpy as np


def _peak_rss_mb() -> float:
    """Peak RSS of this process image: VmHWM (ru_maxrss would include the parent's RSS at fork)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _write_metrics(path, stage, t_stage, t_compute, extra):
    d = dict(
        impl="reference",
        stage=stage,
        t_stage_s=t_stage,
        t_compute_s=t_compute,
        vmhwm_mb=_peak_rss_mb(),
        pid=os.getpid(),
        **extra,
    )
    with open(path, "w") as f:
        json.dump(d, f, indent=2)


def _np(x):
    return x.cpu().numpy() if hasattr(x, "cpu") else np.asarray(x)


def _defaults():
    import face_rhythm as fr

    return fr.util.get_default_parameters()


def _seed(params):
    """The pipeline's seeding (numpy, torch, random, cv2; deterministic torch)."""
    from face_rhythm.pipelines import _set_random_seed

    seed = params.get("seed", 0)
    _set_random_seed(seed=seed, deterministic=True)


def _count_frames_and_rewinds(pt) -> dict:
    """Count processed frames (replays included) and violation events (= rewinds) by
    wrapping two bound methods of this tracker instance; prints progress to stderr.
    Observation only: the reference's code path is unchanged."""
    counts = {"frames": 0, "rewinds": 0}
    step, upd = pt._track_points_singleFrame, pt._update_violations
    t0 = time.perf_counter()

    def _step(*args, **kw):
        counts["frames"] += 1
        if counts["frames"] % 500 == 0:
            print(
                f"reference track: {counts['frames']} frames processed, {counts['rewinds']} rewinds, "
                f"{counts['frames'] / (time.perf_counter() - t0):.1f} frames/s",
                file=sys.stderr,
                flush=True,
            )
        return step(*args, **kw)

    def _upd(*args, **kw):
        out = upd(*args, **kw)
        if pt._violation_event:
            counts["rewinds"] += 1
        return out

    pt._track_points_singleFrame = _step
    pt._update_violations = _upd
    return counts


def stage_track(a, params):
    import face_rhythm as fr

    t0 = time.perf_counter()
    defaults = _defaults()
    tp = params["tracking"]
    pt_params = copy.deepcopy(defaults["PointTracker"])
    of = pt_params["params_optical_flow"]
    of["mesh_rigidity"] = tp["mesh_rigidity"]
    of["mesh_n_neighbors"] = tp["mesh_n_neighbors"]
    of["relaxation"] = tp["relaxation"]
    of["kwargs_method"] = dict(winSize=list(tp["win_size"]), maxLevel=tp["max_level"], criteria=list(tp["criteria"]))
    oh = pt_params["params_outlier_handling"]
    oh["threshold_displacement"] = tp["threshold_displacement"]
    oh["framesHalted_before"] = tp["frames_halted_before"]
    oh["framesHalted_after"] = tp["frames_halted_after"]
    pt_params["contiguous"] = bool(tp.get("contiguous", False))
    pt_params["verbose"] = 1
    clahe = tp.get("clahe", {"clip_limit": 40.0, "tile_grid_size": [150, 150]})
    # The pipeline cannot pass params_clahe (no key), so the class default is used;
    # we pass it explicitly only when the case asks for something else.
    if clahe is None:
        pt_params["params_clahe"] = None
    elif (clahe["clip_limit"], tuple(clahe["tile_grid_size"])) != (40.0, (150, 150)):
        pt_params["params_clahe"] = dict(
            clipLimit=float(clahe["clip_limit"]), tileGridSize=tuple(clahe["tile_grid_size"])
        )

    with h5py.File(a.inputs, "r") as f:
        point_positions = f["point_positions"][()].astype(np.float32)
        mask = f["tracking_mask"][()].astype(bool)

    bvr_params = dict(defaults["BufferedVideoReader"])
    bvr_params["verbose"] = 0
    videos = fr.helpers.BufferedVideoReader(paths_videos=list(params["videos"]), **bvr_params)
    data = fr.data_importing.Dataset_videos(bufferedVideoReader=videos, verbose=0, contiguous=pt_params["contiguous"])
    tc0 = time.perf_counter()
    pt = fr.point_tracking.PointTracker(
        buffered_video_reader=videos, point_positions=point_positions, rois_masks=mask, **pt_params
    )
    counts = _count_frames_and_rewinds(pt)
    pt.track_points()
    tc1 = time.perf_counter()

    keys = list(pt.points_tracked.keys())
    with h5py.File(a.out, "w") as f:
        f["point_positions"] = point_positions
        for k in keys:
            f[f"points_tracked/{k}"] = np.asarray(pt.points_tracked[k], dtype=np.float32)
            v = pt.violations_sparseCOO[k]
            f[f"violations/{k}/row"] = np.asarray(v["row"], np.int32)
            f[f"violations/{k}/col"] = np.asarray(v["col"], np.int32)
            f[f"violations/{k}/data"] = np.asarray(v["data"], bool)
            f[f"violations/{k}/shape"] = np.asarray(v["shape"], np.int64)
        f["violation_fraction"] = np.asarray(pt.violation_fraction, np.float64)
        f["neighbors"] = _np(pt.neighbors).astype(np.int64)
        f["mesh_d0"] = _np(pt.d_0).astype(np.float32)
        f["mask"] = _np(pt.mask).astype(bool)
        f["video_paths"] = np.array([str(p) for p in params["videos"]], dtype=h5py.string_dtype())
        f.attrs["frame_rate"] = float(data.frame_rate)
        f.attrs["contiguous"] = pt_params["contiguous"]
        f.attrs["num_keys"] = len(keys)
        f["num_frames"] = np.asarray([int(n) for n in videos.metadata["num_frames"]], np.int64)
    n_frames = int(sum(np.asarray(pt.points_tracked[k]).shape[0] for k in keys))
    n_points = int(point_positions.shape[0])
    t1 = time.perf_counter()
    return (
        t1 - t0,
        tc1 - tc0,
        dict(
            n_frames=n_frames,
            n_points=n_points,
            frames_processed=counts["frames"],
            rewinds=counts["rewinds"],
            frame_rate=float(data.frame_rate),
            violation_fraction=[float(x) for x in pt.violation_fraction],
        ),
    )


def stage_spectrogram(a, params):
    import face_rhythm as fr

    t0 = time.perf_counter()
    defaults = _defaults()
    sp = params["spectrogram"]
    va = copy.deepcopy(defaults["VQT_Analyzer"])
    pv = va["params_VQT"]
    # Same names as our schema; Fs from the video, F_max below Nyquist (set by the case).
    pv.update(
        Fs_sample=float(sp["fs"]),
        Q_lowF=sp["q_low_f"],
        Q_highF=sp["q_high_f"],
        F_min=sp["f_min"],
        F_max=sp["f_max"],
        n_freq_bins=sp["n_freq_bins"],
        window_type=sp["window_type"],
        symmetry=sp["symmetry"],
        taper_asymmetric=sp["taper_asymmetric"],
        downsample_factor=sp["downsample_factor"],
        padding=sp["padding"],
        take_abs=sp["take_abs"],
    )
    if sp.get("win_size") is not None:
        pv["win_size"] = int(sp["win_size"])
    va.update(
        normalization_factor=sp["normalization_factor"],
        spectrogram_exponent=sp["spectrogram_exponent"],
        one_over_f_exponent=sp["one_over_f_exponent"],
        verbose=1,
        device="cpu",
    )
    if "batch_size" in sp:
        va["batch_size"] = int(sp["batch_size"])

    with h5py.File(a.tracking, "r") as f:
        points_tracked = {k: f[f"points_tracked/{k}"][()] for k in f["points_tracked"]}
        point_positions = f["point_positions"][()]
    tc0 = time.perf_counter()
    spec = fr.spectral_analysis.VQT_Analyzer(**va)
    spec.transform_all(points_tracked=points_tracked, point_positions=point_positions)
    tc1 = time.perf_counter()
    keys = list(spec.spectrograms.keys())
    with h5py.File(a.out, "w") as f:
        for k in keys:
            f[f"spectrograms/{k}"] = spec.spectrograms[k]
            f[f"x_axis/{k}"] = np.asarray(spec.x_axis[k], np.float64)
            f[f"times/{k}"] = np.asarray(spec.x_axis[k], np.float64) / float(sp["fs"])
        f["frequencies"] = np.asarray(spec.vqt_model.freqs.cpu().numpy(), np.float32)
        f["filters"] = spec.vqt_model.filters.cpu().numpy()
        f["wins"] = spec.vqt_model.wins.cpu().numpy()
        f["point_positions"] = point_positions
        f.attrs["fs"] = float(sp["fs"])
        with h5py.File(a.tracking, "r") as ft:
            f.attrs["frame_rate"] = float(ft.attrs.get("frame_rate", sp["fs"]))
    n_samples = int(sum(v.shape[0] for v in points_tracked.values()))
    n_channels = int(2 * point_positions.shape[0])
    t1 = time.perf_counter()
    return (
        t1 - t0,
        tc1 - tc0,
        dict(n_samples=n_samples, n_channels=n_channels, shapes={k: list(spec.spectrograms[k].shape) for k in keys}),
    )


def stage_tca(a, params):
    import face_rhythm as fr

    t0 = time.perf_counter()
    defaults = _defaults()
    tp = params["tca"]
    with h5py.File(a.spectrograms, "r") as f:
        spectrograms = {k: np.abs(f[f"spectrograms/{k}"][()]) for k in f["spectrograms"]}
    tc0 = time.perf_counter()
    tca = fr.decomposition.TCA(verbose=1)
    rd = dict(defaults["TCA"]["rearrange_data"])
    rd["method_handling_dictElements"] = tp.get("videos", "separate")
    tca.rearrange_data(data=spectrograms, **rd)
    tca.normalize_data(mean_subtract=tp["mean_subtract"], std_divide=tp["std_divide"], dim_name=tp["normalize_dim"])
    pm = dict(defaults["TCA"]["fit"]["params_method"])
    pm.update(
        rank=tp["rank"],
        n_iter_max=tp["n_iter_max"],
        init=tp["init"],
        tol=tp["tol"],
        random_state=tp["random_state"],
        verbose=False,
    )
    tca.fit(DEVICE="cpu", method=tp["method"], params_method=pm, verbose=1)
    tca.rearrange_factors(undo_concat_complexDim=False, undo_concat_dictElements=False)
    tc1 = time.perf_counter()
    with h5py.File(a.out, "w") as f:
        for key, facs in tca.factors.items():
            for dim, arr in facs.items():
                f[f"factors/{key}/{dim}"] = np.asarray(arr, np.float32)
            f[f"weights/{key}"] = np.asarray(tca.factor_weights[key], np.float32)
            f[f"dim_names/{key}"] = np.array(list(facs.keys()), dtype=h5py.string_dtype())
    t1 = time.perf_counter()
    shapes = {k: list(v.shape) for k, v in tca.data.items()}
    errors = getattr(tca._model, "errors_", None)  # of the last key's fit
    return (
        t1 - t0,
        tc1 - tc0,
        dict(
            tensor_shapes=shapes,
            rank=int(tp["rank"]),
            n_iter_max=int(tp["n_iter_max"]),
            n_iter_run=None if errors is None else len(errors),
            final_rec_error=None if not errors else float(errors[-1]),
        ),
    )


def stage_all(a, params):
    """The three stages in one process, as the reference's pipeline runs a session (one
    interpreter, one import, one seeding); ``--out`` names the TCA file, the tracking and
    spectrogram files are written beside it. The driver takes the process wall."""
    out = Path(a.out)
    t0 = time.perf_counter()
    a.tracking = str(out.with_name(out.stem + "_tracking.h5"))
    a.spectrograms = str(out.with_name(out.stem + "_spectrograms.h5"))
    parts = {}
    for name, fn, dst in (
        ("track", stage_track, a.tracking),
        ("spectrogram", stage_spectrogram, a.spectrograms),
        ("tca", stage_tca, str(out)),
    ):
        a.out = dst
        parts[name] = fn(a, params)[0]
    t1 = time.perf_counter()
    return t1 - t0, t1 - t0, dict(stage_seconds=parts)


STAGES = {"track": stage_track, "spectrogram": stage_spectrogram, "tca": stage_tca, "all": stage_all}


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run one face-rhythm 0.3.3 stage (reference).")
    ap.add_argument("stage", choices=sorted(STAGES))
    ap.add_argument("--params", required=True)
    ap.add_argument("--inputs")
    ap.add_argument("--tracking")
    ap.add_argument("--spectrograms")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--seed", type=int, default=None, help="override tca.random_state (seed spread)")
    a = ap.parse_args(argv)
    with open(a.params) as f:
        params = json.load(f)
    if a.seed is not None:
        params["tca"]["random_state"] = a.seed
    threads = int(params.get("threads", 0))
    if threads:
        import torch

        torch.set_num_threads(threads)
    # the pipeline seeds once per run, not per stage, and its seeding is slow:
    # torch.use_deterministic_algorithms(True) took 1.0-1.2 s in a fresh process here
    # (2026-12-06), so it stays out of the stage clock (it is in the process wall)
    _seed(params)
    t_stage, t_compute, extra = STAGES[a.stage](a, params)
    _write_metrics(a.metrics, a.stage, t_stage, t_compute, extra)
    print(
        f"reference {a.stage}: {t_stage:.2f} s (compute {t_compute:.2f} s), peak RSS {_peak_rss_mb():.0f} MB",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
