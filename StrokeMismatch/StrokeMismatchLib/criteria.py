"""Trial imaging criteria with per-criterion reasons (PERFUSION.md §10).

Each criterion reports its value, threshold and status ("pass", "fail", "unknown"). A rule is
eligible (True) when all criteria pass, not eligible (False) when any fails, and indeterminate
(None) when none fails but an input is missing. Only the imaging part (and, for DAWN, the
age/NIHSS groups) is evaluated; time window and occlusion site are listed in ``not_checked``.

Decision support for research and teaching, not a medical device.

Sources: DEFUSE 3 (Albers et al., NEJM 2018), EXTEND-IA (Campbell et al., NEJM 2015),
DAWN (Nogueira et al., NEJM 2018). The tissue rule is illustrative, not a trial.
"""

from __future__ import annotations

import dataclasses
import math
import operator
from dataclasses import dataclass, field

from . import DISCLAIMER

PASS, FAIL, UNKNOWN = "pass", "fail", "unknown"
INDETERMINATE_QUALITY = "indeterminate (quality)"
_VERDICTS = {True: "eligible", False: "not eligible", None: "indeterminate"}
_OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}
_WORDS = {"<": "below", "<=": "at most", ">": "above", ">=": "at least"}


@dataclass
class Criterion:
    """One test: ``name``, ``value`` (None when unknown/infinite), ``threshold`` text,
    ``status`` and a sentence ``reason``."""

    name: str
    value: float | None
    threshold: str
    status: str
    reason: str
    unit: str = ""

    def to_dict(self) -> dict:
        value = self.value
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        return {"name": self.name, "value": value, "unit": self.unit,
                "threshold": self.threshold, "status": self.status, "reason": self.reason}


@dataclass
class RuleResult:
    """A trial rule: ``eligible`` True / False / None (indeterminate), its criteria and the
    reasons (failing and unknown criteria in words)."""

    rule: str
    eligible: bool | None
    criteria: list
    reasons: list
    not_checked: list = field(default_factory=list)
    note: str = ""
    groups: list = field(default_factory=list)
    matched_group: str | None = None
    #: Set by :func:`apply_quality_gate`: "pass" | "warn" | "fail", the codes behind it, and the
    #: verdict the imaging numbers alone would give (kept visible, never acted on when "fail").
    quality_status: str | None = None
    quality_codes: list = field(default_factory=list)
    ungated_eligible: bool | None = None

    @property
    def gated(self) -> bool:
        """True when a quality error made this rule indeterminate."""
        return self.quality_status == "fail"

    @property
    def status(self) -> str:
        if self.gated:
            return INDETERMINATE_QUALITY
        return {True: "eligible", False: "not eligible", None: "indeterminate"}[self.eligible]

    def to_dict(self) -> dict:
        out = {"rule": self.rule, "eligible": self.eligible, "status": self.status,
               "criteria": [c.to_dict() for c in self.criteria], "reasons": list(self.reasons),
               "not_checked": list(self.not_checked), "note": self.note,
               "disclaimer": DISCLAIMER}
        if self.groups:
            out["groups"] = [g.to_dict() for g in self.groups]
            out["matched_group"] = self.matched_group
        if self.quality_status is not None:
            out["quality_status"] = self.quality_status
            out["quality_codes"] = list(self.quality_codes)
            if self.gated:
                out["ungated_status"] = _VERDICTS[self.ungated_eligible]
        return out


def _metric(metrics: dict, name: str):
    """(value, flag) of a metric given as Metric, dict or plain number."""
    item = metrics.get(name)
    if item is None:
        return None, "missing"
    if hasattr(item, "value"):
        return item.value, getattr(item, "flag", None)
    if isinstance(item, dict):
        return item.get("value"), item.get("flag")
    value = float(item)
    if math.isinf(value):
        return None, "infinite"
    if math.isnan(value):
        return None, "undefined"
    return value, None


