"""Loading a diffusion-weighted series: DICOM (classic or enhanced) or 4D NIfTI with FSL files.

:func:`load_dwi` returns a :class:`DWISeries`: the volumes as 3D float32 SimpleITK images on
one grid (LPS, mm), their b-values (s/mm²) and gradient directions (unit vectors in the
patient frame, LPS; zero for a volume without a gradient).

**DICOM.** A folder (the series chosen as for any volume, see
:mod:`MESCCAnalyzerLib.io.dicom_series`) or one enhanced multi-frame file. Each image (file
or frame) gets its diffusion encoding from :func:`diffusion_encoding`; the b-value from

1. the standard Diffusion b-value (0018,9087), at the top level or in the frame's
   MR Diffusion Sequence (0018,9117);
2. otherwise the vendor's private tag, found through its private creator (the block is not
   assumed to be ``10``): Siemens (0019,xx0C) of ``SIEMENS MR HEADER`` (IS); GE
   (0043,xx39) of ``GEMS_PARM_01`` (IS, 4 values: the first is the b-value, written plus
   10⁹ by some software versions, which is taken off); Philips (2001,xx03) of
   ``Philips Imaging DD 001`` (FL).

The direction from the standard Diffusion Gradient Orientation (0018,9089) (top level, or in
the Diffusion Gradient Direction Sequence (0018,9076)), else Siemens (0019,xx0E) (FD×3), GE
(0019,xxBB/BC/BD) of ``GEMS_ACQU_01`` (DS each), Philips (2005,xxB0/B1/B2) of
``Philips MR Imaging DD 001`` (FL each). Values written with VR UN (implicit-VR files
without a private dictionary) are decoded as text numbers, else as little-endian floats.

Images with the same encoding (b-value within 1 s/mm², direction within 10⁻³) form one
volume; repeats of an encoding (several b = 0 images at one position) are told apart by
AcquisitionNumber, then InstanceNumber. Each volume is sorted and checked as a 3D series
(:func:`~MESCCAnalyzerLib.io.dicom_series.series_geometry`), and all volumes must share one
grid. Siemens mosaics are refused (convert them with dcm2niix first).

**NIfTI.** A 4D file with FSL text files: ``bval`` (one b-value per volume) and ``bvec``
(three rows, one column per volume; a file of one row per volume is accepted too). By
default they are ``STEM.bval``/``STEM.bvec`` beside ``STEM.nii(.gz)``; the ``bvec`` file is
optional. FSL directions are in the voxel frame with the first axis flipped when the
voxel-to-world matrix has a positive determinant; they are turned into LPS here.

Every problem raises :class:`~MESCCAnalyzerLib.errors.InputError` naming the file: a 3D image,
one b-value only, a b-value count that does not match the volumes, no b-value in a header,
volumes on different grids, unreadable files.
"""

from __future__ import annotations

import math
import os
import struct
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..progress import check, sub_progress
from . import dicom_series, study

#: b-values closer than this (s/mm²) are one encoding (one volume per position)
B_VALUE_TOL = 1.0
#: directions whose components differ by less than this are one encoding
DIRECTION_TOL = 1e-3
#: b-values up to this (s/mm²) count as b = 0 when grouping shells
B0_MAX = 10.0
#: shells: a b-value joins the shell of the smallest b-value within max(this, 5 %) of it
SHELL_TOL = 20.0
#: GE adds this to the b-value in (0043,1039) on some software versions
GE_B_OFFSET = 1e9
#: grid agreement between volumes (mm for origin, relative for spacing, direction cosines)
GRID_TOL_MM = 1e-3

_NIFTI_SUFFIXES = (".nii", ".nii.gz")


@dataclass
class DiffusionEncoding:
    """One image's diffusion encoding and where it was read."""

    b_value: float
    direction: tuple[float, float, float] | None  # unit vector (LPS) or None
    source: str  # e.g. "(0018,9087)", "Siemens (0019,100C)"
    isotropic: bool = False  # the scanner's trace (isotropic) image


