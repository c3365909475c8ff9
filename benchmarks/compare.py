"""Turn a benchmark run (OUT/results.jsonl + the stage outputs) into BENCHMARKS.md.

    .venv/bin/python benchmarks/compare.py --out benchmarks/out [--md BENCHMARKS.md]

Speed: per case and stage, min and median over repetitions of the in-process stage time
(after imports, including reading inputs and writing outputs) and of the process wall
time, throughput, and peak RSS of the stage's process; ratios reference/ours for time
(> 1 = ours faster) and ours/reference for memory, from the same run.

Fidelity (independent of our product code: only numpy/scipy/h5py here):
- tracking: per-point Pearson correlation of displacement traces and RMS difference (px),
  ours vs reference, and for the synthetic video each against the planted ground truth;
- spectrograms: relative Frobenius error ||ours - ref|| / ||ref|| with the same tracked
  input (the reference's tracking), overall and per frequency;
- TCA: factor match score (FMS, Acar et al. 2011 / tensortools kruskal_align) between our
  and the reference's factors on the same spectrograms, with the reference against itself
  at another seed as the yardstick;
- planted rhythms (synthetic): spectral peak per region, and the TCA component best
  matching each rhythm (peak frequency, spatial centre, temporal envelope correlation).
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))

STAGES = ("track", "spectrogram", "tca")


# ----------------------------------------------------------------------------- loading


def load_results(out: Path) -> list[dict]:
    p = out / "results.jsonl"
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def _h5(path):
    import h5py

    return h5py.File(path, "r")


def read_tracking(path: Path) -> dict:
    with _h5(path) as f:
        return dict(p0=f["point_positions"][()], tracks={k: f[f"points_tracked/{k}"][()] for k in f["points_tracked"]})


def read_spectrograms(path: Path) -> dict:
    with _h5(path) as f:
        return dict(
            spec={k: f[f"spectrograms/{k}"][()] for k in f["spectrograms"]},
            freqs=f["frequencies"][()],
            x_axis={k: f[f"x_axis/{k}"][()] for k in f["x_axis"]} if "x_axis" in f else {},
        )


def read_cp(path: Path, key: str = "0"):
    """CP model as ([(xy points) (2N,R), frequency (F,R), time (T,R)], weights) from either layout."""
    with _h5(path) as f:
        if "decompositions" in f:  # ours (docs/tca.md)
            names = list(f["decompositions"])
            name = key if key in names else names[0]
            g = f["decompositions"][name]
            dims = list(g.attrs["dims"])
            fitted = [g["fitted"][str(i)][()] for i in range(len(g["fitted"]))]
            by = dict(zip(dims, fitted))
            facs = [by["(xy points)"], by["frequency"], by["time"]]
            return facs, g["weights"][()]
        g = f["factors"][key]  # reference (run_reference.py)
        facs = [g["(xy points)"][()], g["frequency"][()], g["time"][()]]
        return facs, f[f"weights/{key}"][()]


# ----------------------------------------------------------------------------- metrics


def summarize(vals):
    vals = [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return None, None
    return min(vals), statistics.median(vals)


def throughput(stage: str, metrics: dict, t: float) -> tuple[float | None, str]:
    if not metrics or not t:
        return None, ""
    if stage == "track" and metrics.get("n_frames"):
        return metrics["n_frames"] / t, "frames/s"
    if stage == "spectrogram":
        ns, nc = metrics.get("n_samples"), metrics.get("n_channels")
        if ns is None and metrics.get("shapes"):
            return None, ""
        if ns and nc:
            return ns * nc / t / 1e6, "M samples/s"
    if stage == "tca" and metrics.get("tensor_shapes"):
        el = sum(int(np.prod(s)) for s in metrics["tensor_shapes"].values())
        # iterations actually run: tol=1e-9 can stop a fit early, so per-iteration speed is the fair rate
        it = metrics.get("n_iter_run") or metrics.get("n_iter_max", 0)
        return el * it / t / 1e6, f"M elem-iters/s ({it} iters)"
    return None, ""


def pearson(a, b, axis=0):
    a = a - a.mean(axis, keepdims=True)
    b = b - b.mean(axis, keepdims=True)
    den = np.sqrt((a * a).sum(axis) * (b * b).sum(axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (a * b).sum(axis) / den, np.nan)


def tracking_fidelity(a: dict, b: dict, min_std_px: float = 0.05) -> dict:
    """Compare two trackings of the same points: a vs b (b is the yardstick)."""
    out = {}
    key = sorted(set(a["tracks"]) & set(b["tracks"]))[0]
    A = a["tracks"][key].astype(np.float64) - a["p0"][None]
    B = b["tracks"][key].astype(np.float64) - b["p0"][None]
    T = min(len(A), len(B))
    A, B = A[:T], B[:T]
    d = A - B
    out["rms_diff_px"] = float(np.sqrt((d**2).mean()))
    out["p99_abs_diff_px"] = float(np.percentile(np.abs(d), 99))
    out["max_abs_diff_px"] = float(np.abs(d).max())
    # correlation only where the yardstick trace moves (static points give noise-only r)
    std = B.std(0)  # (N, 2)
    moving = std > min_std_px
    r = pearson(A, B)  # (N, 2)
    out["n_traces_moving"] = int(moving.sum())
    out["median_r_moving"] = float(np.nanmedian(r[moving])) if moving.any() else None
    out["p10_r_moving"] = float(np.nanpercentile(r[moving], 10)) if moving.any() else None
    return out


def tracking_vs_truth(tr: dict, spec, region_w_min: float = 0.5) -> dict:
    import synthetic

    key = sorted(tr["tracks"])[0]
    P = tr["tracks"][key].astype(np.float64)
    p0 = tr["p0"].astype(np.float64)
    truth = synthetic.true_positions(spec, p0, frames=np.arange(len(P)))
    d = P - truth
    out = dict(rms_err_px=float(np.sqrt((d**2).mean())), p99_abs_err_px=float(np.percentile(np.abs(d), 99)))
    w = synthetic._weights(spec, p0[:, 0], p0[:, 1])  # (R, N)
    dirs = synthetic._unit_dirs(spec)
    for k, reg in enumerate(spec.regions):
        sel = w[k] > region_w_min
        if not sel.any():
            continue
        # displacement along the region's direction
        obs = ((P[:, sel] - p0[sel]) * dirs[k]).sum(-1)
        tru = ((truth[:, sel] - p0[sel]) * dirs[k]).sum(-1)
        r = pearson(obs, tru)
        gain = (obs * tru).sum(0) / np.maximum((tru * tru).sum(0), 1e-12)
        out[reg.name] = dict(
            n_points=int(sel.sum()),
            median_r=float(np.nanmedian(r)),
            median_gain=float(np.median(gain)),
            rms_err_px=float(np.sqrt(((obs - tru) ** 2).mean())),
        )
    return out


def spectrogram_fidelity(a: dict, b: dict) -> dict:
    key = sorted(set(a["spec"]) & set(b["spec"]))[0]
    A, B = np.abs(a["spec"][key]).astype(np.float64), np.abs(b["spec"][key]).astype(np.float64)
    out = dict(shape_ours=list(A.shape), shape_ref=list(B.shape))
    T = min(A.shape[-1], B.shape[-1])
    if A.shape[:-1] != B.shape[:-1]:
        out["error"] = "shapes differ"
        return out
    A, B = A[..., :T], B[..., :T]
    out["rel_error"] = float(np.linalg.norm(A - B) / np.linalg.norm(B))
    per_f = np.linalg.norm((A - B).transpose(2, 0, 1, 3).reshape(A.shape[2], -1), axis=1) / np.linalg.norm(
        B.transpose(2, 0, 1, 3).reshape(B.shape[2], -1), axis=1
    )
    out["rel_error_per_freq_max"] = float(per_f.max())
    out["rel_error_per_freq_median"] = float(np.median(per_f))
    out["worst_freq_hz"] = float(b["freqs"][int(np.argmax(per_f))])
    out["freq_max_abs_diff_hz"] = float(np.abs(a["freqs"] - b["freqs"]).max())
    if key in a["x_axis"] and key in b["x_axis"]:
        xa, xb = a["x_axis"][key][:T], b["x_axis"][key][:T]
        out["x_axis_max_abs_diff"] = float(np.abs(xa - xb).max())
    out["corr"] = float(pearson(A.ravel(), B.ravel()))
    return out


def factor_match_score(fa, fb, wa=None, wb=None) -> tuple[float, list[float]]:
    """FMS with weight penalty, Hungarian-matched (independent re-statement)."""
    from scipy.optimize import linear_sum_assignment

    Ra, Rb = fa[0].shape[1], fb[0].shape[1]
    la = np.ones(Ra) if wa is None else np.abs(np.asarray(wa, float))
    lb = np.ones(Rb) if wb is None else np.abs(np.asarray(wb, float))
    sim = np.ones((Ra, Rb))
    for A, B in zip(fa, fb):
        A, B = np.asarray(A, float), np.asarray(B, float)
        na, nb = np.linalg.norm(A, axis=0), np.linalg.norm(B, axis=0)
        la, lb = la * na, lb * nb
        sim *= np.abs((A / np.where(na > 0, na, 1)).T @ (B / np.where(nb > 0, nb, 1)))
    mx = np.maximum(la[:, None], lb[None, :])
    sim_w = sim * (1 - np.abs(la[:, None] - lb[None, :]) / np.where(mx > 0, mx, 1))
    r, c = linear_sum_assignment(-sim_w)
    return float(sim_w[r, c].mean()), [float(x) for x in sim[r, c]]


def cp_model_evr(facs, weights, spec_path: Path, key="0", eps=0.0) -> float | None:
    """Whole-model EVR of a CP model against the reference-normalized tensor (std over time)."""
    try:
        s = read_spectrograms(spec_path)["spec"][key]
    except Exception:  # noqa: BLE001
        return None
    X = np.abs(s).astype(np.float64)
    X = X.reshape(-1, X.shape[2], X.shape[3])  # (2N, F, T): x rows then y rows
    sd = X.std(axis=2, ddof=1, keepdims=True)
    X = X / (sd + eps)
    A, B, C = [np.asarray(f, np.float64) for f in facs]
    w = np.ones(A.shape[1]) if weights is None else np.asarray(weights, np.float64)
    Xh = np.einsum("ir,jr,kr,r->ijk", A, B, C, w)
    good = np.isfinite(X)
    return float(1 - np.var((X - Xh)[good]) / np.var(X[good]))


def planted_recovery(out: Path, case: str, spec) -> dict:
    """Spectral peaks per planted region, and the TCA component matching each rhythm."""
    import synthetic

    res = {}
    cdir = out / case
    srcs = {
        "reference": (cdir / "reference/spectrograms.h5", cdir / "reference/tca.h5"),
        "ours": (cdir / "ours/spectrograms_chain.h5", cdir / "ours/tca_chain.h5"),
    }
    for impl, (sp, tp) in srcs.items():
        if not sp.exists():
            continue
        S = read_spectrograms(sp)
        f = S["freqs"]
        X = np.abs(S["spec"]["0"])  # (2, N, F, T)
        with _h5(cdir / "inputs.h5") as fi:
            p0 = fi["point_positions"][()].astype(np.float64)
        w = synthetic._weights(spec, p0[:, 0], p0[:, 1])
        dirs = synthetic._unit_dirs(spec)
        r_impl = {}
        for k, reg in enumerate(spec.regions):
            sel = w[k] > 0.5
            axis = int(np.argmax(np.abs(dirs[k])))  # 0 = x, 1 = y
            prof = X[axis][sel].mean(axis=(0, 2))  # (F,)
            # compare with a far-away (static) set of points: the rhythm must stand out
            far = w.max(0) < 0.05
            ref_prof = X[axis][far].mean(axis=(0, 2)) if far.any() else np.ones_like(prof)
            contrast = prof / np.maximum(ref_prof, 1e-12)
            r_impl[reg.name] = dict(
                planted_hz=reg.freq_hz,
                peak_hz=float(f[int(np.argmax(prof))]),
                peak_contrast_hz=float(f[int(np.argmax(contrast))]),
                contrast_at_planted=float(contrast[int(np.argmin(np.abs(f - reg.freq_hz)))]),
            )
        if tp.exists():
            facs, wts = read_cp(tp)
            A, Fq, Tm = facs
            N = A.shape[0] // 2
            mag = np.sqrt(A[:N] ** 2 + A[N:] ** 2)  # (N, R) spatial magnitude per point
            with _h5(sp) as fs:
                times = fs["times/0"][()] if "times/0" in fs else fs["x_axis/0"][()] / spec.fps
            for k, reg in enumerate(spec.regions):
                # component whose spectral factor is most concentrated near the planted freq
                near = np.abs(np.log(f / reg.freq_hz)) < np.log(1.25)
                score = (
                    Fq[near].sum(0)
                    / np.maximum(Fq.sum(0), 1e-12)
                    * mag[w[k] > 0.5].sum(0)
                    / np.maximum(mag.sum(0), 1e-12)
                )
                c = int(np.argmax(score))
                env = synthetic.envelope(reg, times)
                sel = w[k] > 0.5
                mass_in = float(mag[sel, c].sum() / max(mag[:, c].sum(), 1e-12))
                r_env = float(pearson(Tm[:, c], env)) if reg.envelope_period_s else None
                r_impl[reg.name].update(
                    tca_component=c,
                    tca_peak_hz=float(f[int(np.argmax(Fq[:, c]))]),
                    tca_region_mass=mass_in,
                    tca_region_mass_chance=float(sel.mean()),
                    tca_envelope_r=r_env,
                )
        res[impl] = r_impl
    return res


# ----------------------------------------------------------------------------- report


def fmt(x, nd=2):
    if x is None:
        return "n/a"
    if isinstance(x, str):
        return x
    if abs(x) >= 1000:
        return f"{x:,.0f}"
    if abs(x) >= 100:
        return f"{x:.0f}"
    return f"{x:.{nd}f}"


def _group_runs(results: list[dict]) -> defaultdict:
    """Runs keyed by (case, stage, impl, variant), scaling cases left out."""
    groups = defaultdict(list)
    for r in results:
        if r["case"].startswith("scaling_"):
            continue
        groups[(r["case"], r["stage"], r["impl"], r["variant"])].append(r)
    return groups


def _run_stats(stage: str, rs: list[dict]) -> dict:
    """Min / median stage time and wall, median CPU and RSS, throughput of one stage's ok runs."""
    ts = [(r["metrics"] or {}).get("t_stage_s") for r in rs]
    ws = [r["wall_s"] for r in rs]
    mem = [r["peak_rss_mb"] for r in rs]
    tmin, tmed = summarize(ts)
    wmin, wmed = summarize(ws)
    cmed = statistics.median([r.get("cpu_s") or 0.0 for r in rs])
    thr, unit = throughput(stage, rs[0]["metrics"], tmed)
    mt = rs[0]["metrics"] or {}
    if stage == "track" and mt.get("rewinds") is not None:
        unit += f"; {mt['rewinds']} rewinds, {mt.get('frames_processed', '?')} frames processed"
    loads = [r["load_start"] for r in rs if r.get("load_start") is not None]
    if loads:  # machine load (1-min average) when the stage started
        unit += f"; load {statistics.median(loads):.1f}"
    return dict(
        t_min=tmin,
        t_med=tmed,
        w_min=wmin,
        w_med=wmed,
        cpu=cmed,
        rss=statistics.median(mem),
        thr=thr,
        unit=unit,
    )


