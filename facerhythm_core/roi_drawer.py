"""A browser ROI drawer served on localhost, for use over an SSH tunnel.

``facerhythm-rois SESSION_OR_VIDEO --out ROIs.h5`` serves a small web page (plain
HTML/JS/CSS shipped in ``roi_drawer_static/``, nothing fetched from the internet) on
127.0.0.1. In it the user draws, edits and deletes named polygons on a frame of the
video, picks the ROIs whose intersection holds the seed-point grid and the grid
spacing, sees the seed points live, and saves an ``ROIs.h5`` in the layout the
workflow reads (:func:`facerhythm_core.rois.load_rois_h5`).

The seed-point preview is computed here, with :func:`facerhythm_core.rois.make_points`
on masks from :func:`facerhythm_core.rois.polygon_mask`, the same code the workflow runs,
and the saved file carries those points; the workflow keeps them (``rois.use_file_points``
defaults to true), so what the page shows is what gets tracked.

The functions below the HTTP layer are plain functions over arrays (usable and tested
without a browser): :func:`drawing_from_payload`, :func:`drawing_to_rois`,
:func:`save_drawing`, :func:`load_drawing`, :func:`resolve_source`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import re
import secrets
import socket
import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

import numpy as np

from .tables import read_table
from .errors import ConfigError, FaceRhythmError, ROIError, VideoError
from .rois import ROISet, load_rois_h5, make_points, rois_from_polygons, save_rois_h5

logger = logging.getLogger(__name__)

#: default port; the next free one is used when it is taken (unless --port is given)
DEFAULT_PORT = 8765
#: default grid spacing, as the config schema's ``rois.point_spacing``
DEFAULT_SPACING = 9
STATIC_DIR = Path(__file__).with_name("roi_drawer_static")
_STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
# HDF5 dataset names and config `point_rois` entries: no '/', no spaces
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_MAX_BODY = 16 * 1024 * 1024
_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


# --------------------------------------------------------------------------- model


@dataclass
class Drawing:
    """ROIs as the drawer edits them.

    Attributes
    ----------
    polygons : dict of str -> ndarray, float32, shape (V, 2)
        Named polygons, (x, y) vertices in pixels (pixel centres at integers), in
        drawing order.
    point_rois : list of str
        Names of the ROIs whose masks are intersected to hold the seed-point grid.
    point_spacing : int
        Grid spacing in pixels.
    shape : (H, W)
        Frame size.
    example_image : ndarray, uint8, shape (H, W, 3), or None
    frame_index : int or None
        Video frame the example image comes from (None: from a file).
    notes : list of str
        Things the user should know about a loaded file (traced masks, clamped vertices).
    """

    polygons: dict = field(default_factory=dict)
    point_rois: list = field(default_factory=list)
    point_spacing: int = DEFAULT_SPACING
    shape: tuple = (0, 0)
    example_image: np.ndarray | None = None
    frame_index: int | None = None
    notes: list = field(default_factory=list)

    def to_json(self) -> dict:
        """The drawing as the page's JSON (``rois``: name, points, use_for_points)."""
        return {
            "rois": [
                {
                    "name": k,
                    "points": np.round(np.asarray(v, np.float64), 3).tolist(),
                    "use_for_points": k in self.point_rois,
                }
                for k, v in self.polygons.items()
            ],
            "point_spacing": int(self.point_spacing),
            "notes": list(self.notes),
        }


def check_roi_names(names: Sequence[str]) -> None:
    """Raise ROIError unless every name is a valid, unique ROI name.

    Names become HDF5 dataset names (``mask_images/{name}``) and can be listed in the
    config's ``rois.point_rois``/``tracking_rois``, so they are limited to letters,
    digits, ``_ . -`` (first character a letter, digit or ``_``), at most 64 characters.
    """
    seen = set()
    for n in names:
        if not isinstance(n, str) or not _NAME_RE.match(n):
            raise ROIError(
                f"ROI name {n!r} is not allowed: use letters, digits, '_', '.' or '-' "
                "(starting with a letter, digit or '_'), at most 64 characters"
            )
        if n in seen:
            raise ROIError(f"two ROIs are named {n!r}: give each ROI its own name")
        seen.add(n)


