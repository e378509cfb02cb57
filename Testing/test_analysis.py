"""analyze_lesion / metrics_from_masks end to end on synthetic maps with known volumes, and on
the volume phantom's true maps."""

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import pytest

from StrokeMismatchLib import DISCLAIMER
from StrokeMismatchLib.analysis import LesionSettings as _LesionSettings
from StrokeMismatchLib.analysis import analyze_lesion as _analyze_lesion
from StrokeMismatchLib.analysis import metrics_from_masks
from StrokeMismatchLib.errors import InputDataError
from StrokeMismatchLib.geometry import Geometry

# Anisotropic voxels 2.0 × 2.5 × 6.0 mm = 30 mm³ = 0.03 mL. i runs towards patient left.
SHAPE = (8, 40, 41)
GEOMETRY = Geometry.from_spacing(SHAPE, (2.0, 2.5, 6.0), origin_ras=(40.0 + 3.7, 48.0, -20.0))
VOXEL_ML = 0.03
STEP_NAMES = ["tmax_median_filter", "cbf_smoothing", "brain_mask", "csf_exclusion",
              "vessel_exclusion", "hemisphere_restriction", "fill_holes", "morphological_opening",
              "core_within_hypoperfusion", "minimum_cluster_size"]
#: The synthetic maps below are noise-free blocks with exact voxel counts: these tests check the
#: thresholds and the CSF/vessel/hemisphere/cluster steps with the noise-oriented steps
#: (Tmax median, CBF smoothing, opening, hole filling) switched off; those have their own tests.
RAW_STEPS = dict(tmax_median_filter=False, cbf_smoothing_fwhm_mm=0.0, opening=False,
                 fill_holes=False)


def LesionSettings(**changes):  # noqa: N802 (stands in for the class in this module's tests)
    return _LesionSettings(**{**RAW_STEPS, **changes})


def analyze_lesion(*args, settings=None, **kwargs):
    return _analyze_lesion(*args, settings=settings or LesionSettings(), **kwargs)


def step(result, name):
    return next(s for s in result.steps if s.name == name)


def _ras():
    k, j, i = np.indices(SHAPE, dtype=float)
    return GEOMETRY.ijk_to_ras_points(np.stack([i, j, k], -1))


def synthetic(side="left"):
    """Symmetric brain (midline at x = 3.7 mm), CBF 50 / Tmax 2 s, with on the lesion side:
    - a hypoperfused block (Tmax 8 s) whose voxels have rCBF exactly 0.30 (CBF 15.0: not core)
      or 0.299 (CBF 14.95: core), plus a row at Tmax 6.01 s (hypoperfused, touching the block)
      and beyond it one at exactly 6.00 s (not hypoperfused);
    - a 4-voxel CSF pocket (baseline 8 HU) inside the block;
    a 3-voxel Tmax 9 s speck on the other side (0.09 mL) and a 1-voxel core speck.
    Returns maps, baseline (HU), expected voxel sets."""
    ras = _ras()
    x = ras[..., 0] - 3.7
    brain = (x / 36) ** 2 + ((ras[..., 1] - 0.0) / 45) ** 2 + ((ras[..., 2] - 1.0) / 22) ** 2 < 1
    sign = 1 if side == "right" else -1
    cbf = np.where(brain, 50.0, np.nan)
    tmax = np.where(brain, 2.0, np.nan)
    cbv = np.where(brain, 4.0, np.nan)
    baseline = np.where(brain, 35.0, 1000.0)
    lesion_i = slice(6, 12) if side == "right" else slice(29, 35)   # x ≈ +24 … +14 / −14 … −24
    block = np.zeros(SHAPE, bool)
    block[2:6, 14:26, lesion_i] = True
    assert (brain[block]).all() and (sign * x[block] > 0).all()
    tmax[block] = 8.0
    cbv[block] = 3.0
    cbf[block] = 20.0
    core = np.zeros(SHAPE, bool)
    core[2:6, 16:22, lesion_i] = True
    cbf[core] = 14.95                 # rCBF 0.299 → core
    edge30 = np.zeros(SHAPE, bool)
    edge30[2:6, 22:24, lesion_i] = True
    cbf[edge30] = 15.0                # rCBF exactly 0.30 → not core
    t600 = np.zeros(SHAPE, bool)
    t600[2:6, 27, lesion_i] = True
    tmax[t600] = 6.00                 # not hypoperfused
    t601 = np.zeros(SHAPE, bool)
    t601[2:6, 26, lesion_i] = True
    tmax[t601] = 6.01                 # hypoperfused (joins the block: same cluster)
    csf = np.zeros(SHAPE, bool)
    csf[3, 24, lesion_i][:4] = True
    baseline[csf] = 8.0
    speck = np.zeros(SHAPE, bool)
    other_i = 31 if side == "right" else 9
    speck[4, 10, other_i:other_i + 3] = True
    tmax[speck] = 9.0
    core_speck = np.zeros(SHAPE, bool)
    core_speck[2, 24, lesion_i.start + 5] = True
    cbf[core_speck] = 5.0
    hypo = (block | t601) & ~csf
    truth = {"core": core, "hypoperfusion": hypo, "csf": csf, "speck": speck,
             "core_speck": core_speck, "brain": brain}
    return SimpleNamespace(cbf=cbf, cbv=cbv, tmax=tmax), baseline, truth



