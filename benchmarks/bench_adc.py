"""``mescc adc`` on a 256 x 256 x 30 series: wall time of the command (Python start-up,
loading, fit, writing), beside DIPY's tensor fit of the same data (its mean diffusivity is
the ADC of an isotropic medium; the tests' independent reference). The goal: under 2 s on
2 cores for 4 volumes (b = 0 and three directions at b = 800).

    .venv/bin/python benchmarks/bench_adc.py [--runs 3]

The series is synthetic: a 256 x 256 x 30 grid (0.9 x 0.9 x 4 mm) of tissue with ADC from
300 to 3000 x 1e-6 mm2/s, S0 1000 and Rician noise (SNR 40 at b = 0), written as a 4D NIfTI
with FSL bval/bvec. DIPY needs six directions: both tools are also timed on a 7-volume series
(b = 0 and six directions).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import SimpleITK as sitk

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "MESCCAnalyzer"))

SIX = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 0], [1, 0, 1], [0, 1, 1]], dtype=float)
SIX /= np.linalg.norm(SIX, axis=1)[:, None]


def write_series(folder: Path, directions: np.ndarray, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    shape = (30, 256, 256)
    adc = np.linspace(300, 3000, shape[2])[None, None, :] * np.ones(shape)  # 1e-6 mm2/s
    bvals = np.concatenate([[0.0], np.full(len(directions), 800.0)])
    volumes = []
    for b in bvals:
        signal = 1000.0 * np.exp(-b * adc * 1e-6)
        noisy = np.hypot(signal + rng.normal(0, 25, shape), rng.normal(0, 25, shape))
        volumes.append(noisy.astype(np.float32))
    image = sitk.JoinSeries([sitk.GetImageFromArray(v) for v in volumes])
    image.SetSpacing((0.9, 0.9, 4.0, 1.0))
    path = folder / f"dwi{len(bvals)}.nii.gz"
    sitk.WriteImage(image, str(path))
    path.with_name(path.name.replace(".nii.gz", ".bval")).write_text(
        " ".join(f"{b:g}" for b in bvals) + "\n"
    )
    vecs = np.vstack([np.zeros(3), directions]).T
    path.with_name(path.name.replace(".nii.gz", ".bvec")).write_text(
        "\n".join(" ".join(f"{v:.6f}" for v in row) for row in vecs) + "\n"
    )
    return path


def time_mescc(path: Path, out: Path) -> float:
    mescc = str(Path(sys.executable).with_name("mescc"))
    t0 = time.perf_counter()
    subprocess.run(
        [mescc, "-q", "adc", str(path), "--out", str(out)], check=True, capture_output=True
    )
    return time.perf_counter() - t0


def time_dipy(path: Path) -> float:
    """DIPY's WLS tensor fit in a fresh process (loading and the fit), mean diffusivity."""
    code = (
        "import sys, nibabel as nib\n"
        "from dipy.core.gradients import gradient_table\n"
        "from dipy.io import read_bvals_bvecs\n"
        "from dipy.reconst.dti import TensorModel\n"
        "p = sys.argv[1]\n"
        "img = nib.load(p); data = img.get_fdata(dtype='float32')\n"
        "bvals, bvecs = read_bvals_bvecs(p.replace('.nii.gz', '.bval'), p.replace('.nii.gz', '.bvec'))\n"
        "fit = TensorModel(gradient_table(bvals, bvecs=bvecs), fit_method='WLS').fit(data, mask=data[..., 0] > 100)\n"
        "fit.md\n"
    )
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    med = lambda xs: sorted(xs)[len(xs) // 2]  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="bench-adc.") as tmp:
        folder = Path(tmp)
        four = write_series(folder, SIX[:3])
        seven = write_series(folder, SIX)
        ours4 = [time_mescc(four, folder / f"a4_{i}.nii.gz") for i in range(args.runs)]
        ours7 = [time_mescc(seven, folder / f"a7_{i}.nii.gz") for i in range(args.runs)]
        dipy7 = [time_dipy(seven) for _ in range(args.runs)]
    print("256 x 256 x 30, median of", args.runs, "runs, each a new process:")
    print(f"  mescc adc, 4 volumes: {med(ours4):.2f} s (goal under 2 s)")
    print(
        f"  7 volumes: mescc adc {med(ours7):.2f} s, DIPY tensor fit {med(dipy7):.2f} s "
        f"(x{med(dipy7) / med(ours7):.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
