"""pipeline.run_case on the volume phantom: chaining, settings, summary, progress, inputs untouched."""

import dataclasses
import hashlib
import json

import numpy as np
import pytest

from StrokeMismatchLib import DISCLAIMER, __version__
from StrokeMismatchLib.errors import AnalysisCancelled, InputDataError
from StrokeMismatchLib.phantom.volume import make_volume_phantom
from StrokeMismatchLib.pipeline import CaseResult, CaseSettings, run_case
from StrokeMismatchLib.series import PerfusionSeries


def _digest(*arrays):
    h = hashlib.sha256()
    for a in arrays:
        if a is not None:
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def _dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


@pytest.fixture(scope="module")
def mr_phantom():
    return make_volume_phantom("mr")


@pytest.fixture(scope="module")
def mr_run(mr_phantom):
    """One automatic MR run, with its progress calls and input hashes before/after."""
    ph = mr_phantom
    before = _digest(ph.series.signal, ph.series.times, ph.adc)
    calls = []

    def progress(fraction, message):
        calls.append((fraction, message))
        return True

    result = run_case(ph.series, adc=ph.adc, adc_geometry=ph.adc_geometry, progress=progress)
    after = _digest(ph.series.signal, ph.series.times, ph.adc)
    return result, calls, before, after


def test_result_has_every_stage(mr_run, mr_phantom):
    result, _, _, _ = mr_run
    assert isinstance(result, CaseResult)
    shape = mr_phantom.series.geometry.shape
    for name in ("cbf", "cbv", "mtt", "tmax", "ttp"):
        array = result.map_arrays()[name]
        assert array.shape == shape and array.dtype == np.float32
        assert np.all(np.isnan(array[~result.brain_mask]))
        assert np.isfinite(array[result.brain_mask]).mean() > 0.99
    assert result.concentration.shape == mr_phantom.series.signal.shape
    for name in ("core", "hypoperfusion", "penumbra"):
        assert result.lesion.masks[name].shape == shape
    assert result.aif.method == "automatic"
    assert result.motion is not None  # motion correction is on by default
    assert result.brain_mask_source == "automatic"


def test_inputs_not_modified(mr_run):
    _, _, before, after = mr_run
    assert before == after


def test_progress_is_monotonic_and_complete(mr_run):
    _, calls, _, _ = mr_run
    fractions = [f for f, _ in calls]
    assert fractions[0] == pytest.approx(0.0)
    assert fractions[-1] == pytest.approx(1.0)
    assert all(b >= a - 1e-9 for a, b in zip(fractions, fractions[1:]))
    messages = {m for _, m in calls}
    assert any("motion" in m.lower() for m in messages)
    assert any("deconvolution" in m.lower() for m in messages)


def test_summary_is_strict_json_and_complete(mr_run):
    result, _, _, _ = mr_run
    summary = result.summary()
    text = json.dumps(summary, allow_nan=False)
    back = json.loads(text)
    assert back["software"]["version"] == __version__
    assert back["software"]["disclaimer"] == DISCLAIMER
    assert back["modality"] == "mr"
    assert back["settings"]["method"] == "oSVD" and back["analysis"]["method"] == "oSVD"
    assert len(back["inputs"]["frame_times_s"]) == result.series.signal.shape[3]
    assert back["aif"]["n_voxels"] == len(back["aif"]["voxels_kji"]) == len(back["aif"]["voxels_ras_mm"]) > 0
    # AIF RAS positions agree with the geometry
    k, j, i = back["aif"]["voxels_kji"][0]
    ras = result.geometry.ijk_to_ras_points(np.array([i, j, k]))
    assert np.allclose(back["aif"]["voxels_ras_mm"][0], ras, atol=1e-3)
    assert back["analysis"]["motion"]["applied"] is True
    assert back["quality"]["status"] in ("pass", "warn", "fail") and isinstance(back["quality"]["findings"], list)
    assert back["metrics"] and set(back["criteria"]) == {"DEFUSE3", "EXTEND_IA", "DAWN", "TISSUE_RULE"}
    # every setting appears once, flat, in the settings record
    for key in ("core_adc", "core_rcbf_percent", "tmax_threshold", "rcbf_reference"):
        assert key in back["settings"]
    assert back["settings"]["hematocrit_factor"] == 0.73
    assert back["analysis"]["baseline"]["start"] < back["analysis"]["baseline"]["stop"]
    assert back["settings"]["tmax_threshold"] == 6.0
    assert back["affected_side"] in ("left", "right")
    assert back["core_ml"] == back["metrics"]["core_ml"]["value"]
    assert isinstance(back["analysis"]["cleanup_steps"], list) and back["analysis"]["cleanup_steps"]
    assert back["analysis"]["adc_unit"]["unit"]


