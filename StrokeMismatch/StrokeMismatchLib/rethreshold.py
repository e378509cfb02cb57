"""Lesion analysis again from a case's maps, without deconvolving again.

Two uses, one code path (``analysis.analyze_lesion`` and ``analysis.metrics_from_masks``, the
same functions ``run_case`` and the Slicer module use):

- **re-threshold**: new lesion settings (Tmax, core ADC / rCBF, clean-up switches) applied to
  the saved maps → new masks, clean-up, volumes and verdicts, identical to a full run with those
  settings (:func:`rethreshold`);
- **recompute**: hand-corrected core / hypoperfusion masks (Slicer, ITK-SNAP) → the volumes,
  ratios and verdicts of the edited masks, with what was edited and by how many mL
  (:func:`recompute`).

:class:`CaseMaps` holds what both need: the maps, the analysed brain mask, the pre-bolus image,
the ADC (MR), the AIF's time to peak, the frame interval, the original masks and summary. It
comes from a ``CaseResult`` (:meth:`CaseMaps.from_result`) or from a result folder written by
``outputs.write_case_outputs`` (:func:`load_case_maps`).

The original case's quality findings stay with the derived case: a case whose input could not
support a verdict still cannot, whatever the thresholds.

Decision support for research and teaching, not a medical device.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from .errors import InputDataError, InputFileError
from .geometry import Geometry

MAP_NAMES = ("cbf", "cbv", "mtt", "tmax", "ttp")
#: Files a result folder needs for re-thresholding (written by outputs.write_case_outputs).
CASE_MAP_FILES = {
    "baseline_image": "maps/baseline.nii.gz",
    "brain_mask": "masks/brain.nii.gz",
    "adc": "maps/adc.nii.gz",
}
LESION_MASKS = ("core", "hypoperfusion", "penumbra")


@dataclass
class CaseMaps:
    """A case's maps and what the lesion analysis needs besides them.

    ``maps`` name -> float32 [K,J,I] (NaN outside the analysed brain); ``brain_mask`` bool;
    ``baseline_image`` pre-bolus mean (CT HU / MR signal); ``adc`` in 10⁻⁶ mm²/s on
    ``adc_geometry`` (MR; None on CT); ``aif_ttp_s``, ``frame_interval_s`` (s); ``masks`` the
    original cleaned masks; ``summary`` the original summary.json object; ``source`` where it
    came from."""

    geometry: Geometry
    modality: str
    maps: dict
    brain_mask: np.ndarray
    baseline_image: np.ndarray | None
    adc: np.ndarray | None
    adc_geometry: Geometry | None
    aif_ttp_s: float | None
    frame_interval_s: float | None
    masks: dict
    summary: dict
    source: str = ""
    quality_flags: list = field(default_factory=list)
    hemispheres: object = None  # the analysis' mid-sagittal plane (reused while bone_hu/max_yaw_deg stay)
    analysed_settings: object = None  # the LesionSettings of the analysis (else from summary.json)

    @classmethod
    def from_result(cls, result, summary: dict | None = None) -> "CaseMaps":
        """From a ``pipeline.CaseResult`` (in memory: no file is read)."""
        from .adc import adc_to_micro

        adc = None
        if result.adc is not None:
            adc, _ = adc_to_micro(result.adc, result.adc_unit)
        times = np.asarray(result.series.times, dtype=float)
        return cls(
            geometry=result.geometry, modality=result.modality, maps=result.map_arrays(),
            brain_mask=np.asarray(result.brain_mask, dtype=bool),
            baseline_image=np.asarray(result.baseline_image, dtype=np.float32),
            adc=adc, adc_geometry=result.adc_geometry if adc is not None else None,
            aif_ttp_s=(getattr(result.aif, "quality", None) or {}).get("time_to_peak_s"),
            frame_interval_s=float(np.median(np.diff(times))) if times.size > 1 else None,
            masks={name: np.asarray(result.lesion.masks[name], dtype=bool) for name in result.lesion.masks},
            summary=summary if summary is not None else result.summary(),
            source="analysis in memory", quality_flags=list(result.quality),
            hemispheres=getattr(result.lesion, "hemispheres", None), analysed_settings=result.settings.lesion)

    def tmax_masks(self) -> dict:
        """The original Tmax > 4/8/10 s masks (name -> bool), as the clean-up left them."""
        return {name: mask for name, mask in self.masks.items() if name.startswith("tmax_gt_")}


def load_case_maps(folder) -> CaseMaps:
    """A :class:`CaseMaps` from a result folder (``summary.json``, ``maps/``, ``masks/``)."""
    from .fileio import read_volume

    folder = Path(folder)
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise InputFileError(f"{folder} is not a StrokeMismatch result folder: it has no summary.json.")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputFileError(f"{summary_path} cannot be read as JSON ({error}).") from None
    if not isinstance(summary, dict) or not str(summary.get("schema_version", "")).startswith("2."):
        raise InputFileError(
            f"{summary_path} was written by another version of StrokeMismatch (schema "
            f"{summary.get('schema_version') if isinstance(summary, dict) else '?'}); run analyze again.")
    modality = summary.get("modality")
    needed = [f"maps/{name}.nii.gz" for name in MAP_NAMES] + [f"masks/{name}.nii.gz" for name in LESION_MASKS]
    needed += [CASE_MAP_FILES["brain_mask"], CASE_MAP_FILES["baseline_image"]]
    if modality == "mr":
        needed.append(CASE_MAP_FILES["adc"])
    missing = [rel for rel in needed if not (folder / rel).is_file()]
    if missing:
        raise InputFileError(
            f"The result folder {folder} lacks {', '.join(missing)}: it was written without them "
            "(an older version); run analyze again to re-threshold it.")
    maps, geometry = {}, None
    for name in MAP_NAMES:
        array, grid = read_volume(folder / f"maps/{name}.nii.gz")
        geometry = geometry or grid
        maps[name] = np.asarray(array, dtype=np.float32)
    geometry = _exact_geometry(geometry, summary)
    brain, _ = read_volume(folder / CASE_MAP_FILES["brain_mask"])
    baseline, _ = read_volume(folder / CASE_MAP_FILES["baseline_image"])
    masks = {}
    for rel in sorted((folder / "masks").glob("*.nii.gz")):
        name = rel.name[: -len(".nii.gz")]
        if name != "brain":
            masks[name] = read_volume(rel)[0] > 0
    adc, adc_geometry = (None, None)
    if modality == "mr":
        adc, adc_geometry = read_volume(folder / CASE_MAP_FILES["adc"])
        adc = np.asarray(adc, dtype=np.float32)
    # NaN outside the brain is stored in the NIfTI but SimpleITK reads it as written; restore it
    for name in MAP_NAMES:
        maps[name][~(brain > 0)] = np.nan
    aif_quality = (summary.get("aif") or {}).get("quality") or {}
    times = np.asarray((summary.get("inputs") or {}).get("frame_times_s") or [], dtype=float)
    return CaseMaps(
        geometry=geometry, modality=modality, maps=maps, brain_mask=brain > 0,
        baseline_image=np.asarray(baseline, dtype=np.float32), adc=adc, adc_geometry=adc_geometry,
        aif_ttp_s=aif_quality.get("time_to_peak_s"),
        frame_interval_s=float(np.median(np.diff(times))) if times.size > 1 else None,
        masks=masks, summary=summary, source=str(folder),
        quality_flags=_flags_from_summary(summary), hemispheres=_hemispheres(summary, geometry))


def _exact_geometry(read: Geometry, summary: dict) -> Geometry:
    """The analysis' own (float64) grid from summary.json when the NIfTI header (float32) agrees
    with it, so volumes read back equal the original to the last digit."""
    matrix = np.asarray((summary.get("inputs") or {}).get("ijk_to_ras") or [], dtype=float)
    if matrix.shape == (4, 4) and np.allclose(matrix, read.ijk_to_ras, atol=1e-3):
        return Geometry(matrix, read.shape)
    return read


def rethreshold(case: CaseMaps, lesion_settings):
    """``analysis.LesionAnalysis`` of ``case``'s maps with ``lesion_settings`` (the path
    ``run_case`` takes after deconvolution; identical results for identical settings)."""
    from .analysis import analyze_lesion

    maps = SimpleNamespace(**case.maps)
    original = _lesion_settings(case)
    same_brain = all(
        getattr(original, name) == getattr(lesion_settings, name) for name in ("bone_hu", "max_yaw_deg", "brain_mask"))
    return analyze_lesion(
        maps, case.geometry, modality=case.modality, adc=case.adc, adc_geometry=case.adc_geometry,
        adc_unit="1e-6" if case.adc is not None else None, brain_mask=case.brain_mask,
        baseline_image=case.baseline_image, settings=lesion_settings, aif_ttp=case.aif_ttp_s,
        frame_interval_s=case.frame_interval_s, hemispheres=case.hemispheres if same_brain else None)


def recompute(case: CaseMaps, core=None, hypoperfusion=None, *, settings=None):
    """Metrics and verdicts of hand-corrected masks (bool [K,J,I] on the case grid; None keeps
    that mask as analysed). Returns ``(analysis.MaskMetrics, edits)`` where ``edits`` says, per
    mask, whether it was edited and how many mL were added and removed.

    Tmax > 4/8/10 s follow the edit: unchanged when the hypoperfusion mask is unchanged;
    otherwise Tmax > t for t above the hypoperfusion threshold is kept inside the edited
    hypoperfusion, and for t below it the edited hypoperfusion is added.
    """
    from .analysis import metrics_from_masks

    shape = case.geometry.shape
    given = {"core": core, "hypoperfusion": hypoperfusion}
    final, edits = {}, {}
    voxel_ml = case.geometry.voxel_volume_ml
    for name, mask in given.items():
        original = case.masks[name]
        if mask is None:
            final[name] = original
        else:
            mask = np.asarray(mask)
            if mask.shape != tuple(shape):
                raise InputDataError(f"The edited {name} mask has shape {mask.shape}; the case grid is {shape}.")
            final[name] = mask.astype(bool)
        added = int(np.count_nonzero(final[name] & ~original))
        removed = int(np.count_nonzero(original & ~final[name]))
        edits[name] = {"edited": bool(added or removed), "added_ml": added * voxel_ml,
                       "removed_ml": removed * voxel_ml,
                       "before_ml": float(np.count_nonzero(original)) * voxel_ml,
                       "after_ml": float(np.count_nonzero(final[name])) * voxel_ml}
    settings = settings if settings is not None else _lesion_settings(case)
    tmax_masks = case.tmax_masks() if not edits["hypoperfusion"]["edited"] else None
    result = metrics_from_masks(final["core"], final["hypoperfusion"], case.geometry,
                                tmax=case.maps["tmax"], cbv=case.maps.get("cbv"), settings=settings,
                                tmax_masks=tmax_masks, brain=case.brain_mask,
                                quality_flags=case.quality_flags)
    return result, edits


def _hemispheres(summary: dict, geometry: Geometry):
    """The analysis' mid-sagittal plane from summary.json (None when it had none)."""
    from .hemispheres import Hemispheres

    data = (summary.get("analysis") or {}).get("hemispheres")
    try:
        return Hemispheres(geometry, np.asarray(data["normal_ras"], dtype=float), float(data["offset_mm"]),
                           float(data["yaw_deg"]), float(data["mirror_correlation"]), data.get("source", ""),
                           list(data.get("notes") or []))
    except (TypeError, KeyError, ValueError):
        return None


