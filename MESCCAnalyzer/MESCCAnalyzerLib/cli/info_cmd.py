"""``mescc info PATH...``: what each volume is (modality, grid, value range, identifiers)."""

from __future__ import annotations

import json

from ..io import dwi, study

HELP = "describe volumes: modality, size, spacing, origin, direction, value range, identifiers"
DESCRIPTION = (
    "Load each PATH (a DICOM folder or file, NIfTI, NRRD or MHA) as a 3D volume and describe it. "
    "A DICOM folder holding several series needs --modality or --series to choose one. "
    "A diffusion series (DICOM with b-values, or a 4D NIfTI with its bval/bvec files) is "
    "described with its b-values, directions and volumes per b-value. Nothing is written."
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "paths", nargs="+", metavar="PATH", help="DICOM folder or file, .nii/.nii.gz, .nrrd, .mha"
    )
    parser.add_argument(
        "--modality",
        type=str.upper,
        choices=study.MODALITIES,
        help="choose the DICOM series of this modality (and label a NIfTI/NRRD/MHA file with it)",
    )
    parser.add_argument(
        "--series", metavar="UID", help="choose the DICOM series with this SeriesInstanceUID"
    )
    parser.add_argument(
        "--bvals", metavar="FILE", help="FSL b-value file of a 4D NIfTI (default: STEM.bval)"
    )
    parser.add_argument(
        "--bvecs", metavar="FILE", help="FSL direction file of a 4D NIfTI (default: STEM.bvec)"
    )
    parser.add_argument("--json", action="store_true", help="print a JSON list instead of a table")


def run(args, term) -> int:
    described = []
    for i, path in enumerate(args.paths):
        term.stage(f"load {i + 1}/{len(args.paths)}")
        if dwi.probe(path, bvals=args.bvals, series_uid=args.series):
            fsl = {"bvals": args.bvals, "bvecs": args.bvecs} if dwi.is_nifti(path) else {}
            series = dwi.load_dwi(path, series_uid=args.series, progress=term.progress, **fsl)
            described.append(dwi.describe(series))
            continue
        volume = study.load_volume(
            path, modality=args.modality, series_uid=args.series, progress=term.progress
        )
        described.append(study.describe(volume))
    term.finish()
    if args.json:
        print(json.dumps(described, indent=2))
    else:
        print(
            "\n\n".join(
                dwi.format_description(d)
                if d.get("kind") == "diffusion"
                else study.format_description(d)
                for d in described
            )
        )
    return 0
