"""An offscreen stand-in for the Qt half of 3D Slicer, so that ``StrokeMismatch.py`` runs in pytest.

Written for this project (not copied from Slicer). It supplies only what the ``slicer-core``
wheel lacks, and nothing that the wheel has:

Real, from ``slicer-core`` (Slicer's own compiled code and ``slicer/util.py``):
    the MRML scene and nodes, ``slicer.util``, ``vtkSlicerApplicationLogic``, the module logics
    (Volumes, Colors, Segmentations, Sequences, Tables, Plots, Markups), the C++ segment-editor
    logic ``vtkSlicerSegmentEditorLogic``, ``vtkMRMLLayoutLogic`` (layout and view nodes),
    ``vtkMRMLSliceLogic`` (reslicing and blending of the layers), and the displayable managers
    that draw the slice and 3D views (created by ``vtkMRMLSliceViewDisplayableManagerFactory`` /
    ``vtkMRMLThreeDViewDisplayableManagerFactory``: segmentations 2D/3D, models, colour legend,
    camera, view, crosshair).

Stand-ins, here:
    ``qt``, ``ctk`` (import stubs: any attribute use raises, so GUI code cannot pass silently),
    ``slicer.i18n`` (identity translation), ``slicer.ScriptedLoadableModule`` (the base classes
    and ``getParameterNode``), ``slicer.parameterNodeWrapper`` (typed fields and parameter packs
    stored in a ``vtkMRMLScriptedModuleNode``, ``WithinRange`` / ``Choice`` validation; no GUI
    binding),
    ``slicer.app`` (``layoutManager()`` over offscreen views, ``applicationLogic()``,
    ``connect``/``emit`` of named signals, ``testingEnabled()``), and ``SampleData`` (the
    registration calls; the Sample Data button is :meth:`App.clickSampleDataButton`).

Views render offscreen through EGL (``VTK_DEFAULT_OPENGL_WINDOW=vtkEGLRenderWindow``, Mesa's
software rasteriser): no X server, no GPU. A slice view shows ``vtkMRMLSliceLogic``'s blended
image in a 2D actor, as Slicer's slice widget does, with the slice displayable managers on top.
"""

from __future__ import annotations

import enum
import logging
import os
import sys
import tempfile
import types
import typing
import unittest

os.environ.setdefault("VTK_DEFAULT_OPENGL_WINDOW", "vtkEGLRenderWindow")

import numpy as np  # noqa: E402
import vtk  # noqa: E402
from vtk.util.numpy_support import vtk_to_numpy  # noqa: E402

import slicer  # noqa: E402
import slicer.util  # noqa: E402

SLICE_VIEWS = {"Red": "Axial", "Yellow": "Sagittal", "Green": "Coronal"}
SLICE_MANAGERS = ("vtkMRMLSegmentationsDisplayableManager2D", "vtkMRMLColorLegendDisplayableManager",
                  "vtkMRMLModelSliceDisplayableManager", "vtkMRMLCrosshairDisplayableManager")
THREED_MANAGERS = ("vtkMRMLCameraDisplayableManager", "vtkMRMLViewDisplayableManager",
                   "vtkMRMLModelDisplayableManager", "vtkMRMLSegmentationsDisplayableManager3D",
                   "vtkMRMLColorLegendDisplayableManager")


# --- qt / ctk import stubs --------------------------------------------------------------------------

def _gui_stub(name):
    module = types.ModuleType(name)
    module.__doc__ = f"Import stub for {name} (StrokeMismatch test layer): no GUI is available."

    def __getattr__(attribute):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise AttributeError(f"{name}.{attribute} is not available in the offscreen test layer (no Qt)")

    module.__getattr__ = __getattr__
    return module


# --- slicer.i18n ---------------------------------------------------------------------------------

def _i18n_module():
    module = types.ModuleType("slicer.i18n")

    def tr(text):
        return text

    def translate(context, text):
        return text

    module.tr, module.translate = tr, translate
    return module


# --- slicer.parameterNodeWrapper (the subset StrokeMismatch.py uses) ------------------------------

class WithinRange:
    """Validator: ``minimum <= value <= maximum`` or ``ValueError`` (as in Slicer)."""

    def __init__(self, minimum, maximum):
        self.minimum, self.maximum = minimum, maximum

    def validate(self, value):
        if not (self.minimum <= value <= self.maximum):
            raise ValueError(f"Value {value} is not within range [{self.minimum}, {self.maximum}]")


