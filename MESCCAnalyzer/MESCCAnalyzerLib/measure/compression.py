"""Cross-sections of the cord and thecal sac perpendicular to the centreline, and the
compression measures read from them (MSCC, MCC, canal compromise, CSA ratio, ...).

Each section is a plane through a centreline sample, perpendicular to the local tangent. Its
in-plane axes are the patient's left-right and antero-posterior directions projected onto the
plane (``e_lr`` towards the patient's left, ``e_ap`` towards posterior), so a cord tilted in
the scanner is measured in its own anatomy. The cord, CSF and mass masks are resampled onto
the plane as float masks with trilinear interpolation (a partial-volume estimate) on a fine
grid (half the finest voxel spacing, at most 0.25 mm):

* area = sum of the interpolated mask x pixel area;
* centroid = mask-weighted mean position;
* AP (transverse) diameter = length of the mask along the line through the centroid in the
  ``e_ap`` (``e_lr``) direction (the midsagittal diameter read on MRI), averaged over a strip
  one voxel wide to smooth the voxel staircase;
* thecal sac = cord + CSF.

Reference ("normal") levels follow the Spinal Cord Toolbox (``sct_compute_compression``):
the sections 10 to 30 mm beyond each end of the mass along the cord, averaged per side, and
the two sides averaged; when one side falls outside the image (or the cord label) only the
other is used and the result says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from ..errors import ComputationError
from ..progress import CancelCallback, ProgressCallback, check, no_progress
from .centerline import Centerline, voxel_points_lps

REFERENCE_GAP_MM = 10.0  # start of the reference stretch beyond the mass (SCT)
REFERENCE_LENGTH_MM = 20.0  # length of the reference stretch (SCT)
MIN_REFERENCE_SECTIONS = 3
ANGLE_STEP_DEG = 5.0
SECTORS = {
    "anterior": (315.0, 45.0),
    "left": (45.0, 135.0),
    "posterior": (135.0, 225.0),
    "right": (225.0, 315.0),
}


@dataclass
class Sections:
    """Per-section measurements along the centreline (NaN where undefined)."""

    arc_mm: np.ndarray
    centre_lps: np.ndarray  # N x 3
    tangent_lps: np.ndarray  # N x 3
    e_lr: np.ndarray  # N x 3, towards the patient's left
    e_ap: np.ndarray  # N x 3, towards posterior
    valid: np.ndarray  # N bool: the plane lies inside the image and cuts the whole cord
    cord_csa_mm2: np.ndarray
    cord_ap_mm: np.ndarray
    cord_transverse_mm: np.ndarray
    cord_centroid_lps: np.ndarray  # N x 3
    sac_csa_mm2: np.ndarray
    sac_ap_mm: np.ndarray
    sac_transverse_mm: np.ndarray
    sac_centroid_lps: np.ndarray
    csf_area_mm2: np.ndarray
    mass_area_mm2: np.ndarray
    mass_touch_deg: np.ndarray  # N x 72 bool: sac circumference touched by the mass (0 = anterior)
    pixel_mm: float = 0.0
    half_width_mm: float = 0.0

    @property
    def compression_ratio(self) -> np.ndarray:
        return self.cord_ap_mm / self.cord_transverse_mm

    def columns(self) -> dict[str, np.ndarray]:
        """The sections table (column name -> values), units in the names."""
        return {
            "arc_mm": self.arc_mm,
            "centre_l_mm": self.centre_lps[:, 0],
            "centre_p_mm": self.centre_lps[:, 1],
            "centre_s_mm": self.centre_lps[:, 2],
            "valid": self.valid.astype(int),
            "cord_csa_mm2": self.cord_csa_mm2,
            "cord_ap_mm": self.cord_ap_mm,
            "cord_transverse_mm": self.cord_transverse_mm,
            "compression_ratio": self.compression_ratio,
            "sac_csa_mm2": self.sac_csa_mm2,
            "sac_ap_mm": self.sac_ap_mm,
            "sac_transverse_mm": self.sac_transverse_mm,
            "csf_area_mm2": self.csf_area_mm2,
            "mass_area_mm2": self.mass_area_mm2,
        }


def section_axes(tangents: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """In-plane unit axes (e_lr towards left, e_ap towards posterior) for each tangent."""
    t = np.asarray(tangents, dtype=np.float64)
    posterior = np.array([0.0, 1.0, 0.0])
    ap = posterior[None, :] - (t @ posterior)[:, None] * t
    norm = np.linalg.norm(ap, axis=1)
    bad = norm < 1e-6  # cord running antero-posteriorly (never in practice): use left instead
    if bad.any():
        left = np.array([1.0, 0.0, 0.0])
        alt = np.cross(t[bad], left[None, :])
        ap[bad] = alt
        norm[bad] = np.linalg.norm(alt, axis=1)
    ap = ap / norm[:, None]
    lr = np.cross(ap, t)
    return lr, ap


def _bilinear(img: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Bilinear samples of a 2D array indexed [j, i] at fractional (i, j); 0 outside."""
    n_j, n_i = img.shape
    i0 = np.floor(i).astype(np.int64)
    j0 = np.floor(j).astype(np.int64)
    fi = i - i0
    fj = j - j0
    out = np.zeros(np.broadcast(i, j).shape, dtype=np.float64)
    for di, wi in ((0, 1 - fi), (1, fi)):
        for dj, wj in ((0, 1 - fj), (1, fj)):
            ii = i0 + di
            jj = j0 + dj
            ok = (ii >= 0) & (ii < n_i) & (jj >= 0) & (jj < n_j)
            vals = np.where(ok, img[np.clip(jj, 0, n_j - 1), np.clip(ii, 0, n_i - 1)], 0.0)
            out += wi * wj * vals
    return out


