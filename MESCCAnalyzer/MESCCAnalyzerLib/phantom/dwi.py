"""The phantom's diffusion series: the single-level anatomy seen by an EPI diffusion sequence,
with known ADC per tissue, written as DICOM in a chosen vendor's tag layout and as a 4D NIfTI
with FSL ``bval``/``bvec`` files.

**Tissues** (ADC in 10⁻⁶ mm²/s, b = 0 signal S0): soft tissue 1500 / 300, cord 1066.7 / 500,
CSF 3000 / 1100, tumour (mass) 700 / 600 (restricted: cellular tumour), marrow 400 / 350
(fatty adult marrow with fat suppression), cortical bone 300 / 40, disc 1600 / 500, epidural
fat 150 / 80 (suppressed). Published ranges: cord MD 0.9-1.2 × 10⁻³ mm²/s, CSF ≈ 3.0,
normal marrow 0.2-0.5, epidural metastases 0.6-0.9. The cord is anisotropic: a cylindrical
tensor along the cord axis, λ∥ = 1800 and λ⊥ = 700, so its mean diffusivity is
(1800 + 2 × 700)/3 = 1066.7; every other tissue is isotropic.

**Acquisition**: b = 0 (two repeats) and b = 50, 400, 800 s/mm² along the six directions
(±1, 0, 1)/√2, (0, 1, ±1)/√2, (±1, 1, 0)/√2 of the DWI frame, whose second moment is I/3:
the geometric mean over them decays exactly with the mean diffusivity. A 1.2 × 1.2 × 4 mm
axial grid of 80 × 80 × 24 voxels (96 × 96 × 96 mm), partial volume over 2 × 2 × 4
sub-samples per voxel (signals mixed, as a scanner mixes them), Rician noise σ = 20 (b = 0
SNR: cord 25, mass 30, CSF 55).

**Position**: the DWI frame is displaced from the MRI by a rigid transform drawn from the
seed (rotation up to 2° about each axis, translation up to 3 mm; ``mri_to_dwi.tfm``, MRI LPS
-> DWI LPS like ``mri_to_ct.tfm``), and the EPI read-out shifts the image along the
phase-encoding axis (anterior-posterior, the grid's j axis) by
``PE_SHIFT_MM × (r / 40 mm)²``, r the distance from the cord axis: nothing at the cord,
0.5 mm 20 mm away, 2 mm at 40 mm (susceptibility distortion grows away from the centre of
the field): the DWI is a rigid copy of the anatomy only near the cord. The shift is
symmetric about the cord, so it adds no net displacement to a rigid fit.

The DICOM layouts (one per call; :data:`LAYOUTS`):

* ``standard``: classic MR files, Diffusion b-value (0018,9087), Diffusion Gradient
  Orientation (0018,9089), Diffusion Directionality (0018,9075) at the top level;
* ``siemens``: ``SIEMENS MR HEADER`` private block: (0019,100C) b-value (IS),
  (0019,100D) directionality, (0019,100E) direction (FD×3); one AcquisitionNumber per volume;
* ``ge``: implicit VR little endian; ``GEMS_PARM_01`` (0043,1039) = b + 10⁹ followed by three
  other values, ``GEMS_ACQU_01`` (0019,10BB/BC/BD) direction components (DS); one acquisition;
* ``philips``: ``Philips Imaging DD 001`` (2001,1003) b-value (FL), (2001,1004) direction
  label, ``Philips MR Imaging DD 001`` (2005,10B0/B1/B2) direction (FL); plus, as Philips
  writes, the scanner's isotropic trace image at each b > 0 (direction 0, label ``I``);
* ``enhanced``: one Enhanced MR Image Storage file, every frame with its MR Diffusion
  Sequence (0018,9117), Plane Position and Frame Content.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    EnhancedMRImageStorage,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    MRImageStorage,
)

from ..io.dwi import DWISeries
from ..outputs import save_image
from ..progress import CancelCallback, check
from .anatomy import CORD, TISSUE_NAMES, PhantomAnatomy
from .dicom import SeriesSpec, _common, _ds, new_dataset, uid_from
from .imaging import Grid, Pose, partial_volume_mean, rician, tissue_on_grid

LAYOUTS = ("standard", "siemens", "ge", "philips", "enhanced")

#: ADC of each tissue (TISSUE_NAMES order), 10⁻⁶ mm²/s; the cord's is its mean diffusivity
ADC_LEVELS = np.array([1500.0, 1066.0 + 2.0 / 3.0, 3000.0, 700.0, 400.0, 300.0, 1600.0, 150.0])
#: b = 0 signal of each tissue (T2-weighted EPI with fat suppression)
S0_LEVELS = np.array([300.0, 500.0, 1100.0, 600.0, 350.0, 40.0, 500.0, 80.0])
#: the cord's diffusion tensor along and across its axis, 10⁻⁶ mm²/s
CORD_AXIAL = 1800.0
CORD_RADIAL = 700.0
B_VALUES = (50.0, 400.0, 800.0)
B0_REPEATS = 2
DIRECTIONS = np.array(
    [(1, 0, 1), (-1, 0, 1), (0, 1, 1), (0, 1, -1), (1, 1, 0), (-1, 1, 0)], dtype=np.float64
) / math.sqrt(2.0)
DWI_GRID = {"size": (80, 80, 24), "spacing": (1.2, 1.2, 4.0)}
DWI_SUBSAMPLES = (2, 2, 4)
NOISE_SIGMA = 20.0
#: the phase-encoding shift 40 mm from the cord axis (mm), along +j (posterior)
PE_SHIFT_MM = 2.0
PE_REFERENCE_MM = 40.0
MAX_ROTATION_DEG = 2.0
MAX_TRANSLATION_MM = 3.0


@dataclass
class PhantomDWI:
    """The phantom's diffusion series in memory, with what the tests check it against.

    ``volumes`` (3D float32 on ``grid``), ``bvals`` (s/mm²), ``bvecs`` (LPS unit vectors, 0
    for b = 0), ``mri_to_dwi`` (MRI LPS -> DWI LPS), ``tissue`` (kji, the tissue class at
    each voxel centre), ``pure`` (kji, the voxel and its 26 neighbours of one tissue: no
    partial volume), ``truth`` (JSON-ready).
    """

    volumes: list[sitk.Image]
    bvals: np.ndarray
    bvecs: np.ndarray
    grid: Grid
    mri_to_dwi: sitk.Euler3DTransform
    tissue: np.ndarray = field(repr=False)
    pure: np.ndarray = field(repr=False)
    truth: dict = field(default_factory=dict)

    def series(self, source: str | Path = "phantom") -> DWISeries:
        """The series as :func:`MESCCAnalyzerLib.io.dwi.load_dwi` returns a loaded one."""
        return DWISeries(
            volumes=list(self.volumes),
            bvals=self.bvals.copy(),
            bvecs=self.bvecs.copy(),
            source=Path(source),
            description="phantom diffusion series (in memory)",
            format="phantom",
            isotropic=np.zeros(len(self.bvals), bool),
        )


def _encodings() -> tuple[np.ndarray, np.ndarray]:
    bvals = [0.0] * B0_REPEATS
    bvecs = [np.zeros(3)] * B0_REPEATS
    for b in B_VALUES:
        for g in DIRECTIONS:
            bvals.append(b)
            bvecs.append(g)
    return np.array(bvals), np.array(bvecs)


def _dwi_transform(pose: Pose, rng: np.random.Generator) -> sitk.Euler3DTransform:
    t = sitk.Euler3DTransform()
    t.SetCenter(tuple(float(v) for v in pose.origin_lps))
    angles = rng.uniform(-MAX_ROTATION_DEG, MAX_ROTATION_DEG, 3)
    t.SetRotation(*[math.radians(float(a)) for a in angles])
    t.SetTranslation(
        tuple(float(v) for v in rng.uniform(-MAX_TRANSLATION_MM, MAX_TRANSLATION_MM, 3))
    )
    return t


def _signal_table(cord_axis_lps: np.ndarray, bvals: np.ndarray, bvecs: np.ndarray) -> np.ndarray:
    """(tissues, volumes) noiseless signal: S0 exp(-b ADC), the cord's through its tensor."""
    table = S0_LEVELS[:, None] * np.exp(-bvals[None, :] * ADC_LEVELS[:, None] * 1e-6)
    cos2 = (bvecs @ cord_axis_lps) ** 2
    d_cord = CORD_RADIAL + (CORD_AXIAL - CORD_RADIAL) * cos2
    table[CORD] = S0_LEVELS[CORD] * np.exp(-bvals * d_cord * 1e-6)
    return table