class Choice:
    """Validator: the value is one of ``choices`` (a combo box lists them)."""

    def __init__(self, choices):
        self.choices = list(choices)

    def validate(self, value):
        if value not in self.choices:
            raise ValueError(f"Value {value!r} is not one of {self.choices}")


class Default:
    """The default of a field, as ``Annotated[type, Default(value)]`` (the only way for a pack)."""

    def __init__(self, value):
        self.value = value


class _Field:
    """One typed field of a wrapped parameter node."""

    def __init__(self, name, hint, default):
        self.name = name
        self.validators = []
        if typing.get_origin(hint) is typing.Annotated:
            hint, *extras = typing.get_args(hint)
            self.validators = [extra for extra in extras if hasattr(extra, "validate")]
            defaults = [extra for extra in extras if isinstance(extra, Default)]
            if defaults:
                default = defaults[0].value
        args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(
            hint, types.UnionType) or typing.get_origin(hint) is typing.Union else [hint]
        self.types = tuple(args)
        self.isNode = all(isinstance(t, type) and issubclass(t, slicer.vtkMRMLNode) for t in args)
        self.type = args[0]
        self.pack = getattr(self.type, "_packFields", None)  # a @parameterPack class
        self.default = default

    def serialize(self, value) -> str:
        if isinstance(value, enum.Enum):
            return value.name
        return repr(value) if self.type in (float, int, bool) else str(value)

    def deserialize(self, text):
        if isinstance(self.type, type) and issubclass(self.type, enum.Enum):
            return self.type[text]
        if self.type is bool:
            return text == "True"
        if self.type in (int, float):
            return self.type(float(text))
        return text

    def validate(self, value):
        if self.pack is not None:
            raise TypeError(f"{self.name}: set the fields of the parameter pack one by one")
        if self.isNode:
            if value is not None and not isinstance(value, self.types):
                raise TypeError(f"{self.name}: {value.GetClassName()} is not one of {self.types}")
            return
        if isinstance(self.type, type) and issubclass(self.type, enum.Enum):
            if not isinstance(value, self.type):
                raise TypeError(f"{self.name}: expected {self.type.__name__}, got {value!r}")
        elif self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        elif not isinstance(value, self.type):
            raise TypeError(f"{self.name}: expected {self.type.__name__}, got {value!r}")
        for validator in self.validators:
            validator.validate(value)


def parameterPack(cls):
    """Class decorator: a group of typed fields (stored in the parameter node as
    "<field>.<name>"); instances are value objects with validated attributes. As in Slicer, a
    field's default comes from ``Default(...)`` in its annotation (class attributes are ignored),
    else the type's own default (0, "", False, first enum member), and must pass validation."""
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {}
    for name, hint in hints.items():
        field = _Field(name, hint, None)
        if field.default is None:
            field.default = (next(iter(field.type)) if isinstance(field.type, type) and issubclass(field.type, enum.Enum)
                             else field.type())
        try:
            field.validate(field.default)
        except (TypeError, ValueError) as error:
            raise ValueError(f"The default parameter of {name!r} fails the validation checks: {error}") from None
        fields[name] = field

    def __init__(self, **values):
        for name, field in fields.items():
            setattr(self, name, values.get(name, field.default))

    def __setattr__(self, name, value):
        if name not in fields:
            raise AttributeError(f"{cls.__name__} has no field {name!r}")
        fields[name].validate(value)
        object.__setattr__(self, name, value)

    namespace = {"__init__": __init__, "__setattr__": __setattr__, "_packFields": fields,
                 "__annotations__": dict(getattr(cls, "__annotations__", {})), "__module__": cls.__module__,
                 "__doc__": cls.__doc__}
    return type(cls.__name__, (), namespace)


class _PackView:
    """``parameterNode.<pack field>``: reads and writes "<field>.<name>" parameters."""

    def __init__(self, node, prefix, fields):
        object.__setattr__(self, "_node", node)
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_fields", fields)

    def __getattr__(self, name):
        if name not in self._fields:
            raise AttributeError(name)
        return self._fields[name].deserialize(self._node.GetParameter(f"{self._prefix}.{name}"))

    def __setattr__(self, name, value):
        if name not in self._fields:
            raise AttributeError(f"no field {name!r} in {self._prefix}")
        field = self._fields[name]
        field.validate(value)
        self._node.SetParameter(f"{self._prefix}.{name}", field.serialize(value))


