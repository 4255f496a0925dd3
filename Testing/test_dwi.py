"""Diffusion: loading (DICOM in each vendor's layout, enhanced, NIfTI + FSL), the ADC fit
against the phantom's known tissue ADC, the DWI -> MRI registration, and our ADC against
DIPY's tensor mean diffusivity on real cervical cord data (../shared/data/sct_dmri)."""

from __future__ import annotations

import json

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.diffusion import adc
from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.io import dwi
from MESCCAnalyzerLib.phantom.anatomy import CORD, CSF, MARROW, MASS, TISSUE_NAMES, make_anatomy
from MESCCAnalyzerLib.phantom.dwi import (
    ADC_LEVELS,
    LAYOUTS,
    fsl_bvecs,
    make_phantom_dwi,
    write_dwi_dicom,
    write_dwi_nifti,
)
from MESCCAnalyzerLib.phantom.imaging import make_pose
from MESCCAnalyzerLib.registration import tre_mm

VENDOR_SOURCE = {
    "standard": "(0018,9087)",
    "siemens": "Siemens (0019,100C)",
    "ge": "GE (0043,1039)",
    "philips": "Philips (2001,1003)",
    "enhanced": "(0018,9087)",
}


@pytest.fixture(scope="module")
def a_phantom_dwi():
    """Factory ``a_phantom_dwi(seed, grade)``: a phantom's diffusion series (cached)."""
    cache = {}

    def get(seed: int = 0, grade: str = "2"):
        if (seed, grade) not in cache:
            anatomy, pose_params = make_anatomy(grade, seed)
            cache[seed, grade] = make_phantom_dwi(anatomy, make_pose(pose_params), seed)
        return cache[seed, grade]

    return get


def a_small_4d(tmp_path, bvals, name="dwi.nii.gz"):
    """A 4D NIfTI of len(bvals) 8x8x4 volumes decaying with ADC 1000, and its bval file."""
    rng = np.random.default_rng(1)
    volumes = [
        sitk.GetImageFromArray(
            (1000 * np.exp(-b * 1e-3) + rng.normal(0, 1, (4, 8, 8))).astype(np.float32)
        )
        for b in bvals
    ]
    path = tmp_path / name
    sitk.WriteImage(sitk.JoinSeries(volumes), str(path))
    (tmp_path / name.replace(".nii.gz", ".bval")).write_text(" ".join(f"{b:g}" for b in bvals))
    return path


def nothing_written(folder, name):
    return not any(
        p.name.startswith(name) or p.name.startswith(f".{name}") for p in folder.iterdir()
    )


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("layout", LAYOUTS)
def test_each_vendor_layout_reads_back_its_b_values_directions_and_pixels(
    layout, a_phantom_dwi, tmp_path
):
    phantom = a_phantom_dwi(0)
    volumes = [v[:, :, 10:13] for v in phantom.volumes]  # three slices keep the test quick
    folder = tmp_path / layout
    write_dwi_dicom(
        volumes,
        phantom.bvals,
        phantom.bvecs,
        folder,
        layout=layout,
        patient_id="P",
        study_uid="1.2.3",
        frame_uid="1.2.4",
    )
    loaded = dwi.load_dwi(folder)
    assert loaded.b_value_source == VENDOR_SOURCE[layout]
    directional = ~loaded.isotropic
    # b-values are written as integers (IS) or floats: exact for 0, 50, 400, 800
    np.testing.assert_array_equal(loaded.bvals[directional], phantom.bvals)
    np.testing.assert_allclose(loaded.bvecs[directional], phantom.bvecs, atol=1e-6)
    kept = [v for v, keep in zip(loaded.volumes, directional, strict=True) if keep]
    for got, written in zip(kept, volumes, strict=True):
        expected = np.round(sitk.GetArrayFromImage(written))  # stored as uint16
        np.testing.assert_array_equal(sitk.GetArrayFromImage(got), expected)
        assert np.allclose(got.GetOrigin(), written.GetOrigin(), atol=1e-4)
        assert np.allclose(got.GetSpacing(), written.GetSpacing(), atol=1e-6)
    if layout == "philips":  # the scanner's isotropic image at each b > 0, flagged
        assert loaded.isotropic.sum() == 3
        assert sorted(loaded.bvals[loaded.isotropic]) == [50.0, 400.0, 800.0]


