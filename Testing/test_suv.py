"""PET SUV factors (``MESCCAnalyzerLib.pet.suv``): real header sets, real slices, analytic cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, PositronEmissionTomographyImageStorage, generate_uid

from MESCCAnalyzerLib.errors import InputError, MissingTagError
from MESCCAnalyzerLib.pet import suv

F18_HALF_LIFE_S = 6586.2

CASES = [
    "PHILIPS_BQML",
    "PHILIPS_CNTS_AND_BQML_SUV",
    "PHILIPS_CNTS_AND_SUV",
    "SIEMENS",
    "GE_MEDICAL_AND_BQML",
    "BQML_AC_DT_lessThan_S_DT_SIEMENS",
    "CPS_AND_BQML_AC_DT_-_S_DT",
    "RADIOPHARM_DATETIME_UNDEFINED",
]


def _headers(shared_data, case):
    return suv.load_header_set(shared_data / "suv_headers" / f"{case}-instances.json")


# ----------------------------------------------------------------------------- real header sets
@pytest.mark.parametrize("case", CASES)
def test_real_header_sets_give_the_published_suvbw_factor(shared_data, case):
    expected = json.loads(
        (shared_data / "suv_headers" / "expected_suvbw_factors.json").read_text(encoding="utf-8")
    )[case]
    info = suv.compute_suv(_headers(shared_data, case))
    # The issue asks for 0.1 %; we hold 1e-6 relative: the same QIBA arithmetic in double
    # precision, the residual (< 1e-9) coming from millisecond vs microsecond time parsing.
    assert info.factors == pytest.approx([expected] * 3, rel=1e-6)


@pytest.mark.parametrize(
    ("case", "source", "reference"),
    [
        (
            "BQML_AC_DT_lessThan_S_DT_SIEMENS",
            "earliest AcquisitionTime",
            "2020-12-17 12:35:14.999995",
        ),
        ("CPS_AND_BQML_AC_DT_-_S_DT", "earliest AcquisitionTime", "2020-12-17 13:03:48.234000"),
        ("SIEMENS", "SeriesTime", "2020-12-17 10:48:29"),
        ("RADIOPHARM_DATETIME_UNDEFINED", "SeriesTime", "2020-12-17 13:54:31.843000"),
    ],
)
def test_decay_reference_follows_qiba_series_vs_acquisition_rule(
    shared_data, case, source, reference
):
    info = suv.compute_suv(_headers(shared_data, case))
    assert info.reference_source.startswith(source)
    assert info.reference_datetime == reference


def test_undefined_radiopharmaceutical_datetime_uses_start_time_on_series_date(shared_data):
    info = suv.compute_suv(_headers(shared_data, "RADIOPHARM_DATETIME_UNDEFINED"))
    assert info.injection_datetime == "2020-12-17 12:50:00"
    # 13:54:31.843 - 12:50:00 = 3871.843 s exactly
    assert info.decay_time_s == pytest.approx(3871.843, abs=1e-6)
    assert info.decay_factor == pytest.approx(2 ** (-3871.843 / 6586.2), rel=1e-12)


def test_philips_activity_scale_factor_path(shared_data):
    """CNTS with only (7053,1009): factor = that scale × the BQML factor (QIBA)."""
    headers = [
        suv.with_overrides(h, philips_suv_scale=None)
        for h in _headers(shared_data, "PHILIPS_CNTS_AND_BQML_SUV")
    ]
    info = suv.compute_suv(headers)
    # by hand: weight 54 kg, dose 238 MBq, 08:30:00 → series 09:35:56 (not after acquisition
    # 09:54:39), T½ 6588 s, scale 1.602563
    dt = 3600 + 5 * 60 + 56
    expected = 1.602563 * 54000 / (238e6 * 2 ** (-dt / 6588))
    assert info.factor == pytest.approx(expected, rel=1e-12)  # same formula, double precision
    assert info.method.startswith("Philips activity")


# ----------------------------------------------------------------------------- real PET slices
@pytest.mark.parametrize(
    ("name", "expected"), [("flt_pet_slice_1.dcm", 5.9425e-4), ("flt_pet_slice_2.dcm", 4.7355e-4)]
)
def test_real_flt_slices_give_the_manifest_factors_and_suv_pixels(shared_data, name, expected):
    path = shared_data / "pet_dicom_flt" / name
    image, info = suv.pet_to_suv(path)
    # MANIFEST gives 5 significant digits: half a unit of the last one
    assert info.factor == pytest.approx(expected, abs=5e-9)
    ds = pydicom.dcmread(path)
    # by hand from the header strings
    seq = ds.RadiopharmaceuticalInformationSequence[0]
    tm = lambda s: int(s[:2]) * 3600 + int(s[2:4]) * 60 + float(s[4:])  # noqa: E731
    dt = tm(ds.SeriesTime) - tm(seq.RadiopharmaceuticalStartTime)
    by_hand = (
        float(ds.PatientWeight)
        * 1000
        / (float(seq.RadionuclideTotalDose) * 2 ** (-dt / float(seq.RadionuclideHalfLife)))
    )
    assert info.factor == pytest.approx(by_hand, rel=1e-12)
    # pixels: stored × slope × factor (float32 output: 1e-6 relative)
    want = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) * by_hand
    got = sitk.GetArrayFromImage(image)[0]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)
    assert image.GetOrigin() == pytest.approx(
        tuple(float(v) for v in ds.ImagePositionPatient), abs=1e-9
    )
    assert image.GetSpacing()[:2] == pytest.approx((4.07283, 4.07283), abs=1e-9)


def test_slice_2_series_time_is_the_reference_not_the_later_acquisition(shared_data):
    info = suv.compute_suv(
        suv.PETHeader.from_dataset(
            pydicom.dcmread(
                shared_data / "pet_dicom_flt" / "flt_pet_slice_2.dcm", stop_before_pixels=True
            )
        )
    )
    assert info.reference_source == "SeriesTime"
    assert info.reference_datetime == "1960-01-14 11:19:59.109000"  # acquisition is 11:35:59


# ----------------------------------------------------------------------------- analytic cases
def _header(**changes):
    """A BQML header whose decay time is exactly one F-18 half-life (10:00:00 → 11:49:46.2)."""
    base = suv.PETHeader(
        source="synthetic",
        units="BQML",
        decay_correction="START",
        corrected_image=("ATTN", "DECY"),
        series_date="20240301",
        series_time="114946.2",
        acquisition_date="20240301",
        acquisition_time="114946.2",
        patient_weight_kg=70.0,
        patient_size_m=1.75,
        patient_sex="M",
        total_dose_bq=350e6,
        half_life_s=F18_HALF_LIFE_S,
        injection_time="100000",
        actual_frame_duration_ms=120000,
    )
    return suv.with_overrides(base, **changes)


def test_one_half_life_halves_the_dose():
    info = suv.compute_suv(_header())
    # 5000 Bq/ml × 70 000 g / (350 MBq / 2) = SUV 2 exactly
    assert 5000 * info.factor == pytest.approx(2.0, rel=1e-12)
    assert info.decay_time_s == pytest.approx(F18_HALF_LIFE_S, abs=1e-6)  # TM has µs resolution


def test_decay_correction_admin_and_none():
    admin = suv.compute_suv(_header(decay_correction="ADMIN"))
    assert admin.factor == pytest.approx(70000 / 350e6, rel=1e-15)  # no decay at all
    none = suv.compute_suv(_header(decay_correction="NONE", corrected_image=("ATTN",)))
    lam, frame_s = math.log(2) / F18_HALF_LIFE_S, 120.0
    average = (1 - math.exp(-lam * frame_s)) / (lam * frame_s)  # mean decay over the frame
    assert none.factor == pytest.approx(70000 / (350e6 * 0.5 * average), rel=1e-12)


def test_injection_before_midnight():
    info = suv.compute_suv(
        _header(injection_time="235000", series_time="001000", acquisition_time="001000")
    )
    assert info.decay_time_s == pytest.approx(1200.0, abs=1e-9)  # 23:50 → 00:10 next day
    assert any("previous day" in n for n in info.notes)


def test_units_gml_and_unsupported_units():
    assert suv.suv_factor(_header(units="GML")) == 1.0
    with pytest.raises(InputError, match="Units PROPCNTS"):
        suv.suv_factor(_header(units="PROPCNTS"))
    with pytest.raises(InputError, match="Units CNTS without the Philips"):
        suv.suv_factor(_header(units="CNTS"))
    with pytest.raises(InputError, match="not attenuation-corrected"):
        suv.suv_factor(_header(corrected_image=("DECY",)))


def test_lbm_and_bsa_against_textbook_values():
    # James, man 70 kg 175 cm: 1.10·70 − 128·(70/175)² = 56.52 kg
    assert suv.lean_body_mass_kg(70, 1.75, "M") == pytest.approx(56.52, abs=1e-9)
    # James, woman 60 kg 165 cm: 1.07·60 − 148·(60/165)² = 44.6298 kg
    assert suv.lean_body_mass_kg(60, 1.65, "F") == pytest.approx(
        64.2 - 148 * (60 / 165) ** 2, abs=1e-9
    )
    # Janmahasatian, man 70 kg 1.75 m: BMI 22.857, 9270·70/(6680 + 216·22.857) = 55.857 kg
    assert suv.lean_body_mass_kg(70, 1.75, "M", "janmahasatian") == pytest.approx(55.857, abs=1e-3)
    # Du Bois, 70 kg 175 cm: 1.8481 m² (standard nomogram value 1.85)
    assert suv.body_surface_area_m2(70, 1.75) == pytest.approx(1.8481, abs=1e-4)
    bw = suv.suv_factor(_header())
    assert suv.suv_factor(_header(), "lbm") == pytest.approx(bw * 56.52 / 70, rel=1e-12)
    bsa = suv.compute_suv(_header(), "bsa")
    assert bsa.factor == pytest.approx(
        bw * suv.body_surface_area_m2(70, 1.75) * 1e4 / 70000, rel=1e-12
    )
    assert bsa.suv_units == "cm2/ml"


@pytest.mark.parametrize(
    ("field", "keyword", "option", "norm"),
    [
        ("patient_weight_kg", "PatientWeight (0010,1030)", "--weight-kg", "bw"),
        ("total_dose_bq", "RadionuclideTotalDose (0018,1074)", "--dose-mbq", "bw"),
        ("injection_time", "RadiopharmaceuticalStartTime (0018,1072)", "--injection-time", "bw"),
        ("half_life_s", "RadionuclideHalfLife (0018,1075)", "--half-life-s", "bw"),
        ("patient_size_m", "PatientSize (0010,1020)", "--height-m", "lbm"),
        ("patient_sex", "PatientSex (0010,0040)", "--sex", "lbm"),
    ],
)
def test_missing_tag_names_keyword_tag_and_option(field, keyword, option, norm):
    with pytest.raises(MissingTagError) as err:
        suv.compute_suv(_header(**{field: None}), norm)
    assert keyword in str(err.value) and option in str(err.value)


def test_overrides_replace_missing_values():
    header = _header(patient_weight_kg=None, total_dose_bq=None, injection_time=None)
    info = suv.compute_suv(
        header, overrides=suv.SUVOverrides(weight_kg=70, dose_bq=350e6, injection_time="100000")
    )
    assert 5000 * info.factor == pytest.approx(2.0, rel=1e-12)  # the analytic case again
    assert info.overridden == ["dose_bq", "injection_time", "weight_kg"]
    with pytest.raises(InputError, match="PatientWeight .* outside"):
        suv.compute_suv(_header(patient_weight_kg=7000))  # grams typed as kg


# ----------------------------------------------------------------------------- per-slice rescale
def _write_pet(folder, stored_kji, slopes, *, z_order):
    folder.mkdir(parents=True, exist_ok=True)
    series = generate_uid()
    for k in range(stored_kji.shape[0]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = PositronEmissionTomographyImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = (
            meta.MediaStorageSOPClassUID,
            meta.MediaStorageSOPInstanceUID,
        )
        ds.Modality, ds.SeriesInstanceUID = "PT", series
        ds.PatientWeight, ds.PatientSex = "70", "M"
        ds.SeriesDate = ds.AcquisitionDate = "20240301"
        ds.SeriesTime = ds.AcquisitionTime = "114946.2"
        ds.Units, ds.DecayCorrection, ds.CorrectedImage = "BQML", "START", ["ATTN", "DECY"]
        radio = Dataset()
        radio.RadiopharmaceuticalStartTime = "100000"
        radio.RadionuclideTotalDose = "350000000"
        radio.RadionuclideHalfLife = "6586.2"
        ds.RadiopharmaceuticalInformationSequence = Sequence([radio])
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-10, -20, z_order[k] * 3.0]
        ds.PixelSpacing = [2, 2]
        ds.Rows, ds.Columns = stored_kji.shape[1:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated = ds.BitsStored = 16
        ds.HighBit, ds.PixelRepresentation = 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = f"{slopes[k]}", "0"
        ds.PixelData = stored_kji[k].astype(np.int16).tobytes()
        ds.save_as(folder / f"pt{k}.dcm", enforce_file_format=True)


def test_pet_series_uses_each_slice_slope_and_sorts_by_position(tmp_path):
    # activity 5000 Bq/ml everywhere, stored with a different slope per file: SUV 2 everywhere
    slopes = [0.5, 0.25, 2.0]
    stored = np.stack([np.full((3, 4), 5000 / s) for s in slopes])
    _write_pet(tmp_path / "pet", stored, slopes, z_order=[2, 0, 1])
    image, info = suv.pet_to_suv(tmp_path / "pet")
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), 2.0, rtol=1e-6)  # float32 output
    assert image.GetOrigin() == pytest.approx((-10, -20, 0))
    assert image.GetSpacing() == pytest.approx((2, 2, 3))
    assert image.GetSize() == (4, 3, 3)


def test_non_pet_series_is_refused(shared_data):
    with pytest.raises(InputError, match=r"no PET \(PT\) series"):
        suv.pet_to_suv(shared_data / "ct_dicom_pet_ct_scanner" / "dicom")


def test_suv_of_a_file_without_preamble(shared_data, tmp_path):
    ds = pydicom.dcmread(shared_data / "pet_dicom_flt" / "flt_pet_slice_2.dcm")
    ds.preamble = None
    del ds.file_meta
    ds.save_as(
        tmp_path / "old.dcm", enforce_file_format=False, implicit_vr=True, little_endian=True
    )
    _, info = suv.pet_to_suv(tmp_path / "old.dcm")
    assert info.factor == pytest.approx(4.7355e-4, abs=5e-9)  # MANIFEST, 5 digits


def test_missing_scan_times_name_the_tag_and_accept_scan_time():
    header = _header(series_time=None, acquisition_time=None)
    with pytest.raises(MissingTagError) as err:
        suv.compute_suv(header)
    assert "SeriesTime (0008,0031)" in str(err.value) and "--scan-time" in str(err.value)
    info = suv.compute_suv(header, overrides=suv.SUVOverrides(scan_time="114946.2"))
    assert 5000 * info.factor == pytest.approx(2.0, rel=1e-12)  # one half-life again
    assert info.reference_source.endswith("(--scan-time)")


def test_uncorrected_slices_each_decay_to_their_own_time():
    # two frames of 120 s starting one and two half-lives after injection
    first = _header(decay_correction="NONE", corrected_image=("ATTN",))
    second = suv.with_overrides(first, acquisition_time="133932.4")  # 10:00 + 2 × 6586.2 s
    info = suv.compute_suv([first, second])
    lam, frame_s = math.log(2) / F18_HALF_LIFE_S, 120.0
    average = (1 - math.exp(-lam * frame_s)) / (lam * frame_s)
    assert info.factors == pytest.approx(
        [70000 / (350e6 * 0.5 * average), 70000 / (350e6 * 0.25 * average)], rel=1e-12
    )


def test_ge_private_scan_time_when_series_time_is_later():
    header = _header(
        series_time="120000",  # later than the acquisition: a re-saved series
        ge_scan_datetime="20240301114946.2",
    )
    info = suv.compute_suv(header)
    assert info.reference_source.startswith("GE private")
    assert 5000 * info.factor == pytest.approx(2.0, rel=1e-12)  # one half-life
    without = suv.compute_suv(suv.with_overrides(header, ge_scan_datetime=None))
    assert without.reference_source.startswith("earliest AcquisitionTime")
    assert without.factor == pytest.approx(info.factor, rel=1e-12)  # same instant here


def test_philips_suv_scale_refuses_hand_values_it_cannot_apply():
    header = _header(units="CNTS", philips_suv_scale=0.000551)
    assert suv.suv_factor(header) == 0.000551
    with pytest.raises(InputError, match="cannot be applied by hand"):
        suv.compute_suv(header, overrides=suv.SUVOverrides(weight_kg=80))
    both = suv.with_overrides(header, philips_activity_scale=2.0)
    info = suv.compute_suv(both, overrides=suv.SUVOverrides(weight_kg=70))
    assert 5000 * info.factor == pytest.approx(2 * 2.0, rel=1e-12)  # 2 × the BQML SUV of 2
