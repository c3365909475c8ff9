"""Run a command in its own process and measure it: wall time, CPU time, peak RSS.

Peak RSS comes from ``os.wait4`` on that one child (``ru_maxrss``, the largest resident
set of the process, all threads), so a stage's number is not mixed with other stages'.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass
class Measurement:
    cmd: list[str]
    rc: int
    wall_s: float
    user_s: float
    sys_s: float
    peak_rss_mb: float
    metrics: dict | None = None  # what the child wrote to its --metrics JSON
    log: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def run_measured(
    cmd: list[str],
    metrics_path: Path | None = None,
    log_path: Path | None = None,
    nice: int = 10,
    env: dict | None = None,
    timeout_s: float | None = None,
) -> Measurement:
    """Run ``cmd`` (niced), wait for it with ``wait4``, and collect its metrics JSON."""
    if metrics_path is not None and Path(metrics_path).exists():
        Path(metrics_path).unlink()
    full_env = dict(os.environ)
    full_env.update(env or {})
    logf = open(log_path, "w") if log_path else subprocess.DEVNULL
    t0 = time.perf_counter()
    p = subprocess.Popen(
        cmd, stdout=logf, stderr=subprocess.STDOUT, env=full_env, preexec_fn=(lambda: os.nice(nice)) if nice else None
    )
    deadline = None if timeout_s is None else t0 + timeout_s
    while True:
        pid, status, ru = os.wait4(p.pid, os.WNOHANG)
        if pid:
            break
        if deadline is not None and time.perf_counter() > deadline:
            p.kill()
            pid, status, ru = os.wait4(p.pid, 0)
            break
        time.sleep(0.05)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if log_path:
        logf.close()
    metrics = None
    if metrics_path is not None and Path(metrics_path).exists():
        metrics = json.loads(Path(metrics_path).read_text())
    tail = ""
    if log_path and p.returncode != 0:
        tail = Path(log_path).read_text()[-3000:]
    return Measurement(
        cmd=[str(c) for c in cmd],
        rc=p.returncode,
        wall_s=wall,
        user_s=ru.ru_utime,
        sys_s=ru.ru_stime,
        peak_rss_mb=ru.ru_maxrss / 1024.0,
        metrics=metrics,
        log=tail,
    )
