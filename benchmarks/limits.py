"""Physical limits of the tracking stage's parts on this machine.

Measures, on one video and one thread of work each:

- raw decode rate: torchcodec ``VideoDecoder`` over consecutive frames in batches (RGB uint8);
- gray conversion (equal-weight channel mean, truncated, as the reference);
- CLAHE at the reference's parameters (clipLimit 40, 150 x 150 tile grid);
- pyramidal LK at the reference's pipeline parameters (winSize 20, maxLevel 2,
  criteria (EPS|COUNT, 2, 0.03)) on N points, frame to frame;
- where facerhythm_core is importable (our venv), our streaming reader
  ``iter_frame_chunks(gray=True)`` (decode + gray in its producer thread);
- with ``--ours-parts`` (our venv), the per-frame cost of each part of OUR tracker as
  it runs them (:func:`measure_ours_parts`): the reader's RGB decode, the crop + gray +
  mask, our CLAHE on the crop, LK on the crop, the mesh/relaxation/violation step, and
  the whole ``track_stream`` with its three threads (wall and CPU), so the pipeline's
  wall can be set against its busiest lane.

Standalone (numpy, cv2, torchcodec only) so it runs under either venv: the OpenCV
version differs (ours 5.x, the reference's 4.x) and LK/CLAHE speed may too.

    python limits.py VIDEO --points inputs.h5 --frames 600 --out limits.json
    python limits.py VIDEO --points inputs.h5 --frames 1000 --ours-parts --out parts.json   # our venv
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def _gray(rgb_nhwc: np.ndarray) -> np.ndarray:
    # floor((r+g+b)/3) in integers equals the reference's truncated float32 mean
    return (rgb_nhwc.astype(np.uint16).sum(axis=-1) // 3).astype(np.uint8)


def measure(
    video: str,
    points: np.ndarray | None,
    mask: np.ndarray | None,
    n_frames: int = 600,
    ours_reader: bool = False,
    batch: int = 128,
    win: int = 20,
    max_level: int = 2,
    iters: int = 2,
    eps: float = 0.03,
    clip_limit: float = 40.0,
    grid: int = 150,
) -> dict:
    import cv2
    from torchcodec.decoders import VideoDecoder

    dec = VideoDecoder(video, dimension_order="NHWC", seek_mode="exact")
    n = min(n_frames, len(dec))
    t0 = time.perf_counter()
    frames = []
    for s in range(0, n, batch):
        frames.append(dec.get_frames_in_range(s, min(s + batch, n)).data.numpy())
    t_decode = time.perf_counter() - t0
    rgb = np.concatenate(frames)

    t0 = time.perf_counter()
    gray = np.stack([_gray(f) for f in rgb])
    assert np.array_equal(gray[0], rgb[0].astype(np.float32).mean(-1).astype(np.uint8))
    t_gray = time.perf_counter() - t0
    if mask is not None:
        gray = gray * mask[None].astype(np.uint8)

    clahe = cv2.createCLAHE(clipLimit=clip_limit, tileGridSize=(grid, grid))
    t0 = time.perf_counter()
    eq = np.stack([clahe.apply(g) for g in gray])
    t_clahe = time.perf_counter() - t0

    if points is None:
        h, w = gray.shape[1:]
        ys, xs = np.mgrid[20 : h - 20 : 15, 20 : w - 20 : 15]
        points = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)
    p = points.astype(np.float32).reshape(-1, 1, 2)
    crit = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iters, eps)
    t0 = time.perf_counter()
    q = p
    for i in range(1, n):
        q, st, err = cv2.calcOpticalFlowPyrLK(
            eq[i - 1], eq[i], q, None, winSize=(win, win), maxLevel=max_level, criteria=crit
        )
    t_lk = time.perf_counter() - t0

    # our own streaming reader (decode + gray in a producer thread), where importable
    t_reader = None
    try:
        if not ours_reader:
            raise ImportError("not asked for")
        import sys
        from pathlib import Path

        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from facerhythm_core.video import iter_frame_chunks

        t0 = time.perf_counter()
        for _ in iter_frame_chunks(video, chunk_size=128, gray=True, stop=n):
            pass
        t_reader = time.perf_counter() - t0
    except ImportError:
        pass

    def rate(t, k):
        return k / t if t > 0 else float("inf")

    out = dict(
        video=video,
        frames=int(n),
        height=int(gray.shape[1]),
        width=int(gray.shape[2]),
        n_points=int(p.shape[0]),
        cv2_version=cv2.__version__,
        cv2_threads=cv2.getNumThreads(),
        decode_fps=rate(t_decode, n),
        gray_fps=rate(t_gray, n),
        clahe_fps=rate(t_clahe, n),
        lk_fps=rate(t_lk, n - 1),
        ours_reader_gray_fps=None if t_reader is None else rate(t_reader, n),
    )
    # serial floor of a one-thread tracker: decode + gray + CLAHE + LK per frame
    per = 1 / out["decode_fps"] + 1 / out["gray_fps"] + 1 / out["clahe_fps"] + 1 / out["lk_fps"]
    out["serial_floor_fps"] = 1 / per
    # with decoding overlapped on a second core, the floor is the slower of the two lanes
    out["overlapped_floor_fps"] = 1 / max(
        1 / out["decode_fps"], 1 / out["gray_fps"] + 1 / out["clahe_fps"] + 1 / out["lk_fps"]
    )
    return out


def _best(fn, reps: int) -> float:
    """Best wall time of ``reps`` calls of ``fn`` (s)."""
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def measure_ours_parts(video: str, points: np.ndarray, mask: np.ndarray, n_frames: int = 1000, reps: int = 3) -> dict:
    """Milliseconds per frame of each part of our tracker, one part at a time (best of ``reps``).

    Parts as ``track_stream`` runs them at the default parameters: decode (the tracker's
    PyAV reader, RGB, one FFmpeg thread, chunks of 32, as ``track_session`` asks; and
    torchcodec's ``iter_frame_chunks`` with the same settings), preprocessing of
    the crop (gray + mask, then our CLAHE), LK on the preprocessed crop frame to frame,
    and the per-frame step after LK (mesh, relaxation, violation check). The whole
    tracker is then run on the same frames from memory and from the file (its three
    threads: decode, preprocess, LK + mesh), with its process CPU time.
    """
    import os
    import sys
    from pathlib import Path

    import cv2

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from facerhythm_core.mesh import apply_mesh, apply_relaxation, build_mesh
    from facerhythm_core.preprocess import FramePreprocessor
    from facerhythm_core.tracking import _CpuLK, track_stream
    from facerhythm_core.tracking_params import TrackingParams
    from facerhythm_core.rgb_reader import iter_rgb_chunks
    from facerhythm_core.video import iter_frame_chunks, to_gray

    params = TrackingParams()
    rkw = dict(chunk_size=32, gray=False, decode_threads=1)
    t_decode_tc = _best(lambda: [None for _ in iter_frame_chunks(video, stop=n_frames, **rkw)], reps)
    t_decode = _best(lambda: [None for _ in iter_rgb_chunks(video, 32, n_frames=n_frames)], reps)
    rgb = np.concatenate([f for _, f in iter_rgb_chunks(video, 32, n_frames=n_frames)])
    n = len(rgb)
    prep = FramePreprocessor(
        mask, params.clahe_clip_limit, params.clahe_tile_grid_size, win_size=params.win_size, max_level=params.max_level
    )
    rs = prep._rsrc  # the region CLAHE reads (frame pixels)
    rmask = prep._rmask

    def gray_mask():
        for a in range(0, n, 32):
            g = to_gray(rgb[a : a + 32, rs[0], rs[1]])
            np.multiply(g, rmask, out=g)

    t_gray = _best(gray_mask, reps)
    pre = np.concatenate([prep.process_chunk(rgb[a : a + 32]) for a in range(0, n, 32)])
    t_prep = _best(lambda: [prep.process_chunk(rgb[a : a + 32]) for a in range(0, n, 32)], reps)
    lk = _CpuLK(params)
    offset = np.array(prep.offset, np.float32)
    home = np.asarray(points, np.float32)

    def run_lk():
        p = home - offset
        for i in range(1, n):
            p = lk(pre[i - 1], pre[i], p)

    t_lk = _best(run_lk, reps)
    nb, d0 = build_mesh(home, params.mesh_n_neighbors)
    rho, lam = np.float32(params.mesh_rigidity), np.float32(params.relaxation)
    theta2 = params.threshold_displacement**2

    def run_step():
        q = home + 0.5
        for _ in range(1, n):
            q2 = apply_relaxation(apply_mesh(q, nb, d0, rho), home, lam)
            d = q2 - home
            bool(((d[:, 0] * d[:, 0] + d[:, 1] * d[:, 1]) > theta2).any())

    t_step = _best(run_step, reps)

    def whole(chunks):
        c0 = os.times()
        t0 = time.perf_counter()
        r = track_stream(chunks, home, mask, params, n_frames=n)
        wall = time.perf_counter() - t0
        c1 = os.times()
        return wall, (c1.user - c0.user) + (c1.system - c0.system), r.n_frames_processed

    mem = [whole([(a, rgb[a : a + 32]) for a in range(0, n, 32)]) for _ in range(reps)]
    fil = [whole(iter_rgb_chunks(video, 32, n_frames=n_frames)) for _ in range(reps)]
    mem_best, file_best = min(mem), min(fil)

    def ms(t, k=n):
        return 1e3 * t / k

    out = dict(
        ours_frames=n,
        ours_crop=[int(v) for v in prep.shape],
        ours_clahe_region=[int(v) for v in prep.clahe_region],
        ours_cv2_threads=cv2.getNumThreads(),
        ours_decode_ms=ms(t_decode),
        ours_decode_torchcodec_ms=ms(t_decode_tc),
        ours_gray_mask_ms=ms(t_gray),
        ours_clahe_ms=ms(t_prep - t_gray),
        ours_preprocess_ms=ms(t_prep),
        ours_lk_ms=ms(t_lk, n - 1),
        ours_step_ms=ms(t_step, n - 1),
        ours_track_from_memory_ms=ms(mem_best[0], mem_best[2]),
        ours_track_from_memory_cpu_ms=ms(mem_best[1], mem_best[2]),
        ours_track_from_file_ms=ms(file_best[0], file_best[2]),
        ours_track_from_file_cpu_ms=ms(file_best[1], file_best[2]),
        ours_frames_processed=int(file_best[2]),
    )
    lanes = (out["ours_decode_ms"], out["ours_preprocess_ms"], out["ours_lk_ms"] + out["ours_step_ms"])
    out["ours_serial_sum_ms"] = sum(lanes)
    out["ours_busiest_lane_ms"] = max(lanes)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("video")
    ap.add_argument("--points", help="inputs.h5 with point_positions and tracking_mask")
    ap.add_argument("--frames", type=int, default=600)
    ap.add_argument("--threads", type=int, default=0, help="cv2.setNumThreads (0 = leave)")
    ap.add_argument("--out", required=True)
    ap.add_argument(
        "--ours-reader", action="store_true", help="also time facerhythm_core's iter_frame_chunks (our venv only)"
    )
    ap.add_argument(
        "--ours-parts",
        action="store_true",
        help="only our tracker's parts, ms per frame (our venv only; needs --points)",
    )
    ap.add_argument("--reps", type=int, default=3, help="--ours-parts: best of this many runs of each part")
    a = ap.parse_args(argv)
    points = mask = None
    if a.points:
        import h5py

        with h5py.File(a.points, "r") as f:
            points = f["point_positions"][()]
            mask = f["tracking_mask"][()].astype(bool)
    if a.threads:
        import cv2

        cv2.setNumThreads(a.threads)
    if a.ours_parts:
        res = measure_ours_parts(a.video, points, mask, n_frames=a.frames, reps=a.reps)
    else:
        res = measure(a.video, points, mask, n_frames=a.frames, ours_reader=a.ours_reader)
    with open(a.out, "w") as f:
        json.dump(res, f, indent=2)
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
