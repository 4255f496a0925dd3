"""What each metric shown on the page measures, and the structure it is measured on.

The names, units and teaching texts come from the one table of metric definitions
(:mod:`MESCCAnalyzerLib.measure.definitions`) that the report and docs/methods.md read too; the
structure names are the keys of the metric models (``cord``, ``sac``, ``mass``) that the
"teaching" toggle highlights.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..measure.definitions import STRUCTURE_NAMES, teaching_metrics
from ..presentation import format_value


@dataclass(frozen=True)
class MetricInfo:
    key: str
    label: str
    unit: str
    structure: str  # "cord", "sac" or "mass": the model highlighted in the views
    what: str


METRICS = tuple(
    MetricInfo(m.key, m.name, m.unit, m.structure, m.teaching) for m in teaching_metrics()
)


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