def test_the_ge_layout_exercises_the_offset_of_a_billion(a_phantom_dwi, tmp_path):
    phantom = a_phantom_dwi(0)
    volumes = [v[:, :, 10:11] for v in phantom.volumes]
    files = write_dwi_dicom(
        volumes,
        phantom.bvals,
        phantom.bvecs,
        tmp_path,
        layout="ge",
        patient_id="P",
        study_uid="1.2.3",
        frame_uid="1.2.4",
    )
    raw = [
        float(pydicom.dcmread(f).private_block(0x0043, "GEMS_PARM_01")[0x39].value[0])
        for f in files
    ]
    assert min(raw) >= 1e9
    assert sorted({r - 1e9 for r in raw}) == [0.0, 50.0, 400.0, 800.0]
    assert sorted(set(dwi.load_dwi(tmp_path).bvals)) == [0.0, 50.0, 400.0, 800.0]


def test_philips_trace_images_do_not_change_the_adc(a_phantom_dwi, tmp_path):
    phantom = a_phantom_dwi(0)
    volumes = [v[:, :, 10:12] for v in phantom.volumes]
    maps = {}
    for layout in ("standard", "philips"):
        write_dwi_dicom(
            volumes,
            phantom.bvals,
            phantom.bvecs,
            tmp_path / layout,
            layout=layout,
            patient_id="P",
            study_uid="1.2.3",
            frame_uid="1.2.4",
        )
        maps[layout] = sitk.GetArrayFromImage(adc.fit_adc(dwi.load_dwi(tmp_path / layout)).adc)
    np.testing.assert_array_equal(maps["philips"], maps["standard"])


def test_a_nifti_with_fsl_files_beside_it_reads_back_in_lps(a_phantom_dwi, tmp_path):
    phantom = a_phantom_dwi(0)
    write_dwi_nifti(phantom.volumes, phantom.bvals, phantom.bvecs, tmp_path / "dwi.nii.gz")
    loaded = dwi.load_dwi(tmp_path / "dwi.nii.gz")
    np.testing.assert_array_equal(loaded.bvals, phantom.bvals)
    np.testing.assert_allclose(loaded.bvecs, phantom.bvecs, atol=1e-5)  # 6 decimals written
    assert len(loaded.volumes) == 20
    assert dwi.describe(loaded)["shells"][3] == {
        "b_s_mm2": 800.0,
        "volumes": 6,
        "directions": 6,
        "b_values_s_mm2": [800.0],
    }


