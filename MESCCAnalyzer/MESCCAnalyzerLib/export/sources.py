"""The DICOM series the exports refer to: the reference MRI (SEG, SR) and the planning CT
(RTSTRUCT), one dataset per slice in the order of the image's slices (k)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.errors import InvalidDicomError

from ..errors import InputError
from ..io.study import Volume


@dataclass
class SourceSeries:
    """A loaded DICOM series: its image and its slices' datasets, ``slices[k]`` for slice k."""

    image: sitk.Image
    slices: list[pydicom.Dataset]
    source: Path

    @property
    def frame_uid(self) -> str:
        return str(self.slices[0].get("FrameOfReferenceUID", ""))

    @property
    def series_uid(self) -> str:
        return str(self.slices[0].SeriesInstanceUID)

    @property
    def study_uid(self) -> str:
        return str(self.slices[0].StudyInstanceUID)

    def slice_at(self, point_lps) -> pydicom.Dataset:
        """The slice nearest a point (LPS, mm)."""
        index = self.image.TransformPhysicalPointToContinuousIndex(tuple(map(float, point_lps)))
        k = int(np.clip(round(index[2]), 0, len(self.slices) - 1))
        return self.slices[k]


def source_series(volume: Volume, role: str) -> SourceSeries:
    """The slices of a volume loaded from a DICOM series, in the image's k order.

    ``role`` names the series in messages ("the MRI", "the CT"). Raises :class:`InputError`
    when the volume was not read from single-frame DICOM files covering every slice.
    """
    image = volume.image
    if volume.format != "DICOM" or not volume.files:
        raise InputError(
            f"{role} is not a DICOM series ({volume.format or 'not DICOM'}); the DICOM exports "
            "reference its slices by their UIDs",
            path=volume.source,
            hint=f"give {role} as the folder of its DICOM series",
        )
    slices = []
    for path in volume.files:
        try:
            slices.append(pydicom.dcmread(path))
        except (InvalidDicomError, OSError) as exc:
            raise InputError(f"cannot read a slice of {role}: {exc}", path=path) from None
    nk = image.GetSize()[2]
    if len(slices) != nk or any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in slices):
        raise InputError(
            f"{role} must be a series of single-frame slices ({len(slices)} files for {nk} slices)",
            path=volume.source,
        )
    normal = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)[:, 2]
    origin = np.asarray(image.GetOrigin(), dtype=float)
    spacing = image.GetSpacing()[2]
    ordered: list = [None] * nk
    for ds in slices:
        position = np.asarray([float(v) for v in ds.ImagePositionPatient])
        k = int(round(float((position - origin) @ normal) / spacing))
        if not 0 <= k < nk or ordered[k] is not None:
            raise InputError(
                f"the slice positions of {role} do not match its volume", path=volume.source
            )
        ordered[k] = ds
    return SourceSeries(image, ordered, Path(volume.source))


def same_grid(a: sitk.Image, b: sitk.Image, *, tol_mm: float = 0.01) -> bool:
    """Whether two images share size, spacing, origin and direction."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), atol=1e-4)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=tol_mm)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-4)
    )
