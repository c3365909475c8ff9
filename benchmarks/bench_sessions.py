"""Spectral and TCA stages on the sessions labs record: many short trials, a face-sized
two-video session, and hour-long sessions (issue 19). Ours vs face-rhythm 0.3.3.

Cases (tracked traces from :mod:`trials`, so no hour of reference tracking is needed):

- ``trials40``: 40 trial videos x 1000 frames at 120 fps, ~350 points (case a);
- ``face2``: 2 videos x 1000 frames at 120 fps, ~350 points, the shape of face-rhythm's
  own demo session (784x582, 347 points; case b, spectral and TCA stages);
- ``hour``: one 1-hour video, 405 points at 90 fps (324 000 frames; case c): our
  spectrogram stage on it (peak RSS flat in length), and the reference's with
  ``--hour-reference``;
- ``hour_tca``: TCA of a synthetic (2, 405, 36, 16 200) spectrogram (that hour's
  tensor, 1.9 GB): ours (``--hour-iters``), the reference with ``n_iter_max`` 10 (its
  peak memory; all its iterations would take most of an hour);
- ``hour_big`` (memory only): a synthetic (2, 1276, 36, 21 600) float32 spectrogram
  (1276 points, 1 h at 120 fps / 20: 7.9 GB), our TCA with ``n_iter_max`` 3: peak RSS
  against the tensor's size (the peak is reached in the first iteration).

Each stage runs in its own niced process (``measure.run_measured``), the reference and
ours alternately in every repetition; peak RSS is the process's VmHWM. The TCA stage of
both reads the reference's spectrograms; its final errors are recomputed exactly here
(float64) from each output's factors against the same normalized tensors.

    .venv/bin/python benchmarks/bench_sessions.py --cases trials40,face2 --reps 3
    .venv/bin/python benchmarks/bench_sessions.py --cases hour --stages spectrogram --reps 2 --hour-reference
    .venv/bin/python benchmarks/bench_sessions.py --cases hour_big --reps 1

Writes OUT/results.jsonl and OUT/../extra_sessions.md (picked up by compare.py).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import cases as cases_mod  # noqa: E402
import trials  # noqa: E402
from measure import run_measured  # noqa: E402

OURS_PY = REPO / ".venv" / "bin" / "python"
REF_PY = HERE / ".venv-ref" / "bin" / "python"

CASES = {
    "trials40": dict(n_trials=40, n_frames=1000, fs=120.0, n_points=350, seed=0),
    "face2": dict(n_trials=2, n_frames=1000, fs=120.0, n_points=350, seed=1),
    "hour": dict(n_trials=1, n_frames=324000, fs=90.0, n_points=405, seed=2),
}


def log(msg):
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def prepare(out: Path, name: str) -> Path:
    cdir = out / name
    cdir.mkdir(parents=True, exist_ok=True)
    c = CASES[name]
    tr = cdir / "tracking.h5"
    if not tr.exists():
        if c["n_frames"] > 20000:
            write_long(tr, **c)
        else:
            trials.write_session(tr, c["n_trials"], c["n_frames"], c["fs"], c["n_points"], seed=c["seed"])
    p = cases_mod.make_params(c["fs"], c["n_frames"])
    p["videos"] = []
    (cdir / "params.json").write_text(json.dumps(p, indent=1))
    return cdir


def write_long(path: Path, n_trials, n_frames, fs, n_points, seed, block_s: float = 120.0):
    """One long video written in 2-minute blocks of independent motion (bounded memory)."""
    import h5py

    pts = trials.face_grid(784, 582, n_points)
    blk = int(block_s * fs)
    tmp = path.with_suffix(".partial.h5")
    with h5py.File(tmp, "w") as f:
        f["point_positions"] = pts
        d = f.create_dataset(
            "points_tracked/0", (n_frames, pts.shape[0], 2), np.float32, chunks=(min(n_frames, 4096), pts.shape[0], 2)
        )
        for i, a in enumerate(range(0, n_frames, blk)):
            b = min(n_frames, a + blk)
            d[a:b] = trials.trial_traces(pts, b - a, fs, seed * 100003 + i, 784, 582)
        f.attrs["frame_rate"] = float(fs)
        f["num_frames"] = np.asarray([n_frames], np.int64)
        f["video_paths"] = np.array(["hour.mp4"], dtype=h5py.string_dtype())
    tmp.replace(path)


def write_big_spectrograms(path: Path, n_points=1276, n_freq=36, n_time=21600, rank=10, seed=0):
    """Synthetic non-negative low-rank + noise spectrogram (2, N, F, T) float32, in blocks."""
    import h5py

    rng = np.random.default_rng(seed)
    A = rng.random((2 * n_points, rank)) ** 2
    B = rng.random((n_freq, rank))
    C = rng.random((n_time, rank))
    tmp = path.with_suffix(".partial.h5")
    with h5py.File(tmp, "w") as f:
        d = f.create_dataset("spectrograms/0", (2, n_points, n_freq, n_time), np.float32, chunks=(1, 16, n_freq, 1024))
        for x in range(2):
            for a in range(0, n_points, 64):
                b = min(n_points, a + 64)
                blk = np.einsum("ir,jr,kr->ijk", A[x * n_points + a : x * n_points + b], B, C)
                blk += 0.2 * blk.mean() * rng.random(blk.shape)
                d[x, a:b] = blk.astype(np.float32)
        f["frequencies"] = np.geomspace(1, 54, n_freq).astype(np.float32)
        f["point_positions"] = np.zeros((n_points, 2), np.float32)
        f["times/0"] = np.arange(n_time) / 6.0
        f.attrs["fs"] = 120.0
    tmp.replace(path)


def record(out: Path, rec: dict):
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def run(out: Path, cdir: Path, impl: str, stage: str, rep: int, src: Path, params: Path | None = None):
    ref = impl.startswith("reference")
    py, script = (REF_PY, HERE / "run_reference.py") if ref else (OURS_PY, HERE / "run_ours.py")
    base = "spectrograms" if stage == "spectrogram" else "tca"
    dst = cdir / f"{impl}_{base}.h5"
    metrics = cdir / f"metrics_{impl}_{base}_{rep}.json"
    flag = "--tracking" if stage == "spectrogram" else "--spectrograms"
    cmd = [
        str(py),
        str(script),
        stage,
        "--params",
        str(params or cdir / "params.json"),
        flag,
        str(src),
        "--out",
        str(dst),
        "--metrics",
        str(metrics),
    ]
    load0 = os.getloadavg()[0]
    m = run_measured(cmd, metrics_path=metrics, log_path=cdir / f"log_{impl}_{base}.txt", timeout_s=3600)
    mt = m.metrics or {}
    rec = dict(
        case=cdir.name,
        impl=impl,
        stage=stage,
        rep=rep,
        rc=m.rc,
        wall_s=m.wall_s,
        cpu_s=m.user_s + m.sys_s,
        t_stage_s=mt.get("t_stage_s"),
        peak_rss_mb=mt.get("vmhwm_mb") or m.peak_rss_mb,
        load=load0,
        time=time.time(),
        n_iter_run=mt.get("n_iter_run"),
    )
    if m.rc != 0:
        rec["log_tail"] = m.log[-2000:]
    record(out, rec)
    log(
        f"  {cdir.name:9s} {stage:11s} {impl:9s} rep{rep}: rc {m.rc} stage "
        f"{rec['t_stage_s'] if rec['t_stage_s'] is None else round(rec['t_stage_s'], 2)} s, "
        f"wall {m.wall_s:.1f} s, peak {rec['peak_rss_mb']:.0f} MB, load {load0:.1f}"
    )
    return rec


def tca_errors(spec_path: Path, ref_tca: Path, our_tca: Path) -> dict:
    """Exact final relative errors per video of both TCA outputs, same normalized tensors."""
    import h5py

    from facerhythm_core import tca_metrics, tca_tensor
    from facerhythm_core.keys import natural

    out = {"reference": [], "ours": [], "ours_iter": [], "keys": []}
    with h5py.File(spec_path, "r") as fs, h5py.File(ref_tca, "r") as fr, h5py.File(our_tca, "r") as fo:
        for k in natural(list(fs["spectrograms"])):
            re = tca_tensor.rearrange_data({k: fs["spectrograms"][k][()]})
            x, _ = tca_tensor.normalize_tensor(re.tensors[k], re.layouts[k].dims, False, True, "time")
            g = fr[f"factors/{k}"]
            dims = [d.decode() if isinstance(d, bytes) else str(d) for d in fr[f"dim_names/{k}"][()]]
            rfac = [g[d][()].astype(np.float64) for d in dims]
            w = fr[f"weights/{k}"][()].astype(np.float64)
            out["reference"].append(tca_metrics.explained_variance(x, w, rfac).rel_error)
            d = fo[f"decompositions/{k}"]
            ofac = [d[f"fitted/{i}"][()].astype(np.float64) for i in range(len(d["fitted"]))]
            out["ours"].append(tca_metrics.explained_variance(x, d["weights"][()], ofac).rel_error)
            out["ours_iter"].append(int(d.attrs["n_iter"]))
            out["keys"].append(k)
    return out


def summarize(out: Path) -> str:
    recs = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines() if ln.strip()]
    lines = [
        "## Trial sessions and hour-long sessions (spectrogram and TCA stages)",
        "",
        "From `benchmarks/bench_sessions.py` ("
        + (out / "command.txt").read_text().strip()
        + "). Tracked traces come from `benchmarks/trials.py` (synthetic facial "
        "motion: whisking and sniffing bouts, breathing, licking, drift, tracking "
        "noise), so both implementations get identical input; the TCA stage of both "
        "reads the reference's spectrograms. Times are each process's stage time "
        "(after the heavy imports), min / median over repetitions, the reference and "
        "ours alternating; ratios are min/min and median/median.",
        "",
        "| case | stage | reference (s) | ours (s) | ratio | peak RSS ref / ours (MB) | notes |",
        "|---|---|---|---|---|---|---|",
    ]
    by = {}
    for r in recs:
        if r["rc"] == 0 and r["t_stage_s"] is not None:
            by.setdefault((r["case"], r["stage"], r["impl"]), []).append(r)
    for case in ("trials40", "face2", "hour", "hour_tca", "hour_big"):
        for stage in ("spectrogram", "tca"):
            ref, ours = by.get((case, stage, "reference"), []), by.get((case, stage, "ours"), [])
            if not ours:
                continue
            to = np.array([r["t_stage_s"] for r in ours])
            note = ""
            if (out / case / f"errors_{stage}.json").exists():
                note = (out / case / f"errors_{stage}.json").read_text()
                e = json.loads(note)
                note = (
                    f"final exact error, mean over videos: ours {np.mean(e['ours']):.6f} "
                    f"({np.sum(e['ours_iter'])} iterations) vs reference "
                    f"{np.mean(e['reference']):.6f}; worst video ours - reference "
                    f"{np.max(np.subtract(e['ours'], e['reference'])):+.1e}"
                )
            if (out / case / f"note_{stage}.txt").exists():
                note = (note + "; " if note else "") + (out / case / f"note_{stage}.txt").read_text().strip()
            ref1 = by.get((case, stage, "reference_1thread"), [])
            if ref1:
                t1 = np.array([r["t_stage_s"] for r in ref1])
                note = (note + "; " if note else "") + (
                    f"reference pinned to 1 torch thread: {t1.min():.2f} / {np.median(t1):.2f} s, "
                    f"ours {t1.min() / to.min():.2f}x / {np.median(t1) / np.median(to):.2f}x faster"
                )
            if ref:
                tr = np.array([r["t_stage_s"] for r in ref])
                ratio = f"**{tr.min() / to.min():.2f}x / {np.median(tr) / np.median(to):.2f}x**"
                rss = f"{np.median([r['peak_rss_mb'] for r in ref]):.0f} / {np.median([r['peak_rss_mb'] for r in ours]):.0f}"
                rt = f"{tr.min():.2f} / {np.median(tr):.2f}"
            else:
                ratio, rt = "", ""
                rss = f"- / {np.median([r['peak_rss_mb'] for r in ours]):.0f}"
            lines.append(
                f"| {case} | {stage} | {rt} | {to.min():.2f} / {np.median(to):.2f} | {ratio} | {rss} | {note} |"
            )
    lines.append("")
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    """Command line of the sessions benchmark."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "out" / "sessions"))
    ap.add_argument("--cases", default="trials40,face2")
    ap.add_argument("--stages", default="spectrogram,tca")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument(
        "--hour-iters",
        type=int,
        default=200,
        help="n_iter_max of ours on hour_tca (the peak is reached in iteration 1)",
    )
    ap.add_argument(
        "--ref-one-thread", action="store_true", help="also time the reference's TCA pinned to one torch thread"
    )
    ap.add_argument(
        "--hour-reference",
        action="store_true",
        help="hour: also run the reference's spectrogram stage (its output, 1.9 GB, is held in memory)",
    )
    return ap


