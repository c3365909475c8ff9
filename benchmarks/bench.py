"""Benchmark driver: ours vs face-rhythm 0.3.3 on the same inputs, same parameters.

    .venv/bin/python benchmarks/bench.py               # full: 60 s synthetic + 2 real videos, 3 reps, scaling
    .venv/bin/python benchmarks/bench.py --smoke       # small: 8 s synthetic + 1 real clip, 1 rep, no scaling
                                                       # (to benchmarks/out/smoke/, leaves BENCHMARKS.md alone)

Each stage of each implementation runs in its own process (ours: .venv/bin/python
benchmarks/run_ours.py; reference: benchmarks/.venv-ref/bin/python benchmarks/run_reference.py),
niced, measured by measure.run_measured (wall, CPU, peak RSS of that process). Within a
repetition, the reference and our run of a stage are interleaved, so their ratio is
taken under the same machine load.

Stage inputs are shared so that per-stage numbers compare like with like:
- track: the same video, tracking mask and seed points (inputs.h5);
- spectrogram: the reference's tracking.h5 for both ("iso"); ours also runs on its own
  tracking ("chain", for end to end);
- tca: the reference's spectrograms.h5 for both ("iso"); ours also on its own chain.

Every measurement is appended to OUT/results.jsonl; compare.py turns that and the
output files into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(REPO))

import cases as cases_mod  # noqa: E402
from measure import run_measured  # noqa: E402

OURS_PY = REPO / ".venv" / "bin" / "python"
STAGE_TIMEOUT_S = 1800.0
REF_PY = HERE / ".venv-ref" / "bin" / "python"


def log(msg: str) -> None:
    print(time.strftime("%H:%M:%S"), msg, flush=True)


def record(out: Path, rec: dict) -> None:
    with open(out / "results.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")


def ours_config(case_dir: Path) -> Path:
    """The case's validated config for our stages, written once (Snakemake validates a
    run's config once, at DAG build, and hands each job its sections)."""
    from run_ours import write_config

    path = case_dir / "config_ours.json"
    params = case_dir / "params.json"
    if not path.exists() or path.stat().st_mtime < params.stat().st_mtime:
        write_config(params, path)
    return path


def stage_cmd(impl: str, stage: str, case_dir: Path, variant: str, seed_override=None):
    """Command line, metrics path and output path of one stage run.

    Files, per case: reference/{tracking,spectrograms,tca,tca_seed1}.h5;
    ours/tracking.h5, ours/spectrograms_{iso,chain}.h5, ours/tca_{iso,chain}.h5.
    """
    py, script = (REF_PY, HERE / "run_reference.py") if impl == "reference" else (OURS_PY, HERE / "run_ours.py")
    idir = case_dir / impl
    idir.mkdir(exist_ok=True)
    base = {"track": "tracking", "spectrogram": "spectrograms", "tca": "tca", "all": "all"}[stage]
    if stage == "track" or (impl == "reference" and variant == "iso"):
        name = base
    else:
        name = f"{base}_{variant}"
    out = idir / f"{name}.h5"
    metrics = idir / f"metrics_{name}.json"
    cmd = [
        str(py),
        str(script),
        stage,
        "--params",
        str(case_dir / "params.json"),
        "--out",
        str(out),
        "--metrics",
        str(metrics),
    ]
    if impl == "ours":
        cmd += ["--config", str(ours_config(case_dir))]
    chain = impl == "ours" and variant == "chain"
    if stage in ("track", "all"):
        cmd += ["--inputs", str(case_dir / "inputs.h5")]
    elif stage == "spectrogram":
        src = case_dir / ("ours/tracking.h5" if chain else "reference/tracking.h5")
        cmd += ["--tracking", str(src)]
    elif stage == "tca":
        src = case_dir / ("ours/spectrograms_chain.h5" if chain else "reference/spectrograms.h5")
        cmd += ["--spectrograms", str(src)]
    if seed_override is not None:
        cmd += ["--seed", str(seed_override)]
    return cmd, metrics, out


