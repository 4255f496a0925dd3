"""PET standardized uptake values (SUVbw, SUVlbm, SUVbsa) from DICOM headers.

The computation follows the QIBA vendor-neutral SUV pseudo-code (QIBA FDG-PET/CT technical
committee, "Vendor-neutral pseudo-code for SUV calculation") and PERCIST 1.0 (Wahl et al.,
J Nucl Med 2009;50 Suppl 1:122S-150S):

``SUVbw = A × W / D(t)`` with ``A`` the activity concentration (Bq/ml, the rescaled pixel value),
``W`` the patient weight (g) and ``D(t) = D0 × 2^(-(t - t_inj)/T½)`` the injected dose ``D0``
(Bq) decayed from the injection time ``t_inj`` to the time ``t`` the pixel values refer to.
The *factor* this module returns multiplies the rescaled pixel values
(``stored × RescaleSlope + RescaleIntercept``, per slice) to give SUV:

* Units ``BQML``: ``factor = W / D(t)`` (g/ml per Bq/ml); the decay reference ``t`` depends
  on DecayCorrection (0054,1102):

  - ``START``: the series start. ``t`` = SeriesDate/SeriesTime, unless the series time is
    later than the earliest AcquisitionDate/AcquisitionTime of the series (a post-processed
    series), where QIBA takes the GE private scan date-time (0009,100D) if present, otherwise
    the earliest acquisition time;
  - ``ADMIN``: already decay-corrected to the administration time: ``D(t) = D0``;
  - ``NONE``: not decay-corrected: each slice is referred to its own acquisition start
    ``t0`` and averaged over its frame duration ``Δ`` (ActualFrameDuration):
    ``D = D0 × 2^(-(t0 - t_inj)/T½) × (1 - e^(-λΔ))/(λΔ)``, ``λ = ln 2 / T½``.

* Units ``CNTS`` (Philips): ``factor`` = the private SUV scale factor (7053,1000) when present;
  otherwise the activity-concentration scale factor (7053,1009) × the BQML factor.
* Units ``GML``: the pixels already are SUVbw, ``factor = 1``.

Other normalisations scale SUVbw: ``SUVlbm = SUVbw × LBM/W`` (SUL; LBM by James' formula as
PERCIST 1.0 uses it, or Janmahasatian's) and ``SUVbsa = SUVbw × BSA/W`` with BSA in cm² (Du Bois)
and W in g, so SUVbsa is in cm²/ml.

Header values come from pydicom datasets (:meth:`PETHeader.from_dataset`) or from
Cornerstone/dcmjs-style instance metadata dictionaries (:meth:`PETHeader.from_dict`), so real
files and published header sets go through the same code.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np

from ..errors import InputError, MissingTagError
from ..io import dicom_series
from ..progress import check, sub_progress

NORMS = ("bw", "lbm", "bsa")
LBM_FORMULAS = ("james", "janmahasatian")

# DICOM keyword → (tag, command-line option that supplies it)
_TAGS = {
    "PatientWeight": ("(0010,1030)", "--weight-kg"),
    "PatientSize": ("(0010,1020)", "--height-m"),
    "PatientSex": ("(0010,0040)", "--sex"),
    "RadionuclideTotalDose": ("(0018,1074)", "--dose-mbq"),
    "RadionuclideHalfLife": ("(0018,1075)", "--half-life-s"),
    "RadiopharmaceuticalStartTime": ("(0018,1072)", "--injection-time"),
    "SeriesTime": ("(0008,0031)", "--scan-time"),
    "AcquisitionTime": ("(0008,0032)", "--scan-time"),
    "Units": ("(0054,1001)", None),
    "DecayCorrection": ("(0054,1102)", None),
}

#: plausible ranges (outside: refused as a header error, with the option to correct it)
WEIGHT_RANGE_KG = (1.0, 400.0)
HEIGHT_RANGE_M = (0.3, 2.8)
#: longest plausible time from injection to the decay reference, in half-lives. After 10
#: half-lives 1/1024 of the dose is left, so the SUV factor is 1024 times its value at
#: injection: 18.3 h for F-18 (scans are made 1-3 h after injection), 11 h for Ga-68, 32 days
#: for Zr-89 (imaged up to ~7 days, 2 half-lives). A longer time is a date or time error in
#: the header (e.g. the injection a year before the scan) and is refused, not computed.
MAX_DECAY_HALF_LIVES = 10.0


def _missing(keyword: str, source, extra: str = "") -> MissingTagError:
    tag, option = _TAGS[keyword]
    hint = f"supply it with {option}" if option else "the header cannot give SUV without it"
    if extra:
        hint = f"{extra}; {hint}"
    return MissingTagError(f"{keyword} {tag}", path=source, hint=hint)


# --------------------------------------------------------------------------- DICOM values
def parse_da(value) -> date | None:
    """DICOM DA ``YYYYMMDD`` (or ACR-NEMA ``YYYY.MM.DD``) → date; ``None`` when empty."""
    text = str(value or "").strip().replace(".", "").replace("-", "")
    if not text:
        return None
    try:
        return date(int(text[:4]), int(text[4:6]), int(text[6:8]))
    except (ValueError, IndexError):
        raise ValueError(f"malformed DICOM date {value!r}") from None


def parse_tm(value) -> timedelta | None:
    """DICOM TM ``HHMMSS.FFFFFF`` (parts optional, or ``HH:MM:SS``) → time since midnight."""
    text = str(value or "").strip().replace(":", "")
    if not text:
        return None
    main, _, frac = text.partition(".")
    try:
        hours = int(main[0:2])
        minutes = int(main[2:4]) if len(main) >= 4 else 0
        seconds = int(main[4:6]) if len(main) >= 6 else 0
        fraction = float("0." + frac) if frac else 0.0
    except ValueError:
        raise ValueError(f"malformed DICOM time {value!r}") from None
    if len(main) not in (2, 4, 6) or hours > 23 or minutes > 59 or seconds > 60:
        raise ValueError(f"malformed DICOM time {value!r}")
    return timedelta(hours=hours, minutes=minutes, seconds=seconds + fraction)


def parse_dt(value) -> datetime | None:
    """DICOM DT ``YYYYMMDDHHMMSS.FFFFFF&ZZXX`` → naive datetime (the offset is ignored: all
    times of one study share a clock)."""
    text = str(value or "").strip()
    if not text:
        return None
    for sign in "+-":
        if sign in text[8:]:
            text = text[: 8 + text[8:].index(sign)]
    day = parse_da(text[:8])
    tm = parse_tm(text[8:]) if len(text) > 8 else timedelta(0)
    return datetime.combine(day, datetime.min.time()) + tm


def _combine(day: date | None, tm: timedelta | None) -> datetime | None:
    if tm is None:
        return None
    day = day or date(2000, 1, 1)  # times without a date: compare on a common day
    return datetime.combine(day, datetime.min.time()) + tm


def _num(value) -> float | None:
    """A number from a DS/IS/FD value, a string (possibly padded) or bytes; None if empty."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").strip("\x00 ")
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0] if len(value) else None
        if value is None:
            return None
    if isinstance(value, str):
        value = value.strip()
        if not value:
            return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) else None


