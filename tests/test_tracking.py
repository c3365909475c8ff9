"""Point tracking: mesh, relaxation, violations and replay, freezing, sessions, real video."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from facerhythm_core.errors import ConfigError
from facerhythm_core.mesh import apply_mesh, apply_relaxation, build_mesh, grow_violations, mesh_offsets
from facerhythm_core.preprocess import FramePreprocessor, preprocess_frame
from facerhythm_core.tracking import track_stream, violations_to_coo
from facerhythm_core.tracking_params import TrackingParams
from facerhythm_core.tracking_session import load_frames_freeze, track_session, write_tracking_h5

FAST = dict(clahe_clip_limit=None, progress_every=10_000)


def texture(h, w, seed=0, sigma=2.0):
    rng = np.random.default_rng(seed)
    t = ndimage.gaussian_filter(rng.random((h, w)), sigma)
    return (t - t.min()) / (t.max() - t.min()) * 200 + 20


def shifted(tex, dx, dy, pad=20):
    """Crop of ``tex`` whose content has moved by (+dx, +dy) pixels."""
    s = ndimage.shift(tex, (dy, dx), order=3, mode="nearest")
    return np.clip(np.round(s[pad:-pad, pad:-pad]), 0, 255).astype(np.uint8)


def grid_points(x0, x1, y0, y1, step):
    ys, xs = np.mgrid[y0:y1:step, x0:x1:step]
    return np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)


# ----------------------------------------------------------------------------- params


def test_params_from_config_and_errors():
    p = TrackingParams.from_config(
        {
            "device": "cpu",
            "contiguous": True,
            "idx_start": 0,
            "mesh_rigidity": 0.01,
            "win_size": [15, 17],
            "criteria": [3, 5, 0.01],
            "clahe": {"clip_limit": 20, "tile_grid_size": [8, 9]},
            "max_rewinds": 3,
        }
    )
    assert p.win_size == (15, 17) and p.criteria == (3, 5, 0.01)
    assert p.clahe_clip_limit == 20.0 and p.clahe_tile_grid_size == (8, 9) and p.max_rewinds == 3
    assert TrackingParams.from_config({"clahe": None}).clahe_clip_limit is None
    with pytest.raises(ConfigError, match="unknown"):
        TrackingParams.from_config({"mesh_rigdity": 1})
    with pytest.raises(ConfigError, match="relaxation"):
        TrackingParams(relaxation=1.5)
    ref = TrackingParams.reference_pipeline()
    assert (ref.crop, ref.max_rewinds, ref.legacy_rewind) == (False, None, True)
    assert ref.mesh_n_neighbors == 8 and ref.win_size == (20, 20) and ref.criteria == (3, 2, 0.03)


# ----------------------------------------------------------------------------- mesh


def test_build_mesh_self_first_and_deterministic_ties():
    pts = grid_points(0, 30, 0, 30, 10)  # 3 x 3 grid, x-major not required
    rng = np.random.default_rng(1)
    # brute force reference: sort by (distance, not-self, index)
    d = np.hypot(*(pts[:, None] - pts[None]).transpose(2, 0, 1))
    for k in (1, 5, 6, 9):
        nb, d0 = build_mesh(pts, k)
        assert nb.shape == (9, k) and nb.dtype == np.int64
        for i in range(9):
            order = np.lexsort((np.arange(9), np.arange(9) != i, np.round(d[i], 6)))
            np.testing.assert_array_equal(nb[i], order[:k])
        assert (nb[:, 0] == np.arange(9)).all()  # the point itself comes first
        expect = pts - pts[nb].mean(1)
        np.testing.assert_allclose(d0, expect, atol=1e-6)
    # the centre's 6 nearest: itself, the 4 edge neighbours, then the lowest-index diagonal
    nb, _ = build_mesh(pts, 6)
    centre = 4
    assert set(nb[centre, 1:5]) == {1, 3, 5, 7} and nb[centre, 5] == 0
    # k larger than N is clipped; a shuffled copy gives the same sets up to relabelling
    assert build_mesh(pts, 50)[0].shape == (9, 9)
    perm = rng.permutation(9)
    nbp, _ = build_mesh(pts[perm], 5)
    inv = np.argsort(perm)
    for i in range(9):
        assert nbp[inv[i], 0] == inv[i]


def _kdtree_mesh_sets(p, k):
    """The neighbour sets as build_mesh made them with scipy's KD-tree (before it went)."""
    from scipy.spatial import cKDTree

    p = np.asarray(p, dtype=np.float64)
    k = int(min(max(1, k), len(p)))
    tree = cKDTree(p)
    dk = tree.query(p, k=k)[0].reshape(len(p), k)[:, -1]
    out = np.empty((len(p), k), np.int64)
    for i, c in enumerate(tree.query_ball_point(p, r=dk * (1 + 1e-9) + 1e-9)):
        c = np.asarray(c, dtype=np.int64)
        d = np.round(np.hypot(*(p[c] - p[i]).T), 6)
        out[i] = c[np.lexsort((c, c != i, d))[:k]]
    return out


