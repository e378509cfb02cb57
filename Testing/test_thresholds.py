"""Threshold masks at their edges (strict inequalities) and rCBF references."""

import numpy as np
import pytest

from StrokeMismatchLib.errors import InputDataError
from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.hemispheres import Hemispheres
from StrokeMismatchLib.thresholds import (core_from_adc, core_from_rcbf, median_in_plane,
                                          penumbra, rcbf_reference, smooth_in_plane, smooth_nan,
                                          tmax_mask)


def test_strict_inequalities_at_the_edges():
    rcbf = np.array([0.299, 0.2999, 0.30, 0.301, np.nan]).reshape(1, 1, 5)
    assert core_from_rcbf(rcbf, 0.30).ravel().tolist() == [True, True, False, False, False]
    tmax = np.array([5.99, 6.0, 6.0001, 6.01, np.nan]).reshape(1, 1, 5)
    assert tmax_mask(tmax, 6.0).ravel().tolist() == [False, False, True, True, False]
    adc = np.array([619.9, 620.0, 620.1, 0.0, -5.0, np.nan]).reshape(1, 1, 6)
    assert core_from_adc(adc, 620.0).ravel().tolist() == [True, False, False, False, False,
                                                          False]


def test_thresholds_are_parameters():
    tmax = np.array([3.9, 4.1, 8.0, 10.5]).reshape(1, 1, 4)
    assert tmax_mask(tmax, 4.0).sum() == 3
    assert tmax_mask(tmax, 10.0).sum() == 1
    assert core_from_rcbf(np.array([[[0.37]]]), 0.38).all()


def test_penumbra_is_hypoperfusion_minus_core():
    core = np.array([[[1, 1, 0, 0]]], bool)
    hypo = np.array([[[0, 1, 1, 0]]], bool)
    assert penumbra(core, hypo).ravel().tolist() == [False, False, True, False]


def _two_sided_cbf():
    """CBF 50 right (i < 10, since i points left), 40 left; Tmax 2 s except a left deficit."""
    geometry = Geometry.from_spacing((2, 4, 20), (2.0, 2.0, 5.0), origin_ras=(19.0, 0.0, 0.0))
    cbf = np.full(geometry.shape, 50.0)
    cbf[..., 10:] = 40.0
    tmax = np.full(geometry.shape, 2.0)
    tmax[..., 15:] = 9.0
    cbf[..., 15:] = 12.0
    tmax[..., 10:12] = 5.0  # delayed but not hypoperfused: excluded by "tmax_lt_4"
    hemis = Hemispheres(geometry, np.array([1.0, 0.0, 0.0]), 0.0, 0.0, 1.0)
    return geometry, cbf, tmax, hemis


def test_contralateral_reference_uses_the_other_hemisphere():
    geometry, cbf, tmax, hemis = _two_sided_cbf()
    tissue = np.ones(geometry.shape, bool)
    assert hemis.side_masks()["right"][..., :10].all()
    rcbf, info = rcbf_reference(cbf, method="contralateral", tissue=tissue, tmax=tmax,
                                hemispheres=hemis, affected_side="left")
    assert info["value"] == 50.0 and "right" in info["description"]
    assert info["n_voxels"] == 2 * 4 * 10
    np.testing.assert_allclose(rcbf[..., 15:], 12.0 / 50.0)
    # no side: all tissue with Tmax <= 6 s
    _, info = rcbf_reference(cbf, method="contralateral", tissue=tissue, tmax=tmax,
                             hemispheres=hemis, affected_side="none", statistic="median")
    assert info["value"] == np.median(cbf[tmax <= 6.0])


def test_tmax_lt_4_reference_and_exact_30_percent_edge():
    geometry, cbf, tmax, hemis = _two_sided_cbf()
    tissue = np.ones(geometry.shape, bool)
    rcbf, info = rcbf_reference(cbf, method="tmax_lt_4", tissue=tissue, tmax=tmax)
    expected = cbf[tmax < 4.0].mean()
    assert info["value"] == pytest.approx(expected)
    # Reference 50 (right side only): 15.0 is exactly 30 %, 14.95 is 29.9 %.
    cbf2 = cbf.copy()
    cbf2[..., 15] = 15.0
    cbf2[..., 16] = 14.95
    rcbf, info = rcbf_reference(cbf2, method="contralateral", tissue=tissue, tmax=tmax,
                                hemispheres=hemis, affected_side="left")
    core = core_from_rcbf(rcbf, 0.30)
    assert not core[..., 15].any() and core[..., 16].all()


