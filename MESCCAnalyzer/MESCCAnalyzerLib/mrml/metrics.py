"""Compression metrics as MRML nodes: coloured surface models, tables and a plot chart.

:func:`compute_metrics_nodes` takes a labelmap volume node (or a segmentation node with the
MESCC segments) and an optional SUV volume node on the same grid, runs
:func:`MESCCAnalyzerLib.measure.metrics.compute_metrics` and adds the results to the scene with
:func:`add_metrics_nodes`:

* model nodes "cord", "thecal sac", "mass" (closed smoothed surfaces, RAS), the mass coloured
  by its distance to the cord surface (``DistanceToCord_mm``) and the cord by its distance to
  the mass (``DistanceToMass_mm``), 0-10 mm on a red-yellow-green-blue scale, so the patch
  where the mass presses on the cord shows red; the cord centreline as a line model;
* a table node of the cross-sections (one row per section, the columns of sections.csv);
* a plot chart of cord CSA and AP diameter against arc length, with each lesion's
  craniocaudal extent drawn as a box in its colour and the worst section as a vertical line;
* a table node of the metrics (key, value);
* a table node of the vertebral levels (one row per level crossed by the cord: minima,
  lesions, narrowing flag and why) and one of the lesions (one row each: levels, grade,
  reason, MSCC, volume...), see :mod:`.levels`; the mass model coloured per lesion;
* a text node "MESCC results" holding the metrics, the sections and the notes as JSON, with
  references to the models (:func:`store_results`): what the report needs survives saving the
  scene and opening it again (:func:`read_results`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import slicer
import vtk

from ..measure.definitions import BY_KEY
from ..measure.metrics import (
    DISTANCE_TO_CORD,
    DISTANCE_TO_MASS,
    LevelSource,
    MetricsResult,
    compute_metrics,
)
from ..measure.surfaces import lps_to_ras_polydata
from ..presentation import (
    LESION_FIELDS,
    LEVEL_COLUMNS,
    LEVEL_NUMBERS,
    lesion_color,
    lesions_of,
    level_rows,
)
from .levels import color_mass_by_lesion, lesion_color_node
from .nodes import image_from_volume_node
from .registration import volume_on_grid
from .segmentation import labels_from_segmentation_node

RESULTS_NODE_NAME = "MESCC results"
COLUMN_DESCRIPTIONS = {
    "metric": "the key in metrics.json",
    "unit": "unit of the value",
    "definition": "how it is computed (docs/methods.md gives the formula and the source)",
}
DISTANCE_RANGE_MM = (0.0, 10.0)
COLOR_NODE_NAME = "MESCC distance (mm)"
MODEL_STYLE = {
    # key: (name, colour, opacity, scalar array or None)
    "cord": ("cord", (1.0, 0.9, 0.5), 1.0, DISTANCE_TO_MASS),
    "sac": ("thecal sac", (0.55, 0.8, 1.0), 0.25, None),
    "mass": ("mass", (0.8, 0.35, 0.3), 0.8, DISTANCE_TO_CORD),
    "centerline": ("cord centreline", (0.2, 0.2, 0.9), 1.0, None),
}


@dataclass
class MetricsNodes:
    """The nodes :func:`add_metrics_nodes` created."""

    models: dict = field(default_factory=dict)  # key (cord, sac, mass, centerline) -> model node
    sections_table: object = None
    metrics_table: object = None
    extent_table: object = None
    chart: object = None
    series: dict = field(default_factory=dict)  # name -> plot series node
    color_node: object = None
    levels_table: object = None
    lesions_table: object = None
    lesion_color_node: object = None
    result: MetricsResult | None = None

    def nodes(self) -> list:
        """Every node made for this result (the shared distance colour node excepted)."""
        found = [*self.models.values(), *self.series.values()]
        found += [self.sections_table, self.metrics_table, self.extent_table, self.chart]
        found += [self.levels_table, self.lesions_table, self.lesion_color_node]
        return [n for n in found if n is not None]


def distance_color_node(scene):
    """A colour node for distances: red at contact, yellow at 2 mm, green at 5, blue at 10 mm."""
    node = scene.GetFirstNodeByName(COLOR_NODE_NAME)
    if node is not None:
        return node
    node = slicer.vtkMRMLProceduralColorNode()
    node.SetName(COLOR_NODE_NAME)
    ctf = vtk.vtkColorTransferFunction()
    for value, rgb in (
        (0.0, (0.85, 0.0, 0.0)),
        (2.0, (1.0, 0.85, 0.0)),
        (5.0, (0.2, 0.75, 0.2)),
        (10.0, (0.2, 0.35, 0.9)),
    ):
        ctf.AddRGBPoint(value, *rgb)
    node.SetAndObserveColorTransferFunction(ctf)
    node.SetAttribute("Category", "MESCC")
    scene.AddNode(node)
    return node


def _add_model(scene, poly_lps, key: str, color_node):
    name, rgb, opacity, scalars = MODEL_STYLE[key]
    node = scene.AddNewNodeByClass("vtkMRMLModelNode", scene.GenerateUniqueName(name))
    node.SetAndObservePolyData(lps_to_ras_polydata(poly_lps))
    node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetColor(*rgb)
    display.SetOpacity(opacity)
    if key == "centerline":
        display.SetLineWidth(3.0)
        display.SetScalarVisibility(False)
    elif scalars is not None:
        display.SetActiveScalar(scalars, vtk.vtkAssignAttribute.POINT_DATA)
        display.SetAndObserveColorNodeID(color_node.GetID())
        display.SetScalarRangeFlag(slicer.vtkMRMLDisplayNode.UseManualScalarRange)
        display.SetScalarRange(*DISTANCE_RANGE_MM)
        display.SetScalarVisibility(True)
    else:
        display.SetScalarVisibility(False)
    return node


def _double_column(name: str, values) -> vtk.vtkDoubleArray:
    arr = vtk.vtkDoubleArray()
    arr.SetName(name)
    for v in values:
        arr.InsertNextValue(float(v))
    return arr


def _string_column(name: str, values) -> vtk.vtkStringArray:
    arr = vtk.vtkStringArray()
    arr.SetName(name)
    for v in values:
        arr.InsertNextValue(str(v))
    return arr


def _table_node(scene, name: str, columns: list) -> object:
    node = scene.AddNewNodeByClass("vtkMRMLTableNode", scene.GenerateUniqueName(name))
    table = node.GetTable()
    for col in columns:
        table.AddColumn(col)
    node.Modified()
    return node


def _format(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, default=float)
    return str(value)


def _series(scene, name: str, table_node, x: str, y: str, rgb, *, line_style=None):
    node = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", scene.GenerateUniqueName(name))
    node.SetAndObserveTableNodeID(table_node.GetID())
    node.SetXColumnName(x)
    node.SetYColumnName(y)
    node.SetPlotType(slicer.vtkMRMLPlotSeriesNode.PlotTypeScatter)
    node.SetMarkerStyle(slicer.vtkMRMLPlotSeriesNode.MarkerStyleNone)
    if line_style is not None:
        node.SetLineStyle(line_style)
    node.SetColor(*rgb)
    return node


def add_metrics_nodes(scene, result: MetricsResult, *, prefix: str = "MESCC") -> MetricsNodes:
    """Add models, tables and the CSA/AP chart of ``result`` to ``scene`` (module docstring).

    A study without a mass has no mass model and no lesion; the mass model, when there is
    one, is coloured per lesion (its distance arrays stay on it for the Models module).
    """
    out = MetricsNodes(result=result)
    out.color_node = distance_color_node(scene)
    lesions = lesions_of(result.metrics)
    for key in ("cord", "sac", "mass", "centerline"):
        if result.models.get(key) is not None:
            out.models[key] = _add_model(scene, result.models[key], key, out.color_node)
    if "mass" in out.models:
        out.lesion_color_node = lesion_color_node(scene, lesions)
        color_mass_by_lesion(out.models["mass"], out.lesion_color_node)
    out.sections_table = _sections_table(scene, result, prefix)
    out.extent_table = _extent_table(scene, result, lesions, prefix)
    out.chart, out.series = _chart(scene, out.sections_table, out.extent_table, lesions, prefix)
    out.metrics_table = _metrics_table(scene, result.metrics, prefix)
    out.levels_table = levels_table(scene, result.metrics, prefix=prefix)
    out.lesions_table = lesions_table(scene, result.metrics, prefix=prefix)
    return out


def _sections_table(scene, result: MetricsResult, prefix: str):
    """The sections table (NaN where a section has no value), units on the columns."""
    cols = result.sections.columns()
    node = _table_node(scene, f"{prefix} sections", [_double_column(k, v) for k, v in cols.items()])
    for k in cols:
        node.SetColumnUnitLabel(k, k.rsplit("_", 1)[-1] if k.endswith(("_mm", "_mm2")) else "")
    return node


def _extent_table(scene, result: MetricsResult, lesions: list[dict], prefix: str):
    """Each lesion's extent (a box, columns ``lesion_N_arc_mm`` / ``lesion_N``) and the worst
    section (a line) for the chart."""
    m = result.metrics
    valid = result.sections.valid
    top = float(np.nanmax(np.where(valid, result.sections.cord_csa_mm2, np.nan))) * 1.1
    worst = m.get("worst_section_arc_mm")
    worst = float("nan") if worst is None else float(worst)
    columns = [
        _double_column("worst_arc_mm", [worst] * 5),
        _double_column("worst", [0.0, top, top, top, top]),
    ]
    for lesion in lesions:
        if lesion.get("arc_range_mm") is None:
            continue
        lo, hi = lesion["arc_range_mm"]
        columns += [
            _double_column(f"lesion_{lesion['id']}_arc_mm", [lo, lo, hi, hi, lo]),
            _double_column(f"lesion_{lesion['id']}", [0.0, top, top, 0.0, 0.0]),
        ]
    return _table_node(scene, f"{prefix} lesion extents", columns)


def _chart(scene, sections_table, extent_table, lesions: list[dict], prefix: str):
    """The chart of cord CSA and AP diameter along the centreline, with each lesion's extent
    (a box in its colour) and the worst section; returns the chart node and its series by
    name (``cord_csa_mm2``, ``cord_ap_mm``, ``worst``, ``lesion_1``, ...)."""
    chart = scene.AddNewNodeByClass(
        "vtkMRMLPlotChartNode", scene.GenerateUniqueName(f"{prefix} cord along its axis")
    )
    chart.SetTitle("Cord cross-section along the centreline")
    chart.SetXAxisTitle("arc length (mm, inferior to superior)")
    chart.SetYAxisTitle("CSA (mm2) / AP diameter (mm)")
    dash, dot = (
        slicer.vtkMRMLPlotSeriesNode.LineStyleDash,
        slicer.vtkMRMLPlotSeriesNode.LineStyleDot,
    )
    series = {
        "cord_csa_mm2": _series(
            scene, "cord CSA (mm2)", sections_table, "arc_mm", "cord_csa_mm2", (0.85, 0.55, 0.0)
        ),
        "cord_ap_mm": _series(
            scene, "cord AP diameter (mm)", sections_table, "arc_mm", "cord_ap_mm", (0.1, 0.3, 0.85)
        ),
    }
    table = extent_table.GetTable()
    for lesion in lesions:
        name = f"lesion_{lesion['id']}"
        if table.GetColumnByName(name) is not None:
            series[name] = _series(
                scene, f"lesion {lesion['id']} extent", extent_table, f"{name}_arc_mm", name,
                lesion_color(lesion["id"]), line_style=dash,
            )  # fmt: skip
    if np.isfinite(table.GetValueByName(0, "worst_arc_mm").ToDouble()):
        series["worst"] = _series(
            scene, "worst section", extent_table, "worst_arc_mm", "worst", (0.3, 0.3, 0.3),
            line_style=dot,
        )  # fmt: skip
    for node in series.values():
        chart.AddAndObservePlotSeriesNodeID(node.GetID())
    return chart, series


def _metrics_table(scene, m: dict, prefix: str):
    """Every value of metrics.json with its name, unit and definition from the one table of
    definitions (the report's and the page's): Slicer's table view shows them side by side."""
    # the levels and the lesions have their own tables
    keys = [k for k in m if k not in ("bilsky_facts", "levels", "lesions")]
    keys += [f"bilsky_facts.{k}" for k in m.get("bilsky_facts") or {}]
    values = [
        _format(m[k]) if "." not in k else _format(m["bilsky_facts"][k.split(".", 1)[1]])
        for k in keys
    ]
    known = [BY_KEY.get(k) for k in keys]
    node = _table_node(
        scene,
        f"{prefix} metrics",
        [
            _string_column("metric", keys),
            _string_column("value", values),
            _string_column("unit", [d.unit if d else "" for d in known]),
            _string_column("name", [d.name if d else "" for d in known]),
            _string_column("definition", [d.definition if d else "" for d in known]),
        ],
    )
    for column, text in COLUMN_DESCRIPTIONS.items():
        node.SetColumnDescription(column, text)
    return node


