"""Clean-up steps: reported mL removed equals the actual change; a step switched off changes
nothing."""

import numpy as np
import pytest

from StrokeMismatchLib import cleanup

VOXEL_ML = 0.027  # 3 × 3 × 3 mm


def _masks():
    core = np.zeros((8, 20, 20), bool)
    core[2:6, 3:8, 3:8] = True      # 100 voxels = 2.7 mL
    core[4, 15, 15] = True          # 1 voxel speck = 0.027 mL
    core[1, 15:17, 2] = True        # 2 voxels
    hypo = np.zeros_like(core)
    hypo[1:7, 2:12, 2:12] = True    # 600 voxels
    hypo[4, 15:17, 15:17] = True    # 4 voxels
    return {"core": core, "hypoperfusion": hypo}


def _check_report(report, before, after):
    for name in before:
        b = before[name].sum() * VOXEL_ML
        a = after[name].sum() * VOXEL_ML
        assert report.volumes_ml[name]["before"] == pytest.approx(b)
        assert report.volumes_ml[name]["after"] == pytest.approx(a)
        assert report.removed_ml(name) == pytest.approx(b - a)


def test_restrict_reports_what_it_removed_and_keeps_input():
    masks = _masks()
    copy = {k: v.copy() for k, v in masks.items()}
    region = np.zeros_like(masks["core"])
    region[:, :10, :] = True
    after, report = cleanup.restrict(masks, region, name="brain_mask", enabled=True,
                                     voxel_ml=VOXEL_ML, parameters={"x": 1})
    _check_report(report, masks, after)
    assert report.applied and report.removed_ml("core") == pytest.approx(3 * VOXEL_ML)
    assert report.removed_ml("hypoperfusion") > 0
    for k in masks:
        np.testing.assert_array_equal(masks[k], copy[k])
    # exclusion on chosen targets only
    after, report = cleanup.restrict(masks, region, name="x", enabled=True, voxel_ml=VOXEL_ML,
                                     targets=["core"], exclude=True)
    np.testing.assert_array_equal(after["hypoperfusion"], masks["hypoperfusion"])
    assert after["core"].sum() == 3


@pytest.mark.parametrize("step", ["restrict", "opening", "clusters"])
def test_switched_off_changes_nothing(step):
    masks = _masks()
    if step == "restrict":
        after, report = cleanup.restrict(masks, np.zeros_like(masks["core"]), name="s",
                                         enabled=False, voxel_ml=VOXEL_ML)
    elif step == "opening":
        after, report = cleanup.opening(masks, enabled=False, radius_voxels=1, voxel_ml=VOXEL_ML)
    else:
        after, report = cleanup.minimum_cluster_size(masks, enabled=False,
                                                     min_ml={"core": 1.0}, voxel_ml=VOXEL_ML)
    assert not report.enabled and not report.applied and report.note == "switched off"
    for k in masks:
        np.testing.assert_array_equal(after[k], masks[k])
        assert report.removed_ml(k) == 0.0


def test_missing_input_is_reported_not_applied():
    masks = _masks()
    after, report = cleanup.restrict(masks, None, name="csf_exclusion", enabled=True,
                                     voxel_ml=VOXEL_ML)
    assert report.enabled and not report.applied and "missing" in report.note
    np.testing.assert_array_equal(after["core"], masks["core"])


def test_minimum_cluster_size_in_ml():
    masks = _masks()
    # 0.05 mL: the 1-voxel (0.027) core speck goes, the 2-voxel (0.054) cluster stays
    after, report = cleanup.minimum_cluster_size(
        masks, enabled=True, min_ml={"core": 0.05, "hypoperfusion": 0.2}, voxel_ml=VOXEL_ML)
    _check_report(report, masks, after)
    assert after["core"].sum() == 102
    assert report.removed_ml("core") == pytest.approx(VOXEL_ML)
    assert after["hypoperfusion"].sum() == 600  # the 4-voxel (0.108 mL) cluster < 0.2 mL
    assert report.parameters["min_ml"] == {"core": 0.05, "hypoperfusion": 0.2}
    # exactly at the limit the cluster is kept (≥)
    kept = cleanup.remove_small_clusters(masks["core"], 2 * VOXEL_ML, VOXEL_ML)
    assert kept.sum() == 102


