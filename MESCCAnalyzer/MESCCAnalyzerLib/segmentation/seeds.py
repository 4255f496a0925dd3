"""Seed strokes placed automatically from a known labelmap (tests, benchmarks, the demo).

A user of *Grow from seeds* paints a few short strokes inside each structure and around it.
:func:`strokes_from_labels` imitates that from a truth (or guide) labelmap, deterministically
for a given ``rng_seed``:

* the axial axis is the image axis closest to the patient's superior direction (so a
  sagittal-stored MRI gets axial strokes too);
* for each structure, the voxels at least ``inset_mm`` inside it (3D distance, spacing-aware;
  halved until some remain, so a thin structure still gets strokes) are the candidates;
* ``slices`` axial slices are chosen spread over the structure's extent (quantiles 0.2-0.8,
  jittered), plus one through each large part (>= 5 % of the structure) that none of them
  crosses (each vertebra in view); on each, ``strokes_per_slice`` strokes of 3-8 voxels,
  the first from a random candidate voxel, each further one from a candidate far from the
  slice's previous strokes (so they spread over the structure: CSF on both sides of the
  cord, "other" all around the canal), in a random in-plane direction, bending to stay in
  the candidates (a thin curved layer gets a stroke along it, not a dot across it);
* "other" strokes (label ``other_label``) are drawn the same way in the unlabelled voxels at
  least ``inset_mm`` away from every structure: half of them "near", at least
  ``other_inset_mm`` from every structure and within ``other_near_mm`` of the soft structures
  ``near_to`` (cord, CSF, mass: the epidural fat and ligaments around the sac, the tissue
  around the mass), half up to ``other_within_mm`` from any structure (muscle), on the
  structures' slices; plus near strokes on ``other_slices`` slices spread over the near
  region's extent (discs, tissue between the painted slices);
* when the guide names the other tissues (values above 4: disc, epidural fat, muscle...),
  each one next to the soft structures gets a few strokes of its own on two slices of its
  extent (and one through each large piece, e.g. each disc in view);
* a structure never gets more than ``max_fraction`` (2 %) of its voxels as seeds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np
import SimpleITK as sitk

from .. import LABEL_BONE, LABEL_CORD, LABEL_CSF, LABEL_MASS

OTHER_LABEL = 5


def axial_axis_kji(image: sitk.Image) -> int:
    """The numpy (k, j, i) axis whose direction is closest to the superior (LPS z) axis."""
    direction = np.asarray(image.GetDirection()).reshape(3, 3)  # columns: i, j, k directions
    ijk_axis = int(np.argmax(np.abs(direction[2, :])))
    return 2 - ijk_axis


_MEMO: dict = {}
_MEMO_SIZE = 48


def _memo_key(name: str, mask: np.ndarray, reference: sitk.Image, *extra) -> tuple:
    digest = hashlib.blake2b(np.ascontiguousarray(mask).tobytes(), digest_size=16).hexdigest()
    return (name, digest, mask.shape, reference.GetSpacing(), *extra)


def _memoised(key: tuple, compute):
    """Distance maps and components depend only on the labels: several stroke draws on the
    same labelmap (tests, benchmarks) reuse them. Cached arrays are read-only."""
    if key not in _MEMO:
        if len(_MEMO) >= _MEMO_SIZE:
            _MEMO.pop(next(iter(_MEMO)))
        value = compute()
        value.setflags(write=False)
        _MEMO[key] = value
    return _MEMO[key]


def _inside_distance_mm(mask: np.ndarray, reference: sitk.Image) -> np.ndarray:
    key = _memo_key("distance", mask, reference)
    return _memoised(key, lambda: _inside_distance_mm_uncached(mask, reference))


def _inside_distance_mm_uncached(mask: np.ndarray, reference: sitk.Image) -> np.ndarray:
    img = sitk.GetImageFromArray(mask.astype(np.uint8))
    img.CopyInformation(reference)
    dist = sitk.SignedMaurerDistanceMap(
        img, insideIsPositive=True, squaredDistance=False, useImageSpacing=True
    )
    return sitk.GetArrayFromImage(dist)


def _candidates(mask: np.ndarray, reference: sitk.Image, inset_mm: float) -> np.ndarray:
    depth = _inside_distance_mm(mask, reference)
    inset = inset_mm
    while inset > 0.05:
        core = depth >= inset
        if core.sum() >= 8:
            return core
        inset /= 2
    return mask.copy()


def _add_component_slices(
    chosen: list[int], cand: np.ndarray, axis: int, reference: sitk.Image
) -> list[int]:
    """Add a slice through every large part of a structure that no chosen slice crosses
    (e.g. each vertebra in view), as a user strokes each piece it sees."""

    def label_components() -> np.ndarray:
        img = sitk.GetImageFromArray(cand.astype(np.uint8))
        img.CopyInformation(reference)
        return sitk.GetArrayFromImage(sitk.ConnectedComponent(img, True))

    components = _memoised(_memo_key("components", cand, reference), label_components)
    sizes = np.bincount(components.ravel())
    total = int(sizes[1:].sum())
    other_axes = tuple(a for a in range(3) if a != axis)
    out = list(chosen)
    for comp in np.flatnonzero(sizes):
        if comp == 0 or sizes[comp] < 0.05 * total:
            continue
        per_slice = (components == comp).sum(axis=other_axes)
        if any(per_slice[s] > 0 for s in out):
            continue
        out.append(int(np.argmax(per_slice)))
    return sorted(set(out))


def _choose_slices(cand: np.ndarray, axis: int, n: int, rng: np.random.Generator) -> list[int]:
    present = np.flatnonzero(cand.any(axis=tuple(a for a in range(3) if a != axis)))
    if present.size == 0:
        return []
    qs = np.linspace(0.2, 0.8, n) if n > 1 else np.array([0.5])
    qs = np.clip(qs + rng.uniform(-0.08, 0.08, size=qs.size), 0, 1)
    picks = sorted({int(present[int(round(q * (present.size - 1)))]) for q in qs})
    return picks


_STEPS = tuple((dr, dc) for dr in (-1, 0, 1) for dc in (-1, 0, 1) if (dr, dc) != (0, 0))


def _stroke(
    cand2d: np.ndarray,
    rng: np.random.Generator,
    length: int,
    start: tuple[int, int] | None = None,
) -> list[tuple[int, int]]:
    """A stroke of up to ``length`` voxels through ``cand2d``, from ``start`` (a random
    candidate if None) in a random direction, bending with the structure: each step goes to
    the unvisited 8-neighbour candidate closest to the current direction (never backwards),
    as a hand follows a thin curved layer such as the CSF ring."""
    if start is None:
        rows, cols = np.nonzero(cand2d)
        if rows.size == 0:
            return []
        pick = rng.integers(rows.size)
        start = (int(rows[pick]), int(cols[pick]))
    angle = rng.uniform(0, 2 * np.pi)
    direction = np.array([np.sin(angle), np.cos(angle)])
    points = [start]
    r, c = start
    for _ in range(length - 1):
        best, best_dot = None, 0.0
        for dr, dc in _STEPS:
            rr, cc = r + dr, c + dc
            if not (0 <= rr < cand2d.shape[0] and 0 <= cc < cand2d.shape[1]):
                continue
            if not cand2d[rr, cc] or (rr, cc) in points:
                continue
            dot = (dr * direction[0] + dc * direction[1]) / np.hypot(dr, dc)
            if dot > best_dot:
                best, best_dot = (rr, cc), dot
        if best is None:
            break
        step = np.array([best[0] - r, best[1] - c], dtype=float)
        direction = direction + step / np.linalg.norm(step)
        direction /= np.linalg.norm(direction)
        r, c = best
        points.append(best)
    return points


def _straight_stroke(
    cand2d: np.ndarray, rng: np.random.Generator, length: int
) -> list[tuple[int, int]]:
    """A straight stroke of up to ``length`` voxels from a random candidate in a random
    direction, stopping where it leaves the candidates (:func:`strokes_from_labels` with
    ``spread`` false: the strokes the watershed engine was measured with)."""
    rows, cols = np.nonzero(cand2d)
    if rows.size == 0:
        return []
    start = rng.integers(rows.size)
    r0, c0 = float(rows[start]), float(cols[start])
    angle = rng.uniform(0, np.pi)
    dr, dc = np.sin(angle), np.cos(angle)
    points = []
    for t in range(length):
        r, c = int(round(r0 + t * dr)), int(round(c0 + t * dc))
        if not (0 <= r < cand2d.shape[0] and 0 <= c < cand2d.shape[1]) or not cand2d[r, c]:
            break
        if (r, c) not in points:
            points.append((r, c))
    return points


def _spread_start(
    plane_cand: np.ndarray, painted: np.ndarray, rng: np.random.Generator
) -> tuple[int, int] | None:
    """A stroke start far from the strokes already on this slice (a random one among the
    candidates at least 70 % of the largest distance away), so that a slice's strokes
    spread over the structure as a user's do (CSF on both sides of the cord)."""
    rows, cols = np.nonzero(plane_cand)
    if rows.size == 0:
        return None
    if not painted.any():
        pick = rng.integers(rows.size)
        return int(rows[pick]), int(cols[pick])
    pr, pc = np.nonzero(painted)
    d2 = np.min((rows[:, None] - pr[None]) ** 2 + (cols[:, None] - pc[None]) ** 2, axis=1)
    far = np.flatnonzero(d2 >= 0.49 * d2.max())
    pick = far[rng.integers(far.size)]
    return int(rows[pick]), int(cols[pick])


