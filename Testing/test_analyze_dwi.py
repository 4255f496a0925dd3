"""``mescc analyze --dwi``: the ADC of each lesion and of the cord, on the phantom's DWI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.phantom import write_phantom
from MESCCAnalyzerLib.segmentation.seeds import strokes_from_labels


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    root = tmp_path_factory.mktemp("dwi")
    study = write_phantom(root / "study", "2", 1, dwi_layout="siemens")
    labels = sitk.ReadImage(str(study / "labels.nii.gz"))
    seeds = root / "seeds.nii.gz"
    sitk.WriteImage(strokes_from_labels(labels, rng_seed=1), str(seeds))
    out = root / "analysis"
    argv = ["-q", "analyze", "--mri", str(study / "t2.nii.gz"), "--seeds", str(seeds)]
    assert main([*argv, "--dwi", str(study / "dwi_dicom"), "--out", str(out), "--no-scene"]) == 0
    truth = json.loads((study / "truth.json").read_text())
    return study, out, json.loads((out / "metrics.json").read_text()), truth


def test_the_mass_and_cord_adc_agree_with_the_phantom(analysed):
    """The ADC map after registration and resampling onto the T2, read over the phantom's
    true mass and cord (the goal: within 3 %; measured +0.6 % and +0.1 %); the analysis's own
    figures are those of the same map over its segmented lesion and cord."""
    from MESCCAnalyzerLib.diffusion import adc_statistics

    study, out, m, truth = analysed
    adc = truth["dwi"]["adc"]
    assert m["adc_unit"] == "1e-6 mm2/s" and m["lesions"]
    written = sitk.ReadImage(str(out / "adc.nii.gz"))  # 0 where not fitted: NaN again
    values = sitk.GetArrayFromImage(written)
    on_t2 = sitk.GetImageFromArray(np.where(values > 0, values, np.nan).astype(np.float32))
    on_t2.CopyInformation(written)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(study / "labels.nii.gz")))
    mass = adc_statistics(on_t2, labels == 3)
    cord = adc_statistics(on_t2, labels == 1)
    assert mass["adc_mean"] == pytest.approx(adc["mass"], rel=0.03)
    assert mass["adc_median"] == pytest.approx(adc["mass"], rel=0.03)
    assert cord["adc_median"] == pytest.approx(adc["cord"], rel=0.03)
    lesion = m["lesions"][0]
    ids = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "lesions.nii.gz")))
    mine = adc_statistics(on_t2, ids == lesion["id"])
    assert lesion["adc_mean"] == pytest.approx(mine["adc_mean"], rel=1e-4)
    assert lesion["adc_p10"] <= lesion["adc_median"] and lesion["adc_min"] <= lesion["adc_p10"]
    assert m["adc_mean"] == lesion["adc_mean"]  # the worst (only) lesion's
    assert m["cord_adc_level"] == m["worst_section_level"]


def test_the_adc_map_and_the_registration_are_written(analysed):
    _, out, _, _ = analysed
    adc = sitk.ReadImage(str(out / "adc.nii.gz"))
    t2 = sitk.ReadImage(str(out.parent / "study" / "t2.nii.gz"))
    assert adc.GetSize() == t2.GetSize()
    assert np.nanmax(sitk.GetArrayViewFromImage(adc)) > 2000  # CSF
    assert json.loads((out / "dwi_registration.json").read_text())["transform_type"] == "rigid"
    assert "ADC map" in (out / "report.html").read_text()


def test_a_3d_image_as_dwi_is_refused_and_nothing_is_written(analysed, tmp_path, capsys):
    study, _, _, _ = analysed
    out = tmp_path / "out"
    argv = ["analyze", "--mri", str(study / "t2.nii.gz"), "--seeds", str(tmp_path / "none")]
    seeds = analysed[1].parent / "seeds.nii.gz"
    argv[4] = str(seeds)
    code = main([*argv, "--dwi", str(study / "t2.nii.gz"), "--out", str(out), "--no-scene"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and str(study / "t2.nii.gz") in err[0]
    assert not out.exists()


def test_every_value_of_the_analysis_has_one_definition(analysed):
    from MESCCAnalyzerLib.measure.definitions import BY_KEY

    _, _, m, _ = analysed
    assert set(m) - set(BY_KEY) == set()
    assert {k for k in BY_KEY if "adc" in k} <= set(m)


@pytest.mark.xfail(
    strict=True,
    reason="issue 16: with the ADC (1.2 x 1.2 x 4 mm, resampled onto the T2, the grower told "
    "its 4 mm) as a second channel the CSF Dice drops from 0.970 to 0.925 (the mass 0.952 -> "
    "0.956; the watershed before: CSF 0.972 -> 0.808); a channel must never make the result "
    "worse by more than noise",
)
def test_the_adc_as_a_segmentation_channel(analysed, tmp_path):
    """The ADC registered around the cord's strokes and grown on with the T2: the mass's
    ADC as before, and the segmentation no worse than on the T2 alone."""
    from MESCCAnalyzerLib.segmentation.grow import dice

    study, out, without, truth = analysed
    seeds = out.parent / "seeds.nii.gz"
    argv = ["-q", "analyze", "--mri", str(study / "t2.nii.gz"), "--seeds", str(seeds)]
    argv += ["--dwi", str(study / "dwi_dicom"), "--adc-channel", "--no-scene"]
    assert main([*argv, "--out", str(tmp_path / "with")]) == 0
    m = json.loads((tmp_path / "with" / "metrics.json").read_text())
    assert m["lesions"][0]["adc_mean"] == pytest.approx(truth["dwi"]["adc"]["mass"], rel=0.03)
    labels = sitk.GetArrayFromImage(sitk.ReadImage(str(study / "labels.nii.gz")))

    def dices(folder):
        from MESCCAnalyzerLib.io.segfile import read_seg_nrrd

        grown = sitk.GetArrayFromImage(read_seg_nrrd(folder / "segmentation.seg.nrrd")[0])
        return {v: dice(grown == v, labels == v) for v in (1, 2, 3)}

    before, after = dices(out), dices(tmp_path / "with")
    assert all(after[v] >= before[v] - 0.01 for v in (1, 2, 3)), (before, after)


def test_adc_channel_without_a_dwi_is_refused(analysed, tmp_path, capsys):
    study, out, _, _ = analysed
    argv = [
        "analyze",
        "--mri",
        str(study / "t2.nii.gz"),
        "--seeds",
        str(out.parent / "seeds.nii.gz"),
    ]
    code = main([*argv, "--adc-channel", "--out", str(tmp_path / "o"), "--no-scene"])
    assert code == 2 and "--adc-channel needs" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