def test_opening_removes_thin_structures_only():
    masks = _masks()
    after, report = cleanup.opening(masks, enabled=True, radius_voxels=1, voxel_ml=VOXEL_ML)
    _check_report(report, masks, after)
    assert not after["core"][4, 15, 15] and not after["core"][1, 15:17, 2].any()
    assert after["core"][3:5, 4:7, 4:7].all()   # interior of the block survives
    assert (after["core"] <= masks["core"]).all()
    d = report.to_dict()
    assert d["name"] == "morphological_opening" and d["parameters"]["radius_voxels"] == 1


# --- vessel region ------------------------------------------------------------------------
def _vessel_maps(scale=1.0):
    """Brain CBV 2 (WM) / 4 (GM) mL/100 g with a 20-voxel tube at CBV 40, times ``scale``
    (MR CBV is relative: any scale). TTP 25 s in tissue, 20 s in the tube."""
    cbv = np.full((8, 20, 20), 2.0)
    cbv[:, :, 10:] = 4.0
    tube = np.zeros(cbv.shape, bool)
    tube[2:6, 5, 5:10] = True
    cbv[tube] = 40.0
    cbv[0] = np.nan
    ttp = np.where(tube, 20.0, 25.0)
    return cbv * scale, ttp, tube


@pytest.mark.parametrize("modality, scale", [("ct", 1.0), ("mr", 1.0), ("mr", 25.0)])
def test_vessel_region_finds_the_tube_with_absolute_or_relative_limit(modality, scale):
    cbv, ttp, tube = _vessel_maps(scale)
    tissue = np.isfinite(cbv)
    before = cbv.copy()
    region, parameters, note = cleanup.vessel_region(cbv, tissue=tissue, modality=modality,
                                                     voxel_ml=VOXEL_ML)
    np.testing.assert_array_equal(region, tube)
    np.testing.assert_array_equal(cbv, before)
    assert parameters["high_cbv_ml"] == pytest.approx(tube.sum() * VOXEL_ML)
    median = float(np.median(cbv[tissue]))
    assert parameters["tissue_median_cbv"] == pytest.approx(median)
    if modality == "ct":
        assert parameters["cbv_limit_used"] == 8.0
    else:
        assert parameters["cbv_limit_used"] == pytest.approx(4.0 * median)
        assert "relative" in parameters["cbv_limit_rule"]
    assert "arterial-timing" in note  # no AIF TTP given


def test_vessel_region_absolute_limit_would_wipe_scaled_mr_brain():
    """Why MR uses a relative limit: with the CT rule every voxel of a scaled MR map is a
    'vessel'."""
    cbv, ttp, tube = _vessel_maps(25.0)
    region, _, _ = cleanup.vessel_region(cbv, tissue=np.isfinite(cbv), modality="ct")
    assert region.sum() == np.isfinite(cbv).sum()


