"""Grow from seeds on a segmentation node edited with Slicer's Segment Editor.

Segments are recognised by name (``cord``/``spinal_cord``, ``csf``, ``mass``/``epidural_mass``,
``bone``/``vertebrae``; anything starting with ``other`` is competing "other" tissue, each such
segment its own label). The grown structures replace the content of their own segments; the
"other" segments keep the user's strokes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from ..errors import InputError
from ..io.segfile import OTHER_SEGMENT, SEGMENTS
from ..segmentation.grow import STRUCTURE_LABELS, SeedGrower, label_from_text
from .nodes import (
    add_volume_node,
    ensure_segmentation_converters,
    image_from_volume_node,
    set_geometry_from_ras,
)


def _terminology_string(info) -> str:
    category = "^".join(info.category)
    type_ = "^".join(info.type)
    return f"Segmentation category and type - 3D Slicer General Anatomy list~{category}~{type_}~^^~Anatomic codes - DICOM master list~^^~^^"


def create_mescc_segmentation_node(scene, reference_volume_node, name: str = "MESCC segmentation"):
    """A segmentation node with empty segments cord, CSF, mass, bone and other, named,
    coloured and tagged with their terminology, on the reference volume's geometry."""
    ensure_segmentation_converters(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", scene.GenerateUniqueName(name))
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
    segmentation = node.GetSegmentation()
    for info in [*SEGMENTS.values(), OTHER_SEGMENT]:
        segment_id = segmentation.AddEmptySegment(info.name, info.name, list(info.color))
        segmentation.GetSegment(segment_id).SetTag("TerminologyEntry", _terminology_string(info))
    return node


def _segment_labels(segmentation_node) -> tuple[list[str], list[int]]:
    segmentation = segmentation_node.GetSegmentation()
    ids, labels = [], []
    next_other = 5
    for n in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(n)
        name = segmentation.GetSegment(segment_id).GetName().strip().lower()
        if name.startswith("other"):
            label = next_other
            next_other += 1
        else:
            label = label_from_text(name)
            if label is None or label > 4:
                continue  # a segment the growth does not know: left alone
        ids.append(segment_id)
        labels.append(label)
    return ids, labels


def _string_array(values: Sequence[str]) -> vtk.vtkStringArray:
    array = vtk.vtkStringArray()
    for v in values:
        array.InsertNextValue(v)
    return array


def seeds_from_segmentation_node(segmentation_node, reference_volume_node) -> sitk.Image:
    """The seed labelmap (on the reference volume's grid) painted in the segmentation node."""
    scene = segmentation_node.GetScene()
    logic = ensure_segmentation_converters(scene)
    ids, labels = _segment_labels(segmentation_node)
    if not ids:
        raise ValueError("The segmentation has no cord, CSF, mass, bone or other segment to grow.")
    reference = image_from_volume_node(reference_volume_node)
    seeds = np.zeros(reference.GetSize()[::-1], dtype=np.uint16)
    temp = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__mescc_seeds__")
    try:
        for segment_id, label in zip(ids, labels, strict=True):
            if not logic.ExportSegmentsToLabelmapNode(
                segmentation_node, _string_array([segment_id]), temp, reference_volume_node
            ):
                raise ValueError(
                    f"Segment {segment_id} could not be exported onto the source volume."
                )
            mask = slicer.util.arrayFromVolume(temp) != 0
            if mask.shape == seeds.shape:
                seeds[mask] = label
    finally:
        scene.RemoveNode(temp)
    image = sitk.GetImageFromArray(seeds)
    image.CopyInformation(reference)
    return image


def grow_segmentation_node(
    segmentation_node,
    volume_nodes: Sequence,
    *,
    smoothing_mm: float = 0.0,
    grower: SeedGrower | None = None,
    progress=None,
    cancel=None,
) -> SeedGrower:
    """Grow the seeds painted in ``segmentation_node`` over ``volume_nodes`` (first = grid).

    The grown cord, CSF, mass and bone replace their segments' content. Returns the
    :class:`SeedGrower`; pass it back as ``grower`` after painting corrections into the
    segments (strokes of any segment, drawn over the grown result): the grower remembers the
    strokes and the result it wrote, takes every voxel edited since as a new stroke, and
    re-solves only a box around the edits. Raises ``ValueError`` (InputError) with a readable
    message on unusable seeds (e.g. a single label).
    """
    if not volume_nodes:
        raise ValueError("Select at least one source volume.")
    reference_node = volume_nodes[0]
    painted = seeds_from_segmentation_node(segmentation_node, reference_node)
    seeds = painted
    if grower is None:
        grower = SeedGrower([image_from_volume_node(v) for v in volume_nodes])
    else:
        previous = getattr(grower, "mrml_memory", None)
        if previous is not None and previous[0] is segmentation_node:
            # The segments now hold the grown result plus the user's corrections: the seeds
            # are the previous strokes updated with every voxel edited since the last growth.
            _, last_seeds, last_written = previous
            now = sitk.GetArrayFromImage(painted)
            if now.shape == last_seeds.shape:
                edited = now != last_written
                merged = last_seeds.copy()
                merged[edited] = now[edited]
                seeds = sitk.GetImageFromArray(merged)
                seeds.CopyInformation(painted)
    result = grower.grow(
        seeds,
        keep_labels=STRUCTURE_LABELS,
        smoothing_mm=smoothing_mm,
        progress=progress,
        cancel=cancel,
    )
    write_labels_to_segmentation_node(segmentation_node, result, reference_node)
    written = sitk.GetArrayFromImage(
        seeds_from_segmentation_node(segmentation_node, reference_node)
    )
    grower.mrml_memory = (segmentation_node, sitk.GetArrayFromImage(seeds), written)
    return grower


def write_labels_to_segmentation_node(
    segmentation_node, labelmap: sitk.Image, reference_volume_node
) -> None:
    """Replace the content of the cord/CSF/mass/bone segments with the labelmap's labels 1-4
    (a missing segment is created with its name, colour and terminology)."""
    ids, labels = _segment_labels(segmentation_node)
    by_label = {
        label: sid for sid, label in zip(ids, labels, strict=True) if label in STRUCTURE_LABELS
    }
    segmentation = segmentation_node.GetSegmentation()
    for label in STRUCTURE_LABELS:
        if label not in by_label:
            info = SEGMENTS[label]
            by_label[label] = segmentation.AddEmptySegment(info.name, info.name, list(info.color))
            segmentation.GetSegment(by_label[label]).SetTag(
                "TerminologyEntry", _terminology_string(info)
            )
    arr = sitk.GetArrayFromImage(labelmap).astype(np.uint8)
    arr[~np.isin(arr, STRUCTURE_LABELS)] = 0
    image = sitk.GetImageFromArray(arr)
    image.CopyInformation(labelmap)
    # label value n of the labelmap goes to the n-th id of the list: ids ordered 1..4
    if not import_labelmap(segmentation_node, image, [by_label[lab] for lab in STRUCTURE_LABELS]):
        raise ValueError("The grown labels could not be written into the segmentation.")


def import_labelmap(segmentation_node, image: sitk.Image, segment_ids: Sequence[str]) -> bool:
    """Replace the content of ``segment_ids`` with ``image``'s label values 1, 2, ... in that
    order, through a temporary labelmap node (removed, with its display node). False when
    Slicer refuses the import."""
    scene = segmentation_node.GetScene()
    logic = ensure_segmentation_converters(scene)
    temp = add_volume_node(scene, image, "__mescc_import__", labelmap=True)
    try:
        return bool(
            logic.ImportLabelmapToSegmentationNode(
                temp, segmentation_node, _string_array(segment_ids)
            )
        )
    finally:
        display = temp.GetDisplayNode()
        scene.RemoveNode(temp)
        if display is not None and display.GetScene() is not None:
            scene.RemoveNode(display)


def _reference_volume_for(segmentation_node):
    """A temporary volume node with the segmentation's reference geometry (caller removes it)."""
    geometry = segmentation_node.GetSegmentation().GetConversionParameter(
        "Reference image geometry"
    )
    image_data = slicer.vtkOrientedImageData()
    slicer.vtkSegmentationConverter.DeserializeImageGeometry(geometry, image_data, False)
    m = vtk.vtkMatrix4x4()
    image_data.GetImageToWorldMatrix(m)
    image = sitk.Image([int(d) for d in image_data.GetDimensions()], sitk.sitkUInt8)
    set_geometry_from_ras(image, m)
    return add_volume_node(segmentation_node.GetScene(), image, "__mescc_reference__")


def labels_from_segmentation_node(segmentation_node, reference_node=None) -> sitk.Image:
    """Labels 1 cord, 2 CSF, 3 mass, 4 bone (by segment name) on the reference volume's grid."""
    temporary = reference_node is None
    reference = _reference_volume_for(segmentation_node) if temporary else reference_node
    try:
        labels = seeds_from_segmentation_node(segmentation_node, reference)
    finally:
        if temporary:
            segmentation_node.GetScene().RemoveNode(reference)
    arr = sitk.GetArrayFromImage(labels)
    arr[arr > 4] = 0  # "other" segments are not structures
    out = sitk.GetImageFromArray(arr.astype(np.uint8))
    out.CopyInformation(labels)
    return out


def write_seed_labels(segmentation_node, seeds: sitk.Image, reference_node) -> None:
    """Seed strokes (1-4 structures, 5+ other) into the segmentation's segments."""
    arr = sitk.GetArrayFromImage(seeds)
    write_labels_to_segmentation_node(segmentation_node, seeds, reference_node)
    other = (arr > 4).astype(np.uint8)
    if other.any():
        segmentation = segmentation_node.GetSegmentation()
        other_id = segmentation.GetSegmentIdBySegmentName("other")
        if not other_id:
            raise InputError("the segmentation has no 'other' segment for the background strokes")
        image = sitk.GetImageFromArray(other)
        image.CopyInformation(seeds)
        if not import_labelmap(segmentation_node, image, [other_id]):
            raise InputError("the 'other' strokes could not be written into the segmentation")