def assert_steps_chain(result):
    """Each clean-up step's "after" is the next step's "before"; the last "after" is the final volume."""
    for a, b in zip(result.steps, result.steps[1:]):
        for name in a.volumes_ml:
            assert a.volumes_ml[name]["after"] == b.volumes_ml[name]["before"]
    for name in ("core", "hypoperfusion"):
        assert result.steps[-1].volumes_ml[name]["after"] == pytest.approx(
            result.masks[name].sum() * VOXEL_ML)

def test_ct_exact_volumes_at_threshold_edges():
    maps, baseline, truth = synthetic("left")
    result = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline)
    assert result.affected_side == "left"
    assert result.reference["value"] == 50.0 and "right hemisphere" in \
        result.reference["description"]
    np.testing.assert_array_equal(result.masks["core"], truth["core"])
    np.testing.assert_array_equal(result.masks["hypoperfusion"], truth["hypoperfusion"])
    np.testing.assert_array_equal(result.masks["penumbra"],
                                  truth["hypoperfusion"] & ~truth["core"])
    m = result.metrics
    assert m["core_ml"].value == pytest.approx(truth["core"].sum() * VOXEL_ML, rel=1e-12)
    assert m["hypoperfusion_ml"].value == pytest.approx(
        truth["hypoperfusion"].sum() * VOXEL_ML, rel=1e-12)
    assert m["mismatch_ratio"].value == pytest.approx(
        truth["hypoperfusion"].sum() / truth["core"].sum())
    assert m["tmax_gt_10_ml"].value == 0.0 and m["hir"].value == 0.0
    # Tmax > 4 s also holds the 6.00 s row (4 slices × 6 columns)
    assert m["tmax_gt_4_ml"].value == pytest.approx(m["hypoperfusion_ml"].value + 24 * VOXEL_ML)
    assert m["cbv_index"].value == pytest.approx(3.0 / 4.0, abs=0.02)
    assert result.rcbf is not None and result.adc_unit is None


def test_ct_steps_report_exact_removals_and_chain():
    maps, baseline, truth = synthetic("right")
    result = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline)
    assert result.affected_side == "right"
    assert [s.name for s in result.steps] == STEP_NAMES
    by_name = {s.name: s for s in result.steps}
    # CSF pocket: exactly its 4 voxels leave the hypoperfusion (and Tmax > 4/8) masks
    assert by_name["csf_exclusion"].removed_ml("hypoperfusion") == pytest.approx(4 * VOXEL_ML)
    assert by_name["csf_exclusion"].removed_ml("core") == 0.0
    # the 1-voxel core speck (inside the block) and the 3-voxel Tmax speck are too small
    clusters = by_name["minimum_cluster_size"]
    assert clusters.removed_ml("core") == pytest.approx(VOXEL_ML)
    assert clusters.removed_ml("hypoperfusion") == pytest.approx(3 * VOXEL_ML)
    assert clusters.removed_ml("tmax_gt_8") == pytest.approx(3 * VOXEL_ML + 0)
    assert not by_name["morphological_opening"].applied
    assert_steps_chain(result)


@pytest.mark.parametrize("switch, step", [("csf_exclusion", "csf_exclusion"),
                                          ("cluster_removal", "minimum_cluster_size"),
                                          ("core_within_hypoperfusion",
                                           "core_within_hypoperfusion")])
def test_switching_a_step_off_changes_only_that_step(switch, step):
    maps, baseline, truth = synthetic("left")
    on = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline)
    settings = dataclasses.replace(LesionSettings(), **{switch: False})
    off = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                         settings=settings)
    index = STEP_NAMES.index(step)
    for a, b in zip(on.steps[:index], off.steps[:index]):
        assert a.to_dict() == b.to_dict()
    off_step = off.steps[index]
    assert not off_step.enabled and not off_step.applied
    assert all(v["removed"] == 0.0 for v in off_step.volumes_ml.values())
    assert off.steps[index].parameters == on.steps[index].parameters
    removed = on.steps[index].volumes_ml
    for name in ("core", "hypoperfusion"):
        later_on = sum(s.removed_ml(name) for s in on.steps[index + 1:])
        later_off = sum(s.removed_ml(name) for s in off.steps[index + 1:])
        difference = off.masks[name].sum() * VOXEL_ML - on.masks[name].sum() * VOXEL_ML
        assert difference == pytest.approx(removed[name]["removed"] + later_on - later_off,
                                           abs=1e-9)
    if switch == "csf_exclusion":
        assert off.metrics["hypoperfusion_ml"].value - on.metrics["hypoperfusion_ml"].value == \
            pytest.approx(4 * VOXEL_ML)


