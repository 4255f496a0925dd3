"""``register``: from two images to a checked transform, one step after another.

1. check the options and the images (:mod:`.inputs`) and build the pyramid (:mod:`.pyramid`);
2. gather the starts (:mod:`.starts`): frames, centres, centroids or landmarks, plus the best
   peaks of the translation search (:mod:`.search`);
3. run each start through the coarse levels; the starts that end within 1 mm of another are
   dropped;
4. run the rest at full resolution (same random samples for all) and keep the best metric
   times overlap; a large region ends with a precision run on more samples;
5. refuse a result that shares no structure or is still creeping on its iteration limit;
6. optionally refine by a B-spline (:mod:`.optimiser`), and report.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import ComputationError
from ..progress import CancelCallback, ProgressCallback, check, sub_progress
from .inputs import initialisation_mode, prepared_images
from .optimiser import bspline_refinement, evaluate, run_level
from .pyramid import Level, build_pyramid, on_edges
from .sampling import overlap_fraction, region_points, shared_information_nats
from .settings import LevelReport, RegistrationResult, RegistrationSettings
from .starts import distinct, initial_candidates, search_starts
from .transforms import transform_points, tre_mm


def register(
    fixed: sitk.Image,
    moving: sitk.Image,
    *,
    fixed_mask: sitk.Image | None = None,
    init: str = "auto",
    landmarks: tuple[np.ndarray, np.ndarray] | None = None,
    deformable: bool = False,
    settings: RegistrationSettings | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> RegistrationResult:
    """Register ``moving`` (CT) to ``fixed`` (MRI): a rigid transform, optionally refined by a B-spline.

    Parameters
    ----------
    fixed, moving : SimpleITK images (3D, scalar); any pixel type, any orientation.
    fixed_mask : optional image (non-zero = region to match, e.g. around the lesion level),
        resampled onto the fixed grid if needed. Without it the whole fixed image is used.
    init : "auto" (default: the scanners' frames, the geometric centres and the intensity
        centroids, plus the best peaks of a translation search around them, each run through
        the coarse levels; the distinct results run at full resolution and the best metric
        times overlap wins), "geometry",
        "centers", "moments" or "landmarks" (then ``landmarks = (fixed_lps, moving_lps)``,
        paired (N, 3) arrays, N >= 3).
    deformable : add a B-spline refinement (control grid ``settings.bspline_grid_mm``) after
        the rigid step.

    Returns
    -------
    RegistrationResult whose ``transform`` maps fixed LPS points to moving LPS points.

    Raises
    ------
    InputError for unusable inputs (no intensity variation, empty mask, bad landmarks);
    ComputationError when the images do not overlap or the optimisation does not converge.
    """
    settings = settings or RegistrationSettings()
    progress = progress or (lambda fraction, message: None)
    init = initialisation_mode(init, landmarks)
    t_start = time.perf_counter()
    fixed_f, mask, moving_f = prepared_images(fixed, moving, fixed_mask, settings)
    check(cancel)
    levels = build_pyramid(fixed_f, mask, moving_f, settings)
    check(cancel)
    progress(0.05, "initialising")
    candidates, searched = _starts(levels[0], fixed_f, mask, moving_f, init, landmarks, settings)
    span = 0.65 if deformable else 0.95
    run = _Run(
        levels=levels,
        moving=moving_f,
        region_lps=region_points(fixed_f, mask),
        iterations=_iterations_per_level(len(levels), settings),
        settings=settings,
        steps=_Steps(progress, 0.05, span, len(candidates) * len(levels)),
        cancel=cancel,
    )
    # Each starting candidate runs through the coarse levels; the distinct results then run at
    # full resolution, where the metric (same random samples for all) picks the winner.
    # Comparing at a coarse level alone is not enough: a tight mask makes coarse optima lie.
    paths = _coarse_runs(run, candidates, searched)
    whole = levels[-1]  # the whole region: for the final checks and the B-spline
    levels[-1] = on_edges(whole, settings)  # the final runs of a large region sample its edges
    best = _best_at_full_resolution(run, _distinct_ends(run, paths), candidates)
    _precision_run(run, best)
    initial = sitk.Euler3DTransform(best.initial)
    initial_metric = evaluate(levels[-1], settings, initial)
    _check_converged(whole, best, settings)
    result_transform: sitk.Transform = sitk.Euler3DTransform(best.transform)
    last = best.reports[-1]
    if deformable:
        check(cancel)
        result_transform, last = bspline_refinement(
            whole, best.transform, settings, sub_progress(progress, span, 0.95), cancel
        )
        best.reports.append(last)
    mean_disp, change = _displacements_mm(result_transform, initial, run.region_lps)
    progress(1.0, "done")
    return RegistrationResult(
        transform=result_transform,
        initial_transform=initial,
        init_mode=best.name,
        metric_value=float(last.metric),
        initial_metric_value=float(initial_metric),
        levels=best.reports,
        elapsed_s=time.perf_counter() - t_start,
        stop_condition=last.stop_condition,
        mean_displacement_mm=mean_disp,
        mean_change_from_initial_mm=change,
        deformable=deformable,
        candidates=run.scores,
    )


class _Steps:
    """The progress of ``n_steps`` equal steps (one level of one start each), mapped onto
    ``start``..``stop`` of the caller's progress."""

    def __init__(self, progress: ProgressCallback, start: float, stop: float, n_steps: int):
        self.progress, self.start, self.stop, self.n_steps = progress, start, stop, n_steps
        self.done = 0

    def next(self) -> ProgressCallback:
        """The progress callback of the next step."""
        low = self.start + (self.stop - self.start) * self.done / self.n_steps
        self.done += 1
        high = self.start + (self.stop - self.start) * self.done / self.n_steps
        return sub_progress(self.progress, low, high)

    def skip(self, n: int) -> None:
        """Count ``n`` steps as done without running them."""
        self.done += n


