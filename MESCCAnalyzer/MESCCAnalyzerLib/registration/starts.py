"""Starting transforms: the scanners' frames, the images' centres and intensity centroids, or
paired landmarks, and the best peaks of the translation search around them."""

from __future__ import annotations

import math

import numpy as np
import SimpleITK as sitk

from ..geometry import corners_lps, direction_matrix, index_to_lps
from .pyramid import Level, shrink_to
from .sampling import mask_points_lps
from .search import translation_search
from .settings import RegistrationSettings
from .transforms import affine_of, rotation_angle_deg


def initial_candidates(fixed, mask, moving, init, landmarks) -> dict[str, sitk.Euler3DTransform]:
    """Rigid starting transforms (fixed -> moving), centred on the fixed region."""
    if mask is not None:
        centre = mask_points_lps(mask, max_points=5000).mean(axis=0)
    else:
        centre = _box_centre_lps(fixed)
    if init == "landmarks":
        return {"landmarks": _landmark_start(centre, landmarks)}
    out = {}
    if init in ("auto", "geometry"):
        out["geometry"] = _translation(centre, np.zeros(3))
    if init in ("auto", "centers"):
        fixed_centre = _box_centre_lps(fixed) if mask is None else centre
        out["centers"] = _translation(centre, _box_centre_lps(moving) - fixed_centre)
    if init in ("auto", "moments"):
        out["moments"] = _translation(centre, _centroid_lps(moving) - _centroid_lps(fixed, mask))
    return out


def _translation(centre: np.ndarray, shift: np.ndarray) -> sitk.Euler3DTransform:
    """A translation by ``shift`` (mm), its rotation centre at ``centre``."""
    t = sitk.Euler3DTransform()
    t.SetCenter(tuple(map(float, centre)))
    t.SetTranslation(tuple(map(float, shift)))
    return t


def _landmark_start(centre: np.ndarray, landmarks) -> sitk.Euler3DTransform:
    """The rigid transform that best maps the fixed landmarks onto the moving ones (least
    squares), its rotation centre at ``centre``."""
    fixed_pts, moving_pts = landmarks
    versor = sitk.LandmarkBasedTransformInitializer(
        sitk.VersorRigid3DTransform(),
        [float(v) for v in np.asarray(fixed_pts).ravel()],
        [float(v) for v in np.asarray(moving_pts).ravel()],
    )
    t = sitk.Euler3DTransform()
    t.SetCenter(tuple(map(float, centre)))
    matrix, offset = affine_of(versor)
    t.SetMatrix(tuple(map(float, matrix.ravel())))
    # offset = c + t - R c  ->  t = offset - c + R c
    t.SetTranslation(tuple(map(float, offset - centre + matrix @ centre)))
    return t


def _box_centre_lps(image: sitk.Image) -> np.ndarray:
    return corners_lps(image).mean(axis=0)


def _centroid_lps(image: sitk.Image, mask: sitk.Image | None = None) -> np.ndarray:
    """Intensity-weighted centroid (weights = intensity above the 2nd percentile)."""
    small = shrink_to(image, 4.0)
    arr = sitk.GetArrayFromImage(small).astype(np.float64)
    if mask is not None:
        m_small = sitk.Resample(mask, small, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        weights_mask = sitk.GetArrayFromImage(m_small) > 0
    else:
        weights_mask = np.ones(arr.shape, bool)
    values = arr[weights_mask]
    w = np.clip(arr - np.percentile(values, 2.0), 0.0, None) * weights_mask
    if w.sum() <= 0:
        w = weights_mask.astype(float)
    kji = np.indices(arr.shape).reshape(3, -1).T
    centre_kji = (kji * w.reshape(-1, 1)).sum(axis=0) / w.sum()
    return index_to_lps(small, centre_kji[::-1][None, :])[0]


def distinct(
    candidates: dict[str, sitk.Euler3DTransform], tol_mm: float = 3.0
) -> dict[str, sitk.Euler3DTransform]:
    """The candidates whose translation differs from every earlier kept one by over ``tol_mm``."""
    kept: dict[str, sitk.Euler3DTransform] = {}
    for name, t in candidates.items():
        if all(
            np.linalg.norm(np.subtract(t.GetTranslation(), k.GetTranslation())) > tol_mm
            for k in kept.values()
        ):
            kept[name] = t
    return kept


def search_starts(
    level: Level, starts: dict[str, sitk.Euler3DTransform], settings: RegistrationSettings
) -> dict[str, sitk.Euler3DTransform]:
    """The ``search_starts`` best starting transforms found by the translation search around
    each start, as it is and turned by ``search_angle_deg`` about each axis of the fixed image
    (both ways); distinct by more than twice the search spacing. A start inside the window
    of one already searched is not searched again."""
    found = []  # (score, name, transform)
    searched: list[np.ndarray] = []
    direction = direction_matrix(level.fixed)
    for name, start in starts.items():
        t = np.array(start.GetTranslation())
        if any(np.all(np.abs(t - u) <= 0.5 * settings.search_reach_mm) for u in searched):
            continue
        searched.append(t)
        turned = [start]
        if settings.search_angle_deg > 0:
            turned += [
                _rotated(start, direction[:, axis], sign * settings.search_angle_deg)
                for axis in range(3)
                for sign in (1, -1)
            ]
        found += [(score, name, t) for score, t in translation_search(level, turned, settings)]
    found.sort(key=lambda item: -item[0])
    return _best_distinct(found, settings)


def _best_distinct(found: list, settings: RegistrationSettings) -> dict[str, sitk.Euler3DTransform]:
    """Up to ``search_starts`` of the (score, name, transform) peaks ``found`` (best first),
    scoring at least ``search_keep`` x the best, each more than twice the search spacing or
    1 degree from those kept before it."""
    spacing = settings.search_spacing_mm
    out: dict[str, sitk.Euler3DTransform] = {}
    for score, name, t in found:
        if len(out) >= settings.search_starts or score < settings.search_keep * found[0][0]:
            break
        if all(
            np.linalg.norm(np.subtract(t.GetTranslation(), k.GetTranslation())) > 2.0 * spacing
            or rotation_angle_deg(
                np.array(t.GetMatrix()).reshape(3, 3).T @ np.array(k.GetMatrix()).reshape(3, 3)
            )
            > 1.0
            for k in out.values()
        ):
            out[f"{name} search {len(out) + 1} (score {score:.3f})"] = t
    return out


def _rotated(start: sitk.Euler3DTransform, axis: np.ndarray, angle_deg: float):
    """``start`` after a rotation of the fixed space about its centre: x -> start(Q (x - c) + c)."""
    q = sitk.VersorTransform(tuple(map(float, axis)), math.radians(angle_deg))
    matrix = np.array(start.GetMatrix()).reshape(3, 3) @ np.array(q.GetMatrix()).reshape(3, 3)
    out = sitk.Euler3DTransform(start)
    out.SetMatrix(tuple(map(float, matrix.ravel())))
    return out
