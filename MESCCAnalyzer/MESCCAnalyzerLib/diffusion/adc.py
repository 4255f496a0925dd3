"""The apparent diffusion coefficient (ADC): trace images, a weighted mono-exponential fit,
its statistics in a region, and the rigid registration of the DWI to the reference MRI.

**Trace images.** The volumes are grouped into b-value shells
(:func:`MESCCAnalyzerLib.io.dwi.shells_of`). The b = 0 shell (b ≤ 10 s/mm²) is the
arithmetic mean of its volumes (repeats: the mean has the least noise); every other shell is
the geometric mean over its directions, ``exp(mean_i log S_i)``: for a diffusion tensor D
and a direction set whose second moment is I/3, ``mean_i g_iᵀ D g_i = trace(D)/3``, so the
trace image decays with the mean diffusivity whatever the fibre direction. The scanner's own
trace (isotropic) images are used only at a b-value that has no directional volume.

**Fit.** ``log S(b) = log S0 - b ADC`` over the shells with b ≤ ``b_max``, by weighted least
squares with weights ``Ŝ²`` (Ŝ the signal an unweighted fit predicts: the variance of
``log S`` is about ``σ²/S²``, Veraart et al., NeuroImage 81, 2013). With two shells this is
the two-point formula ``ln(S_low/S_high) / (b_high - b_low)``. The map is in
10⁻⁶ mm²/s (:data:`ADC_UNIT`, the unit of the scanners' ADC maps: 1000 = 1.0 × 10⁻³ mm²/s),
float32. The residual map is the root-mean-square difference between the measured trace
signals and the fitted curve, as a fraction of the fitted S0 (0 with two shells).

**Voxels without signal.** The noise σ of one volume is estimated from the b = 0 repeats (the
median absolute difference between consecutive repeats over the voxels with a non-zero mean,
divided by 0.6745 √2: robust to the few voxels that pulsation or motion change), or with a
single b = 0 volume from its second differences (Immerkær, CVIU 64, 1996: the median absolute
response of the 3×3 kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] divided by 0.6745 × 6). A voxel
is fitted when its mean lowest-b signal exceeds :data:`NOISE_MULTIPLE` × σ (background
Rayleigh noise passes 5σ with probability e^-12.5 ≈ 4 × 10⁻⁶); other voxels are NaN in
memory and 0 in the written map, as scanners write them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from ..errors import InputError
from ..io.dwi import B0_MAX, DWISeries, shells_of
from ..progress import CancelCallback, ProgressCallback, check, no_progress
from ..registration import RegistrationResult, RegistrationSettings, register, resample_onto

#: unit of the ADC maps and statistics
ADC_UNIT = "1e-6 mm2/s"
#: the map's values are ADC (mm²/s) times this
ADC_SCALE = 1e6
#: a voxel is fitted when its lowest-b signal exceeds this many noise σ
NOISE_MULTIPLE = 5.0
#: the region of the DWI -> MRI registration: the cord mask grown by this much (mm)
REGISTRATION_MARGIN_MM = 20.0
#: statistics skip the voxels less than this far inside a region (see :func:`adc_statistics`)
ROI_INSET_MM = 1.0


@dataclass
class TraceSet:
    """One image per b-value shell (lowest first): ``b_s_mm2`` (M,), ``images`` (3D float32),
    ``volumes`` (M,) the number of volumes averaged into each."""

    b_s_mm2: np.ndarray
    images: list[sitk.Image]
    volumes: list[int]


@dataclass
class ADCResult:
    """The ADC map (float32, 10⁻⁶ mm²/s, NaN where not fitted), the fit's relative residual
    (NaN where not fitted), the fitted-voxel mask (uint8), and how the fit was made."""

    adc: sitk.Image
    residual: sitk.Image
    mask: sitk.Image
    b_values_s_mm2: list[float]
    noise_sigma: float
    signal_threshold: float
    n_fitted: int
    n_masked: int
    unit: str = ADC_UNIT

    def adc_for_file(self) -> sitk.Image:
        """The map as written to disk: 0 where not fitted (NaN would be refused on reading)."""
        return nan_to_zero(self.adc)

    def residual_for_file(self) -> sitk.Image:
        return nan_to_zero(self.residual)

    def summary(self) -> dict:
        """JSON-ready description of the fit (b-values, noise, threshold, voxels, median ADC)."""
        values = sitk.GetArrayViewFromImage(self.adc)
        finite = values[np.isfinite(values)]
        return {
            "b_values_s_mm2": self.b_values_s_mm2,
            "noise_sigma": self.noise_sigma,
            "signal_threshold": self.signal_threshold,
            "voxels_fitted": self.n_fitted,
            "voxels_masked": self.n_masked,
            "adc_median_fitted": float(np.median(finite)) if finite.size else float("nan"),
            "adc_unit": self.unit,
        }


def nan_to_zero(image: sitk.Image) -> sitk.Image:
    """``image`` as float32 with 0 for NaN and infinite values: the ADC map as files and
    channels that need finite values (a segmentation channel, a display) take it."""
    arr = np.nan_to_num(sitk.GetArrayFromImage(image), nan=0.0, posinf=0.0, neginf=0.0)
    out = sitk.GetImageFromArray(arr.astype(np.float32))
    out.CopyInformation(image)
    return out


def _array(image: sitk.Image) -> np.ndarray:
    return sitk.GetArrayViewFromImage(image).astype(np.float64)


def _image_like(array_kji: np.ndarray, reference: sitk.Image, pixel=np.float32) -> sitk.Image:
    image = sitk.GetImageFromArray(np.ascontiguousarray(array_kji, dtype=pixel))
    image.CopyInformation(reference)
    return image


def _shell_volumes(dwi: DWISeries, idx: np.ndarray) -> np.ndarray:
    """The volume indices a shell's trace uses: its directional volumes when it has any (the
    scanner's trace images then left out), else all of them."""
    if dwi.isotropic is None:
        return idx
    directional = idx[~dwi.isotropic[idx]]
    return directional if directional.size else idx


