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
from vtk.util import numpy_support

from .. import LABEL_BONE, LABEL_CORD, LABEL_CSF, LABEL_MASS, LABEL_NAMES
from ..errors import ComputationError, InputError
from ..io.segfile import read_seg_nrrd
from ..io.study import load_image
from ..outputs import atomic_dir, write_image, write_json, write_text
from ..pet import uptake
from ..progress import CancelCallback, ProgressCallback, check, no_progress, sub_progress
from ..segmentation.seeds import OTHER_LABEL, axial_axis_kji
from . import bilsky, compression, margins, narrowing, partial_volume, surfaces
from . import lesions as lesion_regions
from . import levels as level_maps
from .centerline import Centerline, fit_centerline, voxel_points_lps

CROP_MARGIN_MM = 12.0
#: a grown cord is a tube present on (nearly) every axial slice between its ends; seed
#: strokes lie on a few slices. Labels whose cord is on fewer than this fraction of the
#: slices it spans are refused as seed strokes (a grown segmentation with small gaps passes).
MIN_CORD_SLICE_FRACTION = 0.5
DISTANCE_TO_CORD = "DistanceToCord_mm"
DISTANCE_TO_MASS = "DistanceToMass_mm"
LESION_ID = "lesion_id"  # on the mass model: which lesion each point belongs to
LESION_MAP_FILE = "lesions.nii.gz"
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
    facts: bilsky.BilskyFacts | None  # the worst lesion's (None without a lesion)
    timings_s: dict = field(default_factory=dict)
    section_levels: list[str] | None = None  # the vertebral level of each section
    lesion_map: sitk.Image | None = None  # lesion ids on the labels' grid (None: no lesion)

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
    # the cord is always needed; the CSF (the thecal sac) whenever there is a mass to grade;
    # a study without a mass is measured without a lesion (and without the canal when the
    # labels hold only the cord)
    needed = [LABEL_CORD, *([LABEL_CSF] if LABEL_MASS in present else [])]
    missing = [f"{LABEL_NAMES[v]} ({v})" for v in needed if v not in present]
    if missing:
        raise InputError(
            f"missing label(s): {', '.join(missing)}"
            + (" (the thecal sac is needed to grade the mass)" if LABEL_CORD in present else ""),
            path=path,
            hint="labels: 1 spinal cord, 2 CSF, 3 epidural mass, 4 bone",
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
def _crop_box(labels: sitk.Image) -> tuple[slice, slice, slice]:
    """The (i, j, k) index ranges of the labelmap's cord/CSF/mass bounding box plus a margin."""
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
    return slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0])


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

#: what each lesion carries (the top level of ``metrics.json`` repeats the worst lesion's;
#: all ``None`` in a study without a lesion)
LESION_KEYS = (
    "mass_volume_ml",
    "mass_voxel_volume_ml",
    "mass_surface_area_mm2",
    "mass_craniocaudal_extent_mm",
    "mass_circumferential_extent_deg",
    "mass_circumferential_sectors",
    *_FROM_COMPRESSION,
    "mass_cord_min_distance_mm",
    "mass_cord_contact_area_mm2",
    "mass_sac_min_distance_mm",
    "gap_cord_under_3mm",
    "gap_sac_under_3mm",
    "bilsky_grade",
    "bilsky_reason",
    "bilsky_facts",
    "worst_section_lps_mm",
    "worst_section_arc_mm",
    "worst_section_level",
    "mass_arc_range_mm",
    "mass_levels",
    "reference_arc_mm",
    "reference_sides",
)
NO_LESION_REASON = (
    "no epidural mass: no lesion to grade (the cord and canal are measured level by level)"
)
GAP_GOAL_MM = 3.0
"""The gap between tumour and cord (or sac) that separation surgery aims to create before
spine radiosurgery (Laufer I et al., J Neurosurg Spine 2013;18:207); a gap under it is
flagged."""
LESION_MARGIN_MM = 15.0  # the region around a lesion its surfaces and distances are read in


