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


# --- Checks of issue 9 at their thresholds (synthetic inputs) ---------------------------------
from types import SimpleNamespace  # noqa: E402

from StrokeMismatchLib import quality  # noqa: E402
from StrokeMismatchLib.geometry import Geometry  # noqa: E402


def _brain_adc(parenchyma, csf=3000.0, shape=(4, 20, 20)):
    adc = np.full(shape, parenchyma, dtype=float)
    adc[:, :, :3] = csf                                     # 15 % CSF-like
    return adc, np.ones(shape, bool)


@pytest.mark.parametrize("parenchyma, fires", [(540.0, True), (560.0, False), (800.0, False),
                                               (1090.0, False), (1110.0, True)])
def test_adc_values_check_at_its_range(parenchyma, fires):
    adc, brain = _brain_adc(parenchyma)
    flags = quality.adc_flags(adc, brain)
    assert bool(flags) is fires
    if fires:
        assert flags[0].code == "adc_values" and flags[0].severity == "error"
        assert flags[0].value == pytest.approx(parenchyma) and "550–1100" in flags[0].threshold


def test_adc_values_check_mostly_csf_like_brain():
    adc, brain = _brain_adc(2400.0)                          # ADC × 3
    flag, = quality.adc_flags(adc, brain)
    assert "below 2000" in flag.message and flag.severity == "error"


def _lesion(core, hypo, side="none", hemispheres=None, extra=None, spacing=2.0):
    geometry = Geometry(np.diag([spacing, spacing, spacing, 1.0]), core.shape)
    masks = {"core": core, "hypoperfusion": hypo, "brain": np.ones(core.shape, bool)}
    masks.update(extra or {})
    return SimpleNamespace(geometry=geometry, masks=masks, hemispheres=hemispheres,
                           side={"affected_side": side, "basis": "test"},
                           settings=SimpleNamespace(tmax_threshold=6.0))


def test_core_outside_the_deficit_is_an_error_inside_is_not():
    shape = (10, 40, 40)                                     # 8 mL voxels 2 mm → 0.008 mL
    hypo = np.zeros(shape, bool)
    hypo[2:8, 5:30, 5:20] = True                             # 18 mL
    outside = np.zeros(shape, bool)
    outside[2:8, 5:20, 25:38] = True                         # 9.4 mL, no overlap
    flag = next(f for f in quality.lesion_flags(_lesion(outside, hypo)) if f.code == "core_outside_deficit")
    assert flag.severity == "error" and flag.value == 0.0
    inside = np.zeros(shape, bool)
    inside[2:8, 5:20, 5:18] = True
    assert not [f for f in quality.lesion_flags(_lesion(inside, hypo)) if f.code.startswith("core_")]
    # The Tmax > 4 s rim counts as deficit: a core there is not "outside".
    rim = {"tmax_gt_4": hypo | outside}
    assert not [f for f in quality.lesion_flags(_lesion(outside, hypo, extra=rim))
                if f.code == "core_outside_deficit"]
    small = np.zeros(shape, bool)
    small[2:4, 5:10, 25:30] = True                           # 0.4 mL: too small to judge
    assert not [f for f in quality.lesion_flags(_lesion(small, hypo)) if f.code.startswith("core_")]


def test_core_larger_than_half_the_brain_is_an_error():
    shape = (4, 10, 10)
    core = np.zeros(shape, bool)
    core[:, :, :6] = True
    flag = next(f for f in quality.lesion_flags(_lesion(core, core)) if f.code == "core_fraction")
    assert flag.severity == "error" and flag.value == pytest.approx(60.0)
    core[:, :, 5] = False
    assert not [f for f in quality.lesion_flags(_lesion(core, core)) if f.code == "core_fraction"]


def test_scattered_deficit_is_an_error_one_territory_is_not():
    shape = (10, 40, 40)
    specks = np.zeros(shape, bool)
    for n, (k, j, i) in enumerate([(1, 2, 2), (4, 30, 5), (7, 8, 30), (2, 30, 30), (8, 20, 18)]):
        specks[k:k + 2, j:j + 8, i:i + 8] = True             # 5 × 1 mL, apart
    flags = {f.code: f for f in quality.lesion_flags(_lesion(np.zeros(shape, bool), specks,
                                                             side="left"))}
    assert flags["hypoperfusion_scattered"].value == pytest.approx(20.0)
    territory = np.zeros(shape, bool)
    territory[2:8, 5:30, 5:20] = True
    territory |= specks & (np.arange(40)[None, None, :] > 28)  # plus two far specks
    assert "hypoperfusion_scattered" not in {
        f.code for f in quality.lesion_flags(_lesion(np.zeros(shape, bool), territory, side="left"))}


