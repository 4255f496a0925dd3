"""Segmentation robustness battery (issue 16): the learnt-cost shortest paths (PathGrower, the
method in use as SeedGrower), the marker watershed with refinement it replaced
(WatershedGrower), the plain shortest-path competition and Slicer's GrowCut, on varied
phantoms and on real MRI.

Every case of :func:`MESCCAnalyzerLib.phantom.variation.battery` (30 by default) is rendered,
stroked like a user (:func:`MESCCAnalyzerLib.segmentation.seeds.strokes_from_labels` on the
case's stroke guide: a few short strokes per structure spread over it, at most 2 % of its
voxels, and "other" strokes in each tissue around the canal) and segmented by every method
with the channel sets T2, T2+T1, T2+PET, T2+T1+PET (GrowCut: T2, its engine takes one
intensity). Prints one line per case, then per method and channel set the median and worst
Dice of cord, CSF and mass, the worst mass volume error, the median first-run time, and the
goal checks; then the real images (SCT cord masks, TPTBox thecal sac) from strokes on three
axial slices. docs/segmentation.md holds the last table.

    nice .venv/bin/python benchmarks/bench_segmentation_battery.py [--cases 30] [--threads 2]
        [--methods paths,watershed,plain,growcut] [--no-real] [--repeat 1]
        [--battery-seed 0] [--param NAME=VALUE ...]

``--battery-seed`` draws another 30 cases (the same variations, other random anatomy, levels,
noise and strokes: a held-out check of anything chosen on seed 0); ``--param`` sets a
:class:`PathParameters` field of the ``paths`` method (an ablation, e.g.
``--param release_unlike_mass=false``).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MESCCAnalyzer"))

from MESCCAnalyzerLib.phantom.variation import PET_VOXEL_MM, battery, make_case  # noqa: E402
from MESCCAnalyzerLib.segmentation.grow import dice  # noqa: E402
from MESCCAnalyzerLib.segmentation.paths import PathGrower, PathParameters  # noqa: E402
from MESCCAnalyzerLib.segmentation.seeds import axial_axis_kji, strokes_from_labels  # noqa: E402
from MESCCAnalyzerLib.segmentation.watershed import WatershedGrower  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CHANNEL_SETS = ("T2", "T2+T1", "T2+PET", "T2+T1+PET")
STRUCTURES = {1: "cord", 2: "CSF", 3: "mass"}


def _vtk_image(arr: np.ndarray, vtk_type):
    import vtk
    from vtk.util import numpy_support

    image = vtk.vtkImageData()
    image.SetDimensions(arr.shape[2], arr.shape[1], arr.shape[0])
    image.GetPointData().SetScalars(
        numpy_support.numpy_to_vtk(
            np.ascontiguousarray(arr).ravel(), deep=True, array_type=vtk_type
        )
    )
    return image


def growcut(t2: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Slicer's Grow from seeds engine (FastGrowCut, slicer-core) on one intensity image."""
    import slicer
    import vtk
    from vtk.util import numpy_support

    segmenter = slicer.vtkImageGrowCutSegment()
    segmenter.SetIntensityVolume(_vtk_image(t2.astype(np.float32), vtk.VTK_FLOAT))
    segmenter.SetSeedLabelVolume(_vtk_image(seeds.astype(np.int16), vtk.VTK_SHORT))
    segmenter.Update()
    out = numpy_support.vtk_to_numpy(segmenter.GetOutput().GetPointData().GetScalars())
    return out.reshape(seeds.shape)


def growcut_available() -> bool:
    try:
        import slicer

        return hasattr(slicer, "vtkImageGrowCutSegment")
    except ImportError:
        return False


PATH_PARAMETERS = PathParameters()  # --param changes it


