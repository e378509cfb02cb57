"""Signal → concentration and baseline detection (PERFUSION.md §2)."""

import numpy as np
import pytest

from StrokeMismatchLib.errors import InputDataError
from StrokeMismatchLib.perfusion import compute_maps, detect_baseline, select_aif, signal_to_concentration
from StrokeMismatchLib.phantom import add_rician_noise, concentration_to_mr_signal, simulate_curves

TIMES = np.arange(0.0, 90.0, 1.5)


def mr_set(te=0.03, k=20.0):
    cs = simulate_curves(np.array([20.0, 40.0, 60.0]), 4.0, times=TIMES)
    return cs, concentration_to_mr_signal(cs.tissue, te=te, k=k)


def test_mr_formula_with_given_baseline():
    cs, signal = mr_set()
    conc = signal_to_concentration(signal, TIMES, modality="mr", te=0.03, baseline=(0, 10))
    s0 = signal[:, :10].mean(axis=1, keepdims=True)
    np.testing.assert_allclose(conc, -np.log(signal / s0) / 0.03, rtol=1e-5, atol=1e-4)
    # ΔR2* = k·C for this signal model (the tissue curve is zero before the bolus)
    np.testing.assert_allclose(conc, 20.0 * cs.tissue, rtol=1e-4, atol=1e-4)
    assert conc.dtype == np.float32


def test_ct_difference_and_int16_input_untouched():
    cs = simulate_curves(60.0, 4.0, times=TIMES, aif_peak=400.0)
    hu = np.rint(35 + 40 * cs.tissue[None, :] * np.ones((3, 1))).astype(np.int16)
    before = hu.copy()
    conc = signal_to_concentration(hu, TIMES, modality="ct")
    np.testing.assert_array_equal(hu, before)
    base = detect_baseline(hu, TIMES, modality="ct")
    np.testing.assert_allclose(conc, hu - hu[:, base.frames].mean(axis=1, keepdims=True), atol=1e-4)
    assert conc.dtype == np.float32


def test_te_missing_or_in_milliseconds_is_a_clear_error():
    _, signal = mr_set()
    with pytest.raises(InputDataError, match="echo time"):
        signal_to_concentration(signal, TIMES, modality="mr")
    with pytest.raises(InputDataError, match="milliseconds"):
        signal_to_concentration(signal, TIMES, modality="mr", te=30.0)
    with pytest.raises(InputDataError, match="modality"):
        signal_to_concentration(signal, TIMES, modality="pet", te=0.03)
    with pytest.raises(InputDataError, match="frame times"):
        signal_to_concentration(signal, TIMES[:-1], modality="mr", te=0.03)


def test_baseline_detection_finds_bolus_arrival():
    cs, signal = mr_set()
    rng = np.random.default_rng(0)
    noisy = add_rician_noise(np.repeat(signal, 30, axis=0), 20.0, rng)
    info = detect_baseline(noisy, TIMES, modality="mr")
    arrival = TIMES[info.bolus_arrival_index]
    assert info.start == 2  # MR: two steady-state frames skipped
    assert 20.0 < arrival <= 24.0  # AIF (and undelayed tissue) starts at t0 = 20 s
    assert info.stop - info.start >= 3 and not info.warnings
    ct = detect_baseline(35 + 40 * cs.tissue, TIMES, modality="ct")
    assert ct.start == 0 and 20.0 < TIMES[ct.bolus_arrival_index] <= 24.0


def test_baseline_override_is_used_verbatim():
    _, signal = mr_set()
    signal = signal.copy()
    signal[:, :2] *= 1.2  # first two frames brighter (no steady state yet; auto skips them)
    auto = signal_to_concentration(signal, TIMES, modality="mr", te=0.03)
    forced = signal_to_concentration(signal, TIMES, modality="mr", te=0.03, baseline=(0, 2))
    # with S0 from the bright frames the pre-bolus frames 2… read ln(1.2)/TE
    np.testing.assert_allclose(forced[:, 6], np.log(1.2) / 0.03, rtol=1e-4)
    assert np.all(np.abs(auto[:, 6]) < 1e-3)
    same = signal_to_concentration(signal, TIMES, modality="mr", te=0.03, baseline=slice(0, 2))
    np.testing.assert_array_equal(same, forced)
    with pytest.raises(InputDataError, match="Baseline"):
        signal_to_concentration(signal, TIMES, modality="mr", te=0.03, baseline=(5, 200))


def test_zero_and_negative_mr_signal_give_finite_maps():
    cs, signal = mr_set(k=60.0)
    rng = np.random.default_rng(2)
    signal = np.repeat(signal, 4, axis=0)
    signal[0, 15:18] = 0.0  # dropout to zero
    signal[1, 14:19] = -5.0  # negative (e.g. after background subtraction)
    signal[2, :] = 0.0  # background voxel
    signal[3] = add_rician_noise(signal[3], 30.0, rng)
    conc = signal_to_concentration(signal, TIMES, modality="mr", te=0.03)
    assert np.all(np.isfinite(conc))
    assert np.all(conc[2] == 0)
    aif = 3 * conc[[0, 1, 3]].mean(axis=0)  # any positive bolus
    for method in ("oSVD", "sSVD", "Tikhonov"):
        maps = compute_maps(conc, aif, TIMES, method=method)
        for name in ("cbf", "cbv", "mtt", "tmax", "ttp"):
            assert np.all(np.isfinite(getattr(maps, name))), (method, name)
    sel = select_aif(conc, TIMES, voxels=[[0], [1]])
    assert np.all(np.isfinite(sel.curve))


