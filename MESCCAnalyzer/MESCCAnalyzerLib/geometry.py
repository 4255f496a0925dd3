"""Voxel indices and physical (LPS, mm) points of a SimpleITK image: one home for the conversions.

SimpleITK's convention: the continuous index ``ijk`` of an image (i fastest, the numpy array
of ``GetArrayFromImage`` is ``kji``) lies at ``origin + direction @ (spacing * ijk)`` in LPS
millimetres; ``direction``'s columns are the i, j, k axes' unit vectors. The functions here
work on (N, 3) arrays of points at once.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk


def direction_matrix(image: sitk.Image) -> np.ndarray:
    """The 3 x 3 direction cosines of ``image`` (columns: the i, j, k axes in LPS)."""
    return np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)


def index_to_lps_linear(image: sitk.Image) -> np.ndarray:
    """The 3 x 3 linear part of the index -> LPS map: ``direction`` times the spacings (mm)."""
    return direction_matrix(image) * np.asarray(image.GetSpacing(), dtype=np.float64)[None, :]


def index_to_lps_matrix(image: sitk.Image) -> np.ndarray:
    """4 x 4 matrix taking continuous indices (i, j, k, 1) to LPS millimetres."""
    m = np.eye(4)
    m[:3, :3] = index_to_lps_linear(image)
    m[:3, 3] = image.GetOrigin()
    return m


def index_to_lps(image: sitk.Image, ijk: np.ndarray) -> np.ndarray:
    """Continuous (N, 3) ``ijk`` indices of ``image`` to (N, 3) LPS points (mm)."""
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    return np.asarray(ijk, dtype=float) @ index_to_lps_linear(image).T + origin


def lps_to_index(image: sitk.Image, points_lps: np.ndarray) -> np.ndarray:
    """(N, 3) LPS points (mm) to continuous ``ijk`` indices of ``image`` (not rounded, not
    clipped)."""
    origin = np.asarray(image.GetOrigin(), dtype=np.float64)
    inverse = np.linalg.inv(index_to_lps_linear(image))
    return (np.asarray(points_lps, dtype=float) - origin) @ inverse.T


def corners_lps(image: sitk.Image) -> np.ndarray:
    """The 8 corners (LPS, mm) of the box through the image's outermost voxel centres."""
    size = np.array(image.GetSize()) - 1
    corners = np.array(
        [[i, j, k] for i in (0, size[0]) for j in (0, size[1]) for k in (0, size[2])], dtype=float
    )
    return index_to_lps(image, corners)


def bounds_lps(image: sitk.Image) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper LPS corners (mm) of the box holding the image's voxel centres."""
    corners = corners_lps(image)
    return corners.min(axis=0), corners.max(axis=0)


def voxel_size_mm(image: sitk.Image) -> float:
    """Edge of the cube with the voxel's volume (geometric mean of the spacings), mm."""
    return float(np.prod(image.GetSpacing()) ** (1.0 / 3.0))


def same_grid(a: sitk.Image, b: sitk.Image, *, origin_tol_mm: float = 1e-3) -> bool:
    """Whether two images share size, spacing, direction and origin (within
    ``origin_tol_mm``): one voxel of ``a`` is then the same place as in ``b``."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5, atol=1e-4)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=origin_tol_mm)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=1e-5)
    )
