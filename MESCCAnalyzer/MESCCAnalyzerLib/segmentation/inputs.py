"""What every seeded method shares: the checks of images, seeds and region, seed files and
point lists, the seed box, joint smoothing of labels and the Dice coefficient."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .. import LABEL_BONE, LABEL_CORD, LABEL_CSF, LABEL_MASS
from ..errors import InputError
from ..io.markups import read_markups_points
from ..io.study import load_image

STRUCTURE_LABELS = (LABEL_CORD, LABEL_CSF, LABEL_MASS, LABEL_BONE)
"""The labels kept in the result; seeds with a larger value are "other" tissue."""

_ORIGIN_TOL_MM = 1e-3
_DIRECTION_TOL = 1e-4


@dataclass(frozen=True)
class Box:
    """A box of voxels ``[start, start + size)`` in ITK index order (i, j, k)."""

    start: tuple[int, int, int]
    size: tuple[int, int, int]

    def contains(self, other: Box) -> bool:
        return all(
            s <= o and o + n <= s + m
            for s, m, o, n in zip(self.start, self.size, other.start, other.size, strict=True)
        )

    @property
    def slices_kji(self) -> tuple[slice, slice, slice]:
        return tuple(
            slice(s, s + n) for s, n in zip(self.start[::-1], self.size[::-1], strict=True)
        )


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def same_grid(a: sitk.Image, b: sitk.Image) -> bool:
    """Whether two images share size, spacing, origin and direction (within 1 µm / 1e-4)."""
    return (
        a.GetSize() == b.GetSize()
        and np.allclose(a.GetSpacing(), b.GetSpacing(), rtol=1e-5, atol=1e-6)
        and np.allclose(a.GetOrigin(), b.GetOrigin(), atol=_ORIGIN_TOL_MM)
        and np.allclose(a.GetDirection(), b.GetDirection(), atol=_DIRECTION_TOL)
    )


def _grid_text(image: sitk.Image) -> str:
    size = "x".join(str(v) for v in image.GetSize())
    spacing = "x".join(f"{v:.3g}" for v in image.GetSpacing())
    return f"{size} voxels of {spacing} mm"


def check_inputs(
    images: Sequence[sitk.Image],
    seeds: sitk.Image | None = None,
    roi: sitk.Image | None = None,
    *,
    names: Sequence[str] | None = None,
    seeds_name: str | None = None,
    roi_name: str | None = None,
) -> None:
    """Raise :class:`InputError` unless images, seeds and ROI are usable together.

    ``names``/``seeds_name``/``roi_name`` (file names) only make the messages precise.
    """
    if not images:
        raise InputError("no image given", hint="give at least one --image")
    names = list(names) if names is not None else [f"image {i + 1}" for i in range(len(images))]
    ref = images[0]
    for image, name in zip(images, names, strict=True):
        if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
            raise InputError("is not a scalar 3D image", path=name)
        if min(image.GetSize()) < 2:
            raise InputError("has fewer than 2 voxels along one axis", path=name)
    for image, name in zip(images[1:], names[1:], strict=True):
        if not same_grid(image, ref):
            raise InputError(
                f"is not on the first image's grid ({_grid_text(image)} vs {_grid_text(ref)}, or a different origin/direction)",
                path=name,
                hint=f"resample it onto {names[0]} first",
            )
    if seeds is not None:
        _check_seeds(seeds, ref, seeds_name, ref_name=names[0])
    if roi is not None:
        if not same_grid(roi, ref):
            raise InputError(
                f"the region of interest is not on the first image's grid ({_grid_text(roi)} vs {_grid_text(ref)})",
                path=roi_name,
            )
        if not np.any(sitk.GetArrayViewFromImage(roi)):
            raise InputError("the region of interest is empty", path=roi_name)
        if seeds is not None:
            inside = sitk.GetArrayViewFromImage(roi) != 0
            s = sitk.GetArrayViewFromImage(seeds)
            if len(np.unique(s[inside & (s > 0)])) < 2:
                raise InputError(
                    "fewer than two seed labels lie inside the region of interest",
                    path=roi_name,
                    hint="enlarge the region or paint strokes inside it",
                )


def check_resolutions(
    values: Sequence[float] | None,
    n_images: int,
    *,
    name: str = "resolution_mm",
    per: str = "image",
    hint: str = "",
) -> list[float]:
    """One resolution (mm, >= 0) per image, 0 for each when ``values`` is None (see
    :class:`~.paths.PathGrower`); ``name`` and ``per`` word the error (an option's name on the
    command line)."""
    if values is None:
        return [0.0] * n_images
    out = [float(v) for v in values]
    if len(out) != n_images or not all(v >= 0 for v in out):  # NaN fails too
        raise InputError(
            f"{name} needs one value >= 0 mm per {per} ({n_images}), got {out}", hint=hint
        )
    return out


def _check_seeds(seeds: sitk.Image, ref: sitk.Image, path, *, ref_name="the image") -> None:
    """Seeds on ``ref``'s grid with at least two labels; errors name the seeds file ``path``."""
    if seeds.GetDimension() != 3 or seeds.GetNumberOfComponentsPerPixel() != 1:
        raise InputError("the seeds are not a scalar 3D labelmap", path=path)
    if not same_grid(seeds, ref):
        raise InputError(
            f"the seeds are not on the first image's grid ({_grid_text(seeds)} vs {_grid_text(ref)}, or a different origin/direction)",
            path=path,
            hint=f"paint the seeds on {ref_name} (or give them as a .mrk.json point list)",
        )
    labels = seed_labels(seeds)
    if len(labels) < 2:
        found = "no label" if not labels else f"only label {labels[0]}"
        raise InputError(
            f"the seeds hold {found}; growing needs at least two competing labels",
            path=path,
            hint="add strokes of another structure or of 'other' tissue (a label above 4) around it",
        )


