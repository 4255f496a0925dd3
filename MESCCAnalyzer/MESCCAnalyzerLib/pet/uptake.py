"""PET uptake of the mass: SUVmax, SUVpeak (PERCIST), SUVmean, MTV and TLG.

* ``suv_max``: the highest voxel SUV inside the mass label.
* ``suv_peak``: the highest mean SUV of a 1 cm3 sphere (radius 6.2 mm; the voxels whose
  centres lie within it) centred on a voxel of the mass (Wahl et al., PERCIST 1.0, J Nucl
  Med 2009;50:122S). Voxels of the sphere outside the image are left out of the mean.
* ``mtv_ml``: metabolic tumour volume, the mass voxels with SUV >= 41 % of SUVmax (EANM
  guideline, Boellaard et al., Eur J Nucl Med Mol Imaging 2015;42:328), in ml.
* ``suv_mean``: mean SUV over the MTV; ``tlg`` = suv_mean x mtv_ml (total lesion glycolysis,
  SUV x ml).

The SUV image must be on the labelmap's grid (same size, origin, spacing and direction).
"""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from ..errors import InputError

MTV_THRESHOLD = 0.41
PEAK_VOLUME_ML = 1.0
PEAK_RADIUS_MM = (3.0 * PEAK_VOLUME_ML * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)  # 6.2035 mm


def check_same_grid(
    a: sitk.Image, b: sitk.Image, *, path=None, what: str = "the PET image"
) -> None:
    """Raise :class:`InputError` unless ``b`` has ``a``'s size, origin, spacing and direction."""
    problems = []
    if a.GetSize() != b.GetSize():
        problems.append(f"size {b.GetSize()} vs {a.GetSize()}")
    if not np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=0, atol=1e-3):
        problems.append(
            f"spacing {tuple(round(v, 4) for v in b.GetSpacing())} vs {tuple(round(v, 4) for v in a.GetSpacing())}"
        )
    if not np.allclose(a.GetOrigin(), b.GetOrigin(), rtol=0, atol=1e-2):
        problems.append(
            f"origin {tuple(round(v, 3) for v in b.GetOrigin())} vs {tuple(round(v, 3) for v in a.GetOrigin())}"
        )
    if not np.allclose(a.GetDirection(), b.GetDirection(), rtol=0, atol=1e-4):
        problems.append("direction differs")
    if problems:
        raise InputError(
            f"{what} is not on the labelmap's grid ({'; '.join(problems)})",
            path=path,
            hint="resample the SUV image onto the labelmap first (e.g. mescc register)",
        )


def sphere_kernel(spacing, radius_mm: float = PEAK_RADIUS_MM) -> np.ndarray:
    """Boolean kernel (kji) of the voxels whose centres lie within ``radius_mm`` of the centre."""
    sx, sy, sz = (float(v) for v in spacing)
    rx, ry, rz = (int(math.floor(radius_mm / s)) for s in (sx, sy, sz))
    k, j, i = np.mgrid[-rz : rz + 1, -ry : ry + 1, -rx : rx + 1]
    return (i * sx) ** 2 + (j * sy) ** 2 + (k * sz) ** 2 <= radius_mm**2


def _convolve_same(values: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Sum of ``values`` under ``kernel`` centred on each voxel (zero outside), via FFT."""
    shape = [v + k - 1 for v, k in zip(values.shape, kernel.shape, strict=True)]
    fshape = [int(2 ** math.ceil(math.log2(s))) if s > 1 else 1 for s in shape]
    axes = tuple(range(values.ndim))
    spec = np.fft.rfftn(values, fshape, axes=axes) * np.fft.rfftn(
        kernel[::-1, ::-1, ::-1].astype(np.float64), fshape, axes=axes
    )
    full = np.fft.irfftn(spec, fshape, axes=axes)
    off = [k // 2 for k in kernel.shape]
    return full[
        off[0] : off[0] + values.shape[0],
        off[1] : off[1] + values.shape[1],
        off[2] : off[2] + values.shape[2],
    ]


def _radius_voxels(spacing) -> list[int]:
    """The SUVpeak sphere's radius in voxels along i, j, k (at least 1)."""
    return [max(1, int(math.ceil(PEAK_RADIUS_MM / float(s)))) for s in spacing]


def uptake_metrics(suv: sitk.Image, mass: sitk.Image) -> dict:
    """SUV statistics of the mass (see the module docstring); ``mass`` is a binary mask."""
    check_same_grid(mass, suv)
    m = sitk.GetArrayViewFromImage(mass) != 0
    if not m.any():
        raise InputError("the mass label is empty: no uptake to measure")
    values = sitk.GetArrayFromImage(suv).astype(np.float64)
    spacing = np.asarray(suv.GetSpacing(), dtype=np.float64)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    # The peak sphere reads up to its radius beyond the mass: no NaN may hide there.
    near = sitk.GetArrayFromImage(  # a copy: a view would outlive the temporary image
        sitk.BinaryDilate(sitk.Cast(mass != 0, sitk.sitkUInt8), _radius_voxels(spacing))
    )
    n_bad = int(np.count_nonzero(~np.isfinite(values[near != 0])))
    if n_bad:
        raise InputError(
            f"the SUV image holds {n_bad} NaN or infinite value{'s' if n_bad > 1 else ''} in "
            f"or within {PEAK_RADIUS_MM:.1f} mm of the mass: SUVmax, SUVpeak and MTV would be "
            "undefined",
            hint="replace them by a number first (e.g. 0 outside the PET field of view)",
        )
    inside = values[m]
    suv_max = float(inside.max())
    mtv = m & (values >= MTV_THRESHOLD * suv_max)
    mtv_ml = float(mtv.sum()) * voxel_ml
    suv_mean = float(values[mtv].mean())

    # SUVpeak on a crop around the mass (the sphere reaches radius beyond it).
    kernel = sphere_kernel(spacing)
    pad = np.array(kernel.shape) // 2
    kk, jj, ii = np.nonzero(m)
    lo = np.maximum(np.array([kk.min(), jj.min(), ii.min()]) - pad, 0)
    hi = np.minimum(np.array([kk.max(), jj.max(), ii.max()]) + pad + 1, values.shape)
    crop = values[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    ones = np.ones_like(crop)
    sums = _convolve_same(crop, kernel)
    counts = _convolve_same(ones, kernel)
    # Voxels outside the crop but inside the image matter only within pad of the crop edge,
    # and the crop extends pad beyond the mass, so the centres (mass voxels) see them all
    # unless the image itself ends there.
    means = sums / np.maximum(counts, 1e-9)
    centres = m[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    means = np.where(centres, means, -np.inf)
    best = np.unravel_index(int(np.argmax(means)), means.shape)
    suv_peak = float(means[best])
    k, j, i = (int(b + o) for b, o in zip(best, lo, strict=True))
    centre = suv.TransformIndexToPhysicalPoint((i, j, k))
    return {
        "suv_max": suv_max,
        "suv_peak": suv_peak,
        "suv_peak_centre_lps_mm": [float(v) for v in centre],
        "suv_mean": suv_mean,
        "mtv_ml": mtv_ml,
        "tlg": suv_mean * mtv_ml,
        "mtv_threshold_suv": MTV_THRESHOLD * suv_max,
        "peak_sphere_voxels": int(kernel.sum()),
    }
