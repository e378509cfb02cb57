"""The clean-up chain: the ordered list of steps between thresholding and metrics (PERFUSION.md §9).

:data:`CHAIN` names the steps in the order they run; :func:`run_cleanup` runs them on the raw
lesion masks and returns the cleaned masks and one :class:`cleanup.StepReport` per step
(switched-off steps report what they would have done). Each step is a function
``step(masks, inputs, state) -> (masks, report)`` built on the mask operations of
``cleanup.py``; ``inputs`` (:class:`CleanupInputs`) carries the maps, tissue masks and
settings, ``state`` what a step leaves for a later one (the vessel region for hole filling).

Decision support for research and teaching, not a medical device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import cleanup
from .metrics import volume_ml
from .thresholds import median_in_plane, tmax_mask


@dataclass
class CleanupInputs:
    """What the steps need: ``settings`` (LesionSettings), ``modality``, ``geometry``;
    maps ``tmax``, ``cbv``, ``ttp`` [K,J,I] (cbv/ttp may be None); masks ``brain`` (analysed
    brain), ``brain_parts`` (its description), ``tissue`` (brain minus CSF), ``csf`` (None when
    unknown) with ``csf_parameters``; ``hemispheres`` and ``side`` (affected-side dict);
    ``tmax_thresholds`` Tmax mask name -> threshold (s); ``core_smoothed`` the CT core from the
    smoothed CBF (None on MR or with smoothing off); ``aif_ttp`` (s) and ``frame_interval_s``."""

    settings: object
    modality: str
    geometry: object
    tmax: np.ndarray
    cbv: np.ndarray | None
    ttp: np.ndarray | None
    brain: np.ndarray
    brain_parts: list
    tissue: np.ndarray
    csf: np.ndarray | None
    csf_parameters: dict
    hemispheres: object
    side: dict
    tmax_thresholds: dict
    core_smoothed: np.ndarray | None = None
    aif_ttp: float | None = None
    frame_interval_s: float | None = None

    @property
    def voxel_ml(self) -> float:
        return self.geometry.voxel_volume_ml

    @property
    def tmax_names(self) -> list:
        return list(self.tmax_thresholds)


# --- the steps, in chain order -------------------------------------------------------------------
def tmax_median_filter(masks, inp: CleanupInputs, state):
    """Tmax masks from the in-plane NaN-aware median of the tissue Tmax (default: CT only)."""
    settings = inp.settings
    size = int(settings.tmax_median_size_voxels)
    median_on = settings.median_filter(inp.modality)
    filtered = None
    if median_on and size > 1:
        tmax_filtered = np.where(inp.tissue, median_in_plane(np.where(inp.tissue, inp.tmax, np.nan), size),
                                 inp.tmax)
        filtered = {key: tmax_mask(tmax_filtered, t) for key, t in inp.tmax_thresholds.items()}
    return cleanup.replace(
        masks, filtered, name="tmax_median_filter", enabled=median_on, voxel_ml=inp.voxel_ml,
        parameters={"size_voxels": size, "plane": "in-plane (per slice)",
                    "region": "analysed tissue (NaN-aware)", "default": "on for CT, off for MR"},
        note="" if filtered is not None or not median_on else "size 1: nothing to do")


def cbf_smoothing(masks, inp: CleanupInputs, state):
    """CT core from the in-plane smoothed CBF (computed with the core, applied here)."""
    fwhm = float(inp.settings.cbf_smoothing_fwhm_mm)
    return cleanup.replace(
        masks, None if inp.core_smoothed is None else {"core": inp.core_smoothed},
        name="cbf_smoothing", enabled=fwhm > 0, voxel_ml=inp.voxel_ml,
        parameters={"fwhm_mm": fwhm, "plane": "in-plane Gaussian, normalised within tissue",
                    "applies_to": "CT rCBF core"},
        note="not applied: the MR core comes from the ADC" if inp.modality == "mr" else "")


def brain_mask(masks, inp: CleanupInputs, state):
    """Keep lesion voxels inside the analysed brain."""
    return cleanup.restrict(
        masks, inp.brain, name="brain_mask", enabled=inp.settings.brain_mask, voxel_ml=inp.voxel_ml,
        parameters={"source": " ∩ ".join(inp.brain_parts), "bone_hu": inp.settings.bone_hu,
                    "brain_ml": volume_ml(inp.brain, inp.voxel_ml)})


def csf_exclusion(masks, inp: CleanupInputs, state):
    """Remove CSF (CT: baseline HU below the limit; MR: ADC above the limit)."""
    return cleanup.restrict(
        masks, inp.csf, name="csf_exclusion", enabled=inp.settings.csf_exclusion, voxel_ml=inp.voxel_ml,
        parameters=inp.csf_parameters, exclude=True,
        note="" if inp.csf is not None else "not applied: CT CSF exclusion needs the baseline image")


def vessel_exclusion(masks, inp: CleanupInputs, state):
    """Remove large vessels (see :func:`cleanup.vessel_region`); the rule is evaluated even when
    switched off, so the report shows what it would remove."""
    settings = inp.settings
    window, window_source = settings.vessel_ttp_window_s, "setting"
    if window is None:
        window, window_source = inp.frame_interval_s, "one frame interval"
    region, parameters, note = cleanup.vessel_region(
        inp.cbv, tissue=inp.tissue, modality=inp.modality, cbv_threshold=settings.vessel_cbv,
        cbv_multiple=settings.vessel_cbv_multiple, ttp=inp.ttp, aif_ttp=inp.aif_ttp,
        ttp_window_s=window, voxel_ml=inp.voxel_ml)
    parameters["ttp_window_source"] = window_source
    if region is None and not note:
        note = "not applied"
    state["vessels"] = region if settings.vessel_exclusion else None
    return cleanup.restrict(masks, region, name="vessel_exclusion", enabled=settings.vessel_exclusion,
                            voxel_ml=inp.voxel_ml, parameters=parameters, exclude=True, note=note)


def hemisphere_restriction(masks, inp: CleanupInputs, state):
    """Keep lesion voxels on the affected side (off by default)."""
    side = inp.side
    affected = side.get("affected_side", "none")
    parameters = {"affected_side": affected, "basis": side.get("basis", "")}
    region, note = None, ""
    if inp.hemispheres is None:
        note = "not applied: no mid-sagittal plane was found"
    elif affected not in ("left", "right"):
        note = f"not applied: no affected side ({side.get('basis', 'no Tmax asymmetry')})"
    else:
        parameters["kept"] = f"{affected} hemisphere (of the mid-sagittal plane)"
        if inp.settings.restrict_to_affected_hemisphere:
            region = inp.hemispheres.side_masks()[affected]
    return cleanup.restrict(masks, region, name="hemisphere_restriction",
                            enabled=inp.settings.restrict_to_affected_hemisphere, voxel_ml=inp.voxel_ml,
                            parameters=parameters, note=note)


def fill_holes(masks, inp: CleanupInputs, state):
    """Fill 2D holes of the Tmax masks inside tissue (never into excluded vessels)."""
    allowed = inp.tissue.copy()
    if state.get("vessels") is not None:
        allowed &= ~state["vessels"]
    spacing = inp.geometry.spacing
    return cleanup.fill_holes(masks, enabled=inp.settings.fill_holes, voxel_ml=inp.voxel_ml,
                              allowed=allowed, targets=inp.tmax_names,
                              max_area_mm2=inp.settings.fill_holes_max_mm2,
                              pixel_area_mm2=float(spacing[0] * spacing[1]))


def morphological_opening(masks, inp: CleanupInputs, state):
    """Opening of the Tmax masks (on) and of the core (off by default)."""
    settings = inp.settings
    targets = (inp.tmax_names if settings.opening else []) + (["core"] if settings.core_opening else [])
    masks, report = cleanup.opening(masks, enabled=bool(targets), radius_voxels=settings.opening_radius_voxels,
                                    voxel_ml=inp.voxel_ml, spacing_kji=inp.geometry.spacing[::-1],
                                    targets=targets)
    report.parameters.update(tmax_masks=bool(settings.opening), core=bool(settings.core_opening))
    return masks, report


def core_within_hypoperfusion(masks, inp: CleanupInputs, state):
    """Keep only core inside the cleaned hypoperfused region (default: CT only)."""
    return cleanup.restrict(
        masks, masks["hypoperfusion"], name="core_within_hypoperfusion",
        enabled=inp.settings.core_within(inp.modality), voxel_ml=inp.voxel_ml, targets=["core"],
        parameters={"default": "on for CT, off for MR",
                    "region": (f"Tmax > {inp.settings.tmax_threshold:g} s after the steps above "
                               "(holes filled, opened)")})


def minimum_cluster_size(masks, inp: CleanupInputs, state):
    """Remove connected clusters smaller than the minimum volumes (mL)."""
    min_ml = {"core": inp.settings.min_core_ml}
    min_ml.update({name: inp.settings.min_hypoperfusion_ml for name in inp.tmax_names})
    return cleanup.minimum_cluster_size(masks, enabled=inp.settings.cluster_removal, min_ml=min_ml,
                                        voxel_ml=inp.voxel_ml)


#: The chain, in order: (step name as reported, function).
CHAIN = (
    ("tmax_median_filter", tmax_median_filter),
    ("cbf_smoothing", cbf_smoothing),
    ("brain_mask", brain_mask),
    ("csf_exclusion", csf_exclusion),
    ("vessel_exclusion", vessel_exclusion),
    ("hemisphere_restriction", hemisphere_restriction),
    ("fill_holes", fill_holes),
    ("morphological_opening", morphological_opening),
    ("core_within_hypoperfusion", core_within_hypoperfusion),
    ("minimum_cluster_size", minimum_cluster_size),
)
STEP_NAMES = tuple(name for name, _ in CHAIN)


def run_cleanup(masks: dict, inputs: CleanupInputs) -> tuple[dict, list]:
    """Run :data:`CHAIN` on ``masks`` (name -> bool [K,J,I], untouched); returns the cleaned
    masks and the step reports, in chain order."""
    state: dict = {}
    reports = []
    for name, step in CHAIN:
        masks, report = step(masks, inputs, state)
        if report.name != name:  # a step reports under its own chain name
            raise AssertionError(f"clean-up step {name} reported as {report.name}")
        reports.append(report)
    return masks, reports
