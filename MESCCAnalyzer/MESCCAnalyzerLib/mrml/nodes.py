"""Conversions between SimpleITK images (LPS) and MRML volume nodes (RAS).

MRML stores a volume's geometry as an IJK-to-RAS matrix; ITK/SimpleITK and every file we write
use LPS. The two differ by a flip of the first two axes: ``RAS = diag(-1, -1, 1) @ LPS``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
RAS_TO_LPS = LPS_TO_RAS  # the flip is its own inverse


def lps_to_ras(matrix_lps: np.ndarray) -> np.ndarray:
    """A 4x4 transform between LPS spaces, expressed between RAS spaces."""
    return LPS_TO_RAS @ np.asarray(matrix_lps, dtype=float) @ RAS_TO_LPS


def ras_to_lps(matrix_ras: np.ndarray) -> np.ndarray:
    """A 4x4 transform between RAS spaces, expressed between LPS spaces."""
    return RAS_TO_LPS @ np.asarray(matrix_ras, dtype=float) @ LPS_TO_RAS


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r, c]))
    return m


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """The 4x4 IJK-to-LPS matrix of a 3D SimpleITK image."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    m = np.eye(4)
    m[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=float)
    m[:3, 3] = image.GetOrigin()
    return m


def add_volume_node(scene, image: sitk.Image, name: str, *, labelmap: bool = False):
    """Add ``image`` to ``scene`` as a scalar (or labelmap) volume node with display node."""
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    update_volume_node(node, image)
    node.CreateDefaultDisplayNodes()
    if labelmap:
        display = node.GetDisplayNode()
        colors = scene.GetFirstNodeByName("GenericAnatomyColors") or scene.GetFirstNodeByName(
            "Labels"
        )
        if colors is not None:
            display.SetAndObserveColorNodeID(colors.GetID())
    return node


def update_volume_node(node, image: sitk.Image) -> None:
    """Replace the voxels and geometry of ``node`` with ``image``."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("only 3D scalar images can become volume nodes")
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayViewFromImage(image))
    ras = LPS_TO_RAS @ ijk_to_lps(image)
    node.SetIJKToRASMatrix(vtk_matrix(ras))
    node.Modified()


def image_from_volume_node(node) -> sitk.Image:
    """The voxels of a volume node as a SimpleITK image in LPS (parent transforms ignored)."""
    array = slicer.util.arrayFromVolume(node)
    image = sitk.GetImageFromArray(np.array(array, copy=True))
    ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ras)
    lps = RAS_TO_LPS @ numpy_matrix(ras)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    return image