@dataclass
class LevelSource:
    """Where the vertebral levels' names come from: a VerSe labelmap on the labels' grid, or
    one named anchor point (``T6``, LPS mm) in a vertebral body. Neither: levels are the
    bodies of the bone label (or 25 mm stretches) numbered from the top, unnamed."""

    vertebrae: sitk.Image | None = None
    vertebrae_path: object = None
    anchor: tuple[str, np.ndarray] | None = None


@dataclass
class _Lesion:
    """One lesion while it is measured: its region, its compression along the shared
    sections, and its own surfaces and contact in the region around it."""

    region: lesion_regions.LesionRegion
    compression: compression.CompressionResult
    circumferential_deg: float
    sectors: list[str]
    labels: sitk.Image | None = None  # the region around it, other lesions removed
    masks: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    contact: _Contact | None = None
    facts: bilsky.BilskyFacts | None = None
    grade: str = ""
    reason: str = ""
    uptake: dict = field(default_factory=dict)


def compute_metrics(
    labels: sitk.Image,
    pet: sitk.Image | None = None,
    *,
    mri: sitk.Image | None = None,
    levels: LevelSource | None = None,
    section_step_mm: float = 1.0,
    prv_mm: float = margins.DEFAULT_PRV_MM,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
    timer=None,
) -> MetricsResult:
    """All metrics of ``labels`` (1 cord, 2 CSF, 3 mass, 4 bone), see the module docstring.

    The mass is split into lesions (:mod:`.lesions`), each measured on its own with reference
    sections outside every lesion; the top level of the metrics is the worst lesion's (the
    highest grade, then the highest MSCC). A labelmap without a mass is measured too: no
    lesion, no grade, the cord and canal level by level with their narrowing flags.

    ``pet``: an SUV image on the same grid (adds suv_max, suv_peak, suv_mean, mtv_ml, tlg).
    ``mri``: the MRI the labels were drawn on, on the same grid: the cord's outline is then
    measured to a fraction of a voxel from its partial volume (:mod:`.partial_volume`).
    ``levels``: how to name the vertebral levels (:class:`LevelSource`; unnamed by default).
    ``prv_mm``: the margin of the cord's planning risk volume (``cord_prv_volume_ml``, of the
    whole cord and of each lesion's levels).
    ``timer``: optional ``timer(stage_name)`` called as each stage starts (the CLI's
    ``term.stage``); stage times are also returned in ``timings_s``.
    """
    progress = progress or no_progress
    validate_labels(labels, pet=pet)
    prv_mm = margins.check_margin(prv_mm)
    if levels is not None and levels.vertebrae is not None:
        level_maps.check_grid(levels.vertebrae, labels, levels.vertebrae_path)
    if mri is not None:
        partial_volume.check_grid(labels, mri)
    surfaces.enable_threads()
    stage = _Stages(timer, cancel)

    stage("crop")
    labels_u8 = (
        sitk.Cast(labels, sitk.sitkUInt8) if labels.GetPixelID() != sitk.sitkUInt8 else labels
    )
    box = _crop_box(labels_u8)
    crop = labels_u8[box]
    shares = None
    if mri is not None:
        fractions = partial_volume.cord_fractions(crop, mri[box])
        shares = {LABEL_CORD: fractions.cord, LABEL_CSF: fractions.csf}
    voxel_mm = float(np.asarray(crop.GetSpacing(), dtype=np.float64).min())
    masks = _structure_masks(crop)
    has_canal = bool((sitk.GetArrayViewFromImage(crop) == LABEL_CSF).any())
    progress(0.02, "centreline")

    stage("centreline")
    line = fit_centerline(masks["cord"], step_mm=section_step_mm)
    regions, speck_notes = lesion_regions.find_lesions(crop, line)

    stage("sections")
    sections = compression.measure_sections(
        crop,
        line,
        full_extent=labels_u8,
        shares=shares,
        progress=sub_progress(progress, 0.05, 0.55),
        cancel=cancel,
    )
    if not sections.valid.any():
        raise ComputationError(
            "no cross-section of the cord lies fully inside the image",
            hint="check the cord label and the field of view",
        )
    lesions = [_lesion_compression(r, regions, sections, voxel_mm) for r in regions]
    progress(0.6, "surfaces")

    stage("surfaces")
    models = {key: surfaces.mask_surface(mask) for key, mask in masks.items() if key != "mass"}
    for lesion in lesions:
        _lesion_surfaces(lesion, regions, crop)
    progress(0.75, "distances")

    stage("distances")
    for lesion in lesions:
        lesion.contact = _distances_and_contact(
            lesion.labels, lesion.masks, lesion.models, voxel_mm
        )
    if lesions:
        models["mass"] = _mass_model(lesions)
        surfaces.add_point_array(
            models["cord"],
            DISTANCE_TO_MASS,
            surfaces.distances_to_mask_surface(
                surfaces.points_lps(models["cord"]), masks["mass"], models["mass"]
            ),
        )
    progress(0.85, "Bilsky grade")

    stage("bilsky")
    for lesion in lesions:
        lesion.facts = _bilsky_facts(
            lesion.labels, lesion.contact, lesion.compression.values, voxel_mm
        )
        lesion.grade, lesion.reason = bilsky.grade(lesion.facts)

    if pet is not None and lesions:
        stage("uptake")
        for lesion in lesions:
            mask = lesion_regions.lesion_map([lesion.region], crop, labels_u8)
            lesion.uptake = uptake.uptake_metrics(pet, mask)
    stage("done")

    level_map = _level_map(levels, line, labels_u8)
    rows = narrowing.level_table(
        level_map,
        sections,
        lesion_ranges={les.region.id: les.region.level_range_mm for les in lesions},
        canal=has_canal,
        end_margin_mm=max(
            narrowing.END_MARGIN_MM, lesion_regions.voxel_length_along(labels_u8, line)
        ),
    )
    per_lesion = [_lesion_values(lesion, level_map, len(lesions) > 1) for lesion in lesions]
    prv = _cord_prv(masks["cord"], line, prv_mm)
    for values in per_lesion:
        values["cord_prv_volume_ml"] = prv.volume_ml_within(level_map, values["levels"])
    worst = _worst_lesion(per_lesion)
    metrics = {
        **(
            {k: worst[k] for k in LESION_KEYS}
            if worst
            else {**dict.fromkeys(LESION_KEYS), "bilsky_reason": NO_LESION_REASON}
        ),
        "cord_prv_volume_ml": prv.volume_ml,
        "prv_margin_mm": prv_mm,
        "lesion_count": len(per_lesion),
        "worst_lesion_id": worst["id"] if worst else None,
        "total_mass_volume_ml": float(sum(m["mass_volume_ml"] for m in per_lesion)),
        "lesions": per_lesion,
        **_study_values(sections, labels_u8, section_step_mm, has_canal),
        "cord_outline": "mri" if shares is not None else "labels",
        **_level_values(level_map, rows),
    }
    if pet is not None:
        metrics.update({k: worst.get(k) if worst else None for k in _FROM_UPTAKE})
    metrics["notes"] = [
        *speck_notes,
        *[n for m in per_lesion for n in m["notes"]],
        *([mass_edge_note(labels_u8)] if lesions else []),
        *_narrowing_notes(rows),
    ]
    metrics["notes"] = [n for n in metrics["notes"] if n]
    models["centerline"] = _centerline_poly(line, sections)
    progress(1.0, "done")
    chosen = next((les for les in lesions if worst and les.region.id == worst["id"]), None)
    result = MetricsResult(
        metrics, sections, models, line, chosen.facts if chosen else None, stage.timings
    )
    result.section_levels = [str(n) for n in level_map.level_at(sections.arc_mm)]
    result.lesion_map = lesion_regions.lesion_map(regions, crop, labels_u8) if regions else None
    return result