def _run_hour_big(out: Path, name: str) -> None:
    """``hour_big``: our TCA (3 iterations) on a 7.9 GB synthetic spectrogram, peak RSS against its size."""
    cdir = out / name
    cdir.mkdir(exist_ok=True)
    spec = cdir / "spectrograms.h5"
    if not spec.exists():
        log("writing the 7.9 GB synthetic spectrogram")
        write_big_spectrograms(spec)
    p = cases_mod.make_params(120.0, 432000)
    p["tca"]["n_iter_max"] = 3
    (cdir / "params.json").write_text(json.dumps(p, indent=1))
    r = run(out, cdir, "ours", "tca", 0, spec)
    size = 2 * 1276 * 36 * 21600 * 4 / 2**20
    (cdir / "note_tca.txt").write_text(
        f"synthetic (2, 1276, 36, 21600) float32 input, {size:.0f} MB tensor; "
        f"n_iter_max 3; peak RSS {r['peak_rss_mb'] / size:.2f}x the tensor"
    )


def _run_hour_tca(out: Path, name: str, hour_iters: int) -> None:
    """``hour_tca``: the 1-hour, 405-point, 90 fps tensor (810, 36, 16200) as a synthetic
    spectrogram: ours to convergence, the reference for 10 iterations."""
    cdir = out / name
    cdir.mkdir(exist_ok=True)
    spec = cdir / "spectrograms.h5"
    if not spec.exists():
        log("writing the 1.9 GB synthetic spectrogram")
        write_big_spectrograms(spec, n_points=405, n_time=16200)
    p = cases_mod.make_params(90.0, 324000)
    p["tca"]["n_iter_max"] = hour_iters
    (cdir / "params.json").write_text(json.dumps(p, indent=1))
    p["tca"]["n_iter_max"] = min(10, hour_iters)
    (cdir / "params_ref10.json").write_text(json.dumps(p, indent=1))
    size = 2 * 405 * 36 * 16200 * 4 / 2**20
    r = run(out, cdir, "ours", "tca", 0, spec)
    r2 = run(out, cdir, "reference", "tca", 0, spec, params=cdir / "params_ref10.json")
    (cdir / "note_tca.txt").write_text(
        f"synthetic (2, 405, 36, 16200) float32 input, {size:.0f} MB tensor; ours "
        f"{r.get('n_iter_run')} iterations, peak RSS {r['peak_rss_mb'] / size:.2f}x "
        f"the tensor; the reference ran {min(10, hour_iters)} iterations only "
        f"(time not comparable), "
        f"peak RSS {r2['peak_rss_mb'] / size:.2f}x"
    )


