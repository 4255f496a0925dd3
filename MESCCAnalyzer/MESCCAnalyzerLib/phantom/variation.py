"""Varied phantoms for the segmentation battery: the project's anatomy, varied in every way
a segmentation method must not depend on.

Each :class:`Variation` changes, from the anatomy of :mod:`MESCCAnalyzerLib.phantom`:

* anatomy sizes (sac, cord, canal, vertebrae, mass scaled together by ``size_scale``);
* the mass shape: ``round`` (the phantom's ellipsoid), ``lobulated`` (the ellipsoid with
  lobes cut in), ``circumferential`` (a ring filling the epidural space around a narrowed
  sac, plus the anterior mass), ``posterolateral`` (a mass behind and beside the sac, none
  in front); grade 3 flattens the cord against the posterior sac wall;
* the tilt of the canal in the image (0-25 degrees), the in-plane voxel and the slice
  thickness (1-4 mm, partial volume integrated over the whole slab);
* per-tissue MR intensities (T2 and T1 levels each scaled per tissue, so contrasts and the
  T1/T2 ratios change), a multiplicative tissue texture, a smooth bias field and Rician
  noise from low to high;
* a PET in SUV on the MRI grid: tissue SUVs (the mass's varied) blurred by the scanner's
  point spread (FWHM 5-8 mm), sampled on 4 mm voxels with noise, interpolated back.

The truth labelmap (1 cord, 2 CSF, 3 mass, 4 bone) is the label covering most of each voxel,
from the same sub-samples as the partial volume of the images (the phantom's own truth is the
tissue at the voxel centre, which on a thick or tilted slab can be a tissue the voxel's
intensity barely shows; see :func:`majority_labels`). Each case also carries a stroke guide
(:func:`stroke_guide`). :func:`battery` lists the 30 cases of the benchmark (a
factorial-like spread of the factors above); :func:`make_case` renders one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import SimpleITK as sitk

from .anatomy import (
    CORD,
    CSF,
    DISC,
    FAT,
    MARROW,
    MASS,
    OTHER,
    SUV_LEVELS,
    T1_LEVELS,
    T2_LEVELS,
    TISSUE_TO_LABEL,
    PhantomAnatomy,
    ellipse_q,
    make_anatomy,
)
from .imaging import MRI_CENTRE_LPS, Grid, make_pose, partial_volume_mean, rician, tissue_on_grid

PET_VOXEL_MM = 4.0  # the PET's own voxels before it is resampled onto the MRI grid

# tissue levels of the phantom (TISSUE order) for T2, T1 and PET (SUV)
_LEVELS = np.stack([T2_LEVELS, T1_LEVELS, SUV_LEVELS], axis=1)


@dataclass(frozen=True)
class Variation:
    """One case of the battery (lengths in mm, angles in degrees).

    noise : Rician sigma as a fraction of the brightest T2 tissue level.
    bias : peak-to-peak amplitude of the multiplicative bias field (0.2 = +-10 %).
    texture : standard deviation of the multiplicative tissue texture.
    contrast_jitter : each tissue's T2 and T1 level is scaled by 1 +- this (uniform).
    """

    name: str
    grade: str = "2"
    shape: str = "round"
    size_scale: float = 1.0
    tilt_deg: float = 0.0
    slice_mm: float = 2.0
    inplane_mm: float = 0.75
    noise: float = 0.02
    bias: float = 0.1
    texture: float = 0.02
    contrast_jitter: float = 0.1
    mass_suv: float = 7.0
    pet_fwhm_mm: float = 6.0
    fov_mm: tuple[float, float, float] = (72.0, 72.0, 48.0)
    seed: int = 0


@dataclass
class VariedStudy:
    """A rendered case: channels on one grid, the truth labels (uint8, 1-4) and the stroke
    guide (the truth, plus each unlabelled tissue a reader tells apart: 5 soft tissue,
    6 disc, 7 epidural fat; for :func:`~MESCCAnalyzerLib.segmentation.seeds.strokes_from_labels`).
    """

    variation: Variation
    t2: sitk.Image
    t1: sitk.Image
    pet_suv: sitk.Image
    labels: sitk.Image
    guide: sitk.Image


@dataclass(frozen=True)
class ShapedAnatomy(PhantomAnatomy):
    """The phantom anatomy with a mass of another shape (see the module docstring)."""

    shape: str = "round"
    lobe_depth: float = 0.3
    lobe_phase: float = 0.0
    side: float = 1.0

    def in_mass(self, x, y, z):
        base = super().in_mass(x, y, z)
        if self.shape == "round":
            return base
        if self.shape == "lobulated":
            q = (
                (x / self.mass_ax) ** 2
                + ((y - self.mass_cy) / self.mass_ay) ** 2
                + (z / self.mass_az) ** 2
            )
            theta = np.arctan2(y - self.mass_cy, x)
            lobes = (0.5 + 0.5 * np.cos(3.0 * theta + self.lobe_phase)) * (
                0.5 + 0.5 * np.cos(math.pi * z / self.mass_az)
            )
            return np.sqrt(q) <= 1.0 - self.lobe_depth * lobes
        if self.shape == "circumferential":
            ring = (
                (ellipse_q(x, y, 0.0, 0.0, self.canal_ax, self.canal_ay) <= 1.0)
                & (ellipse_q(x, y, 0.0, 0.0, 0.85 * self.sac_ax, 0.85 * self.sac_ay) > 1.0)
                & (np.abs(z) <= 0.8 * self.mass_az)
            )
            return base | ring
        if self.shape == "posterolateral":
            cx = self.side * 0.78 * self.canal_ax
            cy = 0.45 * self.canal_ay
            return (
                ((x - cx) / (0.38 * self.canal_ax)) ** 2
                + ((y - cy) / (0.45 * self.canal_ay)) ** 2
                + (z / (0.8 * self.mass_az)) ** 2
            ) <= 1.0
        raise ValueError(f"unknown mass shape {self.shape!r}")

    def classify(self, u: np.ndarray) -> np.ndarray:
        tissue = super().classify(u)
        if self.shape != "round":
            # the base overlays the mass only inside the ellipsoid's bounding box
            tissue[self.in_mass(u[:, 0], u[:, 1], u[:, 2])] = MASS
        return tissue


def shaped_anatomy(variation: Variation) -> ShapedAnatomy:
    """The anatomy of ``variation``: the phantom's for its grade and seed, scaled and shaped."""
    base, _ = make_anatomy(variation.grade, variation.seed)
    s = variation.size_scale
    scaled = {
        name: getattr(base, name) * s
        for name in (
            "sac_ax",
            "sac_ay",
            "cord_ax",
            "cord_ay",
            "cord_cy",
            "canal_ax",
            "canal_ay",
            "body_ax",
            "body_ay",
            "body_cy",
            "post_outer_ax",
            "post_outer_ay",
            "post_min_y",
            "mass_cy",
            "mass_ax",
            "mass_ay",
            "mass_az",
        )
    }
    rng = np.random.default_rng(variation.seed + 7)
    fields = {f: getattr(base, f) for f in base.__dataclass_fields__}
    fields.update(scaled)
    return ShapedAnatomy(
        **fields,
        shape=variation.shape,
        lobe_depth=float(rng.uniform(0.2, 0.35)),
        lobe_phase=float(rng.uniform(0, 2 * math.pi)),
        side=float(rng.choice([-1.0, 1.0])),
    )


