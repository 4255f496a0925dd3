"""Loading the volumes of a multimodal study: DICOM folders, NIfTI, NRRD and MHA.

:func:`load_image` returns one scalar 3D :class:`SimpleITK.Image` in LPS millimetres;
:func:`load_volume` returns it with what the files say about it (:class:`Volume`: modality,
patient and study identifiers, series description, units); :func:`describe` turns a volume
into the plain dictionary that ``mescc info`` prints.

Paths:

* a folder: a DICOM series (recursively scanned; several series need ``modality`` or
  ``series_uid`` to choose; slices sorted by position along the slice normal, see
  :mod:`MESCCAnalyzerLib.io.dicom_series`);
* a DICOM file: that file alone (a single slice or a multi-frame object);
* ``.nii``, ``.nii.gz``, ``.nrrd``, ``.nhdr``, ``.mha``, ``.mhd`` (anything SimpleITK reads): the
  modality is unknown unless given.

Every problem with the input raises :class:`~MESCCAnalyzerLib.errors.InputError` naming the
file: missing path, empty folder, no image, several series without a choice, non-uniform
slice spacing, a truncated or non-image file, a 4D, 2D or multi-component image, a named
pipe or device instead of a regular file.

Checks made before ITK reads the pixels (ITK reads these without complaint, or at great
cost):

* the declared voxel count: above :data:`MAX_VOXELS`, or more data than the file could hold
  (its size for raw data, :data:`MAX_DEFLATE_RATIO` × its size for gzip/zlib), is refused
  from the header alone;
* NIfTI headers: a dimension below 1 (ITK reads ``-1`` as 1), a zero or non-finite voxel size
  (ITK substitutes 1 mm), a non-finite or singular sform, and a qform and sform that place
  the image more than :data:`QFORM_SFORM_TOL_MM` apart at any corner voxel (ITK would
  silently pick one; which one is right cannot be told from the file).

Checks made on every loaded volume: spacing positive, origin and direction finite and
non-singular, and no NaN or infinite voxel (float images only; the message gives the count).
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..progress import sub_progress
from . import dicom_series

#: Modalities accepted for ``modality=`` (DICOM Modality codes)
MODALITIES = ("MR", "CT", "PT")

_DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")

#: most voxels a file may declare (2^31: 8 GB as float32, far above any spine study); a
#: header declaring more is refused before anything is allocated
MAX_VOXELS = 2**31
#: deflate (gzip, zlib) expands at most ~1032:1: a compressed file declaring more data than
#: this many times its size cannot hold it
MAX_DEFLATE_RATIO = 1032
#: a NIfTI qform and sform may differ by float32 rounding (< 0.02 mm at the corners of the
#: real test images); beyond this distance at any corner voxel they disagree and the file is
#: refused rather than silently placed by one of them
QFORM_SFORM_TOL_MM = 0.1


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


def _inflate_count(f, wbits: int, first: bytes = b"", sink=None) -> tuple[int, bool]:
    """Bytes a zlib/gzip stream inflates to, and whether it ended properly (members chained).

    ``sink(data)``, when given, receives the inflated bytes in order.
    """
    d = zlib.decompressobj(wbits)
    total, chunk = 0, first
    sink = sink or (lambda data: None)

    def take(data: bytes) -> int:
        sink(data)
        return len(data)

    try:
        while True:
            if not chunk:
                chunk = f.read(1 << 20)
                if not chunk:
                    break
            total += take(d.decompress(chunk))
            chunk = b""
            while d.eof and d.unused_data:  # a further gzip member
                rest = d.unused_data
                d = zlib.decompressobj(wbits)
                total += take(d.decompress(rest))
        total += take(d.flush())
    except zlib.error:
        return total, False
    return total, d.eof


class _NonFiniteCounter:
    """Counts NaN and infinite values in the float data of a NIfTI file fed as bytes (the whole
    file from its start, in pieces of any size). ITK's NIfTI reader replaces them by 0 without
    a word (niftilib's ``nifti_read_buffer``), so they can only be seen in the raw data."""

    def __init__(self, header: _NiftiHeader):
        self.dtype = np.dtype(header.endian + {16: "f4", 64: "f8"}[header.datatype])
        self.skip = int(max(header.vox_offset, 0))
        self.remaining = header.expected_bytes - self.skip
        self.pending = b""
        self.n_nan = self.n_inf = 0

    @staticmethod
    def applies(header: _NiftiHeader | None) -> bool:
        return header is not None and header.datatype in (16, 64)

    def __call__(self, data: bytes) -> None:
        if self.skip:
            cut = min(self.skip, len(data))
            data, self.skip = data[cut:], self.skip - cut
        data = self.pending + data[: max(self.remaining - len(self.pending), 0)]
        usable = len(data) - len(data) % self.dtype.itemsize
        self.pending = data[usable:]
        if usable:
            values = np.frombuffer(data[:usable], dtype=self.dtype)
            self.remaining -= usable
            self.n_nan += int(np.count_nonzero(np.isnan(values)))
            self.n_inf += int(np.count_nonzero(np.isinf(values)))

    def check(self, path: Path, n_voxels: int) -> None:
        if self.n_nan or self.n_inf:
            raise _non_finite_error(self.n_nan, self.n_inf, n_voxels, path)


def _non_finite_error(n_nan: int, n_inf: int, n_voxels: int, path) -> InputError:
    parts = [f"{n_nan} NaN (not-a-number)"] if n_nan else []
    parts += [f"{n_inf} infinite"] if n_inf else []
    return InputError(
        f"{' and '.join(parts)} voxel value{'s' if n_nan + n_inf > 1 else ''} among {n_voxels}",
        path=path,
        hint="replace them by a number first (e.g. 0 outside the field of view)",
    )


@dataclass
class _NiftiHeader:
    """The NIfTI-1/-2 header fields the loader checks (values as stored, RAS for the forms)."""

    version: int
    endian: str  # "<" or ">"
    datatype: int  # NIfTI datatype code (16 float32, 64 float64, ...)
    dims: tuple[int, ...]  # dim[1..dim[0]]
    bitpix: int
    vox_offset: float
    pixdim: tuple[float, ...]  # pixdim[0..7]; pixdim[0] is qfac
    qform_code: int
    sform_code: int
    quatern_bcd: tuple[float, float, float]
    qoffset: tuple[float, float, float]
    srow: np.ndarray  # 3 x 4

    @property
    def expected_bytes(self) -> int:
        """Bytes the file must hold: the offset of the data plus the declared data."""
        n = 1
        for d in self.dims:
            n *= max(int(d), 1)
        return int(max(self.vox_offset, 0)) + n * max(int(self.bitpix), 8) // 8

    def q_affine(self) -> np.ndarray:
        """The qform as a 3 x 4 matrix (voxel index -> RAS mm), as nifti_quatern_to_mat44."""
        b, c, d = self.quatern_bcd
        a2 = 1.0 - (b * b + c * c + d * d)
        if a2 < 1e-7:  # NIfTI: a 180° rotation; renormalise (b, c, d)
            norm = math.sqrt(b * b + c * c + d * d)
            a, b, c, d = 0.0, b / norm, c / norm, d / norm
        else:
            a = math.sqrt(a2)
        rot = np.array(
            [
                [a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - b * b - c * c],
            ]
        )
        qfac = -1.0 if self.pixdim[0] < 0 else 1.0
        scale = np.diag([self.pixdim[1], self.pixdim[2], qfac * self.pixdim[3]])
        return np.column_stack([rot @ scale, self.qoffset])


def _parse_nifti_header(raw: bytes) -> _NiftiHeader | None:
    """Parse a NIfTI-1 (348-byte) or NIfTI-2 (540-byte) header; ``None`` if it is neither."""
    for endian in "<>":
        if len(raw) >= 348 and struct.unpack(endian + "i", raw[:4])[0] == 348:
            dim = struct.unpack(endian + "8h", raw[40:56])
            pixdim = struct.unpack(endian + "8f", raw[76:108])
            qform_code, sform_code = struct.unpack(endian + "2h", raw[252:256])
            quatern = struct.unpack(endian + "6f", raw[256:280])
            srow = struct.unpack(endian + "12f", raw[280:328])
            version, bitpix = 1, struct.unpack(endian + "h", raw[72:74])[0]
            datatype = struct.unpack(endian + "h", raw[70:72])[0]
            vox_offset = struct.unpack(endian + "f", raw[108:112])[0]
        elif len(raw) >= 540 and struct.unpack(endian + "i", raw[:4])[0] == 540:
            dim = struct.unpack(endian + "8q", raw[16:80])
            pixdim = struct.unpack(endian + "8d", raw[104:168])
            qform_code, sform_code = struct.unpack(endian + "2i", raw[344:352])
            quatern = struct.unpack(endian + "6d", raw[352:400])
            srow = struct.unpack(endian + "12d", raw[400:496])
            version, bitpix = 2, struct.unpack(endian + "h", raw[14:16])[0]
            datatype = struct.unpack(endian + "h", raw[12:14])[0]
            vox_offset = float(struct.unpack(endian + "q", raw[168:176])[0])
        else:
            continue
        ndim = int(dim[0])
        return _NiftiHeader(
            version=version,
            endian=endian,
            datatype=int(datatype),
            dims=tuple(int(d) for d in dim[1 : 1 + max(0, min(ndim, 7))]) if ndim > 0 else (),
            bitpix=int(bitpix),
            vox_offset=float(vox_offset),
            pixdim=tuple(float(v) for v in pixdim),
            qform_code=int(qform_code),
            sform_code=int(sform_code),
            quatern_bcd=tuple(float(v) for v in quatern[:3]),
            qoffset=tuple(float(v) for v in quatern[3:]),
            srow=np.array(srow, dtype=float).reshape(3, 4),
        )
    return None


def _read_nifti_header(path: Path) -> _NiftiHeader | None:
    opener = gzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read(540)
    except (OSError, EOFError, zlib.error):
        return None  # not gzip or cut short: the reader's own error names the problem
    return _parse_nifti_header(raw)


def _corners(affine: np.ndarray, dims) -> np.ndarray:
    """World positions of the 8 corner voxel centres under a 3 x 4 affine."""
    n = [max(int(d), 1) - 1 for d in (*dims, 1, 1, 1)[:3]]
    ijk = np.array([(i, j, k, 1.0) for i in (0, n[0]) for j in (0, n[1]) for k in (0, n[2])])
    return ijk @ affine.T


def _check_nifti_header(path: Path, h: _NiftiHeader) -> None:
    """Refuse the NIfTI headers ITK reads without complaint but wrongly (see the module
    docstring): non-positive dimensions, zero or non-finite voxel sizes, a singular or
    non-finite sform, and a qform and an sform that place the image differently."""
    if not 1 <= len(h.dims) <= 7:
        raise InputError(f"the NIfTI header declares {len(h.dims)} dimensions (dim[0])", path=path)
    bad = [(axis, d) for axis, d in enumerate(h.dims) if d < 1]
    if bad:
        axis, d = bad[0]
        raise InputError(
            f"the NIfTI header declares {d} voxels along axis {axis + 1} (dim = "
            f"{', '.join(str(v) for v in h.dims)}): a size must be at least 1",
            path=path,
            hint="the header is corrupt; re-export the image",
        )
    spatial = h.pixdim[1 : 1 + min(3, len(h.dims))]
    pixdim_used = h.qform_code > 0 or h.sform_code <= 0  # an sform alone carries its own sizes
    if pixdim_used and not all(math.isfinite(v) and v != 0 for v in spatial):
        raise InputError(
            f"the NIfTI header gives voxel sizes (pixdim) of {', '.join(f'{v:g}' for v in spatial)} "
            "mm: each must be a non-zero number",
            path=path,
            hint="the header is corrupt; re-export the image with its true voxel size",
        )
    forms = []
    if h.qform_code > 0:
        values = (*h.quatern_bcd, *h.qoffset)
        if not all(math.isfinite(v) for v in values):
            raise InputError(
                "the NIfTI qform holds a non-finite value (NaN or infinity)", path=path
            )
        forms.append(("qform", h.q_affine()))
    if h.sform_code > 0:
        if not np.all(np.isfinite(h.srow)):
            raise InputError(
                "the NIfTI sform (srow_x/y/z) holds a non-finite value (NaN or infinity)", path=path
            )
        if abs(np.linalg.det(h.srow[:, :3])) < 1e-9 * max(np.abs(h.srow[:, :3]).max(), 1e-30) ** 3:
            raise InputError(
                "the NIfTI sform (srow_x/y/z) is singular: it maps the voxels onto a plane or a line",
                path=path,
                hint="the header is corrupt; re-export the image",
            )
        forms.append(("sform", h.srow))
    if len(forms) == 2:
        (_, q), (_, s) = forms
        gap = float(np.max(np.linalg.norm(_corners(q, h.dims) - _corners(s, h.dims), axis=1)))
        if gap > QFORM_SFORM_TOL_MM:

            def text(affine):
                return "origin ({}) mm, axes {}".format(
                    ", ".join(f"{v:.2f}" for v in affine[:, 3]),
                    " ".join(
                        "(" + ", ".join(f"{v:.3f}" for v in affine[:, i]) + ")" for i in range(3)
                    ),
                )

            raise InputError(
                f"the NIfTI qform and sform disagree by up to {gap:.2f} mm at the image corners "
                f"(qform code {h.qform_code}: {text(q)}; sform code {h.sform_code}: {text(s)}, "
                "RAS)",
                path=path,
                hint="the two header transforms must place the image alike; fix the header "
                "(e.g. copy the right one over the other) and load it again",
            )


def _component_bytes(pixel_id: int, components: int) -> int:
    try:
        return sitk.Image([1, 1], pixel_id, max(1, components)).GetSizeOfPixelComponent()
    except (RuntimeError, TypeError):
        return 1


def _data_bound_bytes(path: Path) -> int | None:
    """The most pixel data the file itself could hold: its size for raw data, ~1032 x its size
    for deflate (zlib's largest ratio); ``None`` when unknown (detached data, other codecs)."""
    name = path.name.lower()
    size = path.stat().st_size
    if name.endswith(".nii"):
        return size
    if name.endswith(".nii.gz"):
        return MAX_DEFLATE_RATIO * size
    if name.endswith((".nrrd", ".mha")):
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        sep = b"\n\n" if name.endswith(".nrrd") else b"ElementDataFile = LOCAL"
        at = head.find(sep)
        if at < 0:
            return None
        header = head[:at].decode("latin-1").lower()
        if "data file:" in header or "datafile:" in header:
            return None
        if "encoding: gzip" in header or "encoding: gz" in header:
            return MAX_DEFLATE_RATIO * size
        if "compresseddata = true" in header:
            return MAX_DEFLATE_RATIO * size
        if name.endswith(".mha") or "encoding: raw" in header:
            return size
    return None


def _check_declared_size(path: Path) -> None:
    """Refuse a header declaring more voxels than the file could hold, or than
    :data:`MAX_VOXELS`, before any pixel is allocated (a small file must not cost gigabytes)."""
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise _read_error(exc, path) from None
    size = reader.GetSize()
    n = 1
    for s in size:
        n *= int(s)
    shown = "×".join(str(s) for s in size)
    if n > MAX_VOXELS:
        raise InputError(
            f"the header declares {shown} = {n:.3g} voxels, more than the {MAX_VOXELS:.3g} "
            "this program reads",
            path=path,
            hint="a corrupt header, or crop/downsample the image first",
        )
    declared = (
        n
        * max(1, reader.GetNumberOfComponents())
        * _component_bytes(reader.GetPixelID(), reader.GetNumberOfComponents())
    )
    bound = _data_bound_bytes(path)
    if bound is not None and declared > bound:
        raise InputError(
            f"the header declares {shown} voxels ({declared / 1e6:.4g} MB of data) but the file "
            f"({path.stat().st_size} bytes) cannot hold that: truncated or corrupt file",
            path=path,
        )


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
    counter = None
    if name.endswith((".nii", ".nii.gz")):
        nifti = _read_nifti_header(path)
        expected = nifti.expected_bytes if nifti is not None else 0
        if _NonFiniteCounter.applies(nifti):
            counter = _NonFiniteCounter(nifti)
    with open(path, "rb") as f:
        if name.endswith(".nii.gz"):
            available, complete = _inflate_count(f, 16 + zlib.MAX_WBITS, sink=counter)
            if nifti is None:
                expected, complete = 1, False
        elif name.endswith(".nii"):
            available = path.stat().st_size
            while counter is not None and (chunk := f.read(1 << 20)):
                counter(chunk)
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
    if counter is not None:
        counter.check(path, int(np.prod(image.GetSize())))


def _read_error(exc: RuntimeError, path: Path) -> InputError:
    message = _first_line(exc)
    if "Unable to determine ImageIO reader" in message or "Could not create IO object" in message:
        return InputError(
            "not an image file SimpleITK can read (not NIfTI, NRRD, MHA or DICOM)", path=path
        )
    detail = "" if message.startswith("Reason:") else f" ({message})"
    return InputError(f"cannot read the image: truncated or corrupt file{detail}", path=path)


def _detached_data_names(path: Path) -> list[str]:
    """The pixel-data files a NRRD (``data file:``) or MetaImage (``ElementDataFile``) header
    names; empty when the data is in the file itself."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).decode("latin-1")
    lines = head.splitlines()
    for n, line in enumerate(lines):
        key, sep, value = line.partition(":" if not line.startswith("ElementDataFile") else "=")
        key = key.strip().lower()
        if not sep or key not in ("data file", "datafile", "elementdatafile"):
            continue
        value = value.strip()
        if value.upper() == "LOCAL":
            return []
        if value.upper().startswith("LIST"):
            return [name.strip() for name in lines[n + 1 :] if name.strip()]
        return [value.split()[0]] if value else []
    return []


def _check_detached_data(path: Path) -> None:
    """A header may point its pixel data only at regular files beside it (or below its
    folder): never at another file of the machine (``/etc/passwd``, a device)."""
    if not path.name.lower().endswith((".nhdr", ".nrrd", ".mhd", ".mha")):
        return
    folder = path.parent.resolve()
    for name in _detached_data_names(path):
        # A name pattern (``slice%03d.raw``) is checked by its folder part.
        target = (path.parent / name).resolve() if "%" not in name else None
        outside = Path(name).is_absolute() or ".." in Path(name).parts
        if target is not None:
            outside = outside or folder not in target.parents
        if outside:
            raise InputError(
                f"the header points its pixel data at a file outside its folder ({name})",
                path=path,
                hint="keep the data file beside its header",
            )
        if target is not None and not target.is_file():
            raise InputError(f"the header's data file {name} is not a regular file", path=path)


def _read_image_file(path: Path) -> sitk.Image:
    try:
        _check_detached_data(path)
        if _format_name(path) == "NIfTI":
            header = _read_nifti_header(path)
            if header is not None:
                _check_nifti_header(path, header)
        _check_declared_size(path)
    except OSError as exc:
        raise InputError(f"cannot read: {exc}", path=path) from None
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise _read_error(exc, path) from None
    try:
        _check_complete(path, image)
    except OSError as exc:
        raise InputError(f"cannot read: {exc}", path=path) from None
    return _check_scalar_3d(image, path)


def _check_geometry(image: sitk.Image, path: Path) -> None:
    """Spacing finite and positive, origin finite, direction finite and non-singular."""
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(
            f"voxel spacing ({', '.join(f'{v:g}' for v in spacing)}) mm: each must be a positive "
            "number",
            path=path,
        )
    if not np.all(np.isfinite(image.GetOrigin())):
        raise InputError("the image origin holds a non-finite value (NaN or infinity)", path=path)
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    if not np.all(np.isfinite(direction)) or abs(np.linalg.det(direction)) < 1e-3:
        raise InputError(
            "the image orientation (direction cosines) is not a valid rotation", path=path
        )


def _check_finite_values(volume: Volume) -> None:
    """Refuse NaN (and infinite) voxels: every later step would spread them silently.

    Integer images (all DICOM stored values, most labelmaps) cannot hold NaN and are not
    scanned; so a PET series from DICOM, whose values are integers times finite slopes, never
    trips this, while a float SUV NIfTI with NaN outside the field of view is refused with
    the count, to be replaced by 0 first.
    """
    image = volume.image
    if image.GetPixelID() not in (sitk.sitkFloat32, sitk.sitkFloat64):
        return
    arr = sitk.GetArrayViewFromImage(image)
    nan = np.isnan(arr)
    n_nan = int(np.count_nonzero(nan))
    n_inf = int(np.count_nonzero(np.isinf(arr)))
    if not (n_nan or n_inf):
        return
    path = volume.source
    bad = nan | np.isinf(arr)
    if len(volume.files) == arr.shape[0] > 1:  # a DICOM series: name the first bad slice
        path = volume.files[int(np.flatnonzero(bad.any(axis=(1, 2)))[0])]
    raise _non_finite_error(n_nan, n_inf, arr.size, path)


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
        dicom_series.check_pixel_data(
            path, rows=header.rows, columns=header.columns, frames=header.frames
        )
        image = _read_image_file(path)
    else:
        info = dicom_series.SeriesInfo(header.series_uid, header.modality, "", [header])
        geometry = dicom_series.series_geometry(info, folder=path)
        image = dicom_series.read_series_pixels(geometry, folder=path)
    return _volume_from_dicom_headers(image, path, [path], [ds])


def _load_dicom_folder(path: Path, modality, series_uid, progress, cancel) -> Volume:
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
        volume = _load_dicom_folder(path, modality, series_uid, progress, cancel)
    else:
        volume = _load_file(path, modality)
    _check_geometry(volume.image, volume.source)
    _check_finite_values(volume)
    return volume


def _load_file(path: Path, modality: str | None) -> Volume:
    dicom_series.require_regular_file(path)
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
