"""``mescc register --fixed MRI --moving CT --out-transform T.tfm``: PET-CT to MRI registration."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import SimpleITK as sitk

from .. import registration
from ..errors import InputError
from ..io.markups import read_landmark_pairs
from ..io.study import load_image
from ..outputs import atomic_path, check_output_file, guard_outputs, write_image, write_json
from ..pipeline import Follower, check_shares_frame, register_images

HELP = "register the CT (and the PET riding with it) to the MRI: rigid, optionally B-spline"
DESCRIPTION = (
    "Rigid registration (6 degrees of freedom) of the moving image (CT) to the fixed image "
    "(MRI) by Mattes mutual information over a multi-resolution pyramid, optionally restricted "
    "to a fixed-image mask around the lesion level and refined by a B-spline (--deformable). "
    "The transform written maps a point of the MRI's physical space (LPS, mm) to the matching "
    "point of the CT's (ITK convention; SimpleITK.ReadTransform and 3D Slicer read it). Images "
    "given with --follow (e.g. the PET of the same PET-CT) share the CT's frame and are "
    "resampled with it."
)

_TRANSFORM_SUFFIXES = (".tfm", ".txt", ".h5", ".hdf5", ".mat")
_IMAGE_SUFFIX = ".nii.gz"


def add_arguments(parser) -> None:
    parser.add_argument(
        "--fixed",
        required=True,
        metavar="MRI",
        help="fixed (reference) image: MRI file or DICOM folder",
    )
    parser.add_argument(
        "--moving", required=True, metavar="CT", help="moving image: CT file or DICOM folder"
    )
    parser.add_argument(
        "--follow",
        action="append",
        default=[],
        metavar="IMAGE",
        help="image in the moving image's frame (e.g. the PET of the PET-CT) to resample with it; repeatable",
    )
    parser.add_argument(
        "--follow-label",
        action="append",
        default=[],
        metavar="LABELMAP",
        help="labelmap in the moving image's frame, resampled by nearest neighbour; repeatable",
    )
    parser.add_argument(
        "--out-transform",
        required=True,
        metavar="T.tfm",
        help="transform to write (.tfm, .txt, .h5, .mat)",
    )
    parser.add_argument(
        "--resampled-dir",
        metavar="DIR",
        help="write the moving and followed images resampled onto the fixed grid here",
    )
    parser.add_argument(
        "--mask-fixed",
        metavar="MASK",
        help="fixed-image mask or region of interest (non-zero voxels) around the lesion level",
    )
    parser.add_argument(
        "--init",
        default="auto",
        metavar="MODE|LANDMARKS.mrk.json",
        help=(
            "initialisation: auto (default: tries the scanners' frames, the geometric centres and the intensity "
            "centroids, keeps the best), geometry, centers, moments, or a Slicer .mrk.json of paired landmarks"
        ),
    )
    parser.add_argument(
        "--deformable",
        action="store_true",
        help="add a regularised B-spline refinement after the rigid step",
    )
    parser.add_argument(
        "--report",
        metavar="FILE.json",
        help="quality report (default: the transform's name with .report.json)",
    )
    parser.add_argument(
        "--json", action="store_true", help="print the quality report as JSON instead of text"
    )


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".dcm"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _load(path: str, role: str, modality: str | None = None) -> sitk.Image:
    image = load_image(path, modality=modality)
    registration.validate_image(image, role, path=path)
    return image


@dataclass
class _Outputs:
    transform: Path
    report: Path
    resampled: dict  # input path -> resampled file


def _outputs(args) -> _Outputs:
    """The files the command will write, checked before any work."""
    transform_path = Path(args.out_transform)
    if not transform_path.name.lower().endswith(_TRANSFORM_SUFFIXES):
        raise InputError(
            "unsupported transform format",
            path=transform_path,
            hint="use .tfm (or .txt, .h5, .mat)",
        )
    report_path = (
        Path(args.report)
        if args.report
        else transform_path.with_name(transform_path.name.rsplit(".", 1)[0] + ".report.json")
    )
    resampled = {}
    if args.resampled_dir:
        out_dir = Path(args.resampled_dir)
        if out_dir.exists() and not out_dir.is_dir():
            raise InputError("exists and is not a folder", path=out_dir)
        for src in [args.moving, *args.follow, *args.follow_label]:
            target = out_dir / f"{_stem(Path(src))}_registered{_IMAGE_SUFFIX}"
            if target in resampled.values():
                raise InputError(
                    "two inputs would be written to the same resampled file",
                    path=target,
                    hint="rename one of the inputs",
                )
            resampled[src] = target
    return _Outputs(transform_path, report_path, resampled)


def _landmarks_path(init: str) -> str | None:
    """``--init`` names a mode, or a landmarks file (returned)."""
    if init in registration.INIT_MODES and init != "landmarks":
        return None
    if not init.lower().endswith(".json"):
        raise InputError(
            f"unknown --init '{init}'",
            hint="auto, geometry, centers, moments or a landmarks .mrk.json file",
        )
    return init


def _register(args, term, fixed, moving, followers, mask, landmarks, resample: bool):
    """The registration; an input problem the core reports without a file is the mask's."""
    try:
        return register_images(
            fixed,
            moving,
            followers if resample else (),
            fixed_mask=mask,
            init="landmarks" if landmarks is not None else args.init,
            landmarks=landmarks,
            deformable=args.deformable,
            progress=term.progress,
            cancel=term.cancel,
        )
    except InputError as exc:
        if exc.path is None and args.mask_fixed:
            raise InputError(exc.message, path=args.mask_fixed, hint=exc.hint) from exc
        raise


