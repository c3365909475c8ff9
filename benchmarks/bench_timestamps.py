"""The probe's timestamp pass against a full decode, on long 640x480 videos.

    python benchmarks/bench_timestamps.py [--minutes 15,60] [--reps 3] [--out benchmarks/out/timestamps]

Makes constant-rate 640x480 30 fps H.264 videos of the given lengths (ffmpeg testsrc2,
cached in --out), then, alternating, in separate processes measured with ``wait4``:

- ``timestamps``: :func:`facerhythm_core.timing.read_container_timestamps` plus
  :func:`analyze_timestamps` (what the probe adds per video);
- ``decode``: every frame decoded to RGB by the tracker's reader
  (:func:`facerhythm_core.video.iter_frame_chunks`), the work the timestamp pass must
  not repeat.

Prints a Markdown table (best and median wall time, CPU, peak RSS, ratio) for
BENCHMARKS.md. Not a test: machines here are shared, read the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from measure import run_measured  # noqa: E402

CHILD = r"""
import json, sys, time
from facerhythm_core.timing import read_container_timestamps
from facerhythm_core.timing_check import analyze_timestamps
from facerhythm_core.video import iter_frame_chunks
kind, path = sys.argv[1], sys.argv[2]
t0 = time.perf_counter()
if kind == "timestamps":
    ct = read_container_timestamps(path)
    tm = analyze_timestamps(ct.times, ct.source, ct.n_frames_header, ct.duration_header, ct.header_rate)
    n = tm.n_frames_decodable
else:
    n = 0
    for _, fr in iter_frame_chunks(path, chunk_size=64, gray=False):
        n += len(fr)
print(json.dumps({"frames": n, "seconds": time.perf_counter() - t0}))
"""


def make_video(path: Path, minutes: float) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"testsrc2=size=640x480:rate=30:duration={minutes * 60}",
            "-pix_fmt",
            "yuv420p",
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "60",
            "-movflags",
            "+faststart",
            str(path),
        ],
        check=True,
    )


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", default="15,60")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--decode-reps", type=int, default=1)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "timestamps")
    args = ap.parse_args(argv)
    rows = []
    for minutes in [float(m) for m in args.minutes.split(",")]:
        video = args.out / f"testsrc2_640x480_30fps_{minutes:g}min.mp4"
        make_video(video, minutes)
        runs: dict[str, list] = {"timestamps": [], "decode": []}
        for rep in range(max(args.reps, args.decode_reps)):
            for kind, reps in (("timestamps", args.reps), ("decode", args.decode_reps)):
                if rep >= reps:
                    continue
                log = args.out / f"{kind}_{minutes:g}_{rep}.log"
                m = run_measured([sys.executable, "-c", CHILD, kind, str(video)], log_path=log, nice=0)
                if m.rc != 0:
                    raise SystemExit(f"{kind} failed:\n{log.read_text()[-2000:]}")
                out = json.loads(log.read_text().strip().splitlines()[-1])
                runs[kind].append(
                    {
                        "wall": m.wall_s,
                        "inner": out["seconds"],
                        "cpu": m.user_s + m.sys_s,
                        "rss": m.peak_rss_mb,
                        "frames": out["frames"],
                    }
                )
        for kind, rs in runs.items():
            rows.append((minutes, kind, rs))
    print("| video | pass | n | frames | time best / median (s) | CPU median (s) | peak RSS median (MB) |")
    print("|---|---|---|---|---|---|---|")
    best = {}
    for minutes, kind, rs in rows:
        t = [r["inner"] for r in rs]
        best[(minutes, kind)] = min(t)
        print(
            f"| {minutes:g} min 640x480 30 fps | {kind} | {len(rs)} | {rs[0]['frames']} | "
            f"{min(t):.2f} / {statistics.median(t):.2f} | {statistics.median(r['cpu'] for r in rs):.2f} | "
            f"{statistics.median(r['rss'] for r in rs):.0f} |"
        )
    print()
    for minutes in sorted({m for m, _, _ in rows}):
        print(
            f"- {minutes:g} min: timestamp pass {best[(minutes, 'timestamps')]:.2f} s = "
            f"{best[(minutes, 'timestamps')] / best[(minutes, 'decode')]:.1%} of a full decode "
            f"({best[(minutes, 'decode')]:.1f} s)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
