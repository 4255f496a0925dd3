"""``mescc info`` and ``mescc suv``: real data through the command line, bad input → exit 2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from MESCCAnalyzerLib.cli import main

CT_DIR = "ct_dicom_pet_ct_scanner/dicom"
FLT_1 = "pet_dicom_flt/flt_pet_slice_1.dcm"


def _run(capsys, *argv):
    code = main(["--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------- real data
def test_info_json_reports_true_geometry_of_real_ct_and_mri(shared_data, capsys):
    code, out, err = _run(
        capsys, "info", shared_data / CT_DIR, shared_data / "sct_errsm30" / "t2.nii.gz", "--json"
    )
    assert code == 0 and err == ""
    ct, mri = json.loads(out)
    assert (ct["modality"], ct["size"], ct["n_files"], ct["units"]) == (
        "CT",
        [512, 512, 20],
        20,
        "HU",
    )
    # DS values 0.9765625 and 2 mm gaps are exact in binary
    assert ct["spacing_mm"] == pytest.approx([0.9765625, 0.9765625, 2.0], abs=1e-12)
    assert ct["origin_lps_mm"] == pytest.approx([-249.51171875, -437.51171875, -804.5], abs=1e-12)
    assert ct["direction"] == pytest.approx([1, 0, 0, 0, 1, 0, 0, 0, 1], abs=1e-12)
    assert (ct["min"], ct["max"]) == (-1024.0, 1839.0)  # the series' stored extremes, rescaled
    assert ct["series_description"] == "CT Body 3.0"
    assert (mri["format"], mri["modality"], mri["size"]) == ("NIfTI", None, [60, 55, 52])
    # from the header's srow_x/y/z (RAS) negated in x and y; float32 header: 1e-4 mm
    assert mri["origin_lps_mm"] == pytest.approx([32.2193, -31.7866, -19.3217], abs=1e-4)
    assert mri["orientation"] == "PSR"


def test_info_table_names_fields(shared_data, capsys):
    code, out, _ = _run(capsys, "info", shared_data / FLT_1)
    assert code == 0
    assert "modality         PT" in out and "168 × 168 × 1" in out and "ACRIN-FLT-Breast_029" in out


def test_suv_writes_the_suv_image_and_prints_the_factor(shared_data, tmp_path, capsys):
    out_path = tmp_path / "out" / "suv.nii.gz"
    info_path = tmp_path / "out" / "suv.json"
    code, out, err = _run(
        capsys, "suv", shared_data / FLT_1, "--out", out_path, "--info-json", info_path
    )
    assert code == 0, err
    assert "SUVbw factor: 5.942485e-04" in out  # MANIFEST: 5.9425e-4
    assert "decay time: 3976.9 s" in out  # 14:17:00 → 15:23:16.921
    details = json.loads(info_path.read_text(encoding="utf-8"))
    assert details["factor"] == pytest.approx(5.9425e-4, abs=5e-9)  # MANIFEST's 5 digits
    ds = pydicom.dcmread(shared_data / FLT_1)
    want = ds.pixel_array * float(ds.RescaleSlope) * details["factor"]
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out_path)))[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)  # float32 file
    assert sorted(p.name for p in out_path.parent.iterdir()) == [
        "suv.json",
        "suv.nii.gz",
    ]  # no temporaries


def test_suv_lbm_needs_height_then_accepts_it(shared_data, tmp_path, capsys):
    out_path = tmp_path / "suv.nrrd"
    code, _, err = _run(capsys, "suv", shared_data / FLT_1, "--out", out_path, "--norm", "lbm")
    assert code == 2 and not out_path.exists()
    assert "PatientSize (0010,1020)" in err and "--height-m" in err
    code, out, _ = _run(
        capsys, "suv", shared_data / FLT_1, "--out", out_path, "--norm", "lbm", "--height-m", "1.6"
    )
    assert code == 0 and out_path.exists()
    # James, woman 69.7344 kg, 160 cm: 1.07 W − 148 (W/160)² = 46.50 kg
    assert "lean body mass: 46.50 kg (james)" in out


def test_suv_weight_override_scales_the_factor(shared_data, tmp_path, capsys):
    code, out, _ = _run(
        capsys,
        "suv",
        shared_data / FLT_1,
        "--out",
        tmp_path / "s.nii.gz",
        "--weight-kg",
        "139.4688",
        "--json",
    )
    assert code == 0
    # twice the header weight 69.7344 kg: twice the factor (linear in W)
    assert json.loads(out)["factor"] == pytest.approx(2 * 5.942485308e-4, rel=1e-9)


def test_suv_missing_weight_names_tag_and_option(shared_data, tmp_path, capsys):
    src = tmp_path / "in.dcm"
    ds = pydicom.dcmread(shared_data / FLT_1)
    del ds.PatientWeight
    ds.save_as(src)
    out_path = tmp_path / "suv.nii.gz"
    code, _, err = _run(capsys, "suv", src, "--out", out_path)
    assert code == 2 and not out_path.exists()
    assert err.strip() == (
        f"mescc suv: error: {src}: missing DICOM attribute PatientWeight (0010,1030) (supply it with --weight-kg)"
    )
    code, out, _ = _run(capsys, "suv", src, "--out", out_path, "--weight-kg", "69.7344")
    assert code == 0 and "5.942485e-04" in out


# ----------------------------------------------------------------------------- bad input
def _copy_ct(shared_data, folder, n=None, skip=()):
    folder.mkdir(parents=True, exist_ok=True)
    files = sorted((shared_data / CT_DIR).iterdir())[:n]
    for i, f in enumerate(files):
        if i not in skip:
            shutil.copy(f, folder / f"{i:03d}.dcm")
    return sorted(folder.iterdir())


def _pet_series(shared_data, folder, n, skip=()):
    """``n`` copies of the real FLT slice stacked 5 mm apart as one PET series."""
    folder.mkdir(parents=True, exist_ok=True)
    ds = pydicom.dcmread(shared_data / FLT_1)
    z0 = float(ds.ImagePositionPatient[2])
    for k in range(n):
        if k in skip:
            continue
        ds.SOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z0 + 5.0 * k]
        ds.save_as(folder / f"pt{k:03d}.dcm")


def _bad_input(kind, shared_data, tmp_path, *, pet=False):
    """Make one bad input (DICOM ones as PET with ``pet``); return (path, expected phrase)."""
    if pet and kind == "missing slice":
        _pet_series(shared_data, tmp_path / "pet", 6, skip=(2,))
        return tmp_path / "pet", "non-uniform slice spacing: 10.000 mm"
    if pet and kind == "two series":
        shutil.copytree(shared_data / "pet_dicom_flt", tmp_path / "pet")  # two PET series
        return tmp_path / "pet", "2 series in one folder"
    if kind == "empty folder":
        (tmp_path / "empty").mkdir()
        return tmp_path / "empty", "the folder is empty"
    if kind == "folder without image":
        (tmp_path / "docs").mkdir()
        (tmp_path / "docs" / "readme.txt").write_text("no image here")
        return tmp_path / "docs", "no DICOM image found"
    if kind == "text named .dcm":
        (tmp_path / "x.dcm").write_text("not a DICOM file\n")
        return tmp_path / "x.dcm", "not a DICOM file"
    if kind == "truncated nifti":
        src = shared_data / "sct_errsm30" / "t2.nii.gz"
        (tmp_path / "cut.nii.gz").write_bytes(src.read_bytes()[: src.stat().st_size // 2])
        return tmp_path / "cut.nii.gz", "truncated or corrupt file"
    if kind == "4D nifti":
        sitk.WriteImage(sitk.Image([5, 4, 3, 2], sitk.sitkFloat32), str(tmp_path / "t.nii.gz"))
        return tmp_path / "t.nii.gz", "a 4D image (5×4×3×2) where a 3D volume is needed"
    if kind == "missing slice":
        _copy_ct(shared_data, tmp_path / "ct", n=8, skip=(4,))
        return tmp_path / "ct", "non-uniform slice spacing: 4.000 mm"
    if kind == "two series":
        files = _copy_ct(shared_data, tmp_path / "mixed", n=4)
        uid = generate_uid()
        for f in files:
            ds = pydicom.dcmread(f)
            ds.SeriesInstanceUID, ds.Modality = uid, "MR"
            ds.SOPInstanceUID = generate_uid()
            ds.save_as(f.with_name("mr_" + f.name))
        return tmp_path / "mixed", "2 series in one folder"
    raise AssertionError(kind)


BAD = [
    "empty folder",
    "folder without image",
    "text named .dcm",
    "truncated nifti",
    "4D nifti",
    "missing slice",
    "two series",
]


@pytest.mark.parametrize("kind", BAD)
def test_info_bad_input_exits_2_with_one_line(shared_data, tmp_path, capsys, kind):
    path, phrase = _bad_input(kind, shared_data, tmp_path)
    code, out, err = _run(capsys, "info", path)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"mescc info: error: {path}: ")
    assert phrase in err


@pytest.mark.parametrize("kind", BAD)
def test_suv_bad_input_exits_2_and_writes_nothing(shared_data, tmp_path, capsys, kind):
    path, phrase = _bad_input(kind, shared_data, tmp_path, pet=True)
    out_dir = tmp_path / "results"
    code, out, err = _run(
        capsys, "suv", path, "--out", out_dir / "suv.nii.gz", "--info-json", out_dir / "suv.json"
    )
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith(f"mescc suv: error: {path}")
    if kind not in ("truncated nifti", "4D nifti"):  # those are not DICOM: refused as such
        assert phrase in err
    assert not out_dir.exists() or list(out_dir.iterdir()) == []


def test_two_series_can_be_chosen(shared_data, tmp_path, capsys):
    path, _ = _bad_input("two series", shared_data, tmp_path)
    code, out, _ = _run(capsys, "info", path, "--modality", "MR", "--json")
    assert code == 0
    (mr,) = json.loads(out)
    assert (mr["modality"], mr["size"], mr["spacing_mm"][2]) == ("MR", [512, 512, 4], 2.0)


def test_suv_refuses_output_over_input_or_unknown_format(shared_data, tmp_path, capsys):
    src = tmp_path / "pt.dcm"
    shutil.copy(shared_data / FLT_1, src)
    before = src.read_bytes()
    code, _, err = _run(capsys, "suv", src, "--out", src.with_suffix(".txt"))
    assert code == 2 and "unsupported output format" in err
    code, _, err = _run(capsys, "suv", tmp_path, "--out", tmp_path / "suv.nii.gz")
    assert code == 2 and "would overwrite an input" in err
    assert src.read_bytes() == before and not (tmp_path / "suv.nii.gz").exists()


def test_suv_of_a_pet_series_folder(shared_data, tmp_path, capsys):
    _pet_series(shared_data, tmp_path / "pet", 5)
    out_path = tmp_path / "suv.mha"
    code, out, _ = _run(capsys, "suv", tmp_path / "pet", "--out", out_path)
    assert code == 0 and "SUVbw factor: 5.942485e-04" in out
    image = sitk.ReadImage(str(out_path))
    assert image.GetSize() == (168, 168, 5)
    assert image.GetSpacing()[2] == pytest.approx(5.0, abs=1e-9)  # the IPPs we wrote
    ds = pydicom.dcmread(shared_data / FLT_1)
    assert image.GetOrigin() == pytest.approx([float(v) for v in ds.ImagePositionPatient], abs=1e-9)
    arr = sitk.GetArrayFromImage(image)
    np.testing.assert_allclose(arr[4], arr[0])  # five identical slices