def make_phantom_dwi(
    anatomy: PhantomAnatomy,
    pose: Pose,
    seed: int,
    *,
    noise_sigma: float = NOISE_SIGMA,
    cancel: CancelCallback | None = None,
) -> PhantomDWI:
    """The diffusion series of the phantom with ``anatomy`` at ``pose`` (see the module
    docstring); the noise and the DWI position come from ``seed`` (a stream of their own:
    the other phantom images do not change)."""
    rng = np.random.default_rng([int(seed), 19])
    mri_to_dwi = _dwi_transform(pose, rng)
    dwi_to_mri = mri_to_dwi.GetInverse()
    rot = np.asarray(mri_to_dwi.GetMatrix()).reshape(3, 3)
    axis_point = np.asarray(mri_to_dwi.TransformPoint(tuple(float(v) for v in pose.origin_lps)))
    axis_dir = rot @ pose.rotation[:, 2]
    grid = Grid.centred(axis_point, **DWI_GRID)
    pe = np.array([0.0, 1.0, 0.0])  # the grid's j axis (LPS posterior)
    inv_m = np.asarray(dwi_to_mri.GetMatrix()).reshape(3, 3)
    inv_c = np.asarray(dwi_to_mri.GetCenter())
    inv_t = np.asarray(dwi_to_mri.GetTranslation())

    def to_anatomy(q_lps: np.ndarray) -> np.ndarray:
        rel = q_lps - axis_point
        radial = rel - np.outer(rel @ axis_dir, axis_dir)
        r2 = np.einsum("ij,ij->i", radial, radial)
        undistorted = q_lps - np.outer(PE_SHIFT_MM * r2 / PE_REFERENCE_MM**2, pe)
        p = (undistorted - inv_c) @ inv_m.T + inv_c + inv_t
        return pose.anatomy_from_mri(p)

    bvals, bvecs = _encodings()
    centre = tissue_on_grid(anatomy, grid, to_anatomy, [(0.0, 0.0, 0.0)], cancel)[0]
    table = _signal_table(axis_dir, bvals, bvecs)
    signal = partial_volume_mean(anatomy, grid, to_anatomy, centre, table, DWI_SUBSAMPLES, cancel)
    volumes = []
    for n in range(len(bvals)):
        check(cancel)
        noisy = rician(signal[..., n], noise_sigma, rng)
        volumes.append(grid.image(noisy.astype(np.float32)))
    pure = _pure(centre)
    truth = _truth(mri_to_dwi, bvals, bvecs, noise_sigma, axis_dir)
    return PhantomDWI(volumes, bvals, bvecs, grid, mri_to_dwi, centre, pure, truth)