@dataclass
class DWISeries:
    """A diffusion series: volumes on one grid with their b-values and directions.

    ``volumes``: 3D float32 images (LPS, mm), one per acquired volume. ``bvals``: (N,)
    b-values in s/mm². ``bvecs``: (N, 3) unit gradient directions in the patient frame (LPS),
    rows of zeros for volumes without a gradient (b = 0, the scanner's trace images); ``None``
    when no direction is known. ``isotropic``: (N,) True for the scanner's trace images.
    """

    volumes: list[sitk.Image]
    bvals: np.ndarray
    bvecs: np.ndarray | None
    source: Path
    description: str
    format: str = ""  # "DICOM", "DICOM enhanced", "NIfTI"
    b_value_source: str = ""
    isotropic: np.ndarray | None = None
    series_uid: str | None = None
    frame_of_reference_uid: str | None = None
    patient_id: str | None = None
    series_description: str | None = None
    files: list[Path] = field(default_factory=list, repr=False)

    @property
    def reference(self) -> sitk.Image:
        """The first volume: the grid every volume shares."""
        return self.volumes[0]

    def shells(self) -> list[tuple[float, np.ndarray]]:
        """The b-value shells, lowest first: ``(b, indices of its volumes)``; see
        :func:`shells_of`."""
        return shells_of(self.bvals)


def shells_of(bvals) -> list[tuple[float, np.ndarray]]:
    """Group b-values into shells: ``[(mean b of the shell, volume indices)]``, lowest first.

    A b-value up to :data:`B0_MAX` belongs to the b = 0 shell; a larger one joins the shell of
    the smallest b-value (above :data:`B0_MAX`) within ``max(SHELL_TOL, 5 % of b)`` below it (scanners write e.g.
    795, 800 and 805 for the directions of one nominal b = 800).
    """
    bvals = np.asarray(bvals, dtype=np.float64)
    order = np.argsort(bvals, kind="stable")
    shells: list[list[int]] = []
    first = None
    for i in order:
        b = bvals[i]
        if shells and (b <= B0_MAX if first <= B0_MAX else b - first <= max(SHELL_TOL, 0.05 * b)):
            shells[-1].append(int(i))
            continue
        shells.append([int(i)])
        first = b
    out = []
    for members in shells:
        idx = np.array(sorted(members))
        b = float(np.mean(bvals[idx]))
        out.append((0.0 if b <= B0_MAX and np.all(bvals[idx] <= B0_MAX) else b, idx))
    return out


# ---------------------------------------------------------------------------------------
# Header values
# ---------------------------------------------------------------------------------------
def _private(ds, group: int, creator: str, offset: int):
    """The data element (group, xx offset) of ``creator``'s private block, or None."""
    try:
        block = ds.private_block(group, creator)
    except (KeyError, ValueError):
        return None
    try:
        return block[offset]
    except KeyError:
        return None


def _numbers(elem, binary: str = "<d") -> list[float] | None:
    """The numbers of a data element (any VR): text values, numbers, or UN bytes (decoded
    as text numbers when they read as such, else as little-endian ``binary`` floats)."""
    if elem is None:
        return None
    value = elem.value
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, bytes | bytearray):
        text = bytes(value).rstrip(b"\0 ").decode("latin-1", "replace")
        try:
            return [float(v) for v in text.split("\\") if v.strip()]
        except ValueError:
            size = struct.calcsize(binary)
            if len(value) % size:
                return None
            return list(struct.unpack(f"<{len(value) // size}{binary[-1]}", bytes(value)))
    if isinstance(value, str):
        value = value.split("\\")
    if not isinstance(value, list | tuple) and not hasattr(value, "__iter__"):
        value = [value]
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out or None


def _text(elem) -> str:
    if elem is None or elem.value is None:
        return ""
    value = elem.value
    if isinstance(value, bytes | bytearray):
        value = bytes(value).decode("latin-1", "replace")
    return str(value).strip(" \0").upper()


def _unit(vector, path) -> tuple[float, float, float] | None:
    """A direction as a unit 3-vector; None when absent or zero (no gradient)."""
    if vector is None or len(vector) != 3:
        return None
    v = np.asarray(vector, dtype=np.float64)
    if not np.all(np.isfinite(v)):
        raise InputError("a diffusion gradient direction holds a non-finite value", path=path)
    norm = float(np.linalg.norm(v))
    if norm < 1e-6:
        return None
    return tuple(float(c) for c in v / norm)


def _standard(ds):
    """The standard b-value and direction elements of ``ds`` (a file or a frame's group)."""
    holders = [ds]
    seq = ds.get("MRDiffusionSequence")
    if seq:
        holders.insert(0, seq[0])
    b = direction = directionality = None
    for holder in holders:
        if b is None and "DiffusionBValue" in holder:
            b = holder["DiffusionBValue"]
        if directionality is None and "DiffusionDirectionality" in holder:
            directionality = holder["DiffusionDirectionality"]
        if direction is None:
            if "DiffusionGradientOrientation" in holder:
                direction = holder["DiffusionGradientOrientation"]
            else:
                dseq = holder.get("DiffusionGradientDirectionSequence")
                if dseq and "DiffusionGradientOrientation" in dseq[0]:
                    direction = dseq[0]["DiffusionGradientOrientation"]
    return b, direction, directionality