def test_mirror_reference_divides_by_the_mirrored_side():
    geometry, cbf, tmax, hemis = _two_sided_cbf()
    tissue = np.ones(geometry.shape, bool)
    rcbf, info = rcbf_reference(cbf, method="mirror", tissue=tissue, hemispheres=hemis,
                                mirror_sigma_mm=0.0)
    assert info["value"] is None
    # plane at x = 0 between i = 9 (x = 1) and i = 10 (x = -1): i ↔ 19 − i
    np.testing.assert_allclose(rcbf[..., 19], 12.0 / 50.0)
    np.testing.assert_allclose(rcbf[..., 0], 50.0 / 12.0)


def test_reference_errors():
    geometry, cbf, tmax, hemis = _two_sided_cbf()
    tissue = np.ones(geometry.shape, bool)
    with pytest.raises(InputDataError, match="rCBF reference"):
        rcbf_reference(cbf, method="whole", tissue=tissue, tmax=tmax)
    with pytest.raises(InputDataError, match="No reference tissue"):
        rcbf_reference(cbf, method="tmax_lt_4", tissue=tissue, tmax=tmax + 10)
    with pytest.raises(InputDataError, match="plane"):
        rcbf_reference(cbf, method="mirror", tissue=tissue)


def test_smooth_nan_keeps_constant_and_nan():
    values = np.full((3, 5, 5), 7.0)
    values[1, 2, 2] = np.nan
    out = smooth_nan(values, 4.0, (5.0, 2.0, 2.0))
    assert np.isnan(out[1, 2, 2])
    np.testing.assert_allclose(out[np.isfinite(out)], 7.0)


def test_median_in_plane_removes_outliers_ignores_nan_and_stays_in_slice():
    tmax = np.full((3, 7, 7), 9.0)
    tmax[0] = 2.0                     # another slice: must not leak in
    tmax[1, 3, 3] = -15.0             # random Tmax of a no-flow voxel
    tmax[:, :, 0] = np.nan            # outside the tissue
    tmax[2, 2, 2] = 40.0
    copy = tmax.copy()
    out = median_in_plane(tmax, 3)
    np.testing.assert_array_equal(tmax, copy)
    assert out[1, 3, 3] == 9.0 and out[2, 2, 2] == 9.0
    assert np.isnan(out[:, :, 0]).all() and np.isfinite(out[:, :, 1:]).all()
    np.testing.assert_array_equal(out[0, :, 1:], 2.0)
    np.testing.assert_array_equal(median_in_plane(tmax, 1), tmax)


def test_smooth_in_plane_preserves_constants_and_keeps_nan_outside():
    cbf = np.full((3, 9, 9), 40.0)
    cbf[1] = 10.0                     # a different slice value: no mixing across slices
    cbf[:, :, :2] = np.nan
    out = smooth_in_plane(cbf, 4.0, (5.0, 1.8, 1.8))
    assert np.isnan(out[:, :, :2]).all()
    np.testing.assert_allclose(out[0, :, 2:], 40.0)
    np.testing.assert_allclose(out[1, :, 2:], 10.0)
    noisy = np.random.default_rng(0).normal(40.0, 10.0, (1, 40, 40))
    assert np.std(smooth_in_plane(noisy, 4.0, (5.0, 1.8, 1.8))) < 0.5 * np.std(noisy)
    np.testing.assert_array_equal(smooth_in_plane(noisy, 0.0, (5.0, 1.8, 1.8)), noisy)


def test_trimmed_mean_reference_ignores_a_few_vessel_voxels():
    """Default statistic (issue 15): the mean of the 5th–95th percentile, so 3 % vessel voxels at
    20× tissue CBF do not move it, while a GM/WM mix still gives its average (not the median)."""
    geometry = Geometry.from_spacing((1, 10, 20), (2.0, 2.0, 5.0))
    cbf = np.full(geometry.shape, 25.0)  # white matter
    cbf[0, :4] = 60.0  # 40 % grey matter
    cbf[0, 9, :6] = 1200.0  # 6 vessel voxels (3 %)
    tmax = np.full(geometry.shape, 2.0)
    tissue = np.ones(geometry.shape, bool)
    kwargs = dict(method="tmax_lt_4", tissue=tissue, tmax=tmax)
    _, trimmed = rcbf_reference(cbf, **kwargs)
    _, mean = rcbf_reference(cbf, statistic="mean", **kwargs)
    _, median = rcbf_reference(cbf, statistic="median", **kwargs)
    assert trimmed["statistic"] == "trimmed_mean"
    gm_wm_mean = (80 * 60.0 + 114 * 25.0) / 194
    assert trimmed["value"] == pytest.approx(gm_wm_mean, rel=0.05)
    assert mean["value"] > 1.5 * gm_wm_mean  # the vessels pull the plain mean up
    assert median["value"] == 25.0  # the median is the majority tissue's CBF
    with pytest.raises(InputDataError, match="trimmed_mean"):
        rcbf_reference(cbf, statistic="mode", **kwargs)
