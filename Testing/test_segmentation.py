"""Seeded segmentation (grow from seeds) against the phantom's truth and a real manual cord mask."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.segmentation.grow import SeedGrower, dice, grow_from_seeds
from MESCCAnalyzerLib.segmentation.seeds import add_stroke, axial_axis_kji, strokes_from_labels

GRADES = ("1a", "1b", "1c", "2", "3")
STROKE_SEEDS = range(5)


@pytest.fixture(scope="session")
def phantoms(phantom_channels):
    """T2, PET resampled onto the T2 grid, truth labels: one phantom per grade (seed 0)."""
    return {grade: phantom_channels(grade, 0) for grade in GRADES}


@pytest.fixture(scope="session")
def pet_voxel_mm(phantom_study):
    """The phantom PET's own voxel size, which the grower is told (as the pipeline does)."""
    return max(phantom_study("2", 0).pet_suv.GetSpacing())


@pytest.fixture(scope="session")
def battery(phantoms, pet_voxel_mm):
    """Dice of cord, CSF, mass for each grade and stroke seed (T2 + PET)."""
    rows = {}
    for grade, (t2, pet, labels) in phantoms.items():
        truth = sitk.GetArrayFromImage(labels)
        for rs in STROKE_SEEDS:
            seeds = strokes_from_labels(labels, rng_seed=rs)
            result = sitk.GetArrayFromImage(
                grow_from_seeds([t2, pet], seeds, resolution_mm=[0.0, pet_voxel_mm])
            )
            rows[grade, rs] = {label: dice(result == label, truth == label) for label in (1, 2, 3)}
    return rows


def test_strokes_are_few_and_inside_their_structure(phantoms):
    _, _, labels = phantoms["2"]
    truth = sitk.GetArrayFromImage(labels)
    seeds = sitk.GetArrayFromImage(strokes_from_labels(labels, rng_seed=3))
    for label in (1, 2, 3, 4):
        painted = seeds == label
        # the budget: at most 2 % of the structure's voxels
        assert 0 < painted.sum() <= 0.02 * (truth == label).sum()
        # strokes are placed from the truth: every stroke voxel lies in its structure
        assert np.all(truth[painted] == label)
    # "other" strokes never touch a structure
    assert np.all(truth[seeds == 5] == 0)
    # deterministic for a given rng seed
    again = sitk.GetArrayFromImage(strokes_from_labels(labels, rng_seed=3))
    assert np.array_equal(seeds, again)


@pytest.mark.parametrize("grade", GRADES)
def test_phantom_dice_per_grade(battery, grade):
    rows = [battery[grade, rs] for rs in STROKE_SEEDS]
    worst = {label: min(r[label] for r in rows) for label in (1, 2, 3)}
    # Issue 4's thresholds, for every one of the five stroke draws (T2 + PET): mass >= 0.90,
    # cord >= 0.90, CSF >= 0.85. Measured worst cases (shortest paths, told the PET's 3 mm
    # voxels, the mass's release): mass 0.962 (1c), cord 0.978 (3), CSF 0.963 (3); see
    # docs/validation.md.
    assert worst[1] >= 0.90
    assert worst[2] >= 0.85
    assert worst[3] >= 0.90


def test_real_t2_cord_from_three_axial_slices(shared_data):
    """SCT errsm30 T2 (sagittal-stored, 1 mm) with its manual cord mask."""
    folder = shared_data / "sct_errsm30"
    t2 = sitk.ReadImage(str(folder / "t2.nii.gz"), sitk.sitkFloat32)
    manual = sitk.ReadImage(str(folder / "t2_seg-manual.nii.gz"))
    axis = axial_axis_kji(t2)
    assert axis == 1  # the direction matrix puts the superior axis on the image's j axis
    cord = sitk.GetArrayFromImage(manual) > 0
    image = sitk.GetArrayFromImage(t2)
    # Stroke guide as a reader sees it: the cord (manual mask); CSF = the bright ring 1-3 mm
    # around it (brighter than halfway between cord and the ring's 90th percentile); other
    # tissue = farther than 8 mm from the cord.
    outside = sitk.GetArrayFromImage(
        sitk.SignedMaurerDistanceMap(
            manual > 0, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
        )
    )
    ring = (outside > 0.5) & (outside <= 3.0)
    bright = image > 0.5 * (image[cord].mean() + np.percentile(image[ring], 90))
    guide = np.zeros(cord.shape, dtype=np.uint8)
    guide[cord] = 1
    guide[ring & bright] = 2
    guide[outside > 8.0] = 9  # not a structure: strokes_from_labels leaves it to "other"
    guide_image = sitk.GetImageFromArray(guide)
    guide_image.CopyInformation(t2)
    extent = np.flatnonzero(cord.any(axis=(0, 2)))
    slices = [int(extent[int(q * (extent.size - 1))]) for q in (0.2, 0.5, 0.8)]
    scores = []
    for rs in range(5):
        seeds = strokes_from_labels(
            guide_image,
            rng_seed=rs,
            structures=(1, 2),
            slice_indices=slices,
            strokes_per_slice=4,
            other_strokes_per_slice=8,
            other_near_mm=12.0,
            other_within_mm=20.0,
            near_to=(1, 2),
            inset_mm=1.0,
            other_inset_mm=8.0,
            max_fraction=0.05,
        )
        s = sitk.GetArrayFromImage(seeds)
        assert set(np.unique(np.nonzero(s)[axis]).tolist()) == set(slices)  # three axial slices
        result = sitk.GetArrayFromImage(grow_from_seeds([t2], seeds))
        scores.append(dice(result == 1, cord))
    # Issue 4: cord Dice >= 0.85 against the manual segmentation, for each of five stroke draws
    # (measured 0.915-0.938; the watershed it replaced: 0.856-0.900)
    assert min(scores) >= 0.85


