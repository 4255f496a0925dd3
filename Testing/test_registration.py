"""Rigid PET-CT -> MRI registration against known transforms.

Real data: the T2 of Spinal Cord Toolbox's ``sct_errsm30`` (60x55x52, 1 mm; MIT licence, see
``../shared/data/MANIFEST.md``) moved through known random rigid transforms (up to 10 deg
and 15 mm), as is and contrast-changed. Synthetic data: the project phantom (CT in its own
scanner frame, true ``mri_to_ct``).

Pass criterion of the issue: TRE (mean over the fixed foreground) below 1 mm and below half
a voxel of the coarser image, in at least 95 % of 20 random perturbations.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import SimpleITK as sitk
from perturbations import contrast_changed, moved_copy, random_rigid

from MESCCAnalyzerLib import geometry
from MESCCAnalyzerLib import registration as reg
from MESCCAnalyzerLib.errors import Cancelled, ComputationError, InputError
from MESCCAnalyzerLib.phantom import make_phantom
from MESCCAnalyzerLib.registration.pyramid import smooth

N_PERTURBATIONS = 20


@pytest.fixture(scope="session")
def t2(shared_data):
    return sitk.ReadImage(str(shared_data / "sct_errsm30" / "t2.nii.gz"))


@pytest.fixture(scope="session")
def t2_foreground_points(t2):
    """Voxel centres of the T2's foreground (intensity > 50, about the 40th percentile)."""
    return reg.mask_points_lps(sitk.Cast(t2 > 50, sitk.sitkUInt8), max_points=20000)


@pytest.fixture(scope="session")
def a_phantom():
    return make_phantom(grade="2", seed=0)


@pytest.fixture(scope="session")
def phantom_result(a_phantom):
    """The phantom's CT registered to its T2 with the defaults (shared by several tests)."""
    return reg.register(a_phantom.t2, a_phantom.ct)


@pytest.fixture(scope="session")
def phantom_label_points(a_phantom):
    return reg.mask_points_lps(sitk.Cast(a_phantom.labels > 0, sitk.sitkUInt8), max_points=20000)


def threshold_mm(fixed: sitk.Image, moving: sitk.Image) -> float:
    """The issue's bound: below 1 mm and below half a voxel of the coarser image."""
    return min(1.0, 0.5 * max(geometry.voxel_size_mm(fixed), geometry.voxel_size_mm(moving)))


def run_perturbations(fixed, source, points, *, seed, spacing_mm=None):
    rng = np.random.default_rng(seed)
    centre = geometry.index_to_lps(fixed, (np.array(fixed.GetSize())[None, :] - 1) / 2.0)[0]
    tres, bounds = [], []
    for _ in range(N_PERTURBATIONS):
        truth = random_rigid(rng, max_angle_deg=10.0, max_shift_mm=15.0, center_lps=centre)
        moving = moved_copy(source, truth, spacing_mm=spacing_mm, pad_mm=5.0)
        result = reg.register(fixed, moving)
        tres.append(reg.tre_mm(result.transform, truth, points))
        bounds.append(threshold_mm(fixed, moving))
    return np.array(tres), np.array(bounds)


def test_twenty_random_perturbations_of_the_real_t2_register_within_half_a_voxel(
    t2, t2_foreground_points
):
    tres, bounds = run_perturbations(t2, t2, t2_foreground_points, seed=1)
    # Acceptance: >= 95 % (19 of 20) below min(1 mm, half a 1 mm voxel) = 0.5 mm.
    assert np.mean(tres < bounds) >= 0.95, tres
    # Same image, same voxel size: measured 0.004-0.010 mm (median 0.006); 0.1 mm leaves room for the
    # random sampling while still catching a biased optimiser.
    assert np.median(tres) < 0.1, tres


