"""Lesions: several metastases measured one by one, named by level; studies without a mass.

The multi-lesion battery: whole-spine phantoms T2-T12 on the clinical T2 grid (0.6 x 0.6 mm
in plane, 3 mm slices), four lesions each at random levels with random grades
(:func:`random_lesions`), measured from the phantom's labels with its VerSe labelmap. Each
lesion's grade, MSCC, volume and levels are compared with the phantom's truth. The T2 is
given too: the cord's outline is measured from its partial volume (from the labels alone a
flattened 2.5 mm cord reads 2.4 or 3.0 mm, whole 0.6 mm voxels: 6 of 40 lesions then missed
MSCC by 5-8 points).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib import LABEL_CORD, LABEL_CSF, LABEL_MASS
from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.measure import lesions as lesion_regions
from MESCCAnalyzerLib.measure.centerline import fit_centerline
from MESCCAnalyzerLib.measure.metrics import LevelSource, compute_metrics, write_metrics
from MESCCAnalyzerLib.phantom.spine import SpineGrids, make_spine_phantom, random_lesions

BATTERY_SEEDS = range(6)  # 6 studies x 4 lesions = 24 lesions
CLINICAL_T2 = SpineGrids(
    mri_spacing_mm=(0.6, 0.6, 3.0), ct_spacing_mm=(2.0, 2.0, 2.0), pet_spacing_mm=(4.0, 4.0, 4.0)
)  # the CT and PET are not used here: coarse, to be quick


def _truth_levels(study, lesion_id: int, min_overlap_mm: float = 0.0) -> list[str]:
    """The levels a true lesion reaches into by more than ``min_overlap_mm``."""
    lesion = next(m for m in study.truth["lesions"] if m["id"] == lesion_id)
    lo, hi = lesion["s_range_mm"]
    return [
        level["name"]
        for level in study.truth["levels"]
        if min(hi, level["s_range_mm"][1]) - max(lo, level["s_range_mm"][0]) > min_overlap_mm
    ]


@pytest.fixture(scope="module")
def battery():
    """(study, result) per case, and one row per lesion comparing it with its truth."""
    cases, rows = [], []
    for seed in BATTERY_SEEDS:
        study = make_spine_phantom(("T2", "T12"), random_lesions(seed), seed, grids=CLINICAL_T2)
        result = compute_metrics(
            study.labels, mri=study.t2, levels=LevelSource(vertebrae=study.vertebrae)
        )
        cases.append((study, result))
        measured = result.metrics["lesions"]
        for truth in study.truth["lesions"]:
            # the measured lesion holding the true one's voxels (ids are both cranial first)
            mine = next((m for m in measured if m["id"] == truth["id"]), None)
            rows.append((seed, truth, mine, study))
    return cases, rows


def test_every_lesion_is_found_once_and_numbered_cranial_first(battery):
    cases, rows = battery
    assert len(rows) >= 20
    for study, result in cases:
        m = result.metrics
        assert m["lesion_count"] == len(study.truth["lesions"]) == 4
        assert [les["id"] for les in m["lesions"]] == [1, 2, 3, 4]
        starts = [les["arc_range_mm"][1] for les in m["lesions"]]
        assert starts == sorted(starts, reverse=True)  # cranial first: arc runs upwards
        ids = sitk.GetArrayFromImage(result.lesion_map)
        mass = sitk.GetArrayFromImage(study.labels) == LABEL_MASS
        assert np.array_equal(ids > 0, mass)  # every mass voxel in exactly one lesion
        # each true lesion's voxels carry one measured id, the true lesion's
        s_lesion = [np.unique(ids[mass & (ids == t["id"])]) for t in study.truth["lesions"]]
        assert all(len(u) == 1 for u in s_lesion)


def test_each_lesion_has_its_own_grade(battery):
    _, rows = battery
    wrong = [
        (seed, t["level"], t["grade"], m["bilsky_grade"], m["bilsky_reason"])
        for seed, t, m, _ in rows
        if m["bilsky_grade"] != t["grade"]
    ]
    assert not wrong, wrong


def test_each_lesion_volume_is_within_five_percent(battery):
    _, rows = battery
    errors = [m["mass_volume_ml"] / t["volume_ml"] - 1.0 for _, t, m, _ in rows]
    assert max(abs(e) for e in errors) <= 0.05, errors


def test_each_lesion_mscc_is_within_five_points(battery):
    _, rows = battery
    errors = [m["mscc_percent"] - t["mscc_percent"] for _, t, m, _ in rows]
    assert max(abs(e) for e in errors) <= 5.0, errors


def test_each_lesion_is_named_by_the_levels_it_reaches(battery):
    """The lesion's own level always; a neighbour when the lesion reaches half a slice (1.5
    mm, the staircase of the 3 mm slices) into it; never a level it does not reach."""
    _, rows = battery
    for seed, t, m, study in rows:
        surely = set(_truth_levels(study, t["id"], min_overlap_mm=1.5))
        reached = set(_truth_levels(study, t["id"]))
        assert t["level"] in m["levels"], (seed, t["level"], m["levels"])
        assert surely <= set(m["levels"]) <= reached, (seed, m["levels"], surely, reached)


def test_references_lie_outside_every_lesion(battery):
    cases, _ = battery
    for _, result in cases:
        lesions = result.metrics["lesions"]
        for lesion in lesions:
            for side in lesion["reference_arc_mm"].values():
                for other in lesions:
                    lo, hi = other["arc_range_mm"]
                    assert side[1] < lo or side[0] > hi, (lesion["id"], side, other["id"])


def test_the_study_is_graded_by_its_worst_lesion(battery):
    from MESCCAnalyzerLib.measure.bilsky import GRADES

    cases, _ = battery
    for _, result in cases:
        m = result.metrics
        worst = max(
            m["lesions"], key=lambda les: (GRADES.index(les["bilsky_grade"]), les["mscc_percent"])
        )
        assert m["worst_lesion_id"] == worst["id"]
        assert m["bilsky_grade"] == worst["bilsky_grade"]
        assert m["mscc_percent"] == worst["mscc_percent"]
        assert m["mass_levels"] == worst["levels"]
        total = sum(les["mass_volume_ml"] for les in m["lesions"])
        assert m["total_mass_volume_ml"] == pytest.approx(total)


def test_the_mass_model_and_the_lesion_map_carry_the_lesion_ids(battery, tmp_path):
    from vtk.util import numpy_support

    _, result = battery[0][0]
    ids = numpy_support.vtk_to_numpy(result.models["mass"].GetPointData().GetArray("lesion_id"))
    assert set(np.unique(ids).tolist()) == {1, 2, 3, 4}
    written = write_metrics(result, tmp_path)
    back = sitk.ReadImage(str(written["lesions"]))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(result.lesion_map))
    saved = json.loads(written["metrics"].read_text())
    assert [les["id"] for les in saved["lesions"]] == [1, 2, 3, 4]
    assert all(row["lesion_ids"] == sorted(row["lesion_ids"]) for row in saved["levels"])


# --- lesions from one mass label -------------------------------------------------------
def _grade2_labels():
    from test_bilsky import phantom_labels_and_truth

    return phantom_labels_and_truth("2", 0)[0]


def test_a_mass_cut_in_two_at_one_level_is_one_lesion_and_a_speck_is_left_out():
    labels = _grade2_labels()
    arr = sitk.GetArrayFromImage(labels)
    k, j, i = np.nonzero(arr == LABEL_MASS)
    mid = int(np.median(i))
    arr[(arr == LABEL_MASS) & (np.arange(arr.shape[2])[None, None, :] == mid)] = 0  # cut L/R
    low = int(k.min()) - 8  # 2 voxels 8 slices below the mass
    assert low >= 0
    speck = (low, int(j.min()), slice(int(i.min()), int(i.min()) + 2))
    arr[speck] = LABEL_MASS
    image = sitk.GetImageFromArray(arr)
    image.CopyInformation(labels)
    line = fit_centerline(sitk.Cast(image == LABEL_CORD, sitk.sitkUInt8))
    found, notes = lesion_regions.find_lesions(image, line)
    assert len(found) == 1 and found[0].voxels == np.count_nonzero(arr == LABEL_MASS) - 2
    assert len(notes) == 1 and "left out" in notes[0]


# --- studies without a mass ------------------------------------------------------------
def test_a_whole_spine_without_a_mass_has_no_lesion_no_grade_and_no_flag():
    study = make_spine_phantom(
        ("T3", "T9"),
        (),
        seed=2,
        grids=SpineGrids(mri_spacing_mm=(1.0, 1.0, 3.0), ct_spacing_mm=(2.0, 2.0, 2.0)),
    )
    m = compute_metrics(study.labels, levels=LevelSource(vertebrae=study.vertebrae)).metrics
    assert m["lesions"] == [] and m["bilsky_grade"] is None and m["worst_lesion_id"] is None
    names = [row["level"] for row in m["levels"]]
    assert names[0] == "T3" and names[-1] == "T9" and m["levels_named"]
    assert not any(row["flagged"] for row in m["levels"]), m["levels"]
    assert all(row["canal_min_area_mm2"] > row["cord_min_csa_mm2"] > 0 for row in m["levels"])


@pytest.mark.parametrize("with_mri", [False, True], ids=["labels", "with its MRI"])
@pytest.mark.parametrize(
    "mask, mri",
    [
        ("sct_errsm30/t2_seg-manual.nii.gz", "sct_errsm30/t2.nii.gz"),
        ("sct_errsm30/t1w_seg-manual.nii.gz", "sct_errsm30/t1w.nii.gz"),
        ("sct_errsm30/t2s_seg.nii.gz", "sct_errsm30/t2s.nii.gz"),
        ("sct_errsm30/mt1_seg.nii.gz", "sct_errsm30/mt1.nii.gz"),
        ("sct_fake_lesion/t2_fake_lesion_sc_seg.nii.gz", "sct_fake_lesion/t2_fake_lesion.nii.gz"),
    ],
)
def test_healthy_real_cords_are_measured_with_no_lesion_and_no_flag(
    shared_data, mask, mri, with_mri
):
    """The SCT images' cord masks, cord only (no CSF label): measured end to end, from the
    labels alone and with the cord's outline from the image's partial volume (as `mescc
    analyze` measures)."""
    cord = sitk.Cast(sitk.ReadImage(str(shared_data / mask)) > 0, sitk.sitkUInt8)
    image = sitk.ReadImage(str(shared_data / mri), sitk.sitkFloat32) if with_mri else None
    m = compute_metrics(cord, mri=image).metrics
    assert m["cord_outline"] == ("mri" if with_mri else "labels")
    assert m["lesion_count"] == 0 and m["bilsky_grade"] is None
    assert m["canal_measured"] is False
    assert m["levels"] and not any(row["flagged"] for row in m["levels"]), m["levels"]
    assert all(row["canal_min_area_mm2"] is None for row in m["levels"])


@pytest.mark.parametrize("with_mri", [False, True], ids=["labels", "with its T2"])
def test_the_real_canal_of_tptbox_is_not_flagged(shared_data, with_mri):
    """TPTBox C5-C7: its thecal sac (cord and CSF labels) is real; its cord label is a thin
    strip (7-41 mm2, see MANIFEST.md), so only the canal is judged."""
    folder = shared_data / "tptbox_cervical_t2"
    sub = sitk.ReadImage(str(folder / "sub-mri_seg-subreg_label-6_msk.nii.gz"))
    sa = sitk.GetArrayFromImage(sub)
    labels = np.zeros(sa.shape, np.uint8)
    labels[sa == 61], labels[sa == 60] = LABEL_CSF, LABEL_CORD
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(sub)
    t2 = folder / "sub-mri_label-6_T2w.nii.gz"
    mri = sitk.ReadImage(str(t2), sitk.sitkFloat32) if with_mri else None
    m = compute_metrics(image, mri=mri).metrics
    assert m["lesion_count"] == 0 and m["canal_measured"] is True
    assert not any("thecal sac" in row["flag_reason"] for row in m["levels"]), m["levels"]


def test_mescc_metrics_on_a_cord_only_labelmap_prints_no_lesion(shared_data, tmp_path, capsys):
    path = shared_data / "sct_errsm30" / "t2_seg-manual.nii.gz"
    assert main(["--quiet", "metrics", "--labels", str(path), "--out", str(tmp_path / "m")]) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("No lesion:") and "narrowed: none" in printed


# --- the cord's planning risk volume -----------------------------------------------------
def _turn(a, b, c) -> float:
    """The z of (b - a) x (c - a): positive for a counter-clockwise turn."""
    return (b[0] - a[0]) * (c[1] - a[1]) - (b[1] - a[1]) * (c[0] - a[0])


def _convex_hull(points: np.ndarray) -> np.ndarray:
    """The convex hull's corners (Andrew's monotone chain), counter-clockwise."""
    pts = sorted(map(tuple, points))

    def half(seq):
        out = []
        for p in seq:
            while len(out) >= 2 and _turn(out[-2], out[-1], p) <= 0:
                out.pop()
            out.append(p)
        return out[:-1]

    return np.array(half(pts) + half(pts[::-1]))


def test_the_cord_prv_of_a_straight_cord_follows_steiners_formula():
    """A cord of radius 3 mm through the whole image (0.5 mm voxels), grown by 2 mm: the
    region's cross-section (its voxels as squares) grown by a disk has, for a margin larger
    than the voxels' steps, the area of its convex hull grown by the disk (Steiner: area +
    perimeter x m + pi m^2), over the image's length (the PRV stops at the image's ends)."""
    n, h, margin = (80, 80, 100), 0.5, 2.0
    z, y, x = np.indices((n[2], n[1], n[0]))
    r = np.hypot((x - 39.5) * h, (y - 39.5) * h)
    arr = np.where(r <= 3.0, LABEL_CORD, np.where(r <= 6.0, LABEL_CSF, 0)).astype(np.uint8)
    labels = sitk.GetImageFromArray(arr)
    labels.SetSpacing((h, h, h))
    m = compute_metrics(labels, prv_mm=margin).metrics
    jj, ii = np.nonzero(arr[0] == LABEL_CORD)
    corners = np.concatenate(
        [np.stack([ii + dx, jj + dy], axis=1) * h for dx in (-0.5, 0.5) for dy in (-0.5, 0.5)]
    )
    hull = _convex_hull(corners)
    edges = np.roll(hull, -1, axis=0) - hull
    area = 0.5 * abs(
        np.sum(hull[:, 0] * np.roll(hull[:, 1], -1) - np.roll(hull[:, 0], -1) * hull[:, 1])
    )
    perimeter = np.hypot(edges[:, 0], edges[:, 1]).sum()
    expected_ml = (area + perimeter * margin + np.pi * margin**2) * n[2] * h / 1000.0
    assert m["prv_margin_mm"] == margin
    # the PRV's own voxels (0.5 mm) sample its edge (measured: 4.100 ml against 4.131 ml)
    assert m["cord_prv_volume_ml"] == pytest.approx(expected_ml, rel=0.02)


def test_each_lesion_prv_covers_its_levels_within_the_whole_cord(battery):
    cases, _ = battery
    _, result = cases[0]
    m = result.metrics
    per_lesion = [lesion["cord_prv_volume_ml"] for lesion in m["lesions"]]
    assert all(0 < v < m["cord_prv_volume_ml"] for v in per_lesion)
    assert sum(per_lesion) < m["cord_prv_volume_ml"]  # four lesions, at separate levels
