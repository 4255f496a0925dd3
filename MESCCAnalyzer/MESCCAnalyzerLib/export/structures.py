"""The structures the DICOM exports carry, as masks on the MRI grid: cord, CSF, thecal sac,
each lesion, vertebrae.

A study may hold several lesions (epidural masses); each comes with its own mask (the lesion
map the metrics write) and its own metrics (its entry of ``metrics.json``'s ``lesions``),
see :func:`lesions_from_labels`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .. import LABEL_BONE, LABEL_CORD, LABEL_CSF, LABEL_MASS
from ..errors import InputError
from ..measure.metrics import LESION_MAP_FILE
from .codes import CORD, CSF, LESION, THECAL_SAC, VERTEBRAE, SegmentCode


@dataclass
class Lesion:
    """One epidural lesion: its number (1, 2, ...), mask (kji, MRI grid) and metrics."""

    number: int
    mask_kji: np.ndarray
    metrics: dict = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"lesion {self.number}"


@dataclass
class Structure:
    """A mask (kji, bool, on the MRI grid) with its name and codes."""

    name: str
    code: SegmentCode
    mask_kji: np.ndarray
    lesion: Lesion | None = None


def lesions_from_labels(
    labels: sitk.Image, metrics: dict, lesion_map: sitk.Image | None = None
) -> list[Lesion]:
    """The analysis's lesions: each entry of ``metrics["lesions"]`` with its voxels in
    ``lesion_map`` (the lesion ids the metrics wrote, ``lesions.nii.gz``). Without a lesion
    list (an older analysis) or a map, the mass label is lesion 1 with the study's metrics;
    none when the mass is empty."""
    entries = metrics.get("lesions")
    if entries is not None and lesion_map is not None:
        ids = sitk.GetArrayFromImage(lesion_map)
        return [Lesion(int(e["id"]), ids == int(e["id"]), dict(e)) for e in entries]
    if entries is not None and len(entries) > 1:
        raise InputError(
            f"the analysis has {len(entries)} lesions but no lesion map ({LESION_MAP_FILE})",
            hint="run mescc analyze again with this version",
        )
    mass = sitk.GetArrayFromImage(labels) == LABEL_MASS
    if not mass.any():
        return []
    values = dict(entries[0]) if entries else dict(metrics)
    return [Lesion(1, mass, values)]


def thecal_sac_kji(labels_kji: np.ndarray) -> np.ndarray:
    """The thecal sac: what lies inside the dura, the cord and the CSF around it."""
    return np.isin(labels_kji, (LABEL_CORD, LABEL_CSF))


def export_structures(labels: sitk.Image, lesions: Sequence[Lesion]) -> list[Structure]:
    """The SEG's segments in order: cord, CSF, thecal sac, each lesion, vertebrae (the empty
    ones left out)."""
    arr = sitk.GetArrayFromImage(labels)
    found = [
        Structure(CORD.name, CORD, arr == LABEL_CORD),
        Structure(CSF.name, CSF, arr == LABEL_CSF),
        Structure(THECAL_SAC.name, THECAL_SAC, thecal_sac_kji(arr)),
        *(
            Structure(lesion.name, LESION, np.asarray(lesion.mask_kji, bool), lesion)
            for lesion in lesions
        ),
        Structure("vertebrae", VERTEBRAE, arr == LABEL_BONE),
    ]
    return [s for s in found if s.mask_kji.any()]


def mask_image(mask_kji: np.ndarray, reference: sitk.Image) -> sitk.Image:
    """A uint8 0/1 image of ``mask_kji`` on ``reference``'s grid."""
    image = sitk.GetImageFromArray(np.asarray(mask_kji, dtype=np.uint8))
    image.CopyInformation(reference)
    return image
