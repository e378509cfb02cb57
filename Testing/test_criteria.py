"""Truth tables for every trial rule (PERFUSION.md §10): flips exactly at the thresholds."""

import json

import pytest

from StrokeMismatchLib import DISCLAIMER
from StrokeMismatchLib.criteria import dawn, defuse3, evaluate_criteria, extend_ia, tissue_rule
from StrokeMismatchLib.metrics import Metric, ratio


def metrics(core, hypo, penumbra=None):
    """Metric dict as compute_metrics builds it, from volumes in mL."""
    penumbra = hypo - core if penumbra is None else penumbra
    return {"core_ml": Metric("core_ml", core, "mL", ""),
            "hypoperfusion_ml": Metric("hypoperfusion_ml", hypo, "mL", ""),
            "penumbra_ml": Metric("penumbra_ml", penumbra, "mL", ""),
            "mismatch_ml": Metric("mismatch_ml", hypo - core, "mL", ""),
            "mismatch_ratio": ratio("mismatch_ratio", hypo, core, what="core")}


def statuses(rule):
    return [c.status for c in rule.criteria]


@pytest.mark.parametrize("core, hypo, expected", [
    (69.99, 200.0, True), (70.0, 200.0, False),        # core < 70
    (10.0, 18.0, False), (20.0, 36.0001, True),         # 18/10 == 1.8 passes, 8 mL fails
    (20.0, 34.9999, False), (20.0, 35.0, True),         # mismatch >= 15 (ratio 1.75 at 35!)
])
def test_defuse3(core, hypo, expected):
    rule = defuse3(metrics(core, hypo))
    if (core, hypo) == (10.0, 18.0):
        # ratio exactly 1.8 passes (≥); the mismatch of 8 mL fails
        assert statuses(rule) == ["pass", "pass", "fail"]
    if (core, hypo) == (20.0, 35.0):
        assert statuses(rule) == ["pass", "fail", "pass"] and rule.eligible is False
        return
    if (core, hypo) == (20.0, 34.9999):
        assert statuses(rule)[2] == "fail"
        return
    assert rule.eligible is expected
    assert (rule.reasons == []) is expected


def test_defuse3_each_threshold_alone():
    # ratio flips at exactly 1.8 with a large mismatch
    assert statuses(defuse3(metrics(20.0, 36.0)))[1] == "pass"       # 36/20 == 1.8
    assert statuses(defuse3(metrics(20.0, 35.999)))[1] == "fail"
    # mismatch flips at exactly 15 mL with a large ratio
    assert statuses(defuse3(metrics(5.0, 20.0)))[2] == "pass"
    assert statuses(defuse3(metrics(5.0, 19.999)))[2] == "fail"
    assert defuse3(metrics(5.0, 20.0)).eligible is True


@pytest.mark.parametrize("core, hypo, expected_statuses", [
    (69.999, 200.0, ["pass", "pass", "pass"]), (70.0, 200.0, ["fail", "pass", "pass"]),
    (60.0, 72.0, ["pass", "fail", "pass"]),       # ratio exactly 1.2 fails (> 1.2)
    (60.0, 72.001, ["pass", "pass", "pass"]),
    (5.0, 15.0, ["pass", "pass", "fail"]),        # mismatch exactly 10 fails (> 10)
    (5.0, 15.001, ["pass", "pass", "pass"]),
])
def test_extend_ia(core, hypo, expected_statuses):
    rule = extend_ia(metrics(core, hypo))
    assert statuses(rule) == expected_statuses
    assert rule.eligible is (expected_statuses == ["pass"] * 3)


def test_core_zero_infinite_ratio_passes_and_no_hypoperfusion_fails():
    rule = defuse3(metrics(0.0, 30.0))
    assert rule.eligible is True
    assert rule.criteria[1].value is None and "infinite" in rule.criteria[1].reason
    rule = defuse3(metrics(0.0, 0.0))
    assert rule.eligible is False
    assert statuses(rule) == ["pass", "fail", "fail"]
    assert extend_ia(metrics(0.0, 10.5)).eligible is True
    json.dumps([r.to_dict() for r in evaluate_criteria(metrics(0.0, 0.0))], allow_nan=False)


@pytest.mark.parametrize("age, nihss, core, eligible, group", [
    (85, 10, 20.99, True, "DAWN group A"), (85, 10, 21.0, False, None),
    (80, 12, 20.0, True, "DAWN group A"),   # 80 is group A (≥ 80)
    (79, 10, 30.99, True, "DAWN group B"), (79, 10, 31.0, False, None),
    (79, 20, 31.0, True, "DAWN group C"), (79, 20, 30.99, True, "DAWN group B"),
    (79, 20, 50.99, True, "DAWN group C"), (79, 20, 51.0, False, None),
    (79, 19, 40.0, False, None), (85, 9, 5.0, False, None), (85, 25, 40.0, False, None),
])
def test_dawn_truth_table(age, nihss, core, eligible, group):
    rule = dawn(metrics(core, core + 50), age=age, nihss=nihss)
    assert rule.eligible is eligible
    assert rule.matched_group == group
    if not eligible:
        assert len(rule.reasons) == 3  # one line per failing group


@pytest.mark.parametrize("age, nihss, core, eligible", [
    (None, None, 10.0, None), (None, 15, 10.0, None), (70, None, 10.0, None),
    (None, None, 60.0, False),      # no group can take a core ≥ 51 mL: missing data irrelevant
    (None, 5, 10.0, False),         # NIHSS < 10 fails every group
    (85, None, 25.0, False),        # A: core too big; B, C: age
])
def test_dawn_missing_inputs(age, nihss, core, eligible):
    rule = dawn(metrics(core, core + 50), age=age, nihss=nihss)
    assert rule.eligible is eligible
    if eligible is None:
        assert rule.status == "indeterminate"
        assert any("not given" in r for r in rule.reasons)


