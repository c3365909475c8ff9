"""The tracker's parameters: :class:`TrackingParams`, their checks and the config reader."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Mapping

from .errors import ConfigError

__all__ = ["TrackingParams"]


@dataclass(frozen=True)
class TrackingParams:
    """Parameters of the tracker. Defaults are the reference pipeline defaults (§3.1).

    Attributes
    ----------
    mesh_rigidity : float
        rho, strength of the k-NN mesh force (per frame, dimensionless).
    mesh_n_neighbors : int
        k, size of each point's neighbour set, the point itself included.
    relaxation : float
        lambda in [0, 1], fraction of the way back to the home position per frame.
    win_size : (int, int)
        LK window (width, height) in pixels.
    max_level : int
        LK pyramid levels above the base image.
    criteria : (int, int, float)
        OpenCV termination criteria (type flags, max iterations, epsilon in pixels).
    clahe_clip_limit : float or None
        CLAHE clip limit; None turns CLAHE off.
    clahe_tile_grid_size : (int, int)
        CLAHE tile *count* (along x, along y), as OpenCV's ``tileGridSize``.
    threshold_displacement : float
        Distance from home (pixels) beyond which a point violates.
    frames_halted_before, frames_halted_after : int
        B and A: frames before / after a violation during which flagged points are held;
        a violation rewinds tracking by B frames.
    max_rewinds : int or None
        Rewinds allowed per stream; past it violations still hold points but no longer
        rewind. None = unbounded (the reference; can loop for a long time).
    relaxation_during_freeze_frames : bool
        On ``frames_freeze`` frames, still apply mesh and relaxation (True) or copy the
        previous positions unchanged (False).
    crop : bool
        Process only the tracking mask's bounding box plus a margin (faster; identical
        up to float rounding, see ``docs/tracking.md``). False = full frames, exactly as
        the reference.
    legacy_rewind : bool
        Reproduce the reference's rewind bug (the replay starts from the stale
        positions of the rewind frame instead of the frame before). For comparisons only.
    progress_every : int
        Log a progress line every this many processed frames.
    """

    mesh_rigidity: float = 0.025
    mesh_n_neighbors: int = 8
    relaxation: float = 0.0015
    win_size: tuple[int, int] = (20, 20)
    max_level: int = 2
    criteria: tuple[int, int, float] = (3, 2, 0.03)
    clahe_clip_limit: float | None = 40.0
    clahe_tile_grid_size: tuple[int, int] = (150, 150)
    threshold_displacement: float = 150.0
    frames_halted_before: int = 10
    frames_halted_after: int = 10
    max_rewinds: int | None = 1000
    relaxation_during_freeze_frames: bool = True
    crop: bool = True
    legacy_rewind: bool = False
    progress_every: int = 500

    def __post_init__(self):
        for check in (_check_mesh, _check_lk, _check_clahe, _check_violations):
            check(self)
        _normalise_types(self)

    @classmethod
    def from_config(cls, cfg: Mapping) -> "TrackingParams":
        """Build from the config's ``tracking`` section (schema names).

        Unknown keys that belong to the workflow (``device``, ``contiguous``,
        ``idx_start``) are ignored here; anything else unknown is an error.
        """
        cfg = dict(cfg)
        known_elsewhere = {"device", "contiguous", "idx_start"}
        kw: dict = {}
        clahe_given = "clahe" in cfg
        clahe = cfg.pop("clahe", None)
        if clahe_given:
            if clahe is None:
                kw["clahe_clip_limit"] = None
            else:
                extra = set(clahe) - {"clip_limit", "tile_grid_size"}
                if extra:
                    raise ConfigError(
                        f"tracking.clahe: unknown keys {sorted(extra)}; allowed: clip_limit, tile_grid_size"
                    )
                kw["clahe_clip_limit"] = float(clahe.get("clip_limit", 40.0))
                kw["clahe_tile_grid_size"] = tuple(clahe.get("tile_grid_size", (150, 150)))
        fields = set(cls.__dataclass_fields__)
        for k, v in cfg.items():
            if k in known_elsewhere:
                continue
            if k not in fields:
                raise ConfigError(f"tracking.{k}: unknown parameter. Known: {sorted(fields | known_elsewhere)}")
            kw[k] = tuple(v) if isinstance(v, list) else v
        return cls(**kw)

    @classmethod
    def reference_pipeline(cls, **overrides) -> "TrackingParams":
        """Exactly the reference pipeline's settings (§3.1), for trajectory comparisons.

        Full frames (no crop), unbounded rewinds and the reference's stale-rewind
        behaviour. Neighbour ties still break deterministically (pass the reference's
        ``neighbors`` to :func:`track_stream` to reproduce its mesh exactly).
        """
        return replace(cls(crop=False, max_rewinds=None, legacy_rewind=True), **overrides)

    @classmethod
    def reference_class_defaults(cls, **overrides) -> "TrackingParams":
        """The reference ``PointTracker`` constructor's own defaults (§3.2)."""
        return replace(
            cls(
                mesh_rigidity=0.005,
                mesh_n_neighbors=10,
                relaxation=0.5,
                win_size=(15, 15),
                max_level=2,
                criteria=(3, 10, 0.03),
                threshold_displacement=25.0,
                frames_halted_before=30,
                frames_halted_after=30,
                crop=False,
                max_rewinds=None,
                legacy_rewind=True,
            ),
            **overrides,
        )

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def lk_criteria(self) -> tuple[int, int, float]:
        return self.criteria


