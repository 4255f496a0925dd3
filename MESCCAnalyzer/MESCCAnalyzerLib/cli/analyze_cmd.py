"""``mescc analyze``: the whole analysis of one study, headless."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..outputs import check_output_dir, guard_outputs

HELP = "register, convert PET to SUV, segment from seeds, measure, and write the report and scene"
DESCRIPTION = (
    "The end-to-end analysis: CT registered to the MRI (PET follows), PET converted to SUVbw and "
    "resampled onto the MRI, cord/CSF/mass/bone grown from the seeds, compression metrics on "
    "surface models, and DIR/report.html, metrics.json, sections.csv, models/, "
    "segmentation.seg.nrrd, registration.json and scene.mrb (opens in 3D Slicer)."
)


def add_arguments(parser):
    parser.add_argument(
        "--mri", required=True, help="reference MRI (T2): NIfTI/NRRD/MHA file or DICOM folder"
    )
    parser.add_argument("--t1", help="T1 MRI of the same session (shown in the scene)")
    parser.add_argument("--ct", help="CT of the PET-CT (drives the registration)")
    parser.add_argument("--pet", help="PET DICOM series (folder) in Bq/ml; converted to SUVbw")
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
        deformable=args.deformable,
        smoothing_mm=args.smoothing,
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


def run_and_write(request, out: Path, term, *, no_scene: bool = False):
    from ..pipeline import run_analysis, write_analysis

    if request.smoothing_mm < 0:
        raise InputError(f"--smoothing must be >= 0 mm, got {request.smoothing_mm}")
    guard_outputs([out], request.inputs())
    check_output_dir(out)
    scene_writer = scene_writer_or_none(no_scene)
    result = run_analysis(request, stage=term.stage, progress=term.progress)
    term.stage("write")
    write_analysis(result, out, scene_writer=scene_writer)
    term.finish()
    return result


def print_summary(result, out: Path) -> None:
    m = result.metrics.metrics
    print(f"Bilsky grade {m['bilsky_grade']}: {m['bilsky_reason']}")
    print(
        f"  MSCC {m['mscc_percent']:.1f} %, cord CSA {m['cord_min_csa_mm2']:.1f} mm2 "
        f"(ratio {m['cord_csa_ratio']:.2f}), mass {m['mass_volume_ml']:.2f} ml"
        + (f", SUVmax {m['suv_max']:.2f}" if "suv_max" in m else "")
    )
    if result.registration is not None:
        r = result.registration
        print(f"  registration: metric {r.metric_value:.4f}, {r.elapsed_s:.1f} s")
    for note in result.notes:
        print(f"  note: {note}")
    print(f"report: {out / 'report.html'}")


def run(args, term) -> int:
    out = Path(args.out)
    result = run_and_write(request_from_args(args), out, term, no_scene=args.no_scene)
    print_summary(result, out)
    return 0