def test_twenty_random_perturbations_of_a_contrast_changed_copy_register_within_half_a_voxel(
    t2, t2_foreground_points
):
    # Inverted non-linear contrast, noise, and 1.3 mm voxels on the moving side.
    tres, bounds = run_perturbations(
        t2,
        contrast_changed(t2, seed=2),
        t2_foreground_points,
        seed=3,
        spacing_mm=(1.3, 1.3, 1.3),
    )
    # Bound: min(1 mm, half of the coarser 1.3 mm voxel) = 0.65 mm, in >= 19 of 20.
    assert np.all(bounds == pytest.approx(0.65))
    assert np.mean(tres < bounds) >= 0.95, tres
    # Measured 0.013-0.015 mm (median 0.014); 0.1 mm still catches a biased optimiser.
    assert np.median(tres) < 0.1, tres


def test_a_smaller_fixed_field_of_view_still_registers(t2, t2_foreground_points):
    # The MRI covers only the upper 60 % of the moving image along its third axis, so the
    # geometric centres of the two images differ by ~10 mm (the trap seen on real pairs).
    fixed = t2[:, :, 20:]
    points = reg.mask_points_lps(sitk.Cast(fixed > 50, sitk.sitkUInt8))
    centre = geometry.index_to_lps(t2, (np.array(t2.GetSize())[None, :] - 1) / 2.0)[0]
    truth = random_rigid(
        np.random.default_rng(11), max_angle_deg=10.0, max_shift_mm=15.0, center_lps=centre
    )
    moving = moved_copy(
        contrast_changed(t2, seed=4), truth, spacing_mm=(1.3, 1.3, 1.3), pad_mm=20.0
    )
    result = reg.register(fixed, moving)
    assert reg.tre_mm(result.transform, truth, points) < threshold_mm(fixed, moving)


def test_the_phantom_ct_registers_to_its_t2_below_half_a_voxel(
    a_phantom, phantom_result, phantom_label_points
):
    result = phantom_result
    tre = reg.tre_mm(result.transform, a_phantom.mri_to_ct, phantom_label_points)
    # MRI voxel 0.7x0.7x2.0 (cube edge 0.99 mm) is the coarser: bound 0.497 mm; measured 0.026 mm (seed 0).
    assert tre < threshold_mm(a_phantom.t2, a_phantom.ct)
    assert threshold_mm(a_phantom.t2, a_phantom.ct) == pytest.approx(0.497, abs=0.005)
    assert result.report()["final_metric_value"] < -0.1  # real structure shared (MI > 0.1 nat)


def test_a_fixed_mask_around_the_lesion_level_registers_the_t1_as_well(
    a_phantom, phantom_label_points
):
    # A box around the spine at the lesion level (49 x 56 x 60 mm), as a user would draw it.
    mask = sitk.Image(a_phantom.labels.GetSize(), sitk.sitkUInt8)
    mask.CopyInformation(a_phantom.labels)
    mask[20:90, 15:95, 10:40] = 1
    result = reg.register(a_phantom.t1, a_phantom.ct, fixed_mask=mask)
    assert reg.tre_mm(result.transform, a_phantom.mri_to_ct, phantom_label_points) < threshold_mm(
        a_phantom.t1, a_phantom.ct
    )
    # The mean displacement over the mask is that of the true transform there (to the TRE).
    true_disp = np.mean(
        np.linalg.norm(
            reg.transform_points(a_phantom.mri_to_ct, phantom_label_points) - phantom_label_points,
            axis=1,
        )
    )
    assert result.mean_displacement_mm == pytest.approx(true_disp, abs=0.5)


def test_the_result_maps_an_mri_point_to_the_same_anatomy_in_the_ct(
    a_phantom, phantom_result, phantom_label_points
):
    """Direction convention: T(p_mri) is the CT point showing the same anatomy as p_mri."""
    result = phantom_result
    p_mri = phantom_label_points[:2000]
    q_ct = reg.transform_points(result.transform, p_mri)
    u_from_mri = a_phantom.pose.anatomy_from_mri(p_mri)
    u_from_ct = a_phantom.pose.anatomy_from_ct(q_ct)
    error = np.linalg.norm(u_from_mri - u_from_ct, axis=1)
    assert error.mean() < 0.5  # same bound as the TRE test above (half the MRI voxel)
    # The inverse direction is wrong by the size of the true motion (several mm).
    q_wrong = reg.transform_points(result.transform.GetInverse(), p_mri)
    assert np.linalg.norm(u_from_mri - a_phantom.pose.anatomy_from_ct(q_wrong), axis=1).mean() > 2.0


