"""DICOM exports of an analysis (SEG, SR, RTSTRUCT) on the phantom written as DICOM series:
each object valid for dciodvfy, and each read back against what the analysis holds.

One analysis of the grade-2 phantom (``mescc analyze`` on its T2, CT and PET DICOM series
with ``--dicom-out``) serves the whole module.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from matplotlib.path import Path as PolygonPath

from MESCCAnalyzerLib import LABEL_CORD, LABEL_CSF, LABEL_MASS
from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.export import DicomNode
from MESCCAnalyzerLib.export.codes import LESION_MEASUREMENTS
from MESCCAnalyzerLib.export.network import DicomNetworkError
from MESCCAnalyzerLib.io.study import load_volume
from MESCCAnalyzerLib.outputs import write_image
from MESCCAnalyzerLib.segmentation.seeds import strokes_from_labels

DCIODVFY = shutil.which("dciodvfy")
PRV_MM = 2.0


def dciodvfy(path) -> str:
    """dciodvfy's report on one file (Debian's dicom3tools)."""
    if DCIODVFY is None:
        raise RuntimeError(
            "the DICOM export tests need dciodvfy (Debian's dicom3tools): run .ci/run, which "
            "installs it, or apt-get install dicom3tools"
        )
    done = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=120)
    return done.stdout + done.stderr


def seeds_file(study, folder):
    labels = sitk.ReadImage(str(study / "labels.nii.gz"))
    return write_image(strokes_from_labels(labels, rng_seed=0), folder / "seeds.nii.gz")


@pytest.fixture(scope="module")
def an_exported_analysis(phantom_dir, tmp_path_factory):
    """The phantom's DICOM series analysed with --dicom-out: (study, analysis, dicom folder)."""
    study = phantom_dir("2", 0)
    work = tmp_path_factory.mktemp("export")
    seeds = seeds_file(study, work)
    args = ["-q", "analyze", "--mri", str(study / "t2_dicom"), "--ct", str(study / "ct_dicom")]
    args += ["--pet", str(study / "pet_dicom"), "--seeds", str(seeds), "--no-scene"]
    args += ["--out", str(work / "analysis"), "--dicom-out", str(work / "dicom")]
    assert main([*args, "--prv-mm", f"{PRV_MM}"]) == 0
    return study, work / "analysis", work / "dicom"


@pytest.fixture(scope="module")
def the_grids(an_exported_analysis):
    """The MRI and CT as loaded, the analysis's labels and its MRI -> CT transform."""
    study, analysis, _ = an_exported_analysis
    mri = load_volume(study / "t2_dicom", modality="MR")
    ct = load_volume(study / "ct_dicom", modality="CT")
    labels = sitk.ReadImage(str(analysis / "segmentation.seg.nrrd"))
    labels = sitk.Resample(labels, mri.image, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
    transform = sitk.ReadTransform(str(analysis / "ct_to_mri.tfm"))
    return mri, ct, labels, transform


# ---------------------------------------------------------------------------------------
# Validity
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["seg.dcm", "sr.dcm", "rtstruct.dcm"])
def test_dciodvfy_finds_no_error_in_each_object(an_exported_analysis, name):
    report = dciodvfy(an_exported_analysis[2] / name)
    errors = [line for line in report.splitlines() if line.lower().startswith("error")]
    assert errors == []


def test_the_phantoms_dicom_series_are_valid_too(an_exported_analysis):
    study = an_exported_analysis[0]
    for path in (study / "t2_dicom" / "MR0001.dcm", study / "ct_dicom" / "CT0001.dcm"):
        assert "Error" not in dciodvfy(path)


# ---------------------------------------------------------------------------------------
# SEG
# ---------------------------------------------------------------------------------------
def test_the_seg_decodes_to_the_analysis_labelmap_voxel_for_voxel(an_exported_analysis, the_grids):
    mri, _, labels, _ = the_grids
    seg = hd.seg.segread(an_exported_analysis[2] / "seg.dcm")
    names = [str(d.SegmentLabel) for d in seg.SegmentSequence]
    assert names == ["spinal_cord", "csf", "thecal sac", "lesion 1", "vertebrae"]
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in mri.files]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=list(range(1, len(names) + 1))
    )
    arr = sitk.GetArrayFromImage(labels)
    expected = [arr == 1, arr == 2, np.isin(arr, (1, 2)), arr == 3, arr == 4]
    for i, mask in enumerate(expected):
        assert np.array_equal(pixels[..., i] > 0, mask), names[i]


