"""The panel's five steps through the MRML logic, on a real MRML scene (what the widget calls)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.io.study import load_volume
from MESCCAnalyzerLib.measure.definitions import metric
from MESCCAnalyzerLib.mrml.registration import roi_mask_on
from MESCCAnalyzerLib.mrml.scene import read_mrb, save_mrb
from MESCCAnalyzerLib.mrml.segmentation import labels_from_segmentation_node
from MESCCAnalyzerLib.mrml.workflow import Workflow
from MESCCAnalyzerLib.registration import tre_mm


@pytest.fixture(scope="module")
def a_sample_session(tmp_path_factory):
    """Load sample study -> register -> grow -> accept -> compute metrics, once for the module."""
    scene = slicer.vtkMRMLScene()
    flow = Workflow(scene)
    folder = tmp_path_factory.mktemp("sample") / "phantom"
    nodes = flow.load_sample(folder, grade="2", seed=1)
    seeds_before = labels_from_segmentation_node(nodes.segmentation, nodes.mri)
    outcome = flow.register(nodes.mri, nodes.ct, nodes.pet)
    preview, text = flow.grow_preview(nodes.segmentation, nodes.mri, nodes.pet)
    preview_labels = labels_from_segmentation_node(preview, nodes.mri)
    flow.accept_preview(nodes.segmentation, preview, nodes.mri)
    metrics_nodes = flow.compute_metrics(nodes.segmentation, nodes.mri, nodes.pet)
    return {
        "scene": scene,
        "flow": flow,
        "nodes": nodes,
        "folder": folder,
        "seeds_before": seeds_before,
        "outcome": outcome,
        "preview_text": text,
        "preview_labels": preview_labels,
        "metrics_nodes": metrics_nodes,
    }


def test_sample_study_comes_with_seed_strokes_only(a_sample_session):
    seeds = sitk.GetArrayFromImage(a_sample_session["seeds_before"])
    truth = sitk.GetArrayFromImage(
        sitk.ReadImage(str(a_sample_session["folder"] / "labels.nii.gz"))
    )
    for label in (1, 2, 3, 4):
        painted = np.count_nonzero(seeds == label)
        # a few strokes: present, at most 2 % of the structure, and inside it
        assert 0 < painted <= 0.02 * np.count_nonzero(truth == label) + 1
        assert np.all(truth[seeds == label] == label)


def test_registration_recovers_the_true_transform(a_sample_session):
    s = a_sample_session
    truth = sitk.ReadTransform(str(s["folder"] / "mri_to_ct.tfm"))
    labels = sitk.ReadImage(str(s["folder"] / "labels.nii.gz"))
    idx = np.argwhere(sitk.GetArrayFromImage(labels) > 0)[::50][:, ::-1]
    points = np.array([labels.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in idx])
    # The bound: TRE below 1 mm over the structures.
    assert tre_mm(s["outcome"].result.transform, truth, points) < 1.0
    assert s["nodes"].ct.GetParentTransformNode() is s["outcome"].transform_node
    assert s["nodes"].pet.GetParentTransformNode() is s["outcome"].transform_node
    assert "Mattes MI" in s["outcome"].quality_text


def test_grown_preview_matches_the_truth_and_accept_replaces_the_strokes(a_sample_session):
    s = a_sample_session
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(s["folder"] / "labels.nii.gz")))
    grown = sitk.GetArrayFromImage(s["preview_labels"])
    for label, floor in ((1, 0.85), (3, 0.85)):  # the issue asks 0.90 on average; one run, margin
        a, b = grown == label, truth == label
        assert 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b)) > floor
    accepted = sitk.GetArrayFromImage(
        labels_from_segmentation_node(s["nodes"].segmentation, s["nodes"].mri)
    )
    assert np.array_equal(accepted, grown)
    assert (
        s["scene"].GetNodesByName(f"{s['nodes'].segmentation.GetName()} preview").GetNumberOfItems()
        == 0
    )
    assert "mass" in s["preview_text"]


def test_metrics_from_the_segmentation_node_grade_the_phantom(a_sample_session):
    s = a_sample_session
    m = s["flow"].last_metrics.metrics
    truth = s["nodes"].truth
    assert m["bilsky_grade"] == truth["grade"]
    assert m["mscc_percent"] == pytest.approx(truth["mscc_percent"], abs=5.0)  # the 5 pp
    assert m["suv_max"] > 3.0  # the PET followed the CT through the transform onto the MRI
    assert m["cord_outline"] == "mri"  # the panel measures as mescc analyze: with its MRI
    assert s["scene"].GetNumberOfNodesByClass("vtkMRMLModelNode") >= 3


def test_report_is_written_from_the_session(a_sample_session, tmp_path):
    s = a_sample_session
    path = s["flow"].save_report(
        tmp_path / "report.html", s["nodes"].mri, s["nodes"].segmentation, s["nodes"].pet
    )
    text = path.read_text(encoding="utf-8")
    assert f"id=bilsky-grade>{s['flow'].last_metrics.metrics['bilsky_grade']}<" in text
    assert text.count("data:image/png;base64,") >= 2


def test_report_from_the_panel_has_the_registration_quality_as_the_command_lines(
    a_sample_session, tmp_path
):
    s = a_sample_session
    text = (
        s["flow"]
        .save_report(
            tmp_path / "report.html", s["nodes"].mri, s["nodes"].segmentation, s["nodes"].pet
        )
        .read_text(encoding="utf-8")
    )
    assert "Registration quality (CT → MRI)" in text
    assert "final metric value" in text and "iterations per level" in text


def test_the_report_survives_saving_and_reopening_the_scene(a_sample_session, tmp_path):
    s = a_sample_session
    bundle = save_mrb(s["scene"], tmp_path / "session.mrb")
    scene = read_mrb(bundle)
    flow = Workflow(scene)  # a new session: nothing remembered but the scene
    assert flow.last_metrics is None

    def node(name):
        return scene.GetFirstNodeByName(name)

    mri, pet = node(s["nodes"].mri.GetName()), node(s["nodes"].pet.GetName())
    segmentation = node(s["nodes"].segmentation.GetName())
    text = flow.save_report(tmp_path / "again.html", mri, segmentation, pet).read_text(
        encoding="utf-8"
    )
    grade = s["flow"].last_metrics.metrics["bilsky_grade"]
    assert f"id=bilsky-grade>{grade}<" in text
    assert f"{s['flow'].last_metrics.metrics['mscc_percent']:.1f}" in text
    assert "Registration quality (CT → MRI)" in text
    assert text.count("data:image/png;base64,") >= 2


def test_mistakes_get_a_sentence_not_a_traceback(a_sample_session):
    s = a_sample_session
    flow, nodes = s["flow"], s["nodes"]
    with pytest.raises(InputError, match="no preview"):
        flow.accept_preview(nodes.segmentation, None, nodes.mri)
    with pytest.raises(InputError, match="needs a region of interest"):
        flow.register(nodes.mri, nodes.ct, preset="rigid in ROI")
    with pytest.raises(InputError, match="unknown registration preset"):
        flow.register(nodes.mri, nodes.ct, preset="affine")
    lonely = s["scene"].AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    with pytest.raises(InputError, match="pairs"):
        flow.register(nodes.mri, nodes.ct, fixed_landmarks=lonely)
    with pytest.raises(InputError, match="not loaded from DICOM"):
        flow.convert_pet_to_suv(nodes.pet, [])


def test_roi_box_becomes_a_mask_on_the_mri_grid():
    image = sitk.Image([20, 20, 10], sitk.sitkUInt8)
    image.SetSpacing((1.0, 1.0, 2.0))
    scene = slicer.vtkMRMLScene()
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode")
    roi.SetXYZ(-5.0, -5.0, 4.0)  # RAS centre: LPS (5, 5, 4)
    roi.SetRadiusXYZ(2.0, 3.0, 4.0)
    mask = sitk.GetArrayFromImage(roi_mask_on(image, roi))
    # i in [3, 7], j in [2, 8], k in [0, 4] (z 0..8 mm at 2 mm): 5 x 7 x 5 voxels
    assert mask.sum() == 5 * 7 * 5
    assert mask[2, 5, 5] == 1 and mask[2, 5, 9] == 0


def test_metrics_nodes_carry_models_tables_and_plot(a_sample_session):
    s = a_sample_session
    nodes, result = s["metrics_nodes"], s["flow"].last_metrics
    cord = nodes.models["cord"].GetPolyData()
    mass = nodes.models["mass"].GetPolyData()
    distance = cord.GetPointData().GetArray("DistanceToMass_mm")
    assert distance is not None and mass.GetPointData().GetArray("DistanceToCord_mm") is not None
    # grade 2: the mass touches the cord, so the colour map reaches 0 mm somewhere
    assert distance.GetRange()[0] < 0.5 < distance.GetRange()[1]
    assert nodes.sections_table.GetNumberOfRows() == len(result.sections.arc_mm)
    assert nodes.chart.GetNumberOfPlotSeriesNodes() >= 2  # CSA and AP diameter at least
    rows = {
        nodes.metrics_table.GetCellText(r, 0): nodes.metrics_table.GetCellText(r, 1)
        for r in range(nodes.metrics_table.GetNumberOfRows())
    }
    assert rows.get("bilsky_grade") == result.metrics["bilsky_grade"]
    # name, unit and definition from the one table of definitions, as the report shows them
    columns = [
        nodes.metrics_table.GetColumnName(c)
        for c in range(nodes.metrics_table.GetNumberOfColumns())
    ]
    row = next(
        r
        for r in range(nodes.metrics_table.GetNumberOfRows())
        if nodes.metrics_table.GetCellText(r, 0) == "mass_volume_ml"
    )
    cells = {c: nodes.metrics_table.GetCellText(row, i) for i, c in enumerate(columns)}
    assert cells["unit"] == metric("mass_volume_ml").unit == "ml"
    assert cells["name"] == metric("mass_volume_ml").name
    assert cells["definition"] == metric("mass_volume_ml").definition


# -- 5. export to DICOM (the panel's button; Slicer then adds the files to its database) -----------
def _series_uid(folder):
    import pydicom

    first = sorted(folder.iterdir())[0]
    return str(pydicom.dcmread(first, stop_before_pixels=True).SeriesInstanceUID)


def test_export_to_dicom_writes_seg_sr_and_rtstruct_on_the_studys_series(
    a_sample_session, tmp_path
):
    import highdicom as hd
    import pydicom

    s = a_sample_session
    nodes = s["nodes"]
    outcome = s["flow"].export_dicom(
        tmp_path / "dicom", nodes.mri, nodes.segmentation, ct_node=nodes.ct
    )
    assert [f.name for f in outcome.files] == ["seg.dcm", "sr.dcm", "rtstruct.dcm"]
    assert all(f.is_file() for f in outcome.files)
    # SEG: on the T2's DICOM series, holding the panel's segmentation voxel for voxel
    seg = hd.seg.segread(outcome.folder / "seg.dcm")
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == _series_uid(
        s["folder"] / "t2_dicom"
    )
    names = [str(d.SegmentLabel) for d in seg.SegmentSequence]
    assert names == ["spinal_cord", "csf", "thecal sac", "lesion 1", "vertebrae"]
    slices = load_volume(s["folder"] / "t2_dicom", modality="MR").files  # in the image's k order
    uids = [str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in slices]
    labels = sitk.GetArrayFromImage(labels_from_segmentation_node(nodes.segmentation, nodes.mri))
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1, 4]
    )  # the cord and lesion 1
    assert np.array_equal(pixels[..., 0] > 0, labels == 1)
    assert np.array_equal(pixels[..., 1] > 0, labels == 3)
    # RTSTRUCT: on the CT's series (through the registration), with the cord's PRV and the lesion
    rt = pydicom.dcmread(outcome.folder / "rtstruct.dcm")
    series = rt.ReferencedFrameOfReferenceSequence[0].RTReferencedStudySequence[0]
    assert series.RTReferencedSeriesSequence[0].SeriesInstanceUID == _series_uid(
        s["folder"] / "ct_dicom"
    )
    types = {o.RTROIInterpretedType for o in rt.RTROIObservationsSequence}
    assert {"ORGAN", "AVOIDANCE", "GTV"} <= types
    # the planner's gaps: the lesion's, as measured (grade 2: the mass touches the cord)
    metrics = s["flow"].last_metrics.metrics
    [gap] = outcome.planning["lesions"]
    assert gap["mass_cord_min_distance_mm"] == pytest.approx(metrics["mass_cord_min_distance_mm"])
    assert "Lesion 1: gap to the sac" in outcome.summary()


def test_export_needs_the_dicom_series_the_mri_came_from(a_sample_session, tmp_path):
    s = a_sample_session
    nodes = s["nodes"]
    with pytest.raises(InputError, match="was not loaded from DICOM"):
        s["flow"].export_dicom(tmp_path / "dicom", nodes.pet, nodes.segmentation)
    assert not (tmp_path / "dicom").exists()  # nothing written


def test_a_level_row_of_the_sample_jumps_the_axial_view_into_the_mass(a_sample_session):
    s = a_sample_session
    metrics = s["flow"].last_metrics.metrics
    index = next(i for i, row in enumerate(metrics["levels"]) if row["lesion_ids"])
    point = s["flow"].jump_to_level(index)
    red = s["scene"].GetSingletonNode("Red", "vtkMRMLSliceNode")
    assert red.GetSliceToRAS().GetElement(2, 3) == pytest.approx(point[2])
    lo, hi = metrics["levels"][index]["arc_range_mm"]
    lesion_lo, lesion_hi = metrics["lesions"][0]["arc_range_mm"]
    assert lo < lesion_hi and lesion_lo < hi  # the row's level holds the lesion


def test_the_level_table_and_the_jump_survive_saving_and_reopening_the_scene(
    a_sample_session, tmp_path
):
    s = a_sample_session
    scene = read_mrb(save_mrb(s["scene"], tmp_path / "session.mrb"))
    flow = Workflow(scene)  # nothing remembered but the scene
    metrics = s["flow"].last_metrics.metrics
    levels = scene.GetFirstNodeByName("MESCC levels")
    assert levels is not None and levels.GetNumberOfRows() == len(metrics["levels"])
    for index in range(len(metrics["levels"])):  # the centreline model read back from the bundle
        np.testing.assert_allclose(
            flow.level_point_lps(index), s["flow"].level_point_lps(index), atol=1e-3
        )
    tables = scene.GetNodesByClass("vtkMRMLTableNode")
    names = {tables.GetItemAsObject(i).GetName() for i in range(tables.GetNumberOfItems())}
    assert "MESCC lesions" in names
