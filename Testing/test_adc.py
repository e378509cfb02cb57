"""ADC unit detection and conversion (PERFUSION.md §8)."""

import numpy as np
import pytest

from StrokeMismatchLib.adc import adc_to_micro, canonical_unit, detect_adc_unit
from StrokeMismatchLib.errors import InputDataError


def _brain_adc(seed=0):
    """Brain-like ADC in 10⁻⁶ mm²/s: background 0, tissue ≈ 800, CSF 3000, a 450 lesion."""
    rng = np.random.default_rng(seed)
    adc = np.zeros((8, 32, 32))
    adc[1:7, 4:28, 4:28] = rng.normal(800, 60, (6, 24, 24))
    adc[2:5, 14:18, 14:18] = 3000.0
    adc[3:6, 6:12, 6:12] = 450.0
    return adc


@pytest.mark.parametrize("unit, scale", [("1e-6 mm2/s", 1.0), ("1e-3 mm2/s", 1e-3),
                                         ("mm2/s", 1e-6)])
def test_detects_all_three_units(unit, scale):
    micro = _brain_adc()
    info = detect_adc_unit(micro * scale)
    assert info.unit == unit and info.detected
    assert unit in info.message
    converted, info2 = adc_to_micro(micro * scale)
    assert info2.unit == unit
    tissue = micro > 0
    np.testing.assert_allclose(converted[tissue], micro[tissue], rtol=1e-5, atol=1e-3)
    assert np.isnan(converted[~tissue]).all()  # background is "no ADC", never core


def test_explicit_unit_overrides_detection_and_input_untouched():
    micro = _brain_adc()
    values = micro * 1e-3
    before = values.copy()
    converted, info = adc_to_micro(values, "mm2/s")  # deliberately "wrong": user wins
    assert info.unit == "mm2/s" and not info.detected
    assert "Warning" in info.message  # implausible result flagged
    tissue = micro > 0
    np.testing.assert_allclose(converted[tissue], values[tissue] * 1e6, rtol=1e-5)
    np.testing.assert_array_equal(values, before)
    converted, info = adc_to_micro(values, "10^-3 mm2/s")
    assert info.unit == "1e-3 mm2/s" and "Warning" not in info.message
    np.testing.assert_allclose(converted[tissue], micro[tissue], rtol=1e-5, atol=1e-3)


def test_mask_restricts_detection():
    micro = _brain_adc()
    mask = micro > 0
    assert detect_adc_unit(micro, mask).input_median == pytest.approx(
        np.median(micro[mask]))


@pytest.mark.parametrize("factor", [1e-1, 30.0, 1e-8])
def test_implausible_range_is_a_clear_error(factor):
    with pytest.raises(InputDataError, match="Cannot tell the ADC unit"):
        detect_adc_unit(_brain_adc() * factor)


def test_empty_or_unknown_unit_errors():
    with pytest.raises(InputDataError, match="no positive"):
        detect_adc_unit(np.zeros((2, 3, 4)))
    with pytest.raises(InputDataError, match="Unknown ADC unit"):
        canonical_unit("furlongs")
    with pytest.raises(InputDataError, match="3D"):
        adc_to_micro(np.ones((3, 3)))
