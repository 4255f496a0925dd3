"""The phantom on disk: the PET as a DICOM series in Bq/ml (its own decay arithmetic, an
oracle for :mod:`MESCCAnalyzerLib.pet.suv`) and the whole study folder with ``truth.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .. import LABEL_MASS
from ..outputs import atomic_dir, check_output_dir, save_image
from ..progress import CancelCallback, ProgressCallback, check, no_progress
from .anatomy import F18_HALF_LIFE_S, PATIENT_HEIGHT_M, PATIENT_WEIGHT_KG, PET_DOSE_BQ, PET_UPTAKE_S
from .dicom import mri_frame_uid, new_dataset, write_mri_ct_dicom, write_mri_dicom
from .dwi import make_phantom_dwi, write_dwi_files
from .imaging import make_pet_mr_suv, make_phantom


def _uid(prefix_seed: str) -> str:
    from pydicom.uid import generate_uid

    return generate_uid(entropy_srcs=[prefix_seed])


@dataclass
class _PetSeries:
    """What every slice of the phantom's PET series shares: identity and geometry."""

    patient_id: str
    study_uid: str
    series_uid: str
    frame_uid: str
    n_slices: int
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]


def write_pet_dicom(
    suv: sitk.Image, folder: Path, *, patient_id: str, study_uid: str, frame_uid: str, seed: int
) -> sitk.Image:
    """Write ``suv`` (SUVbw) as a PET DICOM series in Bq/ml; return the SUV it encodes.

    Each slice is stored as int16 with its own rescale slope, so the stored values are a
    quantised copy of the activity; the returned image is the SUV computed back from exactly
    what was written (the truth for ``mescc suv``). The decay arithmetic here is deliberately
    independent of :mod:`MESCCAnalyzerLib.pet.suv`.
    """
    folder.mkdir(parents=True, exist_ok=True)
    bq_per_suv = _bq_per_suv()
    arr = sitk.GetArrayFromImage(suv).astype(np.float64) * bq_per_suv
    nz = arr.shape[0]
    series = _PetSeries(
        patient_id=patient_id,
        study_uid=study_uid,
        series_uid=_uid(f"pet-series-{patient_id}-{seed}"),
        frame_uid=frame_uid,
        n_slices=nz,
        origin=suv.GetOrigin(),
        spacing=suv.GetSpacing(),
    )
    rng = np.random.default_rng(seed + 17)
    names = rng.permutation(nz)  # file names deliberately not in slice order
    out = np.empty_like(arr)
    for k in range(nz):
        stored, slope_text = _quantised(arr[k])
        out[k] = stored.astype(np.float64) * float(slope_text) / bq_per_suv
        ds = _pet_slice_dataset(
            series, k, stored, slope_text, sop_uid=_uid(f"pet-sop-{patient_id}-{seed}-{k}")
        )
        ds.save_as(folder / f"PT{names[k]:04d}.dcm", enforce_file_format=True)
    encoded = sitk.GetImageFromArray(out)
    encoded.CopyInformation(suv)
    return encoded


def _bq_per_suv() -> float:
    """Activity concentration (Bq/ml) of SUVbw 1 at the scan: the injected dose decayed over
    the uptake time, per gram of body weight."""
    decayed_dose = PET_DOSE_BQ * 2.0 ** (-PET_UPTAKE_S / F18_HALF_LIFE_S)
    return decayed_dose / (PATIENT_WEIGHT_KG * 1000.0)


def _quantised(activity_bq_ml: np.ndarray) -> tuple[np.ndarray, str]:
    """One slice as int16 stored values and its rescale slope (as written in the file, 10
    significant digits), the slice maximum mapped to 32000."""
    slope_text = f"{max(float(activity_bq_ml.max()), 1e-6) / 32000.0:.10g}"
    stored = np.clip(np.round(activity_bq_ml / float(slope_text)), -32768, 32767)
    return stored.astype(np.int16), slope_text


