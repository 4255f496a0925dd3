"""Metrics in a real MRML scene: coloured models, section and metrics tables, the chart."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from MESCCAnalyzerLib.measure import surfaces
from MESCCAnalyzerLib.mrml.metrics import DISTANCE_RANGE_MM, compute_metrics_nodes
from MESCCAnalyzerLib.mrml.nodes import add_volume_node


def _count(scene, class_name: str) -> int:
    return scene.GetNumberOfNodesByClass(class_name)


@pytest.fixture(scope="module")
def a_measured_scene():
    from test_bilsky import phantom_labels_and_truth

    labels, truth = phantom_labels_and_truth("3", 0)
    arr = sitk.GetArrayFromImage(labels)
    suv = sitk.GetImageFromArray(np.where(arr == 3, 6.0, 1.0).astype(np.float32))
    suv.CopyInformation(labels)
    scene = slicer.vtkMRMLScene()
    labels_node = add_volume_node(scene, labels, "labels", labelmap=True)
    pet_node = add_volume_node(scene, suv, "SUV")
    before = {
        c: _count(scene, c)
        for c in (
            "vtkMRMLModelNode",
            "vtkMRMLTableNode",
            "vtkMRMLPlotChartNode",
            "vtkMRMLPlotSeriesNode",
        )
    }
    nodes = compute_metrics_nodes(scene, labels_node, pet_node)
    return scene, nodes, truth, before


def test_one_model_per_structure_with_distance_colours(a_measured_scene):
    scene, nodes, _, before = a_measured_scene
    assert _count(scene, "vtkMRMLModelNode") - before["vtkMRMLModelNode"] == 4
    assert set(nodes.models) == {"cord", "sac", "mass", "centerline"}
    mass = nodes.models["mass"]
    # the mass is coloured by lesion (one lesion here: test_mrml_levels has several); its
    # distance to the cord stays on it for the Models module
    display = mass.GetDisplayNode()
    assert display.GetScalarVisibility()
    assert display.GetActiveScalarName() == "lesion_id"
    assert display.GetColorNodeID() == nodes.lesion_color_node.GetID()
    cord_display = nodes.models["cord"].GetDisplayNode()
    assert cord_display.GetActiveScalarName() == "DistanceToMass_mm"
    assert cord_display.GetColorNodeID() == nodes.color_node.GetID()
    assert tuple(cord_display.GetScalarRange()) == DISTANCE_RANGE_MM
    d = mass.GetPolyData().GetPointData().GetArray("DistanceToCord_mm")
    assert d.GetRange()[0] == 0.0  # grade 3: the mass presses on the cord
    # The colour node maps contact to red and 10 mm to blue.
    ctf = nodes.color_node.GetColorTransferFunction()
    assert ctf.GetColor(0.0)[0] > 0.8 and ctf.GetColor(10.0)[2] > 0.8
    # Models are in RAS: the LPS surface with x and y negated.
    lps = surfaces.points_lps(nodes.result.models["mass"])
    np.testing.assert_allclose(surfaces.points_lps(mass.GetPolyData()), lps * np.array([-1, -1, 1]))


def test_sections_table_and_chart(a_measured_scene):
    scene, nodes, _, before = a_measured_scene
    table = nodes.sections_table.GetTable()
    assert table.GetNumberOfRows() == len(nodes.result.sections.arc_mm)
    for name in (
        "arc_mm",
        "cord_csa_mm2",
        "cord_ap_mm",
        "sac_csa_mm2",
        "csf_area_mm2",
        "mass_area_mm2",
    ):
        assert table.GetColumnByName(name) is not None, name
    csa = np.array(
        [table.GetValueByName(r, "cord_csa_mm2").ToDouble() for r in range(table.GetNumberOfRows())]
    )
    np.testing.assert_allclose(csa, nodes.result.sections.cord_csa_mm2, equal_nan=True)
    assert _count(scene, "vtkMRMLPlotChartNode") - before["vtkMRMLPlotChartNode"] == 1
    assert nodes.chart.GetNumberOfPlotSeriesNodes() == 4  # CSA, AP, lesion 1, worst section
    csa_series = nodes.series["cord_csa_mm2"]
    assert csa_series.GetTableNodeID() == nodes.sections_table.GetID()
    assert (csa_series.GetXColumnName(), csa_series.GetYColumnName()) == ("arc_mm", "cord_csa_mm2")
    assert nodes.series["cord_ap_mm"].GetYColumnName() == "cord_ap_mm"
    # The lesion's extent box spans the mass's arc range.
    assert nodes.series["lesion_1"].GetXColumnName() == "lesion_1_arc_mm"
    ext = nodes.extent_table.GetTable()
    xs = [ext.GetValueByName(r, "lesion_1_arc_mm").ToDouble() for r in range(ext.GetNumberOfRows())]
    lo, hi = nodes.result.metrics["mass_arc_range_mm"]
    assert min(xs) == pytest.approx(lo) and max(xs) == pytest.approx(hi)
    assert hi - lo == pytest.approx(nodes.result.metrics["mass_craniocaudal_extent_mm"])


def test_metrics_table_holds_the_grade_and_uptake(a_measured_scene):
    _, nodes, truth, _ = a_measured_scene
    table = nodes.metrics_table.GetTable()
    rows = {
        table.GetValue(r, 0).ToString(): table.GetValue(r, 1).ToString()
        for r in range(table.GetNumberOfRows())
    }
    assert rows["bilsky_grade"] == truth["grade"] == "3"
    assert rows["bilsky_reason"].startswith("Grade 3")
    assert float(rows["mscc_percent"]) == pytest.approx(
        truth["mscc_percent"], abs=5.0
    )  # see test_bilsky
    assert float(rows["suv_max"]) == pytest.approx(6.0)
    assert "bilsky_facts.csf_area_worst_mm2" in rows


def test_a_segmentation_node_measures_like_its_labelmap():
    """Segments named spinal_cord, csf, epidural_mass, vertebrae (as a user would have them)."""
    from test_bilsky import measured, phantom_labels_and_truth

    labels, _ = phantom_labels_and_truth("2", 0)
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    labels_node = add_volume_node(scene, labels, "labels", labelmap=True)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    assert logic.ImportLabelmapToSegmentationNode(labels_node, seg)
    names = {1: "spinal_cord", 2: "csf", 3: "epidural_mass", 4: "vertebrae"}
    segmentation = seg.GetSegmentation()
    for n in range(segmentation.GetNumberOfSegments()):
        segment = segmentation.GetNthSegment(n)
        segment.SetName(names[segment.GetLabelValue()])
    nodes = compute_metrics_nodes(scene, seg, reference_node=labels_node)
    expected = measured("2", 0)[0]
    m = nodes.result.metrics
    assert m["bilsky_grade"] == expected["bilsky_grade"] == "2"
    # The segmentation round trip reproduces the labelmap voxel for voxel: same numbers.
    for key in ("mscc_percent", "cord_csa_ratio", "mass_volume_ml"):
        assert m[key] == pytest.approx(expected[key], rel=1e-9)
