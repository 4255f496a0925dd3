"""One table of metric definitions: every value the analysis writes has exactly one, and the
report, the documentation and the web page's teaching texts agree with it."""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from MESCCAnalyzerLib import LABEL_MASS
from MESCCAnalyzerLib.measure.definitions import (
    METRICS,
    STRUCTURE_NAMES,
    TABLE_BEGIN,
    TABLE_END,
    markdown_table,
    metric,
    replace_table,
    report_metrics,
    teaching_metrics,
)
from MESCCAnalyzerLib.measure.metrics import compute_metrics
from MESCCAnalyzerLib.phantom import make_phantom_labels
from MESCCAnalyzerLib.report import ReportInputs, build_report_html
from MESCCAnalyzerLib.web import teaching

METHODS_MD = Path(__file__).resolve().parents[1] / "docs" / "methods.md"


@pytest.fixture(scope="module")
def a_measured_phantom():
    """Metrics of the grade-2 phantom's labels with a PET on their grid (SUV 7 in the mass,
    1 elsewhere), so that every value metrics.json can hold is present."""
    labels, _, _, _ = make_phantom_labels("2", 0)
    mass = sitk.GetArrayFromImage(labels) == LABEL_MASS
    pet = sitk.GetImageFromArray(np.where(mass, 7.0, 1.0).astype(np.float32))
    pet.CopyInformation(labels)
    return labels, compute_metrics(labels, pet)


def test_every_value_of_metrics_json_has_one_definition(a_measured_phantom):
    _, result = a_measured_phantom
    keys = [m.key for m in METRICS]
    assert len(keys) == len(set(keys)), "a key is defined twice"
    assert set(result.metrics) - set(keys) == set(), "written but not defined"
    # the ADC values come with a DWI (mescc analyze --dwi: Testing/test_analyze_dwi.py)
    diffusion = {k for k in keys if "adc" in k}
    assert set(keys) - set(result.metrics) - diffusion == set(), "defined but never written"


@pytest.mark.parametrize("m", METRICS, ids=lambda m: m.key)
def test_the_unit_agrees_with_the_key(m):
    suffix_units = {"_mm2": "mm²", "_mm": "mm", "_ml": "ml", "_percent": "%", "_deg": "°"}
    for suffix, unit in suffix_units.items():
        if m.key.endswith(suffix):
            assert m.unit.split(",")[0] == unit, f"{m.key} in {m.unit!r}"
            break
    assert m.name and m.definition


def test_the_report_lists_the_definitions_in_its_metrics_table(a_measured_phantom):
    labels, result = a_measured_phantom
    page = build_report_html(
        ReportInputs(
            metrics=result.metrics,
            sections=result.sections.columns(),
            mri=sitk.Cast(labels, sitk.sitkFloat32),
            labels=labels,
            models=result.models,
        )
    )
    table = re.search(r"<table id=metrics>(.*?)</table>", page, re.S).group(1)
    rows = re.findall(r"<tr><td>(.*?)</td><td class=num>.*?</td><td>(.*?)</td>"
                      r"<td class=def>(.*?)</td><td><code>(.*?)</code></td></tr>", table)  # fmt: skip
    expected = [
        (html.escape(m.name), html.escape(m.unit), html.escape(m.summary), m.key)
        for m in report_metrics()
        if m.key != "bilsky_grade"  # shown in large type above the table
        and m.key in result.metrics  # the ADC rows appear with a DWI
    ]
    assert rows == expected


def test_the_methods_document_carries_the_generated_table():
    text = METHODS_MD.read_text(encoding="utf-8")
    assert markdown_table() in text, (
        "docs/methods.md's metric table differs from MESCCAnalyzerLib/definitions.py: run "
        "`python -m MESCCAnalyzerLib.measure.definitions --update docs/methods.md`"
    )
    assert replace_table(text) == text


def test_replacing_the_table_keeps_the_rest_of_the_document():
    old = f"# Methods\n\nbefore\n\n{TABLE_BEGIN}\n| stale |\n{TABLE_END}\n\nafter\n"
    new = replace_table(old)
    assert new.startswith("# Methods\n\nbefore\n\n") and new.endswith("\n\nafter\n")
    assert "| stale |" not in new and "`mscc_percent`" in new
    with pytest.raises(ValueError, match="marker"):
        replace_table("# no table here")


def test_the_web_pages_teaching_texts_live_in_the_table():
    for info in teaching.METRICS:
        m = metric(info.key)
        assert (m.teaching, m.structure) == (info.what, info.structure), info.key
    assert {m.key for m in teaching_metrics()} == {info.key for info in teaching.METRICS}
    assert teaching.STRUCTURE_NAMES == STRUCTURE_NAMES
    assert {m.structure for m in teaching_metrics()} <= set(STRUCTURE_NAMES)


def test_an_unknown_key_is_named_in_the_error():
    with pytest.raises(KeyError, match="no_such_metric"):
        metric("no_such_metric")