def parameterNodeWrapper(cls):
    """Class decorator: typed attributes stored in a ``vtkMRMLScriptedModuleNode``.

    Plain values are parameters (``SetParameter``), node fields are node references; defaults
    are written when missing; ``WithinRange`` refuses out-of-range values with ``ValueError``.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    fields = {name: _Field(name, hint, cls.__dict__.get(name)) for name, hint in hints.items()}

    def __init__(self, parameterNode):
        object.__setattr__(self, "parameterNode", parameterNode)
        for field in fields.values():
            if field.pack is not None:
                for sub in field.pack.values():
                    if not parameterNode.GetParameter(f"{field.name}.{sub.name}"):
                        parameterNode.SetParameter(f"{field.name}.{sub.name}", sub.serialize(sub.default))
            elif not field.isNode and not parameterNode.GetParameter(field.name):
                parameterNode.SetParameter(field.name, field.serialize(field.default))

    def make_property(field):
        def getter(self):
            node = self.parameterNode
            if field.pack is not None:
                return _PackView(node, field.name, field.pack)
            if field.isNode:
                return node.GetNodeReference(field.name)
            return field.deserialize(node.GetParameter(field.name))

        def setter(self, value):
            field.validate(value)
            node = self.parameterNode
            if field.isNode:
                node.SetNodeReferenceID(field.name, value.GetID() if value is not None else None)
            else:
                node.SetParameter(field.name, field.serialize(value))

        return property(getter, setter)

    namespace = {"__init__": __init__, "__doc__": cls.__doc__, "allFields": staticmethod(lambda: dict(fields)),
                 "__module__": cls.__module__}
    for name, field in fields.items():
        namespace[name] = make_property(field)
    for name, value in cls.__dict__.items():  # methods of the wrapped class
        if callable(value) and not name.startswith("__"):
            namespace[name] = value
    return type(cls.__name__, (), namespace)


def _parameter_wrapper_module():
    module = types.ModuleType("slicer.parameterNodeWrapper")
    module.parameterNodeWrapper = parameterNodeWrapper
    module.parameterPack = parameterPack
    module.WithinRange = WithinRange
    module.Choice = Choice
    module.Default = Default
    return module


# --- slicer.ScriptedLoadableModule -----------------------------------------------------------------

class ScriptedLoadableModule:
    def __init__(self, parent):
        self.parent = parent
        self.moduleName = self.__class__.__name__


class ScriptedLoadableModuleWidget:
    """Present so that the module imports; widgets need Qt and are not run by this layer."""

    def __init__(self, parent=None):
        self.parent = parent


class ScriptedLoadableModuleLogic:
    """``getParameterNode``: the scene's ``vtkMRMLScriptedModuleNode`` whose ModuleName
    attribute is the module name (created on first use, like Slicer's)."""

    def __init__(self, parent=None):
        name = self.__class__.__name__
        self.moduleName = name[:-len("Logic")] if name.endswith("Logic") else name

    def getParameterNode(self):
        scene = slicer.mrmlScene
        for index in range(scene.GetNumberOfNodesByClass("vtkMRMLScriptedModuleNode")):
            node = scene.GetNthNodeByClass(index, "vtkMRMLScriptedModuleNode")
            if node.GetAttribute("ModuleName") == self.moduleName:
                return node
        node = scene.AddNewNodeByClass("vtkMRMLScriptedModuleNode", self.moduleName)
        node.SetAttribute("ModuleName", self.moduleName)
        return node


class ScriptedLoadableModuleTest(unittest.TestCase):
    def delayDisplay(self, message, msec=None):
        logging.info(message)

    def runTest(self):  # replaced by the module's own
        pass


def _scripted_module():
    module = types.ModuleType("slicer.ScriptedLoadableModule")
    for cls in (ScriptedLoadableModule, ScriptedLoadableModuleWidget, ScriptedLoadableModuleLogic,
                ScriptedLoadableModuleTest):
        setattr(module, cls.__name__, cls)
    return module


# --- SampleData (registration only) ------------------------------------------------------------------

def _sample_data_module():
    module = types.ModuleType("SampleData")

    class SampleDataLogic:
        @staticmethod
        def registerCustomSampleDataCategory(category, title=None):
            slicer.modules.sampleDataCategories[category] = title or category

        @staticmethod
        def registerCustomSampleDataSource(category="Custom", sampleName=None, uris=None, fileNames=None,
                                           nodeNames=None, customDownloader=None, thumbnailFileName=None,
                                           loadFileTypes=None, loadFiles=None, loadFileProperties=None,
                                           checksums=None):
            source = types.SimpleNamespace(
                category=category, sampleName=sampleName, uris=uris, fileNames=fileNames, nodeNames=nodeNames,
                customDownloader=customDownloader, thumbnailFileName=thumbnailFileName,
                loadFileTypes=loadFileTypes, loadFiles=loadFiles, checksums=checksums)
            slicer.modules.sampleDataSources.setdefault(category, []).append(source)

    module.SampleDataLogic = SampleDataLogic
    return module


# --- views -----------------------------------------------------------------------------------------

class _OffscreenView:
    """An offscreen render window + renderer + interactor with a displayable-manager group."""

    def __init__(self, factory, managers, size):
        self.size = size
        self.renderWindow = vtk.vtkRenderWindow()
        self.renderWindow.SetOffScreenRendering(1)
        self.renderWindow.SetSize(*size)
        self.renderer = vtk.vtkRenderer()
        self.renderWindow.AddRenderer(self.renderer)
        self.interactor = vtk.vtkRenderWindowInteractor()
        self.interactor.SetRenderWindow(self.renderWindow)
        self.interactor.Initialize()
        for name in managers:
            if not factory.IsDisplayableManagerRegistered(name):
                factory.RegisterDisplayableManager(name)
        self.managers = factory.InstantiateDisplayableManagers(self.renderer)

    def forceRender(self):
        self.renderWindow.Render()

    def capture(self, path=None) -> np.ndarray:
        """Render and return the RGB image ``[row, column, 3]`` (row 0 at the top); write a PNG."""
        self.forceRender()
        grab = vtk.vtkWindowToImageFilter()
        grab.SetInput(self.renderWindow)
        grab.ReadFrontBufferOff()
        grab.Update()
        image = grab.GetOutput()
        width, height, _ = image.GetDimensions()
        pixels = vtk_to_numpy(image.GetPointData().GetScalars()).reshape(height, width, -1)[..., :3]
        if path is not None:
            writer = vtk.vtkPNGWriter()
            writer.SetFileName(str(path))
            writer.SetInputConnection(grab.GetOutputPort())
            writer.Write()
        return pixels[::-1].copy()  # VTK images start at the bottom row


class SliceWidget(_OffscreenView):
    """A slice view: ``vtkMRMLSliceLogic``'s blended layers in a 2D actor + slice managers."""

    def __init__(self, app, name, size):
        super().__init__(slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance(), SLICE_MANAGERS, size)
        self.logic = slicer.vtkMRMLSliceLogic()
        self.logic.SetMRMLApplicationLogic(app.applicationLogic())
        self.logic.SetMRMLScene(app.scene)
        app.sliceLogics.AddItem(self.logic)
        self.node = None
        for index in range(app.scene.GetNumberOfNodesByClass("vtkMRMLSliceNode")):  # made by the layout logic
            node = app.scene.GetNthNodeByClass(index, "vtkMRMLSliceNode")
            if node.GetLayoutName() == name:
                self.node = node
        if self.node is None:
            self.node = self.logic.AddSliceNode(name)
        self.logic.SetSliceNode(self.node)
        self.node.SetOrientation(SLICE_VIEWS[name])
        self.node.SetDimensions(size[0], size[1], 1)
        self.node.SetInteractionNodeID("vtkMRMLInteractionNodeSingleton")  # set by Slicer's layout manager
        self.mapper = vtk.vtkImageMapper()
        self.mapper.SetColorWindow(255.0)
        self.mapper.SetColorLevel(127.5)
        self.imageActor = vtk.vtkActor2D()
        self.imageActor.SetMapper(self.mapper)
        self.renderer.AddViewProp(self.imageActor)
        self.managers.SetMRMLDisplayableNode(self.node)

    def forceRender(self):
        # the logic's output port changes when layers are added (Slicer's slice view follows
        # the logic's modified events; here it is taken again before each render)
        for layer in (self.logic.GetBackgroundLayer(), self.logic.GetForegroundLayer(), self.logic.GetLabelLayer()):
            if layer is not None:
                layer.UpdateTransforms()
        self.mapper.SetInputConnection(self.logic.GetImageDataConnection())
        super().forceRender()

    def sliceLogic(self):
        return self.logic

    def mrmlSliceNode(self):
        return self.node

    def sliceView(self):
        return self

    def rasToPixel(self, ras):
        """(row, column) of the image returned by :meth:`capture` where RAS point ``ras`` is drawn."""
        rasToXY = vtk.vtkMatrix4x4()
        vtk.vtkMatrix4x4.Invert(self.node.GetXYToRAS(), rasToXY)
        x, y, _, _ = rasToXY.MultiplyPoint([float(ras[0]), float(ras[1]), float(ras[2]), 1.0])
        return int(round(self.size[1] - 1 - y)), int(round(x))


class ThreeDWidget(_OffscreenView):
    """The 3D view "1": a view node from the layout logic and the 3D displayable managers."""

    def __init__(self, app, node, size):
        super().__init__(slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance(), THREED_MANAGERS, size)
        self.node = node
        node.SetInteractionNodeID("vtkMRMLInteractionNodeSingleton")
        self.managers.SetMRMLDisplayableNode(node)

    def threeDView(self):
        return self

    def mrmlViewNode(self):
        return self.node

    def resetFocalPoint(self):
        """Centre on what is shown, as Slicer's 3D view does: box and axis labels are left out."""
        box, labels = self.node.GetBoxVisible(), self.node.GetAxisLabelsVisible()
        self.node.SetBoxVisible(False)
        self.node.SetAxisLabelsVisible(False)
        self.renderer.ResetCamera()
        self.node.SetBoxVisible(box)
        self.node.SetAxisLabelsVisible(labels)
        self.renderer.ResetCameraClippingRange()


class LayoutManager:
    """``slicer.app.layoutManager()``: layout id on the real layout node, offscreen views."""

    def __init__(self, app, size):
        self.app = app
        self.layoutLogic = slicer.vtkMRMLLayoutLogic()
        self.layoutLogic.SetMRMLApplicationLogic(app.applicationLogic())
        self.layoutLogic.SetMRMLScene(app.scene)
        self.layoutNode = self.layoutLogic.GetLayoutNode()
        self.layoutNode.SetViewArrangement(slicer.vtkMRMLLayoutNode.SlicerLayoutFourUpView)
        self._slices = {name: SliceWidget(app, name, size) for name in SLICE_VIEWS}
        viewNode = app.scene.GetFirstNodeByClass("vtkMRMLViewNode")  # "1", made by the layout logic
        if viewNode is None:
            viewNode = app.scene.AddNewNodeByClass("vtkMRMLViewNode")
            viewNode.SetLayoutName("1")
        self._threeD = ThreeDWidget(app, viewNode, size)

    @property
    def layout(self) -> int:
        return self.layoutNode.GetViewArrangement()

    @layout.setter
    def layout(self, value):
        self.setLayout(value)

    def setLayout(self, value):
        self.layoutNode.SetViewArrangement(int(value))

    def sliceViewNames(self):
        return list(self._slices)

    def sliceWidget(self, name):
        return self._slices.get(name)

    def threeDWidget(self, index):
        return self._threeD if index == 0 else None

    def threeDViewCount(self):
        return 1

    def mrmlSliceLogics(self):
        return self.app.sliceLogics

    def resetThreeDViews(self):
        self._threeD.resetFocalPoint()

    def resetSliceViews(self):
        for widget in self._slices.values():
            widget.logic.FitSliceToAll()


# --- the application -------------------------------------------------------------------------------

class App:
    """``slicer.app`` for one scene: application logic, module logics, layout manager."""

    def __init__(self, size=(400, 400)):
        self.scene = slicer.vtkMRMLScene()
        slicer.mrmlScene = self.scene
        self._appLogic = slicer.vtkSlicerApplicationLogic()
        self._appLogic.SetMRMLScene(self.scene)
        self.sliceLogics = vtk.vtkCollection()
        self.viewLogics = vtk.vtkCollection()
        self._appLogic.SetSliceLogics(self.sliceLogics)
        self._appLogic.SetViewLogics(self.viewLogics)
        self._signals = {}
        # No Slicer installation: an empty home directory (Slicer's colour files are not in the
        # wheel, so only the procedural colour tables exist; the logic looks there quietly).
        self._home = tempfile.TemporaryDirectory(prefix="slicer-home-")
        os.makedirs(os.path.join(self._home.name, "share", "ColorFiles"))
        self._appLogic.SetHomeDirectory(self._home.name)
        self._appLogic.SetShareDirectory("share")
        colors = slicer.vtkSlicerColorLogic()
        colors.SetMRMLApplicationLogic(self._appLogic)
        colors.SetMRMLScene(self.scene)
        self._appLogic.SetColorLogic(colors)
        self._appLogic.SetModuleLogic("Colors", colors)
        for factory in (slicer.vtkMRMLSliceViewDisplayableManagerFactory.GetInstance(),
                        slicer.vtkMRMLThreeDViewDisplayableManagerFactory.GetInstance()):
            factory.SetMRMLApplicationLogic(self._appLogic)
        modules = {"colors": colors}
        for name, cls in (("Volumes", slicer.vtkSlicerVolumesLogic),
                          ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
                          ("Sequences", slicer.vtkSlicerSequencesLogic),
                          ("Tables", slicer.vtkSlicerTablesLogic),
                          ("Plots", slicer.vtkSlicerPlotsLogic),
                          ("Markups", slicer.vtkSlicerMarkupsLogic)):
            logic = cls()
            logic.SetMRMLApplicationLogic(self._appLogic)
            logic.SetMRMLScene(self.scene)
            self._appLogic.SetModuleLogic(name, logic)
            modules[name.lower()] = logic
        slicer.vtkMRMLSliceNode.AddDefaultSliceOrientationPresets(self.scene)
        if self.scene.GetFirstNodeByClass("vtkMRMLCrosshairNode") is None:
            crosshair = self.scene.AddNewNodeByClass("vtkMRMLCrosshairNode")
            crosshair.SetSingletonTag("default")
        self.moduleLogics = modules
        namespace = {key: types.SimpleNamespace(logic=lambda logic=logic: logic) for key, logic in modules.items()}
        slicer.modules = types.SimpleNamespace(sampleDataSources={}, sampleDataCategories={}, **namespace)
        self._layoutManager = LayoutManager(self, size)

    # what slicer.app offers to the module
    def layoutManager(self):
        return self._layoutManager

    def applicationLogic(self):
        return self._appLogic

    def testingEnabled(self):
        return True

    def processEvents(self, *args):
        pass

    def connect(self, signal, callback):
        self._signals.setdefault(signal, []).append(callback)

    def emit(self, signal):
        for callback in self._signals.get(signal, []):
            callback()

    # test helpers
    def segmentEditorLogic(self, segmentation, source_volume):
        """Slicer's C++ segment-editor logic on ``segmentation`` with undo enabled."""
        editorNode = self.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        logic = slicer.vtkSlicerSegmentEditorLogic()
        logic.SetMRMLApplicationLogic(self._appLogic)
        logic.SetMRMLScene(self.scene)
        logic.SetSegmentEditorNode(editorNode)
        logic.SetSegmentationNode(segmentation)
        logic.SetSourceVolumeNode(source_volume)  # the logic keeps its own undo history
        return logic

    @staticmethod
    def modifierLabelmap(mask, volume):
        """A ``vtkOrientedImageData`` brush stroke: ``mask`` [K, J, I] on ``volume``'s grid."""
        mask = np.ascontiguousarray(np.asarray(mask, dtype=np.uint8))
        image = slicer.vtkOrientedImageData()
        image.SetDimensions(mask.shape[2], mask.shape[1], mask.shape[0])
        image.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 1)
        vtk_to_numpy(image.GetPointData().GetScalars())[:] = mask.ravel()
        matrix = vtk.vtkMatrix4x4()
        volume.GetIJKToRASMatrix(matrix)
        image.SetImageToWorldMatrix(matrix)
        return image

    def clickSampleDataButton(self, sampleName):
        """What the Sample Data module's button does: the source's custom downloader, called
        with the source (SampleData.py, Slicer 5.10-5.12), else a download (no network here)."""
        for sources in slicer.modules.sampleDataSources.values():
            for source in sources:
                if source.sampleName == sampleName:
                    if source.customDownloader is None:
                        raise RuntimeError(f"{sampleName} would be downloaded from {source.uris}: no network in tests")
                    return source.customDownloader(source)
        raise KeyError(f"sample {sampleName!r} is not registered")

    def close(self):
        self.scene.Clear(1)
        self._home.cleanup()


def install(size=(400, 400)) -> App:
    """Install the stand-in modules (once) and a fresh ``slicer.app`` with a new scene."""
    sys.modules.setdefault("qt", _gui_stub("qt"))
    sys.modules.setdefault("ctk", _gui_stub("ctk"))
    for name, factory in (("slicer.i18n", _i18n_module), ("slicer.parameterNodeWrapper", _parameter_wrapper_module),
                          ("slicer.ScriptedLoadableModule", _scripted_module)):
        if name not in sys.modules:
            sys.modules[name] = factory()
        setattr(slicer, name.split(".", 1)[1], sys.modules[name])
    sys.modules.setdefault("SampleData", _sample_data_module())
    app = App(size)
    slicer.app = app
    return app
