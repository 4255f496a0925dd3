"""Issue 16's learnt-cost shortest paths (PathGrower) on a slice of the
issue-16 battery, on the battery's own construction, and on real MRI.

The issue-16 goals are asserted on a small slice of the battery (four varied cases on a smaller
field of view, fast). Those the method does not reach yet are marked ``xfail(strict=True)``
with the measured values, so the suite stays green and says when they start to hold. The
whole battery's table is in docs/segmentation.md (benchmarks/bench_segmentation_battery.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from grower_checks import full_solve_on

from MESCCAnalyzerLib.errors import Cancelled, InputError
from MESCCAnalyzerLib.phantom.anatomy import CORD, CSF, DISC, FAT, MARROW, MASS
from MESCCAnalyzerLib.phantom.variation import (
    PET_VOXEL_MM,
    battery,
    majority_labels,
    make_case,
    smaller,
    tissue_levels,
)
from MESCCAnalyzerLib.segmentation.grow import dice
from MESCCAnalyzerLib.segmentation.paths import (
    PathGrower,
    PathParameters,
    _Graph,
    learn_model,
    value_ranges,
)
from MESCCAnalyzerLib.segmentation.seeds import add_stroke, axial_axis_kji, strokes_from_labels

# four varied cases of the 30-case battery: grade 2 round (1 mm slices), grade 3 (cord
# flattened), circumferential and posterolateral (4 mm slices, tilted 18 and 25 degrees); on
# a 56 x 56 x 36 mm field of view
SLICE = [smaller(battery(30)[i]) for i in (1, 2, 5, 6)]


@pytest.fixture(scope="module")
def cases():
    out = []
    for variation in SLICE:
        study = make_case(variation)
        seeds = strokes_from_labels(study.guide, rng_seed=variation.seed)
        out.append((variation, study, seeds))
    return out


@pytest.fixture(scope="module")
def results(cases):
    """Dice of cord, CSF, mass and the mass volume error, per case and channel set."""
    out = {}
    for variation, study, seeds in cases:
        truth = sitk.GetArrayFromImage(study.labels)
        for name, channels in (
            ("T2", [study.t2]),
            ("T2+T1", [study.t2, study.t1]),
            ("T2+PET", [study.t2, study.pet_suv]),
        ):
            # the PET is resampled from 4 mm voxels: the grower is told so (as the pipeline does)
            resolution = [PET_VOXEL_MM if c is study.pet_suv else 0.0 for c in channels]
            grower = PathGrower(channels, resolution_mm=resolution)
            result = sitk.GetArrayFromImage(grower.grow(seeds))
            row = {v: dice(result == v, truth == v) for v in (1, 2, 3)}
            row["volume"] = (result == 3).sum() / (truth == 3).sum() - 1.0
            out[variation.name, name] = row
    return out


def _dice(result: sitk.Image, labels: sitk.Image) -> dict[int, float]:
    out, truth = sitk.GetArrayFromImage(result), sitk.GetArrayFromImage(labels)
    return {v: dice(out == v, truth == v) for v in (1, 2, 3)}


# ---- the battery itself --------------------------------------------------------------------


def test_strokes_of_the_slice_cover_at_most_two_percent(cases):
    for _, study, seeds in cases:
        s, truth = sitk.GetArrayFromImage(seeds), sitk.GetArrayFromImage(study.labels)
        for label in (1, 2, 3):
            assert 0 < (s == label).sum() <= 0.02 * (truth == label).sum() + 1
            assert np.all(truth[s == label] == label)  # strokes lie inside their structure


def test_every_tissue_around_the_canal_gets_other_strokes(cases):
    """Disc (guide 6) and epidural fat (7) are stroked as "other", as a user strokes what
    they see around the sac; no "other" stroke touches a structure."""
    for _, study, seeds in cases:
        s, guide = sitk.GetArrayFromImage(seeds), sitk.GetArrayFromImage(study.guide)
        for tissue in (6, 7):
            assert np.any((s == 5) & (guide == tissue))
        assert np.all(guide[s == 5] >= 5)


def test_each_slice_strokes_the_csf_in_more_than_one_place(cases):
    """A slice's strokes of a structure spread over it (CSF on both sides of the cord)."""
    for _, study, seeds in cases:
        s = sitk.GetArrayFromImage(seeds)
        axis = axial_axis_kji(study.labels)
        for k in np.unique(np.nonzero(s == 2)[axis]):
            plane = np.take(s, k, axis=axis) == 2
            rows, cols = np.nonzero(plane)
            if len(rows) >= 4:
                spread = np.hypot(np.ptp(rows), np.ptp(cols))
                assert spread >= 3  # voxels: two strokes, not one dot


