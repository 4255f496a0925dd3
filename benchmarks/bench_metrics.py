"""Benchmarks of ``mescc metrics``: agreement with Slicer's closed-surface conversion, speed on
a 512 x 512 x 200 labelmap, and the real-MRI CSA plot for the documentation.

    .venv/bin/python benchmarks/bench_metrics.py            # all three
    .venv/bin/python benchmarks/bench_metrics.py --only slicer|speed|phantom|plot
    .venv/bin/python benchmarks/bench_metrics.py --only phantom --seeds 8   # seeds 0-7

Prints side-by-side tables; the plot goes to docs/images/real_mri_csa.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MESCCAnalyzer"))

from MESCCAnalyzerLib import phantom  # noqa: E402
from MESCCAnalyzerLib.measure import surfaces  # noqa: E402
from MESCCAnalyzerLib.measure.metrics import _mask, compute_metrics, read_labels, write_metrics  # noqa: E402


def phantom_labels(grade: str = "2", seed: int = 0) -> sitk.Image:
    return phantom.make_phantom(grade, seed).labels


# ---------------------------------------------------------------------------------------
def bench_slicer(labels: sitk.Image) -> list[tuple]:
    """Volume and area of our surfaces vs Slicer's binary-labelmap -> closed-surface rule."""
    import slicer

    from MESCCAnalyzerLib.mrml.nodes import add_volume_node

    scene = slicer.vtkMRMLScene()
    logic = slicer.vtkSlicerSegmentationsModuleLogic()  # registers the conversion rules
    logic.SetMRMLScene(scene)
    rows = []
    structures = {"cord": [1], "thecal sac": [1, 2], "mass": [3], "bone": [4]}
    for name, values in structures.items():
        mask = _mask(labels, values)
        node = add_volume_node(scene, mask, name, labelmap=True)
        seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode")
        if not logic.ImportLabelmapToSegmentationNode(node, seg):
            raise RuntimeError("Slicer could not import the labelmap")
        seg.CreateClosedSurfaceRepresentation()  # default: smoothing factor 0.5, no decimation
        poly = seg.GetClosedSurfaceInternalRepresentation(seg.GetSegmentation().GetNthSegmentID(0))
        mp = __import__("vtk").vtkMassProperties()
        mp.SetInputData(poly)
        mp.Update()
        ours = surfaces.mask_surface(mask)
        voxels = float(sitk.GetArrayViewFromImage(mask).sum() * np.prod(mask.GetSpacing()))
        rows.append(
            (
                name,
                surfaces.surface_volume_mm3(ours),
                mp.GetVolume(),
                voxels,
                surfaces.surface_area_mm2(ours),
                mp.GetSurfaceArea(),
            )
        )
    print(
        "\nSurfaces vs Slicer closed-surface conversion (slicer-core, smoothing factor 0.5), phantom grade 2 seed 0"
    )
    print(
        f"{'structure':<11} {'V ours mm3':>11} {'V Slicer':>10} {'dV %':>6} {'V voxels':>10} {'A ours mm2':>11} {'A Slicer':>10} {'dA %':>6}"
    )
    for name, v, vs, vv, a, as_ in rows:
        print(
            f"{name:<11} {v:11.1f} {vs:10.1f} {100 * (v / vs - 1):6.2f} {vv:10.1f} {a:11.1f} {as_:10.1f} {100 * (a / as_ - 1):6.2f}"
        )
    return rows


# ---------------------------------------------------------------------------------------
def big_labelmap(size=(512, 512, 200), spacing=(0.45, 0.45, 0.6)) -> sitk.Image:
    """The phantom's labelmap resampled (nearest) onto a 512 x 512 x 200 grid, FOV 230 x 230 x 120 mm."""
    small = phantom_labels("2", 0)
    ref = sitk.Image([int(s) for s in size], sitk.sitkUInt8)
    ref.SetSpacing(spacing)
    centre = np.asarray(
        small.TransformContinuousIndexToPhysicalPoint([(s - 1) / 2 for s in small.GetSize()])
    )
    ref.SetOrigin(tuple(centre - (np.asarray(size) - 1) / 2 * np.asarray(spacing)))
    return sitk.Resample(small, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)


def bench_speed(repeats: int = 3) -> dict:
    from MESCCAnalyzerLib import cli

    labels = big_labelmap()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "labels_512x512x200.nii.gz"
        sitk.WriteImage(labels, str(path))
        runs = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            img = read_labels(path)
            t_load = time.perf_counter() - t0
            result = compute_metrics(img)
            t1 = time.perf_counter()
            write_metrics(result, Path(tmp) / "out")
            t_write = time.perf_counter() - t1
            stages = {"load": t_load, **result.timings_s, "write": t_write}
            runs.append(stages)
        t0 = time.perf_counter()
        code = cli.main(
            ["--quiet", "metrics", "--labels", str(path), "--out", str(Path(tmp) / "cli")]
        )
        cli_s = time.perf_counter() - t0
    assert code == 0
    best = {k: min(r[k] for r in runs) for k in runs[0]}
    total = [sum(r.values()) for r in runs]
    print(
        f"\nmescc metrics on a 512 x 512 x 200 labelmap (0.45 x 0.45 x 0.6 mm), {os.cpu_count()} CPU cores, best of {repeats}"
    )
    print(f"{'stage':<12} {'seconds':>8}")
    for k, v in best.items():
        print(f"{k:<12} {v:8.3f}")
    print(
        f"{'total':<12} {min(total):8.3f}   (runs: {', '.join(f'{t:.2f}' for t in total)}; whole CLI incl. imports: {cli_s:.2f} s; budget 5 s)"
    )
    print(
        f"grade {result.metrics['bilsky_grade']}, MSCC {result.metrics['mscc_percent']:.1f} %, {result.metrics['sections']} sections"
    )
    return best