@dataclass
class _CordPRV:
    """The cord's planning risk volume: its voxels' volume and arc lengths along the cord."""

    voxel_ml: float
    arc_mm: np.ndarray  # of each PRV voxel's centre

    @property
    def volume_ml(self) -> float:
        return float(len(self.arc_mm) * self.voxel_ml)

    def volume_ml_within(self, level_map, names: list[str]) -> float:
        """The PRV's volume over the levels ``names`` (the levels a lesion reaches)."""
        spans = [
            (lo, hi)
            for name, lo, hi in zip(
                level_map.names, level_map.arc_lo, level_map.arc_hi, strict=True
            )
            if name in names
        ]
        if not spans:
            return 0.0
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        return float(np.count_nonzero((self.arc_mm >= lo) & (self.arc_mm < hi)) * self.voxel_ml)


def _cord_prv(cord: sitk.Image, line: Centerline, prv_mm: float) -> _CordPRV:
    """The cord grown by ``prv_mm`` (:func:`margins.dilated_onto`, on the labels' grid)."""
    prv = margins.dilated_onto(cord, cord, sitk.Transform(), prv_mm)
    points = voxel_points_lps(prv)
    voxel_ml = float(np.prod(prv.GetSpacing())) / 1000.0
    return _CordPRV(voxel_ml, line.arc_of_points(points) if len(points) else np.zeros(0))


