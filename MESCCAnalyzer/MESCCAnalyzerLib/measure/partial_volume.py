"""Sub-voxel cord and CSF fractions from the MRI's partial volume.

A labelmap gives each voxel to the tissue at its centre, so a chord across it is a whole
number of voxels: a cord flattened to 2.5 mm, on 0.6 mm pixels, is 4 or 5 pixels across
(2.4 or 3.0 mm) depending on where its edges fall, up to 8 MSCC points of a 6.3 mm
reference. The MRI still holds the edge: a voxel on the cord's outline mixes the cord and
its neighbour, and its intensity ``I`` lies between theirs. With ``mu_cord`` and
``mu_other`` the local means of the two tissues, ``f = (I - mu_other) / (mu_cord - mu_other)``
is the cord's share of that voxel.

:func:`cord_fractions` applies this on the cord's outline, in each slice (the chords are
measured in the section planes): the cord voxels with a non-cord neighbour and the non-cord
voxels with a cord neighbour (4-neighbours in the slice). The neighbour tissue is the label
across the edge: CSF, mass, background (epidural fat pressed on a flattened cord) or bone
(cortex). Its mean is taken just beyond the edge (2 to ``SHELL_PIXELS`` pixels out, off every
outline between labels), where the background and bone labels, which hold several tissues,
still hold one; a neighbour whose voxels there spread by more than ``MAX_SPREAD`` times the
noise is not one tissue, and its edge is left alone. The cord's mean comes from its own
voxels off every outline. Both are Gaussian-weighted (``MEAN_SIGMA_MM``), so they follow a
coil's shading. A voxel is refined only where the two means differ by ``MIN_CONTRAST``
times the noise (the robust spread of the cord's own voxels), else it keeps its label.
Fractions are clipped to [0, 1]: a voxel holds no less than none and no more than all of
the cord.

The CSF takes the rest of the voxels it shares with the cord (``1 - f`` where the neighbour
is CSF), so the thecal sac (cord + CSF) keeps its outline while the cord's edge inside it
moves; against the mass or fat, the sac's edge is the cord's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .. import LABEL_BONE, LABEL_CORD, LABEL_CSF, LABEL_MASS
from ..errors import InputError
from ..geometry import same_grid

# Gaussian width of the local tissue means (mm): wide enough to average many voxels of a
# tissue, narrow next to a coil's shading (a few % per cm).
MEAN_SIGMA_MM = 3.0
# The neighbour tissue's mean is taken 2 to SHELL_PIXELS pixels beyond the edge, where it
# must look like one tissue: a spread of at most MAX_SPREAD times the noise.
SHELL_PIXELS = 4
MAX_SPREAD = 2.0
# Smallest Gaussian weight of a local mean: below it the mean rests on less than about half a
# voxel (one voxel weighs 2.5e-3 on a 0.6 x 0.6 x 3 mm grid at sigma 3 mm).
MIN_WEIGHT = 1e-3
# Contrast needed to refine an edge, in units of the noise: below it one voxel's fraction
# would be mostly noise (at 4 sigma its error is a quarter of a voxel).
MIN_CONTRAST = 4.0


@dataclass
class Fractions:
    """Cord and CSF shares of each voxel (float32 images on the labels' grid) and how many
    outline voxels were refined against each neighbour label."""

    cord: sitk.Image
    csf: sitk.Image
    refined: dict[int, int]


def check_grid(labels: sitk.Image, image: sitk.Image, path=None) -> None:
    """:class:`InputError` (naming ``path``) unless ``image`` is one 3D scalar image on the
    labels' grid."""
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("the MRI must be one 3D image with one value per voxel", path=path)
    if not same_grid(image, labels):
        raise InputError(
            "the MRI is not on the labelmap's grid (size, spacing, origin or direction differ)",
            path=path,
            hint="give the MRI the labels were drawn on",
        )


def _neighbours_in_slice(mask: np.ndarray) -> np.ndarray:
    """Voxels with at least one of their four in-slice neighbours in ``mask`` (k, j, i)."""
    out = np.zeros_like(mask)
    out[:, 1:, :] |= mask[:, :-1, :]
    out[:, :-1, :] |= mask[:, 1:, :]
    out[:, :, 1:] |= mask[:, :, :-1]
    out[:, :, :-1] |= mask[:, :, 1:]
    return out


def _local_stats(
    image: np.ndarray, mask: np.ndarray, ref: sitk.Image, *, spread: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Gaussian-weighted mean and (with ``spread``) standard deviation of ``image`` over
    ``mask`` around each voxel (nan where the mask has too little weight)."""

    def smooth(a: np.ndarray) -> np.ndarray:
        img = sitk.GetImageFromArray(a.astype(np.float32))
        img.CopyInformation(ref)
        out = sitk.SmoothingRecursiveGaussian(img, MEAN_SIGMA_MM)
        return sitk.GetArrayViewFromImage(out).astype(np.float64)

    weight = smooth(mask)
    values = np.where(mask, image, 0.0)
    few = weight < MIN_WEIGHT
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(few, np.nan, smooth(values) / weight)
        if not spread:
            return mean, None
        var = np.where(few, np.nan, smooth(values * values) / weight - mean * mean)
    return mean, np.sqrt(np.clip(var, 0.0, None))


def cord_fractions(
    labels: sitk.Image,
    image: sitk.Image,
    *,
    cord_label: int = LABEL_CORD,
    csf_label: int = LABEL_CSF,
    neighbours: tuple[int, ...] = (LABEL_CSF, LABEL_MASS, 0, LABEL_BONE),
) -> Fractions:
    """The cord's and the CSF's share of each voxel of ``labels`` (see the module docstring).

    ``image``: the MRI the labels were drawn on, on the same grid (else :class:`InputError`).
    ``neighbours``: the labels the cord's edge is refined against (CSF, mass, background,
    bone). Voxels off the cord's outline keep their labels (1 or 0).
    """
    check_grid(labels, image)
    lab = sitk.GetArrayViewFromImage(labels)
    img = sitk.GetArrayFromImage(image).astype(np.float64)
    cord = lab == cord_label
    cord_f = cord.astype(np.float64)
    csf_f = (lab == csf_label).astype(np.float64)
    refined: dict[int, int] = {}
    outer = _neighbours_in_slice(cord) & ~cord
    inner = _neighbours_in_slice(~cord) & cord
    edges = np.zeros_like(cord)  # voxels on any outline between labels (mixed)
    for value in np.unique(lab):
        m = lab == value
        edges |= _neighbours_in_slice(~m) & m
    pure_cord = cord & ~edges
    if not outer.any() or pure_cord.sum() < 10:
        return Fractions(_like(cord_f, labels), _like(csf_f, labels), refined)
    mu_cord, _ = _local_stats(img, pure_cord, labels, spread=False)
    residual = (img - mu_cord)[pure_cord]
    residual = residual[np.isfinite(residual)]
    noise = max(1.4826 * float(np.median(np.abs(residual - np.median(residual)))), 1e-9)
    # the tissue just beyond the cord's edge: off every outline, 2 to SHELL_PIXELS pixels out
    near = outer.copy()
    for _ in range(SHELL_PIXELS - 1):
        near |= _neighbours_in_slice(near)
    shell = near & ~outer & ~cord & ~edges
    for value in neighbours:
        other = lab == value
        band = (outer & other) | (inner & _neighbours_in_slice(other))
        if not band.any():
            continue
        mu_other, sd_other = _local_stats(img, shell & other, labels)
        contrast = mu_cord - mu_other
        ok = (
            band
            & np.isfinite(contrast)
            & (np.abs(contrast) >= MIN_CONTRAST * noise)
            & (sd_other <= MAX_SPREAD * noise)
        )
        if not ok.any():
            continue
        f = np.clip((img[ok] - mu_other[ok]) / contrast[ok], 0.0, 1.0)
        cord_f[ok] = f
        csf_f[ok] = 1.0 - f if value == csf_label else 0.0
        refined[int(value)] = int(ok.sum())
    return Fractions(_like(cord_f, labels), _like(csf_f, labels), refined)


def _like(a: np.ndarray, ref: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(a.astype(np.float32))
    img.CopyInformation(ref)
    return img
