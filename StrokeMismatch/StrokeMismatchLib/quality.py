"""Quality-control flags for one analysed case (summary.json, report, Slicer table).

Each :class:`QualityFlag` has a ``code``, a ``severity`` ("info", "warning", "error"), a
``message`` with the measured numbers, and an ``explanation`` of what it means for trusting
the core/penumbra mismatch. Checks (PERFUSION.md §2.3, §6, §12):

- ``short_scan``: acquisition shorter than 60 s (60–70 s recommended; median optimal CTP
  duration ≈ 33 s, 90th percentile ≈ 53 s).
- ``bolus_truncated``: the brain tissue curve or the venous outflow curve is not back near
  baseline (≤ 30 % of its peak) at the end, or peaks in the last frames; or the AIF does not
  return. Truncation biases CBV and CBF low.
- ``aif_low``, ``aif_late``, ``aif_noisy``, ``aif_warning``: a weak, late or noisy AIF.
- ``motion``, ``motion_failed_frames``, ``motion_not_corrected``.
- ``few_baseline_frames`` (< 3 pre-bolus frames), ``baseline_warning``.
- ``implausible_values``: brain medians of MTT, Tmax or (CT) CBF outside physiological ranges,
  or many undefined voxels.
- ``variable_frame_rate`` (info).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

SEVERITIES = ("info", "warning", "error")

MIN_DURATION_S = 60.0
TRUNCATION_END_FRACTION = 0.30
AIF_MIN_RATIO = 1.5
AIF_MAX_NOISE_FRACTION = 0.20
MIN_BASELINE_FRAMES = 3
MTT_RANGE_S = (1.0, 20.0)
TMAX_BRAIN_MEDIAN_MAX_S = 6.0
CT_CBF_RANGE = (5.0, 150.0)
MAX_UNDEFINED_FRACTION = 0.10

TRUNCATION_EXPLANATION = (
    "When the bolus has not washed out before the scan ends, the areas under the curves are "
    "cut short: CBV and CBF are underestimated and MTT/Tmax become unreliable, which can "
    "enlarge the apparent core and distort the mismatch. Treat volumes with caution."
)


@dataclass(frozen=True)
class QualityFlag:
    """One quality finding: ``code``, ``severity`` (info|warning|error), ``message`` (what was
    measured) and ``explanation`` (what it means for trusting the mismatch)."""

    code: str
    severity: str
    message: str
    explanation: str

    def __post_init__(self):
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity must be one of {SEVERITIES}, not {self.severity!r}")

    def to_dict(self) -> dict:
        """JSON-ready dict."""
        return asdict(self)


def _get(obj, name, default=None):
    if obj is None:
        return default
    if isinstance(obj, dict):
        return obj.get(name, default)
    return getattr(obj, name, default)


def _brain_curve(concentration, mask):
    if concentration is None:
        return None
    concentration = np.asarray(concentration)
    if mask is not None and np.any(mask):
        curves = concentration[np.asarray(mask, dtype=bool)]
    else:
        curves = concentration.reshape(-1, concentration.shape[-1])
    with np.errstate(all="ignore"):
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
    tissue = _brain_curve(concentration, mask)
    if tissue is not None and tissue.size >= 5:
        fraction, peak_index = _end_fraction(tissue, times)
        if fraction is not None and fraction > TRUNCATION_END_FRACTION:
            reasons.append(f"the brain tissue curve ends at {100 * fraction:.0f} % of its peak")
        elif peak_index >= tissue.size - max(2, tissue.size // 10):
            reasons.append("the brain tissue curve peaks in the last frames")
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
            "bolus_truncated", "warning",
            "Bolus truncation: " + "; ".join(reasons) + f" (scan {duration:.0f} s).",
            TRUNCATION_EXPLANATION,
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
            flags.append(QualityFlag(
                "aif_low", "warning",
                f"The AIF peak is only {ratio:.1f} × the average brain tissue peak "
                f"(expected well above {AIF_MIN_RATIO}).",
                "A low AIF usually comes from partial volume or a vein or tissue voxel chosen as "
                "artery: CBF and CBV are overestimated and their shape-dependent Tmax less "
                "reliable. Check the AIF location or choose it manually.",
            ))
        t = times - times[0]
        aif_ttp = quality.get("time_to_peak_s", float(t[int(np.argmax(curve))]) if curve.size else None)
        tissue_ttp = float(t[int(np.argmax(tissue))])
        if aif_ttp is not None and (aif_ttp > tissue_ttp or aif_ttp > 0.75 * t[-1]):
            flags.append(QualityFlag(
                "aif_late", "warning",
                f"The AIF peaks at {aif_ttp:.1f} s, later than the average brain tissue "
                f"({tissue_ttp:.1f} s).",
                "An artery should fill before the tissue it feeds. A late AIF (downstream of an "
                "occlusion, or a vein) shortens Tmax and hides delayed tissue, so the "
                "hypoperfused volume and the mismatch are underestimated. Choose an AIF in the "
                "unaffected hemisphere.",
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
    if undefined > MAX_UNDEFINED_FRACTION:
        problems.append(f"{100 * undefined:.0f} % of brain voxels have undefined values")

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
    if not problems:
        return []
    return [QualityFlag(
        "implausible_values", "warning",
        "Implausible perfusion values: " + "; ".join(problems) + ".",
        "Values outside physiological ranges point to a wrong AIF, wrong frame times, "
        "truncation or a failed brain mask; the thresholds behind core and hypoperfusion then "
        "do not mean what they should. Review the AIF and the inputs before using the volumes.",
    )]


def adc_coverage_flags(coverage) -> list[QualityFlag]:
    """A warning when the ADC covers less than ``analysis.ADC_MIN_COVERAGE`` of the analysed
    brain (``coverage`` fraction 0–1, None for CT / no ADC)."""
    from .analysis import ADC_MIN_COVERAGE, adc_coverage_message

    if coverage is None or coverage >= ADC_MIN_COVERAGE:
        return []
    return [QualityFlag(
        "adc_coverage", "warning", adc_coverage_message(coverage),
        "The MR core is read from the ADC only: brain outside the ADC's field of view is never "
        "counted as core, which inflates the mismatch and can make a case look eligible.",
    )]


def assess_quality(series, concentration, baseline, aif, maps, brain_mask, *, motion=None) -> list[QualityFlag]:
    """Quality flags for one case (see the module docstring). ``series`` a PerfusionSeries;
    ``concentration`` [K, J, I, T]; ``baseline`` a BaselineInfo; ``aif`` an AIFResult; ``maps``
    PerfusionMaps; ``brain_mask`` bool [K, J, I]; ``motion`` a MotionTrace (None: not run)."""
    times = np.asarray(series.times, dtype=float)
    mask = None if brain_mask is None else np.asarray(brain_mask, dtype=bool)
    flags = []
    flags += _check_duration_and_truncation(times, concentration, mask, aif)
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
