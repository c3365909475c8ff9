"""The ROI drawer's drawing: named polygons and the seed-point ROIs, as the page edits them.

Plain functions over arrays, usable and tested without a browser:
:func:`drawing_from_payload` validates the page's JSON, :func:`drawing_to_rois` makes the
masks and seed points with the workflow's own code (:mod:`facerhythm_core.rois`),
:func:`save_drawing` writes an ``ROIs.h5`` in the layout the workflow reads and
:func:`load_drawing` reads one (ours or face-rhythm's) back. The server around them is
:mod:`facerhythm_core.roi_drawer`.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .errors import ROIError
from .rois import ROISet, load_rois_h5, make_points, rois_from_polygons, save_rois_h5

logger = logging.getLogger(__name__)

#: default grid spacing, as the config schema's ``rois.point_spacing``
DEFAULT_SPACING = 9
# HDF5 dataset names and config `point_rois` entries: no '/', no spaces
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,63}$")


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
