"""Hostile inputs (issue 18, findings 4-9): each is refused by the real command line with one
line ``mescc CMD: error: FILE: message`` and exit status 2 (no hang, no traceback, no silent
result), or, where it is a fact about a valid input, reported as a note.

The bad files are built here: DICOM slices are copies of the real 18F-FLT PET slice
(``pet_dicom_flt``, TCIA ACRIN-FLT-Breast) with one attribute changed; NIfTI files are written
byte by byte (a 348-byte NIfTI-1 header packed with :mod:`struct`), so that headers ITK itself
would never write can be made.
"""

from __future__ import annotations

import copy
import gzip
import json
import os
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.uid import generate_uid

from MESCCAnalyzerLib.cli import main
from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.io import study
from MESCCAnalyzerLib.io.markups import write_markups_points
from MESCCAnalyzerLib.measure import metrics
from MESCCAnalyzerLib.pet import suv
from MESCCAnalyzerLib.segmentation.seeds import strokes_from_labels

FLT_1 = "pet_dicom_flt/flt_pet_slice_1.dcm"
MESCC = [sys.executable, "-m", "MESCCAnalyzerLib.cli"]
ROOT = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- helpers
def _run(capsys, *argv):
    code = main(["--quiet", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def _refused(capsys, command, *argv, path, phrases=()):
    """Run ``mescc COMMAND ARGV``; assert exit 2, one line naming ``path``; return the line."""
    code, out, err = _run(capsys, command, *argv)
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert err.startswith(f"mescc {command}: error: {path}: "), err
    for phrase in phrases:
        assert phrase in err, err
    return err


def one_volume(json_text: str) -> dict:
    """The description of the only volume in ``mescc info --json`` output."""
    data = json.loads(json_text)
    if isinstance(data, list):
        assert len(data) == 1
        data = data[0]
    return data


def _subprocess(*argv, timeout=120):
    """``mescc ARGV`` in a child process, so that a regression that hangs fails the test."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "MESCCAnalyzer")}
    return subprocess.run(
        [*MESCC, "--quiet", *map(str, argv)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=ROOT,
    )


def pet_series(shared_data, folder: Path, n: int = 3, change=None) -> list[Path]:
    """``n`` copies of the real FLT slice 5 mm apart; ``change(ds, k)`` edits slice k."""
    folder.mkdir(parents=True, exist_ok=True)
    original = pydicom.dcmread(shared_data / FLT_1)
    z0 = float(original.ImagePositionPatient[2])
    files = []
    for k in range(n):
        ds = copy.deepcopy(original)
        ds.SOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [*ds.ImagePositionPatient[:2], z0 + 5.0 * k]
        if change is not None:
            change(ds, k)
        files.append(folder / f"pt{k:03d}.dcm")
        ds.save_as(files[-1])
    return files


def nifti1(
    dims=(10, 10, 10),
    *,
    pixdim=(1.0, 1.0, 1.0),
    data: bytes | None = None,
    qform_code=1,
    sform_code=0,
    qoffset=(0.0, 0.0, 0.0),
    srow=None,
) -> bytes:
    """A NIfTI-1 file (float32, 348-byte header, 4 bytes of extension flag, then the data),
    with the header exactly as given (no sanitising)."""
    h = bytearray(348)
    struct.pack_into("<i", h, 0, 348)
    struct.pack_into("<8h", h, 40, len(dims), *dims, *([1] * (7 - len(dims))))
    struct.pack_into("<2h", h, 70, 16, 32)  # datatype float32, bitpix
    struct.pack_into("<8f", h, 76, 1.0, *pixdim, *([1.0] * (7 - len(pixdim))))
    struct.pack_into("<2f", h, 108, 352.0, 1.0)  # vox_offset, scl_slope
    struct.pack_into("<2h", h, 252, qform_code, sform_code)
    struct.pack_into("<6f", h, 256, 0.0, 0.0, 0.0, *qoffset)  # identity rotation
    if srow is None:
        srow = np.column_stack([np.diag(pixdim), qoffset])
    struct.pack_into("<12f", h, 280, *np.ravel(srow))
    h[344:348] = b"n+1\0"
    if data is None:
        data = np.ones(int(np.prod([max(d, 1) for d in dims])), "<f4").tobytes()
    return bytes(h) + b"\0\0\0\0" + data


def write(path: Path, content: bytes) -> Path:
    path.write_bytes(gzip.compress(content) if path.name.endswith(".gz") else content)
    return path


@pytest.fixture(scope="module")
def a_small_mri(tmp_path_factory) -> Path:
    """A 24 x 20 x 12 float MRI (NIfTI), 1 mm, for commands that fail while loading."""
    folder = tmp_path_factory.mktemp("mri")
    arr = np.random.default_rng(0).normal(100, 10, (12, 20, 24)).astype(np.float32)
    image = sitk.GetImageFromArray(arr)
    sitk.WriteImage(image, str(folder / "t2.nii.gz"))
    return folder / "t2.nii.gz"


@pytest.fixture(scope="module")
def grade2_labels():
    from test_bilsky import phantom_labels_and_truth

    return phantom_labels_and_truth("2", 0)[0]


# ----------------------------------------------------------------------------- finding 4: hangs
def test_a_named_pipe_in_a_dicom_folder_is_skipped_not_read(shared_data, tmp_path):
    folder = tmp_path / "pet"
    pet_series(shared_data, folder, n=2)
    os.mkfifo(folder / "pipe.dcm")
    result = _subprocess("info", folder, "--json", timeout=60)  # hung forever before the fix
    assert result.returncode == 0, result.stderr
    assert one_volume(result.stdout)["n_files"] == 2


def test_a_link_to_dev_zero_in_a_dicom_folder_is_skipped(shared_data, tmp_path):
    folder = tmp_path / "pet"
    pet_series(shared_data, folder, n=2)
    (folder / "zero.dcm").symlink_to("/dev/zero")
    result = _subprocess("info", folder, "--json", timeout=60)
    assert result.returncode == 0, result.stderr
    assert one_volume(result.stdout)["n_files"] == 2


def test_a_link_to_a_regular_dicom_file_is_followed(shared_data, tmp_path):
    folder = tmp_path / "pet"
    files = pet_series(shared_data, tmp_path / "elsewhere", n=3)
    folder.mkdir()
    for f in files:
        (folder / f.name).symlink_to(f)
    result = _subprocess("info", folder, "--json", timeout=60)
    assert result.returncode == 0 and one_volume(result.stdout)["n_files"] == 3


def test_a_named_pipe_given_as_the_image_or_the_seeds_is_refused(tmp_path, a_small_mri):
    pipe = tmp_path / "image.nii.gz"
    os.mkfifo(pipe)
    result = _subprocess("info", pipe, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(f"mescc info: error: {pipe}: not a regular file")
    seeds = tmp_path / "seeds.mrk.json"
    os.mkfifo(seeds)
    out = tmp_path / "seg.nii.gz"
    result = _subprocess("segment", "--image", a_small_mri, "--seeds", seeds, "--out", out)
    assert result.returncode == 2 and f"error: {seeds}: not a regular file" in result.stderr
    assert not out.exists()


def test_a_folder_of_only_pipes_says_so(tmp_path, capsys):
    folder = tmp_path / "pipes"
    folder.mkdir()
    os.mkfifo(folder / "a.dcm")
    _refused(capsys, "info", folder, path=folder, phrases=["no regular file", "1 pipe"])


# ----------------------------------------------------------------------------- finding 5: tracebacks
def test_a_slice_with_empty_rows_is_named(shared_data, tmp_path, capsys):
    def empty_rows(ds, k):
        if k == 1:
            ds.Rows = None

    files = pet_series(shared_data, tmp_path / "pet", change=empty_rows)
    for command in ("info", "suv"):
        extra = ["--out", tmp_path / "suv.nii.gz"] if command == "suv" else []
        _refused(
            capsys, command, tmp_path / "pet", *extra, path=files[1], phrases=["Rows (0028,0010)"]
        )
    assert not (tmp_path / "suv.nii.gz").exists()


@pytest.mark.parametrize("spacing", [[0, 0], [-4.07, -4.07], ["nan", "nan"]])
def test_zero_negative_or_nan_pixel_spacing_is_refused(shared_data, tmp_path, capsys, spacing):
    files = pet_series(
        shared_data, tmp_path / "pet", change=lambda ds, k: setattr(ds, "PixelSpacing", spacing)
    )
    _refused(capsys, "info", tmp_path / "pet", path=files[0], phrases=["PixelSpacing (0028,0030)"])


def _injected(ds, when: str):
    ds.RadiopharmaceuticalInformationSequence[0].RadiopharmaceuticalStartDateTime = when


def test_scan_in_2099_after_injection_in_2026_is_refused(shared_data, tmp_path, capsys):
    def y2099(ds, k):
        ds.SeriesDate = ds.AcquisitionDate = "20990101"
        _injected(ds, "20260101100000")

    files = pet_series(shared_data, tmp_path / "pet", change=y2099)
    out = tmp_path / "suv.nii.gz"
    _refused(
        capsys,
        "suv",
        tmp_path / "pet",
        "--out",
        out,
        path=files[0],
        phrases=["half-lives", "more than the plausible 10"],
    )
    assert not out.exists()


def test_markups_point_labelled_other99999_is_refused(tmp_path, capsys, a_small_mri):
    seeds = tmp_path / "seeds.mrk.json"
    write_markups_points(
        seeds,
        [("cord", np.array([5.0, 5.0, 5.0])), ("other99999", np.array([10.0, 10.0, 5.0]))],
        descriptions=True,
    )
    out = tmp_path / "seg.nii.gz"
    _refused(
        capsys,
        "segment",
        "--image",
        a_small_mri,
        "--seeds",
        seeds,
        "--out",
        out,
        path=seeds,
        phrases=["'other99999'", "not a number 1-65535"],
    )
    assert not out.exists()


def test_seed_strokes_given_as_labels_to_metrics_are_refused(grade2_labels, tmp_path, capsys):
    seeds = tmp_path / "seeds.nii.gz"
    sitk.WriteImage(strokes_from_labels(grade2_labels), str(seeds))
    out = tmp_path / "metrics"
    _refused(
        capsys,
        "metrics",
        "--labels",
        seeds,
        "--out",
        out,
        path=seeds,
        phrases=["look like seed strokes", "not a grown segmentation", "closed cord"],
    )
    assert not out.exists()


# ----------------------------------------------------------------------------- finding 6: geometry
def _nan_position(ds, k):
    if k == 1:
        ds.ImagePositionPatient = ["0", "0", "nan"]


@pytest.mark.parametrize(
    "change, bad_slice, phrase",
    [
        (_nan_position, 1, "ImagePositionPatient (0020,0032) holds a non-finite value"),
        (
            lambda ds, k: setattr(ds, "ImageOrientationPatient", [0] * 6),
            0,
            "ImageOrientationPatient (0020,0037) is 0\\0\\0\\0\\0\\0",
        ),
        (
            lambda ds, k: setattr(ds, "ImageOrientationPatient", [1, 0, 0, 1, 0, 0]),
            0,
            "not two perpendicular unit vectors",
        ),
    ],
    ids=["nan position", "all-zero orientation", "parallel cosines"],
)
def test_invalid_dicom_geometry_is_refused(
    shared_data, tmp_path, capsys, change, bad_slice, phrase
):
    files = pet_series(shared_data, tmp_path / "pet", change=change)
    _refused(capsys, "info", tmp_path / "pet", path=files[bad_slice], phrases=[phrase])


@pytest.mark.parametrize(
    "kwargs, phrases",
    [
        ({"dims": (10, -1, 10), "data": np.ones(100, "<f4").tobytes()}, ["-1 voxels along axis 2"]),
        ({"pixdim": (0.0, 1.0, 1.0)}, ["pixdim", "0, 1, 1"]),
        ({"pixdim": (float("nan"), 1.0, 1.0)}, ["pixdim", "nan"]),
        (
            {"sform_code": 1, "srow": [[1, 0, 0, 50], [0, 1, 0, 0], [0, 0, 1, 0]]},
            ["qform and sform disagree by up to 50.00 mm", "qform code 1", "sform code 1"],
        ),
        (
            {"sform_code": 1, "srow": [[0, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]]},
            ["sform", "singular"],
        ),
    ],
    ids=["negative dim", "zero pixdim", "nan pixdim", "qform-sform disagree", "singular sform"],
)
def test_invalid_nifti_headers_are_refused(tmp_path, capsys, kwargs, phrases):
    path = write(tmp_path / "bad.nii.gz", nifti1(**kwargs))
    _refused(capsys, "info", path, path=path, phrases=phrases)


def test_agreeing_qform_and_sform_within_rounding_are_accepted(tmp_path, capsys):
    # 0.01 mm apart: float32 rounding of real headers stays below 0.02 mm (study.QFORM_SFORM_TOL_MM)
    srow = [[1, 0, 0, 0.01], [0, 1, 0, 0], [0, 0, 1, 0]]
    path = write(tmp_path / "ok.nii.gz", nifti1(sform_code=1, srow=srow))
    code, out, err = _run(capsys, "info", path, "--json")
    assert code == 0, err
    assert one_volume(out)["size"] == [10, 10, 10]


def test_real_nifti_files_pass_the_header_checks(shared_data):
    for path in sorted(shared_data.glob("*/*.nii.gz")):
        if path.name == "dmri.nii.gz":  # 4D: refused as such, after the header checks
            with pytest.raises(InputError, match="4D"):
                study.load_volume(path)
            continue
        study.load_volume(path)


def test_nan_voxels_in_a_nifti_are_refused_by_segment(tmp_path, capsys, a_small_mri):
    arr = np.ones(10 * 10 * 10, "<f4")
    arr[[3, 500, 999]] = np.nan
    image = write(tmp_path / "nan.nii.gz", nifti1(data=arr.tobytes()))
    seeds = tmp_path / "seeds.nii.gz"
    seeds_arr = np.zeros((10, 10, 10), np.uint8)
    seeds_arr[5, 5, 2], seeds_arr[5, 5, 7] = 1, 5
    out = tmp_path / "seg.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(seeds_arr), str(seeds))
    _refused(
        capsys,
        "segment",
        "--image",
        image,
        "--seeds",
        seeds,
        "--out",
        out,
        path=image,
        phrases=["3 NaN (not-a-number) voxel values among 1000"],
    )
    assert not out.exists()


def test_nan_voxels_in_an_mha_are_named_by_register(tmp_path, capsys, a_small_mri):
    arr = np.full((12, 20, 24), 50.0, np.float32)
    arr[6, 10, 12] = np.nan
    moving = tmp_path / "ct.mha"
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(moving))
    out = tmp_path / "t.tfm"
    _refused(
        capsys,
        "register",
        "--fixed",
        a_small_mri,
        "--moving",
        moving,
        "--out-transform",
        out,
        path=moving,
        phrases=["1 NaN (not-a-number) voxel value among 5760"],
    )
    assert not out.exists()


def test_integer_images_are_not_scanned_for_nan(shared_data):
    # DICOM stored values are integers: a real PET series loads (its float values come later)
    volume = study.load_volume(shared_data / FLT_1)
    assert volume.image.GetPixelID() != sitk.sitkFloat32


# ----------------------------------------------------------------------------- finding 7: implausible
def _flt_header(shared_data, **values):
    header = suv.PETHeader.from_dataset(pydicom.dcmread(shared_data / FLT_1), source="flt.dcm")
    return suv.with_overrides(header, **values)


def test_injection_a_year_before_the_scan_is_refused(shared_data, tmp_path, capsys):
    def year_before(ds, k):
        _injected(ds, f"{int(ds.SeriesDate[:4]) - 1}{ds.SeriesDate[4:]}090000")

    files = pet_series(shared_data, tmp_path / "pet", change=year_before)
    _refused(
        capsys,
        "suv",
        tmp_path / "pet",
        "--out",
        tmp_path / "suv.nii.gz",
        path=files[0],
        phrases=["366.3 days from the injection", "a date or time in the header is wrong"],
    )


def test_decay_bound_is_ten_half_lives(shared_data):
    # FLT slice 1: series time 15:23:16.921 on 1960-06-14, F-18 half-life 6586.2 s
    t_half = 6586.2
    reference = suv.parse_dt("19600614152316.921")
    for n_half_lives, refused in ((9.9, False), (10.1, True)):
        start = reference - suv.timedelta(seconds=n_half_lives * t_half)
        header = _flt_header(
            shared_data, injection_datetime=start.strftime("%Y%m%d%H%M%S.%f"), half_life_s=t_half
        )
        if refused:
            with pytest.raises(InputError, match="more than the plausible 10"):
                suv.compute_suv(header)
        else:  # 2^9.9 = 955 times the undecayed factor, still computed
            info = suv.compute_suv(header)
            assert info.decay_factor == pytest.approx(2.0**-9.9, rel=1e-3)


def test_a_scan_before_the_injection_is_refused(shared_data):
    header = _flt_header(shared_data, injection_datetime="19600615090000")  # the next day
    with pytest.raises(InputError, match="after the decay reference time") as caught:
        suv.compute_suv(header)
    assert caught.value.path == "flt.dcm"


def test_a_mass_touching_the_image_edge_gets_a_lower_bound_note(grade2_labels, tmp_path, capsys):
    arr = sitk.GetArrayViewFromImage(grade2_labels)
    k_mass = np.flatnonzero((arr == 3).any(axis=(1, 2)))
    k_cut = int(k_mass[len(k_mass) // 2])  # keep the slices from the mass's middle upwards
    cut = grade2_labels[:, :, k_cut:]
    path = tmp_path / "labels.nii.gz"
    sitk.WriteImage(cut, str(path))
    out = tmp_path / "metrics"
    code, stdout, err = _run(capsys, "metrics", "--labels", path, "--out", out)
    assert code == 0, err
    notes = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["notes"]
    edge = [n for n in notes if "touches the image edge" in n]
    assert len(edge) == 1 and "lower bounds" in edge[0] and "inferior" in edge[0]
    assert "touches the image edge" in stdout
    assert metrics.mass_edge_note(grade2_labels) is None  # the whole phantom: no note


# ----------------------------------------------------------------------------- finding 8: resources
def test_a_tiny_gzip_declaring_1500_cubed_voxels_is_refused_at_once(tmp_path, capsys):
    path = write(tmp_path / "bomb.nii.gz", nifti1((1500, 1500, 1500), data=b""))
    assert path.stat().st_size < 100
    start = time.perf_counter()
    _refused(capsys, "info", path, path=path, phrases=["1500×1500×1500", "voxels"])
    assert time.perf_counter() - start < 2.0  # was 10 s and 3.5 GB


def test_a_gzip_declaring_more_than_deflate_can_hold_is_refused_at_once(tmp_path, capsys):
    # 400 MB declared (under the 2^31-voxel cap) in a file of ~1 kB: > 1032 x its size
    path = write(tmp_path / "short.nii.gz", nifti1((1000, 1000, 100), data=b"\0" * 1000))
    start = time.perf_counter()
    _refused(capsys, "info", path, path=path, phrases=["cannot hold that"])
    assert time.perf_counter() - start < 2.0


def test_a_raw_nifti_declaring_more_than_its_size_is_refused(tmp_path, capsys):
    path = write(tmp_path / "short.nii", nifti1((100, 100, 100), data=b"\0" * 4000))
    _refused(capsys, "info", path, path=path, phrases=["cannot hold that"])


def _j2k_series(folder: Path, n: int = 3) -> list[Path]:
    """An MR series of ``n`` 128 x 128 slices stored as JPEG 2000 (GDCM writes it)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(n):
        arr = (np.random.default_rng(k).random((1, 128, 128)) * 1000).astype(np.int16)
        img = sitk.GetImageFromArray(arr)
        for tag, value in (
            ("0020|000e", "1.2.826.0.1.3680043.8.498.99"),
            ("0008|0060", "MR"),
            ("0020|0032", f"0\\0\\{5.0 * k}"),
            ("0020|0037", "1\\0\\0\\0\\1\\0"),
        ):
            img.SetMetaData(tag, value)
        writer = sitk.ImageFileWriter()
        writer.SetImageIO("GDCMImageIO")
        writer.KeepOriginalImageUIDOn()
        writer.SetUseCompression(True)
        writer.SetCompressor("JPEG2000")
        files.append(folder / f"s{k}.dcm")
        writer.SetFileName(str(files[-1]))
        writer.Execute(img)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"
    return files


@pytest.mark.parametrize("keep", [0.5, 0.98], ids=["cut in half", "last bytes cut"])
def test_a_truncated_jpeg2000_slice_is_named(tmp_path, capsys, keep):
    files = _j2k_series(tmp_path / "mr")
    data = files[1].read_bytes()
    files[1].write_bytes(data[: int(len(data) * keep)])
    _refused(capsys, "info", tmp_path / "mr", path=files[1])


def test_a_jpeg2000_codestream_without_its_end_is_named(tmp_path, capsys):
    # well-formed DICOM items around a cut codestream: only the missing end marker shows it
    files = _j2k_series(tmp_path / "mr")
    ds = pydicom.dcmread(files[2])
    frame = next(pydicom.encaps.generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = pydicom.encaps.encapsulate([frame[: len(frame) // 2]])
    ds.save_as(files[2])
    _refused(capsys, "info", tmp_path / "mr", path=files[2], phrases=["no end marker"])


def test_an_intact_jpeg2000_series_loads(tmp_path, capsys):
    _j2k_series(tmp_path / "mr")
    code, out, err = _run(capsys, "info", tmp_path / "mr", "--json")
    assert code == 0, err
    assert one_volume(out)["size"] == [128, 128, 3]


def test_a_truncated_uncompressed_slice_is_named(shared_data, tmp_path, capsys):
    files = pet_series(shared_data, tmp_path / "pet")
    files[2].write_bytes(files[2].read_bytes()[:-1000])
    for command in ("info", "suv"):
        extra = ["--out", tmp_path / "suv.nii.gz"] if command == "suv" else []
        _refused(capsys, command, tmp_path / "pet", *extra, path=files[2])


# ----------------------------------------------------------------------------- finding 9: seed messages
def _seed_cases(folder: Path, mri: Path) -> dict[str, tuple[Path, str]]:
    """Bad seeds for ``mri`` (24 x 20 x 12, 1 mm): name -> (file, expected phrase)."""
    reference = sitk.ReadImage(str(mri))

    def labelmap(name, arr, like=reference):
        image = sitk.GetImageFromArray(arr)
        image.CopyInformation(like) if like is not None else None
        sitk.WriteImage(image, str(folder / name))
        return folder / name

    two = np.zeros((12, 20, 24), np.uint8)
    two[6, 10, 5], two[6, 10, 15] = 1, 5
    one = np.zeros_like(two)
    one[6, 10, 5] = 1
    frac = two.astype(np.float32)
    frac[6, 10, 6] = 1.5
    neg = two.astype(np.int16)
    neg[6, 10, 6] = -1
    cases = {
        "other grid": (
            labelmap("grid.nii.gz", two[:, :, :20], None),
            "not on the first image's grid",
        ),
        "one label": (labelmap("one.nii.gz", one), "only label 1"),
        "no label": (labelmap("none.nii.gz", np.zeros_like(two)), "no label"),
        "non-integer": (labelmap("frac.nii.gz", frac), "non-integer"),
        "negative": (labelmap("neg.nii.gz", neg), "between 0 and 65535"),
        "missing": (folder / "absent.nii.gz", "no such file"),
    }
    inside, outside = np.array([5.0, 5.0, 5.0]), np.array([-500.0, 5.0, 5.0])
    for name, points, phrase in (
        ("unknown label", [("cord", inside), ("spleen", inside)], "'spleen'"),
        ("other99999", [("cord", inside), ("other99999", inside)], "'other99999'"),
        ("outside", [("cord", inside), ("other", outside)], "lies outside the image"),
        ("one point label", [("cord", inside)], "only label 1"),
    ):
        path = folder / f"{name.replace(' ', '_')}.mrk.json"
        write_markups_points(path, points, descriptions=True)
        cases[name] = (path, phrase)
    empty = folder / "empty.mrk.json"
    empty.write_text(json.dumps({"markups": [{"controlPoints": []}]}))
    cases["no point"] = (empty, "no defined point")
    garbage = folder / "garbage.mrk.json"
    garbage.write_text("{not json")
    cases["not json"] = (garbage, "not a JSON file")
    bad_cp = folder / "badcp.mrk.json"
    bad_cp.write_text(json.dumps({"markups": [{"controlPoints": [42]}]}))
    cases["point not an object"] = (bad_cp, "is not an object")
    return cases


SEED_CASES = [
    "other grid",
    "one label",
    "no label",
    "non-integer",
    "negative",
    "missing",
    "unknown label",
    "other99999",
    "outside",
    "one point label",
    "no point",
    "not json",
    "point not an object",
]


@pytest.mark.parametrize("case", SEED_CASES)
def test_every_seed_error_of_analyze_names_the_seeds_file(tmp_path, capsys, a_small_mri, case):
    seeds, phrase = _seed_cases(tmp_path, a_small_mri)[case]
    out = tmp_path / "results"
    _refused(
        capsys,
        "analyze",
        "--mri",
        a_small_mri,
        "--seeds",
        seeds,
        "--out",
        out,
        "--no-scene",
        path=seeds,
        phrases=[phrase],
    )
    assert not out.exists()


@pytest.mark.parametrize("case", SEED_CASES)
def test_every_seed_error_of_segment_names_the_seeds_file(tmp_path, capsys, a_small_mri, case):
    seeds, phrase = _seed_cases(tmp_path, a_small_mri)[case]
    out = tmp_path / "seg.nii.gz"
    _refused(
        capsys,
        "segment",
        "--image",
        a_small_mri,
        "--seeds",
        seeds,
        "--out",
        out,
        path=seeds,
        phrases=[phrase],
    )
    assert not out.exists()


def test_nan_suv_near_the_mass_is_refused_by_the_uptake_engine(grade2_labels):
    # images handed over in memory (the Slicer module) skip the file loader's NaN check
    from MESCCAnalyzerLib.pet import uptake

    mass = sitk.Cast(grade2_labels == 3, sitk.sitkUInt8)
    arr = np.where(sitk.GetArrayViewFromImage(mass) > 0, 7.0, 1.0).astype(np.float32)
    k, j, i = (int(v[0]) for v in np.nonzero(arr == 7.0))
    far = arr.copy()
    far[0, 0, 0] = np.nan  # far from the mass: harmless
    near = arr.copy()
    near[k, j, i] = np.nan
    for values, refused in ((far, False), (near, True)):
        pet = sitk.GetImageFromArray(values)
        pet.CopyInformation(mass)
        if refused:
            with pytest.raises(InputError, match="1 NaN or infinite value"):
                uptake.uptake_metrics(pet, mass)
        else:
            assert uptake.uptake_metrics(pet, mass)["suv_max"] == pytest.approx(7.0)


# --- 11. a header pointing the reader at another file of the machine ---------------------------
NHDR = (
    "NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4 4\nencoding: raw\n"
    "space: left-posterior-superior\nspace directions: (1,0,0) (0,1,0) (0,0,1)\n"
    "space origin: (0,0,0)\ndata file: {name}\n"
)


@pytest.mark.parametrize("name", ["/etc/passwd", "../outside.raw", "/dev/zero"])
def test_a_detached_header_cannot_point_outside_its_folder(name, tmp_path, capsys):
    folder = tmp_path / "study"
    folder.mkdir()
    (tmp_path / "outside.raw").write_bytes(bytes(64))
    header = folder / "t2.nhdr"
    header.write_text(NHDR.format(name=name))
    assert main(["info", str(header)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(header) in err and "outside its folder" in err


def test_a_detached_header_with_its_data_beside_it_loads(tmp_path):
    (tmp_path / "t2.raw").write_bytes(bytes(range(64)))
    header = tmp_path / "t2.nhdr"
    header.write_text(NHDR.format(name="t2.raw"))
    image = study.load_image(header)
    assert image.GetSize() == (4, 4, 4)
    assert sitk.GetArrayFromImage(image).ravel().tolist() == list(range(64))
