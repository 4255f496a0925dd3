"""Slicer .seg.nrrd writing/reading: names, colours, terminology, label values, geometry."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import slicer
import slicerio

from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.io.segfile import SEGMENTS, read_seg_nrrd, write_seg_nrrd


@pytest.fixture(scope="module")
def a_labelmap():
    """An oblique, anisotropic grid with four boxes labelled 1-4 and a stray label 7."""
    arr = np.zeros((12, 20, 24), dtype=np.uint8)
    arr[2:5, 3:8, 4:9] = 1
    arr[2:5, 10:14, 4:9] = 2
    arr[6:9, 3:8, 12:20] = 3
    arr[6:10, 12:18, 12:20] = 4
    arr[0, 0, 0] = 7  # "other": must not be written
    image = sitk.GetImageFromArray(arr)
    image.SetSpacing((0.7, 0.8, 2.0))
    image.SetOrigin((-10.0, 5.0, 30.0))
    c, s = np.cos(0.2), np.sin(0.2)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    return image


def test_slicerio_reads_names_colours_terminology_and_values(tmp_path, a_labelmap):
    path = tmp_path / "result.seg.nrrd"
    write_seg_nrrd(a_labelmap, path)
    seg = slicerio.read_segmentation(str(path))
    by_name = {s["name"]: s for s in seg["segments"]}
    assert list(by_name) == ["spinal_cord", "csf", "epidural_mass", "vertebrae"]
    for label, info in SEGMENTS.items():
        segment = by_name[info.name]
        assert segment["labelValue"] == label
        assert np.allclose(segment["color"], info.color)
        assert segment["terminology"]["type"] == list(info.type)
        assert segment["terminology"]["category"] == list(info.category)
    assert by_name["spinal_cord"]["terminology"]["type"][1] == "2748008"  # SNOMED CT spinal cord
    assert by_name["epidural_mass"]["terminology"]["type"][1] == "14799000"  # metastatic neoplasm
    voxels = slicerio.extract_segments(seg, [("csf", 1)])["voxels"]
    assert int(np.count_nonzero(voxels)) == 3 * 4 * 5  # the CSF box, nothing else


def test_round_trip_keeps_voxels_and_geometry(tmp_path, a_labelmap):
    path = tmp_path / "result.seg.nrrd"
    write_seg_nrrd(a_labelmap, path)
    image, _ = read_seg_nrrd(path)
    expected = sitk.GetArrayFromImage(a_labelmap)
    expected[expected == 7] = 0
    assert np.array_equal(sitk.GetArrayFromImage(image), expected)
    assert np.allclose(image.GetOrigin(), a_labelmap.GetOrigin(), atol=1e-6)
    assert np.allclose(image.GetSpacing(), a_labelmap.GetSpacing(), atol=1e-6)
    assert np.allclose(image.GetDirection(), a_labelmap.GetDirection(), atol=1e-6)


def test_slicer_storage_node_reads_the_file(tmp_path, a_labelmap):
    path = tmp_path / "result.seg.nrrd"
    write_seg_nrrd(a_labelmap, path)
    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()
    logic.SetMRMLScene(scene)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
    storage = scene.AddNewNodeByClass("vtkMRMLSegmentationStorageNode")
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    segmentation = node.GetSegmentation()
    names = [
        segmentation.GetNthSegment(n).GetName() for n in range(segmentation.GetNumberOfSegments())
    ]
    assert names == ["spinal_cord", "csf", "epidural_mass", "vertebrae"]


def test_unreadable_file_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.seg.nrrd"
    bad.write_text("not a nrrd")
    with pytest.raises(InputError, match="bad.seg.nrrd"):
        read_seg_nrrd(bad)