def parse_param(text: str) -> tuple[str, object]:
    """``NAME=VALUE`` for a :class:`PathParameters` field, VALUE read as the field's type."""
    name, _, value = text.partition("=")
    default = getattr(PathParameters(), name, None)
    if default is None or not value:
        raise argparse.ArgumentTypeError(f"{text!r}: NAME=VALUE with NAME a PathParameters field")
    if isinstance(default, bool):
        if value.lower() not in ("true", "false"):
            raise argparse.ArgumentTypeError(f"{text!r}: true or false")
        return name, value.lower() == "true"
    try:
        return name, type(default)(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _run(
    method: str, channels: list[sitk.Image], seeds: sitk.Image, resolution_mm: list[float]
) -> np.ndarray:
    if method == "paths":
        grower = PathGrower(channels, resolution_mm=resolution_mm, params=PATH_PARAMETERS)
        return sitk.GetArrayFromImage(grower.grow(seeds))
    if method == "plain":
        return sitk.GetArrayFromImage(
            PathGrower(channels, params=PathParameters.plain()).grow(seeds)
        )
    if method == "watershed":
        return sitk.GetArrayFromImage(WatershedGrower(channels).grow(seeds))
    if method == "growcut":
        out = growcut(sitk.GetArrayFromImage(channels[0]), sitk.GetArrayFromImage(seeds))
        return np.where(out <= 4, out, 0)
    raise ValueError(method)


def run_case(variation, methods, repeat: int = 1) -> list[dict]:
    study = make_case(variation)
    seeds = strokes_from_labels(study.guide, rng_seed=variation.seed)
    truth = sitk.GetArrayFromImage(study.labels)
    sets = {
        "T2": [study.t2],
        "T2+T1": [study.t2, study.t1],
        "T2+PET": [study.t2, study.pet_suv],
        "T2+T1+PET": [study.t2, study.t1, study.pet_suv],
    }
    rows = []
    for method in methods:
        for name, channels in sets.items():
            if method == "growcut" and name != "T2":
                continue
            times = []
            for _ in range(repeat):
                t0 = time.perf_counter()
                # the PET is resampled from its own 4 mm voxels (PathGrower is told so)
                resolution = [PET_VOXEL_MM if c is study.pet_suv else 0.0 for c in channels]
                out = _run(method, channels, seeds, resolution)
                times.append(time.perf_counter() - t0)
            row = {"case": variation.name, "method": method, "set": name}
            row.update({s: dice(out == v, truth == v) for v, s in STRUCTURES.items()})
            row["volume"] = float((out == 3).sum()) / max(1.0, float((truth == 3).sum())) - 1.0
            row["time"] = float(np.median(times))
            rows.append(row)
    return rows


def summarise(rows: list[dict]) -> None:
    keys = sorted(
        {(r["method"], r["set"]) for r in rows}, key=lambda k: (k[0], CHANNEL_SETS.index(k[1]))
    )
    print(
        f"\n{'method':<11}{'channels':<11}"
        + "".join(f"{s + ' med/worst':>17}" for s in STRUCTURES.values())
        + f"{'|vol err| max':>15}{'time med s':>12}"
    )
    for method, name in keys:
        sel = [r for r in rows if r["method"] == method and r["set"] == name]
        cells = "".join(
            f"{np.median([r[s] for r in sel]):>10.3f}/{min(r[s] for r in sel):.3f}"
            for s in STRUCTURES.values()
        )
        worst_volume = max(abs(r["volume"]) for r in sel)
        times = np.median([r["time"] for r in sel])
        print(f"{method:<11}{name:<11}{cells}{100 * worst_volume:>14.1f}%{times:>12.2f}")
    # goal checks
    by = {(r["case"], r["method"], r["set"]): r for r in rows}
    cases = sorted({r["case"] for r in rows})
    for method in sorted({r["method"] for r in rows}):
        if method == "growcut":
            continue
        drops = []
        for case in cases:
            base = by.get((case, method, "T2"))
            for name in CHANNEL_SETS[1:]:
                other = by.get((case, method, name))
                if base and other:
                    for s in STRUCTURES.values():
                        drops.append((base[s] - other[s], case, name, s))
        if drops:
            worst = max(drops)
            over = sum(1 for d in drops if d[0] > 0.01)
            print(
                f"{method}: adding a channel lowers a Dice by > 0.01 in {over} of {len(drops)} "
                f"(worst {worst[0]:+.3f}: {worst[1]} {worst[2]} {worst[3]})"
            )
        gc = [by.get((case, "growcut", "T2")) for case in cases]
        if all(gc):
            for name in CHANNEL_SETS:
                ours = [by.get((case, method, name)) for case in cases]
                if not all(ours):
                    continue
                below = sum(
                    1
                    for o, g in zip(ours, gc, strict=True)
                    for s in STRUCTURES.values()
                    if o[s] < g[s] - 1e-9
                )
                ratio = np.median([o["time"] / g["time"] for o, g in zip(ours, gc, strict=True)])
                print(
                    f"{method} {name} vs GrowCut T2: below GrowCut in {below} of "
                    f"{3 * len(cases)} (case, structure); time ratio median {ratio:.2f}"
                )


# --------------------------------------------------------------------------------------------
# Real images
# --------------------------------------------------------------------------------------------


def three_slice_strokes(guide: sitk.Image, rng_seed: int, structures=(1,)) -> sitk.Image:
    """Strokes on three axial slices (20 %, 50 %, 80 % of the scored structures' extent).

    The slices span all scored structures (the TPTBox sac runs past its thin cord label: slices
    from the cord's extent alone left the lower third of the sac outside the region). "Other"
    strokes start 1 mm outside the mask, as a user strokes the CSF right around the cord
    (2 mm left that CSF layer, the cord's only neighbour, unstroked).
    """
    arr = sitk.GetArrayFromImage(guide)
    axis = axial_axis_kji(guide)
    extent = np.flatnonzero(
        np.isin(arr, structures).any(axis=tuple(a for a in range(3) if a != axis))
    )
    slices = sorted({int(extent[int(q * (extent.size - 1))]) for q in (0.2, 0.5, 0.8)})
    return strokes_from_labels(
        guide,
        rng_seed=rng_seed,
        structures=structures,
        slice_indices=slices,
        strokes_per_slice=4,
        other_strokes_per_slice=8,
        other_near_mm=6.0,
        other_inset_mm=1.0,
        other_within_mm=15.0,
        near_to=structures,
    )


def real_cases() -> list[tuple[str, sitk.Image, sitk.Image, tuple[int, ...]]]:
    """(name, image, guide labelmap, labels scored together) for every real image with a mask."""
    out = []
    sct = DATA / "sct_errsm30"
    for name, image, mask in (
        ("SCT t2", "t2", "t2_seg-manual"),
        ("SCT t1w", "t1w", "t1w_seg-manual"),
        ("SCT t2s", "t2s", "t2s_seg"),
        ("SCT mt1", "mt1", "mt1_seg"),
    ):
        out.append((name, sct / f"{image}.nii.gz", sct / f"{mask}.nii.gz", "cord"))
    lesion = DATA / "sct_fake_lesion"
    out.append(
        (
            "SCT lesion t2",
            lesion / "t2_fake_lesion.nii.gz",
            lesion / "t2_fake_lesion_sc_seg.nii.gz",
            "cord",
        )
    )
    tpt = DATA / "tptbox_cervical_t2"
    out.append(
        (
            "TPTBox T2 sac",
            tpt / "sub-mri_label-6_T2w.nii.gz",
            tpt / "sub-mri_seg-subreg_label-6_msk.nii.gz",
            "sac",
        )
    )
    cases = []
    for name, image_path, mask_path, kind in out:
        if not image_path.is_file():
            continue
        image = sitk.ReadImage(str(image_path), sitk.sitkFloat32)
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(mask_path)))
        if kind == "cord":
            guide = (mask > 0).astype(np.uint8)
            scored = (1,)
        else:
            guide = np.zeros(mask.shape, dtype=np.uint8)
            guide[mask == 61] = 2
            guide[mask == 60] = 1
            scored = (1, 2)
        guide_image = sitk.GetImageFromArray(guide)
        guide_image.CopyInformation(image)
        cases.append((name, image, guide_image, scored))
    return cases