def _str(value) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace").strip("\x00 ")
    text = str(value).strip()
    return text or None


# --------------------------------------------------------------------------- header record
@dataclass(frozen=True)
class PETHeader:
    """The header values of one PET image (slice) that SUV needs. Empty values are ``None``.

    Times are the DICOM strings (DA, TM, DT); numbers are floats in DICOM units (kg, m, Bq,
    s, ms).
    """

    source: str = ""  # file (or header set) the values come from, for messages
    units: str | None = None  # Units (0054,1001)
    decay_correction: str | None = None  # DecayCorrection (0054,1102)
    corrected_image: tuple[str, ...] | None = None  # CorrectedImage (0028,0051)
    series_date: str | None = None
    series_time: str | None = None
    acquisition_date: str | None = None
    acquisition_time: str | None = None
    patient_weight_kg: float | None = None
    patient_size_m: float | None = None
    patient_sex: str | None = None
    total_dose_bq: float | None = None
    half_life_s: float | None = None
    injection_time: str | None = None  # RadiopharmaceuticalStartTime (TM)
    injection_datetime: str | None = None  # RadiopharmaceuticalStartDateTime (DT)
    actual_frame_duration_ms: float | None = None
    frame_reference_time_ms: float | None = None
    philips_suv_scale: float | None = None  # (7053,1000)
    philips_activity_scale: float | None = None  # (7053,1009)
    ge_scan_datetime: str | None = None  # (0009,100D) GEMS_PETD_01
    rescale_slope: float = 1.0
    rescale_intercept: float = 0.0
    manufacturer: str | None = None

    @classmethod
    def _from_getters(cls, get, radio_get, corrected, private: dict, source) -> PETHeader:
        """Build from ``get(keyword)`` (the instance) and ``radio_get(keyword)`` (its
        radiopharmaceutical item); the keyword -> field table is :data:`_HEADER_FIELDS`."""
        values = {name: convert(get(keyword)) for name, keyword, convert in _HEADER_FIELDS}
        values.update(
            {name: convert(radio_get(keyword)) for name, keyword, convert in _RADIO_FIELDS}
        )
        return cls(
            source=os.fspath(source),
            corrected_image=tuple(str(c).strip() for c in corrected) if corrected else None,
            rescale_slope=values.pop("rescale_slope") or 1.0,
            rescale_intercept=values.pop("rescale_intercept") or 0.0,
            philips_suv_scale=_num(private.get("philips_suv_scale")),
            philips_activity_scale=_num(private.get("philips_activity_scale")),
            ge_scan_datetime=_str(private.get("ge_scan_datetime")),
            **values,
        )

    @classmethod
    def from_dict(cls, meta: dict, source: str | os.PathLike = "") -> PETHeader:
        """From Cornerstone/dcmjs-style instance metadata (DICOM keywords as keys, the
        radiopharmaceutical values flattened or in ``RadiopharmaceuticalInformationSequence``,
        Philips values in ``PhilipsPETPrivateGroup``)."""
        meta = dict(meta)
        seq = meta.get("RadiopharmaceuticalInformationSequence")
        if isinstance(seq, list) and seq:
            seq = seq[0]
        if isinstance(seq, dict):
            for key, value in seq.items():
                meta.setdefault(key, value)
        philips = meta.get("PhilipsPETPrivateGroup") or {}
        corrected = meta.get("CorrectedImage")
        if isinstance(corrected, str):
            corrected = corrected.split("\\")
        private = {
            "philips_suv_scale": philips.get("SUVScaleFactor"),
            "philips_activity_scale": philips.get("ActivityConcentrationScaleFactor"),
            "ge_scan_datetime": meta.get("GEPrivatePostInjectionDateTime"),
        }
        return cls._from_getters(meta.get, meta.get, corrected, private, source)

    @classmethod
    def from_dataset(cls, ds, source: str | os.PathLike = "") -> PETHeader:
        """From a pydicom Dataset (pixels not needed)."""
        seq = ds.get("RadiopharmaceuticalInformationSequence")
        radio = seq[0] if seq else None

        def radio_get(keyword):
            return radio.get(keyword) if radio is not None else None

        corrected = ds.get("CorrectedImage")
        if corrected is not None and isinstance(corrected, str):
            corrected = [corrected]
        private = {
            "philips_suv_scale": _private(ds, 0x7053, 0x00, "Philips PET Private Group"),
            "philips_activity_scale": _private(ds, 0x7053, 0x09, "Philips PET Private Group"),
            "ge_scan_datetime": _private(ds, 0x0009, 0x0D, "GEMS_PETD_01"),
        }
        return cls._from_getters(ds.get, radio_get, corrected, private, source)


