"""Curve-level phantom (phantom/curves.py) against the analytic facts of PERFUSION.md §11."""

import math

import numpy as np
import pytest

from StrokeMismatchLib.phantom.curves import (
    RESIDUE_SHAPES,
    add_gaussian_noise,
    add_rician_noise,
    concentration_to_mr_signal,
    dispersion_kernel,
    gamma_variate_aif,
    mr_scale_for_drop,
    residue_function,
    simulate_curves,
)

FINE = np.arange(0.0, 400.0, 0.001)


def test_aif_peak_time_height_and_area():
    for t0, r, b in ((20.0, 3.0, 1.5), (15.0, 3.0, 2.0), (10.0, 2.5, 1.0)):
        curve = gamma_variate_aif(FINE, t0=t0, r=r, b=b, peak=1.0)
        assert FINE[np.argmax(curve)] == pytest.approx(t0 + r * b, abs=0.002)
        assert curve.max() == pytest.approx(1.0, rel=1e-6)
        assert np.all(curve[FINE <= t0] == 0)
        # Unscaled area Γ(r + 1)·b^(r + 1): peak-normalised area × unscaled peak.
        unscaled_peak = (r * b) ** r * math.exp(-r)
        area = np.trapezoid(curve, FINE) * unscaled_peak
        assert area == pytest.approx(math.gamma(r + 1) * b ** (r + 1), rel=1e-5)
    # Handy constant of §11.1: 30.375 for r = 3, b = 1.5.
    unscaled = gamma_variate_aif(FINE, peak=1.0) * (4.5**3 * math.exp(-3))
    assert np.trapezoid(unscaled, FINE) == pytest.approx(30.375, rel=1e-5)


@pytest.mark.parametrize("shape", RESIDUE_SHAPES)
@pytest.mark.parametrize("mtt", [2.0, 4.0, 12.0])
def test_residue_integral_equals_mtt(shape, mtt):
    residue = residue_function(FINE, mtt, shape)
    assert residue_function(0.0, mtt, shape) == pytest.approx(1.0)
    assert np.all(np.diff(residue) <= 1e-12)  # non-increasing
    assert np.trapezoid(residue, FINE) == pytest.approx(mtt, rel=2e-3)
    assert residue_function(-1.0, mtt, shape) == 0.0


def test_unknown_residue_shape():
    with pytest.raises(ValueError, match="residue"):
        residue_function(FINE, 4.0, "triangle")


@pytest.mark.parametrize("tau", [0.5, 1.5, 3.0, 4.5])
def test_dispersion_kernel_unit_area(tau):
    kernel = dispersion_kernel(FINE, tau)
    assert np.trapezoid(kernel, FINE) == pytest.approx(1.0, rel=1e-3)
    assert np.trapezoid(kernel * FINE, FINE) == pytest.approx(tau, rel=1e-3)  # mean transit 1/β
    assert np.all(dispersion_kernel(FINE, 0.0) == 0)  # τ = 0 handled as a delta by the simulator


@pytest.mark.parametrize("residue", RESIDUE_SHAPES)
def test_cbv_equals_label_noise_free(residue):
    cbf = np.array([10.0, 30.0, 60.0, 20.0, 35.0])
    cbv = np.array([4.0, 4.0, 4.0, 2.0, 2.0])
    mtt = 60.0 * cbv / cbf
    times = np.arange(0.0, 200.0, 1.0)
    curves = simulate_curves(cbf, mtt, residue=residue, times=times, delay=np.array([0, 1, 3, -1, 6.0]))
    # CBV = ∫C_t / ∫C_a × 100 (κ = 1, mL/100 g): within 0.5 % when sampled at 1 s.
    ratio = np.trapezoid(curves.tissue, times, axis=-1) / np.trapezoid(curves.aif, times) * 100.0
    assert np.allclose(ratio, cbv, rtol=0.005)
    assert np.allclose(curves.truth["cbv"], cbv)
    assert curves.tissue.shape == (5, times.size)