@pytest.mark.parametrize("flip", [False, True])
def test_fsl_directions_turn_into_lps_and_back_on_an_oblique_grid(flip):
    image = sitk.Image(4, 4, 4, sitk.sitkFloat32)
    r = sitk.Euler3DTransform((0, 0, 0), 0.3, -0.2, 0.5).GetMatrix()
    m = np.asarray(r).reshape(3, 3) @ np.diag([1, 1, -1 if flip else 1])  # det -1 or +1
    image.SetDirection(tuple(m.ravel()))
    g = np.random.default_rng(0).normal(size=(7, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    np.testing.assert_allclose(dwi.fsl_bvecs_to_lps(fsl_bvecs(g, image).T, image), g, atol=1e-12)


def test_a_3d_image_is_refused_naming_it(tmp_path):
    path = tmp_path / "adc.nii.gz"
    sitk.WriteImage(sitk.Image(8, 8, 4, sitk.sitkFloat32), str(path))
    with pytest.raises(InputError, match="3D image") as err:
        dwi.load_dwi(path)
    assert err.value.path == str(path)


def test_one_b_value_only_is_refused(tmp_path):
    path = a_small_4d(tmp_path, [800, 800, 800])
    with pytest.raises(InputError, match="at least two b-values") as err:
        dwi.load_dwi(path)
    assert err.value.path == str(tmp_path / "dwi.bval")


def test_a_b_value_count_not_matching_the_volumes_is_refused(tmp_path):
    path = a_small_4d(tmp_path, [0, 500, 1000])
    (tmp_path / "dwi.bval").write_text("0 1000")
    with pytest.raises(InputError, match="2 b-values for 3 volumes") as err:
        dwi.load_dwi(path)
    assert err.value.path == str(tmp_path / "dwi.bval")


def test_a_missing_bval_file_is_named(tmp_path):
    path = a_small_4d(tmp_path, [0, 1000])
    (tmp_path / "dwi.bval").unlink()
    with pytest.raises(InputError, match="no b-value file") as err:
        dwi.load_dwi(path)
    assert err.value.path == str(tmp_path / "dwi.bval")


def test_a_dicom_series_without_b_values_is_refused_naming_a_file(phantom_dir):
    folder = phantom_dir("2", 0) / "t2_dicom"
    with pytest.raises(InputError, match="no diffusion b-value") as err:
        dwi.load_dwi(folder)
    assert err.value.path.startswith(str(folder)) and err.value.path.endswith(".dcm")


@pytest.mark.parametrize(
    "case, message",
    [
        ("3d", "3D image"),
        ("one_b", "at least two b-values"),
        ("mismatch", "2 b-values for 3 volumes"),
        ("b_max", "an ADC needs at least two"),
    ],
)
def test_mescc_adc_refuses_bad_input_with_one_line_and_writes_nothing(
    case, message, tmp_path, capsys
):
    args = []
    if case == "3d":
        path = tmp_path / "one.nii.gz"
        sitk.WriteImage(sitk.Image(8, 8, 4, sitk.sitkFloat32), str(path))
        (tmp_path / "one.bval").write_text("0")
    elif case == "one_b":
        path = a_small_4d(tmp_path, [800, 800, 800])
    elif case == "mismatch":
        path = a_small_4d(tmp_path, [0, 500, 1000])
        (tmp_path / "dwi.bval").write_text("0 1000")
    else:
        path = a_small_4d(tmp_path, [0, 500, 1000])
        args = ["--b-max", "400"]
    code = main(["-q", "adc", str(path), "--out", str(tmp_path / "adc.nii.gz"), *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and message in err[0] and err[0].startswith("mescc adc: error: ")
    assert nothing_written(tmp_path, "adc")


def test_mescc_adc_refuses_fsl_files_with_a_dicom_series(a_phantom_dwi, tmp_path, capsys):
    phantom = a_phantom_dwi(0)
    volumes = [v[:, :, 10:11] for v in phantom.volumes]
    write_dwi_dicom(
        volumes,
        phantom.bvals,
        phantom.bvecs,
        tmp_path / "dicom",
        layout="standard",
        patient_id="P",
        study_uid="1.2.3",
        frame_uid="1.2.4",
    )
    (tmp_path / "x.bval").write_text("0 800")
    code = main(
        [
            "-q",
            "adc",
            str(tmp_path / "dicom"),
            "--bvals",
            str(tmp_path / "x.bval"),
            "--out",
            str(tmp_path / "adc.nii.gz"),
        ]
    )
    assert code == 2
    assert "a DICOM series carries its b-values" in capsys.readouterr().err
    assert nothing_written(tmp_path, "adc")


def test_mescc_info_still_describes_a_3d_volume_as_before(phantom_dir, capsys):
    assert main(["-q", "info", "--json", str(phantom_dir("2", 0) / "t2.nii.gz")]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert "kind" not in info and info["size"] == [110, 110, 56]


# ---------------------------------------------------------------------------------------
# The fit against the phantom's truth
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("grade", ["1b", "2", "3"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_phantom_adc_of_each_tissue_is_within_2_percent_of_truth(seed, grade, a_phantom_dwi):
    phantom = a_phantom_dwi(seed, grade)
    result = adc.fit_adc(phantom.series())
    values = sitk.GetArrayFromImage(result.adc)
    assert result.noise_sigma == pytest.approx(20.0, rel=0.03)  # the σ of the phantom's noise
    for tissue in (CORD, CSF, MASS, MARROW):
        # voxels of one tissue (no partial volume): the mean over them carries the noise of
        # tens to thousands of voxels (worst: ~30 CSF voxels, ADC noise ~4 % each -> < 1 %)
        inside = (phantom.tissue == tissue) & phantom.pure & np.isfinite(values)
        assert inside.sum() >= 25, TISSUE_NAMES[tissue]
        mean = float(values[inside].mean())
        # goal of issue 19: within 2 % of the tissue's ADC at realistic SNR (b0 SNR 25-55)
        assert mean == pytest.approx(ADC_LEVELS[tissue], rel=0.02), TISSUE_NAMES[tissue]


def test_two_b_values_give_the_two_point_formula(tmp_path):
    path = a_small_4d(tmp_path, [0, 0, 800, 800, 800])
    series = dwi.load_dwi(path)
    arrays = [sitk.GetArrayFromImage(v).astype(float) for v in series.volumes]
    s0 = (arrays[0] + arrays[1]) / 2
    trace = np.exp(np.mean([np.log(a) for a in arrays[2:]], axis=0))
    expected = np.log(s0 / trace) / 800 * 1e6
    got = sitk.GetArrayFromImage(adc.fit_adc(series).adc)
    np.testing.assert_allclose(got, expected, rtol=2e-5)  # float32 map


@pytest.mark.parametrize("grade, seed", [("2", 0), ("3", 1)])
def test_the_mass_mean_adc_is_within_3_percent_after_registration(grade, seed, phantom_study):
    study = phantom_study(grade, seed)
    phantom = make_phantom_dwi(study.anatomy, study.pose, seed)
    series = phantom.series()
    fitted = adc.fit_adc(series)
    cord = sitk.Equal(study.labels, 1)
    result = adc.register_dwi_to_mri(adc.mean_b0(series), study.t2, cord)
    labels = sitk.GetArrayFromImage(study.labels)
    mass_ijk = np.argwhere(labels == 3)[::10, ::-1].astype(float)
    mass_lps = np.array([study.t2.TransformContinuousIndexToPhysicalPoint(p) for p in mass_ijk])
    # the rigid part is found to a small fraction of the DWI voxel (1.2 mm) over the mass, in
    # spite of the phase-encoding distortion away from the cord (measured 0.05-0.15 mm)
    assert tre_mm(result.transform, phantom.mri_to_dwi, mass_lps) < 0.5
    on_mri = adc.resample_adc_onto(fitted.adc, study.t2, result.transform)
    stats = adc.adc_statistics(on_mri, sitk.Equal(study.labels, 3))
    # goal of issue 19: the mass mean within 3 % of its ADC (700) after registration and
    # resampling; the 1 mm inset keeps the edge voxels, which mix the marrow's and the CSF's
    # ADC at the DWI's 1.2 x 1.2 x 4 mm, out of it (over the whole label: +7 %)
    assert stats["adc_inset_mm"] == 1.0
    assert stats["adc_mean"] == pytest.approx(700.0, rel=0.03)
    assert stats["adc_median"] == pytest.approx(700.0, rel=0.03)
    assert stats["adc_unit"] == "1e-6 mm2/s"


def test_adc_statistics_skip_nan_and_fall_back_to_the_whole_of_a_thin_region():
    values = np.full((3, 5, 5), np.nan, np.float32)
    values[1, 2, 1:4] = [600.0, 700.0, 800.0]
    image = sitk.GetImageFromArray(values)
    region = np.zeros(values.shape, bool)
    region[1, 2, :] = True  # one row: nothing lies 1 mm inside it
    stats = adc.adc_statistics(image, region)
    assert stats["adc_inset_mm"] == 0.0 and stats["adc_voxels"] == 3
    assert (stats["adc_mean"], stats["adc_median"], stats["adc_min"]) == (700.0, 700.0, 600.0)
    assert stats["adc_p10"] == pytest.approx(620.0)


# ---------------------------------------------------------------------------------------
# Real data: DIPY's tensor mean diffusivity
# ---------------------------------------------------------------------------------------
def cord_from_seeds(mean_dw: np.ndarray) -> np.ndarray:
    """The cord of sct_dmri (kji), from one seed region per slice on the mean diffusion-
    weighted image, where the cord is the brightest structure (CSF is dark at b = 800).

    In each slice: the brightest voxel of the 3x3-smoothed image within the seed window
    i 36-61, j 4-23 (where the cord lies in every slice of this series, drawn by looking at
    the image), the voxels connected to it (faces) at half its value or more, eroded by one
    voxel in-plane to leave out the cord-CSF partial volume.
    """
    mask = np.zeros(mean_dw.shape, bool)
    for k in range(mean_dw.shape[0]):
        plane = sitk.GetImageFromArray(mean_dw[k].astype(np.float32))
        smooth = sitk.GetArrayFromImage(sitk.Mean(plane, [1, 1]))
        window = np.full(smooth.shape, -np.inf)
        window[4:24, 36:62] = smooth[4:24, 36:62]
        j, i = np.unravel_index(np.argmax(window), window.shape)
        grown = sitk.ConnectedThreshold(
            plane, seedList=[(int(i), int(j))], lower=0.5 * float(smooth[j, i]), upper=1e9
        )
        mask[k] = sitk.GetArrayFromImage(sitk.BinaryErode(grown, [1, 1])) > 0
    return mask


def test_real_cord_adc_agrees_with_dipy_mean_diffusivity_within_3_percent(shared_data):
    from dipy.core.gradients import gradient_table
    from dipy.reconst.dti import TensorModel

    folder = shared_data / "sct_dmri"
    series = dwi.load_dwi(
        folder / "dmri.nii.gz", bvals=folder / "bvals.txt", bvecs=folder / "bvecs.txt"
    )
    assert [(b, len(idx)) for b, idx in series.shells()] == [(0.0, 5), (800.0, 30)]
    ours = sitk.GetArrayFromImage(adc.fit_adc(series).adc)
    stack = np.stack([sitk.GetArrayFromImage(v).astype(np.float64) for v in series.volumes])
    cord = cord_from_seeds(stack[series.bvals > 0].mean(axis=0))
    assert (
        800 <= cord.sum() <= 1300
    )  # 15 slices of ~60 voxels (0.8 mm2): the cord eroded by one voxel
    # DIPY on the data and the files as given (its own reading of the FSL directions)
    table = gradient_table(np.loadtxt(folder / "bvals.txt"), bvecs=np.loadtxt(folder / "bvecs.txt"))
    md = TensorModel(table).fit(np.moveaxis(stack, 0, -1), mask=cord).md * 1e6
    fitted = cord & np.isfinite(ours)
    assert fitted.sum() >= 0.99 * cord.sum()  # the cord's b0 is 7-8 sigma: fitted
    ratio = np.median(ours[fitted]) / np.median(md[fitted])
    # goal of issue 19: within 3 % (measured +2.1 %: the mean of the five b = 0 repeats is
    # above their geometric mean, which DIPY's per-volume log fit uses, at this SNR of ~8)
    assert ratio == pytest.approx(1.0, abs=0.03)
    # and of the cord's order (literature 0.9-1.2 x 1e-3 mm2/s; here 0.80, with DIPY 0.79:
    # at b = 800 the cord's signal is ~5 sigma per direction and the noise floor lifts it)
    assert 700 < np.median(ours[fitted]) < 1200


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------
def test_mescc_phantom_dwi_adc_and_info_agree_with_the_truth(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["-q", "phantom", "--out", str(out), "--seed", "3", "--dwi", "siemens"]) == 0
    truth = json.loads((out / "truth.json").read_text())
    assert truth["dwi"]["layout"] == "siemens" and truth["dwi"]["adc"]["mass"] == 700.0
    for name in ("dwi.nii.gz", "dwi.bval", "dwi.bvec", "mri_to_dwi.tfm"):
        assert (out / name).is_file() and truth["files"]
    capsys.readouterr()
    assert main(["-q", "info", "--json", str(out / "dwi_dicom")]) == 0
    info = json.loads(capsys.readouterr().out)[0]
    assert info["kind"] == "diffusion" and info["n_volumes"] == 20
    assert [(s["b_s_mm2"], s["volumes"], s["directions"]) for s in info["shells"]] == [
        (0.0, 2, 0),
        (50.0, 6, 6),
        (400.0, 6, 6),
        (800.0, 6, 6),
    ]
    adc_path, residual_path = tmp_path / "adc.nii.gz", tmp_path / "res.nii.gz"
    code = main(
        [
            "-q",
            "adc",
            str(out / "dwi_dicom"),
            "--out",
            str(adc_path),
            "--residual",
            str(residual_path),
        ]
    )
    assert code == 0
    from_dicom = sitk.GetArrayFromImage(sitk.ReadImage(str(adc_path)))
    series = dwi.load_dwi(out / "dwi.nii.gz")  # the same volumes, as floats
    from_nifti = sitk.GetArrayFromImage(adc.fit_adc(series).adc_for_file())
    # DICOM stores the signals rounded to integers (noise σ 20): the maps differ by far less
    # than the noise of one voxel's ADC (~10 %)
    fitted = (from_dicom != 0) & (from_nifti != 0)
    assert np.median(np.abs(from_dicom[fitted] - from_nifti[fitted])) < 2.0
    assert sitk.ReadImage(str(residual_path)).GetSize() == sitk.ReadImage(str(adc_path)).GetSize()