def drawing_from_payload(payload: Mapping[str, Any], shape: tuple[int, int]) -> Drawing:
    """Validate the page's JSON and turn it into a :class:`Drawing`.

    Parameters
    ----------
    payload : mapping
        ``{"rois": [{"name": str, "points": [[x, y], ...], "use_for_points": bool}, ...],
        "point_spacing": int}``; ``frame_index`` (int) is optional.
    shape : (H, W)
        Frame size the vertices refer to.

    Raises
    ------
    ROIError
        Malformed ROIs, bad names, a spacing below 1 px.
    """
    rois = payload.get("rois")
    if not isinstance(rois, list):
        raise ROIError("request has no 'rois' list")
    polygons: dict[str, np.ndarray] = {}
    point_rois: list[str] = []
    names = [r.get("name") if isinstance(r, Mapping) else None for r in rois]
    check_roi_names(names)
    for r in rois:
        name = r["name"]
        try:
            pts = np.asarray(r.get("points"), dtype=np.float64)
        except (TypeError, ValueError):
            raise ROIError(f"ROI {name!r}: vertices must be a list of [x, y] numbers") from None
        if pts.ndim != 2 or pts.shape[1] != 2:
            raise ROIError(f"ROI {name!r}: vertices must be a list of [x, y] pairs, got shape {pts.shape}")
        polygons[name] = pts.astype(np.float32)
        if r.get("use_for_points", False):
            point_rois.append(name)
    spacing = payload.get("point_spacing", DEFAULT_SPACING)
    if isinstance(spacing, bool) or not isinstance(spacing, (int, float)) or spacing != int(spacing):
        raise ROIError(f"point spacing must be a whole number of pixels, got {spacing!r}")
    if int(spacing) < 1:
        raise ROIError(f"point spacing must be >= 1 pixel, got {spacing}")
    frame_index = payload.get("frame_index")
    if frame_index is not None and (isinstance(frame_index, bool) or not isinstance(frame_index, int)):
        raise ROIError(f"frame_index must be an integer or null, got {frame_index!r}")
    return Drawing(
        polygons=polygons,
        point_rois=point_rois,
        point_spacing=int(spacing),
        shape=tuple(int(s) for s in shape),
        frame_index=frame_index,
    )


def drawing_to_rois(drawing: Drawing) -> ROISet:
    """Masks and seed points of a drawing, with the workflow's own functions.

    Returns
    -------
    ROISet
        ``masks`` from :func:`~facerhythm_core.rois.polygon_mask`, ``point_positions``
        from :func:`~facerhythm_core.rois.make_points` over the AND of the point ROIs,
        ``example_image`` from the drawing.

    Raises
    ------
    ROIError
        No ROI, no point ROI chosen, a polygon with < 3 vertices or outside the frame,
        an empty intersection, no grid point inside it.
    """
    if not drawing.polygons:
        raise ROIError("no ROI drawn yet: draw at least one polygon")
    check_roi_names(list(drawing.polygons))
    if not drawing.point_rois:
        raise ROIError("no ROI is marked for seed points: tick 'points' on at least one ROI")
    missing = [n for n in drawing.point_rois if n not in drawing.polygons]
    if missing:
        raise ROIError(f"point ROIs {missing} are not among the drawn ROIs {list(drawing.polygons)}")
    rois = rois_from_polygons(drawing.polygons, drawing.shape, example_image=drawing.example_image)
    rois.point_positions = make_points(rois.select(drawing.point_rois, "point ROI"), drawing.point_spacing)
    return rois