def _pet_slice_dataset(
    series: _PetSeries, k: int, stored: np.ndarray, slope_text: str, *, sop_uid: str
):
    """The DICOM dataset of slice ``k``: PET image storage, Bq/ml, decay-corrected to the
    series start, with the radiopharmaceutical an SUV calculation needs."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence
    from pydicom.uid import PositronEmissionTomographyImageStorage

    ds = new_dataset(PositronEmissionTomographyImageStorage, sop_uid)
    ds.Modality = "PT"
    _set_patient_and_study(ds, series)
    ds.InstanceNumber = k + 1
    ds.ImageIndex = k + 1
    ds.NumberOfSlices = series.n_slices
    ds.SeriesDescription = "PET AC (phantom)"
    ds.Manufacturer = "MESCCAnalyzer phantom"
    ds.Units = "BQML"
    ds.DecayCorrection = "START"
    ds.CorrectedImage = ["DECY", "ATTN"]
    ds.SeriesType = ["STATIC", "IMAGE"]
    ds.DecayFactor = "1"
    ds.ActualFrameDuration = 180000
    ds.FrameReferenceTime = "0"
    radio = Dataset()
    radio.Radiopharmaceutical = "Fluorodeoxyglucose"
    radio.RadiopharmaceuticalStartTime = "091500"
    radio.RadiopharmaceuticalStartDateTime = "20260101091500"
    radio.RadionuclideTotalDose = f"{PET_DOSE_BQ:.6g}"
    radio.RadionuclideHalfLife = f"{F18_HALF_LIFE_S}"
    radio.RadionuclidePositronFraction = "0.9673"
    ds.RadiopharmaceuticalInformationSequence = Sequence([radio])
    _set_slice_image(ds, series, k, stored, slope_text)
    return ds


def _set_patient_and_study(ds, series: _PetSeries) -> None:
    """Patient (with the weight and height SUV needs), study, series and frame of reference;
    scanned on 2026-01-01 at 10:15, 60 minutes after the injection."""
    ds.PatientName = "MESCC^Phantom"
    ds.PatientID = series.patient_id
    ds.PatientSex = "M"
    ds.PatientWeight = f"{PATIENT_WEIGHT_KG}"
    ds.PatientSize = f"{PATIENT_HEIGHT_M}"
    ds.StudyInstanceUID = series.study_uid
    ds.SeriesInstanceUID = series.series_uid
    ds.FrameOfReferenceUID = series.frame_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20260101"
    ds.StudyTime = "100000"
    ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = "101500"
    ds.StudyID = "1"
    ds.SeriesNumber = 3


def _set_slice_image(ds, series: _PetSeries, k: int, stored: np.ndarray, slope_text: str) -> None:
    """Axial slice ``k``'s position and spacing, and its int16 pixels with their slope."""
    origin, spacing = series.origin, series.spacing
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.ImagePositionPatient = [
        f"{origin[0]:.6f}",
        f"{origin[1]:.6f}",
        f"{origin[2] + k * spacing[2]:.6f}",
    ]
    ds.PixelSpacing = [
        f"{spacing[1]:.6f}",
        f"{spacing[0]:.6f}",
    ]  # row spacing (y), column spacing (x)
    ds.SliceThickness = f"{spacing[2]:.6f}"
    ds.Rows, ds.Columns = stored.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleSlope = slope_text
    ds.RescaleIntercept = "0"
    ds.RescaleType = "BQML"
    ds.PixelData = stored.tobytes()