def _smooth_field(shape_kji, spacing_ijk, sigma_mm: float, rng: np.random.Generator):
    """A smooth random field of unit standard deviation."""
    image = sitk.GetImageFromArray(rng.normal(0.0, 1.0, shape_kji).astype(np.float32))
    image.SetSpacing(tuple(float(v) for v in spacing_ijk))
    field = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(image, sigma_mm))
    return field / max(float(field.std()), 1e-6)


# (structure tissue, touching tissue of another label) kept apart on T2 by the jitter: the
# mass and the marrow it replaces, the disc beside the vertebral body, the epidural fat and
# the cord it compresses; the CSF and the epidural fat around the sac
_T2_APART = ((MASS, MARROW), (MASS, DISC), (MASS, FAT), (MASS, CORD), (CSF, FAT))


def tissue_levels(variation: Variation) -> np.ndarray:
    """(8, 3) T2, T1, SUV level of each tissue for ``variation``."""
    rng = np.random.default_rng(variation.seed + 11)
    levels = _LEVELS.copy()
    j = variation.contrast_jitter
    levels[:, :2] *= rng.uniform(1.0 - j, 1.0 + j, size=(len(levels), 2))
    # keep each structure's tissue apart on T2 by at least 15 % from the tissues of other
    # labels it touches, in their usual order (else no T2-only method can tell them apart)
    for fixed, moved in _T2_APART:
        a, b = levels[fixed, 0], levels[moved, 0]
        if abs(a - b) < 0.15 * a:
            levels[moved, 0] = a * (0.85 if T2_LEVELS[moved] <= T2_LEVELS[fixed] else 1.15)
    levels[MASS, 2] = variation.mass_suv
    return levels


