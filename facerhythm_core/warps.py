"""A warp from template to session coordinates (:class:`Registration`) and its use.

Coordinates are (x, y) pixels with pixel centres at integers. A
:class:`Registration` maps **template** coordinates to **moving** (session)
coordinates: a feature at template point ``p`` is found at ``warp_points(p)`` in the
session. ``matrix`` is the 3x3 homogeneous part; ``flow`` (optional, non-rigid) is a
displacement field on the session grid added after the matrix. Images and masks are
resampled through the inverse map; points and polygon vertices are mapped forward,
so the two stay consistent (``docs/alignment.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import ROIError

#: warp families, narrowest first (composing two warps gives the wider family)
CONSTRAINTS = ("translation", "euclidean", "affine", "homography")


@dataclass
class Registration:
    """A warp from template coordinates to moving (session) coordinates.

    Attributes
    ----------
    matrix : ndarray, float64, shape (3, 3)
        Homogeneous map of (x, y, 1) template points to the moving image.
    flow : ndarray, float32, shape (H, W, 2), or None
        Non-rigid residual on the moving grid: a point first mapped by ``matrix`` to
        ``q`` ends at ``q + flow(q)``.
    method, constraint : str
    info : dict
        Method details (ECC correlation, filter size used, ...).
    """

    matrix: np.ndarray
    flow: np.ndarray | None = None
    method: str = "identity"
    constraint: str = "translation"
    info: dict = field(default_factory=dict)

    def then(self, other: "Registration") -> "Registration":
        """Compose geometric parts: first ``self`` (A -> B), then ``other`` (B -> C)."""
        if self.flow is not None or other.flow is not None:
            raise ValueError("only geometric (flow-free) registrations can be composed")
        return Registration(
            other.matrix @ self.matrix,
            None,
            other.method,
            _wider(self.constraint, other.constraint),
            {"composed": True},
        )

    def inverse(self) -> "Registration":
        if self.flow is not None:
            raise ValueError("only geometric (flow-free) registrations can be inverted")
        return Registration(np.linalg.inv(self.matrix), None, self.method, self.constraint, dict(self.info))


def _wider(a: str, b: str) -> str:
    return CONSTRAINTS[max(CONSTRAINTS.index(a), CONSTRAINTS.index(b))]


def _apply_matrix(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    ph = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ m.T
    return ph[:, :2] / ph[:, 2:3]


def _sample(field_: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear samples of an (H, W, C) field at (x, y) points (edge-replicated)."""
    import cv2

    mx = np.ascontiguousarray(pts[:, 0].astype(np.float32)[None])
    my = np.ascontiguousarray(pts[:, 1].astype(np.float32)[None])
    out = cv2.remap(np.ascontiguousarray(field_, np.float32), mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(len(pts), -1).astype(np.float64)


def warp_points(points: np.ndarray, reg: Registration) -> np.ndarray:
    """Map (x, y) template points into the moving image.

    Returns
    -------
    ndarray, float64, shape (N, 2)
    """
    p = np.asarray(points, np.float64).reshape(-1, 2)
    if len(p) == 0:
        return p.copy()
    q = _apply_matrix(reg.matrix, p)
    if reg.flow is not None:
        q = q + _sample(reg.flow, q)
    return q


def inverse_map(reg: Registration, shape: tuple[int, int], n_iter: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """Template (x, y) coordinates of every moving-image pixel (for ``cv2.remap``).

    The non-rigid part is inverted by fixed-point iteration ``y <- q - flow(y)``.

    Returns
    -------
    map_x, map_y : ndarray, float32, shape (H, W)
    """
    import cv2

    h, w = shape
    qy, qx = np.mgrid[0:h, 0:w].astype(np.float32)
    yx, yy = qx, qy
    if reg.flow is not None:
        if reg.flow.shape[:2] != (h, w):
            raise ROIError(f"flow field {reg.flow.shape[:2]} does not match the output shape {(h, w)}")
        fx = np.ascontiguousarray(reg.flow[..., 0])
        fy = np.ascontiguousarray(reg.flow[..., 1])
        for _ in range(int(n_iter)):
            ux = cv2.remap(fx, yx, yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            uy = cv2.remap(fy, yx, yy, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            yx, yy = qx - ux, qy - uy
    minv = np.linalg.inv(reg.matrix)
    px = minv[0, 0] * yx + minv[0, 1] * yy + minv[0, 2]
    py = minv[1, 0] * yx + minv[1, 1] * yy + minv[1, 2]
    pz = minv[2, 0] * yx + minv[2, 1] * yy + minv[2, 2]
    return (px / pz).astype(np.float32), (py / pz).astype(np.float32)


def warp_image(
    image: np.ndarray,
    reg: Registration,
    shape: tuple[int, int] | None = None,
    border_value: float | None = None,
    interpolation: str = "linear",
) -> np.ndarray:
    """Resample a template-frame image into the moving frame.

    Parameters
    ----------
    image : ndarray, shape (H, W) or (H, W, C)
    reg : Registration
    shape : (H, W), optional
        Output shape (default: the input's).
    border_value : float, optional
        Fill outside the template (default: the image mean, as the reference).
    interpolation : {'linear', 'nearest', 'cubic'}
    """
    import cv2

    im = np.asarray(image)
    shape = tuple(shape or im.shape[:2])
    mx, my = inverse_map(reg, shape)
    flag = {"linear": cv2.INTER_LINEAR, "nearest": cv2.INTER_NEAREST, "cubic": cv2.INTER_CUBIC}[interpolation]
    bv = float(im.mean()) if border_value is None else float(border_value)
    src = im.astype(np.float32) if im.dtype == np.float64 else im
    out = cv2.remap(src, mx, my, flag, borderMode=cv2.BORDER_CONSTANT, borderValue=bv)
    return out.astype(im.dtype, copy=False)


def warp_mask(mask: np.ndarray, reg: Registration, shape: tuple[int, int] | None = None) -> np.ndarray:
    """Warp a bool mask into the moving frame (linear interpolation, threshold 0.5)."""
    m = warp_image(np.asarray(mask, np.float32), reg, shape, border_value=0.0)
    return m >= 0.5


def warp_rois(rois, reg: Registration, shape: tuple[int, int]):
    """Carry an ROI set from the template into the moving frame.

    Masks are resampled (:func:`warp_mask`), polygon vertices and seed points are
    mapped forward (:func:`warp_points`), so points, polygons and masks stay
    consistent with :func:`warp_image`. Point order and count are kept (sessions keep
    a one-to-one point correspondence); the example image is left unset.

    Parameters
    ----------
    rois : facerhythm_core.rois.ROISet
    reg : Registration
    shape : (H, W)
        Frame size of the moving session.

    Returns
    -------
    ROISet
    """
    from .rois import ROISet

    masks = {}
    for k, m in rois.masks.items():
        wm = warp_mask(m, reg, shape)
        if not wm.any():
            raise ROIError(f"ROI {k!r} falls entirely outside the session's frame after warping")
        masks[k] = wm
    polys = {k: warp_points(p, reg).astype(np.float32) for k, p in rois.polygons.items()}
    pts = None if rois.point_positions is None else warp_points(rois.point_positions, reg).astype(np.float32)
    return ROISet(masks=masks, polygons=polys, point_positions=pts, example_image=None)