def save_drawing(path: str | Path, drawing: Drawing, video: str | Path | None = None) -> ROISet:
    """Write a drawing as an ``ROIs.h5`` the workflow reads (atomically).

    Layout: ``mask_images/{name}`` (H, W) bool, ``roi_points/{name}`` (V, 2) float32,
    ``point_positions`` (N, 2) float32, ``num_points``, ``exampleImage`` (H, W, 3)
    uint8 (reference layout), attributes ``point_spacing``, ``point_rois`` (JSON list),
    ``roi_order`` (JSON list: drawing order; readers list masks in natural name order),
    ``frame_index`` (-1 when the image came from a file), ``video``, and a
    ``provenance`` group (stage ``roi_drawer``).

    Returns
    -------
    ROISet
        What was written.
    """
    import h5py

    from .io import atomic_output, write_provenance

    rois = drawing_to_rois(drawing)
    attrs = {
        "point_spacing": int(drawing.point_spacing),
        "point_rois": json.dumps(list(drawing.point_rois)),
        "roi_order": json.dumps(list(drawing.polygons)),
        "frame_index": -1 if drawing.frame_index is None else int(drawing.frame_index),
        "video": "" if video is None else str(video),
        "source": "facerhythm-rois",
    }
    with atomic_output(path) as tmp:
        save_rois_h5(tmp, rois, attrs=attrs)
        with h5py.File(tmp, "a") as f:
            inputs = [video] if video is not None and Path(video).is_file() else []
            write_provenance(
                f,
                "roi_drawer",
                params={
                    "point_spacing": int(drawing.point_spacing),
                    "point_rois": list(drawing.point_rois),
                    "frame_index": attrs["frame_index"],
                },
                inputs=inputs,
            )
    logger.info(
        "saved %d ROI(s) %s and %d seed points to %s", len(rois.masks), rois.names, len(rois.point_positions), path
    )
    return rois


def _trace_polygon(mask: np.ndarray) -> np.ndarray:
    """Outline of the largest blob of a mask as a polygon (x, y) through boundary pixels."""
    import cv2

    cs, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    c = max(cs, key=cv2.contourArea)
    c = cv2.approxPolyDP(c, 0.75, True)
    return c.reshape(-1, 2).astype(np.float32)


def _infer_spacing(points: np.ndarray) -> int | None:
    """Grid spacing of stored seed points (smallest gap between distinct x), if any."""
    if points is None or len(points) < 2:
        return None
    gaps = np.diff(np.unique(np.round(points[:, 0])))
    return int(gaps.min()) if len(gaps) and gaps.min() >= 1 else None


