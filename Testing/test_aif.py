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


# --- issue 20: an AIF must be an artery, or there is none -------------------------------------
def test_automatic_aif_in_an_artery_passes_the_artery_rules():
    conc, artery, _, _ = small_volume()
    result = select_aif(conc, TIMES, modality="mr")
    assert result.artery["found"] is True and result.artery["reason"] == ""
    assert result.artery["gated_candidates"] >= 4
    names = {c["name"] for c in result.artery["checks"]}
    assert {"peak_to_noise", "peak_vs_tissue", "arrival_s", "time_to_peak_s", "returns_toward_baseline"} <= names
    assert all(c["passed"] for c in result.artery["checks"])
    assert np.all(artery[tuple(result.voxels.T)])


def test_no_artery_in_the_slab_is_said_not_hidden():
    """Clustering always returns something: without an artery it used to return tissue with no
    word of doubt. Now the result says 'no artery found' and why."""
    conc, artery, _, _ = small_volume()
    mask = np.ones(SHAPE, bool)
    mask[:, 3:5, 3:5] = False  # the slab holds no artery
    result = select_aif(conc, TIMES, mask=mask, modality="mr")
    assert result.artery["found"] is False
    assert "no artery found" in result.artery["reason"]
    assert not np.any(artery[tuple(result.voxels.T)])
    # gate=False keeps the old selection but still checks the curve it returns
    ungated = select_aif(conc, TIMES, mask=mask, modality="mr", gate=False)
    assert ungated.artery["found"] is False and "fails" in ungated.artery["reason"]


def test_manual_aif_gets_the_same_checks():
    conc, artery, vein, _ = small_volume()
    good = select_aif(conc, TIMES, manual_mask=artery, modality="mr")
    assert good.method == "manual" and good.artery["found"] is True
    tissue = select_aif(conc, TIMES, voxels=[[1, 8, 8], [1, 8, 9]], modality="mr")
    assert tissue.artery["found"] is False
    failed = {c["name"] for c in tissue.artery["checks"] if c["passed"] is False}
    assert "peak_vs_tissue" in failed
    late = select_aif(conc, TIMES, manual_mask=vein, modality="mr")
    assert late.artery["found"] is False
    assert "time_to_peak_s" in {c["name"] for c in late.artery["checks"] if c["passed"] is False}


def test_ct_candidates_need_a_blood_like_baseline():
    """A partial-volume skull edge that moved reaches arterial HU changes; its baseline is bone."""
    conc, artery, _, cs = small_volume()
    conc = conc * 400.0  # HU (noise 4 HU)
    baseline = np.full(SHAPE, 35.0)
    baseline[artery] = 40.0
    found = select_aif(conc, TIMES, modality="ct", baseline_image=baseline)
    assert found.artery["found"] is True and np.all(artery[tuple(found.voxels.T)])
    check = next(c for c in found.artery["checks"] if c["name"] == "blood_like_baseline_hu")
    assert check["value"] == pytest.approx(40.0) and check["passed"] is True
    bone = baseline.copy()
    bone[artery] = 400.0
    rejected = select_aif(conc, TIMES, modality="ct", baseline_image=bone)
    assert rejected.artery["found"] is False and "no artery found" in rejected.artery["reason"]
    csf = baseline.copy()
    csf[artery] = 8.0
    assert select_aif(conc, TIMES, modality="ct", baseline_image=csf).artery["found"] is False


def test_a_step_that_stays_up_is_not_an_artery():
    """Motion at a bone edge gives a step, not a bolus: the return-toward-baseline rule."""
    from StrokeMismatchLib.aif import artery_checks

    tissue = gamma_variate_aif(TIMES, t0=22.0, b=2.5, peak=0.1)
    step = np.where(TIMES >= 20.0, 1.0, 0.0)
    checks = {c["name"]: c for c in artery_checks(step, TIMES, tissue_curve=tissue, modality="mr",
                                                  voxel_noise_sd=0.01)}
    assert checks["returns_toward_baseline"]["passed"] is False
    bolus = gamma_variate_aif(TIMES, peak=1.0)
    ok = artery_checks(bolus, TIMES, tissue_curve=tissue, modality="mr", voxel_noise_sd=0.01)
    assert all(c["passed"] for c in ok)