def test_the_truth_is_the_label_covering_most_of_each_voxel():
    # voxel 0: 5/8 CSF, 3/8 cord, centre in the cord; voxel 1: a tie, centre label wins
    fractions = np.array([[[[0.0, 3 / 8, 5 / 8], [0.0, 0.5, 0.5]]]])
    centre = np.array([[[1, 2]]])
    assert majority_labels(fractions, centre).tolist() == [[[2, 2]]]


def test_touching_tissues_stay_apart_on_t2_in_every_case():
    # the jitter keeps each structure's tissue >= 15 % from the tissues it touches
    # (rounding: 1e-9)
    for variation in battery(30):
        levels = tissue_levels(variation)[:, 0]
        for a, b in ((MASS, MARROW), (MASS, DISC), (MASS, FAT), (MASS, CORD), (CSF, FAT)):
            assert abs(levels[a] - levels[b]) >= 0.15 * levels[a] - 1e-9


# ---- the method ----------------------------------------------------------------------------


def test_the_result_is_a_labelmap_of_structures_on_the_first_image_grid(cases):
    _, study, seeds = cases[0]
    result = PathGrower([study.t2, study.pet_suv]).grow(seeds)
    assert result.GetPixelID() == sitk.sitkUInt8
    assert result.GetSize() == study.t2.GetSize()
    assert result.GetSpacing() == study.t2.GetSpacing()
    assert set(np.unique(sitk.GetArrayFromImage(result)).tolist()) <= {0, 1, 2, 3, 4}


def test_an_update_after_one_more_stroke_equals_a_full_re_solve(cases):
    _, study, seeds = cases[0]
    more = add_stroke(seeds, study.labels, 3, rng_seed=5)
    grower = PathGrower([study.t2, study.t1])
    grower.grow(seeds)
    updated = sitk.GetArrayFromImage(grower.grow(more))
    assert grower.full_solves == 1  # the second grow was an update ...
    assert grower.feature_computations == 1  # ... on the cached denoised channels ...
    assert grower.last_update_voxels < sitk.GetArrayViewFromImage(seeds).size  # ... local
    # the same model (learnt from the first strokes), solved from scratch with the new strokes
    assert np.array_equal(updated, full_solve_on(grower, more))


def test_an_uninformative_channel_does_not_hurt(cases):
    """A pure-noise second channel: its per-label densities coincide, so every voxel's
    unlikeliness is decided by the T2 alone (the learnt model, not a constant)."""
    _, study, seeds = cases[0]
    rng = np.random.default_rng(0)
    noise = sitk.GetImageFromArray(
        rng.normal(100.0, 10.0, sitk.GetArrayViewFromImage(study.t2).shape).astype(np.float32)
    )
    noise.CopyInformation(study.t2)
    alone = _dice(PathGrower([study.t2]).grow(seeds), study.labels)
    both = _dice(PathGrower([study.t2, noise]).grow(seeds), study.labels)
    for label in (1, 2, 3):
        # tolerance: the denoised noise channel still adds a little to every step
        # (measured: mass 0.951 -> 0.941, cord and CSF within 0.005)
        assert both[label] >= alone[label] - 0.05


