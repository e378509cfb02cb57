"""Volumes in mL from voxel counts, ratios with null + flag, JSON-readiness."""

import json

import numpy as np
import pytest

from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.hemispheres import Hemispheres
from StrokeMismatchLib.metrics import (compute_metrics, json_number, metrics_to_dict, ratio,
                                       volume_ml)

# anisotropic voxels: 0.9 × 1.1 × 5.0 mm = 4.95 mm³
GEOMETRY = Geometry.from_spacing((4, 10, 20), (0.9, 1.1, 5.0), origin_ras=(9.0, 0.0, 0.0))


def test_volume_from_voxel_count_anisotropic():
    mask = np.zeros(GEOMETRY.shape, bool)
    mask[0, :3, :7] = True
    assert GEOMETRY.voxel_volume_ml == pytest.approx(0.00495)
    assert volume_ml(mask, GEOMETRY.voxel_volume_ml) == pytest.approx(21 * 0.00495, rel=1e-12)


def test_ratio_edge_cases():
    assert ratio("r", 18.0, 10.0).value == 1.8
    inf = ratio("r", 5.0, 0.0)
    assert inf.value is None and inf.flag == "infinite" and "infinite" in inf.note
    und = ratio("r", 0.0, 0.0)
    assert und.value is None and und.flag == "undefined"
    assert json_number(float("inf")) is None and json_number(float("nan")) is None
    assert json_number(2) == 2.0


def _masks():
    core = np.zeros(GEOMETRY.shape, bool)
    hypo = np.zeros(GEOMETRY.shape, bool)
    core[1, 2:4, 12:14] = True               # 4 voxels, 2 of them outside hypo
    hypo[1, 3:8, 12:18] = True               # 30 voxels
    t10 = hypo & (np.indices(GEOMETRY.shape)[2] >= 15)  # 15 voxels
    t4 = hypo.copy()
    t4[1, 8, 12:18] = True                   # 36 voxels
    return core, hypo, t4, t10


def test_compute_metrics_values_and_units():
    core, hypo, t4, t10 = _masks()
    pen = hypo & ~core
    v = GEOMETRY.voxel_volume_ml
    m = compute_metrics(core, hypo, pen, v, tmax_masks={4.0: t4, 8.0: t10, 10.0: t10})
    assert m["core_ml"].value == pytest.approx(4 * v) and m["core_ml"].unit == "mL"
    assert m["hypoperfusion_ml"].value == pytest.approx(30 * v)
    assert m["penumbra_ml"].value == pytest.approx(28 * v)
    # mismatch volume = hypo − core (26 voxels) ≠ penumbra (28 voxels)
    assert m["mismatch_ml"].value == pytest.approx(26 * v)
    assert m["mismatch_ratio"].value == pytest.approx(30 / 4)
    assert m["tmax_gt_10_ml"].value == pytest.approx(15 * v)
    assert m["hir"].value == pytest.approx(0.5)
    assert m["compensation_index"].value == pytest.approx(36 / 30)
    assert m["core_to_penumbra_ratio"].value == pytest.approx(4 / 28)
    assert m["cbv_index"].value is None and m["cbv_index"].flag == "not_available"
    assert "Tmax > 6 s" in m["hypoperfusion_ml"].label


def test_zero_core_and_no_hypoperfusion_are_null_with_flags_and_json_safe():
    empty = np.zeros(GEOMETRY.shape, bool)
    _, hypo, _, _ = _masks()
    m = compute_metrics(empty, hypo, hypo, GEOMETRY.voxel_volume_ml,
                        tmax_masks={10.0: empty})
    assert m["mismatch_ratio"].value is None and m["mismatch_ratio"].flag == "infinite"
    assert m["hir"].value == 0.0
    m = compute_metrics(empty, empty, empty, GEOMETRY.voxel_volume_ml,
                        tmax_masks={10.0: empty})
    for key in ("mismatch_ratio", "hir", "core_to_penumbra_ratio"):
        assert m[key].value is None and m[key].flag == "undefined"
    text = json.dumps(metrics_to_dict(m), allow_nan=False)
    assert json.loads(text)["mismatch_ratio"] == {
        "value": None, "unit": "1", "label": "Mismatch ratio (hypoperfusion / core)",
        "flag": "undefined", "note": "undefined: both volumes are 0 mL (core is 0)"}


def test_cbv_index_against_mirrored_region():
    # plane x = 0 between i = 9 and i = 10 (x = 9 − 0.9 i): i ↔ 19 − i
    normal = np.array([1.0, 0.0, 0.0])
    hemis = Hemispheres(GEOMETRY, normal, GEOMETRY.ijk_to_ras_points([9.5, 0, 0])[0], 0.0, 1.0)
    cbv = np.full(GEOMETRY.shape, 4.0)
    hypo = np.zeros(GEOMETRY.shape, bool)
    hypo[:, 2:6, 13:17] = True
    cbv[hypo] = 3.0
    m = compute_metrics(np.zeros_like(hypo), hypo, hypo, GEOMETRY.voxel_volume_ml, cbv=cbv,
                        hemispheres=hemis)
    assert m["cbv_index"].value == pytest.approx(0.75)
    cbv[:, 2:6, 3:7] = 2.0  # the mirror region of i 13..16 is i 3..6
    m = compute_metrics(np.zeros_like(hypo), hypo, hypo, GEOMETRY.voxel_volume_ml, cbv=cbv,
                        hemispheres=hemis)
    assert m["cbv_index"].value == pytest.approx(1.5)


@pytest.mark.parametrize("voxel_ml", [0.001, 0.0027, 0.0125])
def test_boundary_ratios_and_volumes_are_exact_from_voxel_counts(voxel_ml):
    """A ratio of exactly 9/5 voxels is 1.8 (DEFUSE 3 passes), 6/5 is 1.2 (EXTEND-IA fails)
    and a mismatch of exactly 15 mL is 15 mL: no rounding of count × voxel volume first."""
    from StrokeMismatchLib.criteria import defuse3, extend_ia

    shape = (1, 1, 40000)
    for n_core, n_hypo in ((25, 45), (35, 63), (50, 90), (70, 126)):
        core = np.zeros(shape, bool)
        hypo = np.zeros(shape, bool)
        core[..., :n_core] = True
        hypo[..., :n_hypo] = True
        m = compute_metrics(core, hypo, hypo & ~core, voxel_ml)
        assert m["mismatch_ratio"].value == 1.8
        hypo12 = np.zeros(shape, bool)
        hypo12[..., :n_core * 6 // 5] = True
        m = compute_metrics(core, hypo12, hypo12 & ~core, voxel_ml)
        assert m["mismatch_ratio"].value == 1.2
        assert extend_ia(m).criteria[1].status == "fail"
    n15 = round(15 / voxel_ml)  # 0.001 and 0.0125 mL: n15 voxels are exactly 15 mL
    for n_core in (1057, 1092, 1127):
        core = np.zeros(shape, bool)
        hypo = np.zeros(shape, bool)
        core[..., :n_core] = True
        hypo[..., :n_core + n15] = True
        m = compute_metrics(core, hypo, hypo & ~core, voxel_ml)
        assert m["mismatch_ml"].value == n15 * voxel_ml
        assert defuse3(m).criteria[2].status == ("pass" if n15 * voxel_ml >= 15.0 else "fail")