def test_the_seg_carries_the_segfile_snomed_codes(an_exported_analysis):
    seg = hd.seg.segread(an_exported_analysis[2] / "seg.dcm")
    types = [d.SegmentedPropertyTypeCodeSequence[0].CodeValue for d in seg.SegmentSequence]
    assert types == ["2748008", "65216001", "18545000", "14799000", "421060004"]
    assert seg.SeriesInstanceUID != seg.ReferencedSeriesSequence[0].SeriesInstanceUID


# ---------------------------------------------------------------------------------------
# SR
# ---------------------------------------------------------------------------------------
def sr_items(sr):
    """Every NUM item (name code, value string, unit code) and every CODE/TEXT item of the
    lesion groups, by concept meaning."""
    numbers, others = {}, {}
    for group in sr.ContentSequence[-1].ContentSequence:
        if group.ValueType != "CONTAINER":
            continue
        label = next(i.TextValue for i in group.ContentSequence if i.ValueType == "TEXT")
        for item in group.ContentSequence:
            name = item.ConceptNameCodeSequence[0]
            key = (label, name.CodeMeaning)
            if item.ValueType == "NUM":
                derivation = [
                    m.ConceptCodeSequence[0].CodeMeaning
                    for m in item.get("ContentSequence", [])
                    if m.ConceptNameCodeSequence[0].CodeMeaning == "Derivation"
                ]
                value = item.MeasuredValueSequence[0]
                unit = value.MeasurementUnitsCodeSequence[0].CodeValue
                numbers[(*key, *derivation)] = (value.NumericValue.original_string, unit)
            elif item.ValueType == "CODE":
                others[key] = item.ConceptCodeSequence[0].CodeMeaning
            elif item.ValueType == "TEXT":
                others[key] = item.TextValue
    return numbers, others


def test_every_sr_value_equals_metrics_json_to_its_stated_precision(an_exported_analysis):
    _, analysis, dicom = an_exported_analysis
    metrics = json.loads((analysis / "metrics.json").read_text())
    numbers, _ = sr_items(pydicom.dcmread(dicom / "sr.dcm"))
    ucum = {"%": "%", "mm": "mm", "mm²": "mm2", "ml": "mL", "": "1", "g/ml": "{SUVbw}g/mL"}
    checked = 0
    for code in LESION_MEASUREMENTS:
        key = ("lesion 1", code.name.meaning) + (
            (code.derivation.meaning,) if code.derivation else ()
        )
        text, unit = numbers[key]
        decimals = len(text.split(".")[1]) if "." in text else 0
        # the value as written (a decimal string) is metrics.json rounded to its digits
        assert abs(float(text) - metrics[code.key]) <= 0.5 * 10.0**-decimals + 1e-12, code.key
        assert unit == code.unit.value
        if code.key in ("mscc_percent", "cord_min_csa_mm2", "mass_volume_ml", "suv_max"):
            from MESCCAnalyzerLib.measure.definitions import metric

            assert unit == ucum[metric(code.key).unit]
        checked += 1
    assert checked == 15


def test_the_sr_holds_the_grade_as_a_code_and_its_reason_as_text(an_exported_analysis):
    _, analysis, dicom = an_exported_analysis
    metrics = json.loads((analysis / "metrics.json").read_text())
    _, others = sr_items(pydicom.dcmread(dicom / "sr.dcm"))
    assert others[("lesion 1", "Bilsky ESCC grade")] == f"Bilsky grade {metrics['bilsky_grade']}"
    assert others[("lesion 1", "Bilsky grade reason")] == metrics["bilsky_reason"]
    # the grade-2 phantom's mass touches the sac and the cord: both gaps are flagged
    assert others[("lesion 1", "Mass-thecal sac gap under 3 mm")] == "Yes"


