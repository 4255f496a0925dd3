"""Seeded segmentation: cord, CSF, epidural mass and bone grown from a user's strokes.

The user paints a few strokes inside each structure (1 cord, 2 CSF, 3 mass, 4 bone) and one or
more "other" labels (any value above 4) around them; all labels grow competitively, as in
Slicer's *Grow from seeds*. Several co-registered images (e.g. T2 and PET resampled onto the
T2 grid) act together as one multi-channel image.

:class:`SeedGrower` is the method the pipeline, ``mescc segment``, the demo and the panel use:
issue 16's competing shortest paths with costs learnt from each study's strokes
(:mod:`.paths`). The marker watershed it replaced (:mod:`.watershed`) stays for the
benchmarks' side-by-side tables (``docs/segmentation.md``).

The checks of images, seeds and region and the seed files live in :mod:`.inputs`; they are
re-exported here, where the front ends import them from.
"""

from __future__ import annotations

from collections.abc import Sequence

import SimpleITK as sitk

from ..progress import CancelCallback, ProgressCallback
from .inputs import (
    MAX_SEED_LABEL,
    STRUCTURE_LABELS,
    Box,
    check_inputs,
    dice,
    joint_smooth,
    label_from_text,
    load_seeds,
    points_to_seeds,
    same_grid,
    seed_box,
    seed_labels,
)
from .paths import PathGrower, PathParameters

__all__ = [
    "MAX_SEED_LABEL",
    "STRUCTURE_LABELS",
    "Box",
    "PathParameters",
    "SeedGrower",
    "check_inputs",
    "dice",
    "grow_from_seeds",
    "joint_smooth",
    "label_from_text",
    "load_seeds",
    "points_to_seeds",
    "same_grid",
    "seed_box",
    "seed_labels",
]


class SeedGrower(PathGrower):
    """Competitive growth from seed labels, caching the features for interactive updates.

    Parameters
    ----------
    images : one or more co-registered scalar 3D images on the same grid (the first is the
        reference; e.g. T2, T1, then PET resampled onto the T2 grid).
    roi : optional mask on the same grid; only its non-zero voxels are segmented.
    params : :class:`~.paths.PathParameters`.
    resolution_mm : per image, the voxel size of the scan it was resampled from when coarser
        than the grid (a PET: its own voxels; 0: the grid's own).

    Call :meth:`grow` with a seed labelmap (labels 1 cord, 2 CSF, 3 mass, 4 bone, above 4
    other tissue, on the first image's grid); call it again with more strokes: the cropped,
    denoised channels and the learnt costs are reused (``feature_computations``) while the
    seeds stay inside the cached region, and the paths are re-solved from the new strokes
    only (``last_update_voxels``), with the result of a full solve. The method: :mod:`.paths`.
    """


def grow_from_seeds(
    images: Sequence[sitk.Image],
    seeds: sitk.Image,
    *,
    roi: sitk.Image | None = None,
    smoothing_mm: float = 0.0,
    keep_labels: Sequence[int] | None = STRUCTURE_LABELS,
    params: PathParameters | None = None,
    resolution_mm: Sequence[float] | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> sitk.Image:
    """One-shot :class:`SeedGrower` run: the labelmap grown from ``seeds`` over ``images``."""
    grower = SeedGrower(images, roi=roi, params=params, resolution_mm=resolution_mm)
    return grower.grow(
        seeds, keep_labels=keep_labels, smoothing_mm=smoothing_mm, progress=progress, cancel=cancel
    )
