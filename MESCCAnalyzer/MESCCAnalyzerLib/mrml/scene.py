"""An analysis as an MRML scene, and the scene as a Slicer bundle (``.mrb``).

:func:`add_analysis_nodes` puts everything an analysis produced into a scene the way the
panel leaves it: MRI (+T1), CT and PET under the registration transform with the PET as a
colour overlay, the ADC map with its colour bar (with a DWI), the segmentation, the surface models with their distance colour maps, the
sections and metrics tables, the CSA plot, and the slice views and 3D camera on the worst
section. :func:`write_analysis_scene` saves that scene as ``scene.mrb``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from ..errors import InputError
from .diffusion import add_adc_node, ensure_color_legend_class, show_adc_overlay
from .metrics import add_metrics_nodes
from .nodes import add_volume_node, ensure_segmentation_converters
from .registration import set_transform_from_itk, show_pet_overlay
from .segmentation import create_mescc_segmentation_node, write_labels_to_segmentation_node

VIEWS = (("Red", "Axial"), ("Yellow", "Sagittal"), ("Green", "Coronal"))


@dataclass
class AnalysisNodes:
    mri: object
    segmentation: object
    t1: object | None = None
    ct: object | None = None
    pet: object | None = None
    transform: object | None = None
    metrics: object | None = None  # what mrml.metrics returns
    adc: object | None = None  # the ADC map on the MRI grid (with a DWI)
    extra: dict = field(default_factory=dict)


def ensure_views(scene) -> None:
    """Slice views (Red axial, Yellow sagittal, Green coronal) and the 3D view with a camera.

    Slicer's layout manager adopts nodes with these singleton tags when the scene is loaded.
    """
    slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(scene)  # on the scene's default node
    for name, orientation in VIEWS:
        if scene.GetSingletonNode(name, "vtkMRMLSliceNode") is None:
            node = scene.CreateNodeByClass("vtkMRMLSliceNode")  # copies the default node's presets
            node.UnRegister(None)
            node.SetName(name)
            node.SetLayoutName(name)
            node.SetSingletonTag(name)
            scene.AddNode(node)
            node.SetOrientation(orientation)
        if scene.GetSingletonNode(name, "vtkMRMLSliceCompositeNode") is None:
            composite = slicer.vtkMRMLSliceCompositeNode()
            composite.SetLayoutName(name)
            composite.SetSingletonTag(name)
            scene.AddNode(composite)
    if scene.GetSingletonNode("1", "vtkMRMLViewNode") is None:
        view = slicer.vtkMRMLViewNode()
        view.SetName("View1")
        view.SetLayoutName("1")
        view.SetSingletonTag("1")
        scene.AddNode(view)
    if scene.GetFirstNodeByClass("vtkMRMLCameraNode") is None:
        camera = slicer.vtkMRMLCameraNode()
        camera.SetName("Camera")
        camera.SetLayoutName("1")
        scene.AddNode(camera)


def focus_views(scene, point_lps, *, distance_mm: float = 160.0) -> None:
    """Jump every slice view to ``point_lps`` and aim the 3D camera at it from the left."""
    ras = np.array([-point_lps[0], -point_lps[1], point_lps[2]], dtype=float)
    for name, _orientation in VIEWS:
        node = scene.GetSingletonNode(name, "vtkMRMLSliceNode")
        if node is not None:
            node.JumpSliceByCentering(*ras)
    camera = scene.GetFirstNodeByClass("vtkMRMLCameraNode")
    if camera is not None:
        # RAS: from the patient's left (+R is right, so -R), slightly anterior (+A), superior up.
        direction = np.array([-0.8, 0.5, 0.15])
        direction /= np.linalg.norm(direction)
        camera.SetFocalPoint(*ras)
        camera.SetPosition(*(ras + distance_mm * direction))
        camera.SetViewUp(0.0, 0.0, 1.0)


def add_analysis_nodes(scene, result) -> AnalysisNodes:
    """Put a :class:`~MESCCAnalyzerLib.pipeline.AnalysisResult` into ``scene``."""
    ensure_views(scene)
    ensure_segmentation_converters(scene)
    mri = add_volume_node(scene, result.mri.image, "MRI T2")
    nodes = AnalysisNodes(mri=mri, segmentation=None)
    if result.t1_on_mri is not None:
        nodes.t1 = add_volume_node(scene, result.t1_on_mri, "MRI T1")
    if result.registration is not None:
        transform = result.registration.transform
        linear = isinstance(
            transform, (sitk.Euler3DTransform, sitk.AffineTransform, sitk.VersorRigid3DTransform)
        )
        cls = "vtkMRMLLinearTransformNode" if linear else "vtkMRMLTransformNode"
        nodes.transform = scene.AddNewNodeByClass(cls, "CT to MRI")
        set_transform_from_itk(nodes.transform, transform)
    if result.ct is not None:
        nodes.ct = add_volume_node(scene, result.ct.image, "CT")
    if result.pet_suv is not None:
        nodes.pet = add_volume_node(scene, sitk.Cast(result.pet_suv, sitk.sitkFloat32), "PET SUVbw")
    for moving in (nodes.ct, nodes.pet):
        if moving is not None and nodes.transform is not None:
            moving.SetAndObserveTransformNodeID(nodes.transform.GetID())
    if nodes.pet is not None:
        show_pet_overlay(scene, mri, nodes.pet)
    else:
        for name, _ in VIEWS:
            scene.GetSingletonNode(name, "vtkMRMLSliceCompositeNode").SetBackgroundVolumeID(
                mri.GetID()
            )
    if result.diffusion is not None:
        nodes.adc = add_adc_node(scene, result.diffusion.adc_on_mri, "ADC")
        if nodes.pet is None:  # the PET, when there is one, stays the overlay
            show_adc_overlay(scene, mri, nodes.adc)
    nodes.segmentation = create_mescc_segmentation_node(scene, mri)
    write_labels_to_segmentation_node(nodes.segmentation, result.labels, mri)
    nodes.metrics = add_metrics_nodes(scene, result.metrics)
    worst = result.metrics.metrics.get("worst_section_lps_mm")
    if worst is not None:
        focus_views(scene, worst)
    return nodes


def _storable_nodes(scene):
    nodes = scene.GetNodesByClass("vtkMRMLStorableNode")
    return [nodes.GetItemAsObject(i) for i in range(nodes.GetNumberOfItems())]


def save_mrb(scene, path: str | os.PathLike) -> Path:
    """Save ``scene`` as a Slicer data bundle (``.mrb``) at ``path``, atomically.

    The bundle is written under its final name in a private folder beside ``path`` (the name
    of the scene inside the bundle follows the file name), then moved into place.
    """
    for node in _storable_nodes(scene):
        if node.GetStorageNode() is None and not node.GetHideFromEditors():
            node.AddDefaultStorageNode()
    path = Path(path).resolve()  # Slicer's bundle writer needs a full path
    folder = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    # The zip writer reports every file it adds: collect its messages instead of printing them.
    previous = vtk.vtkOutputWindow.GetInstance()
    vtk.vtkOutputWindow.SetInstance(vtk.vtkStringOutputWindow())
    try:
        if not scene.WriteToMRB(str(folder / path.name)):
            raise InputError("could not write the scene bundle", path=path)
        os.replace(folder / path.name, path)
    finally:
        vtk.vtkOutputWindow.SetInstance(previous)
        shutil.rmtree(folder, ignore_errors=True)
    return path


def write_analysis_scene(result, path: str | os.PathLike) -> Path:
    """The ``scene_writer`` of :func:`MESCCAnalyzerLib.pipeline.write_analysis`."""
    scene = slicer.vtkMRMLScene()
    add_analysis_nodes(scene, result)
    return save_mrb(scene, path)


def read_mrb(path: str | os.PathLike, scene=None):
    """Load a ``.mrb`` into ``scene`` (a new one by default) without the Slicer application."""
    scene = scene or slicer.vtkMRMLScene()
    ensure_color_legend_class(scene)  # an ADC map's colour bar
    folder = Path(tempfile.mkdtemp(prefix="mrb."))
    try:
        with zipfile.ZipFile(path) as archive:
            archive.extractall(folder)
        mrml = next(folder.rglob("*.mrml"), None)
        if mrml is None:
            raise InputError("no .mrml scene inside the bundle", path=path)
        scene.SetURL(str(mrml))
        if not scene.Import():
            raise InputError("the scene in the bundle could not be read", path=path)
        return scene
    finally:
        shutil.rmtree(folder, ignore_errors=True)