# PETHeader field <- DICOM keyword of the instance, with its converter.
_HEADER_FIELDS = (
    ("units", "Units", _str),
    ("decay_correction", "DecayCorrection", _str),
    ("series_date", "SeriesDate", _str),
    ("series_time", "SeriesTime", _str),
    ("acquisition_date", "AcquisitionDate", _str),
    ("acquisition_time", "AcquisitionTime", _str),
    ("patient_weight_kg", "PatientWeight", _num),
    ("patient_size_m", "PatientSize", _num),
    ("patient_sex", "PatientSex", _str),
    ("actual_frame_duration_ms", "ActualFrameDuration", _num),
    ("frame_reference_time_ms", "FrameReferenceTime", _num),
    ("rescale_slope", "RescaleSlope", _num),
    ("rescale_intercept", "RescaleIntercept", _num),
    ("manufacturer", "Manufacturer", _str),
)
# PETHeader field <- DICOM keyword of the RadiopharmaceuticalInformationSequence item.
_RADIO_FIELDS = (
    ("total_dose_bq", "RadionuclideTotalDose", _num),
    ("half_life_s", "RadionuclideHalfLife", _num),
    ("injection_time", "RadiopharmaceuticalStartTime", _str),
    ("injection_datetime", "RadiopharmaceuticalStartDateTime", _str),
)


def _private(ds, group: int, offset: int, creator: str):
    try:
        return ds.get_private_item(group, offset, creator).value
    except (KeyError, ValueError):
        return None


def load_header_set(path: str | os.PathLike) -> list[PETHeader]:
    """Read a JSON list of instance metadata (the ``suv_headers`` format) into headers."""
    import json

    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"cannot read the header set: {exc}", path=path) from None
    if isinstance(data, dict):
        data = [data]
    if not isinstance(data, list) or not data or not all(isinstance(d, dict) for d in data):
        raise InputError("expected a JSON list of instance metadata objects", path=path)
    return [PETHeader.from_dict(d, source=path) for d in data]


