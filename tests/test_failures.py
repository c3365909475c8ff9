"""Whole errors and root causes: written by the scripts' exception hook, read back for the summary."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from facerhythm_core.errors import ConfigError, VideoError
from facerhythm_core.failures import Failure, describe_exception, error_in_log, exception_chain, system_error

REPO = Path(__file__).resolve().parents[1]
DEV_FULL = Path("/dev/full")  # every write fails with ENOSPC, as on a full disk
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="needs Linux /dev/full")


def _hdf5_on_full_disk() -> OSError:
    import h5py

    try:
        h5py.File(DEV_FULL, "w")
    except OSError as exc:
        return exc
    raise AssertionError("writing HDF5 to /dev/full did not fail")


@needs_dev_full
def test_hdf5_full_disk_root_cause_is_below_the_first_line():
    exc = _hdf5_on_full_disk()
    first_line = str(exc).splitlines()[0]
    assert "No space left on device" not in first_line  # what the summary used to show
    text = describe_exception(exc)
    assert text.startswith(f"OSError: {first_line}")
    assert text.splitlines()[-1] == "root cause: No space left on device (errno 28, ENOSPC)"


@needs_dev_full
def test_root_cause_through_a_chain_of_exceptions():
    try:
        try:
            _raise(_hdf5_on_full_disk())
        except OSError:
            raise RuntimeError("Can't decrement id ref count")  # raised while handling
    except RuntimeError as exc:
        chained = exc
    assert [type(e) for e in exception_chain(chained)] == [RuntimeError, OSError]
    assert system_error(chained) == "No space left on device (errno 28, ENOSPC)"
    assert describe_exception(chained) == (
        "RuntimeError: Can't decrement id ref count\nroot cause: No space left on device (errno 28, ENOSPC)"
    )


def _raise(exc):
    raise exc


def test_no_root_cause_line_when_the_message_says_it():
    try:
        try:
            raise RuntimeError("moov atom not found")
        except RuntimeError as inner:
            raise VideoError("cannot decode video a.mp4: moov atom not found") from inner
    except VideoError as exc:
        assert describe_exception(exc) == "VideoError: cannot decode video a.mp4: moov atom not found"
    try:
        try:
            raise KeyError("frame_rate")
        except KeyError:
            raise ConfigError("tracking.h5 lacks attributes") from None  # context suppressed
    except ConfigError as exc:
        assert exception_chain(exc) == [exc]
        assert describe_exception(exc) == "ConfigError: tracking.h5 lacks attributes"
    assert describe_exception(OSError(28, "No space left on device")) == "OSError: [Errno 28] No space left on device"


def _failing_job(tmp_path, body: str) -> Path:
    """Run ``body`` as a workflow script would (real runtime.setup_logging); return its log."""
    log = tmp_path / "logs" / "track_points" / "m1.log"
    script = tmp_path / "job.py"
    script.write_text(
        textwrap.dedent(f"""
        import sys
        from types import SimpleNamespace
        from facerhythm_core.runtime import setup_logging
        snakemake = SimpleNamespace(log=[{str(log)!r}], rule="track_points", wildcards={{"session": "m1"}})
        log = setup_logging(snakemake)
        log.info("tracking")
    """)
        + textwrap.dedent(body)
    )
    r = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)}
    )
    assert r.returncode != 0, r.stderr
    return log


@needs_dev_full
def test_summary_reads_the_whole_error_and_root_cause_back_from_a_job_log(tmp_path):
    log = _failing_job(
        tmp_path,
        """
        import h5py
        try:
            h5py.File("/dev/full", "w")
        except OSError:
            raise RuntimeError("Can't decrement id ref count")
    """,
    )
    f = error_in_log(log)
    assert f == Failure("RuntimeError: Can't decrement id ref count", "No space left on device (errno 28, ENOSPC)")
    cell = f.one_line()
    assert cell == (
        "RuntimeError: Can't decrement id ref count; root cause: No space left on device (errno 28, ENOSPC)"
    )


def test_summary_keeps_every_line_of_a_message(tmp_path):
    log = _failing_job(
        tmp_path,
        """
        from facerhythm_core.errors import SpectrogramError
        raise SpectrogramError("session m1: video 1 is too short\\nfix: use padding same")
    """,
    )
    f = error_in_log(log)
    assert f.message == "SpectrogramError: session m1: video 1 is too short\nfix: use padding same"
    assert f.root_cause is None
    assert "\t" not in f.one_line() and "\n" not in f.one_line()
    assert f.one_line().endswith("too short fix: use padding same")


def test_log_without_error_reads_as_none(tmp_path):
    log = tmp_path / "ok.log"
    log.write_text("2024-05-01 12:00:00,000 INFO facerhythm.tca: Errors fell below tol\n")
    assert error_in_log(log) is None
    assert error_in_log(tmp_path / "missing.log") is None


def test_limit_threads_limits_libraries_loaded_later_without_loading_them():
    prog = (
        "import sys\n"
        "from facerhythm_core.runtime import limit_threads, numpy_blas_threads\n"
        "limit_threads(1)\n"
        "loaded = [m for m in ('torch', 'cv2') if m in sys.modules]\n"
        "import cv2, torch\n"
        "print(loaded, torch.get_num_threads(), cv2.getNumThreads(), numpy_blas_threads())\n"
    )
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENCV_FOR_THREADS_NUM", "OPENBLAS_NUM_THREADS")
    }
    out = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=env, check=True).stdout
    assert out.split() == ["[]", "1", "1", "1"], out
    if (os.cpu_count() or 1) > 1:  # and the libraries' own defaults without it
        base = prog.replace("limit_threads(1)\n", "")
        out = subprocess.run([sys.executable, "-c", base], capture_output=True, text=True, env=env, check=True).stdout
        assert out.split()[1:] != ["1", "1", "1"], out
