"""The epidural mass split into lesions.

A study may hold metastases at several levels; each is measured on its own. A lesion is a
group of connected mass regions (26-connected voxels of label 3):

* regions whose extents along the cord overlap are one lesion: a mass that wraps around the
  sac, or that a segmentation cut in two at one level, is one lesion at that level;
* a group smaller than :data:`MIN_LESION_VOLUME_ML` is not a lesion (stray voxels of a
  segmentation, a partial-volume speck); the note names where it lies, and it is left out of
  every lesion's measures.

Lesions are numbered 1, 2, ... from the cranial end (the largest arc length: the arc runs
from the inferior end of the cord).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .. import LABEL_MASS
from .centerline import Centerline, voxel_points_lps

LESION_COLOURS = (
    (0.90, 0.20, 0.70),  # magenta
    (0.80, 0.50, 0.20),  # ochre
    (0.55, 0.30, 0.85),  # violet
    (1.00, 0.60, 0.75),  # pink
    (0.55, 0.55, 0.15),  # olive
    (0.10, 0.60, 0.60),  # teal
)
"""Lesion ``i``'s colour (report, panel, page, scene) is ``LESION_COLOURS[(i - 1) % 6]``:
away from the cord's pale yellow, the sac's light blue and the red-to-blue distance map on
the cord."""

MIN_LESION_VOLUME_ML = 0.05
"""Smallest lesion (0.05 ml = 50 mm3, a sphere 4.6 mm across): below it a mass region is a
segmentation speck, not a metastasis to grade."""


@dataclass
class LesionRegion:
    """One lesion on the measured (cropped) grid."""

    id: int
    mask_kji: np.ndarray  # bool, the crop's array shape
    arc_range_mm: tuple[float, float]  # its extent along the cord, voxel centres +- half a voxel
    voxel_along_mm: float  # one voxel's length along the cord

    @property
    def level_range_mm(self) -> tuple[float, float]:
        """The stretch that names its levels: its voxel centres' range shrunk by half a voxel
        at each end (its midpoint when shorter), so that a level is named only when the
        lesion reaches into it by at least half a voxel (a 3 mm slice's staircase and the
        levels' boundaries are that uncertain)."""
        lo, hi = self.arc_range_mm
        lo, hi = lo + self.voxel_along_mm, hi - self.voxel_along_mm
        return (lo, hi) if hi > lo else ((lo + hi) / 2, (lo + hi) / 2 + 1e-6)

    @property
    def voxels(self) -> int:
        return int(np.count_nonzero(self.mask_kji))


def lesion_colour(lesion_id: int) -> tuple[float, float, float]:
    """The display colour (RGB 0-1) of lesion ``lesion_id`` (1, 2, ...)."""
    return LESION_COLOURS[(int(lesion_id) - 1) % len(LESION_COLOURS)]


def voxel_length_along(image: sitk.Image, line: Centerline) -> float:
    """The extent of one voxel along the cord's main axis (mm)."""
    spacing = np.asarray(image.GetSpacing(), dtype=np.float64)
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    return float(np.abs(line.axis_direction_lps @ (direction * spacing[None, :])).sum())


def arc_range(image: sitk.Image, line: Centerline, mask_kji: np.ndarray) -> tuple[float, float]:
    """Arc-length range (mm) of the voxels of ``mask_kji`` along the centreline (the section
    planes through them, :meth:`Centerline.arc_of_points`), widened by half a voxel at each
    end."""
    half = voxel_length_along(image, line) / 2
    arc = line.arc_of_points(voxel_points_lps(image, mask_kji))
    return float(arc.min()) - half, float(arc.max()) + half


def find_lesions(
    labels: sitk.Image, line: Centerline, *, min_volume_ml: float = MIN_LESION_VOLUME_ML
) -> tuple[list[LesionRegion], list[str]]:
    """The lesions of ``labels``' mass (module docstring) and a note per left-out speck."""
    mass = sitk.GetArrayViewFromImage(labels) == LABEL_MASS
    if not mass.any():
        return [], []
    regions = sitk.GetArrayFromImage(
        sitk.ConnectedComponent(sitk.Cast(labels == LABEL_MASS, sitk.sitkUInt8), True)
    )
    count = int(regions.max())
    ranges = [arc_range(labels, line, regions == r) for r in range(1, count + 1)]
    groups: list[tuple[list[int], float, float]] = []  # region numbers, arc range
    for r in sorted(range(count), key=lambda i: ranges[i][0]):
        lo, hi = ranges[r]
        if groups and lo <= groups[-1][2]:
            members, g_lo, g_hi = groups[-1]
            groups[-1] = ([*members, r + 1], g_lo, max(g_hi, hi))
        else:
            groups.append(([r + 1], lo, hi))
    voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
    along = voxel_length_along(labels, line)
    kept, notes = [], []
    for members, lo, hi in groups:
        mask = np.isin(regions, members)
        volume = np.count_nonzero(mask) * voxel_ml
        if volume >= min_volume_ml:
            kept.append((mask, (lo, hi)))
        else:
            notes.append(
                f"a mass speck of {1000 * volume:.0f} mm3 at {0.5 * (lo + hi):.0f} mm along "
                f"the cord is below the {1000 * min_volume_ml:.0f} mm3 of a lesion and is "
                "left out"
            )
    kept.sort(key=lambda item: -item[1][1])  # cranial first
    return [LesionRegion(i + 1, mask, rng, along) for i, (mask, rng) in enumerate(kept)], notes


def lesion_map(lesions: list[LesionRegion], crop: sitk.Image, full: sitk.Image) -> sitk.Image:
    """The lesions' ids (0 elsewhere) as a uint8 image on ``full``'s grid; ``crop`` is the
    region of ``full`` the lesions were found on."""
    ids = np.zeros(sitk.GetArrayViewFromImage(full).shape, dtype=np.uint8)
    i, j, k = full.TransformPhysicalPointToIndex(crop.GetOrigin())
    n_i, n_j, n_k = crop.GetSize()
    window = ids[k : k + n_k, j : j + n_j, i : i + n_i]
    for lesion in lesions:
        window[lesion.mask_kji] = lesion.id
    out = sitk.GetImageFromArray(ids)
    out.CopyInformation(full)
    return out
