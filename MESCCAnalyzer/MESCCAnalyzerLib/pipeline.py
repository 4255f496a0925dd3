"""The analysis of one study as stages: load -> SUV -> register -> segment -> measure -> report.

Each stage is a small function with plain data in and out (SimpleITK images, dataclasses).
Every front end calls the same stages: :func:`run_analysis` chains them for ``mescc analyze``
and ``mescc demo``; ``mescc register`` calls :func:`register_images`; the MRML logic (the
Slicer panel and the web page) turns scene nodes into the stages' inputs and their outputs
back into nodes, and builds its report with the same :func:`report_inputs`.

:func:`run_analysis` computes everything in memory (no file is written); :func:`write_analysis`
writes the results into a folder as a whole (atomically).
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import LABEL_CORD
from .diffusion import (
    ADC_UNIT,
    ADCResult,
    adc_statistics,
    fit_adc,
    mean_b0,
    nan_to_zero,
    register_dwi_to_mri,
    resample_adc_onto,
)
from .errors import InputError
from .geometry import bounds_lps
from .io.dwi import DWISeries, load_dwi
from .io.segfile import write_seg_nrrd
from .io.study import Volume, load_image, load_volume
from .measure import metrics as metrics_mod
from .measure.centerline import voxel_points_lps
from .measure.levels import check_grid, parse_anchor
from .measure.margins import DEFAULT_PRV_MM
from .measure.metrics import LevelSource, MetricsResult, write_metrics
from .outputs import atomic_dir, save_image, write_json
from .pet.suv import SUVInfo, pet_to_suv
from .progress import CancelCallback, ProgressCallback, check
from .registration import RegistrationResult, register, resample_onto
from .report import ReportInputs, write_report
from .segmentation.grow import SeedGrower, check_inputs, load_seeds

PET_MR_NOTE = (
    "PET/MR: the PET shares the MRI's frame of reference (the same FrameOfReferenceUID); it "
    "was resampled straight onto the MRI, not registered."
)
PET_SAME_FRAME_NOTE = (
    "The PET was taken to share the MRI's frame (--pet-same-frame, as on a PET/MR); it was "
    "resampled straight onto the MRI, not registered."
)


@dataclass
class AnalysisRequest:
    """What to analyse: the reference MRI, seeds on its grid, and the optional other images."""

    mri: Path
    seeds: Path
    t1: Path | None = None
    ct: Path | None = None
    pet: Path | None = None  # PET DICOM series (folder or file), converted to SUVbw
    registration_mask: Path | None = None
    vertebrae: Path | None = None  # VerSe vertebra labelmap on the MRI grid (names the levels)
    level_anchor: str | None = None  # "T6@X,Y,Z" (LPS mm): one named vertebral body
    deformable: bool = False
    smoothing_mm: float = 0.0
    pet_same_frame: bool = False  # a PET without a CT lies in the MRI's frame (PET/MR)
    dwi: Path | None = None  # diffusion series: DICOM folder/file, or a 4D NIfTI
    dwi_bvals: Path | None = None  # FSL bval file of a NIfTI DWI (default: beside it)
    dwi_bvecs: Path | None = None
    prv_mm: float = DEFAULT_PRV_MM  # the cord PRV's margin (metrics and exports)
    adc_channel: bool = False  # the ADC (from dwi) is also a segmentation channel

    def inputs(self) -> list[Path]:
        return [
            p
            for p in (
                self.mri,
                self.seeds,
                self.t1,
                self.ct,
                self.pet,
                self.registration_mask,
                self.vertebrae,
                self.dwi,
                self.dwi_bvals,
                self.dwi_bvecs,
            )
            if p
        ]


# ---------------------------------------------------------------------------------------
# Stage 1: load (and the PET in SUV)
# ---------------------------------------------------------------------------------------
@dataclass
class LoadedStudy:
    """The inputs read and checked: the MRI is the reference grid of everything after."""

    mri: Volume
    seeds: sitk.Image
    t1_on_mri: sitk.Image | None = None
    ct: Volume | None = None
    pet: Volume | None = None  # the PET series as loaded (identifiers)
    pet_suv: sitk.Image | None = None  # SUVbw on the PET's own grid
    suv_info: SUVInfo | None = None
    registration_mask: sitk.Image | None = None
    levels: LevelSource | None = None
    dwi: DWISeries | None = None
    notes: list[str] = field(default_factory=list)


def _modality_of(path: Path, modality: str) -> str | None:
    return modality if Path(path).is_dir() else None


def load_study(request: AnalysisRequest) -> LoadedStudy:
    """Read every input of ``request`` (the PET converted to SUVbw); nothing is computed yet."""
    anchor = parse_anchor(request.level_anchor) if request.level_anchor else None
    mri = load_volume(request.mri, modality=_modality_of(request.mri, "MR"))
    study = LoadedStudy(mri=mri, seeds=load_seeds(request.seeds, mri.image))
    if request.vertebrae:
        vertebrae = load_image(request.vertebrae)
        check_grid(vertebrae, mri.image, request.vertebrae)
        study.levels = LevelSource(vertebrae=vertebrae, vertebrae_path=request.vertebrae)
    elif anchor is not None:
        study.levels = LevelSource(anchor=anchor)
    if request.t1:
        t1 = load_image(request.t1, modality=_modality_of(request.t1, "MR"))
        # Same session as the T2: the scanner frame is shared, only the grid differs.
        study.t1_on_mri = resample_onto(t1, mri.image, sitk.Transform())
    if request.ct:
        study.ct = load_volume(request.ct, modality=_modality_of(request.ct, "CT"))
    if request.registration_mask:
        study.registration_mask = load_image(request.registration_mask)
    if request.pet:
        study.pet_suv, study.suv_info = pet_to_suv(request.pet, "bw")
        study.pet = load_volume(request.pet, modality=_modality_of(request.pet, "PT"))
        study.notes += list(getattr(study.suv_info, "notes", []) or [])
        if study.ct is None:
            study.notes.append(_pet_frame_note(study.pet, mri, request.pet_same_frame))
    if request.adc_channel and not request.dwi:
        raise InputError("--adc-channel needs a diffusion series", hint="give it with --dwi")
    if request.dwi:
        study.dwi = load_dwi(request.dwi, bvals=request.dwi_bvals, bvecs=request.dwi_bvecs)
    return study


def frame_of_reference(volume: Volume) -> str:
    """The FrameOfReferenceUID of a DICOM volume ("" for other formats or when absent)."""
    headers = getattr(volume, "headers", None) or []
    return str(getattr(headers[0], "FrameOfReferenceUID", "") or "") if headers else ""


def _pet_frame_note(pet: Volume, mri: Volume, same_frame: bool) -> str:
    """The note for a PET used without a CT: it must share the MRI's frame (PET/MR), by its
    FrameOfReferenceUID or by the user's word (``same_frame``); otherwise an
    :class:`InputError` (a PET of a PET-CT needs its CT to be registered)."""
    pet_frame, mri_frame = frame_of_reference(pet), frame_of_reference(mri)
    if pet_frame and pet_frame == mri_frame:
        return PET_MR_NOTE
    if same_frame:
        return PET_SAME_FRAME_NOTE
    why = (
        "its FrameOfReferenceUID differs from the MRI's"
        if pet_frame and mri_frame
        else "nothing says it shares the MRI's frame of reference"
        + ("" if mri_frame else " (the MRI is not DICOM)")
    )
    raise InputError(
        f"the PET was given without a CT and {why}: its uptake would land in the wrong place",
        path=pet.source,
        hint="give the CT of the PET-CT (--ct), or --pet-same-frame when the PET was acquired "
        "in the MRI's frame (PET/MR)",
    )


# ---------------------------------------------------------------------------------------
# Stage 2: register (the CT to the MRI; what shares the CT's frame follows)
# ---------------------------------------------------------------------------------------
@dataclass
class Follower:
    """An image in the moving image's frame (the PET of the PET-CT), carried with it."""

    image: sitk.Image
    name: str  # file or node name, for messages
    labelmap: bool = False