@pytest.mark.parametrize("block", [None, 50])
def test_build_mesh_equals_the_kdtree_sets(monkeypatch, block):
    import facerhythm_core.mesh as mesh

    if block is not None:  # many small blocks of the distance matrix
        monkeypatch.setattr(mesh, "_DISTANCE_BLOCK", block)
    rng = np.random.default_rng(7)
    clouds = [
        grid_points(0, 300, 0, 200, 10),  # a grid: ties everywhere
        grid_points(0, 300, 0, 200, 10) * 1.225,  # scaled, as on a face-sized frame
        rng.uniform(0, 640, (400, 2)),
        np.round(rng.uniform(0, 50, (300, 2))),  # integer positions with duplicates of distance
        np.array([[3.0, 4.0]]),
    ]
    for pts in clouds:
        for k in (1, 4, 8, 13):
            np.testing.assert_array_equal(mesh.build_mesh(pts, k)[0], _kdtree_mesh_sets(pts, k))


def test_mesh_and_relaxation_steps_by_hand():
    home = np.array([[0, 0], [2, 0], [5, 0]], np.float32)
    nb, d0 = build_mesh(home, 2)
    np.testing.assert_array_equal(nb, [[0, 1], [1, 0], [2, 1]])
    np.testing.assert_allclose(d0, [[-1, 0], [1, 0], [1.5, 0]])
    q = home + np.array([[1, 0], [0, 0], [0, 0]], np.float32)
    np.testing.assert_allclose(mesh_offsets(q, nb), [[-0.5, 0], [0.5, 0], [1.5, 0]])
    q1 = apply_mesh(q, nb, d0, 0.1)  # q - 0.1 * (D(q) - d0)
    np.testing.assert_allclose(q1, [[0.95, 0], [2.05, 0], [5, 0]], atol=1e-6)
    q2 = apply_relaxation(q1, home, 0.5)
    np.testing.assert_allclose(q2, [[0.475, 0], [2.025, 0], [5, 0]], atol=1e-6)
    assert q2.dtype == np.float32
    g = grow_violations(np.array([False, False, True]), nb)
    np.testing.assert_array_equal(g, [False, True, True])


# ----------------------------------------------------------------------------- preprocessing