def real_dice(image, guide, scored, method: str, rng_seed: int) -> tuple[float, float]:
    seeds = three_slice_strokes(guide, rng_seed, structures=scored)
    t0 = time.perf_counter()
    out = _run(method, [image], seeds, [0.0])
    elapsed = time.perf_counter() - t0
    truth = np.isin(sitk.GetArrayFromImage(guide), scored)
    return dice(np.isin(out, scored), truth), elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=1, help="runs per method (median time)")
    parser.add_argument("--methods", default="paths,watershed,plain,growcut")
    parser.add_argument("--no-real", action="store_true")
    parser.add_argument("--draws", type=int, default=3, help="stroke draws per real image")
    parser.add_argument("--battery-seed", type=int, default=0, help="another draw of the cases")
    parser.add_argument(
        "--param", type=parse_param, action="append", default=[], help="NAME=VALUE (paths)"
    )
    args = parser.parse_args()
    global PATH_PARAMETERS
    PATH_PARAMETERS = dataclasses.replace(PathParameters(), **dict(args.param))
    if args.param:
        print("paths parameters changed:", ", ".join(f"{k}={v}" for k, v in args.param))
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)
    methods = [m for m in args.methods.split(",") if m != "growcut" or growcut_available()]
    rows = []
    print(
        f"{'case':<24}{'method':<11}{'channels':<11}{'cord':>7}{'CSF':>7}{'mass':>7}{'vol':>8}{'s':>7}"
    )
    for variation in battery(args.cases, seed=args.battery_seed):
        for r in run_case(variation, methods, args.repeat):
            rows.append(r)
            print(
                f"{r['case']:<24}{r['method']:<11}{r['set']:<11}{r['cord']:7.3f}{r['CSF']:7.3f}"
                f"{r['mass']:7.3f}{100 * r['volume']:7.1f}%{r['time']:7.2f}",
                flush=True,
            )
    summarise(rows)
    if not args.no_real:
        print(f"\nreal images, strokes on three axial slices, worst of {args.draws} draws")
        print(f"{'image':<16}" + "".join(f"{m:>18}" for m in methods))
        for name, image, guide, scored in real_cases():
            cells = []
            for method in methods:
                scores = [real_dice(image, guide, scored, method, rs) for rs in range(args.draws)]
                cells.append(
                    f"{min(s for s, _ in scores):>11.3f} {np.median([t for _, t in scores]):5.2f}s"
                )
            print(f"{name:<16}" + "".join(cells), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