def run_stage(out: Path, case, impl: str, stage: str, variant: str, rep: int, **kw) -> dict | None:
    case_dir = out / case.name
    cmd, metrics, dst = stage_cmd(impl, stage, case_dir, variant, **kw)
    src = next((Path(cmd[i + 1]) for i, c in enumerate(cmd) if c in ("--tracking", "--spectrograms")), None)
    if src is not None and not src.exists():
        log(f"  {case.name:40s} {impl:9s} {stage:11s} {variant:6s} rep{rep}: skipped (no {src.relative_to(case_dir)})")
        return None
    logp = case_dir / impl / f"log_{stage}_{variant}.txt"
    # Snakemake deletes a job's old outputs before running it, so no stage there
    # overwrites a file: a repetition here should not either (ours replaced the
    # former file, ~6 ms to unlink a face case's spectrograms inside its clock)
    if dst.is_file():
        dst.unlink()
    load0 = os.getloadavg()[0]
    m = run_measured(cmd, metrics_path=metrics, log_path=logp, timeout_s=STAGE_TIMEOUT_S)
    status = "ok" if m.rc == 0 else ("missing" if m.rc == 3 else "timeout" if m.wall_s >= STAGE_TIMEOUT_S else "failed")
    # the child's own VmHWM when it reported one; else ru_maxrss from wait4
    rss = (m.metrics or {}).get("vmhwm_mb") or m.peak_rss_mb
    rec = dict(
        case=case.name,
        impl=impl,
        stage=stage,
        variant=variant,
        rep=rep,
        status=status,
        wall_s=m.wall_s,
        cpu_s=m.user_s + m.sys_s,
        peak_rss_mb=rss,
        ru_maxrss_mb=m.peak_rss_mb,
        metrics=m.metrics,
        output=str(dst),
        time=time.time(),
        load_start=load0,
        load_end=os.getloadavg()[0],
    )
    if status == "failed":
        rec["log_tail"] = m.log
    record(out, rec)
    t_stage = (m.metrics or {}).get("t_stage_s")
    log(
        f"  {case.name:40s} {impl:9s} {stage:11s} {variant:6s} rep{rep}: {status:7s} "
        f"wall {m.wall_s:7.1f} s (stage {t_stage if t_stage is None else round(t_stage, 1)} s), "
        f"peak RSS {rss:6.0f} MB"
    )
    return rec