def test_opening_and_cluster_settings_are_reported():
    maps, baseline, truth = synthetic("left")
    settings = LesionSettings(opening=True, opening_radius_voxels=1, min_core_ml=0.0,
                              min_hypoperfusion_ml=0.0)
    result = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                            settings=settings)
    opening = step(result, "morphological_opening")
    assert opening.applied and opening.parameters["radius_voxels"] == 1
    assert opening.removed_ml("hypoperfusion") > 0
    clusters = step(result, "minimum_cluster_size")
    assert clusters.parameters["min_ml"]["core"] == 0.0
    assert clusters.removed_ml("core") == 0.0


def test_rcbf_threshold_and_tmax_threshold_are_settings():
    maps, baseline, truth = synthetic("left")
    # rCBF 0.30 voxels become core with a 0.31 threshold; the 1-voxel core speck now touches
    # the core and survives the cluster step
    result = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                            settings=LesionSettings(core_rcbf_percent=31.0))
    assert result.metrics["core_ml"].value == pytest.approx(
        (truth["core"].sum() + 4 * 2 * 6 + 1) * VOXEL_ML)
    # Tmax 6.00 column joins with a 5.99 s threshold
    result = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                            settings=LesionSettings(tmax_threshold=5.99))
    assert result.metrics["hypoperfusion_ml"].value == pytest.approx(
        (truth["hypoperfusion"].sum() + 4 * 6) * VOXEL_ML)
    assert "Tmax > 5.99 s" in result.metrics["hypoperfusion_ml"].label


@pytest.mark.parametrize("reference", ["tmax_lt_4", "mirror"])
def test_other_rcbf_references(reference):
    maps, baseline, truth = synthetic("left")
    settings = LesionSettings(rcbf_reference=reference, mirror_sigma_mm=0.0, min_core_ml=0.0)
    result = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                            settings=settings)
    assert result.reference["method"] == reference
    if reference == "tmax_lt_4":
        assert result.reference["value"] == 50.0
        np.testing.assert_array_equal(result.masks["core"], truth["core"] | truth["core_speck"])
    else:
        # mirror: core voxels have 14.95 / 50 with their mirror inside the healthy side
        assert result.reference["value"] is None
        core = result.masks["core"]
        assert (core & truth["core"]).sum() >= 0.9 * truth["core"].sum()
        assert not (core & ~truth["hypoperfusion"]).any()


def _oblique_adc(truth, unit_scale=1e-3):
    """ADC on a rotated, finer grid: 800 in brain, 3000 in CSF pocket, 440 in the core
    (620 = midpoint), NaN/0 outside, given in 10⁻³ mm²/s."""
    a = np.deg2rad(12.0)
    rotation = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([-1.6, -1.9, 4.0])
    shape = (14, 60, 60)
    half = (np.array(shape[::-1]) - 1) / 2
    matrix[:3, 3] = np.array([3.7, 0.0, 1.0]) - matrix[:3, :3] @ half
    adc_geometry = Geometry(matrix, shape)
    k, j, i = np.indices(shape, dtype=float)
    ras = adc_geometry.ijk_to_ras_points(np.stack([i, j, k], -1))
    x = ras[..., 0] - 3.7
    brain = (x / 36) ** 2 + (ras[..., 1] / 45) ** 2 + ((ras[..., 2] - 1.0) / 22) ** 2 < 1
    core_centre = np.array([3.7 - 19.0, 1.75 * 2.5 * 0 + 48.0 - 2.5 * 18.5, -20.0 + 6.0 * 3.5])
    lesion = np.all(np.abs(ras - core_centre) <= [12.0, 15.0, 12.0], axis=-1)
    adc = np.where(brain, np.where(lesion, 440.0, 800.0), 0.0) * unit_scale
    return adc, adc_geometry, (lesion & brain).sum() * adc_geometry.voxel_volume_ml


def test_mr_with_oblique_adc_grid_and_unit_detection():
    maps, baseline, truth = synthetic("left")
    adc, adc_geometry, true_core_ml = _oblique_adc(truth)
    s0 = np.where(truth["brain"], 1000.0, 0.0)
    result = analyze_lesion(maps, GEOMETRY, modality="mr", adc=adc, adc_geometry=adc_geometry,
                            baseline_image=s0)
    assert result.adc_unit.unit == "1e-3 mm2/s" and result.adc_unit.detected
    grids = result.core_grids
    assert grids["adc_grid_ml"] == pytest.approx(true_core_ml, rel=0.02)
    assert grids["perfusion_grid_ml"] == pytest.approx(grids["adc_grid_ml"], rel=0.02)
    assert not step(result, "core_within_hypoperfusion").enabled  # core restricted to hypoperfusion: off for MR
    assert result.rcbf is None and result.reference is None
    assert result.adc.shape == SHAPE
    # explicit unit overrides detection
    result2 = analyze_lesion(maps, GEOMETRY, modality="mr", adc=adc * 1000,
                             adc_geometry=adc_geometry, adc_unit="1e-6 mm2/s", baseline_image=s0)
    assert not result2.adc_unit.detected
    assert result2.metrics["core_ml"].value == pytest.approx(result.metrics["core_ml"].value)


