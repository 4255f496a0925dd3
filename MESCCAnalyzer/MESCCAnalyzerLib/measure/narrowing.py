"""Narrowing of the cord or the canal against its neighbours, level by level.

A cord can be narrowed by something that is not a segmented tumour (a disc, a fracture, a
treated lesion), and a study may have no mass at all. Each cross-section's measure ``m_i``
is compared with the mean of the sections in a window above (``m_a``) and below (``m_b``),
as Spinal Cord Toolbox's ``sct_compute_compression`` does after Miyanji et al. 2007:

    reduction_i = 1 - m_i / ((m_a + m_b) / 2)        (one side only at the ends of the cord)

for the cord's AP diameter, the cord's area, the cord's compression ratio (AP / transverse)
and the thecal sac's area. The windows start :data:`WINDOW_GAP_MM` from the section and
extend :data:`WINDOW_MM` (SCT's defaults: 10 and 20 mm). A level is flagged when, on
:data:`MIN_FLAGGED_SECTIONS` sections or more within it, a reduction reaches its threshold.
"""

from __future__ import annotations

import numpy as np

from .compression import Sections
from .levels import LevelMap

WINDOW_GAP_MM = 10.0
WINDOW_MM = 20.0
#: reductions that flag a section. Chosen from the healthy real cords (SCT t2: largest AP
#: reduction 9 %, area 10 %; TPTBox: 12 %, 14 %) and the phantom's mildest cord compression
#: (grade 2: AP 31 %, area 17 %): the thresholds sit between, closer to the healthy side so
#: that a real narrowing is not missed.
THRESHOLDS = {
    "cord_ap": 0.20,
    "cord_area": 0.20,
    "cord_compression_ratio": 0.20,
    "sac_area": 0.25,
}
MIN_FLAGGED_SECTIONS = 2  # one section alone can be a segmentation wobble
#: sections this close to either end of the measured cord are not judged (or one slice
#: thickness along the cord, when larger): a cord label tapers where it stops (the last
#: slice's partial volume, a label stopped mid-slice). Measured on SCT's healthy cords: the
#: only flags before this rule were at the ends (mt1, 17 mm slices: area 21 % at 0 mm; the
#: fake-lesion T2's cord mask: area 34 % at 3 mm).
END_MARGIN_MM = 5.0
MEASURE_NAMES = {
    "cord_ap": "cord AP diameter",
    "cord_area": "cord area",
    "cord_compression_ratio": "cord compression ratio (AP/transverse)",
    "sac_area": "thecal sac area",
}


def _measures(sections: Sections, canal: bool = True) -> dict[str, np.ndarray]:
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = sections.cord_ap_mm / sections.cord_transverse_mm
    values = {
        "cord_ap": sections.cord_ap_mm,
        "cord_area": sections.cord_csa_mm2,
        "cord_compression_ratio": ratio,
        "sac_area": sections.sac_csa_mm2 if canal else np.full(len(sections.arc_mm), np.nan),
    }
    return {k: np.where(sections.valid, v, np.nan).astype(float) for k, v in values.items()}


def reductions(
    sections: Sections, *, canal: bool = True, end_margin_mm: float = END_MARGIN_MM
) -> dict[str, np.ndarray]:
    """Per section and measure, ``1 - m_i / mean(m_above, m_below)`` (NaN where undefined,
    and within ``end_margin_mm`` of the measured cord's ends; the thecal sac's all NaN when
    ``canal`` is false: labels with the cord only)."""
    arc = np.asarray(sections.arc_mm, dtype=float)
    judged = np.zeros(arc.shape, dtype=bool)
    if sections.valid.any():
        ends = arc[sections.valid]
        judged = (arc >= ends.min() + end_margin_mm) & (arc <= ends.max() - end_margin_mm)
    out = {}
    for name, m in _measures(sections, canal).items():
        red = np.full(arc.shape, np.nan)
        for i, a in enumerate(arc):
            if not (judged[i] and np.isfinite(m[i])):
                continue
            sides = []
            for sign in (1.0, -1.0):
                near, far = sorted(
                    (a + sign * WINDOW_GAP_MM, a + sign * (WINDOW_GAP_MM + WINDOW_MM))
                )
                window = m[(arc >= near) & (arc <= far)]
                window = window[np.isfinite(window)]
                if window.size:
                    sides.append(window.mean())
            if sides:
                red[i] = 1.0 - m[i] / np.mean(sides)
        out[name] = red
    return out


def _minimum(values: np.ndarray) -> float | None:
    return float(np.nanmin(values)) if np.isfinite(values).any() else None


def level_table(
    levels: LevelMap,
    sections: Sections,
    *,
    lesion_ranges: dict[int, tuple[float, float]] | None = None,
    canal: bool = True,
    end_margin_mm: float = END_MARGIN_MM,
) -> list[dict]:
    """One row per level crossed by the cord: its minima, whether it is flagged and why, and
    the lesions (id -> arc range) that reach into it. ``canal`` false (labels with the cord
    only): the thecal sac is neither reported nor judged. ``end_margin_mm``: see
    :func:`reductions`."""
    arc = np.asarray(sections.arc_mm, dtype=float)
    measures = _measures(sections, canal)
    reds = reductions(sections, canal=canal, end_margin_mm=end_margin_mm)
    rows = []
    for name, lo, hi in zip(levels.names, levels.arc_lo, levels.arc_hi, strict=True):
        inside = (arc >= lo) & (arc < hi)
        if not inside.any():
            continue
        why = []
        for key, threshold in THRESHOLDS.items():
            r = reds[key][inside]
            hit = np.isfinite(r) & (r >= threshold)
            if np.count_nonzero(hit) >= MIN_FLAGGED_SECTIONS:
                worst = int(np.nanargmax(np.where(hit, r, -np.inf)))
                why.append(
                    f"{MEASURE_NAMES[key]} {100 * r[worst]:.0f} % below its neighbours "
                    f"(at {float(arc[inside][worst]):.0f} mm)"
                )

        rows.append(
            {
                "level": name,
                "arc_range_mm": [float(lo), float(hi)],
                "cord_min_csa_mm2": _minimum(measures["cord_area"][inside]),
                "cord_ap_min_mm": _minimum(measures["cord_ap"][inside]),
                "canal_min_area_mm2": _minimum(measures["sac_area"][inside]),
                "flagged": bool(why),
                "flag_reason": "; ".join(why),
                "lesion_ids": [
                    lid
                    for lid, (a, b) in sorted((lesion_ranges or {}).items())
                    if b > lo and a < hi
                ],
            }
        )
    return rows
