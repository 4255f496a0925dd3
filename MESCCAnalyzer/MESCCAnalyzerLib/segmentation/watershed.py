"""The seeded method used until 2026-12-03 (now :class:`WatershedGrower`, kept for the
benchmarks' side-by-side tables; :class:`~.grow.SeedGrower` is the shortest paths of
:mod:`.paths`): marker watershed + boundary refinement.

Every voxel is claimed by the seed label it is nearest to in image terms.

The user paints a few strokes inside each structure (1 cord, 2 CSF, 3 mass, 4 bone) and one or
more "other" labels (any value above 4) around them; all labels grow competitively, as in
Slicer's *Grow from seeds*. Several co-registered images (e.g. T2 and PET resampled onto the T2
grid) act together as one multi-channel image.

Method (all heavy steps in SimpleITK's C++ filters):

1. **Features** (computed once per region and cached by :class:`WatershedGrower`): the images are
   cropped to the region of interest; each channel is divided by its robust intensity range in
   the region (1st to 99th percentile), so that an MRI in arbitrary units and a PET in SUV are
   comparable, then weighted (first image 1, each further image 0.5 by default: a PET on the
   MRI grid is blurred, and its full weight pulls boundaries inside small masses); the edge
   image is the root sum of squares of the channels' gradient magnitudes after a light Gaussian
   smoothing (``edge_sigma_mm``, physical units, so anisotropic voxels are handled), quantised
   to 256 levels (the 99.9th percentile maps to the top level).
2. **Flooding**: a marker-based morphological watershed on the edge image (SimpleITK, C++):
   every seed label floods the image from its strokes, lowest edges first, until the fronts
   meet on the edge ridges.
3. **Boundary refinement** (``refine_passes``, default 2): a voxel on the boundary between
   labels moves to the neighbouring label whose *local* mean in the first image (a
   Gaussian-weighted mean of that label's voxels within about a mm, ``mean_sigma_mm``) is
   closest to the voxel's value. This corrects the watershed's half-voxel bias on one-voxel
   steps (real T2 cord Dice, worst of five stroke draws, 0.844 -> 0.856) and moves a mass boundary
   drawn by the blurred PET out to the sharper MRI edge (phantom grade 1a mass 0.865 -> 0.920).
   Seed voxels never change label.

An update after corrected strokes (:meth:`WatershedGrower.grow` again) reuses the crop, the
normalised channels and the edge image (step 1) as long as the seeds stay inside the cached
region (always with a ROI), and re-runs steps 2-3 over the region.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..progress import CancelCallback, ProgressCallback, check, no_progress
from .inputs import STRUCTURE_LABELS, Box, check_inputs, joint_smooth, region_box


@dataclass(frozen=True)
class GrowParameters:
    """Tuning of :class:`WatershedGrower` (defaults measured on the phantom and real T2, see docs).

    edge_sigma_mm : Gaussian sigma (mm) before the gradient magnitude of each channel.
    mean_sigma_mm : Gaussian sigma (mm) of the local label means used by the refinement.
    refine_passes : maximum number of boundary refinement passes (0 = watershed only).
    margin_mm : without a region of interest, the seeds' bounding box grows by this much.
    channel_weights : weight of each image after range normalisation (default 1 for the
        first, 0.5 for each further image).
    refine_channels : how many leading images the refinement compares (default 1: the MRI).
    update_margin_mm : an update re-solves the changed strokes' box grown by this much
        (doubled until the change stays away from the box's faces).
    """

    edge_sigma_mm: float = 0.5
    mean_sigma_mm: float = 1.0
    refine_passes: int = 2
    margin_mm: float = 15.0
    channel_weights: tuple[float, ...] | None = None
    refine_channels: int = 1
    update_margin_mm: float = 10.0


# --------------------------------------------------------------------------------------------
# The grower
# --------------------------------------------------------------------------------------------

_COARSE_SIGMAS = 1.0  # coarse voxels of the local means: at most one sigma wide
_EDGE_LEVELS = 255
_FURTHER_CHANNEL_WEIGHT = 0.5
_UPDATE_BORDER_VOXELS = 4  # an update's box: changes this close to a face enlarge the box
_NEIGHBOURS = ((1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1))


class WatershedGrower:
    """Competitive growth from seed labels, caching the features for interactive updates.

    Parameters
    ----------
    images : one or more co-registered scalar 3D images on the same grid (the first is the
        reference; e.g. T2 then PET resampled onto the T2 grid).
    roi : optional mask on the same grid; only its non-zero voxels are segmented.
    params : :class:`GrowParameters`.

    Call :meth:`grow` with a seed labelmap; call it again with corrected seeds: the cropped,
    normalised channels and the edge image are reused while the seeds stay inside the cached
    region (always, when a ROI is given).
    """

    def __init__(
        self,
        images: Sequence[sitk.Image],
        *,
        roi: sitk.Image | None = None,
        params: GrowParameters | None = None,
    ):
        check_inputs(images, roi=roi)
        self.images = list(images)
        self.roi = roi
        self.params = params or GrowParameters()
        self._box: Box | None = None
        self._channels: np.ndarray | None = None  # (C, k, j, i) float32, normalised
        self._edge: sitk.Image | None = None
        self._inside: np.ndarray | None = None  # ROI mask in the box (bool) or None
        self._edge_levels: np.ndarray | None = None
        self._state: dict | None = None  # previous seeds and labels, for local updates
        self.feature_computations = 0  # how many times step 1 ran (for tests and benchmarks)
        self.last_update_voxels = 0  # voxels re-solved by the last grow() (whole region or a box)

    # -- step 1 --------------------------------------------------------------------------
    def _region_for(self, seeds: sitk.Image) -> Box:
        return region_box(self.roi, seeds, self.params.margin_mm)

    def _features(self, box: Box, progress: ProgressCallback, cancel) -> None:
        if self._box is not None and self._box.contains(box):
            return
        if self.roi is None and self._box is not None:
            # grow the cached box generously so that a few more strokes do not recompute it
            merged_lo = [min(a, b) for a, b in zip(self._box.start, box.start, strict=True)]
            merged_hi = [
                max(a + n, b + m)
                for a, n, b, m in zip(
                    self._box.start, self._box.size, box.start, box.size, strict=True
                )
            ]
            box = Box(
                tuple(merged_lo), tuple(b - a for a, b in zip(merged_lo, merged_hi, strict=True))
            )
        sl = box.slices_kji
        channels = []
        edge2 = None
        for c, image in enumerate(self.images):
            check(cancel)
            progress(c / len(self.images), f"features of image {c + 1}")
            crop = sitk.RegionOfInterest(sitk.Cast(image, sitk.sitkFloat32), box.size, box.start)
            arr = sitk.GetArrayFromImage(crop)
            lo, hi = np.percentile(arr.ravel()[:: max(1, arr.size // 200_000)], [1.0, 99.0])
            scale = float(hi - lo) if hi > lo else float(np.ptp(arr)) or 1.0
            if self.params.channel_weights:
                weight = self.params.channel_weights[c]
            else:
                weight = 1.0 if c == 0 else _FURTHER_CHANNEL_WEIGHT
            channel = (arr * (weight / scale)).astype(np.float32)
            channels.append(channel)
            norm = sitk.GetImageFromArray(channel)
            norm.CopyInformation(crop)
            if c == 0:
                grad = sitk.GradientMagnitudeRecursiveGaussian(norm, self.params.edge_sigma_mm)
            else:
                # further images (a PET on the MRI grid) are smooth: smoothing + central
                # differences give the same edges at half the cost; the first image keeps the
                # derivative-of-Gaussian, better on one-voxel CSF layers (real T2 cord Dice)
                smooth = sitk.SmoothingRecursiveGaussian(norm, self.params.edge_sigma_mm)
                grad = sitk.GradientMagnitude(smooth)
            g2 = sitk.Square(grad)
            edge2 = g2 if edge2 is None else sitk.Add(edge2, g2)
        # ITK's marker watershed keeps one queue per grey level: on a float image with a
        # distinct level per voxel it is ~10x slower than on 256 quantised levels (which give
        # the same Dice as 4096 levels on the phantom battery and the real T2).
        edge = sitk.GetArrayFromImage(sitk.Sqrt(edge2))
        top = float(np.percentile(edge, 99.9)) or 1.0
        levels = np.minimum(np.round(edge * (_EDGE_LEVELS / top)), _EDGE_LEVELS)
        levels = np.nan_to_num(levels, nan=0.0).astype(np.uint8)
        self._edge_levels = levels
        self._edge = sitk.GetImageFromArray(levels)
        self._edge.CopyInformation(crop)
        self._channels = np.stack(channels)
        self._inside = (
            (sitk.GetArrayViewFromImage(self.roi)[sl] != 0) if self.roi is not None else None
        )
        self._box = box
        self._state = None
        self.feature_computations += 1
        progress(1.0, "features")

    # -- steps 2 and 3 -------------------------------------------------------------------
    def grow(
        self,
        seeds: sitk.Image,
        *,
        keep_labels: Sequence[int] | None = STRUCTURE_LABELS,
        smoothing_mm: float = 0.0,
        progress: ProgressCallback | None = None,
        cancel: CancelCallback | None = None,
    ) -> sitk.Image:
        """Grow ``seeds`` (labelmap on the images' grid) into a full labelmap.

        Returns a uint8 image on the reference grid (uint16 if ``keep_labels`` is None and
        labels exceed 255) holding only ``keep_labels`` (all labels if None); voxels outside
        the region are 0. ``smoothing_mm`` > 0 smooths the labels jointly (Gaussian sigma in
        mm, each voxel to the label of highest smoothed indicator: no overlap, no gap).
        """
        progress = progress or no_progress
        check_inputs(self.images, seeds, self.roi)
        seeds_arr = sitk.GetArrayViewFromImage(seeds)
        box = self._region_for(seeds)
        self._features(box, lambda f, m: progress(0.5 * f, m), cancel)
        sl = self._box.slices_kji
        # a copy: the state below outlives ``seeds`` (a view would point into freed memory)
        seeds_box = np.array(seeds_arr[sl], dtype=np.uint16)
        labels = [int(v) for v in np.unique(seeds_box) if v]
        if self._inside is not None:
            seeds_box = np.where(self._inside, seeds_box, 0).astype(np.uint16)
            labels = [int(v) for v in np.unique(seeds_box) if v]
        if len(labels) < 2:
            raise InputError("fewer than two seed labels lie inside the region being segmented")
        check(cancel)
        progress(0.5, "flooding")
        markers = seeds_box.copy()
        barrier = max(labels) + 1
        if self._inside is not None:
            markers[~self._inside] = barrier
        lab = None
        state = self._state
        if state is not None and state["box"] == self._box and state["labels"] == labels:
            lab = self._local_update(seeds_box, markers, labels, state)
        if lab is None:
            flood, lab = self._solve(markers, labels, (slice(None),) * 3)
            self.last_update_voxels = lab.size
        else:
            flood, lab = lab
        self._state = {
            "box": self._box,
            "labels": labels,
            "seeds": seeds_box,
            "flood": flood,
            "lab": lab.copy(),
        }
        check(cancel)
        progress(0.8, "finishing")
        if self._inside is not None:
            lab[~self._inside] = 0
        if smoothing_mm and smoothing_mm > 0:
            check(cancel)
            progress(0.9, "smoothing")
            lab = joint_smooth(lab, smoothing_mm, self._edge.GetSpacing())
        if keep_labels is not None:
            lab = np.where(np.isin(lab, list(keep_labels)), lab, 0)
        out_type = np.uint8 if lab.max(initial=0) <= 255 else np.uint16
        full = np.zeros(seeds_arr.shape, dtype=out_type)
        full[sl] = lab
        result = sitk.GetImageFromArray(full)
        result.CopyInformation(self.images[0])
        progress(1.0, "done")
        return result

    def _solve(
        self, markers: np.ndarray, labels: list[int], sub: tuple[slice, slice, slice]
    ) -> np.ndarray:
        """Steps 2-3 on the part ``sub`` of the cached region, from ``markers`` (same shape)."""
        edge = sitk.GetImageFromArray(self._edge_levels[sub])
        edge.SetSpacing(self._edge.GetSpacing())
        marker_image = sitk.GetImageFromArray(markers)
        marker_image.CopyInformation(edge)
        flooded = sitk.MorphologicalWatershedFromMarkers(
            edge, marker_image, markWatershedLine=False, fullyConnected=False
        )
        flood = sitk.GetArrayFromImage(flooded).astype(np.uint16)
        feats = self._channels[: self.params.refine_channels or None][(slice(None), *sub)]
        return flood, self._refine(flood.copy(), labels, markers != 0, feats)

    def _local_update(self, seeds_box, markers, labels, state):
        """Re-solve only a box around the strokes that changed since the previous run.

        The box's faces keep the previous labels as fixed markers; the box doubles while any
        label changes next to a face, and None (a full run) is returned when it would cover
        the whole region. Returns the whole region's (flood, labels).
        """
        changed_seeds = seeds_box != state["seeds"]
        if not changed_seeds.any():
            self.last_update_voxels = 0
            return state["flood"], state["lab"].copy()
        shape = np.array(seeds_box.shape)
        nz = np.nonzero(changed_seeds)
        lo = np.array([v.min() for v in nz])
        hi = np.array([v.max() + 1 for v in nz])
        spacing_kji = np.array(self._edge.GetSpacing())[::-1]
        margin = np.ceil(self.params.update_margin_mm / spacing_kji).astype(int)
        border = _UPDATE_BORDER_VOXELS
        while True:
            a = np.maximum(lo - margin, 0)
            b = np.minimum(hi + margin, shape)
            if np.all(a == 0) and np.all(b == shape):
                return None
            sub = tuple(slice(int(x), int(y)) for x, y in zip(a, b, strict=True))
            mk = markers[sub].copy()
            prev_flood = state["flood"][sub]
            face = np.zeros(mk.shape, dtype=bool)
            near_face = np.zeros(mk.shape, dtype=bool)
            for axis in range(3):
                n = mk.shape[axis]
                for fixed, plane, zone in (
                    (a[axis] > 0, 0, slice(0, border)),
                    (b[axis] < shape[axis], n - 1, slice(max(n - border, 0), n)),
                ):
                    if fixed:
                        index = [slice(None)] * 3
                        index[axis] = plane
                        face[tuple(index)] = True
                        index[axis] = zone
                        near_face[tuple(index)] = True
            fill = face & (mk == 0)
            mk[fill] = prev_flood[fill]
            flood_sub, lab_sub = self._solve(mk, labels, sub)
            real = _changes_reaching(flood_sub != prev_flood, changed_seeds[sub])
            if not np.any(real & near_face):
                # changes not connected to the edited strokes are artefacts of the fixed faces
                artefacts = (flood_sub != prev_flood) & ~real
                if artefacts.any():
                    flood_sub[artefacts] = prev_flood[artefacts]
                    feats = self._channels[: self.params.refine_channels or None][
                        (slice(None), *sub)
                    ]
                    lab_sub = self._refine(flood_sub.copy(), labels, mk != 0, feats)
                # the refinement near the faces saw only part of its neighbourhood: keep the
                # previous labels there
                lab_sub[near_face] = state["lab"][sub][near_face]
                flood = state["flood"].copy()
                flood[sub] = flood_sub
                lab = state["lab"].copy()
                lab[sub] = lab_sub
                self.last_update_voxels = int(lab_sub.size)
                return flood, lab
            margin = margin * 2

    def _refine(
        self, lab: np.ndarray, labels: list[int], frozen: np.ndarray, feats: np.ndarray
    ) -> np.ndarray:
        """Move boundary voxels to the neighbouring label with the closest local mean."""
        return refine_boundaries(
            lab,
            labels,
            frozen,
            feats,
            self._edge.GetSpacing(),
            passes=self.params.refine_passes,
            mean_sigma_mm=self.params.mean_sigma_mm,
        )


def refine_boundaries(
    lab: np.ndarray,
    labels: Sequence[int],
    frozen: np.ndarray,
    feats: np.ndarray,
    spacing_ijk: Sequence[float],
    *,
    passes: int = 2,
    mean_sigma_mm: float = 1.0,
) -> np.ndarray:
    """Move each boundary voxel of ``lab`` (k, j, i; modified in place and returned) to the
    neighbouring label whose local mean of ``feats`` (C, k, j, i) is closest to the voxel's
    values, at most ``passes`` times; ``frozen`` voxels (the seeds) never move."""
    if passes <= 0:
        return lab
    present = [v for v in labels if np.any(lab == v)]
    reference = sitk.Image(1, 1, 1, sitk.sitkUInt8)
    reference.SetSpacing(tuple(float(v) for v in spacing_ijk))
    means_at = _local_means(feats, lab, present, reference, mean_sigma_mm)
    labels = present
    # label value -> row in ``means`` (labels outside ``labels``, e.g. the barrier: -1)
    index_of = np.full(int(lab.max()) + 2, -1, dtype=np.int64)
    index_of[labels] = np.arange(len(labels))
    shape = lab.shape
    channels = feats.reshape(feats.shape[0], -1)
    for _ in range(passes):
        band, neighbour_labels = _boundary(lab, frozen)
        if band.size == 0:
            break
        candidates = np.concatenate([lab.ravel()[band][None], neighbour_labels])  # (7, n)
        rows = index_of[candidates]
        values = channels[:, band]  # (C, n)
        means = means_at(band, shape)  # (L, C, n)
        cost = np.full(rows.shape, np.inf, dtype=np.float64)
        for r in range(rows.shape[0]):
            ok = rows[r] >= 0
            mu = means[rows[r][ok], :, np.flatnonzero(ok)]  # (n_ok, C)
            cost[r, ok] = np.sum((values[:, ok].T - mu) ** 2, axis=1)
        best = candidates[np.argmin(cost, axis=0), np.arange(band.size)]
        moved = best != lab.ravel()[band]
        if not np.any(moved):
            break
        flat = lab.ravel()
        flat[band[moved]] = best[moved]
    return lab


def _changes_reaching(changed: np.ndarray, edited: np.ndarray) -> np.ndarray:
    """The voxels of ``changed`` connected (26-neighbours) to an ``edited`` seed voxel."""
    mask = changed | edited
    if not mask.any():
        return changed
    image = sitk.GetImageFromArray(mask.astype(np.uint8))
    components = sitk.GetArrayFromImage(sitk.ConnectedComponent(image, True))
    keep = np.unique(components[edited])
    return changed & np.isin(components, keep[keep > 0])


def _boundary(lab: np.ndarray, frozen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat indices of non-frozen voxels with a 6-neighbour of another label, and the six
    neighbours' labels (0 where the neighbour is outside the box or of the same label)."""
    nb_labels = []
    differs = np.zeros(lab.shape, dtype=bool)
    padded = np.pad(lab, 1, mode="edge")
    k, j, i = lab.shape
    for dk, dj, di in _NEIGHBOURS:
        nb = padded[1 + dk : 1 + dk + k, 1 + dj : 1 + dj + j, 1 + di : 1 + di + i]
        d = nb != lab
        differs |= d
        nb_labels.append(np.where(d, nb, 0))
    differs &= ~frozen
    band = np.flatnonzero(differs)
    return band, np.stack([n.ravel()[band] for n in nb_labels])


def _local_means(
    channels: np.ndarray, lab: np.ndarray, labels: list[int], reference: sitk.Image, sigma_mm: float
):
    """Gaussian-weighted local mean of each channel over each label's voxels.

    The label-masked channel sums and the label weights are smoothed on a grid coarsened
    along each axis by the largest integer factor keeping coarse voxels within one sigma
    (e.g. 2 in-plane for 0.35 mm voxels, 1 for 0.7 mm), up to 4 times cheaper, and
    interpolated trilinearly back at the fine voxels asked for. Coarser grids (1.5 sigma) or
    reading the coarse voxel a fine voxel falls in, without interpolation, misplace a label's
    mean right where it changes fastest, at the boundaries (benchmark, grade 2 upsampled:
    CSF Dice 0.952 that way, 0.958 this way).
    Returns ``means_at(flat_indices, shape)``: an (L, C, n) array of the local means at those
    fine voxels, ``inf`` where a label has no voxel nearby.
    """
    spacing = np.asarray(reference.GetSpacing())[::-1]  # k, j, i
    factors = np.array([max(1, int(sigma_mm * _COARSE_SIGMAS // s)) for s in spacing])
    shape = np.array(lab.shape)
    coarse_shape = -(-shape // factors)
    pad = coarse_shape * factors - shape

    def coarsen(a: np.ndarray) -> np.ndarray:
        a = np.pad(a, [(0, p) for p in pad], mode="constant")
        return a.reshape(
            coarse_shape[0], factors[0], coarse_shape[1], factors[1], coarse_shape[2], factors[2]
        ).sum(axis=(1, 3, 5))

    def smooth(a: np.ndarray) -> np.ndarray:
        img = sitk.GetImageFromArray(a.astype(np.float32))
        img.SetSpacing(tuple(float(v) for v in (spacing * factors)[::-1]))
        return sitk.GetArrayFromImage(sitk.SmoothingRecursiveGaussian(img, sigma_mm)).ravel()

    n_coarse = int(np.prod(coarse_shape))
    sums = np.empty((len(labels), channels.shape[0], n_coarse), dtype=np.float32)
    weights = np.empty((len(labels), n_coarse), dtype=np.float32)
    for n, label in enumerate(labels):
        mask = (lab == label).astype(np.float32)
        weights[n] = smooth(coarsen(mask))
        for c in range(channels.shape[0]):
            sums[n, c] = smooth(coarsen(channels[c] * mask))

    def means_at(flat: np.ndarray, fine_shape) -> np.ndarray:
        # per axis: the two coarse voxels around each fine voxel's centre and their weights
        lo, frac = [], []
        for x, f, n in zip(np.unravel_index(flat, fine_shape), factors, coarse_shape, strict=True):
            u = np.clip((x - (f - 1) / 2.0) / f, 0.0, n - 1)
            i0 = np.minimum(np.floor(u).astype(np.int64), max(n - 2, 0))
            lo.append(i0)
            frac.append(u - i0)
        total = np.zeros((len(labels), channels.shape[0], flat.size), dtype=np.float64)
        weight = np.zeros((len(labels), flat.size), dtype=np.float64)
        for dk in (0, 1):
            for dj in (0, 1):
                for di in (0, 1):
                    w = 1.0
                    idx = []
                    for d, i0, fr, n in zip((dk, dj, di), lo, frac, coarse_shape, strict=True):
                        w = w * (fr if d else 1.0 - fr)
                        idx.append(np.minimum(i0 + d, n - 1))
                    corner = np.ravel_multi_index(tuple(idx), tuple(coarse_shape))
                    total += w * sums[:, :, corner]
                    weight += w * weights[:, corner]
        means = total / np.maximum(weight, 1e-6)[:, None, :]
        means[np.broadcast_to((weight < 1e-4)[:, None, :], means.shape)] = np.inf
        return means

    return means_at
