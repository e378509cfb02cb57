"""CT analysis grid and denoising before deconvolution (denoise.py, issue 15)."""

import json

import numpy as np
import pytest

from StrokeMismatchLib.denoise import (analysis_factors, baseline_noise_sd, block_geometry,
                                       block_mask, block_mean, denoise_concentration,
                                       to_analysis_grid, upsample_to_grid)
from StrokeMismatchLib.errors import InputDataError
from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.phantom import make_volume_phantom
from StrokeMismatchLib.pipeline import CaseSettings, run_case
from StrokeMismatchLib.series import PerfusionSeries


@pytest.mark.parametrize("spacing, resolution, expected", [
    ((0.45, 0.45, 5.0), 2.0, (4, 4)), ((0.9, 0.9, 5.0), 2.0, (2, 2)),
    ((1.8, 1.8, 5.0), 2.0, (1, 1)), ((0.45, 0.45, 5.0), 0.0, (1, 1)),
    ((0.5, 1.0, 5.0), 2.0, (4, 2)), ((1.0, 1.0, 5.0), 2.0, (2, 2))])
def test_analysis_factors(spacing, resolution, expected):
    assert analysis_factors(spacing, resolution) == expected


def test_block_geometry_centres_and_spacing():
    fine = Geometry.from_spacing((3, 8, 12), (0.5, 0.4, 5.0), (10.0, -4.0, 2.0))
    coarse = block_geometry(fine, (4, 2))
    assert coarse.shape == (3, 4, 3)
    assert np.allclose(coarse.spacing, (2.0, 0.8, 5.0))
    # block (k=1, j=2, i=1) is the mean of fine voxels i = 4..7, j = 4..5
    fine_centres = fine.ijk_to_ras_points(np.array([[i, j, 1] for i in range(4, 8) for j in (4, 5)]))
    assert np.allclose(coarse.ijk_to_ras_points(np.array([[1, 2, 1]]))[0], fine_centres.mean(axis=0))


def test_block_mean_mask_and_upsample():
    rng = np.random.default_rng(0)
    array = rng.normal(size=(2, 8, 9, 5)).astype(np.float32)
    out = block_mean(array, (3, 2))  # i by 3, j by 2; the 9th column... 9 % 3 == 0
    assert out.shape == (2, 4, 3, 5)
    assert np.allclose(out[1, 2, 1], array[1, 4:6, 3:6].mean(axis=(0, 1)), atol=1e-6)
    mask = np.zeros((1, 4, 4), bool)
    mask[0, :2, :2] = [[True, True], [True, False]]  # 3 of 4: in
    mask[0, 2:, 2:] = [[True, False], [False, False]]  # 1 of 4: out
    assert block_mask(mask, (2, 2)).tolist() == [[[True, False], [False, False]]]
    up = upsample_to_grid(block_mask(mask, (2, 2)), (2, 2), (1, 5, 5))
    assert up.shape == (1, 5, 5) and up[0, :2, :2].all() and up.sum() == 4


def _noisy_series(spacing=(0.45, 0.45, 5.0), shape=(2, 16, 16), sd=15.0):
    rng = np.random.default_rng(1)
    signal = (30.0 + sd * rng.standard_normal(shape + (20,))).astype(np.float32)
    return PerfusionSeries(signal, np.arange(20.0), Geometry.from_spacing(shape, spacing), "ct")


def test_to_analysis_grid_averages_noise_and_keeps_input():
    series = _noisy_series()
    before = series.signal.copy()
    coarse, info = to_analysis_grid(series, 2.0)
    assert np.array_equal(series.signal, before)  # input untouched
    assert info["applied"] and info["factors_ij"] == [4, 4]
    assert coarse.signal.shape == (2, 4, 4, 20)
    assert np.allclose(coarse.geometry.spacing, (1.8, 1.8, 5.0))
    # 16-voxel block means: noise SD ÷ 4
    assert np.std(coarse.signal) == pytest.approx(15.0 / 4, rel=0.15)
    same, info = to_analysis_grid(_noisy_series(spacing=(1.8, 1.8, 5.0)), 2.0)
    assert not info["applied"] and same.signal.shape == (2, 16, 16, 20)


def _two_region_slice(noise=3.0, seed=0):
    """One slice: tissue everywhere (peak 10 HU), an 'artery' column at i = 8 (peak 300 HU)."""
    times = np.arange(30.0)
    bolus = np.exp(-0.5 * ((times - 12.0) / 3.0) ** 2)
    truth = np.empty((1, 16, 16, 30), np.float32)
    truth[...] = 10.0 * bolus
    truth[:, :, 8] = 300.0 * bolus
    rng = np.random.default_rng(seed)
    noisy = truth + noise * rng.standard_normal(truth.shape).astype(np.float32)
    return truth, noisy


