"""``mescc analyze`` on the whole-spine phantom (T1-L1, clinical grids, two lesions): wall
time, peak memory and the stage times (the goal: under 60 s and 4 GB on 2 cores).

    .venv/bin/python benchmarks/bench_spine.py [--runs 3]

The study and its seed strokes (``mescc demo``'s: strokes on each structure and each lesion)
are written once, untimed; each run is ``mescc analyze`` in its own process with the T2,
T1, CT, PET (DICOM) and the vertebra labelmap.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MESCCAnalyzer"))

from MESCCAnalyzerLib.cli.demo_cmd import DEMO_LESIONS, DEMO_LEVELS, demo_strokes  # noqa: E402
from MESCCAnalyzerLib.phantom.spine import parse_lesions, write_spine_phantom  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    mescc = Path(sys.executable).with_name("mescc")
    with tempfile.TemporaryDirectory(prefix="bench-spine.") as tmp:
        root = Path(tmp)
        study = write_spine_phantom(root / "study", DEMO_LEVELS, parse_lesions(DEMO_LESIONS), 0)
        labels = sitk.ReadImage(str(study / "labels.nii.gz"))
        seeds = root / "seeds.nii.gz"
        sitk.WriteImage(demo_strokes(labels, 0), str(seeds))
        size = "x".join(map(str, labels.GetSize()))
        print(f"T2 {size} voxels at {labels.GetSpacing()} mm, lesions {DEMO_LESIONS}")
        walls = []
        for run in range(args.runs):
            command = [
                str(mescc), "analyze", "--mri", str(study / "t2.nii.gz"),
                "--t1", str(study / "t1.nii.gz"), "--ct", str(study / "ct.nii.gz"),
                "--pet", str(study / "pet_dicom"), "--seeds", str(seeds),
                "--vertebrae", str(study / "vertebrae.nii.gz"),
                "--out", str(root / f"run{run}"), "--no-scene",
            ]  # fmt: skip
            t0 = time.perf_counter()
            done = subprocess.run(command, capture_output=True, text=True)
            walls.append(time.perf_counter() - t0)
            if done.returncode:
                print(done.stderr)
                return 1
            stages = [line.strip() for line in done.stderr.splitlines() if "done in" in line]
            print(f"run {run + 1}: {walls[-1]:.1f} s; " + "; ".join(stages))
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024**2
        print(
            f"\nmescc analyze, whole spine: median {sorted(walls)[len(walls) // 2]:.1f} s "
            f"over {len(walls)} runs, peak memory {peak_gb:.2f} GB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