def _paint(
    seeds: np.ndarray,
    cand: np.ndarray,
    label: int,
    slices: Sequence[int],
    axis: int,
    strokes_per_slice: int,
    budget: int,
    rng: np.random.Generator,
    spread: bool = True,
) -> int:
    painted = 0
    for s in slices:
        index = [slice(None)] * 3
        index[axis] = s
        plane_cand = cand[tuple(index)] & (seeds[tuple(index)] == 0)
        plane_seeds = seeds[tuple(index)]
        for _ in range(strokes_per_slice):
            length = int(rng.integers(3, 9))
            if spread:
                start = _spread_start(plane_cand, plane_seeds == label, rng)
                if start is None:
                    break
                points = _stroke(plane_cand, rng, length, start)
            else:
                points = _straight_stroke(plane_cand, rng, length)
            for r, c in points:
                if painted >= budget:
                    return painted
                plane_seeds[r, c] = label
                plane_cand[r, c] = False
                painted += 1
    return painted


def strokes_from_labels(
    labels: sitk.Image,
    *,
    rng_seed: int = 0,
    structures: Sequence[int] = (LABEL_CORD, LABEL_CSF, LABEL_MASS, LABEL_BONE),
    slices: int = 3,
    slice_indices: Sequence[int] | None = None,
    strokes_per_slice: int = 2,
    other_strokes_per_slice: int = 6,
    inset_mm: float = 1.0,
    other_near_mm: float = 3.0,
    other_inset_mm: float = 0.5,
    near_to: Sequence[int] = (LABEL_CORD, LABEL_CSF, LABEL_MASS),
    other_within_mm: float = 10.0,
    other_slices: int = 4,
    other_label: int = OTHER_LABEL,
    max_fraction: float = 0.02,
    other_tissue_strokes: int = 2,
    spread: bool = True,
) -> sitk.Image:
    """Seed strokes (uint16 labelmap on ``labels``' grid) imitating a user's few strokes.

    ``labels`` holds the structures (non-zero values in ``structures``; any other non-zero
    value is treated as "other" tissue and zero as unlabelled surroundings). Each such other
    tissue next to the soft structures (within ``other_near_mm`` plus a voxel's margin)
    also gets ``other_tissue_strokes`` strokes per slice on two slices of its extent (and one
    through each large piece; on ``slice_indices`` when given), labelled ``other_label``: a user strokes the disc and the
    epidural fat next to the sac, not only the muscle around it.

    ``spread`` true (the default: the demo's, the sample study's, the battery's and the
    tests' strokes, ``docs/segmentation.md``): the strokes of a slice start far from each
    other and bend with the structure; false: straight strokes from random starts, and no
    strokes for the other tissues (often 1-2-voxel dots in a thin CSF layer, all on one
    side: the strokes the replaced watershed engine was measured with). See the module
    docstring for the placement. ``slice_indices`` fixes the axial slices (numpy index along
    :func:`axial_axis_kji`) instead of choosing ``slices`` of them per structure.
    """
    rng = np.random.default_rng(rng_seed)
    truth = sitk.GetArrayFromImage(labels)
    axis = axial_axis_kji(labels)
    seeds = np.zeros(truth.shape, dtype=np.uint16)
    all_slices: set[int] = set()
    structure_mask = np.isin(truth, list(structures))
    for label in structures:
        mask = truth == label
        count = int(mask.sum())
        if count == 0:
            continue
        cand = _candidates(mask, labels, inset_mm)
        chosen = (
            list(slice_indices)
            if slice_indices is not None
            else _choose_slices(cand, axis, slices, rng)
        )
        if slice_indices is None:
            chosen = _add_component_slices(chosen, cand, axis, labels)
        all_slices.update(chosen)
        budget = max(1, int(np.floor(max_fraction * count)))
        _paint(seeds, cand, label, chosen, axis, strokes_per_slice, budget, rng, spread)
    other = ~structure_mask
    if other_strokes_per_slice > 0 and other.any():
        away = _inside_distance_mm(other, labels)
        soft = np.isin(truth, list(near_to))
        away_soft = _inside_distance_mm(~soft, labels) if soft.any() else away
        near = other & (away >= other_inset_mm) & (away_soft <= other_near_mm)
        far = other & (away >= inset_mm) & (away > other_near_mm) & (away <= other_within_mm)
        chosen = sorted(all_slices) if all_slices else _choose_slices(near, axis, slices, rng)
        # half the strokes hug the soft structures (epidural fat, ligaments), half lie further out
        n_near = (other_strokes_per_slice + 1) // 2
        _paint(seeds, near, other_label, chosen, axis, n_near, 10**9, rng, spread)
        _paint(
            seeds,
            far,
            other_label,
            chosen,
            axis,
            other_strokes_per_slice - n_near,
            10**9,
            rng,
            spread,
        )
        if slice_indices is None and other_slices > 0 and soft.any():
            # slices spread over the soft structures' extent (discs, tissue between the slices)
            extent = np.flatnonzero(near.any(axis=tuple(a for a in range(3) if a != axis)))
            extra = np.linspace(extent[0], extent[-1], other_slices + 2)[1:-1].round().astype(int)
            _paint(
                seeds, near, other_label, [int(v) for v in extra], axis, n_near, 10**9, rng, spread
            )
        if spread and other_tissue_strokes > 0:
            # each distinct non-structure tissue of the guide (values above the structures',
            # e.g. disc, epidural fat) that lies next to the soft structures gets strokes of
            # its own, as a user strokes every tissue they see around the canal
            for value in np.unique(truth[other]):
                if value == 0 or value in structures:
                    continue
                tissue = truth == value
                cand = _candidates(tissue, labels, inset_mm) & (away_soft <= other_within_mm)
                if not (cand & (away_soft <= other_near_mm + inset_mm + 1.0)).any():
                    continue  # not next to the structures: the near/far strokes cover it
                if slice_indices is not None:
                    chosen = list(slice_indices)
                else:
                    chosen = _add_component_slices(
                        _choose_slices(cand, axis, 2, rng), cand, axis, labels
                    )
                _paint(
                    seeds, cand, other_label, chosen, axis, other_tissue_strokes, 10**9, rng, spread
                )
    out = sitk.GetImageFromArray(seeds)
    out.CopyInformation(labels)
    return out


def add_stroke(
    seeds: sitk.Image,
    labels: sitk.Image,
    label: int,
    *,
    rng_seed: int = 1,
    inset_mm: float = 1.0,
    length: int = 8,
) -> sitk.Image:
    """``seeds`` with one more stroke of ``label`` inside ``labels == label`` (an axial
    slice chosen at random among those it occupies); used to time interactive updates."""
    rng = np.random.default_rng(rng_seed)
    truth = sitk.GetArrayFromImage(labels)
    arr = sitk.GetArrayFromImage(seeds).astype(np.uint16)
    cand = _candidates(truth == label, labels, inset_mm) & (arr == 0)
    axis = axial_axis_kji(labels)
    present = np.flatnonzero(cand.any(axis=tuple(a for a in range(3) if a != axis)))
    s = int(rng.choice(present))
    index = [slice(None)] * 3
    index[axis] = s
    plane = arr[tuple(index)]
    for r, c in _stroke(cand[tuple(index)], rng, length):
        plane[r, c] = label
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(seeds)
    return out
