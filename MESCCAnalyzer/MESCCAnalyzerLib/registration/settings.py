"""The registration's settings and its result types: the report of each level and of the whole."""

from __future__ import annotations

from dataclasses import dataclass, field

import SimpleITK as sitk

from .transforms import rigid_part, rotation_angle_deg

INIT_MODES = ("auto", "geometry", "centers", "moments", "landmarks")


@dataclass
class RegistrationSettings:
    """Tunable parameters; the defaults are those measured in the README (Registration, measured accuracy and speed).

    ``level_spacings_mm``: target voxel size of each pyramid level, coarse to fine; 0 means the
    images' own resolution (no finer than ``final_smoothing_mm``). A coarse level is dropped
    when the fixed region has fewer than ``min_level_voxels`` voxels at that size.
    ``samples_per_level`` / ``final_samples``: random Mattes samples drawn in the fixed region
    at coarse levels / at full resolution (all voxels when it has fewer); ``histogram_bins`` /
    ``final_histogram_bins`` likewise. ``max_iterations``: per level. Optimiser: first step
    ``max_step_mm`` (at least the level's voxel size) at coarse levels and ``final_step_mm`` at
    full resolution, ``relaxation`` on each direction change, stop below ``min_step_mm``
    (``coarse_min_step_fraction`` x voxel size at coarse levels).
    Precision run: when ``precision_sample_fraction`` of the fixed region (at most
    ``max_precision_samples``) is well above ``final_samples``, the full-resolution run takes
    ``approach_samples`` and stops at a quarter of ``precision_step_mm``, and a last run on
    that many samples starts from there with that first step and stops below
    ``precision_min_step_mm`` (large regions need more samples for the same precision; the
    expensive samples only pay for the last few steps). Both runs then draw their samples among
    the ``precision_edge_fraction`` of the region's voxels with the strongest gradient.
    Smoothing: ``smoothing_fraction`` x voxel size at coarse levels, ``final_smoothing_mm`` at
    full resolution, along the axes where that is at least ``min_smoothing_voxels`` voxels.
    Checks: ``min_valid_fraction`` of the samples inside the moving image,
    ``min_mutual_information`` nat above chance.
    Translation search (not with landmarks): every shift within ``search_reach_mm`` of each
    start, on an isotropic grid of ``search_spacing_mm`` (coarser when the region would have
    more than ``search_voxels`` voxels), ``search_bins`` histogram bins; up to ``search_starts``
    peaks scoring at least ``search_keep`` x the best are added as starts (``search_angle_deg``
    > 0 also searches the starts turned by that angle about each axis); ``search_keep`` 0.8
    rather than 0.5 drops about a fifth of the search starts for 10-20 % less time, and those
    peaks never won (same winners and errors on the 20 phantoms of the registration benchmark
    and, single-threaded, on 100 random starts of each pair of the convergence benchmark).
    Coarse levels step in physical units (``coarse_physical_steps``). A run on its iteration
    limit is restarted up to ``restarts`` times; it counts as settled when a restart ends
    within ``restart_agreement_mm`` of the previous end.
    B-spline: control grid ``bspline_grid_mm``, ``bspline_iterations``, ``bspline_samples``.
    """

    level_spacings_mm: tuple[float, ...] = (6.0, 3.0, 0.0)
    samples_per_level: int = 3000
    final_samples: int = 12000
    approach_samples: int = 6000
    precision_sample_fraction: float = 0.05
    max_precision_samples: int = 30000
    precision_step_mm: float = 0.1
    precision_edge_fraction: float = 0.25
    precision_min_step_mm: float = 0.004
    min_level_voxels: int = 4000
    histogram_bins: int = 32
    final_histogram_bins: int = 48
    max_iterations: tuple[int, ...] = (300, 200, 100)
    max_step_mm: float = 4.0
    min_step_mm: float = 0.001
    coarse_min_step_fraction: float = 0.05
    relaxation: float = 0.5
    min_valid_fraction: float = 0.30
    min_mutual_information: float = 0.05
    smoothing_fraction: float = 0.5
    final_smoothing_mm: float = 0.5
    min_smoothing_voxels: float = 0.4
    final_step_mm: float = 1.0
    bspline_grid_mm: float = 40.0
    bspline_iterations: int = 20
    bspline_samples: int = 10000
    search_spacing_mm: float = 3.0
    search_voxels: int = 4000
    search_reach_mm: float = 21.0
    search_bins: int = 8
    search_angle_deg: float = 0.0
    search_starts: int = 3
    search_keep: float = 0.8
    restarts: int = 2
    restart_agreement_mm: float = 0.1
    coarse_physical_steps: bool = True
    seed: int = 20261126


@dataclass
class LevelReport:
    """One pyramid level: its voxel size, samples, iterations, final metric and stop reason."""

    spacing_mm: float
    samples: int
    iterations: int
    metric: float
    valid_points: int
    stop_condition: str
    restarts: int = 0
    capped: bool = False


@dataclass
class RegistrationResult:
    """The registration's transform (fixed LPS -> moving LPS) and its quality report."""

    transform: sitk.Transform
    initial_transform: sitk.Transform
    init_mode: str
    metric_value: float
    initial_metric_value: float
    levels: list[LevelReport]
    elapsed_s: float
    stop_condition: str
    mean_displacement_mm: float
    mean_change_from_initial_mm: float
    deformable: bool = False
    candidates: dict = field(default_factory=dict)

    @property
    def iterations_per_level(self) -> list[int]:
        return [lvl.iterations for lvl in self.levels]

    def report(self) -> dict:
        """The quality report as JSON-ready data."""
        rigid = rigid_part(self.transform)
        out = {
            "convention": "maps a point of the fixed (MRI) physical space, LPS mm, to the moving (CT) physical space, LPS mm (ITK)",
            "transform_type": "rigid + B-spline" if self.deformable else "rigid",
            "init": self.init_mode,
            "metric": "Mattes mutual information (negative; lower is better)",
            "initial_metric_value": self.initial_metric_value,
            "final_metric_value": self.metric_value,
            "iterations_per_level": self.iterations_per_level,
            "levels": [lvl.__dict__ for lvl in self.levels],
            "stop_condition": self.stop_condition,
            "elapsed_s": round(self.elapsed_s, 3),
            "mean_displacement_mm": self.mean_displacement_mm,
            "mean_change_from_initial_mm": self.mean_change_from_initial_mm,
        }
        if rigid is not None:
            matrix, offset = rigid
            out["matrix"] = matrix.tolist()
            out["offset_mm"] = offset.tolist()
            out["rotation_deg"] = rotation_angle_deg(matrix)
        if self.candidates:
            out["init_candidates"] = self.candidates
        return out
