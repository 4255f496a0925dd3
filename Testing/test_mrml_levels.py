"""Vertebral levels and lesions in a real MRML scene (issue 17, the panel's side): the level
and lesion tables, the mass coloured per lesion, the jump to a level, the level names from a
VerSe labelmap node or a named markups point.

The whole-spine phantom (T3-T9, lesions of grade 2 at T4, 0 at T6 and 3 at T8) on a coarse
grid, measured once for the module; synthetic metrics for results without lesions.
"""

from __future__ import annotations

import html

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
from vtk.util import numpy_support

from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.measure.levels import verse_label
from MESCCAnalyzerLib.mrml.levels import LESION_ID, level_point_lps, level_source_from_nodes
from MESCCAnalyzerLib.mrml.metrics import compute_metrics_nodes
from MESCCAnalyzerLib.mrml.nodes import add_volume_node
from MESCCAnalyzerLib.mrml.scene import ensure_views
from MESCCAnalyzerLib.mrml.workflow import Workflow
from MESCCAnalyzerLib.presentation import (
    UNNAMED_LEVELS_NOTE,
    lesion_blocks,
    lesion_color,
    lesions_html,
    lesions_of,
    level_rows,
    levels_note,
)

LESIONS = (("T4", "2"), ("T6", "0"), ("T8", "3"))


@pytest.fixture(scope="module")
def a_spine_scene():
    """The spine phantom's labels and VerSe labelmap as nodes, measured with the labelmap."""
    from MESCCAnalyzerLib.phantom.spine import SpineGrids, make_spine_phantom

    study = make_spine_phantom(
        ("T3", "T9"), LESIONS, seed=1,
        grids=SpineGrids(mri_spacing_mm=(1.0, 1.0, 3.0), ct_spacing_mm=(1.2, 1.2, 1.5)),
    )  # fmt: skip
    scene = slicer.vtkMRMLScene()
    labels = add_volume_node(scene, study.labels, "labels", labelmap=True)
    vertebrae = add_volume_node(scene, study.vertebrae, "vertebrae", labelmap=True)
    nodes = compute_metrics_nodes(
        scene, labels, levels=level_source_from_nodes(vertebrae_node=vertebrae)
    )
    return scene, study, nodes, labels


def _cells(table_node, column: str) -> list[str]:
    return [
        table_node.GetCellText(r, table_node.GetColumnIndex(column))
        for r in range(table_node.GetNumberOfRows())
    ]


def test_the_level_table_has_one_row_per_level_named_from_the_verse_labelmap(a_spine_scene):
    _, _, nodes, _ = a_spine_scene
    m = nodes.result.metrics
    table = nodes.levels_table
    names = _cells(table, "level")
    assert m["level_source"] == "vertebrae" and levels_note(m) == ""
    assert names == [row["level"] for row in m["levels"]]
    assert {"T4", "T5", "T6", "T7", "T8"} <= set(names)
    labels = [verse_label(n) for n in names]
    assert labels == sorted(labels) and len(set(labels)) == len(labels)  # cranial first, once
    # numbers: the engine's minima, as metrics.json holds them
    for r, row in enumerate(m["levels"]):
        for key in ("cord_min_csa_mm2", "cord_ap_min_mm", "canal_min_area_mm2"):
            cell = table.GetTable().GetValueByName(r, key).ToDouble()
            assert cell == pytest.approx(row[key], rel=1e-12), (row["level"], key)
    flagged = dict(zip(names, _cells(table, "flagged"), strict=True))
    why = dict(zip(names, _cells(table, "flag_reason"), strict=True))
    # grade 2 at T4 and grade 3 at T8 narrow the cord; the grade-0 mass at T6 does not
    assert flagged["T4"] == flagged["T8"] == "yes" and flagged["T6"] == ""
    assert "below its neighbours" in why["T8"] and why["T6"] == ""
    lesions = dict(zip(names, _cells(table, "lesions"), strict=True))
    assert lesions["T4"].startswith("1") and lesions["T6"] == "2" and lesions["T8"] == "3"
    assert table.GetColumnTitle("cord_min_csa_mm2") == "cord CSA min (mm²)"
    assert table.GetColumnUnitLabel("cord_ap_min_mm") == "mm"