def test_the_sr_has_one_group_per_level_with_its_minima_and_flag(an_exported_analysis):
    _, analysis, dicom = an_exported_analysis
    rows = json.loads((analysis / "metrics.json").read_text())["levels"]
    numbers, others = sr_items(pydicom.dcmread(dicom / "sr.dcm"))
    assert rows
    for row in rows:
        group = f"level {row['level']}"
        text, unit = numbers[(group, "Cord area, level minimum")]
        assert float(text) == pytest.approx(row["cord_min_csa_mm2"], abs=0.01) and unit == "mm2"
        text, unit = numbers[(group, "Cord AP diameter, level minimum")]
        assert float(text) == pytest.approx(row["cord_ap_min_mm"], abs=0.01) and unit == "mm"
        flagged = others[(group, "Narrowed against its neighbours")]
        assert flagged == ("Yes" if row["flagged"] else "No")
        if row["flagged"]:
            assert others[(group, "Narrowing reason")] == row["flag_reason"]


def test_the_sr_references_the_segment_and_the_worst_sections_image(an_exported_analysis):
    _, analysis, dicom = an_exported_analysis
    sr = pydicom.dcmread(dicom / "sr.dcm")
    seg = pydicom.dcmread(dicom / "seg.dcm")
    text = str(sr)
    assert seg.SOPInstanceUID in text
    worst = json.loads((analysis / "metrics.json").read_text())["worst_section_lps_mm"]
    study = an_exported_analysis[0]
    slices = [pydicom.dcmread(p, stop_before_pixels=True) for p in (study / "t2_dicom").iterdir()]
    nearest = min(slices, key=lambda ds: abs(float(ds.ImagePositionPatient[2]) - worst[2]))
    assert nearest.SOPInstanceUID in text


# ---------------------------------------------------------------------------------------
# RTSTRUCT
# ---------------------------------------------------------------------------------------
def rasterise(rtstruct, ct: sitk.Image) -> dict[str, np.ndarray]:
    """Each ROI's contours filled on the CT grid (pixel centres inside, even-odd rule)."""
    names = {r.ROINumber: r.ROIName for r in rtstruct.StructureSetROISequence}
    matrix = np.asarray(ct.GetDirection()).reshape(3, 3) * np.asarray(ct.GetSpacing())
    to_index = np.linalg.inv(matrix)
    origin = np.asarray(ct.GetOrigin())
    nx, ny, nz = ct.GetSize()
    jj, ii = np.mgrid[0:ny, 0:nx]
    centres = np.column_stack([ii.ravel(), jj.ravel()])
    masks = {}
    for roi in rtstruct.ROIContourSequence:
        mask = np.zeros((nz, ny, nx), dtype=bool)
        for contour in roi.ContourSequence:
            lps = np.asarray(contour.ContourData, dtype=float).reshape(-1, 3)
            ijk = (lps - origin) @ to_index.T
            k = int(round(ijk[0, 2]))
            assert np.allclose(ijk[:, 2], k, atol=1e-3)  # planar, on a CT slice
            inside = PolygonPath(ijk[:, :2]).contains_points(centres).reshape(ny, nx)
            mask[k] ^= inside
        masks[names[roi.ReferencedROINumber]] = mask
    return masks


def dice(a, b) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


@pytest.fixture(scope="module")
def the_structure_set(an_exported_analysis, the_grids):
    rt = pydicom.dcmread(an_exported_analysis[2] / "rtstruct.dcm")
    return rt, rasterise(rt, the_grids[1].image)


def on_ct(mask_kji, mri, ct, transform):
    image = sitk.GetImageFromArray(mask_kji.astype(np.uint8))
    image.CopyInformation(mri)
    moved = sitk.Resample(image, ct, transform.GetInverse(), sitk.sitkNearestNeighbor, 0)
    return sitk.GetArrayFromImage(moved) > 0


def test_the_rtstruct_contours_fill_back_to_the_segmentation_on_the_ct(
    the_grids, the_structure_set
):
    mri, ct, labels, transform = the_grids
    arr = sitk.GetArrayFromImage(labels)
    _, masks = the_structure_set
    expected = {
        "cord": (arr == LABEL_CORD, 0.90),
        "thecal sac": (np.isin(arr, (LABEL_CORD, LABEL_CSF)), 0.95),
        "GTV lesion 1": (arr == LABEL_MASS, 0.95),
    }
    for name, (mask, goal) in expected.items():
        assert dice(masks[name], on_ct(mask, mri.image, ct.image, transform)) >= goal, name