def prepare_case(
    out: Path,
    kind: str,
    duration: float = 60.0,
    name: str | None = None,
    video: Path | None = None,
    threads: int = 0,
    n_videos: int | None = None,
):
    """Build a case's inputs in a child process (keeps this driver's RSS small: Linux
    counts the parent's RSS at fork into a child's ru_maxrss)."""
    cmd = [
        str(OURS_PY),
        str(HERE / "cases.py"),
        kind,
        "--out",
        str(out),
        "--duration",
        str(duration),
        "--threads",
        str(threads),
    ]
    if name:
        cmd += ["--name", name]
    if video is not None:
        cmd += ["--video", str(video)]
    if n_videos is not None:
        cmd += ["--n-videos", str(n_videos)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"preparing {kind} case failed:\n{p.stderr[-3000:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("CASE ")][-1]
    return cases_mod.case_from_json(line[5:])


def run_limits(out: Path, case) -> None:
    for impl, py in (("ours", OURS_PY), ("reference", REF_PY)):
        dst = out / case.name / f"limits_{impl}.json"
        if dst.exists():
            continue
        cmd = [
            str(py),
            str(HERE / "limits.py"),
            case.videos[0],
            "--points",
            str(out / case.name / "inputs.h5"),
            "--frames",
            "600",
            "--out",
            str(dst),
        ]
        if impl == "ours":
            cmd.append("--ours-reader")
        m = run_measured(cmd, log_path=out / case.name / f"log_limits_{impl}.txt")
        log(f"  limits {case.name} ({impl} env): rc {m.rc}")


def machine_info() -> dict:
    import os

    info = dict(
        platform=platform.platform(),
        python=platform.python_version(),
        cpus=os.cpu_count(),
        processor=platform.processor(),
    )
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu_model"] = line.split(":", 1)[1].strip()
                break
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                info["mem_total_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    try:
        info["loadavg_start"] = os.getloadavg()
    except OSError:
        pass
    for py, key in ((OURS_PY, "ours_versions"), (REF_PY, "reference_versions")):
        code = (
            "import json,importlib.metadata as m\n"
            "d={}\n"
            "for p in ['torch','torchcodec','numpy','scipy','tensorly','h5py','opencv-python-headless','opencv-contrib-python-headless','face-rhythm','vqt']:\n"
            "    try: d[p]=m.version(p)\n"
            "    except Exception: pass\n"
            "print(json.dumps(d))"
        )
        try:
            info[key] = json.loads(
                subprocess.run([str(py), "-c", code], capture_output=True, text=True, timeout=120).stdout
            )
        except Exception as e:  # noqa: BLE001 - informational only
            info[key] = {"error": str(e)}
    return info


def _parser() -> argparse.ArgumentParser:
    """Command line of the benchmark driver."""
    ap = argparse.ArgumentParser(description="ours vs face-rhythm 0.3.3 benchmark")
    ap.add_argument("--out", default=None, help="results folder (default benchmarks/out; smoke: benchmarks/out/smoke)")
    ap.add_argument("--smoke", action="store_true", help="8 s synthetic + the short real clip, 1 rep, no scaling")
    ap.add_argument("--reps", type=int, default=None)
    ap.add_argument(
        "--cases",
        default="synthetic,real",
        help="comma list: synthetic, real, face (2 x 1000 frames at 784x582), trials (--trial-videos x 1000 at 640x480)",
    )
    ap.add_argument("--trial-videos", type=int, default=40, help="videos of the trials case (issue 19 (a))")
    ap.add_argument("--duration", type=float, default=None, help="synthetic length in s (default 60; smoke 8)")
    ap.add_argument(
        "--scaling", default=None, help="synthetic lengths (s) for ours' scaling run, e.g. 15,60,240; '' = none"
    )
    ap.add_argument("--impls", default="reference,ours")
    ap.add_argument("--stages", default="track,spectrogram,tca")
    ap.add_argument(
        "--ref-one-process",
        action="store_true",
        help="also run the reference's three stages in one process per repetition (its pipeline's "
        "own end to end: one interpreter, one import, one seeding)",
    )
    ap.add_argument("--threads", type=int, default=0, help="torch threads in each stage (0 = library default)")
    ap.add_argument("--no-setup", action="store_true", help="do not (re)build benchmarks/.venv-ref")
    ap.add_argument("--no-report", action="store_true")
    ap.add_argument("--md", default=None, help="report to write (default BENCHMARKS.md; smoke: OUT/BENCHMARKS.md)")
    ap.add_argument("--stage-timeout", type=float, default=1800.0, help="kill a stage after this many s")
    return ap


def _prepare_cases(
    out: Path, want: set[str], duration: float, smoke: bool, threads: int, trial_videos: int = 40
) -> list:
    """Build the wanted cases' inputs: synthetic, the real videos (smoke: one short clip), face-sized,
    trial-structured (``trial_videos`` short videos)."""
    cases = []
    if "synthetic" in want:
        log(f"preparing synthetic case ({duration:g} s)")
        cases.append(prepare_case(out, "synthetic", duration=duration, threads=threads))
    if "real" in want:
        vids = sorted(cases_mod.REAL_VIDEOS.glob("*.mp4"))
        if smoke:
            vids = [v for v in vids if "lightning" in v.name][:1] or vids[:1]
        for v in vids:
            cases.append(prepare_case(out, "real", video=v, threads=threads))
    if "face" in want:
        log("preparing the face-sized case (2 x 1000 frames, 784x582, 120 fps)")
        cases.append(prepare_case(out, "face", threads=threads))
    if "trials" in want:
        log(f"preparing the trial case ({trial_videos} x 1000 frames, 640x480, 120 fps)")
        cases.append(prepare_case(out, "trials", threads=threads, n_videos=trial_videos))
    return cases


def _run_repetitions(
    out: Path, cases: list, reps: int, impls: list[str], stages: list[str], one_process: bool = False
) -> None:
    """Every stage of every case, per repetition: each implementation in turn, then ours on its own input."""
    for rep in range(reps):
        log(f"repetition {rep + 1}/{reps}")
        for c in cases:
            for stage in stages:
                for impl in impls:
                    run_stage(out, c, impl, stage, "iso", rep)
                if "ours" in impls and stage in ("spectrogram", "tca"):
                    # ours on its own upstream output, for end to end
                    run_stage(out, c, "ours", stage, "chain", rep)
            if one_process and "reference" in impls:
                # the reference's three stages in one process, as its pipeline runs them
                run_stage(out, c, "reference", "all", "one_process", rep)
            if rep == 0 and "reference" in impls and "tca" in stages:
                # seed-to-seed spread of the reference's own TCA: the yardstick for factor match
                run_stage(out, c, "reference", "tca", "seed1", rep, seed_override=1)


def _run_scaling(out: Path, scaling: str, stages: list[str], threads: int) -> None:
    """Ours alone, once, on synthetic cases of each length (s) in the comma list ``scaling``."""
    for dur in [float(s) for s in scaling.split(",") if s]:
        c = prepare_case(out, "synthetic", duration=dur, name=f"scaling_{int(dur)}s", threads=threads)
        log(f"scaling {c.name}")
        for stage in stages:
            run_stage(out, c, "ours", stage, "chain" if stage != "track" else "iso", 0)


def _compile_our_package() -> None:
    """Byte-compile facerhythm_core before timing it. pip compiled the reference at
    install; ours is an editable install, whose .pyc files a workflow run writes on its
    first import but a session with PYTHONDONTWRITEBYTECODE never does (each of our
    processes then compiled every module it imports, ~10-20 ms a process)."""
    import compileall

    compileall.compile_dir(str(REPO / "facerhythm_core"), quiet=1)


def main(argv=None):
    a = _parser().parse_args(argv)
    global STAGE_TIMEOUT_S
    STAGE_TIMEOUT_S = a.stage_timeout

    out = Path(a.out or (HERE / "out" / "smoke" if a.smoke else HERE / "out")).resolve()
    a.md = a.md or str(out / "BENCHMARKS.md" if a.smoke else REPO / "BENCHMARKS.md")
    out.mkdir(parents=True, exist_ok=True)
    reps = a.reps if a.reps is not None else (1 if a.smoke else 3)
    duration = a.duration if a.duration is not None else (8.0 if a.smoke else 60.0)
    scaling = a.scaling if a.scaling is not None else ("" if a.smoke else "15,60,240")
    impls = [s for s in a.impls.split(",") if s]
    stages = [s for s in a.stages.split(",") if s]

    if "reference" in impls and not a.no_setup:
        subprocess.run(["bash", str(HERE / "setup_reference_venv.sh")], check=True)
    _compile_our_package()

    run_info = dict(
        started=time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        argv=sys.argv,
        reps=reps,
        smoke=a.smoke,
        duration=duration,
        scaling=scaling,
        impls=impls,
        stages=stages,
        machine=machine_info(),
    )
    want = set(a.cases.split(",")) & {"synthetic", "real", "face", "trials"}
    # a scaling-only run adds to an existing report: keep the main run's run_info.json
    info_name = "run_info.json" if want else "run_info_scaling.json"
    (out / info_name).write_text(json.dumps(run_info, indent=2))

    cases = _prepare_cases(out, want, duration, a.smoke, a.threads, a.trial_videos)
    for c in cases:
        run_limits(out, c)
    _run_repetitions(out, cases, reps, impls, stages, one_process=a.ref_one_process)
    if scaling:
        _run_scaling(out, scaling, stages, a.threads)

    if not a.no_report:
        subprocess.run([str(OURS_PY), str(HERE / "compare.py"), "--out", str(out), "--md", a.md], check=False)


if __name__ == "__main__":
    main()
