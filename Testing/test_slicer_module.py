"""The Slicer side without Slicer: the .ui, the widget code, the parameter node, the layout.

3D Slicer cannot be installed here, so these tests read the files the application would load
and check what would otherwise fail only inside Slicer: a widget name the Python code uses
that the .ui lacks, a parameter with no widget bound, a resource CMake does not install,
an ExtensionsIndex field missing, a core module importing ``slicer``.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE_DIR = ROOT / "MESCCAnalyzer"
MODULE_PY = MODULE_DIR / "MESCCAnalyzer.py"
UI_FILE = MODULE_DIR / "Resources" / "UI" / "MESCCAnalyzer.ui"
LIB = MODULE_DIR / "MESCCAnalyzerLib"

# What class a widget must be, judged by the suffix of its name (the template's convention).
SUFFIX_CLASS = {
    "Button": {
        "QPushButton",
        "QToolButton",
        "ctkCollapsibleButton",
        "ctkMenuButton",
        "ctkCheckablePushButton",
    },
    "Selector": {
        "qMRMLNodeComboBox",
        "qMRMLSubjectHierarchyComboBox",
        "qMRMLCheckableNodeComboBox",
    },
    "Label": {"QLabel"},
    "ComboBox": {"QComboBox", "ctkComboBox"},
    "SpinBox": {"QSpinBox", "QDoubleSpinBox", "ctkDoubleSpinBox"},
    "CheckBox": {"QCheckBox"},
    "TableView": {"qMRMLTableView", "QTableView"},
    "TextBrowser": {"QTextBrowser"},
    "LineEdit": {"QLineEdit", "ctkPathLineEdit"},
}
# Which widget classes can carry each parameter type (slicer.parameterNodeWrapper connectors).
TYPE_WIDGETS = {
    "vtkMRMLScalarVolumeNode": {"qMRMLNodeComboBox"},
    "vtkMRMLLabelMapVolumeNode": {"qMRMLNodeComboBox"},
    "vtkMRMLDiffusionWeightedVolumeNode": {"qMRMLNodeComboBox"},
    "vtkMRMLSegmentationNode": {"qMRMLNodeComboBox"},
    "vtkMRMLTransformNode": {"qMRMLNodeComboBox"},
    "vtkMRMLLinearTransformNode": {"qMRMLNodeComboBox"},
    "vtkMRMLMarkupsFiducialNode": {"qMRMLNodeComboBox"},
    "vtkMRMLMarkupsROINode": {"qMRMLNodeComboBox"},
    "vtkMRMLTableNode": {"qMRMLNodeComboBox"},
    "str": {"QComboBox", "QLineEdit", "ctkComboBox"},
    "int": {"QSpinBox", "QSlider", "ctkSliderWidget"},
    "float": {
        "QDoubleSpinBox",
        "ctkSliderWidget",
        "ctkDoubleSpinBox",
        "qMRMLSpinBox",
        "qMRMLSliderWidget",
    },
    "bool": {"QCheckBox", "QPushButton", "QRadioButton", "ctkCheckablePushButton"},
    "Path": {"ctkPathLineEdit"},  # slicer.parameterNodeWrapper: pathlib.Path <-> ctkPathLineEdit
}


def ui_widgets() -> dict[str, ET.Element]:
    tree = ET.parse(UI_FILE)
    return {w.get("name"): w for w in tree.iter("widget")}


def bound_parameters() -> dict[str, str]:
    """parameter name -> class of the widget bound to it through SlicerParameterName."""
    bound = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.find("string").text] = widget.get("class")
                del name
                break
    return bound


def module_tree() -> ast.Module:
    return ast.parse(MODULE_PY.read_text(encoding="utf-8"))


def ui_names_used_in_code() -> set[str]:
    names = set()
    for node in ast.walk(module_tree()):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "ui"
            and isinstance(node.value.value, ast.Name)
            and node.value.value.id == "self"
        ):
            names.add(node.attr)
    return names


def parameter_fields() -> dict[str, str]:
    """Fields of the @parameterNodeWrapper class: name -> base type name."""
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.ClassDef) and any(
            isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list
        ):
            fields = {}
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign):
                    ann = stmt.annotation
                    if (
                        isinstance(ann, ast.Subscript)
                        and getattr(ann.value, "id", "") == "Annotated"
                    ):
                        ann = ann.slice.elts[0]
                    fields[stmt.target.id] = ast.unparse(ann)
            return fields
    raise AssertionError("no @parameterNodeWrapper class in MESCCAnalyzer.py")


def test_every_widget_the_code_uses_exists_in_the_ui_with_a_fitting_class():
    widgets = ui_widgets()
    used = ui_names_used_in_code()
    assert used, "the widget refers to no ui element: the test would check nothing"
    missing = sorted(used - widgets.keys())
    assert not missing, f"used in MESCCAnalyzer.py but absent from the .ui: {missing}"
    for name in used:
        for suffix, classes in SUFFIX_CLASS.items():
            if name.endswith(suffix):
                assert widgets[name].get("class") in classes, (
                    f"{name} is a {widgets[name].get('class')}"
                )


def test_every_parameter_is_bound_to_a_widget_of_a_matching_kind():
    fields = parameter_fields()
    bound = bound_parameters()
    assert set(fields) == set(bound), (
        f"unbound: {set(fields) - set(bound)}, unknown: {set(bound) - set(fields)}"
    )
    for name, type_name in fields.items():
        assert bound[name] in TYPE_WIDGETS[type_name], (
            f"{name}: {type_name} bound to a {bound[name]}"
        )


def _node_types(widget: ET.Element) -> list[str]:
    for prop in widget.findall("property"):
        if prop.get("name") == "nodeTypes":
            return [item.text for item in prop.iter("string")]
    return []


def test_every_node_selector_offers_the_node_class_of_its_parameter():
    fields = parameter_fields()
    for name, widget in ui_widgets().items():
        if widget.get("class") != "qMRMLNodeComboBox":
            continue
        parameter = next(
            (
                prop.find("string").text
                for prop in widget.findall("property")
                if prop.get("name") == "SlicerParameterName"
            ),
            None,
        )
        assert parameter in fields, f"{name} is bound to no parameter"
        assert _node_types(widget) == [fields[parameter]], name


def _method(class_name: str, method: str) -> ast.FunctionDef:
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            for item in node.body:
                if isinstance(item, ast.FunctionDef) and item.name == method:
                    return item
    raise AssertionError(f"no {class_name}.{method} in MESCCAnalyzer.py")


def _calls(function: ast.FunctionDef, dotted: str) -> list[ast.Call]:
    """The calls of ``self.workflow.compute_metrics``-like dotted names inside ``function``."""
    return [
        node
        for node in ast.walk(function)
        if isinstance(node, ast.Call) and ast.unparse(node.func) == dotted
    ]


def _keywords(call: ast.Call) -> dict[str, str]:
    return {k.arg: ast.unparse(k.value) for k in call.keywords}


def test_the_level_inputs_reach_the_metrics():
    """The vertebra labelmap and the level anchor selectors feed compute_metrics, whose
    signature takes them (issue 17)."""
    import inspect

    from MESCCAnalyzerLib.mrml.workflow import Workflow

    widgets = ui_widgets()
    assert _node_types(widgets["vertebraeSelector"]) == ["vtkMRMLLabelMapVolumeNode"]
    assert _node_types(widgets["levelAnchorSelector"]) == ["vtkMRMLMarkupsFiducialNode"]
    bound = bound_parameters()
    assert bound["vertebraeVolume"] == bound["levelAnchor"] == "qMRMLNodeComboBox"
    [call] = _calls(
        _method("MESCCAnalyzerLogic", "computeMetrics"), "self.workflow.compute_metrics"
    )
    keywords = _keywords(call)
    assert keywords["vertebrae_node"] == "p.vertebraeVolume"
    assert keywords["level_anchor_node"] == "p.levelAnchor"
    accepted = inspect.signature(Workflow.compute_metrics).parameters
    assert set(keywords) <= set(accepted)


def test_the_level_table_jumps_and_the_lesions_show_in_their_block():
    widgets = ui_widgets()
    assert widgets["levelsTableView"].get("class") == "qMRMLTableView"
    assert widgets["lesionsTextBrowser"].get("class") == "QTextBrowser"
    assert bound_parameters()["levelsTableNode"] == "qMRMLNodeComboBox"
    setup = _method("MESCCAnalyzerWidget", "setup")
    connects = {
        (ast.unparse(c.func.value), ast.unparse(c.args[0]), ast.unparse(c.args[1]))
        for c in ast.walk(setup)
        if isinstance(c, ast.Call) and getattr(c.func, "attr", "") == "connect"
    }
    assert ("self.ui.levelsTableView", "'clicked(QModelIndex)'", "self.onLevelClicked") in connects
    [jump] = _calls(_method("MESCCAnalyzerLogic", "jumpToLevel"), "self.workflow.jump_to_level")
    assert [ast.unparse(a) for a in jump.args] == ["level"]
    update = _method("MESCCAnalyzerWidget", "_updateGUI")
    assert _calls(update, "self.ui.levelsTableView.setMRMLTableNode")
    assert _calls(
        _method("MESCCAnalyzerWidget", "_showResults"), "self.ui.lesionsTextBrowser.setHtml"
    )


def test_export_to_dicom_writes_through_the_workflow_and_fills_the_dicom_database():
    import inspect

    from MESCCAnalyzerLib.mrml.workflow import Workflow

    widgets = ui_widgets()
    assert widgets["exportDicomButton"].get("class") == "QPushButton"
    assert widgets["dicomStatusLabel"].get("class") == "QLabel"
    export = _method("MESCCAnalyzerLogic", "exportDicom")
    [call] = _calls(export, "self.workflow.export_dicom")
    assert set(_keywords(call)) <= set(inspect.signature(Workflow.export_dicom).parameters)
    assert _keywords(call)["ct_node"] == "p.ctVolume"
    [imported] = _calls(export, "DICOMUtils.importDicom")
    assert _keywords(imported)["copyFiles"] == "True"  # the database keeps its own copy
    # the self-test exercises levels, the jump and the export
    test = ast.unparse(_method("MESCCAnalyzerTest", "test_end_to_end_on_the_sample_study"))
    for step in ("logic.jumpToLevel(", "logic.exportDicom(", "TemporaryDICOMDatabase"):
        assert step in test, step


def test_the_dwi_inputs_reach_compute_adc_and_the_adc_reaches_the_metrics_and_report():
    """Issue 19: a DWI volume node (what SlicerDMRI loads a DICOM DWI as) or a DWI file,
    *Compute ADC* through the workflow, the ADC map selector feeding the metrics and the
    report, and the self-test computing the ADC."""
    import inspect

    from MESCCAnalyzerLib.mrml.workflow import Workflow

    widgets = ui_widgets()
    assert _node_types(widgets["dwiSelector"]) == ["vtkMRMLDiffusionWeightedVolumeNode"]
    assert _node_types(widgets["adcSelector"]) == ["vtkMRMLScalarVolumeNode"]
    assert widgets["dwiPathLineEdit"].get("class") == "ctkPathLineEdit"
    assert widgets["computeAdcButton"].get("class") == "QPushButton"
    bound = bound_parameters()
    assert bound["dwiVolume"] == bound["adcVolume"] == "qMRMLNodeComboBox"
    assert bound["dwiPath"] == "ctkPathLineEdit"
    assert parameter_fields()["dwiPath"] == "Path"
    setup = _method("MESCCAnalyzerWidget", "setup")
    connects = {
        (ast.unparse(c.func.value), ast.unparse(c.args[0]), ast.unparse(c.args[1]))
        for c in ast.walk(setup)
        if isinstance(c, ast.Call) and getattr(c.func, "attr", "") == "connect"
    }
    assert ("self.ui.computeAdcButton", "'clicked(bool)'", "self.onComputeAdc") in connects
    [call] = _calls(_method("MESCCAnalyzerLogic", "computeAdc"), "self.workflow.compute_adc")
    keywords = _keywords(call)
    assert keywords["dwi_node"] == "p.dwiVolume" and keywords["adc_node"] == "p.adcVolume"
    assert keywords["segmentation_node"] == "p.segmentation"  # registered around the cord
    assert set(keywords) <= set(inspect.signature(Workflow.compute_adc).parameters)
    for method, dotted, function in (
        ("computeMetrics", "self.workflow.compute_metrics", Workflow.compute_metrics),
        ("saveReport", "self.workflow.save_report", Workflow.save_report),
    ):
        [call] = _calls(_method("MESCCAnalyzerLogic", method), dotted)
        assert _keywords(call)["adc_node"] == "p.adcVolume", method
        assert "adc_node" in inspect.signature(function).parameters
    test = ast.unparse(_method("MESCCAnalyzerTest", "test_end_to_end_on_the_sample_study"))
    assert "logic.computeAdc(" in test and "vtkMRMLColorLegendDisplayNode" in test


def test_node_selectors_receive_the_scene():
    tree = ET.parse(UI_FILE)
    receivers = {
        c.find("receiver").text
        for c in tree.iter("connection")
        if c.find("signal").text == "mrmlSceneChanged(vtkMRMLScene*)"
        and c.find("slot").text == "setMRMLScene(vtkMRMLScene*)"
    }
    selectors = {
        n
        for n, w in ui_widgets().items()
        if w.get("class", "").startswith("qMRML") and n != "MESCCAnalyzer"
    }
    assert selectors and selectors <= receivers


def test_module_code_and_ui_are_well_formed():
    compile(MODULE_PY.read_text(encoding="utf-8"), str(MODULE_PY), "exec")
    root = ET.parse(UI_FILE).getroot()
    assert root.find("widget").get("class") == "qMRMLWidget"
    custom = {c.find("class").text for c in root.iter("customwidget")}
    used = {w.get("class") for w in root.iter("widget")}
    qt_classes = {c for c in used if c.startswith("Q")}
    assert used - qt_classes <= custom, (
        "every non-Qt widget class must be declared as a custom widget"
    )


def test_module_cmake_installs_the_resources_and_registers_the_self_test():
    text = (MODULE_DIR / "CMakeLists.txt").read_text(encoding="utf-8")
    active = "\n".join(line for line in text.splitlines() if not line.strip().startswith("#"))
    assert "slicerMacroBuildScriptedModule" in active and "WITH_GENERIC_TESTS" in active
    assert re.search(r"slicer_add_python_unittest\(\s*SCRIPT \$\{MODULE_NAME\}\.py", active)
    for resource in re.findall(r"(Resources/\S+)", active):
        path = MODULE_DIR / resource.replace("${MODULE_NAME}", "MESCCAnalyzer")
        assert path.is_file(), f"CMake installs a missing resource: {path}"


def test_extension_description_has_what_the_extensions_index_reads():
    fields = {}
    for line in (ROOT / "MESCCAnalyzer.s4ext").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    required = [
        "scm", "scmurl", "depends", "build_subdirectory", "homepage", "contributors",
        "category", "iconurl", "status", "description", "screenshoturls", "enabled",
    ]  # fmt: skip
    for key in required:
        assert fields.get(key), f"{key} missing or empty in MESCCAnalyzer.s4ext"
    assert fields["category"] == "Quantification"
    top = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for var in ("HOMEPAGE", "CATEGORY", "CONTRIBUTORS", "DESCRIPTION", "ICONURL", "SCREENSHOTURLS"):
        assert re.search(rf'set\(EXTENSION_{var} "[^"]+"\)', top), f"EXTENSION_{var} not set"
    assert "add_subdirectory(MESCCAnalyzer)" in top
    assert (ROOT / "Resources" / "Icons" / "MESCCAnalyzer.png").is_file()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


# matplotlib draws the report's 2D figures only (a dependency of slicer-core; installable in
# Slicer with pip_install); nothing else in the core may need it.
CORE_ALLOWED = {
    "numpy",
    "SimpleITK",
    "vtk",
    "vtkmodules",
    "pydicom",
    "slicerio",
    "nrrd",
    "matplotlib",
}


@pytest.mark.parametrize("path", sorted(p for p in LIB.glob("*.py")), ids=lambda p: p.name)
def test_core_modules_use_no_slicer_and_no_qt(path):
    imported = _imports(path)
    third_party = {m for m in imported if m not in CORE_ALLOWED and not _is_stdlib(m)}
    assert not third_party, (
        f"{path.name} imports {third_party}: the core may use only {sorted(CORE_ALLOWED)}"
    )


@pytest.mark.parametrize(
    "path", sorted(p for p in (LIB / "mrml").glob("*.py")), ids=lambda p: p.name
)
def test_mrml_logic_uses_no_qt_and_no_application_singletons(path):
    assert "qt" not in _imports(path)
    singletons = {
        f"slicer.{node.attr}"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "slicer"
        and node.attr in ("app", "mrmlScene", "modules")
    }
    assert not singletons, f"{path.name} uses {singletons}: take the scene as an argument"


def _is_stdlib(name: str) -> bool:
    import sys

    return name in sys.stdlib_module_names or name == "__future__"
