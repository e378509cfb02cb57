"""One case from a 4D perfusion series to maps, lesion masks, metrics, criteria and QC.

``run_case`` chains the science modules in the order of PERFUSION.md:

1. ``fileio.validate_series`` (times, modality, TE);
2. motion correction (``motion.correct_motion``, optional, on by default);
3. baseline and bolus arrival (``perfusion.detect_baseline``, §2.2) and
   signal → concentration (``perfusion.signal_to_concentration``, §2.1);
4. brain mask (the user's, or ``brainmask.auto_brain_mask`` of the pre-bolus mean image);
5. AIF (automatic Mouridsen 2006, or manual voxels / mask, §3);
6. deconvolution maps (``perfusion.compute_maps``, §4–5);
7. core / hypoperfusion / penumbra, clean-up, metrics and trial criteria
   (``analysis.analyze_lesion``, §8–10);
8. quality flags (``quality.assess_quality``).

The inputs are never modified. ``CaseResult.record()`` is the case record (``caserecord.py``)
that every output renders; ``CaseResult.summary()`` is its JSON form, ``summary.json``: every threshold, clean-up step and its effect, the AIF, the motion trace and
the QC flags, with units, and ``null`` plus a reason for infinite or undefined ratios.
"""

from __future__ import annotations

import dataclasses
import datetime
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import AnalysisCancelled, InputDataError
from .geometry import Geometry
from .series import PerfusionSeries

from .settings import METHODS, CaseSettings  # noqa: F401  (re-exported)

#: Fraction of the progress bar given to each step (start, end).
_STEPS = {
    "validate": (0.00, 0.02),
    "motion": (0.02, 0.25),
    "baseline": (0.25, 0.30),
    "brain_mask": (0.30, 0.35),
    "aif": (0.35, 0.45),
    "maps": (0.45, 0.85),
    "lesion": (0.85, 0.92),
    "quality": (0.92, 0.94),
    "stability": (0.94, 1.00),
}


@dataclass
class CaseResult:
    """Everything ``run_case`` produced; ``summary()`` is the JSON record of it."""

    series: PerfusionSeries
    signal: np.ndarray  # analysed signal (motion corrected when enabled) [K, J, I, T]
    concentration: np.ndarray
    baseline: Any
    baseline_image: np.ndarray
    brain_mask: np.ndarray
    brain_mask_source: str
    aif: Any
    maps: Any
    lesion: Any
    quality: list
    motion: Any
    settings: CaseSettings
    adc_provided: bool = False
    adc_unit: str | None = None
    adc: np.ndarray | None = None  # the ADC as given, on ``adc_geometry`` (for re-thresholding)
    adc_geometry: Geometry | None = None
    stability: dict | None = None  # stability.verdict_stability block (None when switched off)
    warnings: list = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)
    created: str = ""
    analysis_grid: dict | None = None  # issue 15: CT analysis resolution (denoise.to_analysis_grid)
    denoising: dict | None = None  # issue 15: denoising before deconvolution
    slice_timing: Any = None  # slicetiming.SliceTimingReport (issue 17)
    screen: Any = None  # pseudomismatch.PseudoMismatchScreen (summary.json: pseudo_mismatch_screen)

    @property
    def geometry(self) -> Geometry:
        return self.series.geometry

    @property
    def modality(self) -> str:
        return self.series.modality

    def map_arrays(self) -> dict:
        """Perfusion maps by name (cbf, cbv, mtt, tmax, ttp) as float32 [K, J, I]."""
        return {name: np.asarray(getattr(self.maps, name), dtype=np.float32) for name in MAP_NAMES}

    def record(self, *, subject: str | None = None, extra_warnings=()):
        """The :class:`caserecord.CaseRecord` of this case (build it once per analysis)."""
        from .caserecord import build_case_record

        return build_case_record(self, subject=subject, extra_warnings=extra_warnings)

    def summary(self) -> dict:
        """The summary.json object of this case (``record().to_dict()``)."""
        return self.record().to_dict()


MAP_NAMES = ("cbf", "cbv", "mtt", "tmax", "ttp")


# --------------------------------------------------------------------------------------------
class _Progress:
    """Maps each step's 0…1 progress onto its slice of the overall bar; handles cancel."""

    def __init__(self, callback: Callable | None):
        self.callback = callback

    def report(self, fraction: float, message: str) -> None:
        if self.callback is None:
            return
        if self.callback(float(min(max(fraction, 0.0), 1.0)), message) is False:
            raise AnalysisCancelled("The analysis was cancelled.")

    def step(self, name: str, message: str) -> Callable:
        start, end = _STEPS[name]
        self.report(start, message)

        def sub(fraction: float, sub_message: str = "") -> bool:
            self.report(start + (end - start) * float(fraction), sub_message or message)
            return True

        return sub


