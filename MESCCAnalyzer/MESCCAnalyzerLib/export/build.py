"""The three DICOM objects of an analysis, built in memory and written as one folder.

:func:`build_exports` checks everything first (the MRI and the CT are DICOM series, the
segmentation lies on the MRI's grid, the CT is in the MRI's frame of reference or a
registration carries the MRI onto it) and raises :class:`InputError` before anything is
built; :func:`write_exports` writes ``seg.dcm``, ``sr.dcm``, ``rtstruct.dcm`` (with a CT) and
``planning.json`` into a folder as a whole. Every front end calls these two: ``mescc export``
(from an analysis folder, :func:`load_analysis`), ``mescc analyze --dicom-out`` and the Slicer
panel's *Export to DICOM* (which then adds the files to Slicer's DICOM database).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset

from ..errors import InputError
from ..io.segfile import read_seg_nrrd
from ..io.study import Volume, load_image
from ..measure.margins import DEFAULT_PRV_MM, check_margin, dilated_onto
from ..measure.metrics import LESION_MAP_FILE
from ..outputs import atomic_dir, write_json
from .codes import CORD
from .planning import planning_summary
from .rtstruct import ct_rois, make_rtstruct
from .seg import make_seg
from .sources import SourceSeries, same_grid, source_series
from .sr import make_sr
from .structures import Lesion, export_structures, lesions_from_labels, mask_image

SEG_FILE, SR_FILE, RTSTRUCT_FILE, PLANNING_FILE = (
    "seg.dcm",
    "sr.dcm",
    "rtstruct.dcm",
    "planning.json",
)


@dataclass
class DicomExports:
    """SEG and SR on the MRI, RTSTRUCT on the CT (None without a CT), and ``planning.json``."""

    seg: Dataset
    sr: Dataset
    rtstruct: Dataset | None
    planning: dict

    def files(self) -> dict[str, Dataset]:
        """The DICOM objects by file name."""
        found = {SEG_FILE: self.seg, SR_FILE: self.sr}
        if self.rtstruct is not None:
            found[RTSTRUCT_FILE] = self.rtstruct
        return found


@dataclass
class ExportSources:
    """The checked inputs of the exports: the series to reference and how the MRI maps onto
    the CT (MRI LPS -> CT LPS)."""

    mri: SourceSeries
    ct: SourceSeries | None = None
    mri_to_ct: sitk.Transform | None = None


def check_sources(
    mri: Volume, ct: Volume | None = None, mri_to_ct: sitk.Transform | None = None
) -> ExportSources:
    """The MRI (and CT) as DICOM series, and the map from the MRI onto the CT.

    Without a registration the CT must share the MRI's frame of reference (same
    FrameOfReferenceUID); otherwise nothing says where the MRI's structures lie on it.
    """
    sources = ExportSources(source_series(mri, "the MRI"))
    if ct is None:
        return sources
    sources.ct = source_series(ct, "the CT")
    if mri_to_ct is None:
        if not sources.ct.frame_uid or sources.ct.frame_uid != sources.mri.frame_uid:
            raise InputError(
                "the CT is in another frame of reference than the MRI and there is no "
                "registration to carry the structures onto it",
                path=ct.source,
                hint="analyse with this CT (mescc analyze --ct) so that it is registered to the MRI",
            )
        mri_to_ct = sitk.Transform()
    sources.mri_to_ct = mri_to_ct
    return sources


def _empty(image: sitk.Image) -> np.ndarray:
    return np.zeros(image.GetSize()[::-1], dtype=bool)


def build_exports(
    sources: ExportSources,
    labels: sitk.Image,
    metrics: dict,
    *,
    lesions: Sequence[Lesion] | None = None,
    lesion_map: sitk.Image | None = None,
    prv_mm: float = DEFAULT_PRV_MM,
) -> DicomExports:
    """SEG, SR and RTSTRUCT of a segmentation (labels 1-4 on the MRI grid) and its metrics.

    ``lesions`` default to :func:`lesions_from_labels` (``metrics["lesions"]`` with their
    voxels in ``lesion_map``).
    """
    prv_mm = check_margin(prv_mm)
    mri_image = sources.mri.image
    if not same_grid(labels, mri_image):
        raise InputError(
            "the segmentation does not lie on the MRI's grid (another MRI was analysed)",
            path=sources.mri.source,
            hint="give the MRI series the analysis was made on",
        )
    lesions = (
        list(lesions) if lesions is not None else lesions_from_labels(labels, metrics, lesion_map)
    )
    structures = export_structures(labels, lesions)
    if not structures:
        raise InputError("the segmentation is empty: there is nothing to export")
    rois = None
    if sources.ct is not None:
        rois = ct_rois(structures, mri_image, sources.ct.image, sources.mri_to_ct, prv_mm=prv_mm)
        prv = next((r for r in rois if r.interpreted_type == "AVOIDANCE"), None)
        prv_kji = prv.mask_kji if prv is not None else _empty(sources.ct.image)
        prv_image, grid = mask_image(prv_kji, sources.ct.image), "CT"
    else:
        cord = next((s for s in structures if s.code is CORD), None)
        cord_kji = cord.mask_kji if cord is not None else _empty(mri_image)
        cord_image = mask_image(cord_kji, mri_image)
        prv_image = dilated_onto(cord_image, mri_image, sitk.Transform(), prv_mm)
        grid = "MRI"
    planning = planning_summary(prv_image, lesions, prv_mm=prv_mm, grid=grid)
    seg = make_seg(sources.mri, structures)
    sr = make_sr(sources.mri, seg, structures, planning, metrics.get("levels") or ())
    rtstruct = make_rtstruct(sources.ct, rois) if sources.ct is not None else None
    return DicomExports(seg, sr, rtstruct, planning)


def write_exports(exports: DicomExports, out_dir: str | os.PathLike) -> Path:
    """Write the objects and ``planning.json`` into ``out_dir`` as a whole (atomically)."""
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        for name, dataset in exports.files().items():
            dataset.save_as(tmp / name, enforce_file_format=True)
        write_json(tmp / PLANNING_FILE, exports.planning)
    return out


# ---------------------------------------------------------------------------------------
# An analysis folder (mescc analyze's output)
# ---------------------------------------------------------------------------------------
@dataclass
class SavedAnalysis:
    """What ``mescc export`` reads from an analysis folder."""

    labels: sitk.Image
    metrics: dict
    mri_to_ct: sitk.Transform | None
    lesion_map: sitk.Image | None = None


def load_analysis(folder: str | os.PathLike, mri: sitk.Image) -> SavedAnalysis:
    """The segmentation (on ``mri``'s grid), ``metrics.json`` and the registration of an
    analysis folder; :class:`InputError` naming what is missing."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError("no such analysis folder", path=folder)
    seg_path, metrics_path = folder / "segmentation.seg.nrrd", folder / "metrics.json"
    for path in (seg_path, metrics_path):
        if not path.is_file():
            raise InputError(
                f"not an analysis folder: {path.name} is missing",
                path=folder,
                hint="give the --out folder of mescc analyze",
            )
    labels, _ = read_seg_nrrd(seg_path)
    if not same_grid(labels, mri):
        raise InputError(
            "the analysis's segmentation does not lie on this MRI's grid",
            path=seg_path,
            hint="give the MRI series the analysis was made on",
        )
    labels.CopyInformation(mri)  # the same grid up to rounding: take the MRI's exactly
    try:
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read metrics.json: {exc}", path=metrics_path) from None
    transform_path = folder / "ct_to_mri.tfm"
    transform = None
    if transform_path.is_file():
        try:
            transform = sitk.ReadTransform(str(transform_path))
        except RuntimeError:
            raise InputError("cannot read the registration", path=transform_path) from None
    lesion_map = None
    map_path = folder / LESION_MAP_FILE
    if map_path.is_file():
        lesion_map = load_image(map_path)
        if not same_grid(lesion_map, mri):
            raise InputError("the lesion map does not lie on the MRI's grid", path=map_path)
        lesion_map.CopyInformation(mri)
    return SavedAnalysis(labels, metrics, transform, lesion_map)