def test_mr_errors():
    maps, baseline, truth = synthetic("left")
    with pytest.raises(InputDataError, match="ADC"):
        analyze_lesion(maps, GEOMETRY, modality="mr")
    adc, adc_geometry, _ = _oblique_adc(truth)
    with pytest.raises(InputDataError, match="adc_geometry"):
        analyze_lesion(maps, GEOMETRY, modality="mr", adc=adc)
    far = Geometry(adc_geometry.ijk_to_ras @ np.array(
        [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 400.0], [0, 0, 0, 1]]), adc_geometry.shape)
    with pytest.raises(InputDataError, match="do not overlap"):
        analyze_lesion(maps, GEOMETRY, modality="mr", adc=adc, adc_geometry=far)
    with pytest.raises(InputDataError, match="modality"):
        analyze_lesion(maps, GEOMETRY, modality="pet")
    with pytest.raises(InputDataError, match="rcbf_reference"):
        analyze_lesion(maps, GEOMETRY, modality="ct", settings=LesionSettings(
            rcbf_reference="cerebellum"))
    with pytest.raises(InputDataError, match="shape"):
        analyze_lesion(SimpleNamespace(cbf=maps.cbf, cbv=maps.cbv, tmax=maps.tmax[:-1]),
                       GEOMETRY, modality="ct")


def test_to_dict_is_json_ready_with_everything_visible():
    maps, baseline, truth = synthetic("left")
    settings = LesionSettings(age=75, nihss=14)
    result = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                            settings=settings)
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["disclaimer"] == DISCLAIMER
    assert data["settings"]["core_rcbf_percent"] == 30.0 and data["settings"]["age"] == 75
    assert [s["name"] for s in data["steps"]] == STEP_NAMES
    assert data["metrics"]["core_ml"]["unit"] == "mL"
    assert data["hemispheres"]["affected_side"] == "left"
    assert data["affected_side"] == "left"
    assert {c["rule"] for c in data["criteria"]} >= {"DEFUSE 3", "EXTEND-IA", "DAWN"}
    dawn = next(c for c in data["criteria"] if c["rule"] == "DAWN")
    assert dawn["eligible"] is True and dawn["matched_group"] == "DAWN group B"


def test_input_arrays_are_not_modified():
    maps, baseline, truth = synthetic("left")
    copies = [maps.cbf.copy(), maps.tmax.copy(), maps.cbv.copy(), baseline.copy()]
    analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline)
    for a, b in zip(copies, [maps.cbf, maps.tmax, maps.cbv, baseline]):
        np.testing.assert_array_equal(a, b)


# --- metrics_from_masks -------------------------------------------------------------------
def test_metrics_from_masks_matches_analysis_and_accepts_penumbra():
    maps, baseline, truth = synthetic("left")
    result = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline)
    core, hypo = result.masks["core"], result.masks["hypoperfusion"]
    again = metrics_from_masks(core, hypo, GEOMETRY, tmax=maps.tmax, cbv=maps.cbv,
                               hemispheres=result.hemispheres)
    for key in ("core_ml", "hypoperfusion_ml", "penumbra_ml", "mismatch_ratio", "hir",
                "tmax_gt_10_ml", "cbv_index"):
        assert again.metrics[key].value == pytest.approx(result.metrics[key].value)
    # edited penumbra: hypoperfusion = core ∪ penumbra
    pen = result.masks["penumbra"].copy()
    pen[3, 20, 5] = True  # user paints one voxel
    edited = metrics_from_masks(core, penumbra=pen, geometry=GEOMETRY)
    assert edited.metrics["hypoperfusion_ml"].value == pytest.approx(
        (hypo.sum() + 1) * VOXEL_ML)
    assert edited.metrics["penumbra_ml"].value == pytest.approx(pen.sum() * VOXEL_ML)
    # a given penumbra that contradicts hypoperfusion − core is recomputed, with a warning
    warned = metrics_from_masks(core, hypo, GEOMETRY, penumbra=pen)
    assert warned.warnings and warned.metrics["penumbra_ml"].value == pytest.approx(
        (hypo & ~core).sum() * VOXEL_ML)
    json.dumps(edited.to_dict(), allow_nan=False)


