"""``mescc adc DWI --out adc.nii.gz``: the ADC map of a diffusion series."""

from __future__ import annotations

import json
from pathlib import Path

from ..diffusion import adc
from ..errors import InputError
from ..io import dwi
from ..outputs import atomic_path, check_output_file, guard_outputs, save_image
from .args import positive_float

HELP = "compute the ADC map (10^-6 mm2/s) of a diffusion series (DICOM, or 4D NIfTI + bval/bvec)"
DESCRIPTION = (
    "Read a diffusion series (a DICOM folder or enhanced file, b-values from the standard or the "
    "Siemens/GE/Philips tags; or a 4D NIfTI with FSL bval/bvec files), average the directions "
    "of each b-value into a trace image (geometric mean), fit log signal against b by weighted "
    "least squares over the b-values up to --b-max, and write the ADC map in 10^-6 mm2/s "
    "(0 where the b = 0 signal is below 5 noise sigma)."
)

_IMAGE_SUFFIXES = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")


def add_arguments(parser) -> None:
    parser.add_argument(
        "dwi", metavar="DWI", help="diffusion DICOM folder or file, or 4D .nii/.nii.gz"
    )
    parser.add_argument(
        "--bvals", metavar="FILE", help="FSL b-value file of a NIfTI (default: STEM.bval beside it)"
    )
    parser.add_argument(
        "--bvecs",
        metavar="FILE",
        help="FSL gradient-direction file of a NIfTI (default: STEM.bvec beside it, if any)",
    )
    parser.add_argument(
        "--series", metavar="UID", help="SeriesInstanceUID when the folder holds several series"
    )
    parser.add_argument(
        "--out", required=True, metavar="FILE", help="ADC map to write (.nii.gz, .nrrd, .mha)"
    )
    parser.add_argument(
        "--b-max",
        type=positive_float,
        default=1000.0,
        metavar="B",
        help="highest b-value (s/mm2) of the fit (default 1000)",
    )
    parser.add_argument(
        "--residual",
        metavar="FILE",
        help="also write the fit's residual (RMS, fraction of the fitted b = 0 signal)",
    )
    parser.add_argument("--json", action="store_true", help="print the details as JSON")


def _check_suffix(path: Path) -> None:
    if not path.name.lower().endswith(_IMAGE_SUFFIXES):
        raise InputError(
            "unsupported output format", path=path, hint="use .nii.gz, .nii, .nrrd or .mha"
        )


def run(args, term) -> int:
    outputs = [Path(args.out)] + ([Path(args.residual)] if args.residual else [])
    for out in outputs:
        _check_suffix(out)
    guard_outputs(outputs, [p for p in (args.dwi, args.bvals, args.bvecs) if p])
    for out in outputs:
        check_output_file(out)
    term.stage("load DWI")
    series = dwi.load_dwi(
        args.dwi,
        bvals=args.bvals,
        bvecs=args.bvecs,
        series_uid=args.series,
        progress=term.progress,
        cancel=term.cancel,
    )
    term.stage("ADC fit")
    result = adc.fit_adc(series, b_max_s_mm2=args.b_max, progress=term.progress, cancel=term.cancel)
    term.stage("write")
    with atomic_path(args.out) as tmp:
        save_image(result.adc_for_file(), tmp)
    if args.residual:
        with atomic_path(args.residual) as tmp:
            save_image(result.residual_for_file(), tmp)
    term.finish()
    details = {"input": str(series.source), "source": series.description, **result.summary()}
    details["output"] = str(args.out)
    if args.residual:
        details["residual"] = str(args.residual)
    if args.json:
        print(json.dumps(details, indent=2))
    else:
        print(f"{series.description}")
        print(
            "b-values used: "
            + ", ".join(f"{b:g}" for b in result.b_values_s_mm2)
            + f" s/mm2; noise sigma {result.noise_sigma:.4g}, fitted where b0 > "
            f"{result.signal_threshold:.4g} ({result.n_fitted} voxels, {result.n_masked} masked)"
        )
        print(f"median ADC of the fitted voxels: {details['adc_median_fitted']:.1f} {adc.ADC_UNIT}")
        print(f"written: {args.out}" + (f", {args.residual}" if args.residual else ""))
    return 0