def _log_trace(dwi: DWISeries, b: float, idx: np.ndarray, floor: float) -> np.ndarray:
    """log of the shell's trace image (kji): arithmetic mean for b = 0, geometric otherwise."""
    if b <= B0_MAX:
        total = sum(_array(dwi.volumes[i]) for i in idx)
        return np.log(np.maximum(total / len(idx), floor))
    use = _shell_volumes(dwi, idx)
    total = sum(np.log(np.maximum(_array(dwi.volumes[i]), floor)) for i in use)
    return total / len(use)


def _shells_up_to(dwi: DWISeries, b_max_s_mm2: float | None) -> list[tuple[float, np.ndarray]]:
    shells = dwi.shells()
    if b_max_s_mm2 is not None:
        shells = [(b, idx) for b, idx in shells if b <= b_max_s_mm2]
    if len(shells) < 2:
        raise InputError(
            f"{len(shells)} b-value{'s' if len(shells) != 1 else ''} up to b_max = "
            f"{b_max_s_mm2:g} s/mm² (the series has "
            + ", ".join(f"{b:g}" for b, _ in dwi.shells())
            + "): an ADC needs at least two",
            path=dwi.source,
            hint="raise --b-max",
        )
    return shells


def trace_images(dwi: DWISeries, *, b_max_s_mm2: float | None = None) -> TraceSet:
    """One trace image per shell with b ≤ ``b_max_s_mm2`` (all shells when None)."""
    shells = _shells_up_to(dwi, b_max_s_mm2) if b_max_s_mm2 is not None else dwi.shells()
    images, counts = [], []
    for b, idx in shells:
        images.append(_image_like(np.exp(_log_trace(dwi, b, idx, 1e-6)), dwi.reference))
        counts.append(int(len(_shell_volumes(dwi, idx)) if b > B0_MAX else len(idx)))
    return TraceSet(np.array([b for b, _ in shells]), images, counts)


def mean_b0(dwi: DWISeries) -> sitk.Image:
    """The arithmetic mean of the lowest-b volumes (the b = 0 image, float32): the DWI's
    anatomical image, T2-weighted, for registering it to the MRI."""
    _, idx = shells_of(dwi.bvals)[0]
    total = sum(_array(dwi.volumes[i]) for i in idx)
    return _image_like(total / len(idx), dwi.reference)


def _second_differences(slices: np.ndarray) -> np.ndarray:
    """Response of the 3×3 kernel [[1,-2,1],[-2,4,-2],[1,-2,1]] in each slice (kji), valid part."""
    d = slices[:, :-2, :] - 2.0 * slices[:, 1:-1, :] + slices[:, 2:, :]
    return d[:, :, :-2] - 2.0 * d[:, :, 1:-1] + d[:, :, 2:]


