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

Below the HTTP layer are plain functions (usable and tested without a browser): the
drawing itself (:mod:`facerhythm_core.roi_drawing`: :func:`drawing_from_payload`,
:func:`drawing_to_rois`, :func:`save_drawing`, :func:`load_drawing`) and, here,
:func:`resolve_source` and :func:`read_example_frame`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import logging
import secrets
import socket
import sys
import threading
from collections import OrderedDict
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Mapping, Sequence
from urllib.parse import parse_qs, urlsplit

import numpy as np

from .tables import read_table
from .errors import ConfigError, FaceRhythmError, ROIError, VideoError
from .roi_drawing import DEFAULT_SPACING, Drawing, drawing_from_payload, drawing_to_rois, load_drawing, save_drawing

logger = logging.getLogger(__name__)

#: default port; the next free one is used when it is taken (unless --port is given)
DEFAULT_PORT = 8765
STATIC_DIR = Path(__file__).with_name("roi_drawer_static")
_STATIC_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_MAX_BODY = 16 * 1024 * 1024
_VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"}


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
