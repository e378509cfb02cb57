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
                   "StrokeMismatchLib.analysis", "StrokeMismatchLib.samplecase", "StrokeMismatchLib.validation",
                   "StrokeMismatchLib.settings"}, lib
    assert not imported & {"scipy", "SimpleITK", "scipy.ndimage"}
    calls = {ast.unparse(node.func) for node in ast.walk(tree) if isinstance(node, ast.Call)}
    assert "print" not in calls
    for call in calls:  # no numerical methods here: they belong to the Lib
        assert not re.search(r"linalg|fft|convolve|ndimage|lstsq|open\(", call), call
    assert len(source.splitlines()) < 1050  # includes the settings panel built from the schema


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


# The panel's settings are derived from StrokeMismatchLib.settings (the schema): that every setting
# is in the parameter node with the CLI's default, unit and range is tested by running the module,
# Testing/slicer_app/test_module_settings.py (no source parsing, no hand-kept list).