def _chords(
    f: np.ndarray, ci: float, cj: float, pixel: float, strip_mm: float
) -> tuple[float, float]:
    """(AP, transverse) length of mask ``f`` through (ci, cj), averaged over a strip.

    The section grid is aligned with the AP and LR directions, so the length along the line
    at fractional column ``ci`` is the linear interpolation of the column sums.
    """
    offsets = np.linspace(-0.5, 0.5, 5) * strip_mm / pixel
    cols = f.sum(axis=0)  # indexed by i (along e_lr): length along e_ap
    rows = f.sum(axis=1)  # indexed by j (along e_ap): length along e_lr
    grid = np.arange(f.shape[0], dtype=np.float64)
    ap = np.interp(ci + offsets, grid, cols, left=0.0, right=0.0).mean() * pixel
    tr = np.interp(cj + offsets, grid, rows, left=0.0, right=0.0).mean() * pixel
    return float(ap), float(tr)


def _touch_angles(
    sac: np.ndarray, mass: np.ndarray, ci: float, cj: float, pixel: float, touch_mm: float
) -> np.ndarray:
    """Which 5-degree bins of the sac outline (seen from its centroid) the mass reaches."""
    n = sac.shape[0]
    theta = np.deg2rad(np.arange(0.0, 360.0, ANGLE_STEP_DEG))
    ui, uj = np.sin(theta), -np.cos(theta)  # 0 = anterior (-e_ap), 90 = left (+e_lr)
    r = np.arange(0.0, n * 0.75, 0.5)  # in pixels
    ii = ci + ui[:, None] * r[None, :]
    jj = cj + uj[:, None] * r[None, :]
    s = _bilinear(sac, ii, jj)
    outside = s < 0.5
    outside[:, 0] = False
    first = np.where(outside.any(axis=1), outside.argmax(axis=1), len(r) - 1)
    rb = r[first]
    band = np.linspace(-0.5, 0.5, 5) * touch_mm / pixel  # half a voxel either side of the outline
    bi = ci + ui[:, None] * (rb[:, None] + band[None, :])
    bj = cj + uj[:, None] * (rb[:, None] + band[None, :])
    m = _bilinear(mass, bi, bj)
    return m.max(axis=1) >= 0.5


class _LabelSampler:
    """Trilinear partial-volume sampling of label indicator masks on planes (LPS).

    Each label's indicator is kept as a float image and resampled with SimpleITK's linear
    interpolator (scalar images: much faster than one vector image); outside reads 0.
    """

    def __init__(self, labels: sitk.Image, values, shares: dict[int, sitk.Image] | None = None):
        arr = sitk.GetArrayViewFromImage(labels)
        shares = shares or {}
        self.masks = {
            v: shares[v] if v in shares else sitk.Cast(sitk.Equal(labels, int(v)), sitk.sitkFloat32)
            for v in values
            if (arr == v).any()
        }
        self.filter = sitk.ResampleImageFilter()
        self.filter.SetInterpolator(sitk.sitkLinear)
        self.filter.SetDefaultPixelValue(0.0)
        self.filter.SetOutputPixelType(sitk.sitkFloat32)

    def plane(
        self, corner: np.ndarray, e_i: np.ndarray, e_j: np.ndarray, n: int, pixel: float, values
    ) -> list[np.ndarray]:
        """Fractions (n x n arrays indexed [j, i]) of each label in ``values`` on the plane
        ``corner + pixel * (i * e_i + j * e_j)``."""
        f = self.filter
        f.SetSize([n, n, 1])
        f.SetOutputSpacing([pixel, pixel, pixel])
        f.SetOutputOrigin(tuple(float(v) for v in corner))
        normal = np.cross(e_i, e_j)
        f.SetOutputDirection(tuple(float(v) for v in np.stack([e_i, e_j, normal], axis=1).ravel()))
        out = []
        for v in values:
            mask = self.masks.get(v)
            if mask is None:
                out.append(np.zeros((n, n)))
            else:
                out.append(sitk.GetArrayFromImage(f.Execute(mask))[0].astype(np.float64))
        return out

    def window(self, win: _Window, c, el, ea, values) -> list[np.ndarray]:
        """:meth:`plane` on the window ``win`` centred on ``c`` (axes ``el``, ``ea``)."""
        return self.plane(win.corner(c, el, ea), el, ea, win.n, win.pixel, values)


