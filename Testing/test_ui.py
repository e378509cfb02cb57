"""The module panel (.ui): structure checks (GUIDE §6.3) and an offscreen PySide6 load.

Run as a script to refresh the README screenshot::

    QT_QPA_PLATFORM=offscreen python Testing/test_ui.py   # writes Resources/Screenshots/panel.png

The screenshot's texts (frames, frame times, results) come from a real run of the module's Logic
on the MR sample (``real_run_texts``), never typed by hand.

Slicer and CTK widgets are unknown to PySide6's QUiLoader, so the XML is pre-processed: each
custom class is replaced by the Qt class it extends (``<customwidgets><extends>``), with two
display substitutions for a faithful picture (ctkCollapsibleButton -> QGroupBox,
qMRMLNodeComboBox -> QComboBox). Object names and dynamic properties survive.
"""

from __future__ import annotations

import ast
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UI_FILE = ROOT / "StrokeMismatch" / "Resources" / "UI" / "StrokeMismatch.ui"
MODULE_FILE = ROOT / "StrokeMismatch" / "StrokeMismatch.py"
SCREENSHOT = ROOT / "Resources" / "Screenshots" / "panel.png"

#: Qt widgets used for Slicer/CTK classes when rendering (otherwise their <extends> base).
DISPLAY_CLASSES = {"ctkCollapsibleButton": "QGroupBox", "qMRMLNodeComboBox": "QComboBox",
                   "qSlicerMarkupsPlaceWidget": "QToolButton"}


# --- helpers --------------------------------------------------------------------------------------

def _tree():
    return ET.parse(UI_FILE)


def _widgets(root):
    return list(root.iter("widget"))


def _dynamic_property(widget, name):
    for prop in widget.findall("property"):
        if prop.get("name") == name and prop.get("stdset") == "0":
            return prop.findtext("string")
    return None


def _module_ast():
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def parameter_fields() -> dict:
    """Field name -> annotation source of the @parameterNodeWrapper class."""
    for node in _module_ast().body:
        if isinstance(node, ast.ClassDef) and any(
                (isinstance(d, ast.Name) and d.id == "parameterNodeWrapper") for d in node.decorator_list):
            return {stmt.target.id: ast.unparse(stmt.annotation) for stmt in node.body
                    if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)}
    raise AssertionError("no @parameterNodeWrapper class in StrokeMismatch.py")


def enum_members() -> dict:
    """Enum class name -> member names, from StrokeMismatch.py."""
    result = {}
    for node in _module_ast().body:
        if isinstance(node, ast.ClassDef) and any(ast.unparse(b) in ("enum.Enum", "Enum") for b in node.bases):
            result[node.name] = [stmt.targets[0].id for stmt in node.body if isinstance(stmt, ast.Assign)]
    return result


def enum_labels() -> dict:
    """Enum class name -> shown texts (its ``label`` method's dict of ``_("...")``, else the names)."""
    result = {}
    for node in _module_ast().body:
        if isinstance(node, ast.ClassDef) and node.name in enum_members():
            names = enum_members()[node.name]
            texts = dict(zip(names, names))
            for method in node.body:
                if isinstance(method, ast.FunctionDef) and method.name == "label":
                    for table in ast.walk(method):
                        if isinstance(table, ast.Dict):
                            for key, value in zip(table.keys, table.values):
                                if isinstance(value, ast.Call) and value.args:
                                    texts[key.value] = value.args[0].value
            result[node.name] = [texts[name] for name in names]
    return result


def ui_names_used_in_python() -> set:
    names = set()
    for node in ast.walk(_module_ast()):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute) \
                and node.value.attr == "ui" and isinstance(node.value.value, ast.Name) and node.value.value.id == "self":
            names.add(node.attr)
    return names


# --- XML checks (GUIDE §6.3) --------------------------------------------------------------------

