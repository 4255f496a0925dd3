"""What every front end shows of an analysis's lesions and vertebral levels: the lesion
blocks and the per-level table of the report, the Slicer panel and the web page (issue 17).

* :func:`lesions_of`: the lesions of a result (an older result without ``lesions`` is one
  lesion built from its top-level keys; a study with no mass has none);
* :func:`lesion_blocks` (:func:`lesion_rows`, :func:`format_value`): one block per lesion,
  its grade, reason and measures, names and units from the one table of definitions
  (a gap under 3 mm marked);
* :func:`level_rows` and :data:`LEVEL_COLUMNS`: the per-level table as text cells;
* :func:`lesion_color`, :func:`css_color`: each lesion's colour (:mod:`.measure.lesions`).
"""

from __future__ import annotations

import html

import numpy as np

from .measure.definitions import BY_KEY
from .measure.lesions import lesion_colour

NO_LESION_COLOR = (0.6, 0.6, 0.6)
#: what a lesion block shows (after its grade and reason), in order; names and units come
#: from measure/definitions.py.
LESION_FIELDS = (
    "mscc_percent",
    "mcc_percent",
    "cord_csa_ratio",
    "canal_compromise_percent",
    "mass_volume_ml",
    "mass_cord_min_distance_mm",
    "mass_sac_min_distance_mm",
    "mass_circumferential_extent_deg",
    "cord_prv_volume_ml",
    "worst_section_level",
    "suv_max",
    "suv_peak",
    "mtv_ml",
    "tlg",
    "adc_mean",
    "adc_median",
    "adc_p10",
    "adc_min",
)
#: the per-level table: (key, header, unit, description); the same columns in the panel's
#: table node and on the page.
LEVEL_COLUMNS = (
    ("level", "level", "", "vertebral level (numbered from the top when unnamed)"),
    ("cord_min_csa_mm2", "cord CSA min", "mm²", "smallest cord cross-sectional area in the level"),
    ("cord_ap_min_mm", "cord AP min", "mm", "smallest cord antero-posterior diameter"),
    ("canal_min_area_mm2", "canal area min", "mm²", "smallest thecal sac area in the level"),
    ("lesions", "lesions", "", "the lesions reaching into the level"),
    ("flagged", "narrowed", "", "narrowed against its neighbours (windows above and below)"),
    ("flag_reason", "why", "", "the measures reduced, by how much, and where"),
)
LEVEL_NUMBERS = ("cord_min_csa_mm2", "cord_ap_min_mm", "canal_min_area_mm2")


# ---------------------------------------------------------------------------------------------
# Lesions
# ---------------------------------------------------------------------------------------------
def lesions_of(metrics: dict) -> list[dict]:
    """The lesions of ``metrics``, cranial first.

    ``metrics["lesions"]`` when the result has it; an older result without that key is one
    lesion built from its top-level keys (the single mass), and a result with no grade (no
    mass) has none.
    """
    if "lesions" in metrics:
        return [dict(lesion) for lesion in metrics["lesions"] or []]
    if metrics.get("bilsky_grade") is None:
        return []
    lesion = {k: metrics[k] for k in (*LESION_FIELDS, "bilsky_reason") if k in metrics}
    lesion.update(
        id=1,
        bilsky_grade=metrics["bilsky_grade"],
        levels=list(metrics.get("mass_levels") or []),
        arc_range_mm=metrics.get("mass_arc_range_mm"),
        worst_section_lps_mm=metrics.get("worst_section_lps_mm"),
    )
    return [lesion]


def lesion_color(lesion_id: int) -> tuple[float, float, float]:
    """The colour of lesion ``lesion_id`` (1, 2, ...) in 3D, in the panel and on the page."""
    if int(lesion_id) < 1:
        return NO_LESION_COLOR
    return lesion_colour(lesion_id)


def css_color(rgb) -> str:
    return "#" + "".join(f"{round(255 * c):02x}" for c in rgb)


def _levels_text(levels) -> str:
    levels = list(levels or [])
    if not levels:
        return ""
    return levels[0] if len(levels) == 1 else f"{levels[0]}–{levels[-1]}"


def lesion_title(lesion: dict) -> str:
    """``Lesion 1 · T6–T7`` (the levels left out when unknown)."""
    where = _levels_text(lesion.get("levels"))
    return f"Lesion {lesion['id']}" + (f" · {where}" if where else "")