def diffusion_encoding(ds, *, path=None, frame=None) -> DiffusionEncoding | None:
    """The diffusion encoding of one image: a classic file's dataset ``ds``, or with ``frame``
    (a per-frame functional group item) one frame of an enhanced file. ``None`` when no
    b-value is found in any of the places listed in the module docstring."""
    b_elem, dir_elem, directionality = _standard(frame if frame is not None else ds)
    if frame is not None and b_elem is None:  # shared functional groups
        shared = ds.get("SharedFunctionalGroupsSequence")
        if shared:
            b_elem, dir_elem2, directionality2 = _standard(shared[0])
            dir_elem = dir_elem or dir_elem2
            directionality = directionality or directionality2
    b = _numbers(b_elem)
    source = "(0018,9087)"
    direction = _numbers(dir_elem)
    isotropic = _text(directionality) == "ISOTROPIC"
    if b is None:
        for name, group, creator, offset, binary in (
            ("Siemens (0019,100C)", 0x0019, "SIEMENS MR HEADER", 0x0C, "<d"),
            ("GE (0043,1039)", 0x0043, "GEMS_PARM_01", 0x39, "<i"),
            ("Philips (2001,1003)", 0x2001, "Philips Imaging DD 001", 0x03, "<f"),
        ):
            b = _numbers(_private(ds, group, creator, offset), binary)
            if b is not None:
                source = name
                break
        if b is not None and source.startswith("GE") and b[0] >= GE_B_OFFSET:
            b = [b[0] - GE_B_OFFSET]
    if b is None:
        return None
    if direction is None:
        direction = _vendor_direction(ds)
    if source.startswith("Siemens"):
        isotropic = isotropic or _text(_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0D)) == (
            "ISOTROPIC"
        )
    if source.startswith("Philips"):
        isotropic = isotropic or _text(_private(ds, 0x2001, "Philips Imaging DD 001", 0x04)) == "I"
    b_value = float(b[0])
    if not math.isfinite(b_value) or b_value < 0:
        raise InputError(f"the diffusion b-value {source} is {b_value:g}", path=path)
    unit = _unit(direction, path)
    if b_value > B0_MAX and unit is None:
        isotropic = True
    return DiffusionEncoding(b_value, unit, source, isotropic and b_value > B0_MAX)


def _vendor_direction(ds) -> list[float] | None:
    siemens = _numbers(_private(ds, 0x0019, "SIEMENS MR HEADER", 0x0E), "<d")
    if siemens is not None and len(siemens) == 3:
        return siemens
    for creator, group, offsets, binary in (
        ("GEMS_ACQU_01", 0x0019, (0xBB, 0xBC, 0xBD), "<d"),
        ("Philips MR Imaging DD 001", 0x2005, (0xB0, 0xB1, 0xB2), "<f"),
    ):
        parts = [_numbers(_private(ds, group, creator, o), binary) for o in offsets]
        if all(p is not None and len(p) == 1 for p in parts):
            return [p[0] for p in parts]
    return None


def has_diffusion_tags(ds) -> bool:
    """Whether a header (classic file, or an enhanced file's first frame) carries a b-value."""
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    try:
        if frames:
            return diffusion_encoding(ds, frame=frames[0]) is not None
        return diffusion_encoding(ds) is not None
    except InputError:
        return True  # a damaged b-value is still a diffusion series; loading says what is wrong


# ---------------------------------------------------------------------------------------
# DICOM
# ---------------------------------------------------------------------------------------
@dataclass
class _Image:
    """One 2D image (a file or a frame) of the series with its encoding."""

    header: dicom_series.SliceHeader
    encoding: DiffusionEncoding
    order: tuple  # repeat order: (AcquisitionNumber, InstanceNumber / frame index)
    frame: int | None = None  # frame index in an enhanced file