def _pure(centre: np.ndarray) -> np.ndarray:
    """Voxels whose 26 neighbours share their tissue (the partial-volume rule of
    :func:`partial_volume_mean`: such voxels are one tissue); border voxels excluded."""
    padded = np.pad(centre, 1, mode="constant", constant_values=255)
    nz, ny, nx = centre.shape
    same = np.ones(centre.shape, bool)
    for dk in (0, 1, 2):
        for dj in (0, 1, 2):
            for di in (0, 1, 2):
                same &= padded[dk : dk + nz, dj : dj + ny, di : di + nx] == centre
    return same


def _truth(mri_to_dwi, bvals, bvecs, noise_sigma, axis_dir) -> dict:
    m = mri_to_dwi
    return {
        "adc_unit": "1e-6 mm2/s",
        "adc": dict(zip(TISSUE_NAMES, map(float, ADC_LEVELS), strict=True)),
        "s0": dict(zip(TISSUE_NAMES, map(float, S0_LEVELS), strict=True)),
        "cord_tensor": {
            "axial": CORD_AXIAL,
            "radial": CORD_RADIAL,
            "axis_lps": [float(v) for v in axis_dir],
            "note": "the trace ADC (geometric mean over the six directions) is the mean diffusivity",
        },
        "b_values_s_mm2": [float(b) for b in bvals],
        "directions_lps": [[float(v) for v in g] for g in bvecs],
        "noise_sigma": float(noise_sigma),
        "grid": DWI_GRID,
        "transform": {
            "file": "mri_to_dwi.tfm",
            "type": "Euler3DTransform",
            "convention": "maps a point of the MRI physical space (LPS) to the same anatomy in the DWI physical space (ITK fixed=MRI, moving=DWI)",
            "matrix": [list(map(float, m.GetMatrix()[i : i + 3])) for i in (0, 3, 6)],
            "translation": list(map(float, m.GetTranslation())),
            "center": list(map(float, m.GetCenter())),
        },
        "pe_distortion": {
            "axis_lps": [0.0, 1.0, 0.0],
            "shift_mm": f"{PE_SHIFT_MM} * (r / {PE_REFERENCE_MM} mm)^2, r the distance from the cord axis",
        },
    }


