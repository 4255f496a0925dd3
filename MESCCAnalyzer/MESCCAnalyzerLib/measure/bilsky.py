"""The Bilsky epidural spinal cord compression (ESCC) grade from measured facts.

Bilsky MH et al., "Reliability analysis of the epidural spinal cord compression scale",
J Neurosurg Spine 2010;13:324-328, grades the worst axial T2 level:

* 0  - bone-only disease (no epidural tumour);
* 1a - epidural impingement without deformation of the thecal sac;
* 1b - deformation of the thecal sac without spinal cord abutment;
* 1c - deformation of the thecal sac with spinal cord abutment, without cord compression;
* 2  - spinal cord compression, cerebrospinal fluid (CSF) visible around the cord;
* 3  - spinal cord compression, no CSF visible around the cord.

The scale is visual. Here each step rests on a measurement with a stated threshold (module
constants below), and :func:`grade` returns the grade with the facts it used, so that a
radiologist can see why and disagree knowingly:

1. **Epidural component** (0 vs 1): the mass reaches the epidural space when the straight
   path from the mass to the nearest point of the thecal sac crosses no bone (checked for the
   mass voxels nearest the sac; majority vote) and the gap is at most
   ``EPIDURAL_MAX_GAP_MM`` (the epidural space is a few millimetres deep). A mass walled off
   by the vertebral cortex is bone-only disease.
2. **Sac deformation** (1a vs 1b): the mass touches the sac (its voxels are face-neighbours of
   sac voxels, or the smoothed surfaces are closer than one voxel) *and* the sac is narrowed
   at the mass by at least ``SAC_DEFORMATION_MM`` in AP or transverse diameter compared with
   the normal levels (about 1.5 voxels at 0.7 mm; less is within the normal variation of the
   sac along a few centimetres).
3. **Cord abutment** (1b vs 1c): the mass touches the cord (same contact test). A CSF layer
   thinner than one voxel cannot be seen on the image, so a gap below one voxel counts as
   contact - the reason says when the grade rests on this sub-voxel fact.
4. **Cord compression** (1c vs 2/3): MSCC at least ``COMPRESSION_MSCC_PERCENT`` or the cord's
   cross-sectional area at most ``COMPRESSION_CSA_RATIO`` of normal.
5. **CSF visible** (2 vs 3): CSF occupies at least ``CSF_VISIBLE_FRACTION`` of the thecal sac
   at the worst section, or at least ``CSF_VISIBLE_MM2``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import SimpleITK as sitk

from .centerline import voxel_points_lps

EPIDURAL_MAX_GAP_MM = 5.0
SAC_DEFORMATION_MM = 1.0
COMPRESSION_MSCC_PERCENT = 10.0
COMPRESSION_CSA_RATIO = 0.85
CSF_VISIBLE_FRACTION = 0.10
CSF_VISIBLE_MM2 = 10.0
NEAREST_PATHS = 25
MSCC_NOISE_PERCENT = (
    6.0  # voxel quantisation of MSCC on a 0.7 mm labelmap (docs/methods.md, Bilsky rules)
)

GRADES = ("0", "1a", "1b", "1c", "2", "3")


@dataclass
class BilskyFacts:
    """The measurements the grade rests on (lengths in mm, areas in mm2)."""

    voxel_mm: float  # in-plane resolution: the smallest voxel spacing
    mass_sac_gap_mm: float  # shortest gap between mass and thecal sac voxels (surface estimate)
    bone_free_path_fraction: (
        float  # of the mass voxels nearest the sac, share with no bone on the way
    )
    mass_touches_sac: bool
    sac_narrowing_mm: float  # max of AP and transverse loss of the sac at the mass
    mass_touches_cord: bool
    mass_cord_gap_mm: float
    cord_contact_subvoxel: (
        bool  # contact decided by a gap smaller than one voxel, not by adjacent voxels
    )
    mscc_percent: float
    cord_csa_ratio: float
    csf_area_worst_mm2: float
    csf_fraction_worst: float
    sac_contact_subvoxel: bool = False  # sac contact decided by a gap smaller than one voxel

    def as_dict(self) -> dict:
        return {
            k: (float(v) if isinstance(v, (float, np.floating)) else v)
            for k, v in asdict(self).items()
        }


def grade(facts: BilskyFacts) -> tuple[str, str]:
    """(grade, reason) from ``facts`` by the rules of the module docstring."""
    f = facts
    epidural = f.bone_free_path_fraction >= 0.5 and f.mass_sac_gap_mm <= EPIDURAL_MAX_GAP_MM
    if not epidural:
        if f.bone_free_path_fraction < 0.5:
            why = f"bone lies between the mass and the thecal sac on {100 * (1 - f.bone_free_path_fraction):.0f}% of the shortest paths (gap {f.mass_sac_gap_mm:.1f} mm)"
        else:
            why = f"the mass stays {f.mass_sac_gap_mm:.1f} mm from the thecal sac (> {EPIDURAL_MAX_GAP_MM:g} mm: not in the epidural space)"
        return "0", f"Grade 0 (bone-only disease): {why}."
    epi = f"epidural mass {f.mass_sac_gap_mm:.1f} mm from the thecal sac with no bone between"
    deformed = f.mass_touches_sac and f.sac_narrowing_mm >= SAC_DEFORMATION_MM
    if not deformed:
        if not f.mass_touches_sac:
            why = f"{epi}; it does not touch the sac"
        else:
            why = f"{epi}; it touches the sac but narrows it by only {f.sac_narrowing_mm:.1f} mm (< {SAC_DEFORMATION_MM:g} mm{_margin_note(f.sac_narrowing_mm, SAC_DEFORMATION_MM, 0.5 * f.voxel_mm, 'half a voxel')})"
        return "1a", f"Grade 1a (epidural impingement, sac not deformed): {why}."
    sac = f"the mass deforms the thecal sac (narrowed by {f.sac_narrowing_mm:.1f} mm >= {SAC_DEFORMATION_MM:g} mm{_margin_note(f.sac_narrowing_mm, SAC_DEFORMATION_MM, 0.5 * f.voxel_mm, 'half a voxel')})"
    if f.sac_contact_subvoxel:
        sac += f"; its contact with the sac is a sub-voxel fact (gap {f.mass_sac_gap_mm:.2f} mm < one voxel)"
    if not f.mass_touches_cord:
        return (
            "1b",
            f"Grade 1b (sac deformed, cord not abutted): {sac}; it stays {f.mass_cord_gap_mm:.1f} mm from the cord (>= one voxel, {f.voxel_mm:.2g} mm).",
        )
    contact = (
        f"it abuts the cord (gap {f.mass_cord_gap_mm:.2f} mm, below one voxel of {f.voxel_mm:.2g} mm: a sub-voxel fact, CSF thinner than a voxel cannot be seen)"
        if f.cord_contact_subvoxel
        else "it abuts the cord (voxels in contact)"
    )
    compressed = (
        f.mscc_percent >= COMPRESSION_MSCC_PERCENT or f.cord_csa_ratio <= COMPRESSION_CSA_RATIO
    )
    cord = f"MSCC {f.mscc_percent:.0f}%, cord area {100 * f.cord_csa_ratio:.0f}% of normal"
    if (
        abs(f.mscc_percent - COMPRESSION_MSCC_PERCENT) < MSCC_NOISE_PERCENT
        and abs(f.cord_csa_ratio - COMPRESSION_CSA_RATIO) < 0.05
    ):
        cord += f" (both within their voxel noise of the thresholds, MSCC +-{MSCC_NOISE_PERCENT:g} points: a sub-voxel call)"
    if not compressed:
        return "1c", (
            f"Grade 1c (cord abutted, not compressed): {sac}; {contact}; {cord} "
            f"(compression needs MSCC >= {COMPRESSION_MSCC_PERCENT:g}% or area <= {100 * COMPRESSION_CSA_RATIO:g}%)."
        )
    csf_visible = (
        f.csf_fraction_worst >= CSF_VISIBLE_FRACTION or f.csf_area_worst_mm2 >= CSF_VISIBLE_MM2
    )
    csf = f"CSF {f.csf_area_worst_mm2:.1f} mm2 ({100 * f.csf_fraction_worst:.0f}% of the sac) at the worst section"
    if csf_visible:
        return (
            "2",
            f"Grade 2 (cord compressed, CSF visible): {contact}; {cord}; {csf} (>= {100 * CSF_VISIBLE_FRACTION:g}% or {CSF_VISIBLE_MM2:g} mm2).",
        )
    return (
        "3",
        f"Grade 3 (cord compressed, no CSF visible): {contact}; {cord}; {csf} (< {100 * CSF_VISIBLE_FRACTION:g}% and < {CSF_VISIBLE_MM2:g} mm2).",
    )


def _margin_note(value: float, threshold: float, margin: float, what: str) -> str:
    """A remark when ``value`` is within ``margin`` of ``threshold`` (the call is sub-voxel)."""
    if abs(value - threshold) < margin:
        return f"; within {what} of the threshold: a sub-voxel call"
    return ""


def _boundary(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with at least one face-neighbour outside it."""
    inner = mask.copy()
    for axis in range(3):
        for shift in (1, -1):
            rolled = np.roll(mask, shift, axis=axis)
            edge = [slice(None)] * 3
            edge[axis] = 0 if shift == 1 else -1
            rolled[tuple(edge)] = False
            inner &= rolled
    return mask & ~inner


