"""Transforms as point maps: apply them to LPS points, read their matrix, compare two of them."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def transform_points(transform: sitk.Transform, points_lps: np.ndarray) -> np.ndarray:
    """Apply ``transform`` to (N, 3) LPS points (vectorised for linear transforms)."""
    pts = np.asarray(points_lps, dtype=float).reshape(-1, 3)
    affine = affine_of(transform)
    if affine is not None:
        matrix, offset = affine
        return pts @ matrix.T + offset
    return np.array([transform.TransformPoint(tuple(map(float, p))) for p in pts])


def affine_of(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray] | None:
    """(matrix, offset) with y = matrix @ x + offset, or None for a non-linear transform."""
    if not transform.IsLinear():
        return None
    y0 = np.array(transform.TransformPoint((0.0, 0.0, 0.0)))
    matrix = np.column_stack([np.array(transform.TransformPoint(tuple(e))) - y0 for e in np.eye(3)])
    return matrix, y0


def affine_4x4_lps(transform: sitk.Transform) -> np.ndarray | None:
    """The 4x4 homogeneous matrix (LPS -> LPS) of a linear transform, None for a non-linear one."""
    affine = affine_of(transform)
    if affine is None:
        return None
    m = np.eye(4)
    m[:3, :3], m[:3, 3] = affine
    return m


def rigid_part(transform: sitk.Transform) -> tuple[np.ndarray, np.ndarray] | None:
    """(matrix, offset) of a linear transform, or of the first linear part of a composite one
    (the rigid step under a B-spline refinement); None when there is none."""
    affine = affine_of(transform)
    if affine is not None:
        return affine
    if transform.GetName() == "CompositeTransform":
        comp = sitk.CompositeTransform(transform)
        for i in range(comp.GetNumberOfTransforms()):
            part = comp.GetNthTransform(i)
            if part.IsLinear():
                return affine_of(part)
    return None


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """The rotation angle (degrees) of a 3x3 rotation matrix."""
    cos = (np.trace(np.asarray(matrix)[:3, :3]) - 1.0) / 2.0
    return float(np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))))


def tre_mm(t_est: sitk.Transform, t_true: sitk.Transform, points_lps: np.ndarray) -> float:
    """Target registration error: mean distance (mm) between ``t_est(p)`` and ``t_true(p)``."""
    a = transform_points(t_est, points_lps)
    b = transform_points(t_true, points_lps)
    return float(np.mean(np.linalg.norm(a - b, axis=1)))