def _int(value, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _encoding_key(enc: DiffusionEncoding) -> tuple:
    d = enc.direction or (0.0, 0.0, 0.0)
    return (
        round(enc.b_value / B_VALUE_TOL),
        *(round(c / DIRECTION_TOL) for c in d),
        enc.isotropic,
    )


def _volumes_of(images: list[_Image], path) -> list[list[_Image]]:
    """Split the images into volumes: one per encoding and repeat (see the module docstring),
    in acquisition order (first image's repeat order)."""
    by_key: dict[tuple, list[_Image]] = {}
    for im in images:
        by_key.setdefault(_encoding_key(im.encoding), []).append(im)
    volumes = []
    for members in by_key.values():
        h0 = members[0].header
        normal = np.cross(h0.iop[:3], h0.iop[3:]) if h0.iop else np.array([0.0, 0.0, 1.0])
        by_position: dict[int, list[_Image]] = {}
        for im in members:
            pos = im.header.ipp_lps_mm
            at = round(float(np.dot(pos, normal)) / 0.01) if pos is not None else 0
            by_position.setdefault(at, []).append(im)
        counts = {len(v) for v in by_position.values()}
        if len(counts) != 1:
            enc = members[0].encoding
            raise InputError(
                f"the images at b = {enc.b_value:g} s/mm² do not cover every slice position "
                f"the same number of times ({min(counts)} to {max(counts)}): a slice is missing",
                path=path,
                hint="complete the series, or export it again",
            )
        repeats = counts.pop()
        for group in by_position.values():
            group.sort(key=lambda im: im.order)
        for r in range(repeats):
            volumes.append([group[r] for group in by_position.values()])
    volumes.sort(key=lambda vol: min(im.order for im in vol))
    return volumes


def _check_not_mosaic(ds, path) -> None:
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "MOSAIC" in image_type:
        raise InputError(
            "a Siemens mosaic (all slices of a volume tiled in one image)",
            path=path,
            hint="convert the series with dcm2niix and give the 4D NIfTI with its bval/bvec",
        )


def _classic_images(chosen: dicom_series.SeriesInfo, folder, cancel) -> list[_Image]:
    images = []
    for h in chosen.slices:
        check(cancel)
        ds = h.dataset
        _check_not_mosaic(ds, h.path)
        enc = diffusion_encoding(ds, path=h.path)
        if enc is None:
            raise InputError(
                "no diffusion b-value in the header (standard (0018,9087), Siemens "
                "(0019,100C), GE (0043,1039) or Philips (2001,1003))",
                path=h.path,
                hint="give a diffusion series, or its 4D NIfTI with --bvals/--bvecs",
            )
        order = (_int(ds.get("AcquisitionNumber")), _int(ds.get("InstanceNumber")), str(h.path))
        images.append(_Image(h, enc, order))
    return images


def _read_volume(images: list[_Image], folder, pixels=None) -> sitk.Image:
    """One volume: sorted, checked (:func:`dicom_series.series_geometry`) and read."""
    h0 = images[0].header
    info = dicom_series.SeriesInfo(h0.series_uid, h0.modality, "", [im.header for im in images])
    geometry = dicom_series.series_geometry(info, folder=folder)
    if pixels is None:
        image = dicom_series.read_series_pixels(geometry, folder=folder)
        return sitk.Cast(image, sitk.sitkFloat32)
    frame_of = {id(im.header): im.frame for im in images}
    slope_of = {
        id(im.header): (im.header.rescale_slope, im.header.rescale_intercept) for im in images
    }
    stack = []
    for h in geometry.headers:
        slope, intercept = slope_of[id(h)]
        stack.append(pixels[frame_of[id(h)]].astype(np.float32) * slope + intercept)
    image = sitk.GetImageFromArray(np.stack(stack).astype(np.float32))
    image.SetOrigin(geometry.origin_lps_mm)
    image.SetSpacing(geometry.spacing_mm)
    image.SetDirection(geometry.direction)
    return image


def _same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=GRID_TOL_MM)
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5, atol=1e-6)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
    )


def _assemble(volume_images, folder, path_of, pixels, progress, cancel):
    volumes, encodings = [], []
    for n, images in enumerate(volume_images):
        check(cancel)
        progress(n / len(volume_images), f"reading volume {n + 1}/{len(volume_images)}")
        image = _read_volume(images, folder, pixels)
        if volumes and not _same_grid(image, volumes[0]):
            raise InputError(
                f"volume {n + 1} (b = {images[0].encoding.b_value:g} s/mm²) lies on another grid "
                "than the first (size, origin, spacing or orientation differ)",
                path=path_of(images),
                hint="a diffusion series must keep one slice geometry",
            )
        volumes.append(image)
        encodings.append(images[0].encoding)
    return volumes, encodings