@pytest.mark.parametrize(
    "box,grid",
    [
        ((60, 140, 70, 180), (30, 25)),
        ((150, 239, 200, 319), (30, 25)),
        ((60, 140, 70, 180), (7, 5)),
        ((10, 40, 10, 50), (12, 12)),
        ((150, 233, 200, 300), (30, 25)),
        # big mask: no LK crop, CLAHE still on a sub-region
        ((30, 200, 40, 260), (150, 150)),
        ((20, 239, 20, 319), (150, 150)),
    ],
)
def test_cropped_preprocessing_matches_full_frame(box, grid):
    H, W = 240, 320  # not divisible by the tile counts above: exercises OpenCV's padding
    frames = np.stack([shifted(texture(H + 40, W + 40, s), 0, 0) for s in range(3)])
    y0, y1, x0, x1 = box
    yy, xx = np.mgrid[:H, :W]
    mask = ((yy - (y0 + y1) / 2) / ((y1 - y0) / 2)) ** 2 + ((xx - (x0 + x1) / 2) / ((x1 - x0) / 2)) ** 2 <= 1
    prep = FramePreprocessor(mask, 40.0, grid, crop=True, win_size=(9, 9), max_level=1)
    out = prep.process_chunk(frames)
    # our CLAHE kernels and OpenCV's give the same bytes on the same region
    p_cv = FramePreprocessor(mask, 40.0, grid, crop=True, win_size=(9, 9), max_level=1, clahe_engine="opencv")
    np.testing.assert_array_equal(p_cv.process_chunk(frames), out)
    ox, oy = prep.offset
    h, w = prep.shape
    full = np.stack([preprocess_frame(f, mask, 40.0, grid) for f in frames])[:, oy : oy + h, ox : ox + w]
    diff = np.abs(out.astype(int) - full)
    if grid == (150, 150):  # tiny tiles, large masks: CLAHE on fewer tiles than OpenCV's
        rx0, ry0, rx1, ry1 = prep.clahe_region
        assert rx0 > 0 and ry0 > 0  # the 2-tile margin around the mask is inside the frame
        assert prep.cropped == (box[0] >= 30)  # the whole-frame mask leaves nothing to crop
    else:  # huge tiles: cropping is not worth it
        assert prep.cropped == (grid != (7, 5))
    # identical up to float rounding of OpenCV's interpolation weights (+-1, rarely)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    # no crop: the whole frame, but CLAHE only on the tiles the frame's pixels read
    p0 = FramePreprocessor(mask, 40.0, grid, crop=False, win_size=(9, 9), max_level=1)
    assert p0.offset == (0, 0) and p0.shape == (H, W)
    full0 = np.stack([preprocess_frame(f, mask, 40.0, grid) for f in frames])
    d0 = np.abs(p0.process_chunk(frames).astype(int) - full0)
    assert d0.max() <= 1 and (d0 > 0).mean() < 0.01
    # colour input is grayed after cropping, the same way
    rgb = np.stack([frames, frames // 2, frames // 3], -1)
    g = (rgb.astype(np.float32).mean(-1)).astype(np.uint8)  # the reference's formula
    np.testing.assert_array_equal(prep.process_chunk(rgb), prep.process_chunk(g))
    # without CLAHE, masking is exact and everything outside the mask is 0
    p2 = FramePreprocessor(mask, None, crop=True)
    o2 = p2.process_chunk(frames)
    ox, oy = p2.offset
    h, w = p2.shape
    np.testing.assert_array_equal(o2, (frames * mask)[:, oy : oy + h, ox : ox + w])


# ----------------------------------------------------------------------------- tracking


def _sinusoid_video(T=80, H=120, W=160):
    tex = texture(H + 40, W + 40, seed=3)
    t = np.arange(T)
    dx = 1.7 * np.sin(2 * np.pi * t / 30)
    dy = 1.1 * np.sin(2 * np.pi * t / 23 + 0.5)
    frames = np.stack([shifted(tex, dx[i], dy[i]) for i in range(T)])
    truth = np.stack([dx - dx[0], dy - dy[0]], 1)
    return frames, truth


def test_subpixel_sinusoid_tracked_within_0p1px():
    frames, truth = _sinusoid_video()
    T, H, W = frames.shape
    mask = np.zeros((H, W), bool)
    mask[20:100, 30:130] = True
    P = grid_points(45, 120, 35, 90, 10)
    res = {}
    for crop in (False, True):
        p = TrackingParams(relaxation=0.0, clahe_tile_grid_size=(16, 12), crop=crop, progress_every=10_000)
        chunks = [(s, frames[s : s + 25]) for s in range(0, T, 25)]
        r = track_stream(chunks, P, mask, p, n_frames=T)
        est = np.asarray(r.points) - P
        rms = np.sqrt(((est - truth[:, None]) ** 2).mean())
        assert rms < 0.1, rms
        assert r.n_rewinds == 0 and r.violation_fraction == 0.0
        res[crop] = np.asarray(r.points)
    # cropping changes the result only at float-rounding level here
    assert np.abs(res[True] - res[False]).max() < 0.02


def test_relaxation_applies_after_optical_flow():
    # uniform translation by 1 px/frame: the mesh force is zero, so with relaxation lam the
    # displacement obeys e_t = (1 - lam) * (e_{t-1} + 1)
    T, lam = 12, 0.2
    tex = texture(140, 180, seed=5)
    frames = np.stack([shifted(tex, float(i), 0.0) for i in range(T)])
    mask = np.ones(frames.shape[1:], bool)
    P = grid_points(50, 100, 40, 80, 10)
    r = track_stream(
        [(0, frames)], P, mask, TrackingParams(relaxation=lam, criteria=(3, 20, 0.001), **FAST), n_frames=T
    )
    e = np.asarray(r.points)[:, :, 0] - P[:, 0]
    expect = np.zeros(T)
    for t in range(1, T):
        expect[t] = (1 - lam) * (expect[t - 1] + 1.0)
    np.testing.assert_allclose(e.mean(1), expect, atol=0.05)
    np.testing.assert_allclose(np.asarray(r.points)[0], P, atol=1e-4)  # LK(frame0, frame0)


def _jump_video(T=50, jump_at=20, jump_len=5, shift=5.0):
    """Static texture; a patch moves by `shift` px for frames [jump_at, jump_at+jump_len)."""
    H, W = 120, 160
    tex = texture(H + 40, W + 40, seed=7)
    base = shifted(tex, 0, 0)
    moved = shifted(tex, shift, 0)
    patch = (slice(40, 80), slice(60, 110))
    frames = np.repeat(base[None], T, 0)
    for t in range(jump_at, min(T, jump_at + jump_len)):
        frames[t][patch] = moved[patch]
    P = grid_points(20, 150, 15, 110, 8)
    inside = (P[:, 0] > 70) & (P[:, 0] < 100) & (P[:, 1] > 50) & (P[:, 1] < 70)
    far = (np.abs(P[:, 0] - 85) > 50) | (np.abs(P[:, 1] - 60) > 40)
    return frames, P, inside, far


def test_planted_jump_triggers_violation_freeze_and_replay():
    frames, P, inside, far = _jump_video()
    T = len(frames)
    mask = np.ones(frames.shape[1:], bool)
    B, A, t_jump = 6, 8, 20
    base = dict(
        threshold_displacement=3.0,
        frames_halted_before=B,
        frames_halted_after=A,
        mesh_rigidity=0.0,
        relaxation=0.0,
        **FAST,
    )
    free = track_stream([(0, frames)], P, mask, TrackingParams(**{**base, "threshold_displacement": 1e6}), n_frames=T)
    disp_free = np.linalg.norm(np.asarray(free.points) - P, axis=2)
    assert disp_free[t_jump, inside].min() > 3.0  # without the freeze the points jump

    r = track_stream([(0, frames)], P, mask, TrackingParams(**base), n_frames=T)
    assert r.n_rewinds == 1 and r.n_frames_processed == T + B + 1  # frames t-B..t replayed
    V = r.violations_dense()
    rows = np.flatnonzero(V.any(1))
    np.testing.assert_array_equal(rows, np.arange(t_jump - B, t_jump + A))
    cols = V[t_jump]
    assert (V[rows] == cols).all()  # the same (grown) point set on every marked row
    assert cols[inside].all() and not cols[far].any()
    # until the first violation the run equals the free one, so the flagged set is the
    # free run's points beyond the threshold at the jump, grown by their neighbour sets
    nb, _ = build_mesh(P, 8)
    np.testing.assert_array_equal(cols, grow_violations(disp_free[t_jump] > 3.0, nb))
    # replay: flagged points are held from t_jump - B (the mask of row t_jump) until the
    # last marked row's next frame, so they never follow the jump
    pts = np.asarray(r.points)
    held = np.linalg.norm(pts[t_jump - B : t_jump + A] - P, axis=2)[:, cols]
    assert held.max() < 0.5
    assert r.violation_fraction == pytest.approx((A + B) / T)
    coo = r.violations_coo()
    assert coo["row"].dtype == np.int32 and coo["data"].dtype == bool
    np.testing.assert_array_equal(coo["shape"], [T, len(P)])


def test_rewinds_are_capped():
    # with B = A = 0 nothing is ever marked, so the reference would rewind forever
    frames, P, inside, _ = _jump_video(T=30, jump_len=30)
    mask = np.ones(frames.shape[1:], bool)
    p = TrackingParams(threshold_displacement=3.0, frames_halted_before=0, frames_halted_after=0, max_rewinds=4, **FAST)
    r = track_stream([(0, frames)], P, mask, p, n_frames=len(frames))
    assert r.n_rewinds == 4 and r.rewinds_capped
    assert np.isfinite(np.asarray(r.points)).all()


def test_legacy_rewind_restarts_from_stale_row():
    frames, P, inside, _ = _jump_video(shift=4.0)
    mask = np.ones(frames.shape[1:], bool)
    base = dict(threshold_displacement=3.0, frames_halted_before=5, frames_halted_after=5, **FAST)
    fixed = track_stream([(0, frames)], P, mask, TrackingParams(**base), n_frames=len(frames))
    legacy = track_stream([(0, frames)], P, mask, TrackingParams(legacy_rewind=True, **base), n_frames=len(frames))
    assert fixed.n_rewinds == legacy.n_rewinds == 1
    assert np.isfinite(np.asarray(legacy.points)).all()


def test_frames_freeze_holds_points():
    T, lam = 16, 0.1
    tex = texture(140, 180, seed=9)
    frames = np.stack([shifted(tex, 0.5 * i, 0.0) for i in range(T)])
    mask = np.ones(frames.shape[1:], bool)
    P = grid_points(50, 100, 40, 80, 10)
    ff = np.zeros(T, bool)
    ff[6:10] = True
    # no forces on freeze frames: an exact copy of the previous row
    r = track_stream(
        [(0, frames)],
        P,
        mask,
        TrackingParams(relaxation=lam, relaxation_during_freeze_frames=False, **FAST),
        n_frames=T,
        frames_freeze=ff,
    )
    pts = np.asarray(r.points)
    for t in range(6, 10):
        np.testing.assert_array_equal(pts[t], pts[5])
    assert np.abs(pts[11] - pts[5]).max() > 0.2  # tracking resumes afterwards
    # forces on: optical flow ignored, the mesh step then the relaxation step still apply
    p = TrackingParams(relaxation=lam, **FAST)
    r2 = track_stream([(0, frames)], P, mask, p, n_frames=T, frames_freeze=ff)
    p2 = np.asarray(r2.points)
    nb, d0 = build_mesh(P, p.mesh_n_neighbors)
    for t in range(6, 10):
        expect = apply_relaxation(apply_mesh(p2[t - 1], nb, d0, p.mesh_rigidity), P, lam)
        np.testing.assert_allclose(p2[t], expect, atol=1e-5)
        np.testing.assert_allclose(p2[t] - P, (1 - lam) * (p2[t - 1] - P), atol=1e-3)
    with pytest.raises(ConfigError, match="frames_freeze"):
        track_stream([(0, frames)], P, mask, TrackingParams(**FAST), n_frames=T, frames_freeze=ff[:-1])


def test_idx_start_rows_hold_home_positions():
    frames, truth = _sinusoid_video(T=30)
    mask = np.ones(frames.shape[1:], bool)
    P = grid_points(45, 120, 35, 90, 15)
    r = track_stream([(0, frames[:16]), (16, frames[16:])], P, mask, TrackingParams(**FAST), n_frames=30, start=10)
    pts = np.asarray(r.points)
    np.testing.assert_array_equal(pts[:10], np.broadcast_to(P, (10,) + P.shape))
    np.testing.assert_allclose(pts[10], P, atol=1e-3)  # first step: LK(frame 10, frame 10)
    assert np.abs(pts[20] - P).max() > 0.3


def test_h5_output_matches_in_memory(tmp_path):
    # positions streamed into an h5py dataset (flushed in blocks) equal the in-memory run,
    # including across a rewind
    h5py = pytest.importorskip("h5py")
    frames, P, inside, _ = _jump_video(T=40)
    long = np.concatenate([frames] * 30)[:1200]  # longer than the 1024-row block
    mask = np.ones(long.shape[1:], bool)
    p = TrackingParams(threshold_displacement=3.0, frames_halted_before=4, frames_halted_after=4, **FAST)
    P = P[::6]
    mem = track_stream([(s, long[s : s + 100]) for s in range(0, len(long), 100)], P, mask, p, n_frames=len(long))
    with h5py.File(tmp_path / "t.h5", "w") as f:
        ds = f.create_dataset("x", shape=(len(long), len(P), 2), dtype="f4")
        disk = track_stream(
            [(s, long[s : s + 100]) for s in range(0, len(long), 100)], P, mask, p, n_frames=len(long), out=ds
        )
        np.testing.assert_array_equal(ds[()], mem.points)
    assert disk.n_rewinds == mem.n_rewinds > 1


# ----------------------------------------------------------------------------- sessions


@pytest.fixture(scope="module")
def two_videos(tmp_path_factory):
    """Two short lossless-ish videos of one texture drifting right by 0.2 px/frame."""
    from facerhythm_core.demo import write_video

    d = tmp_path_factory.mktemp("trk")
    tex = texture(160, 200, seed=11)
    n1, n2 = 24, 16
    frames = [np.repeat(shifted(tex, 0.2 * i, 0.0)[..., None], 3, 2) for i in range(n1 + n2)]
    paths = [d / "a.mp4", d / "b.mp4"]
    write_video(paths[0], iter(frames[:n1]), 30.0)
    write_video(paths[1], iter(frames[n1:]), 30.0)
    P = grid_points(40, 130, 30, 100, 15)
    return paths, [n1, n2], P


def test_contiguous_vs_per_video(two_videos, tmp_path):
    h5py = pytest.importorskip("h5py")
    paths, nf, P = two_videos
    p = TrackingParams(relaxation=0.0, relaxation_during_freeze_frames=False, **FAST)
    # a global frames_freeze (sliced per video when not contiguous) and one start per video
    ff = np.zeros(sum(nf), bool)
    ff[nf[0] + 3 : nf[0] + 6] = True
    sep = track_session(
        paths, P, None, p, num_frames=nf, contiguous=False, idx_start=[0, 1], frames_freeze=ff, chunk_size=10
    )
    con = track_session(paths, P, None, p, num_frames=nf, contiguous=True, frames_freeze=ff, chunk_size=10)
    assert sorted(sep.results) == ["0", "1"] and sorted(con.results) == ["0"]
    c = np.asarray(con.results["0"].points)
    s1 = np.asarray(sep.results["1"].points)
    assert c.shape == (sum(nf), len(P), 2) and s1.shape == (nf[1], len(P), 2)
    # per video: the second video starts again at home (row 0 is before its start, row 1
    # is LK(frame 1, frame 1)); contiguous carries on (~0.2 px/frame)
    np.testing.assert_array_equal(s1[0], P)
    np.testing.assert_allclose(s1[1], P, atol=1e-3)
    assert abs((c[nf[0]] - P)[:, 0].mean() - 0.2 * nf[0]) < 0.6
    np.testing.assert_allclose(c[: nf[0]], np.asarray(sep.results["0"].points), atol=1e-5)
    # the freeze lands on the same frames of the second video in both modes
    # (frames 3-5 of the second video copy frame 2's positions; frame 6 moves again)
    np.testing.assert_array_equal(s1[3], s1[2])
    np.testing.assert_array_equal(s1[5], s1[2])
    np.testing.assert_array_equal(c[nf[0] + 5], c[nf[0] + 2])
    assert np.abs(s1[6] - s1[5]).max() > 0.05 and np.abs(c[nf[0] + 6] - c[nf[0] + 5]).max() > 0.05
    with pytest.raises(ConfigError, match="single integer"):
        track_session(paths, P, None, p, num_frames=nf, contiguous=True, idx_start=[0, 1])
    with pytest.raises(ConfigError, match="2 videos"):
        track_session(paths, P, None, p, num_frames=nf, idx_start=[0, 1, 2])
    # the file layout
    with h5py.File(tmp_path / "tracking.h5", "w") as f:
        write_tracking_h5(f, sep, frame_rate=30.0)
    with h5py.File(tmp_path / "tracking.h5", "r") as f:
        assert f["points_tracked/1"].shape == (nf[1], len(P), 2)
        assert f["points_tracked/0"].dtype == np.float32
        assert f["violation_fraction"].dtype == np.float64 and f["violation_fraction"].shape == (2,)
        assert f["neighbors"].shape == (len(P), 8) and f["mask"].dtype == bool
        assert [v.decode() for v in f["video_paths"][()]] == [str(p) for p in paths]
        np.testing.assert_array_equal(f["num_frames"][()], nf)
        assert f.attrs["frame_rate"] == 30.0 and not f.attrs["contiguous"] and f.attrs["num_keys"] == 2
        assert set(f["violations/0"]) == {"row", "col", "data", "shape"}


def test_load_frames_freeze(tmp_path):
    a = np.zeros(20, bool)
    a[3:6] = True
    np.save(tmp_path / "f.npy", a)
    np.testing.assert_array_equal(load_frames_freeze(tmp_path / "f.npy", 20), a)
    np.save(tmp_path / "i.npy", a.astype(np.int8))
    np.testing.assert_array_equal(load_frames_freeze(tmp_path / "i.npy", 20), a)
    with pytest.raises(ConfigError, match="has 20 entries"):
        load_frames_freeze(tmp_path / "f.npy", 21)
    (tmp_path / "r.txt").write_text("# grooming\n3 5\n\n10  # one frame\n")
    b = load_frames_freeze(tmp_path / "r.txt", 20)
    np.testing.assert_array_equal(np.flatnonzero(b), [3, 4, 5, 10])
    (tmp_path / "bad.txt").write_text("5 25\n")
    with pytest.raises(ConfigError, match="range"):
        load_frames_freeze(tmp_path / "bad.txt", 20)
    with pytest.raises(ConfigError, match="not found"):
        load_frames_freeze(tmp_path / "missing.txt", 20)
    coo = violations_to_coo({2: np.array([False, True, True])}, (4, 3))
    np.testing.assert_array_equal(coo["row"], [2, 2])
    np.testing.assert_array_equal(coo["col"], [1, 2])


def test_real_video_runs_without_nan(real_videos):
    from facerhythm_core.rois import make_points
    from facerhythm_core.video import iter_frame_chunks

    path = real_videos["mirror"]
    H, W = 406, 396
    yy, xx = np.mgrid[:H, :W]
    mask = ((yy - 200) / 110) ** 2 + ((xx - 200) / 120) ** 2 <= 1
    P = make_points([mask], 24)
    T = 150
    p = TrackingParams(clahe_tile_grid_size=(50, 50), threshold_displacement=40.0, progress_every=10_000)
    r = track_stream(iter_frame_chunks(path, chunk_size=64, stop=T, gray=False), P, mask, p, n_frames=T)
    pts = np.asarray(r.points)
    assert pts.shape == (T, len(P), 2) and np.isfinite(pts).all()
    assert 0.0 <= r.violation_fraction <= 1.0
    assert np.abs(pts - P).max() > 0.1  # something moved


def _chunks_equal(a, b):
    return [s for s, _ in a] == [s for s, _ in b] and all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))


