"""Deterministic synthetic "face" video with planted rhythms, for the benchmark harness.

The video is a static textured background with a textured elliptical "face". Two
smooth regions of the face move with known rhythms:

- ``whisk``: a whisker-pad region oscillating at 8 Hz, mostly horizontally, with an
  amplitude envelope that rises and falls with a 5 s period (whisking bouts);
- ``breath``: a nose region oscillating at 3 Hz vertically with constant amplitude.

Frame ``t`` is the base image warped backwards, ``I_t(x) = I_0(x - d(x, t))``, so the
material point at home position ``p0`` sits at ``p`` with ``p = p0 + d(p, t)``.
:func:`true_positions` solves that by fixed-point iteration, giving the exact ground
truth trajectory of any seed point (to within interpolation of the encoder's output).

Everything follows from :class:`SyntheticSpec` and its seed: two runs with the same spec
give byte-identical raw frames (the encoded mp4 is identical for the same FFmpeg build).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np


@dataclasses.dataclass(frozen=True)
class Region:
    """One moving region: a Gaussian weight bump moving along a fixed direction."""

    name: str
    center: tuple[float, float]  # (x, y) pixels
    sigma: float  # pixels
    direction: tuple[float, float]  # (dx, dy), normalised on use
    freq_hz: float
    amplitude_px: float  # peak displacement at the bump centre
    envelope_period_s: float | None = None  # None = constant amplitude
    phase: float = 0.0  # radians


@dataclasses.dataclass(frozen=True)
class SyntheticSpec:
    duration_s: float = 60.0
    fps: float = 90.0
    height: int = 480
    width: int = 640
    seed: int = 0
    face_center: tuple[float, float] = (320.0, 250.0)
    face_axes: tuple[float, float] = (210.0, 160.0)  # semi-axes (x, y) in pixels
    noise_sigma: float = 1.5  # per-frame sensor noise, gray levels
    crf: int = 12
    regions: tuple[Region, ...] = (
        Region("whisk", (430.0, 285.0), 42.0, (1.0, 0.35), 8.0, 2.0, envelope_period_s=5.0),
        Region("breath", (230.0, 215.0), 48.0, (0.0, 1.0), 3.0, 1.5),
    )

    @property
    def num_frames(self) -> int:
        return int(round(self.duration_s * self.fps))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2)

    @staticmethod
    def from_json(text: str) -> "SyntheticSpec":
        d = json.loads(text)
        d["regions"] = tuple(
            Region(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in r.items()}) for r in d["regions"]
        )
        for k in ("face_center", "face_axes"):
            d[k] = tuple(d[k])
        return SyntheticSpec(**d)


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    import cv2

    z = rng.standard_normal(shape).astype(np.float32)
    z = cv2.GaussianBlur(z, (0, 0), sigma)
    return (z - z.mean()) / (z.std() + 1e-12)


def face_mask(spec: SyntheticSpec, shrink_px: float = 0.0) -> np.ndarray:
    """(H, W) bool mask of the face ellipse, optionally shrunk by ``shrink_px``."""
    yy, xx = np.mgrid[0 : spec.height, 0 : spec.width].astype(np.float64)
    ax, ay = spec.face_axes[0] - shrink_px, spec.face_axes[1] - shrink_px
    cx, cy = spec.face_center
    return ((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2 <= 1.0


def base_image(spec: SyntheticSpec) -> np.ndarray:
    """(H, W) float32 base image in gray levels, before motion and noise."""
    rng = np.random.default_rng(spec.seed)
    shape = (spec.height, spec.width)
    background = 90.0 + 18.0 * _smooth_noise(rng, shape, 6.0)
    face_tex = 0.6 * _smooth_noise(rng, shape, 2.0) + 0.4 * _smooth_noise(rng, shape, 5.0)
    face = 140.0 + 45.0 * face_tex
    # soft edge so the face boundary is not a hard step
    yy, xx = np.mgrid[0 : spec.height, 0 : spec.width].astype(np.float32)
    cx, cy = spec.face_center
    r = np.sqrt(((xx - cx) / spec.face_axes[0]) ** 2 + ((yy - cy) / spec.face_axes[1]) ** 2)
    alpha = np.clip((1.05 - r) / 0.1, 0.0, 1.0)
    img = alpha * face + (1.0 - alpha) * background
    return img.astype(np.float32)


def region_amplitudes(spec: SyntheticSpec, t_s: np.ndarray) -> np.ndarray:
    """Signed displacement scale of each region at times ``t_s`` (s): (R, T) float64 px."""
    t_s = np.asarray(t_s, dtype=np.float64)
    out = np.empty((len(spec.regions), t_s.size))
    for k, r in enumerate(spec.regions):
        env = 1.0 if r.envelope_period_s is None else envelope(r, t_s)
        out[k] = r.amplitude_px * env * np.sin(2 * np.pi * r.freq_hz * t_s + r.phase)
    return out


def envelope(region: Region, t_s: np.ndarray) -> np.ndarray:
    """Amplitude envelope in [0, 1] of a region (ones if it has none)."""
    t_s = np.asarray(t_s, dtype=np.float64)
    if region.envelope_period_s is None:
        return np.ones_like(t_s)
    return 0.5 * (1.0 - np.cos(2 * np.pi * t_s / region.envelope_period_s))


def _weights(spec: SyntheticSpec, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Region weights at pixel coordinates: (R, *x.shape)."""
    w = []
    for r in spec.regions:
        d2 = (x - r.center[0]) ** 2 + (y - r.center[1]) ** 2
        w.append(np.exp(-0.5 * d2 / r.sigma**2))
    return np.stack(w)