@dataclass
class Registered:
    """The registration and everything it carried onto the MRI grid."""

    result: RegistrationResult
    moving_on_fixed: sitk.Image | None = None  # None when not resampled
    followers_on_fixed: list[sitk.Image] = field(default_factory=list)


def check_shares_frame(follower: sitk.Image, moving: sitk.Image, name) -> None:
    """A follower must lie in the moving image's physical frame (their boxes overlap)."""
    lo_f, hi_f = bounds_lps(follower)
    lo_m, hi_m = bounds_lps(moving)
    if (hi_f < lo_m).any() or (lo_f > hi_m).any():
        raise InputError(
            "does not overlap the moving image's field of view, so it does not share its scanner frame",
            path=name,
            hint="a followed image must come from the same scanner session (the PET of the PET-CT)",
        )


def register_images(
    fixed: sitk.Image,
    moving: sitk.Image,
    followers: Sequence[Follower] = (),
    *,
    fixed_mask: sitk.Image | None = None,
    init: str = "auto",
    landmarks=None,
    deformable: bool = False,
    resample: bool = True,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> Registered:
    """Register ``moving`` (CT) to ``fixed`` (MRI) and resample it and its followers onto it.

    Followers must share the moving image's frame (checked first). With ``resample`` false
    only the transform is computed (the scene applies it through a transform node).
    """
    for follower in followers:
        check_shares_frame(follower.image, moving, follower.name)
    result = register(
        fixed,
        moving,
        fixed_mask=fixed_mask,
        init=init,
        landmarks=landmarks,
        deformable=deformable,
        progress=progress,
        cancel=cancel,
    )
    if not resample:
        return Registered(result=result)
    return Registered(
        result=result,
        moving_on_fixed=resample_onto(moving, fixed, result.transform),
        followers_on_fixed=[
            resample_onto(f.image, fixed, result.transform, labelmap=f.labelmap, default_value=0.0)
            for f in followers
        ],
    )


# ---------------------------------------------------------------------------------------
# Stage 3: segment; stage 4: measure
# ---------------------------------------------------------------------------------------
def segmentation_channels(
    mri: sitk.Image,
    pet: tuple[sitk.Image, sitk.Image] | None = None,
    adc: tuple[sitk.Image, sitk.Image] | None = None,
) -> tuple[list[sitk.Image], list[float]]:
    """The images the seeds grow on and the resolution (mm) of each: the T2 (0, the grid's
    own) and, when there are, the PET and the ADC, each given as (the scan, the scan on the
    T2 grid). The channel is the scan on the grid (the ADC's voxels without a value read 0);
    its resolution the scan's largest voxel side: the grower compares a coarse channel by its
    values within half a voxel (:func:`~.segmentation.paths.value_ranges`)."""
    channels, resolution = [mri], [0.0]
    if pet is not None:
        channels.append(sitk.Cast(pet[1], sitk.sitkFloat32))
        resolution.append(float(max(pet[0].GetSpacing())))
    if adc is not None:
        channels.append(sitk.Cast(nan_to_zero(adc[1]), sitk.sitkFloat32))
        resolution.append(float(max(adc[0].GetSpacing())))
    return channels, resolution


def segment(
    channels: Sequence[sitk.Image],
    seeds: sitk.Image,
    *,
    smoothing_mm: float = 0.0,
    seeds_name=None,
    resolution_mm: Sequence[float] | None = None,
    grower: SeedGrower | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> sitk.Image:
    """Labels 1-4 grown from ``seeds`` over ``channels`` (a cached ``grower`` re-solves less;
    ``resolution_mm``: see :func:`segmentation_channels`)."""
    check_inputs(list(channels), seeds, seeds_name=seeds_name)
    grower = grower or SeedGrower(list(channels), resolution_mm=resolution_mm)
    return grower.grow(seeds, smoothing_mm=smoothing_mm, progress=progress, cancel=cancel)


def measure(
    labels: sitk.Image,
    pet_on_mri: sitk.Image | None = None,
    *,
    mri: sitk.Image | None = None,
    levels: LevelSource | None = None,
    prv_mm: float = DEFAULT_PRV_MM,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> MetricsResult:
    """Compression metrics, Bilsky grade, PET uptake, surface models and vertebral levels of
    ``labels`` (``levels`` names them; unnamed numbering without it; ``prv_mm`` is the cord
    PRV's margin). ``mri``: the MRI the labels were drawn on (their grid): the cord's outline
    from its partial volume, to a fraction of a voxel."""
    return metrics_mod.compute_metrics(
        labels,
        pet_on_mri,
        mri=mri,
        levels=levels,
        prv_mm=prv_mm,
        progress=progress,
        cancel=cancel,
    )


# ---------------------------------------------------------------------------------------
# The whole analysis
# ---------------------------------------------------------------------------------------
@dataclass
class AnalysisResult:
    mri: Volume
    labels: sitk.Image
    metrics: MetricsResult
    t1_on_mri: sitk.Image | None = None
    ct: Volume | None = None
    ct_on_mri: sitk.Image | None = None
    pet_suv: sitk.Image | None = None  # native PET grid
    pet_on_mri: sitk.Image | None = None
    pet: Volume | None = None  # the PET series (identifiers)
    suv_info: SUVInfo | None = None
    registration: RegistrationResult | None = None
    seeds: sitk.Image | None = None
    diffusion: DiffusionResult | None = None
    timings_s: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def identifiers(self) -> dict:
        """Patient and study identifiers from the first input that has them (DICOM inputs do)."""
        return study_identifiers(self.mri, self.ct, self.pet, self.suv_info)


def study_identifiers(mri: Volume, ct: Volume | None, pet: Volume | None, suv_info) -> dict:
    """The report's identification block, from the loaded volumes."""
    volumes = [v for v in (mri, ct, pet) if v is not None]

    def first(attribute):
        return next((getattr(v, attribute) for v in volumes if getattr(v, attribute, None)), None)

    def series(volume):
        return None if volume is None else (volume.series_description or Path(volume.source).name)

    return {
        "Patient ID": first("patient_id"),
        "Patient name": first("patient_name"),
        "Study date": first("study_date"),
        "Study": first("study_description"),
        "MRI": series(mri),
        "CT": series(ct),
        "PET": None
        if suv_info is None
        else f"SUV{suv_info.norm}, factor {suv_info.factor:.4g} g/ml per Bq/ml",
    }


class _StageClock:
    """Calls ``stage(name)`` as each stage starts and records the time each took."""

    def __init__(self, stage, cancel):
        self.stage, self.cancel = stage, cancel
        self.timings: dict[str, float] = {}
        self._name, self._t0 = None, 0.0

    def __call__(self, name: str | None) -> None:
        now = time.perf_counter()
        if self._name:
            self.timings[self._name] = now - self._t0
        self._name, self._t0 = name, now
        if self.stage and name:
            self.stage(name)
        check(self.cancel)


def run_analysis(
    request: AnalysisRequest,
    *,
    stage=None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> AnalysisResult:
    """Run every stage; ``stage(name)`` is called as each starts (the CLI prints its time)."""
    begin = _StageClock(stage, cancel)
    begin("load")
    study = load_study(request)
    notes = list(study.notes)
    reference = study.mri.image

    registered = None
    pet_on_mri = None
    if study.ct is not None:
        begin("registration")
        followers = [Follower(study.pet_suv, str(request.pet))] if study.pet_suv is not None else []
        registered = register_images(
            reference,
            study.ct.image,
            followers,
            fixed_mask=study.registration_mask,
            deformable=request.deformable,
            progress=progress,
            cancel=cancel,
        )
        pet_on_mri = registered.followers_on_fixed[0] if followers else None
    elif study.pet_suv is not None:
        # PET/MR: the same frame (checked on loading), only the grid differs
        pet_on_mri = resample_onto(study.pet_suv, reference, sitk.Transform(), default_value=0.0)

    diffusion = None
    if study.dwi is not None and request.adc_channel:
        # the ADC as a channel: registered around the cord's seed strokes (no cord yet)
        begin("diffusion")
        diffusion = adc_onto_mri(study.dwi, reference, study.seeds == LABEL_CORD, cancel=cancel)
        notes.append(diffusion.note + "; a segmentation channel")

    begin("segmentation")
    channels, resolution = segmentation_channels(
        reference,
        pet=(study.pet_suv, pet_on_mri) if pet_on_mri is not None else None,
        adc=(diffusion.fit.adc, diffusion.adc_on_mri) if diffusion is not None else None,
    )
    labels = segment(
        channels,
        study.seeds,
        smoothing_mm=request.smoothing_mm,
        seeds_name=request.seeds,
        resolution_mm=resolution,
        cancel=cancel,
    )
    begin("metrics")
    result = measure(
        labels,
        pet_on_mri,
        mri=reference,
        levels=study.levels,
        prv_mm=request.prv_mm,
        cancel=cancel,
    )
    if diffusion is not None:
        add_adc_metrics(result, diffusion.adc_on_mri, labels)
    elif study.dwi is not None:
        begin("diffusion")
        diffusion = diffusion_stage(study.dwi, reference, labels, result, cancel=cancel)
        notes.append(diffusion.note)
    notes += list(result.metrics.get("notes", []) or [])
    begin(None)
    return AnalysisResult(
        mri=study.mri,
        labels=labels,
        metrics=result,
        t1_on_mri=study.t1_on_mri,
        ct=study.ct,
        ct_on_mri=registered.moving_on_fixed if registered else None,
        pet_suv=study.pet_suv,
        pet_on_mri=pet_on_mri,
        pet=study.pet,
        suv_info=study.suv_info,
        registration=registered.result if registered else None,
        seeds=study.seeds,
        diffusion=diffusion,
        timings_s=begin.timings,
        notes=notes,
    )


# ---------------------------------------------------------------------------------------
# Diffusion: the ADC map on the MRI and its values in each lesion and the cord
# ---------------------------------------------------------------------------------------
ADC_KEYS = ("adc_mean", "adc_median", "adc_p10", "adc_min")


@dataclass
class DiffusionResult:
    """The ADC fit (DWI grid), the DWI -> MRI registration and the ADC on the MRI grid."""

    fit: ADCResult
    registration: RegistrationResult
    adc_on_mri: sitk.Image  # 1e-6 mm2/s, NaN where not fitted or outside the DWI
    note: str = ""


def adc_onto_mri(
    dwi: DWISeries,
    mri: sitk.Image,
    cord: sitk.Image,
    *,
    cancel: CancelCallback | None = None,
) -> DiffusionResult:
    """Fit the ADC, register the mean b = 0 image rigidly to the MRI within a region around
    ``cord`` (a cord mask on the MRI grid: the segmented cord, or its seed strokes; EPI is
    distorted far from it) and resample the ADC onto the MRI."""
    fit = fit_adc(dwi, cancel=cancel)
    region = sitk.Cast(cord != 0, sitk.sitkUInt8)
    registered = register_dwi_to_mri(mean_b0(dwi), mri, region, cancel=cancel)
    adc_on_mri = resample_adc_onto(fit.adc, mri, registered.transform)
    note = (
        f"DWI: ADC from b = {', '.join(f'{b:g}' for b in fit.b_values_s_mm2)} s/mm2, registered "
        f"rigidly to the MRI around the cord (metric {registered.metric_value:.3f})"
    )
    return DiffusionResult(fit, registered, adc_on_mri, note)


def diffusion_stage(
    dwi: DWISeries,
    mri: sitk.Image,
    labels: sitk.Image,
    measured: MetricsResult,
    *,
    cancel: CancelCallback | None = None,
) -> DiffusionResult:
    """:func:`adc_onto_mri` around the segmented cord, then :func:`add_adc_metrics`: each
    lesion's ADC (its voxels, 1 mm inset), the top level's (the worst lesion's) and the cord's
    at the worst section's level (the whole cord without a lesion), with ``adc_unit``."""
    result = adc_onto_mri(dwi, mri, labels == LABEL_CORD, cancel=cancel)
    add_adc_metrics(measured, result.adc_on_mri, labels)
    return result


def add_adc_metrics(measured: MetricsResult, adc_on_mri: sitk.Image, labels: sitk.Image) -> None:
    """Add the ADC statistics of ``adc_on_mri`` (1e-6 mm2/s on the grid of ``labels``, NaN
    where there is no value) to ``measured.metrics`` in place: each lesion's ``adc_mean``,
    ``adc_median``, ``adc_p10``, ``adc_min`` and ``adc_voxels`` (over its voxels of the lesion
    map, 1 mm inset), the worst lesion's at the top level, the cord's at the worst section's
    level (``cord_adc_*``, ``cord_adc_level``; the whole cord without one) and ``adc_unit``.
    Every front end calls it: ``mescc analyze --dwi`` and the Slicer panel's metrics step."""
    m = measured.metrics
    ids = (
        sitk.GetArrayViewFromImage(measured.lesion_map) if measured.lesion_map is not None else None
    )
    for lesion in m.get("lesions") or []:
        lesion.update(_adc_values(adc_on_mri, ids == lesion["id"]))
    worst = next((x for x in m.get("lesions") or [] if x["id"] == m.get("worst_lesion_id")), None)
    m.update({k: worst.get(k) if worst else None for k in (*ADC_KEYS, "adc_voxels")})
    cord = sitk.GetArrayViewFromImage(labels) == LABEL_CORD
    level = m.get("worst_section_level") or ""
    row = next((r for r in m.get("levels") or [] if r["level"] == level), None)
    if row is not None:
        arc = measured.centerline.arc_of_points(voxel_points_lps(labels, cord))
        lo, hi = row["arc_range_mm"]
        at_level = np.zeros(cord.shape, dtype=bool)
        at_level[cord] = (arc >= lo) & (arc < hi)
        cord = at_level
    cord_values = _adc_values(adc_on_mri, cord)
    m.update({f"cord_{k}": cord_values[k] for k in ADC_KEYS})
    m["cord_adc_level"] = level if row is not None else "whole cord"
    m["adc_unit"] = ADC_UNIT


def _adc_values(adc_on_mri: sitk.Image, mask: np.ndarray) -> dict:
    stats = adc_statistics(adc_on_mri, mask)
    return {k: stats[k] for k in (*ADC_KEYS, "adc_voxels")}


def report_inputs(
    metrics: dict,
    sections: dict,
    models: dict,
    mri: sitk.Image,
    labels: sitk.Image,
    *,
    pet_on_mri: sitk.Image | None = None,
    identifiers: dict | None = None,
    registration: RegistrationResult | dict | None = None,
    adc_on_mri: sitk.Image | None = None,
    notes: Sequence[str] = (),
) -> ReportInputs:
    """The one report builder of every front end (command line, Slicer panel, web page).

    ``metrics``, ``sections`` (columns) and ``models`` as :class:`MetricsResult` holds them;
    ``registration`` a result or its :meth:`~RegistrationResult.report`.
    """
    reg = registration.report() if isinstance(registration, RegistrationResult) else registration
    if reg is not None:
        reg = {k: v for k, v in reg.items() if not isinstance(v, dict)}
    return ReportInputs(
        metrics=metrics,
        sections=sections,
        mri=mri,
        labels=labels,
        pet_on_mri=pet_on_mri,
        models=models,
        identifiers=identifiers or {},
        registration=reg,
        adc_on_mri=adc_on_mri,
        notes=list(dict.fromkeys(notes)),  # each once, in order
    )


def analysis_report_inputs(result: AnalysisResult) -> ReportInputs:
    """The report's view of a whole analysis."""
    return report_inputs(
        result.metrics.metrics,
        result.metrics.sections.columns(),
        result.metrics.models,
        result.mri.image,
        result.labels,
        pet_on_mri=result.pet_on_mri,
        identifiers=result.identifiers(),
        registration=result.registration,
        adc_on_mri=result.diffusion.adc_on_mri if result.diffusion is not None else None,
        notes=result.notes,
    )


def write_analysis(
    result: AnalysisResult, out_dir: str | os.PathLike, *, scene_writer=None
) -> Path:
    """Write the analysis into ``out_dir`` as a whole (it appears complete or not at all).

    ``out_dir``/: ``report.html``, ``metrics.json``, ``sections.csv``, ``models/``,
    ``segmentation.seg.nrrd``, ``registration.json`` and ``ct_to_mri.tfm`` (with a CT),
    ``adc.nii.gz`` (the ADC on the MRI grid, 1e-6 mm2/s, 0 where not fitted) and
    ``dwi_registration.json`` (with a DWI), and
    ``scene.mrb`` when ``scene_writer(result, path)`` is given (the MRML logic's).
    """
    out = Path(out_dir)
    with atomic_dir(out) as tmp:
        write_metrics(result.metrics, tmp)
        write_seg_nrrd(result.labels, tmp / "segmentation.seg.nrrd")
        if result.registration is not None:
            write_json(tmp / "registration.json", result.registration.report())
            sitk.WriteTransform(result.registration.transform, str(tmp / "ct_to_mri.tfm"))
        if result.suv_info is not None:
            write_json(tmp / "suv.json", result.suv_info.as_dict())
        if result.diffusion is not None:
            save_image(nan_to_zero(result.diffusion.adc_on_mri), tmp / "adc.nii.gz")
            write_json(tmp / "dwi_registration.json", result.diffusion.registration.report())
        write_report(analysis_report_inputs(result), tmp / "report.html")
        if scene_writer is not None:
            scene_writer(result, tmp / "scene.mrb")
    return out
