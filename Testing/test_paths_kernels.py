"""The compiled kernels behind PathGrower's features, against their references: the
anisotropic diffusion (``denoise``) against ITK's filter, the value ranges (``value_ranges``)
against a brute-force window and ITK's grey erosion and dilation."""

from __future__ import annotations

import platform
import sys

import numpy as np
import pytest
import SimpleITK as sitk
from numpy.lib.stride_tricks import sliding_window_view

from MESCCAnalyzerLib.segmentation.paths import denoise, value_ranges

# ``denoise`` repeats ITK's arithmetic operation by operation (float32 pixels, float64 inside
# a voxel's update). Where both call the same C library's exp and neither fuses multiply-adds
# (Linux x86-64: measured bit-identical on the whole-spine demo's channels) the voxels are
# equal. Elsewhere ITK's build may fuse multiply-adds (arm64 compilers do by default) or use
# another exp: a few float32 ulps per iteration, far below 1e-5 of the image's values.
EXACT = sys.platform.startswith("linux") and platform.machine() == "x86_64"


def _image(array: np.ndarray, spacing_xyz) -> sitk.Image:
    image = sitk.GetImageFromArray(array.astype(np.float32))
    image.SetSpacing(spacing_xyz)
    return image


def _itk_denoise(image: sitk.Image, iterations: int, conductance: float) -> np.ndarray:
    """The reference: ITK's filter with the time step ``denoise`` uses."""
    image = sitk.Cast(image, sitk.sitkFloat32)
    return sitk.GetArrayFromImage(
        sitk.GradientAnisotropicDiffusion(
            image,
            timeStep=0.0625 * min(image.GetSpacing()),
            conductanceParameter=conductance,
            numberOfIterations=iterations,
        )
    )


def _noise(shape, rng):
    return rng.normal(100.0, 20.0, shape)


def _step(shape, rng):
    """Two tissues (50 and 100) meeting half-way along i, with a little noise: the edge
    makes the conductance matter."""
    array = np.full(shape, 100.0)
    array[..., : max(1, shape[-1] // 2)] = 50.0
    return array + rng.normal(0.0, 1.0, shape)


def _constant(shape, rng):
    return np.full(shape, 5.0)


# (k, j, i) shape, spacing (x, y, z), image, iterations, conductance
DIFFUSION_CASES = [
    ((6, 7, 8), (0.6, 0.6, 3.0), _noise, 1, 1.0),
    ((6, 7, 8), (0.6, 0.6, 3.0), _noise, 10, 1.0),
    ((5, 12, 9), (2.3, 0.7, 1.1), _step, 10, 0.5),
    ((1, 5, 7), (1.0, 1.0, 1.0), _step, 10, 1.0),  # one slice
    ((9, 1, 6), (0.8, 1.0, 2.0), _noise, 1, 1.0),  # one row
    ((2, 9, 2), (2.3, 0.7, 1.1), _noise, 10, 1.0),  # two voxels across i and k
    ((4, 5, 6), (1.0, 1.0, 1.0), _constant, 10, 1.0),  # no gradient: K = 0
    ((8, 9), (0.7, 1.2), _step, 10, 1.0),  # a 2D image
]


@pytest.mark.parametrize(
    ("shape", "spacing", "make", "iterations", "conductance"),
    DIFFUSION_CASES,
    ids=[f"{'x'.join(map(str, c[0]))}-{c[2].__name__[1:]}-{c[3]}it" for c in DIFFUSION_CASES],
)
def test_denoise_equals_itks_anisotropic_diffusion(shape, spacing, make, iterations, conductance):
    rng = np.random.default_rng(len(shape) * 1000 + sum(shape) + iterations)
    image = _image(make(shape, rng), spacing)
    ours = denoise(image, iterations, conductance)
    theirs = _itk_denoise(image, iterations, conductance)
    assert ours.dtype == np.float32 and ours.shape == shape
    if make is not _constant:  # the comparison is not between two unchanged images
        assert not np.array_equal(theirs, sitk.GetArrayFromImage(image))
    if EXACT:
        np.testing.assert_array_equal(ours, theirs)
    else:
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5 * np.abs(theirs).max())


def test_denoise_without_iterations_is_the_image_in_float32():
    image = _image(np.arange(24.0).reshape(2, 3, 4), (1.0, 1.0, 1.0))
    image = sitk.Cast(image, sitk.sitkInt16)
    out = denoise(image, 0, 1.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.arange(24.0).reshape(2, 3, 4))


def _brute_force_ranges(channel: np.ndarray, radius: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Least and greatest value in the box of ``radius`` voxels either side, cut at the edges
    (padding with +inf / -inf, which never win)."""
    pad = [(r, r) for r in radius]
    window = tuple(2 * r + 1 for r in radius)
    low = sliding_window_view(np.pad(channel, pad, constant_values=np.inf), window)
    high = sliding_window_view(np.pad(channel, pad, constant_values=-np.inf), window)
    axes = tuple(range(-channel.ndim, 0))
    return low.min(axis=axes), high.max(axis=axes)


# spacing (k, j, i) in mm, radius in mm, and the box's radius in voxels it gives
RANGE_CASES = [
    ((2.0, 0.7, 1.3), 2.0, [1, 3, 2]),
    ((5.0, 1.0, 0.5), 2.0, [0, 2, 4]),  # under half a slice: no box across slices
    ((0.9, 0.9, 0.9), 4.0, [4, 4, 4]),  # wider than the image along k
]


@pytest.mark.parametrize(("spacing_kji", "radius_mm", "radius"), RANGE_CASES)
def test_value_ranges_are_the_exact_window_extremes(spacing_kji, radius_mm, radius):
    rng = np.random.default_rng(7)
    channel = rng.normal(size=(6, 9, 11)).astype(np.float32)
    low, high = value_ranges(channel, np.array(spacing_kji), radius_mm)
    want_low, want_high = _brute_force_ranges(channel, radius)
    assert low.dtype == np.float32 and high.dtype == np.float32
    np.testing.assert_array_equal(low, want_low)
    np.testing.assert_array_equal(high, want_high)
    # ITK's grey erosion and dilation (box): the same extremes, but ITK misses the true
    # extreme at some voxels by a few float32 ulps (measured up to 1e-6 on the spine demo's
    # channels, values 0-20), so it is the looser reference
    image = sitk.GetImageFromArray(channel)
    itk_radius = radius[::-1]
    itk_low = sitk.GetArrayFromImage(sitk.GrayscaleErode(image, itk_radius, sitk.sitkBox))
    itk_high = sitk.GetArrayFromImage(sitk.GrayscaleDilate(image, itk_radius, sitk.sitkBox))
    np.testing.assert_allclose(low, itk_low, rtol=0, atol=1e-6)
    np.testing.assert_allclose(high, itk_high, rtol=0, atol=1e-6)