# --------------------------------------------------------------------------- overrides, result
@dataclass(frozen=True)
class SUVOverrides:
    """Values supplied by hand; each replaces the header's value when given."""

    weight_kg: float | None = None
    dose_bq: float | None = None
    injection_time: str | None = None  # "HHMMSS[.ffffff]" (series date) or "YYYYMMDDHHMMSS"
    height_m: float | None = None
    sex: str | None = None  # "M" or "F"
    half_life_s: float | None = None
    scan_time: str | None = (
        None  # decay reference: "HHMMSS[.ffffff]" (series date) or "YYYYMMDDHHMMSS"
    )

    def given(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


@dataclass
class SUVInfo:
    """How the SUV factor was obtained, for the report and for checking by hand."""

    norm: str
    factor: float  # SUV = rescaled pixel value × factor (the first slice's; see factors)
    factors: list[
        float
    ]  # per slice (equal unless DecayCorrection NONE or per-slice private factors)
    suv_units: str  # "g/ml" (bw, lbm) or "cm2/ml" (bsa)
    suvbw_factor: float
    method: str  # "BQML", "Philips SUV scale factor (7053,1000)", ...
    units: str
    decay_correction: str | None
    weight_kg: float | None = None
    height_m: float | None = None
    sex: str | None = None
    dose_bq: float | None = None
    half_life_s: float | None = None
    injection_datetime: str | None = None
    reference_datetime: str | None = None
    reference_source: str | None = None
    decay_time_s: float | None = None
    decay_factor: float | None = None  # D(t)/D0
    decayed_dose_bq: float | None = None
    lbm_kg: float | None = None
    lbm_formula: str | None = None
    bsa_m2: float | None = None
    overridden: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        out = asdict(self)
        if len(set(self.factors)) == 1:
            out["factors"] = None
        return {k: v for k, v in out.items() if v not in (None, [], "")}

    def lines(self) -> list[str]:
        """Human-readable summary (``mescc suv`` prints it)."""
        out = [
            f"SUV{self.norm} factor: {self.factor:.6e} {self.suv_units} per (pixel unit) [{self.method}]"
        ]
        if self.norm != "bw":
            out.append(f"SUVbw factor: {self.suvbw_factor:.6e} g/ml per (pixel unit)")
        if len(set(self.factors)) > 1:
            out.append(f"per-slice factors: {min(self.factors):.6e} … {max(self.factors):.6e}")
        if self.weight_kg is not None:
            out.append(f"weight: {self.weight_kg:g} kg")
        if self.height_m is not None:
            out.append(f"height: {self.height_m:g} m")
        if self.sex:
            out.append(f"sex: {self.sex}")
        if self.lbm_kg is not None:
            out.append(f"lean body mass: {self.lbm_kg:.2f} kg ({self.lbm_formula})")
        if self.bsa_m2 is not None:
            out.append(f"body surface area: {self.bsa_m2:.4f} m² (Du Bois)")
        if self.dose_bq is not None:
            out.append(f"injected dose: {self.dose_bq / 1e6:.3f} MBq")
        if self.half_life_s is not None:
            out.append(f"half-life: {self.half_life_s:g} s")
        out.append(f"decay correction: {self.decay_correction or 'n/a'}")
        if self.injection_datetime:
            out.append(f"injection: {self.injection_datetime}")
        if self.reference_datetime:
            out.append(f"decay reference: {self.reference_datetime} ({self.reference_source})")
        if self.decay_time_s is not None:
            out.append(
                f"decay time: {self.decay_time_s:.1f} s, factor {self.decay_factor:.6f}, "
                f"decayed dose {self.decayed_dose_bq / 1e6:.3f} MBq"
            )
        if self.overridden:
            out.append("supplied by hand: " + ", ".join(self.overridden))
        out.extend(f"note: {n}" for n in self.notes)
        return out


# --------------------------------------------------------------------------- body size
def lean_body_mass_kg(weight_kg: float, height_m: float, sex: str, formula: str = "james") -> float:
    """Lean body mass (kg).

    ``james`` (James 1976, the formula PERCIST 1.0 uses for SUL): men ``1.10 W - 128 (W/H)²``,
    women ``1.07 W - 148 (W/H)²`` (W kg, H cm). ``janmahasatian`` (Janmahasatian et al., Clin
    Pharmacokinet 2005;44:1051-65): men ``9270 W / (6680 + 216 BMI)``, women
    ``9270 W / (8780 + 244 BMI)``.
    """
    sex = sex.upper()
    if sex not in ("M", "F"):
        raise ValueError("sex must be M or F")
    if formula == "james":
        h_cm = 100.0 * height_m
        if sex == "M":
            return 1.10 * weight_kg - 128.0 * (weight_kg / h_cm) ** 2
        return 1.07 * weight_kg - 148.0 * (weight_kg / h_cm) ** 2
    if formula == "janmahasatian":
        bmi = weight_kg / height_m**2
        if sex == "M":
            return 9270.0 * weight_kg / (6680.0 + 216.0 * bmi)
        return 9270.0 * weight_kg / (8780.0 + 244.0 * bmi)
    raise ValueError(f"unknown LBM formula {formula!r}; use one of {LBM_FORMULAS}")


def body_surface_area_m2(weight_kg: float, height_m: float) -> float:
    """Du Bois & Du Bois (Arch Intern Med 1916;17:863-71): ``0.007184 W^0.425 H^0.725`` (kg, cm)."""
    return 0.007184 * weight_kg**0.425 * (100.0 * height_m) ** 0.725


# --------------------------------------------------------------------------- computation
def _time_of(h: PETHeader, keyword: str, day, tm):
    try:
        return _combine(parse_da(day), parse_tm(tm))
    except ValueError as exc:
        raise InputError(f"{keyword}: {exc}", path=h.source or None) from None


def _given_time(text: str, day: date | None, option: str) -> tuple[datetime, bool]:
    """A time typed by hand: ``YYYYMMDDHHMMSS`` (explicit date) or ``HHMMSS`` on ``day``."""
    text = text.strip()
    try:
        if len(text.split(".")[0]) >= 12:
            return parse_dt(text), True
        return _combine(day, parse_tm(text)), False
    except ValueError as exc:
        raise InputError(f"{option} {text!r}: {exc}", hint="use HHMMSS or YYYYMMDDHHMMSS") from None


def _header_day(h: PETHeader) -> date | None:
    try:
        return parse_da(h.series_date or h.acquisition_date)
    except ValueError:
        return None


def _scan_reference(headers: list[PETHeader], overrides: SUVOverrides) -> tuple[datetime, str]:
    """The START decay reference: series time, or the earliest acquisition (QIBA)."""
    h0 = headers[0]
    if overrides.scan_time:
        when, _ = _given_time(overrides.scan_time, _header_day(h0), "--scan-time")
        return when, "scan time supplied by hand (--scan-time)"
    series_dt = _time_of(h0, "SeriesTime", h0.series_date or h0.acquisition_date, h0.series_time)
    acq = [
        _time_of(h, "AcquisitionTime", h.acquisition_date or h.series_date, h.acquisition_time)
        for h in headers
    ]
    acq = [a for a in acq if a is not None]
    earliest = min(acq) if acq else None
    if series_dt is None and earliest is None:
        raise _missing(
            "SeriesTime",
            h0.source or None,
            "neither SeriesTime nor AcquisitionTime (0008,0032) is set",
        )
    if series_dt is None:
        return earliest, "earliest AcquisitionTime (SeriesTime absent)"
    if earliest is None or series_dt <= earliest:
        return series_dt, "SeriesTime"
    if h0.ge_scan_datetime:
        try:
            return parse_dt(h0.ge_scan_datetime), "GE private scan date-time (0009,100D)"
        except ValueError:
            pass
    return earliest, "earliest AcquisitionTime (SeriesTime is later: post-processed series)"


def _injection(
    h0: PETHeader, overrides: SUVOverrides, reference: datetime, notes: list
) -> datetime:
    explicit_date = False
    if overrides.injection_time:
        start, explicit_date = _given_time(
            overrides.injection_time, reference.date(), "--injection-time"
        )
    elif h0.injection_datetime:
        try:
            start, explicit_date = parse_dt(h0.injection_datetime), True
        except ValueError as exc:
            raise InputError(
                f"RadiopharmaceuticalStartDateTime (0018,1078): {exc}", path=h0.source or None
            ) from None
    elif h0.injection_time:
        try:
            # the start date is not explicit: assume the scan's date, but consider midnight
            start = _combine(reference.date(), parse_tm(h0.injection_time))
        except ValueError as exc:
            raise InputError(
                f"RadiopharmaceuticalStartTime (0018,1072): {exc}", path=h0.source or None
            ) from None
    else:
        raise _missing("RadiopharmaceuticalStartTime", h0.source or None)
    if start > reference and not explicit_date and start - reference < timedelta(hours=24):
        start -= timedelta(days=1)
        notes.append("injection time later in the day than the scan: taken on the previous day")
    if start > reference:
        raise InputError(
            f"the injection time {start.isoformat(sep=' ')} is after the decay reference time "
            f"{reference.isoformat(sep=' ')}",
            path=h0.source or None,
            hint="check RadiopharmaceuticalStartTime (0018,1072), or supply --injection-time",
        )
    return start


def _check_series(headers: list[PETHeader]) -> None:
    h0 = headers[0]
    for h in headers[1:]:
        for name in (
            "units",
            "decay_correction",
            "patient_weight_kg",
            "total_dose_bq",
            "half_life_s",
            "series_date",
            "series_time",
            "injection_time",
        ):
            if getattr(h, name) != getattr(h0, name):
                raise InputError(
                    f"the slices disagree on {name} ({getattr(h0, name)!r} vs {getattr(h, name)!r}): "
                    "not one PET series",
                    path=h.source or None,
                )


def compute_suv(
    headers: PETHeader | list[PETHeader],
    norm: str = "bw",
    *,
    overrides: SUVOverrides | None = None,
    lbm_formula: str = "james",
) -> SUVInfo:
    """SUV factors (per slice) and the details of their computation.

    Parameters
    ----------
    headers : one header, or the headers of every slice of one series.
    norm : ``"bw"`` (body weight, g/ml), ``"lbm"`` (lean body mass, SUL, g/ml) or ``"bsa"``
        (body surface area, cm²/ml).
    overrides : values supplied by hand (weight, dose, injection time, height, sex, half-life,
        scan time).
    lbm_formula : ``"james"`` (PERCIST 1.0) or ``"janmahasatian"``.

    Raises
    ------
    MissingTagError : a needed attribute is absent (message names keyword, tag and option).
    InputError : a value is implausible or the combination cannot give SUV.
    """
    if isinstance(headers, PETHeader):
        headers = [headers]
    if not headers:
        raise InputError("no PET header given")
    if norm not in NORMS:
        raise InputError(f"unknown SUV normalisation {norm!r}", hint="use bw, lbm or bsa")
    if lbm_formula not in LBM_FORMULAS:
        raise InputError(f"unknown LBM formula {lbm_formula!r}", hint="use james or janmahasatian")
    overrides = overrides or SUVOverrides()
    _check_series(headers)
    h0 = headers[0]
    units = (h0.units or "").upper()
    if not units:
        raise _missing("Units", h0.source or None)
    notes: list[str] = []
    _check_corrections(h0, notes)
    weight_kg, height_m, sex = _body(h0, overrides)
    info = SUVInfo(
        norm=norm,
        factor=float("nan"),
        factors=[],
        suv_units="cm2/ml" if norm == "bsa" else "g/ml",
        suvbw_factor=float("nan"),
        method="",
        units=units,
        decay_correction=(h0.decay_correction or "").upper() or None,
        weight_kg=weight_kg,
        height_m=height_m,
        sex=sex,
        overridden=sorted(overrides.given()),
        notes=notes,
    )
    bw = _suvbw_factors(headers, units, weight_kg, overrides, info)
    scale = _norm_scale(norm, h0, weight_kg, height_m, sex, lbm_formula, info)
    info.factors = [f * scale for f in bw]
    info.factor = info.factors[0]
    info.suvbw_factor = bw[0]
    return info


def _check_corrections(h0: PETHeader, notes: list[str]) -> None:
    corrected = {c.upper() for c in h0.corrected_image} if h0.corrected_image else None
    if corrected is None:
        notes.append("CorrectedImage (0028,0051) absent: attenuation and decay correction assumed")
    elif "ATTN" not in corrected:
        raise InputError(
            "the PET image is not attenuation-corrected (CorrectedImage lacks ATTN): "
            "SUV is not quantitative",
            path=h0.source or None,
        )


def _body(h0: PETHeader, overrides: SUVOverrides) -> tuple[float | None, float | None, str | None]:
    """Weight (kg), height (m) and sex, hand-supplied values first; zeros count as empty."""
    weight_kg = overrides.weight_kg if overrides.weight_kg is not None else h0.patient_weight_kg
    if weight_kg is not None and weight_kg <= 0:
        weight_kg = None
    height_m = overrides.height_m if overrides.height_m is not None else h0.patient_size_m
    if height_m is not None and height_m <= 0:
        height_m = None
    sex = (overrides.sex or h0.patient_sex or "").upper() or None
    for value, (lo, hi), keyword, unit in (
        (weight_kg, WEIGHT_RANGE_KG, "PatientWeight", "kg"),
        (height_m, HEIGHT_RANGE_M, "PatientSize", "m"),
    ):
        if value is not None and not lo <= value <= hi:
            tag, option = _TAGS[keyword]
            raise InputError(
                f"{keyword} {tag} = {value:g} {unit} is outside the plausible {lo:g}–{hi:g} {unit}",
                path=h0.source or None,
                hint=f"supply the right value with {option}",
            )
    return weight_kg, height_m, sex


def _suvbw_factors(headers, units: str, weight_kg, overrides: SUVOverrides, info: SUVInfo):
    """Per-slice SUVbw factors by Units (QIBA): BQML, CNTS (Philips) or GML."""
    src = headers[0].source or None
    if units == "BQML":
        info.method = "BQML"
        return _bqml_factors(headers, weight_kg, overrides, info)
    if units == "GML":
        info.method = "Units GML: pixels already SUVbw"
        return [1.0] * len(headers)
    if units != "CNTS":
        raise InputError(
            f"Units {units} (0054,1001) cannot be converted to SUV",
            path=src,
            hint="supported units: BQML, CNTS (Philips), GML",
        )
    by_hand = sorted(
        overrides.given().keys()
        & {"weight_kg", "dose_bq", "injection_time", "half_life_s", "scan_time"}
    )
    has_suv_scale = all(h.philips_suv_scale for h in headers)
    has_activity_scale = all(h.philips_activity_scale for h in headers)
    if has_suv_scale and not (by_hand and has_activity_scale):
        if by_hand:
            raise InputError(
                "the Philips SUV scale factor (7053,1000) already contains the header's weight, "
                f"dose and times, so {', '.join(by_hand)} cannot be applied by hand without the "
                "activity concentration scale factor (7053,1009)",
                path=src,
                hint="leave out the overrides",
            )
        info.method = "Philips SUV scale factor (7053,1000)"
        return [float(h.philips_suv_scale) for h in headers]
    if has_activity_scale:
        if has_suv_scale:
            info.notes.append("values given by hand: the Philips SUV scale factor was bypassed")
        bq = _bqml_factors(headers, weight_kg, overrides, info)
        info.method = "Philips activity concentration scale factor (7053,1009) × BQML"
        return [float(h.philips_activity_scale) * f for h, f in zip(headers, bq, strict=True)]
    raise InputError(
        "Units CNTS without the Philips private SUV scale factor (7053,1000) or activity "
        "concentration scale factor (7053,1009): counts cannot be converted to SUV",
        path=src,
    )


def _norm_scale(norm, h0: PETHeader, weight_kg, height_m, sex, lbm_formula, info: SUVInfo) -> float:
    """SUVlbm/SUVbw = LBM/W; SUVbsa/SUVbw = BSA (cm²) / W (g); 1 for bw."""
    if norm == "bw":
        return 1.0
    src = h0.source or None
    if weight_kg is None:
        raise _missing("PatientWeight", src, f"SUV{norm} needs the weight")
    if height_m is None:
        raise _missing("PatientSize", src, f"SUV{norm} needs the height")
    if norm == "bsa":
        info.bsa_m2 = body_surface_area_m2(weight_kg, height_m)
        return info.bsa_m2 * 1e4 / (weight_kg * 1e3)
    if sex not in ("M", "F"):
        raise _missing(
            "PatientSex", src, f"SUVlbm needs the sex (M or F), header has {h0.patient_sex!r}"
        )
    info.lbm_kg = lean_body_mass_kg(weight_kg, height_m, sex, lbm_formula)
    info.lbm_formula = lbm_formula
    bmi = weight_kg / height_m**2
    if lbm_formula == "james" and bmi > (43.0 if sex == "M" else 36.0):
        info.notes.append(
            f"BMI {bmi:.1f}: James' formula underestimates lean body mass in obesity "
            "(consider --lbm-formula janmahasatian)"
        )
    return info.lbm_kg / weight_kg


def _bqml_factors(headers, weight_kg, overrides: SUVOverrides, info: SUVInfo) -> list[float]:
    """Per-slice ``W / D(t)`` (g/ml per Bq/ml) with t set by DecayCorrection."""
    h0 = headers[0]
    src = h0.source or None
    if weight_kg is None:
        raise _missing("PatientWeight", src)
    dose = overrides.dose_bq if overrides.dose_bq is not None else h0.total_dose_bq
    if not dose or dose <= 0:
        raise _missing("RadionuclideTotalDose", src)
    info.dose_bq = dose
    decay = (h0.decay_correction or "").upper()
    if not decay:
        raise _missing(
            "DecayCorrection", src, "the time the pixel values are decay-corrected to is unknown"
        )
    if decay == "ADMIN":
        info.decay_factor, info.decay_time_s, info.decayed_dose_bq = 1.0, 0.0, dose
        info.reference_source = "administration (DecayCorrection ADMIN)"
        return [weight_kg * 1e3 / dose] * len(headers)
    if decay not in ("START", "NONE"):
        raise InputError(
            f"DecayCorrection {decay} (0054,1102) is not START, ADMIN or NONE", path=src
        )
    half_life = overrides.half_life_s if overrides.half_life_s is not None else h0.half_life_s
    if not half_life or half_life <= 0:
        raise _missing("RadionuclideHalfLife", src)
    info.half_life_s = half_life
    if decay == "START":
        corrected = {c.upper() for c in h0.corrected_image or ()}
        if h0.corrected_image and "DECY" not in corrected:
            info.notes.append(
                "DecayCorrection START but CorrectedImage lacks DECY: trusting DecayCorrection"
            )
        reference, how = _scan_reference(headers, overrides)
        start = _injection(h0, overrides, reference, info.notes)
        dt = (reference - start).total_seconds()
        _check_decay_time(dt, half_life, start, reference, h0)
        factor = 2.0 ** (-dt / half_life)
        info.injection_datetime = start.isoformat(sep=" ")
        info.reference_datetime = reference.isoformat(sep=" ")
        info.reference_source = how
        info.decay_time_s, info.decay_factor, info.decayed_dose_bq = dt, factor, dose * factor
        return [weight_kg * 1e3 / (dose * factor)] * len(headers)
    factors = _uncorrected_decay_factors(headers, half_life, overrides, info)
    info.decayed_dose_bq = dose * factors[0]
    return [weight_kg * 1e3 / (dose * f) for f in factors]


def _check_decay_time(dt_s: float, half_life_s: float, start, reference, h: PETHeader) -> None:
    """Refuse a decay time beyond :data:`MAX_DECAY_HALF_LIVES` (a header date/time error; it
    would also underflow the decay factor to 0 and divide by it)."""
    if dt_s <= MAX_DECAY_HALF_LIVES * half_life_s:
        return
    raise InputError(
        f"{_duration_text(dt_s)} from the injection ({start.isoformat(sep=' ')}) to the decay "
        f"reference ({reference.isoformat(sep=' ')}) is {dt_s / half_life_s:.3g} half-lives of "
        f"{half_life_s:g} s, more than the plausible {MAX_DECAY_HALF_LIVES:g}: a date or time in "
        "the header is wrong",
        path=h.source or None,
        hint="check RadiopharmaceuticalStartDateTime/Time (0018,1078/1072), SeriesDate/Time and "
        "RadionuclideHalfLife, or supply --injection-time, --scan-time or --half-life-s",
    )


def _duration_text(seconds: float) -> str:
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:.4g} days"
    if seconds >= 7200:
        return f"{seconds / 3600:.4g} h"
    return f"{seconds / 60:.4g} min"