def test_top_widget_and_apply_button():
    root = _tree().getroot()
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "StrokeMismatch"
    assert root.findtext("class") == "StrokeMismatch"
    apply = [w for w in _widgets(root) if w.get("name") == "applyButton"]
    assert len(apply) == 1 and apply[0].get("class") == "QPushButton"
    enabled = [p for p in apply[0].findall("property") if p.get("name") == "enabled"]
    assert enabled and enabled[0].findtext("bool") == "false"


def test_every_node_combobox_gets_the_scene():
    root = _tree().getroot()
    combos = {w.get("name") for w in _widgets(root) if w.get("class") in ("qMRMLNodeComboBox", "qSlicerMarkupsPlaceWidget")}
    assert {"perfusionSelector", "adcSelector", "aifPointsSelector"} <= combos
    connected = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("sender") == "StrokeMismatch" and c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"
                 and c.findtext("slot") == "setMRMLScene(vtkMRMLScene*)"}
    assert combos <= connected, f"missing mrmlSceneChanged -> setMRMLScene for {sorted(combos - connected)}"


def test_perfusion_selector_accepts_sequences_proxies_and_multivolumes_but_not_labelmaps():
    root = _tree().getroot()
    combo = next(w for w in _widgets(root) if w.get("name") == "perfusionSelector")
    props = {p.get("name"): p for p in combo.findall("property")}
    types = [s.text for s in props["nodeTypes"].iter("string")]
    assert types == ["vtkMRMLSequenceNode", "vtkMRMLScalarVolumeNode"]
    assert props["showChildNodeTypes"].findtext("bool") == "true"  # MultiVolume, proxies
    assert [s.text for s in props["hideChildNodeTypes"].iter("string")] == ["vtkMRMLLabelMapVolumeNode"]


def test_parameter_names_match_fields_and_every_field_is_bound():
    root = _tree().getroot()
    fields = parameter_fields()
    bound = {}
    for widget in _widgets(root):
        name = _dynamic_property(widget, "SlicerParameterName")
        if name is not None:
            assert name in fields, f"{widget.get('name')}: SlicerParameterName {name!r} is no parameter-node field"
            assert name not in bound, f"{name} bound twice"
            bound[name] = widget
        for prop in widget.findall("property"):  # the template's invert-checkbox wart
            assert not (prop.get("stdset") == "0" and prop.get("name") in fields), prop.get("name")
    # "settings" (a parameter pack) is bound by the widgets the module builds from the schema
    assert set(bound) == set(fields) - {"settings"}, f"fields without a widget: {sorted(set(fields) - set(bound))}"
    assert "settings" in fields
    enums = enum_members()
    for name, widget in bound.items():
        annotation = fields[name]
        if annotation in enums:  # filled by connectGui: no items in the .ui
            assert widget.get("class") == "QComboBox" and widget.find("item") is None, name
        if annotation == "bool":
            assert widget.get("class") == "QCheckBox", name
        if "vtkMRML" in annotation:
            assert widget.get("class") == "qMRMLNodeComboBox", name
            # connectGui overwrites nodeTypes with the annotation's node classes: keep them equal
            declared = [s.text for p in widget.findall("property") if p.get("name") == "nodeTypes"
                        for s in p.iter("string")]
            annotated = [part.strip() for part in annotation.split("|") if part.strip() != "None"]
            assert declared == annotated, (name, declared, annotated)


def test_every_ui_name_used_in_python_exists_and_names_are_unique():
    root = _tree().getroot()
    names = [w.get("name") for w in _widgets(root)] + [l.get("name") for l in root.iter("layout")]
    assert len(names) == len(set(names)), "duplicate objectNames"
    used = ui_names_used_in_python()
    assert {"applyButton", "updateFromSegmentsButton", "inspectorLabel"} <= used
    assert used <= set(names), f"self.ui names missing in the .ui: {sorted(used - set(names))}"