def _stage_ratio(stage: str, ref: dict, ours: dict) -> tuple[str, dict]:
    """Ratio row of one stage, reference over ours, and its entry for the summary."""
    sp_min = ref["t_min"] / ours["t_min"] if ours["t_min"] else None
    sp_med = ref["t_med"] / ours["t_med"] if ours["t_med"] else None
    mem_r = ours["rss"] / ref["rss"] if ref["rss"] else None
    cpu_r = ref["cpu"] / ours["cpu"] if ours["cpu"] else None
    line = (
        f"| {stage} | **ratio** | | **{fmt(sp_min)}x / {fmt(sp_med)}x faster** | "
        f"{fmt(ref['w_med'] / ours['w_med'])}x | {fmt(cpu_r)}x less CPU | | **{fmt(mem_r)}x RSS** |"
    )
    return line, dict(speedup_min=sp_min, speedup_med=sp_med, rss_ratio=mem_r, cpu_ratio=cpu_r)


def _stage_rows(groups: dict, case: str, stage: str) -> tuple[list[str], dict | None]:
    """Table rows of one case's stage (reference, ours, ours on own input, ratio), and its summary entry."""
    lines, row_vals = [], {}
    for impl, variant in (("reference", "iso"), ("ours", "iso"), ("ours", "chain")):
        rs = [r for r in groups.get((case, stage, impl, variant), []) if r["status"] == "ok"]
        bad = [r for r in groups.get((case, stage, impl, variant), []) if r["status"] != "ok"]
        if not rs:
            if bad:
                lines.append(f"| {stage} | {impl} ({variant}) | 0 | {bad[-1]['status']} | | | | |")
            continue
        v = _run_stats(stage, rs)
        lines.append(
            f"| {stage} | {impl}{'' if variant == 'iso' else ' (own input)'} | {len(rs)} | "
            f"{fmt(v['t_min'])} / {fmt(v['t_med'])} | {fmt(v['w_min'])} / {fmt(v['w_med'])} | {fmt(v['cpu'])} | "
            f"{fmt(v['thr'])} {v['unit']} | {fmt(v['rss'])} |"
        )
        row_vals[(impl, variant)] = v
    ref, ours = row_vals.get(("reference", "iso")), row_vals.get(("ours", "iso"))
    if not (ref and ours):
        return lines, None
    line, ratio = _stage_ratio(stage, ref, ours)
    return lines + [line], ratio


