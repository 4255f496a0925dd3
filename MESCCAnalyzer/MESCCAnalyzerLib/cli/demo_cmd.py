"""``mescc demo``: a phantom study end to end, seed strokes placed from its truth.

By default the whole thoracic spine (T1-L1) with two lesions at distinct levels and grades,
its levels named from the vertebra labelmap; ``--grade`` runs the single-level phantom
instead.
"""

from __future__ import annotations

import json

import numpy as np
import SimpleITK as sitk

from .. import LABEL_MASS
from ..errors import InputError
from ..outputs import claim_dir, write_image
from ..phantom import GRADES, write_phantom
from ..phantom.spine import parse_lesions, write_spine_phantom

HELP = "a synthetic study end to end: phantom, seeds from its truth, analysis, report"
DEMO_LEVELS = ("T1", "L1")
DEMO_LESIONS = "T5:2,T9:3"


def add_arguments(parser):
    parser.add_argument(
        "--out", required=True, help="output folder: study/, seeds.nii.gz, analysis/"
    )
    parser.add_argument(
        "--lesions",
        default=DEMO_LESIONS,
        help=f"the whole-spine study's lesions, LEVEL:GRADE,... (default {DEMO_LESIONS})",
    )
    parser.add_argument(
        "--grade",
        choices=GRADES,
        help="run the single-level phantom (one mass of this Bilsky grade) instead",
    )
    parser.add_argument(
        "--dwi",
        action="store_true",
        help="with --grade: the phantom's diffusion series too, analysed (ADC of the mass and cord)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="phantom and seed-placement random seed"
    )
    parser.add_argument(
        "--no-scene", action="store_true", help="skip scene.mrb (no slicer-core needed)"
    )


STROKE_SPACING_MM = 30.0  # a user strokes the cord and the CSF about once per vertebra


def demo_strokes(labels: sitk.Image, seed: int) -> sitk.Image:
    """A user's strokes drawn from the truth: on each structure, on slices about one vertebra
    apart along a long study (3 slices at least), and on every lesion (a user strokes each
    mass they see; strokes drawn over the whole mass label could all fall on one of them)."""
    from ..segmentation.seeds import axial_axis_kji, strokes_from_labels

    axis = axial_axis_kji(labels)
    length_mm = labels.GetSize()[2 - axis] * labels.GetSpacing()[2 - axis]
    slices = max(3, int(round(length_mm / STROKE_SPACING_MM)))
    seeds = sitk.GetArrayFromImage(strokes_from_labels(labels, rng_seed=seed, slices=slices))
    arr = sitk.GetArrayFromImage(labels)
    regions = sitk.GetArrayFromImage(sitk.ConnectedComponent(labels == LABEL_MASS, True))
    for region in range(1, int(regions.max()) + 1):
        only = np.where((arr == LABEL_MASS) & (regions != region), 0, arr).astype(arr.dtype)
        image = sitk.GetImageFromArray(only)
        image.CopyInformation(labels)
        strokes = sitk.GetArrayFromImage(
            strokes_from_labels(image, rng_seed=seed + region, structures=(LABEL_MASS,))
        )
        seeds = np.where((strokes == LABEL_MASS) & (seeds == 0), strokes, seeds)
    out = sitk.GetImageFromArray(seeds)
    out.CopyInformation(labels)
    return out


def run(args, term) -> int:
    from ..pipeline import AnalysisRequest
    from .analyze_cmd import print_summary, run_and_write

    lesions = parse_lesions(args.lesions)  # bad text: one line, before anything is written
    if args.dwi and args.grade is None:
        raise InputError(
            "--dwi is for the single-level phantom (the whole spine has no DWI yet)",
            hint="add --grade, e.g. mescc demo --grade 2 --dwi --out demo",
        )
    out = claim_dir(args.out)
    term.stage("phantom")
    if args.grade is not None:
        study = write_phantom(
            out / "study",
            args.grade,
            args.seed,
            dwi_layout="standard" if args.dwi else None,
            progress=term.progress,
        )
    else:
        study = write_spine_phantom(
            out / "study", DEMO_LEVELS, lesions, args.seed, progress=term.progress
        )
    term.stage("seeds")
    labels = sitk.ReadImage(str(study / "labels.nii.gz"))
    seeds_path = write_image(demo_strokes(labels, args.seed), out / "seeds.nii.gz")
    request = AnalysisRequest(
        mri=study / "t2.nii.gz",
        t1=study / "t1.nii.gz",
        ct=study / "ct.nii.gz",
        pet=study / "pet_dicom",
        seeds=seeds_path,
        vertebrae=study / "vertebrae.nii.gz" if args.grade is None else None,
        dwi=study / "dwi_dicom" if args.dwi else None,
    )
    analysis = out / "analysis"
    result = run_and_write(request, analysis, term, no_scene=args.no_scene)
    print_summary(result, analysis)
    truth = json.loads((study / "truth.json").read_text())
    measured = result.metrics.metrics.get("lesions") or []
    for lesion in truth.get("lesions") or [truth]:
        mine = _matching(lesion, measured)
        got = (
            "not found"
            if mine is None
            else f"grade {mine['bilsky_grade']}, MSCC {mine['mscc_percent']:.1f} %, "
            f"ratio {mine['cord_csa_ratio']:.2f}, mass {mine['mass_volume_ml']:.2f} ml"
        )
        where = f" at {lesion['level']}" if "level" in lesion else ""
        volume = lesion.get("volume_ml", lesion.get("mass_volume_ml"))
        print(
            f"phantom truth{where}: grade {lesion['grade']}, MSCC {lesion['mscc_percent']:.1f} %, "
            f"cord CSA ratio {lesion['cord_csa_ratio']:.2f}, mass {volume:.2f} ml "
            f"(measured: {got})"
        )
    if "dwi" in truth and measured:
        print(
            f"phantom truth: mass ADC {truth['dwi']['adc']['mass']:.0f} x 1e-6 mm2/s "
            f"(measured: {measured[0]['adc_mean']:.0f} over the segmented mass, 1 mm inside)"
        )
    return 0


def _matching(lesion: dict, measured: list[dict]) -> dict | None:
    """The measured lesion at the true lesion's level (the only one of a one-lesion study)."""
    if "level" not in lesion:
        return measured[0] if measured else None
    return next((m for m in measured if lesion["level"] in m["levels"]), None)
