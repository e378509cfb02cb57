"""Verdict stability (issue 18): ranges of each threshold over which a verdict holds, volume
curves, and the "near a cut-off" mark. Synthetic noise-free CT maps with blocks of known volume
(real lesion analysis and clean-up chain); the demo cases must not be marked."""

import numpy as np
import pytest

from StrokeMismatchLib import cli
from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.rethreshold import CaseMaps, rethreshold, rethresholded_result
from StrokeMismatchLib.settings import LesionSettings
from StrokeMismatchLib.stability import verdict_stability

SPACING = (3.0, 3.0, 5.0)  # i, j, k mm: a voxel is 0.045 mL
SHAPE = (14, 60, 60)


def _case(core_a_ml, core_b_ml=0.0, rcbf_b=0.27, hypo_ml=160.0):
    """CT maps: a brain (CBF 50, Tmax 1 s) with, in its left half, a hypoperfused block (Tmax 9 s)
    holding core block A (rCBF 0.15) and block B (rCBF ``rcbf_b``), each of the given volume."""
    geometry = Geometry(np.diag([*SPACING, 1.0]) @ _centre(), SHAPE)
    k, j, i = np.indices(SHAPE)
    brain = ((i - 30) / 27.0) ** 2 + ((j - 30) / 28.0) ** 2 + ((k - 7) / 6.5) ** 2 < 1
    voxel_ml = geometry.voxel_volume_ml
    cbf = np.where(brain, 50.0, np.nan).astype(np.float32)
    tmax = np.where(brain, 1.0, np.nan).astype(np.float32)
    cbv = np.where(brain, 4.0, np.nan).astype(np.float32)
    left = brain & (i >= 33)  # one hemisphere

    def block(volume_ml, start_j):
        mask = np.zeros(SHAPE, bool)
        n = int(round(volume_ml / voxel_ml))
        candidates = np.argwhere(left & (j >= start_j))
        candidates = candidates[np.lexsort((candidates[:, 2], candidates[:, 0], candidates[:, 1]))][:n]
        mask[tuple(candidates.T)] = True
        return mask

    hypo = block(hypo_ml, 12)
    tmax[hypo] = 9.0
    a = block(core_a_ml, 12) & hypo
    cbf[a] = 0.15 * 50
    b = block(core_a_ml + core_b_ml, 12) & hypo & ~a
    cbf[b] = rcbf_b * 50
    maps = {"cbf": cbf, "cbv": cbv, "tmax": tmax, "mtt": np.where(brain, 4.0, np.nan).astype(np.float32),
            "ttp": np.where(brain, 10.0, np.nan).astype(np.float32)}
    settings = LesionSettings(cbf_smoothing_fwhm_mm=0.0, tmax_median_filter=False)
    return CaseMaps(geometry=geometry, modality="ct", maps=maps, brain_mask=brain,
                    baseline_image=np.where(brain, 35.0, 1000.0).astype(np.float32), adc=None,
                    adc_geometry=None, aif_ttp_s=5.0, frame_interval_s=1.0, masks={}, summary={},
                    analysed_settings=settings), settings


def _centre():
    matrix = np.eye(4)
    matrix[:3, 3] = [-30.0, -30.0, -7.0]
    return matrix


def _analyse(case, settings):
    lesion = rethreshold(case, settings)
    case.hemispheres = lesion.hemispheres  # the sweep reuses the plane, as run_case's does
    return lesion, verdict_stability(case, settings, lesion.criteria, rethreshold, lesion.metrics)


def test_a_core_just_under_70_ml_is_near_a_cut_off():
    case, settings = _case(core_a_ml=68.0)
    lesion, block = _analyse(case, settings)
    assert 66.0 < lesion.metrics["core_ml"].value < 70.0
    assert next(r for r in lesion.criteria if r.rule == "DEFUSE 3").eligible is True
    assert block["status"] == "near_cutoff"
    messages = [f["message"] for f in block["findings"] if f["rule"] == "DEFUSE3"]
    assert any("core volume" in m and "70 mL" in m for m in messages), messages


def test_a_verdict_that_flips_within_5_points_of_rcbf_is_near_and_its_range_is_reported():
    # A 40 mL at rCBF 0.15 plus B 35 mL at rCBF 0.27: core 75 mL at 30 % (not eligible), 40 mL at 25 %
    case, settings = _case(core_a_ml=40.0, core_b_ml=35.0, rcbf_b=0.27)
    lesion, block = _analyse(case, settings)
    defuse = next(r for r in lesion.criteria if r.rule == "DEFUSE 3")
    assert defuse.eligible is False and 72.0 < lesion.metrics["core_ml"].value < 76.0
    assert block["status"] == "near_cutoff"
    flips = [f for f in block["findings"] if f["setting"] == "core_rcbf_percent" and f["rule"] == "DEFUSE3"]
    assert flips and "percent 25 %" in flips[0]["message"]
    assert block["ranges"]["DEFUSE3"]["core_rcbf_percent"] == [27.5, 40.0]
    curve = block["curves"]["core_rcbf_percent"]
    values, core = curve["values"], curve["core_ml"]
    assert 38.0 < core[values.index(25.0)] < 41.0
    assert core[values.index(30.0)] == lesion.metrics["core_ml"].value  # the case's own value
    assert curve["verdicts"]["DEFUSE3"][values.index(25.0)] is True


def test_a_clear_case_is_stable():
    case, settings = _case(core_a_ml=20.0, hypo_ml=120.0)
    _, block = _analyse(case, settings)
    assert block["status"] == "stable", block["findings"]
    assert block["ranges"]["DEFUSE3"]["tmax_threshold"][0] <= 5.0


def test_rethreshold_recomputes_the_mark():
    case, settings = _case(core_a_ml=20.0, hypo_ml=120.0)
    case.summary = {"settings": settings.settings_dict(), "subject": "x", "modality": "ct",
                    "inputs": {}, "aif": {}, "analysis": {}}
    derived = rethresholded_result(case, {"core_rcbf_percent": 30.0})
    assert derived.record().to_dict()["stability"]["status"] == "stable"


@pytest.mark.parametrize("modality", ["mr", "ct"])
@pytest.mark.parametrize("lesion", [True, False])
def test_the_demo_cases_are_not_marked(modality, lesion, tmp_path, capsys):
    argv = ["demo", "--modality", modality, "--out", str(tmp_path / "d"), "--no-report", "--json",
            "--no-motion-correction"] + ([] if lesion else ["--no-lesion"])
    assert cli.main(argv) == 0
    import json

    summary = json.loads(capsys.readouterr().out)
    assert summary["stability"]["status"] == "stable", summary["stability"]["findings"]
