"""Atomic outputs and provenance records."""

import json

import h5py
import pytest

from facerhythm_core.io import atomic_output, read_provenance, write_provenance


def test_atomic_output_renames_on_success(tmp_path):
    target = tmp_path / "sub" / "out.h5"
    with atomic_output(target) as tmp:
        assert tmp.parent == target.parent and tmp.suffix == ".h5" and tmp != target
        tmp.write_text("x")
        assert not target.exists()
    assert target.read_text() == "x"
    assert list(target.parent.iterdir()) == [target]


def test_atomic_output_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_provenance_roundtrip(tmp_path):
    src = tmp_path / "in.bin"
    src.write_bytes(b"12345")
    p = tmp_path / "o.h5"
    with h5py.File(p, "w") as f:
        write_provenance(f, "stage_x", params={"a": 1, "b": [1, 2]}, inputs=[src])
    with h5py.File(p) as f:
        prov = read_provenance(f)
    assert prov["stage"] == "stage_x"
    assert prov["params"] == {"a": 1, "b": [1, 2]}
    assert prov["inputs"][0]["size"] == 5 and prov["inputs"][0]["path"].endswith("in.bin")
    assert "numpy" in prov["versions"] and "torch" in prov["versions"]


def test_atomic_output_removes_temps_of_killed_writers(tmp_path):
    import subprocess
    import sys

    target = tmp_path / "out.h5"
    # a writer that dies without cleaning up (as after kill -9)
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True
    )
    stale = tmp_path / f".out.tmp-{int(dead.stdout)}.h5"
    stale.write_text("half")
    with atomic_output(target) as tmp:
        tmp.write_text("whole")
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.h5"]


def test_cached_per_file_computes_once_per_file_version(tmp_path):
    from facerhythm_core.io import cached_per_file

    src, cache = tmp_path / "video.bin", tmp_path / "cache" / "counts.json"
    src.write_bytes(b"x" * 10)
    calls = []

    def count(path):
        calls.append(1)
        return path.stat().st_size

    assert cached_per_file([src], cache, count) == [10]
    assert cached_per_file([src], cache, count) == [10]
    assert len(calls) == 1, "an unchanged file is read back from the cache"
    src.write_bytes(b"x" * 25)  # a new size is a new key
    assert cached_per_file([src], cache, count) == [25] and len(calls) == 2
    cache.write_text("{not json")  # a damaged cache is recomputed and rewritten, not an error
    assert cached_per_file([src], cache, count) == [25] and len(calls) == 3
    assert json.loads(cache.read_text())  # rewritten whole
    assert not list(cache.parent.glob(".*")), "no temporary left behind"
    assert cached_per_file([src], None, count) == [25] and len(calls) == 4


def test_package_versions_equal_importlib_metadata():
    from importlib import metadata

    from facerhythm_core.io import PROVENANCE_PACKAGES, package_versions

    got = package_versions(PROVENANCE_PACKAGES + ("no-such-package-xyz",))
    assert got["no-such-package-xyz"] == "not installed"
    checked = 0
    for name in PROVENANCE_PACKAGES:
        try:
            expected = metadata.version(name)
        except metadata.PackageNotFoundError:
            expected = "not installed"
        assert got[name] == expected, name
        checked += expected != "not installed"
    assert checked >= 5  # numpy, torch, h5py, ... are installed wherever the tests run
