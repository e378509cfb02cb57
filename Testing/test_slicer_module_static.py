"""Static checks of the Slicer module (GUIDE §6.5): the shared API checker, and the rules that
keep StrokeMismatch.py a thin layer over the Lib. No Slicer needed.

The checker lives in ``shared/tools`` beside the repository clone (``../shared/tools`` from the
repository root, in CI and in development).
"""

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHECKER = ROOT.parent / "shared" / "tools" / "slicer_api_check.py"
MODULE = ROOT / "StrokeMismatch"
MODULE_FILE = MODULE / "StrokeMismatch.py"


def _lib_files():
    return sorted(str(p.relative_to(ROOT)) for p in (MODULE / "StrokeMismatchLib").glob("*.py"))


def _run_checker(*extra):
    if not CHECKER.is_file():
        pytest.fail(f"Slicer API checker not found at {CHECKER}: clone 'shared' beside the repository.")
    args = [sys.executable, str(CHECKER), "check", "--ui", "StrokeMismatch/Resources/UI/StrokeMismatch.ui",
            "StrokeMismatch/StrokeMismatch.py", *_lib_files(), *extra]
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("extra", [(), ("--cmake", "StrokeMismatch/CMakeLists.txt")], ids=["ui", "ui+cmake"])
def test_slicer_api_checker_reports_no_errors(extra):
    result = _run_checker(*extra)
    errors = [line for line in result.stdout.splitlines() if ": error:" in line]
    assert result.returncode == 0 and not errors, result.stdout + result.stderr
    assert "0 error(s)" in result.stdout


def test_no_unguarded_5_12_calls_and_no_warnings_in_the_slicer_files():
    result = _run_checker()
    ours = [line for line in result.stdout.splitlines()
            if line.startswith(("StrokeMismatch/StrokeMismatch.py", "StrokeMismatch/StrokeMismatchLib/mrmlio.py"))]
    assert not ours, "\n".join(ours)