def seed_labels(seeds: sitk.Image) -> list[int]:
    """The distinct non-zero labels of a seed image, ascending."""
    values = np.unique(sitk.GetArrayViewFromImage(seeds))
    return [int(v) for v in values if v != 0]


# --------------------------------------------------------------------------------------------
# Regions
# --------------------------------------------------------------------------------------------


def box_of_mask(mask_kji: np.ndarray) -> Box:
    """The bounding box of the non-zero voxels of a (k, j, i) mask."""
    nz = [
        np.flatnonzero(mask_kji.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)
    ]
    lo = [int(v[0]) for v in nz]
    hi = [int(v[-1]) + 1 for v in nz]
    return Box(tuple(lo[::-1]), tuple((b - a) for a, b in zip(lo[::-1], hi[::-1], strict=True)))


def seed_box(seeds: sitk.Image, margin_mm: float) -> Box:
    """The seeds' bounding box grown by ``margin_mm`` on each side, clipped to the image."""
    arr = sitk.GetArrayViewFromImage(seeds)
    box = box_of_mask(arr != 0)
    margin = [int(np.ceil(margin_mm / s)) for s in seeds.GetSpacing()]
    size = seeds.GetSize()
    start = [max(0, b - m) for b, m in zip(box.start, margin, strict=True)]
    stop = [min(n, b + s + m) for b, s, m, n in zip(box.start, box.size, margin, size, strict=True)]
    return Box(tuple(start), tuple(e - s for s, e in zip(start, stop, strict=True)))


def region_box(roi: sitk.Image | None, seeds: sitk.Image, margin_mm: float) -> Box:
    """Where a grower works: the ROI's bounding box when there is one, else the seeds' box
    grown by ``margin_mm`` (:func:`seed_box`)."""
    if roi is not None:
        return box_of_mask(sitk.GetArrayViewFromImage(roi) != 0)
    return seed_box(seeds, margin_mm)


def joint_smooth(lab: np.ndarray, sigma_mm: float, spacing) -> np.ndarray:
    """Smooth all labels together: each voxel takes the label of largest Gaussian-smoothed
    indicator (``sigma_mm`` on a grid of ``spacing`` mm, i j k), so no overlap and no gap."""
    values = [int(v) for v in np.unique(lab)]
    best = np.full(lab.shape, -1.0, dtype=np.float32)
    out = lab.copy()
    for value in values:
        img = sitk.GetImageFromArray((lab == value).astype(np.float32))
        img.SetSpacing(tuple(float(v) for v in spacing))
        s = sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(img, sigma_mm))
        take = s > best
        out[take] = value
        best[take] = s[take]
    return out