def _load_dicom(path: Path, series_uid, progress, cancel) -> DWISeries:
    if path.is_dir():
        series = dicom_series.scan_folder(
            path, progress=sub_progress(progress, 0.0, 0.4), cancel=cancel
        )
        chosen = dicom_series.choose_series(series, folder=path, series_uid=series_uid)
    else:
        ds = dicom_series.read_header(path)
        header = dicom_series.slice_header(path, ds) if ds is not None else None
        if header is None:
            raise InputError("not a DICOM image file", path=path)
        chosen = dicom_series.SeriesInfo(header.series_uid, header.modality, "", [header])
    if len(chosen.slices) == 1 and chosen.slices[0].frames > 1:
        return _load_enhanced(chosen.slices[0], progress, cancel)
    images = _classic_images(chosen, path, cancel)
    volume_images = _volumes_of(images, path)
    volumes, encodings = _assemble(
        volume_images,
        path,
        lambda ims: ims[0].header.path,
        None,
        sub_progress(progress, 0.4, 1.0),
        cancel,
    )
    datasets = [h.dataset for h in chosen.slices]
    return _dicom_series(path, volumes, encodings, datasets[0], "DICOM", len(chosen.slices))


def _frame_geometry(ds, frame, path):
    """(ImagePositionPatient, ImageOrientationPatient, PixelSpacing, slope, intercept) of one
    frame of an enhanced file (per-frame groups first, then the shared ones)."""
    shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]

    def item(seq_name, attr):
        for holder in (frame, shared):
            if holder is None:
                continue
            seq = holder.get(seq_name)
            if seq and attr in seq[0]:
                return seq[0].get(attr)
        return None

    ipp = dicom_series._floats(item("PlanePositionSequence", "ImagePositionPatient"), 3)
    iop = dicom_series._floats(item("PlaneOrientationSequence", "ImageOrientationPatient"), 6)
    spacing = dicom_series._floats(item("PixelMeasuresSequence", "PixelSpacing"), 2)
    slope = dicom_series._float(
        item("PixelValueTransformationSequence", "RescaleSlope") or ds.get("RescaleSlope"), 1.0
    )
    intercept = dicom_series._float(
        item("PixelValueTransformationSequence", "RescaleIntercept") or ds.get("RescaleIntercept"),
        0.0,
    )
    return ipp, iop, spacing, slope, intercept


def _load_enhanced(header: dicom_series.SliceHeader, progress, cancel) -> DWISeries:
    path = header.path
    ds = dicom_series.check_pixel_data(
        path, rows=header.rows, columns=header.columns, frames=header.frames
    )
    _check_not_mosaic(ds, path)
    frames = ds.get("PerFrameFunctionalGroupsSequence")
    if not frames or len(frames) != header.frames:
        raise InputError(
            "an enhanced multi-frame file without one Per-frame Functional Group per frame",
            path=path,
        )
    images = []
    for n, frame in enumerate(frames):
        check(cancel)
        enc = diffusion_encoding(ds, path=path, frame=frame)
        if enc is None:
            raise InputError(
                f"frame {n + 1} has no diffusion b-value (MR Diffusion Sequence (0018,9117))",
                path=path,
            )
        ipp, iop, spacing, slope, intercept = _frame_geometry(ds, frame, path)
        h = dicom_series.SliceHeader(
            path=path,
            series_uid=header.series_uid,
            modality=header.modality,
            rows=header.rows,
            columns=header.columns,
            ipp_lps_mm=ipp,
            iop=iop,
            pixel_spacing_mm=spacing,
            frames=1,
            rescale_slope=slope,
            rescale_intercept=intercept,
            dataset=ds,
        )
        images.append(_Image(h, enc, (0, n, ""), frame=n))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pixels = ds.pixel_array
    except Exception as exc:  # pydicom's decoders raise many kinds
        raise InputError(
            f"cannot decode the pixel data ({exc})",
            path=path,
            hint="a compressed file may need the pylibjpeg/gdcm plugins; or export uncompressed",
        ) from None
    pixels = np.asarray(pixels).reshape(header.frames, header.rows, header.columns)
    volume_images = _volumes_of(images, path)
    volumes, encodings = _assemble(
        volume_images, path, lambda ims: path, pixels, sub_progress(progress, 0.2, 1.0), cancel
    )
    return _dicom_series(path, volumes, encodings, ds, "DICOM enhanced", 1)