def test_the_model_scales_each_channel_by_its_own_noise(cases):
    _, study, seeds = cases[0]
    t2 = sitk.GetArrayFromImage(study.t2)[None]
    s = sitk.GetArrayFromImage(seeds)
    model = learn_model(np.concatenate([t2, 1000.0 * t2]), s)
    # the same image in other units: the same scale in its own units (to rounding)
    assert model.scale[1] == pytest.approx(1000.0 * model.scale[0], rel=1e-4)
    assert model.noise[0] == pytest.approx(
        study.variation.noise * 1000.0, rel=0.6
    )  # Rician sigma (a fraction of the brightest T2 level ~1000), MAD of few stroke pairs


def test_the_plain_competition_is_a_parameter_preset():
    plain = PathParameters.plain()
    assert plain.likelihood_weight == 0.0 and plain.scale_from == "noise"


# ---- the solver against a plain numpy reference --------------------------------------------

_SPACING_KJI = np.array([2.0, 0.7, 0.7])
_LENGTH_COST = 0.05


def _random_problem(rng, shape=(8, 12, 12), n_labels=3, *, same_costs=False, mask=True):
    """Channels (2 of them, already in noise levels x sharpness), per-label node costs and
    edge discounts, a region with holes, and two seeds per label."""
    zs = rng.normal(0.0, 1.0, (2, *shape)).astype(np.float32)
    node = rng.uniform(0.0, 2.0, (n_labels, *shape)).astype(np.float32)
    discount = rng.uniform(0.1, 1.0, (n_labels, *shape)).astype(np.float32)
    if same_costs:  # the step costs do not depend on the label
        node[:], discount = node[0], None
    inside = rng.uniform(size=shape) > 0.1 if mask else None
    seeds = np.zeros(shape, dtype=np.uint16)
    for label in range(1, n_labels + 1):
        for _ in range(2):
            seeds[tuple(rng.integers(0, n) for n in shape)] = label
    if inside is not None:
        seeds[~inside] = 0
    return zs, node, discount, inside, seeds


def _step_costs(zs, node, discount, floor):
    """Per neighbour offset e: (L, k, j, i) cost of the step q - e -> q for each label of
    q - e, and the slices of q (``into``) and of q - e (``out_of``); numpy, float32, in the
    solver's order of operations."""
    shape = zs.shape[1:]
    out = []
    for e in np.ndindex(3, 3, 3):
        e = np.array(e) - 1
        if not e.any():
            continue
        into = tuple(slice(max(0, d), n + min(0, d)) for d, n in zip(e, shape, strict=True))
        out_of = tuple(slice(max(0, -d), n - max(0, d)) for d, n in zip(e, shape, strict=True))
        e2 = np.sum((zs[(slice(None), *into)] - zs[(slice(None), *out_of)]) ** 2, axis=0)
        if floor:
            e2 = np.maximum(e2 - np.float32(floor), np.float32(0.0))
        w = np.sqrt(e2)
        length = np.float32(np.linalg.norm(e * _SPACING_KJI))
        g = (node[(slice(None), *into)] + np.float32(_LENGTH_COST)) * length
        g = g + (w if discount is None else w * discount[(slice(None), *into)])
        out.append((g, into, out_of))
    return out


def _per_label_best(dist, lab, steps, n_labels):
    """(L, k, j, i): for each voxel and label, the shortest path through a neighbour of that
    label: min over neighbours p with lab[p] = L of dist[p] + step(p -> q, L)."""
    best = np.full((n_labels, *dist.shape), np.inf, dtype=np.float32)
    for g, into, out_of in steps:
        for label in range(n_labels):
            d = np.where(lab[out_of] == label, dist[out_of], np.inf) + g[label]
            np.minimum(best[(label, *into)], d, out=best[(label, *into)])
    return best