def _uncorrected_decay_factors(headers, half_life, overrides: SUVOverrides, info) -> list[float]:
    """DecayCorrection NONE: ``D/D0`` for each slice at its own acquisition start ``t0``,
    averaged over its frame ``Δ``: ``2^(-(t0 - t_inj)/T½) × (1 - e^(-λΔ))/(λΔ)``."""
    lam = math.log(2.0) / half_life
    out = []
    start = None
    for h in headers:
        t0 = _time_of(h, "AcquisitionTime", h.acquisition_date or h.series_date, h.acquisition_time)
        if t0 is None and overrides.scan_time:
            t0, _ = _given_time(overrides.scan_time, _header_day(h), "--scan-time")
        if t0 is None:
            raise _missing(
                "AcquisitionTime", h.source or None, "DecayCorrection NONE needs each slice's time"
            )
        if start is None:
            start = _injection(headers[0], overrides, t0, info.notes)
            info.injection_datetime = start.isoformat(sep=" ")
            info.reference_datetime = t0.isoformat(sep=" ")
            info.reference_source = (
                "each slice's AcquisitionTime, averaged over ActualFrameDuration "
                "(DecayCorrection NONE)"
            )
        dt = (t0 - start).total_seconds()
        if dt < 0:
            raise InputError(
                "a slice's AcquisitionTime is before the injection", path=h.source or None
            )
        _check_decay_time(dt, half_life, start, t0, h)
        duration_s = (h.actual_frame_duration_ms or 0.0) / 1e3
        average = (
            (1.0 - math.exp(-lam * duration_s)) / (lam * duration_s) if duration_s > 0 else 1.0
        )
        out.append(2.0 ** (-dt / half_life) * average)
        if info.decay_time_s is None:
            info.decay_time_s, info.decay_factor = dt, out[-1]
    if not any(h.actual_frame_duration_ms for h in headers):
        info.notes.append("ActualFrameDuration absent: decay within each frame ignored")
    return out


