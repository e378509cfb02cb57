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