def levels_table(scene, metrics: dict, *, prefix: str = "MESCC"):
    """The per-level table (:data:`~MESCCAnalyzerLib.presentation.LEVEL_COLUMNS`: numbers as doubles, NaN where a
    level has none; the arc range last), one row per level, cranial first; its headers say
    the unit and hold the column's description."""
    rows, raw = level_rows(metrics), metrics.get("levels") or []
    columns = []
    for key, _header, _unit, _description in LEVEL_COLUMNS:
        if key in LEVEL_NUMBERS:  # the values of metrics.json (NaN where a level has none)
            values = [float("nan") if r.get(key) is None else r[key] for r in raw]
            columns.append(_double_column(key, values))
        else:
            columns.append(_string_column(key, [r[key] for r in rows]))
    columns += [
        _double_column("arc_from_mm", [r["arc_range_mm"][0] for r in rows]),
        _double_column("arc_to_mm", [r["arc_range_mm"][1] for r in rows]),
    ]
    node = _table_node(scene, f"{prefix} levels", columns)
    node.SetUseColumnTitleAsColumnHeader(True)
    for key, header, unit, description in LEVEL_COLUMNS:
        node.SetColumnTitle(key, f"{header} ({unit})" if unit else header)
        node.SetColumnUnitLabel(key, unit)
        node.SetColumnDescription(key, description)
    for key, header in (("arc_from_mm", "arc from (mm)"), ("arc_to_mm", "arc to (mm)")):
        node.SetColumnTitle(key, header)
        node.SetColumnUnitLabel(key, "mm")
        node.SetColumnDescription(key, "the level's range along the cord centreline")
    node.SetAttribute("MESCC.LevelsNamed", "true" if metrics.get("levels_named") else "false")
    return node


