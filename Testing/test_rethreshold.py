"""Re-thresholding saved maps and recomputing from hand-corrected masks (issues 11 and 18).

Real pipeline on the volume phantom (MR and CT), real files: a result folder is written by
``write_case_outputs``, read back by ``load_case_maps`` and analysed again without deconvolution.
"""

import dataclasses
import json

import numpy as np
import pytest

from StrokeMismatchLib import cli
from StrokeMismatchLib.errors import InputDataError, InputFileError
from StrokeMismatchLib.fileio import write_volume
from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.outputs import write_case_outputs
from StrokeMismatchLib.phantom.volume import make_volume_phantom
from StrokeMismatchLib.pipeline import run_case
from StrokeMismatchLib.rethreshold import (CaseMaps, load_case_maps, recomputed_result,
                                           rethresholded_result)
from StrokeMismatchLib.settings import CaseSettings, LesionSettings

VOLUME_KEYS = ("core_ml", "hypoperfusion_ml", "penumbra_ml", "tmax_gt_4_ml", "tmax_gt_8_ml", "tmax_gt_10_ml")


def _run(modality, lesion_settings=None):
    phantom = make_volume_phantom(modality, seed=4)
    settings = CaseSettings(motion_correction=False, lesion=lesion_settings or LesionSettings())
    return run_case(phantom.series, adc=phantom.adc, adc_geometry=phantom.adc_geometry, settings=settings)


@pytest.fixture(scope="module", params=["mr", "ct"])
def saved(request, tmp_path_factory):
    """(modality, result, result folder) of a default run written to disk."""
    result = _run(request.param)
    folder = tmp_path_factory.mktemp(f"case_{request.param}") / "out"
    write_case_outputs(result, folder, report=False, subject="s1")
    return request.param, result, folder


def _same(derived_masks, full_masks, names=("core", "hypoperfusion", "penumbra")):
    for name in names:
        np.testing.assert_array_equal(derived_masks[name], full_masks[name], err_msg=name)


def test_same_settings_from_the_folder_equal_the_full_run(saved):
    modality, result, folder = saved
    case = load_case_maps(folder)
    derived = rethresholded_result(case, {})
    _same(derived.lesion.masks, result.lesion.masks,
          ("core", "hypoperfusion", "penumbra", "tmax_gt_4", "tmax_gt_8", "tmax_gt_10"))
    full, again = result.summary(), derived.record().to_dict()
    for key in VOLUME_KEYS:
        assert again[key] == pytest.approx(full[key], abs=0.01), key
    # the same verdicts and reasons (values agree to float32 voxel size read back from NIfTI)
    assert {k: (r["verdict"], r["reasons"]) for k, r in again["criteria"].items()} == \
        {k: (r["verdict"], r["reasons"]) for k, r in full["criteria"].items()}
    assert again["derived_from"]["changed_settings"] == {}


@pytest.mark.parametrize("overrides", [
    {"tmax_threshold": 4.0},
    {"tmax_threshold": 8.0, "fill_holes": False},
    {"core_adc": 680.0, "core_rcbf_percent": 38.0, "cluster_removal": False},
])
def test_new_settings_equal_a_full_run_with_them(saved, overrides):
    modality, _, folder = saved
    full = _run(modality, LesionSettings(**overrides))
    derived = rethresholded_result(load_case_maps(folder), overrides)
    _same(derived.lesion.masks, full.lesion.masks)
    summary = derived.record().to_dict()
    for key in VOLUME_KEYS:
        assert summary[key] == pytest.approx(full.summary()[key], abs=0.01), key
    for name, value in overrides.items():
        assert summary["settings"][name] == value
    assert set(summary["derived_from"]["changed_settings"]) == set(overrides)


def test_in_memory_case_maps_match_the_folder(saved):
    modality, result, folder = saved
    memory = rethresholded_result(CaseMaps.from_result(result), {"tmax_threshold": 5.0})
    disk = rethresholded_result(load_case_maps(folder), {"tmax_threshold": 5.0})
    _same(memory.lesion.masks, disk.lesion.masks)


def test_settings_that_need_deconvolution_are_refused(saved):
    _, _, folder = saved
    with pytest.raises(InputDataError, match="deconvolving again"):
        rethresholded_result(load_case_maps(folder), {"method": "cSVD"})
    with pytest.raises(InputDataError, match="tmax_threshold"):
        rethresholded_result(load_case_maps(folder), {"tmax_threshold": 1e6})


def test_a_folder_without_the_saved_inputs_is_refused_clearly(saved, tmp_path):
    import shutil

    _, _, folder = saved
    copy = tmp_path / "old"
    shutil.copytree(folder, copy)
    (copy / "masks" / "brain.nii.gz").unlink()
    with pytest.raises(InputFileError, match="masks/brain.nii.gz"):
        load_case_maps(copy)
    with pytest.raises(InputFileError, match="no summary.json"):
        load_case_maps(tmp_path)