def _lesion_compression(
    region: lesion_regions.LesionRegion,
    regions: list[lesion_regions.LesionRegion],
    sections: compression.Sections,
    voxel_mm: float,
) -> _Lesion:
    """The lesion's compression measures (reference outside every lesion) and its extent
    around the sac."""
    others = [r.arc_range_mm for r in regions if r.id != region.id]
    result = compression.compression_measures(
        sections, region.arc_range_mm, resolution_mm=voxel_mm, other_lesions=others
    )
    circ_deg, sectors = compression.circumferential_extent(sections, result.in_mass)
    return _Lesion(region, result, circ_deg, sectors)


def _lesion_surfaces(
    lesion: _Lesion, regions: list[lesion_regions.LesionRegion], crop: sitk.Image
) -> None:
    """The labels in a box around the lesion (its bounding box + :data:`LESION_MARGIN_MM`)
    with the other lesions' voxels cleared, their masks and surfaces."""
    mask = lesion.region.mask_kji
    arr = sitk.GetArrayFromImage(crop)
    for other in regions:
        if other.id != lesion.region.id:
            arr[other.mask_kji] = 0
    spacing = np.asarray(crop.GetSpacing(), dtype=np.float64)[::-1]
    pad = np.ceil(LESION_MARGIN_MM / spacing).astype(int)
    nz = np.argwhere(mask)
    lo = np.maximum(nz.min(axis=0) - pad, 0)
    hi = np.minimum(nz.max(axis=0) + pad + 1, arr.shape)
    cleared = sitk.GetImageFromArray(arr)
    cleared.CopyInformation(crop)
    lesion.labels = cleared[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]]
    lesion.masks = _structure_masks(lesion.labels)
    lesion.models = {key: surfaces.mask_surface(m) for key, m in lesion.masks.items()}


def _mass_model(lesions: list[_Lesion]) -> vtk.vtkPolyData:
    """The lesions' surfaces in one model, each point carrying its ``lesion_id``."""
    append = vtk.vtkAppendPolyData()
    for lesion in lesions:
        model = lesion.models["mass"]
        ids = numpy_support.numpy_to_vtk(
            np.full(model.GetNumberOfPoints(), lesion.region.id, dtype=np.int32), deep=1
        )
        ids.SetName(LESION_ID)
        model.GetPointData().AddArray(ids)
        append.AddInputData(model)
    append.Update()
    out = vtk.vtkPolyData()
    out.DeepCopy(append.GetOutput())
    out.GetPointData().SetActiveScalars(DISTANCE_TO_CORD)
    return out