def _lesion_settings(case: CaseMaps):
    from .settings import LesionSettings, settings_by_name

    if case.analysed_settings is not None:
        return case.analysed_settings
    specs = settings_by_name()
    values = {name: value for name, value in (case.summary.get("settings") or {}).items()
              if name in specs and specs[name].owner == "lesion"}
    return LesionSettings(**values)


def _flags_from_summary(summary: dict) -> list:
    from .quality import _as_flag

    flags = []
    for finding in (summary.get("quality") or {}).get("findings") or []:
        try:
            flags.append(_as_flag(finding))  # keeps value, threshold and unit
        except (KeyError, TypeError, ValueError):
            continue
    return flags


# --- derived cases as results that outputs.write_case_outputs and the report can render ----------
class DerivedResult:
    """A re-thresholded or recomputed case, shaped like a ``CaseResult`` for the writers: maps,
    masks, brain mask, pre-bolus image, ADC and the derived :class:`caserecord.CaseRecord`.
    There is no series or concentration: the report draws no AIF curves for it (the original
    report has them)."""

    def __init__(self, case: CaseMaps, masks: dict, record):
        self.case = case
        self.lesion = SimpleNamespace(masks=masks, adc=None)
        self._record = record
        self.geometry = case.geometry
        self.modality = case.modality
        self.brain_mask = case.brain_mask
        self.baseline_image = case.baseline_image
        self.maps = SimpleNamespace(**case.maps)
        self.series = SimpleNamespace(geometry=case.geometry, modality=case.modality, signal=None,
                                      times=np.asarray((case.summary.get("inputs") or {}).get("frame_times_s") or []))
        self.signal = None
        self.adc, self.adc_unit, self.adc_geometry = case.adc, "1e-6", case.adc_geometry
        if case.adc is not None:
            from .resample import resample_array

            self.lesion.adc = (case.adc if case.adc_geometry.same_grid(case.geometry)
                               else resample_array(case.adc, case.adc_geometry, case.geometry,
                                                   interpolation="linear"))

    def map_arrays(self) -> dict:
        return dict(self.case.maps)

    def record(self, *, subject=None, extra_warnings=()):
        record = self._record
        if subject:
            record.subject = subject
        record.warnings = list(dict.fromkeys(list(record.warnings) + [str(w) for w in extra_warnings]))
        return record