def format_value(value, unit: str = "") -> str:
    """A value as the panel and the page show it: 4 significant digits, ``–`` when absent."""
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(str(v) for v in value)
    else:
        text = str(value)
    return f"{text} {unit}".strip()


GAP_FLAGS = {
    "mass_cord_min_distance_mm": "gap_cord_under_3mm",
    "mass_sac_min_distance_mm": "gap_sac_under_3mm",
}


def lesion_rows(lesion: dict) -> list[dict]:
    """The rows of a lesion's block: key, name, value with its unit (fields it has only); a
    gap under 3 mm says so."""
    rows = [{"key": "levels", "label": "Levels", "value": ", ".join(lesion.get("levels") or [])}]
    for key in LESION_FIELDS:
        if key not in lesion:
            continue
        known = BY_KEY.get(key)
        label = known.name if known else key
        rows.append(
            {
                "key": key,
                "label": label,
                "value": format_value(lesion[key], known.unit if known else "")
                + (" (under 3 mm)" if lesion.get(GAP_FLAGS.get(key, "")) else ""),
            }
        )
    return rows


def lesion_blocks(metrics: dict) -> list[dict]:
    """One block per lesion: id, title, colour, grade, reason and rows (see :func:`lesion_rows`)."""
    return [
        {
            "id": int(lesion["id"]),
            "title": lesion_title(lesion),
            "color": css_color(lesion_color(lesion["id"])),
            "grade": "–" if lesion.get("bilsky_grade") is None else str(lesion["bilsky_grade"]),
            "reason": str(lesion.get("bilsky_reason") or ""),
            "rows": lesion_rows(lesion),
        }
        for lesion in lesions_of(metrics)
    ]


NO_LESION_TEXT = (
    "No epidural mass: no lesion and no Bilsky grade. The level table flags every level where "
    "the cord or the canal is narrowed against its neighbours."
)


def lesions_html(metrics: dict) -> str:
    """The lesion blocks as HTML for the panel's read-only text (Qt's rich-text subset)."""
    blocks = lesion_blocks(metrics)
    if not blocks:
        return f"<p>{html.escape(NO_LESION_TEXT)}</p>"
    parts = []
    for b in blocks:
        rows = "".join(
            f"<tr><td>{html.escape(r['label'])}</td><td>&nbsp;{html.escape(r['value'])}</td></tr>"
            for r in b["rows"]
        )
        parts.append(
            f"<h3><span style='color:{b['color']}'>&#9632;</span> {html.escape(b['title'])}: "
            f"Bilsky {html.escape(b['grade'])}</h3>"
            f"<p>{html.escape(b['reason'])}</p><table>{rows}</table>"
        )
    if metrics.get("worst_lesion_id") is not None and len(blocks) > 1:
        parts.insert(0, f"<p>The study's grade is lesion {int(metrics['worst_lesion_id'])}'s.</p>")
    return "".join(parts)


# ---------------------------------------------------------------------------------------------
# Levels
# ---------------------------------------------------------------------------------------------
def level_rows(metrics: dict) -> list[dict]:
    """The per-level table as text cells (:data:`LEVEL_COLUMNS`), cranial first, with the
    row's ``index``, ``flagged`` flag and ``arc_range_mm``."""
    rows = []
    for index, r in enumerate(metrics.get("levels") or []):
        row = {
            "index": index,
            "level": str(r["level"]),
            "lesions": ", ".join(str(i) for i in r.get("lesion_ids") or []),
            "flagged": "yes" if r.get("flagged") else "",
            "flag_reason": str(r.get("flag_reason") or "") if r.get("flagged") else "",
            "is_flagged": bool(r.get("flagged")),
            "arc_range_mm": [float(a) for a in r["arc_range_mm"]],
        }
        for key in LEVEL_NUMBERS:
            value = r.get(key)
            row[key] = "–" if value is None else f"{float(value):.1f}"
        rows.append(row)
    return rows


UNNAMED_LEVELS_NOTE = (
    "Levels numbered from the top of the image (no vertebra labelmap or level anchor was "
    "given): the numbers are not vertebra names."
)


def levels_note(metrics: dict) -> str:
    """What the level table's reader must know about its names ('' when they are vertebrae)."""
    if not metrics.get("levels"):
        return ""
    return "" if metrics.get("levels_named", True) else UNNAMED_LEVELS_NOTE
