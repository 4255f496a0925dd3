"""Registration in a real vtkMRMLScene (slicer-core): transform node, parent transforms, overlay."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import vtk

from MESCCAnalyzerLib import registration as reg
from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.mrml.nodes import add_volume_node
from MESCCAnalyzerLib.mrml.registration import (
    itk_linear_transform_from_node,
    register_volumes,
    save_transform,
    set_transform_from_itk,
    show_pet_overlay,
)

FLIP = np.array([-1.0, -1.0, 1.0])  # LPS <-> RAS


@pytest.fixture(scope="module")
def a_phantom(phantom_study):
    return phantom_study("2", 0)


@pytest.fixture(scope="module")
def a_registered_scene(a_phantom):
    scene = slicer.vtkMRMLScene()
    composite = slicer.vtkMRMLSliceCompositeNode()
    scene.AddNode(composite)
    mri = add_volume_node(scene, a_phantom.t2, "T2")
    ct = add_volume_node(scene, a_phantom.ct, "CT")
    pet = add_volume_node(scene, sitk.Cast(a_phantom.pet_suv, sitk.sitkFloat32), "PET")
    nodes = register_volumes(scene, mri, ct, [pet])
    return scene, mri, ct, pet, composite, nodes


def to_world_ras(node, points_ras: np.ndarray) -> np.ndarray:
    """Where Slicer displays the node-local RAS points once its parent transforms are applied."""
    general = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(
        node.GetParentTransformNode(), None, general
    )
    return np.array([general.TransformPoint(*map(float, p)) for p in points_ras])


def test_the_ct_and_pet_get_one_linear_transform_node_as_parent(a_registered_scene):
    _scene, mri, ct, pet, _composite, nodes = a_registered_scene
    assert nodes.transform_node.IsA("vtkMRMLLinearTransformNode")
    assert ct.GetParentTransformNode() is nodes.transform_node
    assert pet.GetParentTransformNode() is nodes.transform_node
    assert mri.GetParentTransformNode() is None


def test_a_ct_point_shown_through_the_node_lands_on_the_same_anatomy_in_the_mri(
    a_registered_scene, a_phantom
):
    *_, ct, _pet, _composite, _nodes = a_registered_scene
    p_mri_lps = reg.mask_points_lps(sitk.Cast(a_phantom.labels > 0, sitk.sitkUInt8), max_points=500)
    q_ct_lps = reg.transform_points(a_phantom.mri_to_ct, p_mri_lps)  # the same anatomy in the CT
    world_ras = to_world_ras(ct, q_ct_lps * FLIP)
    error = np.linalg.norm(world_ras - p_mri_lps * FLIP, axis=1)
    # Same bound as the core test: half the MRI's 0.99 mm voxel (measured 0.08 mm).
    assert error.mean() < 0.5
    # Without the node (or with ITK's matrix used as "to parent") the error is the true motion.
    assert np.linalg.norm(q_ct_lps - p_mri_lps, axis=1).mean() > 5.0


def test_the_node_matches_slicer_reading_the_written_tfm(a_registered_scene, tmp_path):
    scene, *_, nodes = a_registered_scene
    path = tmp_path / "t.tfm"
    sitk.WriteTransform(nodes.result.transform, str(path))
    read_node = slicer.vtkMRMLTransformNode()
    scene.AddNode(read_node)
    storage = slicer.vtkMRMLTransformStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(read_node) == 1
    a, b = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    nodes.transform_node.GetMatrixTransformToParent(a)
    read_node.GetMatrixTransformToParent(b)
    for r in range(4):
        for c in range(4):
            # both are the same doubles through one LPS/RAS flip: equal to rounding
            assert a.GetElement(r, c) == pytest.approx(b.GetElement(r, c), abs=1e-9)


def test_saving_the_node_gives_back_itks_transform(a_registered_scene, tmp_path, a_phantom):
    *_, nodes = a_registered_scene
    path = save_transform(nodes.transform_node, tmp_path / "saved.tfm")
    points = reg.mask_points_lps(sitk.Cast(a_phantom.labels > 0, sitk.sitkUInt8), max_points=500)
    # Text round trip of doubles: agreement far below a micrometre.
    assert reg.tre_mm(sitk.ReadTransform(str(path)), nodes.result.transform, points) < 1e-6
    assert (
        reg.tre_mm(
            itk_linear_transform_from_node(nodes.transform_node), nodes.result.transform, points
        )
        < 1e-9
    )


def test_the_pet_is_the_heat_coloured_foreground_over_the_mri(a_registered_scene):
    _scene, mri, _ct, pet, composite, _nodes = a_registered_scene
    color = pet.GetDisplayNode().GetColorNode()
    assert color.GetName() == "MESCC PET heat"  # a bare scene has no PET-Heat: our own table
    rgba = [0.0] * 4
    color.GetColor(255, rgba)
    assert rgba[:3] == pytest.approx([1.0, 1.0, 1.0])  # the ramp ends white
    color.GetColor(0, rgba)
    assert rgba[:3] == pytest.approx([0.0, 0.0, 0.0])  # and starts black
    assert composite.GetBackgroundVolumeID() == mri.GetID()
    assert composite.GetForegroundVolumeID() == pet.GetID()
    assert composite.GetForegroundOpacity() == pytest.approx(0.5)
    assert pet.GetDisplayNode().GetWindowLevelMin() == pytest.approx(0.0)


def test_an_existing_pet_heat_colour_node_is_used(a_phantom):
    scene = slicer.vtkMRMLScene()
    heat = slicer.vtkMRMLColorTableNode()
    heat.SetName("PET-Heat")
    heat.SetTypeToRed()
    scene.AddNode(heat)
    mri = add_volume_node(scene, a_phantom.t2, "T2")
    pet = add_volume_node(scene, sitk.Cast(a_phantom.pet_suv, sitk.sitkFloat32), "PET")
    show_pet_overlay(scene, mri, pet)
    assert pet.GetDisplayNode().GetColorNodeID() == heat.GetID()


def test_a_composite_transform_is_applied_as_slicer_reads_it():
    scene = slicer.vtkMRMLScene()
    rigid = sitk.Euler3DTransform((1.0, 2.0, 3.0), 0.1, -0.05, 0.2, (4.0, -3.0, 2.0))
    grid = sitk.Image([20, 20, 20], sitk.sitkFloat32)
    grid.SetSpacing((5.0, 5.0, 5.0))
    grid.SetOrigin((-50.0, -50.0, -50.0))
    bspline = sitk.BSplineTransformInitializer(grid, [3, 3, 3])
    params = np.random.default_rng(0).normal(0.0, 1.5, len(bspline.GetParameters()))
    bspline.SetParameters(params.tolist())
    composite = sitk.CompositeTransform([rigid, bspline])
    node = scene.AddNewNodeByClass("vtkMRMLTransformNode", "deformable")
    set_transform_from_itk(node, composite)
    points = np.random.default_rng(1).uniform(-30.0, 30.0, (50, 3))
    from_parent = node.GetTransformFromParent()
    expected = reg.transform_points(composite, points)
    got = np.array([from_parent.TransformPoint(*map(float, p * FLIP)) for p in points]) * FLIP
    # Slicer's own reader of the .tfm; double precision through text: micrometre agreement.
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_an_mri_under_a_transform_is_refused(a_phantom):
    scene = slicer.vtkMRMLScene()
    mri = add_volume_node(scene, a_phantom.t2, "T2")
    ct = add_volume_node(scene, a_phantom.ct, "CT")
    t = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "moved")
    mri.SetAndObserveTransformNodeID(t.GetID())
    with pytest.raises(InputError, match="under a transform"):
        register_volumes(scene, mri, ct)