def rethresholded_result(case: CaseMaps, overrides: dict) -> DerivedResult:
    """The case with lesion settings ``overrides`` (name -> value; the others as analysed)."""
    from .caserecord import derive_record
    from .settings import LesionSettings, settings_by_name

    specs = settings_by_name()
    not_lesion = sorted(name for name in overrides if name not in specs or specs[name].owner != "lesion")
    if not_lesion:
        raise InputDataError(
            f"{', '.join(not_lesion)} cannot change without deconvolving again: re-thresholding changes "
            "only thresholds, clean-up and clinical inputs. Run analyze with the new setting.")
    original = _lesion_settings(case)
    settings = LesionSettings(**{**original.settings_dict(), **overrides})
    lesion = rethreshold(case, settings)
    if case.hemispheres is None:
        case.hemispheres = lesion.hemispheres
    all_settings = {**(case.summary.get("settings") or {}), **settings.settings_dict()}
    changed = {name: {"before": getattr(original, name), "after": getattr(settings, name)}
               for name in overrides if getattr(original, name) != getattr(settings, name)}
    data = lesion.to_dict()
    stability = None
    if (case.summary.get("settings") or {}).get("verdict_stability", True):
        from .stability import verdict_stability

        stability = verdict_stability(case, settings, lesion.criteria, rethreshold, lesion.metrics)
    # The quality gate (issue 9): the case's findings, with those about the masks recomputed.
    from .criteria import apply_quality_gate
    from .quality import refresh_lesion_flags

    from .pseudomismatch import refresh_lesion_step_flag

    flags = refresh_lesion_step_flag(refresh_lesion_flags(case.quality_flags, lesion, case.brain_mask), lesion)
    record = derive_record(
        case.summary, metrics=lesion.metrics, criteria=apply_quality_gate(lesion.criteria, flags),
        settings=all_settings, affected_side=lesion.affected_side, cleanup_steps=data["steps"],
        hemispheres=data["hemispheres"], rcbf_reference=data["reference"], quality_flags=flags,
        warnings=lesion.warnings,
        stability=stability,
        derived_from={"kind": "rethreshold", "source": case.source, "changed_settings": changed})
    return DerivedResult(case, dict(lesion.masks), record)