def suv_factor(
    headers: PETHeader | list[PETHeader],
    norm: str = "bw",
    *,
    overrides: SUVOverrides | None = None,
    lbm_formula: str = "james",
) -> float:
    """The SUV factor (``SUV = rescaled pixel × factor``; g/ml per Bq/ml for BQML).

    For a series whose slices have different factors (DecayCorrection NONE), the first
    slice's; use :func:`compute_suv` for all of them.
    """
    return compute_suv(headers, norm, overrides=overrides, lbm_formula=lbm_formula).factor


# --------------------------------------------------------------------------- images
def _slice_values(path: Path, ds) -> np.ndarray:
    """Rescaled pixel values of one slice (float64, rows × columns)."""
    slope = _num(ds.get("RescaleSlope"))
    intercept = _num(ds.get("RescaleIntercept"))
    try:
        stored = ds.pixel_array
    except Exception:  # no decoder for this transfer syntax in pydicom: let GDCM read it
        import SimpleITK as sitk

        try:
            image = sitk.ReadImage(str(path), sitk.sitkFloat64)  # GDCM applies the slope
        except RuntimeError as exc:
            raise InputError(
                f"cannot read the pixel data: {dicom_series._first_line(exc)}", path=path
            ) from None
        return sitk.GetArrayFromImage(image).reshape(int(ds.Rows), int(ds.Columns))
    if stored.ndim != 2:  # multi-frame PET: not supported here
        raise InputError(
            f"pixel data of shape {stored.shape}: one 2D slice per file expected", path=path
        )
    values = stored.astype(np.float64)
    return values * (1.0 if slope is None else slope) + (0.0 if intercept is None else intercept)