def load_drawing(path: str | Path, shape: tuple[int, int] | None = None) -> Drawing:
    """Read an ``ROIs.h5`` (ours or the reference's) back into an editable drawing.

    Polygons are paired with masks by name, else by position (reference files name
    them ``ROI_i`` and ``mask_i``); the ROI takes the mask's name, which is what the
    workflow sees. A mask without a polygon is traced into one (noted). Vertices are
    clamped into the frame (noted). The point ROIs and the spacing come from the
    file's attributes when it has them, else the first ROI and the spacing of the
    stored points.

    Parameters
    ----------
    path : path
    shape : (H, W), optional
        Frame size of the video being drawn on; a file of another size is refused.

    Raises
    ------
    ROIError
        Unreadable file, or masks of another size than ``shape``.
    """
    import h5py

    rois = load_rois_h5(path)
    h, w = rois.shape
    if shape is not None and (h, w) != tuple(shape):
        raise ROIError(
            f"ROI file {path} has {w}x{h} masks but the video is {shape[1]}x{shape[0]}: load a file drawn on this video"
        )
    with h5py.File(path, "r") as f:
        attrs = {k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()}
    notes: list[str] = []
    names = list(rois.masks)
    try:
        order = json.loads(attrs.get("roi_order", "[]"))
    except (TypeError, ValueError):
        order = []
    if sorted(order) == sorted(names):
        names = list(order)
    poly_names = list(rois.polygons)
    same_keys = set(poly_names) == set(rois.masks)
    polygons: dict[str, np.ndarray] = {}
    for i, name in enumerate(names):
        if same_keys:
            p = rois.polygons[name]
        elif not rois.polygons or len(poly_names) != len(rois.masks):
            p = None
        else:
            p = rois.polygons[poly_names[list(rois.masks).index(name)]]
        if p is None or p.ndim != 2 or p.shape[1] != 2 or len(p) < 3:
            p = _trace_polygon(rois.masks[name])
            notes.append(f"ROI {name!r} had no polygon in the file; its mask was traced into one")
        p = np.asarray(p, np.float32)
        clamped = np.clip(p, 0, [w - 1, h - 1]).astype(np.float32)
        if not np.array_equal(clamped, p):
            notes.append(f"ROI {name!r}: vertices outside the frame were moved onto its edge")
        polygons[name] = clamped
    if any(not _NAME_RE.match(n) for n in polygons):
        bad = [n for n in polygons if not _NAME_RE.match(n)]
        notes.append(f"ROI names {bad} are not valid for saving; rename them")
    point_rois: list[str] = []
    try:
        point_rois = [n for n in json.loads(attrs.get("point_rois", "[]")) if n in polygons]
    except (TypeError, ValueError):
        pass
    if not point_rois:
        point_rois = names[:1]
    spacing = attrs.get("point_spacing")
    if spacing is None:
        spacing = _infer_spacing(rois.point_positions)
        if spacing is not None:
            notes.append(f"point spacing {spacing} px read off the file's stored points")
    spacing = int(spacing) if spacing is not None else DEFAULT_SPACING
    fi = attrs.get("frame_index")
    frame_index = int(fi) if fi is not None and int(fi) >= 0 else None
    return Drawing(
        polygons=polygons,
        point_rois=point_rois,
        point_spacing=spacing,
        shape=(h, w),
        example_image=rois.example_image,
        frame_index=frame_index,
        notes=notes,
    )


# --------------------------------------------------------------------------- sources


def resolve_source(source: str | Path, sessions: str | Path = "config/sessions.tsv") -> Path:
    """The file behind ``SESSION_OR_VIDEO``: a video/ROI file path, or a session's first video.

    Parameters
    ----------
    source : str or path
        An existing file (a video, or an ``.h5`` to edit without its video), or a
        session id from the sessions table.
    sessions : path
        Sessions table (TSV with ``session`` and ``videos`` columns).

    Raises
    ------
    ConfigError
        ``source`` is neither an existing file nor a session in the table.
    VideoError
        The session's first video does not exist.
    """
    p = Path(source)
    if p.is_file():
        return p
    table = Path(sessions)
    looks_like_path = p.suffix.lower() in _VIDEO_SUFFIXES | {".h5", ".hdf5"} or "/" in str(source)
    if not table.is_file():
        if looks_like_path:
            raise VideoError(f"file not found: {source}")
        raise ConfigError(
            f"{source!r} is not a file, and the sessions table {table} to look it up "
            "in does not exist (give a video path, or --sessions PATH)"
        )
    rows = [r.cells for r in read_table(table, "sessions table", ("session", "videos", "rois")).rows]
    for row in rows:
        if row.get("session", "") == str(source):
            videos = [v.strip() for v in row.get("videos", "").split(";") if v.strip()]
            if not videos:
                raise ConfigError(f"session {source!r} in {table} lists no video")
            first = Path(videos[0])
            if not first.is_file():
                raise VideoError(
                    f"session {source!r}: its first video {first} does not exist "
                    "(paths in the sessions table are relative to the working directory)"
                )
            return first
    if looks_like_path:
        raise VideoError(f"file not found: {source}")
    known = [r.get("session", "") for r in rows]
    raise ConfigError(f"{source!r} is neither a file nor a session in {table} (sessions: {known})")


