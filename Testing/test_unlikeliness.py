"""``unlikeliness`` (the seeded paths' per-voxel label cost, a numba kernel) against its numpy
reference: the float32 numpy code it replaced, copied below, run in float64 and in float32.

Tolerances. The kernel computes each voxel in float64 and rounds the result to float32, so
against the reference run in float64 it agrees to float32 rounding (~1e-7); the test asks
1e-5 relative + 1e-5 absolute on the unlikeliness itself. The float32 reference rounds the
centres and every term to float32: its ``nll - best`` is off by a few float32 ulps of the
values (levels, |z| < 30 here), which ``sqrt(2 x)`` magnifies without bound near 0 (two
labels almost tied). Against it the test compares ``u^2 / 2 = nll - best``, to the same
1e-5 relative + 1e-5 absolute.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from MESCCAnalyzerLib.segmentation.inputs import STRUCTURE_LABELS
from MESCCAnalyzerLib.segmentation.paths import (
    CostModel,
    PathParameters,
    learn_model,
    unlikeliness,
)

RTOL = 1e-5
ATOL = 1e-5


def reference(z, model, params, ranges=None, dtype=np.float32):
    """The numpy implementation ``unlikeliness`` had before its kernel, in ``dtype``
    (float32: the code as it was, operation by operation)."""
    n = z.shape[1]
    nll = np.empty((len(model.labels), n), dtype=dtype)
    h2 = 2.0 * params.kernel_width**2
    nearest_structure = np.full(n, np.inf, dtype=dtype)  # squared distance, levels^2
    relative_sharpness = model.sharpness / max(float(model.sharpness.max()), 1e-12)
    for row, (centres, weights) in enumerate(zip(model.centres, model.weights, strict=True)):
        log_terms = np.empty((len(centres), n), dtype=dtype)
        for c, (centre, weight) in enumerate(zip(centres, weights, strict=True)):
            d2 = np.zeros(n, dtype=dtype)
            sharp_d2 = np.zeros(n, dtype=dtype)
            for ch in range(z.shape[0]):
                mu = dtype(centre[ch])
                if ranges and ch in ranges:
                    low, high = ranges[ch]
                    step2 = np.maximum(np.maximum(low - mu, mu - high), dtype(0.0)) ** 2
                else:
                    step2 = (z[ch] - mu) ** 2
                d2 += step2
                sharp_d2 += dtype(relative_sharpness[ch] ** 2) * step2
            log_terms[c] = dtype(np.log(weight)) - d2 / dtype(h2)
            if model.labels[row] in STRUCTURE_LABELS:
                np.minimum(nearest_structure, sharp_d2, out=nearest_structure)
        top = log_terms.max(axis=0)
        nll[row] = -(top + np.log(np.exp(log_terms - top).sum(axis=0)))
    best = np.minimum(nll.min(axis=0), dtype(0.5 * params.outlier_levels**2))
    if params.unlike_structures_is_other:
        unlike = nearest_structure > dtype(params.outlier_levels**2)
        for row, label in enumerate(model.labels):
            if label not in STRUCTURE_LABELS:
                nll[row, unlike] = np.minimum(nll[row, unlike], best[unlike])
    nll -= best
    np.maximum(nll, 0.0, out=nll)
    np.multiply(nll, 2.0, out=nll)
    return np.sqrt(nll, out=nll)


def _random_case(rng, n_channels, coarse, n=3001):
    """A random model (structures and "other" labels, 1-7 centres each) and voxels around and
    far from its centres; with ``coarse``, the last channel has value ranges."""
    labels = tuple(
        sorted(rng.choice([1, 2, 3, 4, 5, 6, 9], size=rng.integers(2, 6), replace=False))
    )
    if not any(v in STRUCTURE_LABELS for v in labels):
        labels = (1, *labels)
    if all(v in STRUCTURE_LABELS for v in labels):
        labels = (*labels, 7)
    centres, weights = [], []
    for _ in labels:
        k = int(rng.integers(1, 8))
        middle = rng.uniform(-12.0, 12.0, n_channels)
        centres.append(middle + rng.normal(0.0, 2.0, (k, n_channels)))
        w = rng.uniform(0.05, 1.0, k)
        weights.append(w / w.sum())
    model = CostModel(
        labels=labels,
        noise=np.ones(n_channels),
        spread=np.ones(n_channels),
        scale=np.ones(n_channels),
        sharpness=rng.uniform(0.05, 1.0, n_channels),
        centres=tuple(centres),
        weights=tuple(weights),
    )
    z = rng.uniform(-20.0, 20.0, (n_channels, n)).astype(np.float32)
    near = rng.random(n) < 0.5  # half the voxels a kernel width or so from a centre
    everything = np.concatenate(centres)
    pick = everything[rng.integers(0, len(everything), n)].T
    z[:, near] = (pick + rng.normal(0.0, 1.0, pick.shape))[:, near].astype(np.float32)
    ranges = None
    if coarse:
        ch = n_channels - 1
        below = rng.uniform(0.0, 3.0, n) * (rng.random(n) < 0.8)
        above = rng.uniform(0.0, 3.0, n) * (rng.random(n) < 0.8)
        ranges = {ch: ((z[ch] - below).astype(np.float32), (z[ch] + above).astype(np.float32))}
    return z, model, ranges


def _check(z, model, params, ranges):
    u = unlikeliness(z, model, params, ranges)
    assert u.dtype == np.float32 and u.shape == (len(model.labels), z.shape[1])
    exact = reference(z, model, params, ranges, dtype=np.float64)
    np.testing.assert_allclose(u, exact, rtol=RTOL, atol=ATOL)
    as_was = reference(z, model, params, ranges, dtype=np.float32).astype(np.float64)
    np.testing.assert_allclose(u.astype(np.float64) ** 2 / 2, as_was**2 / 2, rtol=RTOL, atol=ATOL)
    return u


@pytest.mark.parametrize("other_rule", [True, False])
@pytest.mark.parametrize("coarse", [False, True])
@pytest.mark.parametrize("n_channels", [1, 2, 3])
def test_random_models(n_channels, coarse, other_rule):
    rng = np.random.default_rng(100 * n_channels + 10 * coarse + other_rule)
    for _ in range(3):
        z, model, ranges = _random_case(rng, n_channels, coarse)
        params = PathParameters(
            kernel_width=float(rng.uniform(0.6, 1.5)),
            outlier_levels=float(rng.uniform(2.0, 4.0)),
            unlike_structures_is_other=other_rule,
        )
        u = _check(z, model, params, ranges)
        assert np.isfinite(u).all()

        # the cases reach every branch: a voxel unlike every label (the outlier cap), one
        # unlike every structure (the "other" rule), a range holding a centre
        exact = reference(z, model, params, ranges, np.float64)
        plain = reference(
            z, model, replace(params, unlike_structures_is_other=False), ranges, np.float64
        )
        no_cap = replace(params, unlike_structures_is_other=False, outlier_levels=1e3)
        assert (reference(z, model, no_cap, ranges, np.float64) != plain).any()
        if other_rule:
            assert (plain != exact).any()
        if coarse:
            assert (reference(z, model, params, None, np.float64) != exact).any()


def test_other_rule_and_cap_by_hand():
    """One structure at 0 and one "other" label at 10, one channel, width 1, outlier 3."""
    model = CostModel(
        labels=(1, 5),
        noise=np.ones(1),
        spread=np.ones(1),
        scale=np.ones(1),
        sharpness=np.ones(1),
        centres=(np.array([[0.0]]), np.array([[10.0]])),
        weights=(np.array([1.0]), np.array([1.0])),
    )
    z = np.array([[0.0, 10.0, 5.0, 30.0]], dtype=np.float32)
    params = PathParameters(kernel_width=1.0, outlier_levels=3.0)
    u = unlikeliness(z, model, params)
    # nll: (d^2 / 2) per label; best capped at 4.5; "other" is 0 beyond 3 from the structure
    np.testing.assert_allclose(u[0], [0.0, 10.0, 4.0, np.sqrt(2 * (450 - 4.5))], rtol=1e-6)
    np.testing.assert_allclose(u[1], [10.0, 0.0, 0.0, 0.0], rtol=1e-6)
    off = unlikeliness(z, model, PathParameters(unlike_structures_is_other=False))
    np.testing.assert_allclose(off[1], [10.0, 0.0, 4.0, np.sqrt(2 * (200 - 4.5))], rtol=1e-6)
    ranges = {0: (z[0] - np.float32(6.0), z[0] + np.float32(6.0))}  # 0 and 10 within 6 of 5
    both = unlikeliness(z, model, params, ranges)
    np.testing.assert_allclose(both[:, 2], [0.0, 0.0], atol=1e-7)


def test_learnt_model_and_odd_sizes():
    """A model from ``learn_model`` (16 centres a label), blocks cut short, NaN voxels."""
    rng = np.random.default_rng(7)
    shape = (6, 17, 19)
    seeds = rng.choice([0, 0, 0, 1, 2, 3, 5, 6], size=shape).astype(np.uint8)
    means = np.array([[0, 40, 80, 120, 0, 60, 150], [0, 30, 10, 50, 0, 20, 40]], dtype=float)
    channels = means[:, seeds] + rng.normal(0.0, 12.0, (2, *shape))
    model = learn_model(channels.astype(np.float32), seeds, PathParameters())
    assert max(len(c) for c in model.centres) == 16
    z = (channels / model.scale[:, None, None, None]).reshape(2, -1).astype(np.float32)
    for n in (0, 1, 127, 128, 129, z.shape[1]):
        _check(z[:, :n], model, PathParameters(), None)
    ranges = {1: (z[1] - np.float32(0.5), z[1] + np.float32(0.7))}
    _check(z, model, PathParameters(), ranges)
    nan = z.copy()
    nan[0, 3] = np.nan
    u = unlikeliness(nan, model, PathParameters())
    assert np.isnan(u[:, 3]).all() and np.isnan(reference(nan, model, PathParameters())[:, 3]).all()
    assert np.isfinite(np.delete(u, 3, axis=1)).all()
