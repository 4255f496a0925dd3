"""The headless end-to-end analysis: `mescc demo` and `mescc analyze`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.mrml.scene import read_mrb


@pytest.fixture(scope="module")
def a_demo(tmp_path_factory):
    """`mescc demo` run from its parent folder with a relative --out, as a user types it."""
    import os

    parent = tmp_path_factory.mktemp("demo")
    cwd = os.getcwd()
    os.chdir(parent)
    try:
        assert main(["--quiet", "demo", "--out", "run", "--grade", "3", "--seed", "2"]) == 0
    finally:
        os.chdir(cwd)
    return parent / "run"


def test_demo_writes_every_output_and_grades_the_phantom(a_demo):
    analysis = a_demo / "analysis"
    for name in (
        "report.html",
        "metrics.json",
        "sections.csv",
        "segmentation.seg.nrrd",
        "scene.mrb",
        "registration.json",
        "ct_to_mri.tfm",
        "suv.json",
    ):
        assert (analysis / name).is_file(), name
    for model in ("cord.vtp", "thecal_sac.vtp", "mass.vtp", "cord_centerline.vtp"):
        assert (analysis / "models" / model).is_file(), model
    metrics = json.loads((analysis / "metrics.json").read_text(encoding="utf-8"))
    truth = json.loads((a_demo / "study" / "truth.json").read_text(encoding="utf-8"))
    assert metrics["bilsky_grade"] == truth["grade"] == "3"
    assert metrics["mscc_percent"] == pytest.approx(
        truth["mscc_percent"], abs=5.0
    )  # issue 5's bound
    assert metrics["suv_max"] > 3.0


def test_demo_cord_area_ratio_is_within_0_05_of_the_truth(a_demo):
    metrics = json.loads((a_demo / "analysis" / "metrics.json").read_text(encoding="utf-8"))
    truth = json.loads((a_demo / "study" / "truth.json").read_text(encoding="utf-8"))
    assert metrics["cord_outline"] == "mri"  # the cord's edge from the T2's partial volume
    assert metrics["cord_csa_ratio"] == pytest.approx(truth["cord_csa_ratio"], abs=0.05)


def test_demo_mass_volume_is_within_five_percent_of_the_truth(a_demo):
    metrics = json.loads((a_demo / "analysis" / "metrics.json").read_text(encoding="utf-8"))
    truth = json.loads((a_demo / "study" / "truth.json").read_text(encoding="utf-8"))
    assert metrics["mass_volume_ml"] == pytest.approx(truth["mass_volume_ml"], rel=0.05)


def test_registration_of_the_demo_recovers_the_phantom_transform(a_demo):
    from MESCCAnalyzerLib.registration import tre_mm

    est = sitk.ReadTransform(str(a_demo / "analysis" / "ct_to_mri.tfm"))
    truth = sitk.ReadTransform(str(a_demo / "study" / "mri_to_ct.tfm"))
    labels = sitk.ReadImage(str(a_demo / "study" / "labels.nii.gz"))
    idx = np.argwhere(sitk.GetArrayFromImage(labels) > 0)[::40][:, ::-1]
    pts = np.array([labels.TransformIndexToPhysicalPoint([int(v) for v in p]) for p in idx])
    assert tre_mm(est, truth, pts) < 1.0


def test_report_is_self_contained_and_states_the_grade(a_demo):
    text = (a_demo / "analysis" / "report.html").read_text(encoding="utf-8")
    assert "id=bilsky-grade>3<" in text
    assert text.count("data:image/png;base64,") >= 2  # slice views and profile, at least
    assert "http://" not in text and "https://" not in text  # nothing fetched when opened
    assert "MESCC-PHANTOM-3-2" in text  # the patient ID, read from the PET DICOM series
    # the levels (numbered from the top: the demo has no vertebra labelmap), the mass's flagged
    assert "id=levels" in text and "numbered from the top" in text and "class=flagged" in text
    header = (a_demo / "analysis" / "sections.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.endswith(",level")


def test_scene_bundle_opens_with_everything_in_it(a_demo):
    scene = read_mrb(a_demo / "analysis" / "scene.mrb")
    assert scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") >= 4  # T2, T1, CT, PET
    seg = scene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    names = {
        seg.GetSegmentation().GetNthSegment(i).GetName()
        for i in range(seg.GetSegmentation().GetNumberOfSegments())
    }
    assert {"spinal_cord", "csf", "epidural_mass", "vertebrae"} <= names
    assert scene.GetNumberOfNodesByClass("vtkMRMLModelNode") >= 3
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") >= 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotChartNode") >= 1
    ct = scene.GetFirstNodeByName("CT")
    assert ct.GetParentTransformNode() is not None  # CT (and PET) under the registration


def test_analyze_refuses_bad_input_and_writes_nothing(tmp_path, capsys, a_demo):
    study = a_demo / "study"
    out = tmp_path / "out"
    code = main(
        [
            "analyze",
            "--mri",
            str(study / "t2.nii.gz"),
            "--seeds",
            str(tmp_path / "missing.nii.gz"),
            "--out",
            str(out),
        ]
    )
    assert code == 2
    assert "missing.nii.gz" in capsys.readouterr().err
    assert not out.exists()
    # the output may not be an input
    code = main(
        [
            "analyze",
            "--mri",
            str(study / "t2.nii.gz"),
            "--seeds",
            str(a_demo / "seeds.nii.gz"),
            "--out",
            str(study),
        ]
    )
    assert code == 2
    assert "overwrite an input" in capsys.readouterr().err


@pytest.mark.slow
def test_the_default_demo_is_a_whole_spine_with_two_lesions_named_by_level(tmp_path):
    """`mescc demo` (what `make demo` runs): T1-L1, lesions at T5 (grade 2) and T9 (grade 3),
    segmented from strokes and measured with the levels named from the vertebra labelmap."""
    out = tmp_path / "demo"
    assert main(["--quiet", "demo", "--out", str(out), "--no-scene"]) == 0
    m = json.loads((out / "analysis" / "metrics.json").read_text())
    assert m["levels_named"] and m["level_source"] == "vertebrae"
    assert len(m["lesions"]) == 2
    assert "T5" in m["lesions"][0]["levels"] and "T9" in m["lesions"][1]["levels"]
    assert (out / "analysis" / "lesions.nii.gz").is_file()
    report = (out / "analysis" / "report.html").read_text()
    assert "id=lesion-1" in report and "id=lesion-2" in report and "<table id=levels>" in report
