"""Automatic brain masks on the volume phantom (MR and CT, with scalp and table for CT)."""

import numpy as np
import pytest

from StrokeMismatchLib.brainmask import auto_brain_mask
from StrokeMismatchLib.errors import InputDataError
from StrokeMismatchLib.phantom.volume import make_volume_phantom


def _dice(a, b):
    return 2.0 * np.sum(a & b) / (np.sum(a) + np.sum(b))


@pytest.mark.parametrize("modality", ["mr", "ct"])
def test_phantom_brain_mask(modality):
    phantom = make_volume_phantom(modality, seed=2)
    baseline = phantom.series.signal[..., 2:8].mean(axis=-1)
    before = baseline.copy()
    mask = auto_brain_mask(baseline, phantom.geometry, modality=modality)
    assert mask.dtype == bool and mask.shape == phantom.geometry.shape
    assert _dice(mask, phantom.brain_mask) > 0.95
    np.testing.assert_array_equal(baseline, before)


def test_ct_scalp_and_table_are_removed():
    phantom = make_volume_phantom("ct", seed=3, lesion=False)
    baseline = phantom.series.signal[..., 0].astype(float)
    skull = baseline > 500
    # Scalp: a 40 HU soft-tissue layer just outside the skull, 2 voxels thick.
    grown = skull.copy()
    for _ in range(2):
        grown = grown | np.roll(grown, 1, 1) | np.roll(grown, -1, 1) | np.roll(grown, 1, 2) | np.roll(grown, -1, 2)
    outside = grown & ~skull & (baseline < -500)
    filled = np.zeros_like(skull)
    for k in range(skull.shape[0]):  # voxels enclosed by the skull in each slice
        rows = np.where(skull[k].any(axis=1))[0]
        for j in rows:
            cols = np.where(skull[k, j])[0]
            filled[k, j, cols.min():cols.max() + 1] = True
    scalp = outside & ~filled
    baseline[scalp] = 40.0
    # Table: a 30 HU slab in the air along the posterior edge of every slice.
    table = np.zeros_like(skull)
    table[:, -3:, 5:-5] = True
    table &= baseline < -500
    baseline[table] = 30.0
    mask = auto_brain_mask(baseline, phantom.geometry, modality="ct")
    assert not np.any(mask & scalp)
    assert not np.any(mask & table)
    assert _dice(mask, phantom.brain_mask) > 0.95


def test_failures_are_clear():
    phantom = make_volume_phantom("mr", seed=0, lesion=False)
    with pytest.raises(InputDataError, match="does not match"):
        auto_brain_mask(np.ones((2, 2, 2)), phantom.geometry, modality="mr")
    with pytest.raises(InputDataError, match="no finite"):
        auto_brain_mask(np.full(phantom.geometry.shape, np.nan), phantom.geometry, modality="mr")
    with pytest.raises(InputDataError, match="--mask"):
        auto_brain_mask(np.full(phantom.geometry.shape, -1000.0), phantom.geometry, modality="ct")