# ---------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------
def _volume_label(b: float, g: np.ndarray) -> str:
    return "b0" if b == 0 else f"b{b:g} ({', '.join(f'{v:.3f}' for v in g)})"


def _set_diffusion(ds: Dataset, layout: str, b: float, g: np.ndarray, isotropic: bool) -> None:
    directional = b > 0 and not isotropic
    if layout == "standard":
        ds.DiffusionBValue = float(b)
        ds.DiffusionDirectionality = (
            "DIRECTIONAL" if directional else ("ISOTROPIC" if b > 0 else "NONE")
        )
        if directional:
            ds.DiffusionGradientOrientation = [float(v) for v in g]
    elif layout == "siemens":
        block = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
        block.add_new(0x0C, "IS", str(int(round(b))))
        block.add_new(0x0D, "CS", "DIRECTIONAL" if directional else "NONE")
        if directional:
            block.add_new(0x0E, "FD", [float(v) for v in g])
    elif layout == "ge":
        parm = ds.private_block(0x0043, "GEMS_PARM_01", create=True)
        parm.add_new(0x39, "IS", [str(int(round(b + 1e9))), "8", "0", "0"])
        acqu = ds.private_block(0x0019, "GEMS_ACQU_01", create=True)
        for offset, value in zip((0xBB, 0xBC, 0xBD), g if directional else (0, 0, 0), strict=True):
            acqu.add_new(offset, "DS", _ds(float(value)))
    elif layout == "philips":
        imaging = ds.private_block(0x2001, "Philips Imaging DD 001", create=True)
        imaging.add_new(0x03, "FL", float(b))
        imaging.add_new(0x04, "CS", "I" if isotropic else ("O" if directional else "N"))
        mr = ds.private_block(0x2005, "Philips MR Imaging DD 001", create=True)
        for offset, value in zip((0xB0, 0xB1, 0xB2), g if directional else (0, 0, 0), strict=True):
            mr.add_new(offset, "FL", float(value))
    else:
        raise ValueError(f"unknown layout {layout!r}")


def _stored(volume: sitk.Image) -> np.ndarray:
    values = sitk.GetArrayFromImage(volume).astype(np.float64)
    return np.clip(np.round(values), 0, 65535).astype(np.uint16)


def _geometry(ds: Dataset, grid_image: sitk.Image, k: int) -> None:
    direction = np.asarray(grid_image.GetDirection(), dtype=float).reshape(3, 3)
    spacing = grid_image.GetSpacing()
    position = np.asarray(grid_image.GetOrigin()) + direction[:, 2] * spacing[2] * k
    ds.ImagePositionPatient = [_ds(v) for v in position]
    ds.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
    ds.SliceThickness = _ds(spacing[2])


def _pixel_module(ds: Dataset, rows: int, columns: int) -> None:
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0


def _mr_module(ds: Dataset, layout: str) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DIFFUSION", "NONE"]
    ds.ScanningSequence = "EP"
    ds.SequenceVariant = "SK"
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = "4000"
    ds.EchoTime = "70"
    ds.MagneticFieldStrength = "1.5"
    ds.ImagedNucleus = "1H"
    ds.Manufacturer = {
        "siemens": "SIEMENS",
        "ge": "GE MEDICAL SYSTEMS",
        "philips": "Philips Medical Systems",
    }.get(layout, "MESCCAnalyzer phantom")
    ds.InPlanePhaseEncodingDirection = "COL"