def read_example_frame(video: str | Path, index: int = 0) -> np.ndarray:
    """One RGB frame (H, W, 3) uint8 to draw on.

    Frame 0 is decoded exactly as the workflow does (:func:`~facerhythm_core.video.read_frame`).
    Other frames are found by seeking, which is fast at any position but on some H.264
    files with B-frames may land a few frames early; for drawing ROIs that is harmless.
    """
    from . import video as _video

    index = int(index)
    if index == 0:
        return _video.read_frame(video, 0)
    dec = _video._open_decoder(str(video))
    n = len(dec)
    if not 0 <= index < n:
        raise VideoError(f"frame {index} requested but {video} has {n} frames")
    try:
        return np.ascontiguousarray(dec.get_frame_at(index).data.cpu().numpy())
    except Exception as exc:  # torchcodec raises RuntimeError on undecodable frames
        raise VideoError(f"cannot decode frame {index} of {video}: {exc}") from exc


# --------------------------------------------------------------------------- app


class DrawerApp:
    """State of one drawing session behind the HTTP handler.

    Parameters
    ----------
    out : path
        Where Save writes the ``ROIs.h5``.
    video : path, optional
        Video to draw on (frames from the slider).
    drawing : Drawing, optional
        Start from this drawing (e.g. :func:`load_drawing` of an existing file).
    image : ndarray (H, W, 3) uint8, optional
        Image to draw on when there is no video (else the drawing's example image).
    frame_index : int
        First frame shown.
    point_spacing : int
        Spacing shown when the drawing gives none.
    """

    def __init__(
        self,
        out: str | Path,
        video: str | Path | None = None,
        drawing: Drawing | None = None,
        image: np.ndarray | None = None,
        frame_index: int = 0,
        point_spacing: int = DEFAULT_SPACING,
        loaded_from: str | Path | None = None,
    ):
        self.out = Path(out)
        self.video = None if video is None else Path(video)
        self.token = secrets.token_urlsafe(16)
        self.lock = threading.Lock()
        self._save_lock = threading.Lock()  # atomic_output's temp name is per process, not per thread
        self._frames: OrderedDict[int, np.ndarray] = OrderedDict()
        self.num_frames = 0
        self.fps = None
        if self.video is not None:
            from .video import probe_video

            info = probe_video(self.video)
            self.num_frames, self.fps = info.num_frames, info.fps
            self.shape = (info.height, info.width)
            if not 0 <= frame_index < info.num_frames:
                raise VideoError(f"--frame {frame_index} is outside {self.video} ({info.num_frames} frames)")
        elif image is not None:
            self.shape = tuple(image.shape[:2])
        elif drawing is not None:
            self.shape = tuple(drawing.shape)
        else:
            raise ROIError("nothing to draw on: give a video, an image or an ROI file")
        self.file_image = image if image is not None else (drawing.example_image if drawing else None)
        if self.file_image is None and self.video is None:
            self.file_image = np.full((*self.shape, 3), 96, np.uint8)
        if drawing is not None and tuple(drawing.shape) != tuple(self.shape):
            raise ROIError(
                f"the ROI file has {drawing.shape[1]}x{drawing.shape[0]} masks but the "
                f"video is {self.shape[1]}x{self.shape[0]}"
            )
        self.drawing = drawing or Drawing(point_spacing=point_spacing, shape=self.shape)
        if self.video is not None:
            self.frame_index = frame_index if drawing is None or drawing.frame_index is None else drawing.frame_index
            self.frame_index = min(self.frame_index, self.num_frames - 1)
        else:
            self.frame_index = None
        self.loaded_from = None if loaded_from is None else str(loaded_from)

    # frames ----------------------------------------------------------------
    def frame(self, index: int | None) -> np.ndarray:
        """RGB frame ``index`` of the video (cached), or the file's image for None."""
        if index is None or self.video is None:
            if self.file_image is None:
                raise VideoError("there is no image from the file to show")
            return self.file_image
        index = int(index)
        with self.lock:
            if index in self._frames:
                self._frames.move_to_end(index)
                return self._frames[index]
        img = read_example_frame(self.video, index)
        with self.lock:
            self._frames[index] = img
            while len(self._frames) > 16:
                self._frames.popitem(last=False)
        return img

    def frame_png(self, index: int | None) -> bytes:
        import cv2

        ok, buf = cv2.imencode(".png", cv2.cvtColor(self.frame(index), cv2.COLOR_RGB2BGR))
        if not ok:
            raise VideoError("could not encode the frame as PNG")
        return buf.tobytes()

    # API -------------------------------------------------------------------
    def state(self) -> dict:
        h, w = self.shape
        return {
            "width": w,
            "height": h,
            "video": None if self.video is None else str(self.video),
            "num_frames": self.num_frames,
            "fps": self.fps,
            "frame_index": self.frame_index,
            "has_file_image": self.file_image is not None,
            "out": str(self.out),
            "out_exists": self.out.exists(),
            "loaded_from": self.loaded_from,
            **self.drawing.to_json(),
        }

    def preview(self, payload: Mapping) -> dict:
        """Seed points and mask areas for the page's current polygons."""
        d = drawing_from_payload(payload, self.shape)
        rois = drawing_to_rois(d)
        return {
            "points": rois.point_positions.tolist(),
            "n_points": len(rois.point_positions),
            "areas": {k: int(m.sum()) for k, m in rois.masks.items()},
        }

    def save(self, payload: Mapping) -> dict:
        d = drawing_from_payload(payload, self.shape)
        if self.video is None:
            d.frame_index = None
        elif d.frame_index is None:
            d.frame_index = self.frame_index
        d.example_image = self.frame(d.frame_index)
        with self._save_lock:
            rois = save_drawing(self.out, d, video=self.video)
        with self.lock:
            d.notes = []
            self.drawing = d
            self.frame_index = d.frame_index
            self.loaded_from = str(self.out)
        return {"path": str(self.out.resolve()), "n_points": len(rois.point_positions), "names": rois.names}

    def load(self, payload: Mapping) -> dict:
        path = Path(payload.get("path") or self.out)
        d = load_drawing(path, shape=self.shape)
        with self.lock:
            self.drawing = d
            self.loaded_from = str(path)
            if self.video is None:
                self.file_image = d.example_image if d.example_image is not None else self.file_image
            elif d.frame_index is not None and d.frame_index < self.num_frames:
                self.frame_index = d.frame_index
        return self.state()


