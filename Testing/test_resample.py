"""Resampling between physical grids (PERFUSION.md §8): oblique grids, volumes, no overlap."""

import numpy as np
import pytest

from StrokeMismatchLib.errors import InputDataError
from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.resample import overlap_fraction, resample_array, resample_mask
from StrokeMismatchLib.thresholds import core_from_adc


def _rotation(yaw_deg, roll_deg):
    a, b = np.deg2rad(yaw_deg), np.deg2rad(roll_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _grid(shape, spacing, rotation=np.eye(3), centre=(3.0, -5.0, 10.0)):
    """Grid of ``shape`` (K, J, I) with ``spacing`` (i, j, k) mm, rotated, centred on ``centre``."""
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([-spacing[0], -spacing[1], spacing[2]])
    half = (np.array(shape[::-1], dtype=float) - 1) / 2
    matrix[:3, 3] = np.asarray(centre) - matrix[:3, :3] @ half
    return Geometry(matrix, shape)


def _ras(geometry):
    k, j, i = np.indices(geometry.shape, dtype=float)
    return geometry.ijk_to_ras_points(np.stack([i, j, k], axis=-1))


LESION_CENTRE = np.array([20.0, 10.0, 12.0])


def _adc_on(geometry):
    """ADC (NaN outside the brain, as adc_to_micro returns it): brain ellipsoid 800,
    spherical lesion r = 22 mm at 440 (620 = midpoint)."""
    ras = _ras(geometry)
    brain = (((ras - [3.0, -5.0, 10.0]) / [70.0, 85.0, 60.0]) ** 2).sum(-1) < 1
    lesion = np.linalg.norm(ras - LESION_CENTRE, axis=-1) < 22.0
    return np.where(brain, np.where(lesion, 440.0, 800.0), np.nan)


def test_oblique_adc_grid_preserves_core_volume():
    adc_geometry = _grid((40, 110, 100), (1.6, 1.7, 3.5), _rotation(25.0, 12.0))
    perfusion = _grid((24, 96, 96), (2.1, 2.1, 5.0))
    adc = _adc_on(adc_geometry)
    true_ml = 4 / 3 * np.pi * 22.0 ** 3 / 1000
    native = core_from_adc(adc).sum() * adc_geometry.voxel_volume_ml
    resampled = resample_array(adc, adc_geometry, perfusion)
    moved = core_from_adc(resampled).sum() * perfusion.voxel_volume_ml
    assert native == pytest.approx(true_ml, rel=0.02)
    assert moved == pytest.approx(native, rel=0.02)
    # the lesion lands where it is in space (centroid within a voxel)
    ras = _ras(perfusion)[core_from_adc(resampled)]
    assert np.linalg.norm(ras.mean(0) - LESION_CENTRE) < 2.0
    # masks by nearest neighbour, also volume preserving
    mask = resample_mask(core_from_adc(adc), adc_geometry, perfusion)
    assert mask.dtype == bool
    assert mask.sum() * perfusion.voxel_volume_ml == pytest.approx(native, rel=0.02)


def test_identity_grid_returns_same_values_and_input_untouched():
    g = _grid((6, 10, 12), (2.0, 2.0, 4.0))
    values = np.random.default_rng(1).normal(size=g.shape)
    values[0, 0, :3] = np.nan
    before = values.copy()
    out = resample_array(values, g, g)
    np.testing.assert_array_equal(values, before)
    finite = np.isfinite(values)
    np.testing.assert_allclose(out[finite], values[finite], atol=1e-9)


def test_nan_aware_linear_interpolation_does_not_spread_nan():
    g = _grid((4, 10, 10), (2.0, 2.0, 2.0))
    shifted = Geometry(g.ijk_to_ras @ np.array(
        [[1, 0, 0, 0.5], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]), g.shape)
    values = np.full(g.shape, 5.0)
    values[:, :, 0] = np.nan
    out = resample_array(values, g, shifted)
    # half-voxel shift: only the column that would need data beyond the grid is missing
    assert np.isfinite(out[:, :, :-1]).all()
    np.testing.assert_allclose(out[:, :, :-1], 5.0)


def test_no_overlap_is_a_clear_error():
    a = _grid((4, 8, 8), (2.0, 2.0, 2.0), centre=(0.0, 0.0, 0.0))
    b = _grid((4, 8, 8), (2.0, 2.0, 2.0), centre=(500.0, 0.0, 0.0))
    assert overlap_fraction(a, b) == 0.0
    with pytest.raises(InputDataError, match="do not overlap"):
        resample_array(np.ones(a.shape), a, b)
    c = _grid((4, 8, 8), (2.0, 2.0, 2.0), centre=(8.0, 0.0, 0.0))
    assert 0.0 < overlap_fraction(a, c) < 1.0


def test_shape_mismatch_and_bad_interpolation():
    g = _grid((4, 8, 8), (2.0, 2.0, 2.0))
    with pytest.raises(InputDataError):
        resample_array(np.ones((3, 8, 8)), g, g)
    with pytest.raises(InputDataError, match="interpolation"):
        resample_array(np.ones(g.shape), g, g, interpolation="cubic")
