"""The tracker's rewind window: preprocessed frames kept for replays (:class:`FrameCache`)
and the rows of the trajectory that a rewind may still rewrite (:class:`RowStore`)."""

from __future__ import annotations

from typing import Iterator

import numpy as np

from .errors import VideoError

__all__ = ["PIECE", "FrameCache", "RowStore"]

PIECE = 32  # frames per preprocessed piece: small pieces keep the rewind window's memory small


class FrameCache:
    """Preprocessed frames by index, pulled chunk by chunk; keeps ``lookback`` frames
    behind the newest for rewinds (no re-decoding)."""

    def __init__(self, chunks: Iterator[tuple[int, np.ndarray]], first: int, lookback: int):
        self._it = chunks
        self._chunks: list[tuple[int, np.ndarray]] = []
        self._next = first  # index the next chunk must start at
        self.lookback = lookback

    def oldest(self) -> int:
        return self._chunks[0][0] if self._chunks else self._next

    def get(self, i: int) -> np.ndarray:
        while i >= self._next:
            try:
                s, arr = next(self._it)
            except StopIteration:
                raise VideoError(
                    f"the frame stream ended at frame {self._next} but frame {i} "
                    "was expected; the video is shorter than its reported length"
                ) from None
            if s != self._next:
                raise VideoError(f"frame chunks are not contiguous: expected a chunk at {self._next}, got {s}")
            self._chunks.append((s, arr))
            self._next = s + len(arr)
            keep_from = i - self.lookback
            while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= keep_from:
                self._chunks.pop(0)
        for s, arr in reversed(self._chunks):
            if s <= i < s + len(arr):
                return arr[i - s]
        raise VideoError(f"frame {i} is no longer buffered (oldest kept: {self.oldest()})")


class RowStore:
    """Rows of the (T, N, 2) trajectory: recent rows in memory, older ones flushed to ``out``."""

    def __init__(self, out, start: int, n_points: int, block: int = 1024):
        self.out = out
        self.direct = isinstance(out, np.ndarray)
        if not self.direct:
            self.buf = np.empty((block, n_points, 2), dtype=np.float32)
            self.base = start  # frame index of buf[0]
            self.filled = start  # rows [base, filled) are valid in buf

    def set(self, t: int, row: np.ndarray):
        if self.direct:
            self.out[t] = row
            return
        if t - self.base >= len(self.buf):
            raise AssertionError("flush() must be called before the buffer overflows")
        self.buf[t - self.base] = row
        self.filled = max(self.filled, t + 1)

    def get(self, t: int) -> np.ndarray:
        if self.direct:
            return np.array(self.out[t])
        if t < self.base:
            return np.asarray(self.out[t], dtype=np.float32)
        return self.buf[t - self.base].copy()

    def flush(self, t: int, keep_from: int):
        """Make room before writing row ``t``: rows < keep_from will not change again."""
        if self.direct or t - self.base < len(self.buf):
            return
        n = min(keep_from, self.filled) - self.base
        if n <= 0:
            raise AssertionError("row buffer too small for the rewind window")
        self.out[self.base : self.base + n] = self.buf[:n]
        rest = self.filled - self.base - n
        self.buf[:rest] = self.buf[n : n + rest]
        self.base += n

    def finish(self):
        if not self.direct and self.filled > self.base:
            self.out[self.base : self.filled] = self.buf[: self.filled - self.base]
            self.base = self.filled