def _run_trials_tca(out: Path, cdir: Path, rep: int, ref_one_thread: bool) -> None:
    """TCA of a trial case, both on the reference's spectrograms; optionally the reference on one thread too."""
    for impl in ("reference", "ours"):
        run(out, cdir, impl, "tca", rep, cdir / "reference_spectrograms.h5")
    if ref_one_thread:
        # the reference pinned to one torch thread: how much of the
        # ratio comes from its 2 threads contending on a busy machine
        p = json.loads((cdir / "params.json").read_text())
        p["threads"] = 1
        (cdir / "params_1t.json").write_text(json.dumps(p, indent=1))
        run(
            out,
            cdir,
            "reference_1thread",
            "tca",
            rep,
            cdir / "reference_spectrograms.h5",
            params=cdir / "params_1t.json",
        )


def _run_hour_session_tca(out: Path, cdir: Path, rep: int) -> None:
    """TCA of the hour case on our spectrograms; the reference's limited to 10 iterations."""
    p = json.loads((cdir / "params.json").read_text())
    p["tca"]["n_iter_max"] = 10
    (cdir / "params_ref10.json").write_text(json.dumps(p, indent=1))
    spec = cdir / "ours_spectrograms.h5"
    run(out, cdir, "ours", "tca", rep, spec)
    run(out, cdir, "reference", "tca", rep, spec, params=cdir / "params_ref10.json")


