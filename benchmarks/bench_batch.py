"""``mescc batch`` on a local cluster vs the same studies one after the other.

Writes N phantom studies (grades in turn, one seed each, seeds placed from their truth; with
``--spine`` the whole-spine study of ``mescc demo``, seeds 0 to N-1) and a manifest, then
analyses them (without scene.mrb, as the tests do) three times:

* one after the other in this process (``run_analysis`` + ``write_analysis``, what
  ``mescc analyze`` does per study, without its start-up time);
* ``mescc analyze`` per study, in turn (what a user does without ``mescc batch``);
* with ``mescc batch``'s engine on a ``LocalCluster`` of W worker processes (one thread each,
  the memory divided among them), cluster start-up and input hashing included.

Prints the wall times and the speed-up (goal: >= 1.7x for 12 studies on 2 workers, 2 cores)
and, per worker, the studies it ran and its peak resident memory against its limit. The
machine's other load counts: run it on a quiet machine.

    .venv/bin/python benchmarks/bench_batch.py [--studies 12] [--workers 2] [--spine] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import SimpleITK as sitk

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "MESCCAnalyzer"))

from MESCCAnalyzerLib import batch  # noqa: E402
from MESCCAnalyzerLib.cli.batch_cmd import start_local_cluster  # noqa: E402
from MESCCAnalyzerLib.cli.demo_cmd import DEMO_LESIONS, DEMO_LEVELS, demo_strokes  # noqa: E402
from MESCCAnalyzerLib.outputs import write_image  # noqa: E402
from MESCCAnalyzerLib.phantom import GRADES, write_phantom  # noqa: E402
from MESCCAnalyzerLib.phantom.spine import parse_lesions, write_spine_phantom  # noqa: E402
from MESCCAnalyzerLib.pipeline import run_analysis, write_analysis  # noqa: E402
from MESCCAnalyzerLib.segmentation.seeds import strokes_from_labels  # noqa: E402

GOAL_SPEEDUP = 1.7


def write_cohort_inputs(root: Path, n: int, spine: bool = False) -> Path:
    """N phantom studies with seeds, and their manifest (paths relative to it): single-level
    phantoms (grades in turn), or with ``spine`` the whole-spine study of ``mescc demo`` (T1-L1,
    lesions at T5 and T9; seed i), stroked as the demo strokes it."""
    lines = ["id,mri,seeds,t1,ct,pet"]
    for i in range(n):
        if spine:
            grade = "whole spine"
            study = write_spine_phantom(
                root / f"S{i:02d}", DEMO_LEVELS, parse_lesions(DEMO_LESIONS), i
            )
        else:
            grade = GRADES[i % len(GRADES)]
            study = write_phantom(root / f"S{i:02d}", grade, i)
        labels = sitk.ReadImage(str(study / "labels.nii.gz"))
        seeds = demo_strokes(labels, i) if spine else strokes_from_labels(labels, rng_seed=i)
        write_image(seeds, root / f"S{i:02d}_seeds.nii.gz")
        lines.append(
            f"S{i:02d},S{i:02d}/t2.nii.gz,S{i:02d}_seeds.nii.gz,S{i:02d}/t1.nii.gz,"
            f"S{i:02d}/ct.nii.gz,S{i:02d}/pet_dicom"
        )
        print(f"  phantom S{i:02d}: grade {grade}", flush=True)
    manifest = root / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def one_after_the_other(studies, options, out: Path) -> float:
    t0 = time.perf_counter()
    for study in studies:
        write_analysis(run_analysis(options.request(study)), out / study.id)
    return time.perf_counter() - t0


def commands_one_after_the_other(studies, out: Path) -> float:
    """What a user does without ``mescc batch``: ``mescc analyze`` per study, in turn."""
    mescc = str(Path(sys.executable).with_name("mescc"))
    t0 = time.perf_counter()
    for study in studies:
        command = [mescc, "-q", "analyze", "--mri", str(study.mri), "--seeds", str(study.seeds)]
        for name in ("t1", "ct", "pet"):
            if getattr(study, name):
                command += [f"--{name}", str(getattr(study, name))]
        subprocess.run([*command, "--out", str(out / study.id), "--no-scene"], check=True)
    return time.perf_counter() - t0


def on_a_local_cluster(studies, options, out: Path, workers: int):
    t0 = time.perf_counter()
    cluster, client = start_local_cluster(workers, "auto")
    try:
        workers_info = client.scheduler_info(n_workers=-1)["workers"].values()
        limits = [w["memory_limit"] for w in workers_info]
        table = batch.run_batch(studies, client, out, options=options)
    finally:
        client.close()
        cluster.close()
    return time.perf_counter() - t0, table, limits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="keep the studies and outputs here")
    parser.add_argument(
        "--spine",
        action="store_true",
        help="the whole-spine demo study (mescc demo) instead of single-level phantoms",
    )
    args = parser.parse_args()

    root = args.keep or Path(tempfile.mkdtemp(prefix="bench_batch_"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        print(f"writing {args.studies} phantom studies into {root}", flush=True)
        studies = batch.read_manifest(
            write_cohort_inputs(root / "inputs", args.studies, args.spine)
        )
        options = batch.BatchOptions(scene=False)

        print(f"one after the other ... (load average {os.getloadavg()[0]:.1f})", flush=True)
        serial_s = one_after_the_other(studies, options, root / "serial")
        print(
            f"mescc analyze one after the other ... (load average {os.getloadavg()[0]:.1f})",
            flush=True,
        )
        commands_s = commands_one_after_the_other(studies, root / "commands")
        print(f"on {args.workers} workers ... (load average {os.getloadavg()[0]:.1f})", flush=True)
        parallel_s, table, limits = on_a_local_cluster(
            studies, options, root / "batch", args.workers
        )
        assert not table.errors, [(o.id, o.message) for o in table.errors]

        speedup = serial_s / parallel_s
        n = len(studies)
        print(f"\nload average of the machine (1, 5, 15 min): {os.getloadavg()}")
        print()
        print(f"| {n} studies, no scene | wall time (s) | per study (s) | speed-up |")
        print("|---|---|---|---|")
        print(f"| one after the other, one process | {serial_s:.1f} | {serial_s / n:.2f} | 1.00x |")
        print(
            f"| `mescc analyze` one after the other | {commands_s:.1f} | {commands_s / n:.2f} "
            f"| {serial_s / commands_s:.2f}x |"
        )
        print(
            f"| mescc batch, {args.workers} workers | {parallel_s:.1f} | {parallel_s / n:.2f} "
            f"| {speedup:.2f}x |"
        )
        print()
        print("| worker | studies | mean time per study (s) | peak memory (MB) | limit (MB) |")
        print("|---|---|---|---|---|")
        limit_mb = min(limits) / 2**20 if limits and min(limits) else float("inf")
        over = False
        for worker in sorted({o.worker for o in table.outcomes}):
            ran = [o for o in table.outcomes if o.worker == worker]
            peak = max(o.peak_rss_mb for o in ran)
            over |= peak > limit_mb
            mean = sum(o.elapsed_s for o in ran) / len(ran)
            print(f"| {worker} | {len(ran)} | {mean:.2f} | {peak:.0f} | {limit_mb:.0f} |")
        met = speedup >= GOAL_SPEEDUP and not over
        print(
            f"\ngoal: >= {GOAL_SPEEDUP}x and every worker under its limit: "
            + ("met" if met else "NOT met")
            + f" against one process ({speedup:.2f}x); against `mescc analyze` one after the "
            f"other: {commands_s / parallel_s:.2f}x"
        )
        return 0 if met else 1
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
