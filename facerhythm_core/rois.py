"""Regions of interest: polygons, masks, seed-point grids and the ROIs.h5 file.

The file layout is the reference's (``mask_images/*``, ``roi_points/*``,
``point_positions``, ``exampleImage``), so files drawn for face-rhythm load here and
files written here load there.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import ROIError
from .keys import natural_key

logger = logging.getLogger(__name__)


@dataclass
class ROISet:
    """Named ROIs of one session.

    Attributes
    ----------
    masks : dict of str -> ndarray, bool, shape (H, W)
        One mask per ROI, in insertion (file) order.
    polygons : dict of str -> ndarray, float32, shape (V, 2)
        Polygon vertices (x, y) in pixels; may be empty for mask-only ROIs.
    point_positions : ndarray, float32, shape (N, 2), or None
        Seed points (x, y).
    example_image : ndarray, uint8, shape (H, W, 3), or None
    """

    masks: dict = field(default_factory=dict)
    polygons: dict = field(default_factory=dict)
    point_positions: np.ndarray | None = None
    example_image: np.ndarray | None = None

    @property
    def names(self) -> list[str]:
        return list(self.masks)

    @property
    def shape(self) -> tuple[int, int]:
        if not self.masks:
            raise ROIError("ROI set has no masks")
        return tuple(next(iter(self.masks.values())).shape)

    def select(self, keys: Sequence[int | str], what: str = "ROI") -> list[np.ndarray]:
        """Masks by index (file order) or name; clear error for unknown keys."""
        out = []
        names = self.names
        for k in keys:
            if isinstance(k, (int, np.integer)) and not isinstance(k, bool):
                if not -len(names) <= k < len(names):
                    raise ROIError(f"{what} index {k} does not exist: this ROI set has {len(names)} ROI(s) {names}")
                out.append(self.masks[names[k]])
            else:
                if k not in self.masks:
                    raise ROIError(f"{what} {k!r} does not exist: this ROI set has {names}")
                out.append(self.masks[k])
        return out


def polygon_mask(vertices: np.ndarray, shape: tuple[int, int], name: str = "ROI") -> np.ndarray:
    """Rasterise a polygon into a bool mask.

    Parameters
    ----------
    vertices : array_like, shape (V, 2)
        (x, y) vertices in pixel coordinates (pixel centres at integers).
    shape : (H, W)
    name : str
        Used in error messages.

    Returns
    -------
    ndarray, bool, shape (H, W)

    Raises
    ------
    ROIError
        Fewer than 3 vertices, a vertex outside the frame, or an empty mask.
    """
    import cv2

    v = np.asarray(vertices, dtype=np.float64)
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3:
        raise ROIError(f"ROI {name!r}: a polygon needs at least 3 (x, y) vertices, got shape {v.shape}")
    if not np.isfinite(v).all():
        raise ROIError(f"ROI {name!r}: vertices must be finite numbers")
    h, w = shape
    out = (v[:, 0] < -0.5) | (v[:, 0] > w - 0.5) | (v[:, 1] < -0.5) | (v[:, 1] > h - 0.5)
    if out.any():
        bad = v[out][:3].tolist()
        raise ROIError(
            f"ROI {name!r}: vertices {bad} lie outside the {w}x{h} frame (x must be in [0, {w - 1}], y in [0, {h - 1}])"
        )
    mask = np.zeros((h, w), np.uint8)
    # fixed-point with 8 fractional bits keeps sub-pixel vertices
    pts = np.round(v * 256).astype(np.int32).reshape(-1, 1, 2)
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=8)
    if not mask.any():
        raise ROIError(f"ROI {name!r}: the polygon covers no pixel (degenerate or too small)")
    return mask.astype(bool)


def make_points(masks: np.ndarray | Sequence[np.ndarray], point_spacing: int = 10) -> np.ndarray:
    """Square grid of seed points inside the intersection of masks (reference ``make_points``).

    The grid is anchored at the top-left corner of the intersection's bounding box,
    with candidates ``y_min, y_min + s, ... < y_max`` (likewise x), ordered x-major
    (all y for the first x, then the next x), as the reference.

    Parameters
    ----------
    masks : ndarray (H, W) bool, ndarray (M, H, W), or sequence of (H, W)
    point_spacing : int
        Grid spacing in pixels (a float is rounded, with a warning).

    Returns
    -------
    ndarray, float32, shape (N, 2)
        (x, y) points.

    Raises
    ------
    ROIError
        Empty intersection or no grid point inside it.
    """
    if isinstance(masks, np.ndarray) and masks.ndim == 2:
        stack = masks[None]
    else:
        stack = np.stack([np.asarray(m) for m in masks]) if not isinstance(masks, np.ndarray) else masks
    if stack.ndim != 3 or len(stack) == 0:
        raise ROIError(f"make_points needs one or more 2-D masks, got shape {np.shape(stack)}")
    if point_spacing != int(point_spacing):
        logger.warning("point_spacing %s rounded to %d", point_spacing, round(point_spacing))
    spacing = int(round(point_spacing))
    if spacing < 1:
        raise ROIError(f"point_spacing must be >= 1 pixel, got {point_spacing}")
    mask = np.logical_and.reduce(stack.astype(bool), axis=0)
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        raise ROIError("the intersection of the point ROIs is empty: choose ROIs that overlap (config rois.point_rois)")
    gy = np.arange(ys.min(), ys.max(), spacing)
    gx = np.arange(xs.min(), xs.max(), spacing)
    xx, yy = np.meshgrid(gx, gy, indexing="ij")  # x-major order, as the reference
    xx, yy = xx.ravel(), yy.ravel()
    keep = mask[yy, xx]
    pts = np.stack([xx[keep], yy[keep]], axis=1).astype(np.float32)
    if len(pts) == 0:
        raise ROIError(
            f"no seed point falls inside the point ROIs with spacing {spacing} px: "
            "lower rois.point_spacing or draw a larger ROI"
        )
    return pts


def flip_lr(rois: ROISet) -> ROISet:
    """Mirror an ROI set left-right, returning a new set.

    Masks map column x to W - 1 - x, and so do polygon vertices and points (pixel
    centres at integers). The reference maps points to W - x, one pixel off its own
    flipped masks; this keeps points and masks consistent.
    """
    h, w = rois.shape
    out = ROISet(
        masks={k: m[:, ::-1].copy() for k, m in rois.masks.items()},
        polygons={k: _flip_xy(p, w) for k, p in rois.polygons.items()},
        point_positions=None if rois.point_positions is None else _flip_xy(rois.point_positions, w),
        example_image=None if rois.example_image is None else rois.example_image[:, ::-1].copy(),
    )
    return out


def _flip_xy(p: np.ndarray, w: int) -> np.ndarray:
    q = np.array(p, dtype=np.float32, copy=True)
    if q.size:
        q[:, 0] = (w - 1) - q[:, 0]
    return q


def rois_from_polygons(
    polygons: Mapping[str, Sequence], shape: tuple[int, int], example_image: np.ndarray | None = None
) -> ROISet:
    """Build an ROI set from named polygons ((x, y) vertices) for a frame of ``shape``."""
    if not polygons:
        raise ROIError("no polygons given")
    masks, polys = {}, {}
    for name, verts in polygons.items():
        polys[str(name)] = np.asarray(verts, dtype=np.float32)
        masks[str(name)] = polygon_mask(polys[str(name)], shape, name=str(name))
    return ROISet(masks=masks, polygons=polys, example_image=example_image)


def _dataset(f, name: str, path: Path) -> np.ndarray:
    """A dataset of the ROI file as a numeric array; ROIError naming file and dataset otherwise."""
    import h5py

    obj = f[name]
    if not isinstance(obj, h5py.Dataset):
        raise ROIError(f"ROI file {path}: {name} is a group, not a dataset (an array)")
    try:
        a = np.asarray(obj[()])
    except (OSError, ValueError, TypeError) as exc:
        raise ROIError(f"ROI file {path}: cannot read dataset {name}: {exc}") from None
    if a.dtype.kind not in "biuf":
        raise ROIError(
            f"ROI file {path}: {name} holds {a.dtype} values, not numbers "
            f"(dtype kind {a.dtype.kind!r}); write it as a numeric array"
        )
    return a


def _check_finite(a: np.ndarray, name: str, path: Path, what: str) -> None:
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = ~np.isfinite(a)
        where = np.argwhere(bad)[0].tolist()
        raise ROIError(
            f"ROI file {path}: {name} holds {int(bad.sum())} NaN or infinite value(s), "
            f"the first at index {where}; {what}"
        )


def _read_masks(f, path: Path) -> dict:
    import h5py

    group = f.get("mask_images")
    if not isinstance(group, h5py.Group) or not len(group):
        raise ROIError(
            f"ROI file {path} has no 'mask_images' group with masks "
            "(expected mask_images/mask_0, ... as bool (H, W) arrays)"
        )
    masks = {}
    for k in sorted(group.keys(), key=natural_key):
        name = f"mask_images/{k}"
        m = _dataset(f, name, path)
        if m.ndim != 2:
            raise ROIError(f"ROI file {path}: {name} must be 2-D, has shape {m.shape}")
        _check_finite(m, name, path, "a mask holds true/false or 0/1 for every pixel")
        masks[k] = m.astype(bool)
    shapes = {k: m.shape for k, m in masks.items()}
    if len(set(shapes.values())) != 1:
        listing = ", ".join(f"{k} {w}x{h}" for k, (h, w) in shapes.items())
        raise ROIError(
            f"ROI file {path}: masks have different shapes ({listing}); every mask must cover the whole frame"
        )
    return masks


def _read_polygons(f, path: Path, n_masks: int) -> dict:
    import h5py

    group = f.get("roi_points", {})
    if not isinstance(group, (h5py.Group, dict)):
        raise ROIError(
            f"ROI file {path}: roi_points must be a group of (V, 2) polygons (roi_points/ROI_0, ...), not a dataset"
        )
    polys = {}
    for k in sorted(group.keys(), key=natural_key):
        name = f"roi_points/{k}"
        v = _dataset(f, name, path)
        if v.ndim != 2 or v.shape[1] != 2:
            raise ROIError(f"ROI file {path}: {name} must be (V, 2) polygon vertices (x, y), has shape {v.shape}")
        _check_finite(v, name, path, "polygon vertices must be pixel positions")
        polys[k] = v.astype(np.float32)
    if polys and len(polys) != n_masks:
        raise ROIError(
            f"ROI file {path} has {len(polys)} polygon(s) in roi_points but {n_masks} "
            "mask(s) in mask_images; each ROI is one polygon and its mask (delete "
            "roi_points to use the masks alone)"
        )
    return polys


def _read_points(f, path: Path) -> np.ndarray | None:
    if "point_positions" not in f:
        return None
    pts = _dataset(f, "point_positions", path)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ROIError(f"ROI file {path}: point_positions must be (N, 2), has shape {pts.shape}")
    _check_finite(pts, "point_positions", path, "seed points must be (x, y) pixel positions")
    if "num_points" in f:
        n = _dataset(f, "num_points", path)
        if n.size != 1 or int(n.reshape(-1)[0]) != len(pts):
            raise ROIError(
                f"ROI file {path}: num_points says {n.reshape(-1).tolist()} but "
                f"point_positions holds {len(pts)} points; fix or delete num_points"
            )
    return pts.astype(np.float32)


def _read_example_image(f, path: Path, mask_shape: tuple[int, int]) -> np.ndarray | None:
    if "exampleImage" not in f:
        return None
    img = _dataset(f, "exampleImage", path)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3, 4)):
        raise ROIError(f"ROI file {path}: exampleImage must be an (H, W) or (H, W, 3) image, has shape {img.shape}")
    if img.shape[:2] != tuple(mask_shape):
        h, w = mask_shape
        raise ROIError(
            f"ROI file {path}: exampleImage is {img.shape[1]}x{img.shape[0]} but the masks "
            f"in mask_images are {w}x{h}; the image must be the frame the ROIs were "
            "drawn on (delete exampleImage to use the video's first frame)"
        )
    _check_finite(img, "exampleImage", path, "an image holds finite grey or colour values")
    if img.dtype != np.uint8:
        scale = 255.0 if img.size and img.max() <= 1.0 else 1.0  # the reference re-saves [0, 1] floats
        img = np.clip(np.round(img.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    if img.ndim == 2:
        img = img[..., None]
    return np.repeat(img, 3, axis=2) if img.shape[2] == 1 else np.ascontiguousarray(img[..., :3])


def load_rois_h5(path: str | Path) -> ROISet:
    """Read an ROIs.h5 in the reference layout, checking its parts against each other.

    Required: ``mask_images/*`` (bool or 0/1 (H, W), equal shapes). Optional:
    ``roi_points/*`` ((V, 2), one per mask), ``point_positions`` (N, 2) with
    ``num_points`` = N if present, ``exampleImage`` ((H, W) or (H, W, 3), uint8, or
    float in [0, 1] as the reference re-saves it; the masks' size). Every dataset must
    be numeric and finite.

    Raises
    ------
    ROIError
        Missing file, not HDF5, or a missing, malformed, non-numeric, non-finite or
        inconsistent dataset; the message names the file and the dataset.
    """
    import h5py

    path = Path(path)
    if not path.exists():
        raise ROIError(f"ROI file not found: {path}")
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise ROIError(f"ROI file {path} is not a readable HDF5 file: {exc}") from exc
    with f:
        masks = _read_masks(f, path)
        shape = next(iter(masks.values())).shape
        polys = _read_polygons(f, path, len(masks))
        pts = _read_points(f, path)
        img = _read_example_image(f, path, shape)
    return ROISet(masks=masks, polygons=polys, point_positions=pts, example_image=img)


def save_rois_h5(
    path: str | Path, rois: ROISet, extra: Mapping[str, np.ndarray] | None = None, attrs: Mapping | None = None
) -> None:
    """Write an ROI set in the reference layout (plus ``extra`` datasets and ``attrs``).

    Writes ``path`` directly; wrap the call in :func:`facerhythm_core.io.atomic_output`
    for an atomic file.
    """
    import h5py

    with h5py.File(path, "w") as f:
        g = f.create_group("mask_images")
        for k, m in rois.masks.items():
            g.create_dataset(k, data=np.asarray(m, dtype=bool), compression="gzip", compression_opts=1)
        g = f.create_group("roi_points")
        for k, p in rois.polygons.items():
            g.create_dataset(k, data=np.asarray(p, dtype=np.float32))
        if rois.point_positions is not None:
            f.create_dataset("point_positions", data=np.asarray(rois.point_positions, dtype=np.float32))
            f.create_dataset("num_points", data=len(rois.point_positions))
        if rois.example_image is not None:
            f.create_dataset("exampleImage", data=np.asarray(rois.example_image, dtype=np.uint8))
        for k, v in (extra or {}).items():
            f.create_dataset(k, data=v)
        for k, v in (attrs or {}).items():
            f.attrs[k] = v


def resolve_tracking_mask(rois: ROISet, tracking_rois: Sequence[int | str] | None) -> np.ndarray:
    """The mask tracking runs in: None = union of all ROIs, [] = whole frame, else AND of listed."""
    if tracking_rois is None:
        return np.logical_or.reduce(np.stack(list(rois.masks.values())), axis=0)
    if len(tracking_rois) == 0:
        return np.ones(rois.shape, bool)
    return np.logical_and.reduce(np.stack(rois.select(tracking_rois, "tracking ROI")), axis=0)


def build_session_rois(
    source: str,
    frame_shape: tuple[int, int],
    first_video: str | None = None,
    roi_file: str | None = None,
    polygons: Mapping | None = None,
    point_rois: Sequence[int | str] = (0,),
    tracking_rois: Sequence | None = None,
    point_spacing: int = 9,
    use_file_points: bool = True,
    flip: bool = False,
) -> tuple[ROISet, np.ndarray]:
    """Turn a session's ROI source into a checked ROI set with seed points.

    Parameters
    ----------
    source : str
        The sessions-table value (used in messages): a path, ``config:NAME``, ...
    frame_shape : (H, W)
        Frame size of the session's videos.
    first_video : path, optional
        Where the example frame comes from when the ROI source has none.
    roi_file : path, optional
        ROIs.h5 to read (file sources).
    polygons : mapping, optional
        Named polygons (config sources).
    point_rois, tracking_rois, point_spacing, use_file_points, flip
        See the ``rois`` section of the config schema.

    Returns
    -------
    rois : ROISet
        With ``point_positions`` and ``example_image`` set.
    tracking_mask : ndarray, bool, shape (H, W)
    """
    h, w = frame_shape
    if roi_file is not None:
        rois = load_rois_h5(roi_file)
        if rois.shape != (h, w):
            raise ROIError(
                f"ROI file {roi_file} has {rois.shape[1]}x{rois.shape[0]} masks but the "
                f"session's videos are {w}x{h}; draw the ROIs on a frame of these videos"
            )
    elif polygons:
        rois = rois_from_polygons(polygons, (h, w))
    else:
        raise ROIError(f"ROI source {source!r} gave no ROI file and no polygons")
    if rois.example_image is None and first_video is not None:
        from .video import read_frame

        rois.example_image = read_frame(first_video, 0)
    if flip:
        rois = flip_lr(rois)
    if use_file_points and rois.point_positions is not None:
        pts = rois.point_positions
        if len(pts) == 0:
            raise ROIError(f"ROI source {source!r}: point_positions is empty (zero points)")
        bad = (pts[:, 0] < 0) | (pts[:, 0] > w - 1) | (pts[:, 1] < 0) | (pts[:, 1] > h - 1)
        if bad.any():
            raise ROIError(
                f"ROI source {source!r}: {int(bad.sum())} of {len(pts)} points in "
                f"point_positions lie outside the {w}x{h} frame, e.g. {pts[bad][0].tolist()}"
            )
    else:
        try:
            rois.point_positions = make_points(rois.select(point_rois, "point ROI"), point_spacing)
        except ROIError as exc:
            raise ROIError(f"ROI source {source!r}: {exc}") from None
    mask = resolve_tracking_mask(rois, tracking_rois)
    if not mask.any():
        raise ROIError(f"ROI source {source!r}: the tracking mask (rois.tracking_rois={tracking_rois}) is empty")
    pts_i = np.clip(np.round(rois.point_positions).astype(int), 0, [w - 1, h - 1])
    outside = ~mask[pts_i[:, 1], pts_i[:, 0]]
    if outside.any():
        logger.warning(
            "%d of %d seed points lie outside the tracking mask; they will see blacked-out pixels",
            int(outside.sum()),
            len(outside),
        )
    return rois, mask


def save_example_png(path: str | Path, rois: ROISet, tracking_mask: np.ndarray | None = None) -> None:
    """Save the example frame with ROI outlines and seed points drawn on it (PNG)."""
    import cv2

    img = rois.example_image
    if img is None:
        raise ROIError("ROI set has no example image to draw on")
    canvas = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR)
    # Okabe-Ito colours (colour-blind safe), BGR
    colours = [(0, 159, 230), (233, 180, 86), (115, 158, 0), (66, 228, 240), (178, 114, 0), (0, 94, 213)]
    if tracking_mask is not None:
        cs, _ = cv2.findContours(tracking_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, cs, -1, (255, 255, 255), 1)
    for i, (name, m) in enumerate(rois.masks.items()):
        cs, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(canvas, cs, -1, colours[i % len(colours)], 1)
    for x, y in np.round(rois.point_positions).astype(int):
        cv2.circle(canvas, (int(x), int(y)), 1, (0, 0, 255), -1)
    ok, png = cv2.imencode(".png", canvas)  # the bytes cv2.imwrite writes
    if not ok:
        raise ROIError(f"could not encode the example frame as PNG for {path}")
    # written by Python, so that a full or read-only disk raises its real OSError
    Path(path).write_bytes(png.tobytes())