def _unit_dirs(spec: SyntheticSpec) -> np.ndarray:
    d = np.array([r.direction for r in spec.regions], dtype=np.float64)
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def displacement(spec: SyntheticSpec, x, y, t_s) -> tuple[np.ndarray, np.ndarray]:
    """Displacement field d(x, y, t) in pixels; x, y broadcast together, t scalar."""
    amps = region_amplitudes(spec, np.array([t_s]))[:, 0]
    w = _weights(spec, np.asarray(x, np.float64), np.asarray(y, np.float64))
    dirs = _unit_dirs(spec)
    s = amps[:, None] * dirs  # (R, 2)
    dx = np.tensordot(s[:, 0], w, axes=1)
    dy = np.tensordot(s[:, 1], w, axes=1)
    return dx, dy


def true_positions(spec: SyntheticSpec, points: np.ndarray, frames=None, n_iter: int = 6) -> np.ndarray:
    """Ground-truth positions of material points whose home (frame-0-free) position is ``points``.

    Parameters
    ----------
    points : (N, 2) array, (x, y) pixels, positions with zero displacement.
    frames : sequence of frame indices; default all frames.

    Returns
    -------
    (T, N, 2) float64 positions in pixels, solving ``p = p0 + d(p, t)``.
    """
    p0 = np.asarray(points, dtype=np.float64)
    frames = np.arange(spec.num_frames) if frames is None else np.asarray(frames)
    t_s = frames / spec.fps
    amps = region_amplitudes(spec, t_s)  # (R, T)
    dirs = _unit_dirs(spec)  # (R, 2)
    p = np.broadcast_to(p0, (t_s.size,) + p0.shape).copy()
    for _ in range(n_iter):
        w = _weights(spec, p[..., 0], p[..., 1])  # (R, T, N)
        d = np.einsum("rt,rtn,rc->tnc", amps, w, dirs)
        p = p0[None] + d
    return p


def seed_points(spec: SyntheticSpec, spacing: int = 12, margin_px: float = 12.0) -> np.ndarray:
    """Grid of seed points inside the (shrunk) face, x-major like the reference: (N, 2) float32 (x, y)."""
    m = face_mask(spec, shrink_px=margin_px)
    ys, xs = np.nonzero(m)
    gx = np.arange(xs.min(), xs.max(), spacing)
    gy = np.arange(ys.min(), ys.max(), spacing)
    X, Y = np.meshgrid(gx, gy, indexing="ij")  # x-major order
    X, Y = X.ravel(), Y.ravel()
    keep = m[Y, X]
    return np.stack([X[keep], Y[keep]], axis=1).astype(np.float32)


_NOISE_BANK_LEN = 31  # prime, so the noise never lines up with a rhythm's period


def _noise_bank(spec: SyntheticSpec) -> np.ndarray:
    rng = np.random.default_rng([spec.seed, 1])
    return (spec.noise_sigma * rng.standard_normal((_NOISE_BANK_LEN, spec.height, spec.width))).astype(np.float32)


def render_frames(spec: SyntheticSpec, start: int, stop: int, base: np.ndarray | None = None) -> np.ndarray:
    """Frames ``start..stop-1`` as (n, H, W) uint8 gray."""
    import cv2

    base = base_image(spec) if base is None else base
    yy, xx = np.mgrid[0 : spec.height, 0 : spec.width].astype(np.float32)
    w = _weights(spec, xx, yy).astype(np.float32)  # (R, H, W)
    dirs = _unit_dirs(spec)
    out = np.empty((stop - start, spec.height, spec.width), np.uint8)
    amps = region_amplitudes(spec, np.arange(start, stop) / spec.fps)
    bank = _noise_bank(spec)
    for j, i in enumerate(range(start, stop)):
        s = amps[:, j, None] * dirs  # (R, 2)
        dx = np.tensordot(s[:, 0].astype(np.float32), w, axes=1)
        dy = np.tensordot(s[:, 1].astype(np.float32), w, axes=1)
        frame = cv2.remap(base, xx - dx, yy - dy, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        # noise from a fixed bank indexed by frame: any frame can be re-rendered alone
        frame += bank[i % len(bank)]
        out[j] = np.clip(frame + 0.5, 0, 255).astype(np.uint8)
    return out


def write_video(spec: SyntheticSpec, path: str | Path, chunk: int = 90) -> Path:
    """Encode the synthetic video to ``path`` (H.264, yuv420p, gray in RGB) and a ``.json`` sidecar."""
    import torch
    from torchcodec.encoders import Encoder

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".partial" + path.suffix)
    base = base_image(spec)
    enc = Encoder()
    stream = enc.add_video(
        height=spec.height,
        width=spec.width,
        frame_rate=spec.fps,
        codec="libx264",
        pixel_format="yuv420p",
        crf=spec.crf,
        preset="fast",
    )
    with enc.open_file(tmp):
        for s in range(0, spec.num_frames, chunk):
            g = render_frames(spec, s, min(s + chunk, spec.num_frames), base)
            rgb = torch.from_numpy(g)[:, None].expand(-1, 3, -1, -1).contiguous()
            stream.add_frames(rgb)
    tmp.replace(path)
    path.with_suffix(".json").write_text(spec.to_json())
    return path


def planted_summary(spec: SyntheticSpec) -> list[dict]:
    return [
        dict(
            name=r.name,
            freq_hz=r.freq_hz,
            amplitude_px=r.amplitude_px,
            center=r.center,
            sigma=r.sigma,
            envelope_period_s=r.envelope_period_s,
        )
        for r in spec.regions
    ]


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", help="output .mp4 path")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=90.0)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    spec = SyntheticSpec(duration_s=a.duration, fps=a.fps, seed=a.seed)
    write_video(spec, a.out)
    print(f"wrote {a.out}: {spec.num_frames} frames, {spec.width}x{spec.height} @ {spec.fps} fps")