# ---------------------------------------------------------------------------------------
def bench_plot(data: Path, out_png: Path) -> None:
    """CSA and AP diameter along the cord of the real cervical MRI (SCT errsm30), T2 and T1."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from MESCCAnalyzerLib.measure import centerline, compression

    fig, axes = plt.subplots(2, 1, figsize=(7.5, 6.0), sharex=True)
    print(
        "\nReal MRI (SCT errsm30, manual cord masks): cross-sections perpendicular to the centreline"
    )
    print(
        f"{'image':<8} {'sections':>8} {'CSA min':>8} {'median':>8} {'max':>8} {'max jump %':>11}"
    )
    for name, file, colour in (
        ("T2", "t2_seg-manual.nii.gz", "tab:orange"),
        ("T1", "t1w_seg-manual.nii.gz", "tab:blue"),
    ):
        mask = sitk.Cast(sitk.ReadImage(str(data / "sct_errsm30" / file)) > 0, sitk.sitkUInt8)
        line = centerline.fit_centerline(mask)
        s = compression.measure_sections(mask, line)
        v = s.valid
        z = s.centre_lps[v, 2]
        axes[0].plot(
            z, s.cord_csa_mm2[v], "-o", ms=2.5, color=colour, label=f"{name} (1 mm, manual mask)"
        )
        axes[1].plot(z, s.cord_ap_mm[v], "-o", ms=2.5, color=colour, label=f"{name} AP")
        axes[1].plot(z, s.cord_transverse_mm[v], "--", color=colour, label=f"{name} transverse")
        jump = np.max(np.abs(np.diff(s.cord_csa_mm2[v])) / s.cord_csa_mm2[v][1:]) * 100
        csa = s.cord_csa_mm2[v]
        print(
            f"{name:<8} {v.sum():8d} {csa.min():8.1f} {np.median(csa):8.1f} {csa.max():8.1f} {jump:11.1f}"
        )
    axes[0].axhspan(55, 95, color="0.9", zorder=0, label="published adult C2-C5 range")
    axes[0].set_ylabel("cord CSA (mm²)")
    axes[0].legend(fontsize=8, loc="lower right")
    axes[0].set_title(
        "Healthy cervical cord (SCT errsm30): cross-sections perpendicular to the centreline"
    )
    axes[1].set_ylabel("diameter (mm)")
    axes[1].set_xlabel("superior position of the section centre, S (mm, LPS)")
    axes[1].legend(fontsize=8, ncol=2, loc="center right")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    print(f"plot: {out_png}")


def bench_phantom(seeds=(0, 1, 2)) -> None:
    """The phantom battery: measured vs truth.json for every grade and seed."""
    print("\nPhantom battery: compute_metrics(labels) vs truth.json (analytic)")
    print(
        f"{'grade':<6}{'seed':>5} {'graded':>7} {'MSCC %':>7} {'truth':>7} {'CSA ratio':>10} {'truth':>7} {'MCC %':>7} {'truth':>7} {'mass ml':>8} {'truth':>7} {'s':>5}"
    )
    worst = {"mscc": 0.0, "ratio": 0.0}
    compressed = []  # MSCC errors where the truth has the cord compressed (grades 2 and 3)
    for grade in phantom.GRADES:
        for seed in seeds:
            study = phantom.make_phantom(grade, seed)
            t0 = time.perf_counter()
            m = compute_metrics(study.labels).metrics
            el = time.perf_counter() - t0
            t = study.truth
            worst["mscc"] = max(worst["mscc"], abs(m["mscc_percent"] - t["mscc_percent"]))
            worst["ratio"] = max(worst["ratio"], abs(m["cord_csa_ratio"] - t["cord_csa_ratio"]))
            if grade in ("2", "3"):
                compressed.append(m["mscc_percent"] - t["mscc_percent"])
            print(
                f"{grade:<6}{seed:>5} {m['bilsky_grade']:>7} {m['mscc_percent']:7.1f} {t['mscc_percent']:7.1f} "
                f"{m['cord_csa_ratio']:10.3f} {t['cord_csa_ratio']:7.3f} {m['mcc_percent']:7.1f} {t['mcc_percent']:7.1f} "
                f"{m['mass_volume_ml']:8.2f} {t['mass_volume_ml']:7.2f} {el:5.2f}"
            )
    print(
        f"largest |MSCC error| {worst['mscc']:.1f} points, largest |CSA ratio error| {100 * worst['ratio']:.1f} points"
    )
    if compressed:
        print(
            f"grades 2-3: MSCC error mean {np.mean(compressed):+.1f} points, "
            f"largest |error| {np.max(np.abs(compressed)):.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("slicer", "speed", "plot", "phantom"))
    parser.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    parser.add_argument("--plot", default=str(ROOT / "docs" / "images" / "real_mri_csa.png"))
    parser.add_argument(
        "--seeds", type=int, default=3, help="phantom seeds 0..N-1 per grade (default 3)"
    )
    args = parser.parse_args()
    if args.only in (None, "slicer"):
        bench_slicer(phantom_labels("2", 0))
    if args.only in (None, "speed"):
        bench_speed()
    if args.only in (None, "phantom"):
        bench_phantom(range(args.seeds))
    if args.only in (None, "plot"):
        bench_plot(Path(args.data), Path(args.plot))


if __name__ == "__main__":
    main()