def compare(name: str, value, op: str, threshold: float, unit: str = "", *, flag=None,
            missing_reason: str = "") -> Criterion:
    """A criterion ``value op threshold``. ``flag`` "infinite" counts as +∞; a None value
    without that flag is unknown."""
    text = f"{op} {threshold:g}{(' ' + unit) if unit else ''}"
    if value is None and flag == "infinite":
        ok = _OPS[op](math.inf, threshold)
        reason = f"{name} is infinite (core 0 mL), {'which passes' if ok else 'fails'} {text}"
        return Criterion(name, None, text, PASS if ok else FAIL, reason, unit)
    if value is None and flag == "undefined":
        return Criterion(name, None, text, FAIL,
                         f"{name} is undefined (no hypoperfusion and no core): not {text}", unit)
    if value is None:
        return Criterion(name, None, text, UNKNOWN,
                         missing_reason or f"{name} is not available", unit)
    ok = _OPS[op](float(value), threshold)
    shown = f"{float(value):.4g}{(' ' + unit) if unit else ''}"
    if ok:
        reason = f"{name} {shown} is {_WORDS[op]} {threshold:g}{(' ' + unit) if unit else ''}"
    else:
        reason = (f"{name} {shown} is not {_WORDS[op]} "
                  f"{threshold:g}{(' ' + unit) if unit else ''}")
    return Criterion(name, float(value), text, PASS if ok else FAIL, reason, unit)


def _rule(rule: str, criteria: list, not_checked=(), note: str = "") -> RuleResult:
    statuses = [c.status for c in criteria]
    if FAIL in statuses:
        eligible = False
    elif UNKNOWN in statuses:
        eligible = None
    else:
        eligible = True
    reasons = [c.reason for c in criteria if c.status != PASS]
    return RuleResult(rule, eligible, criteria, reasons, list(not_checked), note)


def defuse3(metrics: dict) -> RuleResult:
    """DEFUSE 3 imaging: core < 70 mL, mismatch ratio ≥ 1.8, mismatch volume ≥ 15 mL."""
    core, _ = _metric(metrics, "core_ml")
    ratio, flag = _metric(metrics, "mismatch_ratio")
    mismatch, _ = _metric(metrics, "mismatch_ml")
    return _rule("DEFUSE 3", [
        compare("core volume", core, "<", 70.0, "mL"),
        compare("mismatch ratio", ratio, ">=", 1.8, flag=flag),
        compare("mismatch volume", mismatch, ">=", 15.0, "mL"),
    ], ["time window 6–16 h", "age 18–90", "NIHSS ≥ 6", "ICA or M1 occlusion"],
        "Imaging criteria of DEFUSE 3 (Albers et al., NEJM 2018).")


def extend_ia(metrics: dict) -> RuleResult:
    """EXTEND-IA imaging: core < 70 mL, mismatch ratio > 1.2, mismatch volume > 10 mL."""
    core, _ = _metric(metrics, "core_ml")
    ratio, flag = _metric(metrics, "mismatch_ratio")
    mismatch, _ = _metric(metrics, "mismatch_ml")
    return _rule("EXTEND-IA", [
        compare("core volume", core, "<", 70.0, "mL"),
        compare("mismatch ratio", ratio, ">", 1.2, flag=flag),
        compare("mismatch volume", mismatch, ">", 10.0, "mL"),
    ], ["< 4.5 h, IV alteplase", "ICA or M1 occlusion"],
        "Imaging criteria of EXTEND-IA (Campbell et al., NEJM 2015).")


def dawn(metrics: dict, age=None, nihss=None) -> RuleResult:
    """DAWN clinical–core mismatch, groups A/B/C; eligible if any group is."""
    core, _ = _metric(metrics, "core_ml")
    age_missing = "age not given"
    nihss_missing = "NIHSS not given"
    groups = [
        _rule("DAWN group A", [
            compare("age", age, ">=", 80.0, "years", missing_reason=age_missing),
            compare("NIHSS", nihss, ">=", 10.0, missing_reason=nihss_missing),
            compare("core volume", core, "<", 21.0, "mL")]),
        _rule("DAWN group B", [
            compare("age", age, "<", 80.0, "years", missing_reason=age_missing),
            compare("NIHSS", nihss, ">=", 10.0, missing_reason=nihss_missing),
            compare("core volume", core, "<", 31.0, "mL")]),
        _rule("DAWN group C", [
            compare("age", age, "<", 80.0, "years", missing_reason=age_missing),
            compare("NIHSS", nihss, ">=", 20.0, missing_reason=nihss_missing),
            compare("core volume", core, ">=", 31.0, "mL"),
            compare("core volume", core, "<", 51.0, "mL")]),
    ]
    results = [g.eligible for g in groups]
    if True in results:
        eligible = True
    elif None in results:
        eligible = None
    else:
        eligible = False
    matched = next((g.rule for g in groups if g.eligible), None)
    criteria = [c for g in groups for c in g.criteria]
    if eligible:
        reasons = []
    else:
        reasons = [f"{g.rule}: {'; '.join(g.reasons)}" for g in groups if g.eligible is not True]
    result = RuleResult("DAWN", eligible, criteria, reasons,
                        ["time window 6–24 h", "ICA or M1 occlusion"],
                        "Clinical–core mismatch of DAWN (Nogueira et al., NEJM 2018); "
                        "eligible when any group A/B/C is.", groups, matched)
    return result