@pytest.mark.parametrize("core, pen, collateral, eligible", [
    (69.99, 15.01, 2, True), (70.0, 15.01, 2, False), (10.0, 15.0, 2, False),
    (10.0, 40.0, 1, False), (10.0, 40.0, 3, True), (10.0, 40.0, None, None),
    (80.0, 40.0, None, False),
])
def test_tissue_rule(core, pen, collateral, eligible):
    rule = tissue_rule(metrics(core, core + pen, pen), collateral)
    assert rule.eligible is eligible
    if collateral is None:
        assert rule.criteria[2].status == "unknown"
        assert "collateral" in " ".join(rule.reasons)


def test_evaluate_all_is_json_ready_with_disclaimer_and_reasons():
    rules = evaluate_criteria(metrics(80.0, 100.0), age=70, nihss=12, collateral_score=3)
    names = [r.rule for r in rules]
    assert names[:3] == ["DEFUSE 3", "EXTEND-IA", "DAWN"] and "illustrative" in names[3]
    assert all(r.eligible is False for r in rules)
    data = json.loads(json.dumps([r.to_dict() for r in rules], allow_nan=False))
    assert data[0]["disclaimer"] == DISCLAIMER
    assert data[0]["status"] == "not eligible"
    assert any("core volume 80 mL is not below 70 mL" in r for r in data[0]["reasons"])
    assert data[0]["criteria"][0] == {"name": "core volume", "value": 80.0, "unit": "mL",
                                      "threshold": "< 70 mL", "status": "fail",
                                      "reason": "core volume 80 mL is not below 70 mL"}
    assert "ICA or M1 occlusion" in data[0]["not_checked"]
    assert data[2]["groups"][0]["rule"] == "DAWN group A"


def test_plain_numbers_accepted():
    rule = defuse3({"core_ml": 10.0, "mismatch_ratio": float("inf"), "mismatch_ml": 30.0})
    assert rule.eligible is True


# --- Quality gate (issue 9) ------------------------------------------------------------------
from StrokeMismatchLib.criteria import INDETERMINATE_QUALITY, apply_quality_gate  # noqa: E402
from StrokeMismatchLib.quality import QualityFlag  # noqa: E402

_ERROR = QualityFlag("adc_values", "error", "The ADC map does not look like an ADC.", "why",
                     value=463.0, threshold="550–1100", unit="×10⁻⁶ mm²/s")
_WARNING = QualityFlag("motion", "warning", "Head motion up to 3 mm.", "why")


def test_quality_error_makes_every_rule_indeterminate_and_keeps_the_numbers():
    rules = evaluate_criteria(metrics(10.0, 80.0), age=70, nihss=12, collateral_score=3)
    assert [r.eligible for r in rules] == [True, True, True, True]
    gated = apply_quality_gate(rules, [_WARNING, _ERROR])
    for before, after in zip(rules, gated):
        assert after.eligible is None
        assert after.status == INDETERMINATE_QUALITY
        assert after.reasons[0] == "Quality: adc_values: The ADC map does not look like an ADC."
        assert [c.value for c in after.criteria] == [c.value for c in before.criteria]
        data = after.to_dict()
        assert data["status"] == "indeterminate (quality)" and data["eligible"] is None
        assert data["ungated_status"] == "eligible" and data["quality_codes"] == ["adc_values"]
        json.dumps(data, allow_nan=False)
    dawn_rule = gated[2]
    assert dawn_rule.matched_group is None
    assert all(g.eligible is None for g in dawn_rule.groups)
    assert rules[0].eligible is True and rules[0].quality_status is None  # inputs untouched


def test_quality_gate_names_each_error_and_also_gates_not_eligible():
    second = QualityFlag("no_bolus", "error", "No contrast bolus was detected.", "why")
    rules = evaluate_criteria(metrics(100.0, 120.0))
    assert rules[0].eligible is False
    gated = apply_quality_gate(rules, [_ERROR.to_dict(), second])  # dicts work too
    assert gated[0].eligible is None
    assert gated[0].reasons[:2] == ["Quality: adc_values: The ADC map does not look like an ADC.",
                                    "Quality: no_bolus: No contrast bolus was detected."]
    assert gated[0].to_dict()["ungated_status"] == "not eligible"


def test_quality_warnings_leave_verdicts_and_mark_them():
    rules = evaluate_criteria(metrics(10.0, 80.0))
    gated = apply_quality_gate(rules, [_WARNING, QualityFlag("x", "info", "m", "e")])
    assert [g.eligible for g in gated] == [r.eligible for r in rules]
    assert gated[0].status == "eligible"
    assert gated[0].to_dict()["quality_status"] == "warn"
    assert gated[0].quality_codes == ["motion"]
    clean = apply_quality_gate(rules, [])
    assert clean[0].to_dict()["quality_status"] == "pass" and clean[0].status == "eligible"


def test_quality_gate_applied_again_starts_from_the_ungated_verdict():
    rules = evaluate_criteria(metrics(10.0, 80.0), age=70, nihss=12)
    once = apply_quality_gate(rules, [_ERROR])
    twice = apply_quality_gate(once, [_ERROR])
    assert twice[0].reasons == once[0].reasons  # no duplicated quality reasons
    released = apply_quality_gate(once, [])
    assert [r.eligible for r in released] == [r.eligible for r in rules]
    assert released[2].matched_group == rules[2].matched_group == "DAWN group B"
