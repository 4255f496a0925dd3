"""``mescc metrics`` end to end on the phantom, and its refusals of bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import SimpleITK as sitk
import vtk

from MESCCAnalyzerLib import cli
from MESCCAnalyzerLib.io import segfile
from MESCCAnalyzerLib.measure import surfaces
from MESCCAnalyzerLib.measure.metrics import compute_metrics

REQUIRED_KEYS = [
    "mass_volume_ml",
    "mass_surface_area_mm2",
    "mass_craniocaudal_extent_mm",
    "mass_circumferential_extent_deg",
    "mass_circumferential_sectors",
    "cord_min_csa_mm2",
    "cord_reference_csa_mm2",
    "cord_csa_ratio",
    "mscc_percent",
    "mcc_percent",
    "canal_compromise_percent",
    "compression_ratio_min",
    "cord_canal_area_ratio_min",
    "cord_displacement_mm",
    "mass_cord_min_distance_mm",
    "mass_cord_contact_area_mm2",
    "bilsky_grade",
    "bilsky_reason",
    "worst_section_lps_mm",
]
PET_KEYS = ["suv_max", "suv_peak", "suv_mean", "mtv_ml", "tlg"]
SECTION_COLUMNS = [
    "arc_mm",
    "centre_l_mm",
    "centre_p_mm",
    "centre_s_mm",
    "cord_csa_mm2",
    "cord_ap_mm",
    "cord_transverse_mm",
    "compression_ratio",
    "sac_csa_mm2",
    "sac_ap_mm",
    "csf_area_mm2",
    "mass_area_mm2",
]


@pytest.fixture(scope="module")
def grade2():
    from test_bilsky import phantom_labels_and_truth

    return phantom_labels_and_truth("2", 0)


@pytest.fixture(scope="module")
def study_files(grade2, tmp_path_factory):
    labels, _ = grade2
    folder = tmp_path_factory.mktemp("study")
    arr = sitk.GetArrayFromImage(labels)
    suv = sitk.GetImageFromArray(
        np.where(arr == 3, 7.0, np.where(arr == 4, 1.5, 0.8)).astype(np.float32)
    )
    suv.CopyInformation(labels)
    sitk.WriteImage(labels, str(folder / "labels.nii.gz"))
    sitk.WriteImage(suv, str(folder / "suv.nii.gz"))
    segfile.write_seg_nrrd(labels, folder / "labels.seg.nrrd")
    return folder


@pytest.fixture(scope="module")
def a_run(study_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "metrics"
    code = cli.main(
        [
            "--quiet",
            "metrics",
            "--labels",
            str(study_files / "labels.nii.gz"),
            "--pet",
            str(study_files / "suv.nii.gz"),
            "--out",
            str(out),
        ]
    )
    return code, out


def test_metrics_command_writes_json_sections_and_models(a_run, grade2):
    code, out = a_run
    _, truth = grade2
    assert code == 0
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    for key in REQUIRED_KEYS + PET_KEYS:
        assert key in m and m[key] is not None, key
    assert m["bilsky_grade"] == "2"
    assert m["mscc_percent"] == pytest.approx(truth["mscc_percent"], abs=5.0)  # see test_bilsky
    assert len(m["worst_section_lps_mm"]) == 3
    assert m["mass_cord_min_distance_mm"] == 0.0 and m["mass_cord_contact_area_mm2"] > 0.0
    # Uptake: SUV 7 in every mass voxel, so SUVmax = SUVmean = 7, MTV = the mass voxels and
    # TLG = 7 x MTV; SUVpeak < 7 only if no 1 ml sphere fits in the mass (it does: 6 ml).
    voxel_ml = 0.7 * 0.7 * 2.0 / 1000.0
    assert m["suv_max"] == pytest.approx(7.0)
    assert m["suv_mean"] == pytest.approx(7.0)
    assert m["mtv_ml"] == pytest.approx(m["mass_voxel_volume_ml"])
    assert m["mtv_ml"] / voxel_ml == pytest.approx(round(m["mtv_ml"] / voxel_ml))
    assert m["tlg"] == pytest.approx(7.0 * m["mtv_ml"])
    assert m["suv_peak"] == pytest.approx(7.0, abs=1e-4)

    with open(out / "sections.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == m["sections"] >= 100  # 112 mm of cord, 1 mm apart
    for col in SECTION_COLUMNS:
        assert col in rows[0]
    arcs = [float(r["arc_mm"]) for r in rows]
    np.testing.assert_allclose(np.diff(arcs), 1.0, atol=0.01)
    valid = [r for r in rows if r["valid"] == "1"]
    assert len(valid) == m["valid_sections"]
    assert min(float(r["cord_csa_mm2"]) for r in valid) == pytest.approx(
        m["cord_min_csa_mm2"], rel=0.05
    )

    names = sorted(p.name for p in (out / "models").iterdir())
    assert names == ["cord.vtp", "cord_centerline.vtp", "mass.vtp", "thecal_sac.vtp"]
    mass = surfaces.read_model(out / "models" / "mass.vtp")
    cord = surfaces.read_model(out / "models" / "cord.vtp")
    line = surfaces.read_model(out / "models" / "cord_centerline.vtp")
    assert mass.GetFieldData().GetAbstractArray("SPACE").GetValue(0) == "LPS"
    d = mass.GetPointData().GetArray("DistanceToCord_mm")
    assert d is not None and d.GetRange()[0] == 0.0 and d.GetRange()[1] > 5.0
    assert cord.GetPointData().GetArray("DistanceToMass_mm").GetRange()[0] == 0.0
    assert surfaces.surface_volume_mm3(mass) / 1000.0 == pytest.approx(
        m["mass_volume_ml"], rel=1e-4
    )
    assert line.GetNumberOfLines() == 1 and line.GetNumberOfPoints() == m["sections"]
    assert line.GetCell(0).GetCellType() == vtk.VTK_POLY_LINE


def test_a_seg_nrrd_gives_the_same_numbers(study_files, grade2, tmp_path):
    out = tmp_path / "seg"
    assert (
        cli.main(
            ["-q", "metrics", "--labels", str(study_files / "labels.seg.nrrd"), "--out", str(out)]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    ref = compute_metrics(grade2[0]).metrics
    assert m["bilsky_grade"] == ref["bilsky_grade"]
    for key in ("mscc_percent", "cord_csa_ratio", "mass_volume_ml", "canal_compromise_percent"):
        assert m[key] == pytest.approx(ref[key], rel=1e-6, abs=1e-9)
    assert "suv_max" not in m


def _with_labels(grade2, folder, name, fn):
    labels, _ = grade2
    arr = fn(sitk.GetArrayFromImage(labels).copy())
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(labels)
    path = folder / name
    sitk.WriteImage(img, str(path))
    return path


def _refused(capsys, argv, out, *expected):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("mescc metrics: error: ")
    for text in expected:
        assert text in err[0]
    assert not out.exists()  # nothing written


@pytest.mark.parametrize(
    "name, change, message",
    [
        ("no_cord.nii.gz", lambda a: np.where(a == 1, 2, a).astype(np.uint8), "spinal_cord (1)"),
        ("no_csf.nii.gz", lambda a: np.where(a == 2, 0, a).astype(np.uint8), "csf (2)"),
    ],
)
def test_missing_structures_are_refused(grade2, tmp_path, capsys, name, change, message):
    path = _with_labels(grade2, tmp_path, name, change)
    out = tmp_path / "out"
    _refused(capsys, ["metrics", "--labels", str(path), "--out", str(out)], out, str(path), message)


def test_a_labelmap_without_a_mass_is_measured_without_a_lesion(grade2, tmp_path, capsys):
    path = _with_labels(grade2, tmp_path, "no_mass.nii.gz", lambda a: np.where(a == 3, 0, a))
    out = tmp_path / "out"
    assert cli.main(["metrics", "--labels", str(path), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("No lesion: no epidural mass")
    m = json.loads((out / "metrics.json").read_text())
    assert m["lesions"] == [] and m["lesion_count"] == 0 and m["worst_lesion_id"] is None
    assert m["bilsky_grade"] is None and m["mscc_percent"] is None
    assert m["levels"] and all(r["lesion_ids"] == [] for r in m["levels"])
    assert not (out / "models" / "mass.vtp").exists() and (out / "models" / "cord.vtp").exists()
    assert not (out / "lesions.nii.gz").exists()


def test_a_2d_labelmap_is_refused(tmp_path, capsys):
    img = sitk.GetImageFromArray(np.ones((20, 20), np.uint8))
    path = tmp_path / "flat.nii.gz"
    sitk.WriteImage(img, str(path))
    out = tmp_path / "out"
    _refused(capsys, ["metrics", "--labels", str(path), "--out", str(out)], out, str(path), "2D")


def test_pet_on_another_grid_is_refused(study_files, tmp_path, capsys):
    suv = sitk.ReadImage(str(study_files / "suv.nii.gz"))
    suv.SetOrigin(tuple(v + 1.5 for v in suv.GetOrigin()))
    path = tmp_path / "shifted_suv.nii.gz"
    sitk.WriteImage(suv, str(path))
    out = tmp_path / "out"
    _refused(
        capsys,
        [
            "metrics",
            "--labels",
            str(study_files / "labels.nii.gz"),
            "--pet",
            str(path),
            "--out",
            str(out),
        ],
        out,
        str(path),
        "not on the labelmap's grid",
    )


def test_missing_file_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    missing = tmp_path / "nope.nii.gz"
    _refused(
        capsys,
        ["metrics", "--labels", str(missing), "--out", str(out)],
        out,
        str(missing),
        "not found",
    )


def test_progress_reaches_the_end_and_cancel_stops(grade2):
    from MESCCAnalyzerLib.errors import Cancelled

    seen = []
    compute_metrics(grade2[0], progress=lambda f, msg: seen.append(f))
    assert seen[-1] == 1.0 and min(seen) >= 0.0
    assert all(b >= a - 1e-9 for a, b in zip(seen, seen[1:], strict=False))  # never goes back
    calls = []

    def cancel_after_a_few():
        calls.append(1)
        return len(calls) > 3

    with pytest.raises(Cancelled):
        compute_metrics(grade2[0], cancel=cancel_after_a_few)
