"""Every setting of the schema (``StrokeMismatchLib.settings``) is in the module's parameter node,
with the command line's name, default, unit and range, and reaches the analysis.

Real: StrokeMismatch.py (the parameter-node class built from the schema, ``panelSettings``,
``caseSettingsFromParameterNode``, ``processFromParameterNode``), StrokeMismatchLib, and the
``vtkMRMLScriptedModuleNode`` of slicer-core that stores the values. Stubbed (slicerapp.py):
``parameterNodeWrapper`` / ``parameterPack`` / ``WithinRange`` / ``Choice`` (typed fields on the
real node; Slicer's own wrapper validates the same way) and ``slicer.app``. The panel's Qt
widgets are made from ``settingWidgetSpec``, checked here without Qt.
"""

import math

import pytest

from StrokeMismatchLib.settings import SettingsError, all_settings, settings_by_name


def test_every_schema_setting_is_in_the_parameter_node_with_the_cli_default_unit_and_range(app, module):
    panel = module.StrokeMismatchLogic.panelSettings()
    schema = all_settings()
    assert [row["name"] for row in panel] == [spec.name for spec in schema]
    for row, spec in zip(panel, schema):
        assert row["default"] == spec.default, spec.name
        assert row["unit"] == spec.unit, spec.name  # the widget's suffix is the CLI's unit (CT core in %)
        assert row["group"] == spec.group and row["label"] == spec.label
        assert row["parameterName"] == f"settings.{spec.name}"
        if spec.kind in ("float", "int"):
            assert (row["minimum"], row["maximum"]) == (spec.minimum, spec.maximum), spec.name
        elif spec.kind.startswith("optional"):  # one step below the minimum means "not given"
            assert (row["minimum"], row["maximum"]) == (spec.minimum - module.OPTIONAL_OFFSET, spec.maximum)
        elif spec.kind == "choice":
            assert row["choices"] == spec.choices and row["widget"] == "QComboBox"
        else:
            assert row["widget"] == ("QCheckBox" if spec.kind == "bool" else "QComboBox")
    core = next(row for row in panel if row["name"] == "core_rcbf_percent")
    assert core["unit"] == "%" and core["default"] == 30.0


def test_widgets_show_the_schema_range_unit_and_help(app, module):
    for spec in all_settings():
        look = module.StrokeMismatchLogic.settingWidgetSpec(spec)
        assert spec.help in look["toolTip"] and spec.cli_flag in look["toolTip"]
        if look["widget"] in ("QSpinBox", "QDoubleSpinBox"):
            assert look["maximum"] == spec.maximum and look["suffix"].strip() == spec.unit
            default = spec.default if spec.default is not None else look["minimum"]
            assert round(default, look["decimals"]) == pytest.approx(default), spec.name  # shown exactly
    names = set(settings_by_name())
    logic = module.StrokeMismatchLogic
    assert set(logic.MR_ONLY_SETTINGS) <= names and set(logic.CT_ONLY_SETTINGS) <= names


def test_out_of_range_values_cannot_be_held(app, module):
    logic = module.StrokeMismatchLogic()
    node = logic.getParameterNode()
    for spec in all_settings():
        if spec.kind not in ("float", "int", "optional_float", "optional_int"):
            continue
        before = getattr(node.settings, spec.name)
        too_big = spec.maximum + (1 if spec.kind.endswith("int") else 0.5) * max(1, abs(spec.maximum))
        number = int if spec.kind.endswith("int") else float
        with pytest.raises(ValueError):
            setattr(node.settings, spec.name, number(too_big))
        assert getattr(node.settings, spec.name) == before, spec.name
        with pytest.raises(SettingsError, match=spec.name):
            logic.setSettingsInParameterNode(node, **{spec.name: number(too_big)})
    with pytest.raises(ValueError):
        node.settings.method = "magic"


def test_panel_values_reach_the_analysis_in_the_cli_units(mr_run, module):
    logic, nodes, outputs = mr_run
    node = logic.getParameterNode()
    node.perfusionNode, node.adcVolume = nodes["sequence"], nodes["adc"]
    logic.setSettingsInParameterNode(node, motion_correction=False, tmax_threshold=8.0, core_adc=700.0,
                                     core_rcbf_percent=25.0, age=70, nihss=None, tmax_median_filter=True,
                                     vessel_ttp_window_s=None, method="cSVD")
    assert node.settings.nihss == -1 and node.settings.tmax_median_filter == module.AutoOnOff.On
    settings = logic.caseSettingsFromParameterNode(node)
    assert settings.method == "cSVD" and settings.motion_correction is False
    lesion = settings.lesion
    assert (lesion.tmax_threshold, lesion.core_adc, lesion.core_rcbf_percent) == (8.0, 700.0, 25.0)
    assert math.isclose(lesion.core_rcbf, 0.25)  # the Lib's fraction, from the panel's percent
    assert (lesion.age, lesion.nihss, lesion.tmax_median_filter, lesion.vessel_ttp_window_s) == (70, None, True, None)
    logic.processFromParameterNode(node)
    used = logic.lastResult.settings
    assert used.method == "cSVD" and used.lesion.tmax_threshold == 8.0 and used.lesion.age == 70
    hypo = logic.lastResult.lesion.metrics["hypoperfusion_ml"].value
    default_hypo = float(next(r["Value"] for r in module.mrmlio.table_rows(outputs["table"]) if r["Key"] == "hypoperfusion_ml"))
    assert hypo < default_hypo  # Tmax > 8 s is smaller than Tmax > 6 s


def test_the_stand_in_takes_pack_defaults_only_from_default_as_slicer_does(app):
    """Slicer's parameterPack ignores class-attribute defaults (it reads ``Default(...)``) and
    refuses a default outside the range; the stand-in does the same, so such a mistake in the
    module fails here rather than at start-up in Slicer."""
    from typing import Annotated

    from slicer.parameterNodeWrapper import Default, WithinRange, parameterPack

    bad = type("Bad", (), {"__annotations__": {"x": Annotated[float, WithinRange(1.0, 2.0)]}, "x": 1.5})
    with pytest.raises(ValueError, match="default"):
        parameterPack(bad)
    good = parameterPack(type("Good", (), {"__annotations__": {"x": Annotated[float, WithinRange(1.0, 2.0),
                                                                                 Default(1.5)]}}))
    assert good().x == 1.5