def test_metrics_from_masks_empty_core_and_errors():
    empty = np.zeros(SHAPE, bool)
    hypo = empty.copy()
    hypo[1:7, 10:30, 5:10] = True  # 18 mL
    out = metrics_from_masks(empty, hypo, GEOMETRY)
    assert out.metrics["mismatch_ratio"].value is None
    assert out.metrics["mismatch_ratio"].flag == "infinite"
    defuse = out.criteria[0]
    assert defuse.rule == "DEFUSE 3" and defuse.eligible is True
    with pytest.raises(InputDataError, match="hypoperfusion mask or a penumbra"):
        metrics_from_masks(empty, None, GEOMETRY)
    with pytest.raises(InputDataError, match="geometry"):
        metrics_from_masks(empty, hypo)
    with pytest.raises(InputDataError, match="shape"):
        metrics_from_masks(empty[:-1], hypo, GEOMETRY)


# --- volume phantom true maps ---------------------------------------------------------------
def _dice(a, b):
    return 2 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


@pytest.mark.parametrize("modality, side", [("mr", "left"), ("ct", "right")])
def test_volume_phantom_true_maps(modality, side):
    volume = pytest.importorskip("StrokeMismatchLib.phantom.volume")
    phantom = volume.make_volume_phantom(modality, lesion_side=side)
    maps = SimpleNamespace(**phantom.true_maps)
    signal = phantom.series.signal
    baseline = signal[..., :3].mean(axis=-1)
    result = analyze_lesion(maps, phantom.geometry, modality=modality, adc=phantom.adc,
                            adc_geometry=phantom.adc_geometry, brain_mask=phantom.brain_mask,
                            baseline_image=baseline)
    assert result.affected_side == side == phantom.lesion_side
    assert _dice(result.masks["hypoperfusion"], phantom.true_hypoperfusion) > 0.97
    assert _dice(result.masks["core"], phantom.true_core) > 0.9
    assert result.hemispheres.score > 0.8
    if modality == "mr":  # core thresholded on the ADC grid, volume kept on the perfusion grid
        grids = result.core_grids
        assert grids["perfusion_grid_ml"] == pytest.approx(grids["adc_grid_ml"], rel=0.02)
        assert grids["adc_grid_ml"] == pytest.approx(phantom.volumes_ml["core_ml"], rel=0.03)
    else:  # CSF (CBF 0, no Tmax) is never core
        assert step(result, "brain_mask").removed_ml("core") == 0.0


def test_ct_without_baseline_reports_csf_step_not_applied():
    maps, baseline, truth = synthetic("left")
    result = analyze_lesion(maps, GEOMETRY, modality="ct")
    csf = step(result, "csf_exclusion")
    assert csf.enabled and not csf.applied and "baseline" in csf.note
    assert result.hemispheres.source == "brain mask outline"
    assert result.affected_side == "left"
    # the CSF pocket now stays in the hypoperfusion; everything else is as before
    np.testing.assert_array_equal(result.masks["hypoperfusion"],
                                  truth["hypoperfusion"] | truth["csf"])
    np.testing.assert_array_equal(result.masks["core"], truth["core"])


def test_settings_defaults_validation_and_dict():
    settings = LesionSettings()
    d = settings.to_dict()
    assert (d["core_adc"], d["core_rcbf_percent"], d["tmax_threshold"]) == (620.0, 30.0, 6.0)
    assert settings.core_rcbf == pytest.approx(0.30) and settings.tmax_report_thresholds == (4.0, 8.0, 10.0)
    assert settings.core_within("ct") and not settings.core_within("mr")
    assert LesionSettings(core_within_hypoperfusion=True).core_within("mr")
    json.dumps(d, allow_nan=False)
    for bad in (dict(core_rcbf_percent=0.0), dict(tmax_threshold=float("nan")), dict(min_core_ml=-1),
                dict(rcbf_statistic="mode"), dict(age=-3), dict(opening_radius_voxels=-1)):
        with pytest.raises(InputDataError):
            LesionSettings(**bad)
    changed = LesionSettings()
    changed.tmax_threshold = 1e6  # changed after construction: validate() catches it
    with pytest.raises(InputDataError, match="tmax_threshold"):
        changed.validate()


# --- vessel exclusion and hemisphere restriction --------------------------------------------
def _with_tube(side="left", scale=1.0):
    """synthetic() plus a vessel (CBV 40 × ``scale``) running through the hypoperfused block
    along its outer column; CBV of every voxel × ``scale`` (MR CBV is relative)."""
    maps, baseline, truth = synthetic(side)
    lesion_i = 6 if side == "right" else 34
    tube = np.zeros(SHAPE, bool)
    tube[2:6, 14:24, lesion_i] = True   # stops short of the 1-voxel core speck at j = 24
    assert (truth["hypoperfusion"] & tube).sum() == 40
    cbv = maps.cbv.copy()
    cbv[tube] = 40.0
    maps = SimpleNamespace(cbf=maps.cbf, cbv=cbv * scale, tmax=maps.tmax)
    truth["tube"] = tube
    return maps, baseline, truth