def test_one_lesion_row_and_block_per_lesion_with_its_grade(a_spine_scene):
    _, _, nodes, _ = a_spine_scene
    table = nodes.lesions_table
    assert _cells(table, "lesion") == ["1", "2", "3"]
    assert _cells(table, "bilsky_grade") == [grade for _, grade in LESIONS]
    levels = _cells(table, "levels")
    for (level, _), text in zip(LESIONS, levels, strict=True):
        assert level in text.split(", ")
    lesions = nodes.result.metrics["lesions"]
    mscc = [table.GetTable().GetValueByName(r, "mscc_percent").ToDouble() for r in range(3)]
    np.testing.assert_allclose(mscc, [lesion["mscc_percent"] for lesion in lesions])
    assert table.GetColumnUnitLabel("mass_volume_ml") == "ml"
    blocks = lesion_blocks(nodes.result.metrics)
    assert [b["grade"] for b in blocks] == ["2", "0", "3"]
    third = lesions[2]["levels"]
    where = third[0] if len(third) == 1 else f"{third[0]}–{third[-1]}"
    assert blocks[2]["title"] == f"Lesion 3 · {where}" and "T8" in third
    rows = {r["key"]: r["value"] for r in blocks[2]["rows"]}
    assert rows["mscc_percent"] == f"{lesions[2]['mscc_percent']:.4g} %"
    text = lesions_html(nodes.result.metrics)
    assert text.count("<h3>") == 3 and "Bilsky 3" in text
    assert html.escape(lesions[2]["bilsky_reason"]) in text


def test_the_mass_model_is_coloured_per_lesion(a_spine_scene):
    _, _, nodes, _ = a_spine_scene
    mass = nodes.models["mass"]
    display = mass.GetDisplayNode()
    assert display.GetActiveScalarName() == LESION_ID and display.GetScalarVisibility()
    assert display.GetColorNodeID() == nodes.lesion_color_node.GetID()
    ids = numpy_support.vtk_to_numpy(mass.GetPolyData().GetPointData().GetArray(LESION_ID))
    assert set(np.unique(ids)) == {1, 2, 3}
    # each lesion's points map through the display's range and the colour table to its colour
    lut = nodes.lesion_color_node.GetLookupTable()
    lut.SetRange(*display.GetScalarRange())
    for lesion_id in (1, 2, 3):
        rgb = [0.0, 0.0, 0.0]
        lut.GetColor(float(lesion_id), rgb)
        assert rgb == pytest.approx(lesion_color(lesion_id), abs=1 / 255)
    colours = {lesion_color(i) for i in (1, 2, 3)}
    assert len(colours) == 3
    for key in ("cord", "sac"):  # distinct from the other models' colours
        assert tuple(nodes.models[key].GetDisplayNode().GetColor()) not in colours
    # the chart draws each lesion's extent in its colour
    lesion_series = [k for k in nodes.series if k.startswith("lesion_")]
    assert lesion_series == ["lesion_1", "lesion_2", "lesion_3"]
    assert tuple(nodes.series["lesion_3"].GetColor()) == pytest.approx(lesion_color(3))


def test_a_level_row_jumps_the_slice_views_into_that_vertebra(a_spine_scene):
    scene, study, nodes, _ = a_spine_scene
    flow = Workflow(scene)
    flow.last_metrics = nodes.result
    ensure_views(scene)
    bodies = {v["name"]: v for v in study.truth["levels"]}
    for name in ("T4", "T6", "T8"):
        point = flow.jump_to_level(name)
        centre = np.asarray(bodies[name]["body_centre_lps_mm"])
        # the level's middle along the cord lies at its body's height: within half a body
        # (T4-T8 bodies are 17-21 mm tall in the phantom) of the body's centre
        assert abs(point[2] - centre[2]) < 9.0, name
        for view in ("Red", "Yellow", "Green"):
            to_ras = scene.GetSingletonNode(view, "vtkMRMLSliceNode").GetSliceToRAS()
            ras = [to_ras.GetElement(i, 3) for i in range(3)]
            np.testing.assert_allclose(ras, [-point[0], -point[1], point[2]], atol=1e-6)
    # a row index gives the same point as its name; unknown levels are refused in a sentence
    index = [row["level"] for row in nodes.result.metrics["levels"]].index("T6")
    np.testing.assert_allclose(flow.level_point_lps(index), flow.level_point_lps("T6"))
    with pytest.raises(InputError, match="no level 'L3'"):
        flow.jump_to_level("L3")


def test_the_jump_point_lies_on_the_centreline_at_the_middle_of_the_arc_range():
    import vtk

    poly = vtk.vtkPolyData()
    points = vtk.vtkPoints()
    arc = np.array([0.0, 10.0, 20.0, 30.0])
    for z in arc:
        points.InsertNextPoint(1.0, 2.0 + 0.1 * z, z)  # a straight tilted cord
    poly.SetPoints(points)
    array = numpy_support.numpy_to_vtk(arc, deep=1)
    array.SetName("arc_mm")
    poly.GetPointData().AddArray(array)
    np.testing.assert_allclose(level_point_lps([12.0, 18.0], poly), [1.0, 3.5, 15.0])
    np.testing.assert_allclose(level_point_lps([25.0, 45.0], poly), [1.0, 5.0, 30.0])  # clamped


