"""Registration in the MRML scene: a transform node on the CT and PET, PET over the MRI.

ITK's registration returns the *resampling* transform: fixed (MRI) LPS -> moving (CT) LPS.
A Slicer transform node applied to the CT must map the CT's coordinates to the world (the
MRI's): that is the node's "to parent" transform, the inverse of ITK's. Slicer itself stores
an ITK transform read from a ``.tfm`` file as the node's "from parent" transform after the
LPS <-> RAS flip (``RAS = diag(-1, -1, 1) LPS``); we do the same, so a node made here and
the ``.tfm`` written by ``mescc register`` give the same result in Slicer.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from .. import registration
from ..errors import InputError
from ..geometry import index_to_lps_matrix
from ..outputs import atomic_path
from ..pipeline import Follower, register_images
from ..progress import CancelCallback, ProgressCallback
from .nodes import (
    LPS_TO_RAS,
    image_from_volume_node,
    lps_to_ras,
    numpy_matrix,
    ras_to_lps,
    vtk_matrix,
)

PET_COLOR_NAME = "PET-Heat"
REPORT_ATTRIBUTE = "MESCC.RegistrationReport"  # the quality report, saved with the scene


@dataclass
class RegistrationNodes:
    """The transform node now parenting the moving and followed volumes, and the core result."""

    transform_node: object
    result: registration.RegistrationResult


def set_transform_from_itk(node, transform: sitk.Transform) -> None:
    """Store an ITK fixed->moving (LPS) transform in ``node`` as Slicer does when reading a .tfm.

    A linear transform becomes the node's "from parent" matrix in RAS; any other (e.g. the
    rigid + B-spline composite) is read through Slicer's own transform storage node.
    """
    matrix = registration.affine_4x4_lps(transform)
    if matrix is not None:
        node.SetMatrixTransformFromParent(vtk_matrix(lps_to_ras(matrix)))
        return
    scene = node.GetScene()
    if scene is None:
        raise ValueError("the transform node must be in a scene")
    with tempfile.TemporaryDirectory(prefix="mescc-tfm-") as folder:
        path = Path(folder) / "transform.tfm"
        sitk.WriteTransform(transform, str(path))
        storage = slicer.vtkMRMLTransformStorageNode()
        scene.AddNode(storage)
        try:
            storage.SetFileName(str(path))
            if not storage.ReadData(node):
                raise RuntimeError("Slicer could not read the registration transform")
        finally:
            scene.RemoveNode(storage)


def itk_linear_transform_from_node(node) -> sitk.AffineTransform:
    """The ITK (fixed LPS -> moving LPS) affine equivalent of a linear transform node."""
    m = vtk.vtkMatrix4x4()
    node.GetMatrixTransformFromParent(m)
    lps = ras_to_lps(numpy_matrix(m))
    out = sitk.AffineTransform(3)
    out.SetMatrix(tuple(map(float, lps[:3, :3].ravel())))
    out.SetTranslation(tuple(map(float, lps[:3, 3])))
    return out


def register_volumes(
    scene,
    fixed_node,
    moving_node,
    follow_nodes=(),
    *,
    fixed_mask_node=None,
    init: str = "auto",
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    deformable: bool = False,
    transform_node=None,
    name: str | None = None,
    show_overlay: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> RegistrationNodes:
    """Register the moving volume (CT) to the fixed one (MRI) and apply the result in the scene.

    The transform node (a new ``vtkMRMLLinearTransformNode``, or a general transform node
    for ``deformable``; ``transform_node`` is reused when given) becomes the parent transform
    of ``moving_node`` and of every node of ``follow_nodes`` (the PET of the same PET-CT).
    The first followed node is shown as a colour overlay on the MRI (:func:`show_pet_overlay`)
    unless ``show_overlay`` is false. Existing parent transforms of the moving and followed
    nodes are replaced; the fixed node must not be transformed (harden its transform first).
    """
    if fixed_node is None or moving_node is None:
        raise InputError("choose the MRI (fixed) and CT (moving) volumes")
    if fixed_node.GetParentTransformNode() is not None:
        raise InputError(
            f"the MRI volume '{fixed_node.GetName()}' is under a transform",
            hint="harden or remove that transform: the MRI is the reference",
        )
    mask = image_from_volume_node(fixed_mask_node) if fixed_mask_node is not None else None
    result = register_images(
        image_from_volume_node(fixed_node),
        image_from_volume_node(moving_node),
        [Follower(image_from_volume_node(n), n.GetName()) for n in follow_nodes],
        fixed_mask=mask,
        init=init,
        landmarks=landmarks,
        deformable=deformable,
        resample=False,
        progress=progress,
        cancel=cancel,
    ).result
    linear = result.transform.IsLinear()
    wanted = "vtkMRMLLinearTransformNode" if linear else "vtkMRMLTransformNode"
    if transform_node is None or (linear and not transform_node.IsA("vtkMRMLLinearTransformNode")):
        transform_node = scene.AddNewNodeByClass(
            wanted,
            scene.GenerateUniqueName(name or f"{moving_node.GetName()} to {fixed_node.GetName()}"),
        )
    set_transform_from_itk(transform_node, result.transform)
    transform_node.SetAttribute(REPORT_ATTRIBUTE, json.dumps(result.report()))
    for node in (moving_node, *follow_nodes):
        node.SetAndObserveTransformNodeID(transform_node.GetID())
    if show_overlay and follow_nodes:
        show_pet_overlay(scene, fixed_node, follow_nodes[0])
    return RegistrationNodes(transform_node=transform_node, result=result)


def pet_color_node(scene):
    """Slicer's "PET-Heat" colour node when the scene has it, else an equivalent heat table."""
    node = scene.GetFirstNodeByName(PET_COLOR_NAME)
    if node is not None:
        return node
    node = scene.GetFirstNodeByName("MESCC PET heat")
    if node is not None:
        return node
    table = slicer.vtkMRMLColorTableNode()
    table.SetName("MESCC PET heat")
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    for i in range(256):
        x = i / 255.0
        # black -> red -> yellow -> white, the usual PET heat ramp
        rgb = (
            min(1.0, 3.0 * x),
            min(1.0, max(0.0, 3.0 * x - 1.0)),
            min(1.0, max(0.0, 3.0 * x - 2.0)),
        )
        table.SetColor(i, f"{i}", *rgb, 1.0)
    table.SetAttribute("Category", "PET")
    scene.AddNode(table)
    return table


