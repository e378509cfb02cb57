"""Library misuse (issue 9): wrong types and values give the project's own error, never a raw
Python/numpy error or garbage maps."""

import numpy as np
import pytest

from StrokeMismatchLib.analysis import LesionSettings, analyze_lesion, metrics_from_masks
from StrokeMismatchLib.errors import InputDataError
from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.perfusion import compute_maps, deconvolve_curve, signal_to_concentration
from StrokeMismatchLib.phantom.curves import gamma_variate_aif
from StrokeMismatchLib.pipeline import CaseSettings, run_case

TIMES = np.arange(0.0, 60.0, 1.0)


def curves(n=6):
    """An AIF and n tissue curves (the AIF scaled and delayed by 2 s)."""
    aif = gamma_variate_aif(TIMES)
    tissue = np.stack([0.05 * np.interp(TIMES - 2.0, TIMES, aif, left=0.0)] * n)
    return aif, tissue


def test_nan_voxel_inside_the_mask_gets_nan_maps_and_is_counted():
    aif, tissue = curves()
    tissue[1] = np.nan                    # all samples missing
    tissue[3, 10] = np.inf                # one sample broken
    maps = compute_maps(tissue, aif, TIMES, mask=np.ones(6, bool))
    for name in ("cbf", "cbv", "mtt", "tmax", "ttp"):
        values = getattr(maps, name)
        assert np.isnan(values[1]) and np.isnan(values[3]), name
        assert np.all(np.isfinite(values[[0, 2, 4, 5]])), name
    assert maps.cbf[0] > 0
    assert maps.nonfinite_voxels == 2
    assert maps.extra["nonfinite_input"].tolist() == [False, True, False, True, False, False]
    assert "2 voxel(s)" in maps.warnings[0]


@pytest.mark.parametrize("kwargs, words", [
    ({"oi_target": -0.035}, "oi_target"),
    ({"oi_target": 0.0}, "oi_target"),
    ({"oi_target": float("nan")}, "oi_target"),
    ({"method": "sSVD", "threshold": 1.5}, "between 0 and 1"),
    ({"method": "cSVD", "threshold": -0.1}, "between 0 and 1"),
    ({"method": "cSVD", "threshold": "0.1"}, "must be a number"),
    ({"thresholds": (0.05, 1.2)}, "between 0 and 1"),
    ({"thresholds": 0.1}, "sequence"),
    ({"method": "Tikhonov", "tikhonov_alpha": -1.0}, "tikhonov_alpha"),
])
def test_out_of_range_deconvolution_settings_are_refused(kwargs, words):
    aif, tissue = curves()
    with pytest.raises(InputDataError, match=words):
        compute_maps(tissue, aif, TIMES, **kwargs)


@pytest.mark.parametrize("make, words", [
    (lambda t: t.astype(complex), "complex"),
    (lambda t: t > 0, "boolean"),
    (lambda t: t.astype(str), "numbers"),
])
def test_complex_boolean_or_text_arrays_are_refused(make, words):
    aif, tissue = curves()
    with pytest.raises(InputDataError, match=words):
        compute_maps(make(tissue), aif, TIMES)
    with pytest.raises(InputDataError, match=words):
        compute_maps(tissue, make(aif), TIMES)
    with pytest.raises(InputDataError, match=words):
        signal_to_concentration(make(100.0 + tissue), TIMES, modality="ct")


def test_times_in_milliseconds_are_refused():
    aif, tissue = curves()
    with pytest.raises(InputDataError, match="look like ms"):
        compute_maps(tissue, aif, TIMES * 1000.0)
    with pytest.raises(InputDataError, match="look like ms"):
        deconvolve_curve(tissue[0], aif, TIMES * 1000.0)
    with pytest.raises(InputDataError, match="look like ms"):
        signal_to_concentration(100.0 + tissue, TIMES * 1000.0, modality="ct")


@pytest.mark.parametrize("value", ["eighty", True, float("nan"), -3, [80]])
def test_wrong_age_is_an_input_error(value):
    with pytest.raises(InputDataError, match=r"age \(--age\)"):
        LesionSettings(age=value).validate()


def test_settings_of_the_wrong_type_are_refused():
    geometry = Geometry(np.eye(4), (2, 4, 4))
    core = np.zeros(geometry.shape, bool)
    with pytest.raises(InputDataError, match="settings must be a LesionSettings, not dict"):
        metrics_from_masks(core, core, geometry, settings={"age": 80})
    with pytest.raises(InputDataError, match="settings must be a LesionSettings, not dict"):
        analyze_lesion({"tmax": np.zeros(geometry.shape)}, geometry, modality="ct",
                       settings={"tmax_threshold": 6})
    with pytest.raises(InputDataError, match="settings must be a CaseSettings, not dict"):
        run_case(None, settings={"method": "oSVD"})
    with pytest.raises(InputDataError, match="lesion must be LesionSettings"):
        run_case(None, settings=CaseSettings(lesion="defaults"))
    with pytest.raises(InputDataError, match=r"age \(--age\)"):
        run_case(None, settings=CaseSettings(lesion={"age": "eighty"}))


def test_an_aif_whose_baseline_holds_the_bolus_is_refused_with_that_reason():
    aif, tissue = curves()
    late = aif - aif[24]                      # "baseline" taken at the AIF's peak
    with pytest.raises(InputDataError, match="baseline already contain the arterial bolus"):
        compute_maps(tissue, late, TIMES)
    spike = np.full(TIMES.size, -0.1)
    spike[20] = 1.0                           # a noise spike on a slightly negative curve
    with pytest.raises(InputDataError, match="no bolus in the chosen voxels"):
        compute_maps(tissue, spike, TIMES)
