"""How stable each trial verdict is: volume-against-threshold curves and "near a cut-off".

A verdict that flips when a threshold moves a little, or whose deciding volume lies within a
few percent of a trial limit, stands on a knife's edge (in our noise tests a DEFUSE 3 verdict
flipped on a core of 68.5 mL against the 70 mL limit). This module re-runs the lesion analysis
on the case's maps (``rethreshold.rethreshold``, no deconvolution) over a grid of each
threshold and reports, per rule:

- the range of each threshold, on that grid, over which the verdict stays as it is;
- curves of volume against threshold (core against the ADC or rCBF threshold, hypoperfusion
  against the Tmax threshold) with the trial cut-offs;
- **near a cut-off** when the verdict changes within :data:`MARGINS` of the threshold used
  (±1 s Tmax, ±5 points rCBF, ±50 ×10⁻⁶ mm²/s ADC), or a volume or ratio the rule tests lies
  within ±10 % of its limit (:data:`LIMIT_MARGIN`). Our choice of margins: about one frame
  interval of Tmax, and the spread of published core thresholds (ADC 600–650, rCBF 25–38 %).

Decision support for research and teaching, not a medical device.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

#: threshold setting -> (margin for "near a cut-off", sweep grid as offsets from the value used)
MARGINS = {"tmax_threshold": 1.0, "core_adc": 50.0, "core_rcbf_percent": 5.0}
GRIDS = {
    "tmax_threshold": (-2.0, -1.0, -0.5, 0.5, 1.0, 2.0, 4.0),
    "core_adc": (-100.0, -50.0, -25.0, 25.0, 50.0, 100.0),
    "core_rcbf_percent": (-10.0, -5.0, -2.5, 2.5, 5.0, 10.0),
}
#: A tested volume or ratio within this fraction of its limit is near the cut-off.
LIMIT_MARGIN = 0.10
#: Which volume each threshold moves (for the curves).
CURVE_VOLUME = {"tmax_threshold": "hypoperfusion_ml", "core_adc": "core_ml", "core_rcbf_percent": "core_ml"}
UNITS = {"tmax_threshold": "s", "core_adc": "×10⁻⁶ mm²/s", "core_rcbf_percent": "%"}


def thresholds_for(modality: str) -> tuple:
    return ("tmax_threshold", "core_adc") if modality == "mr" else ("tmax_threshold", "core_rcbf_percent")


def verdict_stability(case, settings, rules, analyse, metrics=None) -> dict:
    """The stability block of a case (JSON-ready).

    ``case`` a ``rethreshold.CaseMaps``; ``settings`` the ``LesionSettings`` used; ``rules`` the
    case's trial rules (``criteria.RuleResult`` or their dicts, before the quality gate);
    ``analyse(case, settings) -> LesionAnalysis`` the lesion analysis of the maps
    (``rethreshold.rethreshold``, passed in so that this module stays below it); ``metrics`` the
    case's own metrics (name -> ``metrics.Metric``), the curves' volumes at the threshold used.
    Returns ``{"status": "stable" | "near_cutoff", "findings": [...], "ranges": {rule: {setting:
    [low, high]}}, "curves": {setting: {"values", "unit", volumes…, "verdicts": {rule: [...]}}},
    "margins": MARGINS, "limit_margin": LIMIT_MARGIN}``.
    """
    from .caserecord import RULE_KEYS

    current = {_key(rule, RULE_KEYS): _eligible(rule) for rule in rules}
    findings, ranges, curves = [], {key: {} for key in current}, {}
    for name in thresholds_for(case.modality):
        value = float(getattr(settings, name))
        spec_min, spec_max = _bounds(name)
        points = sorted({round(value + offset, 4) for offset in GRIDS[name]
                         if spec_min <= value + offset <= spec_max} | {value})
        verdicts = {key: [] for key in current}
        volumes = {"core_ml": [], "hypoperfusion_ml": [], "penumbra_ml": []}
        for point in points:
            if point == value:
                outcome, found = current, metrics
            else:
                lesion = analyse(case, dataclasses.replace(settings, **{name: point}))
                outcome = {_key(rule, RULE_KEYS): _eligible(rule) for rule in lesion.criteria}
                found = lesion.metrics
            for key in verdicts:
                verdicts[key].append(outcome.get(key))
            for volume in volumes:
                volumes[volume].append(None if found is None else found[volume].value)
        curves[name] = {"values": points, "unit": UNITS[name], "value_used": value,
                        "moves": CURVE_VOLUME[name], **volumes, "verdicts": verdicts}
        index = points.index(value)
        for key, series in verdicts.items():
            low, high = index, index
            while low > 0 and series[low - 1] == series[index]:
                low -= 1
            while high < len(points) - 1 and series[high + 1] == series[index]:
                high += 1
            ranges[key][name] = [points[low], points[high]]
            flips = [p for p, v in zip(points, series) if v != series[index] and abs(p - value) <= MARGINS[name] + 1e-9]
            if flips:
                nearest = min(flips, key=lambda p: abs(p - value))
                findings.append({
                    "rule": key, "setting": name,
                    "message": (f"{key}: the verdict changes at {name.replace('_', ' ')} {nearest:g} "
                                f"{UNITS[name]} (used {value:g}; margin ±{MARGINS[name]:g})")})
    for rule in rules:
        key = _key(rule, RULE_KEYS)
        for criterion in _criteria_of(rule):
            near = _near_limit(criterion)
            if near:
                findings.append({"rule": key, "setting": None, "message": f"{key}: {near}"})
    return {"status": "near_cutoff" if findings else "stable", "findings": findings, "ranges": ranges,
            "curves": curves, "margins": dict(MARGINS), "limit_margin": LIMIT_MARGIN}


# --------------------------------------------------------------------------------------------
def _bounds(name):
    from .settings import settings_by_name

    spec = settings_by_name()[name]
    return spec.minimum, spec.maximum


def _key(rule, keys):
    name = rule.rule if hasattr(rule, "rule") else rule.get("name") or rule.get("rule")
    return keys.get(name, name)


def _eligible(rule):
    return rule.eligible if hasattr(rule, "eligible") else rule.get("eligible")


CLINICAL = ("age", "NIHSS", "collateral score")


def _criteria_of(rule) -> list:
    """The measured criteria of a rule; for DAWN those of the groups whose clinical criteria
    (age, NIHSS) pass (the core limits of the other groups do not apply to the patient)."""
    data = rule.to_dict() if hasattr(rule, "to_dict") else dict(rule)
    groups = [g for g in data.get("groups") or [] if isinstance(g, dict)]
    if groups:
        items = [c for g in groups
                 if all(c.get("status") == "pass" for c in g.get("criteria") or [] if c.get("name") in CLINICAL)
                 for c in g.get("criteria") or []]
    else:
        items = list(data.get("criteria") or data.get("rules") or [])
    return [item for item in items if isinstance(item, dict) and item.get("name") not in CLINICAL]


_LIMIT = re.compile(r"^\s*([<>]=?)\s*([0-9.]+)")


def _near_limit(criterion: dict) -> str | None:
    """A sentence when a tested number lies within LIMIT_MARGIN of its limit."""
    value = criterion.get("value")
    match = _LIMIT.match(str(criterion.get("threshold") or ""))
    if value is None or not match:
        return None
    limit = float(match.group(2))
    if limit == 0 or not np.isfinite(value):
        return None
    if abs(value - limit) <= LIMIT_MARGIN * abs(limit):
        unit = criterion.get("unit") or ""
        return (f"{criterion.get('name')} {value:.4g}{(' ' + unit) if unit and unit != '1' else ''} is within "
                f"{100 * LIMIT_MARGIN:.0f} % of the limit {criterion.get('threshold')}")
    return None