def _dicom_series(path, volumes, encodings, ds, fmt, n_files) -> DWISeries:
    bvals = np.array([e.b_value for e in encodings], dtype=np.float64)
    known = [e.direction is not None for e in encodings]
    bvecs = None
    if any(known):
        bvecs = np.array([e.direction or (0.0, 0.0, 0.0) for e in encodings], dtype=np.float64)
    sources = sorted({e.source for e in encodings})
    _check_b_values(bvals, path)

    def text(keyword):
        value = ds.get(keyword)
        return str(value).strip() or None if value is not None else None

    what = "enhanced multi-frame file" if fmt == "DICOM enhanced" else f"{n_files} files"
    return DWISeries(
        volumes=volumes,
        bvals=bvals,
        bvecs=bvecs,
        source=path,
        description=f"DICOM diffusion series ({what}), b-values from {', '.join(sources)}",
        format=fmt,
        b_value_source=", ".join(sources),
        isotropic=np.array([e.isotropic for e in encodings]),
        series_uid=text("SeriesInstanceUID"),
        frame_of_reference_uid=text("FrameOfReferenceUID"),
        patient_id=text("PatientID"),
        series_description=text("SeriesDescription"),
    )


def _check_b_values(bvals: np.ndarray, path) -> None:
    if len(shells_of(bvals)) < 2:
        raise InputError(
            f"every volume has b = {bvals[0]:g} s/mm²: an ADC needs at least two b-values"
            if len(bvals)
            else "no diffusion volume",
            path=path,
            hint="give the whole diffusion series, with its b = 0 images",
        )


# ---------------------------------------------------------------------------------------
# NIfTI + FSL bval/bvec
# ---------------------------------------------------------------------------------------
def _stem(path: Path) -> Path:
    name = path.name
    for suffix in _NIFTI_SUFFIXES[::-1]:
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    return path.with_suffix("")


def _read_numbers(path: Path, what: str) -> np.ndarray:
    """The rows of numbers of an FSL text file (a 2D array; rows may differ in length only
    when the file is broken, which is refused)."""
    dicom_series.require_regular_file(path)
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read the {what} file ({exc})", path=path) from None
    rows = []
    for line in text.splitlines():
        fields = line.replace(",", " ").split()
        if not fields:
            continue
        try:
            rows.append([float(v) for v in fields])
        except ValueError:
            raise InputError(
                f"the {what} file holds something that is not a number: {line.strip()[:40]!r}",
                path=path,
            ) from None
    if not rows or len({len(r) for r in rows}) != 1:
        raise InputError(
            f"the {what} file is empty or its rows differ in length",
            path=path,
            hint="FSL format: b-values on one line; directions as three lines",
        )
    values = np.array(rows, dtype=np.float64)
    if not np.all(np.isfinite(values)):
        raise InputError(f"the {what} file holds a non-finite value", path=path)
    return values


def read_fsl_bvals(path: str | os.PathLike, n_volumes: int) -> np.ndarray:
    """The b-values (s/mm²) of an FSL ``bval`` file, checked against ``n_volumes``."""
    path = Path(path)
    values = _read_numbers(path, "b-value").ravel()
    if values.size != n_volumes:
        raise InputError(
            f"{values.size} b-values for {n_volumes} volumes",
            path=path,
            hint="the bval file must give one b-value per volume of the image",
        )
    if np.any(values < 0):
        raise InputError(f"a negative b-value ({values.min():g})", path=path)
    return values


def read_fsl_bvecs(path: str | os.PathLike, n_volumes: int) -> np.ndarray:
    """The (N, 3) directions of an FSL ``bvec`` file as written (voxel frame, FSL flip);
    three rows of N (FSL) or N rows of three."""
    path = Path(path)
    values = _read_numbers(path, "gradient direction")
    if values.shape == (3, n_volumes):
        return values.T.copy()
    if values.shape == (n_volumes, 3):
        return values
    raise InputError(
        f"{values.shape[0]}×{values.shape[1]} numbers where 3×{n_volumes} (one column per "
        "volume) are needed",
        path=path,
        hint="the bvec file must give three components per volume of the image",
    )