def make_case(variation: Variation) -> VariedStudy:
    """Render ``variation``: T2, T1, PET (SUV) on one MRI grid and the truth labels."""
    v = variation
    anatomy = shaped_anatomy(v)
    rng = np.random.default_rng(v.seed + 1000)
    pose = make_pose(
        {
            "tilt_deg": [v.tilt_deg, float(rng.uniform(-3, 3)), float(rng.uniform(-5, 5))],
            "origin_offset_mm": [float(x) for x in rng.uniform(-1.5, 1.5, 3)],
            "ct_rotation_deg": [0.0, 0.0, 0.0],
            "ct_translation_mm": [0.0, 0.0, 0.0],
        }
    )
    spacing = (v.inplane_mm, v.inplane_mm, v.slice_mm)
    size = tuple(max(8, int(round(f / s))) for f, s in zip(v.fov_mm, spacing, strict=True))
    grid = Grid.centred(MRI_CENTRE_LPS, size, spacing)
    centre = tissue_on_grid(anatomy, grid, pose.anatomy_from_mri, [(0.0, 0.0, 0.0)])[0]
    levels = tissue_levels(v)
    # partial volume over the whole voxel: 2 x 2 in plane, one sample per mm across the slab;
    # the same sub-samples give each label's fraction of the voxel (the truth, below)
    per_axis = (2, 2, max(2, int(math.ceil(v.slice_mm))))
    n_labels = int(TISSUE_TO_LABEL.max()) + 1
    values = np.concatenate([levels, np.eye(n_labels)[TISSUE_TO_LABEL]], axis=1)
    mixed = partial_volume_mean(anatomy, grid, pose.anatomy_from_mri, centre, values, per_axis)
    labels = majority_labels(mixed[..., levels.shape[1] :], TISSUE_TO_LABEL[centre])
    mixed = mixed[..., : levels.shape[1]]
    shape = centre.shape
    # bias: a random smooth (linear + quadratic) field with the asked peak-to-peak amplitude
    kk, jj, ii = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    c = rng.normal(0, 1, 6)
    bias = c[0] * ii + c[1] * jj + 0.5 * c[2] * kk + c[3] * ii * jj + c[4] * ii**2 + c[5] * jj**2
    bias = 1.0 + v.bias * (bias - bias.mean()) / max(float(np.ptp(bias)), 1e-6)
    texture = 1.0 + v.texture * _smooth_field(shape, spacing, 1.5, rng)
    images = {}
    sigma = v.noise * float(levels[:, 0].max())
    for channel, name in enumerate(("t2", "t1")):
        signal = mixed[..., channel] * bias * texture
        images[name] = grid.image(rician(signal, sigma, rng).astype(np.float32))
    # PET: point spread on the MRI grid, 4 mm voxels with 4 % noise, back onto the MRI grid
    suv = grid.image(mixed[..., 2].astype(np.float32))
    suv = sitk.SmoothingRecursiveGaussian(suv, v.pet_fwhm_mm / (2 * math.sqrt(2 * math.log(2))))
    pet_size = [
        max(2, int(round(n * s / PET_VOXEL_MM))) for n, s in zip(size, spacing, strict=True)
    ]
    pet_grid = Grid.centred(MRI_CENTRE_LPS, pet_size, (PET_VOXEL_MM,) * 3)
    coarse = sitk.Resample(
        suv, pet_grid.image(np.zeros(pet_size[::-1], np.float32)), sitk.Transform(), sitk.sitkLinear
    )
    arr = sitk.GetArrayFromImage(coarse)
    arr = np.clip(arr * (1 + rng.normal(0, 0.04, arr.shape)), 0, None).astype(np.float32)
    noisy = sitk.GetImageFromArray(arr)
    noisy.CopyInformation(coarse)
    pet = sitk.Resample(noisy, images["t2"], sitk.Transform(), sitk.sitkLinear, 0.0)
    return VariedStudy(
        variation=v,
        t2=images["t2"],
        t1=images["t1"],
        pet_suv=pet,
        labels=grid.image(labels.astype(np.uint8)),
        guide=grid.image(stroke_guide(labels, centre)),
    )


