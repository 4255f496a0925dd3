"""Diffusion in the MRML scene: a DWI node <-> the engine's series, the ADC map as a volume
node on the MRI's grid with its colour table and colour bar, and the ADC read back for the
metrics.

**Which node a DWI is.** Slicer's DICOM browser loads a diffusion series as a
``vtkMRMLDiffusionWeightedVolumeNode`` (one multi-component volume, the b-value and gradient
of each component on the node) when the SlicerDMRI extension is installed; that is the
node :func:`dwi_series_from_node` reads. Without SlicerDMRI the series comes in as a
multi-volume or a volume sequence node, which this module does not read (their b-values live
in frame-label attributes whose content depends on the importer): the panel then takes the
series as a file path (one file of its DICOM series, an enhanced file, or a 4D NIfTI with its
``bval``/``bvec`` files), read by :func:`MESCCAnalyzerLib.io.dwi.load_dwi`.

**The ADC node.** :func:`compute_adc_node` fits the ADC (:func:`~MESCCAnalyzerLib.diffusion.fit_adc`),
registers the mean b = 0 image rigidly to the MRI within 20 mm of the cord when a cord mask
is given (:func:`~MESCCAnalyzerLib.diffusion.register_dwi_to_mri`; else the DWI is taken in
the MRI's scanner frame, geometry only), resamples the map onto the MRI's grid and adds it as
a scalar volume: 10⁻⁶ mm²/s, 0 where not fitted (a volume node holds no "no value"; the
attribute ``MESCC.ADCUnit`` marks it), the viridis colour table, window 0–3000 and a colour
bar (``vtkMRMLColorLegendDisplayNode``, as Slicer 5 shows colour bars).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import slicer
import vtk

from .. import LABEL_CORD
from ..diffusion import (
    ADC_UNIT,
    ADCResult,
    fit_adc,
    mean_b0,
    nan_to_zero,
    register_dwi_to_mri,
    resample_adc_onto,
)
from ..errors import InputError
from ..geometry import index_to_lps_matrix
from ..io.dwi import B0_MAX, DWISeries
from ..progress import CancelCallback, ProgressCallback, check, no_progress, sub_progress
from ..registration import RegistrationResult
from ..report import ADC_DISPLAY_RANGE
from .nodes import (
    LPS_TO_RAS,
    RAS_TO_LPS,
    image_from_volume_node,
    set_geometry_from_ras,
    update_volume_node,
    vtk_matrix,
)
from .registration import volume_on_grid

#: the attribute marking an ADC map node (its unit); what the metrics step looks for
ADC_UNIT_ATTRIBUTE = "MESCC.ADCUnit"
#: the DWI -> MRI registration report of an ADC node (JSON), saved with the scene
ADC_REGISTRATION_ATTRIBUTE = "MESCC.ADCRegistration"
ADC_COLOR_NAME = "Viridis"  # Slicer's own viridis table, when the scene has it
ADC_FALLBACK_COLOR_NAME = "MESCC ADC viridis"
ADC_LEGEND_TITLE = "ADC (1e-6 mm2/s)"
# matplotlib's viridis at 0, 1/8, ..., 1 (the report's ADC figure uses viridis)
_VIRIDIS = (
    (0.267, 0.0049, 0.3294),
    (0.2788, 0.1755, 0.4834),
    (0.2297, 0.3224, 0.5457),
    (0.1727, 0.4488, 0.5579),
    (0.1276, 0.5669, 0.5506),
    (0.1579, 0.6838, 0.5017),
    (0.3692, 0.7889, 0.3829),
    (0.6785, 0.8637, 0.1895),
    (0.9932, 0.9062, 0.1439),
)


@dataclass
class ADCNodes:
    """What *Compute ADC* made: the ADC node (MRI grid), the fit (DWI grid), the DWI -> MRI
    registration (None: geometry only) and a sentence for the panel."""

    adc_node: object
    fit: ADCResult
    registration: RegistrationResult | None
    text: str


# ---------------------------------------------------------------------------------------------
# DWI node <-> series
# ---------------------------------------------------------------------------------------------
def dwi_series_from_node(node) -> DWISeries:
    """The diffusion series of a ``vtkMRMLDiffusionWeightedVolumeNode``: one 3D volume per
    component (LPS, float32), its b-values (s/mm²) and gradient directions turned from the
    node's measurement frame into LPS. The node's parent transform is not applied."""
    if node is None or not node.IsA("vtkMRMLDiffusionWeightedVolumeNode"):
        raise InputError(
            "choose a diffusion-weighted volume (a DWI loaded with its b-values)",
            hint="or give the DWI series' folder or 4D NIfTI as the DWI file",
        )
    array = slicer.util.arrayFromVolume(node)
    n = node.GetNumberOfGradients()
    if array.ndim != 4 or array.shape[3] != n or n < 2:
        raise InputError(
            f"'{node.GetName()}' holds {array.shape[3] if array.ndim == 4 else 1} volumes for "
            f"{n} b-values: it is not a diffusion series the ADC can be fitted on"
        )
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    volumes = []
    for c in range(n):
        volume = sitk.GetImageFromArray(np.ascontiguousarray(array[..., c], dtype=np.float32))
        volumes.append(set_geometry_from_ras(volume, ijk_to_ras))
    bvals = np.array([node.GetBValue(c) for c in range(n)], dtype=float)
    frame = vtk.vtkMatrix4x4()
    node.GetMeasurementFrameMatrix(frame)
    to_lps = RAS_TO_LPS[:3, :3] @ np.array(
        [[frame.GetElement(r, c) for c in range(3)] for r in range(3)]
    )
    gradients = np.array([node.GetDiffusionGradient(c) for c in range(n)], dtype=float) @ to_lps.T
    norms = np.linalg.norm(gradients, axis=1, keepdims=True)
    bvecs = np.divide(gradients, norms, out=np.zeros_like(gradients), where=norms > 1e-6)
    # a b > 0 volume without a direction is the scanner's trace image (as io.dwi reads them)
    isotropic = (bvals > B0_MAX) & (norms[:, 0] <= 1e-6)
    return DWISeries(
        volumes=volumes,
        bvals=bvals,
        bvecs=bvecs,
        source=Path(node.GetName()),
        description=f"scene node '{node.GetName()}'",
        format="MRML",
        b_value_source="the node's b-values",
        isotropic=isotropic,
    )


def add_dwi_node(scene, series: DWISeries, name: str = "DWI"):
    """Add ``series`` to ``scene`` as a ``vtkMRMLDiffusionWeightedVolumeNode`` (what Slicer's
    DICOM browser makes of a DWI with SlicerDMRI): the volumes as components, the b-values,
    the directions in an LPS -> RAS measurement frame."""
    node = scene.AddNewNodeByClass(
        "vtkMRMLDiffusionWeightedVolumeNode", scene.GenerateUniqueName(name)
    )
    stack = np.stack([sitk.GetArrayViewFromImage(v) for v in series.volumes], axis=-1)
    slicer.util.updateVolumeFromArray(node, stack.astype(np.float32))
    node.SetIJKToRASMatrix(vtk_matrix(LPS_TO_RAS @ index_to_lps_matrix(series.reference)))
    n = len(series.volumes)
    node.SetNumberOfGradients(n)
    bvecs = series.bvecs if series.bvecs is not None else np.zeros((n, 3))
    for c in range(n):
        node.SetBValue(c, float(series.bvals[c]))
        node.SetDiffusionGradient(c, [float(v) for v in bvecs[c]])
    frame = vtk.vtkMatrix4x4()
    for r in range(3):
        frame.SetElement(r, r, float(LPS_TO_RAS[r, r]))
    node.SetMeasurementFrameMatrix(frame)
    node.CreateDefaultDisplayNodes()
    node.Modified()
    return node


# ---------------------------------------------------------------------------------------------
# The ADC node
# ---------------------------------------------------------------------------------------------
def adc_color_node(scene):
    """Slicer's "Viridis" colour node when the scene has it, else an equivalent table."""
    for name in (ADC_COLOR_NAME, ADC_FALLBACK_COLOR_NAME):
        node = scene.GetFirstNodeByName(name)
        if node is not None and node.IsA("vtkMRMLColorNode"):
            return node
    table = scene.AddNewNodeByClass("vtkMRMLColorTableNode", ADC_FALLBACK_COLOR_NAME)
    table.SetTypeToUser()
    table.SetNumberOfColors(256)
    anchors = np.linspace(0.0, 1.0, len(_VIRIDIS))
    rgb = np.array(_VIRIDIS)
    for i in range(256):
        x = i / 255.0
        table.SetColor(i, f"{i}", *(float(np.interp(x, anchors, rgb[:, c])) for c in range(3)), 1.0)
    table.SetAttribute("Category", "Diffusion")
    return table