def lesions_table(scene, metrics: dict, *, prefix: str = "MESCC"):
    """One row per lesion (cranial first): id, levels, grade, reason and
    :data:`~MESCCAnalyzerLib.presentation.LESION_FIELDS` (the values of metrics.json, units in the column labels)."""
    lesions = lesions_of(metrics)
    keys = [k for k in LESION_FIELDS if any(k in lesion for lesion in lesions)]
    columns = [
        _string_column("lesion", [str(lesion["id"]) for lesion in lesions]),
        _string_column("levels", [", ".join(lesion.get("levels") or []) for lesion in lesions]),
        _string_column(
            "bilsky_grade", [str(lesion.get("bilsky_grade") or "") for lesion in lesions]
        ),
        _string_column(
            "bilsky_reason", [str(lesion.get("bilsky_reason") or "") for lesion in lesions]
        ),
    ]
    for key in keys:
        values = [lesion.get(key) for lesion in lesions]
        if all(v is None or isinstance(v, (int, float)) for v in values):
            columns.append(_double_column(key, [float("nan") if v is None else v for v in values]))
        else:
            columns.append(_string_column(key, ["" if v is None else _format(v) for v in values]))
    node = _table_node(scene, f"{prefix} lesions", columns)
    for key in keys:
        known = BY_KEY.get(key)
        if known is not None:
            node.SetColumnUnitLabel(key, known.unit)
            node.SetColumnDescription(key, known.definition)
    return node


