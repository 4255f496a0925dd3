"""Diffusion: the trace images, the ADC map and its statistics, the DWI -> MRI registration.

Loading lives in :mod:`MESCCAnalyzerLib.io.dwi`; :mod:`.adc` holds the computations.
"""

from .adc import (
    ADC_UNIT,
    NOISE_MULTIPLE,
    ADCResult,
    TraceSet,
    adc_statistics,
    fit_adc,
    mean_b0,
    nan_to_zero,
    noise_sigma,
    register_dwi_to_mri,
    resample_adc_onto,
    trace_images,
)

__all__ = [
    "ADC_UNIT",
    "NOISE_MULTIPLE",
    "ADCResult",
    "TraceSet",
    "adc_statistics",
    "fit_adc",
    "mean_b0",
    "nan_to_zero",
    "noise_sigma",
    "register_dwi_to_mri",
    "resample_adc_onto",
    "trace_images",
]