@dataclass
class _Run:
    """What the steps of one registration share.

    ``levels``: the pyramid, coarse to fine (the last one drawn on edges for the final runs);
    ``moving``: the moving image (float32), for the overlap checks; ``region_lps``: points of
    the fixed region; ``iterations``: the iteration limit per level; ``scores``: what became of
    each start (the report's ``init_candidates``).
    """

    levels: list[Level]
    moving: sitk.Image
    region_lps: np.ndarray
    iterations: list[int]
    settings: RegistrationSettings
    steps: _Steps
    cancel: CancelCallback | None
    scores: dict[str, dict] = dataclasses.field(default_factory=dict)


@dataclass
class _Path:
    """One start on its way: its name, starting transform, the transform it has reached
    (optimised in place) and the reports of the levels it has run."""

    name: str
    initial: sitk.Euler3DTransform
    transform: sitk.Euler3DTransform
    reports: list[LevelReport]


def _iterations_per_level(n_levels: int, settings: RegistrationSettings) -> list[int]:
    """The iteration limit of each of ``n_levels`` levels: the last of ``max_iterations`` for
    the full resolution, the ones before it for the coarse levels (the first repeated when
    there are more levels than limits)."""
    iters = list(settings.max_iterations[: n_levels - 1]) + [settings.max_iterations[-1]]
    return [settings.max_iterations[0]] * (n_levels - len(iters)) + iters


def _starts(
    coarsest: Level, fixed, mask, moving, init, landmarks, settings: RegistrationSettings
) -> tuple[dict[str, sitk.Euler3DTransform], dict[str, sitk.Euler3DTransform]]:
    """(every distinct start, the starts found by the translation search among them).

    The search (at the ``coarsest`` level; not with landmarks) adds starts; it never takes
    away those of the frames and centres.
    """
    candidates = distinct(initial_candidates(fixed, mask, moving, init, landmarks))
    found: dict[str, sitk.Euler3DTransform] = {}
    if init != "landmarks" and settings.search_starts > 0:
        found = search_starts(coarsest, candidates, settings)
        candidates = distinct({**candidates, **found})
    return candidates, found


def _coarse_runs(
    run: _Run,
    candidates: dict[str, sitk.Euler3DTransform],
    searched: dict[str, sitk.Euler3DTransform],
) -> list[_Path]:
    """Each start through the coarse levels; a start that leaves too little of the region in
    the moving image, or fails on the way, is recorded in ``run.scores`` and dropped. The
    starts from the search step in millimetres at coarse levels (see :mod:`.optimiser`)."""
    levels, settings = run.levels, run.settings
    paths = []
    for name, t0 in candidates.items():
        check(run.cancel)
        start_overlap = overlap_fraction(run.region_lps, run.moving, t0)
        if start_overlap < settings.min_valid_fraction:
            run.scores[name] = {
                "start_overlap_fraction": round(start_overlap, 3),
                "result": "no overlap",
            }
            run.steps.skip(len(levels))
            continue
        transform = sitk.Euler3DTransform(t0)
        try:
            reports = [
                run_level(
                    levels[i],
                    settings,
                    run.iterations[i],
                    transform,
                    run.steps.next(),
                    run.cancel,
                    f"{name} level {i + 1}/{len(levels)}",
                    physical_steps=name in searched,
                )
                for i in range(len(levels) - 1)
            ]
        except ComputationError as exc:
            run.scores[name] = {"result": f"failed: {exc.message}"}
            run.steps.skip(len(levels) - 1)
            continue
        paths.append(_Path(name, t0, transform, reports))
    return paths