def _labels_from_node(node, reference_node=None):
    if node.IsA("vtkMRMLSegmentationNode"):
        return labels_from_segmentation_node(node, reference_node)
    if node.IsA("vtkMRMLVolumeNode"):
        return image_from_volume_node(node)
    raise ValueError(
        f"{node.GetName()} is neither a labelmap volume nor a segmentation; choose the MESCC labels."
    )


def compute_metrics_nodes(
    scene,
    labels_node,
    pet_node=None,
    *,
    reference_node=None,
    mri_node=None,
    levels: LevelSource | None = None,
    progress=None,
    cancel=None,
) -> MetricsNodes:
    """Measure ``labels_node`` (labelmap volume or segmentation node) and add the result nodes.

    ``pet_node``: SUV volume node (optional), resampled onto the labelmap's grid through its
    parent transform (e.g. the PET-to-MRI registration). ``reference_node``: the
    volume whose grid a segmentation node is exported onto (its source volume by default).
    ``levels``: how the vertebral levels are named (see
    :func:`.levels.level_source_from_nodes`); numbered from the top without it.
    ``mri_node``: the MRI the labels were drawn on: the cord's outline is measured from its
    partial volume (resampled onto the labels' grid like the PET).
    """
    labels = _labels_from_node(labels_node, reference_node)
    pet = volume_on_grid(pet_node, labels) if pet_node is not None else None
    mri = volume_on_grid(mri_node, labels) if mri_node is not None else None
    result = compute_metrics(labels, pet, mri=mri, levels=levels, progress=progress, cancel=cancel)
    return add_metrics_nodes(scene, result)


