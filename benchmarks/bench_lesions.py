"""The multi-lesion battery: per-lesion grade, MSCC, volume and levels against the truth.

Whole-spine phantoms T2-T12 on the clinical T2 grid (0.6 x 0.6 mm in plane, 3 mm slices),
four lesions each at random levels with random grades (``random_lesions``), measured from the
phantom's labels with its VerSe labelmap and the MRI they lie on (``--mri t2``, the default:
the cord's outline from its partial volume; ``t1``; ``none``: the labels alone, whole voxels).
``Testing/test_lesions.py`` runs seeds 0-5 with the T2.

    .venv/bin/python benchmarks/bench_lesions.py              # seeds 0-9 (40 lesions)
    .venv/bin/python benchmarks/bench_lesions.py --seeds 20 --first 10 --mri none

Prints one row per lesion and a summary.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MESCCAnalyzer"))

from MESCCAnalyzerLib.measure.metrics import LevelSource, compute_metrics  # noqa: E402
from MESCCAnalyzerLib.phantom.spine import (  # noqa: E402
    SpineGrids,
    make_spine_phantom,
    random_lesions,
)

GRIDS = SpineGrids(
    mri_spacing_mm=(0.6, 0.6, 3.0), ct_spacing_mm=(2.0, 2.0, 2.0), pet_spacing_mm=(4.0, 4.0, 4.0)
)


def reached(study, lesion: dict) -> list[str]:
    lo, hi = lesion["s_range_mm"]
    return [
        v["name"]
        for v in study.truth["levels"]
        if min(hi, v["s_range_mm"][1]) > max(lo, v["s_range_mm"][0])
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=10, help="how many studies (default 10)")
    parser.add_argument("--first", type=int, default=0, help="the first seed (default 0)")
    parser.add_argument("--mri", choices=("t2", "t1", "none"), default="t2")
    args = parser.parse_args(argv)
    print(
        "seed  level  grade (truth/ours)  MSCC truth  ours   diff  volume err %  levels (ours | truth)  metrics s"
    )
    mscc, volume, grades, names = [], [], [], []
    for seed in range(args.first, args.first + args.seeds):
        study = make_spine_phantom(("T2", "T12"), random_lesions(seed), seed, grids=GRIDS)
        mri = None if args.mri == "none" else getattr(study, args.mri)
        t0 = time.perf_counter()
        m = compute_metrics(
            study.labels, mri=mri, levels=LevelSource(vertebrae=study.vertebrae)
        ).metrics
        elapsed = time.perf_counter() - t0
        for truth in study.truth["lesions"]:
            mine = next(x for x in m["lesions"] if x["id"] == truth["id"])
            d = mine["mscc_percent"] - truth["mscc_percent"]
            v = 100 * (mine["mass_volume_ml"] / truth["volume_ml"] - 1)
            mscc.append(d)
            volume.append(v)
            grades.append(mine["bilsky_grade"] == truth["grade"])
            names.append(
                truth["level"] in mine["levels"]
                and set(mine["levels"]) <= set(reached(study, truth))
            )
            print(
                f"{seed:>4}  {truth['level']:>5}  {truth['grade']:>5} / {mine['bilsky_grade']:<5}"
                f"   {truth['mscc_percent']:9.1f} {mine['mscc_percent']:6.1f} {d:6.1f}"
                f"  {v:12.1f}  {','.join(mine['levels'])} | {','.join(reached(study, truth))}"
                f"  {elapsed:8.1f}",
                flush=True,
            )
    mscc, volume = np.abs(mscc), np.abs(volume)
    print(
        f"\n{len(grades)} lesions (MRI: {args.mri}): grade exact {sum(grades)}/{len(grades)}, levels right "
        f"{sum(names)}/{len(names)}; |MSCC error| median {np.median(mscc):.1f}, max "
        f"{mscc.max():.1f} points ({np.count_nonzero(mscc > 5)} over 5); |volume error| "
        f"median {np.median(volume):.1f} %, max {volume.max():.1f} %"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
