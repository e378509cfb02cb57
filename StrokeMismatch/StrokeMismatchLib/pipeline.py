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

The inputs are never modified. ``CaseResult.summary()`` is the JSON-ready record written as
``summary.json``: every threshold, clean-up step and its effect, the AIF, the motion trace and
the QC flags, with units, and ``null`` plus a reason for infinite or undefined ratios.
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from . import DISCLAIMER, __version__
from .errors import AnalysisCancelled, InputDataError
from .geometry import Geometry
from .series import PerfusionSeries

METHODS = ("oSVD", "cSVD", "sSVD", "Tikhonov")

#: Fraction of the progress bar given to each step (start, end).
_STEPS = {
    "validate": (0.00, 0.02),
    "motion": (0.02, 0.25),
    "baseline": (0.25, 0.30),
    "brain_mask": (0.30, 0.35),
    "aif": (0.35, 0.45),
    "maps": (0.45, 0.85),
    "lesion": (0.85, 0.97),
    "quality": (0.97, 1.00),
}


def _default_lesion_settings():
    from .analysis import LesionSettings

    return LesionSettings()


@dataclass
class CaseSettings:
    """Everything the user can choose for one case.

    ``method``: deconvolution (oSVD, cSVD, sSVD, Tikhonov); ``hematocrit_factor`` k_H and
    ``tissue_density`` ρ (g/mL) scale CBF and CBV by k_H/ρ (PERFUSION.md §5);
    ``motion_correction``: rigid frame-to-reference registration first;
    ``aif_voxels``: manual AIF voxels as (k, j, i) triples, or ``aif_mask`` a bool [K, J, I]
    array (both None = automatic selection); ``baseline``: (start, stop) frame range used verbatim
    instead of automatic detection (stop exclusive); ``lesion``: thresholds and clean-up
    (:class:`analysis.LesionSettings`).
    """

    method: str = "oSVD"
    hematocrit_factor: float = 0.73
    tissue_density: float = 1.04
    motion_correction: bool = True
    aif_voxels: Any = None
    aif_mask: Any = None
    baseline: tuple[int, int] | None = None
    lesion: Any = field(default_factory=_default_lesion_settings)

    def __post_init__(self):
        if self.method not in METHODS:
            matches = [m for m in METHODS if m.lower() == str(self.method).lower()]
            if not matches:
                raise InputDataError(
                    f"Unknown deconvolution method {self.method!r}: choose one of {', '.join(METHODS)}."
                )
            self.method = matches[0]
        for name in ("hematocrit_factor", "tissue_density"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
                raise InputDataError(f"{name} must be a positive number, got {value!r}.")
        if self.aif_voxels is not None:
            voxels = np.asarray(self.aif_voxels)
            if voxels.ndim == 1 and voxels.size == 3:
                voxels = voxels[None, :]
            if voxels.ndim != 2 or voxels.shape[1] != 3 or voxels.shape[0] == 0:
                raise InputDataError(
                    "AIF voxels must be a list of (k, j, i) index triples, e.g. '12,40,33;12,40,34'."
                )
            if not np.all(np.equal(np.mod(voxels, 1), 0)):
                raise InputDataError("AIF voxel indices must be whole numbers (k, j, i).")
            self.aif_voxels = voxels.astype(int)
        if self.baseline is not None:
            try:
                start, stop = (int(v) for v in self.baseline)
            except (TypeError, ValueError):
                raise InputDataError(
                    "The baseline override must be a (start, stop) pair of frame indices."
                ) from None
            if start < 0 or stop <= start:
                raise InputDataError(
                    f"Baseline frames ({start}, {stop}) are not a valid range: need 0 ≤ start < stop."
                )
            self.baseline = (start, stop)

    def to_dict(self) -> dict:
        """JSON-ready record of the settings (the AIF mask as its voxel count)."""
        lesion = self.lesion
        if hasattr(lesion, "to_dict"):
            lesion_dict = lesion.to_dict()
        elif dataclasses.is_dataclass(lesion):
            lesion_dict = dataclasses.asdict(lesion)
        else:
            lesion_dict = lesion
        return _jsonable(
            {
                "method": self.method,
                "hematocrit_factor": self.hematocrit_factor,
                "tissue_density_g_per_ml": self.tissue_density,
                "motion_correction": self.motion_correction,
                "aif_voxels_kji": None if self.aif_voxels is None else np.asarray(self.aif_voxels).tolist(),
                "aif_mask_voxels": None if self.aif_mask is None else int(np.count_nonzero(self.aif_mask)),
                "baseline_frames": None if self.baseline is None else list(self.baseline),
                "lesion": lesion_dict,
            }
        )


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
    warnings: list = field(default_factory=list)
    timings_s: dict = field(default_factory=dict)
    created: str = ""
    screen: Any = None  # issue 20: pseudomismatch.PseudoMismatchScreen (the lead re-homes it)

    @property
    def geometry(self) -> Geometry:
        return self.series.geometry

    @property
    def modality(self) -> str:
        return self.series.modality

    def map_arrays(self) -> dict:
        """Perfusion maps by name (cbf, cbv, mtt, tmax, ttp) as float32 [K, J, I]."""
        return {name: np.asarray(getattr(self.maps, name), dtype=np.float32) for name in MAP_NAMES}

    def summary(self) -> dict:
        """JSON-ready dict of this case (``json.dumps(..., allow_nan=False)`` succeeds)."""
        geometry = self.geometry
        aif_voxels = np.asarray(getattr(self.aif, "voxels", np.zeros((0, 3))), dtype=int).reshape(-1, 3)
        aif_ras = geometry.ijk_to_ras_points(aif_voxels[:, ::-1]) if aif_voxels.size else np.zeros((0, 3))
        lesion_dict = _to_dict(self.lesion)
        metrics = lesion_dict.get("metrics") if isinstance(lesion_dict, dict) else None
        criteria = lesion_dict.get("criteria") if isinstance(lesion_dict, dict) else None
        summary = {
            "software": {"name": "StrokeMismatch", "version": __version__},
            "disclaimer": DISCLAIMER,
            "created": self.created,
            "input": {
                "source": self.series.source,
                "modality": self.modality,
                "shape_kjit": list(self.series.signal.shape),
                "n_frames": int(self.series.signal.shape[3]),
                "voxel_size_mm_ijk": geometry.spacing.tolist(),
                "voxel_volume_ml": geometry.voxel_volume_ml,
                "ijk_to_ras": geometry.ijk_to_ras.tolist(),
                "te_s": self.series.te,
                "tr_s": self.series.tr,
                "metadata": self.series.metadata,
                "adc_provided": self.adc_provided,
                "adc_unit": self.adc_unit,
            },
            "modality": self.modality,
            "frame_times_s": self.series.times.tolist(),
            "method": getattr(self.maps, "method", self.settings.method),
            "settings": self.settings.to_dict(),
            "baseline": _baseline_dict(self.baseline),
            "brain_mask": {
                "source": self.brain_mask_source,
                "voxels": int(np.count_nonzero(self.brain_mask)),
                "volume_ml": float(np.count_nonzero(self.brain_mask)) * geometry.voxel_volume_ml,
            },
            "aif": {
                "method": getattr(self.aif, "method", None),
                "n_voxels": int(aif_voxels.shape[0]),
                "voxels_kji": aif_voxels.tolist(),
                "voxels_ras_mm": np.round(aif_ras, 3).tolist(),
                "quality": getattr(self.aif, "quality", {}),
                "warnings": list(getattr(self.aif, "warnings", [])),
                "curve": np.asarray(getattr(self.aif, "curve", [])).tolist(),
            },
            "maps": {
                "method": getattr(self.maps, "method", self.settings.method),
                "grid_dt_s": getattr(self.maps, "grid_dt", None),
                "extra": _scalars_only(getattr(self.maps, "extra", {}) or {}),
                "units": dict(MAP_UNITS),
                "absolute_scale": self.modality == "ct",
                "scale_note": MAP_SCALE_NOTES[self.modality],
                "outside_mask": "NaN",
            },
            "lesion": lesion_dict,
            "metrics": metrics,
            "criteria": criteria,
            "motion": (
                {"applied": True, **_to_dict(self.motion)}
                if self.motion is not None
                else {"applied": False}
            ),
            "quality_flags": [_to_dict(flag) for flag in self.quality],
            "pseudo_mismatch_screen": None if self.screen is None else self.screen.to_dict(),
            "warnings": list(self.warnings),
            "timings_s": {k: round(v, 3) for k, v in self.timings_s.items()},
        }
        if isinstance(lesion_dict, dict):  # the facts a reader looks for, at the top level
            summary["thresholds"] = lesion_dict.get("settings")
            summary["cleanup_steps"] = lesion_dict.get("steps")
            summary["affected_side"] = lesion_dict.get("affected_side")
            summary["hemispheres"] = lesion_dict.get("hemispheres")
            summary["rcbf_reference"] = lesion_dict.get("reference")
            summary["adc_unit"] = lesion_dict.get("adc_unit")
        return _jsonable(summary)


MAP_NAMES = ("cbf", "cbv", "mtt", "tmax", "ttp")
MAP_UNITS = {
    "cbf": "mL/100 g/min",
    "cbv": "mL/100 g",
    "mtt": "s",
    "tmax": "s",
    "ttp": "s",
}
#: What the CBF/CBV numbers mean per modality (PERFUSION.md §2.1, §11.3).
MAP_SCALE_NOTES = {
    "ct": "CBF and CBV in mL/100 g/min and mL/100 g (ΔHU is linear in iodine concentration; "
          "hematocrit factor and tissue density as in the settings).",
    "mr": "DSC-MR: CBF and CBV are relative. They are given in nominal mL/100 g/min and mL/100 g, but "
          "ΔR2* per unit contrast differs between arterial blood and tissue and is not calibrated, so "
          "only ratios between regions (rCBF, rCBV) are meaningful. MTT, Tmax and TTP are absolute (s).",
}


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
    lap("validate")

    # 2. motion correction ----------------------------------------------------------------------
    signal = series.signal
    motion = None
    if settings.motion_correction:
        from .motion import correct_motion

        sub = bar.step("motion", "Correcting motion")
        signal, motion = correct_motion(series.signal, geometry, times, progress=sub)
        warnings.extend(getattr(motion, "warnings", []) or [])
    lap("motion")

    # 3. baseline and concentration --------------------------------------------------------------
    bar.step("baseline", "Finding the baseline and bolus arrival")
    baseline = perfusion.detect_baseline(signal, times, modality=modality, mask=user_mask)
    if settings.baseline is not None:
        baseline = _override_baseline(baseline, settings.baseline)
    start, stop = baseline.start, baseline.stop
    baseline_image = np.mean(signal[..., start:stop], axis=-1, dtype=np.float64).astype(np.float32)
    warnings.extend(getattr(baseline, "warnings", []) or [])
    lap("baseline")

    # 4. brain mask --------------------------------------------------------------------------------
    bar.step("brain_mask", "Brain mask")
    if user_mask is not None:
        mask = user_mask
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
    if settings.baseline is None and user_mask is None:
        # Re-detect the bolus on the brain only, now that we have a mask (PERFUSION.md §2.2 step 1).
        baseline = perfusion.detect_baseline(signal, times, modality=modality, mask=mask)
        start, stop = baseline.start, baseline.stop
        baseline_image = np.mean(signal[..., start:stop], axis=-1, dtype=np.float64).astype(np.float32)
    concentration = perfusion.signal_to_concentration(
        signal, times, modality=modality, te=series.te, baseline=(start, stop)
    )
    lap("brain_mask")

    # 5. AIF ------------------------------------------------------------------------------------------
    bar.step("aif", "Selecting the arterial input function")
    voxels = settings.aif_voxels
    if voxels is None and aif_mask is not None:
        voxels = np.argwhere(aif_mask)
    # The saturation check (min S/S0 near the noise floor) is a DSC-MR notion; S/S0 of HU means nothing.
    aif_signal = signal if modality == "mr" else None
    # issue 20: artery rules (CT blood-like baseline needs the pre-bolus HU image)
    aif = perfusion.select_aif(concentration, times, mask=mask, voxels=voxels, signal=aif_signal,
                               modality=modality, baseline_frames=(start, stop),
                               baseline_image=baseline_image if modality == "ct" else None)
    # issue 20: second baseline pass from the AIF's own arrival; AIF pre-bolus check
    from .pseudomismatch import second_baseline_pass

    baseline, concentration, aif, baseline_image = second_baseline_pass(
        baseline, signal, times, aif, concentration, modality=modality, te=series.te, mask=mask,
        baseline_image=baseline_image)
    warnings.extend(f"AIF: {text}" for text in (getattr(aif, "warnings", []) or []))
    lap("aif")

    # 6. maps ----------------------------------------------------------------------------------------
    sub = bar.step("maps", f"Deconvolution ({settings.method})")
    maps = perfusion.compute_maps(
        concentration,
        aif,
        times,
        method=settings.method,
        mask=mask,
        hematocrit_factor=settings.hematocrit_factor,
        tissue_density=settings.tissue_density,
        progress=sub,
    )
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
    from .quality import adc_coverage_flags, assess_quality

    flags = list(assess_quality(series, concentration, baseline, aif, maps, mask, motion=motion))
    flags += adc_coverage_flags(getattr(lesion, "adc_coverage", None))
    # issue 20: pseudo-mismatch screen; failing items are "error" flags (verdicts indeterminate)
    from .pseudomismatch import screen_case

    screen = screen_case(modality=modality, times=times, signal=signal, concentration=concentration,
                         baseline=baseline, aif=aif, brain_mask=mask, geometry=geometry, lesion=lesion,
                         motion=motion, baseline_image=baseline_image)
    flags += screen.flags
    lap("quality")
    bar.report(1.0, "Done")

    adc_info = getattr(lesion, "adc_unit", None)
    detected_unit = getattr(adc_info, "unit", None) if adc_info is not None else None
    return CaseResult(
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
        warnings=_unique(warnings),
        timings_s=timings,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )


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


def _baseline_dict(baseline) -> dict:
    data = _to_dict(baseline)
    data["frames"] = [baseline.start, baseline.stop - 1]
    return data


def _unique(items):
    seen, out = set(), []
    for item in items:
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _to_dict(obj):
    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return {
            f.name: getattr(obj, f.name)
            for f in dataclasses.fields(obj)
            if not isinstance(getattr(obj, f.name), np.ndarray) or getattr(obj, f.name).size <= 1000
        }
    return obj


def _scalars_only(mapping: dict) -> dict:
    """Keep scalars and short lists (drop whole maps stored in ``extra``)."""
    out = {}
    for key, value in mapping.items():
        if isinstance(value, np.ndarray) and value.size > 64:
            continue
        out[key] = value
    return out


def _jsonable(value):
    """Recursively convert numpy types to Python ones; NaN/±inf become None."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    if isinstance(value, (str, type(None))):
        return value
    if dataclasses.is_dataclass(value):
        return _jsonable(_to_dict(value))
    if hasattr(value, "to_dict"):
        return _jsonable(value.to_dict())
    return str(value)