def test_a_ct_shifted_10_mm_to_the_left_gives_a_transform_adding_10_mm_in_x(t2):
    truth = sitk.TranslationTransform(3, (10.0, 0.0, 0.0))
    moving = moved_copy(contrast_changed(t2, seed=5), truth)
    result = reg.register(t2, moving, init="geometry")
    p = np.array([[0.0, 0.0, 0.0], [20.0, -10.0, 5.0]])
    # 0.2 mm: the contrast-changed same-grid case registers to ~0.1 mm.
    np.testing.assert_allclose(
        reg.transform_points(result.transform, p) - p, [[10, 0, 0], [10, 0, 0]], atol=0.2
    )
    # Resampling the moving image through the result brings it back onto the T2.
    back = reg.resample_onto(moving, t2, result.transform)
    a = sitk.GetArrayFromImage(back)[5:-5, 5:-5, 5:-5].ravel()
    b = sitk.GetArrayFromImage(contrast_changed(t2, seed=5))[5:-5, 5:-5, 5:-5].ravel()
    # Same contrast-changed volume up to interpolation: correlation close to 1 (0.99 needs < 0.3 mm).
    assert np.corrcoef(a, b)[0, 1] > 0.99


def test_the_written_transform_reads_back_as_the_same_mapping(
    phantom_result, tmp_path, phantom_label_points
):
    result = phantom_result
    path = tmp_path / "t.tfm"
    sitk.WriteTransform(result.transform, str(path))
    back = sitk.ReadTransform(str(path))
    # .tfm stores doubles as %.17g text: the mapping survives to well below a micrometre.
    assert reg.tre_mm(back, result.transform, phantom_label_points) < 1e-6


def test_resampling_a_labelmap_keeps_its_labels_exactly(a_phantom):
    shifted = reg.resample_onto(
        a_phantom.labels,
        a_phantom.labels,
        sitk.TranslationTransform(3, (0.0, 0.0, 0.0)),
        labelmap=True,
    )
    assert np.array_equal(
        sitk.GetArrayViewFromImage(shifted), sitk.GetArrayViewFromImage(a_phantom.labels)
    )
    onto_ct = reg.resample_onto(
        a_phantom.labels, a_phantom.ct, a_phantom.mri_to_ct.GetInverse(), labelmap=True
    )
    # nearest neighbour: no new label values appear
    assert set(np.unique(sitk.GetArrayViewFromImage(onto_ct))) <= {0, 1, 2, 3, 4}


def test_landmarks_initialise_frames_that_start_150_mm_apart(t2, t2_foreground_points):
    centre = geometry.index_to_lps(t2, (np.array(t2.GetSize())[None, :] - 1) / 2.0)[0]
    truth = sitk.Euler3DTransform(tuple(map(float, centre)), 0.3, -0.2, 0.4, (150.0, -40.0, 60.0))
    moving = moved_copy(contrast_changed(t2, seed=6), truth, spacing_mm=(1.3, 1.3, 1.3))
    # With the scanners' frames as they are, the images do not overlap: a clear error.
    with pytest.raises(ComputationError, match="overlap"):
        reg.register(t2, moving, init="geometry")
    # Four landmarks clicked with ~2 mm error on each image are enough to start.
    rng = np.random.default_rng(7)
    fixed_pts = t2_foreground_points[rng.choice(len(t2_foreground_points), 4, replace=False)]
    moving_pts = reg.transform_points(truth, fixed_pts) + rng.normal(0.0, 2.0, (4, 3))
    result = reg.register(t2, moving, landmarks=(fixed_pts, moving_pts))
    assert result.init_mode == "landmarks"
    assert (
        reg.tre_mm(result.initial_transform, truth, t2_foreground_points) > 1.0
    )  # the start is rough
    assert reg.tre_mm(result.transform, truth, t2_foreground_points) < threshold_mm(t2, moving)


