"""The whole-spine phantom: a thoracic spine (T1 to L1 by default) with its kyphosis, several
epidural masses at distinct levels and grades, and a vertebra labelmap in the VerSe numbering.

Anatomy. Every shape lives in *curvilinear* coordinates ``(x, y, s)``: ``s`` is the arc
length (mm, increasing superiorly) along the canal centreline, a smooth curve in the sagittal
plane of the *body frame* (left, posterior, superior); ``x`` (left) and ``y`` (posterior) are
distances in the plane perpendicular to the centreline at ``s``. A point of the body frame is
``c(s) + x e_left + y n(s)`` with ``n(s)`` the posterior normal of the curve. The curve's
sagittal angle ``phi(s)`` bends by a raised-cosine curvature profile: kyphosis over T1-T12,
lordosis over L1-L5, straight elsewhere. The thecal sac, cord, canal and epidural fat are
those of the single-level phantom (:class:`~.anatomy.PhantomAnatomy`, constant along ``s``);
each vertebra (body, discs, posterior elements) has its own size, growing caudally, with its
posterior wall on the canal. Each lesion is the single-level phantom's mass for its grade
(:func:`~.anatomy.make_anatomy`), centred on its vertebral body's centre, in the local frame of
the curved canal. Sections perpendicular to the centreline are therefore undeformed copies of
the single-level phantom's sections, and its section truth (:mod:`.truth`) holds exactly.

Images, labels and truth follow :mod:`.imaging`: T2/T1 on axial slices with partial volume
at boundary voxels, a smooth bias and Rician noise; labels (1 cord, 2 CSF, 3 mass, 4 bone) and
the vertebrae (VerSe labels) at voxel centres; CT and PET in the scanner frame displaced by a
known rigid transform. Mass volumes include the Jacobian ``1 - phi'(s) y`` of the curved
frame (exact up to a 1D quadrature).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..outputs import atomic_dir, check_output_dir
from ..progress import CancelCallback, ProgressCallback, check, no_progress
from .anatomy import (
    CORD,
    CORTICAL,
    CSF,
    CT_HU,
    DISC,
    FAT,
    GRADES,
    MARROW,
    MASS,
    OTHER,
    T1_LEVELS,
    T2_LEVELS,
    TISSUE_TO_LABEL,
    PhantomAnatomy,
    ellipse_q,
    make_anatomy,
)
from .files import write_study_files
from .imaging import (
    Grid,
    Pose,
    compression_truth,
    partial_volume_mean,
    pet_from_tissue,
    pet_truth,
    pose_at,
    pose_truth,
    rician,
    tissue_on_grid,
)
from .truth import compute_truth, section_truth

# ---------------------------------------------------------------------------------------
# VerSe numbering and the vertebrae the phantom models
# ---------------------------------------------------------------------------------------
VERSE_NAMES = {
    **{i: f"C{i}" for i in range(1, 8)},
    **{7 + i: f"T{i}" for i in range(1, 13)},
    **{19 + i: f"L{i}" for i in range(1, 7)},
    26: "S",
}
"""VerSe vertebra labels: 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 26 sacrum."""
VERSE_LABELS = {name: label for label, name in VERSE_NAMES.items()}

# Body height, disc below, half width and half depth (mm) at anchor vertebrae (VerSe label);
# the others are interpolated. Adult averages rounded: thoracic bodies 18-25 mm tall, discs
# 4 mm (upper thoracic) to 9 mm (lower lumbar), widths 27-48 mm, depths 16-34 mm.
_SIZE_ANCHORS = {
    6: (13.5, 5.0, 11.5, 7.5),  # C6
    7: (14.5, 5.0, 12.5, 8.0),  # C7
    8: (18.0, 4.0, 13.5, 9.0),  # T1
    13: (21.0, 4.5, 16.0, 11.5),  # T6
    19: (24.5, 7.0, 19.5, 14.0),  # T12
    20: (26.5, 8.5, 20.5, 15.0),  # L1
    24: (27.0, 9.5, 24.0, 17.0),  # L5
}
_MODELLED = range(6, 25)  # C6..L5: the requested levels and at least one neighbour each side
_REQUESTABLE = range(7, 24)  # C7..L4
_THORACIC = (8, 19)
_LUMBAR = (20, 24)

DEFAULT_LEVELS = ("T1", "L1")
DEFAULT_LESIONS = (("T4", "2"), ("T7", "1b"), ("T10", "3"))


def level_name(label: int) -> str:
    """VerSe label -> level name (``8 -> "T1"``)."""
    return VERSE_NAMES[int(label)]


def _level_label(name: str, what: str) -> int:
    label = VERSE_LABELS.get(name.strip().upper())
    if label is None:
        raise InputError(
            f"unknown vertebral level {name!r} in {what}",
            hint="name levels as C7, T1 ... T12, L1 ... L4",
        )
    return label


def parse_levels(text: str) -> tuple[str, str]:
    """``"T1-L1"`` -> ``("T1", "L1")``, the cranial level first."""
    parts = text.split("-")
    if len(parts) != 2:
        raise InputError(f"levels {text!r} are not a range", hint="write e.g. T1-L1")
    first, last = (_level_label(p, "--levels") for p in parts)
    if first >= last:
        raise InputError(
            f"levels {text!r}: the first level must lie above the last",
            hint="write the cranial level first, e.g. T1-L1",
        )
    if first not in _REQUESTABLE or last not in _REQUESTABLE:
        raise InputError(
            f"levels {text!r} reach beyond what the phantom models",
            hint=f"choose levels from {level_name(_REQUESTABLE[0])} to {level_name(_REQUESTABLE[-1])}",
        )
    return level_name(first), level_name(last)


def parse_lesions(text: str) -> tuple[tuple[str, str], ...]:
    """``"T4:2,T9:1b"`` -> ``(("T4", "2"), ("T9", "1b"))``; ``"none"`` or ``""`` -> ``()``."""
    if text.strip().lower() in ("", "none"):
        return ()
    lesions = []
    for item in text.split(","):
        level, sep, grade = item.partition(":")
        if not sep:
            raise InputError(
                f"lesion {item.strip()!r} has no grade", hint='write LEVEL:GRADE, e.g. "T4:2,T9:1b"'
            )
        grade = grade.strip().lower()
        if grade not in GRADES:
            raise InputError(
                f"unknown Bilsky grade {grade!r} for the lesion at {level.strip()}",
                hint=f"choose one of {', '.join(GRADES)}",
            )
        lesions.append((level_name(_level_label(level, "--lesions")), grade))
    return tuple(lesions)


def random_lesions(
    seed: int, levels: tuple[str, str] = ("T2", "T12"), count: int = 4
) -> tuple[tuple[str, str], ...]:
    """``count`` lesions at random levels within ``levels`` (never two at neighbouring
    levels, so their masses cannot meet) with random grades, cranial first: a case of the
    multi-lesion battery (``benchmarks/bench_lesions.py``, ``Testing/test_lesions.py``).
    Draws again until :func:`make_spine_anatomy` accepts them (a grade-0 mass must fit its
    body)."""
    first, last = (VERSE_LABELS[name] for name in levels)
    rng = np.random.default_rng([int(seed), 0x1E5])
    for _ in range(200):
        labels = sorted(rng.choice(np.arange(first + 1, last), size=count, replace=False))
        if np.any(np.diff(labels) < 2):
            continue
        lesions = tuple((level_name(v), str(rng.choice(GRADES))) for v in labels)
        try:
            make_spine_anatomy(levels, lesions, seed)
        except InputError:
            continue
        return lesions
    raise InputError(f"no {count} lesions fit between {levels[0]} and {levels[1]}")


# ---------------------------------------------------------------------------------------
# The curved centreline
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Centreline:
    """A planar curve in the body frame's sagittal plane, tabulated on a uniform ``s`` grid.

    ``table`` columns (:data:`COLUMNS`): canal centre ``y`` and ``z`` (mm, body frame), the
    sine and cosine of the sagittal angle ``phi`` (the tangent is ``(0, sin phi, cos phi)``,
    the posterior normal ``(0, cos phi, -sin phi)``) and ``dphi_ds`` (1/mm, the signed
    curvature). Rows are interpolated linearly (0.1 mm steps: the error is below 1e-6 mm).
    """

    COLUMNS = ("y", "z", "sin_phi", "cos_phi", "dphi_ds")

    s0_mm: float
    ds_mm: float
    table: np.ndarray = field(repr=False)

    @classmethod
    def from_curvature(cls, s_mm: np.ndarray, dphi_ds: np.ndarray, s_chord: tuple[float, float]):
        """Integrate the curvature; rotate so the chord between ``s_chord`` is vertical and
        translate so that ``c(0) = 0``."""
        ds = float(s_mm[1] - s_mm[0])

        def cumulative(f):
            return np.concatenate([[0.0], np.cumsum((f[1:] + f[:-1]) * ds / 2)])

        phi = cumulative(dphi_ds)
        phi -= np.interp(0.0, s_mm, phi)
        y, z = cumulative(np.sin(phi)), cumulative(np.cos(phi))
        (y0, y1), (z0, z1) = (np.interp(s_chord, s_mm, v) for v in (y, z))
        phi -= math.atan2(y1 - y0, z1 - z0)
        y, z = cumulative(np.sin(phi)), cumulative(np.cos(phi))
        y -= np.interp(0.0, s_mm, y)
        z -= np.interp(0.0, s_mm, z)
        table = np.stack([y, z, np.sin(phi), np.cos(phi), dphi_ds], axis=1)
        return cls(float(s_mm[0]), ds, table)

    def __post_init__(self):
        slopes = np.diff(self.table, axis=0, append=self.table[-1:])
        object.__setattr__(self, "_slopes", slopes)
        # s of the canal centre on a uniform z grid (z grows with s: |phi| < 90 degrees), the
        # start of the projection's Newton iterations
        z = self.table[:, 1]
        z_grid = np.arange(z[0], z[-1], self.ds_mm)
        s_of_z = np.interp(z_grid, z, self.s0_mm + self.ds_mm * np.arange(len(z)))
        object.__setattr__(self, "_s_of_z", (float(z[0]), s_of_z))

    def _start(self, z_body: np.ndarray) -> np.ndarray:
        z0, s_of_z = self._s_of_z
        f = np.clip((z_body - z0) / self.ds_mm, 0, len(s_of_z) - 1)
        return s_of_z[f.astype(np.int64)]

    def at(self, s_mm) -> np.ndarray:
        """Interpolated table rows (N x 5, :data:`COLUMNS`) at arc lengths ``s_mm``."""
        f = (np.asarray(s_mm, dtype=np.float64).ravel() - self.s0_mm) / self.ds_mm
        i = np.clip(f.astype(np.int64), 0, len(self.table) - 2)
        w = np.clip(f - i, 0.0, 1.0)[:, None]
        return self.table[i] + self._slopes[i] * w

    def phi_deg(self, s_mm) -> np.ndarray:
        """Sagittal angle of the tangent (degrees, from the body frame's superior axis)."""
        row = self.at(s_mm)
        return np.degrees(np.arctan2(row[:, 2], row[:, 3]))

    def to_body(self, x_mm, y_mm, s_mm) -> np.ndarray:
        """Body-frame points (N x 3) of curvilinear coordinates."""
        x, y, s = np.broadcast_arrays(
            *(np.asarray(v, dtype=np.float64) for v in (x_mm, y_mm, s_mm))
        )
        row = self.at(s)
        yr = y.ravel()
        return np.stack([x.ravel(), row[:, 0] + yr * row[:, 3], row[:, 1] - yr * row[:, 2]], axis=1)

    def project(self, y_body: np.ndarray, z_body: np.ndarray):
        """Curvilinear ``(y, s)`` of body-frame sagittal coordinates, and whether the point
        has a unique foot on the curve (False far on the concave side, beyond the radius of
        curvature, where no shape of the phantom lies)."""
        s = self._start(z_body)
        # Newton on (p - c(s)) . t(s) = 0, from up to 40 mm off (the canal's s at the point's
        # height): the error falls to ~1 mm, 0.1 mm, 1e-4 mm over T10-L4's lordosis; 1e-8 mm
        # after the fourth
        for _ in range(4):
            row = self.at(s)
            dy, dz = y_body - row[:, 0], z_body - row[:, 1]
            along = dy * row[:, 2] + dz * row[:, 3]
            normal = dy * row[:, 3] - dz * row[:, 2]
            s = s + along / np.maximum(1.0 - row[:, 4] * normal, 0.2)
        ok = (np.abs(along) < 1e-3) & (1.0 - row[:, 4] * normal > 0.05)
        return normal, s, ok


# ---------------------------------------------------------------------------------------
# Anatomy
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Vertebra:
    """One modelled vertebra (lengths in mm; ``s`` along the centreline)."""

    label: int
    name: str
    centre_s_mm: float
    height_mm: float
    disc_above_mm: float
    disc_below_mm: float
    body_ax_mm: float  # half width
    body_ay_mm: float  # half depth
    # the level's range: from the middle of the disc below to the middle of the disc above
    lower_s_mm: float
    upper_s_mm: float

    @property
    def body_cy_mm(self) -> float:
        """Body centre on the AP axis: the posterior wall lies on the canal (y = -9)."""
        return -9.0 - self.body_ay_mm

    @property
    def post_half_height_mm(self) -> float:
        return 0.32 * self.height_mm


@dataclass(frozen=True)
class Lesion:
    """One epidural mass: the single-level phantom's mass for ``grade``, centred on the body
    of ``level`` (``anatomy`` is in the lesion's local frame, z = s - centre_s_mm)."""

    id: int
    level: str
    grade: str
    centre_s_mm: float
    anatomy: PhantomAnatomy = field(repr=False)

    @property
    def s_range_mm(self) -> tuple[float, float]:
        return (self.centre_s_mm - self.anatomy.mass_az, self.centre_s_mm + self.anatomy.mass_az)


@dataclass(frozen=True)
class SpineAnatomy:
    """The implicit shapes of the whole-spine phantom (see the module docstring).

    ``vertebrae``: every modelled vertebra, cranial first; ``levels``: the names of the
    requested ones; ``base``: the single-level anatomy giving the canal, sac and cord at rest.
    """

    vertebrae: tuple[Vertebra, ...]
    levels: tuple[str, ...]
    lesions: tuple[Lesion, ...]
    base: PhantomAnatomy
    centreline: Centreline
    kyphosis_deg: float
    lordosis_deg: float

    def __post_init__(self):
        asc = self.vertebrae[::-1]  # caudal first: ascending s for the lookup
        edges = [asc[0].lower_s_mm] + [v.upper_s_mm for v in asc]
        params = np.array(
            [
                (
                    v.centre_s_mm,
                    v.height_mm / 2,
                    v.body_ax_mm,
                    v.body_ay_mm,
                    v.body_cy_mm,
                    v.post_half_height_mm,
                    v.label,
                )
                for v in asc
            ]
        )
        object.__setattr__(self, "_edges", np.asarray(edges))
        object.__setattr__(self, "_params", params)

    @property
    def requested(self) -> tuple[Vertebra, ...]:
        return tuple(v for v in self.vertebrae if v.name in self.levels)

    def vertebra(self, name: str) -> Vertebra:
        return next(v for v in self.vertebrae if v.name == name)

    @property
    def s_range_mm(self) -> tuple[float, float]:
        """Arc-length range of the requested levels (mid-disc to mid-disc)."""
        req = self.requested
        return req[-1].lower_s_mm, req[0].upper_s_mm

    def local(self, u: np.ndarray):
        """Curvilinear ``(x, y, s)`` of body-frame points ``u`` (N x 3), and their validity."""
        y, s, ok = self.centreline.project(u[:, 1], u[:, 2])
        return u[:, 0], y, s, ok

    def classify(self, u: np.ndarray) -> np.ndarray:
        """Tissue class (see :data:`~.anatomy.TISSUE_NAMES`) of body-frame points (N x 3)."""
        return self.tissue_and_vertebra(u)[0]

    def tissue_and_vertebra(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Tissue classes and VerSe labels (0 outside the vertebrae) of body-frame points.

        A vertebra is its body (cortex and marrow) and its posterior elements, whatever the
        tissue there: an intraosseous mass keeps its vertebra's label. Tissue precedence as in
        the single-level phantom: mass > cord > CSF > epidural fat > bone > disc > other.
        """
        b = self.base
        x, y, s, ok = self.local(np.asarray(u, dtype=np.float64))
        n = len(x)
        tissue = np.full(n, OTHER, dtype=np.uint8)
        vertebra = np.zeros(n, dtype=np.uint8)
        k = np.searchsorted(self._edges, s, side="right") - 1
        inside = ok & (k >= 0) & (k < len(self._params))
        p = self._params[np.clip(k, 0, len(self._params) - 1)]
        dz = np.abs(s - p[:, 0])
        half_height, ax, ay = p[:, 1], p[:, 2], p[:, 3]
        q_body = (x / ax) ** 2 + ((y - p[:, 4]) / ay) ** 2
        in_xy = inside & (q_body <= 1.0)
        in_disc = in_xy & (dz > half_height)
        in_body = in_xy & ~in_disc
        shell = 1.0 - b.cortex_mm / np.minimum(ax, ay)
        cortical = in_body & ((q_body > shell**2) | (dz > half_height - b.cortex_mm))
        tissue[in_disc] = DISC
        tissue[in_body] = MARROW
        tissue[cortical] = CORTICAL
        q_canal = ellipse_q(x, y, 0.0, 0.0, b.canal_ax, b.canal_ay)
        ring = (
            (q_canal > 1.0)
            & (ellipse_q(x, y, 0.0, 0.0, b.post_outer_ax, b.post_outer_ay) <= 1.0)
            & (y > b.post_min_y)
        )
        spinous = (
            (np.abs(x) <= b.spinous_half_width) & (y >= b.spinous_y[0]) & (y <= b.spinous_y[1])
        )
        posterior = inside & (dz <= p[:, 5]) & (ring | spinous)
        tissue[posterior] = CORTICAL
        bone = in_body | posterior
        vertebra[bone] = p[bone, 6].astype(np.uint8)
        idx = np.flatnonzero(ok & (q_canal <= 1.0))
        tissue[idx] = FAT
        xc, yc, sc = x[idx], y[idx], s[idx]
        sac = b.in_sac0(xc, yc)
        tissue[idx[sac]] = CSF
        idx, xc, yc, sc = idx[sac], xc[sac], yc[sac], sc[sac]
        cord = ellipse_q(xc, yc, 0.0, b.cord_cy, b.cord_ax, b.cord_ay) <= 1.0
        for lesion in self.lesions:
            near = np.flatnonzero(np.abs(sc - lesion.centre_s_mm) < lesion.anatomy.mass_az)
            cord[near] = lesion.anatomy.in_cord(xc[near], yc[near], sc[near] - lesion.centre_s_mm)
        tissue[idx[cord]] = CORD
        for lesion in self.lesions:
            a = lesion.anatomy
            z = s - lesion.centre_s_mm
            near = np.flatnonzero(
                ok
                & (np.abs(x) <= a.mass_ax)
                & (np.abs(y - a.mass_cy) <= a.mass_ay)
                & (np.abs(z) <= a.mass_az)
            )
            tissue[near[a.in_mass(x[near], y[near], z[near])]] = MASS
        return tissue, vertebra


def _interpolated_sizes(label: int) -> np.ndarray:
    anchors = sorted(_SIZE_ANCHORS)
    table = np.array([_SIZE_ANCHORS[a] for a in anchors])
    return np.array([np.interp(label, anchors, table[:, c]) for c in range(4)])


def _window(s: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Raised-cosine bump on [lo, hi] with unit integral."""
    u = np.clip((s - lo) / (hi - lo), 0.0, 1.0)
    return np.sin(np.pi * u) ** 2 * 2.0 / (hi - lo)


def make_spine_anatomy(
    levels: tuple[str, str] = DEFAULT_LEVELS,
    lesions: tuple[tuple[str, str], ...] = DEFAULT_LESIONS,
    seed: int = 0,
) -> tuple[SpineAnatomy, dict]:
    """The anatomy for the requested ``levels`` (cranial, caudal) and ``lesions`` ((level,
    grade), ...), with seed-dependent sizes and curvature, and the random pose parameters.

    Raises :class:`~MESCCAnalyzerLib.errors.InputError` for a lesion outside the levels, two
    lesions at one level or so close that their masses would overlap, or a grade-0 mass that
    does not fit inside its vertebral body.
    """
    first, last = parse_levels(f"{levels[0]}-{levels[1]}")
    rng = np.random.default_rng([int(seed), 0x5B17E])  # sizes, curves, masses, pose in order
    requested = tuple(level_name(v) for v in range(VERSE_LABELS[first], VERSE_LABELS[last] + 1))
    vertebrae, (s_lo_req, s_hi_req) = _vertebrae(rng, first, last)
    named = {v.name: v for v in vertebrae}
    kyphosis_deg = 40.0 + 8.0 * rng.uniform(-1, 1)
    lordosis_deg = 45.0 + 8.0 * rng.uniform(-1, 1)
    centreline = _curved_centreline(vertebrae, kyphosis_deg, lordosis_deg, (s_lo_req, s_hi_req))
    base, _ = make_anatomy("1a", seed)
    made = _lesions(lesions, requested, named, (first, last), seed, rng)
    spine = SpineAnatomy(
        vertebrae=vertebrae,
        levels=requested,
        lesions=tuple(made),
        base=base,
        centreline=centreline,
        kyphosis_deg=kyphosis_deg,
        lordosis_deg=lordosis_deg,
    )
    return spine, _pose_params(rng)


def _vertebrae(rng, first: str, last: str) -> tuple[tuple[Vertebra, ...], tuple[float, float]]:
    """Every modelled vertebra from the top down (seeded sizes), in a frame whose s = 0 lies
    in the middle of the requested range; and that range's (lower, upper) s."""
    sizes = {v: _interpolated_sizes(v) * (1.0 + 0.03 * rng.uniform(-1, 1, 4)) for v in _MODELLED}
    rows, top = [], 0.0
    for v in _MODELLED:
        height, disc_below, ax, ay = sizes[v]
        disc_above = sizes[v - 1][1] if v - 1 in sizes else disc_below
        rows.append((v, top - height / 2, height, disc_above, disc_below, ax, ay))
        top -= height + disc_below
    by_name = {level_name(r[0]): r for r in rows}
    s_hi = by_name[first][1] + by_name[first][2] / 2 + by_name[first][3] / 2
    s_lo = by_name[last][1] - by_name[last][2] / 2 - by_name[last][4] / 2
    shift = (s_hi + s_lo) / 2
    vertebrae = tuple(
        Vertebra(
            label=v,
            name=level_name(v),
            centre_s_mm=c - shift,
            height_mm=h,
            disc_above_mm=da,
            disc_below_mm=db,
            body_ax_mm=ax,
            body_ay_mm=ay,
            lower_s_mm=c - shift - h / 2 - db / 2,
            upper_s_mm=c - shift + h / 2 + da / 2,
        )
        for v, c, h, da, db, ax, ay in rows
    )
    return vertebrae, (s_lo - shift, s_hi - shift)


def _curved_centreline(vertebrae, kyphosis_deg: float, lordosis_deg: float, s_range):
    """The canal's centre line: kyphosis over T1-T12, lordosis over L1-L5."""
    named = {v.name: v for v in vertebrae}
    t_top = named["T1"].centre_s_mm + named["T1"].height_mm / 2
    t_bottom = named["T12"].centre_s_mm - named["T12"].height_mm / 2
    l_top = named["L1"].centre_s_mm + named["L1"].height_mm / 2
    l_bottom = named["L5"].centre_s_mm - named["L5"].height_mm / 2
    s_grid = np.arange(vertebrae[-1].lower_s_mm - 150.0, vertebrae[0].upper_s_mm + 150.0, 0.1)
    # phi decreases upwards through a kyphosis (the canal leans forward above the apex)
    dphi = -math.radians(kyphosis_deg) * _window(s_grid, t_bottom, t_top) + math.radians(
        lordosis_deg
    ) * _window(s_grid, l_bottom, l_top)
    return Centreline.from_curvature(s_grid, dphi, s_range)


def _lesions(lesions, requested, named, levels: tuple[str, str], seed: int, rng) -> list:
    """The single-level masses, one per level, each checked to fit (see :func:`_check_fits`)."""
    made = []
    for level, grade in sorted(lesions, key=lambda lg: VERSE_LABELS[lg[0]]):
        if level not in requested:
            raise InputError(
                f"the lesion at {level} lies outside the levels {levels[0]}-{levels[1]}",
                hint="widen --levels or move the lesion",
            )
        if any(m.level == level for m in made):
            raise InputError(f"two lesions at {level}", hint="give each lesion its own level")
        anatomy, _ = make_anatomy(grade, seed)
        scale = 1.0 + 0.06 * rng.uniform(-1, 1, 2)
        anatomy = replace(
            anatomy, mass_ax=anatomy.mass_ax * scale[0], mass_az=anatomy.mass_az * scale[1]
        )
        lesion = Lesion(len(made) + 1, level, grade, named[level].centre_s_mm, anatomy)
        _check_fits(lesion, named[level], made)
        made.append(lesion)
    return made


def _pose_params(rng) -> dict:
    """The random tilt of the anatomy in the MRI, the true MRI -> CT transform, the noise seed."""
    tilt = [3.0 * rng.uniform(-1, 1), 2.0 * rng.uniform(-1, 1), 4.0 * rng.uniform(-1, 1)]
    return {
        "tilt_deg": tilt,
        "origin_offset_mm": list(2.0 * rng.uniform(-1, 1, 3)),
        "ct_rotation_deg": [
            4.0 * rng.uniform(-1, 1),
            3.0 * rng.uniform(-1, 1),
            5.0 * rng.uniform(-1, 1),
        ],
        "ct_translation_mm": [
            12.0 * rng.uniform(-1, 1),
            12.0 * rng.uniform(-1, 1),
            8.0 * rng.uniform(-1, 1),
        ],
        "noise_seed": int(rng.integers(0, 2**31 - 1)),
    }


def _check_fits(lesion: Lesion, vertebra: Vertebra, before: list[Lesion]) -> None:
    a = lesion.anatomy
    for other in before:
        if other.s_range_mm[0] < lesion.s_range_mm[1] + 1.0:
            raise InputError(
                f"the masses at {other.level} and {lesion.level} would overlap "
                f"(each reaches {other.anatomy.mass_az:.0f} and {a.mass_az:.0f} mm from its body's centre)",
                hint="choose levels further apart",
            )
    if lesion.grade == "0":
        front = vertebra.body_cy_mm - vertebra.body_ay_mm
        if (
            a.mass_cy - a.mass_ay < front + 1.0
            or a.mass_ax > vertebra.body_ax_mm - 1.0
            or a.mass_az > vertebra.height_mm / 2 - 1.0
        ):
            raise InputError(
                f"a grade 0 mass does not fit inside the body of {lesion.level}",
                hint="put grade 0 lesions at T1 or below",
            )


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpineGrids:
    """Voxel sizes (mm, i j k) and the in-plane box kept around the canal (mm, local frame).

    The box (left-right ``half_width_mm``, from ``anterior_mm`` in front of the canal centre
    to ``posterior_mm`` behind it) holds the bodies, the posterior elements and a margin; each
    image is the axial-aligned bounding box of that box along the requested levels, in its
    own frame. Coarser in-plane spacings make small studies for tests.
    """

    mri_spacing_mm: tuple[float, float, float] = (0.6, 0.6, 3.0)
    ct_spacing_mm: tuple[float, float, float] = (0.8, 0.8, 1.0)
    pet_spacing_mm: tuple[float, float, float] = (4.0, 4.0, 4.0)
    half_width_mm: float = 34.0
    anterior_mm: float = 46.0
    posterior_mm: float = 34.0
    pet_margin_mm: float = 12.0
    # partial-volume sub-grid per voxel: 0.3 mm in plane, 1 mm across the 3 mm MRI slices;
    # 0.4 x 0.4 x 0.5 mm on the CT
    mri_subsamples: tuple[int, int, int] = (2, 2, 3)
    ct_subsamples: tuple[int, int, int] = (2, 2, 2)
    pet_fwhm_mm: float = 6.5


@dataclass
class SpineStudy:
    """The whole-spine study: images (SimpleITK), the true transform, truth and anatomy."""

    seed: int
    t2: sitk.Image
    t1: sitk.Image
    ct: sitk.Image
    pet_suv: sitk.Image
    labels: sitk.Image
    vertebrae: sitk.Image
    mri_to_ct: sitk.Euler3DTransform
    truth: dict
    anatomy: SpineAnatomy
    pose: Pose = field(repr=False)


def _ct_from_mri(pose: Pose, p_lps: np.ndarray) -> np.ndarray:
    m = pose.mri_to_ct
    matrix = np.asarray(m.GetMatrix()).reshape(3, 3)
    c, t = np.asarray(m.GetCenter()), np.asarray(m.GetTranslation())
    return (p_lps - c) @ matrix.T + c + t


def _box_points(spine: SpineAnatomy, grids: SpineGrids, margin_mm: float = 0.0) -> np.ndarray:
    """Body-frame corners of the in-plane box every 2 mm along the requested levels."""
    lo, hi = spine.s_range_mm
    s = np.append(np.arange(lo, hi, 2.0), hi)
    xs = (-grids.half_width_mm - margin_mm, grids.half_width_mm + margin_mm)
    ys = (-grids.anterior_mm - margin_mm, grids.posterior_mm + margin_mm)
    corners = [spine.centreline.to_body(x, y, s) for x in xs for y in ys]
    return np.concatenate(corners)


def _bounding_grid(points_lps: np.ndarray, spacing) -> Grid:
    spacing = np.asarray(spacing, dtype=np.float64)
    lo, hi = points_lps.min(axis=0), points_lps.max(axis=0)
    size = np.ceil((hi - lo) / spacing).astype(int) + 1
    return Grid(tuple(int(n) for n in size), tuple(map(float, spacing)), tuple(map(float, lo)))


def spine_grids(spine: SpineAnatomy, pose: Pose, grids: SpineGrids) -> dict[str, Grid]:
    """The MRI, CT and PET grids of a study (each axial in its own frame)."""
    box = pose.mri_from_anatomy(_box_points(spine, grids))
    pet_box = pose.mri_from_anatomy(_box_points(spine, grids, grids.pet_margin_mm))
    return {
        "mri": _bounding_grid(box, grids.mri_spacing_mm),
        "ct": _bounding_grid(_ct_from_mri(pose, box), grids.ct_spacing_mm),
        "pet": _bounding_grid(_ct_from_mri(pose, pet_box), grids.pet_spacing_mm),
    }


def _tissue_and_vertebra_on_grid(spine: SpineAnatomy, grid: Grid, to_anatomy, cancel, chunk=8):
    nx, ny, nz = grid.size
    tissue = np.empty((nz, ny, nx), dtype=np.uint8)
    vertebra = np.empty((nz, ny, nx), dtype=np.uint8)
    for k0 in range(0, nz, chunk):
        check(cancel)
        ks = slice(k0, min(k0 + chunk, nz))
        t, v = spine.tissue_and_vertebra(to_anatomy(grid.points_lps(ks)))
        tissue[ks] = t.reshape(-1, ny, nx)
        vertebra[ks] = v.reshape(-1, ny, nx)
    return tissue, vertebra


def _spine_mri(spine, pose, mri, centre, grids: SpineGrids, rng, cancel) -> dict:
    """T2 and T1 on the MRI grid: partial volume, coil shading and Rician noise."""
    contrasts = (("t2", T2_LEVELS), ("t1", T1_LEVELS))
    mixed = partial_volume_mean(
        spine,
        mri,
        pose.anatomy_from_mri,
        centre,
        np.stack([levels for _, levels in contrasts], axis=1),
        grids.mri_subsamples,
        cancel,
    )
    nx, ny, nz = mri.size
    kk, jj, ii = np.ogrid[:nz, :ny, :nx]
    # coil shading: smooth across the slice and along the spine array's elements
    bias = (
        1.0
        + 0.08 * (jj - ny / 2) / ny
        + 0.05 * (ii - nx / 2) / nx
        + 0.05 * np.sin(2 * np.pi * (kk / max(nz, 1)) * 1.5)
    )
    images = {}
    for channel, (name, tissue_levels) in enumerate(contrasts):
        noisy = rician(mixed[..., channel] * bias, 0.02 * tissue_levels.max(), rng)
        images[name] = mri.image(noisy.astype(np.float32))
    return images


def _spine_ct(spine, pose, ct_grid, grids: SpineGrids, rng, cancel):
    """The CT (HU, int16) in the scanner frame, and its tissue classes (for the PET)."""
    ct_tissue = tissue_on_grid(spine, ct_grid, pose.anatomy_from_ct, [(0.0, 0.0, 0.0)], cancel)[0]
    ct_hu = partial_volume_mean(
        spine, ct_grid, pose.anatomy_from_ct, ct_tissue, CT_HU, grids.ct_subsamples, cancel
    )
    ct_img = sitk.SmoothingRecursiveGaussian(ct_grid.image(ct_hu.astype(np.float32)), 0.4)
    del ct_hu
    ct_arr = sitk.GetArrayFromImage(ct_img) + rng.normal(0.0, 10.0, ct_tissue.shape)
    return ct_grid.image(np.round(ct_arr).astype(np.int16)), ct_tissue


def _spine_pet(ct_grid, pet_grid, ct_tissue, grids: SpineGrids, rng) -> sitk.Image:
    """Tissue SUVs on the CT grid, blurred by the scanner's resolution, onto the PET grid."""
    return pet_from_tissue(ct_grid, ct_tissue, pet_grid, grids.pet_fwhm_mm, rng)


def make_spine_phantom(
    levels: tuple[str, str] = DEFAULT_LEVELS,
    lesions: tuple[tuple[str, str], ...] = DEFAULT_LESIONS,
    seed: int = 0,
    *,
    grids: SpineGrids | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> SpineStudy:
    """Build the whole-spine study in memory.

    Parameters
    ----------
    levels : (cranial, caudal) level names, e.g. ``("T1", "L1")``.
    lesions : ``((level, grade), ...)``; ``()`` for a study without a mass.
    seed : sizes, curvature, mass sizes, pose, transform and noise.
    grids : voxel sizes and field of view (:class:`SpineGrids`; clinical by default).
    """
    progress = progress or no_progress
    grids = grids or SpineGrids()
    spine, params = make_spine_anatomy(tuple(levels), tuple(lesions), seed)
    pose = pose_at(params, params["origin_offset_mm"])
    rng = np.random.default_rng(params["noise_seed"])  # drawn for the MRI, the CT, the PET
    g = spine_grids(spine, pose, grids)
    progress(0.0, "MRI")
    mri = g["mri"]
    centre, vertebra = _tissue_and_vertebra_on_grid(spine, mri, pose.anatomy_from_mri, cancel)
    images = _spine_mri(spine, pose, mri, centre, grids, rng, cancel)
    progress(0.45, "CT")
    ct, ct_tissue = _spine_ct(spine, pose, g["ct"], grids, rng, cancel)
    progress(0.8, "PET")
    pet_suv = _spine_pet(g["ct"], g["pet"], ct_tissue, grids, rng)

    progress(0.9, "truth")
    truth = spine_truth(spine, pose, params, seed, g, vertebra)
    progress(1.0, "done")
    return SpineStudy(
        seed=seed,
        t2=images["t2"],
        t1=images["t1"],
        ct=ct,
        pet_suv=pet_suv,
        labels=mri.image(TISSUE_TO_LABEL[centre]),
        vertebrae=mri.image(vertebra),
        mri_to_ct=pose.mri_to_ct,
        truth=truth,
        anatomy=spine,
        pose=pose,
    )


# ---------------------------------------------------------------------------------------
# Truth
# ---------------------------------------------------------------------------------------
def mass_volume_mm3(spine: SpineAnatomy, lesion: Lesion) -> float:
    """Volume of a lesion's mass in the curved frame (mm3).

    The mass is an ellipsoid in ``(x, y, s)``; the volume element is
    ``(1 - phi'(s) y) dx dy ds`` and ``y`` enters linearly, so each section contributes its
    area times ``1 - phi'(s) y_c`` (``y_c`` its centroid). The 1D integral is taken by the
    trapezoid rule on 20001 points (relative error < 1e-7).
    """
    a = lesion.anatomy
    z = np.linspace(-a.mass_az, a.mass_az, 20001)
    area = math.pi * a.mass_ax * a.mass_ay * (1.0 - (z / a.mass_az) ** 2)
    jacobian = 1.0 - spine.centreline.at(lesion.centre_s_mm + z)[:, 4] * a.mass_cy
    return float(np.trapezoid(area * jacobian, z))


def _canal_free_area_mm2(spine: SpineAnatomy, lesion: Lesion | None, z: float, step_mm: float):
    """Bony canal area minus the mass, in the section ``z`` of ``lesion``'s frame."""
    b = spine.base
    xs = np.arange(-b.canal_ax + step_mm / 2, b.canal_ax, step_mm)
    ys = np.arange(-b.canal_ay + step_mm / 2, b.canal_ay, step_mm)
    gx, gy = np.meshgrid(xs, ys)
    free = ellipse_q(gx, gy, 0.0, 0.0, b.canal_ax, b.canal_ay) <= 1.0
    if lesion is not None:
        free &= ~lesion.anatomy.in_mass(gx, gy, z)
    return float(free.sum() * step_mm * step_mm)


def _lesion_truth(spine: SpineAnatomy, lesion: Lesion, pose: Pose) -> dict:
    a = lesion.anatomy
    t = compute_truth(a)
    worst = t["worst"]
    s_worst = lesion.centre_s_mm + worst["z_mm"]
    cl = spine.centreline
    worst_lps = pose.mri_from_anatomy(cl.to_body(0.0, worst["cord_centroid_y_mm"], s_worst))[0]
    # the mass surface, to find its extent along the MRI's superior axis
    theta, psi = np.meshgrid(np.linspace(0, np.pi, 61), np.linspace(0, 2 * np.pi, 121))
    surface = pose.mri_from_anatomy(
        cl.to_body(
            a.mass_ax * np.sin(theta) * np.cos(psi),
            a.mass_cy + a.mass_ay * np.sin(theta) * np.sin(psi),
            lesion.centre_s_mm + a.mass_az * np.cos(theta),
        )
    )
    centre_lps = pose.mri_from_anatomy(cl.to_body(0.0, a.mass_cy, lesion.centre_s_mm))[0]
    return {
        "id": lesion.id,
        "level": lesion.level,
        "verse_label": VERSE_LABELS[lesion.level],
        "grade": lesion.grade,
        "volume_ml": mass_volume_mm3(spine, lesion) / 1000.0,
        "centre_lps_mm": list(map(float, centre_lps)),
        "s_range_mm": list(map(float, lesion.s_range_mm)),
        "craniocaudal_extent_mm": 2 * a.mass_az,
        "z_range_lps_mm": [float(surface[:, 2].min()), float(surface[:, 2].max())],
        "semi_axes_mm": [a.mass_ax, a.mass_ay, a.mass_az],
        "centre_y_mm": a.mass_cy,
        "tip_y_mm": a.mass_tip_y,
        **compression_truth(t, lesion.grade),
        "worst_section_s_mm": float(s_worst),
        "worst_section_lps_mm": list(map(float, worst_lps)),
    }


def _level_sections(spine: SpineAnatomy, vertebra: Vertebra, rest: dict) -> dict:
    """Minimum cord CSA and AP, sac CSA and free canal area over the level's range.

    Sections every 1 mm of the range (0.05 mm supersampling) and the mass's centre section,
    each minimum refined at 0.02 mm (area error < 0.1 mm2, chord error <= 0.01 mm): the
    profiles are monotone away from the mass's centre, so the minimum is at a sampled end or
    at the centre.
    """
    lo, hi = vertebra.lower_s_mm, vertebra.upper_s_mm
    touching = [m for m in spine.lesions if m.s_range_mm[0] < hi and m.s_range_mm[1] > lo]
    best = dict(rest)
    for lesion in touching:
        a, c = lesion.anatomy, lesion.centre_s_mm
        z_lo, z_hi = max(lo - c, -a.mass_az), min(hi - c, a.mass_az)
        zs = np.append(np.arange(z_lo, z_hi, 1.0), z_hi)
        if z_lo <= 0.0 <= z_hi:  # the mass's centre section, where grades 2-3 are worst
            zs = np.unique(np.append(zs, 0.0))
        coarse = [section_truth(a, z, step_mm=0.05) for z in zs]
        for key, attr in (
            ("cord_min_csa_mm2", "cord_csa_mm2"),
            ("cord_ap_min_mm", "cord_ap_mm"),
            ("sac_min_csa_mm2", "sac_csa_mm2"),
        ):
            z_min = float(zs[int(np.argmin([getattr(sec, attr) for sec in coarse]))])
            best[key] = min(best[key], getattr(section_truth(a, z_min, step_mm=0.02), attr))
        free = [_canal_free_area_mm2(spine, lesion, z, 0.05) for z in zs]
        z_min = float(zs[int(np.argmin(free))])
        best["canal_free_min_area_mm2"] = min(
            best["canal_free_min_area_mm2"], _canal_free_area_mm2(spine, lesion, z_min, 0.02)
        )
    best["lesions"] = [m.id for m in touching]
    return best


def _levels_truth(spine: SpineAnatomy, pose: Pose, rest: dict, canal_area: float) -> list:
    """One entry per requested level: its body, canal, ranges and the sections' minima."""
    cl = spine.centreline
    levels = []
    for v in spine.requested:
        body_lps = pose.mri_from_anatomy(cl.to_body(0.0, v.body_cy_mm, v.centre_s_mm))[0]
        canal_lps = pose.mri_from_anatomy(cl.to_body(0.0, 0.0, v.centre_s_mm))[0]
        levels.append(
            {
                "name": v.name,
                "verse_label": v.label,
                "body_centre_lps_mm": list(map(float, body_lps)),
                "canal_centre_lps_mm": list(map(float, canal_lps)),
                "centre_s_mm": v.centre_s_mm,
                "s_range_mm": [v.lower_s_mm, v.upper_s_mm],
                "body_height_mm": v.height_mm,
                "disc_below_mm": v.disc_below_mm,
                "body_semi_axes_mm": [v.body_ax_mm, v.body_ay_mm],
                "canal_area_mm2": canal_area,
                **_level_sections(spine, v, rest),
            }
        )
    return levels


def _centreline_truth(spine: SpineAnatomy, pose: Pose) -> dict:
    """The canal's and the cord's centre lines every 2 mm, with tangents and sagittal angle."""
    b, cl = spine.base, spine.centreline
    s_lo, s_hi = spine.s_range_mm
    s = np.append(np.arange(s_lo, s_hi, 2.0), s_hi)
    rows = cl.at(s)
    tangent_body = np.stack([np.zeros_like(s), rows[:, 2], rows[:, 3]], axis=1)
    tangent_lps = tangent_body @ pose.rotation.T
    return {
        "s_mm": s.tolist(),
        "canal_lps_mm": pose.mri_from_anatomy(cl.to_body(0.0, 0.0, s)).round(4).tolist(),
        "cord_lps_mm": pose.mri_from_anatomy(cl.to_body(0.0, b.cord_cy, s)).round(4).tolist(),
        "tangent_lps": tangent_lps.round(6).tolist(),
        "sagittal_angle_deg": np.degrees(np.arctan2(tangent_lps[:, 1], tangent_lps[:, 2]))
        .round(4)
        .tolist(),
    }


def spine_truth(
    spine: SpineAnatomy, pose: Pose, params: dict, seed: int, grids: dict[str, Grid], vertebra_map
) -> dict:
    """The truth document: per lesion, per level, the centreline, transform and grids."""
    b = spine.base
    rest_section = section_truth(b, 60.0, step_mm=0.01)  # far from any mass in its own frame
    canal_area = math.pi * b.canal_ax * b.canal_ay
    rest = {
        "cord_min_csa_mm2": rest_section.cord_csa_mm2,
        "cord_ap_min_mm": rest_section.cord_ap_mm,
        "sac_min_csa_mm2": rest_section.sac_csa_mm2,
        "canal_free_min_area_mm2": canal_area,
    }
    levels = _levels_truth(spine, pose, rest, canal_area)
    present = sorted(int(v) for v in np.unique(vertebra_map) if v)
    return {
        "kind": "whole_spine",
        "seed": seed,
        "levels_requested": [spine.levels[0], spine.levels[-1]],
        "verse_numbering": "1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 26 sacrum",
        "vertebrae_in_image": {str(v): level_name(v) for v in present},
        "kyphosis_deg": spine.kyphosis_deg,
        "lordosis_deg": spine.lordosis_deg,
        **pose_truth(pose, params),
        "centreline": _centreline_truth(spine, pose),
        "cord_reference_csa_mm2": rest_section.cord_csa_mm2,
        "cord_ap_reference_mm": rest_section.cord_ap_mm,
        "sac_reference_csa_mm2": rest_section.sac_csa_mm2,
        "sac_ap_reference_mm": rest_section.sac_ap_mm,
        "canal_area_mm2": canal_area,
        "lesions": [_lesion_truth(spine, lesion, pose) for lesion in spine.lesions],
        "levels": levels,
        **pet_truth(),
        "grids": {
            name: {
                "size": list(grid.size),
                "spacing": list(grid.spacing),
                "origin": list(grid.origin),
            }
            for name, grid in grids.items()
        },
        "partial_volume": SPINE_PARTIAL_VOLUME_NOTE,
    }


SPINE_PARTIAL_VOLUME_NOTE = (
    "labels.nii.gz and vertebrae.nii.gz take the tissue (vertebra) at each voxel centre of "
    "the 0.6 x 0.6 x 3 mm T2 grid; the voxel-count volume of a mass then differs from its "
    "true volume by signed half-voxel errors over its surface, which mostly cancel (the 3 mm "
    "slices dominate). Measured in Testing/test_spine_phantom.py."
)


# ---------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------
def write_spine_phantom(
    out_dir: str | os.PathLike,
    levels: tuple[str, str] = DEFAULT_LEVELS,
    lesions: tuple[tuple[str, str], ...] = DEFAULT_LESIONS,
    seed: int = 0,
    *,
    grids: SpineGrids | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> Path:
    """Generate the whole-spine study and write it into ``out_dir`` (atomically, as a whole).

    Files: ``t2.nii.gz``, ``t1.nii.gz``, ``labels.nii.gz``, ``vertebrae.nii.gz`` (T2 grid),
    ``ct.nii.gz``, ``pet_dicom/`` and ``pet_suv.nii.gz`` (scanner frame), ``mri_to_ct.tfm``,
    ``truth.json``. ``out_dir`` must be new, empty, or a folder mescc wrote.
    """
    out = check_output_dir(out_dir)
    progress = progress or no_progress
    study = make_spine_phantom(
        levels,
        lesions,
        seed,
        grids=grids,
        progress=lambda f, m: progress(0.85 * f, m),
        cancel=cancel,
    )
    check(cancel)
    progress(0.88, "writing")
    tag = "-".join(f"{level}{grade}" for level, grade in lesions) or "nomass"
    patient_id = f"MESCC-SPINE-{levels[0]}{levels[1]}-{tag}-{seed}"
    with atomic_dir(out) as tmp:
        write_study_files(tmp, study, ("t2", "t1", "ct", "labels", "vertebrae"), patient_id, seed)
    progress(1.0, "done")
    return out
