"""One optimisation at one pyramid level: SimpleITK's registration method with the Mattes
metric, the regular-step optimiser over the six rigid parameters (restarted when left creeping
on its iteration limit), or L-BFGS-B over a B-spline's coefficients."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from ..errors import ComputationError
from ..progress import check
from .pyramid import Level
from .sampling import region_points
from .settings import LevelReport, RegistrationSettings
from .transforms import tre_mm


def run_level(
    level: Level,
    settings: RegistrationSettings,
    iterations: int,
    transform: sitk.Euler3DTransform,
    progress,
    cancel,
    what: str,
    *,
    physical_steps: bool = False,
) -> LevelReport:
    """Optimise ``transform`` in place at one pyramid level; check that enough samples stay valid.

    The regular-step optimiser only ever shortens its step (on each turn of the gradient); in a
    long shallow valley it can be left creeping along the valley floor in steps of a few
    micrometres when the iteration limit comes (seen on the real T1/T2 pair: 0.002 mm per
    iteration, the metric still improving). It is then run again from where it stopped, with a
    fresh first step, up to ``restarts`` times; a run still on its limit after that is refused
    by the caller.
    """
    total, restarts = 0, -1
    capped = True
    previous = None
    while capped and restarts < settings.restarts:
        restarts += 1
        reg, samples = _rigid_method(level, settings, iterations, physical_steps=physical_steps)
        reg.SetInitialTransform(transform, inPlace=True)
        _execute(reg, level.fixed, level.moving, progress, cancel, what)
        total += int(reg.GetOptimizerIteration())
        capped = _capped(reg, iterations)
        if capped and previous is not None:
            # a fresh start that comes back to where the last run was left (the creep above):
            # settled to well within the accuracy that matters, not wandering off
            points = region_points(level.fixed, level.mask, 1000)
            capped = tre_mm(transform, previous, points) > settings.restart_agreement_mm
        previous = sitk.Euler3DTransform(transform)
    valid = int(reg.GetMetricNumberOfValidPoints())
    report = LevelReport(
        spacing_mm=float(
            level.spacing_mm if not level.full_resolution else max(level.fixed.GetSpacing())
        ),
        samples=int(samples),
        iterations=total,
        metric=float(reg.GetMetricValue()),
        valid_points=valid,
        stop_condition=reg.GetOptimizerStopConditionDescription(),
        restarts=restarts,
        capped=capped,
    )
    if valid < settings.min_valid_fraction * samples or valid < 1000:
        raise ComputationError(
            f"only {valid} of {samples} sample points stayed inside the moving image ({what})",
            hint="the images overlap too little; check the fields of view or give --init landmarks.json",
        )
    return report


def _capped(reg: sitk.ImageRegistrationMethod, iterations: int) -> bool:
    """Whether the optimiser stopped on its iteration limit (not on a small step)."""
    text = reg.GetOptimizerStopConditionDescription()
    return reg.GetOptimizerIteration() >= iterations and "Step too small" not in text


def _mattes_method(
    level: Level, settings: RegistrationSettings, wanted: int, bins: int
) -> tuple[sitk.ImageRegistrationMethod, int]:
    """A registration method with the Mattes metric on ``wanted`` random samples of the
    level's region (all of it when smaller), its mask, and linear interpolation."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    if level.region_voxels > wanted:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(wanted / level.region_voxels, settings.seed)
        samples = wanted
    else:
        reg.SetMetricSamplingStrategy(reg.NONE)
        samples = level.region_voxels
    if level.mask is not None:
        reg.SetMetricFixedMask(level.mask)
    reg.SetInterpolator(sitk.sitkLinear)
    # Gradients by central differences at the sample points only: SimpleITK's default
    # gradient-image filters would compute a full gradient volume of both images per level.
    reg.MetricUseFixedImageGradientFilterOff()
    reg.MetricUseMovingImageGradientFilterOff()
    return reg, samples


def _rigid_method(
    level: Level, settings: RegistrationSettings, iterations: int, *, physical_steps: bool = False
) -> tuple[sitk.ImageRegistrationMethod, int]:
    """The Mattes method with the regular-step optimiser set for ``level``: its samples, bins,
    first and last step (coarse level, full resolution, or precision run)."""
    if not level.full_resolution:
        # first step: the level's voxel size (at least max_step_mm); stop at a fraction of the
        # voxel, since the finer levels take over from there
        wanted, bins = settings.samples_per_level, settings.histogram_bins
        step = max(settings.max_step_mm, level.spacing_mm)
        min_step = max(settings.min_step_mm, settings.coarse_min_step_fraction * level.spacing_mm)
    elif level.precise:
        wanted, bins = level.precision_samples, settings.final_histogram_bins
        step, min_step = settings.precision_step_mm, settings.precision_min_step_mm
    else:
        # only final_step_mm at first: a large first step at full resolution can leave the
        # right basin; when a precision run follows, it takes over below its first step, so
        # this run only has to come that close (fewer samples)
        handover = level.precision_samples > 0
        wanted = settings.approach_samples if handover else settings.final_samples
        bins = settings.final_histogram_bins
        step = settings.final_step_mm
        min_step = settings.precision_step_mm / 4.0 if handover else settings.min_step_mm
    reg, samples = _mattes_method(level, settings, wanted, bins)
    # ITK's regular step is a length in parameter space, whatever the parameters' scales: where
    # the translation gradient vanishes (at a translation optimum, i.e. a search peak) a 4 mm
    # step becomes a turn of about 1 rad (seen: 52 deg in one step on the real T1/T2 pair). From
    # a search peak the coarse steps are therefore re-scaled at each iteration to move the
    # region by ``step`` mm at most (ITK's learning-rate estimation from the physical shift).
    # Not from the other starts: on the phantom that made the median TRE 0.041 -> 0.063 mm.
    physical = {}
    if not level.full_resolution and physical_steps and settings.coarse_physical_steps:
        physical = {
            "estimateLearningRate": reg.EachIteration,
            "maximumStepSizeInPhysicalUnits": step,
        }
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=step,
        minStep=min_step,
        numberOfIterations=iterations,
        relaxationFactor=settings.relaxation,
        gradientMagnitudeTolerance=1e-8,
        **physical,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetShrinkFactorsPerLevel([1])
    reg.SetSmoothingSigmasPerLevel([0.0])
    return reg, samples


