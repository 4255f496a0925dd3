"""The mass's release (issue 16): after the shortest paths, the voxels the mass took that
another label fits better are closed to it and the paths solved again
(``segmentation.paths.unlike_mass``, ``PathParameters.release_unlike_mass``)."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
from grower_checks import full_solve_on

from MESCCAnalyzerLib import LABEL_MASS
from MESCCAnalyzerLib.segmentation.paths import PathGrower, PathParameters, unlike_mass

OTHER = 5


def _u(shape, mass_u, other_u):
    """(2, ...) unlikeliness for the labels (3, 5)."""
    return np.stack([np.full(shape, mass_u, np.float32), np.full(shape, other_u, np.float32)])


def test_what_another_label_fits_is_released_but_the_layer_next_to_the_mass():
    shape = (5, 12, 12)
    held = np.zeros(shape, bool)
    held[:, 2:10, 2:10] = True
    u = _u(shape, 2.0, 0.0)  # columns 6-9 fit "other" better ...
    u[0, :, :, :6] = 0.0  # ... columns 2-5 the mass
    u[1, :, :, :6] = 1.0
    seeds = np.zeros(shape, np.uint16)
    released = unlike_mass(held, u, (LABEL_MASS, OTHER), seeds, np.array([3.0, 0.6, 0.6]), 4.0)
    expected = np.zeros(shape, bool)
    expected[:, 2:10, 7:10] = True  # column 6 stays open: it touches the mass's own voxels
    assert np.array_equal(released, expected)
    # the neighbours counted are within the slices: a mass voxel in the next slice only
    # keeps nothing open (3 mm slabs)
    u[:, 1:] = _u((4, 12, 12), 2.0, 0.0)
    released = unlike_mass(held, u, (LABEL_MASS, OTHER), seeds, np.array([3.0, 0.6, 0.6]), 4.0)
    assert released[1:].sum() == 4 * 8 * 8


def test_strokes_ties_beyond_the_cap_and_nan_are_never_released():
    shape = (3, 9, 9)
    held = np.ones(shape, bool)
    spacing = np.array([3.0, 0.6, 0.6])
    seeds = np.zeros(shape, np.uint16)
    seeds[:, 4, 4] = LABEL_MASS
    released = unlike_mass(held, _u(shape, 3.0, 0.0), (LABEL_MASS, OTHER), seeds, spacing, 4.0)
    assert released.any() and not released[:, 4, 4].any()  # the mass's own strokes stay
    # both labels unlike beyond the cap: a tie, no evidence against the mass
    assert not unlike_mass(held, _u(shape, 9.0, 5.0), (3, 5), seeds, spacing, 4.0).any()
    assert not unlike_mass(held, _u(shape, np.nan, 0.0), (3, 5), seeds, spacing, 4.0).any()
    # the mass fits best: nothing to release
    assert not unlike_mass(held, _u(shape, 0.0, 1.0), (3, 5), seeds, spacing, 4.0).any()
    # no mass among the labels
    assert unlike_mass(held, _u(shape, 1.0, 0.0), (1, 5), seeds, spacing, 4.0) is None


def _disc_study(rng_seed=0):
    """A mass (T2 560) against an unstroked disc (700, 7 noise levels brighter), in soft
    tissue (300) stroked as "other" only away from the disc; the mass with two short strokes
    on each of two slices.
    0.6 x 0.6 x 3 mm voxels. Returns the T2, the strokes and the truth (3 mass, 6 disc)."""
    rng = np.random.default_rng(rng_seed)
    shape = (10, 60, 60)
    truth = np.zeros(shape, np.uint8)
    truth[2:8, 15:45, 10:25] = LABEL_MASS
    truth[2:8, 15:45, 25:45] = 6
    t2 = np.full(shape, 300.0) + rng.normal(0, 20, shape)
    t2[truth == LABEL_MASS] += 260.0
    t2[truth == 6] += 400.0
    seeds = np.zeros(shape, np.uint16)
    for k in (3, 6):  # two short strokes on two slices, spread over the mass as a user does
        seeds[k, 20, 13:19] = LABEL_MASS
        seeds[k, 39, 15:21] = LABEL_MASS
    seeds[:, 3:6, 5:55] = OTHER  # soft tissue above, below and far from the disc
    seeds[:, 54:57, 5:55] = OTHER
    seeds[:, 10:50, 52:55] = OTHER

    def image(arr, dtype):
        out = sitk.GetImageFromArray(arr.astype(dtype))
        out.SetSpacing((0.6, 0.6, 3.0))
        return out

    return image(t2, np.float32), image(seeds, np.uint16), truth


@pytest.mark.parametrize("rng_seed", [0, 1, 2])
def test_the_mass_gives_back_an_unstroked_disc_it_flooded(rng_seed):
    t2, seeds, truth = _disc_study(rng_seed)
    disc = truth == 6

    def grown(release):
        grower = PathGrower([t2], params=PathParameters(release_unlike_mass=release))
        return sitk.GetArrayFromImage(grower.grow(seeds))

    before, after = grown(False), grown(True)
    # without the release the mass floods the disc (the failure it corrects) ...
    assert (before[disc] == LABEL_MASS).mean() > 0.5
    # ... with it the mass keeps at most the disc's layer next to it (1 of its 20 columns),
    # and its own voxels
    assert (after[disc] == LABEL_MASS).mean() < 0.06
    assert not (after[:, :, 26:][disc[:, :, 26:]] == LABEL_MASS).any()
    assert (after[truth == LABEL_MASS] == LABEL_MASS).mean() > 0.97


def test_a_mass_stroke_on_the_released_voxels_decides_them_again():
    t2, seeds, truth = _disc_study(0)
    grower = PathGrower([t2])
    grower.grow(seeds)
    assert grower.released is not None and grower.released.any()
    # the reader says the disc is mass after all: a stroke on it
    more = sitk.GetArrayFromImage(seeds)
    more[4:6, 28:32, 33:37] = LABEL_MASS
    more_image = sitk.GetImageFromArray(more)
    more_image.CopyInformation(seeds)
    out = sitk.GetArrayFromImage(grower.grow(more_image))
    assert grower.full_solves == 2  # not an update on the closed voxels: learnt again
    assert (out[truth == 6] == LABEL_MASS).mean() > 0.9  # the stroked disc is the mass's now
    # a stroke elsewhere (soft tissue) stays an update
    other = more.copy()
    other[:, 3:6, 56:58] = OTHER
    other_image = sitk.GetImageFromArray(other)
    other_image.CopyInformation(seeds)
    grower.grow(other_image)
    assert grower.full_solves == 2


def test_a_cancelled_full_solve_leaves_no_update_to_start_from():
    """A Grow cancelled after the new model's graph was built: the next Grow must not update
    the solution before it on that graph (it solves in full)."""
    from MESCCAnalyzerLib.errors import Cancelled

    t2, seeds, _ = _disc_study(0)
    grower = PathGrower([t2])
    grower.grow(seeds)
    fewer = sitk.GetArrayFromImage(seeds)
    fewer[:, 54:57, 5:55] = 0  # a stroke removed: a full solve, a new model
    fewer_image = sitk.GetImageFromArray(fewer)
    fewer_image.CopyInformation(seeds)
    calls = []

    def cancel():
        calls.append(1)
        return len(calls) > 2  # after the model is learnt, during the paths

    with pytest.raises(Cancelled):
        grower.grow(fewer_image, cancel=cancel)
    more = sitk.GetArrayFromImage(seeds)
    more[:, 56:58, 5:55] = OTHER  # the first strokes plus one: an update of the first solution
    more_image = sitk.GetImageFromArray(more)
    more_image.CopyInformation(seeds)
    grower.grow(more_image)
    assert grower.full_solves == 2


def _battery_case(index):
    from MESCCAnalyzerLib.phantom.variation import battery, make_case, smaller
    from MESCCAnalyzerLib.segmentation.seeds import strokes_from_labels

    variation = smaller(battery(30)[index])
    study = make_case(variation)
    return study, strokes_from_labels(study.guide, rng_seed=variation.seed)


@pytest.mark.parametrize("case", ["disc", 5, 6])
def test_the_mass_regrown_after_the_release_equals_a_full_solve(case):
    """The second pass re-solves only the mass's voxels and what the other labels take from
    them (an update from the first solution); its labels are a full solve's."""
    if case == "disc":
        t2, seeds, _ = _disc_study(0)
        channels = [t2]
    else:
        study, seeds = _battery_case(case)
        channels = [study.t2, study.t1]
    grower = PathGrower(channels)
    out = sitk.GetArrayFromImage(grower.grow(seeds))
    assert grower.released is not None and grower.released.any()
    assert grower.last_update_voxels < 2 * np.prod(grower._graph.shape)  # under two full solves
    assert np.array_equal(out, full_solve_on(grower, seeds))
