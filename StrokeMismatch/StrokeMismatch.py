"""StrokeMismatch: acute-stroke perfusion (DSC-MR / CT perfusion) to core / penumbra mismatch.

Thin Slicer layer: the widget and the logic only move data between MRML nodes and
``StrokeMismatchLib`` (``mrmlio`` for nodes, ``pipeline.run_case`` for the science).
Research and teaching software for decision support; not a medical device.
"""

import dataclasses
import enum
import logging
import os
from typing import Annotated

import numpy as np
import vtk

import slicer
from slicer import (
    vtkMRMLMarkupsFiducialNode,
    vtkMRMLScalarVolumeNode,
    vtkMRMLSegmentationNode,
    vtkMRMLSequenceNode,
    vtkMRMLTableNode,
)
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, Default, WithinRange, parameterNodeWrapper, parameterPack
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from StrokeMismatchLib import DISCLAIMER, inspector, mrmlio
from StrokeMismatchLib.errors import AnalysisCancelled, StrokeMismatchError

#: The sample cases (Sample Data → Stroke perfusion) are built on the spot from the digital phantom
#: (``StrokeMismatchLib.samplecase``): no download, they work offline. Accepted relative error of
#: the self-test's volumes against the phantom's truth (plus 1 mL); Testing/test_sample_data.py
#: checks that the analysis meets it outside Slicer.
SAMPLE_TOLERANCE = {"core": 0.10, "hypoperfusion": 0.10}


#
# StrokeMismatch
#


class StrokeMismatch(ScriptedLoadableModule):
    """Module description for Slicer's module list."""

    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Stroke Mismatch")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Quantification")]
        self.parent.dependencies = []
        self.parent.contributors = ["StrokeMismatch developers"]
        self.parent.helpText = _(
            "Perfusion maps (CBF, CBV, MTT, Tmax, TTP) from DSC-MR or CT perfusion by deconvolution "
            "(oSVD, cSVD, sSVD, Tikhonov), ischemic core (ADC or relative CBF), hypoperfusion "
            "(Tmax above a threshold), penumbra, volumes, mismatch ratio and trial criteria "
            "(DEFUSE 3, EXTEND-IA, DAWN) with reasons. Edit the segments and press 'Update from "
            "segments' to recompute. Move the mouse over the images with the curve inspector on "
            "to see a voxel's curves. "
        ) + _(DISCLAIMER) + _(
            " See <a href=\"https://github.com/StrokeMismatch/SlicerStrokeMismatch\">the documentation</a>."
        )
        self.parent.acknowledgementText = _(
            "Open-source research and teaching software. Methods: Østergaard 1996 (sSVD), Wu 2003 "
            "(cSVD/oSVD), Mouridsen 2006 (automatic AIF), Albers 2018 (DEFUSE 3), Campbell 2015 "
            "(EXTEND-IA), Nogueira 2018 (DAWN)."
        )
        slicer.app.connect("startupCompleted()", registerSampleData)


_sampleDataRegistered = False


def loadSampleCase(modality="mr"):
    """Build the sample phantom with the Lib (no download) and add it to the scene.

    :param modality: "mr" (DSC-MR series + ADC) or "ct" (CT perfusion series).
    :return: dict of nodes: sequence, browser, proxy, and adc (MR).
    """
    from StrokeMismatchLib.samplecase import make_sample_case

    return mrmlio.sample_case_nodes(make_sample_case(modality))


def registerSampleData():
    """Register the MR and CT phantoms in the Sample Data module (one click, offline)."""
    global _sampleDataRegistered
    if _sampleDataRegistered:
        return
    _sampleDataRegistered = True
    import SampleData

    from StrokeMismatchLib.samplecase import SAMPLE_NAMES

    iconsPath = os.path.join(os.path.dirname(__file__), "Resources/Icons")
    logic = SampleData.SampleDataLogic
    if hasattr(logic, "registerCustomSampleDataCategory"):  # Slicer 5.12+
        logic.registerCustomSampleDataCategory("Stroke perfusion", title=_("Stroke perfusion"))
    for modality, sampleName in SAMPLE_NAMES.items():
        # The Sample Data button calls customDownloader(source): the case is built locally.
        logic.registerCustomSampleDataSource(
            category="Stroke perfusion",
            sampleName=sampleName,
            thumbnailFileName=os.path.join(iconsPath, "StrokeMismatch.png"),
            uris=[],
            fileNames=[],
            nodeNames=[sampleName],
            customDownloader=lambda source=None, modality=modality: loadSampleCase(modality),
        )


#
# Parameter node
#


class Modality(enum.Enum):
    MR = "MR"
    CT = "CT"


class AifMode(enum.Enum):
    Automatic = "Automatic"
    Manual = "Manual"


class AutoOnOff(enum.Enum):
    """A setting of kind "auto_bool" (None = by modality, as its help says; True; False)."""

    Auto = "Auto"
    On = "On"
    Off = "Off"

    def setting(self):
        """The Lib value: None (automatic, by modality), True or False."""
        return {"Auto": None, "On": True, "Off": False}[self.name]

    @classmethod
    def fromSetting(cls, value):
        return cls.Auto if value is None else (cls.On if value else cls.Off)


#: An optional number (age, NIHSS, vessel TTP window...) is held as this value below the
#: setting's minimum when not given; its spin box shows "auto" or "not given" there.
OPTIONAL_OFFSET = 1


def _settingField(spec):
    """The annotated type of the parameter-pack field of one schema setting
    (``StrokeMismatchLib.settings.Setting``): the range is the schema's (an optional number
    reserves one step below its minimum for "not given"), choices and default are the schema's
    (a parameter pack takes its defaults from ``Default``, not from class attributes)."""
    if spec.kind == "bool":
        return Annotated[bool, Default(bool(spec.default))]
    if spec.kind == "auto_bool":
        return Annotated[AutoOnOff, Default(AutoOnOff.fromSetting(spec.default))]
    if spec.kind == "choice":
        return Annotated[str, Choice(list(spec.choices)), Default(str(spec.default))]
    number = int if spec.kind in ("int", "optional_int") else float
    low = spec.minimum
    if spec.kind.startswith("optional"):
        low = spec.minimum - OPTIONAL_OFFSET
    default = spec.default if spec.default is not None else low
    return Annotated[number, WithinRange(number(low), number(spec.maximum)), Default(number(default))]