def _execute(reg, fixed, moving, progress, cancel, what: str):
    """Run ``reg``, reporting each iteration to ``progress`` and stopping when ``cancel`` says
    so (then raising :class:`~MESCCAnalyzerLib.errors.Cancelled`); ITK's errors become a
    :class:`ComputationError` a user can read."""
    cancelled = []

    def on_iteration():
        if cancel is not None and cancel():
            cancelled.append(True)
            reg.StopRegistration()
        progress(
            min(reg.GetOptimizerIteration() / 100.0, 0.99),
            f"{what}: iteration {reg.GetOptimizerIteration()}, metric {reg.GetMetricValue():.4f}",
        )

    reg.AddCommand(sitk.sitkIterationEvent, on_iteration)
    try:
        result = reg.Execute(fixed, moving)
    except RuntimeError as exc:
        raise ComputationError(
            _explain_itk_error(exc),
            hint="check that the images show the same region, or give --init landmarks",
        ) from exc
    finally:
        reg.RemoveAllCommands()
    check(lambda: bool(cancelled))
    return result


def _explain_itk_error(exc: Exception) -> str:
    text = str(exc)
    if "outside" in text or "valid" in text.lower() or "Too many samples" in text:
        return "registration failed: too few points of the fixed image fall inside the moving image (the images do not overlap enough)"
    last = [line.strip() for line in text.splitlines() if line.strip()]
    return f"registration failed inside ITK: {last[-1] if last else text}"


def evaluate(level: Level, settings: RegistrationSettings, transform: sitk.Transform) -> float:
    """The metric of ``transform`` at ``level`` on ``samples_per_level`` samples, a report
    figure (one optimiser iteration reports the start value)."""
    reg, _ = _mattes_method(
        level, settings, settings.samples_per_level, settings.final_histogram_bins
    )
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=settings.precision_step_mm, minStep=settings.min_step_mm, numberOfIterations=1
    )
    reg.SetInitialTransform(sitk.Euler3DTransform(transform), inPlace=False)
    try:
        reg.Execute(level.fixed, level.moving)
    except RuntimeError:
        return math.inf
    return float(reg.GetMetricValue())


def bspline_refinement(
    level: Level, rigid: sitk.Euler3DTransform, settings: RegistrationSettings, progress, cancel
) -> tuple[sitk.CompositeTransform, LevelReport]:
    """B-spline refinement on the finest level; the rigid transform is applied first to the moving side."""
    extent = np.array(level.fixed.GetSize()) * np.array(level.fixed.GetSpacing())
    mesh = [max(1, int(round(e / settings.bspline_grid_mm))) for e in extent]
    bspline = sitk.BSplineTransformInitializer(level.fixed, mesh, order=3)
    reg, samples = _mattes_method(
        level, settings, settings.bspline_samples, settings.final_histogram_bins
    )
    reg.SetMovingInitialTransform(rigid)
    reg.SetInitialTransform(bspline, inPlace=True)
    reg.SetOptimizerAsLBFGSB(
        gradientConvergenceTolerance=1e-5,
        numberOfIterations=settings.bspline_iterations,
        maximumNumberOfCorrections=5,
        maximumNumberOfFunctionEvaluations=2 * settings.bspline_iterations,
        costFunctionConvergenceFactor=1e7,
    )
    reg.SetShrinkFactorsPerLevel([1])
    reg.SetSmoothingSigmasPerLevel([0.0])
    _execute(reg, level.fixed, level.moving, progress, cancel, "B-spline")
    report = LevelReport(
        spacing_mm=float(settings.bspline_grid_mm),
        samples=int(samples),
        iterations=int(reg.GetOptimizerIteration()),
        metric=float(reg.GetMetricValue()),
        valid_points=int(reg.GetMetricNumberOfValidPoints()),
        stop_condition="B-spline: " + reg.GetOptimizerStopConditionDescription(),
    )
    composite = sitk.CompositeTransform([sitk.Euler3DTransform(rigid), bspline])
    return composite, report
