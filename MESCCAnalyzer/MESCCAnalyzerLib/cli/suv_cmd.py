"""``mescc suv PET_DIR --out suv.nii.gz``: a PET DICOM series converted to SUV."""

from __future__ import annotations

import json
from pathlib import Path

from ..errors import InputError
from ..outputs import check_output_file, guard_outputs, write_image, write_json
from ..pet import suv
from .args import positive_float

HELP = "convert a PET DICOM series to SUV (bw, lbm or bsa) with QIBA decay correction"
DESCRIPTION = (
    "Read a PET DICOM series (folder) or slice (file), compute the SUV factor from its header "
    "(QIBA vendor-neutral rules: Units BQML, CNTS with the Philips private factors, or GML; "
    "DecayCorrection START, ADMIN or NONE) and write the SUV image. Values missing from the "
    "header can be supplied by hand; they then replace the header's."
)

_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def add_arguments(parser) -> None:
    parser.add_argument(
        "pet", metavar="PET_DIR", help="PET DICOM folder (or a single PET DICOM file)"
    )
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="SUV image to write (.nii.gz, .nrrd, .mha)"
    )
    parser.add_argument(
        "--norm",
        choices=suv.NORMS,
        default="bw",
        help="normalisation: body weight (default), lean body mass (SUL), body surface area",
    )
    parser.add_argument(
        "--series", metavar="UID", help="SeriesInstanceUID when the folder holds several PET series"
    )
    parser.add_argument(
        "--weight-kg", type=positive_float, help="patient weight in kg (replaces PatientWeight)"
    )
    parser.add_argument(
        "--dose-mbq",
        type=positive_float,
        help="injected dose in MBq (replaces RadionuclideTotalDose)",
    )
    parser.add_argument(
        "--injection-time",
        metavar="HHMMSS",
        help="injection time, HHMMSS on the scan's date or YYYYMMDDHHMMSS (replaces RadiopharmaceuticalStartTime)",
    )
    parser.add_argument(
        "--scan-time",
        metavar="HHMMSS",
        help="decay reference (scan start) time, HHMMSS on the series date or YYYYMMDDHHMMSS (replaces SeriesTime/AcquisitionTime)",
    )
    parser.add_argument(
        "--height-m", type=positive_float, help="patient height in metres (replaces PatientSize)"
    )
    parser.add_argument(
        "--sex",
        type=str.upper,
        choices=("M", "F"),
        help="patient sex for lean body mass (replaces PatientSex)",
    )
    parser.add_argument(
        "--half-life-s",
        type=positive_float,
        help="radionuclide half-life in s (replaces RadionuclideHalfLife)",
    )
    parser.add_argument(
        "--lbm-formula",
        choices=suv.LBM_FORMULAS,
        default="james",
        help="lean body mass formula for --norm lbm (default james, as PERCIST 1.0)",
    )
    parser.add_argument(
        "--info-json", metavar="FILE", help="also write the factor and decay details as JSON"
    )
    parser.add_argument(
        "--json", action="store_true", help="print the details as JSON instead of text"
    )


def run(args, term) -> int:
    out = Path(args.out)
    if not out.name.lower().endswith(_IMAGE_SUFFIXES):
        raise InputError(
            "unsupported output format", path=out, hint="use .nii.gz, .nii, .nrrd or .mha"
        )
    outputs = [out] + ([Path(args.info_json)] if args.info_json else [])
    guard_outputs(outputs, [args.pet])
    for target in outputs:
        check_output_file(target)
    overrides = suv.SUVOverrides(
        weight_kg=args.weight_kg,
        dose_bq=args.dose_mbq * 1e6 if args.dose_mbq is not None else None,
        injection_time=args.injection_time,
        height_m=args.height_m,
        sex=args.sex,
        half_life_s=args.half_life_s,
        scan_time=args.scan_time,
    )
    term.stage("SUV")
    image, info = suv.pet_to_suv(
        args.pet,
        args.norm,
        overrides=overrides,
        series_uid=args.series,
        lbm_formula=args.lbm_formula,
        progress=term.progress,
        cancel=term.cancel,
    )
    term.stage("write")
    write_image(image, out)
    details = info.as_dict()
    details["output"] = str(out)
    if args.info_json:
        write_json(args.info_json, details)
    term.finish()
    if args.json:
        print(json.dumps(details, indent=2))
    else:
        print("\n".join(info.lines()))
        print(f"written: {out}")
    return 0
