"""AIF selection: automatic (Mouridsen 2006), manual, quality figures (PERFUSION.md §3)."""

import numpy as np
import pytest

from StrokeMismatchLib.errors import InputDataError
from StrokeMismatchLib.perfusion import compute_maps, select_aif, signal_to_concentration, voxels_around
from StrokeMismatchLib.phantom import add_gaussian_noise, gamma_variate_aif, simulate_curves

TIMES = np.arange(0.0, 90.0, 1.0)
SHAPE = (4, 16, 16)


def small_volume(seed=0, noise=0.01):
    """Tissue (GM/WM, some delayed), a 2×2 artery column and a late, larger vein column."""
    rng = np.random.default_rng(seed)
    kk, jj, ii = np.indices(SHAPE)
    grey = (ii + jj) % 2 == 0
    late = ii > 10
    # four distinct curves (GM/WM × delay 0/3 s), painted into the volume
    cs = simulate_curves(np.array([[25.0], [60.0]]), np.array([[5.0], [4.0]]), delay=np.array([[0.0, 3.0]]), times=TIMES)
    conc = cs.tissue[grey.astype(int), late.astype(int)]
    artery = np.zeros(SHAPE, bool)
    artery[:, 3:5, 3:5] = True
    vein = np.zeros(SHAPE, bool)
    vein[:, 12:14, 7:9] = True
    conc[artery] = 0.8 * cs.aif  # partial volume
    conc[vein] = gamma_variate_aif(TIMES, t0=25.0, b=2.2, peak=0.9)
    conc = add_gaussian_noise(conc, noise, rng)
    return conc, artery, vein, cs


def test_automatic_aif_finds_the_artery_and_is_deterministic():
    conc, artery, vein, cs = small_volume()
    first = select_aif(conc, TIMES)
    second = select_aif(conc.copy(), TIMES)
    assert first.method == "automatic"
    np.testing.assert_array_equal(first.voxels, second.voxels)
    np.testing.assert_array_equal(first.curve, second.curve)
    assert first.voxels.shape[1] == 3 and len(first.voxels) >= 2
    assert np.all(artery[tuple(first.voxels.T)])
    assert not np.any(vein[tuple(first.voxels.T)])
    np.testing.assert_allclose(first.curve, 0.8 * cs.aif, atol=0.03)
    q = first.quality
    assert q["n_voxels"] == len(first.voxels)
    assert q["time_to_peak_s"] == pytest.approx(24.0, abs=1.01)
    assert q["returns_to_baseline"] is True
    assert 0.003 < q["noise_sd"] < 0.03  # single-voxel noise SD 0.01


def test_area_normalised_clustering_also_finds_the_artery():
    conc, artery, _, _ = small_volume(seed=4)
    result = select_aif(conc, TIMES, normalize=True)
    assert np.all(artery[tuple(result.voxels.T)])


def test_mask_restricts_the_search():
    conc, artery, _, _ = small_volume()
    mask = np.ones(SHAPE, bool)
    mask[:, 3:5, 3:5] = False  # hide the artery
    result = select_aif(conc, TIMES, mask=mask)
    assert not np.any(artery[tuple(result.voxels.T)])
    with pytest.raises(InputDataError, match="empty"):
        select_aif(conc, TIMES, mask=np.zeros(SHAPE, bool))


def test_quality_figures_of_a_known_curve():
    times = np.arange(0.0, 80.0, 0.25)
    aif = gamma_variate_aif(times, peak=2.0)
    conc = np.tile(aif, (3, 1))
    result = select_aif(conc, times, voxels=[[0], [1], [2]])
    fine = np.arange(20.0, 40.0, 1e-4)
    above = fine[gamma_variate_aif(fine) >= 0.5]
    q = result.quality
    assert result.method == "manual"
    assert q["peak_height"] == pytest.approx(2.0, rel=1e-3)
    assert q["time_to_peak_s"] == pytest.approx(24.5, abs=0.13)
    assert q["fwhm_s"] == pytest.approx(above[-1] - above[0], abs=0.02)
    assert q["auc"] == pytest.approx(2.0 * 30.375 / (4.5**3 * np.exp(-3)), rel=1e-3)
    assert q["first_moment_s"] == pytest.approx(26.0, abs=0.05)  # t0 + (r+1)·b
    assert q["returns_to_baseline"] and not result.warnings


def test_truncated_aif_is_flagged():
    times = np.arange(0.0, 26.0, 1.0)
    conc = np.tile(gamma_variate_aif(times), (3, 1))
    result = select_aif(conc, times, voxels=[[0], [1], [2]])
    assert result.quality["returns_to_baseline"] is False
    assert any("truncated" in w for w in result.warnings)


def test_manual_voxels_and_mask_agree():
    conc, artery, _, cs = small_volume()
    by_mask = select_aif(conc, TIMES, manual_mask=artery)
    by_voxels = select_aif(conc, TIMES, voxels=np.argwhere(artery))
    np.testing.assert_array_equal(by_mask.curve, by_voxels.curve)
    assert by_mask.quality["n_voxels"] == artery.sum()
    vein_pick = select_aif(conc, TIMES, voxels=[[0, 12, 7]])
    assert any("later than the average tissue" in w for w in vein_pick.warnings)
    with pytest.raises(InputDataError, match="outside"):
        select_aif(conc, TIMES, voxels=[[0, 99, 0]])
    around = voxels_around((1, 3, 4), SHAPE)
    assert len(around) == 9 and np.all(around[:, 0] == 1)
    assert len(voxels_around((0, 0, 0), SHAPE)) == 4


@pytest.mark.parametrize("seed", [0, 1])
def test_automatic_aif_on_volume_phantom_at_snr_20(seed):
    from StrokeMismatchLib.phantom import volume
    ph = volume.make_volume_phantom("mr", snr=20.0, seed=seed)
    s = ph.series
    conc = signal_to_concentration(s.signal, s.times, modality="mr", te=s.te, mask=ph.brain_mask)
    aif = select_aif(conc, s.times, mask=ph.brain_mask, signal=s.signal)
    in_artery = ph.artery_mask[tuple(aif.voxels.T)]
    assert in_artery.mean() >= 0.8 and in_artery.sum() >= 5
    # reference: the true AIF in ΔR2* units (κ_a · C)
    true_aif = ph.true_aif * ph.info["kappa_a"]
    auto = compute_maps(conc, aif, s.times, mask=ph.brain_mask)
    ref = compute_maps(conc, true_aif, s.times, mask=ph.brain_mask)
    tissue = ph.brain_mask & np.isin(ph.labels, [1, 2])
    ratio = np.median(auto.cbf[tissue]) / np.median(ref.cbf[tissue])
    assert abs(ratio - 1) <= 0.10, ratio


def test_automatic_aif_on_ct_volume_phantom():
    from StrokeMismatchLib.phantom import volume
    ph = volume.make_volume_phantom("ct", seed=0)
    s = ph.series
    conc = signal_to_concentration(s.signal, s.times, modality="ct", mask=ph.brain_mask)
    aif = select_aif(conc, s.times, mask=ph.brain_mask)
    assert ph.artery_mask[tuple(aif.voxels.T)].mean() >= 0.8
    assert aif.quality["peak_height"] == pytest.approx(ph.true_aif.max(), rel=0.15)
