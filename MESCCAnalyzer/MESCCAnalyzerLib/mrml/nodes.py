"""Conversions between SimpleITK images (LPS) and MRML volume nodes (RAS).

MRML stores a volume's geometry as an IJK-to-RAS matrix; ITK/SimpleITK and every file we write
use LPS. The two differ by a flip of the first two axes: ``RAS = diag(-1, -1, 1) @ LPS``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from ..geometry import index_to_lps_matrix

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])
RAS_TO_LPS = LPS_TO_RAS  # the flip is its own inverse


def lps_to_ras(matrix_lps: np.ndarray) -> np.ndarray:
    """A 4x4 transform between LPS spaces, expressed between RAS spaces."""
    return LPS_TO_RAS @ np.asarray(matrix_lps, dtype=float) @ RAS_TO_LPS


def ras_to_lps(matrix_ras: np.ndarray) -> np.ndarray:
    """A 4x4 transform between RAS spaces, expressed between LPS spaces."""
    return RAS_TO_LPS @ np.asarray(matrix_ras, dtype=float) @ LPS_TO_RAS


_SEGMENTATION_LOGICS = {}


def ensure_segmentation_converters(scene):
    """Create (once per scene) the Segmentations module logic, which registers the
    representation converters (binary labelmap, closed surface) segmentation nodes need.
    Inside Slicer the module has done this already; on a bare scene nothing has."""
    key = id(scene)
    logic = _SEGMENTATION_LOGICS.get(key)
    if logic is None or logic.GetMRMLScene() is not scene:  # ids are reused after a scene dies
        logic = slicer.vtkSlicerSegmentationsModuleLogic()
        logic.SetMRMLScene(scene)
        _SEGMENTATION_LOGICS[key] = logic
    return logic


def vtk_matrix(array: np.ndarray) -> vtk.vtkMatrix4x4:
    m = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            m.SetElement(r, c, float(array[r, c]))
    return m


def numpy_matrix(matrix: vtk.vtkMatrix4x4) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def add_volume_node(scene, image: sitk.Image, name: str, *, labelmap: bool = False):
    """Add ``image`` to ``scene`` as a scalar (or labelmap) volume node with display node."""
    class_name = "vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode"
    node = scene.AddNewNodeByClass(class_name, scene.GenerateUniqueName(name))
    update_volume_node(node, image)
    if labelmap:
        display = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeDisplayNode")
        display.SetAndObserveColorNodeID(label_color_node(scene).GetID())
        node.SetAndObserveDisplayNodeID(display.GetID())
    else:
        node.CreateDefaultDisplayNodes()
    return node


LABEL_COLORS = {
    0: ("background", (0.0, 0.0, 0.0, 0.0)),
    1: ("spinal_cord", (1.0, 0.85, 0.2, 1.0)),
    2: ("csf", (0.3, 0.6, 1.0, 1.0)),
    3: ("epidural_mass", (0.9, 0.1, 0.1, 1.0)),
    4: ("vertebrae", (0.95, 0.9, 0.75, 1.0)),
}


def label_color_node(scene):
    """The colour table of the label convention (1 cord, 2 CSF, 3 mass, 4 bone), made once."""
    node = scene.GetFirstNodeByName("MESCC labels")
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLColorTableNode", "MESCC labels")
        node.SetTypeToUser()
        node.SetNumberOfColors(len(LABEL_COLORS))
        for value, (label, rgba) in LABEL_COLORS.items():
            node.SetColor(value, label, *rgba)
    return node


def update_volume_node(node, image: sitk.Image) -> None:
    """Replace the voxels and geometry of ``node`` with ``image``."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise ValueError("only 3D scalar images can become volume nodes")
    slicer.util.updateVolumeFromArray(node, sitk.GetArrayViewFromImage(image))
    ras = LPS_TO_RAS @ index_to_lps_matrix(image)
    node.SetIJKToRASMatrix(vtk_matrix(ras))
    node.Modified()


def image_from_volume_node(node) -> sitk.Image:
    """The voxels of a volume node as a SimpleITK image in LPS (parent transforms ignored)."""
    array = slicer.util.arrayFromVolume(node)
    image = sitk.GetImageFromArray(np.array(array, copy=True))
    ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ras)
    set_geometry_from_ras(image, ras)
    return image


def set_geometry_from_ras(image: sitk.Image, ijk_to_ras: vtk.vtkMatrix4x4) -> sitk.Image:
    """Give ``image`` the origin, spacing and direction (LPS) of an IJK-to-RAS matrix."""
    lps = RAS_TO_LPS @ numpy_matrix(ijk_to_ras)
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    image.SetSpacing(tuple(float(s) for s in spacing))
    image.SetDirection(tuple(float(v) for v in (lps[:3, :3] / spacing).ravel()))
    image.SetOrigin(tuple(float(v) for v in lps[:3, 3]))
    return image
