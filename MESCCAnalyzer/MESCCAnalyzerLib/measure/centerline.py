"""The spinal cord's centreline: a smooth curve through the cord label, in LPS millimetres.

The cord voxels' centres (LPS, from the image's origin, spacing and direction, so any scan
orientation works) are projected on their principal axis; the centroids of slabs along that
axis (slab thickness = the largest voxel spacing, so every slab holds a full image slice) are
fitted with a low-order polynomial in the axial coordinate (weighted by voxel count). The
degree grows with the cord's length (about one per 40 mm, at most 5) so the cervical and
thoracic curvatures are followed while the focal displacement of a compressed cord is not.
The curve is then sampled every ``step_mm`` of axial coordinate; tangents come from the
polynomial's derivative and point to the patient's superior side (+S in LPS).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import ComputationError


@dataclass
class Centerline:
    """Samples of the centreline (N points)."""

    points_lps: np.ndarray  # N x 3, mm
    tangents_lps: np.ndarray  # N x 3, unit vectors pointing superior
    arc_mm: np.ndarray  # N, arc length from the inferior end
    axis_param_mm: np.ndarray  # N, the fit parameter (coordinate along the principal axis)
    axis_origin_lps: np.ndarray  # 3, the mean cord voxel position
    axis_direction_lps: np.ndarray  # 3, the principal axis (unit, superior)
    coefficients: np.ndarray  # (degree + 1) x 3 polynomial coefficients (highest first)

    def param_of(self, points_lps: np.ndarray) -> np.ndarray:
        """Fit parameter (mm along the principal axis) of arbitrary LPS points."""
        return (
            np.asarray(points_lps, dtype=np.float64) - self.axis_origin_lps
        ) @ self.axis_direction_lps

    def arc_of_param(self, param_mm: np.ndarray) -> np.ndarray:
        """Arc length (mm) at fit parameters, by interpolation of the samples."""
        return np.interp(param_mm, self.axis_param_mm, self.arc_mm, left=np.nan, right=np.nan)

    def index_of(self, points_lps: np.ndarray) -> np.ndarray:
        """Index of the centreline sample whose section plane is nearest to each point.

        Uses the principal-axis coordinate (exact for a straight cord, close for the gentle
        curvature of a spinal segment); fast for millions of points.
        """
        par = self.param_of(points_lps)
        step = (self.axis_param_mm[-1] - self.axis_param_mm[0]) / max(
            len(self.axis_param_mm) - 1, 1
        )
        idx = np.rint((par - self.axis_param_mm[0]) / step).astype(np.int64)
        return np.clip(idx, 0, len(self.axis_param_mm) - 1)

    def nearest_index(self, points_lps: np.ndarray) -> np.ndarray:
        """Index of the nearest centreline sample for each point (N x 3)."""
        pts = np.asarray(points_lps, dtype=np.float64).reshape(-1, 3)
        out = np.empty(len(pts), dtype=np.int64)
        for start in range(0, len(pts), 4096):
            chunk = pts[start : start + 4096]
            d2 = ((chunk[:, None, :] - self.points_lps[None, :, :]) ** 2).sum(-1)
            out[start : start + 4096] = np.argmin(d2, axis=1)
        return out

    def arc_of_points(self, points_lps: np.ndarray) -> np.ndarray:
        """Arc length (mm) of the section plane through each point: the nearest sample's arc
        plus the point's offset along that sample's tangent. Unlike :meth:`index_of`, right
        for points far from a curved cord (a mass in front of a kyphotic cord)."""
        pts = np.asarray(points_lps, dtype=np.float64).reshape(-1, 3)
        idx = self.nearest_index(pts)
        offset = np.einsum("ij,ij->i", pts - self.points_lps[idx], self.tangents_lps[idx])
        return self.arc_mm[idx] + offset


def voxel_points_lps(mask: sitk.Image, values_kji: np.ndarray | None = None) -> np.ndarray:
    """LPS centres (N x 3) of the non-zero voxels of ``mask`` (or of a given boolean array)."""
    arr = sitk.GetArrayViewFromImage(mask) != 0 if values_kji is None else values_kji
    k, j, i = np.nonzero(arr)
    ijk = np.stack([i, j, k], axis=1).astype(np.float64)
    direction = np.asarray(mask.GetDirection(), dtype=np.float64).reshape(3, 3)
    m = direction * np.asarray(mask.GetSpacing(), dtype=np.float64)[None, :]
    return ijk @ m.T + np.asarray(mask.GetOrigin(), dtype=np.float64)


def fit_centerline(
    cord: sitk.Image, *, step_mm: float = 1.0, degree: int | None = None
) -> Centerline:
    """Fit the centreline of the binary cord mask ``cord`` (see the module docstring)."""
    pts = voxel_points_lps(cord)
    if len(pts) < 10:
        raise ComputationError("the spinal cord label has too few voxels to follow the cord")
    mean = pts.mean(axis=0)
    centred = pts - mean
    _, _, vt = np.linalg.svd(centred[:: max(1, len(centred) // 200000)], full_matrices=False)
    axis = vt[0]
    superior = np.array([0.0, 0.0, 1.0])
    if axis @ superior < 0 or (abs(axis @ superior) < 1e-6 and axis[np.argmax(np.abs(axis))] < 0):
        axis = -axis
    t = centred @ axis
    slab = float(max(cord.GetSpacing()))
    t0, t1 = float(t.min()), float(t.max())
    length = t1 - t0
    if length < 3 * slab:
        raise ComputationError(
            f"the spinal cord label spans only {length:.1f} mm along its axis",
            hint="segment the cord over several slices above and below the lesion",
        )
    edges = np.arange(t0, t1 + slab, slab)
    idx = np.clip(np.digitize(t, edges) - 1, 0, len(edges) - 2)
    counts = np.bincount(idx, minlength=len(edges) - 1).astype(np.float64)
    keep = counts > 0
    cents = np.stack(
        [np.bincount(idx, weights=pts[:, d], minlength=len(edges) - 1) for d in range(3)], axis=1
    )
    cents = cents[keep] / counts[keep, None]
    tc = (cents - mean) @ axis
    if degree is None:
        degree = int(np.clip(round(length / 40.0), 1, 5))
    degree = int(min(degree, max(1, len(tc) - 2)))
    w = np.sqrt(counts[keep])
    coef = np.stack([np.polyfit(tc, cents[:, d], degree, w=w) for d in range(3)], axis=1)

    # Sample from the first to the last voxel centre along the axis.
    n = max(2, int(np.floor(length / step_mm)) + 1)
    ts = t0 + (length - (n - 1) * step_mm) / 2 + step_mm * np.arange(n)
    points = np.stack([np.polyval(coef[:, d], ts) for d in range(3)], axis=1)
    dcoef = np.stack([np.polyder(coef[:, d]) for d in range(3)], axis=1)
    deriv = np.stack([np.polyval(dcoef[:, d], ts) for d in range(3)], axis=1)
    tangents = deriv / np.linalg.norm(deriv, axis=1, keepdims=True)
    # Arc length by fine integration of |c'(t)|.
    fine = np.linspace(ts[0], ts[-1], 20 * n)
    speed = np.linalg.norm(
        np.stack([np.polyval(dcoef[:, d], fine) for d in range(3)], axis=1), axis=1
    )
    arc_fine = np.concatenate([[0.0], np.cumsum(0.5 * (speed[1:] + speed[:-1]) * np.diff(fine))])
    arc = np.interp(ts, fine, arc_fine)
    return Centerline(points, tangents, arc, ts, mean, axis, coef)
