#!/usr/bin/env python3
"""Compare every HDF5 dataset of two results folders (provenance groups aside).

    python tools/compare_h5.py OLD_RESULTS NEW_RESULTS

For each ``*.h5`` under OLD: datasets that differ (``np.array_equal`` fails, NaN equal to
NaN), datasets only in OLD (removed: a break), datasets only in NEW (added). Exit
status 1 when a dataset differs or was removed. Used to show that a refactor or a new
feature leaves existing outputs unchanged.
"""

from __future__ import annotations

import sys
from pathlib import Path

import h5py
import numpy as np


def datasets(path: Path) -> dict:
    out = {}

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and not name.startswith("provenance"):
            out[name] = obj[()]

    with h5py.File(path, "r") as f:
        f.visititems(visit)
    return out


def equal(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    if a.dtype.kind in "fc":
        return bool(np.array_equal(a, b, equal_nan=True))
    return bool(np.array_equal(a, b))


def main(old: str, new: str) -> int:
    bad = 0
    for p in sorted(Path(old).rglob("*.h5")):
        q = Path(new) / p.relative_to(old)
        if not q.exists():
            print(f"MISSING {q}")
            bad += 1
            continue
        a, b = datasets(p), datasets(q)
        diff = [k for k in a if k in b and not equal(a[k], b[k])]
        removed = [k for k in a if k not in b]
        added = [k for k in b if k not in a]
        bad += len(diff) + len(removed)
        state = "equal" if not diff and not removed else "DIFFERENT"
        print(
            f"{state} {p.relative_to(old)}: {len(a) - len(diff) - len(removed)} of {len(a)} "
            f"datasets array_equal"
            + (f"; differ: {diff}" if diff else "")
            + (f"; removed: {removed}" if removed else "")
            + (f"; added: {added}" if added else "")
        )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
