"""Vertebral levels and lesions in the scene (issue 17). What the panel, the page and the
report show of them (lesion blocks, the level table) is :mod:`MESCCAnalyzerLib.presentation`;
here:

* :data:`LESION_COLORS` / :func:`lesion_color_node` / :func:`color_mass_by_lesion`: the colour
  of each lesion in 3D (the mass model's ``lesion_id`` point array on a discrete colour table),
  distinct from the cord, the thecal sac and the distance map;
* :func:`level_point_lps`: where the views jump for a level row (the centreline point at the
  middle of its arc range);
* :func:`level_source_from_nodes`: a VerSe vertebra labelmap node or a named markups point
  as the metrics' :class:`~MESCCAnalyzerLib.measure.metrics.LevelSource`.
"""

from __future__ import annotations

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from ..errors import InputError
from ..measure.lesions import LESION_COLOURS
from ..measure.levels import verse_label
from ..measure.metrics import LESION_ID, LevelSource
from ..presentation import NO_LESION_COLOR, lesion_color, lesion_title
from .nodes import RAS_TO_LPS, image_from_volume_node

LESION_COLOR_NODE_NAME = "MESCC lesion colours"
LESION_COLORS = LESION_COLOURS


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
