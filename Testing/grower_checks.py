"""A full shortest-path solve on a grower's cached model (not a test module).

The segmentation tests compare what :class:`PathGrower` gives after an update, or after the
mass's release, with a solve from scratch on the same graph.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from MESCCAnalyzerLib.segmentation.paths import PathGrower


def full_solve_on(grower: PathGrower, seeds: sitk.Image) -> np.ndarray:
    """Labels 1-4 (uint8, on ``seeds``' grid) of a full solve from scratch with ``grower``'s
    cached model and graph (no re-learning; the voxels closed to the mass stay closed)."""
    sl = grower._box.slices_kji
    seeds_box = np.array(sitk.GetArrayViewFromImage(seeds)[sl], dtype=np.uint16)
    labels = grower._state["labels"]
    dist, lab, sources = grower._graph.seeded(seeds_box, labels)
    grower._graph.solve(dist, lab, sources)
    lookup = np.array((0, *labels), dtype=np.uint16)
    core = np.where(np.isfinite(dist[1:-1, 1:-1, 1:-1]), lookup[lab[1:-1, 1:-1, 1:-1] + 1], 0)
    full = np.zeros(sitk.GetArrayViewFromImage(seeds).shape, dtype=np.uint8)
    full[sl] = np.where(core <= 4, core, 0)
    return full