def points_to_seeds(
    reference: sitk.Image,
    points: Sequence[tuple[str, np.ndarray]],
    *,
    source: str | None = None,
) -> sitk.Image:
    """A seed labelmap on ``reference``'s grid from ``(label text, xyz_lps)`` points.

    Each point marks the voxel that contains it with the integer of its text (e.g. "1", or a
    name such as "cord", "csf", "mass", "bone", "other" / "other2"...). A point outside the
    image or with an unreadable label raises :class:`InputError` naming ``source``.
    """
    arr = np.zeros(reference.GetSize()[::-1], dtype=np.uint16)
    for n, (text, xyz) in enumerate(points):
        label = label_from_text(text)
        if label is None:
            raise InputError(
                f"point {n + 1} has label {text!r}, not a number 1-{MAX_SEED_LABEL} or a "
                "structure name",
                path=source,
                hint="give each point a description 1 (cord), 2 (CSF), 3 (mass), 4 (bone) or "
                f"5+ (other, or other1 ... other{MAX_SEED_LABEL - 4})",
            )
        index = reference.TransformPhysicalPointToContinuousIndex(tuple(float(v) for v in xyz))
        ijk = [int(np.floor(v + 0.5)) for v in index]
        if any(v < 0 or v >= s for v, s in zip(ijk, reference.GetSize(), strict=True)):
            lps = ", ".join(f"{v:.1f}" for v in xyz)
            raise InputError(
                f"point {n + 1} ({text}) at LPS ({lps}) mm lies outside the image", path=source
            )
        arr[ijk[2], ijk[1], ijk[0]] = label
    if not points:
        raise InputError("the point list holds no defined point", path=source)
    image = sitk.GetImageFromArray(arr)
    image.CopyInformation(reference)
    return image


_NAMES = {
    "cord": LABEL_CORD,
    "spinal_cord": LABEL_CORD,
    "spinal cord": LABEL_CORD,
    "csf": LABEL_CSF,
    "mass": LABEL_MASS,
    "epidural_mass": LABEL_MASS,
    "epidural mass": LABEL_MASS,
    "tumor": LABEL_MASS,
    "tumour": LABEL_MASS,
    "bone": LABEL_BONE,
    "vertebrae": LABEL_BONE,
    "other": 5,
}


#: largest seed label (seed labelmaps are uint16)
MAX_SEED_LABEL = 65535


def label_from_text(text: str) -> int | None:
    """The label of a seed's text: an integer 1-65535, a structure name, or 'other'/'otherN'
    (label 4 + N, at most 65535); ``None`` for anything else."""
    t = str(text).strip().lower()
    if t.isdigit() and t.isascii():
        value = int(t)
        return value if 1 <= value <= MAX_SEED_LABEL else None
    if t in _NAMES:
        return _NAMES[t]
    rest = t[5:].strip()
    if t.startswith("other") and rest.isdigit() and rest.isascii():
        value = 4 + max(1, int(rest))
        return value if value <= MAX_SEED_LABEL else None
    return None


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean arrays (1.0 when both are empty)."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def load_seeds(path, reference: sitk.Image) -> sitk.Image:
    """Seeds from a file: a labelmap on ``reference``'s grid, or a Slicer ``.mrk.json``
    point list whose points carry their label as description (see :func:`points_to_seeds`).

    Every check on the seeds is made here, so that each error names the seeds file whoever
    calls: readable, integer labels 0-65535, on ``reference``'s grid, at least two labels.
    """
    if str(path).endswith(".json"):
        seeds = points_to_seeds(reference, read_markups_points(path), source=path)
    else:
        seeds = load_image(path)
        arr = sitk.GetArrayViewFromImage(seeds)
        if np.issubdtype(arr.dtype, np.floating) and not np.all(np.equal(np.mod(arr, 1), 0)):
            raise InputError(
                "the seed labelmap holds non-integer values",
                path=path,
                hint="save the seeds as a labelmap",
            )
        if arr.min(initial=0) < 0 or arr.max(initial=0) > MAX_SEED_LABEL:
            raise InputError(f"seed labels must lie between 0 and {MAX_SEED_LABEL}", path=path)
    _check_seeds(seeds, reference, path)
    return seeds
