"""DICOM Structured Report (Comprehensive 3D SR, TID 1500 measurement report; highdicom).

One measurement group (TID 1411, volumetric ROI) per lesion, referencing its SEG segment:
the compression and PET values of ``metrics.json`` (:data:`.LESION_MEASUREMENTS`, UCUM
units; the ones measured on the worst section reference that MRI slice), the Bilsky grade as a
coded finding with its reason as text, and whether each gap is under 3 mm. One more group
for the spinal cord segment holds the planning risk volume and its margin, and one group
(TID 1501) per vertebral level crossed by the cord its minima (cord area and AP diameter,
thecal sac area) and whether it is narrowed against its neighbours, with why.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from pydicom.uid import generate_uid

from .. import __version__
from .codes import (
    BILSKY_GRADE,
    BILSKY_REASON,
    CODING_SCHEME,
    CORD,
    CORD_PRV_VOLUME,
    EPIDURAL_MASS,
    GAP_CORD_UNDER_3MM,
    GAP_SAC_UNDER_3MM,
    LESION_MEASUREMENTS,
    LEVEL_FINDING,
    LEVEL_MEASUREMENTS,
    NARROWED,
    NARROWING_REASON,
    NO,
    PRV_MARGIN,
    YES,
    MeasurementCode,
    bilsky_value,
)
from .seg import MANUFACTURER
from .sources import SourceSeries
from .structures import Lesion, Structure

SR_SERIES_NUMBER = 101
OBSERVER_UID = "1.2.826.0.1.3680043.8.498.1"  # a fixed device UID for "mescc" (pydicom root)


def _number(value) -> float | None:
    """A finite number, or None (absent, NaN, text, list)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _measurements(
    values: dict, table: Sequence[MeasurementCode], worst_image
) -> list[hd.sr.Measurement]:
    found = []
    for code in table:
        value = _number(values.get(code.key))
        if value is None:
            continue
        found.append(
            hd.sr.Measurement(
                name=code.name,
                value=value,
                unit=code.unit,
                derivation=code.derivation,
                referenced_images=[worst_image] if code.at_worst_section and worst_image else None,
            )
        )
    return found


def _worst_image(mri: SourceSeries, metrics: dict) -> hd.sr.SourceImageForMeasurement | None:
    point = metrics.get("worst_section_lps_mm")
    if not isinstance(point, list | tuple) or len(point) != 3:
        return None
    ds = mri.slice_at(np.asarray(point, dtype=float))
    return hd.sr.SourceImageForMeasurement(str(ds.SOPClassUID), str(ds.SOPInstanceUID))


def _referenced_segment(seg, number: int, mri: SourceSeries) -> hd.sr.ReferencedSegment:
    return hd.sr.ReferencedSegment(
        sop_class_uid=str(seg.SOPClassUID),
        sop_instance_uid=str(seg.SOPInstanceUID),
        segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(mri.series_uid),
    )


def _lesion_group(
    lesion: Lesion, number: int, gaps: dict, seg, mri: SourceSeries
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    m = lesion.metrics
    evaluations = []
    if m.get("bilsky_grade") is not None:
        evaluations.append(
            hd.sr.QualitativeEvaluation(BILSKY_GRADE, bilsky_value(str(m["bilsky_grade"])))
        )
    for key, name in (
        ("gap_sac_under_3mm", GAP_SAC_UNDER_3MM),
        ("gap_cord_under_3mm", GAP_CORD_UNDER_3MM),
    ):
        if gaps.get(key) is not None:
            evaluations.append(hd.sr.QualitativeEvaluation(name, YES if gaps[key] else NO))
    group = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=lesion.name),
        referenced_segment=_referenced_segment(seg, number, mri),
        finding_type=EPIDURAL_MASS,
        measurements=_measurements(m, LESION_MEASUREMENTS, _worst_image(mri, m)),
        qualitative_evaluations=evaluations or None,
    )
    if m.get("bilsky_reason"):
        reason = hd.sr.TextContentItem(
            BILSKY_REASON,
            str(m["bilsky_reason"])[:1024],
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        group[0].ContentSequence.append(reason)
    return group


def _cord_group(
    number: int, planning: dict, seg, mri: SourceSeries
) -> hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations:
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier="spinal cord"),
        referenced_segment=_referenced_segment(seg, number, mri),
        finding_type=CORD.type,
        measurements=_measurements(planning, (CORD_PRV_VOLUME, PRV_MARGIN), None),
    )


def _level_group(row: dict) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """One vertebral level (a row of ``metrics.json``'s ``levels``): the cord's and the
    canal's minima, whether it is narrowed against its neighbours and why."""
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=generate_uid(), identifier=f"level {row['level']}"
        ),
        finding_type=LEVEL_FINDING,
        measurements=_measurements(row, LEVEL_MEASUREMENTS, None) or None,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(NARROWED, YES if row.get("flagged") else NO)
        ],
    )
    if row.get("flag_reason"):
        group[0].ContentSequence.append(
            hd.sr.TextContentItem(
                NARROWING_REASON,
                str(row["flag_reason"])[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return group


def make_sr(
    mri: SourceSeries,
    seg,
    structures: Sequence[Structure],
    planning: dict,
    levels: Sequence[dict] = (),
) -> hd.sr.Comprehensive3DSR:
    """The measurement report of the lesions among ``structures`` (segment ``i + 1`` is
    ``structures[i]``, as in ``seg``), of the cord's PRV (``planning``) and of each
    vertebral level (``levels``: ``metrics.json``'s rows)."""
    gaps = {g["lesion"]: g for g in planning.get("lesions", [])}
    groups = []
    for i, s in enumerate(structures):
        if s.lesion is not None:
            groups.append(_lesion_group(s.lesion, i + 1, gaps.get(s.lesion.number, {}), seg, mri))
        elif s.code is CORD:
            groups.append(_cord_group(i + 1, planning, seg, mri))
    groups += [_level_group(row) for row in levels]
    observer = hd.sr.ObserverContext(
        observer_type=hd.sr.CodedConcept("121007", "DCM", "Device"),
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=OBSERVER_UID, name="mescc", manufacturer_name=MANUFACTURER
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=observer),
        procedure_reported=hd.sr.CodedConcept("363679005", "SCT", "Imaging procedure"),
        imaging_measurements=groups,
    )
    return hd.sr.Comprehensive3DSR(
        evidence=[*mri.slices, seg],
        content=report[0],
        series_instance_uid=generate_uid(),
        series_number=SR_SERIES_NUMBER,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=True,
        series_description="MESCC measurements",
        coding_schemes=[CODING_SCHEME],
        software_versions=__version__,
    )