def _lesion_values(lesion: _Lesion, level_map, prefix_notes: bool) -> dict:
    """One entry of ``metrics["lesions"]``."""
    v, region = lesion.compression.values, lesion.region
    lo, hi = region.arc_range_mm
    names = level_map.levels_between(*region.level_range_mm)
    contact = lesion.contact
    notes = [n for n in lesion.compression.notes if n]
    if prefix_notes:
        where = f" ({', '.join(names)})" if names else ""
        notes = [f"lesion {region.id}{where}: {n}" for n in notes]
    mass_mask = lesion.masks["mass"]
    mass_model = lesion.models["mass"]
    voxels = int(np.count_nonzero(sitk.GetArrayViewFromImage(mass_mask)))
    values = {
        "id": region.id,
        "levels": names,
        "arc_range_mm": [float(lo), float(hi)],
        "mass_volume_ml": surfaces.surface_volume_mm3(mass_model) / 1000.0,
        "mass_voxel_volume_ml": voxels * float(np.prod(mass_mask.GetSpacing())) / 1000.0,
        "mass_surface_area_mm2": surfaces.surface_area_mm2(mass_model),
        "mass_craniocaudal_extent_mm": float(hi - lo),
        "mass_circumferential_extent_deg": lesion.circumferential_deg,
        "mass_circumferential_sectors": lesion.sectors,
        **{k: v[k] for k in _FROM_COMPRESSION},
        "mass_cord_min_distance_mm": contact.mass_cord_gap_mm,
        "mass_cord_contact_area_mm2": contact.contact_area_mm2,
        "mass_sac_min_distance_mm": contact.mass_sac_gap_mm,
        "gap_cord_under_3mm": bool(contact.mass_cord_gap_mm < GAP_GOAL_MM),
        "gap_sac_under_3mm": bool(contact.mass_sac_gap_mm < GAP_GOAL_MM),
        "bilsky_grade": lesion.grade,
        "bilsky_reason": lesion.reason,
        "bilsky_facts": lesion.facts.as_dict(),
        "worst_section_lps_mm": v["worst_section_lps_mm"],
        "worst_section_arc_mm": v["worst_section_arc_mm"],
        "worst_section_level": str(level_map.level_at(v["worst_section_arc_mm"])[0]),
        "mass_arc_range_mm": [float(lo), float(hi)],
        "mass_levels": names,
        "reference_arc_mm": v["reference_arc_mm"],
        "reference_sides": v["reference_sides"],
        "notes": notes,
    }
    values.update({k: lesion.uptake[k] for k in _FROM_UPTAKE if k in lesion.uptake})
    return values


def _worst_lesion(lesions: list[dict]) -> dict | None:
    """The lesion that grades the study: the highest Bilsky grade, then the highest MSCC."""
    if not lesions:
        return None
    return max(
        lesions,
        key=lambda m: (bilsky.GRADES.index(m["bilsky_grade"]), m["mscc_percent"], -m["id"]),
    )


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


def _level_values(level_map, rows: list[dict]) -> dict:
    """The per-level table with its narrowing flags and how the levels were named."""
    return {
        "levels": rows,
        "levels_named": bool(level_map.named),
        "level_source": level_map.source,
    }


def _narrowing_notes(rows: list[dict]) -> list[str]:
    """A note for each narrowing away from every lesion (it is not to be missed)."""
    return [
        f"narrowing at {r['level']} away from the mass: {r['flag_reason']}"
        for r in rows
        if r["flagged"] and not r["lesion_ids"]
    ]


def _structure_masks(crop: sitk.Image) -> dict[str, sitk.Image]:
    """Binary masks of the cord, the thecal sac (cord + CSF) and the mass."""
    return {
        "cord": _mask(crop, [LABEL_CORD]),
        "sac": _mask(crop, [LABEL_CORD, LABEL_CSF]),
        "mass": _mask(crop, [LABEL_MASS]),
    }


def _study_values(
    sections: compression.Sections, labels: sitk.Image, section_step_mm: float, has_canal: bool
) -> dict:
    """How the labels were sampled, and whether the canal (thecal sac) was measured."""
    return {
        "canal_measured": has_canal,
        "sections": int(len(sections.arc_mm)),
        "valid_sections": int(sections.valid.sum()),
        "section_step_mm": float(section_step_mm),
        "section_pixel_mm": float(sections.pixel_mm),
        "voxel_spacing_mm": [float(s) for s in labels.GetSpacing()],
        "coordinate_system": "LPS",
    }


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
    """Write ``metrics.json``, ``sections.csv``, ``models/`` and (with lesions)
    ``lesions.nii.gz``, the lesion ids on the labels' grid, into ``out_dir`` (atomically)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    with atomic_dir(out / "models", part_of_output=True) as tmp:
        for key, name in MODEL_FILES.items():
            if key in result.models:
                surfaces.write_model(result.models[key], tmp / name)
    written["models"] = out / "models"
    written["sections"] = write_text(out / "sections.csv", result.sections_csv())
    if result.lesion_map is not None:
        written["lesions"] = write_image(result.lesion_map, out / LESION_MAP_FILE)
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