def _pet_series(path: Path, series_uid, progress, cancel):
    """The PET series of a folder (one, or the one with ``series_uid``), or one PET file."""
    if not path.exists():
        raise InputError("no such file or folder", path=path)
    if path.is_dir():
        series = dicom_series.scan_folder(path, progress=progress, cancel=cancel)
        pet = [s for s in series if s.modality == "PT"]
        if not pet:
            raise InputError(
                "no PET (PT) series; found: " + "; ".join(s.summary() for s in series),
                path=path,
                hint="give a PET DICOM series",
            )
        return dicom_series.choose_series(pet, folder=path, series_uid=series_uid)
    dicom_series.require_regular_file(path)
    ds = dicom_series.read_header(path)
    if ds is None:
        raise InputError("not a DICOM file (no DICOM header could be read)", path=path)
    header = dicom_series.slice_header(path, ds)
    if header is None:
        raise InputError("a DICOM object without an image", path=path)
    if header.modality != "PT":
        raise InputError(
            f"the file is {header.modality or 'of unknown modality'}, not PET (PT)",
            path=path,
            hint="give a PET DICOM series",
        )
    return dicom_series.SeriesInfo(header.series_uid, header.modality, "", [header])


def pet_to_suv(
    path: str | os.PathLike,
    norm: str = "bw",
    *,
    overrides: SUVOverrides | None = None,
    series_uid: str | None = None,
    lbm_formula: str = "james",
    progress=None,
    cancel=None,
):
    """Read a PET DICOM series (folder) or slice (file) and convert it to SUV.

    Each slice's stored values are rescaled with its own RescaleSlope/RescaleIntercept and
    multiplied by its SUV factor in float64; the result is a float32 image whose geometry comes
    from ImagePositionPatient/ImageOrientationPatient (slices sorted along the normal).

    Returns
    -------
    (SimpleITK.Image, SUVInfo)
    """
    import SimpleITK as sitk

    path = Path(path)
    chosen = _pet_series(path, series_uid, sub_progress(progress, 0.0, 0.3), cancel)
    geometry = dicom_series.series_geometry(chosen, folder=path)
    headers = [PETHeader.from_dataset(h.dataset, source=h.path) for h in geometry.headers]
    info = compute_suv(headers, norm, overrides=overrides, lbm_formula=lbm_formula)
    n = len(geometry.files)
    nx, ny, _ = geometry.size
    volume_kji = np.empty((n, ny, nx), dtype=np.float32)
    for k, (file, factor) in enumerate(zip(geometry.files, info.factors, strict=True)):
        check(cancel)
        if progress is not None:
            progress(0.3 + 0.7 * k / n, "converting to SUV")
        ds = dicom_series.check_pixel_data(file, rows=ny, columns=nx)
        values = _slice_values(file, ds)
        if values.shape != (ny, nx):
            raise InputError(f"pixel data {values.shape} disagrees with Rows/Columns", path=file)
        volume_kji[k] = values * factor
    image = sitk.GetImageFromArray(volume_kji)
    image.SetOrigin(geometry.origin_lps_mm)
    image.SetSpacing(geometry.spacing_mm)
    image.SetDirection(geometry.direction)
    if progress is not None:
        progress(1.0, "")
    return image, info


def with_overrides(header: PETHeader, **values) -> PETHeader:
    """A copy of ``header`` with some fields replaced (for tests and what-if checks)."""
    return replace(header, **values)
