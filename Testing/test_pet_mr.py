"""A PET without a CT: used only when it shares the MRI's frame of reference (PET/MR)."""

from __future__ import annotations

import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.io.study import load_volume
from MESCCAnalyzerLib.pipeline import (
    PET_MR_NOTE,
    PET_SAME_FRAME_NOTE,
    AnalysisRequest,
    frame_of_reference,
    load_study,
)
from MESCCAnalyzerLib.segmentation.seeds import strokes_from_labels


@pytest.fixture(scope="module")
def study(phantom_dir, tmp_path_factory):
    folder = phantom_dir("2", 0)
    seeds = tmp_path_factory.mktemp("seeds") / "seeds.nii.gz"
    sitk.WriteImage(strokes_from_labels(sitk.ReadImage(str(folder / "labels.nii.gz"))), str(seeds))
    return folder, seeds


def test_a_pet_ct_pet_without_its_ct_is_refused_before_anything_is_written(study, tmp_path, capsys):
    """Before: taken to be in the MRI's frame, exit 0, the uptake read in the wrong place."""
    folder, seeds = study
    out = tmp_path / "out"
    argv = ["analyze", "--mri", str(folder / "t2.nii.gz"), "--seeds", str(seeds)]
    code = main([*argv, "--pet", str(folder / "pet_dicom"), "--out", str(out), "--no-scene"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert str(folder / "pet_dicom") in err[0] and "without a CT" in err[0]
    assert "--pet-same-frame" in err[0] and not out.exists()


def test_the_frame_of_reference_decides_and_the_flag_overrides(study):
    folder, seeds = study
    pet = load_volume(folder / "pet_dicom", modality="PT")
    assert frame_of_reference(pet)  # the PET-CT's frame, in its DICOM headers
    request = AnalysisRequest(mri=folder / "t2.nii.gz", seeds=seeds, pet=folder / "pet_dicom")
    with pytest.raises(InputError, match="MRI is not DICOM"):
        load_study(request)
    request.pet_same_frame = True
    assert PET_SAME_FRAME_NOTE in load_study(request).notes
    # a T2 DICOM series in the PET's frame (a PET/MR): accepted without the flag
    t2_dicom = folder / "t2_dicom"
    if t2_dicom.is_dir():
        mri = load_volume(t2_dicom, modality="MR")
        request = AnalysisRequest(mri=t2_dicom, seeds=seeds, pet=folder / "pet_dicom")
        if frame_of_reference(mri) != frame_of_reference(pet):
            with pytest.raises(InputError, match="FrameOfReferenceUID differs"):
                load_study(request)
        else:
            assert PET_MR_NOTE in load_study(request).notes