# --------------------------------------------------------------------------- checks


def _bad(key: str, why: str):
    raise ConfigError(f"tracking.{key}: {why}")


def _check_mesh(p: TrackingParams) -> None:
    """Mesh and relaxation strengths."""
    if not (p.mesh_rigidity >= 0 and math.isfinite(p.mesh_rigidity)):
        _bad("mesh_rigidity", f"must be a finite number >= 0, got {p.mesh_rigidity!r}")
    if int(p.mesh_n_neighbors) < 1:
        _bad("mesh_n_neighbors", f"must be >= 1 (the point itself counts), got {p.mesh_n_neighbors!r}")
    if not 0 <= p.relaxation <= 1:
        _bad("relaxation", f"must lie in [0, 1], got {p.relaxation!r}")


def _check_lk(p: TrackingParams) -> None:
    """LK window, pyramid depth and termination criteria."""
    if len(p.win_size) != 2 or min(p.win_size) < 3:
        _bad("win_size", f"must be two integers >= 3 (width, height), got {p.win_size!r}")
    if int(p.max_level) < 0:
        _bad("max_level", f"must be >= 0, got {p.max_level!r}")
    c = p.criteria
    if len(c) != 3 or int(c[0]) not in (1, 2, 3) or int(c[1]) < 1 or not float(c[2]) >= 0:
        _bad(
            "criteria",
            "must be [type, max_iter, eps] with type 1 (COUNT), 2 (EPS) or 3 "
            f"(both), max_iter >= 1 and eps >= 0; got {c!r}",
        )


def _check_clahe(p: TrackingParams) -> None:
    """CLAHE clip limit and tile grid (nothing to check when CLAHE is off)."""
    if p.clahe_clip_limit is None:
        return
    if not p.clahe_clip_limit > 0:
        _bad("clahe.clip_limit", f"must be > 0 (use clahe: null to turn CLAHE off), got {p.clahe_clip_limit!r}")
    if len(p.clahe_tile_grid_size) != 2 or min(p.clahe_tile_grid_size) < 1:
        _bad("clahe.tile_grid_size", f"must be two integers >= 1, got {p.clahe_tile_grid_size!r}")


def _check_violations(p: TrackingParams) -> None:
    """Violation threshold, halt windows, rewind cap and the progress interval."""
    if not p.threshold_displacement > 0:
        _bad("threshold_displacement", f"must be > 0 pixels, got {p.threshold_displacement!r}")
    if int(p.frames_halted_before) < 0 or int(p.frames_halted_after) < 0:
        _bad("frames_halted_before/after", "must be >= 0")
    if p.max_rewinds is not None and int(p.max_rewinds) < 0:
        _bad("max_rewinds", f"must be >= 0 or null, got {p.max_rewinds!r}")
    if int(p.progress_every) < 1:
        _bad("progress_every", f"must be >= 1, got {p.progress_every!r}")


def _normalise_types(p: TrackingParams) -> None:
    """Plain int/float tuples, so that equality and provenance are stable."""
    object.__setattr__(p, "win_size", (int(p.win_size[0]), int(p.win_size[1])))
    object.__setattr__(p, "criteria", (int(p.criteria[0]), int(p.criteria[1]), float(p.criteria[2])))
    object.__setattr__(p, "clahe_tile_grid_size", (int(p.clahe_tile_grid_size[0]), int(p.clahe_tile_grid_size[1])))
    for k in ("mesh_n_neighbors", "max_level", "frames_halted_before", "frames_halted_after", "progress_every"):
        object.__setattr__(p, k, int(getattr(p, k)))