def test_settings_section_holds_only_the_frame_for_the_schema_built_widgets():
    """No setting is hand-made in the .ui: the module fills "settingsFrame" from the schema."""
    root = _tree().getroot()
    sections = {w.get("name"): w for w in _widgets(root) if w.get("class") == "ctkCollapsibleButton"}
    assert "clinicalCollapsibleButton" not in sections  # the clinical inputs are a schema group now
    inside = {w.get("name"): w for w in sections["advancedCollapsibleButton"].iter("widget")}
    assert inside["settingsFrame"].find("layout").get("class") == "QVBoxLayout"
    bound = {_dynamic_property(w, "SlicerParameterName") for w in _widgets(root)} - {None}
    assert not {name for name in bound if name.startswith("settings")}
    from StrokeMismatchLib.settings import all_settings

    assert not bound & {spec.name for spec in all_settings()}


# --- PySide6 load --------------------------------------------------------------------------------

def qt_ready_xml() -> bytes:
    """The .ui with every custom class replaced by a Qt class PySide6 knows."""
    tree = _tree()
    root = tree.getroot()
    extends = {cw.findtext("class"): cw.findtext("extends") for cw in root.iter("customwidget")}

    def qt_class(name):
        seen = set()
        while name in extends and name not in seen:
            seen.add(name)
            name = DISPLAY_CLASSES.get(name, extends[name])
        return DISPLAY_CLASSES.get(name, name)

    for widget in root.iter("widget"):
        original = widget.get("class")
        if original in extends or original in DISPLAY_CLASSES:
            widget.set("class", qt_class(original))
            if original == "ctkCollapsibleButton":
                for prop in widget.findall("property"):
                    if prop.get("name") == "text":
                        prop.set("name", "title")
                    elif prop.get("name") == "collapsed":
                        prop.set("stdset", "0")  # keep it as a dynamic property
            if original == "qMRMLNodeComboBox":  # drop qMRML-only properties (kept as dynamic)
                for prop in widget.findall("property"):
                    if prop.get("name") in ("nodeTypes", "showChildNodeTypes", "hideChildNodeTypes", "noneEnabled",
                                            "addEnabled", "removeEnabled"):
                        prop.set("stdset", "0")
    custom = root.find("customwidgets")
    if custom is not None:
        root.remove(custom)
    connections = root.find("connections")
    if connections is not None:
        root.remove(connections)
    return ET.tostring(root, encoding="utf-8")


def _application():
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    widgets = pytest.importorskip("PySide6.QtWidgets")
    app = widgets.QApplication.instance() or widgets.QApplication([])
    return app


def load_panel():
    """Load the pre-processed .ui with QUiLoader; returns the top widget."""
    from PySide6.QtCore import QBuffer, QByteArray, QIODevice
    from PySide6.QtUiTools import QUiLoader

    _application()
    buffer = QBuffer()
    buffer.setData(QByteArray(qt_ready_xml()))
    buffer.open(QIODevice.ReadOnly)
    widget = QUiLoader().load(buffer)
    buffer.close()
    assert widget is not None
    return widget


