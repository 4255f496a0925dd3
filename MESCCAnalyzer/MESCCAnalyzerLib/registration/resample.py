"""Images of the moving frame (CT, PET) brought onto the fixed (MRI) grid through a registration."""

from __future__ import annotations

import SimpleITK as sitk


def resample_onto(
    image: sitk.Image,
    reference: sitk.Image,
    transform: sitk.Transform,
    *,
    labelmap: bool = False,
    default_value: float | None = None,
) -> sitk.Image:
    """Resample ``image`` (in the moving frame) onto ``reference``'s grid through ``transform``.

    ``transform`` maps reference (fixed) LPS points to ``image`` (moving) LPS points, as
    :func:`~MESCCAnalyzerLib.registration.register` returns. Linear interpolation, or nearest
    neighbour for a labelmap. Voxels falling outside ``image`` get ``default_value`` (the
    image's minimum, e.g. air in a CT or 0 in a PET, unless given). The pixel type is kept.
    """
    if default_value is None:
        default_value = 0.0 if labelmap else float(sitk.MinimumMaximum(image)[0])
    interp = sitk.sitkNearestNeighbor if labelmap else sitk.sitkLinear
    return sitk.Resample(
        image, reference, transform, interp, float(default_value), image.GetPixelID()
    )
