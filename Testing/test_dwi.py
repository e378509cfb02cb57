"""ADC from a b0 / b1000 pair with known ADC values."""

import numpy as np
import pytest

from StrokeMismatchLib.dwi import ADC_MAX, adc_from_dwi
from StrokeMismatchLib.errors import InputDataError


def test_known_adc_is_recovered():
    rng = np.random.default_rng(3)
    adc_true = rng.uniform(300.0, 3000.0, size=(4, 5, 6))  # 10⁻⁶ mm²/s
    b0 = rng.uniform(200.0, 2000.0, size=adc_true.shape)
    b1000 = b0 * np.exp(-1000.0 * adc_true * 1e-6)
    b0_copy, b1000_copy = b0.copy(), b1000.copy()
    adc = adc_from_dwi(b0, b1000, 1000)
    np.testing.assert_allclose(adc, adc_true, rtol=1e-5)
    np.testing.assert_array_equal(b0, b0_copy)  # inputs untouched
    np.testing.assert_array_equal(b1000, b1000_copy)
    # Another b-value gives the same ADC.
    np.testing.assert_allclose(adc_from_dwi(b0, b0 * np.exp(-800e-6 * adc_true), 800), adc_true, rtol=1e-5)


def test_zero_negative_and_non_finite_signals_are_guarded():
    b0 = np.array([[[1000.0, 0.0, -5.0, 1000.0, 1000.0, np.nan]]])
    bh = np.array([[[500.0, 10.0, 10.0, 0.0, 1200.0, 100.0]]])
    with np.errstate(all="raise"):  # no division-by-zero or log-of-zero warnings
        adc = adc_from_dwi(b0, bh, 1000.0)
    assert adc[0, 0, 0] == pytest.approx(np.log(2.0) * 1e3, rel=1e-5)
    assert np.isnan(adc[0, 0, 1]) and np.isnan(adc[0, 0, 2]) and np.isnan(adc[0, 0, 5])
    assert adc[0, 0, 3] == ADC_MAX  # signal lost in noise: maximal diffusion
    assert adc[0, 0, 4] == 0.0  # S_b > S_0 (noise): clipped, never negative
    assert adc.dtype == np.float32


@pytest.mark.parametrize("b_value", [0, 1.0, -1000, "high", float("nan")])
def test_bad_b_value(b_value):
    with pytest.raises(InputDataError, match="b-value"):
        adc_from_dwi(np.ones((2, 2, 2)), np.ones((2, 2, 2)), b_value)


def test_mismatched_grids():
    with pytest.raises(InputDataError, match="different grids"):
        adc_from_dwi(np.ones((2, 2, 2)), np.ones((2, 2, 3)), 1000)