def show_pet_overlay(
    scene, mri_node, pet_node, *, opacity: float = 0.5, max_percentile: float = 99.5
) -> None:
    """Show the MRI as background and the PET as a heat-coloured foreground in every slice view.

    The PET window runs from 0 to its ``max_percentile`` value (so a hot lesion does not wash
    out), and every slice composite node of the scene shows MRI + PET at ``opacity``.
    """
    if pet_node.GetDisplayNode() is None:
        pet_node.CreateDefaultDisplayNodes()
    display = pet_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(pet_color_node(scene).GetID())
    values = slicer.util.arrayFromVolume(pet_node)
    finite = values[np.isfinite(values)]
    top = float(np.percentile(finite, max_percentile)) if finite.size else 1.0
    low = float(min(0.0, finite.min())) if finite.size else 0.0
    if top <= low:
        top = low + 1.0
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(low, top)
    display.SetApplyThreshold(True)
    # Only uptake above a quarter of the (robust) maximum is coloured: soft-tissue background
    # (SUV ~0.5-1 against a lesion of several units) stays transparent over the MRI.
    display.SetLowerThreshold(low + 0.25 * (top - low))
    display.SetUpperThreshold(float(finite.max()) if finite.size else top)
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(i)
        composite.SetBackgroundVolumeID(mri_node.GetID())
        composite.SetForegroundVolumeID(pet_node.GetID())
        composite.SetForegroundOpacity(opacity)


def save_transform(node, path: str | os.PathLike) -> Path:
    """Write a linear transform node as an ITK ``.tfm`` (fixed LPS -> moving LPS), atomically."""
    if not node.IsLinear():
        raise InputError(
            "only linear transform nodes can be saved here",
            hint="use Slicer's Save dialog for a deformable transform",
        )
    with atomic_path(path) as tmp:
        sitk.WriteTransform(itk_linear_transform_from_node(node), str(tmp))
    return Path(path)


def control_points_lps(markups_node) -> np.ndarray:
    points = []
    for i in range(markups_node.GetNumberOfControlPoints()):
        ras = [0.0, 0.0, 0.0]
        markups_node.GetNthControlPointPosition(i, ras)
        points.append((-ras[0], -ras[1], ras[2]))
    return np.asarray(points, dtype=float).reshape(-1, 3)


def roi_mask_on(reference: sitk.Image, roi_node) -> sitk.Image:
    """A mask on ``reference``'s grid: 1 inside the (axis-aligned in RAS) markups ROI box."""
    bounds = [0.0] * 6
    roi_node.GetRASBounds(bounds)
    lo_ras, hi_ras = np.array(bounds[0::2]), np.array(bounds[1::2])
    size = reference.GetSize()
    kk, jj, ii = np.meshgrid(*(np.arange(n) for n in size[::-1]), indexing="ij")
    ijk1 = np.stack([ii.ravel(), jj.ravel(), kk.ravel(), np.ones(ii.size)], axis=1)
    ras = ijk1 @ (LPS_TO_RAS @ index_to_lps_matrix(reference)).T[:, :3]
    inside = np.all((ras >= lo_ras) & (ras <= hi_ras), axis=1).reshape(size[::-1])
    if not inside.any():
        raise InputError(
            "the region of interest does not overlap the MRI",
            hint="move the ROI box onto the lesion level",
        )
    mask = sitk.GetImageFromArray(inside.astype(np.uint8))
    mask.CopyInformation(reference)
    return mask


def volume_on_grid(volume_node, reference: sitk.Image) -> sitk.Image:
    """A volume resampled onto ``reference``'s grid through its parent (linear) transform."""
    image = image_from_volume_node(volume_node)
    parent = volume_node.GetParentTransformNode()
    if parent is None:
        transform = sitk.Transform()
    elif parent.IsTransformToWorldLinear():
        transform = itk_linear_transform_from_node(parent)
    else:
        raise InputError(
            f"'{volume_node.GetName()}' is under a non-linear transform",
            hint="harden the transform (Transforms module) before measuring",
        )
    return registration.resample_onto(image, reference, transform, default_value=0.0)


def registration_report_of(volume_node) -> dict | None:
    """The quality report of the registration that placed ``volume_node`` (None if none)."""
    parent = volume_node.GetParentTransformNode() if volume_node is not None else None
    text = parent.GetAttribute(REPORT_ATTRIBUTE) if parent is not None else None
    return json.loads(text) if text else None
