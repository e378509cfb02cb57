"""The sample cases: built locally (no download), the same on every call, the same as the files
``scripts/make_sample_data.py`` writes (read by Slicer's own storage nodes, slicer-core), and the
analysis of them meets the in-Slicer self-test's tolerances against the phantom truth."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from StrokeMismatchLib.samplecase import SAMPLE_NAMES, make_sample_case

ROOT = Path(__file__).resolve().parents[1]
MODULE_FILE = ROOT / "StrokeMismatch" / "StrokeMismatch.py"


def _script():
    spec = importlib.util.spec_from_file_location("make_sample_data", ROOT / "scripts" / "make_sample_data.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tolerance():
    """SAMPLE_TOLERANCE of StrokeMismatch.py (read without importing Slicer)."""
    import ast

    for node in ast.parse(MODULE_FILE.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "SAMPLE_TOLERANCE":
            return ast.literal_eval(node.value)
    raise AssertionError("SAMPLE_TOLERANCE not found in StrokeMismatch.py")


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("sample-data")
    return out, _script().make_sample_data(out)


def test_sample_cases_are_deterministic_and_carry_what_the_panel_needs():
    for modality in ("mr", "ct"):
        first, second = make_sample_case(modality), make_sample_case(modality)
        np.testing.assert_array_equal(first.series.signal, second.series.signal)
        assert first.name == SAMPLE_NAMES[modality] and first.series.modality == modality
        assert first.series.signal.shape[-1] == 60 and np.all(first.series.signal == np.rint(first.series.signal))
        assert first.truth_ml["core"] > 5 and first.truth_ml["hypoperfusion"] > first.truth_ml["core"]
    mr = make_sample_case("mr")
    assert mr.series.te == pytest.approx(0.03) and mr.adc is not None and mr.adc_geometry is not None
    assert make_sample_case("ct").adc is None
    with pytest.raises(ValueError, match="mr"):
        make_sample_case("pet")


def test_written_files_are_reproducible_and_small(written, tmp_path):
    out, made = written
    again = _script().make_sample_data(tmp_path / "again")
    assert {name: info["files"] for name, info in again.items()} == {name: info["files"] for name, info in made.items()}
    total = sum((out / file_name).stat().st_size for info in made.values() for file_name in info["files"])
    assert total < 15e6


def test_files_read_by_slicer_equal_the_case_built_in_the_scene(scene, written):
    """What a user loads from the files is what Sample Data builds in Slicer (same signal,
    grid, times; same ADC), so CLI and Slicer results of the sample agree."""
    import slicer

    from StrokeMismatchLib import mrmlio

    out, made = written
    for modality in ("mr", "ct"):
        case = make_sample_case(modality)
        sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", case.name)
        storage = slicer.vtkMRMLVolumeSequenceStorageNode()
        scene.AddNode(storage)
        storage.SetFileName(str(out / f"{case.name}.seq.nrrd"))
        assert storage.ReadData(sequence)
        from_file = mrmlio.series_from_node(sequence, modality=modality)
        built = mrmlio.series_from_node(mrmlio.sample_case_nodes(case, scene=scene)["proxy"])
        np.testing.assert_array_equal(from_file.signal, built.signal)
        np.testing.assert_allclose(from_file.times, built.times)
        assert from_file.geometry.same_grid(built.geometry) and built.modality == modality
        if modality == "mr":
            assert built.te == pytest.approx(0.03)
            adc = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "adc")
            adc_storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
            scene.AddNode(adc_storage)
            adc_storage.SetFileName(str(out / f"{case.name}-ADC.nrrd"))
            assert adc_storage.ReadData(adc)
            np.testing.assert_array_equal(slicer.util.arrayFromVolume(adc), case.adc)
            assert mrmlio.volume_geometry(adc).same_grid(case.adc_geometry)


@pytest.mark.parametrize("modality", ["mr", "ct"])
def test_analysis_of_the_sample_meets_the_self_test_tolerance(modality):
    from StrokeMismatchLib.pipeline import CaseSettings, run_case

    case = make_sample_case(modality)
    result = run_case(case.series, adc=case.adc, adc_geometry=case.adc_geometry,
                      settings=CaseSettings(motion_correction=False))
    tolerance = _tolerance()
    voxel_ml = result.geometry.voxel_volume_ml
    for name in ("core", "hypoperfusion"):
        value = float(np.count_nonzero(result.lesion.masks[name])) * voxel_ml
        assert abs(value - case.truth_ml[name]) <= tolerance[name] * case.truth_ml[name] + 1.0, (name, value)