def noise_sigma(dwi: DWISeries) -> float:
    """The noise σ of one volume (signal units); see the module docstring for the rule."""
    b_low, idx = shells_of(dwi.bvals)[0]
    if len(idx) >= 2 and b_low <= B0_MAX:  # repeats (not directions, whose signals differ)
        stack = np.stack([_array(dwi.volumes[i]) for i in idx])
        signal = stack.mean(axis=0) > 0  # zero-filled voxels (outside the field of view) left out
        diffs = np.concatenate(
            [np.abs(stack[r + 1] - stack[r])[signal] for r in range(len(idx) - 1)]
        )
        # the difference of two repeats has σ√2; its median absolute value is 0.6745 σ√2
        return float(np.median(diffs) / (0.6745 * np.sqrt(2.0)))
    image = _array(dwi.volumes[int(idx[0])])
    if min(image.shape[1:]) < 3:
        raise InputError(
            "slices smaller than 3×3 voxels: the noise cannot be estimated", path=dwi.source
        )
    response = _second_differences(image)[image[:, 1:-1, 1:-1] > 0]
    # the kernel's response to white noise has σ × sqrt(1+4+1+4+16+4+1+4+1) = 6σ
    return float(np.median(np.abs(response)) / (0.6745 * 6.0))


def _weighted_slope(
    b: np.ndarray, y: np.ndarray, w: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-voxel (weighted) least squares of ``y`` (M, V) against ``b`` (M,): (slope,
    intercept at b = 0), from the weighted sums (b centred first for precision)."""
    mean_b = float(b.mean())
    bc = b - mean_b
    if w is None:
        slope = (bc @ y) / float(bc @ bc)
        return slope, y.mean(axis=0) - slope * mean_b
    wy = w * y
    sw, sb, sbb = w.sum(axis=0), bc @ w, (bc * bc) @ w
    sy, sby = wy.sum(axis=0), bc @ wy
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (sw * sby - sb * sy) / (sw * sbb - sb * sb)
        intercept = (sy - slope * sb) / sw
    return slope, intercept - slope * mean_b


def fit_adc(
    dwi: DWISeries,
    *,
    b_max_s_mm2: float = 1000.0,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> ADCResult:
    """The ADC map of ``dwi`` from the shells with b ≤ ``b_max_s_mm2`` (see the module docstring).

    Raises :class:`InputError` when fewer than two shells lie within ``b_max_s_mm2``.
    """
    progress = progress or no_progress
    shells = _shells_up_to(dwi, b_max_s_mm2)
    sigma = noise_sigma(dwi)
    floor = max(1e-3 * sigma, 1e-6)
    progress(0.1, "trace images")
    logs = []
    for b, idx in shells:
        check(cancel)
        logs.append(_log_trace(dwi, b, idx, floor))
    low = np.exp(logs[0])
    threshold = NOISE_MULTIPLE * sigma
    fitted = low > threshold
    check(cancel)
    progress(0.6, "fit")
    b = np.array([s for s, _ in shells], dtype=np.float64)
    y = np.stack([lg[fitted] for lg in logs])
    slope, intercept = _weighted_slope(b, y)
    # weights Ŝ² relative to the voxel's largest (the lowest b), so that they cannot overflow
    weights = np.exp(2.0 * slope[None, :] * (b - b.min())[:, None])
    slope, intercept = _weighted_slope(b, y, weights)
    curve = np.exp(intercept[None, :] + slope[None, :] * b[:, None])
    residual = np.sqrt(np.mean((np.exp(y) - curve) ** 2, axis=0)) / np.exp(intercept)
    adc = np.full(low.shape, np.nan)
    rel = np.full(low.shape, np.nan)
    adc[fitted] = -slope * ADC_SCALE
    rel[fitted] = residual
    bad = ~np.isfinite(adc)
    fitted &= ~bad
    adc[bad] = np.nan
    rel[bad] = np.nan
    progress(1.0, "")
    return ADCResult(
        adc=_image_like(adc, dwi.reference),
        residual=_image_like(rel, dwi.reference),
        mask=_image_like(fitted, dwi.reference, np.uint8),
        b_values_s_mm2=[float(v) for v in b],
        noise_sigma=sigma,
        signal_threshold=threshold,
        n_fitted=int(np.count_nonzero(fitted)),
        n_masked=int(fitted.size - np.count_nonzero(fitted)),
    )


def cord_region(cord_mask_on_mri: sitk.Image, margin_mm: float) -> sitk.Image:
    """The voxels within ``margin_mm`` of the cord mask (uint8, the mask's grid)."""
    binary = sitk.Cast(
        sitk.NotEqual(sitk.Cast(cord_mask_on_mri, sitk.sitkFloat32), 0.0), sitk.sitkUInt8
    )
    if not sitk.GetArrayViewFromImage(binary).any():
        raise InputError("the cord mask is empty", hint="segment the cord on the MRI first")
    distance = sitk.SignedMaurerDistanceMap(
        binary, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
    )
    return sitk.Cast(sitk.LessEqual(distance, float(margin_mm)), sitk.sitkUInt8)


def register_dwi_to_mri(
    b0: sitk.Image,
    mri: sitk.Image,
    cord_mask_on_mri: sitk.Image,
    *,
    margin_mm: float = REGISTRATION_MARGIN_MM,
    init: str = "auto",
    settings: RegistrationSettings | None = None,
    progress: ProgressCallback | None = None,
    cancel: CancelCallback | None = None,
) -> RegistrationResult:
    """Rigid registration of the DWI's b = 0 image to the MRI, within ``margin_mm`` of the cord.

    The region restricts the metric to the cord's surroundings, where an EPI image is least
    distorted (:func:`MESCCAnalyzerLib.registration.register` with ``fixed_mask``; Mattes
    mutual information, so the b = 0 and T2 contrasts need not match). The result's
    ``transform`` maps an MRI point (LPS) to the DWI point (LPS), as
    :func:`resample_adc_onto` needs; ``report()`` gives its quality.

    Raises :class:`InputError` for an empty mask, :class:`ComputationError` when the
    registration does not converge.
    """
    region = cord_region(cord_mask_on_mri, margin_mm)
    return register(
        mri,
        b0,
        fixed_mask=region,
        init=init,
        settings=settings,
        progress=progress,
        cancel=cancel,
    )


def resample_adc_onto(
    adc: sitk.Image, reference: sitk.Image, transform: sitk.Transform
) -> sitk.Image:
    """The ADC map (NaN where not fitted) on ``reference``'s grid through ``transform`` (MRI
    LPS -> DWI LPS), linear; NaN outside the DWI and next to any voxel not fitted."""
    return resample_onto(
        sitk.Cast(adc, sitk.sitkFloat32), reference, transform, default_value=float("nan")
    )


def adc_statistics(adc_on_mri: sitk.Image, mask, *, inset_mm: float = ROI_INSET_MM) -> dict:
    """ADC statistics over a region: ``adc_mean``, ``adc_median``, ``adc_p10`` (10th
    percentile), ``adc_min`` over the region's voxels with a finite ADC (NaN when none),
    ``adc_voxels`` (how many), ``adc_inset_mm`` (the inset used) and ``adc_unit``.

    ``mask``: an image (non-zero inside) on the ADC's grid, or a boolean kji array of its
    shape. ``inset_mm``: only the voxels at least this far inside the region count (distance
    from the voxel centre to the region's outermost voxel layer, which is at 0): at the DWI's
    resolution the edge voxels mix the neighbours' ADC (the phantom's mass: mean +7 % over
    the whole label, +0.5 % with the default 1 mm). When the inset leaves no voxel with an
    ADC (a thin region), the whole region is used and ``adc_inset_mm`` is 0.
    """
    values = sitk.GetArrayViewFromImage(adc_on_mri)
    if isinstance(mask, sitk.Image):
        if mask.GetSize() != adc_on_mri.GetSize():
            raise InputError(
                f"the region ({mask.GetSize()}) is not on the ADC map's grid ({adc_on_mri.GetSize()})",
                hint="resample the ADC map onto the region's image first",
            )
        inside = sitk.GetArrayViewFromImage(mask) != 0
    else:
        inside = np.asarray(mask, dtype=bool)
    finite = np.isfinite(values)
    picked, used = values[inside & finite], 0.0
    if inset_mm > 0 and inside.any():
        region = _image_like(inside, adc_on_mri, np.uint8)
        depth = sitk.GetArrayViewFromImage(
            sitk.SignedMaurerDistanceMap(
                region, insideIsPositive=True, squaredDistance=False, useImageSpacing=True
            )
        )
        core = inside & finite & (depth >= inset_mm - 1e-6)
        if core.any():
            picked, used = values[core], float(inset_mm)
    picked = picked.astype(np.float64)
    nan = float("nan")
    return {
        "adc_mean": float(picked.mean()) if picked.size else nan,
        "adc_median": float(np.median(picked)) if picked.size else nan,
        "adc_p10": float(np.percentile(picked, 10)) if picked.size else nan,
        "adc_min": float(picked.min()) if picked.size else nan,
        "adc_voxels": int(picked.size),
        "adc_inset_mm": used,
        "adc_unit": ADC_UNIT,
    }