def test_the_deformable_refinement_stays_on_a_rigid_truth(a_phantom, phantom_label_points):
    result = reg.register(a_phantom.t2, a_phantom.ct, deformable=True)
    assert result.transform.GetName() == "CompositeTransform"
    assert len(result.levels) >= 3 and result.levels[-1].stop_condition.startswith("B-spline")
    # The truth is rigid: the refinement may not wander more than the rigid bound (0.5 mm).
    assert reg.tre_mm(result.transform, a_phantom.mri_to_ct, phantom_label_points) < 0.5


def test_an_image_with_no_variation_is_rejected(t2):
    flat = sitk.Image(t2.GetSize(), sitk.sitkFloat32) + 7.0
    flat.CopyInformation(t2)
    with pytest.raises(InputError, match="no intensity variation"):
        reg.register(t2, flat)


def test_an_empty_mask_is_rejected(t2):
    empty = sitk.Image(t2.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(t2)
    with pytest.raises(InputError, match="mask is empty"):
        reg.register(t2, t2, fixed_mask=empty)


def test_a_tiny_mask_is_rejected_for_too_few_samples(t2):
    tiny = sitk.Image(t2.GetSize(), sitk.sitkUInt8)
    tiny.CopyInformation(t2)
    tiny[30:35, 25:30, 25:30] = 1  # 125 voxels: far under the thousand samples MI needs
    with pytest.raises(InputError, match="well over a thousand"):
        reg.register(t2, t2, fixed_mask=tiny)


def test_an_unrelated_image_is_not_registered_silently(t2):
    noise = sitk.GetImageFromArray(
        np.random.default_rng(8)
        .normal(100.0, 20.0, sitk.GetArrayViewFromImage(t2).shape)
        .astype(np.float32)
    )
    noise.CopyInformation(t2)
    with pytest.raises(ComputationError, match="mutual information|converge"):
        reg.register(t2, noise)


# --------------------------------------------------------------------------- convergence from hard starts


@pytest.fixture(scope="session")
def t1(shared_data):
    return sitk.ReadImage(str(shared_data / "sct_errsm30" / "t1w.nii.gz"))


@pytest.fixture(scope="session")
def t2_cord_points(shared_data):
    """Voxel centres of the T2's manual cord mask (the region where 1 mm matters most)."""
    mask = sitk.ReadImage(str(shared_data / "sct_errsm30" / "t2_seg-manual.nii.gz"))
    return reg.mask_points_lps(mask)


@pytest.fixture(scope="session")
def t1_on_t2_reference(t2, t1, t2_foreground_points, t2_cord_points):
    """Where the registration of the unperturbed real T1 to the T2 maps the T2's foreground and
    cord points: the point-wise mean over 3 sampler seeds.

    The two share world space only to about 1 mm (MANIFEST); their registration lies 1.6 mm
    from identity, with a 1 deg turn, so identity is no 1 mm truth. One run moves by up to
    0.3-0.5 mm (mean) with the sampler seed on this pair (shallow optimum along the cord): the
    mean of three is the reference a perturbed start has to come back to.
    """
    runs = [
        reg.register(t2, t1, settings=reg.RegistrationSettings(seed=20261126 + k)).transform
        for k in range(3)
    ]
    return [
        np.mean([reg.transform_points(t, p) for t in runs], axis=0)
        for p in (t2_foreground_points, t2_cord_points)
    ]


def hard_perturbations(t2):
    """The turn by 9.9 deg and shift by 5.9 mm that stopped on the 100-iteration cap (issue 18,
    reconstructed: refused before the translation search), then 7 random starts at the limits
    of the benchmark (10 deg about a random axis, 15 mm in a random direction)."""
    centre = geometry.index_to_lps(t2, (np.array(t2.GetSize())[None, :] - 1) / 2.0)[0]
    rng = np.random.default_rng(1812)
    cases = [((0.2563, -0.8409, -0.4767), 9.9, (5.838, 0.773, -0.353))]
    for _ in range(7):
        axis, shift = rng.normal(size=3), rng.normal(size=3)
        cases.append((axis / np.linalg.norm(axis), 10.0, 15.0 * shift / np.linalg.norm(shift)))
    out = []
    for axis, angle, shift in cases:
        versor = sitk.VersorRigid3DTransform()
        versor.SetCenter(tuple(map(float, centre)))
        versor.SetRotation(tuple(map(float, axis / np.linalg.norm(axis))), math.radians(angle))
        versor.SetTranslation(tuple(map(float, shift)))
        out.append(versor)
    return out


def test_hard_random_starts_of_the_real_t1_register_to_the_t2_within_1_mm(
    t2, t1, t2_foreground_points, t2_cord_points, t1_on_t2_reference
):
    foreground_ref, cord_ref = t1_on_t2_reference
    for perturbation in hard_perturbations(t2):
        # the real T1 moved on its own grid: M(P(y)) = T1(y), so the truth is P after the reference
        moving = moved_copy(t1, perturbation)
        result = reg.register(t2, moving)
        error_mm = np.linalg.norm(
            reg.transform_points(result.transform, t2_foreground_points)
            - reg.transform_points(perturbation, foreground_ref),
            axis=1,
        )
        cord_error_mm = np.linalg.norm(
            reg.transform_points(result.transform, t2_cord_points)
            - reg.transform_points(perturbation, cord_ref),
            axis=1,
        )
        # The bound: within 1 mm, as a mean over the foreground and at every cord voxel.
        # Measured (benchmarks/bench_convergence.py, 100 starts): mean 0.34 mm median, 0.49 max;
        # the seed-to-seed spread of the reference itself is 0.3 mm.
        assert error_mm.mean() < 1.0, (perturbation.GetParameters(), error_mm.mean())
        assert cord_error_mm.max() < 1.0, (perturbation.GetParameters(), cord_error_mm.max())


def test_the_real_t2_against_smoothed_noise_is_refused_from_any_start(t2):
    # Noise smoothed to anatomical scale (3 mm) has blobs and edges the search can latch on to,
    # but no structure shared with the T2: the registration must say so, not return a transform.
    rng = np.random.default_rng(18)
    noise = sitk.GetImageFromArray(
        rng.normal(0.0, 1.0, sitk.GetArrayViewFromImage(t2).shape).astype(np.float32)
    )
    noise.CopyInformation(t2)
    blobs = sitk.SmoothingRecursiveGaussian(noise, 3.0) * 1000.0 + 500.0
    for init in ("auto", "geometry"):
        with pytest.raises(ComputationError, match="mutual information|converge|overlap"):
            reg.register(t2, blobs, init=init)


def test_the_search_finds_a_pure_translation_far_outside_the_first_step(t2, t2_foreground_points):
    # 20 mm along the cord (more than a vertebra) with the frames' own start: the translation
    # search, not the optimiser's 4 mm steps, has to bring the start into the right basin.
    truth = sitk.TranslationTransform(3, (0.0, 0.0, 20.0))
    moving = moved_copy(contrast_changed(t2, seed=19), truth, pad_mm=5.0)
    result = reg.register(t2, moving, init="geometry")
    assert reg.tre_mm(result.transform, truth, t2_foreground_points) < 0.5  # half a 1 mm voxel


def test_cancel_stops_the_registration(t2):
    with pytest.raises(Cancelled):
        reg.register(t2, t2, cancel=lambda: True)


def test_progress_is_reported_from_zero_to_one(t2):
    fractions = []
    reg.register(t2, t2, init="geometry", progress=lambda f, m: fractions.append(f))
    assert fractions[-1] == 1.0
    assert all(0.0 <= f <= 1.0 for f in fractions)


def test_tre_of_a_3_mm_translation_is_3_mm():
    points = np.random.default_rng(9).uniform(-50, 50, (100, 3))
    assert reg.tre_mm(
        sitk.TranslationTransform(3, (3.0, 0.0, 0.0)), sitk.Transform(), points
    ) == pytest.approx(3.0)
    # a 90 deg rotation about z of the point (10, 0, 0) moves it by 10*sqrt(2)
    rot = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.0, 0.0, np.pi / 2, (0.0, 0.0, 0.0))
    assert reg.tre_mm(rot, sitk.Transform(), np.array([[10.0, 0.0, 0.0]])) == pytest.approx(
        10 * np.sqrt(2)
    )