def fsl_bvecs_to_lps(bvecs: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """FSL directions (voxel frame; first axis flipped when the voxel-to-world matrix has a
    positive determinant) as unit vectors in the patient frame (LPS); zero rows stay zero."""
    g = np.asarray(bvecs, dtype=np.float64).copy()
    direction = np.asarray(reference.GetDirection(), dtype=np.float64).reshape(3, 3)
    # the NIfTI (RAS) matrix is diag(-1, -1, 1) @ direction @ diag(spacing): same determinant sign
    if np.linalg.det(direction) > 0:
        g[:, 0] = -g[:, 0]
    lps = g @ direction.T
    norms = np.linalg.norm(lps, axis=1)
    out = np.zeros_like(lps)
    nz = norms > 1e-6
    out[nz] = lps[nz] / norms[nz, None]
    return out


def _read_4d(path: Path) -> sitk.Image:
    """A 4D NIfTI with the checks :mod:`.study` makes on any image file (header, declared
    size, truncation, non-finite values), but not its 3D-only rule."""
    try:
        header = study._read_nifti_header(path)
        if header is not None:
            study._check_nifti_header(path, header)
        study._check_declared_size(path)
    except OSError as exc:
        raise InputError(f"cannot read: {exc}", path=path) from None
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise study._read_error(exc, path) from None
    try:
        study._check_complete(path, image)
    except OSError as exc:
        raise InputError(f"cannot read: {exc}", path=path) from None
    return image


def _load_nifti(path: Path, bvals_path, bvecs_path) -> DWISeries:
    dicom_series.require_regular_file(path)
    image = _read_4d(path)
    size = "×".join(str(s) for s in image.GetSize())
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("a vector or colour image where a diffusion series is needed", path=path)
    if image.GetDimension() != 4 or image.GetSize()[3] < 2:
        raise InputError(
            f"a {image.GetDimension()}D image ({size}) where a 4D diffusion series "
            "(one volume per b-value and direction) is needed",
            path=path,
            hint="give the 4D diffusion image, not a single volume or an ADC map",
        )
    n = image.GetSize()[3]
    stem = _stem(path)
    bvals_path = Path(bvals_path) if bvals_path is not None else stem.with_name(stem.name + ".bval")
    if not bvals_path.exists():
        raise InputError(
            "no b-value file",
            path=bvals_path,
            hint="give the FSL bval file with --bvals",
        )
    bvals = read_fsl_bvals(bvals_path, n)
    volumes = []
    for t in range(n):
        vol = sitk.Extract(image, [*image.GetSize()[:3], 0], [0, 0, 0, t])
        volumes.append(sitk.Cast(vol, sitk.sitkFloat32))
    study._check_geometry(volumes[0], path)
    arr = sitk.GetArrayViewFromImage(image)
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        raise study._non_finite_error(n_nan, int(np.count_nonzero(np.isinf(arr))), arr.size, path)
    if bvecs_path is None:
        default = stem.with_name(stem.name + ".bvec")
        bvecs_path = default if default.exists() else None
    bvecs = None
    if bvecs_path is not None:
        bvecs = fsl_bvecs_to_lps(read_fsl_bvecs(bvecs_path, n), volumes[0])
    _check_b_values(bvals, bvals_path)
    isotropic = bvals > B0_MAX
    if bvecs is not None:
        isotropic &= np.linalg.norm(bvecs, axis=1) < 0.5
    return DWISeries(
        volumes=volumes,
        bvals=bvals,
        bvecs=bvecs,
        source=path,
        description=f"4D NIfTI with FSL b-values {bvals_path.name}"
        + (f" and directions {Path(bvecs_path).name}" if bvecs_path is not None else ""),
        format="NIfTI",
        b_value_source=str(bvals_path),
        isotropic=isotropic,
        files=[path, bvals_path] + ([Path(bvecs_path)] if bvecs_path is not None else []),
    )


# ---------------------------------------------------------------------------------------
# Entry points
# ---------------------------------------------------------------------------------------
def is_nifti(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(_NIFTI_SUFFIXES)


def load_dwi(
    path: str | os.PathLike,
    *,
    bvals: str | os.PathLike | None = None,
    bvecs: str | os.PathLike | None = None,
    series_uid: str | None = None,
    progress=None,
    cancel=None,
) -> DWISeries:
    """Load a diffusion series (see the module docstring).

    Parameters
    ----------
    path : DICOM folder, enhanced multi-frame DICOM file, or 4D ``.nii``/``.nii.gz``.
    bvals, bvecs : FSL files for a NIfTI (default ``STEM.bval``/``STEM.bvec`` beside it);
        refused for DICOM, whose headers carry the encoding.
    series_uid : chooses the series of a DICOM folder holding several.

    Raises
    ------
    InputError : naming the file, for anything that cannot give a diffusion series.
    """
    progress = progress or (lambda fraction, message: None)
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path=path)
    if is_nifti(path):
        return _load_nifti(path, bvals, bvecs)
    if bvals is not None or bvecs is not None:
        raise InputError(
            "--bvals/--bvecs are for a NIfTI image; a DICOM series carries its b-values",
            path=bvals if bvals is not None else bvecs,
        )
    if path.is_file():
        dicom_series.require_regular_file(path)
        if dicom_series.read_header(path) is None:
            raise InputError(
                "neither a DICOM file nor a NIfTI image (.nii, .nii.gz)",
                path=path,
                hint="give a DICOM folder, or a 4D NIfTI with its bval/bvec files",
            )
    return _load_dicom(path, series_uid, progress, cancel)


def probe(
    path: str | os.PathLike,
    *,
    bvals: str | os.PathLike | None = None,
    series_uid: str | None = None,
) -> bool:
    """Whether ``path`` looks like a diffusion series (cheap: one header): a 4D NIfTI with
    more than one volume and a b-value file (``bvals``, or ``STEM.bval`` beside it), or DICOM
    whose first image of the chosen series has a b-value."""
    path = Path(path)
    if not path.exists():
        return False
    if is_nifti(path):
        if not path.is_file():
            return False
        stem = _stem(path)
        if bvals is None and not stem.with_name(stem.name + ".bval").is_file():
            return False
        header = study._read_nifti_header(path)
        return header is not None and len(header.dims) >= 4 and header.dims[3] > 1
    candidates = [path] if path.is_file() else dicom_series._candidate_files(path)[0]
    for candidate in candidates:
        ds = dicom_series.read_header(candidate)
        if ds is None or "Rows" not in ds:
            continue
        if series_uid and str(ds.get("SeriesInstanceUID", "")) != series_uid:
            continue
        return has_diffusion_tags(ds)
    return False


def describe(dwi: DWISeries) -> dict:
    """A plain dictionary for ``mescc info``: the grid, and the volumes per b-value shell with
    their number of distinct directions."""
    ref = dwi.reference
    shells = []
    for b, idx in dwi.shells():
        n_dirs = 0
        if dwi.bvecs is not None:
            vectors = dwi.bvecs[idx]
            vectors = vectors[np.linalg.norm(vectors, axis=1) > 0.5]
            # a direction and its opposite encode the same diffusion
            keys = {tuple(np.round(v * np.sign(v[np.argmax(np.abs(v))]), 3)) for v in vectors}
            n_dirs = len(keys)
        entry = {
            "b_s_mm2": round(b, 3),
            "volumes": int(len(idx)),
            "directions": n_dirs,
            "b_values_s_mm2": sorted({float(v) for v in dwi.bvals[idx]}),
        }
        if dwi.isotropic is not None and np.any(dwi.isotropic[idx]):
            entry["trace_volumes"] = int(np.count_nonzero(dwi.isotropic[idx]))
        shells.append(entry)
    out = {
        "path": str(dwi.source),
        "kind": "diffusion",
        "format": dwi.format,
        "description": dwi.description,
        "size": [*ref.GetSize(), len(dwi.volumes)],
        "spacing_mm": [float(v) for v in ref.GetSpacing()],
        "origin_lps_mm": [float(v) for v in ref.GetOrigin()],
        "direction": [float(v) for v in ref.GetDirection()],
        "orientation": study.orientation_code(ref.GetDirection()),
        "n_volumes": len(dwi.volumes),
        "b_values_s_mm2": [float(v) for v in dwi.bvals],
        "shells": shells,
        "gradient_directions": dwi.bvecs is not None,
    }
    for key in ("series_uid", "series_description", "patient_id", "frame_of_reference_uid"):
        value = getattr(dwi, key)
        if value:
            out[key] = value
    return out


def format_description(info: dict) -> str:
    """A human-readable block for one diffusion series (``mescc info`` without ``--json``)."""

    def vec(values, fmt="{:.4g}"):
        return "(" + ", ".join(fmt.format(v) for v in values) + ")"

    rows = [
        ("path", info["path"]),
        ("format", f"{info['format']} (diffusion)"),
        ("size", " × ".join(str(s) for s in info["size"][:3]) + f" × {info['n_volumes']} volumes"),
        ("spacing (mm)", vec(info["spacing_mm"])),
        ("origin (LPS mm)", vec(info["origin_lps_mm"], "{:.3f}")),
        ("orientation", info["orientation"]),
        ("b-values from", info["description"]),
    ]
    for shell in info["shells"]:
        dirs = f", {shell['directions']} directions" if shell["directions"] else ""
        trace = f", {shell['trace_volumes']} scanner trace" if shell.get("trace_volumes") else ""
        rows.append((f"b = {shell['b_s_mm2']:g} s/mm²", f"{shell['volumes']} volumes{dirs}{trace}"))
    if not info["gradient_directions"]:
        rows.append(("directions", "not given"))
    for key, label in (
        ("series_uid", "series UID"),
        ("series_description", "series"),
        ("patient_id", "patient ID"),
    ):
        if key in info:
            rows.append((label, str(info[key])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