def test_checker_does_catch_a_bad_api_name(tmp_path):
    """The gate is live: a misspelled helper is an error."""
    bad = tmp_path / "Bad.py"
    bad.write_text("import slicer\nslicer.util.arrayFromSequence(None)\n")
    result = subprocess.run([sys.executable, str(CHECKER), "check", str(bad)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and "arrayFromSequence" in result.stdout


def _tree():
    return ast.parse(MODULE_FILE.read_text(encoding="utf-8"))


def test_module_classes_follow_the_slicer_conventions():
    classes = {node.name: node for node in _tree().body if isinstance(node, ast.ClassDef)}
    for name in ("StrokeMismatch", "StrokeMismatchWidget", "StrokeMismatchLogic", "StrokeMismatchTest",
                 "StrokeMismatchParameterNode"):
        assert name in classes, name
    assert [ast.unparse(d) for d in classes["StrokeMismatchParameterNode"].decorator_list] == ["parameterNodeWrapper"]
    logic_methods = {n.name for n in classes["StrokeMismatchLogic"].body if isinstance(n, ast.FunctionDef)}
    assert {"getParameterNode", "process", "updateFromSegments", "inspectAtRAS"} <= logic_methods
    process = next(n for n in classes["StrokeMismatchLogic"].body if isinstance(n, ast.FunctionDef) and n.name == "process")
    assert [a.arg for a in process.args.args[:3]] == ["self", "perfusionNode", "adcNode"]
    assert ast.get_docstring(process) and ":return:" in ast.get_docstring(process)
    test_methods = {n.name for n in classes["StrokeMismatchTest"].body if isinstance(n, ast.FunctionDef)}
    assert "runTest" in test_methods and "setUp" in test_methods
    assert sum(m.startswith("test_") for m in test_methods) >= 3
    source = MODULE_FILE.read_text(encoding="utf-8")
    assert 'slicer.app.connect("startupCompleted()", registerSampleData)' in source
    # the samples are built locally by the module's loader: no URL, works offline
    assert "registerCustomSampleDataSource(" in source and "customDownloader=" in source
    assert "https://" not in source.split("def registerSampleData")[1].split("\n#\n")[0]
    assert re.search(r'hasattr\(logic, "registerCustomSampleDataCategory"\)', source)


def test_module_file_stays_thin():
    """StrokeMismatch.py only translates GUI/MRML to Lib calls: no science, no file I/O, no print."""
    source = MODULE_FILE.read_text(encoding="utf-8")
    tree = _tree()
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    lib = {m for m in imported if m.startswith("StrokeMismatchLib")}
    assert lib <= {"StrokeMismatchLib", "StrokeMismatchLib.errors", "StrokeMismatchLib.pipeline",
                   "StrokeMismatchLib.analysis", "StrokeMismatchLib.samplecase", "StrokeMismatchLib.fileio"}, lib
    assert not imported & {"scipy", "SimpleITK", "scipy.ndimage"}
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert "print" not in calls
    for call in calls:  # no numerical methods here: they belong to the Lib
        assert not re.search(r"linalg|fft|convolve|ndimage|lstsq|open\(", call), call
    assert len(source.splitlines()) < 1000


def test_user_visible_strings_are_translatable():
    """Dialog, label and tool-tip texts go through _()."""
    tree = _tree()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = ast.unparse(node.targets[0])
            if target.endswith((".text", ".toolTip", ".labelText")) and isinstance(node.value, ast.Constant) \
                    and node.value.value:
                raise AssertionError(f"untranslated string for {target}: {node.value.value!r}")
        if isinstance(node, ast.Call) and ast.unparse(node.func) in (
                "slicer.util.tryWithErrorDisplay", "slicer.util.confirmOkCancelDisplay", "slicer.util.errorDisplay"):
            first = node.args[0] if node.args else None
            assert isinstance(first, ast.Call) and ast.unparse(first.func) == "_", ast.unparse(node)


def test_lib_imports_slicer_only_in_mrmlio():
    offenders = []
    for path in (MODULE / "StrokeMismatchLib").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            if any(n == "slicer" or n.startswith("slicer.") or n in ("qt", "ctk") for n in names):
                if path.name != "mrmlio.py":
                    offenders.append(str(path.relative_to(ROOT)))
    assert not offenders, offenders
    init = (MODULE / "StrokeMismatchLib" / "__init__.py").read_text(encoding="utf-8")
    assert "mrmlio" not in re.sub(r'""".*?"""', "", init, flags=re.S)


def test_logic_settings_names_exist_in_the_lib():
    """The Logic maps panel fields onto LesionSettings / CaseSettings by name: keep them real."""
    import dataclasses

    from StrokeMismatchLib.analysis import LesionSettings
    from StrokeMismatchLib.pipeline import METHODS, CaseSettings

    lesion_fields = {f.name: f for f in dataclasses.fields(LesionSettings)}
    logic = next(n for n in _tree().body if isinstance(n, ast.ClassDef) and n.name == "StrokeMismatchLogic")
    cleanup = next(ast.literal_eval(s.value) for s in logic.body
                   if isinstance(s, ast.Assign) and ast.unparse(s.targets[0]) == "CLEANUP_FIELDS")
    for switch, names in cleanup.items():
        for name in names:
            assert name in lesion_fields and lesion_fields[name].type in ("bool", bool), (switch, name)
    method = next(n for n in logic.body if isinstance(n, ast.FunctionDef) and n.name == "lesionSettings")
    keys = {k.value for node in ast.walk(method) if isinstance(node, ast.Dict) for k in node.keys
            if isinstance(k, ast.Constant)}
    assert keys and keys <= set(lesion_fields), keys - set(lesion_fields)
    case_fields = {f.name for f in dataclasses.fields(CaseSettings)}
    process = next(n for n in logic.body if isinstance(n, ast.FunctionDef) and n.name == "process")
    used = {kw.arg for node in ast.walk(process) if isinstance(node, ast.Call) and ast.unparse(node.func) == "CaseSettings"
            for kw in node.keywords}
    assert used and used <= case_fields
    enum_values = {s.targets[0].id for n in _tree().body if isinstance(n, ast.ClassDef) and n.name == "DeconvolutionMethod"
                   for s in n.body if isinstance(s, ast.Assign)}
    assert enum_values == set(METHODS)


#: LesionSettings fields the panel leaves at the Lib default (console/CLI only), and why:
#: report list, secondary reference options, kernel sizes and midline/side-detection tuning.
NOT_IN_PANEL = {
    "rcbf_statistic",  # mean vs median of the rCBF reference: secondary to the reference choice
    "reference_normal_tmax", "mirror_sigma_mm",  # parameters of the non-default rCBF references
    "bone_hu",  # CT brain mask: bone limit of the baseline image (fixed anatomy, not a lesion threshold)
    "vessel_ttp_window_s",  # arterial-timing window of the vessel exclusion (one frame interval)
    "tmax_median_size_voxels", "opening_radius_voxels",  # kernel sizes of switchable steps
    "max_yaw_deg", "side_min_ml", "side_min_asymmetry", "side_min_median_difference_s",  # midline/side
    "age", "nihss", "collateral_score",  # clinical inputs: the Clinical section, not clean-up
}


def _logic():
    return next(n for n in _tree().body if isinstance(n, ast.ClassDef) and n.name == "StrokeMismatchLogic")


def _lesion_settings_mapping():
    """``lesionSettings``: (its FunctionDef, the dict of LesionSettings name -> value expression)."""
    method = next(n for n in _logic().body if isinstance(n, ast.FunctionDef) and n.name == "lesionSettings")
    values = next(node for node in ast.walk(method) if isinstance(node, ast.Dict)
                  and any(isinstance(k, ast.Constant) and k.value == "core_adc" for k in node.keys))
    return method, {k.value: v for k, v in zip(values.keys, values.values)}


def test_every_user_setting_of_the_lib_is_mapped_by_the_logic():
    """Each LesionSettings field is set by the Logic (a value or a clean-up switch) or listed in
    NOT_IN_PANEL: a new Lib setting fails here until the panel exposes it or it is listed."""
    import dataclasses

    from StrokeMismatchLib.analysis import LesionSettings

    fields = {f.name for f in dataclasses.fields(LesionSettings)}
    assert NOT_IN_PANEL <= fields, NOT_IN_PANEL - fields  # no stale names
    _, mapping = _lesion_settings_mapping()
    cleanup = next(ast.literal_eval(s.value) for s in _logic().body
                   if isinstance(s, ast.Assign) and ast.unparse(s.targets[0]) == "CLEANUP_FIELDS")
    switched = {name for names in cleanup.values() for name in names}
    mapped = set(mapping) | switched
    assert fields - NOT_IN_PANEL - mapped == set(), "Lib settings the panel does not expose"
    assert {"opening", "fill_holes", "core_opening", "brain_mask", "tmax_median_filter",
            "cbf_smoothing_fwhm_mm", "core_within_hypoperfusion"} <= mapped
    # every switch is used by lesionSettingsFromParameterNode, each with its own checkbox
    from_node = next(n for n in _logic().body if isinstance(n, ast.FunctionDef)
                     and n.name == "lesionSettingsFromParameterNode")
    cleanup_arg = next(kw.value for node in ast.walk(from_node) if isinstance(node, ast.Call)
                       for kw in node.keywords if kw.arg == "cleanup")
    panel_switches = {k.value: ast.unparse(v) for k, v in zip(cleanup_arg.keys, cleanup_arg.values)}
    assert set(panel_switches) == set(cleanup) - {"morphology"}  # "morphology": old scripts only
    assert len(set(panel_switches.values())) == len(panel_switches)
    assert all(len(cleanup[switch]) == 1 for switch in panel_switches)
    # every keyword of lesionSettings is passed from the parameter node
    method, _ = _lesion_settings_mapping()
    keywords = {a.arg for a in method.args.kwonlyargs}
    passed = {kw.arg for node in ast.walk(from_node) if isinstance(node, ast.Call) for kw in node.keywords}
    assert keywords <= passed, keywords - passed


def test_logic_defaults_equal_the_lib_defaults():
    """``logic.lesionSettings()`` without arguments gives ``LesionSettings()``."""
    from StrokeMismatchLib.analysis import LesionSettings

    method, mapping = _lesion_settings_mapping()
    args = method.args
    defaults = {a.arg: ast.literal_eval(d) for a, d in zip(args.kwonlyargs, args.kw_defaults) if d is not None}
    defaults.update({a.arg: None for a, d in zip(args.kwonlyargs, args.kw_defaults)
                     if isinstance(d, ast.Constant) and d.value is None})
    lib = LesionSettings()
    for name, expression in mapping.items():
        value = eval(compile(ast.Expression(expression), "<mapping>", "eval"),
                     {"float": float, "str": str, "bool": bool}, dict(defaults))
        expected = getattr(lib, name)
        assert value == pytest.approx(expected) if isinstance(expected, float) else value == expected, name


def test_panel_enums_match_the_lib_choices():
    from StrokeMismatchLib.thresholds import RCBF_REFERENCES

    classes = {n.name: n for n in _tree().body if isinstance(n, ast.ClassDef)}
    values = {ast.literal_eval(s.value) for s in classes["RcbfReference"].body if isinstance(s, ast.Assign)}
    assert values == set(RCBF_REFERENCES)
    tri = [s.targets[0].id for s in classes["ModalityDefault"].body if isinstance(s, ast.Assign)]
    assert tri == ["Default", "On", "Off"]
    setting = next(n for n in classes["ModalityDefault"].body if isinstance(n, ast.FunctionDef) and n.name == "setting")
    table = next(ast.literal_eval(node) for node in ast.walk(setting) if isinstance(node, ast.Dict))
    assert table == {"Default": None, "On": True, "Off": False}
