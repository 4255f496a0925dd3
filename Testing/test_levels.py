"""Vertebral levels along the cord and the narrowing flags (issue 17, the engine's part).

Real data: the TPTBox cervical T2's VerSe vertebra labels, bone sub-regions and canal; the SCT
healthy cord. Phantom: grade 2 and 3 cords with the mass label removed (a narrowing with no
tumour label), grades 0 and 1b (no cord deformation).
"""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.measure import levels, narrowing
from MESCCAnalyzerLib.measure.centerline import fit_centerline
from MESCCAnalyzerLib.measure.compression import measure_sections
from MESCCAnalyzerLib.phantom import make_phantom_labels


def test_verse_numbers_and_names_round_trip():
    assert [levels.verse_name(v) for v in (1, 7, 8, 13, 19, 20, 25, 26)] == [
        "C1", "C7", "T1", "T6", "T12", "L1", "L6", "S",
    ]  # fmt: skip
    assert all(levels.verse_label(levels.verse_name(v)) == v for v in range(1, 27))
    for bad in ("T13", "X4", "", "C0"):
        with pytest.raises(InputError, match="unknown vertebral level"):
            levels.verse_label(bad)
    with pytest.raises(InputError):
        levels.verse_name(27)


def test_a_level_anchor_is_parsed_or_refused_in_one_sentence():
    name, point = levels.parse_anchor("t6@12.5,-30,104")
    assert name == "T6" and point.tolist() == [12.5, -30.0, 104.0]
    for bad in ("T6", "T6@1,2", "T6@a,b,c", "T6@1,2,nan", "Q6@1,2,3"):
        with pytest.raises(InputError):
            levels.parse_anchor(bad)


@pytest.fixture(scope="module")
def tptbox(shared_data):
    """TPTBox cervical T2 (C5-C7): canal and thin cord labels, bone sub-regions, VerSe labels."""
    folder = shared_data / "tptbox_cervical_t2"
    sub = sitk.ReadImage(str(folder / "sub-mri_seg-subreg_label-6_msk.nii.gz"))
    vert = sitk.ReadImage(str(folder / "sub-mri_seg-vert_label-6_msk.nii.gz"))
    sa, va = sitk.GetArrayFromImage(sub), sitk.GetArrayFromImage(vert)
    labels = np.zeros(sa.shape, np.uint8)
    labels[sa == 61], labels[sa == 60] = 2, 1
    labels[(sa >= 41) & (sa <= 49)] = 4  # the vertebrae's sub-regions
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(sub)
    va[va > 26] = 0  # 105, 205...: the TPTBox intervertebral discs and endplates, not VerSe
    vertebrae = sitk.GetImageFromArray(va)
    vertebrae.CopyInformation(vert)
    line = fit_centerline(sitk.Cast(image == 1, sitk.sitkUInt8))
    centroid_c6 = vert.TransformContinuousIndexToPhysicalPoint(
        np.argwhere(va == 6).mean(axis=0)[::-1].tolist()
    )
    return image, vertebrae, line, np.array(centroid_c6)


def test_levels_from_a_verse_labelmap_are_named_cranial_first(tptbox):
    labels, vertebrae, line, _ = tptbox
    found = levels.levels_from_vertebrae(vertebrae, line, reference=labels)
    # C7 is below the cord label's lower end (the label stops at C6): not along the cord
    assert found.names == ["C5", "C6"] and found.named
    assert found.arc_lo[0] == found.arc_hi[1]  # they meet
    assert list(found.level_at([found.arc_lo[1] + 1, found.arc_hi[0] - 1])) == ["C6", "C5"]