def _with_philips_trace(volumes, bvals, bvecs):
    """Philips adds the scanner's isotropic image (geometric mean over the directions) per b."""
    vols, bs, gs, iso = list(volumes), list(bvals), list(bvecs), [False] * len(bvals)
    for b in sorted({float(v) for v in bvals if v > 0}):
        idx = [i for i, v in enumerate(bvals) if v == b]
        logs = sum(
            np.log(np.maximum(sitk.GetArrayFromImage(volumes[i]).astype(float), 1.0)) for i in idx
        )
        trace = sitk.GetImageFromArray(np.exp(logs / len(idx)).astype(np.float32))
        trace.CopyInformation(volumes[0])
        vols.append(trace)
        bs.append(b)
        gs.append(np.zeros(3))
        iso.append(True)
    return vols, np.array(bs), np.array(gs), iso


def write_dwi_dicom(
    volumes: list[sitk.Image],
    bvals,
    bvecs,
    folder: Path,
    *,
    layout: str,
    patient_id: str,
    study_uid: str,
    frame_uid: str,
    seed: int = 0,
) -> list[Path]:
    """Write the volumes as an MR diffusion series in ``layout`` (see :data:`LAYOUTS`) into
    ``folder``; return the files. File names are shuffled (never the slice order)."""
    if layout not in LAYOUTS:
        raise ValueError(f"unknown DWI layout {layout!r}; one of {', '.join(LAYOUTS)}")
    folder.mkdir(parents=True, exist_ok=True)
    bvals = np.asarray(bvals, dtype=float)
    bvecs = np.asarray(bvecs, dtype=float)
    isotropic = [False] * len(bvals)
    if layout == "philips":
        volumes, bvals, bvecs, isotropic = _with_philips_trace(volumes, bvals, bvecs)
    spec = SeriesSpec(
        "MR",
        4,
        f"DWI b0-{int(max(bvals))} ({layout}, phantom)",
        uid_from(f"dwi-series-{patient_id}-{layout}"),
        frame_uid,
    )
    if layout == "enhanced":
        return [_write_enhanced(volumes, bvals, bvecs, folder, spec, patient_id, study_uid)]
    ny, nx = volumes[0].GetSize()[1], volumes[0].GetSize()[0]
    nz = volumes[0].GetSize()[2]
    names = np.random.default_rng([int(seed), 23]).permutation(len(volumes) * nz)
    syntax = ImplicitVRLittleEndian if layout == "ge" else ExplicitVRLittleEndian
    files = []
    for v, volume in enumerate(volumes):
        stored = _stored(volume)
        for k in range(nz):
            n = v * nz + k
            sop_uid = uid_from(f"{spec.series_uid}-{n}")
            ds = new_dataset(MRImageStorage, sop_uid, syntax)
            _common(ds, patient_id=patient_id, study_uid=study_uid, spec=spec)
            _mr_module(ds, layout)
            ds.InstanceNumber = n + 1
            ds.AcquisitionNumber = 1 if layout == "ge" else v + 1
            ds.ImageComments = _volume_label(bvals[v], bvecs[v])
            _geometry(ds, volume, k)
            _pixel_module(ds, ny, nx)
            _set_diffusion(ds, layout, float(bvals[v]), bvecs[v], isotropic[v])
            ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
            path = folder / f"IM{names[n]:05d}.dcm"
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return files