def test_unlateralised_deficit_of_10_ml_is_an_error():
    shape = (10, 40, 40)
    hypo = np.zeros(shape, bool)
    hypo[2:8, 5:30, 5:14] = True                             # 10.8 mL, one block
    codes = {f.code for f in quality.lesion_flags(_lesion(np.zeros(shape, bool), hypo))}
    assert codes == {"hypoperfusion_not_lateralised"}
    codes = {f.code for f in quality.lesion_flags(_lesion(np.zeros(shape, bool), hypo, side="left"))}
    assert codes == set()
    # No side from the raw Tmax, but the cleaned deficit is one-sided: one territory, no error.
    left = np.zeros(shape, bool)
    left[:, :, :20] = True
    halves = SimpleNamespace(side_masks=lambda: {"left": left, "right": ~left})
    assert not quality.lesion_flags(_lesion(np.zeros(shape, bool), hypo, hemispheres=halves))
    both = hypo | hypo[:, :, ::-1]                           # mirrored: 21.6 mL, symmetric
    flag, = quality.lesion_flags(_lesion(np.zeros(shape, bool), both, hemispheres=halves))
    assert flag.code == "hypoperfusion_not_lateralised" and "+0.00" in flag.message


def _curve_case(curve, modality="mr", baseline=(2, 12)):
    conc = np.broadcast_to(np.asarray(curve, float), (2, 3, 4, len(curve))).copy()
    return quality.bolus_flags(conc, np.arange(len(curve)) * 1.5, SimpleNamespace(
        start=baseline[0], stop=baseline[1]), np.ones((2, 3, 4), bool), modality=modality, te=0.03)


def _bolus(height, n=60, arrival=12, width=4.0):
    t = np.arange(n, dtype=float)
    x = np.clip(t - arrival, 0, None)
    shape = (x / width) ** 3 * np.exp(-x / width * 3)
    return height * shape / shape.max()


def test_bolus_thresholds_mr():
    # 5 % signal drop at TE 30 ms is ΔR2* = −ln(0.95)/0.03 = 1.71 1/s (peak slightly smoothed)
    assert _curve_case(_bolus(1.9, width=8.0)) == []
    flag, = _curve_case(_bolus(1.6, width=8.0))
    assert flag.code == "no_bolus" and 4.0 < flag.value < 5.0 and flag.threshold == "≥ 5"
    drift = np.linspace(0.0, 4.0, 60)                        # a slow rise, no bolus
    flag, = _curve_case(drift)
    assert flag.code == "no_bolus" and "drift" in flag.message


def test_bolus_thresholds_ct_and_baseline_inside_the_bolus():
    assert _curve_case(_bolus(2.2), "ct", (0, 12)) == []
    assert _curve_case(_bolus(1.8), "ct", (0, 12))[0].code == "no_bolus"
    late = _bolus(30.0)[16:] - _bolus(30.0)[16]             # the scan starts after the arrival
    flag, = _curve_case(late, "ct", (0, 3))
    assert flag.code == "baseline_during_bolus" and flag.severity == "error"


def test_aif_lower_than_tissue_is_an_error_low_aif_a_warning(ct_clean):
    phantom, result = ct_clean
    tissue_peak = float(np.max(result.concentration[result.brain_mask].mean(axis=0)))

    def flag_for(ratio):
        aif = SimpleNamespace(curve=result.aif.curve, warnings=[],
                              quality={**result.aif.quality, "peak_height": ratio * tissue_peak})
        flags = quality._check_aif(aif, result.concentration, result.brain_mask,
                                   phantom.series.times)
        return next((f for f in flags if f.code == "aif_low"), None)

    assert flag_for(0.9).severity == "error"
    assert flag_for(1.2).severity == "warning"
    assert flag_for(3.0) is None