def run_case(
    series: PerfusionSeries,
    *,
    adc: np.ndarray | None = None,
    adc_geometry: Geometry | None = None,
    adc_unit: str | None = None,
    brain_mask: np.ndarray | None = None,
    settings: CaseSettings | None = None,
    progress: Callable | None = None,
) -> CaseResult:
    """Analyse one perfusion series (and optional ADC) end to end.

    ``adc``: [K, J, I] on ``adc_geometry`` (default: the perfusion grid); ``adc_unit`` overrides
    unit detection ("1e-6", "1e-3", "mm2/s" as accepted by ``analysis``); ``brain_mask``: bool
    [K, J, I] on the perfusion grid (default automatic); ``progress(fraction, message)`` may
    return False to cancel (raises :class:`errors.AnalysisCancelled`).
    """
    from . import fileio, perfusion
    from .analysis import analyze_lesion

    settings = settings if settings is not None else CaseSettings()
    if not isinstance(settings, CaseSettings):
        raise InputDataError(
            f"settings must be a CaseSettings, not {type(settings).__name__}: e.g. "
            "CaseSettings(method='oSVD', lesion=LesionSettings(age=75)).")
    from .analysis import _lesion_settings

    _lesion_settings(settings.lesion)  # a wrong type or value fails now, not after the maps
    if not isinstance(series, PerfusionSeries):
        raise InputDataError("run_case needs a PerfusionSeries (see fileio.read_perfusion).")
    bar = _Progress(progress)
    timings: dict[str, float] = {}
    warnings: list[str] = []
    clock = time.perf_counter()

    def lap(name):
        nonlocal clock
        now = time.perf_counter()
        timings[name] = now - clock
        clock = now

    # 1. validation ---------------------------------------------------------------------------
    bar.step("validate", "Checking the input")
    validated = fileio.validate_series(series)
    warnings.extend(validated)
    modality = series.modality
    if modality is None:
        raise InputDataError(
            "The modality of the perfusion series is unknown: say whether it is MR (DSC) or CT "
            "perfusion (command line: --modality mr|ct)."
        )
    if modality == "mr" and not (series.te is not None and np.isfinite(series.te) and series.te > 0):
        raise InputDataError(
            "DSC-MR needs the echo time (TE) to convert signal to ΔR2*: give it in seconds "
            "(command line: --te 0.03, or EchoTime in the BIDS JSON sidecar)."
        )
    geometry = series.geometry
    n_frames = series.signal.shape[3]
    if settings.baseline is not None and settings.baseline[1] > n_frames:
        raise InputDataError(
            f"Baseline frames {settings.baseline} go beyond the {n_frames} frames of the series."
        )
    adc_geometry = _check_adc(adc, adc_geometry, geometry)
    user_mask = _check_mask(brain_mask, geometry, "brain mask")
    aif_mask = _check_mask(settings.aif_mask, geometry, "AIF mask") if settings.aif_mask is not None else None
    if settings.aif_voxels is not None:
        bad = np.any((settings.aif_voxels < 0) | (settings.aif_voxels >= np.array(geometry.shape)), axis=1)
        if np.any(bad):
            raise InputDataError(
                f"AIF voxel(s) {settings.aif_voxels[bad].tolist()} lie outside the image grid "
                f"(k, j, i) < {geometry.shape}."
            )
    times = np.asarray(series.times, dtype=float)
    aif_voxels = settings.aif_voxels
    lap("validate")

    # --- issue 15 hook: CT analysed at a defined in-plane resolution (denoise.py) ------------
    series, grid_info = analysis_series(series, settings)
    if grid_info is not None and grid_info["applied"]:
        from .denoise import block_mask, block_mean

        factors = grid_info["factors_ij"]
        geometry = series.geometry
        user_mask = None if user_mask is None else block_mask(user_mask, factors)
        if aif_mask is not None:  # a block holding any AIF voxel is an AIF voxel
            aif_mask = block_mean(aif_mask.astype(np.float32), factors) > 0
        aif_voxels = voxels_on_analysis_grid(aif_voxels, grid_info, geometry.shape)
    if grid_info is not None:
        lap("analysis_grid")

    # 2.-4. slice timing, motion correction, baseline, brain mask, concentration ----------------
    prepared = prepare_series(series, settings, brain_mask=user_mask, bar=bar, lap=lap)
    warnings.extend(prepared.warnings)
    signal, motion, baseline = prepared.signal, prepared.motion, prepared.baseline
    baseline_image, mask, mask_source = prepared.baseline_image, prepared.brain_mask, prepared.brain_mask_source
    concentration, slice_timing = prepared.concentration, prepared.slice_timing
    start, stop = baseline.start, baseline.stop
    from .quality import bolus_flags

    # Without a bolus (or with a baseline inside it) the AIF and deconvolution steps fail for
    # reasons that hide the real one; keep it to say it (PERFUSION.md §2.6).
    no_bolus = bolus_flags(concentration, times, baseline, mask, modality=modality, te=series.te)

    # 5. AIF ------------------------------------------------------------------------------------------
    bar.step("aif", "Selecting the arterial input function")
    voxels = aif_voxels
    if voxels is None and aif_mask is not None:
        voxels = np.argwhere(aif_mask)
    try:
        # issue 20: artery rules and the second baseline pass from the AIF's own arrival (in
        # case_aif, which the Slicer preview calls too); it may re-cut the baseline
        aif = case_aif(prepared, times, modality, voxels)
        baseline, concentration, baseline_image = prepared.baseline, prepared.concentration, prepared.baseline_image
        start, stop = baseline.start, baseline.stop
        warnings.extend(f"AIF: {text}" for text in (getattr(aif, "warnings", []) or []))
        lap("aif")

        # --- issue 15 hook: denoise the concentration before deconvolution (AIF from unsmoothed) ---
        denoise_method = settings.denoise_method(modality)
        conc_for_maps, denoise_info = concentration, None
        if denoise_method != "none":
            from .denoise import baseline_noise_sd, denoise_concentration

            conc_for_maps, denoise_info = denoise_concentration(
                concentration, geometry, mask, method=denoise_method,
                sigma_mm=settings.denoise_sigma_mm,
                noise_sd=baseline_noise_sd(concentration, mask, (start, stop)))
            lap("denoise")

        # 6. maps ------------------------------------------------------------------------------------
        sub = bar.step("maps", f"Deconvolution ({settings.method})")
        maps = perfusion.compute_maps(
            conc_for_maps,
            aif,
            times,
            method=settings.method,
            mask=mask,
            hematocrit_factor=settings.hematocrit_factor,
            tissue_density=settings.tissue_density,
            progress=sub,
        )
        del conc_for_maps
    except InputDataError as error:
        if no_bolus:
            raise InputDataError(f"{no_bolus[0].message} (The analysis stopped at: {error})") from error
        raise
    warnings.extend(getattr(maps, "warnings", []) or [])
    lap("maps")

    # 7. lesion ------------------------------------------------------------------------------------
    bar.step("lesion", "Core, hypoperfusion, penumbra and criteria")
    lesion_settings = settings.lesion
    lesion = analyze_lesion(
        maps,
        geometry,
        modality=modality,
        adc=adc,
        adc_geometry=adc_geometry,
        adc_unit=adc_unit,
        brain_mask=mask,
        baseline_image=baseline_image,
        settings=lesion_settings,
        aif_ttp=(aif.quality or {}).get("time_to_peak_s"),
        frame_interval_s=float(np.median(np.diff(times))) if times.size > 1 else None,
    )
    warnings.extend(getattr(lesion, "warnings", []) or [])
    lap("lesion")

    # 8. quality -------------------------------------------------------------------------------------
    bar.step("quality", "Quality checks")
    from .criteria import apply_quality_gate
    from .quality import adc_coverage_flags, adc_flags, assess_quality, lesion_flags

    flags = list(assess_quality(series, concentration, baseline, aif, maps, mask, motion=motion))
    flags += adc_coverage_flags(getattr(lesion, "adc_coverage", None))
    # issue 20: pseudo-mismatch screen; failing items are "error" flags (verdicts indeterminate)
    from .pseudomismatch import screen_case

    screen = screen_case(modality=modality, times=times, signal=signal, concentration=concentration,
                         baseline=baseline, aif=aif, brain_mask=mask, geometry=geometry, lesion=lesion,
                         motion=motion, baseline_image=baseline_image)
    flags += screen.flags
    if modality == "mr":
        flags += adc_flags(getattr(lesion, "adc", None), mask)
    flags += lesion_flags(lesion, mask)
    # The quality gate (issue 9): an error makes every trial verdict indeterminate (quality).
    ungated_criteria = lesion.criteria
    lesion.criteria = apply_quality_gate(lesion.criteria, flags)
    lap("quality")

    adc_info = getattr(lesion, "adc_unit", None)
    detected_unit = getattr(adc_info, "unit", None) if adc_info is not None else None
    result = CaseResult(
        series=series,
        signal=signal,
        concentration=concentration,
        baseline=baseline,
        baseline_image=baseline_image,
        brain_mask=mask,
        brain_mask_source=mask_source,
        aif=aif,
        maps=maps,
        lesion=lesion,
        quality=flags,
        motion=motion,
        settings=settings,
        screen=screen,
        adc_provided=adc is not None,
        adc_unit=adc_unit or detected_unit,
        adc=None if adc is None else np.asarray(adc),
        adc_geometry=adc_geometry,
        warnings=_unique(warnings),
        timings_s=timings,
        analysis_grid=grid_info,
        denoising=denoise_info,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        slice_timing=slice_timing,
    )

    # 9. verdict stability: the lesion analysis again around each threshold (no deconvolution)
    if settings.verdict_stability:
        from .rethreshold import CaseMaps, rethreshold
        from .stability import verdict_stability

        bar.step("stability", "Verdict stability around the thresholds")
        result.stability = verdict_stability(CaseMaps.from_result(result, summary={}), lesion_settings,
                                             ungated_criteria, rethreshold, lesion.metrics)
        lap("stability")
    bar.report(1.0, "Done")
    return result


