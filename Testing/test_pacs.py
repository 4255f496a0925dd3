"""A real PACS: Debian's Orthanc, started by the tests on free loopback ports with a
throw-away storage folder. The phantom study is stored in it, ``mescc analyze --from ...
--send ...`` takes the study from it and sends the SEG, SR and RTSTRUCT back, and the results
are read back from Orthanc's REST API. Orthanc is stopped in ``finally``.
"""

from __future__ import annotations

import json

import pydicom
import pytest
import SimpleITK as sitk
from orthanc import OUR_AET, Orthanc

from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.export import store
from MESCCAnalyzerLib.outputs import write_image
from MESCCAnalyzerLib.segmentation.seeds import strokes_from_labels


@pytest.fixture(scope="module")
def a_pacs(tmp_path_factory):
    pacs = Orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        pacs.wait_until_ready()
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture(scope="module")
def a_stored_study(a_pacs, phantom_dir, tmp_path_factory):
    """The phantom's T2, CT and PET series stored in the PACS: (study UID, seeds file)."""
    study = phantom_dir("2", 0)
    files = [p for name in ("t2_dicom", "ct_dicom", "pet_dicom") for p in (study / name).iterdir()]
    datasets = [pydicom.dcmread(p) for p in sorted(files)]
    assert store(a_pacs.node, datasets, calling_aet=OUR_AET) == len(datasets)
    seeds = tmp_path_factory.mktemp("seeds") / "seeds.nii.gz"
    labels = sitk.ReadImage(str(study / "labels.nii.gz"))
    write_image(strokes_from_labels(labels, rng_seed=0), seeds)
    return str(datasets[0].StudyInstanceUID), seeds


@pytest.fixture(scope="module")
def a_round_trip(a_pacs, a_stored_study, tmp_path_factory):
    """``mescc analyze --from PACS --study UID --send PACS``: its output folder."""
    study_uid, seeds = a_stored_study
    out = tmp_path_factory.mktemp("round_trip")
    node = str(a_pacs.node)
    args = ["-q", "analyze", "--from", node, "--study", study_uid, "--seeds", str(seeds)]
    args += ["--out", str(out / "analysis"), "--dicom-out", str(out / "dicom"), "--send", node]
    assert main([*args, "--no-scene"]) == 0
    return out


def test_the_study_is_retrieved_analysed_and_the_objects_stored_under_it(
    a_pacs, a_stored_study, a_round_trip
):
    out = a_round_trip
    series = a_pacs.study_series(a_stored_study[0])
    assert sorted(series) == ["CT", "MR", "PT", "RTSTRUCT", "SEG", "SR"]
    for modality, name in (("SEG", "seg.dcm"), ("SR", "sr.dcm"), ("RTSTRUCT", "rtstruct.dcm")):
        local = pydicom.dcmread(out / "dicom" / name, stop_before_pixels=True)
        assert series[modality] == [local.SOPInstanceUID]
    # the time is a benchmark's (benchmarks/bench_pacs.py), not a test's


def test_the_analysis_of_the_retrieved_study_used_its_ct_and_pet(a_round_trip):
    out = a_round_trip
    metrics = json.loads((out / "analysis" / "metrics.json").read_text())
    assert (out / "analysis" / "ct_to_mri.tfm").is_file()
    assert metrics["suv_max"] > 3  # the phantom's mass: SUV about 7
    assert metrics["bilsky_grade"] == "2"


def test_a_node_that_refuses_the_association_stops_the_analysis_before_anything(
    a_pacs, a_stored_study, tmp_path, capsys
):
    study_uid, seeds = a_stored_study
    before = a_pacs.study_series(study_uid)
    wrong = f"NOTPACS@127.0.0.1:{a_pacs.dicom_port}"  # Orthanc checks the called title
    args = ["analyze", "--from", str(a_pacs.node), "--study", study_uid, "--seeds", str(seeds)]
    args += ["--out", str(tmp_path / "a"), "--dicom-out", str(tmp_path / "d"), "--send", wrong]
    assert main([*args, "--no-scene"]) == 2
    err = capsys.readouterr().err
    assert f"the DICOM node {wrong} refused the association" in err
    assert list(tmp_path.iterdir()) == []
    assert a_pacs.study_series(study_uid) == before


def test_an_unknown_study_is_named_in_the_error(a_pacs, a_stored_study, tmp_path, capsys):
    _, seeds = a_stored_study
    args = ["analyze", "--from", str(a_pacs.node), "--study", "1.2.3.4", "--seeds", str(seeds)]
    assert main([*args, "--out", str(tmp_path / "a"), "--no-scene"]) == 2
    assert "sent no image of study 1.2.3.4" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