def ensure_color_legend_class(scene) -> None:
    """Register the colour legend node class (Slicer's Colors module does it in the
    application; a bare scene, and one that reads a saved scene, needs it too)."""
    if not scene.IsNodeClassRegistered("vtkMRMLColorLegendDisplayNode"):
        scene.RegisterNodeClass(slicer.vtkMRMLColorLegendDisplayNode())


def show_color_legend(scene, volume_node, title: str = ADC_LEGEND_TITLE):
    """A colour bar for ``volume_node``'s display (the legend Slicer 5 shows in the views),
    created once per node; returns the ``vtkMRMLColorLegendDisplayNode``."""
    ensure_color_legend_class(scene)
    legend = slicer.vtkSlicerColorLogic.GetColorLegendDisplayNode(volume_node)
    if legend is None:
        legend = slicer.vtkSlicerColorLogic.AddDefaultColorLegendDisplayNode(volume_node)
    if legend is None:
        raise InputError("the colour bar could not be created (no colour legend node class)")
    legend.SetTitleText(title)
    legend.SetLabelFormat("%.0f")
    legend.SetNumberOfLabels(4)  # 0, 1000, 2000, 3000
    legend.SetVisibility(True)
    return legend


def add_adc_node(scene, adc_on_mri: sitk.Image, name: str = "ADC", *, node=None):
    """``adc_on_mri`` (10⁻⁶ mm²/s, NaN where not fitted) as a scalar volume node (``node``
    updated when given): 0 where not fitted, the viridis table, window 0–3000 and its colour
    bar; the voxels without a value are transparent. Returns the node."""
    if node is None:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", scene.GenerateUniqueName(name))
    update_volume_node(node, nan_to_zero(adc_on_mri))
    node.SetAttribute(ADC_UNIT_ATTRIBUTE, ADC_UNIT)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    display = node.GetDisplayNode()
    display.SetAndObserveColorNodeID(adc_color_node(scene).GetID())
    display.AutoWindowLevelOff()
    display.SetWindowLevelMinMax(*ADC_DISPLAY_RANGE)
    # the voxels without a value (0) stay transparent over the MRI
    display.SetApplyThreshold(True)
    display.SetLowerThreshold(1e-3)
    display.SetUpperThreshold(float(np.finfo(np.float32).max))
    show_color_legend(scene, node)
    return node


