"""``mescc analyze``: the whole analysis of one study, headless."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from ..errors import InputError
from ..export import DicomNode, ExportSources, build_exports, check_sources, retrieve_study
from ..outputs import check_output_dir, guard_outputs
from .export_cmd import add_dicom_options, check_dicom_path, send_node, summary, write_and_send
from .level_args import add_level_arguments
from .summary import metrics_lines

HELP = "register, convert PET to SUV, segment from seeds, measure, and write the report and scene"
DESCRIPTION = (
    "The end-to-end analysis: CT registered to the MRI (PET follows), PET converted to SUVbw and "
    "resampled onto the MRI, cord/CSF/mass/bone grown from the seeds, compression metrics on "
    "surface models, and DIR/report.html, metrics.json, sections.csv, models/, "
    "segmentation.seg.nrrd, registration.json and scene.mrb (opens in 3D Slicer). With DICOM "
    "inputs, --dicom-out also writes the segmentation and the measurements as DICOM SEG, SR "
    "and (with a CT) RTSTRUCT, and --send stores them on a DICOM node; --from and --study take "
    "the MRI, CT and PET from a DICOM node (C-GET)."
)


def add_arguments(parser):
    parser.add_argument(
        "--mri", help="reference MRI (T2): NIfTI/NRRD/MHA file or DICOM folder (or use --from)"
    )
    parser.add_argument("--t1", help="T1 MRI of the same session (shown in the scene)")
    parser.add_argument("--ct", help="CT of the PET-CT (drives the registration)")
    parser.add_argument("--pet", help="PET DICOM series (folder) in Bq/ml; converted to SUVbw")
    parser.add_argument(
        "--dwi",
        help="diffusion series (DICOM folder, or a 4D NIfTI with FSL bval/bvec beside it): "
        "ADC of each lesion and of the cord at the worst level",
    )
    parser.add_argument(
        "--adc-channel",
        action="store_true",
        help="segment on the ADC too (registered around the cord's seed strokes)",
    )
    parser.add_argument("--bvals", help="FSL bval file of a NIfTI --dwi (default: beside it)")
    parser.add_argument("--bvecs", help="FSL bvec file of a NIfTI --dwi (default: beside it)")
    parser.add_argument(
        "--pet-same-frame",
        action="store_true",
        help="a PET without --ct lies in the MRI's frame (PET/MR): resample it straight onto the "
        "MRI (without the flag, only when both are DICOM with the same FrameOfReferenceUID)",
    )
    parser.add_argument(
        "--seeds",
        required=True,
        help="seed labelmap on the MRI grid, or a Slicer .mrk.json point list",
    )
    parser.add_argument(
        "--mask-fixed", help="registration region on the MRI (e.g. around the lesion level)"
    )
    parser.add_argument(
        "--deformable",
        action="store_true",
        help="add a B-spline refinement after the rigid registration",
    )
    parser.add_argument(
        "--smoothing", type=float, default=0.0, metavar="MM", help="smooth the segmentation (mm)"
    )
    parser.add_argument("--out", required=True, help="output folder (written as a whole)")
    parser.add_argument(
        "--no-scene", action="store_true", help="skip scene.mrb (no slicer-core needed)"
    )
    add_level_arguments(parser)
    parser.add_argument(
        "--dicom-out",
        metavar="DIR",
        help="also write seg.dcm, sr.dcm, rtstruct.dcm (with a CT) and planning.json (DICOM inputs)",
    )
    parser.add_argument(
        "--from",
        dest="from_node",
        metavar="AET@HOST:PORT",
        help="take the study's MRI, CT and PET from this DICOM node (C-GET; with --study)",
    )
    parser.add_argument("--study", metavar="UID", help="StudyInstanceUID of the study to take")
    add_dicom_options(parser, out_required=False)


def request_from_args(args):
    from ..pipeline import AnalysisRequest

    def path(value):
        return Path(value) if value else None

    return AnalysisRequest(
        mri=Path(args.mri),
        seeds=Path(args.seeds),
        t1=path(args.t1),
        ct=path(args.ct),
        pet=path(args.pet),
        registration_mask=path(args.mask_fixed),
        vertebrae=path(args.vertebrae),
        level_anchor=args.level_anchor,
        deformable=args.deformable,
        smoothing_mm=args.smoothing,
        pet_same_frame=args.pet_same_frame,
        dwi=path(args.dwi),
        dwi_bvals=path(args.bvals),
        dwi_bvecs=path(args.bvecs),
        prv_mm=args.prv_mm,
        adc_channel=args.adc_channel,
    )


def scene_writer_or_none(skip: bool):
    if skip:
        return None
    try:
        from ..mrml.scene import write_analysis_scene
    except ImportError as exc:  # slicer-core missing: say so instead of failing late
        raise InputError(
            f"cannot write scene.mrb: {exc}",
            hint="install slicer-core (pip install slicer-core) or pass --no-scene",
        ) from None
    return write_analysis_scene


def run_and_write(request, out: Path, term, *, no_scene: bool = False, before_writing=None):
    """Analyse and write ``out``; ``before_writing(result)`` runs (and may refuse) in between."""
    from ..pipeline import run_analysis, write_analysis

    if request.smoothing_mm < 0:
        raise InputError(f"--smoothing must be >= 0 mm, got {request.smoothing_mm}")
    guard_outputs([out], request.inputs())
    check_output_dir(out)
    scene_writer = scene_writer_or_none(no_scene)
    result = run_analysis(request, stage=term.stage, progress=term.progress)
    if before_writing is not None:
        before_writing(result)
    term.stage("write")
    write_analysis(result, out, scene_writer=scene_writer)
    term.finish()
    return result


def print_summary(result, out: Path) -> None:
    print("\n".join(metrics_lines(result.metrics.metrics, notes=False)))
    if result.registration is not None:
        r = result.registration
        print(f"  registration: metric {r.metric_value:.4f}, {r.elapsed_s:.1f} s")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"report: {out / 'report.html'}")


def check_study_source(args) -> DicomNode | None:
    """Either ``--mri`` or ``--from`` with ``--study``; the node of ``--from``."""
    if args.from_node is None:
        if args.study:
            raise InputError("--study needs --from (the DICOM node holding the study)")
        if not args.mri:
            raise InputError("give the MRI: --mri, or --from NODE --study UID")
        return None
    if not args.study:
        raise InputError("--from needs --study (the StudyInstanceUID to take)")
    given = [f"--{name}" for name in ("mri", "t1", "ct", "pet") if getattr(args, name)]
    if given:
        raise InputError(
            f"{', '.join(given)} cannot be combined with --from: the study's series are used"
        )
    return DicomNode.parse(args.from_node)


def _modalities(files) -> set[str]:
    found = set()
    for path in files:
        try:
            found.add(str(pydicom.dcmread(path, stop_before_pixels=True).get("Modality", "")))
        except (InvalidDicomError, OSError):
            continue
    return found


def fetch_study(node: DicomNode, args, folder: Path, term) -> None:
    """Retrieve the study into ``folder`` and point ``--mri``/``--ct``/``--pet`` at it."""
    term.stage("retrieve")
    files = retrieve_study(node, args.study, folder, calling_aet=args.aet)
    modalities = _modalities(files)
    if "MR" not in modalities:
        raise InputError(
            f"study {args.study} on {node} has no MR series (found {sorted(modalities)})"
        )
    args.mri = str(folder)
    args.ct = str(folder) if "CT" in modalities else None
    args.pet = str(folder) if "PT" in modalities else None


def dicom_sources(result) -> ExportSources:
    """The analysed series for the DICOM exports (the CT with its registration)."""
    transform = result.registration.transform if result.registration is not None else None
    return check_sources(result.mri, result.ct, transform)


def run(args, term) -> int:
    out = Path(args.out)
    dicom_out = Path(args.dicom_out) if args.dicom_out else None
    node_from = check_study_source(args)
    wants_dicom = dicom_out is not None or args.send
    if wants_dicom:
        check_dicom_path(args.mri, "the MRI")
        check_dicom_path(args.ct, "the CT")
        if dicom_out is not None:
            inputs = [
                p
                for p in (
                    args.mri,
                    args.seeds,
                    args.t1,
                    args.ct,
                    args.pet,
                    args.dwi,
                    args.bvals,
                    args.bvecs,
                )
                if p
            ]
            guard_outputs([dicom_out], inputs + [out])
            guard_outputs([out], [dicom_out])
            check_output_dir(dicom_out)
    node_to = send_node(args)
    workspace = Path(tempfile.mkdtemp(prefix="mescc-study.")) if node_from else None
    try:
        if node_from is not None:
            fetch_study(node_from, args, workspace, term)
        request = request_from_args(args)
        exports = None

        def before_writing(result):
            nonlocal exports
            if wants_dicom:
                term.stage("build DICOM")
                exports = build_exports(
                    dicom_sources(result),
                    result.labels,
                    result.metrics.metrics,
                    lesion_map=result.metrics.lesion_map,
                    prv_mm=args.prv_mm,
                )

        result = run_and_write(
            request, out, term, no_scene=args.no_scene, before_writing=before_writing
        )
        if exports is not None:
            write_and_send(exports, dicom_out, node_to, args, term)
    finally:
        if workspace is not None:
            shutil.rmtree(workspace, ignore_errors=True)
    print_summary(result, out)
    if exports is not None:
        summary(exports, dicom_out, node_to)
    return 0
