"""The phantom's truth agrees with its own images, and its grades mean what they say."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib import LABEL_BONE, LABEL_CORD, LABEL_CSF, LABEL_MASS
from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.phantom import GRADES, imaging
from MESCCAnalyzerLib.phantom.anatomy import CT_HU, make_anatomy
from MESCCAnalyzerLib.phantom.imaging import Grid
from MESCCAnalyzerLib.phantom.truth import section_truth

SEEDS = (0, 1, 2)


def _voxel_volume_ml(image) -> float:
    return float(np.prod(image.GetSpacing())) / 1000.0


def _neighbours(mask: np.ndarray, labels: np.ndarray) -> set[int]:
    """Labels found face-adjacent to ``mask`` (outside it)."""
    found = set()
    for axis in range(3):
        for shift in (1, -1):
            moved = np.roll(mask, shift, axis=axis)
            found |= set(np.unique(labels[moved & ~mask]).tolist())
    return found


@pytest.mark.parametrize("grade", GRADES)
@pytest.mark.parametrize("seed", SEEDS)
def test_truth_volumes_agree_with_voxel_counts(phantom_study, grade, seed):
    study = phantom_study(grade, seed)
    labels = sitk.GetArrayFromImage(study.labels)
    vox_ml = _voxel_volume_ml(study.labels)
    # Centre-sampled labels: signed half-voxel errors over the surface mostly cancel.
    # Measured over grades x seeds 0-2: mass <= 1.1 %, cord <= 1.2 % (docs/phantom.md);
    # the tolerances leave a margin over those.
    mass_ml = np.count_nonzero(labels == LABEL_MASS) * vox_ml
    assert mass_ml == pytest.approx(study.truth["mass_volume_ml"], rel=0.02)

    grid = Grid(study.labels.GetSize(), study.labels.GetSpacing(), study.labels.GetOrigin())
    u = study.pose.anatomy_from_mri(grid.points_lps(slice(None)))
    central = (np.abs(u[:, 2]) <= 20.0).reshape(labels.shape)
    cord_ml = np.count_nonzero((labels == LABEL_CORD) & central) * vox_ml
    assert cord_ml == pytest.approx(study.truth["cord_volume_mid40_ml"], rel=0.03)


def test_reference_section_is_the_analytic_ellipse(phantom_study):
    study = phantom_study("2", 1)
    a = study.anatomy
    ref = section_truth(a, 60.0, step_mm=0.01)
    # 0.01 mm supersampling: area error << 0.1 %, chord error <= one 0.005 mm step.
    assert ref.cord_csa_mm2 == pytest.approx(math.pi * a.cord_ax * a.cord_ay, rel=1e-3)
    assert ref.cord_ap_mm == pytest.approx(2 * a.cord_ay, abs=0.01)
    assert ref.cord_transverse_mm == pytest.approx(2 * a.cord_ax, abs=0.01)
    assert ref.sac_csa_mm2 == pytest.approx(math.pi * a.sac_ax * a.sac_ay, rel=1e-3)
    assert study.truth["mass_volume_ml"] == pytest.approx(
        4 / 3 * math.pi * a.mass_ax * a.mass_ay * a.mass_az / 1000
    )


@pytest.mark.parametrize("grade", ["2", "3"])
def test_compressed_cord_diameter_matches_closed_form(phantom_study, grade):
    study = phantom_study(grade, 0)
    a, t = study.anatomy, study.truth
    # At the worst section (z = 0) the cord runs from the mass tip to its posterior edge,
    # which stays put in grade 2 and reaches the posterior sac wall in grade 3.
    back = a.cord_posterior_y if grade == "2" else a.sac_ay
    assert t["worst_section_z_mm"] == pytest.approx(0.0, abs=0.5)
    assert t["cord_ap_min_mm"] == pytest.approx(back - a.mass_tip_y, abs=0.02)
    assert t["mscc_percent"] == pytest.approx(
        100 * (1 - (back - a.mass_tip_y) / (2 * a.cord_ay)), abs=0.5
    )


def test_grades_are_ordered_by_severity(phantom_study):
    truths = {g: phantom_study(g, 0).truth for g in GRADES}
    assert (
        truths["0"]["mass_cord_min_distance_mm"]
        > truths["1a"]["mass_cord_min_distance_mm"]
        > truths["1b"]["mass_cord_min_distance_mm"]
        > 1.0
    )
    for g in ("1c", "2", "3"):
        assert truths[g]["mass_cord_min_distance_mm"] == 0.0
    assert truths["0"]["canal_compromise_percent"] == pytest.approx(0.0, abs=0.1)
    assert truths["1a"]["canal_compromise_percent"] == pytest.approx(0.0, abs=0.1)
    assert truths["1b"]["canal_compromise_percent"] > 5.0
    assert truths["1c"]["cord_csa_ratio"] == pytest.approx(1.0, abs=0.01)
    assert 20.0 < truths["2"]["mscc_percent"] < 45.0
    assert truths["3"]["mscc_percent"] > 50.0
    assert truths["2"]["csf_area_at_worst_mm2"] > 20.0  # CSF visible around the cord
    assert truths["3"]["csf_area_at_worst_mm2"] == pytest.approx(0.0, abs=0.5)  # none left


@pytest.mark.parametrize(
    ("grade", "touches", "avoids"),
    [
        ("0", {LABEL_BONE}, {0, LABEL_CSF, LABEL_CORD}),  # bone only: enclosed by vertebra
        ("1a", {0}, {LABEL_CSF, LABEL_CORD}),  # epidural, sac not reached
        ("1b", {LABEL_CSF}, {LABEL_CORD}),  # sac indented, cord not reached
        ("1c", {LABEL_CSF, LABEL_CORD}, set()),
        ("3", {LABEL_CORD}, set()),
    ],
)
def test_labelmap_contacts_follow_the_grade(phantom_study, grade, touches, avoids):
    labels = sitk.GetArrayFromImage(phantom_study(grade, 0).labels)
    around = _neighbours(labels == LABEL_MASS, labels)
    assert touches <= around
    assert not (avoids & around)


@pytest.mark.parametrize("grade", ["1a", "3"])
def test_partial_volume_on_boundary_voxels_equals_full_supersampling(grade):
    """The images' partial volume is subsampled only next to tissue changes; on the CT grid
    (1.5 mm slices, thin CSF slivers at grade 3) that equals subsampling every voxel."""
    anatomy, params = make_anatomy(grade, 1)
    pose = imaging.make_pose(params)
    centre = np.asarray(pose.mri_to_ct.TransformPoint(tuple(map(float, pose.origin_lps))))
    grid = Grid.centred(centre, size=(64, 64, 40), spacing=(0.8, 0.8, 1.5))
    per_axis = imaging.CT_SUBSAMPLES
    offsets = [tuple(o) for o in imaging.subvoxel_offsets(per_axis)]
    every = imaging.tissue_on_grid(anatomy, grid, pose.anatomy_from_ct, offsets)
    full = CT_HU[every].mean(axis=0)
    centres = imaging.tissue_on_grid(anatomy, grid, pose.anatomy_from_ct, [(0.0, 0.0, 0.0)])[0]
    fast = imaging.partial_volume_mean(
        anatomy, grid, pose.anatomy_from_ct, centres, CT_HU, per_axis
    )
    mixed = np.count_nonzero(np.ptp(every, axis=0))
    assert mixed > 1000  # the grid crosses many tissue boundaries
    np.testing.assert_allclose(fast, full, atol=1e-9)


def test_ct_and_pet_sit_where_the_true_transform_says(phantom_study):
    study = phantom_study("2", 2)
    labels = sitk.GetArrayFromImage(study.labels)
    ct_on_mri = sitk.GetArrayFromImage(
        sitk.Resample(study.ct, study.labels, study.mri_to_ct, sitk.sitkLinear, -1000)
    )
    pet_on_mri = sitk.GetArrayFromImage(
        sitk.Resample(study.pet_suv, study.labels, study.mri_to_ct, sitk.sitkLinear, 0)
    )

    # Through the true transform, CT bone (HU > 150) overlaps the bone label and water sits
    # on the CSF label; the identity transform misplaces both (the check can fail).
    def bone_dice(ct):
        a, b = ct > 150, labels == LABEL_BONE
        return 2 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))

    ct_identity = sitk.GetArrayFromImage(
        sitk.Resample(study.ct, study.labels, sitk.Transform(), sitk.sitkLinear, -1000)
    )
    assert bone_dice(ct_on_mri) > 0.85
    assert bone_dice(ct_identity) < bone_dice(ct_on_mri) - 0.2
    assert abs(np.median(ct_on_mri[labels == LABEL_CSF])) < 30
    # The PET is 6 mm FWHM blurred: the mass's median SUV stays well above the marrow's 1.6.
    assert np.median(pet_on_mri[labels == LABEL_MASS]) > 3.0


def test_written_study_is_complete_and_pet_dicom_encodes_the_suv_map(phantom_dir):
    out = phantom_dir("2", 0)
    truth = json.loads((out / "truth.json").read_text(encoding="utf-8"))
    for name in truth["files"].values():
        assert (out / name).exists()
    t = sitk.ReadTransform(str(out / "mri_to_ct.tfm"))
    p = (1.0, 2.0, 3.0)
    expected = (
        np.asarray(truth["transform"]["matrix"]) @ (np.asarray(p) - truth["transform"]["center"])
        + np.asarray(truth["transform"]["center"])
        + truth["transform"]["translation"]
    )
    assert np.allclose(t.TransformPoint(p), expected, atol=1e-6)

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(out / "pet_dicom")))
    bq_ml = reader.Execute()
    suv = sitk.ReadImage(str(out / "pet_suv.nii.gz"))
    assert bq_ml.GetSize() == suv.GetSize()
    assert np.allclose(bq_ml.GetOrigin(), suv.GetOrigin(), atol=1e-4)
    recovered = sitk.GetArrayFromImage(bq_ml) * truth["pet"]["suvbw_factor_g_per_bq"]
    reference = sitk.GetArrayFromImage(suv)
    mask = reference > 0.05
    assert np.max(np.abs(recovered[mask] / reference[mask] - 1)) < 1e-5  # float32 storage only


def test_phantom_command_refuses_a_folder_that_is_not_a_phantom(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("precious")
    assert main(["phantom", "--out", str(tmp_path), "--grade", "1a"]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path) in err and "not written by mescc" in err
    assert (tmp_path / "mine.txt").read_text(encoding="utf-8") == "precious"
    assert main(["phantom", "--out", str(tmp_path / "new"), "--grade", "4"]) == 2


def test_mescc_suv_recovers_the_phantom_suv_map(phantom_dir, tmp_path):
    out = phantom_dir("2", 0)
    assert main(["suv", str(out / "pet_dicom"), "--out", str(tmp_path / "suv.nii.gz")]) == 0
    suv = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "suv.nii.gz")))
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "pet_suv.nii.gz")))
    mask = truth > 0.05  # relative error is meaningless at zero activity
    assert np.max(np.abs(suv[mask] / truth[mask] - 1.0)) < 1e-3  # the bound