def _write_enhanced(volumes, bvals, bvecs, folder, spec, patient_id, study_uid) -> Path:
    sop_uid = uid_from(f"{spec.series_uid}-enhanced")
    ds = new_dataset(EnhancedMRImageStorage, sop_uid)
    _common(ds, patient_id=patient_id, study_uid=study_uid, spec=spec)
    _mr_module(ds, "enhanced")
    ds.InstanceNumber = 1
    ref = volumes[0]
    nx, ny, nz = ref.GetSize()
    direction = np.asarray(ref.GetDirection(), dtype=float).reshape(3, 3)
    spacing = ref.GetSpacing()
    shared = Dataset()
    measures = Dataset()
    measures.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
    measures.SliceThickness = _ds(spacing[2])
    orientation = Dataset()
    orientation.ImageOrientationPatient = [_ds(v) for v in (*direction[:, 0], *direction[:, 1])]
    transform = Dataset()
    transform.RescaleSlope = "1"
    transform.RescaleIntercept = "0"
    transform.RescaleType = "US"
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transform])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames, pixels = [], []
    for v, volume in enumerate(volumes):
        stored = _stored(volume)
        b, g = float(bvals[v]), bvecs[v]
        for k in range(nz):
            frame = Dataset()
            content = Dataset()
            content.StackID = "1"
            content.InStackPositionNumber = k + 1
            content.TemporalPositionIndex = v + 1
            content.FrameComments = _volume_label(b, g)
            position = Dataset()
            position.ImagePositionPatient = [
                _ds(c) for c in np.asarray(ref.GetOrigin()) + direction[:, 2] * spacing[2] * k
            ]
            diffusion = Dataset()
            diffusion.DiffusionBValue = b
            diffusion.DiffusionDirectionality = "DIRECTIONAL" if b > 0 else "NONE"
            if b > 0:
                gradient = Dataset()
                gradient.DiffusionGradientOrientation = [float(c) for c in g]
                diffusion.DiffusionGradientDirectionSequence = Sequence([gradient])
            frame.FrameContentSequence = Sequence([content])
            frame.PlanePositionSequence = Sequence([position])
            frame.MRDiffusionSequence = Sequence([diffusion])
            frames.append(frame)
            pixels.append(stored[k])
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    ds.NumberOfFrames = len(frames)
    _pixel_module(ds, ny, nx)
    ds.PixelData = np.ascontiguousarray(np.stack(pixels)).tobytes()
    path = folder / "DWI_enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def fsl_bvecs(bvecs_lps: np.ndarray, reference: sitk.Image) -> np.ndarray:
    """LPS directions as FSL writes them: in the voxel frame, the first axis flipped when the
    voxel-to-world matrix has a positive determinant (the inverse of
    :func:`MESCCAnalyzerLib.io.dwi.fsl_bvecs_to_lps`); (3, N)."""
    direction = np.asarray(reference.GetDirection(), dtype=float).reshape(3, 3)
    voxel = np.asarray(bvecs_lps, dtype=float) @ direction  # direction is orthonormal
    if np.linalg.det(direction) > 0:
        voxel[:, 0] = -voxel[:, 0]
    return voxel.T


def write_dwi_nifti(volumes, bvals, bvecs_lps, image_path: Path) -> dict[str, str]:
    """The 4D NIfTI and its FSL ``.bval``/``.bvec`` beside it (same stem); return the names."""
    image_path = Path(image_path)
    stem = (
        image_path.name[: -len(".nii.gz")]
        if image_path.name.endswith(".nii.gz")
        else image_path.stem
    )
    save_image(sitk.JoinSeries(list(volumes)), image_path)
    bval_path = image_path.with_name(stem + ".bval")
    bvec_path = image_path.with_name(stem + ".bvec")
    bval_path.write_text(" ".join(f"{b:g}" for b in bvals) + "\n", encoding="utf-8")
    rows = fsl_bvecs(bvecs_lps, volumes[0])
    bvec_path.write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in row) for row in rows) + "\n", encoding="utf-8"
    )
    return {"dwi": image_path.name, "dwi_bval": bval_path.name, "dwi_bvec": bvec_path.name}


def write_dwi_files(
    dwi: PhantomDWI,
    folder: Path,
    *,
    layout: str,
    patient_id: str,
    study_uid: str,
    frame_uid: str,
    seed: int,
) -> dict[str, str]:
    """``dwi_dicom/`` (in ``layout``), ``dwi.nii.gz`` + ``dwi.bval`` + ``dwi.bvec`` and
    ``mri_to_dwi.tfm`` into ``folder``; return the names by key, for ``truth.json``."""
    write_dwi_dicom(
        dwi.volumes,
        dwi.bvals,
        dwi.bvecs,
        folder / "dwi_dicom",
        layout=layout,
        patient_id=patient_id,
        study_uid=study_uid,
        frame_uid=frame_uid,
        seed=seed,
    )
    files = {"dwi_dicom": "dwi_dicom"}
    files.update(write_dwi_nifti(dwi.volumes, dwi.bvals, dwi.bvecs, folder / "dwi.nii.gz"))
    sitk.WriteTransform(dwi.mri_to_dwi, str(folder / "mri_to_dwi.tfm"))
    files["dwi_transform"] = "mri_to_dwi.tfm"
    return files
