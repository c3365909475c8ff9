"""Overlay videos: tracked points drawn on the session's frames.

Frames are streamed with :func:`facerhythm_core.video.iter_frame_chunks` (never the
whole video in memory) and encoded incrementally: H.264 (yuv420p, plays in browsers
and in the Snakemake report) through torchcodec's encoder, or MPEG-4 part 2 ('mp4v')
through OpenCV when that encoder is unavailable.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from .errors import VideoError
from .io import atomic_output

logger = logging.getLogger(__name__)

#: RGB colours (Okabe-Ito, colour-blind safe): tracked points, violating points
COLOUR_OK = (86, 180, 233)  # sky blue
COLOUR_BAD = (230, 159, 0)  # orange, also drawn as a larger ring with a cross


def session_window(num_frames: Sequence[int], start: int, n_frames: int) -> list[tuple[int, int, int]]:
    """Split a window of session frames into per-video frame ranges.

    Parameters
    ----------
    num_frames : sequence of int
        Frames of each video, in session order.
    start : int
        First session frame (videos back to back).
    n_frames : int
        Window length; clipped at the end of the session.

    Returns
    -------
    list of (video_index, first_frame, stop_frame)
        Video-local ranges [first, stop) covering the window in order.

    Raises
    ------
    ValueError
        ``start`` is outside the session or ``n_frames`` < 1.
    """
    total = int(sum(num_frames))
    if n_frames < 1:
        raise ValueError(f"overlay window needs at least 1 frame, got {n_frames}")
    if not 0 <= start < total:
        raise ValueError(
            f"overlay start frame {start} is outside the session's {total} frames; lower report.overlay_start"
        )
    stop = min(start + int(n_frames), total)
    out = []
    first = 0
    for i, n in enumerate(num_frames):
        a, b = max(start, first), min(stop, first + int(n))
        if a < b:
            out.append((i, a - first, b - first))
        first += int(n)
    return out


def draw_points(
    frame: np.ndarray, points: np.ndarray, violating: np.ndarray | None = None, radius: int = 2, text: str | None = None
) -> np.ndarray:
    """Draw points on one RGB frame (in place) and return it.

    Parameters
    ----------
    frame : ndarray, uint8, shape (H, W, 3)
        RGB; modified in place.
    points : ndarray, shape (N, 2)
        (x, y) pixel positions; non-finite points are skipped.
    violating : ndarray, bool, shape (N,), optional
        Points drawn in :data:`COLOUR_BAD` as a ring with a cross (shape and colour
        both differ, so the two classes stay apart for colour-blind viewers).
    radius : int
        Dot radius in pixels.
    text : str, optional
        Label drawn in the top-left corner on a dark box.
    """
    import cv2

    pts = np.asarray(points, np.float64)
    bad = np.zeros(len(pts), bool) if violating is None else np.asarray(violating, bool)
    ok = np.isfinite(pts).all(axis=1)
    # cv2 fixed point (4 fractional bits) keeps sub-pixel positions
    sh = 4
    p_int = np.zeros((len(pts), 2), np.int64)
    p_int[ok] = np.round(pts[ok] * (1 << sh)).astype(np.int64)
    r = max(int(radius), 1)
    for x, y in p_int[ok & ~bad]:
        # a dark rim one pixel outside the dot keeps it visible on pale backgrounds
        cv2.circle(frame, (int(x), int(y)), (r + 1) << sh, (0, 0, 0), -1, cv2.LINE_AA, sh)
        cv2.circle(frame, (int(x), int(y)), r << sh, COLOUR_OK, -1, cv2.LINE_AA, sh)
    for x, y in p_int[ok & bad]:
        c = (int(x), int(y))
        R = (r + 2) << sh
        cv2.circle(frame, c, R, COLOUR_BAD, 1, cv2.LINE_AA, sh)
        cv2.line(frame, (c[0] - R, c[1] - R), (c[0] + R, c[1] + R), COLOUR_BAD, 1, cv2.LINE_AA, sh)
        cv2.line(frame, (c[0] - R, c[1] + R), (c[0] + R, c[1] - R), COLOUR_BAD, 1, cv2.LINE_AA, sh)
    if text:
        scale = max(frame.shape[0] / 600.0, 0.3)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        if tw > frame.shape[1] - 8:  # shrink to fit the frame width
            scale *= (frame.shape[1] - 8) / tw
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(frame, (0, 0), (tw + 8, th + base + 8), (0, 0, 0), -1)
        cv2.putText(frame, text, (4, th + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return frame


class _Writer:
    """Incremental mp4 writer: torchcodec H.264, else OpenCV 'mp4v'."""

    def __init__(self, path: Path, height: int, width: int, fps: float, codec: str):
        self.path, self.h, self.w, self.fps = path, height, width, fps
        # yuv420p needs even sizes; frames are padded by edge replication
        self.H, self.W = height + height % 2, width + width % 2
        self.kind = None
        self._enc = self._stream = self._cv = None
        if codec in ("auto", "h264"):
            try:
                from torchcodec.encoders import Encoder

                self._enc = Encoder()
                self._stream = self._enc.add_video(
                    height=self.H,
                    width=self.W,
                    frame_rate=float(fps),
                    codec="libx264",
                    pixel_format="yuv420p",
                    crf=23,
                    # 'veryfast' is ~3x faster than 'fast'
                    # for a few % larger files
                    preset="veryfast",
                    device="cpu",
                )
                self._enc.open_file(str(path))
                self.kind = "h264 (torchcodec)"
            except Exception as exc:  # no libx264 in this FFmpeg, or torchcodec too old
                if codec == "h264":
                    raise VideoError(f"cannot open an H.264 encoder for {path}: {exc}") from exc
                logger.info("H.264 encoder unavailable (%s); writing MPEG-4 'mp4v' with OpenCV", exc)
                self._enc = self._stream = None
        if self.kind is None:
            import cv2

            self._cv = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (self.W, self.H))
            if not self._cv.isOpened():
                raise VideoError(f"OpenCV cannot open an mp4v writer for {path}")
            self.kind = "mp4v (OpenCV)"

    def add(self, frames: np.ndarray) -> None:
        if (self.H, self.W) != (self.h, self.w):
            frames = np.pad(frames, ((0, 0), (0, self.H - self.h), (0, self.W - self.w), (0, 0)), mode="edge")
        if self._stream is not None:
            import torch

            self._stream.add_frames(torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))))
        else:
            import cv2

            for f in frames:
                self._cv.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))

    def close(self) -> None:
        if self._enc is not None:
            self._enc.close()
        if self._cv is not None:
            self._cv.release()


def write_overlay_video(
    out_path: str | os.PathLike,
    videos: Sequence[str | os.PathLike],
    num_frames: Sequence[int],
    points: np.ndarray,
    violating: np.ndarray | None,
    start: int,
    fps: float,
    radius: int | None = None,
    chunk_size: int = 64,
    codec: str = "auto",
    label: bool = True,
    video_names: Sequence[str] | None = None,
) -> dict:
    """Write an mp4 of session frames [start, start + len(points)) with points drawn.

    Parameters
    ----------
    out_path : path
        Output ``.mp4``; written through :func:`facerhythm_core.io.atomic_output`.
    videos : sequence of paths
        The session's videos in order (frames are counted back to back).
    num_frames : sequence of int
        Frames per video.
    points : ndarray, shape (n, N, 2)
        Tracked (x, y) positions of the N points in each of the n window frames.
    violating : ndarray, bool, shape (n, N), optional
        Violation flags per frame and point.
    start : int
        Session frame index of ``points[0]``.
    fps : float
        Frame rate of the output (Hz), normally the session's.
    radius : int, optional
        Dot radius in pixels; default scales with the frame size.
    chunk_size : int
        Frames decoded per chunk.
    codec : {"auto", "h264", "mp4v"}
        "auto" tries H.264 through torchcodec, then OpenCV 'mp4v'.
    label : bool
        Draw "time / frame / video" in the corner.
    video_names : sequence of str, optional
        Names for the label (default: file names).

    Returns
    -------
    dict
        ``frames`` written, ``encoder`` used, ``height``, ``width``.
    """
    from .video import iter_frame_chunks

    pts = np.asarray(points)
    n = len(pts)
    if pts.ndim != 3 or pts.shape[2] != 2:
        raise ValueError(f"points must be (n, N, 2), got {pts.shape}")
    if violating is not None and np.shape(violating) != pts.shape[:2]:
        raise ValueError(f"violating must be {pts.shape[:2]}, got {np.shape(violating)}")
    if len(videos) != len(num_frames):
        raise ValueError(f"{len(videos)} videos but {len(num_frames)} frame counts")
    if codec not in ("auto", "h264", "mp4v"):
        raise ValueError(f"codec must be 'auto', 'h264' or 'mp4v', got {codec!r}")
    if not fps or fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    window = session_window(num_frames, start, n)
    covered = sum(b - a for _, a, b in window)
    if covered != n:
        raise ValueError(
            f"{n} frames of points from session frame {start}, but the session has only {covered} frames from there"
        )
    names = list(video_names) if video_names is not None else [Path(v).name for v in videos]
    offsets = np.concatenate([[0], np.cumsum(num_frames)[:-1]]).astype(np.int64)
    writer = None
    written = 0
    with atomic_output(out_path) as tmp:
        try:
            for vi, a, b in window:
                for first, frames in iter_frame_chunks(videos[vi], chunk_size=chunk_size, gray=False, start=a, stop=b):
                    frames = np.ascontiguousarray(frames)
                    if writer is None:
                        h, w = frames.shape[1:3]
                        r = radius if radius is not None else max(1, round(min(h, w) / 160))
                        writer = _Writer(
                            Path(tmp), h, w, fps, "h264" if codec == "h264" else ("mp4v" if codec == "mp4v" else "auto")
                        )
                    for j in range(len(frames)):
                        g = offsets[vi] + first + j  # session frame
                        row = g - start
                        text = None
                        if label:
                            text = f"t = {g / fps:.2f} s  frame {g}  ({names[vi]} #{first + j})"
                        draw_points(frames[j], pts[row], None if violating is None else violating[row], r, text)
                    writer.add(frames)
                    written += len(frames)
        finally:
            if writer is not None:
                writer.close()
        if written != n:  # checked before the rename, so no short video is left behind
            raise VideoError(f"overlay: decoded {written} frames, expected {n}")
    logger.info("overlay video %s: %d frames with %s", out_path, written, writer.kind)
    return {"frames": written, "encoder": writer.kind, "height": writer.h, "width": writer.w}