def test_sample_linear_agrees_with_itk_linear_interpolation_on_an_oblique_grid():
    rng = np.random.default_rng(4)
    image = sitk.GetImageFromArray(rng.normal(100.0, 30.0, (9, 11, 13)).astype(np.float32))
    image.SetSpacing((0.7, 0.9, 2.0))
    image.SetOrigin((-12.0, 30.0, 5.0))
    rotation = sitk.Euler3DTransform((0.0, 0.0, 0.0), 0.3, -0.2, 0.5)
    image.SetDirection(rotation.GetMatrix())
    low, high = geometry.bounds_lps(image)
    points = rng.uniform(low - 3.0, high + 3.0, (2000, 3))
    ours = reg.sample_linear(image, points)
    inside = np.isfinite(ours)
    assert 200 < inside.sum() < 2000  # both kinds of point are exercised
    itk = np.array(
        [image.EvaluateAtPhysicalPoint(tuple(p), sitk.sitkLinear) for p in points[inside]]
    )
    np.testing.assert_allclose(ours[inside], itk, rtol=1e-5, atol=1e-4)
    # outside the voxel-centre box: NaN, never an extrapolated value
    ijk = np.array([image.TransformPhysicalPointToContinuousIndex(tuple(p)) for p in points])
    expected_inside = np.all((ijk >= 0) & (ijk <= np.array(image.GetSize()) - 1), axis=1)
    assert np.array_equal(inside, expected_inside)


