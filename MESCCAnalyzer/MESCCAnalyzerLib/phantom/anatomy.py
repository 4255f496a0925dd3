"""The phantom's anatomy: implicit shapes in the anatomical frame (left, posterior, superior),
the tissue classes and their intensities in each modality, and the draw of one anatomy and pose
from a grade and a seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

GRADES = ("0", "1a", "1b", "1c", "2", "3")

# Tissue classes of the phantom (not the label convention; see TISSUE_TO_LABEL).
OTHER, CORD, CSF, MASS, MARROW, CORTICAL, DISC, FAT = range(8)
TISSUE_NAMES = (
    "soft_tissue",
    "cord",
    "csf",
    "mass",
    "marrow",
    "cortical_bone",
    "disc",
    "epidural_fat",
)
TISSUE_TO_LABEL = np.array([0, 1, 2, 3, 4, 4, 0, 0], dtype=np.uint8)

# Relative intensities per tissue, in TISSUE order. MR values follow the usual appearance:
# T2 bright CSF and fat, intermediate tumour; T1 bright fat and fatty marrow, dark CSF and
# tumour replacing marrow (the classic metastasis sign).
T2_LEVELS = np.array([300, 450, 1000, 560, 420, 120, 700, 800], dtype=np.float64)
T1_LEVELS = np.array([450, 600, 200, 330, 700, 150, 380, 950], dtype=np.float64)
CT_HU = np.array([50, 35, 8, 42, 220, 700, 85, -100], dtype=np.float64)
SUV_LEVELS = np.array([0.7, 1.3, 0.25, 7.0, 1.6, 1.0, 0.6, 0.4], dtype=np.float64)

# Where each grade puts the mass (see PhantomAnatomy.mass_tip_y): the posterior tip of the
# mass relative to the structures it is defined against, and the mass centre/size.
_MASS_LAYOUT = {
    #        centre_y  semi_x  semi_z
    "0": (-18.0, 8.0, 7.0),
    "1a": (-14.0, 8.0, 10.0),
    "1b": (-14.0, 8.5, 11.0),
    "1c": (-14.0, 9.0, 11.0),
    "2": (-14.0, 9.0, 12.0),
    "3": (-14.0, 14.0, 12.0),
}

# PET acquisition constants written into the DICOM header (18F-FDG).
F18_HALF_LIFE_S = 6586.2
PET_DOSE_BQ = 3.7e8
PET_UPTAKE_S = 3600.0
PATIENT_WEIGHT_KG = 72.5
PATIENT_HEIGHT_M = 1.76


def rotation_matrix(rx_deg: float, ry_deg: float, rz_deg: float) -> np.ndarray:
    """Rotation matrix R = Rz @ Ry @ Rx (ITK Euler3DTransform's default ZXY order differs;
    we only use this for the anatomy tilt, stored explicitly as a matrix)."""
    rx, ry, rz = np.deg2rad([rx_deg, ry_deg, rz_deg])
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    r_x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    r_y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    r_z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return r_z @ r_y @ r_x


def ellipse_q(x, y, cx, cy, ax, ay):
    return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2


@dataclass(frozen=True)
class PhantomAnatomy:
    """The implicit shapes of one phantom (all lengths in mm, anatomical frame)."""

    grade: str
    # thecal sac (elliptic cylinder on the axis)
    sac_ax: float = 7.5
    sac_ay: float = 6.5
    # cord at rest
    cord_ax: float = 4.5
    cord_ay: float = 3.25
    cord_cy: float = 1.0
    # bony canal (epidural space = canal minus sac)
    canal_ax: float = 10.0
    canal_ay: float = 9.0
    # vertebral bodies: elliptic cylinders, repeated along z
    body_ax: float = 17.0
    body_ay: float = 13.0
    body_cy: float = -22.0
    body_half_height: float = 9.5
    level_period: float = 24.0
    cortex_mm: float = 1.0
    # posterior elements: a ring around the canal posterior to post_min_y, plus a spinous process
    post_outer_ax: float = 14.0
    post_outer_ay: float = 12.5
    post_min_y: float = -5.0
    post_half_height: float = 6.0
    spinous_half_width: float = 3.0
    spinous_y: tuple[float, float] = (12.0, 30.0)
    # epidural mass: ellipsoid centred (0, mass_cy, 0)
    mass_cy: float = -14.0
    mass_ax: float = 9.0
    mass_ay: float = 10.0
    mass_az: float = 11.0
    # grade 3: how fast the compressed cord spreads into the sac remnant
    grade3_growth: float = 40.0
    grade3_spread_from: float = 0.8

    # ---- derived edges -------------------------------------------------------------
    @property
    def cord_anterior_y(self) -> float:
        return self.cord_cy - self.cord_ay

    @property
    def cord_posterior_y(self) -> float:
        return self.cord_cy + self.cord_ay

    @property
    def mass_tip_y(self) -> float:
        return self.mass_cy + self.mass_ay

    @property
    def mass_volume_mm3(self) -> float:
        return 4.0 / 3.0 * math.pi * self.mass_ax * self.mass_ay * self.mass_az

    # ---- shapes ---------------------------------------------------------------------
    def in_mass(self, x, y, z):
        return (x / self.mass_ax) ** 2 + ((y - self.mass_cy) / self.mass_ay) ** 2 + (
            z / self.mass_az
        ) ** 2 <= 1.0

    def in_sac0(self, x, y):
        return ellipse_q(x, y, 0.0, 0.0, self.sac_ax, self.sac_ay) <= 1.0

    def mass_midline_tip(self, z):
        """Most posterior y of the mass in the section z (at x = 0); -inf outside the mass."""
        z = np.asarray(z, dtype=np.float64)
        inside = np.abs(z) < self.mass_az
        r = np.sqrt(np.clip(1.0 - (z / self.mass_az) ** 2, 0.0, None))
        return np.where(inside, self.mass_cy + self.mass_ay * r, -np.inf)

    def cord_indentation(self, z):
        """How far (mm) the mass pushes the cord's anterior surface back in section z."""
        return np.clip(self.mass_midline_tip(z) - self.cord_anterior_y, 0.0, None)

    def in_cord(self, x, y, z):
        """The cord: an ellipse deformed by the mass, inside the sac and outside the mass."""
        x, y, z = np.broadcast_arrays(
            np.asarray(x, float), np.asarray(y, float), np.asarray(z, float)
        )
        ax = np.full(x.shape, self.cord_ax)
        ay = np.full(x.shape, self.cord_ay)
        cy = np.full(x.shape, self.cord_cy)
        threshold = np.ones(x.shape)
        if self.grade in ("2", "3"):
            d = self.cord_indentation(z)
            front = self.cord_anterior_y + d
            back = np.full(x.shape, self.cord_posterior_y)
            widening = 0.5  # a flattened cord widens: ax * ay**0.5 constant
            if self.grade == "3":
                # Pushed against the posterior sac wall, area-preserving flattening, and in
                # the last part of the compression the cord spreads into the whole sac
                # remnant: no CSF left at the worst section.
                h = d / max(float(self.cord_indentation(0.0)), 1e-9)
                back = back + (self.sac_ay - self.cord_posterior_y) * h
                spread = np.clip(
                    (h - self.grade3_spread_from) / (1.0 - self.grade3_spread_from), 0.0, 1.0
                )
                threshold = 1.0 + self.grade3_growth * spread**2
                widening = 1.0
            ay = (back - front) / 2.0
            cy = (back + front) / 2.0
            ax = self.cord_ax * (self.cord_ay / ay) ** widening
        in_ellipse = ellipse_q(x, y, 0.0, cy, ax, ay) <= threshold
        return in_ellipse & self.in_sac0(x, y) & ~self.in_mass(x, y, z)

    def in_sac(self, x, y, z):
        """The thecal sac (cord and CSF): the sac cylinder minus the mass."""
        return self.in_sac0(x, y) & ~self.in_mass(x, y, z)

    def classify(self, u: np.ndarray) -> np.ndarray:
        """Tissue class (see TISSUE_NAMES) of anatomical points ``u`` (N x 3)."""
        x, y, z = u[:, 0], u[:, 1], u[:, 2]
        tissue = np.full(len(u), OTHER, dtype=np.uint8)
        # vertebral level of each point (levels at z = k * period)
        k = np.round(z / self.level_period)
        dz = np.abs(z - k * self.level_period)
        q_body = ellipse_q(x, y, 0.0, self.body_cy, self.body_ax, self.body_ay)
        in_body_xy = q_body <= 1.0
        in_disc = in_body_xy & (dz > self.body_half_height)
        in_body = in_body_xy & ~in_disc
        shell = 1.0 - self.cortex_mm / min(self.body_ax, self.body_ay)
        cortical_body = in_body & (
            (q_body > shell**2) | (dz > self.body_half_height - self.cortex_mm)
        )
        tissue[in_disc] = DISC
        tissue[in_body] = MARROW
        tissue[cortical_body] = CORTICAL
        q_canal = ellipse_q(x, y, 0.0, 0.0, self.canal_ax, self.canal_ay)
        in_post_level = dz <= self.post_half_height
        ring = (
            (q_canal > 1.0)
            & (ellipse_q(x, y, 0.0, 0.0, self.post_outer_ax, self.post_outer_ay) <= 1.0)
            & (y > self.post_min_y)
        )
        spinous = (
            (np.abs(x) <= self.spinous_half_width)
            & (y >= self.spinous_y[0])
            & (y <= self.spinous_y[1])
        )
        tissue[in_post_level & (ring | spinous)] = CORTICAL
        in_canal = q_canal <= 1.0
        tissue[in_canal] = FAT
        idx = np.flatnonzero(in_canal)  # the sac and the cord lie inside the bony canal
        xc, yc, zc = x[idx], y[idx], z[idx]
        sac = self.in_sac0(xc, yc)
        tissue[idx[sac]] = CSF
        idx, xc, yc, zc = idx[sac], xc[sac], yc[sac], zc[sac]
        tissue[idx[self.in_cord(xc, yc, zc)]] = CORD
        near = np.flatnonzero(
            (np.abs(x) <= self.mass_ax)
            & (np.abs(y - self.mass_cy) <= self.mass_ay)
            & (np.abs(z) <= self.mass_az)
        )
        tissue[near[self.in_mass(x[near], y[near], z[near])]] = MASS
        return tissue


