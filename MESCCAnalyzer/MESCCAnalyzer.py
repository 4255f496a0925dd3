"""MESCC Analyzer: 3D Slicer module for metastatic epidural spinal cord compression.

Thin by design: the Module, a parameter node, a Widget that binds the .ui to it, a Logic that
forwards to ``MESCCAnalyzerLib.mrml`` (the MRML logic pytest drives on a bare scene), and the
self-test run by "Reload and Test".
"""

import importlib.metadata
import os
import tempfile
from pathlib import Path
from typing import Annotated

import qt
import slicer
import vtk
from packaging.requirements import Requirement
from slicer import (
    vtkMRMLDiffusionWeightedVolumeNode,
    vtkMRMLLabelMapVolumeNode,
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLMarkupsROINode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLTableNode,
    vtkMRMLTransformNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, Default, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

GRADES = ["0", "1a", "1b", "1c", "2", "3"]
PRESETS = ["rigid", "rigid in ROI", "rigid + deformable"]
# The Python packages the engine needs beyond those Slicer ships (a pip requirements file).
REQUIREMENTS_FILE = os.path.join(os.path.dirname(__file__), "Resources", "requirements.txt")


#
# Python dependencies
#
def missingPythonRequirements(path: str = REQUIREMENTS_FILE) -> list[str]:
    """The requirements of the pip requirements file ``path`` that Slicer's Python lacks
    (absent, or installed in a version outside the range)."""
    missing = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        requirement = Requirement(text)
        try:
            installed = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            installed = None
        if installed is None or not requirement.specifier.contains(installed, prereleases=True):
            missing.append(text)
    return missing


def ensurePythonRequirements(path: str = REQUIREMENTS_FILE, ask: bool = True) -> bool:
    """Install the missing requirements of ``path`` with ``slicer.util.pip_install``, after
    the user agrees (``ask=False``: without asking, for the self-test). True when all are
    installed."""
    missing = missingPythonRequirements(path)
    if not missing:
        return True
    if ask and not slicer.util.confirmOkCancelDisplay(
        _(
            "MESCC Analyzer needs these Python packages, not installed in Slicer yet:\n\n"
            "{packages}\n\nInstall them now? It needs an internet connection and may take "
            "a minute."
        ).format(packages="\n".join(missing)),
        windowTitle=_("MESCC Analyzer: install Python packages"),
    ):
        return False
    with slicer.util.tryWithErrorDisplay(
        _("Failed to install the Python packages {packages}.").format(packages=", ".join(missing)),
        waitCursor=True,
    ):
        slicer.util.pip_install(missing)
    return not missingPythonRequirements(path)


#
# MESCCAnalyzer
#
class MESCCAnalyzer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MESCC Analyzer")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = ["Segmentations", "Markups", "Plots", "Tables"]
        self.parent.contributors = ["MESCCAnalyzer developers"]
        self.parent.helpText = _(
            "Metastatic epidural spinal cord compression: load an MRI/CT/PET study (PET as SUV), "
            "co-register PET-CT with the MRI, segment the mass, cord and thecal sac from seeds, "
            "and measure cord compression in 3D (MSCC, canal compromise, Bilsky grade). "
            "See docs/methods.md of the extension for every metric's formula and source."
        )
        self.parent.acknowledgementText = _(
            "Test data: Spinal Cord Toolbox (MIT), TCIA ACRIN-FLT-Breast, TotalSegmentator, TPTBox."
        )


#
# MESCCAnalyzerParameterNode
#
@parameterNodeWrapper
class MESCCAnalyzerParameterNode:
    """The panel's state, saved with the scene (results included: the preview segmentation
    and the metrics table)."""

    mriVolume: vtkMRMLScalarVolumeNode
    t1Volume: vtkMRMLScalarVolumeNode
    ctVolume: vtkMRMLScalarVolumeNode
    petVolume: vtkMRMLScalarVolumeNode
    dwiVolume: vtkMRMLDiffusionWeightedVolumeNode
    dwiPath: Path  # a DWI not loaded as a DWI node: a file of its DICOM series, or a 4D NIfTI
    adcVolume: vtkMRMLScalarVolumeNode
    sampleGrade: Annotated[str, Choice(GRADES), Default("2")]
    sampleSeed: Annotated[int, Default(0)]
    registrationPreset: Annotated[str, Choice(PRESETS), Default("rigid")]
    registrationRoi: vtkMRMLMarkupsROINode
    fixedLandmarks: vtkMRMLMarkupsFiducialNode
    movingLandmarks: vtkMRMLMarkupsFiducialNode
    ctToMriTransform: vtkMRMLTransformNode
    segmentation: vtkMRMLSegmentationNode
    autoUpdate: Annotated[bool, Default(False)]
    previewSegmentationNode: vtkMRMLSegmentationNode
    vertebraeVolume: vtkMRMLLabelMapVolumeNode
    levelAnchor: vtkMRMLMarkupsFiducialNode
    metricsTableNode: vtkMRMLTableNode
    levelsTableNode: vtkMRMLTableNode


#
# MESCCAnalyzerWidget
#
class MESCCAnalyzerWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._observedSegmentation = None
        self._growTimer = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MESCCAnalyzer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        # First use: install what the engine needs beyond Slicer's own packages, after asking
        # (not in Slicer's automatic tests: the self-test installs them itself).
        if not slicer.app.testingEnabled():
            ensurePythonRequirements()
        self.logic = MESCCAnalyzerLogic()

        editorNode = self.logic.segmentEditorNode()
        self.ui.segmentEditorWidget.setMRMLSegmentEditorNode(editorNode)
        self._growTimer = qt.QTimer()
        self._growTimer.setSingleShot(True)
        self._growTimer.setInterval(400)  # re-grow shortly after the last stroke
        self._growTimer.connect("timeout()", self.onGrow)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.loadDicomButton.connect("clicked(bool)", self.onLoadDicom)
        self.ui.convertPetButton.connect("clicked(bool)", self.onConvertPet)
        self.ui.computeAdcButton.connect("clicked(bool)", self.onComputeAdc)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
        self.ui.registerButton.connect("clicked(bool)", self.onRegister)
        self.ui.createSegmentationButton.connect("clicked(bool)", self.onCreateSegmentation)
        self.ui.growButton.connect("clicked(bool)", self.onGrow)
        self.ui.acceptButton.connect("clicked(bool)", self.onAccept)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelPreview)
        self.ui.computeMetricsButton.connect("clicked(bool)", self.onComputeMetrics)
        self.ui.levelsTableView.connect("clicked(QModelIndex)", self.onLevelClicked)
        self.ui.saveReportButton.connect("clicked(bool)", self.onSaveReport)
        self.ui.exportDicomButton.connect("clicked(bool)", self.onExportDicom)
        self.initializeParameterNode()

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        self.setParameterNode(None)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateGUI)
            self._showResults(self.logic.storedMetrics())  # measured before: also after reopening
            self._updateGUI()

    # -- state shown in the panel ---------------------------------------------------------
    def _updateGUI(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None:
            return
        hasMri = p.mriVolume is not None
        if not hasMri:
            self.ui.studyStatusLabel.text = _(
                "Select the MRI (reference), or load the sample study."
            )
        else:
            names = [
                n.GetName()
                for n in (p.mriVolume, p.t1Volume, p.ctVolume, p.petVolume)
                if n is not None
            ]
            self.ui.studyStatusLabel.text = _("Study: {names}").format(names=", ".join(names))
        self.ui.convertPetButton.enabled = p.petVolume is not None
        hasDwi = p.dwiVolume is not None or self.logic.dwiFile(p) is not None
        self.ui.computeAdcButton.enabled = hasMri and hasDwi
        self.ui.computeAdcButton.toolTip = (
            _("Fit the ADC map of the DWI, register it to the MRI around the segmented cord "
              "(by the scanner's geometry when no cord is segmented) and show it on the "
              "MRI's grid with a colour bar.")
            if hasMri and hasDwi
            else _("Select the MRI and a DWI volume (or a DWI file) first.")
        )  # fmt: skip
        canRegister = hasMri and p.ctVolume is not None
        self.ui.registerButton.enabled = canRegister
        self.ui.registerButton.toolTip = (
            _("Register the CT to the MRI; the PET follows.")
            if canRegister
            else _("Select the MRI and the CT first.")
        )
        self.ui.createSegmentationButton.enabled = hasMri
        self.ui.segmentEditorWidget.setSegmentationNode(p.segmentation)
        self.ui.segmentEditorWidget.setSourceVolumeNode(p.mriVolume)
        canGrow = hasMri and p.segmentation is not None
        self.ui.growButton.enabled = canGrow
        self.ui.growButton.toolTip = (
            _("Grow every seed label competitively into a preview.")
            if canGrow
            else _("Select the MRI and a segmentation with seed strokes first.")
        )
        hasPreview = p.previewSegmentationNode is not None
        self.ui.acceptButton.enabled = hasPreview
        self.ui.cancelButton.enabled = hasPreview
        self.ui.computeMetricsButton.enabled = canGrow and not hasPreview
        self.ui.computeMetricsButton.toolTip = (
            _("Accept or cancel the preview first.")
            if hasPreview
            else _("Compute the compression metrics.")
        )
        measured = p.metricsTableNode is not None
        self.ui.saveReportButton.enabled = measured
        self.ui.exportDicomButton.enabled = measured
        self.ui.exportDicomButton.toolTip = (
            _("Write DICOM SEG and SR on the MRI's series (RTSTRUCT on the CT's) and add them "
              "to Slicer's DICOM database.")
            if measured
            else _("Compute the metrics first.")
        )  # fmt: skip
        self.ui.metricsTableView.setMRMLTableNode(p.metricsTableNode)
        self.ui.levelsTableView.setMRMLTableNode(p.levelsTableNode)
        self._observeSegmentation(p.segmentation if p.autoUpdate else None)

    def _observeSegmentation(self, node) -> None:
        if node is self._observedSegmentation:
            return
        if self._observedSegmentation is not None:
            self.removeObserver(
                self._observedSegmentation, vtk.vtkCommand.ModifiedEvent, self._onStroke
            )
        self._observedSegmentation = node
        if node is not None:
            self.addObserver(node, vtk.vtkCommand.ModifiedEvent, self._onStroke)

    def _onStroke(self, caller=None, event=None) -> None:
        self._growTimer.start()

    def _run(self, title, function):
        """Run a long step with a cancellable progress dialog; errors in a message box."""
        with slicer.util.tryWithErrorDisplay(title, waitCursor=True):
            dialog = slicer.util.createProgressDialog(labelText=title, maximum=100)
            try:

                def report(fraction, message):
                    dialog.labelText = f"{title}\n{message}"
                    dialog.value = int(100 * fraction)
                    slicer.app.processEvents()

                return function(report, lambda: dialog.wasCanceled)
            finally:
                dialog.close()

    # -- actions ---------------------------------------------------------------------------
    def onLoadDicom(self) -> None:
        slicer.util.selectModule("DICOM")

    def onConvertPet(self) -> None:
        p = self._parameterNode
        with slicer.util.tryWithErrorDisplay(
            _("Failed to convert the PET to SUV."), waitCursor=True
        ):
            files = self.logic.dicomFilesOf(p.petVolume)
            self.logic.convertPetToSuv(p.petVolume, files)

    def onComputeAdc(self) -> None:
        p = self._parameterNode

        def run(report, cancel):
            self.ui.adcStatusLabel.text = self.logic.computeAdc(p, progress=report, cancel=cancel)

        self._run(_("Computing the ADC map..."), run)

    def onLoadSample(self) -> None:
        p = self._parameterNode
        folder = os.path.join(
            slicer.app.temporaryPath,
            "MESCCAnalyzer",
            f"phantom_grade{p.sampleGrade}_seed{p.sampleSeed}",
        )
        self._run(
            _("Loading the sample study..."),
            lambda report, cancel: self.logic.loadSampleStudy(
                p, folder, progress=report, cancel=cancel
            ),
        )

    def onRegister(self) -> None:
        p = self._parameterNode

        def run(report, cancel):
            quality = self.logic.register(p, progress=report, cancel=cancel)
            self.ui.registrationQualityLabel.text = quality

        self._run(_("Registering the CT to the MRI..."), run)

    def onCreateSegmentation(self) -> None:
        with slicer.util.tryWithErrorDisplay(
            _("Failed to create the segmentation."), waitCursor=True
        ):
            self.logic.createSegmentation(self._parameterNode)

    def onGrow(self) -> None:
        p = self._parameterNode
        if p is None or p.segmentation is None or p.mriVolume is None:
            return

        def run(report, cancel):
            self.ui.segmentationStatusLabel.text = self.logic.growPreview(
                p, progress=report, cancel=cancel
            )

        self._run(_("Growing from seeds..."), run)

    def onAccept(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to accept the preview."), waitCursor=True):
            self.logic.acceptPreview(self._parameterNode)
            self.ui.segmentationStatusLabel.text = _("Segments replaced by the grown preview.")

    def onCancelPreview(self) -> None:
        self.logic.discardPreview(self._parameterNode)
        self.ui.segmentationStatusLabel.text = _("Preview discarded; the strokes are kept.")

    def onComputeMetrics(self) -> None:
        p = self._parameterNode

        def run(report, cancel):
            self._showResults(self.logic.computeMetrics(p, progress=report, cancel=cancel))

        self._run(_("Measuring the compression..."), run)
        self._updateGUI()

    def _showResults(self, metrics) -> None:
        """The study's grade and reason, and one block per lesion (empty before measuring)."""
        if metrics is None:
            self.ui.bilskyGradeLabel.text = _("Bilsky grade: -")
            self.ui.bilskyReasonLabel.text = ""
            self.ui.lesionsTextBrowser.setHtml("")
            self.ui.levelsNoteLabel.text = ""
            return
        grade = metrics.get("bilsky_grade")
        self.ui.bilskyGradeLabel.text = _("Bilsky grade: {grade}").format(
            grade=grade if grade is not None else _("none (no mass)")
        )
        self.ui.bilskyReasonLabel.text = metrics.get("bilsky_reason") or ""
        self.ui.lesionsTextBrowser.setHtml(self.logic.lesionsHtml(metrics))
        self.ui.levelsNoteLabel.text = self.logic.levelsNote(metrics)

    def onLevelClicked(self, index) -> None:
        """A row of the level table: the slice views jump to the middle of that level."""
        with slicer.util.tryWithErrorDisplay(_("Failed to jump to the level."), waitCursor=True):
            # the level's name (column 0): right also when the table view is sorted
            self.logic.jumpToLevel(index.sibling(index.row(), 0).data())

    def onExportDicom(self) -> None:
        with slicer.util.tryWithErrorDisplay(_("Failed to export to DICOM."), waitCursor=True):
            folder = tempfile.mkdtemp(prefix="MESCCAnalyzer_dicom_", dir=slicer.app.temporaryPath)
            self.ui.dicomStatusLabel.text = self.logic.exportDicom(self._parameterNode, folder)

    def onSaveReport(self) -> None:
        if not ensurePythonRequirements():  # declined on first use: the report needs them
            return
        sceneFolder = (
            os.path.dirname(slicer.mrmlScene.GetURL() or "") or slicer.app.defaultScenePath
        )
        path = qt.QFileDialog.getSaveFileName(
            self.parent,
            _("Save report"),
            os.path.join(sceneFolder, "mescc_report.html"),
            "HTML (*.html)",
        )
        if not path:
            return
        with slicer.util.tryWithErrorDisplay(_("Failed to save the report."), waitCursor=True):
            self.logic.saveReport(self._parameterNode, path)
            self.ui.reportStatusLabel.text = _("Report written: {path}").format(path=path)


#
# MESCCAnalyzerLogic
#
class MESCCAnalyzerLogic(ScriptedLoadableModuleLogic):
    """Forwards to MESCCAnalyzerLib.mrml.workflow; no computation here."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        from MESCCAnalyzerLib.mrml.workflow import Workflow

        self.workflow = Workflow(slicer.mrmlScene)

    @property
    def lastMetrics(self):
        return self.workflow.last_metrics

    def storedMetrics(self) -> dict | None:
        """The metrics measured last in this scene (None before measuring)."""
        return self.workflow.results_metrics()

    def lesionsHtml(self, metrics) -> str:
        from MESCCAnalyzerLib.presentation import lesions_html

        return lesions_html(metrics)

    def levelsNote(self, metrics) -> str:
        from MESCCAnalyzerLib.presentation import levels_note

        return levels_note(metrics)

    def getParameterNode(self):
        return MESCCAnalyzerParameterNode(super().getParameterNode())

    def segmentEditorNode(self):
        node = slicer.mrmlScene.GetSingletonNode("MESCCAnalyzer", "vtkMRMLSegmentEditorNode")
        if node is None:
            node = slicer.mrmlScene.CreateNodeByClass("vtkMRMLSegmentEditorNode")
            node.UnRegister(None)
            node.SetSingletonTag("MESCCAnalyzer")
            node = slicer.mrmlScene.AddNode(node)
        return node

    def dicomFilesOf(self, volumeNode):
        uids = (volumeNode.GetAttribute("DICOM.instanceUIDs") or "").split()
        files = [slicer.dicomDatabase.fileForInstance(uid) for uid in uids]
        return [f for f in files if f]

    def convertPetToSuv(self, petNode, files):
        return self.workflow.convert_pet_to_suv(petNode, files)

    def loadSampleStudy(self, p, folder, progress=None, cancel=None):
        nodes = self.workflow.load_sample(
            folder,
            grade=p.sampleGrade,
            seed=p.sampleSeed,
            dwi=True,
            progress=progress,
            cancel=cancel,
        )
        p.mriVolume, p.t1Volume, p.ctVolume, p.petVolume = nodes.mri, nodes.t1, nodes.ct, nodes.pet
        p.dwiVolume = nodes.dwi  # the phantom's DWI series, as SlicerDMRI loads one
        p.segmentation = nodes.segmentation
        p.vertebraeVolume = nodes.vertebrae  # a whole-spine study's VerSe labelmap, if any
        return nodes

    def dwiFile(self, p) -> Path | None:
        """The DWI file box's path, None when empty (an unset path reads as ".")."""
        path = p.dwiPath
        return path if path is not None and str(path) not in ("", ".") else None

    def computeAdc(self, p, progress=None, cancel=None) -> str:
        """The ADC map of the DWI volume (else the DWI file) on the MRI's grid; the panel's
        ADC selector takes it. Returns the sentence shown under the button."""
        made = self.workflow.compute_adc(
            p.mriVolume,
            dwi_node=p.dwiVolume,
            dwi_path=self.dwiFile(p) if p.dwiVolume is None else None,
            segmentation_node=p.segmentation,
            adc_node=p.adcVolume,
            progress=progress,
            cancel=cancel,
        )
        p.adcVolume = made.adc_node
        return made.text

    def register(self, p, progress=None, cancel=None) -> str:
        result = self.workflow.register(
            p.mriVolume,
            p.ctVolume,
            p.petVolume,
            preset=p.registrationPreset,
            roi_node=p.registrationRoi,
            fixed_landmarks=p.fixedLandmarks,
            moving_landmarks=p.movingLandmarks,
            transform_node=p.ctToMriTransform,
            progress=progress,
            cancel=cancel,
        )
        p.ctToMriTransform = result.transform_node
        return result.quality_text

    def createSegmentation(self, p):
        p.segmentation = self.workflow.create_segmentation(p.mriVolume)

    def growPreview(self, p, progress=None, cancel=None) -> str:
        preview, text = self.workflow.grow_preview(
            p.segmentation,
            p.mriVolume,
            p.petVolume,
            preview_node=p.previewSegmentationNode,
            progress=progress,
            cancel=cancel,
        )
        p.previewSegmentationNode = preview
        return text

    def acceptPreview(self, p):
        self.workflow.accept_preview(p.segmentation, p.previewSegmentationNode, p.mriVolume)
        p.previewSegmentationNode = None

    def discardPreview(self, p):
        self.workflow.discard_preview(p.previewSegmentationNode)
        p.previewSegmentationNode = None

    def computeMetrics(self, p, progress=None, cancel=None):
        nodes = self.workflow.compute_metrics(
            p.segmentation,
            p.mriVolume,
            p.petVolume,
            vertebrae_node=p.vertebraeVolume,
            level_anchor_node=p.levelAnchor,
            adc_node=p.adcVolume,
            progress=progress,
            cancel=cancel,
        )
        p.metricsTableNode = nodes.metrics_table
        p.levelsTableNode = nodes.levels_table
        self.workflow.show_results()
        chart = nodes.chart
        if chart is not None and slicer.app.layoutManager() is not None:
            slicer.modules.plots.logic().ShowChartInLayout(chart)
        return self.workflow.last_metrics.metrics

    def jumpToLevel(self, level):
        """Slice views on a level of the level table (its name or row); the point (LPS mm)."""
        return self.workflow.jump_to_level(level)

    def saveReport(self, p, path):
        return self.workflow.save_report(
            path, p.mriVolume, p.segmentation, p.petVolume, adc_node=p.adcVolume
        )

    def exportDicom(self, p, folder) -> str:
        """SEG, SR (and RTSTRUCT with a CT) into ``folder``, then into Slicer's DICOM database
        (from there Slicer sends them to a PACS); the summary shown in the panel."""
        outcome = self.workflow.export_dicom(
            folder,
            p.mriVolume,
            p.segmentation,
            ct_node=p.ctVolume,
            mri_files=self.dicomFilesOf(p.mriVolume),
            ct_files=self.dicomFilesOf(p.ctVolume) if p.ctVolume is not None else None,
        )
        if slicer.dicomDatabase is not None and slicer.dicomDatabase.isOpen:
            from DICOMLib import DICOMUtils

            DICOMUtils.importDicom(str(outcome.folder), copyFiles=True)
            return outcome.summary() + "\n" + _("Added to the DICOM database.")
        return outcome.summary() + "\n" + _("No DICOM database is open: the files stay there.")


#
# MESCCAnalyzerTest
#
class MESCCAnalyzerTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_end_to_end_on_the_sample_study()

    def test_end_to_end_on_the_sample_study(self):
        """Load the phantom, register, grow from its seed strokes, compute the ADC, measure,
        report."""
        self.assertTrue(ensurePythonRequirements(ask=False), "the engine's packages are missing")
        self.delayDisplay("Loading the sample study (phantom, grade 2)")
        logic = MESCCAnalyzerLogic()
        p = logic.getParameterNode()
        p.sampleGrade = "2"
        with tempfile.TemporaryDirectory() as folder:
            nodes = logic.loadSampleStudy(p, os.path.join(folder, "phantom"))
            self.assertIsNotNone(p.ctVolume)
            petArray = slicer.util.arrayFromVolume(p.petVolume)
            self.assertGreater(float(petArray.max()), 3.0)  # SUVbw: the mass (truth 7, blurred)

            self.delayDisplay("Registering")
            logic.register(p)
            self.assertIsNotNone(p.ctToMriTransform)

            self.delayDisplay("Growing from seeds")
            logic.growPreview(p)
            logic.acceptPreview(p)

            self.delayDisplay("Computing the ADC map")
            self.assertIsNotNone(p.dwiVolume)
            text = logic.computeAdc(p)
            self.assertIn("registered rigidly to the MRI around the cord", text)
            adcNode = p.adcVolume
            self.assertEqual(adcNode.GetImageData().GetDimensions(),
                             p.mriVolume.GetImageData().GetDimensions())  # fmt: skip
            legends = [
                adcNode.GetNthDisplayNode(i)
                for i in range(adcNode.GetNumberOfDisplayNodes())
                if adcNode.GetNthDisplayNode(i).IsA("vtkMRMLColorLegendDisplayNode")
            ]
            self.assertEqual(len(legends), 1)  # the colour bar

            self.delayDisplay("Measuring")
            metrics = logic.computeMetrics(p)
            self.assertEqual(metrics["bilsky_grade"], nodes.truth["grade"])
            self.assertAlmostEqual(metrics["mscc_percent"], nodes.truth["mscc_percent"], delta=5.0)
            # the mass's ADC (1 mm inset) within 3 % of the phantom's tumour ADC (the goal)
            truthAdc = nodes.truth["dwi"]["adc"]["mass"]
            self.assertAlmostEqual(
                metrics["lesions"][0]["adc_mean"], truthAdc, delta=0.03 * truthAdc
            )

            self.delayDisplay("Levels and lesions")
            table = p.levelsTableNode
            self.assertIsNotNone(table)
            self.assertEqual(table.GetNumberOfRows(), len(metrics["levels"]))
            self.assertIn("Lesion 1", logic.lesionsHtml(metrics))
            flagged = [i for i, row in enumerate(metrics["levels"]) if row["lesion_ids"]]
            self.assertTrue(flagged, "no level holds the mass")
            point = logic.jumpToLevel(flagged[0])
            red = slicer.mrmlScene.GetSingletonNode("Red", "vtkMRMLSliceNode")
            # the axial view's plane passes through the level's centreline point (S = LPS z)
            self.assertAlmostEqual(red.GetSliceToRAS().GetElement(2, 3), point[2], places=3)

            report = os.path.join(folder, "report.html")
            logic.saveReport(p, report)
            self.assertTrue(os.path.getsize(report) > 10000)

            self.delayDisplay("Exporting to DICOM")
            import pydicom
            from DICOMLib import DICOMUtils

            with DICOMUtils.TemporaryDICOMDatabase():  # the user's database stays untouched
                summary = logic.exportDicom(p, os.path.join(folder, "dicom"))
                self.assertIn("Added to the DICOM database", summary)
                for name in ("seg.dcm", "sr.dcm", "rtstruct.dcm"):
                    path = os.path.join(folder, "dicom", name)
                    uid = pydicom.dcmread(path, stop_before_pixels=True).SeriesInstanceUID
                    self.assertTrue(slicer.dicomDatabase.filesForSeries(uid), name)
        self.delayDisplay("Sample study analysed end to end")