def test_cbv_with_dispersion_and_broadcasting():
    cbf = np.array([[20.0], [60.0]])
    dispersion = np.array([[0.0, 1.5, 3.0, 4.5]])
    curves = simulate_curves(cbf, 4.0, dispersion=dispersion, delay=2.0, times=np.arange(0.0, 200.0, 0.5))
    assert curves.tissue.shape == (2, 4, 400)
    ratio = np.trapezoid(curves.tissue, curves.times, axis=-1) / np.trapezoid(curves.aif, curves.times) * 100
    assert np.allclose(ratio, curves.truth["cbv"], rtol=0.005)
    # Dispersion lowers and delays the peak: TTP and Tmax rise with 1/β.
    assert np.all(np.diff(curves.truth["tmax"], axis=1) > 0)
    assert np.all(np.diff(curves.truth["ttp"], axis=1) > 0)
    assert np.all(np.diff(curves.tissue.max(axis=-1), axis=1) < 0)


def test_tmax_truth_equals_delay_without_dispersion():
    delay = np.array([-3.0, -1.0, 0.0, 0.5, 1.0, 3.0, 6.0])
    curves = simulate_curves(40.0, 5.0, delay=delay)
    assert np.allclose(curves.truth["tmax"], delay)
    # The tissue curve really is the delayed one: its peak moves with the delay.
    peaks = curves.truth["ttp"]
    assert np.allclose(np.diff(peaks), np.diff(delay), atol=0.03)


def test_tmax_truth_with_dispersion_is_peak_of_h_conv_r():
    tau, mtt = 2.0, 4.0
    curves = simulate_curves(40.0, mtt, delay=1.0, dispersion=tau)
    # Exponential h ⊗ exponential R peaks at ln(MTT/τ)·τ·MTT/(MTT − τ).
    expected = 1.0 + math.log(mtt / tau) * tau * mtt / (mtt - tau)
    assert float(curves.truth["tmax"]) == pytest.approx(expected, abs=0.03)


def test_aif_sampled_and_fine_grid_consistent():
    times = np.arange(0.0, 90.0, 1.5)
    curves = simulate_curves(60.0, 4.0, times=times, aif_peak=3.0, t0=16.0)
    assert np.allclose(curves.aif, gamma_variate_aif(times, t0=16.0, peak=3.0), atol=1e-6)
    assert curves.fine_aif.max() == pytest.approx(3.0, rel=1e-4)
    assert np.all(curves.tissue[..., times <= 16.0] == pytest.approx(0.0, abs=1e-12))


def test_noise_sd_as_requested():
    rng = np.random.default_rng(7)
    clean = np.full(200_000, 35.0)
    noisy = add_gaussian_noise(clean, 5.0, rng)
    assert noisy.std() == pytest.approx(5.0, rel=0.02)
    assert noisy.mean() == pytest.approx(35.0, abs=0.05)
    assert np.all(clean == 35.0)  # input untouched
    # Rician: at high SNR the SD approaches σ; at zero signal the mean is σ·√(π/2).
    high = add_rician_noise(np.full(200_000, 1000.0), 50.0, rng)
    assert high.std() == pytest.approx(50.0, rel=0.03)
    zero = add_rician_noise(np.zeros(200_000), 50.0, rng)
    assert zero.mean() == pytest.approx(50.0 * math.sqrt(math.pi / 2), rel=0.02)
    assert np.all(zero >= 0)
    # Same seed → same noise.
    a = add_gaussian_noise(clean[:100], 5.0, np.random.default_rng(1))
    b = add_gaussian_noise(clean[:100], 5.0, np.random.default_rng(1))
    assert np.array_equal(a, b)


def test_mr_signal_model_drop():
    te = 0.03
    k = mr_scale_for_drop(2.0, te=te, drop=0.6)
    signal = concentration_to_mr_signal(np.array([0.0, 2.0]), te=te, k=k, s0=800.0)
    assert signal[0] == pytest.approx(800.0)
    assert signal[1] == pytest.approx(800.0 * 0.4)
