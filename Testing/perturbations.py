"""Known perturbations for the registration tests and benchmarks (not a test module).

Random rigid transforms, an image seen through one (``moved_copy``), and a different
"modality" of an image (``contrast_changed``): pairs whose true registration is known.
The benchmarks import it from ``Testing/`` the way they import the engine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from MESCCAnalyzerLib.geometry import direction_matrix
from MESCCAnalyzerLib.registration.transforms import affine_of


def random_rigid(
    rng: np.random.Generator,
    *,
    max_angle_deg: float,
    max_shift_mm: float,
    center_lps: Sequence[float],
) -> sitk.Euler3DTransform:
    """A rigid transform with a uniformly random axis, angle in [0, max] and shift of length in [0, max]."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis)
    angle = np.radians(rng.uniform(0.0, max_angle_deg))
    shift = rng.normal(size=3)
    shift *= rng.uniform(0.0, max_shift_mm) / np.linalg.norm(shift)
    versor = sitk.VersorRigid3DTransform()
    versor.SetCenter(tuple(map(float, center_lps)))
    versor.SetRotation(tuple(map(float, axis)), float(angle))
    versor.SetTranslation(tuple(map(float, shift)))
    t = sitk.Euler3DTransform()
    t.SetCenter(versor.GetCenter())
    t.SetMatrix(versor.GetMatrix())
    t.SetTranslation(versor.GetTranslation())
    return t


def moved_copy(
    image: sitk.Image,
    fixed_to_moving: sitk.Transform,
    *,
    spacing_mm: Sequence[float] | None = None,
    pad_mm: float = 0.0,
    default_value: float | None = None,
) -> sitk.Image:
    """``image`` seen in a moving frame: the returned image M satisfies M(T(x)) = image(x).

    The grid of M is the image's grid carried by T (a linear transform; same orientation
    relative to the anatomy, so nothing is cut off), optionally with another voxel size
    (``spacing_mm``) and ``pad_mm`` of extra field of view on each side. Voxels outside
    ``image`` get ``default_value``, by default the median of the image's border voxels (its
    background), so that no artificial edge appears where the copy extends beyond the original.
    """
    if default_value is None:
        arr = sitk.GetArrayViewFromImage(image)
        border = np.concatenate(
            [arr[[0, -1]].ravel(), arr[:, [0, -1]].ravel(), arr[:, :, [0, -1]].ravel()]
        )
        default_value = float(np.median(border))
    matrix, offset = affine_of(fixed_to_moving)
    direction = direction_matrix(image)
    spacing = np.array(image.GetSpacing())
    extent = (np.array(image.GetSize()) - 1) * spacing
    new_spacing = np.array(spacing_mm, dtype=float) if spacing_mm is not None else spacing
    new_direction = matrix @ direction
    new_size = np.floor((extent + 2 * pad_mm) / new_spacing).astype(int) + 1
    origin_fixed = np.array(image.GetOrigin()) - direction @ np.full(3, pad_mm)
    new_origin = matrix @ origin_fixed + offset
    ref = sitk.Image([int(v) for v in new_size], image.GetPixelID())
    ref.SetSpacing(tuple(map(float, new_spacing)))
    ref.SetDirection(tuple(map(float, new_direction.ravel())))
    ref.SetOrigin(tuple(map(float, new_origin)))
    # Resample's transform maps output (moving) points to input (fixed) points: T^-1.
    return sitk.Resample(
        image,
        ref,
        fixed_to_moving.GetInverse(),
        sitk.sitkLinear,
        float(default_value),
        image.GetPixelID(),
    )


def contrast_changed(image: sitk.Image, seed: int) -> sitk.Image:
    """A different 'modality' of ``image``: inverted, non-linear intensity mapping
    ``(1300 - v) ** 1.5 / 100`` plus Gaussian noise (sigma 5)."""
    a = sitk.GetArrayFromImage(image).astype(np.float64)
    b = (1300.0 - a) ** 1.5 / 100.0 + np.random.default_rng(seed).normal(0.0, 5.0, a.shape)
    out = sitk.GetImageFromArray(b.astype(np.float32))
    out.CopyInformation(image)
    return out
