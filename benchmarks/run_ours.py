"""Run one stage of OUR implementation (facerhythm) on benchmark inputs.

Runs under .venv/bin/python, one stage per process (the driver measures wall time and
peak RSS of this process). It calls the stage API (:mod:`facerhythm_core.stages`),
the same function each workflow rule's script calls, so what is measured is the
product as shipped, through the same file contract (docs/file_formats.md), without
Snakemake's own start-up cost.

    run_ours.py track        --params P.json --inputs inputs.h5 --out tracking.h5 --metrics m.json
    run_ours.py spectrogram  --params P.json --tracking tracking.h5 --out spectrograms.h5 --metrics m.json
    run_ours.py tca          --params P.json --spectrograms spectrograms.h5 --out tca.h5 --metrics m.json
"""

from __future__ import annotations

import argparse
import json
import os
import logging
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

STAGES = ("track", "spectrogram", "tca")


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


def full_config(params: dict) -> dict:
    """The case's sections with every other key at its schema default."""
    import yaml

    from facerhythm_core.config import validate_config

    schema = yaml.safe_load(SCHEMA.read_text())
    cfg = {k: dict(params[k]) for k in ("tracking", "spectrogram", "tca") if k in params}
    cfg["tracking"]["contiguous"] = bool(cfg["tracking"].get("contiguous") or False)
    cfg["device"] = "cpu"
    for sec in ("tracking", "spectrogram", "tca"):
        cfg[sec]["device"] = "cpu"
    return validate_config(cfg, schema, source="benchmark params")


def write_config(params_path: Path, out_path: Path) -> Path:
    """Validate ``params_path`` once (as Snakemake does at DAG build) and write the full
    config that each stage process then reads with ``--config``."""
    params = json.loads(Path(params_path).read_text())
    Path(out_path).write_text(json.dumps(full_config(params), indent=1))
    return Path(out_path)


def write_probe_outputs(info_path: Path, timestamps_path: Path, videos: list[str]) -> None:
    """``videos.json`` and ``timestamps.h5`` as the probe rule writes them (default policy)."""
    from facerhythm_core.timing import write_timestamps_h5
    from facerhythm_core.video import probe_session

    info = probe_session(list(videos), timing="resample")
    info_path.write_text(json.dumps(info.to_dict(), indent=1))
    write_timestamps_h5(
        timestamps_path,
        info.times,
        [v.path for v in info.videos],
        [v.clock for v in info.videos],
        [v.timing["source"] for v in info.videos],
    )


def tracking_counts(f) -> dict:
    """Frames, points, rewinds and frames processed (replays included) from our tracking.h5."""
    keys = list(f["points_tracked"])
    out = dict(
        n_frames=int(sum(f[f"points_tracked/{k}"].shape[0] for k in keys)), n_points=int(f["point_positions"].shape[0])
    )
    try:
        out["rewinds"] = int(sum(int(f[f"violations/{k}"].attrs.get("n_rewinds", 0)) for k in keys))
        out["frames_processed"] = int(
            sum(int(f[f"points_tracked/{k}"].attrs.get("n_frames_processed", 0)) for k in keys)
        )
    except KeyError:
        pass
    return out


def prepare(stage: str, a, params: dict, cfg: dict, work: Path):
    """The stage call, ready to run; for tracking, the probe rule's outputs are written
    first (inside the clock: a workflow run probes every session)."""
    from facerhythm_core import stages

    session = params.get("session", "bench")
    if stage == "track":
        vj, ts = work / "videos.json", work / "timestamps.h5"
        write_probe_outputs(vj, ts, params["videos"])
        return lambda: stages.track_points(
            a.inputs,
            vj,
            ts,
            list(params["videos"]),
            a.out,
            session=session,
            params={"tracking": cfg["tracking"], "video": cfg["video"]},
        )
    if stage == "spectrogram":
        return lambda: stages.spectrogram(a.tracking, a.out, session=session, params=cfg["spectrogram"])
    return lambda: stages.tca(a.spectrograms, a.out, session=session, params=cfg["tca"])


