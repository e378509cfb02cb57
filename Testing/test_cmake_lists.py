"""The extension's CMake files list what Slicer must install (GUIDE §1.1-1.2)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "StrokeMismatch"


def _cmake_set(text: str, name: str) -> list[str]:
    match = re.search(r"set\(\s*" + name + r"\s+(.*?)\)", text, re.S)
    assert match, f"set({name} ...) missing"
    body = re.sub(r"#[^\n]*", "", match.group(1))
    return [item.replace("${MODULE_NAME}", "StrokeMismatch") for item in body.split()]


def _module_cmake():
    return (MODULE / "CMakeLists.txt").read_text(encoding="utf-8")


def test_every_lib_python_file_is_listed_and_every_listed_file_exists():
    scripts = _cmake_set(_module_cmake(), "MODULE_PYTHON_SCRIPTS")
    listed = {s if s.endswith(".py") else s + ".py" for s in scripts}
    on_disk = {str(p.relative_to(MODULE)) for p in (MODULE / "StrokeMismatchLib").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert on_disk, "no Lib files found"
    missing = sorted(on_disk - listed)
    assert not missing, f"add to MODULE_PYTHON_SCRIPTS in StrokeMismatch/CMakeLists.txt: {missing}"
    assert "StrokeMismatch.py" in listed
    absent = sorted(name for name in listed if not (MODULE / name).is_file())
    assert not absent, f"listed but missing (fails the build): {absent}"
    assert any(name.startswith("StrokeMismatchLib/phantom/") for name in listed)


def test_resources_exist_and_no_stray_modules_next_to_the_module():
    resources = _cmake_set(_module_cmake(), "MODULE_PYTHON_RESOURCES")
    assert "Resources/Icons/StrokeMismatch.png" in resources
    assert "Resources/UI/StrokeMismatch.ui" in resources
    for resource in resources:
        assert (MODULE / resource).is_file(), resource
    # Slicer loads every *.py directly in the module folder as a module
    assert sorted(p.name for p in MODULE.glob("*.py")) == ["StrokeMismatch.py"]


def test_module_cmake_builds_the_scripted_module_with_tests():
    text = _module_cmake()
    assert re.search(r"set\(MODULE_NAME StrokeMismatch\)", text)
    assert "slicerMacroBuildScriptedModule(" in text and "WITH_GENERIC_TESTS" in text
    assert re.search(r"if\(BUILD_TESTING\).*slicer_add_python_unittest\(SCRIPT \$\{MODULE_NAME\}\.py\)"
                     r".*add_subdirectory\(Testing\).*endif\(\)", text, re.S)
    assert (MODULE / "Testing" / "CMakeLists.txt").read_text().strip() == "add_subdirectory(Python)"
    assert (MODULE / "Testing" / "Python" / "CMakeLists.txt").is_file()


def test_extension_cmake_has_metadata_in_order():
    text = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    steps = ["cmake_minimum_required(VERSION 3.20.6...3.28.0 FATAL_ERROR)", "project(StrokeMismatch)",
             "set(EXTENSION_HOMEPAGE", "find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
             "add_subdirectory(StrokeMismatch)", "include(${Slicer_EXTENSION_GENERATE_CONFIG})",
             "include(${Slicer_EXTENSION_CPACK})"]
    positions = [text.index(step) for step in steps]
    assert positions == sorted(positions)
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL",
                "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS", "EXTENSION_CATEGORY"):
        assert re.search(r"set\(" + key + r' "[^"]+"\)', text), key
    icon = re.search(r'set\(EXTENSION_ICONURL "([^"]+)"\)', text).group(1)
    assert icon.startswith("https://raw.githubusercontent.com/") and icon.endswith("Resources/Icons/StrokeMismatch.png")
    assert (ROOT / "Resources" / "Icons" / "StrokeMismatch.png").is_file()
    for url in re.search(r'set\(EXTENSION_SCREENSHOTURLS "([^"]+)"\)', text).group(1).split():
        relative = url.split("/main/", 1)[1]
        assert (ROOT / relative).is_file(), f"screenshot {relative} is not in the repository"


def test_catalog_entry():
    import json

    entry = json.loads((ROOT / "StrokeMismatch.json").read_text(encoding="utf-8"))
    assert entry["category"] == "Quantification"
    assert entry["scm_url"].startswith("https://github.com/") and "/Slicer" in entry["scm_url"]
    assert entry["build_subdirectory"] == "."
    assert "slicer-extension-catalog-entry-schema" in entry["$schema"]
    allowed = {"$schema", "build_dependencies", "build_subdirectory", "category", "scm_revision", "scm_type",
               "scm_url", "tier", "enabled"}
    assert set(entry) <= allowed  # the schema forbids other properties


def test_icons_are_128_pixel_pngs():
    import struct

    for path in (MODULE / "Resources" / "Icons" / "StrokeMismatch.png", ROOT / "Resources" / "Icons" / "StrokeMismatch.png"):
        data = path.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        assert struct.unpack(">II", data[16:24]) == (128, 128)