def test_vessel_region_arterial_timing():
    cbv, ttp, tube = _vessel_maps()
    early = np.zeros(cbv.shape, bool)
    early[3, 15, 12:16] = True
    cbv[early] = 7.0              # above 0.75 × 8 but below 8
    ttp[early] = 21.4             # within 1 s of the AIF TTP (20.5 s)
    late = np.zeros(cbv.shape, bool)
    late[4, 15, 12:16] = True
    cbv[late] = 7.0
    ttp[late] = 21.6              # 1.1 s after the AIF TTP: tissue
    low = np.zeros(cbv.shape, bool)
    low[5, 15, 12:16] = True
    cbv[low] = 5.9                # early but CBV below 0.75 × 8
    ttp[low] = 20.5
    tissue = np.isfinite(cbv)
    region, parameters, note = cleanup.vessel_region(
        cbv, tissue=tissue, modality="ct", ttp=ttp, aif_ttp=20.5, ttp_window_s=1.0,
        voxel_ml=VOXEL_ML)
    np.testing.assert_array_equal(region, tube | early)
    assert parameters["early_peak_only_ml"] == pytest.approx(early.sum() * VOXEL_ML)
    assert note == "" and "AIF TTP" in parameters["early_peak_rule"]
    # window 0 switches the timing criterion off
    region0, _, note0 = cleanup.vessel_region(cbv, tissue=tissue, modality="ct", ttp=ttp,
                                              aif_ttp=20.5, ttp_window_s=0.0)
    np.testing.assert_array_equal(region0, tube)
    assert "not used" in note0


def test_vessel_region_not_applicable():
    region, parameters, note = cleanup.vessel_region(None, tissue=None, modality="ct")
    assert region is None and "no CBV" in note
    cbv = np.full((4, 5, 5), -0.5)
    region, parameters, note = cleanup.vessel_region(cbv, tissue=np.ones(cbv.shape, bool),
                                                     modality="mr")
    assert region is None and "median" in note


def test_vessel_region_parameters_are_json_ready_with_empty_tissue():
    import json

    cbv, ttp, tube = _vessel_maps()
    region, parameters, note = cleanup.vessel_region(cbv, tissue=np.zeros(cbv.shape, bool),
                                                     modality="ct")
    np.testing.assert_array_equal(region, tube)  # CT limit is absolute: no median needed
    assert parameters["tissue_median_cbv"] is None
    json.dumps(parameters, allow_nan=False)
    region, _, note = cleanup.vessel_region(cbv, tissue=np.zeros(cbv.shape, bool), modality="mr")
    assert region is None and "median" in note


def test_kernel_radius_is_physical():
    assert cleanup.kernel_radius(1, None) == [1, 1, 1]
    assert cleanup.kernel_radius(1, (3.0, 3.0, 3.0)) == [1, 1, 1]
    assert cleanup.kernel_radius(1, (5.0, 1.8, 1.8)) == [0, 1, 1]   # thick slices: in-plane
    assert cleanup.kernel_radius(2, (5.0, 2.5, 2.5)) == [1, 2, 2]


def test_opening_with_thick_slices_keeps_one_slice_lesions():
    hypo = np.zeros((5, 12, 12), bool)
    hypo[2, 2:9, 2:9] = True          # one slice thick, 7 × 7 in-plane
    hypo[2, 10, 10] = True            # isolated voxel: opened away
    masks = {"hypoperfusion": hypo, "core": hypo.copy()}
    after, report = cleanup.opening(masks, enabled=True, radius_voxels=1, voxel_ml=VOXEL_ML,
                                    spacing_kji=(5.0, 1.8, 1.8), targets=["hypoperfusion"])
    _check_report(report, masks, after)
    assert report.parameters["kernel_radius_kji"] == [0, 1, 1]
    assert after["hypoperfusion"][2, 2:9, 2:9].all() and not after["hypoperfusion"][2, 10, 10]
    np.testing.assert_array_equal(after["core"], masks["core"])    # not a target
    # the same with a 3D ball removes the one-slice lesion entirely
    after3d, _ = cleanup.opening(masks, enabled=True, radius_voxels=1, voxel_ml=VOXEL_ML)
    assert not after3d["hypoperfusion"].any()


