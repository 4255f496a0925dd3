"""DICOM series discovery, slice sorting and geometry checks (pydicom headers, SimpleITK pixels).

A folder may hold several series (and non-DICOM files, and non-image DICOM objects such as
structured reports); :func:`scan_folder` groups the image files by ``SeriesInstanceUID`` from
their headers only (``stop_before_pixels``). :func:`series_geometry` sorts a series' slices by
their position along the slice normal, ``n · ImagePositionPatient`` with
``n = row cosine × column cosine`` (never by file name or ``InstanceNumber``), and checks that
the slices form one regular 3D grid:

* same ``ImageOrientationPatient`` (cosines within :data:`ORIENTATION_TOL`), ``Rows``,
  ``Columns`` and ``PixelSpacing`` (within :data:`PIXEL_SPACING_TOL_MM`);
* no two slices at the same position (that is a 4D series: several time points or echoes);
* uniform spacing between consecutive slices: every gap within
  ``SLICE_GAP_TOL_MM + SLICE_GAP_TOL_REL × median gap`` of the median gap (0.01 mm + 1 %,
  so DS rounding passes and one missing slice — a gap twice the others — does not);
* in-plane origin drift between slices (gantry tilt: the positions not on one line along the
  normal) within the same tolerance;
* every value usable: Rows and Columns positive, ImagePositionPatient finite,
  ImageOrientationPatient two unit vectors at right angles (within :data:`IOP_UNIT_TOL`),
  PixelSpacing finite and positive (each error names the file).

Only regular files are read (a link to one is followed): a named pipe or a link to a device
such as ``/dev/zero`` in the folder is skipped, since reading it would block or never end.
Before the pixels are decoded, :func:`check_pixel_data` refuses a file whose pixel data is
shorter than its header declares, or whose compressed codestream lacks its end marker (a cut
JPEG 2000 slice would otherwise cost gigabytes in the decoder and fail naming no file).

The image's origin is the position of the first slice in that order (the most negative along
the normal: for an axial LPS series, the most inferior slice), its direction columns are the
row cosine, the column cosine and the normal, its third spacing the median gap.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..progress import check

#: tolerance on direction cosines between slices (dimensionless)
ORIENTATION_TOL = 1e-4
#: tolerance on PixelSpacing between slices, mm
PIXEL_SPACING_TOL_MM = 1e-3
#: tolerance on the unit length and orthogonality of the ImageOrientationPatient cosines
IOP_UNIT_TOL = 1e-2
#: absolute part of the slice-gap tolerance, mm (DS values are rounded to ~16 characters)
SLICE_GAP_TOL_MM = 0.01
#: relative part of the slice-gap tolerance (fraction of the median gap)
SLICE_GAP_TOL_REL = 0.01

#: DICOM modalities that carry no image volume; their files are ignored when scanning.
NON_IMAGE_MODALITIES = frozenset(
    {"SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "SR", "PR", "KO", "REG", "DOC", "PLAN", "FID"}
)


@dataclass
class SliceHeader:
    """The header values of one image file needed to place it in a volume."""

    path: Path
    series_uid: str
    modality: str
    rows: int
    columns: int
    ipp_lps_mm: tuple[float, float, float] | None
    iop: tuple[float, ...] | None
    pixel_spacing_mm: tuple[float, float] | None
    frames: int
    rescale_slope: float
    rescale_intercept: float
    dataset: object = field(repr=False, default=None)  # pydicom Dataset without pixels


@dataclass
class SeriesInfo:
    """One DICOM series found in a folder."""

    series_uid: str
    modality: str
    description: str
    slices: list[SliceHeader]

    @property
    def n_files(self) -> int:
        return len(self.slices)

    def summary(self) -> str:
        """One line: UID, modality, description, number of files."""
        desc = f' "{self.description}"' if self.description else ""
        n = self.n_files
        return f"{self.series_uid or '(no SeriesInstanceUID)'} {self.modality or '?'}{desc} ({n} file{'s' if n != 1 else ''})"


@dataclass
class SeriesGeometry:
    """Sorted files and the 3D grid they form (LPS, mm)."""

    files: list[Path]
    origin_lps_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    direction: tuple[float, ...]  # row-major 3×3, columns = row cosine, column cosine, normal
    size: tuple[int, int, int]
    headers: list[SliceHeader]


def _floats(value, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    try:
        out = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return None
    return out if len(out) == n else None


def _ds_text(values) -> str:
    """A multi-valued DS as DICOM writes it (values separated by backslashes)."""
    return "\\".join(f"{v:g}" for v in values)


def _float(value, default: float) -> float:
    try:
        return float(value) if value not in (None, "") else default
    except (TypeError, ValueError):
        return default


def read_header(path: str | os.PathLike):
    """Read a DICOM file's header (no pixels); return the pydicom Dataset or ``None``.

    Files without the 128-byte preamble and ``DICM`` marker (old ACR-NEMA style exports) are
    retried with ``force=True`` when their name looks like DICOM (``.dcm``, ``.ima``,
    ``.dicom`` or no extension), and kept only if they carry image attributes.
    """
    import warnings

    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(os.fspath(path), stop_before_pixels=True)
    except InvalidDicomError:
        pass
    except Exception:  # pydicom may raise odd errors on garbage; the file is simply not DICOM
        return None
    if Path(path).suffix.lower() not in ("", ".dcm", ".dicom", ".ima"):
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(os.fspath(path), stop_before_pixels=True, force=True)
            if "Rows" in ds and "Columns" in ds and ("SOPClassUID" in ds or "Modality" in ds):
                int(ds.Rows), int(ds.Columns)
                return ds
    except Exception:
        pass
    return None


def _size_value(ds, keyword: str, tag: str, path) -> int:
    """Rows or Columns as a positive integer; an empty or invalid value names the file."""
    value = ds.get(keyword)
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = 0
    if number < 1:
        raise InputError(
            f"{keyword} {tag} is {'empty' if value in (None, '') else repr(value)}: the image "
            "size is unknown",
            path=path,
            hint="the file is damaged; remove it from the folder or re-export the series",
        )
    return number


def slice_header(path: Path, ds) -> SliceHeader | None:
    """Turn a header into a :class:`SliceHeader`; ``None`` for a non-image object.

    Raises :class:`InputError` naming the file when Rows or Columns is empty or not positive.
    """
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES or "Rows" not in ds or "Columns" not in ds:
        return None
    rows = _size_value(ds, "Rows", "(0028,0010)", path)
    columns = _size_value(ds, "Columns", "(0028,0011)", path)
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    return SliceHeader(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        modality=modality,
        rows=rows,
        columns=columns,
        ipp_lps_mm=_floats(ds.get("ImagePositionPatient"), 3),
        iop=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing_mm=_floats(ds.get("PixelSpacing"), 2),
        frames=frames,
        rescale_slope=_float(ds.get("RescaleSlope"), 1.0),
        rescale_intercept=_float(ds.get("RescaleIntercept"), 0.0),
        dataset=ds,
    )


def is_regular_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a regular file (a symbolic link to one counts): not a named pipe,
    socket or device, whose reading could block forever or never end (``/dev/zero``)."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def require_regular_file(path: str | os.PathLike) -> None:
    """Raise :class:`InputError` unless ``path`` is a regular file (see :func:`is_regular_file`)."""
    if not is_regular_file(path):
        raise InputError(
            "not a regular file (a named pipe, socket or device): it cannot be read as an image",
            path=path,
            hint="give the image file itself",
        )


def _candidate_files(folder: Path) -> tuple[list[Path], int]:
    """The regular files under ``folder`` (hidden ones and DICOMDIR left out), and how many
    other entries (pipes, devices, broken links) were skipped."""
    files, n_special = [], 0
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            path = Path(root) / name
            if is_regular_file(path):
                files.append(path)
            else:
                n_special += 1
    return files, n_special


def scan_folder(folder: str | os.PathLike, *, progress=None, cancel=None) -> list[SeriesInfo]:
    """Group the DICOM image files under ``folder`` (recursively) by series.

    Returns the series in a stable order (modality, then UID). Non-DICOM files and non-image
    DICOM objects are skipped. Raises :class:`InputError` when nothing usable is found.
    """
    folder = Path(folder)
    files, n_special = _candidate_files(folder)
    if not files:
        raise InputError(
            "the folder is empty"
            if not n_special
            else f"the folder holds no regular file ({n_special} pipe, device or broken link "
            "entries skipped)",
            path=folder,
            hint="give a folder of DICOM files or an image file",
        )
    by_uid: dict[str, list[SliceHeader]] = {}
    n_not_dicom = n_not_image = 0
    for i, path in enumerate(files):
        check(cancel)
        if progress is not None and i % 20 == 0:
            progress(i / len(files), "reading DICOM headers")
        ds = read_header(path)
        if ds is None:
            n_not_dicom += 1
            continue
        header = slice_header(path, ds)
        if header is None:
            n_not_image += 1
            continue
        by_uid.setdefault(header.series_uid, []).append(header)
    if not by_uid:
        parts = []
        if n_not_dicom:
            parts.append(f"{n_not_dicom} file{'s' if n_not_dicom > 1 else ''} not DICOM")
        if n_not_image:
            parts.append(
                f"{n_not_image} DICOM object{'s' if n_not_image > 1 else ''} without an image"
            )
        if n_special:
            parts.append(f"{n_special} pipe, device or broken link entries skipped")
        raise InputError(
            f"no DICOM image found ({', '.join(parts)})",
            path=folder,
            hint="give a folder of DICOM image files, or a NIfTI/NRRD/MHA file",
        )
    series = []
    for uid, slices in by_uid.items():
        ds = slices[0].dataset
        series.append(
            SeriesInfo(
                series_uid=uid,
                modality=slices[0].modality,
                description=str(ds.get("SeriesDescription", "") or "").strip(),
                slices=slices,
            )
        )
    series.sort(key=lambda s: (s.modality, s.series_uid))
    return series


def choose_series(
    series: list[SeriesInfo],
    *,
    folder: str | os.PathLike,
    modality: str | None = None,
    series_uid: str | None = None,
) -> SeriesInfo:
    """Pick one series by UID or modality; refuse an ambiguous choice with a listing."""
    candidates = series
    if series_uid:
        candidates = [s for s in series if s.series_uid == series_uid]
        if not candidates:
            raise InputError(
                f"no series with SeriesInstanceUID {series_uid}; found: "
                + "; ".join(s.summary() for s in series),
                path=folder,
                hint="choose one of the UIDs listed with --series",
            )
    if modality:
        wanted = modality.upper()
        matching = [s for s in candidates if s.modality == wanted]
        if not matching:
            raise InputError(
                f"no {wanted} series; found: " + "; ".join(s.summary() for s in candidates),
                path=folder,
                hint="choose another --modality, or a --series UID",
            )
        candidates = matching
    if len(candidates) > 1:
        raise InputError(
            f"{len(candidates)} series in one folder: "
            + "; ".join(s.summary() for s in candidates),
            path=folder,
            hint=(
                "choose one with --series UID"
                if len({s.modality for s in candidates}) == 1
                else "choose one with --modality MR|CT|PT or --series UID"
            ),
        )
    return candidates[0]


def _check_consistent(slices: list[SliceHeader]) -> None:
    """Every slice placeable, and sharing size, orientation and pixel spacing."""
    first = slices[0]
    for s in slices:
        if s.frames > 1 and len(slices) > 1:
            raise InputError(
                "a multi-frame file mixed with other files of the same series",
                path=s.path,
                hint="give the multi-frame file's path on its own",
            )
        for name, value in (
            ("ImagePositionPatient (0020,0032)", s.ipp_lps_mm),
            ("ImageOrientationPatient (0020,0037)", s.iop),
        ):
            if value is None:
                raise InputError(
                    f"missing or malformed {name}: the slice cannot be placed in space",
                    path=s.path,
                )
            if not np.all(np.isfinite(value)):
                raise InputError(
                    f"{name} holds a non-finite value ({', '.join(f'{v:g}' for v in value)}): "
                    "the slice cannot be placed in space",
                    path=s.path,
                )
        _check_orientation(s)
        if s.pixel_spacing_mm is not None and not (
            np.all(np.isfinite(s.pixel_spacing_mm)) and min(s.pixel_spacing_mm) > 0
        ):
            raise InputError(
                "PixelSpacing (0028,0030) is "
                f"{_ds_text(s.pixel_spacing_mm)} mm: "
                "each must be a positive number",
                path=s.path,
                hint="the header is damaged; re-export the series",
            )
        if s.rows != first.rows or s.columns != first.columns:
            raise InputError(
                f"slice size {s.columns}×{s.rows} differs from {first.columns}×{first.rows} "
                "in the same series",
                path=s.path,
            )
        if np.max(np.abs(np.subtract(s.iop, first.iop))) > ORIENTATION_TOL:
            raise InputError(
                "slice orientation (ImageOrientationPatient) differs within the series",
                path=s.path,
                hint="the series mixes planes (e.g. localizer images): remove the odd files or export the volume alone",
            )
        if (s.pixel_spacing_mm is None) != (first.pixel_spacing_mm is None) or (
            s.pixel_spacing_mm is not None
            and np.max(np.abs(np.subtract(s.pixel_spacing_mm, first.pixel_spacing_mm)))
            > PIXEL_SPACING_TOL_MM
        ):
            raise InputError("PixelSpacing differs within the series", path=s.path)


def _check_orientation(s: SliceHeader) -> None:
    """ImageOrientationPatient must be two unit vectors at right angles (within
    :data:`IOP_UNIT_TOL`); an all-zero or otherwise degenerate one would give NaN directions."""
    row = np.asarray(s.iop[:3], dtype=float)
    col = np.asarray(s.iop[3:], dtype=float)
    norms = (float(np.linalg.norm(row)), float(np.linalg.norm(col)))
    dot = float(row @ col)
    if max(abs(n - 1.0) for n in norms) > IOP_UNIT_TOL or abs(dot) > IOP_UNIT_TOL:
        raise InputError(
            "ImageOrientationPatient (0020,0037) is "
            f"{_ds_text(s.iop)}: not two perpendicular unit vectors "
            f"(lengths {norms[0]:.3g} and {norms[1]:.3g}, cosine between them {dot:.3g})",
            path=s.path,
            hint="the header is damaged; re-export the series",
        )


def _slice_spacing(slices, along, positions, normal, folder) -> float:
    """The regular gap between sorted slices; refuse duplicates, gaps and sideways drift."""
    if len(slices) == 1:
        ds = slices[0].dataset
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = abs(_float(ds.get(keyword), 0.0))  # some old scanners write it negative
            if np.isfinite(value) and value > 0:
                return value
        return 1.0
    gaps = np.diff(along)
    dup = np.flatnonzero(gaps < SLICE_GAP_TOL_MM)
    if dup.size:
        i = int(dup[0])
        raise InputError(
            f"slices share positions along the normal (e.g. {slices[i].path.name} and "
            f"{slices[i + 1].path.name} at {along[i]:.2f} mm): a 4D series "
            "(several time points, phases or echoes) where a 3D volume is needed",
            path=folder,
            hint="split the series, or export one time point",
        )
    spacing = float(np.median(gaps))
    tol = SLICE_GAP_TOL_MM + SLICE_GAP_TOL_REL * spacing
    bad = np.flatnonzero(np.abs(gaps - spacing) > tol)
    if bad.size:
        i = int(bad[0])
        raise InputError(
            f"non-uniform slice spacing: {gaps[i]:.3f} mm between {slices[i].path.name} and "
            f"{slices[i + 1].path.name}, {spacing:.3f} mm elsewhere (a missing slice?)",
            path=folder,
            hint=f"slice gaps must agree within {tol:.3f} mm; complete the series",
        )
    # the positions must lie on one line along the normal (no gantry tilt / shear)
    expected = positions[0] + np.outer(along - along[0], normal)
    drift = float(np.max(np.linalg.norm(positions - expected, axis=1)))
    if drift > tol:
        raise InputError(
            f"slice positions drift {drift:.2f} mm sideways from the slice normal "
            "(gantry tilt or sheared series), which a regular 3D grid cannot represent",
            path=folder,
            hint="resample the series on the scanner (untilted) before loading",
        )
    return spacing


def series_geometry(info: SeriesInfo, *, folder: str | os.PathLike) -> SeriesGeometry:
    """Sort the slices of a series along their normal and check they form a regular grid."""
    slices = info.slices
    _check_consistent(slices)
    first = slices[0]
    row = np.array(first.iop[:3], dtype=float)
    col = np.array(first.iop[3:], dtype=float)
    row /= np.linalg.norm(row)
    col /= np.linalg.norm(col)
    normal = np.cross(row, col)
    positions = np.array([s.ipp_lps_mm for s in slices], dtype=float)
    along = positions @ normal
    if not np.all(np.isfinite(along)):
        raise InputError("ImagePositionPatient values out of range", path=folder)
    order = np.argsort(along, kind="stable")
    slices = [slices[i] for i in order]
    along, positions = along[order], positions[order]
    spacing_z = _slice_spacing(slices, along, positions, normal, folder)
    # PixelSpacing is (row spacing = between rows, column spacing = between columns)
    ps = first.pixel_spacing_mm or (1.0, 1.0)
    direction = np.column_stack([row, col, normal])
    return SeriesGeometry(
        files=[s.path for s in slices],
        origin_lps_mm=tuple(float(v) for v in positions[0]),
        spacing_mm=(float(ps[1]), float(ps[0]), float(spacing_z)),
        direction=tuple(float(v) for v in direction.ravel()),
        size=(first.columns, first.rows, len(slices)),
        headers=slices,
    )


# Transfer syntaxes whose encapsulated frames are JPEG-family codestreams ending with the
# end-of-image/end-of-codestream marker FFD9: JPEG baseline/extended/lossless, JPEG-LS,
# JPEG 2000 and HTJ2K. A cut codestream lacks it.
_FFD9_TRANSFER_SYNTAXES = frozenset(
    {
        *(f"1.2.840.10008.1.2.4.{n}" for n in (50, 51, 57, 70, 80, 81, 90, 91, 92, 93)),
        *(f"1.2.840.10008.1.2.4.{n}" for n in (201, 202, 203)),
    }
)


def check_pixel_data(path: str | os.PathLike, *, rows: int, columns: int, frames: int = 1):
    """Refuse a file whose pixel data is missing, shorter than Rows × Columns × frames
    declare, or (compressed) not ending where its codestream must end; return the dataset.

    Run before decoding: a cut compressed slice can make the decoder allocate gigabytes and
    fail late with a message that names no file.
    """
    import pydicom
    from pydicom.encaps import generate_fragments

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ds = pydicom.dcmread(os.fspath(path), force=True)
        except Exception as exc:  # pydicom raises many kinds on damaged files
            raise InputError(f"cannot read the DICOM file ({exc})", path=path) from None
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
        raise InputError(
            "no pixel data: the file is truncated or holds no image",
            path=path,
            hint="copy the file again from its source, or remove it",
        )
    if "PixelData" not in ds:
        return ds
    syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    data = ds.PixelData
    if syntax is not None and syntax.is_encapsulated:
        try:
            last = b""
            for fragment in generate_fragments(data):
                last = fragment
        except Exception as exc:
            raise InputError(
                f"damaged compressed pixel data ({exc})", path=path, hint="the file is truncated"
            ) from None
        if str(syntax) in _FFD9_TRANSFER_SYNTAXES and not last.rstrip(b"\0").endswith(b"\xff\xd9"):
            raise InputError(
                f"the compressed pixel data ({syntax.name}) is cut short: its codestream has no "
                "end marker",
                path=path,
                hint="the file is truncated; copy it again from its source",
            )
        return ds
    try:
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        bits = int(ds.get("BitsAllocated", 16) or 16)
    except (TypeError, ValueError):
        samples, bits = 1, 16
    expected = (rows * columns * max(frames, 1) * samples * bits + 7) // 8
    if len(data) < expected:
        raise InputError(
            f"truncated pixel data: {len(data)} of {expected} bytes present",
            path=path,
            hint="copy the file again from its source",
        )
    return ds


def read_series_pixels(geometry: SeriesGeometry, *, folder: str | os.PathLike):
    """Read the sorted slices' pixels with SimpleITK (each slice's own rescale applied).

    When the slices do not share one integer rescale slope and intercept the volume is read
    as float64, so that per-slice slopes (common in PET) are kept exactly. The geometry
    computed from the headers is set on the result.
    """
    import SimpleITK as sitk

    headers = geometry.headers
    for h in headers:
        check_pixel_data(h.path, rows=h.rows, columns=h.columns, frames=h.frames)
    slopes = {h.rescale_slope for h in headers}
    intercepts = {h.rescale_intercept for h in headers}
    uniform_integer = (
        len(slopes) == 1
        and len(intercepts) == 1
        and float(next(iter(slopes))).is_integer()
        and float(next(iter(intercepts))).is_integer()
    )
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames([str(p) for p in geometry.files])
    if not uniform_integer:
        reader.SetOutputPixelType(sitk.sitkFloat64)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise InputError(
            f"cannot read the DICOM pixel data: {_first_line(exc)}",
            path=_first_unreadable(geometry.files) or folder,
            hint="the file may be truncated or use an unsupported compression",
        ) from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"the series does not form a scalar 3D volume ({image.GetNumberOfComponentsPerPixel()} components per pixel)",
            path=folder,
        )
    if tuple(image.GetSize()) != geometry.size:
        raise InputError(
            f"pixel data size {image.GetSize()} disagrees with the headers {geometry.size}",
            path=folder,
        )
    image.SetOrigin(geometry.origin_lps_mm)
    image.SetSpacing(geometry.spacing_mm)
    image.SetDirection(geometry.direction)
    return image


def _first_unreadable(files: list[Path]) -> Path | None:
    """The first file SimpleITK cannot read on its own (to name it when a series fails)."""
    import SimpleITK as sitk

    for path in files:
        try:
            sitk.ReadImage(str(path))
        except RuntimeError:
            return path
    return None


def _first_line(exc: BaseException) -> str:
    """The meaningful line of a SimpleITK/ITK exception (they span several lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__
