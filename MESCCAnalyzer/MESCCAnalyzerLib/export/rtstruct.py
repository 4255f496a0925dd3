"""RT Structure Set (RTSTRUCT) on the planning CT (pydicom).

The CT, not the MRI, is what planning systems plan on: each structure's mask (MRI grid) is
carried onto the CT grid through the registration (nearest neighbour, the transform mapping
MRI points to CT points), and outlined on every CT slice it crosses. The outlines are the 0.5
iso-lines of the slice's mask (marching squares): they pass half-way between inside and
outside voxel centres, so a planning system that fills them (even-odd rule for nested
outlines) gets back the voxels the mask holds.

Structures and RT ROI Interpreted Types: the cord (ORGAN), the cord's planning risk volume
(the cord on the CT dilated by the margin; AVOIDANCE), the thecal sac (ORGAN) and each lesion
(GTV).
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import vtk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import ExplicitVRLittleEndian, RTStructureSetStorage, generate_uid
from vtk.util.numpy_support import numpy_to_vtk, vtk_to_numpy

from .. import __version__
from ..measure.margins import dilated_onto, inverse_of
from ..registration import resample_onto
from .codes import CORD, PRV_COLOR, THECAL_SAC
from .seg import MANUFACTURER
from .sources import SourceSeries
from .structures import Structure, mask_image

RTSTRUCT_SERIES_NUMBER = 102
STUDY_COMPONENT_MANAGEMENT = "1.2.840.10008.3.1.2.3.2"  # Referenced SOP Class of the study


@dataclass
class Roi:
    """One structure of the structure set: its mask on the CT grid (kji) and how it is typed."""

    name: str
    interpreted_type: str  # ORGAN, AVOIDANCE, GTV
    color: tuple[float, float, float]
    mask_kji: np.ndarray


def carry_to_ct(mask_kji: np.ndarray, mri: sitk.Image, ct: sitk.Image, mri_to_ct) -> np.ndarray:
    """A mask on the MRI grid resampled (nearest neighbour) onto the CT grid.

    ``mri_to_ct`` maps MRI points to CT points (``ct_to_mri.tfm`` as the registration writes
    it maps the fixed MRI to the moving CT); resampling onto the CT needs the CT -> MRI map,
    its inverse.
    """
    ct_to_mri = inverse_of(mri_to_ct, ct)
    moved = resample_onto(mask_image(mask_kji, mri), ct, ct_to_mri, labelmap=True)
    return sitk.GetArrayFromImage(moved) > 0


def ct_rois(
    structures: Sequence[Structure], mri: sitk.Image, ct: sitk.Image, mri_to_ct, *, prv_mm: float
) -> list[Roi]:
    """The structure set's ROIs on the CT grid: cord, cord PRV, thecal sac, each lesion."""
    rois = []
    for s in structures:
        if s.code is CORD:
            cord = carry_to_ct(s.mask_kji, mri, ct, mri_to_ct)
            rois.append(Roi("cord", "ORGAN", s.code.color, cord))
            ct_to_mri = inverse_of(mri_to_ct, ct)
            prv = dilated_onto(mask_image(s.mask_kji, mri), ct, ct_to_mri, prv_mm)
            prv_kji = sitk.GetArrayFromImage(prv) > 0
            rois.append(Roi(f"cord PRV {prv_mm:g}mm", "AVOIDANCE", PRV_COLOR, prv_kji))
        elif s.code is THECAL_SAC:
            rois.append(
                Roi(
                    "thecal sac", "ORGAN", s.code.color, carry_to_ct(s.mask_kji, mri, ct, mri_to_ct)
                )
            )
        elif s.lesion is not None:
            rois.append(
                Roi(
                    f"GTV {s.name}",
                    "GTV",
                    s.code.color,
                    carry_to_ct(s.mask_kji, mri, ct, mri_to_ct),
                )
            )
    return [r for r in rois if r.mask_kji.any()]


# ---------------------------------------------------------------------------------------
# Outlines
# ---------------------------------------------------------------------------------------
def slice_outlines(mask_ji: np.ndarray) -> list[np.ndarray]:
    """Closed outlines (each an (N, 2) array of fractional (i, j) indices) of a 2D mask: its
    0.5 iso-lines, one per boundary loop (outer boundaries and holes alike)."""
    ny, nx = mask_ji.shape
    padded = np.zeros((ny + 2, nx + 2), dtype=np.float32)
    padded[1:-1, 1:-1] = mask_ji
    image = vtk.vtkImageData()
    image.SetDimensions(nx + 2, ny + 2, 1)
    image.SetOrigin(-1.0, -1.0, 0.0)
    image.GetPointData().SetScalars(numpy_to_vtk(padded.ravel(), deep=True))
    contour = vtk.vtkFlyingEdges2D()
    contour.SetInputData(image)
    contour.SetValue(0, 0.5)
    stripper = vtk.vtkStripper()
    stripper.SetInputConnection(contour.GetOutputPort())
    stripper.JoinContiguousSegmentsOn()
    stripper.Update()
    polydata = stripper.GetOutput()
    if polydata.GetNumberOfPoints() == 0:
        return []
    points = vtk_to_numpy(polydata.GetPoints().GetData())[:, :2]
    cells = polydata.GetLines()
    offsets = vtk_to_numpy(cells.GetOffsetsArray())
    connectivity = vtk_to_numpy(cells.GetConnectivityArray())
    loops = []
    for begin, end in zip(offsets[:-1], offsets[1:], strict=True):
        ids = connectivity[begin:end]
        n = len(ids)
        if n > 1 and ids[0] == ids[-1]:
            ids = ids[:-1]
        if len(ids) >= 3:
            loops.append(points[ids].astype(float))
    return loops