def _settingsPack():
    """The parameter pack holding every user setting of the schema (``settings.all_settings()``),
    one field per setting, same name, default, unit and range as the command line."""
    from StrokeMismatchLib.settings import all_settings

    namespace = {"__annotations__": {spec.name: _settingField(spec) for spec in all_settings()},
                 "__module__": __name__,
                 "__doc__": "Every analysis setting (StrokeMismatchLib.settings), derived from the schema."}
    return parameterPack(type("StrokeMismatchSettings", (), namespace))


StrokeMismatchSettings = _settingsPack()


@parameterNodeWrapper
class StrokeMismatchParameterNode:
    """The panel's state, saved with the scene.

    ``settings`` holds every analysis setting of ``StrokeMismatchLib.settings`` (derived from the
    schema: same names, defaults, units and ranges as ``stroke-mismatch analyze``). The other
    fields are the inputs: frame times in s (comma separated), TE and TR in ms.
    """

    # connectGui sets each node combo box's nodeTypes from these annotations (a MultiVolume or a
    # sequence proxy is a vtkMRMLScalarVolumeNode subclass); the .ui hides label maps.
    perfusionNode: vtkMRMLSequenceNode | vtkMRMLScalarVolumeNode | None
    frameTimes: str = ""
    modality: Modality = Modality.MR
    echoTimeMs: Annotated[float, WithinRange(0.0, 200.0)] = 30.0
    repetitionTimeMs: Annotated[float, WithinRange(0.0, 10000.0)] = 1500.0
    adcVolume: vtkMRMLScalarVolumeNode | None
    aifMode: AifMode = AifMode.Automatic
    aifPoints: vtkMRMLMarkupsFiducialNode | None
    settings: StrokeMismatchSettings
    showTmaxAbove10: bool = True
    replaceOutputs: bool = False
    outputSegmentation: vtkMRMLSegmentationNode | None
    outputTable: vtkMRMLTableNode | None
    inspectorEnabled: bool = False


#
# Widget
#


class StrokeMismatchWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: binds the .ui to the parameter node and forwards actions to the Logic."""

    def __init__(self, parent=None) -> None:
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._lastPerfusionNodeId = None
        self._observedAifPoints = None
        self._crosshairNode = None

    def setup(self) -> None:
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/StrokeMismatch.ui"))
        self.layout.addWidget(uiWidget)
        self._settingWidgets = self._createSettingWidgets(slicer.util.findChild(uiWidget, "settingsFrame"))
        self.ui = slicer.util.childWidgetVariables(uiWidget)  # the setting widgets included
        uiWidget.setMRMLScene(slicer.mrmlScene)

        self.logic = StrokeMismatchLogic()

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.updateFromSegmentsButton.connect("clicked(bool)", self.onUpdateFromSegments)
        self.ui.showAifButton.connect("clicked(bool)", self.onShowAif)
        self.ui.inspectorCheckBox.connect("toggled(bool)", self.onInspectorToggled)
        self.ui.aifPointsSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.onAifPointsNodeChanged)

        self.initializeParameterNode()

    def _createSettingWidgets(self, frame) -> dict:
        """One collapsible group per schema group (``settings.settings_by_group()``), one widget
        per setting: range, unit as suffix, tool tip = help, bound to ``settings.<name>``.
        Returns {setting name: widget}."""
        import ctk
        import qt

        from StrokeMismatchLib.settings import settings_by_group

        widgets = {}
        frameLayout = frame.layout()
        for group, specs in settings_by_group().items():
            box = ctk.ctkCollapsibleGroupBox()
            box.title = _(group)
            box.objectName = "settingsGroup" + "".join(part.capitalize() for part in group.split() if part.isalnum())
            box.collapsed = group not in ("Core", "Hypoperfusion")
            form = qt.QFormLayout(box)
            frameLayout.addWidget(box)
            for spec in specs:
                look = StrokeMismatchLogic.settingWidgetSpec(spec)
                widget = getattr(qt, look["widget"])()
                if look["widget"] in ("QSpinBox", "QDoubleSpinBox"):
                    if look["widget"] == "QDoubleSpinBox":
                        widget.decimals = look["decimals"]
                    widget.minimum, widget.maximum = look["minimum"], look["maximum"]
                    widget.singleStep = look["step"]
                    widget.suffix = look["suffix"]
                    widget.specialValueText = look["specialValueText"]
                widget.objectName = f"{spec.name}Setting"
                widget.toolTip = look["toolTip"]
                widget.setProperty("SlicerParameterName", look["parameterName"])
                label = qt.QLabel(_(look["label"]) + ":")
                label.toolTip = look["toolTip"]
                form.addRow(label, widget)
                widgets[spec.name] = widget
        return widgets

    def cleanup(self) -> None:
        self.removeObservers()

    def enter(self) -> None:
        self.initializeParameterNode()

    def exit(self) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._observeCrosshair(False)

    def onSceneStartClose(self, caller, event) -> None:
        self.setParameterNode(None)
        self._observeAifPoints(None)
        self._observeCrosshair(False)  # the Logic forgets its results itself (resetState)

    def onSceneEndClose(self, caller, event) -> None:
        if self.parent.isEntered:
            self.initializeParameterNode()

    def initializeParameterNode(self) -> None:
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.perfusionNode:
            firstSequence = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSequenceNode")
            if firstSequence:
                self._parameterNode.perfusionNode = firstSequence

    def setParameterNode(self, inputParameterNode) -> None:
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self._checkCanApply)
            self._checkCanApply()

    def _checkCanApply(self, caller=None, event=None) -> None:
        """Enable Apply only when the inputs are complete; the tool tip says what is missing."""
        node = self._parameterNode
        if node is None:
            return
        self._updateFrameInfo()
        missing = []
        if not node.perfusionNode:
            missing.append(_("select the perfusion series"))
        if node.modality == Modality.MR and node.echoTimeMs <= 0:
            missing.append(_("enter TE (needed for DSC-MR)"))
        if node.aifMode == AifMode.Manual and (not node.aifPoints or node.aifPoints.GetNumberOfControlPoints() == 0):
            missing.append(_("place AIF points (or choose automatic AIF)"))
        if node.modality == Modality.MR and not node.adcVolume:
            missing.append(_("select the ADC map (the MR core is ADC below the threshold)"))
        self.ui.applyButton.enabled = not missing
        self.ui.applyButton.toolTip = (_("Compute maps, core, penumbra and criteria.") if not missing
                                       else _("To run: ") + "; ".join(missing))
        self.ui.updateFromSegmentsButton.enabled = node.outputSegmentation is not None
        # MR takes the core from ADC, CT from relative CBF: grey out the other modality's settings
        for names, modality in ((self.logic.MR_ONLY_SETTINGS, Modality.MR), (self.logic.CT_ONLY_SETTINGS, Modality.CT)):
            for name in names:
                self._settingWidgets[name].enabled = node.modality == modality
        self.ui.echoTimeSpinBox.enabled = node.modality == Modality.MR
        manual = node.aifMode == AifMode.Manual
        self.ui.aifPointsSelector.enabled = manual
        self.ui.aifPlaceWidget.enabled = manual
        self.ui.aifPlaceWidget.setCurrentNode(node.aifPoints)
        self._observeCrosshair(node.inspectorEnabled and self.logic.hasResults())

    def _updateFrameInfo(self) -> None:
        """When a new series is chosen, pre-fill frame times, TE, TR and modality (editable)."""
        node = self._parameterNode
        perfusion = node.perfusionNode
        nodeId = perfusion.GetID() if perfusion else None
        if nodeId == self._lastPerfusionNodeId:
            return
        self._lastPerfusionNodeId = nodeId
        if perfusion is None:
            self.ui.frameInfoLabel.text = _("No series selected")
            return
        try:
            info = self.logic.frameInfo(perfusion)
        except StrokeMismatchError as error:
            self.ui.frameInfoLabel.text = str(error)
            return
        times = info["times"]
        if times is not None:
            node.frameTimes = ", ".join(f"{t:g}" for t in times)
            self.ui.frameInfoLabel.text = _("{count} frames, {first:g}-{last:g} s").format(
                count=len(times), first=times[0], last=times[-1])
        else:
            self.ui.frameInfoLabel.text = _("Frame times unknown: type them below.")
        for field, seconds in (("echoTimeMs", info["te"]), ("repetitionTimeMs", info["tr"])):
            if seconds:
                try:
                    setattr(node, field, seconds * 1000.0)
                except ValueError:  # outside the field's WithinRange: raising here would skip the
                    # rest of _checkCanApply (it runs as a VTK observer); the user types the value
                    logging.warning(f"StrokeMismatch: {field} {seconds * 1000.0:g} ms from the series is out of range")
        if info["modality"]:
            node.modality = Modality[info["modality"].upper()]

    def onApplyButton(self) -> None:
        """Run the analysis with a cancellable progress dialog."""
        node = self._parameterNode
        replace = False
        if node.replaceOutputs and self.logic.lastOutputs:
            replace = slicer.util.confirmOkCancelDisplay(
                _("Replace the outputs of the previous run? Edits made to its segments will be lost."),
                windowTitle=_("Stroke Mismatch"))
            if not replace:
                return
        dialog = slicer.util.createProgressDialog(labelText=_("Starting..."), maximum=100,
                                                  windowTitle=_("Stroke Mismatch"))

        def progress(fraction, message):
            dialog.value = int(100 * fraction)
            dialog.labelText = message
            slicer.app.processEvents()
            return not dialog.wasCanceled

        try:
            with slicer.util.tryWithErrorDisplay(_("Failed to compute results."), waitCursor=True):
                try:
                    outputs = self.logic.processFromParameterNode(node, replaceOutputs=replace, progress=progress)
                except AnalysisCancelled:
                    slicer.util.showStatusMessage(_("Analysis cancelled."), 3000)
                    return
                node.outputSegmentation = outputs["segmentation"]
                node.outputTable = outputs["table"]
                self.ui.resultLabel.text = self.logic.summaryText()
                self.logic.showResults(outputs)
        finally:
            dialog.close()
        self._checkCanApply()

    def onUpdateFromSegments(self) -> None:
        """Recompute volumes, ratios and criteria from the (edited) segments."""
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Failed to update from the segments."), waitCursor=True):
            table = self.logic.updateFromSegments(node.outputSegmentation, tableNode=node.outputTable,
                                                  settings=self.logic.caseSettingsFromParameterNode(node).lesion)
            node.outputTable = table
            self.ui.resultLabel.text = self.logic.summaryText()
            self.logic.showTable(table)

    def onShowAif(self) -> None:
        node = self._parameterNode
        with slicer.util.tryWithErrorDisplay(_("Cannot show the AIF."), waitCursor=True):
            points = node.aifPoints if node.aifMode == AifMode.Manual else None
            chart = self.logic.updateAifPlot(node.perfusionNode, points, settings=self.logic.caseSettingsFromParameterNode(node),
                                             **self.logic.seriesOptionsFromParameterNode(node))
            slicer.modules.plots.logic().ShowChartInLayout(chart)

    def onAifPointsNodeChanged(self, markupsNode) -> None:
        self._observeAifPoints(markupsNode)

    def _observeAifPoints(self, markupsNode) -> None:
        if self._observedAifPoints is not None:
            for event in (slicer.vtkMRMLMarkupsNode.PointModifiedEvent,
                          slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
                          slicer.vtkMRMLMarkupsNode.PointRemovedEvent):
                self.removeObserver(self._observedAifPoints, event, self.onAifPointsModified)
        self._observedAifPoints = markupsNode
        if markupsNode is not None:
            for event in (slicer.vtkMRMLMarkupsNode.PointModifiedEvent,
                          slicer.vtkMRMLMarkupsNode.PointPositionDefinedEvent,
                          slicer.vtkMRMLMarkupsNode.PointRemovedEvent):
                self.addObserver(markupsNode, event, self.onAifPointsModified)

    def onAifPointsModified(self, caller, event) -> None:
        """Refresh the AIF curve when a point is placed, moved or removed."""
        node = self._parameterNode
        if node is None or node.aifMode != AifMode.Manual or not node.perfusionNode:
            return
        try:
            self.logic.updateAifPlot(node.perfusionNode, caller, settings=self.logic.caseSettingsFromParameterNode(node),
                                     **self.logic.seriesOptionsFromParameterNode(node))
        except StrokeMismatchError as error:
            slicer.util.showStatusMessage(str(error), 3000)
        self._checkCanApply()

    def onInspectorToggled(self, enabled) -> None:
        if enabled and not self.logic.hasResults():
            self.ui.inspectorLabel.text = _("Run Apply first: the inspector uses its concentration curves and AIF.")
        self._observeCrosshair(enabled and self.logic.hasResults())
        if enabled and self.logic.hasResults():
            slicer.modules.plots.logic().ShowChartInLayout(self.logic.inspectorChart())

    def _observeCrosshair(self, enabled) -> None:
        if self._crosshairNode is not None and not enabled:
            self.removeObserver(self._crosshairNode, slicer.vtkMRMLCrosshairNode.CursorPositionModifiedEvent,
                                self.onCursorPositionModified)
            self._crosshairNode = None
        elif enabled and self._crosshairNode is None:
            self._crosshairNode = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLCrosshairNode")
            if self._crosshairNode is not None:
                self.addObserver(self._crosshairNode, slicer.vtkMRMLCrosshairNode.CursorPositionModifiedEvent,
                                 self.onCursorPositionModified)

    def onCursorPositionModified(self, caller, event) -> None:
        """Curve inspector: plot the voxel under the mouse and show its values."""
        ras = [0.0, 0.0, 0.0]
        if not caller.GetCursorPositionRAS(ras):
            return
        info = self.logic.inspectAtRAS(ras)
        if info is None:
            return
        classNames = {"core": _("ischemic core"), "penumbra": _("penumbra"), "normal": _("normal"),
                      "outside": _("outside the brain mask")}
        self.ui.inspectorLabel.text = _(
            "Voxel (k, j, i) = {voxel}: CBF {cbf:.1f} mL/100 g/min, Tmax {tmax:.1f} s, "
            "CBV {cbv:.2f} mL/100 g, MTT {mtt:.1f} s. Class: {cls}."
        ).format(voxel=info["voxel"], cbf=info["cbf"], tmax=info["tmax"], cbv=info["cbv"], mtt=info["mtt"],
                 cls=classNames.get(info["class"], info["class"]))


#
# Logic
#


class StrokeMismatchLogic(ScriptedLoadableModuleLogic, VTKObservationMixin):
    """Runs the analysis on MRML nodes; usable from the Python console without the GUI::

        import StrokeMismatch
        logic = StrokeMismatch.StrokeMismatchLogic()
        outputs = logic.process(perfusionNode, adcNode, modality="mr", echoTime=0.03)
        outputs["table"], outputs["segmentation"], outputs["tmax"]

    After ``process`` the logic keeps the concentration, the AIF, the maps and the masks of
    the last run for the curve inspector (``inspectAtRAS``) and ``updateFromSegments``; all of
    it is dropped by ``resetState``, called at the start of each run and when the scene closes.
    """

    def __init__(self) -> None:
        ScriptedLoadableModuleLogic.__init__(self)
        VTKObservationMixin.__init__(self)
        self.resetState()
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)

    def resetState(self) -> None:
        """Forget everything kept from a previous run (the one place where state is reset)."""
        self.lastResult = None
        self.lastOutputs = {}
        self._preview = None
        self._inspectorChart = None
        self._lastInspectedVoxel = None
        self._lastInspection = None
        self._lastSummary = None

    def onSceneStartClose(self, caller=None, event=None) -> None:
        self.resetState()

    def getParameterNode(self):
        return StrokeMismatchParameterNode(super().getParameterNode())

    # --- inputs -------------------------------------------------------------------------------
    def frameInfo(self, perfusionNode) -> dict:
        """Frame times (s), TE/TR (s) and modality found in a Sequence / proxy / MultiVolume."""
        return mrmlio.frame_info(perfusionNode)

    @staticmethod
    def parseFrameTimes(text):
        """Frame times typed as "0, 1.5, 3" (s) -> list of float, or None when empty."""
        text = (text or "").replace(";", ",").strip()
        if not text:
            return None
        try:
            return [float(part) for part in text.replace(",", " ").split()]
        except ValueError:
            raise ValueError(_("Frame times must be numbers in seconds separated by commas, e.g. 0, 1.5, 3.")) from None

    def readSeries(self, perfusionNode, *, modality=None, frameTimes=None, echoTime=None, repetitionTime=None):
        """The selected node as a ``PerfusionSeries`` (times and TE/TR in s)."""
        return mrmlio.series_from_node(perfusionNode, times=frameTimes, modality=modality, te=echoTime,
                                       tr=repetitionTime)

    def seriesOptionsFromParameterNode(self, node) -> dict:
        """Keyword arguments of ``readSeries`` from the panel."""
        isMR = node.modality == Modality.MR
        return {
            "modality": node.modality.value.lower(),
            "frameTimes": self.parseFrameTimes(node.frameTimes),
            "echoTime": node.echoTimeMs / 1000.0 if isMR and node.echoTimeMs > 0 else None,
            "repetitionTime": node.repetitionTimeMs / 1000.0 if node.repetitionTimeMs > 0 else None,
        }

    # --- settings (all derived from StrokeMismatchLib.settings) --------------------------------
    #: Settings that concern one modality only (greyed out on the panel for the other).
    MR_ONLY_SETTINGS = ("core_adc", "csf_adc", "vessel_cbv_multiple")
    CT_ONLY_SETTINGS = ("core_rcbf_percent", "rcbf_reference", "rcbf_statistic", "reference_normal_tmax",
                        "mirror_sigma_mm", "bone_hu", "csf_hu", "vessel_cbv", "cbf_smoothing_fwhm_mm")

    @staticmethod
    def settingWidgetSpec(spec) -> dict:
        """How the panel shows one schema setting: widget class, range, decimals, step, suffix
        (the unit), the text shown for "not given", tool tip (help, range, default, CLI flag)."""
        suffix = ("" if not spec.unit else (" %" if spec.unit == "%" else f" {spec.unit}"))
        toolTip = f"{spec.help} Range {spec.range_text()}; default {spec.default_text()}; command line {spec.cli_flag}."
        widget = {"bool": "QCheckBox", "auto_bool": "QComboBox", "choice": "QComboBox", "int": "QSpinBox",
                  "optional_int": "QSpinBox"}.get(spec.kind, "QDoubleSpinBox")
        result = {"name": spec.name, "widget": widget, "label": spec.label, "group": spec.group, "suffix": suffix,
                  "toolTip": toolTip, "parameterName": f"settings.{spec.name}"}
        if widget in ("QSpinBox", "QDoubleSpinBox"):
            optional = spec.kind.startswith("optional")
            decimals = 0 if widget == "QSpinBox" else (2 if spec.maximum <= 5 else (1 if spec.maximum <= 100 else 0))
            result.update(minimum=spec.minimum - (OPTIONAL_OFFSET if optional else 0), maximum=spec.maximum,
                          decimals=decimals, step=1.0 if decimals == 0 else 10.0 ** -decimals * 5,
                          specialValueText=(_("auto") if spec.kind == "optional_float" else _("not given"))
                          if optional else "")
        return result

    @staticmethod
    def settingToLib(spec, value):
        """A parameter-node value -> the Lib's value (auto/on/off -> None/True/False; an optional
        number below its minimum -> None)."""
        if spec.kind == "auto_bool":
            return value.setting()
        if spec.kind.startswith("optional"):
            return None if value < spec.minimum else value
        return value

    @classmethod
    def panelSettings(cls) -> list:
        """Every setting as the parameter node holds it: name, default (the Lib's value), unit
        (the widget suffix), minimum / maximum (of the parameter-node field), kind, choices,
        group, label. Read from the parameter-node class, for tests against the schema."""
        import typing

        from StrokeMismatchLib.settings import all_settings

        hints = typing.get_type_hints(StrokeMismatchSettings, include_extras=True)
        defaults = StrokeMismatchSettings()
        rows = []
        for spec in all_settings():
            hint = hints[spec.name]
            extras = typing.get_args(hint)[1:] if typing.get_origin(hint) is Annotated else ()
            ranges = [e for e in extras if isinstance(e, WithinRange)]
            choices = [e for e in extras if isinstance(e, Choice)]
            widget = cls.settingWidgetSpec(spec)
            rows.append({
                "name": spec.name, "kind": spec.kind, "group": widget["group"], "label": widget["label"],
                "default": cls.settingToLib(spec, getattr(defaults, spec.name)),
                "unit": widget["suffix"].strip(),
                "minimum": getattr(ranges[0], "minimum", None) if ranges else None,
                "maximum": getattr(ranges[0], "maximum", None) if ranges else None,
                "choices": tuple(getattr(choices[0], "choices", ())) if choices else (),
                "widget": widget["widget"], "parameterName": widget["parameterName"]})
        return rows

    def caseSettingsFromParameterNode(self, node):
        """``settings.CaseSettings`` from the panel (refused with the schema's message when a
        value is outside its range)."""
        from StrokeMismatchLib.settings import all_settings, case_settings_from_values

        values = {spec.name: self.settingToLib(spec, getattr(node.settings, spec.name)) for spec in all_settings()}
        return case_settings_from_values(values)

    def setSettingsInParameterNode(self, node, **values) -> None:
        """Set settings of the panel by their schema names in the Lib's values (None = auto /
        not given), e.g. ``setSettingsInParameterNode(node, tmax_threshold=8.0, age=70)``."""
        from StrokeMismatchLib.settings import settings_by_name

        specs = settings_by_name()
        for name, value in values.items():
            spec = specs[name]
            if spec.kind == "auto_bool":
                value = AutoOnOff.fromSetting(spec.validate(value))
            elif spec.kind.startswith("optional") and value is None:
                value = (int if spec.kind == "optional_int" else float)(spec.minimum - OPTIONAL_OFFSET)
            else:
                value = spec.validate(value)
            setattr(node.settings, name, value)

    # --- analysis -----------------------------------------------------------------------------
    def processFromParameterNode(self, node, *, replaceOutputs=False, progress=None) -> dict:
        """``process`` with every setting taken from the parameter node."""
        points = None
        if node.aifMode == AifMode.Manual:
            points = node.aifPoints
            if points is None or points.GetNumberOfControlPoints() == 0:
                raise ValueError(_("Manual AIF: place at least one point in an artery, or choose automatic AIF."))
        return self.process(
            node.perfusionNode, node.adcVolume, **self.seriesOptionsFromParameterNode(node), aifPointsNode=points,
            settings=self.caseSettingsFromParameterNode(node), showTmaxAbove10=node.showTmaxAbove10,
            replaceOutputs=replaceOutputs, progress=progress)

    def process(self, perfusionNode, adcNode=None, *, modality=None, frameTimes=None, echoTime=None,
                repetitionTime=None, method=None, aifPointsNode=None, lesionSettings=None,
                motionCorrection=None, settings=None, showTmaxAbove10=True, replaceOutputs=False,
                progress=None) -> dict:
        """Analyse a perfusion series node and create the output nodes.

        :param perfusionNode: Sequence node, its proxy volume, or MultiVolume node.
        :param adcNode: ADC scalar volume, required for MR (core = ADC below the threshold; any
            grid, resampled; unit detected). CT takes the core from relative CBF instead.
        :param modality: "mr" or "ct" (default: from the node attributes).
        :param frameTimes: frame times in s (default: sequence index values / MultiVolume labels).
        :param echoTime: TE in s (needed for MR); ``repetitionTime`` TR in s.
        :param settings: ``StrokeMismatchLib.settings.CaseSettings`` (every setting, as on the
            command line; default: the schema's defaults); ``method`` ("oSVD", "cSVD", "sSVD",
            "Tikhonov"), ``motionCorrection`` (bool) and ``lesionSettings``
            (``settings.LesionSettings``) override its parts when given.
        :param aifPointsNode: markups point list in arteries (manual AIF) or None (automatic).
        :param replaceOutputs: True overwrites the previous run's nodes; False creates new ones.
        :param progress: ``progress(fraction, message)``; returning False cancels.
        :return: dict of nodes: cbf, cbv, mtt, tmax, ttp, baseline (volumes), segmentation,
            table, aifChart.
        :raises ValueError: (``StrokeMismatchError``) on bad input, with what to do.
        """
        from StrokeMismatchLib.pipeline import CaseSettings, run_case

        if perfusionNode is None:
            raise ValueError(_("Select the perfusion series."))
        logging.info("StrokeMismatch: reading the perfusion series")
        seriesOptions = {"modality": modality, "frameTimes": frameTimes, "echoTime": echoTime,
                         "repetitionTime": repetitionTime}
        series = self.readSeries(perfusionNode, **seriesOptions)
        overrides = {}
        for key, value in (("method", method), ("motion_correction", motionCorrection), ("lesion", lesionSettings)):
            if value is not None:
                overrides[key] = value
        settings = dataclasses.replace(settings if settings is not None else CaseSettings(), **overrides)
        series.metadata["previewKey"] = self._previewKey(perfusionNode, settings, seriesOptions)
        aifVoxels = None
        if aifPointsNode is not None:
            aifVoxels = mrmlio.markups_voxels(aifPointsNode, series.geometry)
        adc = adcGeometry = None
        if series.modality == "mr":
            if adcNode is None:
                raise ValueError(_("DSC-MR needs the ADC map for the ischemic core: select it (ADC input)."))
            adc = np.array(slicer.util.arrayFromVolume(adcNode), dtype=np.float32)
            adcGeometry = mrmlio.volume_geometry(adcNode)
        settings = dataclasses.replace(settings, aif_voxels=aifVoxels)
        logging.info(f"StrokeMismatch: analysing {series.signal.shape} with {settings.method}")
        result = run_case(series, adc=adc, adc_geometry=adcGeometry, settings=settings, progress=progress)
        reuse = self.lastOutputs if replaceOutputs else None
        self.resetState()
        outputs = mrmlio.write_case_outputs(result, base_name=perfusionNode.GetName() or "Perfusion", reuse=reuse,
                                            show_tmax_above_10=showTmaxAbove10)
        self.lastResult = result
        self.lastOutputs = outputs
        logging.info("StrokeMismatch: done")
        return outputs

    def updateAifPlot(self, perfusionNode, aifPointsNode=None, *, settings=None, motionCorrection=None,
                      **seriesOptions):
        """Plot the AIF: of the last run (automatic), or the AIF that Apply would take from the
        manual points, before or after Apply. Returns the chart node.

        The manual preview runs the same Lib steps as Apply (``pipeline.prepare_series``: slice
        timing, motion correction, baseline detection on the brain, concentration; then
        ``pipeline.case_aif``) with the same ``settings`` (``CaseSettings``, default the schema's;
        ``motionCorrection`` overrides its motion correction), so the curve shown is the AIF Apply
        uses. ``seriesOptions`` as for ``readSeries``.
        """
        if aifPointsNode is None:
            if self.lastResult is None:
                raise ValueError(_("Automatic AIF: run Apply first, then the chosen AIF is plotted."))
            return mrmlio.plot_curves(self.lastResult.series.times, inspector.case_curves(self.lastResult),
                                      chart=self.lastOutputs.get("aifChart"), name="AIF",
                                      y_title=_("Concentration (a.u.)"))
        from StrokeMismatchLib.pipeline import CaseSettings

        settings = settings if settings is not None else CaseSettings()
        if motionCorrection is not None:
            settings = dataclasses.replace(settings, motion_correction=bool(motionCorrection))
        series, prepared = self._preparedSeries(perfusionNode, settings, seriesOptions)
        voxels = mrmlio.markups_voxels(aifPointsNode, series.geometry)
        from StrokeMismatchLib.pipeline import case_aif

        aif = case_aif(prepared, series.times, series.modality, voxels)  # the call run_case makes
        chart = self.lastOutputs.get("aifChart") if self.lastOutputs else None
        name = chart.GetName() if chart is not None else "AIF"
        return mrmlio.plot_curves(series.times, {_("AIF (manual, {n} voxels)").format(n=len(voxels)): aif.curve},
                                  chart=chart, name=name, y_title=_("Concentration (a.u.)"))

    @staticmethod
    def _previewKey(perfusionNode, settings, seriesOptions):
        """What the prepared series depends on: the node's state, the case settings, the options."""
        return (perfusionNode.GetID(), perfusionNode.GetMTime(), repr(settings.settings_dict()), repr(settings.baseline),
                repr(sorted(seriesOptions.items())))

    def _preparedSeries(self, perfusionNode, settings, seriesOptions):
        """(series, ``pipeline.PreparedSeries``) for the AIF preview: the last run's when it
        analysed this node with these settings and options, else computed once per key."""
        from StrokeMismatchLib.pipeline import PreparedSeries, analysis_series, prepare_series
        from StrokeMismatchLib.validation import validate_series

        if perfusionNode is None:
            raise ValueError(_("Select the perfusion series."))
        key = self._previewKey(perfusionNode, settings, seriesOptions)
        result = self.lastResult
        if result is not None and result.series.metadata.get("previewKey") == key:
            return result.series, PreparedSeries(result.signal, result.motion, result.baseline, result.baseline_image,
                                                 result.brain_mask, result.brain_mask_source, result.concentration,
                                                 slice_timing=getattr(result, "slice_timing", None))
        if self._preview is None or self._preview[0] != key:
            series = self.readSeries(perfusionNode, **seriesOptions)
            if series.modality is None:
                raise ValueError(_("Choose the modality (MR or CT) first."))
            validate_series(series)  # the checks and steps run_case makes first
            series, _ = analysis_series(series, settings)  # CT: the analysis grid (issue 15)
            self._preview = (key, series, prepare_series(series, settings))
        return self._preview[1], self._preview[2]

    # --- curve inspector -------------------------------------------------------------------------
    def hasResults(self) -> bool:
        return self.lastResult is not None

    def inspectorChart(self):
        if self._inspectorChart is None or self._inspectorChart.GetScene() is None:
            self._inspectorChart = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLPlotChartNode", _("Voxel curves"))
        return self._inspectorChart

    def inspectAtRAS(self, ras):
        """Curves and values of the voxel at RAS (mm) from the last run, or None outside the grid.

        Plots the voxel's concentration, the AIF and the deconvolved CBF·R(t) (each scaled to its
        peak) in the "Voxel curves" chart and returns ``mrmlio.inspect_voxel``'s dict.
        """
        result = self.lastResult
        if result is None:
            return None
        voxel = inspector.ras_to_voxel(result.geometry, ras)
        if voxel is None:
            return None
        if voxel == self._lastInspectedVoxel:
            return self._lastInspection
        info = inspector.inspect_voxel(voxel, concentration=result.concentration, aif=result.aif,
                                    times=result.series.times, maps=result.maps, masks=result.lesion.masks,
                                    brain_mask=result.brain_mask)
        curves = inspector.inspector_curves(info, result.series.times, result.aif)
        mrmlio.plot_curves(result.series.times, curves, chart=self.inspectorChart(), name=_("Voxel curves"),
                           y_title=_("Fraction of peak"))
        self._lastInspectedVoxel = voxel
        self._lastInspection = info
        return info

    # --- manual correction ----------------------------------------------------------------------
    def updateFromSegments(self, segmentationNode, tableNode=None, settings=None):
        """Recompute volumes, ratios and criteria from the (edited) segments; segments untouched.

        Uses the Tmax / CBV maps recorded on the segmentation by ``process``. Returns the table.
        """
        if segmentationNode is None:
            raise ValueError(_("Select the lesion segmentation made by Apply."))
        scene = segmentationNode.GetScene()
        tmax = scene.GetNodeByID(segmentationNode.GetAttribute("StrokeMismatch.TmaxVolumeID") or "")
        cbv = scene.GetNodeByID(segmentationNode.GetAttribute("StrokeMismatch.CBVVolumeID") or "")
        analysed = scene.GetNodeByID(segmentationNode.GetAttribute("StrokeMismatch.AnalysisMasksVolumeID") or "")
        if tmax is None:
            raise ValueError(_("This segmentation was not made by Stroke Mismatch (its Tmax map is missing)."))
        hemispheres = None
        quality = ()
        if self.lastOutputs.get("segmentation") is segmentationNode and self.lastResult is not None:
            hemispheres = getattr(self.lastResult.lesion, "hemispheres", None)
            quality = self.lastResult.quality or ()
            if settings is None:
                settings = self.lastResult.lesion.settings
        table, result = mrmlio.recompute_from_segmentation(segmentationNode, tmax, tmax_volume=tmax,
                                                           cbv_volume=cbv, analysis_masks=analysed,
                                                           hemispheres=hemispheres,
                                                           settings=settings, quality=quality,
                                                           table=tableNode)
        self._lastSummary = result
        return table

    def summaryText(self) -> str:
        """One line per volume metric of the last analysis or update, for the panel."""
        source = self._lastSummary if self._lastSummary is not None else (
            self.lastResult.lesion if self.lastResult is not None else None)
        if source is None:
            return ""
        lines = []
        for metric in source.metrics.values():
            if getattr(metric, "unit", "") == "mL" or getattr(metric, "name", "").endswith("ratio"):
                value = "-" if metric.value is None else f"{metric.value:.1f}"
                lines.append(f"{metric.label}: {value} {metric.unit if metric.unit != '1' else ''}".strip())
        for rule in source.criteria:
            lines.append(f"{rule.rule}: {rule.status}")
        return "\n".join(lines)

    # --- display ----------------------------------------------------------------------------------
    def showTable(self, table) -> None:
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        # PropagateTableSelection only fills a table view that is already in the layout: switch to
        # a layout with one first (as SegmentStatistics.showTable does).
        layoutManager.setLayout(slicer.modules.tables.logic().GetLayoutWithTable(layoutManager.layout))
        appLogic = slicer.app.applicationLogic()
        appLogic.GetSelectionNode().SetActiveTableID(table.GetID())
        appLogic.PropagateTableSelection()

    def showResults(self, outputs) -> None:
        """Table + AIF plot layout, Tmax over the baseline at partial opacity, segments outlined,
        slices and the 3D view centred on the lesion."""
        layoutManager = slicer.app.layoutManager()
        if layoutManager is None:
            return
        layoutManager.setLayout(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpPlotTableView)
        appLogic = slicer.app.applicationLogic()
        selection = appLogic.GetSelectionNode()
        selection.SetActiveTableID(outputs["table"].GetID())
        appLogic.PropagateTableSelection()
        selection.SetActivePlotChartID(outputs["aifChart"].GetID())
        appLogic.PropagatePlotChartSelection()
        slicer.util.setSliceViewerLayers(background=outputs["baseline"], foreground=outputs["tmax"],
                                         foregroundOpacity=0.5, fit=True)
        segmentation = outputs["segmentation"]
        display = segmentation.GetDisplayNode()
        if display is not None:
            display.SetVisibility(True)
            display.SetVisibility2DOutline(True)
        center = self._lesionCenterRAS()
        if center is not None:
            # through the lesion, without panning: the whole brain stays in view
            slicer.modules.markups.logic().JumpSlicesToLocation(center[0], center[1], center[2], False)
        slicer.modules.colors.logic().AddDefaultColorLegendDisplayNode(outputs["tmax"])
        slicer.util.resetThreeDViews()  # only the segments are shown in 3D: centres on the lesion

    def _lesionCenterRAS(self):
        return inspector.lesion_center_ras(self.lastResult) if self.lastResult is not None else None


