"""3D cord compression metrics: from a labelmap (and optionally an SUV image) to numbers,
a sections table, surface models and the Bilsky grade.

:func:`compute_metrics` runs the stages (crop, centreline, sections, surfaces, distances,
Bilsky, uptake) and returns a :class:`MetricsResult`; :func:`write_metrics` writes
``metrics.json``, ``sections.csv`` and ``models/*.vtp``. :func:`read_labels` reads a labelmap
(NIfTI, NRRD, MHA, ...) or a Slicer ``.seg.nrrd`` with segments named ``spinal_cord``,
``csf``, ``epidural_mass``, ``vertebrae``.
"""

from __future__ import annotations

import io
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk
import vtk

from .. import LABEL_BONE, LABEL_CORD, LABEL_CSF, LABEL_MASS, LABEL_NAMES
from ..errors import ComputationError, InputError
from ..io.segfile import read_seg_nrrd
from ..io.study import load_image
from ..outputs import atomic_dir, write_json, write_text
from ..pet import uptake
from ..progress import CancelCallback, ProgressCallback, check, no_progress, sub_progress
from ..segmentation.seeds import OTHER_LABEL, axial_axis_kji
from . import bilsky, compression, narrowing, surfaces
from . import levels as level_maps
from .centerline import Centerline, fit_centerline, voxel_points_lps

CROP_MARGIN_MM = 12.0
#: a grown cord is a tube present on (nearly) every axial slice between its ends; seed
#: strokes lie on a few slices. Labels whose cord is on fewer than this fraction of the
#: slices it spans are refused as seed strokes (a grown segmentation with small gaps passes).
MIN_CORD_SLICE_FRACTION = 0.5
DISTANCE_TO_CORD = "DistanceToCord_mm"
DISTANCE_TO_MASS = "DistanceToMass_mm"
MODEL_FILES = {
    "cord": "cord.vtp",
    "sac": "thecal_sac.vtp",
    "mass": "mass.vtp",
    "centerline": "cord_centerline.vtp",
}


@dataclass
class MetricsResult:
    """Everything ``mescc metrics`` reports."""

    metrics: dict
    sections: compression.Sections
    models: dict[str, vtk.vtkPolyData]  # cord, sac, mass, centerline (LPS)
    centerline: Centerline
    facts: bilsky.BilskyFacts
    timings_s: dict = field(default_factory=dict)
    section_levels: list[str] | None = None  # the vertebral level of each section

    def sections_csv(self) -> str:
        """The sections table as CSV text (one row per section, units in the headers, the
        vertebral level of each section last)."""
        cols = self.sections.columns()
        names = list(cols)
        levels = self.section_levels or [""] * len(self.sections.arc_mm)
        buf = io.StringIO()
        buf.write(",".join([*names, "level"]) + "\n")
        for r in range(len(self.sections.arc_mm)):
            row = []
            for n in names:
                v = cols[n][r]
                row.append(
                    ""
                    if not np.isfinite(v)
                    else (f"{int(v)}" if n == "valid" else f"{float(v):.4f}")
                )
            buf.write(",".join([*row, levels[r]]) + "\n")
        return buf.getvalue()