def _bellman_ford(zs, node, discount, inside, seeds, floor, *, lower_only):
    """The competition's fixpoint by plain numpy iteration: each voxel takes the shortest
    path through a neighbour, priced for that neighbour's label, until nothing changes.

    ``lower_only``: a voxel changes only for a shorter path, as the former numpy sweeps
    did. With label-dependent costs that can keep a path priced for a label its voxel has
    since lost (the sweeps kept 27 such voxels on the slice's case 06, T2), so otherwise
    every voxel is recomputed from its neighbours at each iteration: with positive step
    costs that fixpoint is unique up to ties, and it is Dijkstra's."""
    labels = tuple(int(v) for v in np.unique(seeds) if v)
    seeded = seeds != 0
    steps = _step_costs(zs, node, discount, floor)
    dist = np.where(seeded, 0.0, np.inf).astype(np.float32)
    lab = np.where(seeded, np.searchsorted(labels, seeds), 0)
    allowed = np.ones(seeds.shape, bool) if inside is None else inside
    for _ in range(1000):
        best = _per_label_best(dist, lab, steps, len(labels))
        new = np.where(allowed & ~seeded, best.min(axis=0), dist if lower_only else np.inf)
        if lower_only:
            new = np.minimum(new, dist)
        new_lab = np.where(new < dist if lower_only else ~seeded, best.argmin(axis=0), lab)
        new = np.where(seeded, 0.0, new).astype(np.float32)
        if np.array_equal(new, dist) and np.array_equal(new_lab, lab):
            return dist, lab, best
        dist, lab = new, new_lab
    raise AssertionError("no fixpoint in 1000 iterations")


def _numba_solve(zs, node, discount, inside, seeds, floor):
    graph = _Graph(zs, node, discount, inside, _SPACING_KJI, floor, _LENGTH_COST)
    labels = tuple(int(v) for v in np.unique(seeds) if v)
    dist, lab, sources = graph.seeded(seeds, labels)
    graph.solve(dist, lab, sources)
    return graph, dist, lab


@pytest.mark.parametrize("same_costs", [False, True])
def test_the_compiled_solver_reaches_the_numpy_fixpoint(same_costs):
    """Label-dependent costs (node costs, discounts, a noise floor): the fixpoint where every
    voxel holds its best neighbour's path; label-independent costs: also the fixpoint of the
    former lowering-only sweeps."""
    rng = np.random.default_rng(16)
    for trial in range(6):
        zs, node, discount, inside, seeds = _random_problem(
            rng, same_costs=same_costs, mask=trial % 2 == 0
        )
        floor = 0.3 if trial % 3 == 0 else 0.0
        dist, lab, best = _bellman_ford(
            zs, node, discount, inside, seeds, floor, lower_only=same_costs
        )
        _, got_dist, got_lab = _numba_solve(zs, node, discount, inside, seeds, floor)
        core = (slice(1, -1),) * 3
        got_dist, got_lab = got_dist[core], got_lab[core]
        reached = np.isfinite(dist)
        assert np.array_equal(np.isfinite(got_dist), reached)
        # float32 sums in another order (1e-4 relative); same order here, so far better
        np.testing.assert_allclose(got_dist[reached], dist[reached], rtol=1e-4)
        # labels compared where the best two labels' paths are not a tie (1e-4 relative)
        two = np.sort(best, axis=0)[:2]
        clear = reached & (seeds == 0) & (two[1] - two[0] > 1e-4 * np.maximum(two[0], 1e-6))
        assert np.array_equal(got_lab[clear | (seeds != 0)], lab[clear | (seeds != 0)])
        assert clear.sum() > 0.8 * reached.sum()  # ties are rare: the check covers the box


