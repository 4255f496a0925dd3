"""DICOM exports of an analysis: SEG and SR on the reference MRI, RTSTRUCT on the planning
CT, the planner's gaps and PRV, and the DICOM network client that sends them to a PACS and
fetches a study from one. See ``docs/export.md``."""

from ..measure.margins import DEFAULT_PRV_MM
from ..measure.metrics import GAP_GOAL_MM
from .build import (
    PLANNING_FILE,
    RTSTRUCT_FILE,
    SEG_FILE,
    SR_FILE,
    DicomExports,
    ExportSources,
    SavedAnalysis,
    build_exports,
    check_sources,
    load_analysis,
    write_exports,
)
from .network import DicomNode, check_node, retrieve_study, store
from .structures import Lesion, lesions_from_labels

__all__ = [
    "DEFAULT_PRV_MM",
    "GAP_GOAL_MM",
    "PLANNING_FILE",
    "RTSTRUCT_FILE",
    "SEG_FILE",
    "SR_FILE",
    "DicomExports",
    "DicomNode",
    "ExportSources",
    "Lesion",
    "SavedAnalysis",
    "build_exports",
    "check_node",
    "check_sources",
    "lesions_from_labels",
    "load_analysis",
    "retrieve_study",
    "store",
    "write_exports",
]
