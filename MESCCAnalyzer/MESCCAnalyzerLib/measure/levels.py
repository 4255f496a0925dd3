"""Vertebral levels along the cord: which stretch of the centreline lies at which vertebra.

A radiologist reads MESCC per level ("high-grade compression at T6"). Levels are intervals of
arc length along the cord's centreline, named from one of:

* a vertebra labelmap in the VerSe numbering (1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6,
  26 sacrum; what TotalSegmentator's vertebrae mapped to it, SPINEPS and TPTBox write):
  :func:`levels_from_vertebrae`;
* one anchor the user gives, a point in a vertebral body with its name: the other bodies are
  counted along the cord from the bone label, split at the discs: :func:`levels_from_anchor`;
* neither: the bodies found in the bone label (or, without bone, 25 mm stretches) are numbered
  from the top of the image and marked unnamed: :func:`levels_unnamed`.

Each vertebra is placed on the cord by projecting its voxels onto the nearest centreline
sample; consecutive levels meet half-way between the neighbouring bodies (at the disc).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..geometry import same_grid
from .centerline import Centerline, voxel_points_lps

REGIONS = (("C", 1, 7), ("T", 8, 12), ("L", 20, 6))  # name, first VerSe label, count
SACRUM_LABEL = 26
MAX_POINTS_PER_BODY = 20000
#: a disc shows as a dip of the bone profile along the cord to at most this fraction of the
#: neighbouring bodies' median (measured on the phantom and the TPTBox T2: discs fall to
#: 0-30 %, the bodies' own profile stays above 60 %).
DISC_FRACTION = 0.45
MIN_BODY_MM = 8.0  # a vertebral body is at least this tall (C2-L5: 12-30 mm)
MIN_EDGE_BODY_MM = 4.0  # a body cut by the end of the image or of the cord still counts
ANCHOR_RADIUS_MM = 3.0  # an anchor is "in" a vertebra when bone lies this close
EDGE_MM = 6  # a body within this many millimetres of either end of the profile is cut
UNNAMED_STEP_MM = 25.0


def verse_name(label: int) -> str:
    """``T6`` for VerSe label 13; ``S`` for the sacrum; ``InputError`` for other numbers."""
    label = int(label)
    if label == SACRUM_LABEL:
        return "S"
    for region, first, count in REGIONS:
        if first <= label < first + count:
            return f"{region}{label - first + 1}"
    raise InputError(f"{label} is not a VerSe vertebra label (1-26)")


def verse_label(name: str) -> int:
    """The VerSe label of a level name (``T6`` -> 13); ``InputError`` for an unknown name."""
    text = str(name).strip().upper()
    if text in ("S", "S1", "SACRUM"):
        return SACRUM_LABEL
    match = re.fullmatch(r"([CTL])(\d{1,2})", text)
    if match:
        for region, first, count in REGIONS:
            if region == match[1] and 1 <= int(match[2]) <= count:
                return first + int(match[2]) - 1
    raise InputError(
        f"unknown vertebral level {name!r}", hint="use C1-C7, T1-T12, L1-L6 or S (e.g. T6)"
    )


def parse_anchor(text: str) -> tuple[str, np.ndarray]:
    """``T6@X,Y,Z`` (LPS mm) -> (``T6``, point); ``InputError`` when malformed."""
    name, sep, coords = str(text).partition("@")
    try:
        point = np.array([float(v) for v in coords.split(",")], dtype=float)
    except ValueError:
        point = np.empty(0)
    if not sep or point.shape != (3,) or not np.all(np.isfinite(point)):
        raise InputError(
            f"a level anchor is NAME@X,Y,Z in LPS millimetres, got {text!r}",
            hint="e.g. --level-anchor T6@12.5,-30,104",
        )
    verse_label(name)
    return name.strip().upper(), point


@dataclass
class LevelMap:
    """Named intervals of arc length (mm, inferior to superior) along the centreline."""

    names: list[str]  # cranial first
    arc_lo: np.ndarray  # per level, inferior end
    arc_hi: np.ndarray  # per level, superior end
    named: bool  # False: numbered from the top of the image ("level 1" is the highest)
    source: str  # "vertebrae", "anchor" or "unnamed"

    def level_at(self, arc_mm) -> np.ndarray:
        """The level name at each arc length ('' outside every level)."""
        arc = np.atleast_1d(np.asarray(arc_mm, dtype=float))
        out = np.full(arc.shape, "", dtype=object)
        for name, lo, hi in zip(self.names, self.arc_lo, self.arc_hi, strict=True):
            out[(arc >= lo) & (arc < hi)] = name
        if len(self.names):  # the top level's upper end belongs to it
            top = int(np.argmax(self.arc_hi))
            out[arc == self.arc_hi[top]] = self.names[top]
        return out

    def levels_between(self, lo_mm: float, hi_mm: float) -> list[str]:
        """Names of the levels overlapping the arc interval, cranial first."""
        return [
            name
            for name, lo, hi in zip(self.names, self.arc_lo, self.arc_hi, strict=True)
            if hi > lo_mm and lo < hi_mm
        ]

    def rows(self) -> list[dict]:
        return [
            {"level": n, "arc_range_mm": [float(lo), float(hi)]}
            for n, lo, hi in zip(self.names, self.arc_lo, self.arc_hi, strict=True)
        ]


def _subsample(points: np.ndarray, n: int) -> np.ndarray:
    if len(points) <= n:
        return points
    return points[np.linspace(0, len(points) - 1, n).astype(np.int64)]


def _level_map(names, centres, extents, *, named: bool, source: str) -> LevelMap:
    """Levels from bodies (arc centre and extent each): consecutive bodies meet half-way
    between their facing ends; cranial first. ``names`` None: numbered from the top."""
    centres = np.asarray(centres, dtype=float)
    order = np.argsort(centres)
    lo = np.array([extents[i][0] for i in order], dtype=float)
    hi = np.array([extents[i][1] for i in order], dtype=float)
    bounds_lo, bounds_hi = lo.copy(), hi.copy()
    for a in range(len(order) - 1):
        mid = (
            0.5 * (hi[a] + lo[a + 1])
            if hi[a] < lo[a + 1]
            else 0.5 * (centres[order[a]] + centres[order[a + 1]])
        )
        bounds_hi[a] = mid
        bounds_lo[a + 1] = mid
    cranial_first = order[::-1]
    return LevelMap(
        names=[names[i] for i in cranial_first]
        if names is not None
        else [f"level {n + 1}" for n in range(len(order))],
        arc_lo=bounds_lo[::-1],
        arc_hi=bounds_hi[::-1],
        named=named,
        source=source,
    )


def check_grid(image: sitk.Image, reference: sitk.Image, path) -> None:
    if not same_grid(image, reference):
        raise InputError(
            "the vertebra labelmap is on another grid than the labels",
            path=path,
            hint="resample it onto the MRI (nearest neighbour) first",
        )


def levels_from_vertebrae(
    vertebrae: sitk.Image, line: Centerline, *, reference: sitk.Image | None = None, path=None
) -> LevelMap:
    """Levels from a VerSe vertebra labelmap on the labels' grid (``reference``)."""
    if reference is not None:
        check_grid(vertebrae, reference, path)
    arr = sitk.GetArrayViewFromImage(vertebrae)
    present = [int(v) for v in np.unique(arr) if v > 0]
    unknown = [v for v in present if v > SACRUM_LABEL]
    if unknown or not present:
        raise InputError(
            "not a VerSe vertebra labelmap"
            + (f" (labels {unknown[:5]} are above 26)" if unknown else " (it is empty)"),
            path=path,
            hint="labels 1-7 C1-C7, 8-19 T1-T12, 20-25 L1-L6, 26 sacrum",
        )
    centres, extents, names = [], [], []
    for label in present:
        pts = _subsample(voxel_points_lps(vertebrae, arr == label), MAX_POINTS_PER_BODY)
        arc = line.arc_of_points(pts)
        # Vertebrae beyond the cord's ends project onto its last sample: not along the cord.
        inside = (arc > line.arc_mm[0]) & (arc < line.arc_mm[-1])
        if inside.mean() < 0.5:
            continue
        centres.append(float(np.median(arc[inside])))
        extents.append(
            (float(np.percentile(arc[inside], 2)), float(np.percentile(arc[inside], 98)))
        )
        names.append(verse_name(label))
    if not names:
        raise InputError("no vertebra of the labelmap lies along the cord", path=path)
    return _level_map(names, centres, extents, named=True, source="vertebrae")