def test_fill_holes_fills_enclosed_voxels_within_allowed_and_reports_negative_removal():
    hypo = np.zeros((3, 10, 10), bool)
    hypo[1, 2:8, 2:8] = True
    hypo[1, 4, 4] = hypo[1, 5, 5] = False   # two holes
    hypo[0, 2:8, 2:8] = True
    hypo[0, 4, 4] = False                   # hole in another slice
    hypo[2, 2:8, 2] = True                  # open line: nothing enclosed
    hypo[1, 6, 5] = False                   # a two-voxel hole with the vessel voxel
    allowed = np.ones_like(hypo)
    allowed[1, 5, 5] = False                # e.g. a vessel voxel: its whole hole stays open
    masks = {"hypoperfusion": hypo, "core": np.zeros_like(hypo)}
    copy = hypo.copy()
    after, report = cleanup.fill_holes(masks, enabled=True, voxel_ml=VOXEL_ML, allowed=allowed,
                                       targets=["hypoperfusion"])
    _check_report(report, masks, after)
    np.testing.assert_array_equal(masks["hypoperfusion"], copy)
    assert after["hypoperfusion"][1, 4, 4] and after["hypoperfusion"][0, 4, 4]
    assert not after["hypoperfusion"][1, 5, 5] and not after["hypoperfusion"][1, 6, 5]
    assert report.removed_ml("hypoperfusion") == pytest.approx(-2 * VOXEL_ML)
    np.testing.assert_array_equal(after["hypoperfusion"][2], hypo[2])
    off, report_off = cleanup.fill_holes(masks, enabled=False, voxel_ml=VOXEL_ML)
    assert not report_off.applied and report_off.removed_ml("hypoperfusion") == 0.0
    np.testing.assert_array_equal(off["hypoperfusion"], hypo)


def test_replace_step_reports_the_change():
    masks = _masks()
    new = masks["core"].copy()
    new[2, 3, 3] = False
    after, report = cleanup.replace(masks, {"core": new}, name="x", enabled=True,
                                    voxel_ml=VOXEL_ML)
    _check_report(report, masks, after)
    assert report.removed_ml("core") == pytest.approx(VOXEL_ML)
    assert report.removed_ml("hypoperfusion") == 0.0
    after, report = cleanup.replace(masks, {"core": new}, name="x", enabled=False,
                                    voxel_ml=VOXEL_ML)
    assert not report.applied and report.note == "switched off"
    np.testing.assert_array_equal(after["core"], masks["core"])


@pytest.mark.parametrize("radius_kji", [(0, 1, 1), (1, 1, 1), (0, 2, 2), (1, 2, 2), (2, 1, 1)])
def test_opening_equals_simpleitk_ball_opening(radius_kji):
    """The scipy opening (with a bounding box) gives exactly SimpleITK's BinaryMorphologicalOpening
    with sitkBall, including masks that touch the image border."""
    import SimpleITK as sitk
    from scipy import ndimage

    from StrokeMismatchLib.cleanup import binary_opening_ball, opening

    rng = np.random.default_rng(sum(radius_kji))
    mask = ndimage.binary_dilation(rng.random((10, 36, 40)) > 0.93, iterations=2) & (rng.random((10, 36, 40)) > 0.1)
    reference = sitk.GetArrayFromImage(sitk.BinaryMorphologicalOpening(
        sitk.GetImageFromArray(mask.astype(np.uint8)), list(radius_kji[::-1]), sitk.sitkBall, 0, 1)).astype(bool)
    np.testing.assert_array_equal(binary_opening_ball(mask, radius_kji), reference)
    small = np.zeros((10, 36, 40), bool)
    small[3:6, 10:20, 12:25] = True
    small[4, 14, 30] = True  # a speck the opening removes
    opened, _ = opening({"m": small}, enabled=True, radius_voxels=max(radius_kji), voxel_ml=0.01)
    full = sitk.GetArrayFromImage(sitk.BinaryMorphologicalOpening(
        sitk.GetImageFromArray(small.astype(np.uint8)), [max(radius_kji)] * 3, sitk.sitkBall, 0, 1)).astype(bool)
    np.testing.assert_array_equal(opened["m"], full & small)