def adc_on_grid(adc_node, reference: sitk.Image) -> sitk.Image:
    """An ADC node's values on ``reference``'s grid (through its parent transform), NaN where
    it has none (0 in the node: not fitted, or outside the DWI; a value <= 0 counts as none)."""
    on_grid = sitk.Cast(volume_on_grid(adc_node, reference), sitk.sitkFloat32)
    values = sitk.GetArrayFromImage(on_grid)
    values[~(values > 0)] = np.nan
    out = sitk.GetImageFromArray(values)
    out.CopyInformation(reference)
    return out


def compute_adc_node(
    scene,
    mri_node,
    series: DWISeries,
    *,
    cord_mask: sitk.Image | None = None,
    adc_node=None,
    b_max_s_mm2: float = 1000.0,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> ADCNodes:
    """Fit the ADC of ``series``, bring it onto the MRI's grid and add it to the scene.

    ``cord_mask``: the cord on the MRI's grid (non-zero inside): the mean b = 0 image is then
    registered rigidly to the MRI within 20 mm of it. Without one (or when it is empty) the
    DWI is taken in the MRI's frame as the scanner placed it (geometry only). ``adc_node``: an
    ADC node made here before, updated (any other node is left alone and a new "ADC" node is
    made).
    """
    progress = progress or no_progress
    if mri_node is None:
        raise InputError("choose the MRI first")
    mri = image_from_volume_node(mri_node)
    fit = fit_adc(
        series, b_max_s_mm2=b_max_s_mm2, progress=sub_progress(progress, 0.0, 0.3), cancel=cancel
    )
    check(cancel)
    registration = None
    transform = sitk.Transform()
    has_cord = cord_mask is not None and bool(sitk.GetArrayViewFromImage(cord_mask).any())
    if has_cord:
        progress(0.3, "registering the b = 0 image to the MRI around the cord")
        registration = register_dwi_to_mri(
            mean_b0(series),
            mri,
            cord_mask,
            progress=sub_progress(progress, 0.3, 0.9),
            cancel=cancel,
        )
        transform = registration.transform
    progress(0.9, "resampling onto the MRI")
    adc_on_mri = resample_adc_onto(fit.adc, mri, transform)
    if adc_node is not None and adc_node.GetAttribute(ADC_UNIT_ATTRIBUTE) is None:
        adc_node = None  # a map made elsewhere (the scanner's) stays as it is
    node = add_adc_node(scene, adc_on_mri, node=adc_node)
    b_text = ", ".join(f"{b:g}" for b in fit.b_values_s_mm2)
    if registration is not None:
        node.SetAttribute(ADC_REGISTRATION_ATTRIBUTE, json.dumps(registration.report()))
        where = (
            f"registered rigidly to the MRI around the cord (Mattes MI "
            f"{registration.metric_value:.3f}, {registration.elapsed_s:.1f} s)"
        )
    else:
        node.RemoveAttribute(ADC_REGISTRATION_ATTRIBUTE)
        where = "placed by the scanner's geometry (no cord segmented: not registered)"
    values = sitk.GetArrayViewFromImage(adc_on_mri)
    finite = values[np.isfinite(values)]
    median = f", median {np.median(finite):.0f}" if finite.size else ""
    text = (
        f"ADC from b = {b_text} s/mm2 ({fit.n_fitted} voxels fitted{median} x 1e-6 mm2/s), {where}."
    )
    progress(1.0, "")
    return ADCNodes(adc_node=node, fit=fit, registration=registration, text=text)


def cord_mask_of(labels: sitk.Image) -> sitk.Image:
    """The cord label (1) of a labelmap, as the registration's mask."""
    return sitk.Cast(sitk.Equal(labels, LABEL_CORD), sitk.sitkUInt8)


def show_adc_overlay(scene, mri_node, adc_node, *, opacity: float = 0.5) -> None:
    """Every slice view: the MRI as background, the ADC map over it at ``opacity`` (its
    colour bar shows where the map is shown)."""
    composites = scene.GetNodesByClass("vtkMRMLSliceCompositeNode")
    for i in range(composites.GetNumberOfItems()):
        composite = composites.GetItemAsObject(i)
        composite.SetBackgroundVolumeID(mri_node.GetID())
        composite.SetForegroundVolumeID(adc_node.GetID())
        composite.SetForegroundOpacity(opacity)