def _distinct_ends(run: _Run, paths: list[_Path]) -> list[_Path]:
    """The paths whose coarse result lies over 1 mm (mean over the region) from every earlier
    one: the coarse results that converged to the same place need one final run."""
    finals: list[_Path] = []
    for path in paths:
        if any(tre_mm(path.transform, other.transform, run.region_lps) < 1.0 for other in finals):
            run.scores[path.name] = {"result": "same as another start after the coarse levels"}
            run.steps.skip(1)
            continue
        finals.append(path)
    return finals


def _best_at_full_resolution(
    run: _Run, finals: list[_Path], candidates: dict[str, sitk.Euler3DTransform]
) -> _Path:
    """Run each path at full resolution and return the one with the best metric times overlap
    (among those with enough overlap); raise when none is left."""
    settings = run.settings
    best, best_score = None, math.inf
    errors = []
    for path in finals:
        try:
            path.reports.append(
                run_level(
                    run.levels[-1],
                    settings,
                    run.iterations[-1],
                    path.transform,
                    run.steps.next(),
                    run.cancel,
                    f"{path.name} full resolution",
                )
            )
        except ComputationError as exc:
            run.scores[path.name] = {"result": f"failed: {exc.message}"}
            errors.append(exc)
            continue
        last = path.reports[-1]
        overlap = overlap_fraction(run.region_lps, run.moving, path.transform)
        # Compared as the metric times the overlap: Mattes MI counts only the samples inside the
        # moving image, and a start that slides the region partly out of it can score higher on
        # fewer samples (phantom seed 5: one vertebra off, 84 % inside, -1.007 against the true
        # -0.999 with all inside). Weighted, it is the information about the whole region, as
        # in the translation search.
        score = last.metric * overlap
        run.scores[path.name] = {
            "metric": last.metric,
            "overlap_fraction": round(overlap, 3),
            "valid_points": last.valid_points,
            "weighted_metric": score,
        }
        if overlap >= settings.min_valid_fraction and (best is None or score < best_score):
            best, best_score = path, score
    if best is None:
        if errors and len(errors) == len(finals):
            raise errors[0]
        raise ComputationError(
            "the MRI region and the CT do not overlap from any starting position tried"
            + (f" ({', '.join(candidates)})" if candidates else ""),
            hint="give paired landmarks with --init landmarks.json when the scanners' frames are far apart",
        )
    return best


def _precision_run(run: _Run, best: _Path) -> None:
    """When the full-resolution level has precision samples, a last run of ``best`` on them,
    from where it is and with the precision step (see :class:`.RegistrationSettings`)."""
    level = run.levels[-1]
    if not level.precision_samples:
        return
    check(run.cancel)
    best.reports.append(
        run_level(
            dataclasses.replace(level, precise=True),
            run.settings,
            run.iterations[-1],
            best.transform,
            lambda fraction, message: None,
            run.cancel,
            f"{best.name} precision",
        )
    )


def _check_converged(whole: Level, best: _Path, settings: RegistrationSettings) -> None:
    """Raise :class:`ComputationError` when the final alignment shares no structure beyond
    chance, or when its last run stopped on the iteration limit (still creeping)."""
    last = best.reports[-1]
    # Shared structure: the mutual information of the final alignment, on fresh points, must
    # exceed what the same intensities give once their pairing is shuffled (chance level).
    # Excess over chance, measured: white noise against the real T2 0.001 nat, smoothed noise
    # 0.012; the real T1/T2 pair 0.107, the phantom's CT/T2 0.58. Threshold 0.05.
    mi, mi_chance = shared_information_nats(
        whole.fixed,
        whole.moving,
        best.transform,
        region_points(whole.fixed, whole.mask, 20000),
    )
    if not np.isfinite(last.metric) or mi - mi_chance < settings.min_mutual_information:
        raise ComputationError(
            f"registration did not converge: the images share no structure at the end "
            f"(mutual information {mi:.3f} nat, chance level {mi_chance:.3f})",
            hint="check that both images show the same anatomy",
        )
    if last.capped:
        raise ComputationError(
            f"registration did not converge within {last.iterations} iterations at full resolution "
            f"(last step: {last.stop_condition})",
            hint="try another --init or a fixed mask around the lesion level",
        )


def _displacements_mm(
    transform: sitk.Transform, initial: sitk.Transform, points_lps: np.ndarray
) -> tuple[float, float]:
    """Mean distance (mm) over ``points_lps`` that ``transform`` moves a point, and mean
    distance between where ``transform`` and ``initial`` take it."""
    moved = transform_points(transform, points_lps)
    mean_disp = float(np.mean(np.linalg.norm(moved - points_lps, axis=1)))
    change = float(np.mean(np.linalg.norm(moved - transform_points(initial, points_lps), axis=1)))
    return mean_disp, change