def test_non_uniform_mr_times_convert():
    times = np.r_[np.arange(0, 30, 1.0), np.arange(30, 90, 3.0)]
    cs = simulate_curves(60.0, 4.0, times=times)
    signal = concentration_to_mr_signal(cs.tissue, te=0.025, k=20.0)
    conc = signal_to_concentration(signal, times, modality="mr", te=0.025)
    np.testing.assert_allclose(conc, 20.0 * cs.tissue, atol=2e-3)


# --- issue 20: the baseline ends before the earliest arrival ---------------------------------
def _artery_and_late_tissue(aif_peak=400.0, tissue_delay=3.0, n_artery=8, n_tissue=800, noise=0.0, seed=0):
    """CT HU curves [N, T] at 1 s frames: a few arteries (bolus at t0 = 20 s) and much tissue
    fed 3 s later (as when the other hemisphere is delayed): the brain mean departs late."""
    times = np.arange(0.0, 60.0, 1.0)
    cs = simulate_curves(np.array([60.0]), 4.0, delay=np.array([tissue_delay]), times=times,
                         aif_peak=aif_peak)
    hu = np.concatenate([np.tile(40.0 + cs.aif, (n_artery, 1)), np.tile(35.0 + cs.tissue[0], (n_tissue, 1))])
    if noise:
        hu = hu + np.random.default_rng(seed).normal(0.0, noise, hu.shape)
    return hu, times, cs


def _arrival(curve, fraction=0.01):
    return int(np.flatnonzero(curve > fraction * curve.max())[0])


def test_baseline_ends_before_the_arteries_arrive_not_the_brain_mean():
    hu, times, cs = _artery_and_late_tissue()
    artery_arrival = _arrival(cs.aif)
    info = detect_baseline(hu, times, modality="ct")
    assert "earliest-enhancing" in info.arrival_source and info.margin_frames == 1
    assert info.stop <= artery_arrival - 1  # last baseline frame ≤ arrival − 2 (one frame of margin)
    assert info.stop - info.start >= 3 and not info.warnings
    # the old rule (brain mean) cuts after the arteries have risen: the AIF's upslope in its baseline
    old = detect_baseline(hu, times, modality="ct", reference="mean")
    assert old.stop > artery_arrival
    conc_old = signal_to_concentration(hu, times, modality="ct", baseline=old)
    conc_new = signal_to_concentration(hu, times, modality="ct")
    pre = slice(0, artery_arrival)
    assert conc_old[0, pre].mean() < -1.0  # HU below zero before the bolus
    assert abs(conc_new[0, pre].mean()) < 0.05  # noise-free: at zero


def test_second_pass_recuts_from_the_aif_arrival_and_reports_the_check():
    from StrokeMismatchLib.concentration import BaselineInfo, aif_prebolus_check, recut_baseline

    hu, times, cs = _artery_and_late_tissue(noise=3.0)
    late = BaselineInfo(0, 24, 24)  # a window reaching 4 frames into the AIF's bolus
    conc = signal_to_concentration(hu, times, modality="ct", baseline=late)
    aif = conc[:8].mean(axis=0)
    check = aif_prebolus_check(aif, late)
    assert check["passed"] is False and check["prebolus_mean"] < -check["threshold"] < 0
    new = recut_baseline(late, aif)
    assert new.recut and new.arrival_source == "AIF (second pass)"
    assert new.stop == new.aif_arrival_index - 1 <= _arrival(cs.aif)
    conc2 = signal_to_concentration(hu, times, modality="ct", baseline=new)
    check2 = aif_prebolus_check(conc2[:8].mean(axis=0), new)
    assert check2["passed"] is True and abs(check2["prebolus_mean"]) <= check2["threshold"]
    assert check2["threshold"] >= 0.005 * check2["aif_peak"]
    # a user-given window is used verbatim (never re-cut), but checked the same way
    user = BaselineInfo(0, 24, 24, user_given=True)
    kept = recut_baseline(user, aif)
    assert (kept.start, kept.stop, kept.recut) == (0, 24, False)
    assert aif_prebolus_check(aif, kept)["passed"] is False


def test_second_pass_leaves_a_good_window_alone():
    from StrokeMismatchLib.concentration import recut_baseline

    hu, times, _ = _artery_and_late_tissue(noise=3.0)
    info = detect_baseline(hu, times, modality="ct")
    aif = signal_to_concentration(hu, times, modality="ct", baseline=info)[:8].mean(axis=0)
    again = recut_baseline(info, aif)
    assert (again.start, again.stop, again.recut) == (info.start, info.stop, False)
    assert again.aif_arrival_index is not None and again.aif_arrival_index > info.stop


def test_mr_background_noise_is_not_taken_for_the_earliest_enhancing_voxels():
    """Without a mask the MR background (Rician noise near zero) has the largest relative
    'drops'; it must not set the bolus arrival."""
    from StrokeMismatchLib.phantom.volume import make_volume_phantom

    ph = make_volume_phantom("mr")
    whole = detect_baseline(ph.series.signal, ph.times, modality="mr")
    brain = detect_baseline(ph.series.signal, ph.times, modality="mr", mask=ph.brain_mask)
    assert (whole.start, whole.stop) == (brain.start, brain.stop)
    assert whole.bolus_arrival_index == brain.bolus_arrival_index