#: libraries each stage's workflow script ends up importing; loaded before the clock
#: starts, as run_reference.py does. No process loads torch here: tracking never does;
#: on the CPU, TCA runs the numpy HALS engine and the spectrogram stage the numba VQT
#: engine, whose module loads numba and its compiled kernel when imported (numba's
#: one-time set-up, ~0.5 s; the job's process wall includes it).
STAGE_IMPORTS = {
    "track": ("h5py", "numpy", "cv2", "av", "facerhythm_core.tracking_session"),
    "spectrogram": ("h5py", "numpy", "facerhythm_core.spectrogram", "facerhythm_core.vqt_numba"),
    "tca": ("h5py", "numpy", "facerhythm_core.tca"),
}


def preload_like_the_script(stage: str, threads: int) -> None:
    """Import what the stage's workflow script imports, and limit threads as it does
    (``threads`` 0: the libraries' defaults, as a rule given all cores)."""
    import importlib

    from facerhythm_core import stages  # noqa: F401 - every script's one import
    from facerhythm_core.runtime import limit_threads

    for name in STAGE_IMPORTS[stage]:
        importlib.import_module(name)
    if threads:
        limit_threads(threads)
    if stage == "spectrogram":  # as workflow/scripts/spectrogram.py
        from facerhythm_core.runtime import tune_heap

        tune_heap()


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run one facerhythm stage (ours) through the stage API.")
    ap.add_argument("stage", choices=STAGES)
    ap.add_argument("--params", required=True)
    ap.add_argument("--inputs")
    ap.add_argument("--tracking")
    ap.add_argument("--spectrograms")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--seed", type=int, default=None, help="override tca.random_state")
    ap.add_argument(
        "--config",
        help="the validated config (JSON, write_config's output), as Snakemake hands it to a job; "
        "without it the config is made from --params here, before the clock starts",
    )
    a = ap.parse_args(argv)
    params = json.loads(Path(a.params).read_text())

    sys.path.insert(0, str(REPO))
    preload_like_the_script(a.stage, int(params.get("threads") or 0))

    work = Path(a.out).parent / f"work_{Path(a.out).stem}"
    work.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        filename=str(work / f"{a.stage}.log"),
        filemode="w",
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # a workflow job gets its config validated by Snakemake (once per run, in the main
    # process), so validation is not part of the stage
    cfg = json.loads(Path(a.config).read_text()) if a.config else full_config(params)
    if a.seed is not None:
        cfg["tca"]["random_state"] = a.seed
    t0 = time.perf_counter()
    run = prepare(a.stage, a, params, cfg, work)
    tc0 = time.perf_counter()
    run()
    t1 = time.perf_counter()

    extra = {}
    try:
        import h5py as _h5

        with _h5.File(a.out, "r") as f:
            if a.stage == "track":
                extra = tracking_counts(f)
            elif a.stage == "spectrogram":
                keys = list(f["spectrograms"])
                extra = dict(shapes={k: list(f[f"spectrograms/{k}"].shape) for k in keys})
                with _h5.File(a.tracking, "r") as ft:
                    extra.update(
                        n_samples=int(sum(ft[f"points_tracked/{k}"].shape[0] for k in ft["points_tracked"])),
                        n_channels=int(2 * ft["point_positions"].shape[0]),
                    )
            elif a.stage == "tca":
                g = f["decompositions"]
                names = list(g)
                extra = dict(
                    n_iter_max=int(params["tca"]["n_iter_max"]),
                    rank=int(params["tca"]["rank"]),
                    n_iter_run=int(g[names[-1]].attrs["n_iter"]),
                    tensor_shapes={
                        n: [int(g[n]["fitted"][str(i)].shape[0]) for i in range(len(g[n]["fitted"]))] for n in names
                    },
                    final_rec_error=float(g[names[-1]]["errors"][-1]) if len(g[names[-1]]["errors"]) else None,
                    engine=str(g[names[-1]].attrs.get("engine", "")),
                )
    except Exception as e:  # noqa: BLE001 - metrics are best effort
        extra = dict(inspect_error=f"{type(e).__name__}: {e}")
    d = dict(
        impl="ours",
        stage=a.stage,
        t_stage_s=t1 - t0,
        t_compute_s=t1 - tc0,
        vmhwm_mb=_peak_rss_mb(),
        pid=os.getpid(),
        **extra,
    )
    Path(a.metrics).write_text(json.dumps(d, indent=2))
    print(f"ours {a.stage}: {t1 - t0:.2f} s, peak RSS {d['vmhwm_mb']:.0f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