@pytest.mark.parametrize(
    "pix_fmt,ext", [("yuv420p", "mp4"), ("yuv444p", "mp4"), ("yuv420p10le", "mp4"), ("yuv420p", "avi")]
)
def test_rgb_reader_gives_the_torchcodec_readers_chunks(tmp_path, ffmpeg_cli, pix_fmt, ext):
    """PyAV's sequential decode: the same pixels and chunk cuts as iter_frame_chunks,
    also where it hands over to torchcodec (10-bit: another conversion; AVI with
    B-frames: no presentation timestamps to check frames against)."""
    import subprocess

    from facerhythm_core.rgb_reader import iter_rgb_chunks
    from facerhythm_core.video import iter_frame_chunks

    path = tmp_path / f"v.{ext}"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=98x62:rate=30", "-frames:v", "45"]
        + ["-c:v", "libx264", "-bf", "2", "-pix_fmt", pix_fmt, str(path)],
        check=True,
    )
    for start, n in ((0, 45), (7, 45), (3, 40)):
        ours = list(iter_rgb_chunks(path, 16, start=start, n_frames=n))
        ref = list(iter_frame_chunks(path, 16, gray=False, start=start, n_frames=n, decode_threads=1))
        assert _chunks_equal(ours, ref), (pix_fmt, ext, start, n)


def test_rgb_reader_on_real_videos(real_videos):
    from facerhythm_core.rgb_reader import iter_rgb_chunks
    from facerhythm_core.video import iter_frame_chunks

    for path in real_videos.values():
        ours = list(iter_rgb_chunks(path, 32, start=5, n_frames=300))
        ref = list(iter_frame_chunks(path, 32, gray=False, start=5, n_frames=300, decode_threads=1))
        assert _chunks_equal(ours, ref), path
