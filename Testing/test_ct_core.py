"""CT core (issue 15): the rCBF reference leaves vessels and CSF out; hole filling is capped in mm²."""

import numpy as np
import pytest

from StrokeMismatchLib import cleanup
from StrokeMismatchLib.analysis import LesionSettings, analyze_lesion
from StrokeMismatchLib.geometry import Geometry


def _maps(vessel_fraction_cols=3):
    """A CT slab: right hemisphere (i < 20) normal CBF 40, left a deficit; vessel columns on
    the right with CBF 400 and CBV 40 mL/100 g."""
    geometry = Geometry.from_spacing((4, 30, 40), (2.0, 2.0, 5.0), origin_ras=(39.0, 0.0, 0.0))
    shape = geometry.shape
    cbf = np.full(shape, 40.0)
    cbv = np.full(shape, 3.0)
    tmax = np.full(shape, 2.0)
    ttp = np.full(shape, 30.0)
    cbf[..., 26:36] = 10.0  # left core-ish tissue
    tmax[..., 22:38] = 9.0
    cbf[:, 5:25, 2:2 + vessel_fraction_cols] = 400.0
    cbv[:, 5:25, 2:2 + vessel_fraction_cols] = 40.0
    baseline = np.full(shape, 35.0)
    baseline[:, :, 18:22] = 5.0  # a CSF column at the midline
    cbf[:, :, 18:22] = 1.0  # CSF has no flow
    return geometry, {"cbf": cbf, "cbv": cbv, "tmax": tmax, "ttp": ttp}, baseline


def test_reference_excludes_vessels_and_csf_and_says_so():
    geometry, maps, baseline = _maps()
    robust = analyze_lesion(maps, geometry, modality="ct", baseline_image=baseline)
    ref = robust.reference
    assert ref["excluded"]["vessels"] and ref["excluded"]["csf"]
    assert ref["excluded"]["vessel_ml"] == pytest.approx(4 * 20 * 3 * 0.02)
    assert ref["value"] == pytest.approx(40.0)
    legacy = analyze_lesion(maps, geometry, modality="ct", baseline_image=baseline,
                            settings=LesionSettings(rcbf_exclude_vessels=False, rcbf_statistic="mean"))
    assert legacy.reference["value"] > 1.2 * ref["value"]
    assert not legacy.reference["excluded"]["vessels"]
    # a reference inflated by vessels makes more tissue look like core
    assert legacy.metrics["core_ml"].value >= robust.metrics["core_ml"].value


def test_fill_holes_is_capped_by_area_in_mm2():
    mask = np.zeros((1, 40, 40), bool)
    mask[0, 2:8, 2:8] = True
    mask[0, 4:6, 4:6] = False  # small hole: 4 voxels = 16 mm² at 2 mm
    mask[0, 10:38, 10:38] = True
    mask[0, 14:34, 14:34] = False  # large hole: 400 voxels = 1600 mm²
    masks = {"hypoperfusion": mask}
    capped, report = cleanup.fill_holes(masks, enabled=True, voxel_ml=0.02, max_area_mm2=400.0,
                                        pixel_area_mm2=4.0)
    assert capped["hypoperfusion"][0, 4:6, 4:6].all()
    assert not capped["hypoperfusion"][0, 14:34, 14:34].any()
    assert report.parameters["max_area_mm2"] == 400.0
    unlimited, report = cleanup.fill_holes(masks, enabled=True, voxel_ml=0.02)
    assert unlimited["hypoperfusion"][0, 14:34, 14:34].all()
    assert report.parameters["max_area_mm2"] is None


def test_fill_holes_cap_setting_reaches_the_step():
    geometry, maps, baseline = _maps()
    result = analyze_lesion(maps, geometry, modality="ct", baseline_image=baseline,
                            settings=LesionSettings(fill_holes_max_mm2=123.0))
    step = next(s for s in result.steps if s.name == "fill_holes")
    assert step.parameters["max_area_mm2"] == 123.0
    with pytest.raises(Exception, match="fill_holes_max_mm2"):
        LesionSettings(fill_holes_max_mm2=-1.0).validate()


def test_reference_keeps_vessels_when_the_vessel_rule_takes_most_of_the_brain():
    """An AIF error inflates CBV everywhere: the vessel rule then marks tissue, not vessels, and
    must not leave the rCBF reference without tissue (it is skipped, with a warning)."""
    geometry, maps, baseline = _maps()
    maps = dict(maps, cbv=np.full(geometry.shape, 40.0))
    result = analyze_lesion(maps, geometry, modality="ct", baseline_image=baseline)
    assert result.reference["value"] > 0
    # Issue 20's CT vessel rule is relative to the brain's own CBV (> max(8, 2.5 × median)): an
    # inflation of the whole map moves the limit with it, so no tissue is taken for vessels.
    vessel = next(step for step in result.steps if step.name == "vessel_exclusion")
    assert vessel.removed_ml("hypoperfusion") == 0.0 and vessel.removed_ml("core") == 0.0
