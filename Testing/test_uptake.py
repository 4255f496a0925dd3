"""PET uptake of the mass on synthetic SUV maps with analytic answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib.errors import InputError
from MESCCAnalyzerLib.pet import uptake

SPACING = (1.0, 1.0, 2.0)
SIZE = (60, 60, 40)  # x, y, z
CENTRE = np.array([30.0, 30.0, 40.0])  # mm from the origin
RADIUS = 14.0


def _grid_mm():
    k, j, i = np.mgrid[0 : SIZE[2], 0 : SIZE[1], 0 : SIZE[0]]
    return i * SPACING[0], j * SPACING[1], k * SPACING[2]


def _image(arr, dtype=np.float32):
    img = sitk.GetImageFromArray(arr.astype(dtype))
    img.SetSpacing(SPACING)
    img.SetOrigin((-12.0, 7.0, 30.0))
    return img


@pytest.fixture(scope="module")
def a_spherical_mass():
    x, y, z = _grid_mm()
    inside = (x - CENTRE[0]) ** 2 + (y - CENTRE[1]) ** 2 + (z - CENTRE[2]) ** 2 <= RADIUS**2
    return _image(inside, np.uint8), inside


def test_uniform_uptake_gives_its_value_everywhere(a_spherical_mass):
    mass, inside = a_spherical_mass
    suv = _image(np.where(inside, 6.5, 1.0))
    r = uptake.uptake_metrics(suv, mass)
    voxel_ml = np.prod(SPACING) / 1000.0
    assert r["suv_max"] == pytest.approx(6.5)
    # The 6.2 mm sphere fits inside the 14 mm mass: its mean is the uniform value exactly.
    assert r["suv_peak"] == pytest.approx(6.5, abs=1e-6)
    assert r["mtv_ml"] == pytest.approx(inside.sum() * voxel_ml)  # every mass voxel >= 41 %
    assert r["suv_mean"] == pytest.approx(6.5)
    assert r["tlg"] == pytest.approx(6.5 * inside.sum() * voxel_ml)


def test_linear_gradient_peak_and_threshold_volume(a_spherical_mass):
    """SUV = 2 + 0.25 x: the mean over a symmetric sphere equals the value at its centre, so
    SUVpeak is the SUV at the mass voxel farthest along x; MTV is the mass voxels above 41 %."""
    mass, inside = a_spherical_mass
    x, _, _ = _grid_mm()
    values = 2.0 + 0.25 * x
    r = uptake.uptake_metrics(_image(values, np.float64), mass)
    suv_max = values[inside].max()
    assert r["suv_max"] == pytest.approx(suv_max)
    # Exact up to floating point: the kernel is symmetric and the field linear.
    assert r["suv_peak"] == pytest.approx(suv_max, abs=1e-6)
    mtv = inside & (values >= 0.41 * suv_max)
    assert r["mtv_ml"] == pytest.approx(mtv.sum() * np.prod(SPACING) / 1000.0)
    assert r["suv_mean"] == pytest.approx(values[mtv].mean())
    # The peak sphere's centre is a mass voxel at the largest x: LPS x = origin + x_index.
    assert r["suv_peak_centre_lps_mm"][0] == pytest.approx(
        -12.0 + CENTRE[0] + RADIUS, abs=SPACING[0]
    )


def test_peak_sphere_is_one_millilitre():
    """The sphere's voxel count x voxel volume is 1 ml to within the voxelisation of a 6.2 mm
    sphere on 1 x 1 x 2 mm voxels (a few percent)."""
    assert uptake.PEAK_RADIUS_MM == pytest.approx((3000 / (4 * math.pi)) ** (1 / 3))
    kernel = uptake.sphere_kernel((1.0, 1.0, 2.0))
    assert kernel.sum() * 2.0 / 1000.0 == pytest.approx(1.0, rel=0.05)
    fine = uptake.sphere_kernel((0.25, 0.25, 0.25))
    assert fine.sum() * 0.25**3 / 1000.0 == pytest.approx(1.0, rel=0.01)


def test_hot_spot_smaller_than_the_sphere_is_diluted(a_spherical_mass):
    """One hot voxel of 100 in a background of 1: SUVpeak = 1 + 99 / sphere voxel count."""
    mass, inside = a_spherical_mass
    values = np.where(inside, 1.0, 0.5)
    values[20, 30, 30] = 100.0
    r = uptake.uptake_metrics(_image(values), mass)
    n = uptake.sphere_kernel(SPACING).sum()
    assert r["suv_max"] == pytest.approx(100.0)
    assert r["suv_peak"] == pytest.approx(1.0 + 99.0 / n, rel=1e-5)
    assert r["mtv_ml"] == pytest.approx(np.prod(SPACING) / 1000.0)  # only the hot voxel >= 41


def test_pet_on_another_grid_is_refused(a_spherical_mass):
    mass, inside = a_spherical_mass
    suv = _image(np.where(inside, 5.0, 1.0))
    suv.SetSpacing((1.0, 1.0, 2.5))
    with pytest.raises(InputError, match="not on the labelmap's grid"):
        uptake.uptake_metrics(suv, mass)