def _end_to_end_stats(groups: dict, case: str) -> dict:
    """Per implementation: walls, RSS and CPU of complete three-stage chains (one per repetition)."""
    e2e = {}
    for impl, chain in (
        ("reference", [("track", "iso"), ("spectrogram", "iso"), ("tca", "iso")]),
        ("ours", [("track", "iso"), ("spectrogram", "chain"), ("tca", "chain")]),
    ):
        by_rep = defaultdict(dict)
        for st, var in chain:
            for r in groups.get((case, st, impl, var), []):
                if r["status"] == "ok":
                    by_rep[r["rep"]][st] = r
        tot = [
            (
                sum(v["wall_s"] for v in d.values()),
                max(v["peak_rss_mb"] for v in d.values()),
                sum(v.get("cpu_s") or 0.0 for v in d.values()),
            )
            for d in by_rep.values()
            if len(d) == len(chain)
        ]
        if tot:
            e2e[impl] = dict(
                w_min=min(t[0] for t in tot),
                w_med=statistics.median([t[0] for t in tot]),
                rss=statistics.median([t[1] for t in tot]),
                cpu=statistics.median([t[2] for t in tot]),
                n=len(tot),
            )
    return e2e


def _end_to_end_rows(e2e: dict) -> tuple[list[str], dict | None]:
    """End-to-end table rows (per implementation, then the ratio), and the ratio's summary entry."""
    lines = [
        f"| **end to end** | {impl} | {d['n']} | | {fmt(d['w_min'])} / {fmt(d['w_med'])} | {fmt(d['cpu'])} | | {fmt(d['rss'])} |"
        for impl, d in e2e.items()
    ]
    if len(e2e) != 2:
        return lines, None
    r_, o_ = e2e["reference"], e2e["ours"]
    lines.append(
        f"| **end to end** | **ratio** | | | **{fmt(r_['w_min'] / o_['w_min'])}x / "
        f"{fmt(r_['w_med'] / o_['w_med'])}x faster** | {fmt(r_['cpu'] / o_['cpu'])}x less CPU | | **{fmt(o_['rss'] / r_['rss'])}x RSS** |"
    )
    return lines, dict(
        speedup_min=r_["w_min"] / o_["w_min"],
        speedup_med=r_["w_med"] / o_["w_med"],
        rss_ratio=o_["rss"] / r_["rss"],
    )