def tissue_rule(metrics: dict, collateral_score=None) -> RuleResult:
    """Illustrative tissue rule: core < 70 mL, penumbra > 15 mL, collateral score ≥ 2."""
    core, _ = _metric(metrics, "core_ml")
    penumbra, _ = _metric(metrics, "penumbra_ml")
    return _rule("Tissue rule (illustrative)", [
        compare("core volume", core, "<", 70.0, "mL"),
        compare("penumbra volume", penumbra, ">", 15.0, "mL"),
        compare("collateral score", collateral_score, ">=", 2.0,
                missing_reason="collateral score not given (enter it to evaluate this rule)"),
    ], [], "Illustrative product-style rule, not a trial criterion.")


def evaluate_criteria(metrics: dict, *, age=None, nihss=None, collateral_score=None) -> list:
    """All rules, in a fixed order: DEFUSE 3, EXTEND-IA, DAWN, tissue rule."""
    return [defuse3(metrics), extend_ia(metrics), dawn(metrics, age, nihss),
            tissue_rule(metrics, collateral_score)]


def _ungated(rule: RuleResult) -> RuleResult:
    """The rule as its criteria alone decide it (undoes an earlier gate)."""
    if rule.quality_status is None:
        return rule
    prefix = "Quality: "
    groups = [_ungated(g) for g in rule.groups]
    matched = next((g.rule for g in groups if g.eligible), None) if groups else rule.matched_group
    return dataclasses.replace(
        rule, eligible=rule.ungated_eligible if rule.gated else rule.eligible,
        reasons=[r for r in rule.reasons if not str(r).startswith(prefix)], groups=groups,
        matched_group=matched, quality_status=None, quality_codes=[], ungated_eligible=None)


def apply_quality_gate(rules: list, flags) -> list:
    """Trial rules after the quality gate (issue 9), as new RuleResult objects.

    Any flag of severity "error" makes every rule indeterminate: ``eligible`` None, status
    "indeterminate (quality)", and a reason "Quality: <code>: <message>" per failing finding in
    front of the rule's own reasons. The criteria and their values stay as they were, and the
    verdict the numbers alone give is kept in ``ungated_eligible`` (summary: ``ungated_status``)
    for review. Warnings leave the verdict standing and mark it (``quality_status`` "warn",
    ``quality_codes``). ``flags``: QualityFlag objects or their dicts. Applying the gate again
    (e.g. with new flags) starts from the ungated verdicts.
    """
    from .quality import _as_flag

    items = [_as_flag(f) for f in (flags or ())]
    errors = [f for f in items if f.severity == "error"]
    warnings = [f for f in items if f.severity == "warning"]
    gated = []
    for rule in rules:
        rule = _ungated(rule)
        if errors:
            reasons = [f"Quality: {f.code}: {f.message}" for f in errors]
            groups = [dataclasses.replace(g, eligible=None, quality_status="fail",
                                          quality_codes=[f.code for f in errors],
                                          ungated_eligible=g.eligible) for g in rule.groups]
            gated.append(dataclasses.replace(
                rule, eligible=None, reasons=reasons + list(rule.reasons), groups=groups,
                matched_group=None, quality_status="fail",
                quality_codes=[f.code for f in errors], ungated_eligible=rule.eligible))
        else:
            gated.append(dataclasses.replace(
                rule, quality_status="warn" if warnings else "pass",
                quality_codes=[f.code for f in warnings]))
    return gated


def criteria_to_dicts(rules: list) -> list:
    return [r.to_dict() for r in rules]
