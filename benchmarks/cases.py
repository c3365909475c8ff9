"""Benchmark cases: the inputs (video, tracking mask, seed points) and the parameters
that BOTH implementations receive.

Parameters use our config-schema names (workflow/schemas/config.schema.yaml) and the
reference pipeline defaults (shared/reference/algorithms.md §3.1), except:

- ``spectrogram.fs`` = the video's frame rate (the reference hard-codes 120 Hz);
- ``spectrogram.f_max`` = min(60, 0.9 x Nyquist), so the top bin is below Nyquist;
- ``spectrogram.f_min`` is doubled until the VQT window W = ceil(q_low_f * fs / f_min)
  (made odd) is at most 0.75 x the video length: the 250 fps clip has 994 frames, fewer
  than W = 1001 at f_min = 1 Hz, so it gets f_min = 2 Hz (W = 501);
- ``tca.random_state`` = 0 and ``normalize`` = std over time, as the reference's
  integration test does (the bare pipeline defaults raise KeyError without it).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REAL_VIDEOS = (REPO.parent / "shared" / "data" / "real_videos").resolve()

TRACKING_DEFAULTS = dict(
    contiguous=False,
    mesh_rigidity=0.025,
    mesh_n_neighbors=8,
    relaxation=0.0015,
    win_size=[20, 20],
    max_level=2,
    criteria=[3, 2, 0.03],
    clahe=dict(clip_limit=40.0, tile_grid_size=[150, 150]),
    threshold_displacement=150.0,
    frames_halted_before=10,
    frames_halted_after=10,
)
SPECTROGRAM_DEFAULTS = dict(
    q_low_f=4.0,
    q_high_f=10.0,
    f_min=1.0,
    f_max=60.0,
    n_freq_bins=36,
    window_type="hann",
    symmetry="center",
    taper_asymmetric=True,
    downsample_factor=20,
    padding="valid",
    take_abs=True,
    normalization_factor=0.95,
    spectrogram_exponent=1.0,
    one_over_f_exponent=0.5,
    win_size=None,
)
TCA_DEFAULTS = dict(
    method="CP_NN_HALS",
    rank=10,
    n_iter_max=200,
    init="random",
    tol=1e-9,
    random_state=0,
    mean_subtract=False,
    std_divide=True,
    normalize_dim="time",
    videos="separate",
)


@dataclass
class Case:
    name: str
    videos: list[str]
    kind: str  # "synthetic" | "real" | "face"
    fps: float
    num_frames: int
    height: int
    width: int
    params: dict = field(default_factory=dict)

    @property
    def duration_s(self) -> float:
        return self.num_frames / self.fps


def vqt_window(fs: float, q_low_f: float, f_min: float) -> int:
    w = int(math.ceil(q_low_f * fs / f_min))
    return max(3, w + 1 if w % 2 == 0 else w)


def make_params(fs: float, num_frames: int, threads: int = 0) -> dict:
    sp = dict(SPECTROGRAM_DEFAULTS)
    sp["fs"] = float(fs)
    sp["f_max"] = float(min(60.0, round(0.9 * fs / 2.0, 3)))
    # the valid VQT output needs T >= W; keep a quarter of the video as time bins for TCA
    f_min = 1.0
    while vqt_window(fs, sp["q_low_f"], f_min) > 0.75 * num_frames and f_min < sp["f_max"] / 4:
        f_min *= 2.0
    sp["f_min"] = f_min
    return dict(seed=0, threads=threads, tracking=dict(TRACKING_DEFAULTS), spectrogram=sp, tca=dict(TCA_DEFAULTS))


def grid_points(mask: np.ndarray, spacing: int) -> np.ndarray:
    """Reference-style grid (bounding-box anchored, x-major) inside ``mask``: (N, 2) float32 (x, y)."""
    ys, xs = np.nonzero(mask)
    gx = np.arange(xs.min(), xs.max(), spacing)
    gy = np.arange(ys.min(), ys.max(), spacing)
    X, Y = np.meshgrid(gx, gy, indexing="ij")
    X, Y = X.ravel(), Y.ravel()
    keep = mask[Y, X]
    return np.stack([X[keep], Y[keep]], axis=1).astype(np.float32)


def write_inputs(path: Path, mask: np.ndarray, points: np.ndarray, example: np.ndarray, spacing: int) -> None:
    """Inputs in the rois.h5 layout (docs/file_formats.md), readable by both runners."""
    import h5py

    ys, xs = np.nonzero(mask)
    box = np.array([[xs.min(), ys.min()], [xs.max(), ys.min()], [xs.max(), ys.max()], [xs.min(), ys.max()]], np.float32)
    tmp = path.with_suffix(".partial.h5")
    with h5py.File(tmp, "w") as f:
        f["mask_images/face"] = mask
        f["roi_points/face"] = box
        f["exampleImage"] = example
        f["point_positions"] = points
        f["tracking_mask"] = mask
        f.attrs["point_spacing"] = spacing
    tmp.replace(path)


def _example_rgb(video: str) -> np.ndarray:
    from facerhythm_core.video import read_frame

    fr = read_frame(video, 0, gray=False)
    return np.asarray(fr, dtype=np.uint8)


def synthetic_case(
    out_dir: Path, duration_s: float = 60.0, name: str | None = None, spacing: int = 15, threads: int = 0
) -> Case:
    import synthetic

    spec = synthetic.SyntheticSpec(duration_s=duration_s)
    name = name or f"synthetic_{int(round(duration_s))}s"
    cdir = out_dir / name
    cdir.mkdir(parents=True, exist_ok=True)
    video = out_dir / "videos" / f"synthetic_{int(round(duration_s))}s.mp4"
    sidecar = video.with_suffix(".json")
    if not (video.exists() and sidecar.exists() and sidecar.read_text() == spec.to_json()):
        synthetic.write_video(spec, video)
    mask = synthetic.face_mask(spec)
    points = synthetic.seed_points(spec, spacing=spacing)
    inputs = cdir / "inputs.h5"
    if not inputs.exists():
        write_inputs(inputs, mask, points, _example_rgb(str(video)), spacing)
    case = Case(
        name,
        [str(video)],
        "synthetic",
        spec.fps,
        spec.num_frames,
        spec.height,
        spec.width,
        make_params(spec.fps, spec.num_frames, threads),
    )
    case.params["videos"] = case.videos
    case.params["synthetic_spec"] = json.loads(spec.to_json())
    return case


FACE_SIZE = (582, 784)  # (H, W) of face-rhythm's demo videos


def face_spec(seed: int, n_frames: int = 1000, fps: float = 120.0, size: tuple[int, int] = FACE_SIZE):
    """The synthetic face at face-rhythm's demo size: 784x582, 120 fps, 1000 frames.

    The 640x480 face, its regions and texture scaled by 784 / 640 = 1.225, so the mask
    covers the same third of the frame (about 157 000 px, between the demo's two ROI
    masks of 60 000 and 112 000 px and their union); ``seed`` changes the texture and
    noise, so the two videos of the session are not copies.
    """
    import dataclasses

    import synthetic

    H, W = size
    g = W / 640.0
    base = synthetic.SyntheticSpec()
    regions = tuple(
        dataclasses.replace(r, center=(r.center[0] * g, r.center[1] * g), sigma=r.sigma * g) for r in base.regions
    )
    return dataclasses.replace(
        base,
        duration_s=n_frames / fps,
        fps=fps,
        height=H,
        width=W,
        seed=seed,
        face_center=(base.face_center[0] * g, base.face_center[1] * g),
        face_axes=(base.face_axes[0] * g, base.face_axes[1] * g),
        regions=regions,
    )


def face_case(
    out_dir: Path,
    n_videos: int = 2,
    n_frames: int = 1000,
    spacing: int = 20,
    threads: int = 0,
    size: tuple[int, int] = FACE_SIZE,
    prefix: str = "face",
) -> Case:
    """Issue 19's case (b): a face-sized session, ``n_videos`` x 1000 frames at 784x582,
    120 fps, 353 points (spacing 20 px), tracked per video (not contiguous). With
    ``size=(480, 640)`` and many videos, case (a): a trial-structured session."""
    import synthetic

    specs = [face_spec(seed, n_frames, size=size) for seed in range(n_videos)]
    name = f"{prefix}{n_videos}_{size[1]}x{size[0]}"
    cdir = out_dir / name
    cdir.mkdir(parents=True, exist_ok=True)
    videos = []
    for spec in specs:
        video = out_dir / "videos" / f"face{size[1]}_seed{spec.seed}_{n_frames}.mp4"
        sidecar = video.with_suffix(".json")
        if not (video.exists() and sidecar.exists() and sidecar.read_text() == spec.to_json()):
            synthetic.write_video(spec, video)
        videos.append(str(video))
    mask = synthetic.face_mask(specs[0])
    points = synthetic.seed_points(specs[0], spacing=spacing)
    inputs = cdir / "inputs.h5"
    if not inputs.exists():
        write_inputs(inputs, mask, points, _example_rgb(videos[0]), spacing)
    s0 = specs[0]
    case = Case(
        name, videos, "face", s0.fps, n_frames * n_videos, s0.height, s0.width, make_params(s0.fps, n_frames, threads)
    )
    case.params["videos"] = videos
    return case


def real_case(out_dir: Path, video: Path, target_points: int = 350, margin: float = 0.06, threads: int = 0) -> Case:
    from facerhythm_core.video import probe_video

    info = probe_video(str(video))
    name = "real_" + video.stem
    cdir = out_dir / name
    cdir.mkdir(parents=True, exist_ok=True)
    mask = np.zeros((info.height, info.width), bool)
    my, mx = int(margin * info.height), int(margin * info.width)
    mask[my : info.height - my, mx : info.width - mx] = True
    spacing = max(2, int(round(math.sqrt(mask.sum() / target_points))))
    points = grid_points(mask, spacing)
    inputs = cdir / "inputs.h5"
    if not inputs.exists():
        write_inputs(inputs, mask, points, _example_rgb(str(video)), spacing)
    case = Case(
        name,
        [str(video)],
        "real",
        float(info.fps),
        int(info.num_frames),
        info.height,
        info.width,
        make_params(float(info.fps), int(info.num_frames), threads),
    )
    case.params["videos"] = case.videos
    return case


def write_params(case: Case, out_dir: Path) -> Path:
    p = out_dir / case.name / "params.json"
    p.write_text(json.dumps(case.params, indent=2))
    return p


def case_to_json(case: Case) -> str:
    return json.dumps(case.__dict__)


def case_from_json(text: str) -> Case:
    return Case(**json.loads(text))


if __name__ == "__main__":
    # Prepare one case in its own process (video generation and frame decoding would
    # otherwise inflate the driver's RSS, which Linux counts into its children's ru_maxrss).
    import argparse
    import sys

    sys.path.insert(0, str(HERE))
    sys.path.insert(0, str(REPO))
    ap = argparse.ArgumentParser()
    ap.add_argument("kind", choices=["synthetic", "real", "face", "trials"])
    ap.add_argument("--n-videos", type=int, default=40, help="trials: number of trial videos (1000 frames each)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--name", default=None)
    ap.add_argument("--video", default=None)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out)
    if a.kind == "synthetic":
        c = synthetic_case(out, duration_s=a.duration, name=a.name, threads=a.threads)
    elif a.kind == "face":
        c = face_case(out, threads=a.threads)
    elif a.kind == "trials":
        c = face_case(out, n_videos=a.n_videos, threads=a.threads, size=(480, 640), prefix="trials")
    else:
        c = real_case(out, Path(a.video), threads=a.threads)
    write_params(c, out)
    print("CASE " + case_to_json(c))
