"""Checks of the registration's inputs, and the fixed image and mask as the registration uses them."""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from .settings import INIT_MODES, RegistrationSettings


def validate_image(image: sitk.Image, role: str, *, path=None) -> None:
    """Raise :class:`InputError` when ``image`` cannot be registered (not 3D, no variation)."""
    if image.GetDimension() != 3:
        raise InputError(
            f"the {role} image is {image.GetDimension()}D, a 3D volume is needed", path=path
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"the {role} image has {image.GetNumberOfComponentsPerPixel()} components per voxel, a scalar volume is needed",
            path=path,
        )
    if min(image.GetSize()) < 4:
        raise InputError(
            f"the {role} image is too small ({image.GetSize()} voxels)",
            path=path,
            hint="at least 4 voxels along each axis",
        )
    low, high = sitk.MinimumMaximum(image)
    if not (high > low):
        raise InputError(
            f"the {role} image has no intensity variation (every voxel is {low:g})",
            path=path,
            hint="check that the right series was loaded",
        )


def mask_on_grid(mask: sitk.Image, reference: sitk.Image, *, path=None) -> sitk.Image:
    """The fixed mask as a uint8 0/1 image on ``reference``'s grid (nearest neighbour)."""
    if mask.GetDimension() != 3:
        raise InputError("the mask is not a 3D image", path=path)
    binary = sitk.Cast(sitk.NotEqual(sitk.Cast(mask, sitk.sitkFloat32), 0.0), sitk.sitkUInt8)
    same = (
        binary.GetSize() == reference.GetSize()
        and np.allclose(binary.GetOrigin(), reference.GetOrigin(), atol=1e-3)
        and np.allclose(binary.GetSpacing(), reference.GetSpacing(), atol=1e-5)
        and np.allclose(binary.GetDirection(), reference.GetDirection(), atol=1e-5)
    )
    if not same:
        binary = sitk.Resample(
            binary, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8
        )
    if sitk.GetArrayViewFromImage(binary).max() == 0:
        raise InputError(
            "the fixed mask is empty (no voxel inside the fixed image)",
            path=path,
            hint="draw the region around the lesion level on the MRI",
        )
    return binary


def initialisation_mode(init: str, landmarks) -> str:
    """The initialisation to use: ``init``, or "landmarks" whenever landmarks are given."""
    if init not in INIT_MODES:
        raise InputError(f"unknown initialisation '{init}'", hint=f"one of {', '.join(INIT_MODES)}")
    if init == "landmarks" and landmarks is None:
        raise InputError("landmark initialisation needs paired landmarks")
    if landmarks is not None:
        init = "landmarks"
    return init


def prepared_images(
    fixed: sitk.Image,
    moving: sitk.Image,
    fixed_mask: sitk.Image | None,
    settings: RegistrationSettings,
) -> tuple[sitk.Image, sitk.Image | None, sitk.Image]:
    """(fixed, mask, moving) as the registration works on them: checked, as float32, and with
    a fixed mask, the fixed image and the mask cropped to the mask's box plus twice the
    coarsest level's voxel (the mask then None when none is given)."""
    validate_image(fixed, "fixed")
    validate_image(moving, "moving")
    fixed_f = sitk.Cast(fixed, sitk.sitkFloat32)
    moving_f = sitk.Cast(moving, sitk.sitkFloat32)
    mask = None
    if fixed_mask is not None:
        mask = mask_on_grid(fixed_mask, fixed_f)
        fixed_f, mask = crop_to_mask(fixed_f, mask, margin_mm=2.0 * max(settings.level_spacings_mm))
        region = sitk.GetArrayViewFromImage(mask).astype(bool)
        values = sitk.GetArrayViewFromImage(fixed_f)[region]
        if values.size and values.max() <= values.min():
            raise InputError("the fixed image has no intensity variation inside the mask")
    return fixed_f, mask, moving_f


def crop_to_mask(
    fixed: sitk.Image, mask: sitk.Image, margin_mm: float
) -> tuple[sitk.Image, sitk.Image]:
    """Crop the fixed image and its mask to the mask's bounding box plus ``margin_mm``."""
    stats = sitk.LabelShapeStatisticsImageFilter()
    stats.Execute(mask)
    bbox = stats.GetBoundingBox(1)
    lower = np.array(bbox[:3])
    upper = lower + np.array(bbox[3:])
    margin = np.ceil(margin_mm / np.array(fixed.GetSpacing())).astype(int)
    lower = np.maximum(lower - margin, 0)
    upper = np.minimum(upper + margin, np.array(fixed.GetSize()))
    if np.all(lower == 0) and np.all(upper == np.array(fixed.GetSize())):
        return fixed, mask
    size = [int(v) for v in upper - lower]
    index = [int(v) for v in lower]
    return sitk.RegionOfInterest(fixed, size, index), sitk.RegionOfInterest(mask, size, index)
