"""Bringing a study into the scene: files or the sample phantom, PET as SUV."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from ..errors import InputError
from ..io.dwi import load_dwi
from ..io.study import load_image
from ..pet.suv import pet_to_suv
from ..phantom import write_phantom
from ..progress import CancelCallback, ProgressCallback, sub_progress
from .diffusion import add_dwi_node
from .nodes import add_volume_node

#: a volume node's attribute naming the folder of the DICOM series it was read from (the
#: phantom writes its T2 and CT also as DICOM): what *Export to DICOM* references.
DICOM_SERIES_ATTRIBUTE = "MESCC.DicomSeries"


@dataclass
class StudyNodes:
    """The volume nodes of a loaded study (None where the study has no such image)."""

    mri: object
    t1: object | None = None
    ct: object | None = None
    pet: object | None = None
    labels: object | None = None
    vertebrae: object | None = None  # a VerSe vertebra labelmap (names the levels)
    dwi: object | None = None  # the diffusion series as a vtkMRMLDiffusionWeightedVolumeNode
    truth: dict | None = None
    folder: Path | None = None


def load_phantom_study(
    scene,
    folder: str | os.PathLike,
    *,
    grade: str = "2",
    seed: int = 0,
    dwi: bool = False,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> StudyNodes:
    """ "Load sample study": write the phantom into ``folder`` (if not there) and load it.

    The PET is read from its DICOM series and converted to SUVbw on the way, as a real PET
    would be; the CT and PET keep their scanner frame (registration brings them onto the MRI).
    ``dwi``: the phantom with its diffusion series (DICOM, standard tags), loaded as a DWI node.
    """
    folder = Path(folder)
    written = (folder / "truth.json").is_file()
    if written and dwi and not (folder / "dwi_dicom").is_dir():
        written = False  # an earlier sample without its DWI: written again, with it
    if not written:
        write_phantom(
            folder,
            grade,
            seed,
            dwi_layout="standard" if dwi else None,
            progress=sub_progress(progress, 0.0, 0.7),
            cancel=cancel,
        )
    return load_study_folder(scene, folder, progress=sub_progress(progress, 0.7, 1.0))


def load_study_folder(
    scene, folder: str | os.PathLike, *, progress: ProgressCallback | None = None
) -> StudyNodes:
    """Load a folder laid out as the phantom writes it (t2, t1, ct, pet_dicom, labels, the
    whole-spine phantom's vertebrae: a VerSe labelmap, hidden, that names the levels, and the
    diffusion series dwi_dicom as a DWI node)."""

    folder = Path(folder)
    t2_path = folder / "t2.nii.gz"
    if not t2_path.is_file():
        raise InputError("no t2.nii.gz in the study folder", path=folder)
    report = progress or (lambda f, m: None)
    stem = folder.name or "study"
    report(0.0, "MRI")
    nodes = StudyNodes(mri=add_volume_node(scene, load_image(t2_path), f"{stem} T2"), folder=folder)
    _note_dicom_series(nodes.mri, folder / "t2_dicom")
    if (folder / "t1.nii.gz").is_file():
        nodes.t1 = add_volume_node(scene, load_image(folder / "t1.nii.gz"), f"{stem} T1")
    report(0.4, "CT")
    if (folder / "ct.nii.gz").is_file():
        nodes.ct = add_volume_node(scene, load_image(folder / "ct.nii.gz"), f"{stem} CT")
        _note_dicom_series(nodes.ct, folder / "ct_dicom")
    report(0.6, "PET")
    if (folder / "pet_dicom").is_dir():
        suv_image, _info = pet_to_suv(folder / "pet_dicom")
        nodes.pet = add_volume_node(
            scene, sitk.Cast(suv_image, sitk.sitkFloat32), f"{stem} PET SUVbw"
        )
    if (folder / "labels.nii.gz").is_file():
        nodes.labels = add_volume_node(
            scene, load_image(folder / "labels.nii.gz"), f"{stem} truth labels", labelmap=True
        )
    if (folder / "vertebrae.nii.gz").is_file():
        nodes.vertebrae = add_volume_node(
            scene, load_image(folder / "vertebrae.nii.gz"), f"{stem} vertebrae", labelmap=True
        )
        nodes.vertebrae.GetDisplayNode().SetVisibility(False)
    if (folder / "dwi_dicom").is_dir():
        report(0.9, "DWI")
        nodes.dwi = add_dwi_node(scene, load_dwi(folder / "dwi_dicom"), f"{stem} DWI")
    if (folder / "truth.json").is_file():
        nodes.truth = json.loads((folder / "truth.json").read_text())
    report(1.0, "loaded")
    return nodes


def _note_dicom_series(node, series_folder: Path) -> None:
    if series_folder.is_dir():
        node.SetAttribute(DICOM_SERIES_ATTRIBUTE, str(series_folder.resolve()))