def test_vessel_tube_inside_hypoperfusion_is_removed_and_reported():
    maps, baseline, truth = _with_tube("left")
    on = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline)
    off = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                         settings=LesionSettings(vessel_exclusion=False))
    vessel_on, vessel_off = step(on, "vessel_exclusion"), step(off, "vessel_exclusion")
    assert vessel_on.applied and not vessel_off.applied and vessel_off.note == "switched off"
    assert vessel_on.parameters["cbv_limit_used"] == 8.0
    assert vessel_on.parameters["high_cbv_ml"] == pytest.approx(truth["tube"].sum() * VOXEL_ML)
    tube = truth["tube"]
    for name in ("core", "hypoperfusion"):
        assert not (on.masks[name] & tube).any()
        # reported removal = the tube voxels that were in the mask = the on/off difference
        expected = (off.masks[name] & tube).sum() * VOXEL_ML
        assert expected > 0
        assert vessel_on.removed_ml(name) == pytest.approx(expected)
        assert (off.masks[name].sum() - on.masks[name].sum()) * VOXEL_ML == pytest.approx(
            expected)
        np.testing.assert_array_equal(on.masks[name], off.masks[name] & ~tube)
    assert all(v["removed"] == 0.0 for v in vessel_off.volumes_ml.values())
    # switching it off changes nothing else: the other steps' settings and earlier volumes
    index = STEP_NAMES.index("vessel_exclusion")
    for a, b in zip(on.steps[:index], off.steps[:index]):
        assert a.to_dict() == b.to_dict()
    for a, b in zip(on.steps[index + 1:], off.steps[index + 1:]):
        assert a.parameters == b.parameters and a.enabled == b.enabled
    assert on.metrics["penumbra_ml"].value == pytest.approx(
        off.metrics["penumbra_ml"].value - ((off.masks["penumbra"] & tube).sum()) * VOXEL_ML)


def test_vessel_exclusion_changes_nothing_without_vessels():
    maps, baseline, truth = synthetic("left")
    on = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline)
    off = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                         settings=LesionSettings(vessel_exclusion=False))
    assert step(on, "vessel_exclusion").applied
    assert all(v["removed"] == 0.0 for v in step(on, "vessel_exclusion").volumes_ml.values())
    for name in on.masks:
        np.testing.assert_array_equal(on.masks[name], off.masks[name])


def test_vessel_exclusion_on_relative_mr_cbv():
    """MR CBV in arbitrary units (× 30): the limit is 4 × the brain median, the tube goes and
    the hypoperfused tissue stays."""
    maps, baseline, truth = _with_tube("left", scale=30.0)
    adc, adc_geometry, _ = _oblique_adc(truth)
    s0 = np.where(truth["brain"], 1000.0, 0.0)
    on = analyze_lesion(maps, GEOMETRY, modality="mr", adc=adc, adc_geometry=adc_geometry,
                        baseline_image=s0)
    vessel = step(on, "vessel_exclusion")
    assert vessel.parameters["cbv_limit_used"] == pytest.approx(
        4.0 * vessel.parameters["tissue_median_cbv"])
    assert vessel.parameters["tissue_median_cbv"] == pytest.approx(4.0 * 30.0)
    assert not (on.masks["hypoperfusion"] & truth["tube"]).any()
    expected = (truth["hypoperfusion"] & truth["tube"]).sum() * VOXEL_ML
    assert vessel.removed_ml("hypoperfusion") == pytest.approx(expected)
    off = analyze_lesion(maps, GEOMETRY, modality="mr", adc=adc, adc_geometry=adc_geometry,
                         baseline_image=s0, settings=LesionSettings(vessel_exclusion=False))
    np.testing.assert_array_equal(on.masks["hypoperfusion"],
                                  off.masks["hypoperfusion"] & ~truth["tube"])
    np.testing.assert_array_equal(on.masks["core"], off.masks["core"] & ~truth["tube"])


def test_vessel_arterial_timing_uses_aif_ttp_and_frame_interval():
    maps, baseline, truth = synthetic("left")
    early = np.zeros(SHAPE, bool)
    early[2:6, 15, 30] = True                      # inside the hypoperfused block
    assert truth["hypoperfusion"][early].all()
    cbv = maps.cbv.copy()
    cbv[early] = 7.0                               # > 0.75 × 8, < 8
    ttp = np.where(np.isfinite(maps.tmax), 30.0, np.nan)
    ttp[early] = 21.8
    maps = SimpleNamespace(cbf=maps.cbf, cbv=cbv, tmax=maps.tmax, ttp=ttp)
    without = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline)
    assert "not used" in step(without, "vessel_exclusion").note
    assert without.masks["hypoperfusion"][early].all()
    with_aif = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                              aif_ttp=21.0, frame_interval_s=1.0)
    vessel = step(with_aif, "vessel_exclusion")
    assert vessel.parameters["ttp_window_s"] == 1.0
    assert vessel.parameters["ttp_window_source"] == "one frame interval"
    assert vessel.removed_ml("hypoperfusion") == pytest.approx(4 * VOXEL_ML)
    assert not (with_aif.masks["hypoperfusion"] & early).any()
    # a 0.5 s window (setting) leaves them
    narrow = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                            aif_ttp=21.0, frame_interval_s=1.0,
                            settings=LesionSettings(vessel_ttp_window_s=0.5))
    assert narrow.masks["hypoperfusion"][early].all()