# ---------------------------------------------------------------------------------------------
# Results kept in the scene (saved with it)
# ---------------------------------------------------------------------------------------------
@dataclass
class StoredResults:
    """What the report needs, read back from the scene (see :func:`store_results`)."""

    metrics: dict
    sections: dict[str, np.ndarray]
    models: dict  # key -> vtkPolyData (LPS)
    notes: list[str] = field(default_factory=list)


def _json_value(value):
    if isinstance(value, dict):
        return {k: _json_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_json_value(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if np.isfinite(value) else None
    return value


def store_results(scene, nodes: MetricsNodes, *, notes=()) -> object:
    """Keep ``nodes.result`` in a text node (replacing an earlier one) that the scene saves."""
    previous = scene.GetFirstNodeByName(RESULTS_NODE_NAME)
    if previous is not None and previous.IsA("vtkMRMLTextNode"):
        scene.RemoveNode(previous)
    payload = {
        "metrics": _json_value(nodes.result.metrics),
        "sections": _json_value(nodes.result.sections.columns()),
        "notes": list(notes),
    }
    node = scene.AddNewNodeByClass("vtkMRMLTextNode", RESULTS_NODE_NAME)
    node.SetForceCreateStorageNode(slicer.vtkMRMLTextNode.CreateStorageNodeAlways)
    node.SetText(json.dumps(payload))
    for key, model in nodes.models.items():
        node.SetNodeReferenceID(f"model_{key}", model.GetID())
    return node


def read_results(scene) -> StoredResults | None:
    """The results :func:`store_results` kept, or None when nothing was measured."""
    node = scene.GetFirstNodeByName(RESULTS_NODE_NAME)
    if node is None or not node.IsA("vtkMRMLTextNode") or not node.GetText():
        return None
    payload = json.loads(node.GetText())
    sections = {
        k: np.array([np.nan if v is None else v for v in values], dtype=float)
        for k, values in payload["sections"].items()
    }
    models = {}
    for key in MODEL_STYLE:
        model = node.GetNodeReference(f"model_{key}")
        if model is not None and model.GetPolyData() is not None:
            models[key] = lps_to_ras_polydata(model.GetPolyData())  # the flip is its own inverse
    return StoredResults(payload["metrics"], sections, models, list(payload.get("notes", [])))