def test_smoothing_leaves_out_axes_coarser_than_two_and_a_half_sigma():
    """0.5 mm sigma on 0.5 x 0.5 x 2 mm voxels: in-plane like SimpleITK's Gaussian, none across slices."""
    impulse = np.zeros((7, 15, 15), np.float32)
    impulse[3, 7, 7] = 1000.0
    image = sitk.GetImageFromArray(impulse)
    image.SetSpacing((0.5, 0.5, 2.0))
    smoothed = sitk.GetArrayFromImage(smooth(image, 0.5, 0.4))
    assert np.all(smoothed[[2, 4]] == 0.0)  # slices above and below untouched
    assert smoothed[3].sum() == pytest.approx(1000.0, rel=1e-3)  # mass kept in the slice
    # in plane a Gaussian of one voxel's sigma: neighbours at exp(-d^2 / 2) of the centre
    assert smoothed[3, 7, 8] / smoothed[3, 7, 7] == pytest.approx(np.exp(-0.5), rel=0.01)
    assert smoothed[3, 7, 9] / smoothed[3, 7, 7] == pytest.approx(np.exp(-2.0), rel=0.01)
    # every axis at least 2.5 sigma fine: the same as SimpleITK's recursive Gaussian
    image.SetSpacing((0.5, 0.5, 0.5))
    np.testing.assert_allclose(
        sitk.GetArrayFromImage(smooth(image, 0.5, 0.4)),
        sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, 0.5)),
        atol=1e-3,
    )


# --------------------------------------------------------------------------- the command line