def test_a_vertebra_labelmap_on_another_grid_is_refused(tptbox, tmp_path):
    labels, vertebrae, line, _ = tptbox
    coarse = sitk.Resample(vertebrae, [s // 2 for s in vertebrae.GetSize()], sitk.Transform(),
                           sitk.sitkNearestNeighbor, vertebrae.GetOrigin(),
                           [2 * s for s in vertebrae.GetSpacing()], vertebrae.GetDirection())  # fmt: skip
    with pytest.raises(InputError, match="another grid"):
        levels.levels_from_vertebrae(coarse, line, reference=labels, path=tmp_path / "v.nii.gz")


def test_levels_counted_from_an_anchor_agree_with_the_verse_labels(tptbox):
    labels, vertebrae, line, c6 = tptbox
    bone = sitk.Cast(labels == 4, sitk.sitkUInt8)
    counted = levels.levels_from_anchor(bone, line, "C6", c6)
    verse = levels.levels_from_vertebrae(vertebrae, line, reference=labels)
    assert counted.names == verse.names == ["C5", "C6"]
    # The anchor splits the bodies at the disc; VerSe splits half-way between whole
    # vertebrae (posterior elements included): the boundaries agree within a disc's height.
    assert abs(counted.arc_lo[0] - verse.arc_lo[0]) < 8.0
    with pytest.raises(InputError, match="not in a vertebral body"):
        levels.levels_from_anchor(bone, line, "C6", c6 + np.array([0.0, 60.0, 0.0]))


def test_a_healthy_real_cord_and_canal_are_not_flagged(shared_data, tptbox):
    cord = sitk.ReadImage(str(shared_data / "sct_errsm30" / "t2_seg-manual.nii.gz"))
    labels = sitk.Cast(cord > 0, sitk.sitkUInt8)
    line = fit_centerline(labels)
    sections = measure_sections(labels, line)
    reductions = narrowing.reductions(sections)
    # measured: AP 9 %, area 12 %, ratio 13 %; every threshold is 20 % or more
    for key in ("cord_ap", "cord_area", "cord_compression_ratio"):
        assert np.nanmax(reductions[key]) < narrowing.THRESHOLDS[key]
    rows = narrowing.level_table(levels.levels_unnamed(line), sections)
    assert rows and not any(r["flagged"] for r in rows)
    # TPTBox: its canal label is real; its cord label is a thin strip (7-41 mm2), so only the
    # thecal sac is judged there (largest reduction 16 %).
    labels, _, line, _ = tptbox
    canal = narrowing.reductions(measure_sections(labels, line))["sac_area"]
    assert np.nanmax(canal) < narrowing.THRESHOLDS["sac_area"]


def _without_mass(grade: str):
    labels, truth, _, _ = make_phantom_labels(grade, 0)
    arr = sitk.GetArrayFromImage(labels)
    arr[arr == 3] = 0  # a narrowing with no tumour label
    image = sitk.GetImageFromArray(arr)
    image.CopyInformation(labels)
    line = fit_centerline(sitk.Cast(image == 1, sitk.sitkUInt8))
    found = levels.levels_unnamed(line, sitk.Cast(image == 4, sitk.sitkUInt8))
    rows = narrowing.level_table(found, measure_sections(image, line))
    worst = line.arc_mm[line.nearest_index(np.array([truth["worst_section_lps_mm"]]))[0]]
    return rows, worst


@pytest.mark.parametrize("grade", ["2", "3"])
def test_a_compressed_cord_without_its_mass_label_is_flagged_at_its_level(grade):
    rows, worst = _without_mass(grade)
    at_worst = next(r for r in rows if r["arc_range_mm"][0] <= worst < r["arc_range_mm"][1])
    assert at_worst["flagged"] and "cord AP diameter" in at_worst["flag_reason"]
    assert not any(r["flagged"] for r in rows if abs(np.mean(r["arc_range_mm"]) - worst) > 40)


@pytest.mark.parametrize("grade", ["0", "1b"])
def test_an_undeformed_cord_is_not_flagged(grade):
    rows, _ = _without_mass(grade)
    assert not any(r["flagged"] for r in rows)


# --- in the analysis: a whole-spine phantom with masses at T4 (grade 2), T6 (0), T8 (3) ------
@pytest.fixture(scope="module")
def a_measured_spine(tmp_path_factory):
    from MESCCAnalyzerLib.measure.metrics import LevelSource, compute_metrics
    from MESCCAnalyzerLib.phantom.spine import SpineGrids, make_spine_phantom

    study = make_spine_phantom(
        ("T3", "T9"), (("T4", "2"), ("T6", "0"), ("T8", "3")), seed=1,
        grids=SpineGrids(mri_spacing_mm=(1.0, 1.0, 3.0), ct_spacing_mm=(1.2, 1.2, 1.5)),
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("spine")
    for name in ("labels", "vertebrae"):
        sitk.WriteImage(getattr(study, name), str(folder / f"{name}.nii.gz"))
    named = compute_metrics(study.labels, levels=LevelSource(vertebrae=study.vertebrae))
    return study, named, folder


def test_the_analysis_names_every_level_and_flags_the_compressed_ones(a_measured_spine):
    study, result, _ = a_measured_spine
    m = result.metrics
    in_image = list(study.truth["vertebrae_in_image"].values())  # cranial first
    names = [row["level"] for row in m["levels"]]
    assert m["levels_named"] and m["level_source"] == "vertebrae"
    start = in_image.index(names[0])
    assert names == in_image[start : start + len(names)]  # consecutive, cranial first
    assert {lvl["name"] for lvl in study.truth["levels"]} - {"T3", "T9"} <= set(names)
    flagged = {row["level"] for row in m["levels"] if row["flagged"]}
    # grade 2 at T4 and grade 3 at T8 deform the cord; the grade-0 mass at T6 does not
    assert {"T4", "T8"} <= flagged and "T6" not in flagged
    assert m["worst_section_level"] == "T8"  # the grade-3 lesion
    assert set(result.section_levels) - {""} <= set(names)
    assert result.sections_csv().splitlines()[0].endswith(",level")


def test_levels_counted_from_an_anchor_match_the_verse_labelmap(a_measured_spine):
    from MESCCAnalyzerLib.measure.metrics import LevelSource, compute_metrics

    study, named, _ = a_measured_spine
    body = [v for v in study.truth["levels"] if v["name"] == "T6"][0]
    anchor = np.array(body["body_centre_lps_mm"])
    counted = compute_metrics(study.labels, levels=LevelSource(anchor=("T6", anchor))).metrics
    assert counted["level_source"] == "anchor"
    by_name = {row["level"]: row["arc_range_mm"] for row in named.metrics["levels"]}
    for row in counted["levels"]:
        if row["level"] in by_name:  # the same bodies, the boundaries within a disc's height
            assert np.allclose(row["arc_range_mm"], by_name[row["level"]], atol=9.0)
    assert counted["worst_section_level"] == "T8"


@pytest.mark.parametrize(
    "args, phrase",
    [
        (["--level-anchor", "T13@0,0,0"], "unknown vertebral level"),
        (["--level-anchor", "T6@0,0"], "NAME@X,Y,Z"),
        (["--level-anchor", "T6@0,200,0"], "not in a vertebral body"),
        (["--vertebrae", "{coarse}"], "another grid"),
    ],
)
def test_bad_level_options_get_one_line_and_nothing_is_written(
    a_measured_spine, tmp_path, capsys, args, phrase
):
    from MESCCAnalyzerLib.cli import main

    _, _, folder = a_measured_spine
    vertebrae = sitk.ReadImage(str(folder / "vertebrae.nii.gz"))
    coarse = sitk.Resample(vertebrae, [s // 2 for s in vertebrae.GetSize()], sitk.Transform(),
                           sitk.sitkNearestNeighbor, vertebrae.GetOrigin(),
                           [2 * s for s in vertebrae.GetSpacing()], vertebrae.GetDirection())  # fmt: skip
    sitk.WriteImage(coarse, str(tmp_path / "coarse.nii.gz"))
    args = [a.format(coarse=tmp_path / "coarse.nii.gz") for a in args]
    out = tmp_path / "m"
    code = main(
        ["-q", "metrics", "--labels", str(folder / "labels.nii.gz"), "--out", str(out), *args]
    )
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and phrase in err
    assert not out.exists()
