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