@pytest.fixture(scope="session")
def phantom_files(a_phantom, tmp_path_factory):
    folder = tmp_path_factory.mktemp("phantom_files")
    for name in ("t2", "ct", "labels"):
        sitk.WriteImage(getattr(a_phantom, name), str(folder / f"{name}.nii.gz"))
    sitk.WriteImage(sitk.Cast(a_phantom.pet_suv, sitk.sitkFloat32), str(folder / "pet.nii.gz"))
    return folder


def digest(folder):
    import hashlib

    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_mescc_register_writes_a_transform_report_and_resampled_images(
    phantom_files, a_phantom, phantom_label_points, tmp_path, capsys
):
    from MESCCAnalyzerLib.cli import main

    before = digest(phantom_files)
    out = tmp_path / "out"
    rc = main(
        [
            "-q",
            "register",
            "--fixed", str(phantom_files / "t2.nii.gz"),
            "--moving", str(phantom_files / "ct.nii.gz"),
            "--follow", str(phantom_files / "pet.nii.gz"),
            "--out-transform", str(out / "ct_to_mri.tfm"),
            "--resampled-dir", str(out / "resampled"),
        ]
    )  # fmt: skip
    assert rc == 0
    transform = sitk.ReadTransform(str(out / "ct_to_mri.tfm"))
    assert (
        reg.tre_mm(transform, a_phantom.mri_to_ct, phantom_label_points) < 0.5
    )  # as the core test
    report = json.loads((out / "ct_to_mri.report.json").read_text(encoding="utf-8"))
    assert report["final_metric_value"] < report["initial_metric_value"] < 0
    assert all(n > 0 for n in report["iterations_per_level"])
    # the mean displacement is that of the true transform over the region (~12 mm here)
    assert 5.0 < report["mean_displacement_mm"] < 20.0
    ct_on_mri = sitk.ReadImage(str(out / "resampled" / "ct_registered.nii.gz"))
    pet_on_mri = sitk.ReadImage(str(out / "resampled" / "pet_registered.nii.gz"))
    for image in (ct_on_mri, pet_on_mri):
        assert image.GetSize() == a_phantom.t2.GetSize()
        assert np.allclose(image.GetOrigin(), a_phantom.t2.GetOrigin())
    # bone (label 4) of the MRI labels now lies on CT bone: mean HU well above soft tissue
    labels = sitk.GetArrayViewFromImage(a_phantom.labels)
    assert sitk.GetArrayViewFromImage(ct_on_mri)[labels == 4].mean() > 300
    assert "rotation" in capsys.readouterr().out
    assert digest(phantom_files) == before  # inputs untouched


def run_cli(args):
    from MESCCAnalyzerLib.cli import main

    return main(["-q", "register", *map(str, args)])


