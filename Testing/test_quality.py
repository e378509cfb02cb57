"""Quality-control flags on the phantom: clean, truncated, poor AIF, few baseline frames."""

import numpy as np
import pytest

from StrokeMismatchLib.concentration import BaselineInfo
from StrokeMismatchLib.phantom.volume import make_volume_phantom
from StrokeMismatchLib.pipeline import CaseSettings, run_case
from StrokeMismatchLib.quality import QualityFlag, assess_quality


def _codes(result, severity="warning"):
    return {flag.code for flag in result.quality if flag.severity == severity}


def _problems(result):
    """Codes of warnings and errors (the severity audit of issue 9 made some warnings errors)."""
    return {flag.code for flag in result.quality if flag.severity in ("warning", "error")}


@pytest.fixture(scope="module")
def ct_clean():
    phantom = make_volume_phantom("ct", seed=11)
    return phantom, run_case(phantom.series, settings=CaseSettings(motion_correction=False))


def test_clean_phantoms_give_no_warnings(ct_clean):
    _, result = ct_clean
    assert _codes(result) == set(), [f.message for f in result.quality]
    assert _codes(result, "error") == set()
    for flag in result.quality:
        data = flag.to_dict()
        assert set(data) == {"code", "severity", "message", "explanation", "value", "threshold",
                             "unit"}
        assert len(data["explanation"]) > 40
    mr = make_volume_phantom("mr", seed=11)
    mr_result = run_case(mr.series, adc=mr.adc, adc_geometry=mr.adc_geometry,
                         settings=CaseSettings(motion_correction=False))
    assert _codes(mr_result) == set(), [f.message for f in mr_result.quality]


def test_truncated_scan_is_flagged():
    phantom = make_volume_phantom("ct", seed=12, times=np.arange(0.0, 45.0, 1.0))
    result = run_case(phantom.series, settings=CaseSettings(motion_correction=False))
    assert "short_scan" in _codes(result)
    flag = next(f for f in result.quality if f.code == "short_scan")
    assert "45 s" in flag.message and "underestimated" in flag.explanation


def test_severely_truncated_bolus_is_flagged():
    phantom = make_volume_phantom("ct", seed=13, times=np.arange(0.0, 30.0, 1.0))
    result = run_case(phantom.series, settings=CaseSettings(motion_correction=False))
    assert "short_scan" in _codes(result)
    # Stopped during the first pass: an error, so no trial verdict (issue 9).
    assert "bolus_truncated" in _codes(result, "error")
    assert all(rule.status == "indeterminate (quality)" for rule in result.lesion.criteria)


def test_late_aif_is_flagged(ct_clean):
    phantom, _ = ct_clean
    vein = np.argwhere(phantom.vein_mask)[:4]
    result = run_case(phantom.series, settings=CaseSettings(motion_correction=False, aif_voxels=vein))
    # A vein as AIF shifts every Tmax: an error that blocks the verdicts (issue 9).
    assert "aif_late" in _codes(result, "error")
    assert all(rule.eligible is None for rule in result.lesion.criteria)


def test_low_noisy_aif_is_flagged(ct_clean):
    phantom, _ = ct_clean
    white_matter = np.argwhere((phantom.labels == 2) & (phantom.zones == 0))[:9]
    result = run_case(phantom.series, settings=CaseSettings(motion_correction=False, aif_voxels=white_matter))
    assert "aif_low" in _problems(result)
    assert "implausible_values" in _codes(result, "error")


def test_few_baseline_frames_and_motion_flags(ct_clean):
    phantom, result = ct_clean
    few = BaselineInfo(start=0, stop=2, bolus_arrival_index=2)

    class Motion:
        max_displacement_mm = 3.4
        warn_mm = 2.0
        failed_frames = [7]

    flags = assess_quality(phantom.series, result.concentration, few, result.aif, result.maps,
                           result.brain_mask, motion=Motion())
    codes = {f.code for f in flags if f.severity == "warning"}
    assert {"few_baseline_frames", "motion", "motion_failed_frames"} <= codes
    assert all(isinstance(f, QualityFlag) for f in flags)


def test_flag_rejects_unknown_severity():
    with pytest.raises(ValueError):
        QualityFlag("x", "fatal", "m", "e")
