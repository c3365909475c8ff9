"""What every workflow script does first: log into the rule's log file, limit threads,
stop when orphaned.

Scripts import this from the installed package (``from facerhythm_core.runtime import
setup_logging``); nothing relies on where the script file lies, so the same scripts run
from a clone, from a Snakemake module (local, git or remote source) and in a rule's conda
environment.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path

from facerhythm_core.failures import describe_exception


def setup_logging(snakemake, name: str | None = None) -> logging.Logger:
    """Send logging, warnings and uncaught exceptions to ``snakemake.log[0]``.

    An uncaught exception is logged with its whole message and root cause
    (:func:`facerhythm_core.failures.describe_exception`) and its traceback.

    Returns the script's logger. Messages also go to stderr so that a local run shows
    progress live.
    """
    log_path = snakemake.log[0] if len(snakemake.log) else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(
        level=logging.INFO, handlers=handlers, force=True, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    logger = logging.getLogger(name or f"facerhythm.{snakemake.rule}")

    def _excepthook(exc_type, exc, tb):
        # the whole message and its root cause: the run summary reads them back from here
        logger.error(
            "%s failed for %s: %s",
            snakemake.rule,
            dict(snakemake.wildcards),
            describe_exception(exc),
            exc_info=(exc_type, exc, tb),
        )

    def _unraisablehook(unraisable):
        # errors Python can only ignore (e.g. HDF5 failing to close a file on a full disk)
        # would go to stderr alone; a crash may follow before any other record
        logger.warning(
            "%s in %r: %s",
            unraisable.err_msg or "Exception ignored",
            unraisable.object,
            describe_exception(unraisable.exc_value) if unraisable.exc_value is not None else unraisable.exc_type,
        )

    sys.excepthook = _excepthook
    sys.unraisablehook = _unraisablehook
    stop_when_orphaned(logger)
    return logger


#: seconds between checks that the Snakemake process that started the job is still there
ORPHAN_CHECK_S = 1.0


def stop_when_orphaned(logger: logging.Logger, interval: float = ORPHAN_CHECK_S) -> None:
    """Stop this job soon after the Snakemake process that started it dies (e.g. ``kill -9``).

    An orphaned job would run on unseen, hold CPU and memory, and rename its output into
    place while a restarted Snakemake may be redoing the same job. A daemon thread
    checks the parent process every ``interval`` seconds; once it is gone (the job was
    re-parented), it logs why and exits at once. Outputs are written under temporary
    names (:func:`facerhythm_core.io.atomic_output`), so nothing half-written is left
    under a final name, and the next run removes the temporary file.
    """
    parent = os.getppid()
    if parent <= 1:  # already orphaned, or started by init: nothing to watch
        return

    def watch():
        while os.getppid() == parent:
            time.sleep(interval)
        logger.error(
            "the Snakemake process that started this job (pid %d) is gone; stopping "
            "this job. Resume with `snakemake --unlock`, then the same command with "
            "--rerun-incomplete",
            parent,
        )
        logging.shutdown()
        os._exit(1)

    threading.Thread(target=watch, name="stop-when-orphaned", daemon=True).start()


#: what OpenMP (torch), MKL, OpenBLAS and OpenCV read for their thread counts when they load
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OPENCV_FOR_THREADS_NUM")


def limit_threads(n: int) -> None:
    """Limit OpenCV, torch and numpy's BLAS to the ``n`` threads the rule was given.

    Libraries not loaded yet are limited through the environment variables they read
    when they load (:data:`THREAD_ENV`), so a script imports nothing it does not use:
    torch alone is ~1 s and ~0.4 GB of a job, OpenCV ~0.15 s. Those already loaded are
    limited directly.
    """
    n = max(1, int(n))
    for var in THREAD_ENV:
        os.environ[var] = str(n)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(n)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(n)
    numpy_blas_threads(n)


def cpu_threads() -> int:
    """Threads this job may use: the CPUs it may run on (``sched_getaffinity``, which
    SLURM's cgroup sets), at most ``OMP_NUM_THREADS`` where set (as :func:`limit_threads`
    does with the rule's ``threads``)."""
    try:
        n = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        n = os.cpu_count() or 1
    try:
        n = min(n, int(os.environ.get("OMP_NUM_THREADS", "")))
    except ValueError:
        pass
    return max(1, n)


def numpy_blas_threads(n: int | None = None) -> int | None:
    """The thread count of numpy's bundled OpenBLAS; with ``n``, set it first.

    Returns None where numpy is not loaded or uses another BLAS (e.g. a conda numpy on
    MKL, which reads ``MKL_NUM_THREADS``).
    """
    lib = _numpy_openblas()
    if lib is None:
        return None
    get, set_ = lib
    if n is not None:
        set_(max(1, int(n)))
    return int(get())


_OPENBLAS: list = []
_OPENBLAS_SYMBOLS = (
    ("scipy_openblas_get_num_threads64_", "scipy_openblas_set_num_threads64_"),
    ("openblas_get_num_threads64_", "openblas_set_num_threads64_"),
    ("openblas_get_num_threads", "openblas_set_num_threads"),
)


def _numpy_openblas():
    """(get, set) thread functions of the OpenBLAS in numpy's wheel (``numpy.libs``), or None."""
    if "numpy" not in sys.modules:
        return None
    if not _OPENBLAS:
        import ctypes

        found = None
        libs = Path(sys.modules["numpy"].__file__).resolve().parent.parent / "numpy.libs"
        for path in sorted(libs.glob("*openblas*.so*")) if libs.is_dir() else ():
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                continue
            for get, set_ in _OPENBLAS_SYMBOLS:
                if hasattr(lib, get) and hasattr(lib, set_):
                    found = (getattr(lib, get), getattr(lib, set_))
                    break
            if found:
                break
        _OPENBLAS.append(found)
    return _OPENBLAS[0]


def tune_heap(mmap_threshold: int = 16 * 2**20, trim_threshold: int = 64 * 2**20) -> bool:
    """Fix glibc malloc's mmap and trim thresholds for this process (a job's first step).

    glibc serves blocks above 128 KB with fresh ``mmap`` calls and raises that threshold
    only as such blocks are freed, so a job that allocates and frees buffers of a few MB
    over and over (the VQT's FFT batches) keeps faulting in new pages early on. Fixed
    thresholds keep blocks below ``mmap_threshold`` in the heap from the start, and the
    heap keeps up to ``trim_threshold`` of free memory at its top. Measured on the
    spectrogram stage in fresh processes (2-core EPYC VM, alternating runs): 12 trials of
    1000 frames 0.57-0.72 s -> 0.45-0.49 s, the face case 0.16-0.29 s -> 0.14-0.15 s; no
    change on tracking or TCA. Larger blocks (a video's tracks, a chunk's spectrogram)
    are still mapped and unmapped, and the spectrogram stage trims the heap when it
    grows, so the peak stays bounded.

    Returns
    -------
    bool
        True if both thresholds were set; False without glibc's ``mallopt``.
    """
    libc = glibc()
    mallopt = getattr(libc, "mallopt", None)
    if mallopt is None:
        return False
    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # <malloc.h>
    return bool(mallopt(M_MMAP_THRESHOLD, int(mmap_threshold))) and bool(mallopt(M_TRIM_THRESHOLD, int(trim_threshold)))


def glibc():
    """The C library as a ``ctypes.CDLL`` if it is glibc (it has ``malloc_trim``), else None.

    Opens ``libc.so.6`` (glibc's soname) directly: ``ctypes.util.find_library("c")``
    runs ``ldconfig -p`` in a subprocess, ~7 ms, and is only the fallback.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        name = ctypes.util.find_library("c")
        try:
            libc = ctypes.CDLL(name) if name else None
        except OSError:
            libc = None
    return libc if hasattr(libc, "malloc_trim") else None


class HeapTrimmer:
    """Give freed heap memory back to the OS (glibc ``malloc_trim``) once it has piled up.

    The FFT threads (torch's, or the numpy engine's) each allocate in their own malloc arena;
    memory freed there is kept by the arenas, and over 40 short trial videos the
    resident set grew by ~25 MB per video (to 1.4 GB). A trim after each video kept it
    flat (296 MB over 40 transforms) but cost ~3 ms a video, a tenth of a 1000-frame
    trial's transform; so :meth:`after_video` trims only when the resident set is
    ``slack_bytes`` above what the last trim left. No-op without glibc.
    """

    def __init__(self, slack_bytes: int = 64 * 2**20):
        self.slack_bytes = int(slack_bytes)
        self.trims = 0
        self._libc = glibc()
        self._page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._floor = self._rss()

    def _rss(self) -> int:
        try:
            with open("/proc/self/statm") as fh:
                return int(fh.read().split()[1]) * self._page
        except (OSError, ValueError, IndexError):
            return 0

    def after_video(self) -> None:
        if self._libc is None:
            return
        rss = self._rss()
        if rss and rss < self._floor + self.slack_bytes:
            return
        self._libc.malloc_trim(0)
        self.trims += 1
        self._floor = self._rss()
