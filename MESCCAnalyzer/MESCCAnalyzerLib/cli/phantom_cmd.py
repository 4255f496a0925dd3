"""``mescc phantom``: write the synthetic MESCC study with its analytic truth."""

from __future__ import annotations

import json

from ..errors import InputError
from ..phantom import GRADES, write_phantom
from ..phantom.dwi import LAYOUTS as DWI_LAYOUTS
from ..phantom.spine import (
    DEFAULT_LESIONS,
    VERSE_LABELS,
    parse_lesions,
    parse_levels,
    write_spine_phantom,
)

HELP = "write the synthetic multimodal MESCC study (MRI, CT, PET DICOM, labels, truth)"
DESCRIPTION = (
    "Write a synthetic thoracic spine study with an epidural mass at a chosen Bilsky grade: "
    "T2, T1 (MRI grid), CT and a PET DICOM series (scanner frame, displaced from the MRI by a "
    "known rigid transform), labels.nii.gz (1 cord, 2 CSF, 3 mass, 4 bone) and truth.json. "
    "With --spine (or --levels/--lesions): the whole thoracic spine with its kyphosis, several "
    "masses at distinct levels, and vertebrae.nii.gz in the VerSe numbering. With --pet-mr: "
    "a PET/MR study, the PET in the MRI's frame and no CT."
)
_DEFAULT_LESIONS_TEXT = ",".join(f"{level}:{grade}" for level, grade in DEFAULT_LESIONS)


def add_arguments(parser):
    parser.add_argument(
        "--out", required=True, help="output folder (new, or a previous phantom folder)"
    )
    parser.add_argument(
        "--grade",
        default=None,
        choices=GRADES,
        help="Bilsky grade of the mass (default 2; single-level phantom only)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed: noise, pose, transform, small size jitter"
    )
    parser.add_argument(
        "--dwi",
        nargs="?",
        const="standard",
        default=None,
        choices=DWI_LAYOUTS,
        metavar="LAYOUT",
        help="also write a diffusion series (b = 0, 50, 400, 800, six directions; tissues of "
        "known ADC): dwi_dicom/ with the tags of LAYOUT (standard (default), siemens, ge, "
        "philips or enhanced), dwi.nii.gz with dwi.bval and dwi.bvec, mri_to_dwi.tfm; "
        "single-level phantom only",
    )
    parser.add_argument(
        "--pet-mr",
        action="store_true",
        help="a PET/MR study: the PET acquired in the MRI's frame (its DICOM series carries "
        "the FrameOfReferenceUID of t2_dicom/, so 'mescc analyze --mri STUDY/t2_dicom --pet "
        "STUDY/pet_dicom' needs no CT), and no CT (no ct.nii.gz, ct_dicom/, mri_to_ct.tfm); "
        "single-level phantom only",
    )
    spine = parser.add_argument_group("whole spine")
    spine.add_argument(
        "--spine",
        action="store_true",
        help="write the whole-spine study (T2 3 mm slices at 0.6 mm, CT 0.8 x 0.8 x 1 mm, "
        "PET 4 mm, vertebrae.nii.gz in the VerSe numbering)",
    )
    spine.add_argument(
        "--levels",
        default=None,
        help="vertebral levels of the whole-spine study, cranial first (default T1-L1; "
        "implies --spine)",
    )
    spine.add_argument(
        "--lesions",
        default=None,
        help=f'masses as LEVEL:GRADE, comma-separated, or "none" (default '
        f'"{_DEFAULT_LESIONS_TEXT}", those inside --levels; implies --spine)',
    )


def run(args, term) -> int:
    if args.spine or args.levels is not None or args.lesions is not None:
        for given, flag in ((args.dwi is not None, "--dwi"), (args.pet_mr, "--pet-mr")):
            if given:
                raise InputError(
                    f"{flag} is for the single-level phantom",
                    hint="leave out --spine/--levels/--lesions",
                )
        return _run_spine(args, term)
    grade = args.grade or "2"
    term.stage("phantom")
    out = write_phantom(
        args.out, grade, args.seed, dwi_layout=args.dwi, pet_mr=args.pet_mr, progress=term.progress
    )
    term.finish()
    truth = json.loads((out / "truth.json").read_text())
    print(f"phantom grade {truth['grade']} (seed {truth['seed']}) written to {out}")
    print(
        f"  mass {truth['mass_volume_ml']:.2f} ml, cord CSA {truth['cord_min_csa_mm2']:.1f} / "
        f"{truth['cord_reference_csa_mm2']:.1f} mm2 (ratio {truth['cord_csa_ratio']:.2f}), "
        f"MSCC {truth['mscc_percent']:.1f} %"
    )
    if "pet_mr" in truth:
        print(
            f"  PET/MR: the PET in the MRI's frame (FrameOfReferenceUID of t2_dicom), no CT; "
            f"mass SUVmax {truth['pet_mr']['mass_suv_max']:.2f}"
        )
    if "dwi" in truth:
        adc_text = ", ".join(
            f"{name} {truth['dwi']['adc'][name]:.0f}" for name in ("cord", "csf", "mass", "marrow")
        )
        print(f"  DWI ({truth['dwi']['layout']} tags): ADC {adc_text} x 1e-6 mm2/s")
    return 0


def _run_spine(args, term) -> int:
    if args.grade is not None:
        raise InputError(
            "--grade is for the single-level phantom",
            hint='give each mass of the whole spine its grade with --lesions, e.g. "T4:2,T9:1b"',
        )
    levels = parse_levels(args.levels or "T1-L1")
    if args.lesions is not None:
        lesions = parse_lesions(args.lesions)
    else:  # the default lesions that lie in the levels
        first, last = (VERSE_LABELS[name] for name in levels)
        lesions = tuple(m for m in DEFAULT_LESIONS if first <= VERSE_LABELS[m[0]] <= last)
    term.stage("phantom (whole spine)")
    out = write_spine_phantom(args.out, levels, lesions, args.seed, progress=term.progress)
    term.finish()
    truth = json.loads((out / "truth.json").read_text())
    print(
        f"whole-spine phantom {levels[0]}-{levels[1]} (seed {truth['seed']}, kyphosis "
        f"{truth['kyphosis_deg']:.0f} deg) written to {out}"
    )
    for lesion in truth["lesions"]:
        print(
            f"  lesion {lesion['id']} at {lesion['level']}: grade {lesion['grade']}, "
            f"{lesion['volume_ml']:.2f} ml, MSCC {lesion['mscc_percent']:.1f} %, "
            f"cord CSA ratio {lesion['cord_csa_ratio']:.2f}"
        )
    if not truth["lesions"]:
        print("  no mass")
    return 0