def _ds_list(values) -> list[str]:
    return [f"{v:.4f}".rstrip("0").rstrip(".") or "0" for v in values]


def _contour_sequence(roi: Roi, ct: SourceSeries) -> list[Dataset]:
    image = ct.image
    matrix = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3) * np.asarray(
        image.GetSpacing()
    )
    origin = np.asarray(image.GetOrigin(), dtype=float)
    contours = []
    for k in np.flatnonzero(roi.mask_kji.any(axis=(1, 2))):
        ref = Dataset()
        ref.ReferencedSOPClassUID = ct.slices[k].SOPClassUID
        ref.ReferencedSOPInstanceUID = ct.slices[k].SOPInstanceUID
        for loop in slice_outlines(roi.mask_kji[k]):
            ijk = np.column_stack([loop, np.full(len(loop), float(k))])
            lps = origin + ijk @ matrix.T
            item = Dataset()
            item.ContourImageSequence = DicomSequence([ref])
            item.ContourGeometricType = "CLOSED_PLANAR"
            item.NumberOfContourPoints = len(lps)
            item.ContourNumber = len(contours) + 1
            item.ContourData = _ds_list(lps.ravel())
            contours.append(item)
    return contours


# ---------------------------------------------------------------------------------------
# The structure set
# ---------------------------------------------------------------------------------------
def _copy_patient_and_study(ds: Dataset, source: Dataset) -> None:
    for keyword in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "StudyTime",
        "StudyID",
        "AccessionNumber",
        "ReferringPhysicianName",
        "StudyDescription",
    ):
        value = source.get(keyword)
        setattr(ds, keyword, value if value is not None else "")


def make_rtstruct(ct: SourceSeries, rois: Sequence[Roi]) -> Dataset:
    """The RT Structure Set of ``rois`` (masks on ``ct``'s grid) referencing ``ct``'s slices."""
    now = datetime.datetime.now()
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = RTStructureSetStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = sop_uid
    _copy_patient_and_study(ds, ct.slices[0])
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = RTSTRUCT_SERIES_NUMBER
    ds.SeriesDescription = "MESCC structures"
    ds.OperatorsName = ""
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = "mescc"
    ds.SoftwareVersions = __version__
    ds.InstanceNumber = 1
    ds.FrameOfReferenceUID = ct.frame_uid
    ds.PositionReferenceIndicator = ""
    ds.StructureSetLabel = "MESCC"
    ds.StructureSetName = "MESCC structures"
    ds.StructureSetDate = ds.SeriesDate = now.strftime("%Y%m%d")
    ds.StructureSetTime = ds.SeriesTime = now.strftime("%H%M%S")

    images = []
    for s in ct.slices:
        item = Dataset()
        item.ReferencedSOPClassUID = s.SOPClassUID
        item.ReferencedSOPInstanceUID = s.SOPInstanceUID
        images.append(item)
    series = Dataset()
    series.SeriesInstanceUID = ct.series_uid
    series.ContourImageSequence = DicomSequence(images)
    study = Dataset()
    study.ReferencedSOPClassUID = STUDY_COMPONENT_MANAGEMENT
    study.ReferencedSOPInstanceUID = ct.study_uid
    study.RTReferencedSeriesSequence = DicomSequence([series])
    frame = Dataset()
    frame.FrameOfReferenceUID = ct.frame_uid
    frame.RTReferencedStudySequence = DicomSequence([study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])

    roi_items, contour_items, observations = [], [], []
    for number, roi in enumerate(rois, start=1):
        item = Dataset()
        item.ROINumber = number
        item.ReferencedFrameOfReferenceUID = ct.frame_uid
        item.ROIName = roi.name
        item.ROIGenerationAlgorithm = "SEMIAUTOMATIC"
        roi_items.append(item)
        contour = Dataset()
        contour.ROIDisplayColor = [int(round(255 * c)) for c in roi.color]
        contour.ReferencedROINumber = number
        contour.ContourSequence = DicomSequence(_contour_sequence(roi, ct))
        contour_items.append(contour)
        observation = Dataset()
        observation.ObservationNumber = number
        observation.ReferencedROINumber = number
        observation.ROIObservationLabel = roi.name
        observation.RTROIInterpretedType = roi.interpreted_type
        observation.ROIInterpreter = ""
        observations.append(observation)
    ds.StructureSetROISequence = DicomSequence(roi_items)
    ds.ROIContourSequence = DicomSequence(contour_items)
    ds.RTROIObservationsSequence = DicomSequence(observations)
    ds.ApprovalStatus = "UNAPPROVED"
    return ds