def test_an_update_after_more_seeds_equals_a_full_solve_on_random_costs():
    """The new seeds' paths take voxels from other labels; the paths that ran through those
    voxels were priced for their old label and are re-grown (more than one round)."""
    rng = np.random.default_rng(7)
    rounds = []
    for trial in range(12):
        shape = (8, 12, 12) if trial % 2 else (12, 20, 16)
        zs, node, discount, inside, seeds = _random_problem(rng, shape, mask=trial % 3 != 0)
        more = seeds.copy()
        for _ in range(int(rng.integers(1, 5))):
            more[tuple(rng.integers(0, n) for n in shape)] = rng.integers(1, 4)
        more[seeds != 0] = seeds[seeds != 0]
        if inside is not None:
            more[~inside] = 0
        graph, dist, lab = _numba_solve(zs, node, discount, inside, seeds, 0.0)
        added = (more != 0) & (seeds == 0)
        new_dist, new_lab = dist.copy(), lab.copy()
        new_dist[1:-1, 1:-1, 1:-1][added] = 0.0
        new_lab[1:-1, 1:-1, 1:-1][added] = more[added] - 1
        sources = np.ravel_multi_index(tuple(v + 1 for v in np.nonzero(added)), dist.shape)
        settled, n = graph.solve(new_dist, new_lab, sources, before=(dist, lab))
        rounds.append(n)
        _, full_dist, full_lab = _numba_solve(zs, node, discount, inside, more, 0.0)
        assert np.array_equal(new_dist, full_dist)  # to the bit: the same float32 sums
        reached = np.isfinite(full_dist)
        assert np.array_equal(new_lab[reached], full_lab[reached])
        assert settled < reached.sum()
    assert max(rounds) > 1  # the re-pricing was exercised


def test_the_solver_stops_when_cancelled():
    zs, node, discount, inside, seeds = _random_problem(np.random.default_rng(0))
    graph = _Graph(zs, node, discount, inside, _SPACING_KJI, 0.0, _LENGTH_COST)
    dist, lab, sources = graph.seeded(seeds, (1, 2, 3))
    with pytest.raises(Cancelled):
        graph.solve(dist, lab, sources, cancel=lambda: True)


