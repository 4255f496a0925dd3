"""The codes of the DICOM exports: what each segment, measurement and unit is called.

One table for the SEG writer, the SR writer, the tests and ``docs/export.md``:

* segments: the SNOMED CT codes of :data:`MESCCAnalyzerLib.io.segfile.SEGMENTS` (the ones the
  ``.seg.nrrd`` carries), plus the thecal sac (SCT 18545000 "Dura mater": the region inside
  the dural sac, cord and CSF together);
* measurements: DICOM (DCM) or SNOMED CT (SCT) codes where one exists (volume, SUVbw with its
  derivation, metabolic volume, total lesion glycolysis), otherwise the project's own coding
  scheme :data:`SCHEME` (a private scheme, "99" prefix, as PS3.16 8.2 allows); names and units
  come from :mod:`MESCCAnalyzerLib.measure.definitions`;
* units: UCUM (PS3.16 CID 82).
"""

from __future__ import annotations

from dataclasses import dataclass

from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept

from .. import LABEL_BONE, LABEL_CORD, LABEL_CSF, LABEL_MASS
from ..io.segfile import SEGMENTS
from ..measure.definitions import metric

SCHEME = "99MESCC"
"""The project's private coding scheme designator (codes below, meanings in English)."""

SCHEME_NAME = "MESCC Analyzer measurements"


def local(code: str, meaning: str) -> CodedConcept:
    """A concept of the project's private coding scheme."""
    return CodedConcept(code, SCHEME, meaning)


def concept(triple: tuple[str, str, str]) -> CodedConcept:
    """A concept from a (scheme, code, meaning) triple as :mod:`segfile` stores them."""
    scheme, code, meaning = triple
    return CodedConcept(code, scheme, meaning)


# -- segments ----------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentCode:
    """A structure of the exports: its label, colour (0-1 RGB) and SNOMED CT codes."""

    name: str
    color: tuple[float, float, float]
    category: CodedConcept
    type: CodedConcept


def _from_segfile(label: int) -> SegmentCode:
    info = SEGMENTS[label]
    return SegmentCode(info.name, info.color, concept(info.category), concept(info.type))


CORD = _from_segfile(LABEL_CORD)
CSF = _from_segfile(LABEL_CSF)
LESION = _from_segfile(LABEL_MASS)
VERTEBRAE = _from_segfile(LABEL_BONE)
THECAL_SAC = SegmentCode(
    "thecal sac",
    (0.40, 0.60, 0.95),
    CodedConcept("123037004", "SCT", "Anatomical Structure"),
    CodedConcept("18545000", "SCT", "Dura mater"),
)
PRV_COLOR = (1.0, 0.55, 0.0)

# -- units (UCUM) --------------------------------------------------------------------------
UCUM = {
    "%": CodedConcept("%", "UCUM", "percent"),
    "mm": CodedConcept("mm", "UCUM", "millimeter"),
    "mm²": CodedConcept("mm2", "UCUM", "square millimeter"),
    "ml": CodedConcept("mL", "UCUM", "milliliter"),
    "": CodedConcept("1", "UCUM", "no units"),
    "g/ml": CodedConcept("{SUVbw}g/mL", "UCUM", "Standardized Uptake Value body weight"),
    "g": CodedConcept("g", "UCUM", "gram"),
}
"""UCUM code of each unit that :mod:`~MESCCAnalyzerLib.measure.definitions` uses."""


# -- measurements -------------------------------------------------------------------------
@dataclass(frozen=True)
class MeasurementCode:
    """How one value of ``metrics.json`` (or of ``planning.json``) is coded in the SR."""

    key: str
    name: CodedConcept
    unit: CodedConcept
    derivation: CodedConcept | None = None
    at_worst_section: bool = False  # measured on the worst section's image


LOCAL_CODES = {
    "mscc_percent": "MSCC",
    "mcc_percent": "MCC",
    "cord_min_csa_mm2": "CORD-CSA-MIN",
    "cord_reference_csa_mm2": "CORD-CSA-REF",
    "cord_csa_ratio": "CORD-CSA-RATIO",
    "canal_compromise_percent": "CANAL-COMPROMISE",
    "mass_cord_min_distance_mm": "MASS-CORD-GAP",
    "mass_cord_contact_area_mm2": "MASS-CORD-CONTACT",
    "mass_sac_min_distance_mm": "MASS-SAC-GAP",
}
"""The private code (at most 16 characters) of each metric that has no standard code."""


