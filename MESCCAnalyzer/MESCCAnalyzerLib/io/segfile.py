"""Slicer segmentation files (``.seg.nrrd``) with segment names, colours and terminology.

Written and read with ``slicerio`` (the format Slicer's segmentation storage node uses: one
labelmap layer, one ``SegmentN_*`` block of header fields per segment). Each structure carries
a standard terminology entry, DICOM style (coding scheme, code value, code meaning):

==========  ==================================================  ====================================
label       category                                            type
==========  ==================================================  ====================================
1 cord      SCT 123037004 Anatomical Structure                  SCT 2748008 Spinal cord
2 CSF       SCT 91720002 Body Substance                         SCT 65216001 Cerebrospinal fluid
3 mass      SCT 49755003 Morphologically Altered Structure      SCT 14799000 Neoplasm, metastatic
4 bone      SCT 123037004 Anatomical Structure                  SCT 421060004 Vertebral column
==========  ==================================================  ====================================

Sources: spinal cord and cerebrospinal fluid are in DICOM PS3.16 CID 7153 "CNS Segmentation
Type"; "Neoplasm, metastatic" (14799000) is DICOM's "Neoplasm, Secondary" code used for
metastatic tissue (e.g. DCMTK's ``CODE_SCT_Neoplasm_Secondary``); the categories are those of
DICOM CID 7150 "Segmentation Property Categories" as used by Slicer's terminology files.
Colours follow Slicer's general-anatomy colour table spirit (cord yellow, CSF light blue, mass
red-brown, bone ivory).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .. import LABEL_BONE, LABEL_CORD, LABEL_CSF, LABEL_MASS, LABEL_NAMES
from ..errors import InputError
from ..geometry import index_to_lps_matrix
from ..outputs import atomic_path

TERMINOLOGY_CONTEXT = "Segmentation category and type - 3D Slicer General Anatomy list"


@dataclass(frozen=True)
class SegmentInfo:
    """Name, colour (0-1 RGB) and terminology (category, type as scheme, code, meaning)."""

    label: int
    name: str
    color: tuple[float, float, float]
    category: tuple[str, str, str]
    type: tuple[str, str, str]

    def terminology(self) -> dict:
        return {
            "contextName": TERMINOLOGY_CONTEXT,
            "category": list(self.category),
            "type": list(self.type),
        }


_ANATOMY = ("SCT", "123037004", "Anatomical Structure")
SEGMENTS: dict[int, SegmentInfo] = {
    LABEL_CORD: SegmentInfo(
        LABEL_CORD,
        LABEL_NAMES[LABEL_CORD],
        (1.0, 0.98, 0.50),
        _ANATOMY,
        ("SCT", "2748008", "Spinal cord"),
    ),
    LABEL_CSF: SegmentInfo(
        LABEL_CSF,
        LABEL_NAMES[LABEL_CSF],
        (0.53, 0.81, 0.98),
        ("SCT", "91720002", "Body Substance"),
        ("SCT", "65216001", "Cerebrospinal fluid"),
    ),
    LABEL_MASS: SegmentInfo(
        LABEL_MASS,
        LABEL_NAMES[LABEL_MASS],
        (0.85, 0.25, 0.20),
        ("SCT", "49755003", "Morphologically Altered Structure"),
        ("SCT", "14799000", "Neoplasm, metastatic"),
    ),
    LABEL_BONE: SegmentInfo(
        LABEL_BONE,
        LABEL_NAMES[LABEL_BONE],
        (0.94, 0.91, 0.81),
        _ANATOMY,
        ("SCT", "421060004", "Vertebral column"),
    ),
}
"""The four structures of the labelmap convention, keyed by label value."""

OTHER_SEGMENT = SegmentInfo(
    0, "other", (0.5, 0.5, 0.5), ("SCT", "85756007", "Tissue"), ("SCT", "85756007", "Tissue")
)
"""The "other" tissue used as competing seeds (never written to a result file)."""


def write_seg_nrrd(labelmap: sitk.Image, path: str | os.PathLike, *, labels=None) -> None:
    """Write a labelmap (1 cord, 2 CSF, 3 mass, 4 bone) as a Slicer ``.seg.nrrd``, atomically.

    Every structure of ``labels`` (default: the four) becomes a segment with its name, colour
    and terminology, even when empty (so the file always has the same segments). Label values
    in the file are the project's (1-4).
    """
    import slicerio

    labels = list(labels) if labels is not None else list(SEGMENTS)
    arr = sitk.GetArrayFromImage(labelmap)
    voxels = np.ascontiguousarray(np.transpose(arr, (2, 1, 0))).astype(np.uint8)
    voxels[~np.isin(voxels, labels)] = 0
    segments = []
    for label in labels:
        info = SEGMENTS[label]
        segment = {
            "id": f"Segment_{label}",
            "name": info.name,
            "labelValue": int(label),
            "layer": 0,
            "color": list(info.color),
            "terminology": info.terminology(),
        }
        mask = voxels == label
        if mask.any():
            nz = np.nonzero(mask)
            segment["extent"] = [int(v) for axis in nz for v in (axis.min(), axis.max())]
        else:
            segment["extent"] = [0, -1, 0, -1, 0, -1]
        segments.append(segment)
    segmentation = {
        "voxels": voxels,
        "ijkToLPS": index_to_lps_matrix(labelmap),
        "encoding": "gzip",
        "containedRepresentationNames": ["Binary labelmap", "Closed surface"],
        "masterRepresentation": "Binary labelmap",
        "referenceImageExtentOffset": [0, 0, 0],
        "segments": segments,
    }
    with atomic_path(path) as tmp:
        slicerio.write_segmentation(str(tmp), segmentation)


def read_seg_nrrd(
    path: str | os.PathLike, reference: sitk.Image | None = None
) -> tuple[sitk.Image, list[dict]]:
    """Read a ``.seg.nrrd`` into a labelmap in the project's convention, and its segments.

    Segments are matched to labels by terminology type code (then by name); unknown segments
    keep no label. With ``reference`` the result is resampled (nearest) onto its grid. Raises
    :class:`InputError` on an unreadable file or overlapping segments (several layers).
    """
    import slicerio

    try:
        seg = slicerio.read_segmentation(str(path))
    except Exception as exc:  # slicerio/pynrrd raise various errors on a bad file
        raise InputError(f"cannot read the segmentation: {exc}", path=path) from exc
    voxels = np.asarray(seg["voxels"])
    if voxels.ndim == 4:
        raise InputError("the segmentation has overlapping segments (several layers)", path=path)
    by_code = {info.type[1]: label for label, info in SEGMENTS.items()}
    by_name = {info.name: label for label, info in SEGMENTS.items()}
    out = np.zeros(voxels.shape, dtype=np.uint8)
    for segment in seg["segments"]:
        code = (segment.get("terminology") or {}).get("type", [None, None])[1]
        label = by_code.get(code, by_name.get(segment.get("name")))
        if label is not None:
            out[voxels == segment["labelValue"]] = label
    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(out, (2, 1, 0))))
    matrix = np.asarray(seg["ijkToLPS"], dtype=float)
    spacing = np.linalg.norm(matrix[:3, :3], axis=0)
    image.SetSpacing(tuple(float(v) for v in spacing))
    image.SetDirection(tuple(float(v) for v in (matrix[:3, :3] / spacing[None, :]).ravel()))
    image.SetOrigin(tuple(float(v) for v in matrix[:3, 3]))
    if reference is not None:
        image = sitk.Resample(
            image, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
        )
    return image, list(seg["segments"])
