"""``mescc demo``: the phantom study end to end, seeds placed from its truth."""

from __future__ import annotations

import json

import SimpleITK as sitk

from ..outputs import claim_dir, write_image
from ..phantom import GRADES, write_phantom

HELP = "the synthetic study end to end: phantom, seeds from its truth, analysis, report"


def add_arguments(parser):
    parser.add_argument(
        "--out", required=True, help="output folder: study/, seeds.nii.gz, analysis/"
    )
    parser.add_argument(
        "--grade", default="2", choices=GRADES, help="Bilsky grade of the phantom (default 2)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="phantom and seed-placement random seed"
    )
    parser.add_argument(
        "--no-scene", action="store_true", help="skip scene.mrb (no slicer-core needed)"
    )


def run(args, term) -> int:
    from ..pipeline import AnalysisRequest
    from ..segmentation.seeds import strokes_from_labels
    from .analyze_cmd import print_summary, run_and_write

    out = claim_dir(args.out)
    term.stage("phantom")
    study = write_phantom(out / "study", args.grade, args.seed, progress=term.progress)
    term.stage("seeds")
    labels = sitk.ReadImage(str(study / "labels.nii.gz"))
    seeds_path = write_image(strokes_from_labels(labels, rng_seed=args.seed), out / "seeds.nii.gz")
    request = AnalysisRequest(
        mri=study / "t2.nii.gz",
        t1=study / "t1.nii.gz",
        ct=study / "ct.nii.gz",
        pet=study / "pet_dicom",
        seeds=seeds_path,
    )
    analysis = out / "analysis"
    result = run_and_write(request, analysis, term, no_scene=args.no_scene)
    print_summary(result, analysis)
    truth = json.loads((study / "truth.json").read_text())
    m = result.metrics.metrics
    print(
        f"phantom truth: grade {truth['grade']}, MSCC {truth['mscc_percent']:.1f} %, "
        f"cord CSA ratio {truth['cord_csa_ratio']:.2f}, mass {truth['mass_volume_ml']:.2f} ml "
        f"(measured: grade {m['bilsky_grade']}, MSCC {m['mscc_percent']:.1f} %, "
        f"ratio {m['cord_csa_ratio']:.2f}, mass {m['mass_volume_ml']:.2f} ml)"
    )
    return 0
