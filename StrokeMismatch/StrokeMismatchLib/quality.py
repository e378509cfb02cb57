"""Quality-control flags for one analysed case, the quality status and the verdict gate.

Each :class:`QualityFlag` has a ``code``, a ``severity``, a ``message`` with the measured
numbers, an ``explanation`` of what it means for trusting the core/penumbra mismatch, and when
it rests on one number its ``value``, ``threshold`` and ``unit``. :func:`quality_status` turns
the flags into ``pass`` / ``warn`` / ``fail``; :func:`criteria.apply_quality_gate` makes every
trial verdict "indeterminate (quality)" on any error (issue 9). docs/QUALITY.md has the table.

Severity, our rule: **error** when the input or the result cannot support a verdict (the
numbers would be wrong in an unknown direction, or the images do not describe one stroke);
**warning** when the verdict stands but a known bias or risk needs a look; **info** otherwise.
None of these fires on the demo phantoms (MR, CT, with and without lesion; tested).

Errors (block every verdict):
- ``no_bolus`` (PERFUSION.md §2.6, issue 17): brain-average enhancement below 5 % signal drop
  (MR; DSC first passes drop the brain average 15–40 %, demo 19 %; BOLD/drift ≤ 2–3 %) or 2 HU
  (CT; real brain averages 5–20 HU, demo 5 HU, a CT without contrast 0), or below 10 × the
  noise of that curve, or rising from 10 % to 90 % over more than 30 s (drift; a first pass
  rises in ≈ 5–15 s).
- ``baseline_during_bolus``: after the peak the brain-average curve falls below the frames
  used as baseline by more than the bolus threshold and 20 % of the peak (real curves stay at
  or above baseline: recirculation); the scan started during the bolus.
- ``bolus_truncated`` (error part): the brain tissue curve peaks in the last frames or still
  stands above 50 % of its peak at the end: the first pass was cut (a 30 s MR scan found 0 of
  73 mL Tmax > 6 s). 30–50 % stays a warning (CBV/CBF biased low, PERFUSION.md §2.3).
- ``aif_missing``; ``aif_low`` below 1.0 × the brain tissue peak (not arterial blood; 1.0–1.5
  warns); ``aif_late``: the AIF peaks after the brain tissue average (a vein or a downstream
  artery: every Tmax is shifted, the deficit hidden).
- ``implausible_values``: brain median MTT outside 1–20 s (healthy 3–6 s), median Tmax above
  6 s (more than half the brain "hypoperfused"), CT median CBF outside 5–150 mL/100 g/min:
  a wrong AIF, frame times or brain mask.
- ``adc_coverage`` below 80 % of the analysed brain (95–80 % warns): the ADC is not of this
  brain or slab; ``adc_values``: parenchyma (ADC < 2000) median outside 550–1100 ×10⁻⁶ mm²/s
  (normal 600–1000 plus margin) or less than half the brain below 2000 (a DWI image, a wrong
  unit or scale).
- ``core_fraction``: core above 50 % of the analysed brain (larger than a hemisphere).
- ``core_deficit_opposite_sides``: a core ≥ 5 mL with ≥ 80 % of it in the hemisphere opposite
  the Tmax deficit (flipped header, another patient's ADC); ``core_outside_deficit``: a core
  ≥ 5 mL with < 10 % of it inside a deficit ≥ 5 mL (Tmax above the hypoperfusion threshold or
  the lower reported thresholds).
- ``hypoperfusion_scattered``: a deficit ≥ 5 mL whose largest connected part holds < 50 % of
  it (noise specks, not a territory; healthy CT at 10 HU 27–31 %, real lesions ≥ 94 %);
  ``hypoperfusion_not_lateralised``: a deficit ≥ 10 mL (the smallest EXTEND-IA mismatch) with
  no affected side and a cleaned deficit whose asymmetry index |R − L|/(R + L) is below 0.5.

The mask findings (LESION_CODES) are recomputed when a case is re-thresholded
(:func:`refresh_lesion_flags`); the others describe the input and stay with the case.

Warnings: ``short_scan`` (< 60 s; 60–70 s recommended), ``bolus_truncated`` (30–50 %, or the
venous curve or the AIF not returning), ``aif_noisy`` (baseline noise > 20 % of the AIF peak),
``aif_warning``, ``motion`` (> 2 mm corrected), ``motion_failed_frames``,
``few_baseline_frames`` (< 3), ``baseline_warning``, ``undefined_values`` (> 10 % of brain
voxels without values). Info: ``variable_frame_rate``, ``motion_not_corrected``, small motion.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
#: Below this fraction of the analysed brain with a valid ADC, the core may be missed (warning).
ADC_MIN_COVERAGE = 0.95


def adc_coverage_message(coverage: float) -> str:
    """The warning for an ADC map that does not cover the analysed brain."""
    return (f"The ADC map covers only {100 * coverage:.0f} % of the analysed brain: an ischemic core "
            "outside it cannot be found, so the core may be underestimated. Check that the ADC and "
            "the perfusion series are from the same session and cover the same region.")


SEVERITIES = ("info", "warning", "error")

MIN_DURATION_S = 60.0
TRUNCATION_END_FRACTION = 0.30
AIF_MIN_RATIO = 1.5
AIF_ERROR_RATIO = 1.0
AIF_MAX_NOISE_FRACTION = 0.20
MIN_BASELINE_FRAMES = 3
MTT_RANGE_S = (1.0, 20.0)
TMAX_BRAIN_MEDIAN_MAX_S = 6.0
CT_CBF_RANGE = (5.0, 150.0)
MAX_UNDEFINED_FRACTION = 0.10
ADC_ERROR_COVERAGE = 0.80

TRUNCATION_ERROR_FRACTION = 0.50
TRUNCATION_SEVERE_EXPLANATION = (
    " Here the scan stopped during the first pass: delayed (hypoperfused) tissue has not even "
    "peaked, so Tmax cannot exceed the frames acquired and the hypoperfused volume is "
    "meaningless (measured: a 30 s MR scan found 0 mL of a 73 mL Tmax > 6 s region).")

TRUNCATION_EXPLANATION = (
    "When the bolus has not washed out before the scan ends, the areas under the curves are "
    "cut short: CBV and CBF are underestimated and MTT/Tmax become unreliable, which can "
    "enlarge the apparent core and distort the mismatch. Treat volumes with caution."
)


@dataclass(frozen=True)
class QualityFlag:
    """One quality finding: ``code``, ``severity`` (info|warning|error), ``message`` (what was
    measured) and ``explanation`` (what it means for trusting the mismatch); optionally the
    measured ``value``, the ``threshold`` it was compared with and their ``unit``.

    Severity "error" means the case cannot support a verdict: :func:`quality_status` is
    "fail" and :func:`criteria.apply_quality_gate` makes every trial rule indeterminate."""

    code: str
    severity: str
    message: str
    explanation: str
    value: float | None = None
    threshold: str | float | None = None
    unit: str = ""

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    @property
    def blocks_verdict(self) -> bool:
        """True for severity "error": the case cannot support a trial verdict."""
        return self.severity == "error"

    def to_dict(self) -> dict:
        """JSON-ready dict (``value`` None when the finding has no single number; NaN/inf → None)."""
        data = asdict(self)
        value = data["value"]
        if value is not None:
            value = float(value)
            data["value"] = value if np.isfinite(value) else None
        return data


def _get(obj, name, default=None):
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _brain_curve(concentration, mask):
    """Mean curve [T] over the mask (all voxels without one), summed chunk by chunk so that a
    large series is never copied whole; None when it is not finite."""
    if concentration is None:
        return None
    from .concentration import mean_curve

    concentration = np.asarray(concentration)
    use = np.asarray(mask, dtype=bool) if mask is not None and np.any(mask) else None
    with np.errstate(all="ignore"):
        curve = mean_curve(concentration, use)
        if not np.all(np.isfinite(curve)):  # a few NaN voxels (library use): ignore them
            curves = concentration[use] if use is not None else concentration.reshape(
                -1, concentration.shape[-1])
            curve = np.nanmean(curves, axis=0)
    return curve if np.all(np.isfinite(curve)) else None


def _venous_curve(concentration, mask, aif_time_to_peak, times):
    """Mean curve of the 0.5 % brain voxels with the largest area that peak after the AIF
    (the veins and sinuses; PERFUSION.md §3.3)."""
    if concentration is None or mask is None or not np.any(mask):
        return None
    curves = np.asarray(concentration)[np.asarray(mask, dtype=bool)].astype(float)
    curves = curves[np.all(np.isfinite(curves), axis=1)]
    if curves.shape[0] < 20:
        return None
    t = times - times[0]
    late = t[np.argmax(curves, axis=1)] > (aif_time_to_peak if aif_time_to_peak is not None else -np.inf)
    curves = curves[late]
    if curves.shape[0] < 5:
        return None
    # Drop noise-dominated voxels (e.g. background at the mask edge): noisy pre-bolus frames.
    noise = np.std(curves[:, : max(3, min(8, curves.shape[1] // 8))], axis=1)
    curves = curves[noise <= 3.0 * np.median(noise) + 1e-12]
    if curves.shape[0] < 5:
        return None
    area = np.trapezoid(curves, times, axis=1)
    n = max(5, int(0.005 * curves.shape[0]))
    return curves[np.argsort(area)[-n:]].mean(axis=0)


def _end_fraction(curve, times):
    """(mean of the last 3 frames − baseline) / (peak − baseline), and peak index."""
    curve = np.asarray(curve, dtype=float)
    base = float(np.median(curve[: max(2, min(5, curve.size // 10))]))
    peak_index = int(np.argmax(curve))
    height = float(curve[peak_index]) - base
    if not np.isfinite(height) or height <= 0:
        return None, peak_index
    return (float(np.mean(curve[-3:])) - base) / height, peak_index


def _check_duration_and_truncation(times, concentration, mask, aif):
    flags = []
    # Each frame covers one interval: 60 frames at 1 s make a 60 s scan.
    duration = float(times[-1] - times[0] + (np.median(np.diff(times)) if times.size > 1 else 0.0))
    if duration < MIN_DURATION_S:
        flags.append(QualityFlag(
            "short_scan", "warning",
            f"The acquisition lasts {duration:.0f} s (< {MIN_DURATION_S:.0f} s recommended).",
            "Short perfusion scans often end before the bolus has passed through slow, "
            "collateral-fed tissue. " + TRUNCATION_EXPLANATION,
        ))
    reasons = []
    severe = False
    end_value = None
    tissue = _brain_curve(concentration, mask)
    if tissue is not None and tissue.size >= 5:
        fraction, peak_index = _end_fraction(tissue, times)
        end_value = None if fraction is None else 100 * fraction
        if peak_index >= tissue.size - max(2, tissue.size // 10):
            reasons.append("the brain tissue curve peaks in the last frames")
            severe = True
        elif fraction is not None and fraction > TRUNCATION_END_FRACTION:
            reasons.append(f"the brain tissue curve ends at {100 * fraction:.0f} % of its peak")
            severe = fraction > TRUNCATION_ERROR_FRACTION
    aif_quality = _get(aif, "quality", {}) or {}
    venous = _venous_curve(concentration, mask, aif_quality.get("time_to_peak_s"), times)
    if venous is not None:
        fraction, _ = _end_fraction(venous, times)
        if fraction is not None and fraction > TRUNCATION_END_FRACTION:
            reasons.append(f"the venous outflow curve ends at {100 * fraction:.0f} % of its peak")
    if aif_quality.get("returns_to_baseline") is False:
        reasons.append("the AIF does not return towards baseline")
    if reasons:
        flags.append(QualityFlag(
            "bolus_truncated", "error" if severe else "warning",
            "Bolus truncation: " + "; ".join(reasons) + f" (scan {duration:.0f} s)."
            + (f" The scan ended before the brain's first pass was half washed out (error above "
               f"{100 * TRUNCATION_ERROR_FRACTION:.0f} % of the peak)." if severe else ""),
            TRUNCATION_EXPLANATION + (TRUNCATION_SEVERE_EXPLANATION if severe else ""),
            value=end_value, threshold=f"≤ {100 * TRUNCATION_END_FRACTION:.0f} (warning), "
                                       f"≤ {100 * TRUNCATION_ERROR_FRACTION:.0f} (error)",
            unit="% of peak at the end",
        ))
    return flags


def _check_aif(aif, concentration, mask, times):
    flags = []
    if aif is None:
        return [QualityFlag("aif_missing", "error", "No arterial input function was found.",
                            "Without an AIF no perfusion map, and hence no mismatch, can be computed.")]
    quality = _get(aif, "quality", {}) or {}
    curve = np.asarray(_get(aif, "curve", []), dtype=float)
    peak = quality.get("peak_height", float(np.max(curve)) if curve.size else None)
    tissue = _brain_curve(concentration, mask)
    if peak is not None and tissue is not None:
        tissue_peak = float(np.max(tissue))
        ratio = peak / tissue_peak if tissue_peak > 0 else np.inf
        if not np.isfinite(peak) or peak <= 0 or ratio < AIF_MIN_RATIO:
            not_artery = not np.isfinite(peak) or peak <= 0 or ratio < AIF_ERROR_RATIO
            flags.append(QualityFlag(
                "aif_low", "error" if not_artery else "warning",
                f"The AIF peak is only {ratio:.1f} × the average brain tissue peak "
                f"(expected well above {AIF_MIN_RATIO}"
                + (f"; below {AIF_ERROR_RATIO:g} it is not an artery)." if not_artery else ")."),
                "A low AIF usually comes from partial volume or a vein or tissue voxel chosen as "
                "artery: CBF and CBV are overestimated and their shape-dependent Tmax less "
                "reliable. Check the AIF location or choose it manually."
                + (" An 'AIF' no higher than the average tissue curve is not arterial blood: the "
                   "Tmax and hence the hypoperfused volume are meaningless." if not_artery else ""),
                value=ratio if np.isfinite(ratio) else None,
                threshold=f"≥ {AIF_MIN_RATIO:g} (warning), ≥ {AIF_ERROR_RATIO:g} (error)",
                unit="× tissue peak",
            ))
        t = times - times[0]
        aif_ttp = quality.get("time_to_peak_s", float(t[int(np.argmax(curve))]) if curve.size else None)
        tissue_ttp = float(t[int(np.argmax(tissue))])
        if aif_ttp is not None and (aif_ttp > tissue_ttp or aif_ttp > 0.75 * t[-1]):
            flags.append(QualityFlag(
                "aif_late", "error",
                f"The AIF peaks at {aif_ttp:.1f} s, later than the average brain tissue "
                f"({tissue_ttp:.1f} s).",
                "An artery should fill before the tissue it feeds. A late AIF (downstream of an "
                "occlusion, or a vein) shortens Tmax and hides delayed tissue, so the "
                "hypoperfused volume and the mismatch are underestimated. Choose an AIF in the "
                "unaffected hemisphere.",
                value=aif_ttp, threshold=f"≤ {tissue_ttp:.1f} (tissue average time to peak)",
                unit="s",
            ))
    noise = quality.get("noise_sd")
    if noise is not None and peak and peak > 0 and np.isfinite(noise) and noise / peak > AIF_MAX_NOISE_FRACTION:
        flags.append(QualityFlag(
            "aif_noisy", "warning",
            f"The AIF baseline noise is {100 * noise / peak:.0f} % of its peak.",
            "A noisy AIF makes deconvolution unstable: CBF and Tmax scatter, so threshold "
            "volumes (core, Tmax > 6 s) become less reproducible.",
        ))
    for text in _get(aif, "warnings", []) or []:
        # Notes about candidates the selection left out are information, not a problem.
        informative = "excluded" in str(text).lower()
        flags.append(QualityFlag(
            "aif_warning", "info" if informative else "warning", str(text),
            "The mismatch depends on the AIF's timing and shape; check the AIF curve before "
            "trusting the volumes.",
        ))
    return flags


def _check_motion(motion):
    if motion is None:
        return [QualityFlag(
            "motion_not_corrected", "info", "Motion correction was not run.",
            "Uncorrected head motion mixes neighbouring tissues' curves and can create false "
            "Tmax or CBF abnormalities at edges; review the maps for motion artefacts.",
        )]
    flags = []
    max_mm = float(_get(motion, "max_displacement_mm", 0.0) or 0.0)
    warn_mm = float(_get(motion, "warn_mm", 2.0) or 2.0)
    if max_mm > warn_mm:
        flags.append(QualityFlag(
            "motion", "warning",
            f"Head motion up to {max_mm:.1f} mm was estimated and corrected (threshold {warn_mm:g} mm).",
            "Large motion is the commonest cause of failed perfusion analyses: even after "
            "correction, intensities at tissue edges and through-plane motion are imperfect, so "
            "small lesions and edge voxels may be mislabelled.",
        ))
    failed = list(_get(motion, "failed_frames", []) or [])
    if failed:
        flags.append(QualityFlag(
            "motion_failed_frames", "warning",
            f"{len(failed)} frame(s) could not be registered: {', '.join(str(int(t)) for t in failed[:20])}.",
            "These frames are left as acquired; if the head moved in them, the curves are "
            "corrupted at those times and the maps may be wrong. Check those frames.",
        ))
    if not flags:
        flags.append(QualityFlag(
            "motion", "info", f"Head motion at most {max_mm:.1f} mm.",
            "Little motion: no effect on the mismatch expected.",
        ))
    return flags


def _check_baseline(baseline):
    flags = []
    if baseline is None:
        return flags
    start, stop = _get(baseline, "start"), _get(baseline, "stop")
    if start is not None and stop is not None and stop - start < MIN_BASELINE_FRAMES:
        flags.append(QualityFlag(
            "few_baseline_frames", "warning",
            f"Only {stop - start} pre-bolus baseline frame(s) (at least {MIN_BASELINE_FRAMES} needed).",
            "The baseline signal S0 (HU0) is estimated from very few frames, so every "
            "concentration curve carries its noise: all maps are noisier and biased, and the "
            "core volume less reliable. Start the scan earlier before the injection.",
        ))
    for text in _get(baseline, "warnings", []) or []:
        flags.append(QualityFlag(
            "baseline_warning", "warning", str(text),
            "Baseline problems shift every concentration curve and affect all maps.",
        ))
    return flags


def _check_values(maps, mask, modality):
    if maps is None or mask is None or not np.any(mask):
        return []
    mask = np.asarray(mask, dtype=bool)
    problems = []
    undefined = 0.0
    for name in ("cbf", "cbv", "mtt", "tmax"):
        values = _get(maps, name)
        if values is None:
            continue
        values = np.asarray(values)[mask]
        undefined = max(undefined, float(np.mean(~np.isfinite(values))))
    flags = []
    if undefined > MAX_UNDEFINED_FRACTION:
        flags.append(QualityFlag(
            "undefined_values", "warning",
            f"{100 * undefined:.0f} % of brain voxels have undefined perfusion values "
            f"(at most {100 * MAX_UNDEFINED_FRACTION:.0f} % expected).",
            "Voxels without values are never counted as core or hypoperfused: where they "
            "cluster, the volumes are underestimated. Check the input for corrupt voxels.",
            value=100 * undefined, threshold=f"≤ {100 * MAX_UNDEFINED_FRACTION:.0f}", unit="%"))

    def median(name):
        values = _get(maps, name)
        if values is None:
            return None
        values = np.asarray(values, dtype=float)[mask]
        values = values[np.isfinite(values)]
        return float(np.median(values)) if values.size else None

    mtt = median("mtt")
    if mtt is not None and not MTT_RANGE_S[0] <= mtt <= MTT_RANGE_S[1]:
        problems.append(f"brain median MTT {mtt:.1f} s (expected {MTT_RANGE_S[0]:g}–{MTT_RANGE_S[1]:g} s)")
    tmax = median("tmax")
    if tmax is not None and tmax > TMAX_BRAIN_MEDIAN_MAX_S:
        problems.append(f"brain median Tmax {tmax:.1f} s (more than half the brain above 6 s)")
    cbf = median("cbf")
    if modality == "ct" and cbf is not None and not CT_CBF_RANGE[0] <= cbf <= CT_CBF_RANGE[1]:
        problems.append(
            f"brain median CBF {cbf:.1f} mL/100 g/min (expected {CT_CBF_RANGE[0]:g}–{CT_CBF_RANGE[1]:g})"
        )
    if problems:
        flags.append(QualityFlag(
            "implausible_values", "error",
            "Implausible perfusion values: " + "; ".join(problems) + ".",
            "Values outside physiological ranges point to a wrong AIF, wrong frame times, "
            "truncation or a failed brain mask; the thresholds behind core and hypoperfusion then "
            "do not mean what they should, so no verdict can rest on them. Review the AIF and the "
            "inputs.",
            value=tmax if tmax is not None and tmax > TMAX_BRAIN_MEDIAN_MAX_S else mtt,
            threshold=(f"MTT {MTT_RANGE_S[0]:g}–{MTT_RANGE_S[1]:g} s, Tmax median ≤ "
                       f"{TMAX_BRAIN_MEDIAN_MAX_S:g} s"
                       + (f", CBF {CT_CBF_RANGE[0]:g}–{CT_CBF_RANGE[1]:g}" if modality == "ct"
                          else "")),
            unit="s"))
    return flags


def adc_coverage_flags(coverage) -> list[QualityFlag]:
    """A warning when the ADC covers less than ``ADC_MIN_COVERAGE`` of the analysed
    brain (``coverage`` fraction 0–1, None for CT / no ADC)."""

    if coverage is None or coverage >= ADC_MIN_COVERAGE:
        return []
    error = coverage < ADC_ERROR_COVERAGE
    return [QualityFlag(
        "adc_coverage", "error" if error else "warning", adc_coverage_message(coverage),
        "The MR core is read from the ADC only: brain outside the ADC's field of view is never "
        "counted as core, which inflates the mismatch and can make a case look eligible."
        + (f" Below {100 * ADC_ERROR_COVERAGE:.0f} % coverage the ADC and the perfusion series "
           "do not describe the same brain (another session, a shifted or wrong image): no "
           "verdict." if error else ""),
        value=100 * coverage,
        threshold=f"≥ {100 * ADC_MIN_COVERAGE:.0f} (warning), ≥ {100 * ADC_ERROR_COVERAGE:.0f} (error)",
        unit="% of the analysed brain",
    )]


def assess_quality(series, concentration, baseline, aif, maps, brain_mask, *, motion=None) -> list[QualityFlag]:
    """Quality flags for one case (see the module docstring). ``series`` a PerfusionSeries;
    ``concentration`` [K, J, I, T]; ``baseline`` a BaselineInfo; ``aif`` an AIFResult; ``maps``
    PerfusionMaps; ``brain_mask`` bool [K, J, I]; ``motion`` a MotionTrace (None: not run)."""
    times = np.asarray(series.times, dtype=float)
    mask = None if brain_mask is None else np.asarray(brain_mask, dtype=bool)
    flags = bolus_flags(concentration, times, baseline, mask, modality=series.modality,
                        te=getattr(series, "te", None))
    truncation = _check_duration_and_truncation(times, concentration, mask, aif)
    if flags:  # no bolus: a "truncated bolus" would only repeat it with a wrong reason
        truncation = [f for f in truncation if f.code != "bolus_truncated"]
    flags += truncation
    flags += _check_aif(aif, concentration, mask, times)
    flags += _check_motion(motion)
    flags += _check_baseline(baseline)
    flags += _check_values(maps, mask, series.modality)
    steps = np.diff(times)
    if steps.size and np.ptp(steps) > 0.1 * np.median(steps):
        flags.append(QualityFlag(
            "variable_frame_rate", "info",
            f"Frame intervals vary from {steps.min():.2f} to {steps.max():.2f} s.",
            "Variable-rate protocols are handled (curves are resampled to a uniform grid for "
            "deconvolution); no effect on the mismatch expected.",
        ))
    return flags


_STATUS_OF = {"error": "fail", "warning": "warn"}
_ORDER = {"error": 0, "warning": 1, "info": 2}


def _as_flag(flag) -> QualityFlag:
    """A QualityFlag from a QualityFlag or its dict (e.g. read back from summary.json)."""
    if isinstance(flag, QualityFlag):
        return flag
    if isinstance(flag, dict):
        known = {k: flag[k] for k in ("code", "severity", "message", "explanation", "value",
                                      "threshold", "unit") if k in flag and flag[k] is not None}
        known.setdefault("message", "")
        known.setdefault("explanation", "")
        return QualityFlag(**known)
    raise TypeError(f"Not a quality flag: {flag!r}")


def quality_status(flags) -> dict:
    """Overall quality of one case from its flags (QualityFlag or their dicts).

    ``{"status": "pass" | "warn" | "fail", "findings": [flag dicts, errors first], "errors": n,
    "warnings": n, "meaning": sentence}``: "fail" when any flag has severity "error" (the case
    cannot support a trial verdict: every verdict is indeterminate (quality)), "warn" when any
    has severity "warning" (verdicts stand but are marked), otherwise "pass". "info" findings
    are listed but never change the status.
    """
    items = [_as_flag(f) for f in (flags or ())]
    errors = sum(f.severity == "error" for f in items)
    warnings = sum(f.severity == "warning" for f in items)
    status = "fail" if errors else ("warn" if warnings else "pass")
    meaning = {
        "fail": "The input or the result cannot support a trial verdict: every verdict is "
                "indeterminate (quality). The numbers are shown for review only.",
        "warn": "Verdicts stand, but check the warnings before relying on them.",
        "pass": "No quality problem found.",
    }[status]
    findings = [f.to_dict() for f in sorted(items, key=lambda f: _ORDER[f.severity])]
    return {"status": status, "errors": errors, "warnings": warnings, "meaning": meaning,
            "findings": findings}


# --- Is there a bolus at all? (PERFUSION.md §2.6, issue 17) --------------------------------
#: Brain-average enhancement at the bolus peak needed to call it a bolus. MR: signal drop
#: 1 − exp(−TE·ΔR2*) of the brain-average curve, in %; CT: ΔHU of the brain-average curve.
BOLUS_MIN_ENHANCEMENT = {"mr": 5.0, "ct": 2.0}
BOLUS_UNITS = {"mr": "% signal drop", "ct": "HU"}
#: The enhancement must also stand this many noise SDs above the baseline (brain-average curve;
#: noise from its second differences, which ignore slow drift).
BOLUS_MIN_CNR = 10.0
#: A bolus passes in seconds: the brain-average curve rises from 10 % to 90 % of its peak
#: within this many seconds (phantom ≈ 6 s; real first passes ≲ 15 s); drift takes the run.
BOLUS_MAX_RISE_S = 30.0
#: After the peak the curve may not fall below its baseline by more than this fraction of the
#: peak height (and by more than BOLUS_MIN_ENHANCEMENT): the "baseline" was already enhanced.
BASELINE_MAX_UNDERSHOOT = 0.2


def _enhancement(height, modality, te):
    """Enhancement in the units of BOLUS_MIN_ENHANCEMENT from a ΔR2* (1/s) or ΔHU height."""
    if modality == "mr":
        return 100.0 * (1.0 - np.exp(-float(te or 0.03) * height))
    return float(height)


def bolus_measures(concentration, times, baseline, mask, *, modality, te=None) -> dict | None:
    """Figures of the brain-average concentration curve used by :func:`bolus_flags`.

    Returns a dict: ``height`` and ``undershoot`` (ΔR2* 1/s or ΔHU, 3-frame smoothed, relative
    to the median of the baseline frames), ``enhancement`` / ``undershoot_enhancement`` in
    BOLUS_UNITS, ``noise_sd`` (robust SD from second differences), ``cnr``, ``rise_s`` (10 %
    → 90 % of the height), ``peak_time_s``; None when there is no finite brain curve.
    """
    curve = _brain_curve(concentration, mask)
    if curve is None or curve.size < 5:
        return None
    curve = np.asarray(curve, dtype=float)
    times = np.asarray(times, dtype=float)
    smooth = np.convolve(curve, np.ones(3) / 3.0, mode="same")
    smooth[0], smooth[-1] = curve[0], curve[-1]
    start = int(_get(baseline, "start", 0) or 0)
    stop = int(_get(baseline, "stop", min(3, curve.size)) or min(3, curve.size))
    base = float(np.median(curve[start:max(stop, start + 1)]))
    d2 = np.diff(curve, 2)
    noise = float(np.median(np.abs(d2 - np.median(d2))) / 0.6745 / np.sqrt(6.0))
    peak = int(np.argmax(smooth))
    height = float(smooth[peak] - base)
    undershoot = float(base - np.min(smooth[peak:]))
    rise = None
    if height > 0:
        before = smooth[:peak + 1] - base
        below = np.flatnonzero(before < 0.1 * height)
        first_low = int(below[-1]) if below.size else 0
        high = np.flatnonzero(before[first_low:] >= 0.9 * height)
        rise = float(times[first_low + int(high[0])] - times[first_low]) if high.size else None
    return {
        "height": height, "undershoot": undershoot,
        "enhancement": _enhancement(height, modality, te),
        "undershoot_enhancement": (100.0 * (np.exp(float(te or 0.03) * undershoot) - 1.0)
                                   if modality == "mr" else undershoot),
        "noise_sd": noise, "cnr": height / noise if noise > 0 else np.inf,
        "rise_s": rise, "peak_time_s": float(times[peak] - times[0]),
    }


NO_BOLUS_EXPLANATION = (
    "Perfusion maps need a contrast bolus: without one (a failed injection, a wrong series such as "
    "fMRI, DWI or ASL, or pure noise) deconvolution turns noise into CBF and Tmax values, and the "
    "core, hypoperfusion and every trial verdict are meaningless. Check that this is the contrast "
    "perfusion series and that the injection reached the brain.")


def bolus_flags(concentration, times, baseline, mask, *, modality, te=None) -> list[QualityFlag]:
    """Errors when the series shows no brain-wide contrast bolus, or starts during it.

    - ``baseline_during_bolus``: after its peak the brain-average curve falls below the baseline
      by more than BASELINE_MAX_UNDERSHOOT of the peak height and by more than the bolus
      threshold: the frames used as baseline were already enhanced (the scan started after the
      injection), so every concentration curve is offset and distorted.
    - ``no_bolus``: the brain-average enhancement is below BOLUS_MIN_ENHANCEMENT, or below
      BOLUS_MIN_CNR × its noise, or rises over more than BOLUS_MAX_RISE_S (drift, not a bolus).
    """
    figures = bolus_measures(concentration, times, baseline, mask, modality=modality, te=te)
    if figures is None:
        return []
    unit = BOLUS_UNITS[modality]
    minimum = BOLUS_MIN_ENHANCEMENT[modality]
    height, undershoot = figures["height"], figures["undershoot"]
    if (figures["undershoot_enhancement"] > minimum
            and undershoot > BASELINE_MAX_UNDERSHOOT * max(height, 0.0)):
        return [QualityFlag(
            "baseline_during_bolus", "error",
            "The series seems to start during the bolus: later in the scan the brain-average "
            + (f"signal rises {figures['undershoot_enhancement']:.1f} % above"
               if modality == "mr" else
               f"density falls {figures['undershoot_enhancement']:.1f} HU below")
            + f" the frames used as its pre-contrast baseline (at most {minimum:g} "
            f"{'%' if modality == 'mr' else 'HU'} and {100 * BASELINE_MAX_UNDERSHOOT:.0f} % of "
            "the bolus peak expected): those frames were already enhanced.",
            "The pre-contrast signal (S0 or HU0) is taken from the first frames. When the contrast "
            "is already arriving there, every concentration curve is shifted and cut, the AIF "
            "loses its upslope, and CBF, CBV and Tmax are wrong everywhere. Start the perfusion "
            "scan a few seconds before the injection.",
            value=figures["undershoot_enhancement"], threshold=f"≤ {minimum:g}", unit=unit)]
    reasons = []
    if figures["enhancement"] < minimum:
        reasons.append(f"the brain-average enhancement is {figures['enhancement']:.2f} {unit} "
                       f"(at least {minimum:g} {unit} expected)")
    elif figures["cnr"] < BOLUS_MIN_CNR:
        reasons.append(f"the brain-average enhancement is only {figures['cnr']:.1f} × its noise "
                       f"(at least {BOLUS_MIN_CNR:g} expected)")
    elif figures["rise_s"] is None or figures["rise_s"] > BOLUS_MAX_RISE_S:
        rise = "never reaches 90 % of its peak" if figures["rise_s"] is None else \
            f"takes {figures['rise_s']:.0f} s to rise from 10 % to 90 % of its peak"
        reasons.append(f"the brain-average curve {rise} (a bolus does it within "
                       f"{BOLUS_MAX_RISE_S:g} s; a slow rise is drift)")
    if not reasons:
        return []
    return [QualityFlag(
        "no_bolus", "error", "No contrast bolus was detected: " + "; ".join(reasons) + ".",
        NO_BOLUS_EXPLANATION, value=figures["enhancement"], threshold=f"≥ {minimum:g}",
        unit=unit)]


# --- Is the ADC an ADC of this patient? (issue 9) ------------------------------------------
#: Median ADC of brain parenchyma (brain voxels below ADC_CSF, 10⁻⁶ mm²/s): normal grey and
#: white matter 700–900, 600–1000 with age, leukoaraiosis or a large core; the limits leave
#: 50/100 of margin. A DWI image, a wrong unit or a scaled map lands far outside.
ADC_TISSUE_RANGE = (550.0, 1100.0)
#: ADC above this is CSF-like (free water ≈ 3000 at 37 °C).
ADC_CSF = 2000.0
#: At least this fraction of the brain must be below ADC_CSF (parenchyma, not CSF).
ADC_MIN_PARENCHYMA_FRACTION = 0.5


def adc_flags(adc, brain_mask) -> list[QualityFlag]:
    """``adc_values`` error when the ADC on the perfusion grid (10⁻⁶ mm²/s, after unit
    detection) does not look like an ADC of brain: parenchyma median outside ADC_TISSUE_RANGE
    or less than ADC_MIN_PARENCHYMA_FRACTION of the brain below ADC_CSF. ``brain_mask`` the
    analysed brain (bool, same grid)."""
    if adc is None or brain_mask is None:
        return []
    adc = np.asarray(adc, dtype=float)
    brain = np.asarray(brain_mask, dtype=bool) & np.isfinite(adc)
    if brain.sum() < 50:
        return []
    values = adc[brain]
    parenchyma = values[values < ADC_CSF]
    fraction = parenchyma.size / values.size
    csf = values[values >= ADC_CSF]
    csf_text = (f"; the CSF-like voxels (≥ {ADC_CSF:g}) have median {np.median(csf):.0f}"
                if csf.size else f"; no CSF-like voxel (≥ {ADC_CSF:g}; free water ≈ 3000)")
    low, high = ADC_TISSUE_RANGE
    if fraction < ADC_MIN_PARENCHYMA_FRACTION:
        problem = (f"only {100 * fraction:.0f} % of the brain has an ADC below {ADC_CSF:g} "
                   f"×10⁻⁶ mm²/s (at least {100 * ADC_MIN_PARENCHYMA_FRACTION:.0f} % expected: "
                   "brain is mostly parenchyma, not CSF)")
        value = float(np.median(values))
    else:
        value = float(np.median(parenchyma))
        if low <= value <= high:
            return []
        problem = (f"the brain parenchyma's median ADC is {value:.0f} ×10⁻⁶ mm²/s (normal tissue "
                   f"{low:g}–{high:g})")
    return [QualityFlag(
        "adc_values", "error",
        f"The ADC map does not look like an ADC of brain: {problem}{csf_text}.",
        "The MR core is ADC < 620 ×10⁻⁶ mm²/s. A DWI (b = 1000) image loaded as ADC, a map in "
        "another unit or scale, or a wrong series puts the threshold in the wrong place: the "
        "core becomes most of the brain, or nothing. Load the ADC map (or the b = 0 and b = 1000 "
        "images so the ADC is computed) and check its unit.",
        value=value, threshold=f"{low:g}–{high:g}", unit="×10⁻⁶ mm²/s")]


# --- Is the deficit a territory? (issue 9: speckle at high CT noise) -----------------------
#: The largest connected part (26-neighbours) of a hypoperfusion of at least LESION_MIN_ML
#: must hold this fraction of it. An occluded artery leaves one territory (phantom lesions
#: ≥ 0.94 even at 10 HU); noise leaves 1–3 mL specks spread over the brain (healthy CT at
#: 10 HU: 0.27–0.31).
HYPO_MIN_LARGEST_FRACTION = 0.5
#: A hypoperfusion at least this large (the smallest mismatch that passes EXTEND-IA) with no
#: affected side (no Tmax asymmetry between the hemispheres) is not one artery's territory.
HYPO_LATERALISED_ML = 10.0
#: … unless the cleaned deficit itself is one-sided: (R − L)/(R + L) at least this in magnitude
#: (the smaller side under a third of the larger).
HYPO_CLEAN_ASYMMETRY = 0.5


def _territory_flags(lesion, hypo, hypo_ml, voxel_ml):
    from scipy import ndimage

    flags = []
    if hypo_ml >= LESION_MIN_ML:
        labels, count = ndimage.label(hypo, structure=np.ones((3, 3, 3), dtype=bool))
        sizes = np.bincount(labels[hypo], minlength=count + 1)[1:]
        largest = float(sizes.max()) * voxel_ml if sizes.size else 0.0
        share = largest / hypo_ml
        if share < HYPO_MIN_LARGEST_FRACTION:
            flags.append(QualityFlag(
                "hypoperfusion_scattered", "error",
                f"The Tmax deficit ({hypo_ml:.1f} mL) is scattered: {count} separate parts, the "
                f"largest {largest:.1f} mL ({100 * share:.0f} %; at least "
                f"{100 * HYPO_MIN_LARGEST_FRACTION:.0f} % expected of one territory).",
                "An occluded artery leaves one connected territory of delayed tissue. Specks spread "
                "over the brain are noise in the Tmax map (measured: a healthy CT phantom at "
                "10 HU noise gave 10 mL in 5 specks and an 'eligible' EXTEND-IA verdict). The "
                "volumes cannot support a verdict; a lower-noise reconstruction or thicker "
                "slices may.",
                value=100 * share, threshold=f"≥ {100 * HYPO_MIN_LARGEST_FRACTION:.0f}",
                unit="% of the deficit in its largest part"))
    side = getattr(lesion, "side", None) or {}
    hemispheres = getattr(lesion, "hemispheres", None)
    index = None
    if hemispheres is not None:
        sides = hemispheres.side_masks()
        right = float(np.count_nonzero(hypo & sides["right"]))
        left = float(np.count_nonzero(hypo & sides["left"]))
        index = (right - left) / (right + left) if right + left else 0.0
    # The side comes from the raw Tmax map; a cleaned deficit that clearly sits on one side
    # (|index| ≥ HYPO_CLEAN_ASYMMETRY) is still one territory (noisy CT lesions: raw 0.22, clean 0.95).
    lateral_after_cleanup = index is not None and abs(index) >= HYPO_CLEAN_ASYMMETRY
    if (hypo_ml >= HYPO_LATERALISED_ML and side.get("affected_side", "none") == "none"
            and not lateral_after_cleanup):
        flags.append(QualityFlag(
            "hypoperfusion_not_lateralised", "error",
            f"The Tmax deficit ({hypo_ml:.1f} mL) has no affected side: "
            f"{side.get('basis', 'no Tmax asymmetry between the hemispheres')}"
            + ("" if index is None else f"; the cleaned deficit's asymmetry index is {index:+.2f} "
               f"(|index| ≥ {HYPO_CLEAN_ASYMMETRY:g} would make it one-sided)") + ".",
            "The trial rules concern one occluded carotid or middle cerebral artery, which delays "
            "one hemisphere. A deficit spread evenly over both sides is noise, a global timing "
            "error (wrong AIF or frame times) or a condition these rules do not cover.",
            value=hypo_ml, threshold=f"< {HYPO_LATERALISED_ML:g} without an affected side",
            unit="mL"))
    return flags


# --- Do core and deficit describe one stroke? (issue 9) ------------------------------------
#: Core volumes below this are too small to tell a side or an overlap from noise.
LESION_MIN_ML = 5.0
#: A core larger than this fraction of the analysed brain is larger than a hemisphere.
CORE_MAX_BRAIN_FRACTION = 0.5
#: A side is the core's side when it holds this fraction of the core volume.
CORE_SIDE_FRACTION = 0.8
#: Less than this fraction of the core inside the Tmax deficit (Tmax > 4 s ∪ hypoperfusion)
#: means core and deficit do not overlap.
CORE_MIN_OVERLAP = 0.1


def lesion_flags(lesion, brain_mask=None) -> list[QualityFlag]:
    """Plausibility of the core against the brain and the perfusion deficit.

    - ``core_fraction``: core > CORE_MAX_BRAIN_FRACTION of the analysed brain.
    - ``core_deficit_opposite_sides``: a core (≥ LESION_MIN_ML, ≥ CORE_SIDE_FRACTION on one
      side) in the hemisphere opposite the Tmax deficit (affected side).
    - ``core_outside_deficit``: a core ≥ LESION_MIN_ML with a deficit ≥ LESION_MIN_ML, and less
      than CORE_MIN_OVERLAP of the core inside the deficit.
    ``lesion`` a LesionAnalysis; ``brain_mask`` the analysed brain (default its tissue mask).
    """
    masks = getattr(lesion, "masks", None) or {}
    core = masks.get("core")
    hypo = masks.get("hypoperfusion")
    if core is None or hypo is None:
        return []
    geometry = lesion.geometry
    voxel_ml = geometry.voxel_volume_ml
    core = np.asarray(core, dtype=bool)
    hypo = np.asarray(hypo, dtype=bool)
    brain = np.asarray(brain_mask if brain_mask is not None else masks.get("brain"), dtype=bool)
    flags = []
    core_ml = float(core.sum()) * voxel_ml
    brain_ml = float(brain.sum()) * voxel_ml
    if brain_ml > 0 and core_ml > CORE_MAX_BRAIN_FRACTION * brain_ml:
        flags.append(QualityFlag(
            "core_fraction", "error",
            f"The core is {core_ml:.0f} mL, {100 * core_ml / brain_ml:.0f} % of the analysed brain "
            f"(at most {100 * CORE_MAX_BRAIN_FRACTION:.0f} %: larger than a whole hemisphere).",
            "An infarct core larger than a hemisphere does not occur in a patient who could be "
            "considered for treatment; it means the core image is wrong (a DWI image given as "
            "ADC, a wrong unit or scale, or the wrong threshold).",
            value=100 * core_ml / brain_ml, threshold=f"≤ {100 * CORE_MAX_BRAIN_FRACTION:.0f}",
            unit="% of the brain"))
    hypo_ml = float(hypo.sum()) * voxel_ml
    flags += _territory_flags(lesion, hypo, hypo_ml, voxel_ml)
    if core_ml < LESION_MIN_ML:
        return flags
    hemispheres = getattr(lesion, "hemispheres", None)
    affected = (getattr(lesion, "side", None) or {}).get("affected_side", "none")
    if hemispheres is not None and affected in ("left", "right"):
        sides = hemispheres.side_masks()
        share = {name: float(np.count_nonzero(core & side)) * voxel_ml / core_ml
                 for name, side in sides.items()}
        other = "right" if affected == "left" else "left"
        if share[other] >= CORE_SIDE_FRACTION:
            flags.append(QualityFlag(
                "core_deficit_opposite_sides", "error",
                f"The core ({core_ml:.0f} mL) lies in the {other} hemisphere "
                f"({100 * share[other]:.0f} % of it) but the Tmax deficit is on the {affected}.",
                "One acute stroke puts its core inside its own perfusion deficit. A core in the "
                "other hemisphere means the ADC and the perfusion series do not match: a "
                "left–right flipped header, an ADC of another patient or session, or two "
                "different events. The mismatch compares unrelated regions; check the "
                "orientation of both series.",
                value=100 * share[other], threshold=f"< {100 * CORE_SIDE_FRACTION:.0f}",
                unit="% of the core opposite the deficit"))
            return flags
    if hypo_ml >= LESION_MIN_ML:
        tmax_threshold = float(getattr(getattr(lesion, "settings", None), "tmax_threshold", 6.0))
        deficit = hypo.copy()
        for key, mask in masks.items():
            if key.startswith("tmax_gt_") and float(key[len("tmax_gt_"):]) < tmax_threshold:
                deficit |= np.asarray(mask, dtype=bool)
        inside = float(np.count_nonzero(core & deficit)) * voxel_ml / core_ml
        if inside < CORE_MIN_OVERLAP:
            flags.append(QualityFlag(
                "core_outside_deficit", "error",
                f"Only {100 * inside:.0f} % of the core ({core_ml:.0f} mL) lies inside the Tmax "
                f"deficit ({hypo_ml:.0f} mL) (at least {100 * CORE_MIN_OVERLAP:.0f} % expected).",
                "The core of an acute stroke lies inside its own perfusion deficit. A core "
                "entirely outside it means the ADC does not belong to this perfusion series "
                "(another patient or session, a shifted or flipped image) or two separate "
                "events: the mismatch compares unrelated regions.",
                value=100 * inside, threshold=f"≥ {100 * CORE_MIN_OVERLAP:.0f}",
                unit="% of the core"))
    return flags


#: Findings that describe the lesion masks (they follow new thresholds); the others describe the
#: input, the AIF and the maps and stay with a case whatever its thresholds.
LESION_CODES = frozenset({"core_fraction", "core_deficit_opposite_sides", "core_outside_deficit",
                          "hypoperfusion_scattered", "hypoperfusion_not_lateralised"})


def refresh_lesion_flags(flags, lesion, brain_mask=None) -> list[QualityFlag]:
    """``flags`` (QualityFlag or dicts) with the lesion findings (LESION_CODES) recomputed for
    ``lesion`` (a LesionAnalysis, e.g. re-thresholded from the same maps)."""
    kept = [_as_flag(f) for f in (flags or ()) if _as_flag(f).code not in LESION_CODES]
    return kept + lesion_flags(lesion, brain_mask)