def touching(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a voxel of ``a`` is a face-neighbour of (or is) a voxel of ``b``."""
    if (a & b).any():
        return True
    for axis in range(3):
        n = a.shape[axis]
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(0, n - 1)
        hi[axis] = slice(1, n)
        if (a[tuple(lo)] & b[tuple(hi)]).any() or (a[tuple(hi)] & b[tuple(lo)]).any():
            return True
    return False


def bone_free_paths(
    labels: sitk.Image, mass_label: int = 3, sac_labels=(1, 2), bone_label: int = 4
) -> tuple[float, float]:
    """(fraction of bone-free shortest paths, voxel-centre gap in mm) from mass to thecal sac.

    For the ``NEAREST_PATHS`` mass boundary voxels nearest the sac, the straight segment to the
    nearest sac boundary voxel is sampled every 0.1 mm (nearest-neighbour labels); a path
    crossing at least half a voxel of bone counts as walled off.
    """
    arr = sitk.GetArrayViewFromImage(labels)
    mass = arr == mass_label
    sac = np.isin(arr, sac_labels)
    if not mass.any() or not sac.any():
        return 0.0, float("inf")
    # Distance to the sac, needed only at the mass: map a box around the mass (plus a margin
    # beyond which the epidural test fails anyway).
    spacing = np.asarray(labels.GetSpacing(), dtype=np.float64)
    pad = np.ceil((EPIDURAL_MAX_GAP_MM + 5.0) / spacing[::-1]).astype(int)  # k, j, i
    kk, jj, ii = np.nonzero(mass)
    lo = np.maximum(np.array([kk.min(), jj.min(), ii.min()]) - pad, 0)
    hi = np.minimum(np.array([kk.max(), jj.max(), ii.max()]) + pad + 1, mass.shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    dist = np.full(mass.shape, np.inf, dtype=np.float32)
    if sac[box].any():
        sac_img = sitk.GetImageFromArray(sac[box].astype(np.uint8))
        sac_img.SetSpacing(labels.GetSpacing())
        dmap = sitk.SignedMaurerDistanceMap(
            sac_img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
        )
        dist[box] = sitk.GetArrayFromImage(dmap)
    mass_b = _boundary(mass)
    d_mass = np.where(mass_b, dist, np.inf)
    flat = np.argsort(d_mass, axis=None)[:NEAREST_PATHS]
    flat = flat[np.isfinite(d_mass.ravel()[flat])]
    pick = np.zeros(mass.shape, dtype=bool)
    pick.ravel()[flat] = True
    m_pts = voxel_points_lps(labels, pick)
    s_pts = voxel_points_lps(labels, _boundary(sac))
    d2 = ((m_pts[:, None, :] - s_pts[None, :, :]) ** 2).sum(-1)
    best_j = np.argmin(d2, axis=1)
    best_d = np.sqrt(d2[np.arange(len(m_pts)), best_j])
    order = np.argsort(best_d)
    spacing = np.asarray(labels.GetSpacing(), dtype=np.float64)
    direction = np.asarray(labels.GetDirection(), dtype=np.float64).reshape(3, 3)
    inv = np.linalg.inv(direction * spacing[None, :])
    origin = np.asarray(labels.GetOrigin(), dtype=np.float64)
    size = np.asarray(labels.GetSize())
    free = 0
    for i in order:
        a, b = m_pts[i], s_pts[best_j[i]]
        length = float(np.linalg.norm(b - a))
        steps = max(2, int(np.ceil(length / 0.1)) + 1)
        ts = np.linspace(0.0, 1.0, steps)
        pts = a[None, :] + ts[:, None] * (b - a)[None, :]
        ijk = np.rint((pts - origin) @ inv.T).astype(np.int64)
        ijk = np.clip(ijk, 0, size - 1)
        labs = arr[ijk[:, 2], ijk[:, 1], ijk[:, 0]]
        bone_mm = np.count_nonzero(labs == bone_label) * length / (steps - 1)
        if bone_mm < 0.5 * spacing.min():
            free += 1
    return free / len(order), float(best_d[order[0]])