def test_mescc_register_refuses_a_flat_image_and_writes_nothing(t2, tmp_path, capsys):
    flat = sitk.Image(t2.GetSize(), sitk.sitkInt16) + 100
    flat.CopyInformation(t2)
    sitk.WriteImage(flat, str(tmp_path / "flat.nii.gz"))
    sitk.WriteImage(t2, str(tmp_path / "t2.nii.gz"))
    out = tmp_path / "out"
    rc = run_cli(
        [
            "--fixed",
            tmp_path / "t2.nii.gz",
            "--moving",
            tmp_path / "flat.nii.gz",
            "--out-transform",
            out / "t.tfm",
        ]
    )
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert "flat.nii.gz" in err and "no intensity variation" in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_mescc_register_refuses_an_empty_mask(t2, tmp_path, capsys):
    empty = sitk.Image(t2.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(t2)
    sitk.WriteImage(empty, str(tmp_path / "mask.nii.gz"))
    sitk.WriteImage(t2, str(tmp_path / "t2.nii.gz"))
    rc = run_cli(
        [
            "--fixed",
            tmp_path / "t2.nii.gz",
            "--moving",
            tmp_path / "t2.nii.gz",
            "--mask-fixed",
            tmp_path / "mask.nii.gz",
            "--out-transform",
            tmp_path / "t.tfm",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "mask.nii.gz" in err and "empty" in err
    assert not (tmp_path / "t.tfm").exists()


def test_mescc_register_refuses_images_that_do_not_overlap(t2, tmp_path, capsys):
    far = moved_copy(contrast_changed(t2, seed=12), sitk.TranslationTransform(3, (300.0, 0.0, 0.0)))
    sitk.WriteImage(t2, str(tmp_path / "t2.nii.gz"))
    sitk.WriteImage(far, str(tmp_path / "far.nii.gz"))
    rc = run_cli(
        [
            "--fixed",
            tmp_path / "t2.nii.gz",
            "--moving",
            tmp_path / "far.nii.gz",
            "--init",
            "geometry",
            "--out-transform",
            tmp_path / "t.tfm",
        ]
    )
    assert rc == 2 and "overlap" in capsys.readouterr().err
    assert not (tmp_path / "t.tfm").exists()


def test_mescc_register_accepts_landmarks_from_a_slicer_file(t2, t2_foreground_points, tmp_path):
    from MESCCAnalyzerLib.io.markups import write_markups_points

    centre = geometry.index_to_lps(t2, (np.array(t2.GetSize())[None, :] - 1) / 2.0)[0]
    truth = sitk.Euler3DTransform(tuple(map(float, centre)), -0.2, 0.3, 0.1, (200.0, 50.0, -80.0))
    sitk.WriteImage(t2, str(tmp_path / "t2.nii.gz"))
    sitk.WriteImage(
        moved_copy(contrast_changed(t2, seed=13), truth), str(tmp_path / "moved.nii.gz")
    )
    fixed_pts = t2_foreground_points[[0, 5000, 10000, 15000]]
    moving_pts = reg.transform_points(truth, fixed_pts)
    landmarks = write_markups_points(
        tmp_path / "lm.mrk.json",
        [
            [(f"{i}", p) for i, p in enumerate(fixed_pts)],
            [(f"{i}", p) for i, p in enumerate(moving_pts)],
        ],
        names=["fixed", "moving"],
        coordinate_system="RAS",
    )
    rc = run_cli(
        [
            "--fixed",
            tmp_path / "t2.nii.gz",
            "--moving",
            tmp_path / "moved.nii.gz",
            "--init",
            landmarks,
            "--out-transform",
            tmp_path / "t.tfm",
        ]
    )
    assert rc == 0
    assert (
        reg.tre_mm(sitk.ReadTransform(str(tmp_path / "t.tfm")), truth, t2_foreground_points) < 0.5
    )  # 1 mm voxels


def test_mescc_register_refuses_a_follower_outside_the_ct_frame(t2, tmp_path, capsys):
    sitk.WriteImage(t2, str(tmp_path / "t2.nii.gz"))
    elsewhere = sitk.Image(t2)
    elsewhere.SetOrigin((500.0, 500.0, 500.0))
    sitk.WriteImage(elsewhere, str(tmp_path / "pet.nii.gz"))
    rc = run_cli(
        [
            "--fixed",
            tmp_path / "t2.nii.gz",
            "--moving",
            tmp_path / "t2.nii.gz",
            "--follow",
            tmp_path / "pet.nii.gz",
            "--out-transform",
            tmp_path / "t.tfm",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "pet.nii.gz" in err and "frame" in err


def test_mescc_register_never_writes_over_an_input(t2, tmp_path, capsys):
    sitk.WriteImage(t2, str(tmp_path / "t2.nii.gz"))
    rc = run_cli(
        [
            "--fixed",
            tmp_path / "t2.nii.gz",
            "--moving",
            tmp_path / "t2.nii.gz",
            "--out-transform",
            tmp_path / "t.tfm",
            "--report",
            tmp_path / "t2.nii.gz",
        ]
    )
    assert rc == 2 and "overwrite an input" in capsys.readouterr().err
