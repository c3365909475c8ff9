"""Trial-structured sessions with real-looking facial motion, written as tracking.h5.

Labs record many short trial videos (e.g. 40 x 1000 frames at 120 fps) or hour-long
sessions. Tracking that much video with the reference would take hours per repetition,
and the spectral and TCA stages only need the tracked traces, so this module writes
the traces directly, in the tracking.h5 layout both runners read
(``points_tracked/{k}`` (T, N, 2) float32, ``point_positions`` (N, 2), attr
``frame_rate``).

Motion model (seeded, deterministic). Points form a grid on a face ellipse; their
displacement is a sum of latent behaviours, each with a smooth spatial map (Gaussian
bumps on the face), a direction, and a time course per trial:

- whisking: 7-11 Hz carrier with slowly drifting frequency, in bouts (random onset and
  length, smooth edges);
- breathing / sniffing: 2-4 Hz with a slow frequency wander, rising to 6-10 Hz in
  sniffing bouts;
- licking: 6-7 Hz bursts in about half of the trials, on the jaw/mouth region;
- slow posture drift: 1/f-like random walk, shared by all points with a smooth gain;
- tracking noise: white, 0.05 px, per point and axis, plus rare single-frame jitters.

Amplitudes are 0.5-3 px, as in face-rhythm's own demo.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np


def face_grid(width: int, height: int, n_points: int) -> np.ndarray:
    """About ``n_points`` grid points inside the centred face ellipse: (N, 2) float32 (x, y)."""
    cx, cy, ax, ay = width / 2, height / 2, 0.4 * width, 0.38 * height
    area = math.pi * ax * ay
    spacing = math.sqrt(area / n_points)
    gx = np.arange(cx - ax, cx + ax, spacing)
    gy = np.arange(cy - ay, cy + ay, spacing)
    X, Y = np.meshgrid(gx, gy, indexing="ij")
    X, Y = X.ravel(), Y.ravel()
    keep = ((X - cx) / ax) ** 2 + ((Y - cy) / ay) ** 2 <= 1
    return np.stack([np.round(X[keep]), np.round(Y[keep])], axis=1).astype(np.float32)


def _bump(points, cx, cy, sigma):
    d2 = (points[:, 0] - cx) ** 2 + (points[:, 1] - cy) ** 2
    return np.exp(-0.5 * d2 / sigma**2)


def _bouts(rng, n, fs, rate_per_s, mean_len_s):
    """Smooth 0..1 envelope of random bouts."""
    env = np.zeros(n)
    t = 0.0
    dur = n / fs
    while t < dur:
        t += rng.exponential(1.0 / rate_per_s)
        length = rng.exponential(mean_len_s) + 0.2
        a, b = int(t * fs), int(min(dur, t + length) * fs)
        if a >= n:
            break
        env[a:b] = 1.0
        t += length
    k = max(1, int(0.08 * fs))
    win = np.hanning(2 * k + 1)
    return np.convolve(env, win / win.sum(), mode="same")


def _chirp(rng, n, fs, f_lo, f_hi, wander_s=2.0):
    """sin of a phase whose frequency wanders smoothly within [f_lo, f_hi]."""
    k = max(1, int(wander_s * fs))
    w = rng.standard_normal(n + 2 * k)
    w = np.convolve(w, np.hanning(2 * k + 1), mode="same")[k : k + n]
    w = (w - w.min()) / (np.ptp(w) + 1e-12)
    f = f_lo + (f_hi - f_lo) * w
    return np.sin(2 * np.pi * np.cumsum(f) / fs + rng.uniform(0, 2 * np.pi))


def trial_traces(points: np.ndarray, n_frames: int, fs: float, seed: int, width: int, height: int) -> np.ndarray:
    """(T, N, 2) float32 tracked positions of one trial."""
    rng = np.random.default_rng(seed)
    n = points.shape[0]
    disp = np.zeros((n_frames, n, 2))
    # whisking: whisker pads on both sides
    for side in (-1, 1):
        m = _bump(points, width / 2 + side * 0.22 * width, 0.58 * height, 0.09 * width)
        s = _chirp(rng, n_frames, fs, 7.0, 11.0) * _bouts(rng, n_frames, fs, 0.4, 1.5)
        disp += 2.5 * s[:, None, None] * m[None, :, None] * np.array([side * 0.9, 0.3])
    # breathing / sniffing: nose
    m = _bump(points, width / 2, 0.45 * height, 0.08 * width)
    sniff = _bouts(rng, n_frames, fs, 0.2, 1.0)
    s = (1 - sniff) * _chirp(rng, n_frames, fs, 2.0, 4.0) + sniff * _chirp(rng, n_frames, fs, 6.0, 10.0)
    disp += 1.5 * s[:, None, None] * m[None, :, None] * np.array([0.1, 1.0])
    # licking: jaw, in about half the trials
    if rng.random() < 0.5:
        m = _bump(points, width / 2, 0.78 * height, 0.1 * width)
        s = _chirp(rng, n_frames, fs, 6.0, 7.0, 1.0) * _bouts(rng, n_frames, fs, 0.3, 1.0)
        disp += 3.0 * s[:, None, None] * m[None, :, None] * np.array([0.0, 1.0])
    # slow posture drift (integrated, smoothed noise), smooth gain over the face
    k = max(1, int(0.5 * fs))
    for c in range(2):
        d = np.cumsum(rng.standard_normal(n_frames)) * 0.02
        d = np.convolve(d, np.hanning(2 * k + 1) / (k + 1), mode="same")
        gain = 0.5 + _bump(points, rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height, 0.3 * width)
        disp[:, :, c] += d[:, None] * gain[None]
    # tracking noise and rare single-frame jitters
    disp += 0.05 * rng.standard_normal(disp.shape)
    jit = rng.random((n_frames, n)) < 2e-4
    disp[jit] += rng.normal(0, 2.0, (int(jit.sum()), 2))
    return (points[None].astype(np.float64) + disp).astype(np.float32)


def write_session(
    path: str | Path,
    n_trials: int,
    n_frames: int,
    fs: float,
    n_points: int,
    width: int = 784,
    height: int = 582,
    seed: int = 0,
) -> dict:
    """Write a trial session's tracking.h5; returns its description."""
    import h5py

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pts = face_grid(width, height, n_points)
    tmp = path.with_suffix(".partial.h5")
    with h5py.File(tmp, "w") as f:
        f["point_positions"] = pts
        for k in range(n_trials):
            f[f"points_tracked/{k}"] = trial_traces(pts, n_frames, fs, seed * 100003 + k, width, height)
        f.attrs["frame_rate"] = float(fs)
        f.attrs["contiguous"] = False
        f.attrs["num_keys"] = n_trials
        f["num_frames"] = np.full(n_trials, n_frames, np.int64)
        f["video_paths"] = np.array([f"trial_{k:03d}.mp4" for k in range(n_trials)], dtype=h5py.string_dtype())
    tmp.replace(path)
    return dict(
        n_trials=n_trials, n_frames=n_frames, fs=fs, n_points=int(pts.shape[0]), width=width, height=height, seed=seed
    )


if __name__ == "__main__":
    import argparse
    import json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--trials", type=int, default=40)
    ap.add_argument("--frames", type=int, default=1000)
    ap.add_argument("--fs", type=float, default=120.0)
    ap.add_argument("--points", type=int, default=350)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    print(json.dumps(write_session(a.out, a.trials, a.frames, a.fs, a.points, seed=a.seed)))