class _Handler(BaseHTTPRequestHandler):
    server_version = "facerhythm-rois/1"

    @property
    def app(self) -> DrawerApp:
        return self.server.app  # type: ignore[attr-defined]

    def log_message(self, fmt, *args):  # route http.server's access log into logging
        logger.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, status: int, body: bytes, ctype: str, extra: Mapping[str, str] | None = None):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any):
        self._send(status, json.dumps(obj).encode(), "application/json")

    def _host_ok(self) -> bool:
        # refuse DNS-rebinding: the page must be reached by a loopback name (the SSH
        # tunnel's local end included) or the address the server was bound to
        if self.server.server_address[0] not in ("127.0.0.1", "::1"):
            return True  # bound to a public address on purpose (--host): the token still guards POSTs
        host = self.headers.get("Host", "")
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host[1:].split("]")[0]
        return name in _LOOPBACK or name == self.server.server_address[0]

    def do_GET(self):  # noqa: N802 (http.server API)
        if not self._host_ok():
            return self._json(403, {"ok": False, "error": "forbidden Host header"})
        url = urlsplit(self.path)
        try:
            if url.path in ("/", "/index.html"):
                html = (STATIC_DIR / "index.html").read_text().replace("{{TOKEN}}", self.app.token)
                return self._send(200, html.encode(), _STATIC_TYPES["index.html"])
            if url.path.startswith("/static/"):
                name = url.path[len("/static/") :]
                if name not in _STATIC_TYPES:  # fixed list: no path traversal
                    return self._json(404, {"ok": False, "error": f"no static file {name!r}"})
                return self._send(200, (STATIC_DIR / name).read_bytes(), _STATIC_TYPES[name])
            if url.path == "/api/state":
                return self._json(200, {"ok": True, **self.app.state()})
            if url.path == "/api/frame.png":
                q = parse_qs(url.query).get("i", ["file"])[0]
                index = None if q == "file" else int(q)
                return self._send(200, self.app.frame_png(index), "image/png")
            return self._json(404, {"ok": False, "error": f"no such page {url.path}"})
        except (FaceRhythmError, ValueError) as exc:
            return self._json(400, {"ok": False, "error": str(exc)})
        except Exception as exc:  # keep serving; the log has the traceback
            logger.exception("GET %s failed", self.path)
            return self._json(500, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})

    def do_POST(self):  # noqa: N802
        if not self._host_ok():
            return self._json(403, {"ok": False, "error": "forbidden Host header"})
        # a token only the served page knows, and a JSON body (which cross-site forms
        # cannot send without a CORS preflight this server never grants)
        if not secrets.compare_digest(self.headers.get("X-Drawer-Token", ""), self.app.token):
            return self._json(403, {"ok": False, "error": "missing or wrong X-Drawer-Token; reload the page"})
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return self._json(415, {"ok": False, "error": "send JSON (Content-Type: application/json)"})
        n = int(self.headers.get("Content-Length") or 0)
        if n > _MAX_BODY:
            return self._json(413, {"ok": False, "error": "request too large"})
        try:
            payload = json.loads(self.rfile.read(n) or b"{}")
            if not isinstance(payload, dict):
                raise ValueError("the request body must be a JSON object")
        except ValueError as exc:
            return self._json(400, {"ok": False, "error": f"bad JSON: {exc}"})
        path = urlsplit(self.path).path
        try:
            if path == "/api/preview":
                return self._json(200, {"ok": True, **self.app.preview(payload)})
            if path == "/api/save":
                return self._json(200, {"ok": True, **self.app.save(payload)})
            if path == "/api/load":
                return self._json(200, {"ok": True, **self.app.load(payload)})
            if path == "/api/quit":
                self._json(200, {"ok": True})
                threading.Thread(target=self.server.shutdown, daemon=True).start()
                return None
            return self._json(404, {"ok": False, "error": f"no such endpoint {path}"})
        except FaceRhythmError as exc:
            return self._json(400, {"ok": False, "error": str(exc)})
        except Exception as exc:
            logger.exception("POST %s failed", path)
            return self._json(500, {"ok": False, "error": f"{type(exc).__name__}: {exc}"})