# --- recompute from edited masks -----------------------------------------------------------------
def test_unchanged_masks_give_identical_numbers(saved):
    _, result, folder = saved
    case = load_case_maps(folder)
    derived = recomputed_result(case, case.masks["core"].copy(), case.masks["hypoperfusion"].copy())
    summary, full = derived.record().to_dict(), result.summary()
    for key in VOLUME_KEYS + ("mismatch_ratio", "hir"):
        assert summary[key] == pytest.approx(full[key], abs=1e-9), key
    assert summary["derived_from"]["edited_masks"]["core"]["edited"] is False


def test_erasing_half_the_core_halves_it_and_the_verdicts_follow(saved):
    modality, result, folder = saved
    case = load_case_maps(folder)
    core = case.masks["core"].copy()
    voxels = np.argwhere(core)
    erase = voxels[: len(voxels) // 2]
    core[tuple(erase.T)] = False
    derived = recomputed_result(case, core=core)
    summary = derived.record().to_dict()
    before = result.summary()["core_ml"]
    assert summary["core_ml"] == pytest.approx(before - len(erase) * case.geometry.voxel_volume_ml)
    assert summary["core_ml"] == pytest.approx(before / 2, rel=0.05)
    edit = summary["derived_from"]["edited_masks"]["core"]
    assert edit["edited"] and edit["removed_ml"] == pytest.approx(len(erase) * case.geometry.voxel_volume_ml)
    assert summary["hypoperfusion_ml"] == pytest.approx(result.summary()["hypoperfusion_ml"])
    # a core grown past 70 mL makes DEFUSE 3 not eligible
    big = case.brain_mask.copy()
    grown = recomputed_result(case, core=big).record().to_dict()
    assert grown["core_ml"] > 70 and grown["criteria"]["DEFUSE3"]["eligible"] is False


def test_cli_recompute_with_a_mask_on_another_grid(saved, tmp_path, capsys):
    modality, result, folder = saved
    case = load_case_maps(folder)
    core = case.masks["core"].copy()
    core[:, :, : core.shape[2] // 2] = False  # erase the core in one half of the image
    # the same mask on a grid of half the spacing (as a viewer might save it)
    fine = Geometry(case.geometry.ijk_to_ras @ np.diag([0.5, 0.5, 1.0, 1.0]),
                    (case.geometry.shape[0], case.geometry.shape[1] * 2, case.geometry.shape[2] * 2))
    fine_core = np.repeat(np.repeat(core, 2, axis=1), 2, axis=2)
    write_volume(tmp_path / "core_fine.nii.gz", fine_core.astype(np.uint8), fine)
    out = tmp_path / "recomputed"
    code = cli.main(["recompute", str(folder), "--core", str(tmp_path / "core_fine.nii.gz"), "--out", str(out),
                     "--no-report", "--quiet"])
    assert code == 0, capsys.readouterr().err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["core_ml"] == pytest.approx(np.count_nonzero(core) * case.geometry.voxel_volume_ml, rel=0.02)
    assert summary["derived_from"]["kind"] == "recompute" and summary["subject"] == "s1"
    # a mask of another image (far away) is refused, nothing written
    far = Geometry(case.geometry.ijk_to_ras.copy(), case.geometry.shape)
    far.ijk_to_ras[:3, 3] += 1000.0
    write_volume(tmp_path / "far.nii.gz", core.astype(np.uint8), far)
    code = cli.main(["recompute", str(folder), "--core", str(tmp_path / "far.nii.gz"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and "do not overlap" in err and not (tmp_path / "x").exists()


def test_cli_rethreshold_keeps_the_original_and_writes_a_report(saved, tmp_path, capsys):
    modality, _, folder = saved
    before = (folder / "summary.json").read_bytes()
    out = tmp_path / "t4"
    assert cli.main(["rethreshold", str(folder), "--tmax", "4", "--out", str(out)]) == 0, capsys.readouterr().err
    assert (folder / "summary.json").read_bytes() == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["tmax_threshold"] == 4.0 and (out / "report.html").is_file()
    assert (out / "masks" / "brain.nii.gz").is_file()  # a derived result can be re-thresholded again
    assert cli.main(["rethreshold", str(out), "--tmax", "6", "--out", str(tmp_path / "back"), "--no-report"]) == 0
    back = json.loads((tmp_path / "back" / "summary.json").read_text())
    original = json.loads(before)
    assert back["hypoperfusion_ml"] == pytest.approx(original["hypoperfusion_ml"], abs=0.01)
