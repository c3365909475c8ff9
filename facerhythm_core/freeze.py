"""Frames to freeze (grooming, occlusions): the sessions table's ``frames_freeze`` files.

Kept apart from the tracker so that the probe step can check a file's frame ranges
without loading the tracker's compiled kernels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import ConfigError
from .tables import editor_lines, read_text


def load_frames_freeze(path: str | Path, n_frames_total: int) -> np.ndarray:
    """Read a frames_freeze file into a bool array over the session's frames.

    Parameters
    ----------
    path : path
        ``.npy``: a 1-D bool array (or integers 0/1) of length ``n_frames_total``.
        Anything else is read as text: one inclusive ``start end`` frame range per line
        (a single number is one frame); ``#`` starts a comment; blank lines are ignored.
        Indices are global over the session's videos, in order, starting at 0.
    n_frames_total : int

    Returns
    -------
    ndarray, bool, shape (n_frames_total,)
    """
    path = Path(path)
    n = int(n_frames_total)
    if not path.exists():
        raise ConfigError(f"frames_freeze file not found: {path}")
    if path.suffix.lower() == ".npy":
        try:
            a = np.load(path, allow_pickle=False)
        except Exception as exc:
            raise ConfigError(f"frames_freeze {path}: cannot read as a .npy array ({exc})") from exc
        if a.ndim != 1:
            raise ConfigError(f"frames_freeze {path}: must be 1-D, has shape {a.shape}")
        if a.dtype != bool:
            if not np.issubdtype(a.dtype, np.integer) or not np.isin(a, (0, 1)).all():
                raise ConfigError(f"frames_freeze {path}: must be bool or 0/1 integers, got {a.dtype}")
            a = a.astype(bool)
        if len(a) != n:
            raise ConfigError(
                f"frames_freeze {path} has {len(a)} entries but the session has {n} "
                "frames; give one value per frame of all the session's videos"
            )
        return a
    out = np.zeros(n, dtype=bool)
    for lineno, line in enumerate(editor_lines(read_text(path, "frames_freeze file")), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.replace(",", " ").split()
        try:
            vals = [int(v) for v in parts]
        except ValueError:
            raise ConfigError(f"frames_freeze {path}:{lineno}: expected 'start end' integers, got {line!r}") from None
        if len(vals) == 1:
            vals = vals * 2
        if len(vals) != 2:
            raise ConfigError(f"frames_freeze {path}:{lineno}: expected 'start end', got {line!r}")
        a, b = vals
        if not 0 <= a <= b < n:
            raise ConfigError(
                f"frames_freeze {path}:{lineno}: range {a}-{b} must satisfy "
                f"0 <= start <= end < {n} (the session's frame count)"
            )
        out[a : b + 1] = True
    return out
