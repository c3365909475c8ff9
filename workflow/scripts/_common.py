"""Shared glue for workflow scripts: logging into the rule's log file."""

from __future__ import annotations

import logging
import sys
import warnings
from pathlib import Path

# scripts run from a Snakemake-generated copy; make the repo's package importable
# even when facerhythm_core is not pip-installed (e.g. a cluster job's bare python)
_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))


def setup_logging(snakemake, name: str | None = None) -> logging.Logger:
    """Send logging, warnings and uncaught exceptions to ``snakemake.log[0]``.

    Returns the script's logger. Messages also go to stderr so that a local run shows
    progress live.
    """
    log_path = snakemake.log[0] if len(snakemake.log) else None
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if log_path:
        Path(log_path).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.captureWarnings(True)
    warnings.simplefilter("default")
    logger = logging.getLogger(name or f"facerhythm.{snakemake.rule}")

    def _excepthook(exc_type, exc, tb):
        logger.error("%s failed for %s: %s", snakemake.rule,
                     dict(snakemake.wildcards), exc, exc_info=(exc_type, exc, tb))
    sys.excepthook = _excepthook
    return logger


def set_threads(n: int) -> None:
    """Limit torch and OpenCV to the threads the rule was given."""
    n = max(1, int(n))
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:  # pragma: no cover
        pass
    try:
        import cv2
        cv2.setNumThreads(n)
    except ImportError:  # pragma: no cover
        pass