# ---------------------------------------------------------------------------------------
# Input
# ---------------------------------------------------------------------------------------
def read_labels(path: str | os.PathLike) -> sitk.Image:
    """Labelmap (1 cord, 2 CSF, 3 mass, 4 bone) from an image file or a ``.seg.nrrd``."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file", path=path)
    if path.name.lower().endswith(".seg.nrrd"):
        return read_seg_nrrd(path)[0]
    return load_image(path)


def validate_labels(
    labels: sitk.Image, *, path=None, pet: sitk.Image | None = None, pet_path=None
) -> None:
    """Raise :class:`InputError` for labelmaps the metrics cannot use (module docstring)."""
    if labels.GetDimension() != 3 or min(labels.GetSize()) < 2:
        size = "x".join(str(s) for s in labels.GetSize())
        raise InputError(
            f"the labelmap is {labels.GetDimension()}D ({size}); a 3D labelmap is needed", path=path
        )
    if labels.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            "the labelmap has several components per voxel; a scalar labelmap is needed", path=path
        )
    pixel = labels.GetPixelID()
    if pixel in (sitk.sitkFloat32, sitk.sitkFloat64):
        arr = sitk.GetArrayViewFromImage(labels)
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise InputError(
                "the labelmap holds non-integer values; labels 1-4 are expected", path=path
            )
    arr = sitk.GetArrayViewFromImage(labels)
    _refuse_seed_strokes(labels, arr, path)
    present = {v for v in (LABEL_CORD, LABEL_CSF, LABEL_MASS) if (arr == v).any()}
    missing = [
        f"{LABEL_NAMES[v]} ({v})" for v in (LABEL_CORD, LABEL_CSF, LABEL_MASS) if v not in present
    ]
    if missing:
        what = (
            "the mass label is empty"
            if missing == [f"{LABEL_NAMES[LABEL_MASS]} ({LABEL_MASS})"]
            else f"missing label(s): {', '.join(missing)}"
        )
        raise InputError(
            what, path=path, hint="labels: 1 spinal cord, 2 CSF, 3 epidural mass, 4 bone"
        )
    if pet is not None:
        if pet.GetDimension() != 3:
            raise InputError(
                f"the PET image is {pet.GetDimension()}D; a 3D SUV image is needed", path=pet_path
            )
        uptake.check_same_grid(labels, pet, path=pet_path)


def _refuse_seed_strokes(labels: sitk.Image, arr: np.ndarray, path) -> None:
    """Refuse seed strokes given as labels: a cord on few of the axial slices it spans (see
    :data:`MIN_CORD_SLICE_FRACTION`) is not a closed cord and thecal sac to measure."""
    cord = arr == LABEL_CORD
    if not cord.any():
        return
    axis = axial_axis_kji(labels)
    on_slice = cord.any(axis=tuple(a for a in range(3) if a != axis))
    present = np.flatnonzero(on_slice)
    span = int(present[-1] - present[0] + 1)
    if span < 3 or present.size >= MIN_CORD_SLICE_FRACTION * span:
        return
    other = bool((arr >= OTHER_LABEL).any())
    raise InputError(
        "these look like seed strokes, not a grown segmentation: the spinal cord "
        f"({LABEL_CORD}) is on {present.size} of the {span} axial slices between its ends"
        + (f", and labels {OTHER_LABEL}+ ('other' tissue strokes) are present" if other else "")
        + "; the metrics need a closed cord and thecal sac on every slice",
        path=path,
        hint="grow the seeds first (mescc segment --image T2 --seeds SEEDS --out labels.nii.gz) "
        "and give that labelmap",
    )


_FACE_NAMES = (("right", "left"), ("anterior", "posterior"), ("inferior", "superior"))


def mass_edge_note(labels: sitk.Image) -> str | None:
    """A note when the mass label touches a face of the image: the mass may continue beyond
    the field of view, so its volume and extent are lower bounds. ``None`` otherwise."""
    arr = sitk.GetArrayViewFromImage(labels)
    mass = arr == LABEL_MASS
    direction = np.asarray(labels.GetDirection(), dtype=float).reshape(3, 3)
    faces = []
    for axis_kji in range(3):
        axis_ijk = 2 - axis_kji
        for end, sign in ((0, -1.0), (-1, 1.0)):
            index = [slice(None)] * 3
            index[axis_kji] = end
            if mass[tuple(index)].any():
                outward = sign * direction[:, axis_ijk]  # LPS direction out of this face
                k = int(np.argmax(np.abs(outward)))
                faces.append(_FACE_NAMES[k][1 if outward[k] > 0 else 0])
    if not faces:
        return None
    return (
        f"the epidural mass touches the image edge ({', '.join(dict.fromkeys(faces))}): it may "
        "extend beyond the field of view, so its volume and extent are lower bounds"
    )


# ---------------------------------------------------------------------------------------
# Computation
# ---------------------------------------------------------------------------------------
def _crop(labels: sitk.Image) -> sitk.Image:
    """The labelmap cropped to its cord/CSF/mass bounding box plus a margin (bone kept)."""
    arr = sitk.GetArrayViewFromImage(labels)
    roi = (arr == LABEL_CORD) | (arr == LABEL_CSF) | (arr == LABEL_MASS)
    idx = [
        np.nonzero(roi.any(axis=tuple(a for a in range(3) if a != ax)))[0] for ax in range(3)
    ]  # k, j, i
    spacing = np.asarray(labels.GetSpacing())[::-1]
    lo = [
        max(0, int(ix[0] - np.ceil(CROP_MARGIN_MM / sp)))
        for ix, sp in zip(idx, spacing, strict=True)
    ]
    hi = [
        min(n, int(ix[-1] + np.ceil(CROP_MARGIN_MM / sp)) + 1)
        for ix, sp, n in zip(idx, spacing, arr.shape, strict=True)
    ]
    return labels[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]


def _mask(labels: sitk.Image, values) -> sitk.Image:
    arr = np.isin(sitk.GetArrayViewFromImage(labels), values).astype(np.uint8)
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(labels)
    return img


class _Stages:
    """Times named stages, reports them to an optional ``timer`` and checks ``cancel``."""

    def __init__(self, timer, cancel):
        self._clock = time.perf_counter
        self.timer, self.cancel = timer, cancel
        self.timings: dict[str, float] = {}
        self.name, self.t0 = None, 0.0

    def __call__(self, name: str) -> None:
        now = self._clock()
        if self.name is not None:
            self.timings[self.name] = now - self.t0
        self.name, self.t0 = name, now
        if self.timer is not None and name != "done":
            self.timer(name)
        check(self.cancel)


def _mass_arc_range(crop: sitk.Image, line: Centerline) -> tuple[float, float]:
    """Arc-length range (mm) of the mass along the centreline: voxel centres +- half a voxel."""
    arr = sitk.GetArrayViewFromImage(crop)
    spacing = np.asarray(crop.GetSpacing(), dtype=np.float64)
    direction = np.asarray(crop.GetDirection(), dtype=np.float64).reshape(3, 3)
    voxel_along = float(np.abs(line.axis_direction_lps @ (direction * spacing[None, :])).sum())
    par = line.param_of(voxel_points_lps(crop, arr == LABEL_MASS))
    return _arc_at(line, float(par.min()) - voxel_along / 2), _arc_at(
        line, float(par.max()) + voxel_along / 2
    )


@dataclass
class _Contact:
    mass_cord_gap_mm: float
    mass_sac_gap_mm: float
    cord_adjacent: bool
    sac_adjacent: bool
    contact_area_mm2: float


def _distances_and_contact(crop, masks: dict, models: dict, voxel_mm: float) -> _Contact:
    """Distance arrays on the mass and cord models, gaps (0 when voxels touch), contact area."""
    mass_pts = surfaces.points_lps(models["mass"])
    mass_to_cord = surfaces.distances_to_mask_surface(mass_pts, masks["cord"], models["cord"])
    cord_to_mass = surfaces.distances_to_mask_surface(
        surfaces.points_lps(models["cord"]), masks["mass"], models["mass"]
    )
    surfaces.add_point_array(models["mass"], DISTANCE_TO_CORD, mass_to_cord)
    surfaces.add_point_array(models["cord"], DISTANCE_TO_MASS, cord_to_mass)
    mass_to_sac = surfaces.distances_to_mask_surface(mass_pts, masks["sac"], models["sac"])
    arr = sitk.GetArrayViewFromImage(crop)
    cord_bool = arr == LABEL_CORD
    mass_bool = arr == LABEL_MASS
    cord_adjacent = bilsky.touching(mass_bool, cord_bool)
    sac_adjacent = bilsky.touching(mass_bool, cord_bool | (arr == LABEL_CSF))
    cord_gap = 0.0 if cord_adjacent else float(min(mass_to_cord.min(), cord_to_mass.min()))
    sac_gap = 0.0 if sac_adjacent else float(max(0.0, mass_to_sac.min()))
    touching = cord_adjacent or cord_gap < voxel_mm
    area = (
        surfaces.area_within_mm2(models["cord"], cord_to_mass, 0.5 * voxel_mm) if touching else 0.0
    )
    return _Contact(cord_gap, sac_gap, cord_adjacent, sac_adjacent, float(area))


def _bilsky_facts(crop, contact: _Contact, v: dict, voxel_mm: float) -> bilsky.BilskyFacts:
    free_fraction, _ = bilsky.bone_free_paths(crop)
    return bilsky.BilskyFacts(
        voxel_mm=voxel_mm,
        mass_sac_gap_mm=contact.mass_sac_gap_mm,
        bone_free_path_fraction=free_fraction,
        mass_touches_sac=bool(contact.sac_adjacent or contact.mass_sac_gap_mm < voxel_mm),
        sac_narrowing_mm=max(v["sac_ap_loss_mm"], v["sac_transverse_loss_mm"]),
        mass_touches_cord=bool(contact.cord_adjacent or contact.mass_cord_gap_mm < voxel_mm),
        mass_cord_gap_mm=contact.mass_cord_gap_mm,
        cord_contact_subvoxel=bool(
            not contact.cord_adjacent and contact.mass_cord_gap_mm < voxel_mm
        ),
        sac_contact_subvoxel=bool(not contact.sac_adjacent and contact.mass_sac_gap_mm < voxel_mm),
        mscc_percent=v["mscc_percent"],
        cord_csa_ratio=v["cord_csa_ratio"],
        csf_area_worst_mm2=v["csf_area_worst_mm2"],
        csf_fraction_worst=v["csf_fraction_worst"],
    )


_FROM_COMPRESSION = (
    "cord_min_csa_mm2",
    "cord_reference_csa_mm2",
    "cord_csa_ratio",
    "cord_ap_worst_mm",
    "cord_ap_reference_mm",
    "cord_transverse_worst_mm",
    "mscc_percent",
    "sac_ap_worst_mm",
    "sac_ap_reference_mm",
    "mcc_percent",
    "sac_csa_worst_mm2",
    "sac_reference_csa_mm2",
    "canal_compromise_percent",
    "compression_ratio_min",
    "compression_ratio_reference",
    "cord_canal_area_ratio_min",
    "cord_canal_area_ratio_worst",
    "csf_area_worst_mm2",
    "cord_displacement_mm",
)


_FROM_UPTAKE = ("suv_max", "suv_peak", "suv_mean", "mtv_ml", "tlg", "suv_peak_centre_lps_mm")


@dataclass
class LevelSource:
    """Where the vertebral levels' names come from: a VerSe labelmap on the labels' grid, or
    one named anchor point (``T6``, LPS mm) in a vertebral body. Neither: levels are the
    bodies of the bone label (or 25 mm stretches) numbered from the top, unnamed."""

    vertebrae: sitk.Image | None = None
    vertebrae_path: object = None
    anchor: tuple[str, np.ndarray] | None = None


def compute_metrics(
    labels: sitk.Image,
    pet: sitk.Image | None = None,
    *,
    levels: LevelSource | None = None,
    section_step_mm: float = 1.0,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    timer=None,
) -> MetricsResult:
    """All metrics of ``labels`` (1 cord, 2 CSF, 3 mass, 4 bone), see the module docstring.

    ``pet``: an SUV image on the same grid (adds suv_max, suv_peak, suv_mean, mtv_ml, tlg).
    ``levels``: how to name the vertebral levels (:class:`LevelSource`; unnamed by default).
    ``timer``: optional ``timer(stage_name)`` called as each stage starts (the CLI's
    ``term.stage``); stage times are also returned in ``timings_s``.
    """
    progress = progress or no_progress
    validate_labels(labels, pet=pet)
    if levels is not None and levels.vertebrae is not None:
        level_maps.check_grid(levels.vertebrae, labels, levels.vertebrae_path)
    surfaces.enable_threads()
    stage = _Stages(timer, cancel)

    stage("crop")
    labels_u8 = (
        sitk.Cast(labels, sitk.sitkUInt8) if labels.GetPixelID() != sitk.sitkUInt8 else labels
    )
    crop = _crop(labels_u8)
    voxel_mm = float(np.asarray(crop.GetSpacing(), dtype=np.float64).min())
    masks = _structure_masks(crop)
    progress(0.02, "centreline")

    stage("centreline")
    line = fit_centerline(masks["cord"], step_mm=section_step_mm)

    stage("sections")
    comp = _measure_compression(
        crop, line, labels_u8, voxel_mm, sub_progress(progress, 0.05, 0.55), cancel
    )
    progress(0.6, "surfaces")

    stage("surfaces")
    models = {key: surfaces.mask_surface(mask) for key, mask in masks.items()}
    progress(0.75, "distances")

    stage("distances")
    contact = _distances_and_contact(crop, masks, models, voxel_mm)
    progress(0.85, "Bilsky grade")

    stage("bilsky")
    facts = _bilsky_facts(crop, contact, comp.result.values, voxel_mm)
    grade, reason = bilsky.grade(facts)

    uptake_values = {}
    if pet is not None:
        stage("uptake")
        uptake_values = uptake.uptake_metrics(pet, _mask(labels_u8, [LABEL_MASS]))
    stage("done")

    metrics = {
        **_mass_metrics(masks["mass"], models["mass"], comp),
        **{k: comp.result.values[k] for k in _FROM_COMPRESSION},
        "mass_cord_min_distance_mm": contact.mass_cord_gap_mm,
        "mass_cord_contact_area_mm2": contact.contact_area_mm2,
        "mass_sac_min_distance_mm": contact.mass_sac_gap_mm,
        "bilsky_grade": grade,
        "bilsky_reason": reason,
        "bilsky_facts": facts.as_dict(),
        **_levels_and_sampling(comp, labels_u8, section_step_mm),
    }
    if uptake_values:
        metrics.update({k: uptake_values[k] for k in _FROM_UPTAKE})
    level_map = _level_map(levels, line, labels_u8)
    level_values, level_notes = _level_metrics(level_map, comp)
    metrics.update(level_values)
    metrics["notes"] = [*metrics["notes"], *level_notes]
    models["centerline"] = _centerline_poly(line, comp.sections)
    progress(1.0, "done")
    result = MetricsResult(metrics, comp.sections, models, line, facts, stage.timings)
    result.section_levels = [str(n) for n in level_map.level_at(comp.sections.arc_mm)]
    return result


def _level_map(source: LevelSource | None, line: Centerline, labels: sitk.Image):
    """The vertebral levels along the cord from ``source`` (unnamed without one)."""
    # A metastasis replaces marrow: the bodies are the bone and the mass together.
    bone = _mask(labels, [LABEL_BONE, LABEL_MASS])
    if source is not None and source.vertebrae is not None:
        return level_maps.levels_from_vertebrae(
            source.vertebrae, line, reference=labels, path=source.vertebrae_path
        )
    if source is not None and source.anchor is not None:
        return level_maps.levels_from_anchor(bone, line, *source.anchor)
    return level_maps.levels_unnamed(line, bone)


def _level_metrics(level_map, comp: _CompressionStage) -> tuple[dict, list[str]]:
    """The per-level table with its narrowing flags, and the levels of the mass and the worst
    section; a note for each narrowing away from the mass (it is not to be missed)."""
    lo, hi = (float(a) for a in comp.mass_arc_mm)
    rows = narrowing.level_table(level_map, comp.sections, lesion_ranges={1: (lo, hi)})
    worst = comp.result.values["worst_section_arc_mm"]
    notes = [
        f"narrowing at {r['level']} away from the mass: {r['flag_reason']}"
        for r in rows
        if r["flagged"] and not r["lesion_ids"]
    ]
    values = {
        "levels": rows,
        "levels_named": bool(level_map.named),
        "level_source": level_map.source,
        "mass_levels": level_map.levels_between(lo, hi),
        "worst_section_level": str(level_map.level_at(worst)[0]) if worst is not None else "",
    }
    return values, notes


def _structure_masks(crop: sitk.Image) -> dict[str, sitk.Image]:
    """Binary masks of the cord, the thecal sac (cord + CSF) and the mass."""
    return {
        "cord": _mask(crop, [LABEL_CORD]),
        "sac": _mask(crop, [LABEL_CORD, LABEL_CSF]),
        "mass": _mask(crop, [LABEL_MASS]),
    }


@dataclass
class _CompressionStage:
    """The sections along the centreline and what is read from them."""

    sections: compression.Sections
    result: compression.CompressionResult
    mass_arc_mm: tuple[float, float]  # the mass's extent along the centreline
    circumferential_deg: float
    sectors: list[str]


def _measure_compression(
    crop: sitk.Image,
    line: Centerline,
    full_extent: sitk.Image,
    voxel_mm: float,
    progress: ProgressCallback,
    cancel: CancelCallback | None,
) -> _CompressionStage:
    """Sections of ``crop`` along ``line``, the compression measures and the mass's extent
    (craniocaudal and around the sac); :class:`ComputationError` when no section is valid."""
    sections = compression.measure_sections(
        crop, line, full_extent=full_extent, progress=progress, cancel=cancel
    )
    if not sections.valid.any():
        raise ComputationError(
            "no cross-section of the cord lies fully inside the image",
            hint="check the cord label and the field of view",
        )
    arc_lo, arc_hi = _mass_arc_range(crop, line)
    result = compression.compression_measures(sections, (arc_lo, arc_hi), resolution_mm=voxel_mm)
    in_mass = np.nonzero(
        sections.valid & (sections.arc_mm >= arc_lo) & (sections.arc_mm <= arc_hi)
    )[0]
    circ_deg, sectors = compression.circumferential_extent(sections, in_mass)
    return _CompressionStage(sections, result, (arc_lo, arc_hi), circ_deg, sectors)


def _mass_metrics(mass_mask: sitk.Image, mass_model, comp: _CompressionStage) -> dict:
    """The mass's volume (surface and voxel count), surface area and extent."""
    mass_voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mass_mask)))
    arc_lo, arc_hi = comp.mass_arc_mm
    return {
        "mass_volume_ml": surfaces.surface_volume_mm3(mass_model) / 1000.0,
        "mass_voxel_volume_ml": mass_voxels * float(np.prod(mass_mask.GetSpacing())) / 1000.0,
        "mass_surface_area_mm2": surfaces.surface_area_mm2(mass_model),
        "mass_craniocaudal_extent_mm": float(arc_hi - arc_lo),
        "mass_circumferential_extent_deg": comp.circumferential_deg,
        "mass_circumferential_sectors": comp.sectors,
    }