def add_setting_widgets(panel, expanded=False):
    """The settings groups as ``StrokeMismatchWidget._createSettingWidgets`` builds them in Slicer
    (same ``settingWidgetSpec`` for each schema setting), with PySide6 classes, at their defaults."""
    from PySide6 import QtWidgets

    sys.path[:0] = [str(ROOT / "Testing" / "slicer_app"), str(ROOT / "StrokeMismatch")]
    import slicerapp

    slicerapp.install()
    import StrokeMismatch
    from StrokeMismatchLib.settings import settings_by_group

    frame = panel.findChild(QtWidgets.QWidget, "settingsFrame")
    for group, specs in settings_by_group().items():
        box = QtWidgets.QGroupBox(group)
        form = QtWidgets.QFormLayout(box)
        frame.layout().addWidget(box)
        for spec in specs:
            look = StrokeMismatch.StrokeMismatchLogic.settingWidgetSpec(spec)
            widget = getattr(QtWidgets, look["widget"])()
            default = spec.default
            if look["widget"] in ("QSpinBox", "QDoubleSpinBox"):
                if look["widget"] == "QDoubleSpinBox":
                    widget.setDecimals(look["decimals"])
                widget.setRange(look["minimum"], look["maximum"])
                widget.setSuffix(look["suffix"])
                widget.setSpecialValueText(look["specialValueText"])
                widget.setValue(look["minimum"] if default is None else default)
            elif look["widget"] == "QCheckBox":
                widget.setChecked(bool(default))
            else:
                items = list(spec.choices) if spec.kind == "choice" else [m.name for m in StrokeMismatch.AutoOnOff]
                widget.addItems(items)
                widget.setCurrentText(str(default) if spec.kind == "choice"
                                      else StrokeMismatch.AutoOnOff.fromSetting(default).name)
            widget.setObjectName(f"{spec.name}Setting")
            widget.setToolTip(look["toolTip"])
            widget.setProperty("SlicerParameterName", look["parameterName"])
            form.addRow(QtWidgets.QLabel(look["label"] + ":"), widget)
        if not expanded and group not in ("Core", "Hypoperfusion"):  # collapsed, as in Slicer
            for child in box.findChildren(QtWidgets.QWidget):
                child.setVisible(False)
            box.setMaximumHeight(24)
    return panel


def dress_for_screenshot(panel, expanded=(), texts=None):
    """Fill what Slicer would fill (enum combos, node names) and collapse collapsed sections
    (except those named in ``expanded``)."""
    from PySide6.QtWidgets import QComboBox, QGroupBox, QWidget

    fields = parameter_fields()
    enums = enum_labels()
    examples = {"perfusionNode": "StrokeMismatchPhantomMR", "adcVolume": "StrokeMismatchPhantomMR ADC",
                "aifPoints": "None", "outputSegmentation": "StrokeMismatchPhantomMR lesion",
                "outputTable": "StrokeMismatchPhantomMR summary"}
    for combo in panel.findChildren(QComboBox):
        field = combo.property("SlicerParameterName")
        if field in fields and fields[field] in enums:
            combo.addItems(enums[fields[field]])
        elif field in examples:
            combo.addItem(examples[field])
    for group in panel.findChildren(QGroupBox):
        if group.property("collapsed") and group.objectName() not in expanded:
            for child in group.findChildren(QWidget):
                child.setVisible(False)
            group.setMaximumHeight(24)
    panel.findChild(QWidget, "aifPlaceWidget").setText("Place a point")
    for name, text in (texts or {}).items():  # from a real run (README screenshot), else left empty
        widget = panel.findChild(QWidget, name)
        widget.setText(text)
        if hasattr(widget, "setCursorPosition"):
            widget.setCursorPosition(0)
    if texts:  # after a run, as the widget's _checkCanApply leaves them
        for name in ("applyButton", "updateFromSegmentsButton"):
            panel.findChild(QWidget, name).setEnabled(True)