def _write(args, outputs: _Outputs, registered, followers) -> dict:
    """The transform, the resampled images and the quality report; returns the report."""
    report = registered.result.report()
    report["fixed"] = str(args.fixed)
    report["moving"] = str(args.moving)
    report["transform_file"] = str(outputs.transform)
    report["resampled"] = {str(src): str(dst) for src, dst in outputs.resampled.items()}
    with atomic_path(outputs.transform) as tmp:
        sitk.WriteTransform(registered.result.transform, str(tmp))
    if outputs.resampled:
        write_image(registered.moving_on_fixed, outputs.resampled[args.moving])
        for follower, image in zip(followers, registered.followers_on_fixed, strict=True):
            write_image(image, outputs.resampled[follower.name])
    write_json(outputs.report, report)
    return report


def run(args, term) -> int:
    outputs = _outputs(args)
    landmarks_path = _landmarks_path(args.init)
    inputs = [args.fixed, args.moving, *args.follow, *args.follow_label, args.mask_fixed]
    targets = [outputs.transform, outputs.report, *outputs.resampled.values()]
    guard_outputs(targets, [*inputs, landmarks_path])
    for target in targets:
        check_output_file(target)

    # --- read and check everything before any computation or writing --------------------
    term.stage("load")
    fixed = _load(args.fixed, "fixed (MRI)")
    moving = _load(args.moving, "moving (CT)")
    followers = [Follower(_load(path, "followed"), path) for path in args.follow]
    followers += [Follower(load_image(path), path, labelmap=True) for path in args.follow_label]
    for follower in followers:  # before the work: a follower from another frame is refused
        check_shares_frame(follower.image, moving, follower.name)
    mask = None
    if args.mask_fixed:
        mask = registration.mask_on_grid(load_image(args.mask_fixed), fixed, path=args.mask_fixed)
    landmarks = read_landmark_pairs(landmarks_path) if landmarks_path else None

    term.stage("register")
    registered = _register(
        args, term, fixed, moving, followers, mask, landmarks, bool(outputs.resampled)
    )
    term.stage("write")
    report = _write(args, outputs, registered, followers)
    term.finish()
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_text(report))
        print(
            f"written: {outputs.transform}, {outputs.report}"
            + "".join(f", {p}" for p in outputs.resampled.values())
        )
    return 0


def _text(report: dict) -> str:
    lines = [
        f"transform       {report['transform_type']} (fixed LPS -> moving LPS), initialisation: {report['init']}",
        f"metric          Mattes MI {report['initial_metric_value']:.4f} -> {report['final_metric_value']:.4f}",
        f"iterations      {report['iterations_per_level']} per level; stop: {report['stop_condition']}",
        f"time            {report['elapsed_s']:.2f} s",
        f"displacement    mean {report['mean_displacement_mm']:.2f} mm over the fixed region "
        f"({report['mean_change_from_initial_mm']:.2f} mm from the initial position)",
    ]
    if "rotation_deg" in report:
        offset = ", ".join(f"{v:.2f}" for v in report["offset_mm"])
        lines.append(
            f"rigid part      rotation {report['rotation_deg']:.2f} deg, offset ({offset}) mm"
        )
    return "\n".join(lines)