def _with_contralateral_blob(side="left"):
    maps, baseline, truth = synthetic(side)
    blob = np.zeros(SHAPE, bool)
    i0 = 7 if side == "left" else 30
    blob[2:5, 14:18, i0:i0 + 4] = True             # 48 voxels = 1.44 mL, Tmax 9 s
    assert truth["brain"][blob].all()
    tmax = maps.tmax.copy()
    tmax[blob] = 9.0
    truth["blob"] = blob
    return SimpleNamespace(cbf=maps.cbf, cbv=maps.cbv, tmax=tmax), baseline, truth


@pytest.mark.parametrize("side", ["left", "right"])
def test_hemisphere_restriction_removes_contralateral_blob_only_when_on(side):
    maps, baseline, truth = _with_contralateral_blob(side)
    off = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline)
    on = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                        settings=LesionSettings(restrict_to_affected_hemisphere=True))
    assert off.affected_side == on.affected_side == side
    blob = truth["blob"]
    report_off, report_on = step(off, "hemisphere_restriction"), step(on, "hemisphere_restriction")
    assert not report_off.enabled and report_off.note == "switched off"
    assert off.masks["hypoperfusion"][blob].all()        # big enough to survive clusters
    assert report_on.applied and report_on.parameters["affected_side"] == side
    # the hemisphere step (before the cluster step) also takes the 3-voxel contralateral speck
    contralateral = blob | truth["speck"]
    assert report_on.removed_ml("hypoperfusion") == pytest.approx(
        contralateral.sum() * VOXEL_ML)
    assert step(on, "minimum_cluster_size").removed_ml("hypoperfusion") == pytest.approx(
        step(off, "minimum_cluster_size").removed_ml("hypoperfusion") - 3 * VOXEL_ML)
    assert not (on.masks["hypoperfusion"] & blob).any()
    np.testing.assert_array_equal(on.masks["hypoperfusion"], off.masks["hypoperfusion"] & ~blob)
    np.testing.assert_array_equal(on.masks["core"], off.masks["core"])
    assert off.metrics["hypoperfusion_ml"].value - on.metrics["hypoperfusion_ml"].value == \
        pytest.approx(blob.sum() * VOXEL_ML)


def test_hemisphere_restriction_not_applied_without_an_affected_side():
    maps, baseline, truth = synthetic("left")
    healthy = SimpleNamespace(cbf=np.where(truth["brain"], 50.0, np.nan), cbv=maps.cbv,
                              tmax=np.where(truth["brain"], 2.0, np.nan))
    result = analyze_lesion(healthy, GEOMETRY, modality="ct", baseline_image=baseline,
                            settings=LesionSettings(restrict_to_affected_hemisphere=True))
    report = step(result, "hemisphere_restriction")
    assert result.affected_side == "none"
    assert report.enabled and not report.applied and "no affected side" in report.note
    assert all(v["removed"] == 0.0 for v in report.volumes_ml.values())


def test_new_settings_in_dict_and_validated():
    d = LesionSettings().to_dict()
    assert d["vessel_exclusion"] is True and d["vessel_cbv"] == 8.0
    assert d["vessel_cbv_multiple"] == 4.0 and d["vessel_ttp_window_s"] is None
    assert d["restrict_to_affected_hemisphere"] is False
    for bad in (dict(vessel_cbv=0.0), dict(vessel_cbv_multiple=float("nan")),
                dict(vessel_ttp_window_s=-1.0)):
        with pytest.raises(InputDataError):
            LesionSettings(**bad).validate()


def _noisy_synthetic():
    """The synthetic CT case with an outlier Tmax inside the block (a no-flow voxel, away from
    the slice with the CSF pocket), a lone
    Tmax 9 s voxel in normal tissue and CBF noise."""
    maps, baseline, truth = synthetic("left")
    tmax = maps.tmax.copy()
    voxels = np.argwhere(truth["core"] & ~np.isin(np.arange(SHAPE[0]), [3])[:, None, None])
    inner = voxels[np.argmin(np.abs(voxels - voxels.mean(axis=0)).sum(axis=1))]  # enclosed
    tmax[tuple(inner)] = -12.0
    normal = np.argwhere(np.isfinite(tmax) & (tmax == 2.0))[0]
    tmax[tuple(normal)] = 9.0
    rng = np.random.default_rng(3)
    cbf = maps.cbf + rng.normal(0.0, 2.0, maps.cbf.shape)
    return SimpleNamespace(cbf=cbf, cbv=maps.cbv, tmax=tmax, ttp=getattr(maps, "ttp", None)), \
        baseline, truth, tuple(inner), tuple(normal)