@dataclass
class PreparedSeries:
    """Steps 2-4 of :func:`run_case`: the analysed signal (motion corrected when enabled), the
    baseline (frames), its mean image, the brain mask and the concentration [K, J, I, T]."""

    signal: np.ndarray
    motion: Any
    baseline: Any
    baseline_image: np.ndarray
    brain_mask: np.ndarray
    brain_mask_source: str
    concentration: np.ndarray
    warnings: list = field(default_factory=list)
    slice_timing: Any = None  # slicetiming.SliceTimingReport (issue 17)
    te: float | None = None  # echo time (s), MR: for converting again after a baseline re-cut


def prepare_series(series: PerfusionSeries, settings: CaseSettings, *, brain_mask=None, bar=None,
                   lap=None) -> PreparedSeries:
    """Slice timing, motion correction, baseline and bolus arrival, brain mask and signal ->
    concentration, exactly as :func:`run_case` does them (it calls this). ``brain_mask``: bool [K, J, I] on the
    series grid, already checked (None: automatic). Used alone by the Slicer panel's manual-AIF
    preview, so that the curve shown before Apply is the AIF Apply uses."""
    from . import perfusion

    bar = bar if bar is not None else _Progress(None)
    lap = lap if lap is not None else (lambda name: None)
    times = np.asarray(series.times, dtype=float)
    modality = series.modality
    geometry = series.geometry
    warnings: list[str] = []

    # slice timing (issue 17 hook): each slice's curves on the frame times, on the data as
    # acquired (slice k is the slice acquired at slice_times[k]), before motion correction.
    signal = series.signal
    slice_timing = None
    if settings.slice_timing_correction:
        from .slicetiming import correct_slice_timing, slice_times_of

        slice_times, slice_source = slice_times_of(series)
        signal, slice_timing = correct_slice_timing(signal, times, slice_times, source=slice_source)
        if slice_timing.reason.startswith("not applied"):
            warnings.append(f"Slice timing ({slice_source}) {slice_timing.reason}.")

    motion = None
    if settings.motion_correction:
        from .motion import correct_motion

        sub = bar.step("motion", "Correcting motion")
        signal, motion = correct_motion(signal, geometry, times, progress=sub)
        warnings.extend(getattr(motion, "warnings", []) or [])
    lap("motion")

    bar.step("baseline", "Finding the baseline and bolus arrival")
    baseline = perfusion.detect_baseline(signal, times, modality=modality, mask=brain_mask)
    if settings.baseline is not None:
        baseline = _override_baseline(baseline, settings.baseline)
    start, stop = baseline.start, baseline.stop
    baseline_image = np.mean(signal[..., start:stop], axis=-1, dtype=np.float64).astype(np.float32)
    warnings.extend(getattr(baseline, "warnings", []) or [])
    lap("baseline")

    bar.step("brain_mask", "Brain mask")
    if brain_mask is not None:
        mask = brain_mask
        mask_source = "user"
    else:
        from .brainmask import auto_brain_mask

        mask = np.asarray(auto_brain_mask(baseline_image, geometry, modality=modality), dtype=bool)
        mask_source = "automatic"
    if not np.any(mask):
        raise InputDataError(
            "The brain mask is empty: no voxel to analyse. Check the input image or give a brain "
            "mask (--brain-mask)."
        )
    if settings.baseline is None and brain_mask is None:
        # Re-detect the bolus on the brain only, now that we have a mask (PERFUSION.md §2.2 step 1).
        baseline = perfusion.detect_baseline(signal, times, modality=modality, mask=mask)
        start, stop = baseline.start, baseline.stop
        baseline_image = np.mean(signal[..., start:stop], axis=-1, dtype=np.float64).astype(np.float32)
    concentration = perfusion.signal_to_concentration(
        signal, times, modality=modality, te=series.te, baseline=(start, stop)
    )
    lap("brain_mask")
    return PreparedSeries(signal, motion, baseline, baseline_image, mask, mask_source, concentration, warnings,
                          slice_timing, te=series.te)


