"""Loading volumes (``MESCCAnalyzerLib.io.study``): real geometry, synthetic series, bad input."""

from __future__ import annotations

import gzip
import shutil
import struct
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.io import study

CT_DIR = "ct_dicom_pet_ct_scanner/dicom"


# ----------------------------------------------------------------------------- helpers
def write_series(
    folder: Path,
    array_kji: np.ndarray,
    *,
    origin_lps,
    spacing,
    direction,
    modality="MR",
    series_uid=None,
    names=None,
    slopes=None,
):
    """Write ``array_kji`` as an uncompressed DICOM series with the given 3D geometry.

    ``direction`` is row-major 3×3 whose columns are the i, j, k axes (SimpleITK's
    convention); slice k is at ``origin + k × spacing[2] × k-axis``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    series_uid = series_uid or generate_uid()
    nz, ny, nx = array_kji.shape
    names = names or [f"IM{k:04d}.dcm" for k in range(nz)]
    for k in range(nz):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.Modality = modality
        ds.PatientID = "SYNTH-1"
        ds.PatientName = "Synthetic^Patient"
        ds.StudyInstanceUID = "1.2.3.4"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesDescription = f"synthetic {modality}"
        ds.InstanceNumber = nz - k  # deliberately reversed: sorting must use positions
        ipp = np.asarray(origin_lps, float) + k * spacing[2] * d[:, 2]
        ds.ImagePositionPatient = [f"{v:.10g}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.10g}" for v in (*d[:, 0], *d[:, 1])]
        ds.PixelSpacing = [f"{spacing[1]:.10g}", f"{spacing[0]:.10g}"]
        ds.SliceThickness = f"{spacing[2]:.10g}"
        ds.Rows, ds.Columns = ny, nx
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.RescaleSlope = f"{slopes[k]:g}" if slopes is not None else "1"
        ds.RescaleIntercept = "0"
        ds.PixelData = array_kji[k].astype(np.int16).tobytes()
        ds.save_as(folder / names[k], enforce_file_format=True)
    return series_uid


def _rotation(ax, ay, az):
    cx, sx, cy, sy, cz, sz = np.cos(ax), np.sin(ax), np.cos(ay), np.sin(ay), np.cos(az), np.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ ry @ rx


def _nifti_header_affine_lps(path: Path):
    """sform and qform of a NIfTI-1 header parsed by hand, converted RAS → LPS."""
    raw = gzip.open(path, "rb").read(348)
    assert struct.unpack("<i", raw[:4])[0] == 348
    pixdim = struct.unpack("<8f", raw[76:108])
    qform_code, sform_code = struct.unpack("<2h", raw[252:256])
    b, c, d, qx, qy, qz = struct.unpack("<6f", raw[256:280])
    srow = np.array(struct.unpack("<12f", raw[280:328]), dtype=float).reshape(3, 4)
    a = np.sqrt(max(0.0, 1.0 - (b * b + c * c + d * d)))
    rot = np.array(
        [
            [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
            [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
            [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - b * b - c * c],
        ]
    )
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    q_affine = rot @ np.diag([pixdim[1], pixdim[2], qfac * pixdim[3]])
    flip = np.diag([-1.0, -1.0, 1.0])  # RAS → LPS
    return {
        "qform_code": qform_code,
        "sform_code": sform_code,
        "s_matrix_lps": flip @ srow[:, :3],
        "s_origin_lps": flip @ srow[:, 3],
        "q_matrix_lps": flip @ q_affine,
        "q_origin_lps": flip @ np.array([qx, qy, qz]),
    }


# ----------------------------------------------------------------------------- real data
def test_real_t2_nifti_geometry_matches_its_header(shared_data):
    path = shared_data / "sct_errsm30" / "t2.nii.gz"
    volume = study.load_volume(path)
    image = volume.image
    assert image.GetSize() == (60, 55, 52)  # MANIFEST
    assert image.GetSpacing() == pytest.approx((1.0, 1.0, 1.0), abs=1e-6)  # float32 pixdim
    header = _nifti_header_affine_lps(path)
    assert header["sform_code"] > 0 and header["qform_code"] > 0
    # both transforms of the header agree here; the loaded image must reproduce them.
    # Tolerance 1e-4 mm: header values are float32 (7 significant digits of ~30 mm).
    matrix = np.asarray(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    for kind in ("s", "q"):
        assert matrix == pytest.approx(header[f"{kind}_matrix_lps"], abs=1e-4)
        assert image.GetOrigin() == pytest.approx(tuple(header[f"{kind}_origin_lps"]), abs=1e-4)
    # by hand from srow_x/y/z = (0 0 1 -32.2193), (-1 0 0 31.7866), (0 1 0 -19.3217)
    assert image.GetOrigin() == pytest.approx((32.2193, -31.7866, -19.3217), abs=1e-4)
    assert study.orientation_code(image.GetDirection()) == "PSR"  # sagittal-stored
    assert volume.modality is None and volume.format == "NIfTI"
    assert study.load_volume(path, modality="mr").modality == "MR"


def test_real_ct_series_geometry(shared_data):
    folder = shared_data / CT_DIR
    volume = study.load_volume(folder)
    image = volume.image
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in sorted(folder.iterdir())]
    z = sorted(float(h.ImagePositionPatient[2]) for h in headers)
    assert volume.modality == "CT" and volume.units == "HU"
    assert image.GetSize() == (512, 512, 20)
    # DS strings "0.9765625" and positions 2 mm apart are exact in binary
    assert image.GetSpacing() == pytest.approx((0.9765625, 0.9765625, 2.0), abs=1e-9)
    # origin = IPP of the most inferior slice (smallest z for IOP 1\0\0\0\1\0)
    assert image.GetOrigin() == pytest.approx((-249.51171875, -437.51171875, z[0]), abs=1e-9)
    assert z[0] == -804.5
    assert image.GetDirection() == pytest.approx((1, 0, 0, 0, 1, 0, 0, 0, 1), abs=1e-12)
    # slice k of the volume is the file whose IPP z is z[0] + 2k (file names run superior →
    # inferior, so sorting by name would give the reverse order)
    arr = sitk.GetArrayViewFromImage(image)
    by_z = {
        float(h.ImagePositionPatient[2]): f
        for h, f in zip(headers, sorted(folder.iterdir()), strict=True)
    }
    for k in (0, 7, 19):
        single = sitk.GetArrayFromImage(sitk.ReadImage(str(by_z[z[0] + 2 * k])))[0]
        np.testing.assert_array_equal(arr[k], single)
    assert float(arr.min()) == -1024.0  # RescaleIntercept -1024 applied to stored 0
    assert volume.series_description == "CT Body 3.0" and len(volume.files) == 20


def test_real_ct_sorting_does_not_depend_on_file_names(shared_data, tmp_path):
    src = sorted((shared_data / CT_DIR).iterdir())
    rng = np.random.default_rng(3)
    for i, f in zip(rng.permutation(len(src)), src, strict=True):
        shutil.copy(f, tmp_path / f"slice_{i:02d}.dcm")
    reference = study.load_image(shared_data / CT_DIR)
    shuffled = study.load_image(tmp_path)
    assert shuffled.GetOrigin() == reference.GetOrigin()
    assert shuffled.GetSpacing() == reference.GetSpacing()
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(shuffled), sitk.GetArrayViewFromImage(reference)
    )


# ----------------------------------------------------------------------------- synthetic DICOM
def test_oblique_synthetic_series_round_trips_its_geometry(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.integers(-500, 2000, size=(7, 12, 10)).astype(np.int16)
    d = _rotation(0.3, -0.2, 0.7)
    origin, spacing = (12.5, -40.25, 88.0), (0.8, 0.6, 3.3)
    names = [f"{n}.dcm" for n in ("g", "c", "a", "f", "b", "e", "d")]  # unrelated to position
    write_series(
        tmp_path, data, origin_lps=origin, spacing=spacing, direction=d.ravel(), names=names
    )
    volume = study.load_volume(tmp_path)
    image = volume.image
    # positions are written with 10 significant digits: 1e-6 mm covers the rounding
    assert image.GetOrigin() == pytest.approx(origin, abs=1e-6)
    assert image.GetSpacing() == pytest.approx(spacing, abs=1e-6)
    assert image.GetDirection() == pytest.approx(tuple(d.ravel()), abs=1e-8)
    np.testing.assert_array_equal(sitk.GetArrayViewFromImage(image), data)
    assert volume.patient_id == "SYNTH-1" and volume.modality == "MR"


def test_per_slice_rescale_slopes_are_each_applied(tmp_path):
    data = np.full((3, 4, 5), 100, dtype=np.int16)
    write_series(
        tmp_path,
        data,
        origin_lps=(0, 0, 0),
        spacing=(1, 1, 2),
        direction=np.eye(3).ravel(),
        slopes=[1, 2.5, 4],
    )
    arr = sitk.GetArrayFromImage(study.load_image(tmp_path))
    # each slice is 100 × its own slope, exactly (float64 read)
    assert arr[:, 0, 0].tolist() == [100.0, 250.0, 400.0]


def test_modality_and_series_choose_among_series(tmp_path):
    data = np.zeros((3, 4, 4), dtype=np.int16)
    mr_uid = write_series(
        tmp_path,
        data,
        origin_lps=(0, 0, 0),
        spacing=(1, 1, 1),
        direction=np.eye(3).ravel(),
        names=["m1", "m2", "m3"],
    )
    ct_uid = write_series(
        tmp_path / "sub",
        data + 7,
        origin_lps=(0, 0, 0),
        spacing=(1, 1, 2),
        direction=np.eye(3).ravel(),
        modality="CT",
    )
    with pytest.raises(InputError) as err:
        study.load_image(tmp_path)
    message = str(err.value)
    assert (
        "2 series" in message
        and mr_uid in message
        and ct_uid in message
        and "--modality" in message
    )
    assert study.load_volume(tmp_path, modality="CT").image.GetSpacing()[2] == pytest.approx(2.0)
    assert study.load_volume(tmp_path, series_uid=mr_uid).modality == "MR"
    with pytest.raises(InputError, match="no PT series"):
        study.load_image(tmp_path, modality="PT")


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("drop_slice", "non-uniform slice spacing: 4.000 mm"),
        ("duplicate", "4D series"),
        ("shear", "drift"),
        ("orientation", "orientation"),
    ],
)
def test_irregular_series_are_refused(tmp_path, change, expected):
    data = np.zeros((6, 4, 4), dtype=np.int16)
    write_series(
        tmp_path, data, origin_lps=(0, 0, 0), spacing=(1, 1, 2), direction=np.eye(3).ravel()
    )
    files = sorted(tmp_path.iterdir())
    if change == "drop_slice":
        files[3].unlink()
    else:
        ds = pydicom.dcmread(files[3])
        if change == "duplicate":
            ds.ImagePositionPatient = pydicom.dcmread(files[2]).ImagePositionPatient
        elif change == "shear":
            ds.ImagePositionPatient = [1.5, 0, ds.ImagePositionPatient[2]]
        else:
            ds.ImageOrientationPatient = [1, 0, 0, 0, 0, -1]
        ds.save_as(files[3])
    with pytest.raises(InputError, match=expected) as err:
        study.load_image(tmp_path)
    assert str(tmp_path) in str(err.value)


# ----------------------------------------------------------------------------- other formats
@pytest.mark.parametrize("suffix", [".nrrd", ".mha", ".nii.gz"])
def test_nrrd_mha_nifti_round_trip(tmp_path, suffix):
    image = sitk.GetImageFromArray(np.arange(60, dtype=np.float32).reshape(3, 4, 5))
    image.SetOrigin((1.0, -2.0, 3.5))
    image.SetSpacing((0.5, 0.75, 2.0))
    d = _rotation(0.1, 0.2, -0.3)
    image.SetDirection(tuple(d.ravel()))
    sitk.WriteImage(image, str(tmp_path / f"v{suffix}"))
    loaded = study.load_image(tmp_path / f"v{suffix}")
    # NIfTI stores float32 quaternions: 1e-5 covers their rounding
    assert loaded.GetOrigin() == pytest.approx(image.GetOrigin(), abs=1e-5)
    assert loaded.GetSpacing() == pytest.approx(image.GetSpacing(), abs=1e-6)
    assert loaded.GetDirection() == pytest.approx(image.GetDirection(), abs=1e-5)
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(loaded), np.arange(60).reshape(3, 4, 5)
    )
    info = study.describe(study.load_volume(tmp_path / f"v{suffix}", modality="CT"))
    assert (info["min"], info["max"], info["modality"], info["size"]) == (
        0.0,
        59.0,
        "CT",
        [5, 4, 3],
    )


def test_4d_with_one_time_point_is_read_as_3d(tmp_path):
    image = sitk.JoinSeries([sitk.Image(4, 3, 2, sitk.sitkInt16)])
    sitk.WriteImage(image, str(tmp_path / "one.nii.gz"))
    assert study.load_image(tmp_path / "one.nii.gz").GetSize() == (4, 3, 2)


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        ("missing", "no such file or folder"),
        ("empty_dir", "the folder is empty"),
        ("text_in_dir", "no DICOM image found (1 file not DICOM)"),
        ("text_dcm", "not a DICOM file"),
        ("empty_file", "the file is empty"),
        ("truncated_nii", "truncated or corrupt"),
        ("4d", "a 4D image (4×3×2×3) where a 3D volume is needed"),
        ("2d", "a 2D image"),
        ("rgb", "3 components per voxel"),
    ],
)
def test_bad_inputs_raise_one_clear_input_error(tmp_path, make, expected):
    target = tmp_path / "in"
    if make == "missing":
        pass
    elif make == "empty_dir":
        target.mkdir()
    elif make == "text_in_dir":
        target.mkdir()
        (target / "notes.txt").write_text("hello")
    elif make == "text_dcm":
        target = tmp_path / "slice.dcm"
        target.write_text("this is not DICOM\n")
    elif make == "empty_file":
        target = tmp_path / "x.nii.gz"
        target.touch()
    elif make == "truncated_nii":
        full = tmp_path / "full.nii.gz"
        sitk.WriteImage(sitk.Image(40, 40, 40, sitk.sitkFloat32) + 1.5, str(full))
        target = tmp_path / "cut.nii.gz"
        target.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    elif make == "4d":
        target = tmp_path / "t.nii.gz"
        sitk.WriteImage(sitk.Image([4, 3, 2, 3], sitk.sitkInt16), str(target))
    elif make == "2d":
        target = tmp_path / "flat.nrrd"
        sitk.WriteImage(sitk.Image(4, 3, sitk.sitkInt16), str(target))
    elif make == "rgb":
        target = tmp_path / "rgb.mha"
        sitk.WriteImage(sitk.Image([4, 3, 2], sitk.sitkVectorUInt8, 3), str(target))
    with pytest.raises(InputError) as err:
        study.load_image(target)
    text = str(err.value)
    assert expected in text
    assert text.startswith(str(target))
    assert "\n" not in text


def test_unknown_modality_is_refused():
    with pytest.raises(InputError, match="unknown modality 'US'"):
        study.load_image("whatever", modality="US")


def test_dicom_file_without_preamble_is_read(shared_data, tmp_path):
    """Old exports lack the 128-byte preamble and DICM marker; they are still DICOM."""
    src = shared_data / "pet_dicom_flt" / "flt_pet_slice_1.dcm"
    ds = pydicom.dcmread(src)
    ds.preamble = None
    del ds.file_meta
    target = tmp_path / "old.dcm"
    ds.save_as(target, enforce_file_format=False, implicit_vr=True, little_endian=True)
    assert target.read_bytes()[128:132] != b"DICM"
    loaded = study.load_volume(target)
    reference = study.load_image(src)
    assert loaded.modality == "PT" and loaded.image.GetOrigin() == reference.GetOrigin()
    np.testing.assert_array_equal(
        sitk.GetArrayViewFromImage(loaded.image), sitk.GetArrayViewFromImage(reference)
    )
