"""From perfusion maps (+ ADC) to core, hypoperfusion, penumbra, metrics and trial criteria.

Public API: :class:`LesionSettings`, :func:`analyze_lesion` -> :class:`LesionAnalysis`,
:func:`metrics_from_masks` -> :class:`MaskMetrics` (PERFUSION.md §8–10).

Order of work in :func:`analyze_lesion`:
1. brain/tissue mask (finite maps ∩ given brain mask ∩, on CT, baseline < bone HU);
2. mid-sagittal plane from the baseline image (or the brain mask) by symmetry; affected side
   from the Tmax asymmetry;
3. core: MR ADC < ``core_adc`` on the ADC grid (unit detected or given), the mask resampled to
   the perfusion grid by nearest neighbour (volume on both grids reported);
   CT rCBF < ``core_rcbf_percent`` % against the chosen reference;
4. hypoperfusion Tmax > ``tmax_threshold`` and the extra Tmax > 4/8/10 s masks;
5. the clean-up chain (``cleanup_chain.CHAIN``), each step switchable and reported;
6. penumbra = hypoperfusion − core; metrics; criteria.

Decision support for research and teaching, not a medical device.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from . import DISCLAIMER
from . import cleanup
from .adc import AdcUnitInfo, adc_to_micro
from .cleanup_chain import CleanupInputs, run_cleanup
from .criteria import apply_quality_gate, criteria_to_dicts, evaluate_criteria
from .quality import ADC_MIN_COVERAGE, adc_coverage_message
from .errors import InputDataError
from .geometry import Geometry
from .hemispheres import Hemispheres, affected_side, estimate_midplane
from .metrics import compute_metrics, metrics_to_dict, volume_ml
from .resample import resample_array, resample_mask
from .settings import LesionSettings  # noqa: F401  (re-exported: the public home is settings.py)
from .thresholds import (core_from_adc, core_from_rcbf,
                         penumbra as penumbra_mask, rcbf_reference,
                         smooth_in_plane, tmax_mask)

MODALITIES = ("mr", "ct")


def _lesion_settings(settings) -> LesionSettings:
    """Validated LesionSettings (default when None); anything else is an InputDataError."""
    if settings is None:
        settings = LesionSettings()
    if not isinstance(settings, LesionSettings):
        raise InputDataError(
            f"settings must be a LesionSettings, not {type(settings).__name__}: e.g. "
            "LesionSettings(tmax_threshold=6.0, age=75).")
    settings.validate()
    return settings


def _tmax_key(threshold: float) -> str:
    return f"tmax_gt_{threshold:g}"


@dataclass
class LesionAnalysis:
    """Result of :func:`analyze_lesion`.

    ``masks`` name -> bool [K,J,I] (core, hypoperfusion, penumbra, tmax_gt_4/8/10, brain);
    ``metrics`` name -> :class:`~StrokeMismatchLib.metrics.Metric`; ``criteria`` list of
    :class:`~StrokeMismatchLib.criteria.RuleResult`; ``steps`` list of
    :class:`~StrokeMismatchLib.cleanup.StepReport`; ``hemispheres``
    :class:`~StrokeMismatchLib.hemispheres.Hemispheres`; ``side`` affected-side dict;
    ``reference`` rCBF reference dict (CT); ``adc_unit`` :class:`AdcUnitInfo` (MR);
    ``rcbf`` relative CBF map (CT); ``adc`` ADC on the perfusion grid (MR, 10⁻⁶ mm²/s);
    ``core_grids`` core volume on the ADC and perfusion grids (MR).
    """

    modality: str
    geometry: Geometry
    settings: LesionSettings
    masks: dict
    metrics: dict
    criteria: list
    steps: list
    hemispheres: Hemispheres | None
    side: dict
    reference: dict | None = None
    adc_unit: AdcUnitInfo | None = None
    rcbf: np.ndarray | None = None
    adc: np.ndarray | None = None
    core_grids: dict | None = None
    warnings: list = field(default_factory=list)
    adc_coverage: float | None = None

    @property
    def affected_side(self) -> str:
        return self.side.get("affected_side", "none")

    def to_dict(self) -> dict:
        """JSON-ready summary (no arrays, no inf/NaN)."""
        hemis = self.hemispheres.to_dict() if self.hemispheres is not None else None
        if hemis is not None:
            hemis.update(self.side)
        return {
            "disclaimer": DISCLAIMER,
            "modality": self.modality,
            "settings": self.settings.to_dict(),
            "metrics": metrics_to_dict(self.metrics),
            "criteria": criteria_to_dicts(self.criteria),
            "steps": [s.to_dict() for s in self.steps],
            "hemispheres": hemis,
            "affected_side": self.affected_side,
            "reference": self.reference,
            "adc_unit": self.adc_unit.to_dict() if self.adc_unit is not None else None,
            "core_grids": self.core_grids,
            "adc_brain_coverage": self.adc_coverage,
            "voxel_volume_ml": self.geometry.voxel_volume_ml,
            "warnings": list(self.warnings),
        }


def _map(maps, name: str, shape, required: bool = True):
    value = getattr(maps, name, None)
    if value is None and isinstance(maps, dict):
        value = maps.get(name)
    if value is None:
        if required:
            raise InputDataError(f"The perfusion maps have no {name.upper()} map.")
        return None
    value = np.asarray(value)
    if value.dtype.kind != "f":  # float32 maps are used as they are (no float64 copy)
        value = value.astype(np.float32)
    if value.shape != tuple(shape):
        raise InputDataError(
            f"The {name.upper()} map has shape {value.shape}, the grid is {tuple(shape)}.")
    return value


def _as_mask(mask, shape, what: str):
    if mask is None:
        return None
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise InputDataError(f"The {what} has shape {mask.shape}, the grid is {tuple(shape)}.")
    return mask.astype(bool)


def _midline(geometry, baseline_image, tissue, settings, warnings):
    try:
        if baseline_image is not None:
            return estimate_midplane(baseline_image, geometry, mask=tissue,
                                     max_yaw_deg=settings.max_yaw_deg, source="baseline image")
        return estimate_midplane(tissue.astype(float), geometry, mask=None,
                                 max_yaw_deg=settings.max_yaw_deg, source="brain mask outline")
    except InputDataError as error:
        warnings.append(f"Mid-sagittal plane not found: {error}")
        return None


def analyze_lesion(maps, geometry: Geometry, *, modality: str, adc=None, adc_geometry=None,
                   adc_unit: str | None = None, brain_mask=None, baseline_image=None,
                   settings: LesionSettings | None = None, aif_ttp: float | None = None,
                   frame_interval_s: float | None = None,
                   hemispheres: Hemispheres | None = None) -> LesionAnalysis:
    """Core, hypoperfusion, penumbra, metrics and criteria from perfusion maps.

    ``maps``: object (or dict) with cbf, cbv, tmax float arrays [K,J,I] (NaN outside the
    analysed brain); ``geometry`` their grid; ``modality`` "mr" | "ct"; ``adc`` (MR) on
    ``adc_geometry`` (default: the perfusion grid) in ``adc_unit`` (None → detected);
    ``brain_mask`` optional bool [K,J,I]; ``baseline_image`` pre-contrast mean (CT HU, MR S0)
    used for the midline and CT bone/CSF exclusion; ``aif_ttp`` the AIF's time to peak (s, same
    clock as the TTP map) and ``frame_interval_s`` the sampling interval (s), both for the
    arterial-timing part of the vessel exclusion. ``hemispheres``: a mid-sagittal plane found
    before on the same images and brain (re-thresholding reuses it; the search is most of the
    time of this function); None finds it.
    """
    settings = _lesion_settings(settings)
    if modality not in MODALITIES:
        raise InputDataError(f"Unknown modality {modality!r}: use 'mr' or 'ct'.")
    shape = geometry.shape
    tmax = _map(maps, "tmax", shape)
    cbf = _map(maps, "cbf", shape, required=(modality == "ct"))
    cbv = _map(maps, "cbv", shape, required=False)
    ttp = _map(maps, "ttp", shape, required=False)
    brain_mask = _as_mask(brain_mask, shape, "brain mask")
    if baseline_image is not None:
        baseline_image = np.asarray(baseline_image, dtype=float)
        if baseline_image.shape != shape:
            raise InputDataError(
                f"The baseline image has shape {baseline_image.shape}, the grid is {shape}.")
    warnings: list = []
    voxel_ml = geometry.voxel_volume_ml

    # 1. brain / tissue masks --------------------------------------------------------------
    analysed = np.isfinite(tmax)
    if modality == "ct":
        analysed &= np.isfinite(cbf)
    if not analysed.any():
        raise InputDataError("The Tmax map has no finite values: the perfusion maps are empty.")
    brain = analysed.copy()
    brain_parts = ["finite perfusion maps"]
    if brain_mask is not None:
        brain &= brain_mask
        brain_parts.append("given brain mask")
    if modality == "ct" and baseline_image is not None:
        with np.errstate(invalid="ignore"):
            brain &= baseline_image < settings.bone_hu
        brain_parts.append(f"baseline < {settings.bone_hu:g} HU (bone excluded)")

    # ADC on the perfusion grid (MR) ----------------------------------------------------------
    adc_info = None
    adc_on_grid = None
    adc_coverage = None
    core_grids = None
    if modality == "mr":
        if adc is None:
            raise InputDataError(
                "MR analysis needs an ADC map for the core (ADC < "
                f"{settings.core_adc:g} ×10⁻⁶ mm²/s): load the ADC (or DWI) of the same session.")
        adc = np.asarray(adc)
        if adc_geometry is None:
            if adc.shape != shape:
                raise InputDataError(
                    f"The ADC map has shape {adc.shape} but the perfusion grid is {shape}, and "
                    "no ADC geometry was given: pass adc_geometry so it can be resampled.")
            adc_geometry = geometry
        adc_micro, adc_info = adc_to_micro(adc, adc_unit)
        # Core is thresholded on the ADC (DWI) grid (PERFUSION.md §8) and brought to the
        # perfusion grid as a mask (nearest neighbour: volume-preserving); the ADC values go
        # linearly (NaN-aware) for CSF exclusion and display.
        core_native = core_from_adc(adc_micro, settings.core_adc)
        if adc_geometry.same_grid(geometry):
            adc_on_grid = adc_micro.astype(float)
            core_adc_grid = core_native
        else:
            adc_on_grid = resample_array(adc_micro, adc_geometry, geometry, interpolation="linear")
            core_adc_grid = resample_mask(core_native, adc_geometry, geometry)
            core_grids = {
                "adc_grid_ml": volume_ml(core_native, adc_geometry.voxel_volume_ml),
                "perfusion_grid_ml": volume_ml(core_adc_grid, voxel_ml),
                "note": ("raw ADC core (before clean-up) on the ADC grid and after "
                         "nearest-neighbour resampling to the perfusion grid"),
            }
        # A core outside the ADC's field of view is never found: say how much brain it covers.
        adc_coverage = float(np.count_nonzero(np.isfinite(adc_on_grid) & brain)) / max(np.count_nonzero(brain), 1)
        if adc_coverage < ADC_MIN_COVERAGE:
            warnings.append(adc_coverage_message(adc_coverage))

    # CSF region --------------------------------------------------------------------------
    if modality == "ct":
        if baseline_image is not None:
            with np.errstate(invalid="ignore"):
                csf = np.isfinite(baseline_image) & (baseline_image < settings.csf_hu)
            csf_parameters = {"criterion": f"baseline < {settings.csf_hu:g} HU",
                              "csf_hu": settings.csf_hu}
        else:
            csf, csf_parameters = None, {"criterion": f"baseline < {settings.csf_hu:g} HU"}
    else:
        with np.errstate(invalid="ignore"):
            csf = np.isfinite(adc_on_grid) & (adc_on_grid > settings.csf_adc)
        csf_parameters = {"criterion": f"ADC > {settings.csf_adc:g} ×10⁻⁶ mm²/s",
                          "csf_adc": settings.csf_adc}
    tissue = brain.copy() if settings.brain_mask else analysed.copy()
    if settings.csf_exclusion and csf is not None:
        tissue &= ~csf

    # 2. midline and affected side ---------------------------------------------------------
    if hemispheres is None:
        hemispheres = _midline(geometry, baseline_image, brain, settings, warnings)
    if hemispheres is not None:
        side = affected_side(tmax, hemispheres, brain=tissue, threshold_s=settings.tmax_threshold,
                             min_volume_ml=settings.side_min_ml,
                             min_asymmetry=settings.side_min_asymmetry,
                             min_median_difference_s=settings.side_min_median_difference_s)
    else:
        side = {"affected_side": "none", "basis": "no mid-sagittal plane"}

    # 3. core ------------------------------------------------------------------------------
    reference = None
    rcbf = None
    core_smoothed = None
    if modality == "mr":
        core = core_adc_grid.copy()
    else:
        # issue 15: the reference tissue excludes CSF (``tissue``) and large vessels
        reference_tissue, reference_vessels = tissue, None
        if settings.rcbf_exclude_vessels:
            window = settings.vessel_ttp_window_s
            reference_vessels, _, _ = cleanup.vessel_region(
                cbv, tissue=tissue, modality=modality, cbv_threshold=settings.vessel_cbv,
                cbv_multiple=settings.vessel_cbv_multiple, ttp=ttp, aif_ttp=aif_ttp,
                ttp_window_s=frame_interval_s if window is None else window, voxel_ml=voxel_ml)
            if reference_vessels is not None:
                reference_tissue = tissue & ~reference_vessels
                if np.count_nonzero(reference_tissue) < 0.5 * np.count_nonzero(tissue):
                    # The vessel rule took most of the brain (an AIF error inflates CBV): it is
                    # not finding vessels, so the reference keeps them (said in "excluded").
                    reference_tissue, reference_vessels = tissue, None
                    warnings.append("The vessel rule marked most of the brain, so it was not applied "
                                    "to the rCBF reference (check the AIF).")
        rcbf, reference = rcbf_reference(
            cbf, method=settings.rcbf_reference, tissue=reference_tissue, tmax=tmax,
            hemispheres=hemispheres, affected_side=side["affected_side"],
            tmax_threshold=settings.tmax_threshold, normal_tmax=settings.reference_normal_tmax,
            statistic=settings.rcbf_statistic, mirror_sigma_mm=settings.mirror_sigma_mm)
        reference["threshold"] = settings.core_rcbf
        reference["excluded"] = {
            "csf": bool(settings.csf_exclusion and csf is not None),
            "vessels": reference_vessels is not None,
            "vessel_ml": (0.0 if reference_vessels is None
                          else volume_ml(reference_vessels & tissue, voxel_ml))}
        core = core_from_rcbf(rcbf, settings.core_rcbf) & analysed  # no Tmax → not analysed
        fwhm = float(settings.cbf_smoothing_fwhm_mm)
        if fwhm > 0:
            # Per-voxel CT CBF at a few HU of noise scatters too much for a voxel-wise 30 %
            # threshold: smooth the tissue CBF in-plane, then divide by the same reference.
            # (vessels left out of the smoothing so their CBF does not spill into tissue)
            smoothed = smooth_in_plane(np.where(reference_tissue, cbf, np.nan), fwhm,
                                       geometry.spacing[::-1])
            if reference.get("value"):
                with np.errstate(invalid="ignore"):
                    rcbf_smooth = smoothed / reference["value"]
            else:  # mirror: each voxel over the smoothed CBF at its mirror position
                rcbf_smooth, _ = rcbf_reference(
                    smoothed, method="mirror", tissue=reference_tissue, hemispheres=hemispheres,
                    mirror_sigma_mm=settings.mirror_sigma_mm)
            rcbf_smooth = np.where(reference_tissue, rcbf_smooth, rcbf)  # elsewhere: unsmoothed
            core_smoothed = core_from_rcbf(rcbf_smooth, settings.core_rcbf) & analysed
            rcbf = rcbf_smooth
        reference["cbf_smoothing_fwhm_mm"] = fwhm

    # 4. Tmax masks ------------------------------------------------------------------------
    masks = {"core": core, "hypoperfusion": tmax_mask(tmax, settings.tmax_threshold)}
    extra = {}
    for threshold in settings.tmax_report_thresholds:
        key = _tmax_key(float(threshold))
        masks[key] = tmax_mask(tmax, float(threshold))
        extra[float(threshold)] = key
    tmax_thresholds = {"hypoperfusion": settings.tmax_threshold}
    tmax_thresholds.update({key: t for t, key in extra.items()})

    # 5. clean-up chain (cleanup_chain.CHAIN, in order) ------------------------------------
    masks, steps = run_cleanup(masks, CleanupInputs(
        settings=settings, modality=modality, geometry=geometry, tmax=tmax, cbv=cbv, ttp=ttp,
        brain=brain, brain_parts=brain_parts, tissue=tissue, csf=csf, csf_parameters=csf_parameters,
        hemispheres=hemispheres, side=side, tmax_thresholds=tmax_thresholds,
        core_smoothed=core_smoothed, aif_ttp=aif_ttp, frame_interval_s=frame_interval_s))

    # 6. penumbra, metrics, criteria -------------------------------------------------------
    masks["penumbra"] = penumbra_mask(masks["core"], masks["hypoperfusion"])
    masks["brain"] = tissue
    metrics = compute_metrics(
        masks["core"], masks["hypoperfusion"], masks["penumbra"], voxel_ml,
        tmax_masks={t: masks[k] for t, k in extra.items()},
        tmax_threshold=settings.tmax_threshold, cbv=cbv, hemispheres=hemispheres)
    criteria = evaluate_criteria(metrics, age=settings.age, nihss=settings.nihss,
                                 collateral_score=settings.collateral_score)
    if hemispheres is not None and hemispheres.score < 0.5:
        warnings.append("The mid-sagittal plane is uncertain (weak image symmetry).")
    return LesionAnalysis(modality, geometry, settings, masks, metrics, criteria, steps,
                          hemispheres, side, reference, adc_info, rcbf, adc_on_grid, core_grids,
                          warnings, adc_coverage=adc_coverage)


@dataclass
class MaskMetrics:
    """Result of :func:`metrics_from_masks`: ``masks`` (core, hypoperfusion, penumbra and the
    Tmax masks used), ``metrics``, ``criteria``, ``warnings``."""

    masks: dict
    metrics: dict
    criteria: list
    warnings: list = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"disclaimer": DISCLAIMER, "metrics": metrics_to_dict(self.metrics),
                "criteria": criteria_to_dicts(self.criteria), "warnings": list(self.warnings)}


def metrics_from_masks(core, hypoperfusion=None, geometry: Geometry | None = None, *,
                       penumbra=None, tmax=None, cbv=None, hemispheres: Hemispheres | None = None,
                       settings: LesionSettings | None = None, tmax_masks: dict | None = None,
                       brain=None, quality_flags=None) -> MaskMetrics:
    """Metrics and criteria from (possibly hand-edited) masks on ``geometry``.

    Give ``core`` and either ``hypoperfusion`` or ``penumbra``:
    - with ``hypoperfusion``: penumbra = hypoperfusion − core (a given ``penumbra`` is then
      ignored, with a warning when it differs);
    - with ``penumbra`` only: hypoperfusion = core ∪ penumbra, and penumbra = penumbra − core.
    ``tmax_masks`` (name "tmax_gt_4" … -> bool, the analysis' cleaned masks) are used as they
    are: pass them when the hypoperfusion mask was not edited, so the numbers equal the
    analysis'. Otherwise ``tmax`` (s) gives Tmax > 8/10 s inside the hypoperfusion mask (edits
    removing false hypoperfusion also remove them) and Tmax > 4 s as (Tmax > 4 s within
    ``brain``) ∪ hypoperfusion; ``cbv`` + ``hemispheres`` give the CBV index.
    ``quality_flags``: the analysis' quality flags (QualityFlag or dicts; still true of the
    edited masks' source data): the quality gate is applied to the criteria, so an error keeps
    every verdict indeterminate (quality).
    """
    settings = _lesion_settings(settings)
    if geometry is None:
        raise InputDataError("metrics_from_masks needs the masks' geometry.")
    shape = geometry.shape
    core = _as_mask(core, shape, "core mask")
    if core is None:
        raise InputDataError("metrics_from_masks needs a core mask (it may be empty).")
    hypo = _as_mask(hypoperfusion, shape, "hypoperfusion mask")
    pen = _as_mask(penumbra, shape, "penumbra mask")
    warnings = []
    if hypo is None and pen is None:
        raise InputDataError(
            "Give a hypoperfusion mask or a penumbra mask (hypoperfusion = core ∪ penumbra).")
    if hypo is None:
        hypo = core | pen
    elif pen is not None and not np.array_equal(pen, hypo & ~core):
        warnings.append("The given penumbra differs from hypoperfusion − core; the penumbra was "
                        "recomputed from the hypoperfusion and core masks.")
    pen = penumbra_mask(core, hypo)
    masks = {"core": core, "hypoperfusion": hypo, "penumbra": pen}
    extra = {}
    brain = _as_mask(brain, shape, "brain mask")
    if tmax_masks is not None:
        for threshold in settings.tmax_report_thresholds:
            t = float(threshold)
            mask = _as_mask(tmax_masks.get(_tmax_key(t)), shape, f"Tmax > {t:g} s mask")
            if mask is not None:
                masks[_tmax_key(t)] = extra[t] = mask
    elif tmax is not None:
        tmax = _map({"tmax": tmax}, "tmax", shape)
        for threshold in settings.tmax_report_thresholds:
            t = float(threshold)
            mask = tmax_mask(tmax, t)
            if brain is not None:
                mask &= brain
            mask = (mask | hypo) if t < settings.tmax_threshold else (mask & hypo)
            masks[_tmax_key(t)] = mask
            extra[t] = mask
    if cbv is not None:
        cbv = _map({"cbv": cbv}, "cbv", shape)
    metrics = compute_metrics(core, hypo, pen, geometry.voxel_volume_ml, tmax_masks=extra,
                              tmax_threshold=settings.tmax_threshold, cbv=cbv,
                              hemispheres=hemispheres)
    criteria = evaluate_criteria(metrics, age=settings.age, nihss=settings.nihss,
                                 collateral_score=settings.collateral_score)
    if quality_flags is not None:
        criteria = apply_quality_gate(criteria, quality_flags)
    return MaskMetrics(masks, metrics, criteria, warnings)