def make_server(
    app: DrawerApp, host: str = "127.0.0.1", port: int = DEFAULT_PORT, port_tries: int = 1
) -> ThreadingHTTPServer:
    """Bind a ThreadingHTTPServer for ``app``; ``port=0`` picks a free port.

    With ``port_tries > 1`` the next ports are tried while the port is taken.
    """
    last: OSError | None = None
    for p in range(port, port + max(1, port_tries)) if port else [0]:
        try:
            srv = ThreadingHTTPServer((host, p), _Handler)
        except OSError as exc:
            last = exc
            continue
        srv.daemon_threads = True
        srv.app = app  # type: ignore[attr-defined]
        return srv
    raise OSError(f"cannot listen on {host} ports {port}-{port + port_tries - 1}: {last}; pass a free port with --port")


def ssh_hint(port: int, host: str = "127.0.0.1", user: str | None = None, machine: str | None = None) -> str:
    """Lines telling the user how to reach the page, locally or through ``ssh -L``."""
    user = user or getpass.getuser()
    machine = machine or socket.getfqdn()
    shown = "127.0.0.1" if host in ("0.0.0.0", "") else host
    url = f"http://{shown}:{port}/"
    return (
        f"ROI drawer running at {url}\n"
        f"On a remote machine, run this on your own computer, then open http://127.0.0.1:{port}/ there:\n"
        f"    ssh -N -L {port}:127.0.0.1:{port} {user}@{machine}\n"
        "Press Ctrl-C here (or Quit in the page) to stop."
    )


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="facerhythm-rois",
        description="Draw ROIs in a browser (served on localhost; works through an SSH tunnel) "
        "and save an ROIs.h5 the facerhythm workflow reads.",
    )
    p.add_argument(
        "source",
        metavar="SESSION_OR_VIDEO",
        help="a video file, a session id from the sessions table (its first video), "
        "or an ROIs.h5 to edit without its video",
    )
    p.add_argument(
        "--out", required=True, type=Path, help="ROIs.h5 to write; if it exists it is loaded for editing (unless --new)"
    )
    p.add_argument("--load", type=Path, help="start from this ROIs.h5 (ours or face-rhythm's)")
    p.add_argument("--new", action="store_true", help="start empty even when --out exists")
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help=f"port to listen on (default {DEFAULT_PORT}, or the next free one; 0 = any)",
    )
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: reachable only from this machine)"
    )
    p.add_argument("--frame", type=int, default=0, help="first frame shown (default 0)")
    p.add_argument(
        "--spacing",
        type=int,
        default=DEFAULT_SPACING,
        help=f"initial seed-point spacing in pixels (default {DEFAULT_SPACING})",
    )
    p.add_argument(
        "--sessions",
        type=Path,
        default=Path("config/sessions.tsv"),
        help="sessions table to look SESSION up in (default config/sessions.tsv)",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log every request")
    return p


def build_app(args: argparse.Namespace) -> DrawerApp:
    """The :class:`DrawerApp` the CLI arguments describe."""
    if args.spacing < 1:
        raise ConfigError(f"--spacing must be >= 1 pixel, got {args.spacing}")
    src = resolve_source(args.source, args.sessions)
    is_h5 = src.suffix.lower() in (".h5", ".hdf5")
    video = None if is_h5 else src
    start = args.load
    if start is None and is_h5:
        start = src
    if start is None and args.out.exists() and not args.new:
        start = args.out
    drawing = None
    if start is not None:
        shape = None
        if video is not None:
            from .video import probe_video

            info = probe_video(video)
            shape = (info.height, info.width)
        drawing = load_drawing(start, shape=shape)
        logger.info("editing %s: ROIs %s", start, list(drawing.polygons))
    if drawing is not None and args.frame:
        drawing.frame_index = args.frame
    return DrawerApp(
        args.out, video=video, drawing=drawing, frame_index=args.frame, point_spacing=args.spacing, loaded_from=start
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``facerhythm-rois``; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        app = build_app(args)
    except FaceRhythmError as exc:
        print(f"facerhythm-rois: error: {exc}", file=sys.stderr)
        return 2
    if args.host not in _LOOPBACK:
        logger.warning(
            "binding %s: anyone who can reach this machine on that address can use "
            "the drawer; prefer the default 127.0.0.1 with an SSH tunnel",
            args.host,
        )
    try:
        srv = make_server(
            app, args.host, DEFAULT_PORT if args.port is None else args.port, port_tries=20 if args.port is None else 1
        )
    except OSError as exc:
        print(f"facerhythm-rois: error: {exc}", file=sys.stderr)
        return 2
    port = srv.server_address[1]
    print(ssh_hint(port, args.host), flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    print("ROI drawer stopped." + (f" Last saved file: {args.out}" if args.out.exists() else ""), flush=True)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