def recomputed_result(case: CaseMaps, core=None, hypoperfusion=None) -> DerivedResult:
    """The case with hand-corrected masks (see :func:`recompute`)."""
    from .caserecord import derive_record

    result, edits = recompute(case, core, hypoperfusion)
    record = derive_record(
        case.summary, metrics=result.metrics, criteria=result.criteria,
        settings=dict(case.summary.get("settings") or {}), quality_flags=case.quality_flags,
        warnings=result.warnings,
        derived_from={"kind": "recompute", "source": case.source, "edited_masks": edits})
    masks = dict(case.masks)
    masks.update(result.masks)
    return DerivedResult(case, masks, record)


def read_edited_mask(path, case: CaseMaps, what: str) -> np.ndarray:
    """An edited mask from any SimpleITK-readable file, on the case grid (nearest-neighbour
    resampling by physical position when it is on another grid; refused when it does not
    overlap the case)."""
    from .fileio import read_volume
    from .resample import resample_mask

    array, geometry = read_volume(path)
    mask = np.asarray(array) > 0
    if geometry.same_grid(case.geometry, tolerance_mm=0.01):
        return mask
    resampled = resample_mask(mask, geometry, case.geometry)  # refuses grids that do not overlap
    if mask.any() and not resampled.any():
        raise InputDataError(f"The edited {what} mask {path} has voxels, but none inside the case's grid.")
    return resampled