def case_aif(prepared: PreparedSeries, times, modality: str, voxels=None):
    """Step 5 of :func:`run_case`: the AIF (automatic, or the mean of ``voxels`` (N, 3) k, j, i)
    under the artery rules, then the second baseline pass from the AIF's own arrival
    (PERFUSION.md §2.2, §3.1; ``pseudomismatch.second_baseline_pass``), which may re-cut the
    baseline: ``prepared``'s baseline, baseline image and concentration are updated with it."""
    from . import perfusion
    from .pseudomismatch import second_baseline_pass

    times = np.asarray(times, dtype=float)
    start, stop = prepared.baseline.start, prepared.baseline.stop
    # The saturation check (min S/S0 near the noise floor) is a DSC-MR notion; S/S0 of HU means nothing.
    aif_signal = prepared.signal if modality == "mr" else None
    aif = perfusion.select_aif(prepared.concentration, times, mask=prepared.brain_mask, voxels=voxels,
                               signal=aif_signal, modality=modality, baseline_frames=(start, stop),
                               baseline_image=prepared.baseline_image if modality == "ct" else None)
    prepared.baseline, prepared.concentration, aif, prepared.baseline_image = second_baseline_pass(
        prepared.baseline, prepared.signal, times, aif, prepared.concentration, modality=modality,
        te=prepared.te, mask=prepared.brain_mask, baseline_image=prepared.baseline_image)
    return aif