def _perpendicular_extent(points: np.ndarray, line: Centerline) -> float:
    """Largest distance (mm) of ``points`` from the centreline, perpendicular to it."""
    if len(points) == 0:
        return 0.0
    pts = points[:: max(1, len(points) // 50000)]
    idx = line.index_of(pts)
    rel = pts - line.points_lps[idx]
    along = np.einsum("ij,ij->i", rel, line.tangents_lps[idx])
    perp = np.sqrt(np.clip((rel**2).sum(1) - along**2, 0.0, None))
    return float(perp.max())


@dataclass
class _Window:
    """A square sampling grid on a section plane: ``n`` x ``n`` pixels of ``pixel`` mm."""

    n: int
    pixel: float

    @property
    def half(self) -> float:
        return (self.n - 1) / 2 * self.pixel

    def corner(self, c, el, ea) -> np.ndarray:
        return c - self.half * el - self.half * ea

    def to_lps(self, c, el, ea, i, j) -> np.ndarray:
        """LPS point of the fractional pixel (i along e_lr, j along e_ap)."""
        return self.corner(c, el, ea) + self.pixel * (i * el + j * ea)


class _ImageBox:
    """Whether LPS points lie inside an image's scanned volume (voxel edges included)."""

    def __init__(self, image: sitk.Image):
        m = (
            np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
            * np.asarray(image.GetSpacing())[None, :]
        )
        self.inv = np.linalg.inv(m)
        self.origin = np.asarray(image.GetOrigin(), dtype=np.float64)
        self.size = np.asarray(image.GetSize(), dtype=np.float64)

    def contains(self, points: np.ndarray) -> bool:
        idx = (np.asarray(points) - self.origin) @ self.inv.T
        return bool(np.all(idx >= -0.5) and np.all(idx <= self.size - 0.5))


def _centroid(f: np.ndarray) -> tuple[float, float]:
    """(i, j) centroid of a 2D mask indexed [j, i]."""
    total = f.sum()
    return float(f.sum(axis=0) @ np.arange(f.shape[1]) / total), float(
        f.sum(axis=1) @ np.arange(f.shape[0]) / total
    )


def _measure_section(
    fc, fs, fm, win: _Window, c, el, ea, strip_mm: float, box: _ImageBox, margin_mm: float
) -> dict:
    """Areas, centroids, diameters, mass contact angles and validity of one section."""
    sac = fc + fs
    area = win.pixel * win.pixel
    r = {"cord_csa": fc.sum() * area, "sac_csa": sac.sum() * area, "csf": fs.sum() * area}
    if r["cord_csa"] > 0:
        ci, cj = _centroid(fc)
        r["cord_c"] = win.to_lps(c, el, ea, ci, cj)
        r["cord_ap"], r["cord_tr"] = _chords(fc, ci, cj, win.pixel, strip_mm)
    inside = False
    if r["sac_csa"] > 0:
        si, sj = _centroid(sac)
        r["sac_c"] = win.to_lps(c, el, ea, si, sj)
        r["sac_ap"], r["sac_tr"] = _chords(sac, si, sj, win.pixel, strip_mm)
        if fm is not None and fm.max() >= 0.5:
            r["touch"] = _touch_angles(sac, fm, si, sj, win.pixel, strip_mm)
        # The sac's outline plus a margin must lie inside the scanned volume.
        rows = np.nonzero(sac.max(axis=1) > 1e-3)[0]
        cols = np.nonzero(sac.max(axis=0) > 1e-3)[0]
        pad = margin_mm / win.pixel
        if rows.size and cols.size:  # else only traces of the sac: the section is not valid
            corners = [
                win.to_lps(c, el, ea, i, j)
                for i in (cols[0] - pad, cols[-1] + pad)
                for j in (rows[0] - pad, rows[-1] + pad)
            ]
            inside = box.contains(np.array(corners))
    # The cord must not touch the window's edge (it would be cut).
    edge = (
        max(fc[0].max(), fc[-1].max(), fc[:, 0].max(), fc[:, -1].max())
        if r["cord_csa"] > 0
        else 1.0
    )
    r["valid"] = inside and r["cord_csa"] > 0 and edge < 1e-3
    return r


@dataclass
class _SectionGrids:
    """Where each section is sampled: the ``fine`` window holds the whole cord and thecal sac
    (with a margin), the coarser ``coarse`` window the whole mass; ``near_mass`` (N bool)
    flags the sections whose coarse window may reach the mass."""

    fine: _Window
    coarse: _Window
    near_mass: np.ndarray


def _section_grids(
    labels: sitk.Image,
    line: Centerline,
    cord_label: int,
    csf_label: int,
    mass_label: int,
    pixel_mm: float,
) -> _SectionGrids:
    """Size the sampling windows from the labels' extent around the centreline."""
    arr = sitk.GetArrayViewFromImage(labels)
    spacing = np.asarray(labels.GetSpacing(), dtype=np.float64)
    sac_pts = voxel_points_lps(labels, (arr == cord_label) | (arr == csf_label))
    half_width = _perpendicular_extent(sac_pts, line) + 2.0 * float(spacing.max()) + 2.0
    fine = _Window(int(np.ceil(2 * half_width / pixel_mm)) + 1, pixel_mm)
    # The mass's area is read on a coarser window wide enough for the whole mass.
    mass_pts = voxel_points_lps(labels, arr == mass_label)
    mass_half = min(
        60.0, max(half_width, _perpendicular_extent(mass_pts, line) + 2.0 * float(spacing.max()))
    )
    coarse = _Window(
        int(np.ceil(2 * mass_half / max(pixel_mm, spacing.min()))) + 1,
        float(max(pixel_mm, spacing.min())),
    )
    near_mass = np.zeros(len(line.arc_mm), dtype=bool)
    if len(mass_pts):
        par = line.param_of(mass_pts)
        near_mass = (line.axis_param_mm >= par.min() - mass_half) & (
            line.axis_param_mm <= par.max() + mass_half
        )
    return _SectionGrids(fine, coarse, near_mass)


class _SectionTable:
    """The per-section results of :func:`measure_sections` as they are measured (NaN, or no
    contact, until a section is stored)."""

    SCALARS = ("cord_csa", "cord_ap", "cord_tr", "sac_csa", "sac_ap", "sac_tr", "csf")
    CENTROIDS = ("cord_c", "sac_c")

    def __init__(self, count: int):
        self.cols = {k: np.full(count, np.nan) for k in self.SCALARS}
        self.cols["mass"] = np.zeros(count)
        self.cents = {k: np.full((count, 3), np.nan) for k in self.CENTROIDS}
        self.touch = np.zeros((count, int(360 / ANGLE_STEP_DEG)), dtype=bool)
        self.valid = np.zeros(count, dtype=bool)

    def store(self, s: int, r: dict) -> None:
        """Record section ``s``'s measurements (a :func:`_measure_section` result)."""
        for k, v in r.items():
            if k in self.cols:
                self.cols[k][s] = v
            elif k in self.cents:
                self.cents[k][s] = v
        self.touch[s] = r.get("touch", False)
        self.valid[s] = r["valid"]

    def sections(
        self,
        line: Centerline,
        lr: np.ndarray,
        ap: np.ndarray,
        pixel_mm: float,
        half_width_mm: float,
    ) -> Sections:
        """The table as :class:`Sections` along ``line`` (in-plane axes ``lr``, ``ap``)."""
        cols, cents = self.cols, self.cents
        return Sections(
            arc_mm=line.arc_mm.copy(),
            centre_lps=line.points_lps.copy(),
            tangent_lps=line.tangents_lps.copy(),
            e_lr=lr,
            e_ap=ap,
            valid=self.valid,
            cord_csa_mm2=cols["cord_csa"],
            cord_ap_mm=cols["cord_ap"],
            cord_transverse_mm=cols["cord_tr"],
            cord_centroid_lps=cents["cord_c"],
            sac_csa_mm2=cols["sac_csa"],
            sac_ap_mm=cols["sac_ap"],
            sac_transverse_mm=cols["sac_tr"],
            sac_centroid_lps=cents["sac_c"],
            csf_area_mm2=cols["csf"],
            mass_area_mm2=cols["mass"],
            mass_touch_deg=self.touch,
            pixel_mm=pixel_mm,
            half_width_mm=half_width_mm,
        )


def measure_sections(
    labels: sitk.Image,
    line: Centerline,
    *,
    cord_label: int = 1,
    csf_label: int = 2,
    mass_label: int = 3,
    full_extent: sitk.Image | None = None,
    shares: dict[int, sitk.Image] | None = None,
    pixel_mm: float | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> Sections:
    """Measure every centreline section of ``labels`` (see the module docstring).

    ``full_extent``: the uncropped image when ``labels`` is a crop, so that sections reaching
    beyond the scanned volume are flagged invalid.
    ``shares``: float images (label value -> its share of each voxel, on the labels' grid)
    sampled instead of that label's 0/1 mask: the cord's and the CSF's sub-voxel outline from
    the MRI (:mod:`.partial_volume`).
    """
    progress = progress or no_progress
    spacing = np.asarray(labels.GetSpacing(), dtype=np.float64)
    if pixel_mm is None:
        pixel_mm = float(min(0.25, spacing.min() / 2.0))
    strip_mm = float(spacing.min())
    margin_mm = 0.5 * float(spacing.min())
    grids = _section_grids(labels, line, cord_label, csf_label, mass_label, pixel_mm)
    fine, coarse = grids.fine, grids.coarse
    sampler = _LabelSampler(labels, (cord_label, csf_label, mass_label), shares)
    box = _ImageBox(full_extent if full_extent is not None else labels)

    lr, ap = section_axes(line.tangents_lps)
    count = len(line.arc_mm)
    table = _SectionTable(count)
    for s in range(count):
        if s % 8 == 0:
            check(cancel)
            progress(s / count, f"section {s + 1}/{count}")
        c, el, ea = line.points_lps[s], lr[s], ap[s]
        near_mass = grids.near_mass[s]
        wanted = (cord_label, csf_label, mass_label) if near_mass else (cord_label, csf_label)
        fc, fs, *rest = sampler.window(fine, c, el, ea, wanted)
        fm = rest[0] if rest else None
        table.store(s, _measure_section(fc, fs, fm, fine, c, el, ea, strip_mm, box, margin_mm))
        if near_mass:
            (m,) = sampler.window(coarse, c, el, ea, (mass_label,))
            table.cols["mass"][s] = float(m.sum()) * coarse.pixel**2
    progress(1.0, "sections done")
    _trim_ends(table.valid, table.cols["cord_csa"])
    return table.sections(line, lr, ap, pixel_mm, fine.half)


def _trim_ends(valid: np.ndarray, csa: np.ndarray) -> None:
    """Invalidate the sections at each end of the cord label that cut only its tip.

    A plane near the end of the labelled cord meets only part of it; such end sections (less
    than half the median valid area) are dropped from each end inwards, stopping at the first
    full one, so a compressed section inside the cord is never dropped.
    """
    if not valid.any():
        return
    median = float(np.nanmedian(csa[valid]))
    for order in (range(len(valid)), range(len(valid) - 1, -1, -1)):
        for s in order:
            if not valid[s]:
                continue
            if csa[s] < 0.5 * median:
                valid[s] = False
            else:
                break


@dataclass
class ReferenceLevels:
    """The normal sections used as reference, per side."""

    above: np.ndarray  # indices of sections (superior side)
    below: np.ndarray  # indices (inferior side)
    note: str = ""

    @property
    def all(self) -> np.ndarray:
        return np.concatenate([self.above, self.below]).astype(np.int64)

    def mean(self, values: np.ndarray) -> float:
        """Mean of the per-side means (Fehlings: (Da + Db) / 2); one side if only one."""
        sides = [float(np.nanmean(values[idx])) for idx in (self.above, self.below) if len(idx)]
        return float(np.mean(sides))

    def sides(self) -> list[str]:
        return [name for name, idx in (("above", self.above), ("below", self.below)) if len(idx)]


def choose_reference(
    sections: Sections,
    mass_arc_range: tuple[float, float],
    *,
    other_lesions: Sequence[tuple[float, float]] = (),
    gap_mm: float = REFERENCE_GAP_MM,
    length_mm: float = REFERENCE_LENGTH_MM,
) -> ReferenceLevels:
    """Reference sections: ``gap_mm`` to ``gap_mm + length_mm`` beyond each end of the mass.

    Sections within ``gap_mm`` of another lesion (``other_lesions``: their arc ranges) are
    never reference: a reference is normal cord outside every lesion. A side with fewer than
    3 usable sections in that stretch is not used (and the note says so); when neither side
    has any, the usable sections farthest from the mass outside it (at least 3 mm away) are
    used, and the note says how close they are.
    """
    arc = sections.arc_mm
    valid = sections.valid.copy()
    for other_lo, other_hi in other_lesions:
        valid &= (arc < other_lo - gap_mm) | (arc > other_hi + gap_mm)
    lo, hi = mass_arc_range
    above = np.nonzero(valid & (arc >= hi + gap_mm) & (arc <= hi + gap_mm + length_mm))[0]
    below = np.nonzero(valid & (arc <= lo - gap_mm) & (arc >= lo - gap_mm - length_mm))[0]
    notes = []
    if len(above) < MIN_REFERENCE_SECTIONS:
        above = above[:0]
        notes.append(
            f"no normal cord {gap_mm:g}-{gap_mm + length_mm:g} mm above the mass in the image"
        )
    if len(below) < MIN_REFERENCE_SECTIONS:
        below = below[:0]
        notes.append(
            f"no normal cord {gap_mm:g}-{gap_mm + length_mm:g} mm below the mass in the image"
        )
    if len(above) or len(below):
        if notes:
            notes.append(
                "reference from the "
                + (" and ".join(s for s, i in (("superior", above), ("inferior", below)) if len(i)))
                + " side only"
            )
        return ReferenceLevels(above, below, "; ".join(notes))
    # Fallback: whatever valid cord lies outside the mass, the farthest first.
    margin = 3.0
    up = np.nonzero(valid & (arc >= hi + margin))[0]
    down = np.nonzero(valid & (arc <= lo - margin))[0]
    if len(up) + len(down) < MIN_REFERENCE_SECTIONS:
        raise ComputationError(
            "no normal cord section outside the mass to compare with",
            hint="the image must show the cord at least a few millimetres above or below the mass",
        )
    up = up[-int(length_mm) :] if len(up) >= MIN_REFERENCE_SECTIONS else up[:0]
    down = down[: int(length_mm)] if len(down) >= MIN_REFERENCE_SECTIONS else down[:0]
    if not len(up) and not len(down):
        both = np.nonzero(valid & ((arc >= hi + margin) | (arc <= lo - margin)))[0]
        up = both[arc[both] > hi]
        down = both[arc[both] < lo]
    dist = [float(arc[up].min() - hi)] if len(up) else []
    dist += [float(lo - arc[down].max())] if len(down) else []
    notes.append(
        f"reference sections only {min(dist):.0f} mm from the mass (less than the {gap_mm:g} mm margin)"
    )
    return ReferenceLevels(up, down, "; ".join(notes))


def running_mean(values: np.ndarray, width: int = 3) -> np.ndarray:
    """Centred running mean over ``width`` sections, ignoring NaN."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    kernel = np.ones(width)
    num = np.convolve(np.where(ok, v, 0.0), kernel, mode="same")
    den = np.convolve(ok.astype(float), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        out = num / den
    out[~ok] = np.nan
    return out


def slab_mean(
    values: np.ndarray, arc: np.ndarray, valid: np.ndarray, width_mm: float | None = None
) -> np.ndarray:
    """Mean of ``values`` over the valid sections within ``width_mm / 2`` of each section.

    The bound is inclusive to 1 µm: arc lengths summed along a fitted curve come out as
    1.00000005 mm steps, and a 1e-9 tolerance dropped the slab's end sections there (a 4 mm
    slab of 1 mm sections then averaged 3 sections instead of 5 on a tilted cord).
    """
    width_mm = WORST_SLAB_MM if width_mm is None else width_mm
    v = np.where(valid, np.asarray(values, dtype=np.float64), np.nan)
    near = np.abs(arc[:, None] - arc[None, :]) <= width_mm / 2 + 1e-3
    ok = near & np.isfinite(v)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(ok, v[None, :], 0.0).sum(axis=1) / ok.sum(axis=1)
    out[~valid] = np.nan
    return out


WORST_SLAB_MM = 4.0
COMPRESSED_MSCC_PERCENT = 10.0  # below this the worst level is the sac's narrowest instead


@dataclass
class CompressionResult:
    """The compression measures (see :func:`compression_measures`)."""

    values: dict
    worst_index: int
    reference: ReferenceLevels
    in_mass: np.ndarray  # section indices within the mass's extent
    notes: list[str] = field(default_factory=list)


@dataclass
class _Slabs:
    """Per-section means over a ``WORST_SLAB_MM`` slab of valid sections (see
    :func:`slab_mean`): what the worst level is chosen on and read from."""

    cord_ap_mm: np.ndarray
    sac_ap_mm: np.ndarray
    cord_csa_mm2: np.ndarray
    sac_csa_mm2: np.ndarray
    mass_area_mm2: np.ndarray

    @classmethod
    def of(cls, sections: Sections) -> _Slabs:
        arc, valid = sections.arc_mm, sections.valid
        return cls(
            cord_ap_mm=slab_mean(sections.cord_ap_mm, arc, valid),
            sac_ap_mm=slab_mean(sections.sac_ap_mm, arc, valid),
            cord_csa_mm2=slab_mean(sections.cord_csa_mm2, arc, valid),
            sac_csa_mm2=slab_mean(sections.sac_csa_mm2, arc, valid),
            mass_area_mm2=slab_mean(sections.mass_area_mm2, arc, valid),
        )


def compression_measures(
    sections: Sections,
    mass_arc_range: tuple[float, float],
    *,
    resolution_mm: float = 1.0,
    other_lesions: Sequence[tuple[float, float]] = (),
) -> CompressionResult:
    """MSCC, MCC, canal compromise, CSA ratio, ... at the worst section (module docstring).

    Diameters and the sac area at the worst level are means over a ``WORST_SLAB_MM`` slab of
    sections centred on it (like a clinical 4 mm axial slice; it also averages the half-voxel
    quantisation of a labelmap's edges). The worst section is the valid section within the
    mass's craniocaudal extent with the smallest slab-mean cord AP diameter; where the cord is
    not compressed there (MSCC below 10 %) it is the section with the smallest slab-mean
    thecal-sac AP diameter, i.e. where the mass encroaches most on the canal; and where the
    sac is not narrowed either (by less than ``resolution_mm``, one voxel) it is the section
    where the mass's cross-section is largest. The reference sections lie outside this mass
    and every one of ``other_lesions`` (their arc ranges, see :func:`choose_reference`).
    """
    ref = choose_reference(sections, mass_arc_range, other_lesions=other_lesions)
    notes = [ref.note] if ref.note else []
    in_mass = _sections_in_mass(sections, mass_arc_range)
    if len(in_mass) == 0:
        in_mass = _section_nearest_mass(sections, mass_arc_range)
        notes.append("the mass lies beyond the measurable cord; its nearest section is used")
    slabs = _Slabs.of(sections)
    worst = _worst_section(sections, ref, slabs, in_mass, resolution_mm)
    values = {
        **_cord_measures(sections, ref, slabs, in_mass, worst),
        **_sac_measures(sections, ref, slabs, in_mass, worst),
        **_area_and_shape_measures(sections, ref, in_mass, worst),
        **_worst_and_reference_levels(sections, ref, worst),
    }
    return CompressionResult(values, worst, ref, in_mass, notes)


def _sections_in_mass(sections: Sections, mass_arc_range: tuple[float, float]) -> np.ndarray:
    """Indices of the valid sections within the mass's craniocaudal extent."""
    arc, valid = sections.arc_mm, sections.valid
    lo, hi = mass_arc_range
    return np.nonzero(valid & (arc >= lo) & (arc <= hi))[0]


def _section_nearest_mass(sections: Sections, mass_arc_range: tuple[float, float]) -> np.ndarray:
    """The valid section nearest to the mass's centre (as a 1-element index array), for a
    mass that lies beyond the measurable cord."""
    arc = sections.arc_mm
    centre = 0.5 * (mass_arc_range[0] + mass_arc_range[1])
    cand = np.nonzero(sections.valid)[0]
    return cand[[int(np.argmin(np.abs(arc[cand] - centre)))]]


def _worst_section(
    sections: Sections,
    ref: ReferenceLevels,
    slabs: _Slabs,
    in_mass: np.ndarray,
    resolution_mm: float,
) -> int:
    """The worst level among ``in_mass``: the narrowest cord, else (cord not compressed) the
    narrowest sac, else (nor the sac narrowed) the largest mass (see
    :func:`compression_measures`)."""
    worst = int(in_mass[np.nanargmin(slabs.cord_ap_mm[in_mass])])
    mscc_percent = (1.0 - slabs.cord_ap_mm[worst] / ref.mean(sections.cord_ap_mm)) * 100.0
    if mscc_percent < COMPRESSED_MSCC_PERCENT:
        # The cord is not compressed: the level where the mass encroaches most on the sac.
        worst = int(in_mass[np.nanargmin(slabs.sac_ap_mm[in_mass])])
        if ref.mean(sections.sac_ap_mm) - slabs.sac_ap_mm[worst] < resolution_mm:
            # Nor is the sac narrowed: the level where the mass is largest.
            worst = int(in_mass[np.nanargmax(slabs.mass_area_mm2[in_mass])])
    return worst


def _cord_measures(
    sections: Sections, ref: ReferenceLevels, slabs: _Slabs, in_mass: np.ndarray, worst: int
) -> dict:
    """Cord area (smallest in the mass's extent) and diameters at the worst level, MSCC."""
    cord_ap_ref = ref.mean(sections.cord_ap_mm)
    cord_csa_ref = ref.mean(sections.cord_csa_mm2)
    cord_ap_worst = float(slabs.cord_ap_mm[worst])
    i_min_csa = int(in_mass[np.nanargmin(slabs.cord_csa_mm2[in_mass])])
    cord_min_csa = float(min(sections.cord_csa_mm2[i_min_csa], sections.cord_csa_mm2[worst]))
    return {
        "cord_min_csa_mm2": cord_min_csa,
        "cord_reference_csa_mm2": cord_csa_ref,
        "cord_csa_ratio": cord_min_csa / cord_csa_ref,
        "cord_ap_worst_mm": cord_ap_worst,
        "cord_ap_reference_mm": cord_ap_ref,
        "cord_transverse_worst_mm": float(sections.cord_transverse_mm[worst]),
        "mscc_percent": float((1.0 - cord_ap_worst / cord_ap_ref) * 100.0),
    }


def _sac_measures(
    sections: Sections, ref: ReferenceLevels, slabs: _Slabs, in_mass: np.ndarray, worst: int
) -> dict:
    """Thecal-sac diameters and area at the worst level (MCC, canal compromise) and its
    narrowing within the mass's extent."""
    valid = sections.valid
    sac_ap_ref = ref.mean(sections.sac_ap_mm)
    sac_csa_ref = ref.mean(sections.sac_csa_mm2)
    sac_ap_worst = float(slabs.sac_ap_mm[worst])
    sac_csa_worst = float(slabs.sac_csa_mm2[worst])
    sac_transverse = running_mean(np.where(valid, sections.sac_transverse_mm, np.nan))
    return {
        "sac_ap_worst_mm": sac_ap_worst,
        "sac_ap_reference_mm": sac_ap_ref,
        "mcc_percent": float((1.0 - sac_ap_worst / sac_ap_ref) * 100.0),
        "sac_csa_worst_mm2": sac_csa_worst,
        "sac_reference_csa_mm2": sac_csa_ref,
        "canal_compromise_percent": float((1.0 - sac_csa_worst / sac_csa_ref) * 100.0),
        "sac_ap_loss_mm": float(sac_ap_ref - np.nanmin(slabs.sac_ap_mm[in_mass])),
        "sac_transverse_loss_mm": float(
            ref.mean(sections.sac_transverse_mm) - np.nanmin(sac_transverse[in_mass])
        ),
    }


def _area_and_shape_measures(
    sections: Sections, ref: ReferenceLevels, in_mass: np.ndarray, worst: int
) -> dict:
    """Cord flattening (AP / transverse), cord-to-canal area ratio, CSF left at the worst
    level and the cord's displacement."""
    ratio = sections.cord_csa_mm2 / sections.sac_csa_mm2
    cr = sections.compression_ratio
    return {
        "compression_ratio_min": float(np.nanmin(cr[in_mass])),
        "compression_ratio_reference": ref.mean(cr),
        "cord_canal_area_ratio_min": float(np.nanmin(ratio[in_mass])),
        "cord_canal_area_ratio_worst": float(ratio[worst]),
        "csf_area_worst_mm2": float(sections.csf_area_mm2[worst]),
        "csf_fraction_worst": float(sections.csf_area_mm2[worst] / sections.sac_csa_mm2[worst]),
        "cord_displacement_mm": _cord_displacement_mm(sections, ref, worst),
    }


def _cord_displacement_mm(sections: Sections, ref: ReferenceLevels, worst: int) -> float:
    """Distance of the worst section's cord centroid from the line through the reference
    centroids (through one side's centroid along the mean tangent when only one side)."""
    cents = sections.cord_centroid_lps
    sides = [np.nanmean(cents[idx], axis=0) for idx in (ref.above, ref.below) if len(idx)]
    if len(sides) == 2:
        p0, direction = sides[1], sides[0] - sides[1]
    else:
        p0 = sides[0]
        direction = np.nanmean(sections.tangent_lps[ref.all], axis=0)
    direction = direction / np.linalg.norm(direction)
    rel = cents[worst] - p0
    return float(np.linalg.norm(rel - (rel @ direction) * direction))


def _worst_and_reference_levels(sections: Sections, ref: ReferenceLevels, worst: int) -> dict:
    """Where the worst section (its cord centroid, else its centre) and the reference
    stretches lie."""
    arc, cents = sections.arc_mm, sections.cord_centroid_lps
    worst_lps = cents[worst] if np.all(np.isfinite(cents[worst])) else sections.centre_lps[worst]
    return {
        "worst_section_arc_mm": float(arc[worst]),
        "worst_section_lps_mm": [float(v) for v in worst_lps],
        "reference_arc_mm": {
            side: [float(arc[idx].min()), float(arc[idx].max())]
            for side, idx in (("above", ref.above), ("below", ref.below))
            if len(idx)
        },
        "reference_sides": ref.sides(),
    }


def circumferential_extent(sections: Sections, indices: np.ndarray) -> tuple[float, list[str]]:
    """Degrees of the sac's circumference the mass touches (union over ``indices``) and the
    sectors (anterior, left, posterior, right; 90 degrees each, anterior centred on 0) touched."""
    touched = (
        sections.mass_touch_deg[np.asarray(indices, dtype=np.int64)].any(axis=0)
        if len(indices)
        else np.zeros(sections.mass_touch_deg.shape[1], bool)
    )
    angles = (
        np.arange(touched.size) * ANGLE_STEP_DEG
    )  # bin centres; a bin on a border counts for both
    sectors = []
    for name, (a, b) in SECTORS.items():
        inside = (angles >= a) | (angles <= b) if a > b else (angles >= a) & (angles <= b)
        if touched[inside].any():
            sectors.append(name)
    return float(touched.sum() * ANGLE_STEP_DEG), sectors