def bodies_from_bone(bone: sitk.Image, line: Centerline) -> list[tuple[float, float]]:
    """Vertebral bodies along the cord from a bone mask, split at the discs: arc intervals.

    The bone voxels in front of the canal are counted per bin of arc (a millimetre, or the
    thickest voxel); a disc is a run where the count drops under :data:`DISC_FRACTION` of the
    median of the counted profile.
    """
    pts = voxel_points_lps(bone)
    if len(pts) == 0:
        return []
    pts = _subsample(pts, 400000)
    idx = line.nearest_index(pts)
    # Only bone in front of the cord (the bodies), not the posterior elements.
    offset = pts - line.points_lps[idx]
    tangent = line.tangents_lps[idx]
    along = (offset * tangent).sum(axis=1)
    across = offset - along[:, None] * tangent
    anterior = across[:, 1] < 0  # LPS: -P is anterior
    arc = line.arc_mm[idx] + along
    arc = arc[anterior]
    if arc.size == 0:
        return []
    # Bins as wide as the thickest voxel: with 3 mm slices, 1 mm bins would alternate between
    # full and empty where the cord runs along the slice axis.
    width = max(1.0, float(max(bone.GetSpacing())))
    edges = np.arange(line.arc_mm[0], line.arc_mm[-1] + width, width)
    profile, _ = np.histogram(arc, bins=edges)
    if not profile.any():
        return []
    level = np.median(profile[profile > 0])
    solid = profile >= DISC_FRACTION * level
    bodies = []
    start = None
    for i, s in enumerate(np.append(solid, False)):
        if s and start is None:
            start = i
        elif not s and start is not None:
            # cut by the field of view or the cord's end (the profile thins out there)
            at_edge = start * width <= EDGE_MM or (len(solid) - i) * width <= EDGE_MM
            if edges[i] - edges[start] >= (MIN_EDGE_BODY_MM if at_edge else MIN_BODY_MM):
                bodies.append((float(edges[start]), float(edges[i])))
            start = None
    return bodies