# the unlabelled tissues a reader tells apart, as guide values above the structures'
_GUIDE_OTHER = {OTHER: 5, DISC: 6, FAT: 7}


def stroke_guide(labels: np.ndarray, tissue: np.ndarray) -> np.ndarray:
    """The truth ``labels`` with the unlabelled voxels named by their tissue (5 soft tissue,
    6 disc, 7 epidural fat): strokes are drawn in each tissue a reader sees, the truth is
    unchanged."""
    guide = labels.astype(np.uint8).copy()
    for t, value in _GUIDE_OTHER.items():
        guide[(labels == 0) & (tissue == t)] = value
    return guide


def majority_labels(fractions: np.ndarray, centre_labels: np.ndarray) -> np.ndarray:
    """The label covering most of each voxel (``fractions``: (k, j, i, labels)); ties go to
    the label at the voxel centre.

    The image is the mean over the voxel, so the majority is what it shows: the label at the
    voxel centre alone can be a tissue covering a minority of a boundary voxel (a 4 mm slab
    crossing a tilted boundary), which no method reading the image can recover.
    """
    bonus = np.zeros_like(fractions)
    np.put_along_axis(bonus, centre_labels[..., None].astype(np.intp), 1e-6, axis=-1)
    return np.argmax(fractions + bonus, axis=-1).astype(np.uint8)


def _spread(values, n: int, rng: np.random.Generator) -> list:
    """``n`` values cycling through ``values`` in a random order (each used evenly)."""
    out = [values[i % len(values)] for i in range(n)]
    rng.shuffle(out)
    return out


def battery(n: int = 30, *, seed: int = 0, fov_mm=(72.0, 72.0, 48.0)) -> list[Variation]:
    """``n`` varied cases: every factor spread evenly over its range, independently shuffled.

    Shapes and grades: round masses of grades 1b, 2 and 3 (grade 3: the cord flattened),
    lobulated (1b, 2), circumferential (1c), posterolateral (1b).
    """
    rng = np.random.default_rng(seed)
    kinds = [
        ("1b", "round"),
        ("2", "round"),
        ("3", "round"),
        ("2", "lobulated"),
        ("1b", "lobulated"),
        ("1c", "circumferential"),
        ("1b", "posterolateral"),
        ("3", "lobulated"),
    ]
    kinds = [kinds[i % len(kinds)] for i in range(n)]
    factors = {
        "size_scale": _spread(list(np.linspace(0.85, 1.15, 5)), n, rng),
        "tilt_deg": _spread([0.0, 6.0, 12.0, 18.0, 25.0], n, rng),
        "slice_mm": _spread([1.0, 2.0, 3.0, 4.0], n, rng),
        "inplane_mm": _spread([0.6, 0.75, 0.9], n, rng),
        "noise": _spread([0.01, 0.02, 0.03, 0.04, 0.05], n, rng),
        "bias": _spread([0.0, 0.1, 0.2, 0.3], n, rng),
        "texture": _spread([0.0, 0.02, 0.04], n, rng),
        "contrast_jitter": _spread([0.05, 0.1, 0.15], n, rng),
        "mass_suv": _spread([3.0, 5.0, 7.0, 10.0], n, rng),
        "pet_fwhm_mm": _spread([5.0, 6.0, 7.0, 8.0], n, rng),
    }
    cases = []
    for i, (grade, shape) in enumerate(kinds):
        values = {k: float(v[i]) for k, v in factors.items()}
        cases.append(
            Variation(
                name=f"{i + 1:02d}-{grade}-{shape}",
                grade=grade,
                shape=shape,
                fov_mm=tuple(fov_mm),
                seed=seed * 1000 + i,
                **values,
            )
        )
    return cases


def smaller(variation: Variation, fov_mm=(56.0, 56.0, 36.0), min_inplane_mm=0.9) -> Variation:
    """The same case on a smaller field of view and coarser in-plane voxels (fast tests)."""
    return replace(
        variation, fov_mm=tuple(fov_mm), inplane_mm=max(variation.inplane_mm, min_inplane_mm)
    )