def real_run_texts() -> dict:
    """The panel's texts after a real run of the module's Logic on the MR sample (Testing/slicer_app:
    slicer-core MRML, the real StrokeMismatch.py): frames label, frame times, result summary."""
    import importlib.util

    sys.path[:0] = [str(ROOT / "Testing" / "slicer_app"), str(ROOT / "StrokeMismatch")]
    import slicerapp

    spec = importlib.util.spec_from_file_location("slicer_app_conftest", ROOT / "Testing" / "slicer_app" / "conftest.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    app = slicerapp.install()
    import StrokeMismatch

    nodes = helpers.load_sample(app, StrokeMismatch, "mr")
    logic = StrokeMismatch.StrokeMismatchLogic()
    times = logic.frameInfo(nodes["proxy"])["times"]
    logic.process(nodes["proxy"], nodes["adc"])  # the panel's defaults (motion correction on)
    return {"frameInfoLabel": f"{len(times)} frames, {times[0]:g}-{times[-1]:g} s",
            "frameTimesLineEdit": ", ".join(f"{t:g}" for t in times),
            "resultLabel": logic.summaryText()}


def render_panel(path: Path, expanded=(), texts=None) -> Path:
    panel = add_setting_widgets(load_panel(), expanded="settingsGroups" in expanded)
    dress_for_screenshot(panel, expanded, texts)
    panel.resize(440, panel.sizeHint().height())
    panel.adjustSize()
    path.parent.mkdir(parents=True, exist_ok=True)
    assert panel.grab().save(str(path), "PNG")
    return path


def test_ui_loads_with_pyside6_and_keeps_names_and_bindings():
    pytest.importorskip("PySide6.QtUiTools")
    from PySide6.QtWidgets import QComboBox, QDoubleSpinBox, QPushButton, QWidget

    panel = load_panel()
    assert panel.objectName() == "StrokeMismatch"
    root = _tree().getroot()
    for name in {w.get("name") for w in _widgets(root)} - {"StrokeMismatch"}:
        assert panel.findChild(QWidget, name) is not None, name
    for name in ui_names_used_in_python():
        assert panel.findChild(QWidget, name) is not None or panel.findChild(type(panel.layout()), name) is not None \
            or name in {l.get("name") for l in root.iter("layout")}, name
    assert panel.findChild(QPushButton, "applyButton").isEnabled() is False
    bound = {w.property("SlicerParameterName") for w in panel.findChildren(QWidget)} - {None}
    assert bound == set(parameter_fields()) - {"settings"}  # the pack is bound by schema-built widgets
    assert isinstance(panel.findChild(QWidget, "perfusionSelector"), QComboBox)
    add_setting_widgets(panel)
    tmax = panel.findChild(QDoubleSpinBox, "tmax_thresholdSetting")
    assert tmax.value() == pytest.approx(6.0) and tmax.suffix() == " s"
    assert tmax.minimum() == 1.0 and tmax.maximum() == 20.0 and "Tmax above" in tmax.toolTip()
    assert panel.findChild(QDoubleSpinBox, "core_adcSetting").value() == pytest.approx(620.0)
    rcbf = panel.findChild(QDoubleSpinBox, "core_rcbf_percentSetting")
    assert rcbf.value() == pytest.approx(30.0) and rcbf.suffix() == " %"  # percent, as on the CLI
    age = panel.findChild(QWidget, "ageSetting")
    assert age.text() == "not given" or age.specialValueText() == "not given"


def test_panel_renders_offscreen(tmp_path):
    pytest.importorskip("PySide6.QtUiTools")
    from PySide6.QtGui import QImage

    path = render_panel(tmp_path / "panel.png")
    image = QImage(str(path))
    assert image.width() >= 300 and image.height() >= 400
    colours = {image.pixel(x, y) for x in range(0, image.width(), 7) for y in range(0, image.height(), 7)}
    assert len(colours) > 10  # not a blank picture


def test_panel_renders_with_every_settings_group_open(tmp_path):
    """All schema groups open (clean-up included) make a much taller panel."""
    pytest.importorskip("PySide6.QtUiTools")
    from PySide6.QtGui import QImage

    closed = QImage(str(render_panel(tmp_path / "closed.png")))
    opened = QImage(str(render_panel(tmp_path / "open.png", expanded=("settingsGroups",))))
    assert opened.height() > closed.height() + 300


if __name__ == "__main__":
    # python Testing/test_ui.py [--advanced OUT.png]: the README screenshot (groups collapsed), or
    # the panel with every settings group open (to check its layout).
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    if len(sys.argv) == 3 and sys.argv[1] == "--advanced":
        print(render_panel(Path(sys.argv[2]), expanded=("settingsGroups",)))
    else:
        print(render_panel(SCREENSHOT, texts=real_run_texts()))
    sys.exit(0)
