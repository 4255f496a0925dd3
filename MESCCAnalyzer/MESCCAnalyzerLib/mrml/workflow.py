"""The panel's five steps as MRML logic: study, registration, segmentation, metrics, report
(and the DICOM exports of the report step).

The Slicer widget calls only this (through its thin Logic); pytest drives the same calls on a
bare ``vtkMRMLScene``. A :class:`Workflow` keeps what an interactive session reuses between
clicks (the seed grower's cached features, the last metrics) and nothing else.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..export import DEFAULT_PRV_MM, build_exports, check_sources, write_exports
from ..io.dicom_series import read_header
from ..io.dwi import is_nifti, load_dwi
from ..io.study import load_volume
from ..pet.suv import pet_to_suv
from ..pipeline import add_adc_metrics, measure, report_inputs, segmentation_channels
from ..report import write_report
from ..segmentation.grow import STRUCTURE_LABELS, SeedGrower
from ..segmentation.seeds import strokes_from_labels
from .diffusion import (
    ADCNodes,
    adc_on_grid,
    compute_adc_node,
    cord_mask_of,
    dwi_series_from_node,
    show_adc_overlay,
)
from .levels import level_point_lps, level_source_from_nodes
from .metrics import add_metrics_nodes, read_results, store_results
from .nodes import (
    add_volume_node,
    ensure_segmentation_converters,
    image_from_volume_node,
    update_volume_node,
)
from .registration import (
    control_points_lps,
    itk_linear_transform_from_node,
    register_volumes,
    registration_report_of,
    roi_mask_on,
    volume_on_grid,
)
from .scene import ensure_views, focus_views
from .segmentation import (
    create_mescc_segmentation_node,
    labels_from_segmentation_node,
    seeds_from_segmentation_node,
    write_labels_to_segmentation_node,
    write_seed_labels,
)
from .study import DICOM_SERIES_ATTRIBUTE, load_phantom_study

PRESETS = ("rigid", "rigid in ROI", "rigid + deformable")
NOTES_ATTRIBUTE = "MESCC.Notes"  # what a conversion noted (e.g. the SUV's), saved with the scene


@dataclass
class DicomExportOutcome:
    """What *Export to DICOM* wrote: the folder, its DICOM files and the planning summary."""

    folder: Path
    files: list[Path]
    planning: dict

    def summary(self) -> str:
        """One line per object and per lesion's gaps, for the panel."""
        lines = [f"DICOM written to {self.folder}: {', '.join(f.name for f in self.files)}."]
        p = self.planning
        if p.get("cord_prv_volume_ml") is not None:
            lines.append(f"Cord PRV ({p['prv_margin_mm']:g} mm): {p['cord_prv_volume_ml']:.2f} ml.")
        for gap in p.get("lesions", []):
            parts = [
                f"gap to the {what} {gap[key]:.1f} mm" + (" (under 3 mm)" if gap.get(flag) else "")
                for what, key, flag in (
                    ("sac", "mass_sac_min_distance_mm", "gap_sac_under_3mm"),
                    ("cord", "mass_cord_min_distance_mm", "gap_cord_under_3mm"),
                )
                if gap.get(key) is not None
            ]
            if parts:
                lines.append(f"Lesion {gap['lesion']}: " + ", ".join(parts) + ".")
        return "\n".join(lines)


@dataclass
class RegistrationOutcome:
    transform_node: object
    result: object  # registration.RegistrationResult
    quality_text: str