#
# Test (runs inside Slicer: Reload & Test, or ctest via slicer_add_python_unittest)
#


class StrokeMismatchTest(ScriptedLoadableModuleTest):
    """In-Slicer self-test: the sample phantoms (built locally, as Sample Data does) through the
    Logic, volumes against the phantom's truth, edits and "Update from segments"."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        self.setUp()
        self.test_phantom_sample_data()
        self.setUp()
        self.test_ct_phantom_sample_data()
        self.setUp()
        self.test_proxy_and_update_from_segments()
        self.setUp()
        self.test_multivolume_input()

    def _checkVolumes(self, logic, outputs, modality):
        from StrokeMismatchLib.samplecase import make_sample_case

        truth = make_sample_case(modality).truth_ml
        for key in ("cbf", "cbv", "mtt", "tmax", "ttp", "segmentation", "table", "aifChart"):
            self.assertIn(key, outputs)
        segments = outputs["segmentation"].GetSegmentation()
        self.assertTrue(segments.GetSegmentIdBySegmentName("Ischemic core"))
        self.assertTrue(segments.GetSegmentIdBySegmentName("Penumbra"))
        masks = logic.lastResult.lesion.masks
        voxelMl = logic.lastResult.geometry.voxel_volume_ml
        core = float(np.count_nonzero(masks["core"])) * voxelMl
        hypo = float(np.count_nonzero(masks["hypoperfusion"])) * voxelMl
        self.delayDisplay(f"{modality}: core {core:.1f} mL (truth {truth['core']:.1f}), "
                          f"hypoperfusion {hypo:.1f} mL (truth {truth['hypoperfusion']:.1f})")
        for name, value in (("core", core), ("hypoperfusion", hypo)):
            self.assertAlmostEqual(value, truth[name], delta=SAMPLE_TOLERANCE[name] * truth[name] + 1.0)
        rows = {row["Key"]: row for row in mrmlio.table_rows(outputs["table"])}
        self.assertAlmostEqual(float(rows["core_ml"]["Value"]), core, places=3)
        self.assertEqual(rows["core_ml"]["Unit"], "mL")

    def test_phantom_sample_data(self):
        self.delayDisplay("Building the MR sample phantom (no download)")
        nodes = loadSampleCase("mr")
        logic = StrokeMismatchLogic()
        info = logic.frameInfo(nodes["sequence"])
        self.assertEqual(info["frames"], 60)
        self.assertAlmostEqual(info["te"], 0.03)  # TE comes with the sample: nothing to type
        outputs = logic.process(nodes["sequence"], nodes["adc"], motionCorrection=False)
        self._checkVolumes(logic, outputs, "mr")
        self.delayDisplay("MR phantom test passed")

    def test_ct_phantom_sample_data(self):
        nodes = loadSampleCase("ct")
        logic = StrokeMismatchLogic()
        self.assertEqual(logic.frameInfo(nodes["proxy"])["modality"], "ct")
        outputs = logic.process(nodes["proxy"], None, motionCorrection=False)
        self._checkVolumes(logic, outputs, "ct")

    def test_proxy_and_update_from_segments(self):
        nodes = loadSampleCase("mr")
        logic = StrokeMismatchLogic()
        outputs = logic.process(nodes["proxy"], nodes["adc"], motionCorrection=False)
        segmentation = outputs["segmentation"]
        tmax = outputs["tmax"]
        applied = {row["Key"]: row["Value"] for row in mrmlio.table_rows(outputs["table"])}
        # no edit: "Update from segments" gives Apply's numbers
        table = logic.updateFromSegments(segmentation, tableNode=outputs["table"])
        updated = {row["Key"]: row["Value"] for row in mrmlio.table_rows(table)}
        for key in ("core_ml", "hypoperfusion_ml", "penumbra_ml", "tmax_gt_4_ml", "tmax_gt_8_ml", "tmax_gt_10_ml"):
            self.assertAlmostEqual(float(updated[key]), float(applied[key]), places=4)
        segmentId = segmentation.GetSegmentation().GetSegmentIdBySegmentName("Ischemic core")
        core = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, tmax)
        edited = np.zeros_like(core)  # the user erases the whole core
        slicer.util.updateSegmentBinaryLabelmapFromArray(edited, segmentation, segmentId, tmax)
        table = logic.updateFromSegments(segmentation, tableNode=outputs["table"])
        rows = {row["Key"]: row for row in mrmlio.table_rows(table)}
        self.assertAlmostEqual(float(rows["core_ml"]["Value"]), 0.0)
        after = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, tmax)
        self.assertEqual(int(after.sum()), 0)  # the edit was kept
        # re-running without "replace" makes new nodes and leaves the edited ones alone
        again = logic.process(nodes["sequence"], nodes["adc"], motionCorrection=False)
        self.assertIsNot(again["segmentation"], segmentation)
        self.assertEqual(int(slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, tmax).sum()), 0)
        # the curve inspector works on the last run
        info = logic.inspectAtRAS(logic._lesionCenterRAS())
        self.assertIn(info["class"], ("core", "penumbra", "normal", "outside"))
        self.assertGreater(len(info["residue"]), 3)

    def test_multivolume_input(self):
        if not hasattr(slicer, "vtkMRMLMultiVolumeNode"):
            self.delayDisplay("MultiVolumeExplorer not available: MultiVolume test skipped")
            return
        rng = np.random.default_rng(0)
        frames = rng.uniform(100, 200, size=(3, 4, 5, 6)).astype(np.float32)
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMultiVolumeNode", "mv")
        slicer.util.updateVolumeFromArray(node, frames)
        node.SetAttribute("MultiVolume.FrameLabels", "0,1500,3000,4500,7000,9000")
        node.SetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits", "ms")
        node.SetAttribute("MultiVolume.DICOM.EchoTime", "30")
        series = mrmlio.series_from_node(node, modality="mr")
        self.assertEqual(series.signal.shape, (3, 4, 5, 6))
        np.testing.assert_allclose(series.times, [0, 1.5, 3, 4.5, 7, 9])
        self.assertAlmostEqual(series.te, 0.03)