def _metric(key: str, name: CodedConcept | None = None, **kwargs) -> MeasurementCode:
    """A metric of the definitions table: its name (unless a standard code is given), unit."""
    definition = metric(key)
    return MeasurementCode(
        key,
        name or local(LOCAL_CODES[key], definition.name),
        UCUM[definition.unit],
        **kwargs,
    )


_SUVBW = CodedConcept("126401", "DCM", "SUVbw")

LESION_MEASUREMENTS: tuple[MeasurementCode, ...] = (
    _metric("mscc_percent", at_worst_section=True),
    _metric("mcc_percent", at_worst_section=True),
    _metric("cord_min_csa_mm2", at_worst_section=True),
    _metric("cord_reference_csa_mm2"),
    _metric("cord_csa_ratio", at_worst_section=True),
    _metric("canal_compromise_percent", at_worst_section=True),
    _metric("mass_volume_ml", CodedConcept("118565006", "SCT", "Volume")),
    _metric("mass_cord_min_distance_mm"),
    _metric("mass_cord_contact_area_mm2"),
    _metric("mass_sac_min_distance_mm"),
    _metric("suv_max", _SUVBW, derivation=CodedConcept("56851009", "SCT", "Maximum")),
    _metric("suv_peak", _SUVBW, derivation=CodedConcept("126031", "DCM", "Peak Value Within ROI")),
    _metric("suv_mean", _SUVBW, derivation=CodedConcept("373098007", "SCT", "Mean")),
    _metric("mtv_ml", CodedConcept("126032", "DCM", "Metabolic Volume")),
    _metric("tlg", CodedConcept("126033", "DCM", "Total Lesion Glycolysis")),
)
"""What each lesion's measurement group holds, in order (absent values are left out)."""

CORD_PRV_VOLUME = MeasurementCode(
    "cord_prv_volume_ml", local("CORD-PRV-VOLUME", "Cord planning risk volume"), UCUM["ml"]
)
PRV_MARGIN = MeasurementCode("prv_margin_mm", local("PRV-MARGIN", "PRV margin"), UCUM["mm"])

LEVEL_MEASUREMENTS: tuple[MeasurementCode, ...] = (
    MeasurementCode(
        "cord_min_csa_mm2", local("LEVEL-CORD-CSA", "Cord area, level minimum"), UCUM["mm²"]
    ),
    MeasurementCode(
        "cord_ap_min_mm", local("LEVEL-CORD-AP", "Cord AP diameter, level minimum"), UCUM["mm"]
    ),
    MeasurementCode(
        "canal_min_area_mm2",
        local("LEVEL-CANAL-AREA", "Thecal sac area, level minimum"),
        UCUM["mm²"],
    ),
)
"""What each vertebral level's group holds (a row of ``metrics.json``'s ``levels``)."""

# -- findings ------------------------------------------------------------------------------
BILSKY_GRADE = local("BILSKY", "Bilsky ESCC grade")
BILSKY_REASON = local("BILSKY-REASON", "Bilsky grade reason")
GAP_SAC_UNDER_3MM = local("SAC-GAP-UNDER-3", "Mass-thecal sac gap under 3 mm")
GAP_CORD_UNDER_3MM = local("CORD-GAP-UNDER-3", "Mass-cord gap under 3 mm")
NARROWED = local("NARROWED", "Narrowed against its neighbours")
NARROWING_REASON = local("NARROWING-WHY", "Narrowing reason")
LEVEL_FINDING = local("VERTEBRAL-LEVEL", "Vertebral level")
YES = CodedConcept("373066001", "SCT", "Yes")
NO = CodedConcept("373067005", "SCT", "No")
EPIDURAL_MASS = LESION.type


def bilsky_value(grade: str) -> CodedConcept:
    """The coded value of a Bilsky grade ("0", "1a", ..., "3")."""
    return local(f"BILSKY-{grade.upper()}", f"Bilsky grade {grade}")


CODING_SCHEME = CodingSchemeIdentificationItem(
    designator=SCHEME, name=SCHEME_NAME, responsible_organization="MESCCAnalyzer project"
)
"""The identification of :data:`SCHEME` that the SEG and the SR carry."""