def _name_shift(name: str, steps: int) -> str | None:
    label = verse_label(name) + steps
    if label < 1 or label > SACRUM_LABEL:
        return None
    return verse_name(label)


def _near_bone(bone: sitk.Image, point_lps, radius_mm: float = ANCHOR_RADIUS_MM) -> bool:
    """Whether bone lies within ``radius_mm`` of the point (the point is in a vertebra)."""
    centre = np.asarray(bone.TransformPhysicalPointToContinuousIndex(tuple(map(float, point_lps))))
    reach = np.ceil(radius_mm / np.asarray(bone.GetSpacing())).astype(int)
    lo = np.maximum(np.floor(centre).astype(int) - reach, 0)
    hi = np.minimum(np.ceil(centre).astype(int) + reach + 1, bone.GetSize())
    if np.any(hi <= lo):
        return False
    box = sitk.GetArrayViewFromImage(bone)[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
    return bool(box.any())


def levels_from_anchor(
    bone: sitk.Image, line: Centerline, anchor_name: str, anchor_lps: np.ndarray
) -> LevelMap:
    """Levels counted along the cord from the body that holds the anchor point."""
    bodies = bodies_from_bone(bone, line)
    arc = float(line.arc_of_points(np.asarray(anchor_lps, dtype=float)[None, :])[0])
    holder = next((i for i, (lo, hi) in enumerate(bodies) if lo <= arc <= hi), None)
    if holder is None or not _near_bone(bone, anchor_lps):
        raise InputError(
            f"the level anchor {anchor_name} at ({', '.join(f'{v:.1f}' for v in anchor_lps)}) mm "
            "(LPS) is not "
            "in a vertebral body along the cord",
            hint="place the point inside a vertebral body in front of the canal",
        )
    names, kept = [], []
    for i, body in enumerate(bodies):
        name = _name_shift(anchor_name, holder - i)  # bodies run inferior to superior
        if name is not None:
            names.append(name)
            kept.append(body)
    centres = [(lo + hi) / 2 for lo, hi in kept]
    return _level_map(names, centres, kept, named=True, source="anchor")


def levels_unnamed(line: Centerline, bone: sitk.Image | None = None) -> LevelMap:
    """Bodies found in the bone label (else 25 mm stretches), numbered from the top."""
    bodies = bodies_from_bone(bone, line) if bone is not None else []
    if len(bodies) < 2:
        edges = np.arange(line.arc_mm[-1], line.arc_mm[0], -UNNAMED_STEP_MM)[::-1]
        edges = np.concatenate([[line.arc_mm[0]], edges])
        bodies = [(float(a), float(b)) for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]
    centres = [(lo + hi) / 2 for lo, hi in bodies]
    return _level_map(None, centres, bodies, named=False, source="unnamed")
