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
  normal) within the same tolerance.

The image's origin is the position of the first slice in that order (the most negative along
the normal: for an axial LPS series, the most inferior slice), its direction columns are the
row cosine, the column cosine and the normal, its third spacing the median gap.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError

#: tolerance on direction cosines between slices (dimensionless)
ORIENTATION_TOL = 1e-4
#: tolerance on PixelSpacing between slices, mm
PIXEL_SPACING_TOL_MM = 1e-3
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


def slice_header(path: Path, ds) -> SliceHeader | None:
    """Turn a header into a :class:`SliceHeader`; ``None`` for a non-image object."""
    modality = str(ds.get("Modality", "") or "").upper()
    if modality in NON_IMAGE_MODALITIES or "Rows" not in ds or "Columns" not in ds:
        return None
    try:
        frames = int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        frames = 1
    return SliceHeader(
        path=path,
        series_uid=str(ds.get("SeriesInstanceUID", "") or ""),
        modality=modality,
        rows=int(ds.Rows),
        columns=int(ds.Columns),
        ipp_lps_mm=_floats(ds.get("ImagePositionPatient"), 3),
        iop=_floats(ds.get("ImageOrientationPatient"), 6),
        pixel_spacing_mm=_floats(ds.get("PixelSpacing"), 2),
        frames=frames,
        rescale_slope=_float(ds.get("RescaleSlope"), 1.0),
        rescale_intercept=_float(ds.get("RescaleIntercept"), 0.0),
        dataset=ds,
    )


def _candidate_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.upper() == "DICOMDIR":
                continue
            files.append(Path(root) / name)
    return files


def scan_folder(folder: str | os.PathLike, *, progress=None, cancel=None) -> list[SeriesInfo]:
    """Group the DICOM image files under ``folder`` (recursively) by series.

    Returns the series in a stable order (modality, then UID). Non-DICOM files and non-image
    DICOM objects are skipped. Raises :class:`InputError` when nothing usable is found.
    """
    from .progress import check

    folder = Path(folder)
    files = _candidate_files(folder)
    if not files:
        raise InputError(
            "the folder is empty", path=folder, hint="give a folder of DICOM files or an image file"
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


def _slice_spacing(slices, along, positions, normal, folder) -> float:
    """The regular gap between sorted slices; refuse duplicates, gaps and sideways drift."""
    if len(slices) == 1:
        ds = slices[0].dataset
        return (
            _float(ds.get("SpacingBetweenSlices"), 0.0)
            or _float(ds.get("SliceThickness"), 1.0)
            or 1.0
        )
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


def read_series_pixels(geometry: SeriesGeometry, *, folder: str | os.PathLike):
    """Read the sorted slices' pixels with SimpleITK (each slice's own rescale applied).

    When the slices do not share one integer rescale slope and intercept the volume is read
    as float64, so that per-slice slopes (common in PET) are kept exactly. The geometry
    computed from the headers is set on the result.
    """
    import SimpleITK as sitk

    headers = geometry.headers
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
            path=folder,
            hint="a file may be truncated or use an unsupported compression",
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


def _first_line(exc: BaseException) -> str:
    """The meaningful line of a SimpleITK/ITK exception (they span several lines)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if ln.lower().startswith("description:"):
            return ln.split(":", 1)[1].strip()
    return lines[-1] if lines else type(exc).__name__
