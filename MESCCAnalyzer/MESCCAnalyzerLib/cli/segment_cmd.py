"""``mescc segment``: grow cord, CSF, mass and bone from seed strokes (see docs/methods.md, Seeded segmentation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..outputs import check_output_file, guard_outputs, write_image

HELP = "seeded segmentation of cord, CSF, epidural mass and bone (grow from seeds)"
DESCRIPTION = (
    "Every seed label grows competitively over the image(s) until each voxel is claimed. "
    "Seeds: a labelmap on the first image's grid (1 cord, 2 CSF, 3 mass, 4 bone, 5+ other "
    "tissue around them) or a Slicer .mrk.json point list whose point descriptions are the "
    "labels. The output keeps labels 1-4."
)


def add_arguments(parser) -> None:
    parser.add_argument(
        "--image",
        action="append",
        required=True,
        metavar="IMAGE",
        help="image (NIfTI/NRRD/MHA/DICOM folder); repeat for more channels on the same grid, e.g. PET resampled onto the MRI",
    )
    parser.add_argument(
        "--resolution",
        action="append",
        type=float,
        metavar="MM",
        help="per --image, in the same order: the voxel size (mm) of the scan it was resampled "
        "from when coarser than the grid, e.g. 4 for a PET of 4 mm voxels (default 0: the "
        "grid's own); such a channel is compared by its values within half of it",
    )
    parser.add_argument(
        "--seeds",
        required=True,
        help="seed labelmap on the first image's grid, or a .mrk.json point list",
    )
    parser.add_argument(
        "--out",
        required=True,
        help="output labelmap (.nii.gz, .nrrd) or Slicer segmentation (.seg.nrrd)",
    )
    parser.add_argument("--seg-out", help="also write a Slicer segmentation (.seg.nrrd) here")
    parser.add_argument(
        "--roi",
        help="region of interest: a mask on the first image's grid (non-zero = segment here)",
    )
    parser.add_argument(
        "--smoothing",
        type=float,
        default=0.0,
        metavar="MM",
        help="joint smoothing of the labels, Gaussian sigma in mm (default 0: none)",
    )


def _load(path: str) -> sitk.Image:
    from ..io.study import load_image

    return load_image(path)


def run(args, term) -> int:
    from ..io.segfile import write_seg_nrrd
    from ..segmentation.grow import SeedGrower, check_inputs, load_seeds
    from ..segmentation.inputs import check_resolutions

    out = Path(args.out)
    seg_out = Path(args.seg_out) if args.seg_out else None
    for target in (out, seg_out):
        if target is not None and not target.name.endswith(
            (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
        ):
            raise InputError(
                "unsupported output format", path=target, hint="use .nii.gz, .nrrd or .seg.nrrd"
            )
    if args.smoothing < 0:
        raise InputError(f"--smoothing must be >= 0 mm, got {args.smoothing}")
    resolution = check_resolutions(
        args.resolution,
        len(args.image),
        name="--resolution",
        per="--image",
        hint="e.g. --image t2.nii.gz --resolution 0 --image pet_on_t2.nii.gz --resolution 4",
    )
    inputs = [*args.image, args.seeds, args.roi]
    guard_outputs([out, seg_out], [p for p in inputs if p])
    for target in (out, seg_out):
        if target is not None:
            check_output_file(target)

    term.stage("load")
    images = [_load(p) for p in args.image]
    check_inputs(images, names=args.image)
    seeds = load_seeds(args.seeds, images[0])
    roi = _load(args.roi) if args.roi else None
    check_inputs(images, seeds, roi, names=args.image, seeds_name=args.seeds, roi_name=args.roi)

    term.stage("segment")
    grower = SeedGrower(images, roi=roi, resolution_mm=resolution)
    result = grower.grow(
        seeds, smoothing_mm=args.smoothing, progress=term.progress, cancel=term.cancel
    )

    term.stage("write")
    if out.name.endswith(".seg.nrrd"):
        write_seg_nrrd(result, out)
    else:
        write_image(sitk.Cast(result, sitk.sitkUInt8), out)
    if seg_out is not None:
        write_seg_nrrd(result, seg_out)
    term.finish()
    counts = np.bincount(sitk.GetArrayViewFromImage(result).ravel(), minlength=5)
    voxel_ml = float(np.prod(result.GetSpacing())) / 1000.0
    names = {1: "cord", 2: "CSF", 3: "mass", 4: "bone"}
    print(", ".join(f"{names[v]} {counts[v] * voxel_ml:.2f} ml" for v in range(1, 5)))
    return 0