def test_summary_nan_and_inf_become_null(mr_run):
    result, _, _, _ = mr_run
    result = dataclasses.replace(result, timings_s={"x": float("inf")}, warnings=["w"])
    summary = result.summary()
    assert summary["analysis"]["timings_s"]["x"] is None
    json.dumps(summary, allow_nan=False)


def test_mr_demo_agrees_with_truth(mr_run, mr_phantom):
    result, _, _, _ = mr_run
    assert _dice(result.lesion.masks["hypoperfusion"], mr_phantom.true_hypoperfusion) >= 0.8
    assert _dice(result.lesion.masks["core"], mr_phantom.true_core) >= 0.8


def test_manual_aif_voxels_and_baseline_override(mr_phantom):
    ph = mr_phantom
    voxels = np.argwhere(ph.artery_mask)[:4]
    settings = CaseSettings(motion_correction=False, aif_voxels=voxels.tolist(), baseline=(2, 9))
    result = run_case(ph.series, adc=ph.adc, adc_geometry=ph.adc_geometry, settings=settings)
    assert result.aif.method == "manual"
    assert {tuple(v) for v in np.asarray(result.aif.voxels)} == {tuple(v) for v in voxels}
    assert (result.baseline.start, result.baseline.stop) == (2, 9)
    summary = result.summary()
    assert summary["settings"]["aif_voxels_kji"] == voxels.tolist()
    assert summary["analysis"]["baseline"]["frames"] == [2, 8]
    assert summary["analysis"]["motion"] == {"applied": False}


def test_user_brain_mask_is_used_and_not_modified(mr_phantom):
    ph = mr_phantom
    mask = ph.brain_mask.copy()
    digest = _digest(mask)
    settings = CaseSettings(motion_correction=False)
    result = run_case(ph.series, adc=ph.adc, adc_geometry=ph.adc_geometry, brain_mask=mask, settings=settings)
    assert result.brain_mask_source == "user"
    assert np.array_equal(result.brain_mask, ph.brain_mask)
    assert np.all(np.isnan(result.maps.cbf[~ph.brain_mask]))
    assert _digest(mask) == digest


def test_cancel_raises(mr_phantom):
    def progress(fraction, message):
        return fraction < 0.3

    with pytest.raises(AnalysisCancelled):
        run_case(mr_phantom.series, settings=CaseSettings(motion_correction=False), progress=progress)


def test_mr_without_te_is_a_clear_error(mr_phantom):
    s = mr_phantom.series
    series = PerfusionSeries(s.signal, s.times, s.geometry, modality="mr", te=None, tr=s.tr)
    with pytest.raises(InputDataError, match="(?i)echo time"):
        run_case(series, settings=CaseSettings(motion_correction=False))


def test_unknown_modality_is_a_clear_error(mr_phantom):
    s = mr_phantom.series
    series = PerfusionSeries(s.signal, s.times, s.geometry, modality=None, te=s.te, tr=s.tr)
    with pytest.raises(InputDataError, match="(?i)modality"):
        run_case(series, settings=CaseSettings(motion_correction=False))


@pytest.mark.parametrize(
    "kwargs, pattern",
    [
        ({"method": "magic"}, "method"),
        ({"hematocrit_factor": -1.0}, "hematocrit"),
        ({"aif_voxels": [[1, 2]]}, "(k, j, i)"),
        ({"baseline": (5, 3)}, "[Bb]aseline"),
    ],
)
def test_bad_settings(kwargs, pattern):
    with pytest.raises(InputDataError, match=pattern):
        CaseSettings(**kwargs)