def test_the_rtstruct_types_its_rois_for_planning(an_exported_analysis, the_structure_set):
    rt, _ = the_structure_set
    ct_slice = pydicom.dcmread(an_exported_analysis[0] / "ct_dicom" / "CT0001.dcm")
    assert rt.FrameOfReferenceUID == ct_slice.FrameOfReferenceUID  # planned on the CT
    assert rt.StudyInstanceUID == ct_slice.StudyInstanceUID
    names = {r.ROINumber: r.ROIName for r in rt.StructureSetROISequence}
    types = {
        names[o.ReferencedROINumber]: o.RTROIInterpretedType for o in rt.RTROIObservationsSequence
    }
    assert types == {
        "cord": "ORGAN",
        "cord PRV 2mm": "AVOIDANCE",
        "thecal sac": "ORGAN",
        "GTV lesion 1": "GTV",
    }


def test_the_prv_volume_is_the_cord_dilated_by_the_margin(
    an_exported_analysis, the_grids, the_structure_set
):
    mri, ct, labels, transform = the_grids
    _, masks = the_structure_set
    prv_ml = np.count_nonzero(masks["cord PRV 2mm"]) * np.prod(ct.image.GetSpacing()) / 1000
    # The truth: the MRI cord carried onto a fine 0.3 mm grid in the CT frame and dilated
    # there by distance, independent of the CT's 0.8 x 0.8 x 1.5 mm voxels.
    cord = sitk.Cast(sitk.Equal(labels, LABEL_CORD), sitk.sitkUInt8)
    fine = sitk.Image(
        [
            int(s * sp / 0.3)
            for s, sp in zip(ct.image.GetSize(), ct.image.GetSpacing(), strict=True)
        ],
        sitk.sitkUInt8,
    )
    fine.SetSpacing((0.3, 0.3, 0.3))
    fine.SetOrigin(ct.image.GetOrigin())
    fine.SetDirection(ct.image.GetDirection())
    cord_fine = sitk.Resample(cord, fine, transform.GetInverse(), sitk.sitkNearestNeighbor, 0)
    distance = sitk.SignedMaurerDistanceMap(
        cord_fine, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    # Distances are to the outermost cord voxel centres, half a fine voxel inside its surface.
    within = sitk.GetArrayFromImage(distance) <= PRV_MM + 0.15
    truth_ml = np.count_nonzero(within) * 0.3**3 / 1000
    assert prv_ml == pytest.approx(truth_ml, rel=0.03)  # the goal
    truth_on_ct = sitk.Resample(sitk.Cast(distance <= PRV_MM + 0.15, sitk.sitkUInt8), ct.image)
    # and in the right place: against the fine truth read at the CT's voxel centres
    assert dice(masks["cord PRV 2mm"], sitk.GetArrayFromImage(truth_on_ct) > 0) >= 0.95
    planning = json.loads((an_exported_analysis[2] / "planning.json").read_text())
    assert planning["cord_prv_volume_ml"] == pytest.approx(prv_ml, rel=1e-9)


# ---------------------------------------------------------------------------------------
# Planning values
# ---------------------------------------------------------------------------------------
def test_planning_json_flags_the_gaps_under_3_mm(an_exported_analysis):
    _, analysis, dicom = an_exported_analysis
    metrics = json.loads((analysis / "metrics.json").read_text())
    lesion = json.loads((dicom / "planning.json").read_text())["lesions"][0]
    assert lesion["mass_sac_min_distance_mm"] == metrics["mass_sac_min_distance_mm"]
    assert lesion["gap_sac_under_3mm"] is (metrics["mass_sac_min_distance_mm"] < 3.0)
    assert lesion["gap_cord_under_3mm"] is (metrics["mass_cord_min_distance_mm"] < 3.0)


# ---------------------------------------------------------------------------------------
# mescc export, and bad input
# ---------------------------------------------------------------------------------------
def test_mescc_export_rebuilds_the_same_values_from_the_analysis_folder(
    an_exported_analysis, tmp_path
):
    study, analysis, dicom = an_exported_analysis
    args = ["-q", "export", str(analysis), "--mri", str(study / "t2_dicom")]
    assert main([*args, "--ct", str(study / "ct_dicom"), "--out", str(tmp_path / "d")]) == 0
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [
        ".mescc-output", "planning.json", "rtstruct.dcm", "seg.dcm", "sr.dcm"
    ]  # fmt: skip
    again, _ = sr_items(pydicom.dcmread(tmp_path / "d" / "sr.dcm"))
    first, _ = sr_items(pydicom.dcmread(dicom / "sr.dcm"))
    assert again == first


def test_nifti_inputs_with_dicom_out_are_refused_before_any_work(
    an_exported_analysis, tmp_path, capsys
):
    study = an_exported_analysis[0]
    args = ["analyze", "--mri", str(study / "t2.nii.gz"), "--seeds", str(tmp_path / "s.nii.gz")]
    args += ["--out", str(tmp_path / "a"), "--dicom-out", str(tmp_path / "d"), "--no-scene"]
    assert main(args) == 2
    assert "the DICOM exports reference the original DICOM series" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_a_ct_in_another_frame_without_registration_is_refused(
    an_exported_analysis, tmp_path, capsys
):
    study, analysis, _ = an_exported_analysis
    bare = tmp_path / "analysis"
    bare.mkdir()
    for name in ("metrics.json", "segmentation.seg.nrrd"):  # no ct_to_mri.tfm
        shutil.copy(analysis / name, bare / name)
    args = ["export", str(bare), "--mri", str(study / "t2_dicom")]
    assert main([*args, "--ct", str(study / "ct_dicom"), "--out", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "another frame of reference" in err and err.count("\n") <= 1
    assert not (tmp_path / "d").exists()


def test_an_unreachable_node_is_refused_before_anything_is_written(
    an_exported_analysis, tmp_path, capsys
):
    study, analysis, _ = an_exported_analysis
    args = ["export", str(analysis), "--mri", str(study / "t2_dicom"), "--out", str(tmp_path / "d")]
    assert main([*args, "--send", "PACS@127.0.0.1:1"]) == 2
    assert "cannot reach the DICOM node PACS@127.0.0.1:1" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize(
    "text", ["PACS", "PACS@host", "@host:104", "PACS@:104", "PACS@host:0", "A\\B@host:104"]
)
def test_a_malformed_node_is_named_in_the_error(text):
    with pytest.raises(DicomNetworkError):
        DicomNode.parse(text)


def test_a_node_with_an_ipv6_host_parses():
    assert DicomNode.parse("PACS@[::1]:4242") == DicomNode("PACS", "::1", 4242)


# ---------------------------------------------------------------------------------------
# Several lesions
# ---------------------------------------------------------------------------------------
def test_two_lesions_are_two_segments_and_two_sr_groups(the_grids, tmp_path):
    """The analysed mass cut in two along the cord (a 3-slice gap): two lesions, each its own
    SEG segment (voxel for voxel the lesion map's) and its own SR group with its grade."""
    from MESCCAnalyzerLib.export import build_exports, check_sources, write_exports
    from MESCCAnalyzerLib.measure.metrics import compute_metrics

    mri, _, labels, _ = the_grids
    arr = sitk.GetArrayFromImage(labels)
    slices = np.flatnonzero((arr == LABEL_MASS).any(axis=(1, 2)))
    middle = slices[len(slices) // 2]
    arr[middle - 1 : middle + 2][arr[middle - 1 : middle + 2] == LABEL_MASS] = 0
    cut = sitk.GetImageFromArray(arr)
    cut.CopyInformation(labels)
    result = compute_metrics(cut)
    m = result.metrics
    assert [lesion["id"] for lesion in m["lesions"]] == [1, 2]
    exports = build_exports(check_sources(mri, None, None), cut, m, lesion_map=result.lesion_map)
    write_exports(exports, tmp_path / "d")
    for name in ("seg.dcm", "sr.dcm"):
        assert "Error" not in dciodvfy(tmp_path / "d" / name)
    seg = hd.seg.segread(tmp_path / "d" / "seg.dcm")
    names = [str(d.SegmentLabel) for d in seg.SegmentSequence]
    assert names == ["spinal_cord", "csf", "thecal sac", "lesion 1", "lesion 2", "vertebrae"]
    uids = [str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in mri.files]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[4, 5]
    )
    ids = sitk.GetArrayFromImage(result.lesion_map)
    for i, lesion_id in enumerate((1, 2)):
        assert np.array_equal(pixels[..., i] > 0, ids == lesion_id)
    _, others = sr_items(pydicom.dcmread(tmp_path / "d" / "sr.dcm"))
    for lesion in m["lesions"]:
        group = f"lesion {lesion['id']}"
        assert others[(group, "Bilsky ESCC grade")] == f"Bilsky grade {lesion['bilsky_grade']}"
        assert others[(group, "Bilsky grade reason")] == lesion["bilsky_reason"]
