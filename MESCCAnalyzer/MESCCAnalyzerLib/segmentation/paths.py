"""Seeded segmentation by competing shortest paths, with costs learnt from the strokes.

Every voxel takes the label of the seed stroke it is joined to by the cheapest path (a
multi-source shortest-path competition over the 26-neighbour voxel graph, as in FastGrowCut),
but the cost of a path is not a fixed function of the intensities: it is estimated from the
voxels under each study's strokes, so that no constant depends on the phantom, the scanner or
the contrast. Issue 16's method, in use as :class:`~.grow.SeedGrower`; ``docs/segmentation.md``
has its battery.

**Features** (once per region, cached for updates): each channel is cropped to the region and
denoised by gradient anisotropic diffusion (:func:`denoise`, ITK's filter in numba; its
conductance is relative to the channel's own gradients). Path costs sum intensity changes,
and in raw noisy tissue every step adds noise: the fronts then meet where the seeds are
densest rather than at the edges. Diffusion removes most of that noise and keeps the
boundaries' steps.

The model (:class:`CostModel`, learnt by :func:`learn_model` from the seeded voxels):

* **per-channel scale** ``s_c``: the larger of the voxel noise (robust spread of the
  differences between neighbouring voxels of the same stroke) and the within-label spread of
  the seeded values (bias field, texture). Every channel is divided by its scale, so an MRI in
  arbitrary units, a PET in SUV and a CT in HU are in the same unit: "one noise level";
* **per-channel sharpness** ``r_c``: the ratio voxel noise / within-label spread, at most 1.
  A channel whose noise is smooth (a PET resampled onto the MRI grid: neighbours agree, far
  voxels of the same tissue do not) has blurred edges; its edge steps are scaled down by
  ``r_c`` so that its blur cannot pull the boundaries off the sharper channels' edges;
* **per-label intensity density**: a Parzen (Gaussian kernel) density of each label's seeded
  values in the scaled feature space, its samples merged into at most ``max_centres`` centres
  by k-means. A voxel's *unlikeliness* for label L is ``sqrt(2 (nll_L - min_M nll_M))``, in
  noise levels, capped: 0 for the label its intensities fit best;
* **unstroked tissue is "other"**: a voxel further than ``outlier_levels`` from every seeded
  sample of every structure (1-4; a blurred channel weighted by its relative sharpness) is
  not unlikely for the "other" labels: a disc or a fat pad the user did not stroke, unlike
  the stroked muscle as well, is not taken by the mass next to it for lack of a better label.

Path cost of a step from voxel p (label L) to its neighbour q, ``h`` mm apart:

    sqrt(max(0, sum_c (r_c (z_c(q) - z_c(p)))^2 - floor))      edge: scaled intensity change
  + h * (likelihood_weight * min(cap, unlikeliness_L(q)) + length_cost_per_mm)

``floor`` (0 by default) is the expected squared change of pure noise. A channel without
contrast adds its (denoised) noise to the edges and nothing to the likelihood (its per-label
densities overlap).

Solver: Dijkstra's algorithm, compiled with numba, over the 26-neighbour voxel graph from all
the seeds at once; a voxel takes the distance and label of the cheapest path that reaches it,
each step priced for the label of the voxel it leaves (FastGrowCut's principle). The step
costs are computed as the steps are relaxed, from the channels; nothing per edge is stored.

Release: a path decides by its cheapest route, not by the volume it crosses, so the mass
can take a disc or a marrow next to it that no stroke reached. After the paths, the mass's
voxels that another label fits better (:func:`unlike_mass`; the layer next to the voxels
the mass does fit kept) are closed to the mass and the paths solved again
(``release_unlike_mass``).

Updates: a second :meth:`PathGrower.grow` with strokes only added keeps the model (and the
voxels closed to the mass) and the previous distances and runs Dijkstra from the new
strokes only, on the previous solution: only the voxels the new strokes win (or whose paths
they re-price) are touched, and the result equals a full re-solve with the same model.
Removed or relabelled strokes, a new label, or a mass stroke on (or next to) the voxels
closed to the mass re-learn the model and re-solve everything.

Compilation: the kernels are compiled on their first use in a process (a few seconds) and
cached on disk by numba beside this file (``__pycache__``), else in the user's cache
directory (``NUMBA_CACHE_DIR`` to choose); where neither is writable they are compiled again
in each process, and nothing fails.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numba
import numpy as np
import SimpleITK as sitk

from .. import LABEL_MASS
from ..errors import InputError
from ..progress import CancelCallback, ProgressCallback, check, no_progress, sub_progress
from .inputs import (
    STRUCTURE_LABELS,
    Box,
    check_inputs,
    check_resolutions,
    joint_smooth,
    region_box,
)

# the 13 neighbour offsets (k, j, i) whose first non-zero component is positive; with their
# opposites they are the 26 neighbours
_CANONICAL = tuple(
    (dk, dj, di)
    for dk in (-1, 0, 1)
    for dj in (-1, 0, 1)
    for di in (-1, 0, 1)
    if (dk, dj, di) > (0, 0, 0)
)


def _jit(func):
    """``numba.njit`` without the GIL, its machine code cached on disk. Where no cache
    directory is writable numba refuses ``cache=True`` as the function is defined: then it
    is compiled once per process instead (nothing global is set)."""
    try:
        return numba.njit(cache=True, nogil=True)(func)
    except RuntimeError:  # "cannot cache function ...: no locator available for file ..."
        return numba.njit(nogil=True)(func)


@dataclass(frozen=True)
class PathParameters:
    """Tuning of :class:`PathGrower` (defaults measured on the phantom battery, see docs).

    margin_mm : without a region of interest, the seeds' bounding box grows by this much.
    likelihood_weight : cost per mm of path through a voxel one noise level unlike the label.
    likelihood_cap : unlikeliness cap (noise levels): a voxel unlike every seed (partial
        volume, an unseeded tissue) is not an infinite wall.
    length_cost_per_mm : small cost per mm of path (ties in flat tissue go to the nearer seed).
    noise_floor : how many expected noise energies are subtracted from each edge step.
    kernel_width : Parzen kernel width, in noise levels.
    outlier_levels : a voxel further than this (noise levels) from every label's seeds is
        "unknown": it favours no label.
    edge_discount_levels : entering a voxel less than this unlike a label (noise levels)
        costs that label only this fraction of the edge: an edge between two tissues of
        one heterogeneous label ("other": fat and disc) is no boundary of it (0: off).
    weight_power : the kernel centres' weights are the seed fractions to this power
        (renormalised): below 1, a tissue seldom stroked within a label counts more.
    max_centres : per label, the seeded samples are merged into at most this many centres.
    learn_sharpness : scale each channel's edges by its sharpness ``r_c`` (else 1).
    scale_from : ``"seeds"`` (noise and within-label spread) or ``"noise"`` (voxel noise only:
        the plain competition of the issue).
    denoise_iterations : iterations of edge-preserving (gradient anisotropic) diffusion of
        each channel before anything is learnt or solved (0: the raw images).
    denoise_conductance : its conductance, in units of the channel's own mean gradient
        magnitude (ITK's convention), so no intensity unit enters.
    unlike_structures_is_other : a voxel unlike every structure's strokes (further than
        ``outlier_levels``) is not unlikely for the "other" labels (see :func:`unlikeliness`).
    release_unlike_mass : after the paths, the mass's voxels that another label fits better
        are taken from it and the paths solved again (:func:`unlike_mass`).
    """

    margin_mm: float = 15.0
    likelihood_weight: float = 0.3
    likelihood_cap: float = 4.0
    length_cost_per_mm: float = 0.05
    noise_floor: float = 0.0
    kernel_width: float = 1.0
    max_centres: int = 16
    outlier_levels: float = 3.0
    edge_discount_levels: float = 0.0
    weight_power: float = 0.5
    learn_sharpness: bool = True
    scale_from: str = "seeds"
    denoise_iterations: int = 10
    unlike_structures_is_other: bool = True
    denoise_conductance: float = 1.0
    release_unlike_mass: bool = True

    @classmethod
    def plain(cls) -> PathParameters:
        """The plain competition: noise-scaled intensity steps plus a small length term."""
        return cls(
            likelihood_weight=0.0,
            learn_sharpness=False,
            scale_from="noise",
            noise_floor=0.0,
            edge_discount_levels=0.0,
            denoise_iterations=0,
            unlike_structures_is_other=False,
            release_unlike_mass=False,
        )


@dataclass(frozen=True)
class CostModel:
    """What :func:`learn_model` estimated from one study's strokes (see the module docstring).

    labels : the competing seed labels, ascending.
    noise : (C,) voxel noise per channel (image units).
    spread : (C,) pooled within-label spread of the seeded values (image units).
    scale : (C,) the unit of each channel (image units).
    sharpness : (C,) edge factor r_c in (0, 1].
    centres, weights : per label, (K, C) kernel centres in scaled units and their weights.
    """

    labels: tuple[int, ...]
    noise: np.ndarray
    spread: np.ndarray
    scale: np.ndarray
    sharpness: np.ndarray
    centres: tuple[np.ndarray, ...]
    weights: tuple[np.ndarray, ...]


# --------------------------------------------------------------------------------------------
# Learning the costs from the strokes
# --------------------------------------------------------------------------------------------

_MAD = 1.4826  # MAD -> standard deviation of a normal distribution


def _seed_pair_differences(channels: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """(C, n) differences between 26-neighbours painted with the same label."""
    out = []
    k, j, i = seeds.shape
    for dk, dj, di in _CANONICAL:
        a = (
            slice(0, k - dk),
            slice(max(0, -dj), j - max(0, dj)),
            slice(max(0, -di), i - max(0, di)),
        )
        b = (slice(dk, k), slice(max(0, dj), j + min(0, dj)), slice(max(0, di), i + min(0, di)))
        same = (seeds[a] != 0) & (seeds[a] == seeds[b])
        if same.any():
            out.append(channels[(slice(None), *b)][:, same] - channels[(slice(None), *a)][:, same])
    if not out:
        return np.zeros((channels.shape[0], 0), dtype=np.float32)
    return np.concatenate(out, axis=1)


def _kmeans(samples: np.ndarray, k: int, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Weighted centres (k, C) and weights (k,) summing to 1 of ``samples`` (n, C)."""
    n = len(samples)
    if n <= k:
        return samples.copy(), np.full(n, 1.0 / n)
    # farthest-point initialisation from the median sample: deterministic, covers the modes
    start = int(np.argmin(np.sum((samples - np.median(samples, axis=0)) ** 2, axis=1)))
    chosen = [start]
    d2 = np.sum((samples - samples[start]) ** 2, axis=1)
    for _ in range(k - 1):
        nxt = int(np.argmax(d2))
        chosen.append(nxt)
        d2 = np.minimum(d2, np.sum((samples - samples[nxt]) ** 2, axis=1))
    centres = samples[chosen].copy()
    for _ in range(iterations):
        owner = np.argmin(((samples[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
        for c in range(k):
            members = samples[owner == c]
            if len(members):
                centres[c] = members.mean(axis=0)
    owner = np.argmin(((samples[:, None, :] - centres[None]) ** 2).sum(axis=2), axis=1)
    counts = np.bincount(owner, minlength=k).astype(np.float64)
    keep = counts > 0
    return centres[keep], counts[keep] / n


def learn_model(
    channels: np.ndarray, seeds: np.ndarray, params: PathParameters | None = None
) -> CostModel:
    """The cost model of one study from its channels (C, k, j, i) and seed labels (k, j, i)."""
    params = params or PathParameters()
    labels = tuple(int(v) for v in np.unique(seeds) if v)
    n_channels = channels.shape[0]
    seeded = seeds != 0
    values = channels[:, seeded].astype(np.float64)  # (C, n)
    owner = seeds[seeded]
    # voxel noise: neighbouring voxels of the same stroke differ by noise only
    diffs = _seed_pair_differences(channels, seeds)
    if diffs.shape[1] >= 8:
        noise = _MAD * np.median(np.abs(diffs), axis=1) / np.sqrt(2.0)
    else:
        noise = np.zeros(n_channels)
    # within-label spread, pooled over labels (structures first: "other" mixes tissues)
    pooled = [v for v in labels if v in STRUCTURE_LABELS] or list(labels)
    residuals = np.concatenate(
        [values[:, owner == v] - np.median(values[:, owner == v], axis=1)[:, None] for v in pooled],
        axis=1,
    )
    spread = _MAD * np.median(np.abs(residuals), axis=1)
    # a channel flat under every stroke (a constant test image) still needs a unit
    spans = np.ptp(values, axis=1) if values.size else np.zeros(n_channels)
    tiny = 1e-3 * np.maximum(spans, np.abs(values).max(axis=1, initial=0.0)) + 1e-12
    noise = np.where(noise > 0, noise, np.maximum(spread, tiny))
    if params.scale_from == "noise":
        scale = np.maximum(noise, tiny)
    else:
        scale = np.maximum(np.maximum(noise, spread), tiny)
    if params.learn_sharpness:
        sharpness = np.clip(noise / scale, 0.02, 1.0)
    else:
        sharpness = np.ones(n_channels)
    centres, weights = [], []
    z = (values / scale[:, None]).T  # (n, C)
    for v in labels:
        c, w = _kmeans(z[owner == v], params.max_centres)
        w = w**params.weight_power
        w = w / w.sum()
        centres.append(c)
        weights.append(w)
    return CostModel(
        labels=labels,
        noise=noise,
        spread=spread,
        scale=scale,
        sharpness=sharpness,
        centres=tuple(centres),
        weights=tuple(weights),
    )


_BLOCK = 128  # voxels per pass of :func:`_unlikeliness_kernel`'s loops (its buffers stay in L1)


@_jit
def _exp_gap(x):
    """``exp(x)`` for ``x <= 0`` within 1e-12 (relative), ``exp(-40)`` below -40 (too small
    to change a sum whose largest term is 1): the Taylor polynomial of ``exp(x / 256)``,
    squared 8 times. Multiplies and adds only, so that a loop of it is vectorised (libm's
    ``exp`` is a call per value, 2-3 times slower). NaN in, NaN or anything out."""
    r = max(x, -40.0) * 0.00390625
    p = 1.0 / 362880.0
    for d in (40320.0, 5040.0, 720.0, 120.0, 24.0, 6.0, 2.0, 1.0, 1.0):
        p = p * r + 1.0 / d
    for _ in range(8):
        p = p * p
    return p


@_jit
def _unlikeliness_kernel(
    z,
    low,
    high,
    coarse_row,
    centres,
    log_weights,
    offsets,
    structure,
    sharp2,
    inv_h2,
    cap,
    outlier2,
    other_rule,
    out,
):
    """:func:`unlikeliness` in float64, blocks of ``_BLOCK`` voxels at a time.

    ``z`` (C, n) float32; a channel ``ch`` with ``coarse_row[ch] >= 0`` is measured by its
    range ``low``/``high`` (R, n) float32, row ``coarse_row[ch]``. ``centres`` (K, C) and
    ``log_weights`` (K,): every label's kernels, label ``row``'s at
    ``offsets[row]:offsets[row + 1]``; ``structure`` (L,) marks labels 1-4; ``sharp2`` (C,)
    the squared relative sharpnesses; ``inv_h2`` 1 / (2 kernel_width^2); ``cap`` the outlier
    cap of ``best``; ``outlier2`` outlier_levels^2. Writes ``out`` (L, n) float32.

    Per label and voxel the log-sum-exp is taken about its largest term (:func:`_exp_gap`).
    A voxel with a NaN value (or a label all of whose terms are -inf: an infinite value) is
    NaN for every label, as numpy's float32 arithmetic made it."""
    n_channels, n = z.shape
    n_labels = offsets.size - 1
    most = 0
    for row in range(n_labels):
        most = max(most, offsets[row + 1] - offsets[row])
    terms = np.empty((most, _BLOCK))
    top = np.empty(_BLOCK)
    total = np.empty(_BLOCK)
    d2 = np.empty(_BLOCK)
    sharp_d2 = np.empty(_BLOCK)
    nearest = np.empty(_BLOCK)  # squared sharpness-weighted distance to a structure's centre
    best = np.empty(_BLOCK)
    bad = np.empty(_BLOCK, dtype=np.bool_)
    nll = np.empty((n_labels, _BLOCK))
    for start in range(0, n, _BLOCK):
        b = min(_BLOCK, n - start)
        for i in range(b):
            nearest[i] = np.inf
            best[i] = cap
            bad[i] = False
        for ch in range(n_channels):
            r = coarse_row[ch]
            for i in range(b):
                v = start + i
                if r >= 0:
                    if low[r, v] != low[r, v] or high[r, v] != high[r, v]:
                        bad[i] = True
                elif z[ch, v] != z[ch, v]:
                    bad[i] = True
        for row in range(n_labels):
            first = offsets[row]
            count = offsets[row + 1] - first
            for i in range(b):
                top[i] = -np.inf
            for k in range(count):
                c = first + k
                for i in range(b):
                    d2[i] = 0.0
                    sharp_d2[i] = 0.0
                for ch in range(n_channels):
                    mu = centres[c, ch]
                    s2 = sharp2[ch]
                    r = coarse_row[ch]
                    if r >= 0:  # no distance to a centre within the voxel's range
                        for i in range(b):
                            step = max(low[r, start + i] - mu, mu - high[r, start + i], 0.0)
                            d2[i] += step * step
                            sharp_d2[i] += s2 * (step * step)
                    else:
                        for i in range(b):
                            step = z[ch, start + i] - mu
                            d2[i] += step * step
                            sharp_d2[i] += s2 * (step * step)
                lw = log_weights[c]
                for i in range(b):
                    t = lw - d2[i] * inv_h2
                    terms[k, i] = t
                    top[i] = max(top[i], t)
                if structure[row]:
                    for i in range(b):
                        nearest[i] = min(nearest[i], sharp_d2[i])
            for i in range(b):
                total[i] = 0.0
            for k in range(count):
                for i in range(b):
                    total[i] += _exp_gap(terms[k, i] - top[i])
            for i in range(b):
                if top[i] == -np.inf:
                    bad[i] = True
                x = -(top[i] + math.log(total[i]))
                nll[row, i] = x
                best[i] = min(best[i], x)
        # a voxel unlike every structure (further than outlier_levels) is no unlikelier for
        # an "other" label than for its likeliest label
        for row in range(n_labels):
            other = other_rule and not structure[row]
            for i in range(b):
                x = nll[row, i]
                if other and nearest[i] > outlier2:
                    x = min(x, best[i])
                x = math.sqrt(2.0 * max(x - best[i], 0.0))
                out[row, start + i] = np.nan if bad[i] else x


def unlikeliness(
    z: np.ndarray,
    model: CostModel,
    params: PathParameters,
    ranges: dict[int, tuple[np.ndarray, np.ndarray]] | None = None,
) -> np.ndarray:
    """(L, n) unlikeliness of scaled voxels ``z`` (C, n) for each label, in noise levels.

    ``ranges`` (channel -> (low, high), each (n,), scaled): for a channel of coarse
    resolution, the lowest and highest values within its resolution of each voxel
    (:func:`value_ranges`); a label's centre anywhere in that range is no distance at all
    along that channel.

    A voxel further than ``outlier_levels`` from every seeded sample of every *structure*
    (labels 1-4; each channel weighted by its sharpness relative to the sharpest) is tissue
    the user stroked as none of them: there the "other" labels (above 4) are not unlikely at
    all, whatever "other" tissue was stroked (an unstroked disc next to the mass is not mass
    because it is unlike "other" muscle too).

    Values and ranges are read as float32 and the result is float32; in between every voxel
    is computed in float64 (:func:`_unlikeliness_kernel`).
    """
    z = np.ascontiguousarray(z, dtype=np.float32)
    n_channels, n = z.shape
    coarse = [ch for ch in range(n_channels) if ranges and ch in ranges]
    coarse_row = np.full(n_channels, -1, dtype=np.int64)
    low = np.empty((len(coarse), n), dtype=np.float32)
    high = np.empty((len(coarse), n), dtype=np.float32)
    for r, ch in enumerate(coarse):
        coarse_row[ch] = r
        low[r], high[r] = ranges[ch]
    # a blurred channel (a PET on the MRI grid) averages over its point spread: near a hot
    # mass every tissue looks unlike its strokes there, so it counts by its relative sharpness
    relative_sharpness = model.sharpness / max(float(model.sharpness.max()), 1e-12)
    offsets = np.cumsum([0] + [len(centres) for centres in model.centres], dtype=np.int64)
    centres = np.concatenate(model.centres).astype(np.float64).reshape(-1, n_channels)
    out = np.empty((len(model.labels), n), dtype=np.float32)
    _unlikeliness_kernel(
        z,
        low,
        high,
        coarse_row,
        np.ascontiguousarray(centres),
        np.log(np.concatenate(model.weights).astype(np.float64)),
        offsets,
        np.array([label in STRUCTURE_LABELS for label in model.labels], dtype=np.bool_),
        np.asarray(relative_sharpness, dtype=np.float64) ** 2,
        1.0 / (2.0 * params.kernel_width**2),
        0.5 * params.outlier_levels**2,  # a voxel unlike every label favours none
        float(params.outlier_levels**2),
        bool(params.unlike_structures_is_other),
        out,
    )
    return out


@_jit
def _window_extremes(low_in, high_in, radius, low, high):
    """``low``/``high`` (outer, n, inner): the least of ``low_in`` and the greatest of
    ``high_in`` within ``radius`` voxels either side along the middle axis, the window cut
    at the ends (ITK's erosion and dilation with a box). One axis of a separable box."""
    outer, n, inner = low_in.shape
    for o in range(outer):
        for t in range(n):
            first, last = max(t - radius, 0), min(t + radius, n - 1)
            for c in range(inner):
                low[o, t, c] = low_in[o, first, c]
                high[o, t, c] = high_in[o, first, c]
            for s in range(first + 1, last + 1):
                for c in range(inner):
                    low[o, t, c] = min(low[o, t, c], low_in[o, s, c])
                    high[o, t, c] = max(high[o, t, c], high_in[o, s, c])


def value_ranges(
    channel: np.ndarray, spacing_kji: np.ndarray, radius_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """(low, high): the least and greatest value of ``channel`` (k, j, i) in a box of
    ``radius_mm`` either side of each voxel along each axis (``round(radius_mm / spacing)``
    voxels; grey erosion and dilation, float32). Under half a voxel on every axis: the
    channel itself.

    Why: a channel of coarser resolution than the grid (a PET of 4 mm voxels on a 0.6 mm MRI)
    spreads each tissue's value over its neighbours. Next to a hot mass the thin cord reads
    two to four times its own SUV; compared point by point, the cord's own voxels are then
    "unlike cord" and the mass takes them. Within its resolution the channel says which
    values are *near* a voxel, not which one is *at* it: any of them fits.

    A box's extremes are those of its rows' extremes, axis by axis (:func:`_window_extremes`):
    exact, and more than 10 times faster than ITK's ``GrayscaleErode``/``GrayscaleDilate``,
    which miss the true extreme by a few float32 ulps at some voxels.
    """
    radius = [int(round(radius_mm / float(v))) for v in np.asarray(spacing_kji)]
    if max(radius) == 0:
        return channel, channel
    low = high = np.ascontiguousarray(channel, dtype=np.float32)
    shape = low.shape
    for axis, r in enumerate(radius):
        if r == 0:
            continue
        # a C-ordered array is (outer, n, inner) around any axis, without a copy
        rows = (int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1 :])))
        low_out, high_out = np.empty(shape, np.float32), np.empty(shape, np.float32)
        _window_extremes(
            low.reshape(rows), high.reshape(rows), r, low_out.reshape(rows), high_out.reshape(rows)
        )
        low, high = low_out, high_out
    return low, high


def unlike_mass(
    held: np.ndarray,
    u: np.ndarray,
    labels: Sequence[int],
    seeds: np.ndarray,
    spacing_kji: np.ndarray,
    cap: float,
) -> np.ndarray | None:
    """The voxels the paths gave to the mass that another label fits better (k, j, i bool),
    or None when the mass is not among ``labels``.

    ``held`` (k, j, i) the voxels the mass holds; ``u`` (L, k, j, i) the unlikeliness of
    each label (:func:`unlikeliness`), compared up to ``cap`` (two labels both unlike by
    more are a tie, not evidence). The mass's own strokes are never released, nor the layer
    of voxels next to the voxels the mass fits (one voxel within the slices, along the two
    finer axes): the boundary is the edges' to place, the likelihood only says which region
    belongs to which tissue. (Keeping the whole outline of a released region instead left
    the mass a one-voxel corridor around it.)

    Why: a path decides by its cheapest route, not by the volume it crosses. A disc or a
    marrow next to the mass that no stroke reached, close in intensity to it, is entered by
    the mass at a cost per mm, and by its own label only across the strong edge around it:
    on the 30-case battery (T2 alone) the mass took 1400-4600 voxels of disc and marrow that
    its own intensities said were not mass. Taking such voxels from the mass and solving
    again lets the other labels reach them (docs/segmentation.md has the battery).
    """
    labels = list(labels)
    if LABEL_MASS not in labels or len(labels) < 2:
        return None
    row = labels.index(LABEL_MASS)
    capped = np.minimum(u, np.float32(cap))
    others = np.delete(capped, row, axis=0).min(axis=0)
    unlike = held & (capped[row] > others) & (seeds != LABEL_MASS)  # NaN: never released
    if not unlike.any():
        return unlike
    # the layer next to the mass's own tissue stays open to it, within the slices: radius 1
    # along the two finer axes (ITK's order is i, j, k)
    thick = int(np.argmax(spacing_kji))
    radius = [0 if axis == thick else 1 for axis in (2, 1, 0)]
    image = sitk.GetImageFromArray((held & ~unlike).astype(np.uint8))
    near_mass = sitk.BinaryDilate(image, radius, sitk.sitkCross, 0, 1, False)
    return unlike & (sitk.GetArrayViewFromImage(near_mass) == 0)


# --------------------------------------------------------------------------------------------
# The shortest-path solver
# --------------------------------------------------------------------------------------------


_CHUNK = 1 << 17  # voxels settled per kernel call: ``cancel`` is asked between calls
_MAX_ROUNDS = 64  # an update still re-pricing paths after this many rounds re-solves instead


@_jit
def _step(dp, lp, pu, qu, n, costs, lengths):
    """Distance at q (flat index ``qu`` in the box) through p (``pu``; distance ``dp``, label
    ``lp``), neighbour ``n`` of p: float32, in the former numpy sweeps' order of operations."""
    zs, node, discount, use_discount, floor, length_cost = costs
    e2 = np.float32(0.0)
    for c in range(zs.shape[0]):
        d = zs[c, qu] - zs[c, pu]
        e2 += d * d
    if floor != 0:
        e2 = max(e2 - floor, np.float32(0.0))
    w = np.sqrt(e2)
    g = node[lp, qu] + length_cost
    g *= lengths[n]
    if use_discount:
        g += w * discount[lp, qu]
    else:
        g += w
    return g + dp


@_jit
def _in_box(p, dims):
    """Flat index in the (k, j, i) box of the flat index ``p`` in the padded box."""
    plane, row, rows, cols = dims
    k = p // plane
    r = p - k * plane
    j = r // row
    return ((k - 1) * rows + (j - 1)) * cols + (r - j * row - 1)


# The heap: a 4-ary min-heap of int64 items ``distance bits << 32 | voxel`` (a non-negative
# float32 orders as its bits), and each voxel's slot in it (-1: not in it) to lower its key.
# Equal distances pop in the order of the voxels' flat indices.
_LOW32 = 0xFFFFFFFF


@_jit
def _push(heap, size, v, dist):
    """Insert voxel ``v`` at its distance (``dist``: the distances, viewed as int32 bits), or
    move it up to it. Returns the heap's size."""
    items, slot = heap
    item = (np.int64(dist[v]) << 32) | v
    i = slot[v]
    if i < 0:
        i = size
        size += 1
    while i > 0:
        parent = (i - 1) >> 2
        if items[parent] <= item:
            break
        items[i] = items[parent]
        slot[items[i] & _LOW32] = i
        i = parent
    items[i] = item
    slot[v] = i
    return size


@_jit
def _pop(heap, size):
    """Remove the voxel of least distance. Returns it and the heap's size."""
    items, slot = heap
    v = items[0] & _LOW32
    slot[v] = -1
    size -= 1
    if size > 0:
        item = items[size]
        i = 0
        while True:
            first = 4 * i + 1
            if first >= size:
                break
            c = first
            for other in range(first + 1, min(first + 4, size)):
                if items[other] < items[c]:
                    c = other
            if items[c] >= item:
                break
            items[i] = items[c]
            slot[items[i] & _LOW32] = i
            i = c
        items[i] = item
        slot[item & _LOW32] = i
    return v, size


@_jit
def _push_all(dist, voxels, heap, size):
    """Push ``voxels`` (flat indices) at their distances. Returns the heap's size."""
    bits = dist.view(np.int32)
    for v in voxels:
        size = _push(heap, size, v, bits)
    return size


@_jit
def _settle(dist, lab, state, costs, geometry, heap, size, max_pops):
    """Dijkstra: settle at most ``max_pops`` voxels; a neighbour not yet settled takes the path
    (distance and label) through the settled voxel if it is strictly shorter. ``state``: 0
    outside the region, 1 open, 2 settled (set here). Returns the heap's size and the voxels
    settled."""
    offsets, offsets_box, lengths, dims = geometry
    bits = dist.view(np.int32)
    pops = 0
    while size > 0 and pops < max_pops:
        p, size = _pop(heap, size)
        pops += 1
        state[p] = 2
        dp = dist[p]
        lp = lab[p]
        pu = _in_box(p, dims)
        for n in range(offsets.size):
            q = p + offsets[n]
            if state[q] != 1:
                continue
            g = _step(dp, lp, pu, pu + offsets_box[n], n, costs, lengths)
            if g < dist[q]:
                dist[q] = g
                lab[q] = lp
                size = _push(heap, size, q, bits)
    return size, pops


@_jit
def _append(stack, top, v):
    if top == stack.size:
        stack = np.concatenate((stack, np.empty_like(stack)))
    stack[top] = v
    return stack, top + 1


@_jit
def _reprice(dist, lab, start_dist, start_lab, inside, costs, geometry, heap, size):
    """After a round of an update: a voxel whose label the round changed changes the price
    of every path that ran through it (its steps cost by the label). Reset to +inf the voxels
    whose distance at the round's start came through such a voxel (transitively, and unless
    the round gave them a shorter path), and push their neighbours that keep a path: the next
    round grows those paths back into them. Returns the heap's size and the voxels reset."""
    offsets, offsets_box, lengths, dims = geometry
    inf = np.float32(np.inf)
    todo = np.empty(1024, dtype=np.int64)
    top = 0
    for v in range(dist.size):
        relabelled = inside[v] != 0 and lab[v] != start_lab[v]
        if relabelled and dist[v] < start_dist[v] and start_dist[v] < inf:
            todo, top = _append(todo, top, v)
    reset = np.empty(1024, dtype=np.int64)
    n_reset = 0
    while top > 0:
        top -= 1
        p = todo[top]
        dp = start_dist[p]
        lp = start_lab[p]
        pu = _in_box(p, dims)
        for n in range(offsets.size):
            q = p + offsets[n]
            dq = dist[q]
            # q's path ran through p: the round left q alone (its start distance, finite,
            # not a seed), same label, and its distance is p's step to the bit
            if inside[q] == 0 or dq != start_dist[q] or not (0 < dq < inf):
                continue
            if (
                start_lab[q] != lp
                or _step(dp, lp, pu, pu + offsets_box[n], n, costs, lengths) != dq
            ):
                continue
            dist[q] = inf
            todo, top = _append(todo, top, q)
            reset, n_reset = _append(reset, n_reset, q)
    bits = dist.view(np.int32)
    for r in range(n_reset):
        q = reset[r]
        for n in range(offsets.size):
            p = q + offsets[n]
            if inside[p] != 0 and dist[p] < inf:
                size = _push(heap, size, p, bits)
    return size, n_reset


class _NotConverged(Exception):
    """An update still re-prices paths after ``_MAX_ROUNDS`` rounds."""


class _Graph:
    """The voxel graph of a box (26 neighbours), its step costs, and Dijkstra over it.

    ``zs`` (C, k, j, i): the channels in noise levels times their sharpness; ``node``
    (L, k, j, i): cost per mm of entering a voxel with each label; ``discount`` (L, k, j, i)
    or None: factor of the edge cost of entering a voxel with each label; ``inside``
    (k, j, i) bool or None (all): the voxels a path may enter. The step from p (label L) to
    its neighbour q, ``h`` mm apart, costs (float32, computed when relaxed, nothing stored)::

        h * (node[L, q] + length_cost) + discount[L, q] * sqrt(max(0, |zs(q) - zs(p)|^2 - floor))

    Distances (float32) and labels (int32, indices into the labels) are (k + 2, j + 2, i + 2)
    arrays: the border is outside the region, so a neighbour index never leaves the array.
    """

    def __init__(
        self,
        zs: np.ndarray,
        node: np.ndarray,
        discount: np.ndarray | None,
        inside: np.ndarray | None,
        spacing_kji: np.ndarray,
        floor: float,
        length_cost: float,
    ):
        self.shape = tuple(zs.shape[1:])
        k, j, i = self.shape
        self.padded = (k + 2, j + 2, i + 2)
        if np.prod(self.padded, dtype=np.float64) >= 2**31:  # the heap holds int32 slots
            raise InputError(
                f"the region to segment is too large ({k} x {j} x {i} voxels): draw a region "
                "of interest around the spine"
            )
        self.inside = np.zeros(self.padded, dtype=np.uint8)
        self.inside[1:-1, 1:-1, 1:-1] = 1 if inside is None else inside
        self.n_inside = int(np.count_nonzero(self.inside))
        flat = (np.ascontiguousarray(a, dtype=np.float32).reshape(len(a), -1) for a in (zs, node))
        if discount is None:
            discount_flat = np.ones((1, 1), dtype=np.float32)  # unused, for one compiled kernel
        else:
            discount_flat = np.ascontiguousarray(discount, dtype=np.float32).reshape(
                len(discount), -1
            )
        self.costs = (
            *flat,
            discount_flat,
            discount is not None,
            np.float32(floor),
            np.float32(length_cost),
        )
        steps = np.array([s for s in np.ndindex(3, 3, 3) if s != (1, 1, 1)], dtype=np.int64) - 1
        self.geometry = (
            steps @ np.array([(j + 2) * (i + 2), i + 2, 1], dtype=np.int64),  # padded offsets
            steps @ np.array([j * i, i, 1], dtype=np.int64),  # the same in the box
            np.array([np.linalg.norm(s * spacing_kji) for s in steps], dtype=np.float32),  # mm
            ((j + 2) * (i + 2), i + 2, j, i),
        )

    def seeded(
        self, seeds: np.ndarray, labels: Sequence[int]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The start of a full solve: padded distances (+inf, 0 at the seeds), labels (the
        seeds' indices in ``labels``) and the seeds' flat indices, from ``seeds`` (k, j, i)."""
        dist = np.full(self.padded, np.inf, dtype=np.float32)
        lab = np.zeros(self.padded, dtype=np.int32)
        seeded = seeds != 0
        dist[1:-1, 1:-1, 1:-1][seeded] = 0.0
        lab[1:-1, 1:-1, 1:-1][seeded] = np.searchsorted(np.asarray(labels), seeds[seeded])
        sources = np.ravel_multi_index(tuple(v + 1 for v in np.nonzero(seeded)), self.padded)
        return dist, lab, sources

    def forbid(self, row: int, voxels: np.ndarray) -> None:
        """Label ``row`` may not enter ``voxels`` (k, j, i bool): its cost there is +inf."""
        self.costs[1][row, np.asarray(voxels).reshape(-1)] = np.inf

    def solve(
        self,
        dist: np.ndarray,
        lab: np.ndarray,
        sources: np.ndarray,
        *,
        before: tuple[np.ndarray, np.ndarray] | None = None,
        cancel: CancelCallback | None = None,
        progress: ProgressCallback | None = None,
    ) -> tuple[int, int]:
        """Dijkstra from ``sources`` (flat indices into the padded ``dist``/``lab``, which
        already hold their distance and label), in place; any other voxel changes only for a
        strictly shorter path.

        A full solve: ``dist`` +inf but 0 at the seeds, ``sources`` the seeds. An update:
        ``dist``/``lab`` the previous solution with the added seeds set, ``sources`` the
        added seeds, ``before`` the previous solution. Where an added seed's paths take a
        voxel from another label, the paths that ran through that voxel were priced for the
        old label: they are reset and grown back from their neighbours, in rounds until no
        label changes (:func:`_reprice`); the result is that of a full solve. Ties: voxels at
        equal distances are settled in the order of their flat indices, and a voxel keeps
        the first path that reached it against a later one of exactly the same distance.

        Returns the voxels settled (over all rounds) and the rounds run.
        """
        progress = progress or no_progress
        if not (dist.flags.c_contiguous and lab.flags.c_contiguous):
            raise ValueError("dist and lab must be C-contiguous")
        if dist.dtype != np.float32 or lab.dtype != np.int32 or dist.shape != self.padded:
            raise ValueError(f"dist float32 and lab int32 of shape {self.padded} expected")
        flat_dist, flat_lab, inside = dist.reshape(-1), lab.reshape(-1), self.inside.reshape(-1)
        heap = (np.empty(flat_dist.size, dtype=np.int64), np.full(flat_dist.size, -1, np.int32))
        size = _push_all(flat_dist, np.asarray(sources, dtype=np.int64), heap, 0)
        start = None if before is None else (before[0].reshape(-1), before[1].reshape(-1))
        settled, rounds = 0, 0
        while True:
            rounds += 1
            state = inside.copy()
            while size > 0:
                check(cancel)
                size, pops = _settle(
                    flat_dist, flat_lab, state, self.costs, self.geometry, heap, size, _CHUNK
                )
                settled += pops
                if start is None:
                    progress(min(settled / max(self.n_inside, 1), 1.0), "competing paths")
            if start is None:
                return settled, rounds
            check(cancel)
            size, n_reset = _reprice(
                flat_dist, flat_lab, *start, inside, self.costs, self.geometry, heap, size
            )
            if n_reset == 0:
                return settled, rounds
            if rounds >= _MAX_ROUNDS:
                raise _NotConverged()
            start = (flat_dist.copy(), flat_lab.copy())


# --------------------------------------------------------------------------------------------
# The grower
# --------------------------------------------------------------------------------------------


# ITK's GradientAnisotropicDiffusionImageFilter on a float image, step for step: float32
# pixels and update buffer, float64 inside a voxel's update, the image's edges mirrored (zero
# flux), the conductance rescaled by the mean squared gradient before each iteration.


@_jit
def _half_difference(after, before, scale):
    """ITK's central derivative: the float32 difference halved in float32, then scaled in
    float64 (``scale`` = 1 / spacing)."""
    return np.float64((after - before) / np.float32(2.0)) * scale


@_jit
def _face_flux(forward, across_a, across_b, k):
    """The flux through one voxel face: the forward difference ``forward`` (scaled) times
    ITK's conductance ``exp((forward^2 + accum) / K)``; ``across_a``, ``across_b``: the two
    other axes' central derivatives summed over the face's two voxels, in ITK's axis order."""
    accum = 0.25 * (across_a * across_a)
    accum += 0.25 * (across_b * across_b)
    conductance = 0.0 if k == 0.0 else math.exp((forward * forward + accum) / k)
    return forward * conductance


@_jit
def _mean_gradient_squared(u, sx, sy, sz):
    """ITK's mean squared gradient magnitude of ``u`` (k, j, i), central differences."""
    nk, nj, ni = u.shape
    total = 0.0
    for k in range(nk):
        km, kp = max(k - 1, 0), min(k + 1, nk - 1)
        for j in range(nj):
            jm, jp = max(j - 1, 0), min(j + 1, nj - 1)
            for i in range(ni):
                im, ip = max(i - 1, 0), min(i + 1, ni - 1)
                for d in (
                    np.float64(u[k, j, ip] - u[k, j, im]) / -2.0 * sx,
                    np.float64(u[k, jp, i] - u[k, jm, i]) / -2.0 * sy,
                    np.float64(u[kp, j, i] - u[km, j, i]) / -2.0 * sz,
                ):
                    total += d * d
    return total / u.size


@_jit
def _diffuse(u, scales, time_step, conductance, iterations):
    """``iterations`` of gradient anisotropic diffusion of ``u`` (k, j, i, float32), in place;
    ``scales``: 1 / spacing along i, j, k. Every voxel's update is the sum over its six faces
    of the flux through them (:func:`_face_flux`); the flux a voxel sends forward is, bit for
    bit, the one its neighbour receives backward in ITK, so each face's is computed once and
    kept for the neighbour (one row of j faces, one plane of k faces): 3 exponentials per
    voxel instead of ITK's 6."""
    nk, nj, ni = u.shape
    sx, sy, sz = scales
    update = np.empty_like(u)
    flux_j = np.empty(ni)  # through the previous row's j + 1/2 faces
    flux_k = np.empty((nj, ni))  # through the previous plane's k + 1/2 faces
    for _ in range(iterations):
        k_parameter = np.float32(
            _mean_gradient_squared(u, sx, sy, sz) * conductance * conductance * -2.0
        )
        flux_k[:] = 0.0  # the image's edges pass nothing
        for k in range(nk):
            km, kp = max(k - 1, 0), min(k + 1, nk - 1)
            flux_j[:] = 0.0
            for j in range(nj):
                jm, jp = max(j - 1, 0), min(j + 1, nj - 1)
                flux_i = 0.0
                for i in range(ni):
                    im, ip = max(i - 1, 0), min(i + 1, ni - 1)
                    c = u[k, j, i]
                    dx = _half_difference(u[k, j, ip], u[k, j, im], sx)
                    dy = _half_difference(u[k, jp, i], u[k, jm, i], sy)
                    dz = _half_difference(u[kp, j, i], u[km, j, i], sz)
                    fi = _face_flux(
                        np.float64(u[k, j, ip] - c) * sx,
                        dy + _half_difference(u[k, jp, ip], u[k, jm, ip], sy),
                        dz + _half_difference(u[kp, j, ip], u[km, j, ip], sz),
                        k_parameter,
                    )
                    fj = _face_flux(
                        np.float64(u[k, jp, i] - c) * sy,
                        dx + _half_difference(u[k, jp, ip], u[k, jp, im], sx),
                        dz + _half_difference(u[kp, jp, i], u[km, jp, i], sz),
                        k_parameter,
                    )
                    fk = _face_flux(
                        np.float64(u[kp, j, i] - c) * sz,
                        dx + _half_difference(u[kp, j, ip], u[kp, j, im], sx),
                        dy + _half_difference(u[kp, jp, i], u[kp, jm, i], sy),
                        k_parameter,
                    )
                    delta = fi - flux_i  # ITK's order: i, j, k
                    delta += fj - flux_j[i]
                    delta += fk - flux_k[j, i]
                    update[k, j, i] = np.float32(delta)
                    flux_i, flux_j[i], flux_k[j, i] = fi, fj, fk
        flat, change = u.reshape(-1), update.reshape(-1)
        for n in range(flat.size):
            flat[n] += np.float32(np.float64(change[n]) * time_step)


def denoise(image: sitk.Image, iterations: int, conductance: float) -> np.ndarray:
    """(k, j, i) float32 array of ``image`` after ``iterations`` of gradient anisotropic
    diffusion (Perona-Malik, ITK's filter): flat tissue is smoothed, edges kept. The time
    step is the stable one for 3D (an eighth of the smallest spacing over two); ITK scales
    the conductance by the image's mean gradient magnitude, so it has no intensity unit.

    Why: the path cost sums the intensity changes along a path, and in noisy tissue every
    step adds noise; diffusion removes most of it while keeping the boundaries' steps (real
    T1w cord Dice 0.32-0.68 -> 0.89-0.90; battery T2-alone mass median 0.76 -> 0.92).

    Computed by :func:`_diffuse`, ITK's arithmetic in numba: the same voxels as
    ``sitk.GradientAnisotropicDiffusion`` (bit for bit on Linux x86-64), about 4 times
    faster on one core.
    """
    image = sitk.Cast(image, sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    if iterations > 0:
        spacing = image.GetSpacing()
        # a 2D image is one slice: its k faces pass nothing, as in ITK's 2D filter
        scales = np.array([1.0 / s for s in spacing] + [1.0] * (3 - len(spacing)))
        volume = array.reshape((1,) * (3 - array.ndim) + array.shape)
        _diffuse(volume, scales, 0.0625 * min(spacing), float(conductance), int(iterations))
    return array


class PathGrower:
    """Competitive shortest paths from seed labels with learnt costs (see the module docstring).

    Same interface as :class:`~MESCCAnalyzerLib.segmentation.SeedGrower`: ``images`` are one or
    more co-registered scalar 3D images on one grid (any contrasts: T2, T1, STIR, PET in SUV,
    CT resampled onto the MRI); ``roi`` an optional mask on that grid. Call :meth:`grow` with a
    seed labelmap, again after adding strokes: only the region the new strokes win is
    re-solved. ``resolution_mm``: per image, the voxel size (mm) of the scan it was resampled
    from when coarser than the grid (a PET: its own voxels; 0, the default: the grid's own);
    its likelihood then takes the range of its values within half of that
    (:func:`value_ranges`).
    """

    def __init__(
        self,
        images: Sequence[sitk.Image],
        *,
        roi: sitk.Image | None = None,
        params: PathParameters | None = None,
        resolution_mm: Sequence[float] | None = None,
    ):
        check_inputs(images, roi=roi)
        self.images = list(images)
        self.resolution_mm = check_resolutions(resolution_mm, len(self.images))
        self.roi = roi
        self.params = params or PathParameters()
        self.model: CostModel | None = None
        self._box: Box | None = None
        self._channels: np.ndarray | None = None
        self._inside: np.ndarray | None = None
        self._graph: _Graph | None = None
        self._state: dict | None = None
        self.last_update_voxels = 0  # voxels settled by the last grow() (all rounds)
        self.last_update_rounds = 0  # rounds of the last update (see _Graph.solve)
        self.full_solves = 0
        self.feature_computations = 0  # how many times the channels were cropped and denoised
        self.released: np.ndarray | None = None  # in the box: the mass may not enter (_full)

    def _region_for(self, seeds: sitk.Image) -> Box:
        return region_box(self.roi, seeds, self.params.margin_mm)

    def _crop(self, box: Box) -> None:
        if self._box is not None and self._box == box:
            return
        if self._box is not None and self.roi is None and self._box.contains(box):
            return
        sl = box.slices_kji
        self._channels = np.stack(
            [
                denoise(
                    sitk.RegionOfInterest(image, box.size, box.start),
                    self.params.denoise_iterations,
                    self.params.denoise_conductance,
                )
                for image in self.images
            ]
        )
        self.feature_computations += 1
        self._inside = (
            (sitk.GetArrayViewFromImage(self.roi)[sl] != 0) if self.roi is not None else None
        )
        self._box = box
        self._graph = None
        self._state = None

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

        Returns a uint8 image on the first image's grid (uint16 if ``keep_labels`` is None and
        labels exceed 255) holding only ``keep_labels`` (all labels if None); voxels outside
        the region are 0. ``smoothing_mm`` > 0 smooths the labels jointly (Gaussian sigma, mm).
        """
        progress = progress or no_progress
        check_inputs(self.images, seeds, self.roi)
        seeds_arr = sitk.GetArrayViewFromImage(seeds)
        self._crop(self._region_for(seeds))
        sl = self._box.slices_kji
        seeds_box = np.array(seeds_arr[sl], dtype=np.uint16)
        if self._inside is not None:
            seeds_box[~self._inside] = 0
        labels = tuple(int(v) for v in np.unique(seeds_box) if v)
        if len(labels) < 2:
            raise InputError("fewer than two seed labels lie inside the region being segmented")
        check(cancel)
        state = self._state
        incremental = (
            state is not None
            and state["labels"] == labels
            and not np.any((state["seeds"] != 0) & (seeds_box != state["seeds"]))
            and not self._mass_stroke_on_released(np.where(state["seeds"] == 0, seeds_box, 0))
        )
        if incremental:
            progress(0.1, "updating")
            dist, lab = self._update(seeds_box, state, cancel)
        else:
            progress(0.0, "learning from the strokes")
            try:
                dist, lab = self._full(seeds_box, labels, progress, cancel)
            except BaseException:
                # the graph is the new model's: no update may start from the old solution
                self._state = None
                raise
        self._state = {"labels": labels, "seeds": seeds_box, "dist": dist, "lab": lab}
        progress(0.9, "finishing")
        core = lab[1:-1, 1:-1, 1:-1]
        lookup = np.array((0, *labels), dtype=np.uint16)
        reached = np.isfinite(dist[1:-1, 1:-1, 1:-1])
        out = np.where(reached, lookup[core.astype(np.intp) + 1], 0).astype(np.uint16)
        if smoothing_mm and smoothing_mm > 0:
            out = joint_smooth(out, smoothing_mm, self.images[0].GetSpacing())
            if self._inside is not None:
                out[~self._inside] = 0
        if keep_labels is not None:
            out = np.where(np.isin(out, list(keep_labels)), out, 0)
        out_type = np.uint8 if out.max(initial=0) <= 255 else np.uint16
        full = np.zeros(seeds_arr.shape, dtype=out_type)
        full[sl] = out
        result = sitk.GetImageFromArray(full)
        result.CopyInformation(self.images[0])
        progress(1.0, "done")
        return result

    def _mass_stroke_on_released(self, added: np.ndarray) -> bool:
        """Whether an added mass stroke lies on (or next to) the voxels taken from the mass:
        the user says they are mass, so the release is decided again (a full solve)."""
        if self.released is None:
            return False
        stroked = np.argwhere(added == LABEL_MASS)
        shape = np.array(self.released.shape)
        for offset in itertools.product((-1, 0, 1), repeat=3):
            near = stroked + offset
            near = near[((near >= 0) & (near < shape)).all(axis=1)]
            if self.released[tuple(near.T)].any():
                return True
        return False

    def _full(self, seeds_box, labels, progress, cancel):
        params = self.params
        self.model = learn_model(self._channels, seeds_box, params)
        model = self.model
        check(cancel)
        progress(0.1, "costs")
        z = self._channels / model.scale.astype(np.float32)[:, None, None, None]
        shape = z.shape[1:]
        discount = u = None
        spacing_kji = np.asarray(self.images[0].GetSpacing())[::-1]
        if params.likelihood_weight > 0 or params.edge_discount_levels > 0:
            ranges = {}
            for ch, resolution in enumerate(self.resolution_mm):
                if resolution > 0:
                    low, high = value_ranges(z[ch], spacing_kji, resolution / 2)
                    ranges[ch] = (low.reshape(-1), high.reshape(-1))
            u = unlikeliness(z.reshape(z.shape[0], -1), model, params, ranges)
            u = u.reshape(len(labels), *shape)
            if params.edge_discount_levels > 0:
                discount = np.clip(u * np.float32(1.0 / params.edge_discount_levels), 1e-3, 1.0)
            node = np.minimum(u, np.float32(params.likelihood_cap))
            node *= np.float32(params.likelihood_weight)
        else:
            node = np.zeros((len(labels), *shape), dtype=np.float32)
        z *= model.sharpness.astype(np.float32)[:, None, None, None]  # the edges' channels
        floor = params.noise_floor * float(
            np.sum(2.0 * (model.sharpness * model.noise / model.scale) ** 2)
        )
        self._graph = _Graph(
            z, node, discount, self._inside, spacing_kji, floor, params.length_cost_per_mm
        )
        check(cancel)
        progress(0.3, "competing paths")
        dist, lab, sources = self._graph.seeded(seeds_box, labels)
        self.last_update_voxels, _ = self._graph.solve(
            dist,
            lab,
            sources,
            cancel=cancel,
            progress=sub_progress(progress, 0.3, 0.85),
        )
        self.released = None
        if params.release_unlike_mass and u is not None and LABEL_MASS in labels:
            row = labels.index(LABEL_MASS)
            held = (lab[1:-1, 1:-1, 1:-1] == row) & np.isfinite(dist[1:-1, 1:-1, 1:-1])
            released = unlike_mass(held, u, labels, seeds_box, spacing_kji, params.likelihood_cap)
            if released is not None and released.any():
                check(cancel)
                progress(0.85, "releasing what is not mass")
                self._graph.forbid(row, released)
                dist, lab, more = self._regrow_mass(dist, lab, held, seeds_box, labels, cancel)
                self.last_update_voxels += more
                self.released = released
        self.last_update_rounds = 0
        self.full_solves += 1
        return dist, lab

    def _regrow_mass(self, dist, lab, held, seeds_box, labels, cancel):
        """The paths again once voxels are closed to the mass, from the solution before: the
        mass's voxels (its strokes aside) are reset and grown back from its strokes and from
        the other labels' voxels around them, as an update (:meth:`_Graph.solve` with
        ``before``). The other labels' paths never ran through the mass's voxels; where one
        of them now takes a voxel from another label, the paths through it are re-priced.
        The result is a full solve's (tested); on the battery it settles 0.6-14 % of the
        voxels a full solve does.
        Returns the distances, labels and voxels settled."""
        before = (dist, lab)
        dist, lab = dist.copy(), lab.copy()
        reset = held & (seeds_box == 0)
        core = dist[1:-1, 1:-1, 1:-1]
        core[reset] = np.inf
        image = sitk.GetImageFromArray(reset.astype(np.uint8))
        around = sitk.GetArrayViewFromImage(sitk.BinaryDilate(image, [1, 1, 1], sitk.sitkBox))
        start = ((around != 0) & ~reset & np.isfinite(core)) | (seeds_box == LABEL_MASS)
        sources = np.ravel_multi_index(tuple(v + 1 for v in np.nonzero(start)), dist.shape)
        dist, lab, settled, _ = self._solve_after(
            before, dist, lab, sources, seeds_box, labels, cancel
        )
        return dist, lab, settled

    def _solve_after(self, before, dist, lab, sources, seeds_box, labels, cancel):
        """:meth:`_Graph.solve` as an update of the solution ``before`` (from ``sources`` on
        ``dist``/``lab``), or, should its re-pricing not converge, a full solve (exact).
        Returns the distances, labels, voxels settled and rounds (``_MAX_ROUNDS + 1``: the
        full solve)."""
        try:
            settled, rounds = self._graph.solve(dist, lab, sources, before=before, cancel=cancel)
        except _NotConverged:  # never seen; the full solve is exact
            dist, lab, sources = self._graph.seeded(seeds_box, labels)
            settled, _ = self._graph.solve(dist, lab, sources, cancel=cancel)
            rounds = _MAX_ROUNDS + 1
        return dist, lab, settled, rounds

    def _update(self, seeds_box, state, cancel):
        """Dijkstra from the added strokes on the previous solution (see :meth:`_Graph.solve`);
        the result is that of a full solve with the same model."""
        added = (seeds_box != 0) & (state["seeds"] == 0)
        if not added.any():
            self.last_update_voxels = 0
            return state["dist"], state["lab"]
        dist, lab = state["dist"].copy(), state["lab"].copy()
        index = np.searchsorted(np.asarray(state["labels"]), seeds_box[added])
        dist[1:-1, 1:-1, 1:-1][added] = 0.0
        lab[1:-1, 1:-1, 1:-1][added] = index
        sources = np.ravel_multi_index(tuple(v + 1 for v in np.nonzero(added)), dist.shape)
        before = (state["dist"], state["lab"])
        dist, lab, self.last_update_voxels, self.last_update_rounds = self._solve_after(
            before, dist, lab, sources, seeds_box, state["labels"], cancel
        )
        return dist, lab
