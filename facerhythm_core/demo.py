"""A deterministic synthetic "face" video with planted rhythms, for the demo and tests.

A smooth random texture (the face) is warped every frame by a displacement field made
of Gaussian-weighted regions, each moving sinusoidally at its own frequency: a
"whisker pad" moving in x, a "nose" moving in y, and a "jaw" that is either on/off in
bursts or "licks" for a while after each event (``Rhythm.onsets``). The truth (region
centres, frequencies, amplitudes, event times) is returned so that tests can check that
the pipeline recovers it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


@dataclass(frozen=True)
class Rhythm:
    """One moving region: displacement = amplitude * sin(2 pi f t + phase) * envelope."""

    name: str
    center: tuple[float, float]  # (x, y) as fractions of width, height
    radius: float  # Gaussian sigma as a fraction of the width
    frequency: float  # Hz
    amplitude: tuple[float, float]  # (dx, dy) peak displacement, pixels
    phase: float = 0.0
    burst_period: float | None = None  # s; if set the rhythm is on for the first half of each period
    onsets: tuple[float, ...] | None = None  # s; if set the rhythm is on only after these times ...
    on_duration: float = 1.0  # ... for this long (s) after each onset

    def active(self, t: float) -> bool:
        """Whether the rhythm moves at time ``t`` (s)."""
        if self.burst_period is not None and (t % self.burst_period) >= self.burst_period / 2:
            return False
        if self.onsets is not None:
            return any(o <= t < o + self.on_duration for o in self.onsets)
        return True


DEFAULT_RHYTHMS: tuple[Rhythm, ...] = (
    Rhythm("whisker_pad", (0.30, 0.45), 0.10, 8.0, (1.5, 0.0)),
    Rhythm("nose", (0.62, 0.35), 0.08, 3.0, (0.0, 1.0), phase=0.7),
    Rhythm("jaw", (0.55, 0.72), 0.09, 5.0, (0.3, 1.2), burst_period=2.0),
)


def face_texture(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth random gray texture inside a bright ellipse, float32 in [0, 255]."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.standard_normal((height, width)).astype(np.float32)
    fine = cv2.GaussianBlur(noise, (0, 0), 1.5)
    coarse = cv2.GaussianBlur(noise, (0, 0), 6.0)
    tex = 0.6 * fine / (fine.std() + 1e-6) + 0.4 * coarse / (coarse.std() + 1e-6)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    ell = ((xx - 0.5 * width) / (0.45 * width)) ** 2 + ((yy - 0.5 * height) / (0.45 * height)) ** 2
    face = 1.0 / (1.0 + np.exp((ell - 1.0) * 12.0))
    img = 60.0 + face * (110.0 + 35.0 * tex)
    return np.clip(img, 0, 255).astype(np.float32)


def displacement_at(t: float, rhythms: Sequence[Rhythm]) -> np.ndarray:
    """(R, 2) displacement (dx, dy) of each rhythm's centre at time t (seconds)."""
    out = np.zeros((len(rhythms), 2), np.float64)
    for i, r in enumerate(rhythms):
        s = np.sin(2 * np.pi * r.frequency * t + r.phase) if r.active(t) else 0.0
        out[i] = np.asarray(r.amplitude) * s
    return out