def test_settings_method_case_insensitive_and_to_dict_json():
    settings = CaseSettings(method="csvd", aif_voxels=[(1, 2, 3)])
    assert settings.method == "cSVD"
    json.dumps(settings.to_dict(), allow_nan=False)


def test_aif_voxel_outside_grid(mr_phantom):
    settings = CaseSettings(motion_correction=False, aif_voxels=[(999, 0, 0)])
    with pytest.raises(InputDataError, match="outside"):
        run_case(mr_phantom.series, settings=settings)


def test_bad_mask_shape(mr_phantom):
    with pytest.raises(InputDataError, match="brain mask"):
        run_case(mr_phantom.series, brain_mask=np.ones((2, 2, 2), bool),
                 settings=CaseSettings(motion_correction=False))


def test_aif_warnings_reach_result_and_summary(mr_phantom):
    # A "manual AIF" in delayed (hypoperfused) tissue peaks after the average tissue: aif.py warns.
    ph = mr_phantom
    late = np.argwhere(ph.true_hypoperfusion)
    voxels = late[np.linspace(0, len(late) - 1, 6).astype(int)]
    settings = CaseSettings(motion_correction=False, aif_voxels=voxels.tolist())
    result = run_case(ph.series, adc=ph.adc, adc_geometry=ph.adc_geometry, settings=settings)
    assert result.aif.warnings, "expected aif.py to warn about a late-peaking manual AIF"
    for text in result.aif.warnings:
        assert f"AIF: {text}" in result.warnings
    summary = json.loads(json.dumps(result.summary(), allow_nan=False))
    assert all(f"AIF: {text}" in summary["warnings"] for text in result.aif.warnings)
    assert summary["aif"]["warnings"] == list(result.aif.warnings)


def test_ct_aif_has_no_mr_saturation_check():
    """S/S0 is a DSC-MR notion: on CT (HU) no candidate may be dropped or flagged as 'saturated'."""
    phantom = make_volume_phantom("ct", seed=0)
    result = run_case(phantom.series, settings=CaseSettings(motion_correction=False))
    assert result.aif.quality["min_signal_ratio"] is None
    assert not any("saturat" in w for w in result.aif.warnings + list(result.warnings))
    assert phantom.artery_mask[tuple(np.asarray(result.aif.voxels).T)].all()


def test_summary_says_whether_cbf_is_absolute(mr_run):
    maps = mr_run[0].summary()["analysis"]["maps"]
    assert maps["absolute_scale"] is False
    assert "relative" in maps["scale_note"]
    ct = run_case(make_volume_phantom("ct", shape=(6, 32, 32), seed=0).series,
                  settings=CaseSettings(motion_correction=False)).summary()["analysis"]["maps"]
    assert ct["absolute_scale"] is True


def test_adc_covering_part_of_the_brain_is_flagged(mr_phantom):
    """An ADC shifted 60 mm still overlaps, but a core outside it can never be found: the
    coverage is reported and flagged instead of a silent core of 0 mL."""
    from StrokeMismatchLib.geometry import Geometry

    phantom_adc_geometry = mr_phantom.adc_geometry
    matrix = phantom_adc_geometry.ijk_to_ras.copy()
    matrix[2, 3] += 60.0  # 60 mm superior
    shifted = Geometry(matrix, phantom_adc_geometry.shape)
    result = run_case(mr_phantom.series, adc=mr_phantom.adc, adc_geometry=shifted,
                      settings=CaseSettings(motion_correction=False))
    coverage = result.lesion.adc_coverage
    assert 0.0 < coverage < 0.95
    assert [f for f in result.quality if f.code == "adc_coverage" and f.severity == "warning"]
    summary = result.summary()
    assert summary["analysis"]["adc_brain_coverage"] == pytest.approx(coverage)
    assert any("covers only" in w for w in summary["warnings"])

    aligned = run_case(mr_phantom.series, adc=mr_phantom.adc, adc_geometry=mr_phantom.adc_geometry,
                       settings=CaseSettings(motion_correction=False))
    assert aligned.lesion.adc_coverage >= 0.95
    assert not [f for f in aligned.quality if f.code == "adc_coverage"]