def test_the_solver_runs_where_no_numba_cache_is_writable():
    """An installed package in a read-only folder: numba finds no cache directory (here: only
    the IPython locator is tried) and the kernels are compiled in the process instead."""
    code = (
        "import numpy as np\n"
        "from MESCCAnalyzerLib.segmentation.paths import _Graph\n"
        "seeds = np.zeros((3, 4, 5), np.uint16); seeds[0, 0, 0], seeds[2, 3, 4] = 1, 2\n"
        "g = _Graph(np.zeros((1, 3, 4, 5), np.float32), np.ones((2, 3, 4, 5), np.float32),"
        " None, None, np.ones(3), 0.0, 0.05)\n"
        "dist, lab, sources = g.seeded(seeds, (1, 2))\n"
        "g.solve(dist, lab, sources)\n"
        "assert np.isfinite(dist).sum() == 60\n"
    )
    env = dict(os.environ, NUMBA_CACHE_LOCATOR_CLASSES="IPythonCacheLocator")
    package = Path(__file__).resolve().parents[1] / "MESCCAnalyzer"
    env["PYTHONPATH"] = os.pathsep.join([str(package), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr


# ---- issue 16 goals on the slice -------------------------------------------------------------


@pytest.mark.xfail(
    strict=True,
    reason="issue 16 goal not reached: the PET lowers the CSF Dice by 0.061 on the 4 mm "
    "circumferential case 06 (0.899 -> 0.838)",
)
def test_goal_adding_a_channel_never_hurts(cases, results):
    # the goal's own tolerance: 0.01 Dice
    for variation, _, _ in cases:
        alone = results[variation.name, "T2"]
        for name in ("T2+T1", "T2+PET"):
            d = results[variation.name, name]
            assert all(d[v] >= alone[v] - 0.01 for v in (1, 2, 3)), (variation.name, name)


@pytest.mark.xfail(
    strict=True,
    reason="issue 16 goal not reached: mass Dice 0.877 (T1) / 0.892 (PET) and CSF 0.838 "
    "(PET) on the 4 mm circumferential case 06, mass 0.886 (PET) on the posterolateral case "
    "07, cord 0.927 (PET) on grade-3 case 03 (4 mm slabs: the disc next to the mass, "
    "partial-volumed with the endplate, looks like mass)",
)
def test_goal_with_a_second_channel(cases, results):
    for variation, _, _ in cases:
        for name in ("T2+T1", "T2+PET"):
            d = results[variation.name, name]
            assert d[3] >= 0.90 and d[1] >= 0.95 and d[2] >= 0.90, (variation.name, name)


@pytest.mark.xfail(
    strict=True,
    reason="issue 16 goal not reached: T2-alone mass Dice 0.811 (case 07; case 06 now 0.852), "
    "cord 0.923 (grade 3, case 03), CSF 0.899 (case 06)",
)
def test_goal_with_t2_alone(cases, results):
    for variation, _, _ in cases:
        d = results[variation.name, "T2"]
        assert d[3] >= 0.85 and d[1] >= 0.95 and d[2] >= 0.90, variation.name


@pytest.mark.xfail(
    strict=True,
    reason="issue 16 goal not reached: mass volume +6.8 % (T2+T1) on the 4 mm case 06 and "
    "-7.6 % (T2+PET) on case 07; within 5 % on cases 02 and 03",
)
def test_goal_mass_volume_within_five_percent(cases, results):
    for variation, _, _ in cases:
        for name in ("T2+T1", "T2+PET"):
            assert abs(results[variation.name, name]["volume"]) <= 0.05, (variation.name, name)


# ---- real MRI: cord on every SCT image with a manual mask, the TPTBox thecal sac -------------

REAL = {
    "t2": ("sct_errsm30/t2.nii.gz", "sct_errsm30/t2_seg-manual.nii.gz"),
    "t1w": ("sct_errsm30/t1w.nii.gz", "sct_errsm30/t1w_seg-manual.nii.gz"),
    "t2s": ("sct_errsm30/t2s.nii.gz", "sct_errsm30/t2s_seg.nii.gz"),
    "mt1": ("sct_errsm30/mt1.nii.gz", "sct_errsm30/mt1_seg.nii.gz"),
    "lesion t2": (
        "sct_fake_lesion/t2_fake_lesion.nii.gz",
        "sct_fake_lesion/t2_fake_lesion_sc_seg.nii.gz",
    ),
}


def _three_slice_result(image: sitk.Image, guide: np.ndarray, scored) -> np.ndarray:
    """Grow from strokes on three axial slices (20, 50, 80 % of the scored extent): the
    structures, "other" from 1 mm outside them (the CSF around the cord) to 15 mm."""
    guide_image = sitk.GetImageFromArray(guide.astype(np.uint8))
    guide_image.CopyInformation(image)
    axis = axial_axis_kji(image)
    extent = np.flatnonzero(
        np.isin(guide, scored).any(axis=tuple(a for a in range(3) if a != axis))
    )
    slices = sorted({int(extent[int(q * (extent.size - 1))]) for q in (0.2, 0.5, 0.8)})
    seeds = strokes_from_labels(
        guide_image,
        rng_seed=0,
        structures=scored,
        slice_indices=slices,
        strokes_per_slice=4,
        other_strokes_per_slice=8,
        other_near_mm=6.0,
        other_inset_mm=1.0,
        other_within_mm=15.0,
        near_to=scored,
    )
    return sitk.GetArrayFromImage(PathGrower([image]).grow(seeds))


# measured, draw 0 (the lesion T2's cord over-grows about 3x into the tissue around it)
_CORD_NOT_MET = {
    "t2s": 0.729,
    "mt1": 0.831,
    "lesion t2": 0.465,
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(
                strict=True,
                reason=f"issue 16 goal not reached: cord Dice {_CORD_NOT_MET[name]:.3f} (draw 0)",
            ),
        )
        if name in _CORD_NOT_MET
        else name
        for name in REAL
    ],
)
def test_goal_real_cord_from_three_axial_slices(shared_data, name):
    image_path, mask_path = REAL[name]
    image = sitk.ReadImage(str(shared_data / image_path), sitk.sitkFloat32)
    cord = sitk.GetArrayFromImage(sitk.ReadImage(str(shared_data / mask_path))) > 0
    result = _three_slice_result(image, cord.astype(np.uint8), (1,))
    # the goal against the manual mask (measured t2 0.913, t1w 0.888)
    assert dice(result == 1, cord) >= 0.88