def test_levels_counted_from_a_named_markups_point(a_spine_scene):
    scene, study, _, labels = a_spine_scene
    body = next(v for v in study.truth["levels"] if v["name"] == "T6")
    x, y, z = body["body_centre_lps_mm"]
    anchor = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "level anchor")
    anchor.AddControlPoint(-x, -y, z, "T6")  # RAS
    nodes = compute_metrics_nodes(scene, labels, levels=level_source_from_nodes(anchor_node=anchor))
    m = nodes.result.metrics
    assert m["level_source"] == "anchor" and m["levels_named"]
    assert "T6" in _cells(nodes.levels_table, "level")
    assert m["worst_section_level"] == "T8"  # the grade-3 lesion, counted from T6
    anchor.SetNthControlPointLabel(0, "vertebra")
    anchor.SetNthControlPointDescription(0, "")
    with pytest.raises(InputError, match="not a vertebral level"):
        level_source_from_nodes(anchor_node=anchor)
    anchor.SetNthControlPointDescription(0, "t6")  # the description names it: accepted
    assert level_source_from_nodes(anchor_node=anchor).anchor[0] == "T6"
    anchor.AddControlPoint(0.0, 0.0, 0.0, "T7")
    with pytest.raises(InputError, match="needs exactly one"):
        level_source_from_nodes(anchor_node=anchor)


# -- results without lesions -----------------------------------------------------------------------
def test_an_older_result_without_lesions_is_one_lesion_from_its_top_level_keys():
    metrics = {
        "bilsky_grade": "1b",
        "bilsky_reason": "Grade 1b: ...",
        "mscc_percent": 4.25,
        "mass_volume_ml": 3.5,
        "mass_levels": ["level 2", "level 3"],
        "mass_arc_range_mm": [40.0, 62.0],
        "levels": [
            {"level": "level 2", "arc_range_mm": [50.0, 75.0], "cord_min_csa_mm2": 51.24,
             "cord_ap_min_mm": 6.0, "canal_min_area_mm2": None, "flagged": False,
             "flag_reason": "", "lesion_ids": [1]},
        ],
    }  # fmt: skip
    [lesion] = lesions_of(metrics)
    assert lesion["id"] == 1 and lesion["levels"] == ["level 2", "level 3"]
    assert lesion["arc_range_mm"] == [40.0, 62.0] and lesion["mscc_percent"] == 4.25
    [block] = lesion_blocks(metrics)
    assert block["title"] == "Lesion 1 · level 2–level 3" and block["grade"] == "1b"
    [row] = level_rows(metrics)
    assert (row["cord_min_csa_mm2"], row["canal_min_area_mm2"], row["lesions"]) == (
        "51.2",
        "–",
        "1",
    )
    assert lesions_of({"bilsky_grade": None, "levels": []}) == []
    assert lesions_of({"lesions": [], "bilsky_grade": None}) == []
    assert "No epidural mass" in lesions_html({"lesions": [], "bilsky_grade": None})


def test_a_study_without_a_mass_gets_levels_and_no_lesion_nodes():
    from MESCCAnalyzerLib.phantom import make_phantom_labels

    labels, _, _, _ = make_phantom_labels("3", 0)
    arr = sitk.GetArrayFromImage(labels)
    arr[arr == 3] = 0  # the narrowing remains, its tumour label is gone
    image = sitk.GetImageFromArray(arr)
    image.CopyInformation(labels)
    scene = slicer.vtkMRMLScene()
    nodes = compute_metrics_nodes(scene, add_volume_node(scene, image, "labels", labelmap=True))
    m = nodes.result.metrics
    assert m["bilsky_grade"] is None and lesions_of(m) == []
    assert m["level_source"] == "unnamed" and levels_note(m) == UNNAMED_LEVELS_NOTE
    assert "mass" not in nodes.models and nodes.lesion_color_node is None
    assert nodes.lesions_table.GetNumberOfRows() == 0
    assert nodes.levels_table.GetNumberOfRows() == len(m["levels"]) > 0
    assert "yes" in _cells(nodes.levels_table, "flagged")  # the grade-3 narrowing is flagged
    assert not [k for k in nodes.series if k.startswith("lesion_")]