@pytest.mark.parametrize("label", [1, 3, 4])
def test_an_update_resolves_only_around_the_new_stroke(phantoms, label):
    t2, pet, labels = phantoms["1c"]
    seeds = strokes_from_labels(labels, rng_seed=0)
    grower = SeedGrower([t2, pet], roi=None)
    grower.grow(seeds)
    region = grower.last_update_voxels
    more = add_stroke(seeds, labels, label, rng_seed=2)
    updated = sitk.GetArrayFromImage(grower.grow(more))
    assert grower.feature_computations == 1  # the denoised channels were not recomputed
    assert grower.last_update_voxels < 0.05 * region  # only what the new stroke wins
    fresh = sitk.GetArrayFromImage(grow_from_seeds([t2, pet], more))
    for value in (1, 2, 3, 4):
        # the update keeps the costs learnt from the first strokes; a fresh run re-learns them
        # with the new stroke, so a few boundary voxels may differ; 0.97 leaves margin
        assert dice(updated == value, fresh == value) >= 0.97


def test_smoothing_keeps_labels_disjoint_and_close(phantoms):
    t2, pet, labels = phantoms["2"]
    seeds = strokes_from_labels(labels, rng_seed=1)
    raw = sitk.GetArrayFromImage(grow_from_seeds([t2, pet], seeds))
    smooth = sitk.GetArrayFromImage(grow_from_seeds([t2, pet], seeds, smoothing_mm=1.0))
    # one label per voxel by construction; a 1 mm Gaussian moves under 10 % of the mass voxels
    assert dice(raw == 3, smooth == 3) >= 0.90


def test_roi_limits_the_result(phantoms):
    t2, pet, labels = phantoms["2"]
    seeds = strokes_from_labels(labels, rng_seed=0)
    roi_arr = np.zeros(sitk.GetArrayFromImage(t2).shape, dtype=np.uint8)
    roi_arr[10:46, 20:90, 20:90] = 1
    roi = sitk.GetImageFromArray(roi_arr)
    roi.CopyInformation(t2)
    result = sitk.GetArrayFromImage(grow_from_seeds([t2, pet], seeds, roi=roi))
    assert not np.any(result[roi_arr == 0])  # nothing outside the region
    truth = sitk.GetArrayFromImage(labels)
    inside = roi_arr == 1
    assert dice(result[inside] == 1, truth[inside] == 1) >= 0.90  # same accuracy inside


# ---------------------------------------------------------------------------------------
# Bad input through the command line: one line, exit status 2, nothing written
# ---------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def small_case(tmp_path_factory, phantoms):
    folder = tmp_path_factory.mktemp("segcase")
    t2, _, labels = phantoms["2"]
    sitk.WriteImage(t2, str(folder / "t2.nii.gz"))
    seeds = strokes_from_labels(labels, rng_seed=0)
    sitk.WriteImage(seeds, str(folder / "seeds.nii.gz"))
    one = sitk.GetArrayFromImage(seeds)
    one[one != 1] = 0
    single = sitk.GetImageFromArray(one)
    single.CopyInformation(seeds)
    sitk.WriteImage(single, str(folder / "one_label.nii.gz"))
    other_grid = sitk.Shrink(seeds, [2, 2, 1])
    sitk.WriteImage(other_grid, str(folder / "other_grid.nii.gz"))
    empty = sitk.Image(t2.GetSize(), sitk.sitkUInt8)
    empty.CopyInformation(t2)
    sitk.WriteImage(empty, str(folder / "empty_roi.nii.gz"))
    return folder


