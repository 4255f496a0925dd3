"""Grow from seeds: ours (SeedGrower, issue 16's shortest paths, told the PET's resolution),
the marker watershed it replaced, Slicer's GrowCut (vtkImageGrowCutSegment) and a plain
SimpleITK watershed.

Same inputs in one run: the phantom (T2 + PET on the T2 grid, strokes from the truth) at a
given grade, optionally upsampled in-plane to reach a ~200x200x60 region. Prints Dice of cord,
CSF, mass and the time of the first run and of an update after one more mass stroke.

    .venv/bin/python benchmarks/bench_segmentation.py [--grade 2] [--upsample 2] [--threads 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MESCCAnalyzer"))

from MESCCAnalyzerLib.phantom import make_phantom  # noqa: E402
from MESCCAnalyzerLib.segmentation.grow import SeedGrower, dice  # noqa: E402
from MESCCAnalyzerLib.segmentation.seeds import add_stroke, strokes_from_labels  # noqa: E402
from MESCCAnalyzerLib.segmentation.watershed import WatershedGrower  # noqa: E402


def _vtk_image(arr, vtk_type):
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


class GrowCut:
    """Slicer's Grow from seeds engine; keeps the filter so that an update is incremental."""

    def __init__(self, intensity: np.ndarray):
        import slicer
        import vtk

        self.vtk = vtk
        self.filter = slicer.vtkImageGrowCutSegment()
        self.filter.SetIntensityVolume(_vtk_image(intensity.astype(np.float32), vtk.VTK_FLOAT))

    def grow(self, seeds: np.ndarray) -> np.ndarray:
        from vtk.util import numpy_support

        self.filter.SetSeedLabelVolume(_vtk_image(seeds.astype(np.int16), self.vtk.VTK_SHORT))
        self.filter.Update()
        out = numpy_support.vtk_to_numpy(self.filter.GetOutput().GetPointData().GetScalars())
        return out.reshape(seeds.shape)


def watershed(edge: sitk.Image, seeds: np.ndarray) -> np.ndarray:
    markers = sitk.GetImageFromArray(seeds.astype(np.uint16))
    markers.CopyInformation(edge)
    return sitk.GetArrayFromImage(
        sitk.MorphologicalWatershedFromMarkers(
            edge, markers, markWatershedLine=False, fullyConnected=False
        )
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grade", default="2")
    parser.add_argument(
        "--upsample", type=int, default=2, help="in-plane upsampling of the phantom (2: 220x220x56)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rng", type=int, default=0)
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs per method; the best time is shown"
    )
    args = parser.parse_args()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(args.threads)

    study = make_phantom(grade=args.grade, seed=0)
    t2, labels = study.t2, study.labels
    pet = sitk.Resample(study.pet_suv, t2, study.mri_to_ct, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    pet_native = study.pet_suv
    if args.upsample > 1:
        f = args.upsample
        ref = sitk.Image(
            [t2.GetSize()[0] * f, t2.GetSize()[1] * f, t2.GetSize()[2]], sitk.sitkFloat32
        )
        ref.SetSpacing((t2.GetSpacing()[0] / f, t2.GetSpacing()[1] / f, t2.GetSpacing()[2]))
        ref.SetDirection(t2.GetDirection())
        ref.SetOrigin(
            t2.TransformContinuousIndexToPhysicalPoint((-0.5 + 0.5 / f, -0.5 + 0.5 / f, 0.0))
        )
        t2 = sitk.Resample(t2, ref, sitk.Transform(), sitk.sitkLinear)
        pet = sitk.Resample(pet, ref, sitk.Transform(), sitk.sitkLinear)
        labels = sitk.Resample(
            labels, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
        )
    truth = sitk.GetArrayFromImage(labels)
    seeds_img = strokes_from_labels(labels, rng_seed=args.rng)
    more_img = add_stroke(seeds_img, labels, 3, rng_seed=args.rng + 1)
    seeds, more = sitk.GetArrayFromImage(seeds_img), sitk.GetArrayFromImage(more_img)
    print(
        f"grade {args.grade}: {'x'.join(map(str, t2.GetSize()))} voxels ({truth.size / 1e6:.2f} M), {args.threads} threads"
    )

    rows = []

    def record(name, make):
        """``make()`` returns (first_fn, update_fn) on fresh state; times are the best of
        ``--repeat`` runs (the machine is shared), Dice from the last run."""
        t_first, t_update = [], []
        for _ in range(args.repeat):
            first_fn, update_fn = make()
            t0 = time.perf_counter()
            first = first_fn()
            t1 = time.perf_counter()
            updated = update_fn()
            t_first.append(t1 - t0)
            t_update.append(time.perf_counter() - t1)
        d0 = [dice(first == label, truth == label) for label in (1, 2, 3)]
        d = [dice(updated == label, truth == label) for label in (1, 2, 3)]
        rows.append((name, d0, d, min(t_first), min(t_update)))

    for channels, name in (([t2, pet], "ours T2+PET"), ([t2], "ours T2")):

        def make_ours(channels=channels):
            # the PET was resampled from its own voxels: the grower is told their size
            resolution = [max(pet_native.GetSpacing()) if c is pet else 0.0 for c in channels]
            grower = SeedGrower(channels, resolution_mm=resolution)
            return (
                lambda: sitk.GetArrayFromImage(grower.grow(seeds_img)),
                lambda: sitk.GetArrayFromImage(grower.grow(more_img)),
            )

        record(name, make_ours)

    for channels, name in (([t2, pet], "watershed T2+PET"), ([t2], "watershed T2")):

        def make_paths(channels=channels):
            grower = WatershedGrower(channels)
            return (
                lambda: sitk.GetArrayFromImage(grower.grow(seeds_img)),
                lambda: sitk.GetArrayFromImage(grower.grow(more_img)),
            )

        record(name, make_paths)

    t2_array = sitk.GetArrayFromImage(t2)

    def make_growcut():
        gc = GrowCut(t2_array)
        return (lambda: gc.grow(seeds), lambda: gc.grow(more))

    record("GrowCut T2 (Slicer)", make_growcut)

    def make_watershed():
        holder = {}

        def first():
            holder["edge"] = sitk.GradientMagnitudeRecursiveGaussian(
                sitk.Cast(t2, sitk.sitkFloat32), 0.5
            )
            return watershed(holder["edge"], seeds)

        return (first, lambda: watershed(holder["edge"], more))

    record("SimpleITK watershed T2", make_watershed)

    print(
        f"{'method':<24} {'cord':>6} {'CSF':>6} {'mass':>6}   {'(after update)':<22} {'first s':>8} {'update s':>9}"
    )
    for name, d0, d, t_first, t_update in rows:
        print(
            f"{name:<24} {d0[0]:6.3f} {d0[1]:6.3f} {d0[2]:6.3f}   {d[0]:6.3f} {d[1]:6.3f} {d[2]:6.3f}   {t_first:8.2f} {t_update:9.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