class Workflow:
    """The MRML logic behind the panel, on one scene."""

    def __init__(self, scene):
        self.scene = scene
        ensure_segmentation_converters(scene)
        self.last_metrics = None  # metrics.MetricsResult
        self._grower = None
        self._grower_key = None

    # -- 1. study -----------------------------------------------------------------------------
    def load_sample(self, folder, *, grade="2", seed=0, dwi=False, progress=None, cancel=None):
        """The phantom as the study, plus a segmentation holding seed strokes from its truth
        (``dwi``: with its diffusion series, as a DWI node)."""
        nodes = load_phantom_study(
            self.scene, folder, grade=grade, seed=seed, dwi=dwi, progress=progress, cancel=cancel
        )
        truth_labels = sitk.ReadImage(str(Path(folder) / "labels.nii.gz"))
        nodes.segmentation = self.create_segmentation(nodes.mri)
        write_seed_labels(
            nodes.segmentation, strokes_from_labels(truth_labels, rng_seed=seed), nodes.mri
        )
        if nodes.labels is not None:  # the truth stays available but hidden
            nodes.labels.GetDisplayNode().SetVisibility(False)
        return nodes

    def convert_pet_to_suv(self, pet_node, files):
        """Replace a PET volume's Bq/ml voxels by SUVbw computed from its DICOM files."""
        if pet_node is None:
            raise InputError("choose the PET volume first")
        if not files:
            raise InputError(
                f"'{pet_node.GetName()}' was not loaded from DICOM: its SUV tags are unknown",
                hint="load the PET through the DICOM browser, or convert it with 'mescc suv'",
            )
        folder = Path(tempfile.mkdtemp(prefix="mescc_pet."))
        try:
            for n, f in enumerate(files):
                os.symlink(os.path.abspath(f), folder / f"{n:05d}.dcm")
            image, info = pet_to_suv(folder, "bw")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        update_volume_node(pet_node, sitk.Cast(image, sitk.sitkFloat32))
        pet_node.SetAttribute("MESCC.SUV", f"SUVbw factor {info.factor:.6g} g/ml per Bq/ml")
        pet_node.SetAttribute(NOTES_ATTRIBUTE, json.dumps(list(getattr(info, "notes", []) or [])))
        return info

    # -- 2. registration ------------------------------------------------------------------------
    def register(
        self,
        mri_node,
        ct_node,
        pet_node=None,
        *,
        preset="rigid",
        roi_node=None,
        fixed_landmarks=None,
        moving_landmarks=None,
        transform_node=None,
        progress=None,
        cancel=None,
    ) -> RegistrationOutcome:
        if preset not in PRESETS:
            raise InputError(
                f"unknown registration preset {preset!r}",
                hint=f"choose one of {', '.join(PRESETS)}",
            )
        mask_node = None
        if preset == "rigid in ROI":
            if roi_node is None:
                raise InputError(
                    "the 'rigid in ROI' preset needs a region of interest",
                    hint="place an ROI box around the lesion level",
                )
            mask = roi_mask_on(image_from_volume_node(mri_node), roi_node)
            mask_node = add_volume_node(self.scene, mask, "__mescc_roi_mask__", labelmap=True)
        landmarks = None
        if fixed_landmarks is not None or moving_landmarks is not None:
            if fixed_landmarks is None or moving_landmarks is None:
                raise InputError(
                    "landmarks come in pairs: give both the MRI and the CT point lists"
                )
            fixed_pts, moving_pts = (
                control_points_lps(fixed_landmarks),
                control_points_lps(moving_landmarks),
            )
            if len(fixed_pts) != len(moving_pts) or len(fixed_pts) < 3:
                raise InputError(
                    f"landmark lists must pair up, with at least 3 points each (MRI {len(fixed_pts)}, CT {len(moving_pts)})"
                )
            landmarks = (fixed_pts, moving_pts)
        try:
            nodes = register_volumes(
                self.scene,
                mri_node,
                ct_node,
                [pet_node] if pet_node is not None else [],
                fixed_mask_node=mask_node,
                init="landmarks" if landmarks is not None else "auto",
                landmarks=landmarks,
                deformable=preset == "rigid + deformable",
                transform_node=transform_node,
                progress=progress,
                cancel=cancel,
            )
        finally:
            if mask_node is not None:
                self.scene.RemoveNode(mask_node)
        r = nodes.result
        text = (
            f"Mattes MI {r.metric_value:.4f} (from {r.initial_metric_value:.4f}), "
            f"iterations per level {r.iterations_per_level}, {r.elapsed_s:.1f} s, "
            f"mean displacement over the MRI {r.mean_displacement_mm:.1f} mm."
        )
        return RegistrationOutcome(transform_node=nodes.transform_node, result=r, quality_text=text)

    # -- 3. segmentation ------------------------------------------------------------------------
    def create_segmentation(self, mri_node):
        if mri_node is None:
            raise InputError("choose the MRI first")
        return create_mescc_segmentation_node(self.scene, mri_node)

    def _channels(self, mri_node, pet_node):
        """The MRI, and the PET on the MRI grid through its parent transform (if any), with
        their resolutions (:func:`~MESCCAnalyzerLib.pipeline.segmentation_channels`)."""
        mri = image_from_volume_node(mri_node)
        if pet_node is None:
            return segmentation_channels(mri)
        return segmentation_channels(
            mri, pet=(image_from_volume_node(pet_node), volume_on_grid(pet_node, mri))
        )

    def grow_preview(
        self, seed_node, mri_node, pet_node=None, *, preview_node=None, progress=None, cancel=None
    ):
        """Grow the strokes of ``seed_node`` into ``preview_node`` (created if None).

        Channels: the MRI and, when given, the PET on the MRI grid (as ``mescc analyze``).
        The grower's image features are cached per (volumes, their modification times), so a
        re-run after one more stroke only re-solves around the changed strokes.
        """
        key = tuple(None if n is None else (n.GetID(), n.GetMTime()) for n in (mri_node, pet_node))
        if self._grower is None or self._grower_key != key:
            channels, resolution = self._channels(mri_node, pet_node)
            self._grower = SeedGrower(channels, resolution_mm=resolution)
            self._grower_key = key
        seeds = seeds_from_segmentation_node(seed_node, mri_node)
        labels = self._grower.grow(
            seeds, keep_labels=STRUCTURE_LABELS, progress=progress, cancel=cancel
        )
        if preview_node is None:
            preview_node = create_mescc_segmentation_node(
                self.scene, mri_node, name=f"{seed_node.GetName()} preview"
            )
        write_labels_to_segmentation_node(preview_node, labels, mri_node)
        seed_node.GetDisplayNode().SetOpacity(0.4)
        counts = np.bincount(sitk.GetArrayViewFromImage(labels).ravel(), minlength=5)
        voxel_ml = float(np.prod(labels.GetSpacing())) / 1000.0
        text = "Preview: " + ", ".join(
            f"{name} {counts[v] * voxel_ml:.2f} ml"
            for v, name in ((1, "cord"), (2, "CSF"), (3, "mass"), (4, "bone"))
        )
        return preview_node, text

    def accept_preview(self, seed_node, preview_node, mri_node):
        """The grown structures replace the strokes; the preview node goes away."""
        if preview_node is None:
            raise InputError("there is no preview to accept", hint="run 'Grow from seeds' first")
        write_labels_to_segmentation_node(
            seed_node, labels_from_segmentation_node(preview_node, mri_node), mri_node
        )
        seed_node.GetDisplayNode().SetOpacity(1.0)
        self.discard_preview(preview_node)

    def discard_preview(self, preview_node):
        if preview_node is not None and preview_node.GetScene() is not None:
            self.scene.RemoveNode(preview_node)

    # -- diffusion (the study step's *Compute ADC*) -------------------------------------------------
    def compute_adc(
        self,
        mri_node,
        *,
        dwi_node=None,
        dwi_path=None,
        segmentation_node=None,
        adc_node=None,
        progress=None,
        cancel=None,
    ) -> ADCNodes:
        """The ADC map of a DWI on the MRI's grid, as a volume node with its colour bar.

        The DWI: ``dwi_node`` (a ``vtkMRMLDiffusionWeightedVolumeNode``) or ``dwi_path`` (a
        DICOM folder or enhanced file, or a 4D NIfTI with ``STEM.bval``/``STEM.bvec`` beside
        it; one file of a classic DICOM series stands for its series), the node first. With a ``segmentation_node`` whose cord is not empty the DWI is
        registered to the MRI around the cord; otherwise it is placed by its geometry.
        ``adc_node``: the node to update (a new "ADC" node otherwise).
        """
        if mri_node is None:
            raise InputError("choose the MRI first")
        if dwi_node is not None:
            series = dwi_series_from_node(dwi_node)
        elif dwi_path:
            series = _load_dwi_path(Path(dwi_path), cancel)
        else:
            raise InputError(
                "choose the DWI first",
                hint="select a diffusion-weighted volume, or give the DWI series' folder or "
                "4D NIfTI as the DWI file",
            )
        cord = None
        if segmentation_node is not None:
            cord = cord_mask_of(labels_from_segmentation_node(segmentation_node, mri_node))
        made = compute_adc_node(
            self.scene,
            mri_node,
            series,
            cord_mask=cord,
            adc_node=adc_node,
            progress=progress,
            cancel=cancel,
        )
        ensure_views(self.scene)
        show_adc_overlay(self.scene, mri_node, made.adc_node)
        return made

    # -- 4. metrics -------------------------------------------------------------------------------
    def compute_metrics(
        self,
        segmentation_node,
        mri_node,
        pet_node=None,
        *,
        vertebrae_node=None,
        level_anchor_node=None,
        adc_node=None,
        progress=None,
        cancel=None,
    ):
        """Measure the segmentation; the result nodes (and the results, kept in the scene).

        ``vertebrae_node``: a VerSe vertebra labelmap on the MRI's grid, or
        ``level_anchor_node``: a markups point labelled with its vertebra (``T6``); they name
        the levels (numbered from the top without either). ``adc_node``: an ADC map (10⁻⁶
        mm²/s, 0 where none; *Compute ADC* makes one): each lesion gains its ADC statistics
        and the cord its own at the worst section's level, as ``mescc analyze --dwi``.
        """
        levels = level_source_from_nodes(vertebrae_node, level_anchor_node)
        labels = labels_from_segmentation_node(segmentation_node, mri_node)
        pet = volume_on_grid(pet_node, labels) if pet_node is not None else None
        self.last_metrics = measure(
            labels,
            pet,
            mri=volume_on_grid(mri_node, labels),
            levels=levels,
            progress=progress,
            cancel=cancel,
        )
        if adc_node is not None:
            add_adc_metrics(self.last_metrics, adc_on_grid(adc_node, labels), labels)
        nodes = add_metrics_nodes(self.scene, self.last_metrics)
        store_results(self.scene, nodes, notes=self.last_metrics.metrics.get("notes", []))
        return nodes

    def results_metrics(self) -> dict | None:
        """The metrics measured last (kept in the scene: also after reopening it), or None."""
        if self.last_metrics is not None:
            return self.last_metrics.metrics
        stored = read_results(self.scene)
        return stored.metrics if stored is not None else None

    def show_results(self):
        """Slice views and the 3D camera on the worst section of the last metrics."""
        ensure_views(self.scene)
        worst = (self.results_metrics() or {}).get("worst_section_lps_mm")
        if worst is not None:
            focus_views(self.scene, worst)

    def level_point_lps(self, level: int | str) -> np.ndarray:
        """The centreline point (LPS mm) in the middle of a level of the metrics: its row in
        the level table (0 the most cranial) or its name (``T6``)."""
        metrics = self.results_metrics()
        if metrics is None:
            raise InputError("compute the metrics first")
        rows = metrics.get("levels") or []
        names = [str(row["level"]) for row in rows]
        index = names.index(level) if isinstance(level, str) and level in names else level
        if isinstance(index, str) or not 0 <= index < len(rows):
            raise InputError(
                f"there is no level {level!r} in the level table",
                hint=f"the levels measured: {', '.join(names) or 'none'}",
            )
        if self.last_metrics is not None:
            centerline = self.last_metrics.models["centerline"]
        else:
            centerline = read_results(self.scene).models.get("centerline")
            if centerline is None:
                raise InputError(
                    "the cord centreline model is gone from the scene",
                    hint="compute the metrics again",
                )
        return level_point_lps(rows[index]["arc_range_mm"], centerline)

    def jump_to_level(self, level: int | str) -> np.ndarray:
        """Slice views (and the 3D camera) on a level (row or name, see
        :meth:`level_point_lps`); returns the point (LPS mm)."""
        point = self.level_point_lps(level)
        ensure_views(self.scene)
        focus_views(self.scene, point)
        return point

    # -- 5. report and DICOM -----------------------------------------------------------------------
    def save_report(self, path, mri_node, segmentation_node, pet_node=None, *, adc_node=None):
        """The report of the measured results kept in the scene (also after reopening it);
        with ``adc_node`` it shows the ADC map."""
        stored = read_results(self.scene)
        if stored is None:
            raise InputError("compute the metrics first")
        labels = labels_from_segmentation_node(segmentation_node, mri_node)
        pet_notes = json.loads(pet_node.GetAttribute(NOTES_ATTRIBUTE) or "[]") if pet_node else []
        inputs = report_inputs(
            stored.metrics,
            stored.sections,
            stored.models,
            image_from_volume_node(mri_node),
            labels,
            pet_on_mri=volume_on_grid(pet_node, labels) if pet_node is not None else None,
            identifiers={"MRI": mri_node.GetName(), "Segmentation": segmentation_node.GetName()},
            registration=registration_report_of(pet_node),
            adc_on_mri=adc_on_grid(adc_node, labels) if adc_node is not None else None,
            notes=[*pet_notes, *stored.notes],
        )
        return write_report(inputs, path)

    def export_dicom(
        self,
        out_dir,
        mri_node,
        segmentation_node,
        *,
        ct_node=None,
        mri_files=None,
        ct_files=None,
        prv_mm: float = DEFAULT_PRV_MM,
    ) -> DicomExportOutcome:
        """DICOM SEG and SR on the MRI's series (and RTSTRUCT on the CT's, when a CT is given)
        of the segmentation and the last metrics, written into the new folder ``out_dir``.

        The series are the DICOM files the volumes were loaded from: ``mri_files`` /
        ``ct_files`` (Slicer's DICOM database knows them), else the folder the study loader
        noted on the node. The CT's structures are carried through its parent (registration)
        transform, as :func:`MESCCAnalyzerLib.export.check_sources` expects.
        """
        stored = read_results(self.scene)  # as metrics.json holds them (NaN: None)
        if stored is None:
            raise InputError("compute the metrics first", hint="step 4: Compute metrics")
        mri_to_ct = None
        if ct_node is not None:
            parent = ct_node.GetParentTransformNode()
            if parent is not None:
                if not parent.IsTransformToWorldLinear():
                    raise InputError(
                        f"'{ct_node.GetName()}' is under a non-linear transform; the RTSTRUCT "
                        "needs the rigid registration",
                        hint="register with the 'rigid' preset, or export without the CT",
                    )
                mri_to_ct = itk_linear_transform_from_node(parent)
        with ExitStack() as folders:  # the series' files are read by check_sources
            mri = load_volume(
                folders.enter_context(_dicom_folder(mri_node, mri_files, "the MRI")),
                modality="MR",
            )
            ct = None
            if ct_node is not None:
                ct = load_volume(
                    folders.enter_context(_dicom_folder(ct_node, ct_files, "the CT")),
                    modality="CT",
                )
            sources = check_sources(mri, ct, mri_to_ct)
        labels = labels_from_segmentation_node(segmentation_node, mri_node)
        exports = build_exports(sources, labels, stored.metrics, prv_mm=prv_mm)
        folder = write_exports(exports, out_dir)
        files = [folder / name for name in exports.files()]
        return DicomExportOutcome(folder=folder, files=files, planning=exports.planning)


