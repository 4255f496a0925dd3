"""``mescc metrics --labels SEG [--pet SUV] --out DIR``: cord compression metrics and Bilsky grade."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError, MESCCError
from ..measure import metrics as metrics_lib
from ..measure.levels import check_grid, parse_anchor
from ..measure.partial_volume import check_grid as check_mri_grid
from ..outputs import atomic_dir, check_output_dir, guard_outputs
from .args import add_prv_argument, positive_float
from .level_args import add_level_arguments
from .summary import metrics_lines

HELP = "3D cord compression metrics (MSCC, MCC, CSA, ...), Bilsky grade and surface models"
DESCRIPTION = (
    "Measure the spinal cord, thecal sac and epidural mass of a labelmap (1 cord, 2 CSF, "
    "3 mass, 4 bone; or a Slicer .seg.nrrd with segments spinal_cord, csf, epidural_mass, "
    "vertebrae) on cross-sections perpendicular to the cord's centreline. Writes "
    "DIR/metrics.json (with the Bilsky grade and its reason), DIR/sections.csv (one row per "
    "section) and DIR/models/*.vtp (closed surfaces in LPS with distance maps, the "
    "centreline). With --pet (an SUV image on the labelmap's grid): SUVmax, SUVpeak, "
    "SUVmean, MTV and TLG of the mass. With --mri (the MRI the labels were drawn on): the "
    "cord's outline to a fraction of a voxel from the MRI's partial volume."
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--labels",
        required=True,
        metavar="SEG",
        help="labelmap (.nii.gz, .nrrd, .mha) or .seg.nrrd",
    )
    parser.add_argument("--pet", metavar="SUV", help="SUV image on the labelmap's grid (optional)")
    parser.add_argument(
        "--mri",
        metavar="IMAGE",
        help="the MRI the labels were drawn on, on their grid (optional): the cord's diameters "
        "and areas from its partial volume, to a fraction of a voxel",
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--step-mm",
        type=positive_float,
        default=1.0,
        help="distance between cross-sections along the centreline (default 1 mm)",
    )
    add_prv_argument(parser)
    add_level_arguments(parser)


def _load(path: Path, what: str):
    from ..io.study import load_image

    if not path.exists():
        raise InputError(f"{what} not found", path=path)
    try:
        return metrics_lib.read_labels(path) if what == "labelmap" else load_image(path)
    except MESCCError:
        raise
    except (RuntimeError, OSError, ValueError) as exc:
        raise InputError(f"cannot read the {what}: {str(exc).splitlines()[0]}", path=path) from None


def run(args, term) -> int:
    labels_path = Path(args.labels)
    pet_path = Path(args.pet) if args.pet else None
    mri_path = Path(args.mri) if args.mri else None
    vertebrae_path = Path(args.vertebrae) if args.vertebrae else None
    out = Path(args.out)
    guard_outputs(
        [out, out / "metrics.json", out / "sections.csv", out / "models"],
        [p for p in (labels_path, pet_path, mri_path, vertebrae_path) if p],
    )
    check_output_dir(out)
    anchor = parse_anchor(args.level_anchor) if args.level_anchor else None

    term.stage("load")
    labels = _load(labels_path, "labelmap")
    pet = _load(pet_path, "SUV image") if pet_path else None
    # Validate every input (naming its file) before computing or writing anything.
    metrics_lib.validate_labels(labels, path=labels_path)
    if pet is not None:
        metrics_lib.validate_labels(labels, path=labels_path, pet=pet, pet_path=pet_path)
    mri = None
    if mri_path is not None:
        mri = _load(mri_path, "MRI")
        check_mri_grid(labels, mri, mri_path)
    levels = None
    if vertebrae_path is not None:
        vertebrae = _load(vertebrae_path, "vertebra labelmap")
        check_grid(vertebrae, labels, vertebrae_path)
        levels = metrics_lib.LevelSource(vertebrae=vertebrae, vertebrae_path=vertebrae_path)
    elif anchor is not None:
        levels = metrics_lib.LevelSource(anchor=anchor)

    result = metrics_lib.compute_metrics(
        labels,
        pet,
        mri=mri,
        levels=levels,
        section_step_mm=args.step_mm,
        prv_mm=args.prv_mm,
        progress=term.progress,
        cancel=term.cancel,
        timer=term.stage,
    )
    term.stage("write")
    with atomic_dir(out) as tmp:
        metrics_lib.write_metrics(result, tmp)
    term.finish()
    print("\n".join(metrics_lines(result.metrics)))
    print(f"wrote {out / 'metrics.json'}, {out / 'sections.csv'}, {out / 'models'}")
    return 0
