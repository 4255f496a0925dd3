"""Loading the volumes of a multimodal study: DICOM folders, NIfTI, NRRD and MHA.

:func:`load_image` returns one scalar 3D :class:`SimpleITK.Image` in LPS millimetres;
:func:`load_volume` returns it with what the files say about it (:class:`Volume`: modality,
patient and study identifiers, series description, units); :func:`describe` turns a volume
into the plain dictionary that ``mescc info`` prints.

Paths:

* a folder: a DICOM series (recursively scanned; several series need ``modality`` or
  ``series_uid`` to choose; slices sorted by position along the slice normal, see
  :mod:`MESCCAnalyzerLib.dicom_series`);
* a DICOM file: that file alone (a single slice or a multi-frame object);
* ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd`` (anything SimpleITK reads): the
  modality is unknown unless given.

Every problem with the input raises :class:`~MESCCAnalyzerLib.errors.InputError` naming the
file: missing path, empty folder, no image, several series without a choice, non-uniform
slice spacing, a truncated or non-image file, a 4D, 2D or multi-component image.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import dicom_series
from .errors import InputError

#: Modalities accepted for ``modality=`` (DICOM Modality codes)
MODALITIES = ("MR", "CT", "PT")

_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")


@dataclass
class Volume:
    """A loaded 3D volume and what its files say about it."""

    image: sitk.Image
    source: Path
    modality: str | None = None
    format: str = ""  # "DICOM", "NIfTI", "NRRD", "MetaImage", ...
    patient_id: str | None = None
    patient_name: str | None = None
    study_uid: str | None = None
    study_date: str | None = None
    study_description: str | None = None
    series_uid: str | None = None
    series_description: str | None = None
    units: str | None = None
    files: list[Path] = field(default_factory=list, repr=False)
    headers: list = field(default_factory=list, repr=False)  # pydicom Datasets, sorted slices


def _check_modality(modality: str | None) -> str | None:
    if modality is None:
        return None
    m = modality.upper()
    if m == "PET":
        m = "PT"
    if m not in MODALITIES:
        raise InputError(f"unknown modality {modality!r}", hint="use MR, CT or PT")
    return m


def _first_line(exc: BaseException) -> str:
    return dicom_series._first_line(exc)


def _check_scalar_3d(image: sitk.Image, path: Path) -> sitk.Image:
    dim = image.GetDimension()
    size = "×".join(str(s) for s in image.GetSize())
    if dim == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    elif dim == 4:
        raise InputError(
            f"a 4D image ({size}) where a 3D volume is needed",
            path=path,
            hint="extract one time point or volume first",
        )
    elif dim != 3:
        raise InputError(f"a {dim}D image ({size}) where a 3D volume is needed", path=path)
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"{image.GetNumberOfComponentsPerPixel()} components per voxel (colour or vector image) "
            "where a scalar volume is needed",
            path=path,
        )
    return image


def _format_name(path: Path) -> str:
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "NIfTI"
    if name.endswith((".nrrd", ".nhdr")):
        return "NRRD"
    if name.endswith((".mha", ".mhd")):
        return "MetaImage"
    return path.suffix.lstrip(".") or "image"


def _inflate_count(f, wbits: int, first: bytes = b"") -> tuple[int, bool]:
    """Bytes a zlib/gzip stream inflates to, and whether it ended properly (members chained)."""
    d = zlib.decompressobj(wbits)
    total, chunk = 0, first
    try:
        while True:
            if not chunk:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
            total += len(d.decompress(chunk))
            chunk = b""
            while d.eof and d.unused_data:  # a further gzip member
                rest = d.unused_data
                d = zlib.decompressobj(wbits)
                total += len(d.decompress(rest))
        total += len(d.flush())
    except zlib.error:
        return total, False
    return total, d.eof


def _nifti_expected_bytes(header: bytes) -> int | None:
    for endian in "<>":
        if struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            bitpix = struct.unpack(endian + "h", header[72:74])[0]
            vox_offset = struct.unpack(endian + "f", header[108:112])[0]
            n = 1
            for d in dims[1 : 1 + max(0, min(dims[0], 7))]:
                n *= max(int(d), 1)
            return int(vox_offset) + n * max(int(bitpix), 8) // 8
    return None


def _check_complete(path: Path, image: sitk.Image) -> None:
    """Refuse a truncated file: ITK reads short NIfTI/NRRD/MHA data without complaint."""
    name = path.name.lower()
    expected = (
        int(np.prod(image.GetSize()))
        * image.GetNumberOfComponentsPerPixel()
        * image.GetSizeOfPixelComponent()
    )
    available = None  # bytes of pixel data (or of the whole NIfTI) actually present
    complete = True
    with open(path, "rb") as f:
        if name.endswith(".nii.gz"):
            available, complete = _inflate_count(f, 16 + zlib.MAX_WBITS)
            with gzip.open(path, "rb") as g:
                try:
                    expected = _nifti_expected_bytes(g.read(348)) or 0
                except (OSError, EOFError):
                    expected, complete = 1, False
        elif name.endswith(".nii"):
            expected = _nifti_expected_bytes(f.read(348)) or 0
            available = path.stat().st_size
        elif name.endswith((".nrrd", ".mha")):
            data = f.read(1 << 16)
            sep = b"\n\n" if name.endswith(".nrrd") else b"ElementDataFile = LOCAL"
            at = data.find(sep)
            if at < 0:
                return  # detached data or an unusual header: ITK's own checks apply
            header = data[:at].decode("latin-1").lower()
            start = at + len(sep)
            if name.endswith(".mha"):
                start = data.find(b"\n", start) + 1
            if name.endswith(".nrrd") and ("data file:" in header or "datafile:" in header):
                return
            rest = data[start:]
            if ("encoding: gzip" in header) or ("encoding: gz" in header):
                available, complete = _inflate_count(f, 16 + zlib.MAX_WBITS, rest)
            elif "compresseddata = true" in header:
                available, complete = _inflate_count(f, zlib.MAX_WBITS, rest)
            elif name.endswith(".mha") or "encoding: raw" in header:
                available = path.stat().st_size - start
            else:
                return  # text encodings: ITK fails on short data itself
    if available is None:
        return
    if not complete or available < expected:
        raise InputError(
            f"truncated or corrupt file: {available} of {expected} bytes of image data present",
            path=path,
        )


def _read_image_file(path: Path) -> sitk.Image:
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        message = _first_line(exc)
        if (
            "Unable to determine ImageIO reader" in message
            or "Could not create IO object" in message
        ):
            raise InputError(
                "not an image file SimpleITK can read (not NIfTI, NRRD, MHA or DICOM)",
                path=path,
            ) from None
        detail = "" if message.startswith("Reason:") else f" ({message})"
        raise InputError(
            f"cannot read the image: truncated or corrupt file{detail}", path=path
        ) from None
    try:
        _check_complete(path, image)
    except OSError as exc:
        raise InputError(f"cannot read: {exc}", path=path) from None
    return _check_scalar_3d(image, path)


def _text(ds, keyword: str) -> str | None:
    value = ds.get(keyword) if ds is not None else None
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _volume_from_dicom_headers(image, source, files, headers, fmt="DICOM") -> Volume:
    ds = headers[0] if headers else None
    modality = _text(ds, "Modality")
    units = _text(ds, "Units") if modality == "PT" else ("HU" if modality == "CT" else None)
    return Volume(
        image=image,
        source=source,
        modality=modality,
        format=fmt,
        patient_id=_text(ds, "PatientID"),
        patient_name=_text(ds, "PatientName"),
        study_uid=_text(ds, "StudyInstanceUID"),
        study_date=_text(ds, "StudyDate"),
        study_description=_text(ds, "StudyDescription"),
        series_uid=_text(ds, "SeriesInstanceUID"),
        series_description=_text(ds, "SeriesDescription"),
        units=units,
        files=list(files),
        headers=list(headers),
    )


def _load_dicom_file(path: Path, modality: str | None) -> Volume:
    ds = dicom_series.read_header(path)
    if ds is None:
        raise InputError("not a DICOM file (no DICOM header could be read)", path=path)
    header = dicom_series.slice_header(path, ds)
    if header is None:
        raise InputError(
            f"a DICOM object without an image (Modality {ds.get('Modality', '?')})", path=path
        )
    if modality and header.modality != modality:
        raise InputError(
            f"the file is {header.modality or 'of unknown modality'}, not {modality}", path=path
        )
    if header.frames > 1:
        image = _read_image_file(path)
    else:
        info = dicom_series.SeriesInfo(header.series_uid, header.modality, "", [header])
        geometry = dicom_series.series_geometry(info, folder=path)
        image = dicom_series.read_series_pixels(geometry, folder=path)
    return _volume_from_dicom_headers(image, path, [path], [ds])


def _load_dicom_folder(path: Path, modality, series_uid, progress, cancel) -> Volume:
    from .progress import sub_progress

    series = dicom_series.scan_folder(
        path, progress=sub_progress(progress, 0.0, 0.5), cancel=cancel
    )
    chosen = dicom_series.choose_series(
        series, folder=path, modality=modality, series_uid=series_uid
    )
    if len(chosen.slices) == 1 and chosen.slices[0].frames > 1:
        return _load_dicom_file(chosen.slices[0].path, modality)
    geometry = dicom_series.series_geometry(chosen, folder=path)
    if progress is not None:
        progress(0.5, f"reading {len(geometry.files)} slices")
    image = dicom_series.read_series_pixels(geometry, folder=path)
    if progress is not None:
        progress(1.0, "")
    return _volume_from_dicom_headers(
        image, path, geometry.files, [h.dataset for h in geometry.headers]
    )


def load_volume(
    path: str | os.PathLike,
    *,
    modality: str | None = None,
    series_uid: str | None = None,
    progress=None,
    cancel=None,
) -> Volume:
    """Load one 3D volume with its identifiers.

    Parameters
    ----------
    path : folder (DICOM series), DICOM file, or NIfTI/NRRD/MHA file.
    modality : ``"MR"``, ``"CT"`` or ``"PT"``; chooses the series of a DICOM folder, and is
        recorded as the modality of a NIfTI/NRRD/MHA file (whose format does not store it).
    series_uid : SeriesInstanceUID choosing the series of a DICOM folder.

    Raises
    ------
    InputError : the path cannot give one scalar 3D volume (message names the file).
    """
    modality = _check_modality(modality)
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or folder", path=path)
    if path.is_dir():
        return _load_dicom_folder(path, modality, series_uid, progress, cancel)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise InputError(f"cannot read: {exc.strerror}", path=path) from None
    if size == 0:
        raise InputError("the file is empty", path=path)
    fmt = _format_name(path)
    if fmt in ("NIfTI", "NRRD", "MetaImage"):
        image = _read_image_file(path)
        return Volume(image=image, source=path, modality=modality, format=fmt, files=[path])
    # anything else: DICOM if it has a DICOM header, otherwise whatever SimpleITK reads
    if dicom_series.read_header(path) is not None:
        return _load_dicom_file(path, modality)
    if path.suffix.lower() in _DICOM_SUFFIXES:
        raise InputError("not a DICOM file (no DICOM header could be read)", path=path)
    image = _read_image_file(path)
    return Volume(image=image, source=path, modality=modality, format=fmt, files=[path])


def load_image(
    path: str | os.PathLike,
    *,
    modality: str | None = None,
    series_uid: str | None = None,
    progress=None,
    cancel=None,
) -> sitk.Image:
    """Load one scalar 3D volume (LPS, mm) from a DICOM folder or file, NIfTI, NRRD or MHA.

    See :func:`load_volume` for the parameters; raises :class:`InputError` on bad input.
    """
    return load_volume(
        path, modality=modality, series_uid=series_uid, progress=progress, cancel=cancel
    ).image


def describe(volume: Volume) -> dict:
    """A plain dictionary for ``mescc info``: geometry, value range and identifiers.

    Keys: ``path``, ``format``, ``modality``, ``size`` (i, j, k), ``spacing_mm``,
    ``origin_lps_mm``, ``direction`` (row-major 3×3, columns = axes), ``orientation`` (the
    three-letter LPS code of the axes, e.g. ``LPS`` or ``PIR``), ``pixel_type``, ``min``,
    ``max``, ``units``, and the identifiers present (``patient_id``, ``patient_name``,
    ``study_uid``, ``study_date``, ``study_description``, ``series_uid``,
    ``series_description``, ``n_files``).
    """
    image = volume.image
    arr = sitk.GetArrayViewFromImage(image)
    finite = arr[np.isfinite(arr)] if arr.dtype.kind == "f" else arr
    vmin = float(finite.min()) if finite.size else float("nan")
    vmax = float(finite.max()) if finite.size else float("nan")
    out = {
        "path": str(volume.source),
        "format": volume.format,
        "modality": volume.modality,
        "size": list(image.GetSize()),
        "spacing_mm": [float(v) for v in image.GetSpacing()],
        "origin_lps_mm": [float(v) for v in image.GetOrigin()],
        "direction": [float(v) for v in image.GetDirection()],
        "orientation": orientation_code(image.GetDirection()),
        "pixel_type": image.GetPixelIDTypeAsString(),
        "min": vmin,
        "max": vmax,
        "units": volume.units,
    }
    for key in (
        "patient_id",
        "patient_name",
        "study_uid",
        "study_date",
        "study_description",
        "series_uid",
        "series_description",
    ):
        value = getattr(volume, key)
        if value:
            out[key] = value
    if volume.format == "DICOM":
        out["n_files"] = len(volume.files)
    return out


def orientation_code(direction) -> str:
    """Three letters naming where each image axis points in LPS (``LPS``, ``PIR``, ...)."""
    d = np.asarray(direction, dtype=float).reshape(3, 3)
    letters = (("R", "L"), ("A", "P"), ("I", "S"))
    code = ""
    for axis in range(3):
        v = d[:, axis]
        k = int(np.argmax(np.abs(v)))
        code += letters[k][1 if v[k] > 0 else 0]
    return code


def format_description(info: dict) -> str:
    """A human-readable block for one volume (``mescc info`` without ``--json``)."""

    def vec(values, fmt="{:.4g}"):
        return "(" + ", ".join(fmt.format(v) for v in values) + ")"

    d = np.asarray(info["direction"]).reshape(3, 3)
    rows = [
        ("path", info["path"]),
        ("format", info["format"]),
        ("modality", info["modality"] or "unknown"),
        ("size", " × ".join(str(s) for s in info["size"])),
        ("spacing (mm)", vec(info["spacing_mm"])),
        ("origin (LPS mm)", vec(info["origin_lps_mm"], "{:.3f}")),
        (
            "direction",
            "  ".join(vec(d[:, i], "{:.4f}") for i in range(3)) + f"  [{info['orientation']}]",
        ),
        ("pixel type", info["pixel_type"]),
        (
            "value range",
            f"{info['min']:.6g} … {info['max']:.6g}"
            + (f" {info['units']}" if info.get("units") else ""),
        ),
    ]
    for key, label in (
        ("patient_id", "patient ID"),
        ("patient_name", "patient name"),
        ("study_uid", "study UID"),
        ("study_date", "study date"),
        ("study_description", "study"),
        ("series_uid", "series UID"),
        ("series_description", "series"),
        ("n_files", "files"),
    ):
        if key in info:
            rows.append((label, str(info[key])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