def _load_dwi_path(path: Path, cancel=None):
    """A DWI from the panel's file box: a NIfTI or an enhanced DICOM file as it is, one file
    of a classic DICOM series (a file dialog picks files) as its series in its folder."""
    if path.is_file() and not is_nifti(path):
        ds = read_header(path)
        if ds is not None and int(getattr(ds, "NumberOfFrames", 1) or 1) <= 1:
            return load_dwi(
                path.parent, series_uid=getattr(ds, "SeriesInstanceUID", None), cancel=cancel
            )
    return load_dwi(path, cancel=cancel)


@contextmanager
def _dicom_folder(node, files, role: str) -> Iterator[Path]:
    """A folder holding a volume node's DICOM series: links to ``files`` in a temporary
    folder (removed after), or the folder the study loader noted on the node."""
    if files:
        tmp = Path(tempfile.mkdtemp(prefix="mescc_dicom."))
        try:
            for n, f in enumerate(files):
                os.symlink(os.path.abspath(f), tmp / f"{n:05d}.dcm")
            yield tmp
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    noted = node.GetAttribute(DICOM_SERIES_ATTRIBUTE)
    if not noted or not Path(noted).is_dir():
        raise InputError(
            f"{role} '{node.GetName()}' was not loaded from DICOM: the DICOM exports "
            "reference the original series by their UIDs",
            hint=f"load {role} through the DICOM browser and measure on it"
            + (" (or leave the CT out: SEG and SR need only the MRI)" if role == "the CT" else ""),
        )
    yield Path(noted)
