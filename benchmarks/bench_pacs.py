"""The PACS round trip against the same analysis from local files: ``mescc analyze --from
PACS --study UID --dicom-out D --send PACS`` (retrieve, analyse, export, store) beside
``mescc analyze`` on the study's DICOM folders (the issue's goal: the round trip of the demo
study under 60 s on 2 cores).

    .venv/bin/python benchmarks/bench_pacs.py [--runs 3]

Orthanc (Debian's orthanc package) is started on loopback ports with a throw-away folder and
stopped at the end; each run is its own ``mescc`` process.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MESCCAnalyzer"))
sys.path.insert(0, str(ROOT / "Testing"))

from orthanc import OUR_AET, Orthanc  # noqa: E402

from MESCCAnalyzerLib.export import store  # noqa: E402
from MESCCAnalyzerLib.phantom import write_phantom  # noqa: E402
from MESCCAnalyzerLib.segmentation.seeds import strokes_from_labels  # noqa: E402


def timed(command: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    mescc = str(Path(sys.executable).with_name("mescc"))
    with tempfile.TemporaryDirectory(prefix="bench-pacs.") as tmp:
        root = Path(tmp)
        study = write_phantom(root / "study", "2", 0)
        seeds = root / "seeds.nii.gz"
        labels = sitk.ReadImage(str(study / "labels.nii.gz"))
        sitk.WriteImage(strokes_from_labels(labels, rng_seed=0), str(seeds))
        (root / "orthanc").mkdir()
        pacs = Orthanc(root / "orthanc")
        try:
            pacs.wait_until_ready()
            files = sorted(
                p for n in ("t2_dicom", "ct_dicom", "pet_dicom") for p in (study / n).iterdir()
            )
            datasets = [pydicom.dcmread(p) for p in files]
            store(pacs.node, datasets, calling_aet=OUR_AET)
            uid = str(datasets[0].StudyInstanceUID)
            local, remote = [], []
            for run in range(args.runs):
                local.append(timed([
                    mescc, "-q", "analyze", "--mri", str(study / "t2_dicom"),
                    "--ct", str(study / "ct_dicom"), "--pet", str(study / "pet_dicom"),
                    "--seeds", str(seeds), "--out", str(root / f"local{run}"),
                    "--dicom-out", str(root / f"local{run}_dicom"), "--no-scene",
                ]))  # fmt: skip
                remote.append(timed([
                    mescc, "-q", "analyze", "--from", str(pacs.node), "--study", uid,
                    "--seeds", str(seeds), "--out", str(root / f"remote{run}"),
                    "--dicom-out", str(root / f"remote{run}_dicom"), "--send", str(pacs.node),
                    "--no-scene",
                ]))  # fmt: skip
                print(
                    f"run {run + 1}: local files {local[-1]:.1f} s, PACS round trip {remote[-1]:.1f} s"
                )
        finally:
            pacs.stop()
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    print(
        f"\nmedian of {args.runs}: local {med(local):.1f} s, round trip {med(remote):.1f} s "
        f"(x{med(remote) / med(local):.2f}; goal under 60 s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
