"""Brain-like volume phantom (phantom/volume.py): shapes, truth, lesion placement, signal model."""

import numpy as np
import pytest

from StrokeMismatchLib.errors import InputDataError
from StrokeMismatchLib.phantom import make_volume_phantom
from StrokeMismatchLib.phantom.volume import CSF, GM, WM, ZONES
from StrokeMismatchLib.series import PerfusionSeries


@pytest.fixture(scope="module")
def mr():
    return make_volume_phantom("mr", seed=1)


@pytest.fixture(scope="module")
def mr_clean():
    return make_volume_phantom("mr", snr=None, adc_noise=0)


@pytest.fixture(scope="module")
def ct():
    return make_volume_phantom("ct", seed=2)


def test_shapes_types_and_frames(mr, ct):
    for phantom, n_frames in ((mr, 60), (ct, 60)):
        series = phantom.series
        assert isinstance(series, PerfusionSeries)
        assert series.signal.dtype == np.float32
        assert series.signal.shape == phantom.geometry.shape + (n_frames,)
        assert series.source == "phantom"
        for array in (phantom.labels, phantom.brain_mask, phantom.artery_mask, phantom.true_core,
                      phantom.true_hypoperfusion, *phantom.true_maps.values()):
            assert array.shape == phantom.geometry.shape
        assert phantom.true_aif.shape == series.times.shape
        assert np.all(np.diff(series.times) > 0)
        # Bolus arrives around 15–20 s with at least 5 baseline frames.
        assert np.sum(series.times < 15.0) >= 5
        first = series.times[np.argmax(phantom.true_aif > 0)]
        assert 15.0 <= first <= 20.0
    assert mr.series.modality == "mr" and mr.series.te == pytest.approx(0.03)
    assert mr.series.tr == pytest.approx(1.5)
    assert ct.series.modality == "ct" and ct.series.te is None
    assert np.allclose(np.diff(ct.series.times), 1.0)
    assert np.allclose(mr.geometry.spacing, (1.8, 1.8, 5.0))


def test_variable_rate_ct():
    phantom = make_volume_phantom("ct", variable_rate=True, noise_hu=0)
    steps = np.diff(phantom.times)
    assert steps.min() == pytest.approx(1.0) and steps.max() >= 2.0
    assert phantom.series.signal.shape[-1] == phantom.times.size


def test_seed_reproducible_and_different():
    a = make_volume_phantom("mr", seed=5)
    b = make_volume_phantom("mr", seed=5)
    c = make_volume_phantom("mr", seed=6)
    assert np.array_equal(a.series.signal, b.series.signal)
    assert np.array_equal(a.adc, b.adc)
    assert not np.array_equal(a.series.signal, c.series.signal)


def test_adc_on_its_own_grid(mr):
    assert mr.adc is not None and mr.adc_geometry is not None
    assert mr.adc.shape == mr.adc_geometry.shape
    assert not mr.adc_geometry.same_grid(mr.geometry)
    assert mr.adc_geometry.spacing[0] < mr.geometry.spacing[0]
    assert mr.adc_geometry.spacing[2] == pytest.approx(4.0)
    assert not np.allclose(mr.adc_geometry.ijk_to_ras[:3, 3], mr.geometry.ijk_to_ras[:3, 3])


def test_adc_values_and_units(mr_clean):
    adc = mr_clean.adc
    values = set(np.unique(adc[adc > 0]).round().tolist())
    assert {800.0, 750.0, 3000.0, 500.0} <= values
    # The low-ADC (core) voxels of the ADC grid lie at the core's position on the perfusion grid.
    core_ras = mr_clean.adc_geometry.ijk_to_ras_points(np.argwhere(adc == 500.0)[:, ::-1])
    core_ijk = np.round(mr_clean.geometry.ras_to_ijk_points(core_ras)).astype(int)
    inside = np.all((core_ijk >= 0) & (core_ijk < np.array(mr_clean.geometry.shape[::-1])), axis=1)
    hits = mr_clean.true_core[core_ijk[inside, 2], core_ijk[inside, 1], core_ijk[inside, 0]]
    assert hits.mean() > 0.8
    milli = make_volume_phantom("mr", snr=None, adc_noise=0, adc_unit="1e-3")
    si = make_volume_phantom("mr", snr=None, adc_noise=0, adc_unit="mm2/s")
    assert np.allclose(milli.adc, adc * 1e-3, rtol=1e-6)
    assert np.allclose(si.adc, adc * 1e-6, rtol=1e-6)
    assert milli.adc_unit == "1e-3"
    assert make_volume_phantom("ct").adc is None