def _write_hour_tca_note(out: Path, cdir: Path) -> None:
    """Note on the hour case's TCA: our peak RSS against the tensor's size."""
    import h5py

    with h5py.File(cdir / "ours_spectrograms.h5", "r") as f:
        shape = f["spectrograms/0"].shape
    size = int(np.prod(shape)) * 4 / 2**20
    peaks = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    peak = max(r["peak_rss_mb"] for r in peaks if r["case"] == "hour" and r["stage"] == "tca" and r["impl"] == "ours")
    (cdir / "note_tca.txt").write_text(
        f"tensor {shape} float32 = {size:.0f} MB; our peak RSS {peak / size:.2f}x "
        "the tensor; reference run with n_iter_max 10 (ours stops by rel_tol), so "
        "its time is not comparable, only its peak RSS"
    )


def _run_session_case(
    out: Path, name: str, stages: list[str], reps: int, ref_one_thread: bool, hour_reference: bool = False
) -> None:
    """A session case from :data:`CASES` (``trials40``, ``face2``, ``hour``): its stages per repetition, then
    the exact TCA errors (trial cases) or the TCA memory note (``hour``)."""
    cdir = prepare(out, name)
    hour = name == "hour"
    for rep in range(reps):
        log(f"{name} repetition {rep + 1}/{reps}")
        if "spectrogram" in stages:
            for impl in ("ours",) if hour and not hour_reference else ("reference", "ours"):
                run(out, cdir, impl, "spectrogram", rep, cdir / "tracking.h5")
        if "tca" in stages:
            if hour:
                _run_hour_session_tca(out, cdir, rep)
            else:
                _run_trials_tca(out, cdir, rep, ref_one_thread)
    if "tca" in stages and not hour:
        e = tca_errors(cdir / "reference_spectrograms.h5", cdir / "reference_tca.h5", cdir / "ours_tca.h5")
        (cdir / "errors_tca.json").write_text(json.dumps(e))
    if hour and "tca" in stages:
        _write_hour_tca_note(out, cdir)


def main():
    a = _parser().parse_args()
    out = Path(a.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not a.report_only:
        with open(out / "command.txt", "a") as f:
            f.write(
                f"`{' '.join(['benchmarks/bench_sessions.py'] + sys.argv[1:])}`, "
                f"started {time.strftime('%Y-%m-%d %H:%M')}; "
            )
        stages = a.stages.split(",")
        for name in a.cases.split(","):
            if name == "hour_big":
                _run_hour_big(out, name)
            elif name == "hour_tca":
                _run_hour_tca(out, name, a.hour_iters)
            else:
                _run_session_case(out, name, stages, a.reps, a.ref_one_thread, a.hour_reference)
    md = summarize(out)
    (out.parent / "extra_sessions.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