def make_anatomy(grade: str, seed: int) -> tuple[PhantomAnatomy, dict]:
    """The anatomy for ``grade`` with seed-dependent jitter, and the random pose parameters."""
    if grade not in GRADES:
        raise InputError(
            f"unknown Bilsky grade {grade!r}", hint=f"choose one of {', '.join(GRADES)}"
        )
    rng = np.random.default_rng(seed)
    jitter = rng.uniform(-1.0, 1.0, size=16)
    cord_ax = 4.5 * (1 + 0.05 * jitter[0])
    cord_ay = 3.25 * (1 + 0.05 * jitter[1])
    cord_cy = 1.0 + 0.3 * jitter[2]
    sac_ay = 6.5
    anterior_cord = cord_cy - cord_ay
    # Posterior tip of the mass for each grade, defined against the structure it must
    # (or must not) reach, so jitter never changes the grade.
    tips = {
        "0": -10.5,  # 1.5 mm inside the vertebral body's posterior wall (y = -9)
        "1a": -7.75,  # in the epidural fat: 1.25 mm past the bony wall, 1.25 mm short of the sac
        "1b": -sac_ay + 2.5,  # indents the sac by 2.5 mm
        "1c": anterior_cord,  # touches the cord
        "2": anterior_cord + 2.0,  # flattens the cord by 2 mm, posterior CSF kept
        "3": sac_ay - 2.5,  # cord squeezed to 2.5 mm against the posterior sac wall
    }
    centre_y, semi_x, semi_z = _MASS_LAYOUT[grade]
    anatomy = PhantomAnatomy(
        grade=grade,
        cord_ax=cord_ax,
        cord_ay=cord_ay,
        cord_cy=cord_cy,
        sac_ay=sac_ay,
        mass_cy=centre_y,
        mass_ax=semi_x * (1 + 0.06 * jitter[3]),
        mass_ay=tips[grade] - centre_y,
        mass_az=semi_z * (1 + 0.06 * jitter[4]),
    )
    pose = {
        "tilt_deg": [8.0 * jitter[5], 4.0 * jitter[6], 5.0 * jitter[7]],
        "origin_offset_mm": [2.0 * jitter[8], 2.0 * jitter[9], 2.0 * jitter[10]],
        "ct_rotation_deg": [6.0 * jitter[11], 6.0 * jitter[12], 6.0 * jitter[13]],
        "ct_translation_mm": [12.0 * jitter[14], 12.0 * jitter[15], 8.0 * rng.uniform(-1, 1)],
        "noise_seed": int(rng.integers(0, 2**31 - 1)),
    }
    return anatomy, pose
