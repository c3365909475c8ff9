#!/usr/bin/env python
"""Peak resident memory of a process and all its descendants (Linux, reads /proc).

Usable from tests (``TreeRSSSampler``) and by hand::

    tools/peak_rss.py [--interval 0.2] -- snakemake -j2 results/m1/tca.h5

prints the command's exit status and the peak of the summed VmRSS of the process tree,
sampled every ``--interval`` seconds. The sum counts pages shared between processes
(libraries, forked copy-on-write memory) once per process, so it overstates the machine's
real use: an upper bound, which is what a memory budget wants. No psutil needed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

PROC = Path("/proc")


def _ppid_map() -> dict[int, int]:
    """pid -> parent pid for every process visible in /proc."""
    out = {}
    for d in os.listdir(PROC):
        if not d.isdigit():
            continue
        try:
            stat = (PROC / d / "stat").read_text()
        except OSError:  # exited between listdir and read
            continue
        # the command name (field 2) may hold spaces and parentheses: split after the last ')'
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(d)] = int(fields[1])
    return out


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it, from one scan of /proc/*/stat."""
    children: dict[int, list[int]] = {}
    for p, pp in _ppid_map().items():
        children.setdefault(pp, []).append(p)
    tree, todo = [], [pid]
    while todo:
        p = todo.pop()
        tree.append(p)
        todo.extend(children.get(p, ()))
    return tree


def rss_kb(pid: int) -> int:
    """VmRSS of one process in KiB (0 if it exited or is a zombie)."""
    try:
        for line in (PROC / str(pid) / "status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


def tree_rss(pid: int) -> dict[int, int]:
    """VmRSS (KiB) of ``pid`` and of each of its descendants, by pid."""
    return {p: rss_kb(p) for p in descendants(pid)}


def tree_rss_kb(pid: int) -> tuple[int, int]:
    """Summed VmRSS (KiB) of ``pid`` and its descendants, and how many processes that is."""
    rss = tree_rss(pid)
    return sum(rss.values()), len(rss)


def command_name(pid: int) -> str:
    """Short description of a process: its script or program name ('' if it exited)."""
    try:
        argv = (PROC / str(pid) / "cmdline").read_bytes().split(b"\0")
    except OSError:
        return ""
    args = [a.decode(errors="replace") for a in argv if a]
    if len(args) > 1 and Path(args[0]).name.startswith("python"):
        # for `python script.py ...` or `python -m module` the script says more
        if args[1] == "-m" and len(args) > 2:
            return args[2]
        if not args[1].startswith("-"):
            return Path(args[1]).name
    return Path(args[0]).name if args else ""


class TreeRSSSampler:
    """Sample a process tree's summed RSS in a background thread and keep the peak.

    Parameters
    ----------
    pid : int
        Root of the tree (e.g. ``Popen.pid``).
    interval : float
        Seconds between samples.

    Attributes
    ----------
    peak_kb : int
        Highest summed VmRSS seen, KiB.
    peak_procs : int
        Number of processes in the tree at that sample.
    peak_detail : list of (str, float)
        (command name, RSS in MB) of each process at that sample, largest first.
    n_samples : int
        Samples taken.
    """

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid, self.interval = pid, interval
        self.peak_kb = self.peak_procs = self.n_samples = 0
        self.peak_detail: list[tuple[str, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            rss = tree_rss(self.pid)
            kb = sum(rss.values())
            self.n_samples += 1
            if kb > self.peak_kb:
                self.peak_kb, self.peak_procs = kb, len(rss)
                self.peak_detail = sorted(((command_name(p), v / 1024) for p, v in rss.items()), key=lambda d: -d[1])
            self._stop.wait(self.interval)

    @property
    def peak_mb(self) -> float:
        return self.peak_kb / 1024

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        return False


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--interval", type=float, default=0.2, help="seconds between samples")
    ap.add_argument("command", nargs=argparse.REMAINDER, help="command to run (after --)")
    a = ap.parse_args(argv)
    cmd = a.command[1:] if a.command[:1] == ["--"] else a.command
    if not cmd:
        ap.error("no command given")
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd)
    with TreeRSSSampler(proc.pid, a.interval) as s:
        rc = proc.wait()
    print(
        f"peak_rss: exit {rc}, peak process-tree RSS {s.peak_mb:.0f} MB "
        f"({s.peak_procs} processes), {s.n_samples} samples over {time.monotonic() - t0:.1f} s",
        file=sys.stderr,
    )
    for name, mb in s.peak_detail:
        print(f"  {mb:8.0f} MB  {name}", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