def _run(folder, *extra):
    out = folder / "out.nii.gz"
    code = main(["segment", "-q", "--image", str(folder / "t2.nii.gz"), "--out", str(out), *extra])
    return code, out


def test_cli_writes_labels_1_to_4(small_case):
    code, out = _run(
        small_case,
        "--seeds",
        str(small_case / "seeds.nii.gz"),
        "--seg-out",
        str(small_case / "o.seg.nrrd"),
    )
    assert code == 0
    values = set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(out)))).tolist())
    assert values == {0, 1, 2, 3, 4}  # "other" (5) is dropped
    out.unlink()
    (small_case / "o.seg.nrrd").unlink()


def test_cli_passes_each_channels_resolution_to_the_grower(small_case, phantoms, pet_voxel_mm):
    t2, pet, _ = phantoms["2"]
    sitk.WriteImage(pet, str(small_case / "pet_on_t2.nii.gz"))
    code, out = _run(
        small_case,
        "--resolution",
        "0",
        "--image",
        str(small_case / "pet_on_t2.nii.gz"),
        "--resolution",
        str(pet_voxel_mm),
        "--seeds",
        str(small_case / "seeds.nii.gz"),
    )
    assert code == 0
    seeds = sitk.ReadImage(str(small_case / "seeds.nii.gz"))
    expected = grow_from_seeds([t2, pet], seeds, resolution_mm=[0.0, pet_voxel_mm])
    without = grow_from_seeds([t2, pet], seeds)
    got = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    assert np.array_equal(got, sitk.GetArrayFromImage(expected))
    assert not np.array_equal(got, sitk.GetArrayFromImage(without))  # the option matters
    out.unlink()


def test_cli_accepts_a_markups_point_list(small_case, tmp_path):
    from MESCCAnalyzerLib.io.markups import write_markups_points

    t2 = sitk.ReadImage(str(small_case / "t2.nii.gz"))
    seeds = sitk.GetArrayFromImage(sitk.ReadImage(str(small_case / "seeds.nii.gz")))
    points = []
    for label, name in ((1, "cord"), (2, "csf"), (3, "3"), (4, "bone"), (5, "other")):
        for k, j, i in np.argwhere(seeds == label):
            points.append(
                (name, np.array(t2.TransformIndexToPhysicalPoint((int(i), int(j), int(k)))))
            )
    path = tmp_path / "seeds.mrk.json"
    write_markups_points(path, points)
    out = tmp_path / "from_points.nii.gz"
    code = main(
        [
            "segment",
            "-q",
            "--image",
            str(small_case / "t2.nii.gz"),
            "--seeds",
            str(path),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    from_points = sitk.GetArrayFromImage(sitk.ReadImage(str(out)))
    from_labelmap = sitk.GetArrayFromImage(
        grow_from_seeds([t2], sitk.ReadImage(str(small_case / "seeds.nii.gz")))
    )
    # every stroke voxel became a point at its centre, so the two seed sets are identical
    assert np.array_equal(from_points, from_labelmap)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (("--seeds", "other_grid.nii.gz"), "not on the first image's grid"),
        (("--seeds", "one_label.nii.gz"), "at least two competing labels"),
        (("--seeds", "seeds.nii.gz", "--roi", "empty_roi.nii.gz"), "region of interest is empty"),
        (("--seeds", "outside.mrk.json"), "lies outside the image"),
        (("--seeds", "missing.nii.gz"), "missing.nii.gz"),
        (
            ("--seeds", "seeds.nii.gz", "--resolution", "0", "--resolution", "4"),
            "--resolution needs one value >= 0 mm per --image (1)",
        ),
        (("--seeds", "seeds.nii.gz", "--resolution", "-1"), "one value >= 0 mm per --image"),
    ],
)
def test_cli_bad_input(small_case, capsys, case, message):
    if "outside.mrk.json" in case:
        from MESCCAnalyzerLib.io.markups import write_markups_points

        write_markups_points(
            small_case / "outside.mrk.json", [("1", (0.0, 0.0, 0.0)), ("5", (500.0, 0.0, 0.0))]
        )
    args = [str(small_case / a) if a.endswith((".gz", ".json")) else a for a in case]
    code, out = _run(small_case, *args)
    err = capsys.readouterr().err
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
