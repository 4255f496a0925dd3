"""What each metric shown on the page measures, and the structure it is measured on.

Texts follow the README (Compression metrics: the definitions of metrics.json); the structure names are the
keys of the metric models (``cord``, ``sac``, ``mass``) that the "teaching" toggle highlights.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class MetricInfo:
    key: str
    label: str
    unit: str
    structure: str  # "cord", "sac" or "mass": the model highlighted in the views
    what: str


METRICS = (
    MetricInfo(
        "mscc_percent",
        "MSCC",
        "%",
        "cord",
        "Maximum spinal cord compression: 1 - cord AP diameter at the worst level / mean AP "
        "of the normal levels above and below (Fehlings 1999).",
    ),
    MetricInfo(
        "cord_csa_ratio",
        "Cord CSA ratio",
        "",
        "cord",
        "Smallest cord cross-sectional area within the mass's extent / the normal levels' "
        "area (1 = not compressed).",
    ),
    MetricInfo(
        "cord_min_csa_mm2",
        "Cord CSA, worst",
        "mm2",
        "cord",
        "Smallest 4 mm-slab mean cord cross-section, perpendicular to the cord's centreline.",
    ),
    MetricInfo(
        "mcc_percent",
        "MCC",
        "%",
        "sac",
        "Maximum canal compromise: the MSCC formula on the thecal sac's AP diameter.",
    ),
    MetricInfo(
        "canal_compromise_percent",
        "Canal compromise",
        "%",
        "sac",
        "1 - thecal sac area at the worst level / the normal levels' sac area.",
    ),
    MetricInfo(
        "mass_volume_ml",
        "Mass volume",
        "ml",
        "mass",
        "Volume enclosed by the smoothed surface of the epidural mass.",
    ),
    MetricInfo(
        "mass_craniocaudal_extent_mm",
        "Mass length",
        "mm",
        "mass",
        "Length of the mass along the cord's centreline.",
    ),
    MetricInfo(
        "mass_cord_min_distance_mm",
        "Mass to cord",
        "mm",
        "mass",
        "Smallest mass-to-cord surface distance (0 when they touch); the 3D colour map shows "
        "it on every point of the mass: red at contact, blue at 10 mm.",
    ),
    MetricInfo(
        "mass_cord_contact_area_mm2",
        "Contact area",
        "mm2",
        "cord",
        "Area of the cord surface within half a voxel of the mass surface.",
    ),
    MetricInfo(
        "suv_max",
        "SUVmax",
        "",
        "mass",
        "Highest PET standardised uptake value inside the mass.",
    ),
    MetricInfo(
        "mtv_ml",
        "MTV",
        "ml",
        "mass",
        "Metabolic tumour volume: mass voxels with SUV >= 41 % of SUVmax (EANM).",
    ),
)

STRUCTURE_NAMES = {"cord": "spinal cord", "sac": "thecal sac", "mass": "epidural mass"}


def format_value(value, unit: str) -> str:
    """The value as the page shows it (4 significant digits, like Slicer's metrics table)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        text = f"{value:.4g}"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def metric_rows(metrics: dict) -> list[dict]:
    """The rows of the page's metrics table (only metrics the analysis produced)."""
    rows = []
    for info in METRICS:
        if info.key not in metrics:
            continue
        rows.append(
            {
                "key": info.key,
                "label": info.label,
                "value": format_value(metrics[info.key], info.unit),
                "raw": metrics[info.key],
                "structure": info.structure,
                "structure_name": STRUCTURE_NAMES[info.structure],
                "what": info.what,
            }
        )
    return rows