def test_true_masks_consistent_with_maps(mr):
    maps = mr.true_maps
    tissue = (mr.labels == GM) | (mr.labels == WM)
    assert np.array_equal(mr.true_hypoperfusion, np.nan_to_num(maps["tmax"], nan=0) > 6.0)
    assert np.all(mr.true_hypoperfusion[mr.true_core])  # the core is inside Tmax > 6 s
    assert np.all(tissue[mr.true_core])
    # Core CBF ≤ 15 % of normal for its tissue class, hypoperfused 70–90 %.
    for label in (GM, WM):
        normal = np.nanmax(maps["cbf"][(mr.labels == label) & (mr.zones == 0)])
        core = maps["cbf"][mr.true_core & (mr.labels == label)]
        assert core.size and np.all(core <= 0.15 * normal)
        penumbra = maps["cbf"][mr.true_hypoperfusion & ~mr.true_core & (mr.labels == label)]
        assert penumbra.size and np.all((penumbra >= 0.7 * normal) & (penumbra <= 0.9 * normal))
    # The oligemic rim has Tmax ≈ 3 s and is not counted as hypoperfused.
    oligemia = tissue & (mr.zones == 1)
    assert oligemia.sum() > 0
    assert np.all((maps["tmax"][oligemia] >= 2.5) & (maps["tmax"][oligemia] <= 4))
    assert not np.any(mr.true_hypoperfusion[oligemia])
    # CBV = CBF · MTT / 60; maps NaN outside the brain, zero CBF/CBV in CSF.
    assert np.allclose(maps["cbv"][tissue], maps["cbf"][tissue] * maps["mtt"][tissue] / 60, rtol=1e-5)
    assert np.all(np.isnan(maps["cbf"][~mr.brain_mask]))
    assert np.all(maps["cbf"][mr.labels == CSF] == 0)
    # Volumes: large enough for a target mismatch.
    volumes = mr.volumes_ml
    assert volumes["core_ml"] == pytest.approx(mr.true_core.sum() * mr.geometry.voxel_volume_ml)
    assert 10 <= volumes["core_ml"] <= 40
    assert 50 <= volumes["hypoperfusion_ml"] <= 130
    assert volumes["hypoperfusion_ml"] / volumes["core_ml"] >= 1.8
    assert volumes["penumbra_ml"] >= 15


@pytest.mark.parametrize("side", ["left", "right"])
def test_lesion_on_stated_side(side):
    phantom = make_volume_phantom("ct", lesion_side=side, noise_hu=0)
    assert phantom.lesion_side == side
    ras = phantom.geometry.ijk_to_ras_points(np.argwhere(phantom.true_hypoperfusion)[:, ::-1])
    x = ras[:, 0]  # RAS: x < 0 is the patient's left
    assert np.all(x < 0) if side == "left" else np.all(x > 0)
    artery_x = phantom.geometry.ijk_to_ras_points(np.argwhere(phantom.artery_mask)[:, ::-1])[:, 0]
    assert np.all(np.sign(artery_x) == -np.sign(x.mean()))  # artery on the unaffected side


def test_no_lesion():
    phantom = make_volume_phantom("mr", lesion=False)
    assert phantom.lesion_side is None
    assert not phantom.true_core.any() and not phantom.true_hypoperfusion.any()
    assert np.all(phantom.zones == 0)
    assert np.nanmax(phantom.true_maps["tmax"]) < 1.0
    assert not np.any(phantom.adc[(phantom.adc > 0) & (phantom.adc < 600)])