def write_phantom(
    out_dir: str | os.PathLike,
    grade: str = "2",
    seed: int = 0,
    *,
    dwi_layout: str | None = None,
    pet_mr: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> Path:
    """Generate the phantom and write its files into ``out_dir`` (atomically, as a whole).

    ``out_dir`` must be new, empty, or a folder mescc wrote: any other existing folder is
    refused (before the phantom is made) so that no user data is overwritten. With
    ``dwi_layout`` (one of :data:`.dwi.LAYOUTS`) the diffusion series is written too
    (:mod:`.dwi`); the other files are the same with or without it. With ``pet_mr`` the study
    is a PET/MR: the PET is acquired in the MRI's frame (:func:`.imaging.make_pet_mr_suv`),
    its DICOM series carries the T2 series' FrameOfReferenceUID, and there is no CT (no
    ``ct.nii.gz``, ``ct_dicom/`` or ``mri_to_ct.tfm``); the T2, T1, labels (and DWI) are the
    same as without it.
    """
    out = check_output_dir(out_dir)
    progress = progress or no_progress
    study = make_phantom(grade, seed, progress=lambda f, m: progress(0.8 * f, m), cancel=cancel)
    check(cancel)
    dwi = None
    if dwi_layout is not None:
        progress(0.8, "DWI")
        dwi = make_phantom_dwi(study.anatomy, study.pose, seed, cancel=cancel)
    pet_mr_suv = None
    if pet_mr:
        progress(0.82, "PET/MR")
        pet_mr_suv = make_pet_mr_suv(study.anatomy, study.pose, seed, cancel=cancel)
    progress(0.85, "writing")
    patient_id = f"MESCC-PHANTOM-{grade}-{seed}"
    with atomic_dir(out) as tmp:
        write_study_files(
            tmp,
            study,
            ("t2", "t1", "labels") if pet_mr else ("t2", "t1", "ct", "labels"),
            patient_id,
            seed,
            mri_ct_dicom=True,
            dwi=dwi,
            dwi_layout=dwi_layout or "standard",
            pet_mr_suv=pet_mr_suv,
        )
    progress(1.0, "done")
    return out


def write_study_files(
    folder: Path,
    study,
    image_names,
    patient_id: str,
    seed: int,
    *,
    mri_ct_dicom: bool = False,
    dwi=None,
    dwi_layout: str = "standard",
    pet_mr_suv: sitk.Image | None = None,
) -> dict:
    """Write a phantom study's files into ``folder`` (a temporary folder of ``atomic_dir``):
    the named images (NIfTI), the PET as a DICOM series in Bq/ml and as SUV, the true
    transform, optionally the T2 and CT as DICOM series and the diffusion series ``dwi``
    (a :class:`.dwi.PhantomDWI`, DICOM in ``dwi_layout``; its truth under ``"dwi"``), and
    ``truth.json`` listing them.

    ``pet_mr_suv``: a PET/MR study. That PET (in the MRI's frame) is written instead of the
    PET-CT's, with the MRI's FrameOfReferenceUID; no transform and no CT DICOM are written,
    the truth's ``transform`` gives way to a ``"pet_mr"`` block."""
    study_uid = _uid(f"study-{patient_id}")
    frame_uid = _uid(f"frame-scanner-{patient_id}")
    pet_mr = pet_mr_suv is not None
    files = {}
    for name in image_names:
        save_image(getattr(study, name), folder / f"{name}.nii.gz")
        files[name] = f"{name}.nii.gz"
    encoded = write_pet_dicom(
        pet_mr_suv if pet_mr else study.pet_suv,
        folder / "pet_dicom",
        patient_id=patient_id,
        study_uid=study_uid,
        frame_uid=mri_frame_uid(patient_id) if pet_mr else frame_uid,
        seed=seed,
    )
    save_image(sitk.Cast(encoded, sitk.sitkFloat32), folder / "pet_suv.nii.gz")
    files.update(pet_dicom="pet_dicom", pet_suv="pet_suv.nii.gz")
    if not pet_mr:
        sitk.WriteTransform(study.mri_to_ct, str(folder / "mri_to_ct.tfm"))
        files.update(transform="mri_to_ct.tfm")
    if mri_ct_dicom and pet_mr:
        files.update(write_mri_dicom(study.t2, folder, patient_id=patient_id, study_uid=study_uid))
    elif mri_ct_dicom:
        files.update(
            write_mri_ct_dicom(
                study.t2,
                study.ct,
                folder,
                patient_id=patient_id,
                study_uid=study_uid,
                scanner_frame_uid=frame_uid,
            )
        )
    truth = {**study.truth, "patient_id": patient_id, "files": files}
    if pet_mr:
        truth.pop("transform", None)
        truth["pet_mr"] = pet_mr_truth(encoded, study.labels, mri_frame_uid(patient_id))
    if dwi is not None:
        files.update(
            write_dwi_files(
                dwi,
                folder,
                layout=dwi_layout,
                patient_id=patient_id,
                study_uid=study_uid,
                frame_uid=mri_frame_uid(patient_id),
                seed=seed,
            )
        )
        truth["dwi"] = {**dwi.truth, "layout": dwi_layout}
    (folder / "truth.json").write_text(json.dumps(truth, indent=2) + "\n", encoding="utf-8")
    return truth


def pet_mr_truth(encoded_suv: sitk.Image, labels: sitk.Image, frame_uid: str) -> dict:
    """The ``"pet_mr"`` block of a PET/MR phantom's truth: the shared frame and the mass's
    SUVmax in the written PET (its SUV as encoded, sampled at the centres of the MRI voxels
    labelled mass: what the uptake metrics see when the PET lands right; the tissue's own SUV
    is ``suv.mass``, which the scanner's blur lowers in a small mass)."""
    on_mri = sitk.Resample(
        encoded_suv, labels, sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat64
    )
    mass = sitk.GetArrayViewFromImage(labels) == LABEL_MASS
    values = sitk.GetArrayViewFromImage(on_mri)[mass]
    return {
        "frame_of_reference_uid": frame_uid,
        "convention": "the PET was acquired in the MRI's frame (PET/MR): its DICOM series "
        "carries the T2 series' FrameOfReferenceUID and lies on the MRI's physical space "
        "with no transform; there is no CT",
        "mass_suv_max": float(values.max()) if values.size else None,
        "mass_suv_mean": float(values.mean()) if values.size else None,
    }