def test_tips_reduces_noise_and_keeps_vessels_apart():
    truth, noisy = _two_region_slice()
    geometry = Geometry.from_spacing((1, 16, 16), (1.8, 1.8, 5.0))
    mask = np.ones((1, 16, 16), bool)
    mask[0, 0, 0] = False
    sd = baseline_noise_sd(noisy, mask, (0, 6))
    assert sd == pytest.approx(3.0, rel=0.2)
    tips, info = denoise_concentration(noisy, geometry, mask, method="tips", sigma_mm=1.8, noise_sd=sd)
    gauss, _ = denoise_concentration(noisy, geometry, mask, method="gaussian", sigma_mm=1.8)
    assert info["applied"] and info["method"] == "tips"
    tissue = np.zeros((1, 16, 16), bool)
    tissue[0, 2:14, 2:6] = True  # away from the artery
    residual = lambda x: np.std((x - truth)[tissue][:, :6])  # noise in the baseline frames
    assert residual(tips) < 0.6 * residual(noisy)
    # tissue next to the artery: TIPS keeps its peak near 10 HU, a Gaussian mixes the artery in
    beside = (slice(None), slice(2, 14), 7)
    peak = lambda x: float(np.median(x[beside].max(axis=-1)))
    assert abs(peak(tips) - 10.0) < 4.0
    assert peak(gauss) > 30.0
    assert abs(float(np.median(tips[:, 2:14, 8].max(axis=-1))) - 300.0) < 15.0  # artery kept
    assert np.array_equal(tips[0, 0, 0], noisy[0, 0, 0])  # outside the mask untouched


def test_denoise_errors_and_off():
    _, noisy = _two_region_slice()
    geometry = Geometry.from_spacing((1, 16, 16), (1.8, 1.8, 5.0))
    mask = np.ones((1, 16, 16), bool)
    with pytest.raises(InputDataError, match="Unknown denoising"):
        denoise_concentration(noisy, geometry, mask, method="median")
    with pytest.raises(InputDataError, match="noise SD"):
        denoise_concentration(noisy, geometry, mask, method="tips", noise_sd=None)
    out, info = denoise_concentration(noisy, geometry, mask, method="none")
    assert not info["applied"] and np.array_equal(out, noisy) and out is not noisy
    with pytest.raises(InputDataError, match="denoise"):
        CaseSettings(denoise="wavelet")
    with pytest.raises(InputDataError, match="ct_analysis_resolution_mm"):
        CaseSettings(ct_analysis_resolution_mm=-1.0)


def test_run_case_ct_fine_matrix_is_analysed_at_the_analysis_resolution():
    phantom = make_volume_phantom("ct", shape=(4, 128, 128), spacing=(0.45, 0.45, 5.0),
                                  noise_hu=15.0, seed=3, times=np.arange(45.0))
    result = run_case(phantom.series, settings=CaseSettings(motion_correction=False))
    assert result.analysis_grid["applied"] and result.analysis_grid["factors_ij"] == [4, 4]
    assert result.maps.cbf.shape == (4, 32, 32) and result.geometry.shape == (4, 32, 32)
    assert phantom.series.signal.shape == (4, 128, 128, 45)  # the input is not replaced
    assert result.denoising["method"] == "tips" and result.denoising["applied"]
    assert "denoise" in result.timings_s and "analysis_grid" in result.timings_s
    summary = json.loads(json.dumps(result.summary(), allow_nan=False))
    grid = summary["analysis"]["analysis_grid"]
    assert grid["analysis_spacing_mm_ijk"][:2] == pytest.approx([1.8, 1.8])
    assert summary["analysis"]["denoising"]["method"] == "tips"
    assert summary["settings"]["denoise"] == "auto"
    # switched off: analysed as acquired, not denoised
    off = run_case(phantom.series, settings=CaseSettings(
        motion_correction=False, ct_analysis_resolution_mm=0.0, denoise="none"))
    assert off.maps.cbf.shape == (4, 128, 128)
    assert not off.analysis_grid["applied"] and off.denoising is None


def test_run_case_maps_manual_aif_voxels_to_the_analysis_grid():
    phantom = make_volume_phantom("ct", shape=(4, 64, 64), spacing=(0.9, 0.9, 5.0), noise_hu=5.0,
                                  seed=4, times=np.arange(45.0))
    voxels = np.argwhere(phantom.artery_mask)[:6]
    result = run_case(phantom.series, settings=CaseSettings(motion_correction=False, aif_voxels=voxels))
    expected = np.unique(voxels // np.array([1, 2, 2]), axis=0)
    assert np.array_equal(np.unique(result.aif.voxels, axis=0), expected)


def test_mr_is_not_resampled_or_denoised_by_default():
    phantom = make_volume_phantom("mr", shape=(4, 32, 32), spacing=(0.9, 0.9, 5.0), seed=5)
    result = run_case(phantom.series, adc=phantom.adc, adc_geometry=phantom.adc_geometry,
                      settings=CaseSettings(motion_correction=False))
    assert result.analysis_grid is None and result.denoising is None
    assert result.maps.cbf.shape == (4, 32, 32)