def analysis_series(series: PerfusionSeries, settings: CaseSettings):
    """The series on its analysis grid and the grid report (issue 15): CT at the in-plane
    resolution ``settings.ct_analysis_resolution_mm`` (``denoise.to_analysis_grid``), other
    modalities unchanged (report None). :func:`run_case` and the Slicer AIF preview call it."""
    if series.modality != "ct":
        return series, None
    from .denoise import to_analysis_grid

    return to_analysis_grid(series, settings.ct_analysis_resolution_mm)


def voxels_on_analysis_grid(voxels, grid_info, shape):
    """(k, j, i) voxels of the acquired grid -> the analysis grid of :func:`analysis_series`."""
    if voxels is None or not grid_info or not grid_info.get("applied"):
        return voxels
    factors = grid_info["factors_ij"]
    scaled = np.asarray(voxels) // np.array([1, factors[1], factors[0]])
    scaled = np.minimum(scaled, np.array(shape) - 1)
    return np.unique(scaled, axis=0)


# --------------------------------------------------------------------------------------------
def _check_adc(adc, adc_geometry, geometry):
    if adc is None:
        return None
    adc = np.asarray(adc)
    if adc.ndim != 3:
        raise InputDataError(
            f"The ADC map must be a 3D image; got shape {adc.shape}. Give the ADC map, not the DWI series."
        )
    if adc_geometry is None:
        if adc.shape != geometry.shape:
            raise InputDataError(
                f"The ADC map {adc.shape} has no geometry and does not match the perfusion grid "
                f"{geometry.shape}."
            )
        return geometry
    if tuple(adc.shape) != tuple(adc_geometry.shape):
        raise InputDataError(f"ADC array {adc.shape} does not match its geometry {adc_geometry.shape}.")
    return adc_geometry


def _check_mask(mask, geometry, what):
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != geometry.shape:
        raise InputDataError(
            f"The {what} has shape {mask.shape} but the perfusion grid is {geometry.shape}: "
            "give a mask on the perfusion grid."
        )
    return mask.astype(bool)  # a copy: never keep a reference to the caller's array


def _override_baseline(detected, frames):
    """The detected ``BaselineInfo`` with the user's (start, stop) frame range."""
    start, stop = frames
    return dataclasses.replace(detected, start=start, stop=stop, user_given=True, arrival_source="user",
                               warnings=list(detected.warnings) + [
                                   f"Baseline frames {start}–{stop - 1} set by the user."])


def _unique(items):
    return list(dict.fromkeys(items))