@pytest.mark.xfail(
    strict=True,
    reason="issue 16 goal not reached: thecal sac Dice 0.693 (draw 0)",
)
def test_goal_real_thecal_sac_on_the_tptbox_t2(shared_data):
    folder = shared_data / "tptbox_cervical_t2"
    image = sitk.ReadImage(str(folder / "sub-mri_label-6_T2w.nii.gz"), sitk.sitkFloat32)
    mask = sitk.GetArrayFromImage(
        sitk.ReadImage(str(folder / "sub-mri_seg-subreg_label-6_msk.nii.gz"))
    )
    guide = np.zeros(mask.shape, dtype=np.uint8)
    guide[mask == 61] = 2  # spinal canal / CSF
    guide[mask == 60] = 1  # spinal cord
    result = _three_slice_result(image, guide, (1, 2))
    assert dice(np.isin(result, (1, 2)), np.isin(guide, (1, 2))) >= 0.85


# ---- a channel of coarse resolution (the PET) ------------------------------------------------


def test_value_ranges_are_the_extremes_within_the_radius():
    rng = np.random.default_rng(4)
    channel = rng.normal(size=(7, 9, 11)).astype(np.float32)
    spacing_kji = np.array([2.0, 1.0, 1.0])
    low, high = value_ranges(channel, spacing_kji, 2.0)
    k, j, i = np.indices(channel.shape)
    for point in [(3, 4, 5), (0, 0, 0), (6, 8, 10), (2, 7, 1)]:
        # 2 mm either side: 1 slice (2 mm) across, 2 voxels (1 mm) in plane
        near = channel[
            (abs(k - point[0]) <= 1) & (abs(j - point[1]) <= 2) & (abs(i - point[2]) <= 2)
        ]
        assert low[point] == near.min() and high[point] == near.max()
    same_low, same_high = value_ranges(channel, spacing_kji, 0.4)  # under half a voxel
    assert same_low is channel and same_high is channel


def test_a_coarse_pet_does_not_take_the_flattened_cord_from_its_own_strokes(
    phantom_study, phantom_channels
):
    """Project phantom, grade 3 (the cord flattened by a hot mass), T2 + PET (3 mm voxels),
    five stroke draws. Compared point by point, the PET's blur makes the cord next to the mass
    read 2-3 times the SUV under its strokes and the mass takes it (cord area ratio 0.07-0.48
    on four of five draws, truth labels 0.73); with the PET's resolution the cord stays
    (measured 0.692-0.728) and the mass Dice stays >= 0.91."""
    from MESCCAnalyzerLib.measure.metrics import compute_metrics

    t2, pet, truth_labels = phantom_channels("3", 0)
    resolution = max(phantom_study("3", 0).pet_suv.GetSpacing())
    truth = sitk.GetArrayFromImage(truth_labels)
    expected = compute_metrics(truth_labels).metrics["cord_csa_ratio"]
    lost = 0
    for draw in range(5):
        seeds = strokes_from_labels(truth_labels, rng_seed=draw)
        for resolution_mm in ([0.0, 0.0], [0.0, resolution]):
            labels = PathGrower([t2, pet], resolution_mm=resolution_mm).grow(seeds)
            ratio = compute_metrics(labels).metrics["cord_csa_ratio"]
            if resolution_mm[1] == 0.0:
                lost += ratio < expected - 0.2
                continue
            assert abs(ratio - expected) <= 0.08, (draw, ratio, expected)
            out = sitk.GetArrayFromImage(labels)
            assert dice(out == 3, truth == 3) >= 0.90, draw
    assert lost >= 3  # the mechanism the resolution answers is still there


def test_the_resolution_needs_one_value_per_image(cases):
    _, study, _ = cases[0]
    with pytest.raises(InputError, match="one value >= 0 mm per image"):
        PathGrower([study.t2, study.pet_suv], resolution_mm=[4.0])
    with pytest.raises(InputError, match="one value >= 0 mm per image"):
        PathGrower([study.t2], resolution_mm=[-1.0])
