"""Run one stage of OUR implementation (facerhythm) on benchmark inputs.

Runs under .venv/bin/python, one stage per process (the driver measures wall time and
peak RSS of this process). It runs the workflow's own stage scripts
(workflow/scripts/{track_points,spectrogram,tca}.py) exactly as Snakemake would, with a
stand-in ``snakemake`` object carrying input/output/params/log/threads. So what is
measured is the product as shipped, through the same file contract (formats.md),
without Snakemake's own start-up cost.

    run_ours.py track        --params P.json --inputs inputs.h5 --out tracking.h5 --metrics m.json
    run_ours.py spectrogram  --params P.json --tracking tracking.h5 --out spectrograms.h5 --metrics m.json
    run_ours.py tca          --params P.json --spectrograms spectrograms.h5 --out tca.h5 --metrics m.json

Exit code 3 = that stage's script does not exist yet (reported as "missing").
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import runpy
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SCRIPTS = REPO / "workflow" / "scripts"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"

STAGE_SCRIPTS = {"track": "track_points.py", "spectrogram": "spectrogram.py", "tca": "tca.py"}
RULES = {"track": "track_points", "spectrogram": "spectrogram", "tca": "tca"}


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


class _NamedList(list):
    """Enough of snakemake.io.Namedlist: positional and attribute access, .get, .keys."""

    def __init__(self, items=(), **named):
        super().__init__(list(items) + [v for v in named.values() if v is not None and not isinstance(v, (list, tuple))])
        self._named = dict(named)
        # lists (e.g. videos) stay as lists under their name, as Snakemake does
        for k, v in named.items():
            setattr(self, k, v)

    def get(self, key, default=None):
        v = self._named.get(key, default)
        return default if v is None else v

    def keys(self):
        return self._named.keys()

    def items(self):
        return self._named.items()

    def __getitem__(self, i):
        if isinstance(i, str):
            return self._named[i]
        return super().__getitem__(i)


class _Snakemake:
    def __init__(self, rule, input, output, params, log, threads, wildcards):
        self.rule = rule
        self.input = input
        self.output = _NamedList(output)
        self.params = params
        self.log = _NamedList(log)
        self.threads = threads
        self.wildcards = wildcards
        self.config = {}
        self.resources = _NamedList()


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


def write_videos_json(path: Path, videos: list[str]) -> None:
    from facerhythm_core.video import probe_session

    info = probe_session(list(videos))
    path.write_text(json.dumps(info.to_dict(), indent=1))


def tracking_counts(f) -> dict:
    """Frames, points, rewinds and frames processed (replays included) from our tracking.h5."""
    keys = list(f["points_tracked"])
    out = dict(n_frames=int(sum(f[f"points_tracked/{k}"].shape[0] for k in keys)),
               n_points=int(f["point_positions"].shape[0]))
    try:
        out["rewinds"] = int(sum(int(f[f"violations/{k}"].attrs.get("n_rewinds", 0)) for k in keys))
        out["frames_processed"] = int(sum(int(f[f"points_tracked/{k}"].attrs.get("n_frames_processed", 0))
                                          for k in keys))
    except KeyError:
        pass
    return out


def build(stage: str, a, params: dict, work: Path):
    cfg = full_config(params)
    wc = _NamedList(session=params.get("session", "bench"))
    log = [str(work / f"{RULES[stage]}.log")]
    threads = int(params.get("threads") or os.cpu_count() or 1)
    if stage == "track":
        vj = work / "videos.json"
        write_videos_json(vj, params["videos"])
        inp = _NamedList(rois=a.inputs, videos_info=str(vj), videos=list(params["videos"]))
        prm = _NamedList(tracking=cfg["tracking"], video=cfg["video"])
    elif stage == "spectrogram":
        inp = _NamedList(tracking=a.tracking)
        prm = _NamedList(spectrogram=cfg["spectrogram"], session=wc.session)
    else:
        inp = _NamedList(spectrograms=a.spectrograms)
        prm = _NamedList(tca=cfg["tca"], session=wc.session)
    return _Snakemake(RULES[stage], inp, [a.out], prm, log, threads, wc)


def main(argv=None):
    ap = argparse.ArgumentParser(description="Run one facerhythm stage (ours) as its workflow script.")
    ap.add_argument("stage", choices=sorted(STAGE_SCRIPTS))
    ap.add_argument("--params", required=True)
    ap.add_argument("--inputs")
    ap.add_argument("--tracking")
    ap.add_argument("--spectrograms")
    ap.add_argument("--out", required=True)
    ap.add_argument("--metrics", required=True)
    ap.add_argument("--seed", type=int, default=None, help="override tca.random_state")
    a = ap.parse_args(argv)
    script = SCRIPTS / STAGE_SCRIPTS[a.stage]
    if not script.exists():
        print(f"ours {a.stage}: {script} does not exist yet", file=sys.stderr)
        sys.exit(3)
    params = json.loads(Path(a.params).read_text())
    if a.seed is not None:
        params["tca"]["random_state"] = a.seed

    sys.path.insert(0, str(REPO))
    sys.path.insert(0, str(SCRIPTS))
    # import the heavy libraries before the clock starts, as run_reference.py does
    import h5py  # noqa: F401
    import numpy  # noqa: F401
    import torch  # noqa: F401
    import cv2  # noqa: F401
    import facerhythm_core  # noqa: F401

    work = Path(a.out).parent / f"work_{Path(a.out).stem}"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    smk = build(a.stage, a, params, work)
    tc0 = time.perf_counter()
    runpy.run_path(str(script), init_globals={"snakemake": smk}, run_name="__main__")
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
                    extra.update(n_samples=int(sum(ft[f"points_tracked/{k}"].shape[0] for k in ft["points_tracked"])),
                                 n_channels=int(2 * ft["point_positions"].shape[0]))
            elif a.stage == "tca":
                g = f["decompositions"]
                names = list(g)
                extra = dict(n_iter_max=int(params["tca"]["n_iter_max"]), rank=int(params["tca"]["rank"]),
                             n_iter_run=int(g[names[-1]].attrs["n_iter"]),
                             tensor_shapes={n: [int(g[n]["fitted"][str(i)].shape[0]) for i in range(len(g[n]["fitted"]))]
                                            for n in names},
                             final_rec_error=float(g[names[-1]]["errors"][-1]) if len(g[names[-1]]["errors"]) else None,
                             engine=str(g[names[-1]].attrs.get("engine", "")))
    except Exception as e:  # noqa: BLE001 - metrics are best effort
        extra = dict(inspect_error=f"{type(e).__name__}: {e}")
    d = dict(impl="ours", stage=a.stage, t_stage_s=t1 - t0, t_compute_s=t1 - tc0,
             vmhwm_mb=_peak_rss_mb(),
             pid=os.getpid(), **extra)
    Path(a.metrics).write_text(json.dumps(d, indent=2))
    print(f"ours {a.stage}: {t1 - t0:.2f} s, peak RSS {d['vmhwm_mb']:.0f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