def test_artery_peaks_earliest_and_vein_later(mr_clean):
    signal = mr_clean.series.signal
    times = mr_clean.times
    artery_ttp = times[np.argmin(signal[mr_clean.artery_mask].mean(axis=0))]
    tissue = (mr_clean.labels == GM) | (mr_clean.labels == WM)
    tissue_ttp = times[np.argmin(signal[tissue], axis=1)]
    assert artery_ttp < tissue_ttp.min()
    vein_ttp = times[np.argmin(signal[mr_clean.vein_mask].mean(axis=0))]
    assert vein_ttp > artery_ttp
    # The vein's curve has a larger area than the AIF (partial-volume-free venous output).
    assert mr_clean.true_vof.sum() > mr_clean.true_aif.sum()
    assert mr_clean.artery_mask.sum() >= 4 and mr_clean.vein_mask.sum() >= 4


def test_mr_signal_drops_noise_free(mr_clean):
    signal = mr_clean.series.signal.astype(float)
    drop = 1 - signal.min(axis=-1) / np.where(signal[..., 0] > 0, signal[..., 0], np.inf)
    normal_gm = (mr_clean.labels == GM) & (mr_clean.zones == 0)
    assert np.allclose(drop[normal_gm], 0.40, atol=0.01)
    assert np.allclose(drop[mr_clean.artery_mask], 0.60, atol=0.02)  # sampled peak ≤ true peak
    assert np.all(drop[mr_clean.labels == CSF] < 1e-6)
    info = mr_clean.info
    assert mr_clean.mr_scale == pytest.approx(info["kappa_t"] / info["kappa_a"])
    assert 10 < mr_clean.mr_scale < 40  # ≈ 22 for this AIF (PERFUSION.md §11.3)
    # Tissue concentration recovered from the signal with κ_t equals the painted truth.
    concentration = -np.log(signal[normal_gm][0] / signal[normal_gm][0, 0]) / (info["kappa_t"] * 0.03)
    assert concentration.sum() * 1.5 / (mr_clean.true_aif.sum() * 1.5) == pytest.approx(0.04, rel=0.03)


def test_mr_noise_level(mr):
    baseline = mr.series.signal[..., :8].astype(float)
    gm = (mr.labels == GM) & (mr.zones == 0)
    sd = baseline[gm].std(axis=-1, ddof=1).mean()
    assert sd == pytest.approx(1000 / 20, rel=0.1)


def test_ct_values(ct):
    clean = make_volume_phantom("ct", noise_hu=0)
    signal = clean.series.signal
    gm = (clean.labels == GM) & (clean.zones == 0)
    assert np.allclose(signal[gm][:, 0], 38.0)
    assert signal[clean.artery_mask].max() == pytest.approx(40.0 + clean.true_aif.max(), abs=0.01)
    assert 0.95 * 400 < clean.true_aif.max() <= 400.0  # 400 HU peak, sampled at 1 s
    assert 8 < (signal[gm].max(axis=-1) - 38).mean() < 13  # GM peaks ≈ 10 HU (PERFUSION.md §11.3)
    noise = (ct.series.signal[gm][:, :8] - signal[gm][:, :8]).std()
    assert noise == pytest.approx(3.0, rel=0.1)


def test_scale_for_benchmarks():
    big = make_volume_phantom("ct", scale=1.5, noise_hu=0)
    assert big.geometry.shape == (16, 96, 96)
    small = make_volume_phantom("ct", noise_hu=0)
    assert big.volumes_ml["brain_ml"] == pytest.approx(small.volumes_ml["brain_ml"], rel=0.05)
    assert big.volumes_ml["core_ml"] == pytest.approx(small.volumes_ml["core_ml"], rel=0.1)


def test_truth_matches_zone_parameters(mr):
    gm_core = mr.true_core & (mr.labels == GM)
    assert np.allclose(mr.true_maps["cbf"][gm_core], 60 * ZONES[3]["cbf"])
    assert np.all(mr.true_maps["tmax"][gm_core] >= ZONES[3]["delay"])


def test_bad_arguments():
    with pytest.raises(InputDataError):
        make_volume_phantom("pet")
    with pytest.raises(InputDataError):
        make_volume_phantom("mr", lesion_side="up")
    with pytest.raises(InputDataError):
        make_volume_phantom("mr", adc_unit="cm2/s")


