"""The phantom's T2 and CT as DICOM series (MR and CT Image Storage), so that the DICOM path
(loading a series, exporting SEG/SR/RTSTRUCT that reference it, a PACS round trip) is tested
on a study with a known answer.

The T2 and the CT come from different scanners: each series has its own
FrameOfReferenceUID (the CT shares the PET's, the scanner frame of the PET-CT), and all three
share the StudyInstanceUID of the phantom. A PET/MR phantom has no CT and its PET shares the
T2's frame (:func:`mri_frame_uid`). Pixel values: the T2 rounded to unsigned 16-bit
integers (its noise is 30 times the rounding step), the CT in HU as signed 16-bit integers
with rescale slope 1 and intercept 0, so that either series reads back as the NIfTI file
beside it (the T2 to within 0.5).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    MRImageStorage,
    generate_uid,
)

PATIENT_NAME = "MESCC^Phantom"
STUDY_DATE = "20260101"


def new_dataset(sop_class: str, sop_uid: str, syntax: str = ExplicitVRLittleEndian) -> Dataset:
    """An empty instance of ``sop_class`` with its file meta information (Part 10)."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop_uid
    return ds


@dataclass(frozen=True)
class SeriesSpec:
    """What distinguishes one written series: modality, numbers, description, UIDs."""

    modality: str  # "MR" or "CT"
    series_number: int
    description: str
    series_uid: str
    frame_uid: str


def uid_from(text: str) -> str:
    """A UID derived from ``text`` (the same phantom gets the same UIDs)."""
    return generate_uid(entropy_srcs=[text])


def _ds(value: float) -> str:
    """A decimal string of at most 16 characters."""
    text = f"{value:.6f}".rstrip("0").rstrip(".")
    return text if text not in ("", "-0") else "0"


def _pixels(image: sitk.Image, modality: str) -> tuple[np.ndarray, int]:
    """The stored values (k, j, i) and PixelRepresentation (0 unsigned, 1 signed)."""
    values = sitk.GetArrayFromImage(image).astype(np.float64)
    if modality == "CT":
        return np.clip(np.round(values), -32768, 32767).astype(np.int16), 1
    return np.clip(np.round(values), 0, 65535).astype(np.uint16), 0


def _common(ds: Dataset, *, patient_id: str, study_uid: str, spec: SeriesSpec) -> None:
    ds.PatientName = PATIENT_NAME
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "M"
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = STUDY_DATE
    ds.StudyTime = "100000"
    ds.StudyID = "1"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "MESCC phantom"
    ds.Modality = spec.modality
    ds.SeriesInstanceUID = spec.series_uid
    ds.SeriesNumber = spec.series_number
    ds.SeriesDescription = spec.description
    ds.SeriesDate = ds.ContentDate = ds.AcquisitionDate = STUDY_DATE
    ds.SeriesTime = ds.ContentTime = ds.AcquisitionTime = (
        "093000" if spec.modality == "MR" else "101000"
    )
    ds.PatientPosition = "HFS"
    ds.FrameOfReferenceUID = spec.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.Manufacturer = "MESCCAnalyzer phantom"
    ds.ManufacturerModelName = "synthetic"
    ds.BodyPartExamined = "TSPINE"


def _modality_module(ds: Dataset, modality: str) -> None:
    if modality == "MR":
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ScanningSequence = "SE"
        ds.SequenceVariant = "NONE"
        ds.ScanOptions = ""
        ds.MRAcquisitionType = "2D"
        ds.RepetitionTime = "3000"
        ds.EchoTime = "100"
        ds.EchoTrainLength = "16"
        ds.MagneticFieldStrength = "1.5"
        ds.ImagedNucleus = "1H"
    else:
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = "120"
        ds.AcquisitionNumber = 1
        ds.RescaleIntercept = "0"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"


def write_image_series(
    image: sitk.Image,
    folder: Path,
    *,
    spec: SeriesSpec,
    patient_id: str,
    study_uid: str,
) -> list[Path]:
    """Write ``image`` as one DICOM file per slice (k) into ``folder``; return the files.

    The slice geometry is the image's own (any direction): ImageOrientationPatient from its
    first two axes, ImagePositionPatient from the origin stepped along the third.
    """
    folder.mkdir(parents=True, exist_ok=True)
    stored, signed = _pixels(image, spec.modality)
    nz, ny, nx = stored.shape
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    origin = np.asarray(image.GetOrigin(), dtype=float)
    spacing = image.GetSpacing()
    sop_class = MRImageStorage if spec.modality == "MR" else CTImageStorage
    files = []
    for k in range(nz):
        sop_uid = uid_from(f"{spec.series_uid}-{k}")
        ds = new_dataset(sop_class, sop_uid)
        _common(ds, patient_id=patient_id, study_uid=study_uid, spec=spec)
        _modality_module(ds, spec.modality)
        ds.InstanceNumber = k + 1
        position = origin + direction[:, 2] * spacing[2] * k
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing, column spacing
        ds.SliceThickness = _ds(spacing[2])
        ds.SliceLocation = _ds(float(position @ np.cross(direction[:, 0], direction[:, 1])))
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = signed
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        path = folder / f"{spec.modality}{k + 1:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


def write_mri_ct_dicom(
    t2: sitk.Image,
    ct: sitk.Image,
    out_dir: Path,
    *,
    patient_id: str,
    study_uid: str,
    scanner_frame_uid: str,
) -> dict[str, str]:
    """Write the T2 (``t2_dicom/``) and the CT (``ct_dicom/``, in the PET-CT scanner's frame)
    into ``out_dir``; return the folder names by key, for ``truth.json``."""
    write_mri_dicom(t2, out_dir, patient_id=patient_id, study_uid=study_uid)
    ct_spec = SeriesSpec(
        "CT",
        2,
        "CT of the PET-CT (phantom)",
        uid_from(f"ct-series-{patient_id}"),
        scanner_frame_uid,
    )
    write_image_series(
        ct, out_dir / "ct_dicom", spec=ct_spec, patient_id=patient_id, study_uid=study_uid
    )
    return {"t2_dicom": "t2_dicom", "ct_dicom": "ct_dicom"}


def mri_frame_uid(patient_id: str) -> str:
    """The FrameOfReferenceUID of the phantom's MRI (the T2 series, the DWI, a PET/MR's PET)."""
    return uid_from(f"frame-mri-{patient_id}")


def write_mri_dicom(t2: sitk.Image, out_dir: Path, *, patient_id: str, study_uid: str) -> dict:
    """Write the T2 as ``t2_dicom/`` (in the MRI's frame, :func:`mri_frame_uid`)."""
    spec = SeriesSpec(
        "MR",
        1,
        "T2 axial (phantom)",
        uid_from(f"t2-series-{patient_id}"),
        mri_frame_uid(patient_id),
    )
    write_image_series(
        t2, out_dir / "t2_dicom", spec=spec, patient_id=patient_id, study_uid=study_uid
    )
    return {"t2_dicom": "t2_dicom"}
