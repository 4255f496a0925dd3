"""What a radiation planner needs beside the contours: the cord's planning risk volume (PRV)
and, per lesion, the gaps between the mass and the thecal sac and the cord.

Separation surgery before spine radiosurgery aims at a gap of at least
:data:`GAP_GOAL_MM` (3 mm, the value of the issue; separation surgery: Laufer I et al.,
J Neurosurg Spine 2013;18:207) between the tumour and the cord, so that the dose can fall
off between them; a gap under it is flagged.

The gaps are the surface distances of the analysis (``mass_sac_min_distance_mm`` and
``mass_cord_min_distance_mm`` of ``metrics.json``, 0 when touching). The PRV is the cord
dilated by a margin: every voxel whose centre lies within the margin of the cord's region
(:func:`dilated_onto`, a Euclidean distance map in mm on a fine grid).
"""

from __future__ import annotations

from collections.abc import Sequence

import SimpleITK as sitk

from ..measure.margins import volume_ml
from ..measure.metrics import GAP_GOAL_MM
from .structures import Lesion


def lesion_gaps(lesion: Lesion) -> dict:
    """The lesion's gaps to the thecal sac and the cord (mm) and their flags (under 3 mm)."""
    m = lesion.metrics
    out = {"lesion": lesion.number}
    for key, flag in (
        ("mass_sac_min_distance_mm", "gap_sac_under_3mm"),
        ("mass_cord_min_distance_mm", "gap_cord_under_3mm"),
    ):
        value = m.get(key)
        out[key] = value
        out[flag] = None if value is None else bool(value < GAP_GOAL_MM)
    return out


def planning_summary(
    cord_prv: sitk.Image, lesions: Sequence[Lesion], *, prv_mm: float, grid: str
) -> dict:
    """``planning.json``: the PRV (margin, volume, the grid it was measured on) and each
    lesion's gaps."""
    return {
        "prv_margin_mm": prv_mm,
        "cord_prv_volume_ml": volume_ml(cord_prv),
        "cord_prv_grid": grid,
        "gap_goal_mm": GAP_GOAL_MM,
        "lesions": [lesion_gaps(lesion) for lesion in lesions],
    }
