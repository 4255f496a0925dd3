"""'Load sample study' through the MRML logic, on a real MRML scene from slicer-core."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer

from MESCCAnalyzerLib.mrml.nodes import (
    add_volume_node,
    image_from_volume_node,
    lps_to_ras,
    numpy_matrix,
    ras_to_lps,
)
from MESCCAnalyzerLib.mrml.study import load_phantom_study


@pytest.fixture
def a_scene():
    return slicer.vtkMRMLScene()


def an_oblique_image() -> sitk.Image:
    image = sitk.GetImageFromArray(np.arange(4 * 5 * 6, dtype=np.int16).reshape(4, 5, 6))
    image.SetSpacing((0.5, 0.7, 2.0))
    image.SetOrigin((10.0, -20.0, 30.0))
    rotation = sitk.VersorTransform((0.1, 0.2, 0.3), 0.4).GetMatrix()
    image.SetDirection(rotation)
    return image


def test_a_volume_round_trips_through_a_volume_node_in_lps(a_scene):
    image = an_oblique_image()
    node = add_volume_node(a_scene, image, "oblique")
    back = image_from_volume_node(node)
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(image))
    assert np.allclose(back.GetOrigin(), image.GetOrigin())
    assert np.allclose(back.GetSpacing(), image.GetSpacing())
    assert np.allclose(back.GetDirection(), image.GetDirection())
    # The node's RAS geometry is the LPS one with the first two axes flipped.
    assert np.allclose(node.GetOrigin(), (-10.0, 20.0, 30.0))


def test_lps_ras_conversion_flips_x_and_y():
    m = np.eye(4)
    m[:3, 3] = (1.0, 2.0, 3.0)
    assert np.allclose(lps_to_ras(m)[:3, 3], (-1.0, -2.0, 3.0))
    assert np.allclose(ras_to_lps(lps_to_ras(m)), m)


def test_load_sample_study_creates_the_volumes_with_suv_pet(a_scene, tmp_path, phantom_study):
    nodes = load_phantom_study(a_scene, tmp_path / "sample", grade="2", seed=0)
    assert (
        a_scene.GetNumberOfNodesByClass("vtkMRMLScalarVolumeNode") == 4 + 1
    )  # T2, T1, CT, PET + labelmap subclass
    assert nodes.labels.IsA("vtkMRMLLabelMapVolumeNode")
    study = phantom_study("2", 0)
    t2 = image_from_volume_node(nodes.mri)
    assert t2.GetSize() == study.t2.GetSize()
    assert np.allclose(t2.GetOrigin(), study.t2.GetOrigin(), atol=1e-4)
    ct = image_from_volume_node(nodes.ct)
    assert np.allclose(ct.GetOrigin(), study.ct.GetOrigin(), atol=1e-4)
    # PET arrives in SUV (converted from the Bq/ml DICOM on load), equal to the phantom's map
    # up to the int16 quantisation of the DICOM (< 1/32000 of each slice's maximum).
    pet = sitk.GetArrayFromImage(image_from_volume_node(nodes.pet))
    truth = sitk.GetArrayFromImage(study.pet_suv)
    assert np.max(np.abs(pet - truth)) < truth.max() / 30000
    assert nodes.truth["grade"] == "2"
    ras = numpy_matrix(_ijk_to_ras(nodes.mri))
    assert ras[0, 0] < 0  # L-to-R flip: +i (towards patient left in LPS) is -x in RAS


def _ijk_to_ras(node):
    import vtk

    m = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(m)
    return m