def test_truth_agrees_with_clinical_definitions_with_margins(mr):
    """Core rCBF (÷ the healthy mean CBF) clearly < 0.30, penumbra clearly > 0.30; the
    oligemic rim's true Tmax ≥ 2.5 s below 6 s (oSVD reads Tmax 1.3–2.1 s high)."""
    maps = mr.true_maps
    tissue = (mr.labels == GM) | (mr.labels == WM)
    reference = float(np.mean(maps["cbf"][tissue & (mr.zones == 0)]))
    rcbf = maps["cbf"] / reference
    assert np.all(rcbf[mr.true_core] < 0.2)
    penumbra = mr.true_hypoperfusion & ~mr.true_core
    assert np.all(rcbf[penumbra] > 0.4)
    oligemia = tissue & (mr.zones == 1)
    assert oligemia.any() and np.all(maps["tmax"][oligemia] <= 3.5)
    assert np.all(maps["tmax"][penumbra] >= 7.5)


def test_vessels_are_defined_in_mm_not_voxels():
    """Issue 15: the artery is a 1.9 mm-radius tube at any resolution (2 × 2 voxels at 1.8 mm,
    ≈ π·1.9² / 0.45² ≈ 56 voxels per slice at 0.45 mm), so its share of the brain does not
    grow as the matrix coarsens."""
    coarse = make_volume_phantom("ct", shape=(2, 64, 64), noise_hu=0, times=np.arange(30.0))
    fine = make_volume_phantom("ct", shape=(2, 256, 256), spacing=(0.45, 0.45, 5.0), noise_hu=0,
                               times=np.arange(30.0))
    assert coarse.artery_mask[0].sum() == 4
    area_fine = fine.artery_mask[0].sum() * 0.45 ** 2
    assert area_fine == pytest.approx(np.pi * 1.9 ** 2, rel=0.1)
    thick = make_volume_phantom("ct", shape=(2, 256, 256), spacing=(0.45, 0.45, 5.0), noise_hu=0,
                                times=np.arange(30.0), vessel_radius_mm=3.0)
    assert thick.artery_mask[0].sum() * 0.45 ** 2 == pytest.approx(np.pi * 9.0, rel=0.1)
    with pytest.raises(InputDataError):
        make_volume_phantom("ct", vessel_radius_mm=0.0)


def test_brain_size_in_mm_and_core_scale():
    small = make_volume_phantom("ct", shape=(16, 128, 128), spacing=(1.8, 1.8, 5.0), noise_hu=0,
                                times=np.arange(30.0), brain_radii_mm=(68, 84, 60), core_scale=0.52)
    large = make_volume_phantom("ct", shape=(16, 128, 128), spacing=(1.8, 1.8, 5.0), noise_hu=0,
                                times=np.arange(30.0), brain_radii_mm=(68, 84, 60), core_scale=1.04)
    assert small.info["brain_radii_mm"] == [68.0, 84.0, 60.0]
    # adult-sized brain: ≈ 136 mm wide
    width_mm = small.brain_mask[8].any(axis=0).sum() * 1.8
    assert 125 <= width_mm <= 140
    assert 7.0 <= small.volumes_ml["core_ml"] <= 13.0
    assert 70.0 <= large.volumes_ml["core_ml"] <= 95.0
    assert small.volumes_ml["hypoperfusion_ml"] == pytest.approx(large.volumes_ml["hypoperfusion_ml"])


def test_clinical_ct_noise_and_memory_light_float32():
    phantom = make_volume_phantom("ct", shape=(2, 128, 128), spacing=(0.45, 0.45, 5.0), noise_hu=15.0,
                                  times=np.arange(30.0), seed=9)
    signal = phantom.series.signal
    assert signal.dtype == np.float32
    wm = phantom.labels == WM
    baseline = signal[wm][:, :10]
    assert baseline.std() == pytest.approx(15.0, rel=0.05)
    assert baseline.mean() == pytest.approx(30.0, abs=0.5)
