"""MESCC Analyzer: 3D Slicer module for metastatic epidural spinal cord compression.

Thin by design: the Module, a parameter node, a Widget that binds the .ui to it, a Logic that
forwards to ``MESCCAnalyzerLib.mrml`` (the MRML logic pytest drives on a bare scene), and the
self-test run by "Reload and Test".
"""

import os
import tempfile
from typing import Annotated

import slicer
import vtk
from slicer import vtkMRMLScalarVolumeNode
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


#
# MESCCAnalyzer
#
class MESCCAnalyzer(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("MESCC Analyzer")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["MESCCAnalyzer developers"]
        self.parent.helpText = _(
            "Metastatic epidural spinal cord compression: load an MRI/CT/PET study (PET as SUV), "
            "co-register PET-CT with the MRI, segment the mass, cord and thecal sac from seeds, "
            "and measure cord compression in 3D (MSCC, canal compromise, Bilsky grade). "
            "See the README of the extension for every metric's formula and source."
        )
        self.parent.acknowledgementText = _(
            "Test data: Spinal Cord Toolbox (MIT), TCIA ACRIN-FLT-Breast, TotalSegmentator, TPTBox."
        )


#
# MESCCAnalyzerParameterNode
#
@parameterNodeWrapper
class MESCCAnalyzerParameterNode:
    """The panel's state, saved with the scene."""

    mriVolume: vtkMRMLScalarVolumeNode
    ctVolume: vtkMRMLScalarVolumeNode
    petVolume: vtkMRMLScalarVolumeNode
    sampleGrade: Annotated[str, Choice(GRADES), Default("2")]
    sampleSeed: Annotated[int, Default(0)]


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

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/MESCCAnalyzer.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = MESCCAnalyzerLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.loadDicomButton.connect("clicked(bool)", self.onLoadDicom)
        self.ui.loadSampleButton.connect("clicked(bool)", self.onLoadSample)
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
            self.removeObserver(
                self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateStatus
            )
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._updateStatus)
            self._updateStatus()

    def _updateStatus(self, caller=None, event=None) -> None:
        p = self._parameterNode
        if p is None or p.mriVolume is None:
            self.ui.studyStatusLabel.text = _(
                "Select the MRI (reference), or load the sample study."
            )
        else:
            parts = [p.mriVolume.GetName()]
            parts += [n.GetName() for n in (p.ctVolume, p.petVolume) if n is not None]
            self.ui.studyStatusLabel.text = _("Study: {names}").format(names=", ".join(parts))

    def onLoadDicom(self) -> None:
        slicer.util.selectModule("DICOM")

    def onLoadSample(self) -> None:
        p = self._parameterNode
        folder = os.path.join(
            slicer.app.temporaryPath,
            "MESCCAnalyzer",
            f"phantom_grade{p.sampleGrade}_seed{p.sampleSeed}",
        )
        with slicer.util.tryWithErrorDisplay(
            _("Failed to load the sample study."), waitCursor=True
        ):
            progress = slicer.util.createProgressDialog(
                labelText=_("Creating the sample study..."), maximum=100
            )
            try:

                def report(fraction, message):
                    progress.labelText = message
                    progress.value = int(100 * fraction)
                    slicer.app.processEvents()

                self.logic.loadSampleStudy(
                    p, folder, progress=report, cancel=lambda: progress.wasCanceled
                )
            finally:
                progress.close()


#
# MESCCAnalyzerLogic
#
class MESCCAnalyzerLogic(ScriptedLoadableModuleLogic):
    """Forwards to MESCCAnalyzerLib.mrml; no computation here."""

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return MESCCAnalyzerParameterNode(super().getParameterNode())

    def loadSampleStudy(self, parameterNode, folder, progress=None, cancel=None):
        from MESCCAnalyzerLib.mrml.study import load_phantom_study

        nodes = load_phantom_study(
            slicer.mrmlScene,
            folder,
            grade=parameterNode.sampleGrade,
            seed=parameterNode.sampleSeed,
            progress=progress,
            cancel=cancel,
        )
        parameterNode.mriVolume = nodes.mri
        parameterNode.ctVolume = nodes.ct
        parameterNode.petVolume = nodes.pet
        slicer.util.setSliceViewerLayers(background=nodes.mri, fit=True)
        return nodes


#
# MESCCAnalyzerTest
#
class MESCCAnalyzerTest(ScriptedLoadableModuleTest):
    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_load_sample_study()

    def test_load_sample_study(self):
        self.delayDisplay("Loading the sample study (phantom, grade 2)")
        logic = MESCCAnalyzerLogic()
        parameterNode = logic.getParameterNode()
        parameterNode.sampleGrade = "2"
        with tempfile.TemporaryDirectory() as folder:
            nodes = logic.loadSampleStudy(parameterNode, os.path.join(folder, "phantom"))
        self.assertIs(parameterNode.mriVolume, nodes.mri)
        self.assertIsNotNone(parameterNode.ctVolume)
        # PET is converted to SUVbw on load: the mass (truth SUV 7, blurred) stands out.
        petArray = slicer.util.arrayFromVolume(parameterNode.petVolume)
        self.assertGreater(float(petArray.max()), 3.0)
        self.assertLess(float(petArray.max()), 7.5)
        self.assertEqual(nodes.truth["grade"], "2")
        self.delayDisplay("Sample study loaded")