def test_default_noise_steps_are_reported_and_chain():
    maps, baseline, truth, inner, normal = _noisy_synthetic()
    # CBF smoothing is off by default since issue 15 (denoising before deconvolution): switch it on
    result = _analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                             settings=_LesionSettings(cbf_smoothing_fwhm_mm=4.0))
    assert _LesionSettings().cbf_smoothing_fwhm_mm == 0.0
    assert [s.name for s in result.steps] == STEP_NAMES
    by_name = {s.name: s for s in result.steps}
    for name in ("tmax_median_filter", "cbf_smoothing", "morphological_opening", "fill_holes"):
        assert by_name[name].enabled and by_name[name].applied, name
    assert by_name["morphological_opening"].parameters["kernel_radius_kji"] == [0, 1, 1]
    # the outlier inside the block is hypoperfused after the median, the lone voxel is not
    assert result.masks["hypoperfusion"][inner] and not result.masks["hypoperfusion"][normal]
    assert_steps_chain(result)
    assert result.reference["cbf_smoothing_fwhm_mm"] == 4.0
    json.dumps(result.to_dict(), allow_nan=False)


@pytest.mark.parametrize("switch, value, step_name, base", [
    ("tmax_median_filter", False, "tmax_median_filter", {}),
    ("cbf_smoothing_fwhm_mm", 0.0, "cbf_smoothing", {"cbf_smoothing_fwhm_mm": 4.0}),
    ("opening", False, "morphological_opening", {}),
    # without the median the outlier inside the block is a hole for fill_holes to fill
    ("fill_holes", False, "fill_holes", {"tmax_median_filter": False})])
def test_switching_a_noise_step_off_changes_only_that_step(switch, value, step_name, base):
    maps, baseline, truth, inner, normal = _noisy_synthetic()
    on = _analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                         settings=_LesionSettings(**base))
    off = _analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                          settings=_LesionSettings(**{**base, switch: value}))
    index = STEP_NAMES.index(step_name)
    for a, b in zip(on.steps[:index], off.steps[:index]):
        assert a.to_dict() == b.to_dict()
    off_step = off.steps[index]
    assert not off_step.applied
    assert all(v["removed"] == 0.0 for v in off_step.volumes_ml.values())
    assert any(v["removed"] != 0.0 for v in on.steps[index].volumes_ml.values()), step_name
    for name in ("core", "hypoperfusion"):
        later_on = sum(s.removed_ml(name) for s in on.steps[index + 1:])
        later_off = sum(s.removed_ml(name) for s in off.steps[index + 1:])
        difference = off.masks[name].sum() * VOXEL_ML - on.masks[name].sum() * VOXEL_ML
        assert difference == pytest.approx(
            on.steps[index].removed_ml(name) + later_on - later_off, abs=1e-9)


def test_core_opening_is_separate_and_mr_skips_ct_steps():
    maps, baseline, truth, inner, normal = _noisy_synthetic()
    plain = _analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline)
    opened = _analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline,
                             settings=_LesionSettings(core_opening=True))
    assert step(plain, "morphological_opening").removed_ml("core") == 0.0
    assert "core" in step(opened, "morphological_opening").parameters["targets"]
    assert opened.masks["core"].sum() <= plain.masks["core"].sum()
    adc = np.where(truth["core"], 500.0, 800.0)
    mr = _analyze_lesion(maps, GEOMETRY, modality="mr", adc=adc,
                         settings=_LesionSettings(cbf_smoothing_fwhm_mm=4.0))
    assert not step(mr, "tmax_median_filter").enabled
    cbf_step = step(mr, "cbf_smoothing")
    assert cbf_step.enabled and not cbf_step.applied and "ADC" in cbf_step.note
    forced = _analyze_lesion(maps, GEOMETRY, modality="mr", adc=adc,
                             settings=_LesionSettings(tmax_median_filter=True))
    assert step(forced, "tmax_median_filter").applied


def test_the_cleanup_chain_is_one_ordered_list():
    """analyze_lesion runs exactly cleanup_chain.CHAIN, in order (one module owns the order)."""
    from StrokeMismatchLib import cleanup_chain

    assert list(cleanup_chain.STEP_NAMES) == STEP_NAMES
    maps, baseline, _ = synthetic("left")
    result = analyze_lesion(maps, GEOMETRY, modality="ct", baseline_image=baseline)
    assert [step.name for step in result.steps] == list(cleanup_chain.STEP_NAMES)
