"""``mescc phantom``: write the synthetic MESCC study with its analytic truth."""

from __future__ import annotations

import json

from ..phantom import GRADES, write_phantom

HELP = "write the synthetic multimodal MESCC study (MRI, CT, PET DICOM, labels, truth)"
DESCRIPTION = (
    "Write a synthetic thoracic spine study with an epidural mass at a chosen Bilsky grade: "
    "T2, T1 (MRI grid), CT and a PET DICOM series (scanner frame, displaced from the MRI by a "
    "known rigid transform), labels.nii.gz (1 cord, 2 CSF, 3 mass, 4 bone) and truth.json."
)


def add_arguments(parser):
    parser.add_argument(
        "--out", required=True, help="output folder (new, or a previous phantom folder)"
    )
    parser.add_argument(
        "--grade", default="2", choices=GRADES, help="Bilsky grade of the mass (default 2)"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed: noise, pose, transform, small size jitter"
    )


def run(args, term) -> int:
    term.stage("phantom")
    out = write_phantom(args.out, args.grade, args.seed, progress=term.progress)
    term.finish()
    truth = json.loads((out / "truth.json").read_text())
    print(f"phantom grade {truth['grade']} (seed {truth['seed']}) written to {out}")
    print(
        f"  mass {truth['mass_volume_ml']:.2f} ml, cord CSA {truth['cord_min_csa_mm2']:.1f} / "
        f"{truth['cord_reference_csa_mm2']:.1f} mm2 (ratio {truth['cord_csa_ratio']:.2f}), "
        f"MSCC {truth['mscc_percent']:.1f} %"
    )
    return 0