def render_frames(
    n_frames: int,
    fps: float = 120.0,
    height: int = 240,
    width: int = 320,
    rhythms: Sequence[Rhythm] = DEFAULT_RHYTHMS,
    seed: int = 0,
    t0: float = 0.0,
    noise_sd: float = 2.0,
    global_shift: tuple[float, float] = (0.0, 0.0),
    global_rotation_deg: float = 0.0,
    times: Sequence[float] | None = None,
    noise_seed: int | None = None,
) -> Iterator[np.ndarray]:
    """Yield (H, W, 3) uint8 RGB frames of the synthetic face.

    Parameters
    ----------
    n_frames : int
    fps : float
        Frame rate used to turn frame index into time.
    height, width : int
    rhythms : sequence of Rhythm
    seed : int
        Seeds the texture and the sensor noise (fully deterministic).
    t0 : float
        Time of the first frame in seconds (to continue a session across files).
    noise_sd : float
        Sensor noise standard deviation (gray levels).
    global_shift : (dx, dy)
        Moves the whole face (texture and rhythm regions) by this many pixels, after
        ``global_rotation_deg``: a copy of the animal filmed on another day. A face
        point (x, y) lands at ``G @ (x, y, 1)`` with ``G = T(c + shift) R T(-c)``,
        ``c = ((W - 1) / 2, (H - 1) / 2)`` and ``R = [[cos a, -sin a], [sin a, cos a]]``.
    global_rotation_deg : float
        Rotation ``a`` of the face about the frame centre, degrees.
    times : sequence of float, optional
        The time (s) of each frame, for a camera that is not a constant-rate clock
        (variable frame rate, dropped frames); replaces ``t0 + i / fps`` and
        ``n_frames``.
    noise_seed : int, optional
        Seeds the sensor noise alone (default ``seed + 1``): another recording of the
        same face gets other noise.
    """
    import cv2

    tex = face_texture(height, width, seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    centers = [(r.center[0] * width, r.center[1] * height) for r in rhythms]
    if tuple(global_shift) != (0.0, 0.0) or global_rotation_deg != 0.0:
        a = np.deg2rad(global_rotation_deg)
        c = np.array([(width - 1) / 2, (height - 1) / 2])
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        g = np.hstack([rot, (c + np.asarray(global_shift, float) - rot @ c)[:, None]])
        tex = cv2.warpAffine(tex, g, (width, height), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        centers = [tuple(g[:, :2] @ np.asarray(ct) + g[:, 2]) for ct in centers]
    weights = [
        np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * (r.radius * width) ** 2))).astype(np.float32)
        for r, (cx, cy) in zip(rhythms, centers)
    ]
    rng = np.random.default_rng(seed + 1 if noise_seed is None else noise_seed)
    frame_times = [t0 + i / fps for i in range(n_frames)] if times is None else list(times)
    for t in frame_times:
        d = displacement_at(t, rhythms)
        dx = np.zeros_like(xx)
        dy = np.zeros_like(yy)
        for w, (ax, ay) in zip(weights, d):
            dx += w * np.float32(ax)
            dy += w * np.float32(ay)
        # content moves by +d: sample the texture at x - d
        frame = cv2.remap(tex, xx - dx, yy - dy, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        frame = frame + rng.normal(0.0, noise_sd, frame.shape).astype(np.float32)
        g = np.clip(np.round(frame), 0, 255).astype(np.uint8)
        yield np.repeat(g[..., None], 3, axis=2)


def write_video(path: str | Path, frames: Iterator[np.ndarray], fps: float) -> int:
    """Write RGB frames to an MPEG-4 (.mp4) or MJPG (.avi) file with OpenCV; returns the count."""
    import cv2

    path = Path(path)
    it = iter(frames)
    first = next(it)
    h, w = first.shape[:2]
    fourcc = cv2.VideoWriter_fourcc(*("MJPG" if path.suffix.lower() == ".avi" else "mp4v"))
    writer = cv2.VideoWriter(str(path), fourcc, float(fps), (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot open a video writer for {path}")
    n = 0
    try:
        for fr in [first] if first is not None else []:
            writer.write(cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
            n += 1
        for fr in it:
            writer.write(cv2.cvtColor(fr, cv2.COLOR_RGB2BGR))
            n += 1
    finally:
        writer.release()
    return n


def write_demo_video(
    path: str | Path,
    n_frames: int,
    fps: float = 120.0,
    height: int = 240,
    width: int = 320,
    seed: int = 0,
    t0: float = 0.0,
    rhythms: Sequence[Rhythm] = DEFAULT_RHYTHMS,
    global_shift: tuple[float, float] = (0.0, 0.0),
    global_rotation_deg: float = 0.0,
    noise_seed: int | None = None,
) -> dict:
    """Render and write a demo video; return its ground truth as a dict.

    ``global_shift`` and ``global_rotation_deg`` move the whole face (see
    :func:`render_frames`); they enter the truth only when set, like ``noise_seed``.
    """
    moved = tuple(global_shift) != (0.0, 0.0) or global_rotation_deg != 0.0
    n = write_video(
        path,
        render_frames(
            n_frames,
            fps,
            height,
            width,
            rhythms,
            seed,
            t0,
            global_shift=global_shift,
            global_rotation_deg=global_rotation_deg,
            noise_seed=noise_seed,
        ),
        fps,
    )
    truth = {
        "path": str(path),
        "n_frames": n,
        "fps": fps,
        "height": height,
        "width": width,
        "seed": seed,
        "t0": t0,
        "rhythms": [asdict(r) for r in rhythms],
    }
    if noise_seed is not None:
        truth["noise_seed"] = int(noise_seed)
    if moved:
        truth["global_shift"] = [float(v) for v in global_shift]
        truth["global_rotation_deg"] = float(global_rotation_deg)
    return truth


def demo_polygons(height: int = 240, width: int = 320) -> dict[str, list[list[float]]]:
    """ROI polygons for the demo face: ``face`` (points) inside ``head`` (tracking mask)."""

    def ellipse(cx, cy, rx, ry, n=16):
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        return [[round(float(cx + rx * np.cos(t)), 1), round(float(cy + ry * np.sin(t)), 1)] for t in a]

    return {
        "face": ellipse(0.48 * width, 0.52 * height, 0.30 * width, 0.32 * height),
        "head": ellipse(0.5 * width, 0.5 * height, 0.44 * width, 0.44 * height, n=20),
    }


#: rhythms of the second demo animal (other frequencies, so sessions differ)
RHYTHMS_B: tuple[Rhythm, ...] = (
    Rhythm("whisker_pad", (0.30, 0.45), 0.10, 10.0, (1.2, 0.3)),
    Rhythm("nose", (0.62, 0.35), 0.08, 4.0, (0.0, 1.0), phase=0.3),
    Rhythm("jaw", (0.55, 0.72), 0.09, 6.0, (0.2, 1.0), burst_period=2.5),
)

#: the demo's videos: 22 s at 60 fps each (1320 frames; the spectrogram's 4 s window
#: leaves 18 s of time bins per video)
DEMO_FPS = 60.0
DEMO_SECONDS = 22.0
#: how long the jaw "licks" after each ``cue`` event (s)
LICK_SECONDS = 1.0

#: the demo's events (session clock, s): ``cue`` events start a bout of licking (the
#: jaw moves at the animal's lick rate for LICK_SECONDS), ``catch`` events change
#: nothing. Session A's second video starts at 22 s on the session clock (videos are
#: placed back to back). Every usable window [-1, +2] s lies inside a video's time bins
#: (2.2-19.8 s of each 22 s video: the 4 s VQT window loses 2 s at each end) and clear
#: of the previous event's response; the cue at 1.0 s and the catch at 41.0 s lie too
#: close to an edge and are listed as skipped. config/events/{session}.tsv hold the same
#: times (tested).
DEMO_EVENTS: dict[str, tuple[tuple[float, str], ...]] = {
    "demo_mouseA": (
        (1.0, "cue"),
        (3.3, "cue"),
        (5.9, "catch"),
        (8.3, "cue"),
        (10.9, "catch"),
        (13.3, "cue"),
        (15.9, "catch"),
        (25.6, "cue"),
        (28.2, "catch"),
        (30.6, "cue"),
        (33.2, "catch"),
        (35.6, "cue"),
        (38.2, "catch"),
        (41.0, "catch"),
    ),
    "demo_mouseB": ((3.6, "cue"), (6.2, "catch"), (8.6, "cue"), (11.2, "catch"), (13.6, "cue"), (16.2, "catch")),
    "demo_mouseA_day2": ((3.4, "cue"), (6.0, "catch"), (8.4, "cue"), (11.0, "catch"), (13.4, "cue"), (16.0, "catch")),
}


def cue_times(session: str) -> tuple[float, ...]:
    """The ``cue`` times of a demo session (s, session clock)."""
    return tuple(t for t, label in DEMO_EVENTS[session] if label == "cue")


def _rhythms(
    whisk: float, breathe: float, lick: float, session: str, amp: tuple[float, float, float] = (1.5, 1.0, 1.2)
) -> tuple[Rhythm, ...]:
    """Whisking (x) and breathing (y) all the time; licking (jaw) after each cue."""
    return (
        Rhythm("whisker_pad", (0.30, 0.45), 0.10, whisk, (amp[0], 0.0)),
        Rhythm("nose", (0.62, 0.35), 0.08, breathe, (0.0, amp[1]), phase=0.7),
        Rhythm(
            "jaw",
            (0.55, 0.72),
            0.09,
            lick,
            (0.25 * amp[2], amp[2]),
            onsets=cue_times(session),
            on_duration=LICK_SECONDS,
        ),
    )


#: the bundled demo: video name -> write_demo_video keyword arguments. Session A is one
#: animal filmed in two consecutive files, session B another animal, and A on another
#: day with the camera moved. Every video differs: its own events, noise and start time.
_N = int(round(DEMO_SECONDS * DEMO_FPS))
DEMO_VIDEOS: dict[str, dict] = {
    "mouseA_1": dict(
        n_frames=_N, fps=DEMO_FPS, seed=0, t0=0.0, noise_seed=101, rhythms=_rhythms(8.0, 3.0, 6.0, "demo_mouseA")
    ),
    "mouseA_2": dict(
        n_frames=_N,
        fps=DEMO_FPS,
        seed=0,
        t0=DEMO_SECONDS,
        noise_seed=102,
        rhythms=_rhythms(8.0, 3.0, 6.0, "demo_mouseA"),
    ),
    "mouseB_1": dict(
        n_frames=_N,
        fps=DEMO_FPS,
        seed=1,
        t0=0.0,
        noise_seed=201,
        rhythms=_rhythms(10.0, 4.0, 7.0, "demo_mouseB", amp=(1.2, 1.0, 1.0)),
    ),
    # animal A on another day, camera moved: ROIs carried over from session A
    "mouseA_day2": dict(
        n_frames=_N,
        fps=DEMO_FPS,
        seed=0,
        t0=0.0,
        noise_seed=301,
        rhythms=_rhythms(8.0, 3.0, 6.0, "demo_mouseA_day2"),
        global_shift=(6.5, -4.25),
        global_rotation_deg=2.0,
    ),
}