def speed_tables(results: list[dict]) -> tuple[list[str], dict]:
    groups = _group_runs(results)
    cases = sorted({k[0] for k in groups})
    lines, summary = [], {}
    for case in cases:
        lines += [
            f"### {case}",
            "",
            "| stage | impl | n | stage time min / median (s) | process wall min / median (s) | process CPU median (s) | throughput (median) | peak RSS median (MB) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for stage in STAGES:
            rows, ratio = _stage_rows(groups, case, stage)
            lines += rows
            if ratio is not None:
                summary[(case, stage)] = ratio
        # end to end: per repetition, sum of process walls and max RSS over the chain
        e2e = _end_to_end_stats(groups, case)
        rows, ratio = _end_to_end_rows(e2e)
        lines += rows
        if ratio is not None:
            summary[(case, "e2e")] = ratio
        lines += _one_process_rows(groups.get((case, "all", "reference", "one_process"), []), e2e.get("ours"))
        lines.append("")
    return lines, summary


def _one_process_rows(runs: list[dict], ours: dict | None) -> list[str]:
    """Rows for the reference run as its pipeline runs a session: all three stages in one
    process (``bench.py --ref-one-process``), against the sum of our stage processes."""
    ok = [r for r in runs if r["status"] == "ok"]
    if not ok:
        return []
    ws = [r["wall_s"] for r in ok]
    w_min, w_med = min(ws), statistics.median(ws)
    cpu = statistics.median([r["cpu_s"] for r in ok])
    lines = [
        f"| **end to end** | reference, one process | {len(ws)} | | {fmt(w_min)} / {fmt(w_med)} | {fmt(cpu)} | | |"
    ]
    if ours:
        lines.append(
            f"| **end to end** | **ratio, reference in one process** | | | **{fmt(w_min / ours['w_min'])}x / "
            f"{fmt(w_med / ours['w_med'])}x faster** | {fmt(cpu / ours['cpu'])}x less CPU | | |"
        )
    return lines


def limits_table(out: Path, case_names) -> list[str]:
    lines = [
        "| case | env (OpenCV) | frames | points | decode | gray | CLAHE 150x150 | LK | serial floor | decode-overlapped floor | our reader (decode+gray) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in case_names:
        for impl in ("ours", "reference"):
            p = out / case / f"limits_{impl}.json"
            if not p.exists():
                continue
            d = json.loads(p.read_text())
            lines.append(
                f"| {case} | {impl} ({d['cv2_version']}) | {d['frames']} ({d['width']}x{d['height']}) | "
                f"{d['n_points']} | {fmt(d['decode_fps'])} | {fmt(d['gray_fps'])} | {fmt(d['clahe_fps'])} | "
                f"{fmt(d['lk_fps'])} | {fmt(d['serial_floor_fps'])} | {fmt(d['overlapped_floor_fps'])} | "
                f"{fmt(d.get('ours_reader_gray_fps')) if impl == 'ours' else ''} |"
            )
    lines.append("")
    lines.append(
        "All in frames/s, one stream, on the first 600 frames; decode = torchcodec RGB, "
        "gray = equal-weight mean, CLAHE and LK at the reference's parameters (LK: winSize 20, "
        "maxLevel 2, 2 iterations, eps 0.03). These are the reference's parts as it runs them "
        "(OpenCV's CLAHE on the full frame); the tracker beats their serial floor by cropping, "
        "by its own CLAHE kernels (same output, docs/tracking.md) and by running decode, "
        "preprocessing and LK in three threads."
    )
    return lines


def scaling_section(out: Path, results: list[dict], md_dir: Path) -> list[str]:
    # scaling cases, plus the main synthetic case's own chain (the same workload at its length)
    rs = [
        r
        for r in results
        if r["status"] == "ok"
        and r["impl"] == "ours"
        and (
            r["case"].startswith("scaling_")
            or (r["case"].startswith("synthetic_") and (r["stage"] == "track" or r["variant"] == "chain"))
        )
    ]
    if not rs:
        return ["No scaling run yet (bench.py --scaling 15,60,240)."]
    by = defaultdict(dict)
    for r in sorted(rs, key=lambda r: r["case"].startswith("scaling_")):  # scaling runs win ties
        dur = float(r["case"].split("_")[1].rstrip("s"))
        by[r["stage"]][dur] = r
    lines = [
        "| stage | video length (s) | stage time (s) | process wall (s) | process CPU (s) | peak RSS (MB) | run |",
        "|---|---|---|---|---|---|---|",
    ]
    for st in STAGES:
        for dur in sorted(by.get(st, {})):
            r = by[st][dur]
            lines.append(
                f"| {st} | {dur:g} | {fmt((r['metrics'] or {}).get('t_stage_s'))} | {fmt(r['wall_s'])} | "
                f"{fmt(r.get('cpu_s'))} | {fmt(r['peak_rss_mb'])} | {r['case']} |"
            )
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
        for st in STAGES:
            d = by.get(st, {})
            if not d:
                continue
            xs = sorted(d)
            ax[0].plot(xs, [d[x].get("cpu_s") or d[x]["wall_s"] for x in xs], "o-", label=st)
            ax[1].plot(xs, [d[x]["peak_rss_mb"] for x in xs], "o-", label=st)
        ax[0].set(xlabel="video length (s)", ylabel="process CPU time, user+sys (s)", title="ours: CPU time vs length")
        ax[1].set(xlabel="video length (s)", ylabel="peak RSS (MB)", title="ours: peak memory vs length")
        ax[1].set_ylim(bottom=0)
        for a in ax:
            a.legend()
            a.grid(alpha=0.3)
        fig.tight_layout()
        png_dir = md_dir / "benchmarks" if (md_dir / "benchmarks").is_dir() else md_dir
        png = png_dir / "scaling.png"
        fig.savefig(png, dpi=110)
        plt.close(fig)
        lines += ["", f"![scaling]({png.relative_to(md_dir).as_posix()})"]
    except Exception as e:  # noqa: BLE001
        lines += ["", f"(plot failed: {e})"]
    return lines


def _synthetic_spec_of(cdir: Path):
    """The case's planted-rhythm spec (params.json's ``synthetic_spec``), or None for a real video."""
    import synthetic

    params = json.loads((cdir / "params.json").read_text()) if (cdir / "params.json").exists() else {}
    if "synthetic_spec" not in params:
        return None
    return synthetic.SyntheticSpec.from_json(json.dumps(params["synthetic_spec"]))


def _tca_fidelity(cdir: Path, ref_spec: Path) -> dict:
    """FMS of ours vs the reference and of the reference across seeds, and whole-model EVRs."""
    d = {}
    rtca, otca, rtca1 = cdir / "reference/tca.h5", cdir / "ours/tca_iso.h5", cdir / "reference/tca_seed1.h5"
    if not rtca.exists():
        return d
    fr_, wr = read_cp(rtca)
    d["tca_ref_model_evr"] = cp_model_evr(fr_, wr, ref_spec)
    if rtca1.exists():
        f1, w1 = read_cp(rtca1)
        d["tca_fms_ref_seed0_vs_seed1"] = factor_match_score(fr_, f1, wr, w1)[0]
    if otca.exists():
        fo, wo = read_cp(otca)
        fms, per = factor_match_score(fo, fr_, wo, wr)
        d["tca_fms_ours_vs_ref"] = fms
        d["tca_fms_ours_vs_ref_per_component_cos"] = per
        d["tca_ours_model_evr"] = cp_model_evr(fo, wo, ref_spec)
    return d


def _case_fidelity(out: Path, case: str) -> dict:
    """All fidelity measures of one case whose stage outputs exist (empty if none do)."""
    cdir = out / case
    d = {}
    rt, ot = cdir / "reference/tracking.h5", cdir / "ours/tracking.h5"
    if rt.exists() and ot.exists():
        d["tracking_ours_vs_ref"] = tracking_fidelity(read_tracking(ot), read_tracking(rt))
    spec = _synthetic_spec_of(cdir)
    if spec is not None:
        for impl, p in (("reference", rt), ("ours", ot)):
            if p.exists():
                d[f"tracking_{impl}_vs_truth"] = tracking_vs_truth(read_tracking(p), spec)
    rs, os_ = cdir / "reference/spectrograms.h5", cdir / "ours/spectrograms_iso.h5"
    if rs.exists() and os_.exists():
        d["spectrogram_ours_vs_ref"] = spectrogram_fidelity(read_spectrograms(os_), read_spectrograms(rs))
    d.update(_tca_fidelity(cdir, rs))
    if spec is not None:
        d["planted"] = planted_recovery(out, case, spec)
    return d


def _tracking_lines(d: dict) -> list[str]:
    """Report lines on tracking: ours vs the reference, and each against the planted truth."""
    lines = []
    t = d.get("tracking_ours_vs_ref")
    if t:
        lines.append(
            f"- tracking, ours vs reference: RMS difference {fmt(t['rms_diff_px'], 3)} px "
            f"(99th pct {fmt(t['p99_abs_diff_px'], 3)}, max {fmt(t['max_abs_diff_px'], 3)}); "
            f"median correlation of moving traces {fmt(t['median_r_moving'], 4)} "
            f"(10th pct {fmt(t['p10_r_moving'], 4)}, {t['n_traces_moving']} traces)"
        )
    for impl in ("reference", "ours"):
        t = d.get(f"tracking_{impl}_vs_truth")
        if t:
            regs = "; ".join(
                f"{k}: r {fmt(v['median_r'], 4)}, gain {fmt(v['median_gain'], 3)}, "
                f"RMS {fmt(v['rms_err_px'], 3)} px ({v['n_points']} pts)"
                for k, v in t.items()
                if isinstance(v, dict)
            )
            lines.append(f"- tracking, {impl} vs planted truth: RMS error {fmt(t['rms_err_px'], 3)} px; {regs}")
    return lines


def _spectrogram_and_tca_lines(d: dict) -> list[str]:
    """Report lines on the spectrograms' relative error and the TCA factor match."""
    lines = []
    s = d.get("spectrogram_ours_vs_ref")
    if s:
        if "error" in s:
            lines.append(f"- spectrograms: {s['error']} (ours {s['shape_ours']}, ref {s['shape_ref']})")
        else:
            lines.append(
                f"- spectrograms (same tracked input), ours vs reference: relative error "
                f"{fmt(s['rel_error'], 4)} (per frequency: median {fmt(s['rel_error_per_freq_median'], 4)}, "
                f"max {fmt(s['rel_error_per_freq_max'], 4)} at {fmt(s['worst_freq_hz'])} Hz); "
                f"correlation {fmt(s['corr'], 5)}; centre frequencies differ by at most "
                f"{s['freq_max_abs_diff_hz']:.2g} Hz"
            )
    if "tca_fms_ours_vs_ref" in d or "tca_fms_ref_seed0_vs_seed1" in d:
        lines.append(
            f"- TCA (same spectrograms, rank 10, seed 0): FMS ours vs reference "
            f"{fmt(d.get('tca_fms_ours_vs_ref'), 3)}; reference seed 0 vs seed 1 "
            f"{fmt(d.get('tca_fms_ref_seed0_vs_seed1'), 3)}; whole-model EVR ours "
            f"{fmt(d.get('tca_ours_model_evr'), 4)} vs reference {fmt(d.get('tca_ref_model_evr'), 4)}"
        )
    return lines


def _planted_lines(planted: dict) -> list[str]:
    """Report lines on each planted rhythm's recovery, per implementation."""
    lines = []
    for impl, regs in planted.items():
        for name, v in regs.items():
            s_ = (
                f"- planted {name} ({v['planted_hz']:g} Hz), {impl}: spectral peak {fmt(v['peak_hz'])} Hz "
                f"(vs static points: {fmt(v['peak_contrast_hz'])} Hz, contrast {fmt(v['contrast_at_planted'], 1)}x)"
            )
            if "tca_component" in v:
                s_ += (
                    f"; TCA component {v['tca_component']} peaks at {fmt(v['tca_peak_hz'])} Hz with "
                    f"{fmt(100 * v['tca_region_mass'], 0)} % of its spatial weight in the region "
                    f"(chance {fmt(100 * v['tca_region_mass_chance'], 0)} %)"
                )
                if v.get("tca_envelope_r") is not None:
                    s_ += f", temporal factor vs planted envelope r = {fmt(v['tca_envelope_r'], 3)}"
            lines.append(s_)
    return lines


def fidelity_section(out: Path, case_names) -> tuple[list[str], dict]:
    lines, data = [], {}
    for case in case_names:
        d = _case_fidelity(out, case)
        data[case] = d
        if not d:
            continue
        lines += [f"### {case}", ""]
        lines += _tracking_lines(d)
        lines += _spectrogram_and_tca_lines(d)
        pl = d.get("planted")
        if pl:
            lines += _planted_lines(pl)
        lines.append("")
    return lines, data


def _rss_by_length(results: list[dict], stage: str):
    """Ours' median peak RSS per video length -> {'lengths': [s], 'rss': [MB]}, or None."""
    pts = {}
    for r in results:
        if r["status"] != "ok" or r["impl"] != "ours" or r["stage"] != stage:
            continue
        if not (r["case"].startswith("scaling_") or r["case"].startswith("synthetic_")):
            continue
        if stage != "track" and r["variant"] != "chain":
            continue
        dur = float(r["case"].split("_")[1].rstrip("s"))
        pts.setdefault(dur, []).append(r["peak_rss_mb"])
    if len(pts) < 2:
        return None
    x = np.array(sorted(pts), dtype=float)
    y = np.array([statistics.median(pts[d]) for d in x])
    return dict(lengths=x.tolist(), rss=y.tolist())


def targets_section(summary: dict, results: list[dict]) -> list[str]:
    """The issues' targets next to what this run measured."""
    lines = [
        "| case | tracking frames/s (target >= 4x) | spectrogram (target >= 10x) | TCA | end to end | "
        "tracking peak RSS, ours / reference |",
        "|---|---|---|---|---|---|",
    ]
    for case in sorted({k[0] for k in summary}):

        def cell(stage):
            d = summary.get((case, stage))
            if not d or d.get("speedup_med") is None:
                return "n/a"
            return f"{fmt(d['speedup_min'])}x min-time / {fmt(d['speedup_med'])}x median"

        tr = summary.get((case, "track"), {})
        lines.append(
            f"| {case} | {cell('track')} | {cell('spectrogram')} | {cell('tca')} | {cell('e2e')} | "
            f"{fmt(tr.get('rss_ratio'))}x |"
        )
    ex = _rss_by_length(results, "track")
    if ex:
        lens = ", ".join(f"{int(a)} s: {fmt(b)} MB" for a, b in zip(ex["lengths"], ex["rss"]))
        lo, hi = min(ex["rss"]), max(ex["rss"])
        lines += [
            "",
            f"Tracking peak RSS against video length (ours, median over runs): {lens}; "
            f"spread {fmt(hi - lo)} MB ({fmt(100 * (hi - lo) / lo)} %) over a "
            f"{fmt(max(ex['lengths']) / min(ex['lengths']))}x range of lengths. Peak RSS is a "
            "high-water mark and varies by tens of MB between runs of one length; see the "
            "10-minute run below, if present, for a longer video. (The trajectory goes to the HDF5 "
            "file in blocks; memory holds a frame cache for rewinds, the decode queue and the "
            "libraries.)",
        ]
    return lines


def extra_sections(out: Path) -> list[str]:
    """Markdown fragments other benchmark scripts left in OUT (e.g. bench_vqt.py --md)."""
    lines = []
    for f in sorted(out.glob("extra_*.md")):
        lines += [f.read_text().rstrip(), ""]
    return lines


def _scaling_info(out: Path) -> dict:
    f = out / "run_info_scaling.json"
    return json.loads(f.read_text()) if f.exists() else {}


def write_markdown(out: Path, md: Path) -> None:
    results = load_results(out)
    info = json.loads((out / "run_info.json").read_text()) if (out / "run_info.json").exists() else {}
    case_names = sorted({r["case"] for r in results if not r["case"].startswith("scaling_")})
    speed, summary = speed_tables(results)
    fid, fid_data = fidelity_section(out, case_names)
    (out / "fidelity.json").write_text(json.dumps(fid_data, indent=2, default=float))
    m = info.get("machine", {})
    L = [
        "# Benchmarks: facerhythm vs face-rhythm 0.3.3",
        "",
        "Generated by `benchmarks/compare.py` from a run of `benchmarks/bench.py`. Not part of CI.",
        "",
        "## Machine and command",
        "",
        f"- machine: {m.get('cpu_model', '?')}, {m.get('cpus', '?')} CPUs, {m.get('mem_total_gb', '?')} GB RAM, "
        f"{m.get('platform', '?')}; load average at start {m.get('loadavg_start', '?')}",
        f"- ours: {json.dumps(m.get('ours_versions', {}))}",
        f"- reference: {json.dumps(m.get('reference_versions', {}))}",
        f"- command: `{shlex.join(info.get('argv', ['benchmarks/bench.py']))}` (started {info.get('started', '?')}; "
        f"{info.get('reps', '?')} repetition(s))",
        *(
            [
                f"- scaling runs: `{shlex.join(si.get('argv', []))}` (last started {si.get('started', '?')}; "
                "the track and the spectrogram/TCA scaling stages may come from separate invocations "
                "writing into the same folder)"
            ]
            if (si := _scaling_info(out))
            else []
        ),
        "- every stage runs in its own niced process; peak RSS is that process's VmHWM (high-water resident set, "
        "all threads; `ru_maxrss` from wait4 is kept in results.jsonl but counts the driver's RSS at fork); "
        "stage time is measured inside the process after the heavy imports (torch, cv2, the package) and "
        "includes reading inputs and writing outputs; process wall includes interpreter start and imports.",
        "- inputs are shared: tracking gets the same video, mask and seed points; the spectrogram stage of both "
        "gets the reference's tracking output; TCA of both gets the reference's spectrograms. \"ours (own input)\" "
        "rows run ours on its own upstream output; end to end = sum of process walls over the three stages, "
        "peak RSS = max over them.",
        "- parameters: the reference pipeline defaults (`util.get_default_parameters`), with Fs = the video's fps, "
        "F_max = min(60, 0.9 x Nyquist), F_min raised for the 994-frame clip, TCA seed 0 and std-over-time "
        "normalization (see benchmarks/cases.py). The machine is shared with other jobs: compare ratios, "
        "taken in the same run, rather than absolute times; process CPU time (user + sys, from wait4) is the "
        "least load-sensitive column.",
        "",
        "## Targets at a glance",
        "",
        *targets_section(summary, results),
        "",
        "## Speed and memory per stage",
        "",
        *speed,
        "",
        "## Physical limits of the tracking stage's parts",
        "",
        *limits_table(out, case_names),
        "",
        "## Fidelity",
        "",
        *fid,
        "",
        "## Scaling with video length (ours)",
        "",
        *scaling_section(out, results, md.parent),
        "",
        *extra_sections(out),
    ]
    md.write_text("\n".join(L))
    print(f"wrote {md}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(HERE / "out"))
    ap.add_argument("--md", default=str(REPO / "BENCHMARKS.md"))
    a = ap.parse_args(argv)
    write_markdown(Path(a.out).resolve(), Path(a.md).resolve())


if __name__ == "__main__":
    main()
