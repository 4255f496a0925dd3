"""Points of the fixed region, intensities sampled at LPS points, and mutual information on them."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..geometry import index_to_lps, lps_to_index
from .transforms import transform_points


def mask_points_lps(mask: sitk.Image, *, max_points: int = 20000, seed: int = 0) -> np.ndarray:
    """Physical (LPS) centres of the non-zero voxels of ``mask`` (a random subset of at most ``max_points``)."""
    kji = np.argwhere(sitk.GetArrayViewFromImage(mask) != 0)
    if len(kji) > max_points:
        rng = np.random.default_rng(seed)
        kji = kji[rng.choice(len(kji), max_points, replace=False)]
    return index_to_lps(mask, kji[:, ::-1])


def region_points(fixed: sitk.Image, mask: sitk.Image | None, n: int = 4000) -> np.ndarray:
    """Up to ``n`` LPS points spread over the fixed region (mask voxels, else the whole grid)."""
    if mask is not None:
        return mask_points_lps(mask, max_points=n)
    size = np.array(fixed.GetSize())
    rng = np.random.default_rng(0)
    ijk = rng.uniform(0, 1, size=(n, 3)) * (size - 1)
    return index_to_lps(fixed, ijk)


def sample_linear(image: sitk.Image, points_lps: np.ndarray) -> np.ndarray:
    """Trilinear interpolation of ``image`` at (N, 3) LPS points; NaN outside the image."""
    arr = sitk.GetArrayViewFromImage(image)
    ijk = lps_to_index(image, points_lps)
    size = np.array(image.GetSize())
    inside = np.all((ijk >= 0) & (ijk <= size - 1), axis=1)
    out = np.full(len(ijk), np.nan)
    if not inside.any():
        return out
    p = ijk[inside]
    base = np.minimum(np.floor(p).astype(np.int64), size - 2).clip(0)
    frac = p - base
    # flat indices into the (k, j, i) array: one gather per corner
    flat_arr = arr.ravel()
    flat = (base[:, 2] * size[1] + base[:, 1]) * size[0] + base[:, 0]
    weights = [(1.0 - frac[:, a], frac[:, a]) for a in range(3)]
    value = np.zeros(len(p))
    for dk in (0, 1):
        for dj in (0, 1):
            w_kj = weights[2][dk] * weights[1][dj]
            row = flat + (dk * size[1] + dj) * size[0]
            value += w_kj * (weights[0][0] * flat_arr[row] + weights[0][1] * flat_arr[row + 1])
    out[inside] = value
    return out


def overlap_fraction(
    fixed_points_lps: np.ndarray, moving: sitk.Image, transform: sitk.Transform
) -> float:
    """Fraction of fixed points that ``transform`` maps inside the moving image."""
    ijk = lps_to_index(moving, transform_points(transform, fixed_points_lps))
    size = np.array(moving.GetSize())
    inside = np.all((ijk >= -0.5) & (ijk <= size - 0.5), axis=1)
    return float(inside.mean()) if len(inside) else 0.0


def _bin_indices(values: np.ndarray, bins: int) -> np.ndarray:
    """Index (0 .. bins-1) of each value in ``bins`` equal bins spanning its range."""
    low, high = float(values.min()), float(values.max())
    if not high > low:
        return np.zeros(len(values), dtype=np.int64)
    return np.minimum(((values - low) * (bins / (high - low))).astype(np.int64), bins - 1)


def _histogram_mi(ia: np.ndarray, ib: np.ndarray, bins: int) -> float:
    """Mutual information (nat) of two binned samples (indices from :func:`_bin_indices`)."""
    joint = np.bincount(ia * bins + ib, minlength=bins * bins).reshape(bins, bins)
    p = joint / joint.sum()
    pa, pb = p.sum(axis=1, keepdims=True), p.sum(axis=0, keepdims=True)
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / (pa @ pb)[nz])))


def shared_information_nats(
    fixed: sitk.Image,
    moving: sitk.Image,
    transform: sitk.Transform,
    points_lps: np.ndarray,
    *,
    bins: int = 32,
    permutations: int = 5,
    seed: int = 0,
) -> tuple[float, float]:
    """Mutual information (nat) of the fixed and moving intensities paired by ``transform``.

    Returns ``(mi, chance)``: the histogram MI on the points that land inside both images,
    and the mean MI of the same values with the moving ones shuffled (the estimator's bias
    for unrelated images of this sample size).
    """
    f = sample_linear(fixed, points_lps)
    m = sample_linear(moving, transform_points(transform, points_lps))
    ok = np.isfinite(f) & np.isfinite(m)
    f, m = f[ok], m[ok]
    if len(f) < 100:
        return 0.0, 0.0
    f, m = _bin_indices(f, bins), _bin_indices(m, bins)
    mi = _histogram_mi(f, m, bins)
    rng = np.random.default_rng(seed)
    chance = float(
        np.mean([_histogram_mi(f, rng.permutation(m), bins) for _ in range(permutations)])
    )
    return mi, chance