def _levels_and_sampling(
    comp: _CompressionStage, labels: sitk.Image, section_step_mm: float
) -> dict:
    """Where the worst and reference levels lie, the notes, and how the labels were sampled."""
    v, sections = comp.result.values, comp.sections
    return {
        "worst_section_lps_mm": v["worst_section_lps_mm"],
        "worst_section_arc_mm": v["worst_section_arc_mm"],
        "mass_arc_range_mm": [float(a) for a in comp.mass_arc_mm],
        "reference_arc_mm": v["reference_arc_mm"],
        "reference_sides": v["reference_sides"],
        "notes": [n for n in (*comp.result.notes, mass_edge_note(labels)) if n],
        "sections": int(len(sections.arc_mm)),
        "valid_sections": int(sections.valid.sum()),
        "section_step_mm": float(section_step_mm),
        "section_pixel_mm": float(sections.pixel_mm),
        "voxel_spacing_mm": [float(s) for s in labels.GetSpacing()],
        "coordinate_system": "LPS",
    }


def _arc_at(line: Centerline, param: float) -> float:
    """Arc length at an axis parameter, extrapolated linearly beyond the samples."""
    t, s = line.axis_param_mm, line.arc_mm
    if param < t[0]:
        return float(s[0] - (t[0] - param) * (s[1] - s[0]) / (t[1] - t[0]))
    if param > t[-1]:
        return float(s[-1] + (param - t[-1]) * (s[-1] - s[-2]) / (t[-1] - t[-2]))
    return float(np.interp(param, t, s))


def _centerline_poly(line: Centerline, sections: compression.Sections) -> vtk.vtkPolyData:
    poly = surfaces.polyline(line.points_lps)
    for name, values in (
        ("arc_mm", sections.arc_mm),
        ("cord_csa_mm2", sections.cord_csa_mm2),
        ("cord_ap_mm", sections.cord_ap_mm),
    ):
        surfaces.add_point_array(
            poly, name, np.nan_to_num(values, nan=0.0), active=name == "cord_csa_mm2"
        )
    return poly


# ---------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------
def write_metrics(result: MetricsResult, out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``metrics.json``, ``sections.csv`` and ``models/`` into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    with atomic_dir(out / "models", part_of_output=True) as tmp:
        for key, name in MODEL_FILES.items():
            surfaces.write_model(result.models[key], tmp / name)
    written["models"] = out / "models"
    written["sections"] = write_text(out / "sections.csv", result.sections_csv())
    written["metrics"] = write_json(out / "metrics.json", _jsonable(result.metrics))
    return written


def _jsonable(value):
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if np.isfinite(f) else None
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    return value


__all__ = [
    "MetricsResult",
    "compute_metrics",
    "read_labels",
    "validate_labels",
    "write_metrics",
]
