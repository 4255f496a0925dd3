"""Registration benchmark: our rigid registration against itk-elastix's default rigid map.

Same image pairs, one run, side by side: target registration error (TRE, mean distance
between the estimated and the true mapping of the fixed region's voxel centres) and wall
time. Cases:

* ``t2-same``: the real T2 of ``sct_errsm30`` (60x55x52, 1 mm) moved through N random rigid
  transforms (up to 10 deg about a random axis and 15 mm);
* ``t2-contrast``: the same with an inverted non-linear contrast, noise and 1.3 mm voxels;
* ``phantom``: the phantom's CT (own scanner frame) to its T2, a few seeds;
* ``typical``: the phantom resampled to a typical study size, MRI 512x512x40 and CT
  512x512x200 (one run; only our time is required to stay under 15 s on 2 cores).

Pass = TRE below 1 mm and below half a voxel (cube edge) of the coarser image.

Run: ``.venv/bin/pip install -r benchmarks/requirements.txt`` then
``.venv/bin/python benchmarks/bench_registration.py [--n 20] [--no-elastix] [--no-typical]
[--cases phantom ...] [--sampling-seeds K]``.
elastix is used with ``GetDefaultParameterMap("rigid")``, only ``WriteResultImage`` set to
false (we do not resample either) and ``RandomSeed`` written out (its default, 121212, unless
``--sampling-seeds`` asks for more); both programs use all cores of the machine (2 on the
reference machine).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MESCCAnalyzer"))
sys.path.insert(0, str(ROOT / "Testing"))

from perturbations import contrast_changed, moved_copy, random_rigid  # noqa: E402

from MESCCAnalyzerLib import geometry  # noqa: E402
from MESCCAnalyzerLib import registration as reg  # noqa: E402
from MESCCAnalyzerLib.phantom import make_phantom  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


# --------------------------------------------------------------------------- elastix


class Elastix:
    """itk-elastix with the default rigid parameter map (imported once, outside the timings)."""

    DEFAULT_SEED = 121212  # elastix's own default RandomSeed

    def __init__(self):
        import itk

        self.itk = itk
        self.set_seed(self.DEFAULT_SEED)

    def set_seed(self, seed: int) -> None:
        """The default rigid map with ``RandomSeed`` set (the sampler's random points)."""
        params = self.itk.ParameterObject.New()
        rigid = params.GetDefaultParameterMap("rigid")
        rigid["WriteResultImage"] = ["false"]
        rigid["RandomSeed"] = [str(seed)]
        params.AddParameterMap(rigid)
        self.params = params

    def to_itk(self, image: sitk.Image):
        arr = sitk.GetArrayFromImage(sitk.Cast(image, sitk.sitkFloat32))
        out = self.itk.image_from_array(arr)
        out.SetOrigin(image.GetOrigin())
        out.SetSpacing(image.GetSpacing())
        out.SetDirection(self.itk.matrix_from_array(geometry.direction_matrix(image)))
        return out

    def register(
        self, fixed: sitk.Image, moving: sitk.Image
    ) -> tuple[sitk.Transform, float, float]:
        f, m = self.to_itk(fixed), self.to_itk(moving)
        t0 = time.perf_counter()
        c0 = time.process_time()
        _result, tparams = self.itk.elastix_registration_method(
            f, m, parameter_object=self.params, log_to_console=False
        )
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - c0
        pmap = tparams.GetParameterMap(tparams.GetNumberOfParameterMaps() - 1)
        p = [float(v) for v in pmap["TransformParameters"]]
        centre = [float(v) for v in pmap["CenterOfRotationPoint"]]
        t = sitk.Euler3DTransform()
        t.SetCenter(centre)
        if "ComputeZYX" in pmap and pmap["ComputeZYX"][0] == "true":
            t.SetComputeZYX(True)
        t.SetRotation(*p[:3])
        t.SetTranslation(p[3:6])
        return t, elapsed, cpu


# --------------------------------------------------------------------------- cases


def t2_cases(n: int, contrast: bool):
    t2 = sitk.ReadImage(str(DATA / "sct_errsm30" / "t2.nii.gz"))
    points = reg.mask_points_lps(sitk.Cast(t2 > 50, sitk.sitkUInt8))
    centre = geometry.index_to_lps(t2, (np.array(t2.GetSize())[None, :] - 1) / 2.0)[0]
    rng = np.random.default_rng(3 if contrast else 1)
    source = contrast_changed(t2, 2) if contrast else t2
    for i in range(n):
        truth = random_rigid(rng, max_angle_deg=10.0, max_shift_mm=15.0, center_lps=centre)
        moving = moved_copy(
            source, truth, spacing_mm=(1.3, 1.3, 1.3) if contrast else None, pad_mm=5.0
        )
        yield f"{i}", t2, moving, truth, points


def phantom_cases(seeds):
    for seed in seeds:
        st = make_phantom("2", seed)
        points = reg.mask_points_lps(sitk.Cast(st.labels > 0, sitk.sitkUInt8))
        yield f"seed {seed}", st.t2, st.ct, st.mri_to_ct, points


def regrid(image: sitk.Image, size) -> sitk.Image:
    """The same field of view on a finer grid of ``size`` voxels (linear interpolation)."""
    extent = np.array(image.GetSize()) * np.array(image.GetSpacing())
    spacing = extent / np.array(size)
    ref = sitk.Image([int(s) for s in size], sitk.sitkInt16)
    ref.SetSpacing(tuple(spacing))
    ref.SetDirection(image.GetDirection())
    direction = geometry.direction_matrix(image)
    ref.SetOrigin(
        tuple(
            np.array(image.GetOrigin())
            + direction @ (0.5 * (spacing - np.array(image.GetSpacing())))
        )
    )
    low = float(sitk.MinimumMaximum(image)[0])
    return sitk.Resample(image, ref, sitk.Transform(), sitk.sitkLinear, low, sitk.sitkInt16)


def typical_case():
    st = make_phantom("2", 0)
    points = reg.mask_points_lps(sitk.Cast(st.labels > 0, sitk.sitkUInt8))
    mri = regrid(st.t2, (512, 512, 40))
    ct = regrid(st.ct, (512, 512, 200))
    yield "512x512x40 / 512x512x200", mri, ct, st.mri_to_ct, points


# --------------------------------------------------------------------------- runner


def bound_mm(fixed, moving) -> float:
    return min(1.0, 0.5 * max(geometry.voxel_size_mm(fixed), geometry.voxel_size_mm(moving)))


def run_case(name, cases, elastix, rows, verbose, settings=None):
    results = []
    for label, fixed, moving, truth, points in cases:
        bound = bound_mm(fixed, moving)
        t0 = time.perf_counter()
        c0 = time.process_time()
        try:
            ours = reg.register(fixed, moving, settings=settings)
            our_tre = reg.tre_mm(ours.transform, truth, points)
        except Exception as exc:  # a failure counts as a miss, with its reason
            our_tre = float("inf")
            print(f"  {name} {label}: ours failed: {exc}", file=sys.stderr)
        our_s = time.perf_counter() - t0
        our_cpu = time.process_time() - c0
        el_tre = el_s = el_cpu = float("nan")
        if elastix is not None:
            try:
                t_el, el_s, el_cpu = elastix.register(fixed, moving)
                el_tre = reg.tre_mm(t_el, truth, points)
            except Exception as exc:
                el_tre = float("inf")
                print(f"  {name} {label}: elastix failed: {exc}", file=sys.stderr)
        results.append((our_tre, el_tre, our_s, el_s, our_cpu, bound, el_cpu))
        if verbose:
            print(
                f"  {name:12s} {label:26s} ours {our_tre:7.3f} mm {our_s:6.2f} s ({our_cpu:5.2f} cpu) | "
                f"elastix {el_tre:7.3f} mm {el_s:6.2f} s ({el_cpu:5.2f} cpu) | bound {bound:.3f}"
            )
    r = np.array(results, dtype=float)
    rows.append(
        {
            "case": name,
            "n": len(r),
            "our_pass": float(np.mean(r[:, 0] < r[:, 5])),
            "el_pass": float(np.mean(r[:, 1] < r[:, 5])) if elastix else float("nan"),
            "our_tre": float(np.median(r[:, 0])),
            "el_tre": float(np.median(r[:, 1])),
            "our_max": float(np.max(r[:, 0])),
            "el_max": float(np.max(r[:, 1])),
            "our_s": float(np.mean(r[:, 2])),
            "el_s": float(np.mean(r[:, 3])),
            "our_cpu": float(np.mean(r[:, 4])),
            "el_cpu": float(np.mean(r[:, 6])),
        }
    )


def print_table(rows):
    """case, TRE (median / max) and pass rate of both, mean wall and CPU seconds, time ratio."""
    head = (
        f"{'case':12s} {'n':>3s} | {'ours TRE med/max mm':>19s} {'pass':>5s} | {'elastix TRE med/max':>19s} {'pass':>5s} | "
        f"{'ours s':>6s} {'cpu':>5s} | {'elastix s':>9s} {'cpu':>5s} | {'ratio':>5s} {'cpu':>5s}"
    )
    print(head)
    print("-" * len(head))
    for row in rows:
        ratio = row["our_s"] / row["el_s"] if row["el_s"] > 0 else float("nan")
        ratio_cpu = row["our_cpu"] / row["el_cpu"] if row["el_cpu"] > 0 else float("nan")
        print(
            f"{row['case']:12s} {row['n']:3d} | {row['our_tre']:8.3f} / {row['our_max']:8.3f} {100 * row['our_pass']:4.0f}% | "
            f"{row['el_tre']:8.3f} / {row['el_max']:8.3f} {100 * row['el_pass']:4.0f}% | "
            f"{row['our_s']:6.2f} {row['our_cpu']:5.2f} | {row['el_s']:9.2f} {row['el_cpu']:5.2f} | {ratio:5.2f} {ratio_cpu:5.2f}"
        )
    print(
        "ratio = our time / elastix time (wall, then CPU); pass = TRE < min(1 mm, half the coarser voxel)"
    )


def print_seed_summary(rows, k: int) -> None:
    """Per case, the spread of the median TRE and of the time ratio over the ``k`` sampler seeds."""
    print(f"over {k} sampler seeds (#0 = each program's default):")
    cases = dict.fromkeys(row["case"].rsplit(" #", 1)[0] for row in rows)
    for case in cases:
        group = [row for row in rows if row["case"].rsplit(" #", 1)[0] == case]
        ours = np.array([row["our_tre"] for row in group])
        theirs = np.array([row["el_tre"] for row in group])
        ratio = np.array([row["our_s"] / row["el_s"] for row in group])
        print(
            f"  {case:12s} median TRE ours {np.median(ours):.3f} ({ours.min():.3f}-{ours.max():.3f}), "
            f"elastix {np.median(theirs):.3f} ({theirs.min():.3f}-{theirs.max():.3f}); "
            f"time ratio {np.median(ratio):.2f} ({ratio.min():.2f}-{ratio.max():.2f})"
        )


CASES = {  # name -> the (label, fixed, moving, truth, points) pairs, from the parsed arguments
    "t2-same": lambda args: t2_cases(args.n, contrast=False),
    "t2-contrast": lambda args: t2_cases(args.n, contrast=True),
    "phantom": lambda args: phantom_cases(args.seeds),
    "typical": lambda args: typical_case(),
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--n", type=int, default=20, help="random perturbations per T2 case (default 20)"
    )
    parser.add_argument("--no-elastix", action="store_true", help="our registration only")
    parser.add_argument("--no-typical", action="store_true", help="skip the typical-size case")
    parser.add_argument(
        "--cases",
        nargs="+",
        choices=CASES,
        default=list(CASES),
        help="which cases to run (default all; --no-typical removes typical)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="*", default=list(range(20)), help="phantom seeds (default 0-19)"
    )
    parser.add_argument(
        "--sampling-seeds",
        type=int,
        default=1,
        metavar="K",
        help="repeat each case with K seeds of both programs' random samplers (default 1: "
        "each program's default seed); the TRE of a sampled metric moves with its sample set",
    )
    parser.add_argument("--verbose", "-v", action="store_true", help="one line per registration")
    args = parser.parse_args(argv)
    if args.sampling_seeds < 1:
        parser.error("--sampling-seeds must be at least 1")
    elastix = None
    if not args.no_elastix:
        try:
            elastix = Elastix()
        except ImportError:
            print(
                "itk-elastix is not installed: pip install -r benchmarks/requirements.txt (or use --no-elastix)",
                file=sys.stderr,
            )
            return 2
    print(
        f"cores: {os.cpu_count()}, SimpleITK threads: {sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()}"
    )
    rows = []
    default_seed = reg.RegistrationSettings().seed
    for name, pairs in CASES.items():
        if name not in args.cases or (name == "typical" and args.no_typical):
            continue
        cases = list(pairs(args))
        for k in range(args.sampling_seeds):
            if elastix is not None:
                elastix.set_seed(Elastix.DEFAULT_SEED + k)
            run_case(
                name if args.sampling_seeds == 1 else f"{name} #{k}",
                cases,
                elastix,
                rows,
                args.verbose,
                settings=reg.RegistrationSettings(seed=default_seed + k),
            )
    print_table(rows)
    if args.sampling_seeds > 1:
        print_seed_summary(rows, args.sampling_seeds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
