"""Vertebral levels and lesions as the panel and the page show them (issue 17).

One source for what the Slicer panel, its table nodes and the web page show of
``metrics["levels"]`` and ``metrics["lesions"]``:

* :func:`lesions_of`: the lesions of a result (an older result without ``lesions`` is one
  lesion built from its top-level keys; a study with no mass has none);
* :func:`level_rows` and :data:`LEVEL_COLUMNS`: the per-level table, one row per vertebral
  level crossed by the cord (minima, lesions, the narrowing flag and why);
* :func:`lesion_blocks` / :func:`lesions_html`: one block per lesion (grade, reason, MSCC,
  volume, levels...), names and units from the one table of definitions;
* :data:`LESION_COLORS` / :func:`lesion_color_node` / :func:`color_mass_by_lesion`: the colour
  of each lesion in 3D (the mass model's ``lesion_id`` point array on a discrete colour table),
  distinct from the cord, the thecal sac and the distance map;
* :func:`level_point_lps`: where the views jump for a level row (the centreline point at the
  middle of its arc range);
* :func:`level_source_from_nodes`: a VerSe vertebra labelmap node or a named markups point
  as the metrics' :class:`~MESCCAnalyzerLib.measure.metrics.LevelSource`.
"""

from __future__ import annotations

import html

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..errors import InputError
from ..measure.definitions import BY_KEY
from ..measure.lesions import LESION_COLOURS, lesion_colour
from ..measure.levels import verse_label
from ..measure.metrics import LESION_ID, LevelSource
from .nodes import RAS_TO_LPS, image_from_volume_node

LESION_COLOR_NODE_NAME = "MESCC lesion colours"
LESION_COLORS = LESION_COLOURS
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


def lesion_rows(lesion: dict) -> list[dict]:
    """The rows of a lesion's block: key, name, value with its unit (fields it has only)."""
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
                "value": format_value(lesion[key], known.unit if known else ""),
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


def level_point_lps(arc_range_mm, centerline_lps: vtk.vtkPolyData) -> np.ndarray:
    """The centreline point (LPS mm) at the middle of a level's arc range.

    ``centerline_lps``: the metrics' centreline model (points LPS, point array ``arc_mm``).
    A range reaching past the ends of the cord is clamped to them.
    """
    arc_array = centerline_lps.GetPointData().GetArray("arc_mm")
    if arc_array is None or centerline_lps.GetNumberOfPoints() < 2:
        raise InputError(
            "the cord centreline of the metrics is missing", hint="compute the metrics again"
        )
    arc = numpy_support.vtk_to_numpy(arc_array).astype(float)
    points = numpy_support.vtk_to_numpy(centerline_lps.GetPoints().GetData()).astype(float)
    order = np.argsort(arc)
    arc, points = arc[order], points[order]
    middle = 0.5 * (float(arc_range_mm[0]) + float(arc_range_mm[1]))
    return np.array([np.interp(middle, arc, points[:, axis]) for axis in range(3)])


# ---------------------------------------------------------------------------------------------
# Lesion colours in the scene
# ---------------------------------------------------------------------------------------------
def lesion_color_node(scene, lesions: list[dict]):
    """A colour table (index = lesion id, 0 unused) whose entries are named after the
    lesions; one per result, as its models and tables (an earlier result keeps its own)."""
    node = scene.AddNewNodeByClass(
        "vtkMRMLColorTableNode", scene.GenerateUniqueName(LESION_COLOR_NODE_NAME)
    )
    node.SetTypeToUser()
    count = max([int(lesion["id"]) for lesion in lesions] + [1]) + 1
    node.SetNumberOfColors(count)
    titles = {int(lesion["id"]): lesion_title(lesion) for lesion in lesions}
    node.SetColor(0, "no lesion", *NO_LESION_COLOR, 1.0)
    for lesion_id in range(1, count):
        node.SetColor(
            lesion_id, titles.get(lesion_id, f"Lesion {lesion_id}"), *lesion_color(lesion_id), 1.0
        )
    node.SetAttribute("Category", "MESCC")
    return node


def ensure_lesion_ids(poly: vtk.vtkPolyData) -> vtk.vtkPolyData:
    """``poly`` with a ``lesion_id`` point array (every point lesion 1 when it had none: a
    result from before lesions were told apart has one mass)."""
    if poly.GetPointData().GetArray(LESION_ID) is None:
        ids = numpy_support.numpy_to_vtk(np.ones(poly.GetNumberOfPoints(), dtype=np.int32), deep=1)
        ids.SetName(LESION_ID)
        poly.GetPointData().AddArray(ids)
    return poly


def color_mass_by_lesion(model_node, color_node) -> None:
    """Colour the mass model's points by their lesion (``lesion_id`` on ``color_node``)."""
    ensure_lesion_ids(model_node.GetPolyData())
    display = model_node.GetDisplayNode()
    display.SetActiveScalar(LESION_ID, vtk.vtkAssignAttribute.POINT_DATA)
    display.SetAndObserveColorNodeID(color_node.GetID())
    display.SetScalarRangeFlag(slicer.vtkMRMLDisplayNode.UseManualScalarRange)
    display.SetScalarRange(0.0, float(color_node.GetNumberOfColors() - 1))  # index = lesion id
    display.SetScalarVisibility(True)


# ---------------------------------------------------------------------------------------------
# Level names from the scene
# ---------------------------------------------------------------------------------------------
def level_anchor_from_markups(markups_node) -> tuple[str, np.ndarray]:
    """(level name, LPS point) of a markups point list holding one point labelled ``T6``.

    The point's label names its vertebra (its description when the label is not a level
    name); :class:`InputError` with a hint when there is no point, several, or no level name.
    """
    name = markups_node.GetName()
    points = [
        i
        for i in range(markups_node.GetNumberOfControlPoints())
        if markups_node.GetNthControlPointPositionStatus(i) == markups_node.PositionDefined
    ]
    if len(points) != 1:
        raise InputError(
            f"the level anchor '{name}' has {len(points)} points; it needs exactly one",
            hint="place one point in a vertebral body and label it with its level, e.g. T6",
        )
    index = points[0]
    label = markups_node.GetNthControlPointLabel(index)
    description = markups_node.GetNthControlPointDescription(index)
    level = None
    for text in (label, description):
        try:
            verse_label(text)
        except InputError:
            continue
        level = text.strip().upper()
        break
    if level is None:
        raise InputError(
            f"the point of the level anchor '{name}' is labelled {label!r}, not a vertebral level",
            hint="rename the point after its vertebra: C1-C7, T1-T12, L1-L6 or S (e.g. T6)",
        )
    ras = [0.0, 0.0, 0.0]
    markups_node.GetNthControlPointPositionWorld(index, ras)
    lps = (RAS_TO_LPS[:3, :3] @ np.asarray(ras, dtype=float)).astype(float)
    return level, lps


def level_source_from_nodes(vertebrae_node=None, anchor_node=None) -> LevelSource | None:
    """The metrics' level source: a VerSe labelmap volume node (preferred) or a named markups
    point; None (levels numbered from the top) when neither is given."""
    if vertebrae_node is not None:
        return LevelSource(
            vertebrae=image_from_volume_node(vertebrae_node),
            vertebrae_path=vertebrae_node.GetName(),
        )
    if anchor_node is not None:
        return LevelSource(anchor=level_anchor_from_markups(anchor_node))
    return None
