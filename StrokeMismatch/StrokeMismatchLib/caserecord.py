"""The case record: one typed record per analysis, the single source of every output.

:func:`build_case_record` turns a ``pipeline.CaseResult`` into a :class:`CaseRecord`;
``summary.json`` is ``record.to_dict()``, and ``summary.csv`` (:func:`csv_row`), ``report.html``,
the terminal table and the Slicer table all render that same record, so they cannot disagree.

``summary.json`` is a documented contract (``schemas/summary.schema.json`` beside this file,
``docs/SUMMARY.md``); its ``schema_version`` changes whenever a key is renamed or removed:

- top level: ``schema_version``, ``subject``, ``modality``, ``affected_side``, the headline
  numbers (:data:`HEADLINE`, mL or ratio, ``null`` with the reason in ``notes``), ``criteria``
  (keyed by :data:`RULE_KEYS`), ``quality`` (status and findings), ``warnings`` (every stage's,
  once), ``settings`` (once, flat, see ``settings.py``), ``inputs``, ``aif``, ``metrics``
  (every metric with unit, label and note), ``analysis`` (baseline, brain mask, maps, motion,
  clean-up steps, hemispheres, rCBF reference, ADC, timings) and ``software`` (name, version,
  created, disclaimer).

Decision support for research and teaching, not a medical device.
"""

from __future__ import annotations

import datetime
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import DISCLAIMER, __version__

SCHEMA_VERSION = "2.0"

#: Headline numbers at the top level of summary.json: key -> unit.
HEADLINE = {
    "core_ml": "mL", "hypoperfusion_ml": "mL", "penumbra_ml": "mL", "mismatch_ml": "mL",
    "mismatch_ratio": "1", "tmax_gt_4_ml": "mL", "tmax_gt_8_ml": "mL", "tmax_gt_10_ml": "mL",
    "hir": "1", "core_to_penumbra_ratio": "1", "cbv_index": "1",
}

#: criteria.py rule names -> keys of ``criteria`` in summary.json.
RULE_KEYS = {"DEFUSE 3": "DEFUSE3", "EXTEND-IA": "EXTEND_IA", "DAWN": "DAWN",
             "Tissue rule (illustrative)": "TISSUE_RULE"}

MAP_UNITS = {"cbf": "mL/100 g/min", "cbv": "mL/100 g", "mtt": "s", "tmax": "s", "ttp": "s"}
#: What the CBF/CBV numbers mean per modality (PERFUSION.md §2.1, §11.3).
MAP_SCALE_NOTES = {
    "ct": "CBF and CBV in mL/100 g/min and mL/100 g (ΔHU is linear in iodine concentration; "
          "hematocrit factor and tissue density as in the settings).",
    "mr": "DSC-MR: CBF and CBV are relative. They are given in nominal mL/100 g/min and mL/100 g, but "
          "ΔR2* per unit contrast differs between arterial blood and tissue and is not calibrated, so "
          "only ratios between regions (rCBF, rCBV) are meaningful. MTT, Tmax and TTP are absolute (s).",
}


@dataclass
class CaseRecord:
    """Everything one analysis reports (JSON-ready parts; see the module docstring)."""

    subject: str
    modality: str
    affected_side: str | None
    headline: dict
    notes: dict
    criteria: dict
    quality: dict
    warnings: list
    settings: dict
    inputs: dict
    aif: dict
    metrics: dict
    analysis: dict
    software: dict
    stability: dict | None = None
    extra: dict = field(default_factory=dict)

    def verdicts(self) -> dict:
        """Rule key -> verdict text ("eligible", "not eligible", "indeterminate (…)")."""
        return {key: rule["verdict"] for key, rule in self.criteria.items()}

    def to_dict(self) -> dict:
        """The summary.json object (``json.dumps(..., allow_nan=False)`` succeeds)."""
        out = {"schema_version": SCHEMA_VERSION, "subject": self.subject, "modality": self.modality,
               "affected_side": self.affected_side, **self.headline, "notes": self.notes,
               "quality": self.quality, "stability": self.stability, "criteria": self.criteria, "warnings": self.warnings,
               "settings": self.settings, "inputs": self.inputs, "aif": self.aif,
               "metrics": self.metrics, "analysis": self.analysis, "software": self.software}
        out.update(self.extra)
        return jsonable(out)


# --------------------------------------------------------------------------------------------
def build_case_record(result, *, subject: str | None = None, extra_warnings=()) -> CaseRecord:
    """The :class:`CaseRecord` of a ``pipeline.CaseResult`` (built once per analysis).

    ``subject``: given by the user, else from a BIDS path (``sub-XX``), else the input file's
    stem (:func:`subject_from_path`). ``extra_warnings``: warnings of later stages (outputs).
    """
    series = result.series
    geometry = series.geometry
    lesion = result.lesion
    lesion_dict = lesion.to_dict() if hasattr(lesion, "to_dict") else {}
    metrics = jsonable(lesion_dict.get("metrics") or {})
    headline, notes = headline_numbers(metrics)
    metadata = dict(getattr(series, "metadata", None) or {})
    reader_warnings = [str(w) for w in metadata.pop("warnings", None) or []]
    warnings = _unique(reader_warnings + [str(w) for w in result.warnings] + [str(w) for w in extra_warnings])
    aif_voxels = np.asarray(getattr(result.aif, "voxels", np.zeros((0, 3))), dtype=int).reshape(-1, 3)
    aif_ras = geometry.ijk_to_ras_points(aif_voxels[:, ::-1]) if aif_voxels.size else np.zeros((0, 3))
    brain_voxels = int(np.count_nonzero(result.brain_mask))
    method = getattr(result.maps, "method", result.settings.method)
    return CaseRecord(
        subject=subject or subject_from_path(metadata.get("path") or series.source),
        modality=result.modality,
        affected_side=_side(lesion),
        headline=headline,
        notes=notes,
        criteria=criteria_block(lesion_dict.get("criteria") or []),
        quality=quality_block(result.quality),
        warnings=warnings,
        settings=result.settings.to_dict(),
        inputs={
            "source": series.source,
            "modality": result.modality,
            "shape_kjit": list(series.signal.shape),
            "n_frames": int(series.signal.shape[3]),
            "frame_times_s": np.asarray(series.times, dtype=float).tolist(),
            "voxel_size_mm_ijk": geometry.spacing.tolist(),
            "voxel_volume_ml": geometry.voxel_volume_ml,
            "ijk_to_ras": geometry.ijk_to_ras.tolist(),
            "te_s": series.te,
            "tr_s": series.tr,
            "metadata": metadata,
            "adc_provided": bool(result.adc_provided),
            "adc_unit": result.adc_unit,
        },
        aif={
            "method": getattr(result.aif, "method", None),
            "n_voxels": int(aif_voxels.shape[0]),
            "voxels_kji": aif_voxels.tolist(),
            "voxels_ras_mm": np.round(aif_ras, 3).tolist(),
            "quality": getattr(result.aif, "quality", {}) or {},
            "warnings": list(getattr(result.aif, "warnings", []) or []),
            "curve": np.asarray(getattr(result.aif, "curve", [])).tolist(),
        },
        metrics=metrics,
        analysis={
            "method": method,
            "baseline": _baseline_dict(result.baseline),
            "brain_mask": {"source": result.brain_mask_source, "voxels": brain_voxels,
                           "volume_ml": brain_voxels * geometry.voxel_volume_ml},
            "maps": {"method": method, "grid_dt_s": getattr(result.maps, "grid_dt", None),
                     "extra": _scalars_only(getattr(result.maps, "extra", {}) or {}),
                     "units": dict(MAP_UNITS), "absolute_scale": result.modality == "ct",
                     "scale_note": MAP_SCALE_NOTES[result.modality], "outside_mask": "NaN"},
            "motion": ({"applied": True, **_to_dict(result.motion)} if result.motion is not None
                       else {"applied": False}),
            "slice_timing": (result.slice_timing.to_dict() if getattr(result, "slice_timing", None) is not None
                             else {"applied": False, "reason": "switched off"}),
            "cleanup_steps": lesion_dict.get("steps"),
            "hemispheres": lesion_dict.get("hemispheres"),
            "rcbf_reference": lesion_dict.get("reference"),
            "adc_unit": lesion_dict.get("adc_unit"),
            "core_grids": lesion_dict.get("core_grids"),
            "adc_brain_coverage": lesion_dict.get("adc_brain_coverage"),
            "timings_s": {k: round(v, 3) for k, v in (result.timings_s or {}).items()},
            # issue 15: CT analysis grid and denoising before deconvolution (None when not used)
            "analysis_grid": getattr(result, "analysis_grid", None),
            "denoising": getattr(result, "denoising", None),
        },
        software={"name": "StrokeMismatch", "version": __version__, "created": result.created,
                  "disclaimer": DISCLAIMER},
        stability=getattr(result, "stability", None),
        extra={"pseudo_mismatch_screen": result.screen.to_dict()} if getattr(result, "screen", None) else {},
    )


def derive_record(previous: dict, *, metrics, criteria, settings: dict, affected_side=None,
                  cleanup_steps=None, hemispheres=None, rcbf_reference=None, quality_flags=(),
                  derived_from: dict, warnings=(), stability=None) -> CaseRecord:
    """The record of a case derived from a previous one (re-thresholded maps or hand-corrected
    masks): inputs, AIF and the analysis facts are the previous record's; volumes, verdicts,
    settings and clean-up are new; ``derived_from`` says what changed. ``criteria`` are the
    rules already gated by ``quality_flags`` (``criteria.apply_quality_gate``; the callers in
    ``rethreshold.py`` gate them), which are reported as the case's quality."""
    from .metrics import metrics_to_dict

    metrics_dict = jsonable(metrics_to_dict(metrics))
    headline, notes = headline_numbers(metrics_dict)
    analysis = dict(previous.get("analysis") or {})
    for key, value in (("cleanup_steps", cleanup_steps), ("hemispheres", hemispheres),
                       ("rcbf_reference", rcbf_reference)):
        if value is not None:
            analysis[key] = value
    software = dict(previous.get("software") or {}, version=__version__,
                    created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    side = affected_side if affected_side is not None else previous.get("affected_side")
    return CaseRecord(
        subject=previous.get("subject") or "unnamed", modality=previous.get("modality"),
        affected_side=side if side in ("left", "right") else None, headline=headline, notes=notes,
        criteria=criteria_block(criteria), quality=quality_block(quality_flags),
        warnings=_unique(list(previous.get("warnings") or []) + [str(w) for w in warnings]),
        settings=settings, inputs=previous.get("inputs") or {}, aif=previous.get("aif") or {},
        metrics=metrics_dict, analysis=analysis, software=software, stability=stability,
        extra={"derived_from": jsonable(derived_from)})


def headline_numbers(metrics: dict) -> tuple[dict, dict]:
    """(key -> number or None for :data:`HEADLINE`, key -> reason for each None)."""
    headline, notes = {}, {}
    for key in HEADLINE:
        entry = metrics.get(key) or {}
        value = entry.get("value")
        headline[key] = value
        if value is None:
            notes[key] = entry.get("note") or entry.get("flag") or "not available"
    return headline, notes


def criteria_block(rules) -> dict:
    """``criteria`` of summary.json: rule key -> {eligible, verdict, reasons, rules, …}."""
    out = {}
    for rule in rules:
        data = rule.to_dict() if hasattr(rule, "to_dict") else dict(rule)
        data.pop("disclaimer", None)
        name = data.get("rule", "")
        key = RULE_KEYS.get(name, re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_").upper())
        verdict = data.get("verdict") or data.get("status") or _verdict_text(data.get("eligible"))
        if data.get("eligible") is True and data.get("matched_group"):
            verdict = f"{verdict} ({data['matched_group']})"
        entry = {"name": name, "eligible": data.get("eligible"), "verdict": verdict,
                 "reasons": list(data.get("reasons") or []), "rules": data.get("criteria") or [],
                 "not_checked": data.get("not_checked") or [], "note": data.get("note") or ""}
        if "groups" in data:
            entry["groups"] = [{k: v for k, v in group.items() if k != "disclaimer"} for group in data["groups"]]
            entry["matched_group"] = data.get("matched_group")
        for mark in ("quality_status", "quality_codes", "ungated_status"):  # the quality gate (issue 9)
            if mark in data:
                entry[mark] = data[mark]
        out[key] = entry
    return out


def quality_block(flags) -> dict:
    """``quality`` of summary.json: ``status`` pass | warn | fail and every finding."""
    from .quality import quality_status

    return jsonable(quality_status(flags))


def subject_from_path(path) -> str:
    """Subject label of an input path: the BIDS ``sub-XX`` entity when present, else the file
    (or folder) name without its extensions."""
    text = str(path or "").strip()
    match = re.search(r"(?:^|[/\\_ ])(sub-[0-9A-Za-z]+)", text)
    if match:
        return match.group(1)
    name = Path(text.split(" ")[-1]).name if text else ""
    for suffix in (".nii.gz", ".seq.nrrd", ".nii", ".nrrd", ".dcm", ".gz"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return name or "unnamed"


# --------------------------------------------------------------------------------------------
def csv_row(record: dict) -> dict:
    """One flat row of a summary.json object for summary.csv and cohort tables: the subject and
    headline numbers first, then quality, verdicts, then every setting (``setting_<name>``);
    the same columns for every case of a modality-mixed cohort."""
    row = {"subject": record.get("subject"), "modality": record.get("modality"),
           "affected_side": record.get("affected_side"),
           "quality_status": (record.get("quality") or {}).get("status"),
           "stability_status": (record.get("stability") or {}).get("status")}
    for key, unit in HEADLINE.items():
        row[key] = record.get(key)
        row[f"{key}_note"] = (record.get("notes") or {}).get(key)
    for key, rule in (record.get("criteria") or {}).items():
        row[f"{key}_eligible"] = rule.get("eligible")
        row[f"{key}_verdict"] = rule.get("verdict")
        row[f"{key}_reasons"] = "; ".join(str(r) for r in rule.get("reasons") or [])
    findings = (record.get("quality") or {}).get("findings") or []
    row["quality_codes"] = ";".join(str(f.get("code")) for f in findings)
    row["warnings"] = len(record.get("warnings") or [])
    inputs = record.get("inputs") or {}
    analysis = record.get("analysis") or {}
    row.update({
        "source": inputs.get("source"), "n_frames": inputs.get("n_frames"),
        "voxel_volume_ml": inputs.get("voxel_volume_ml"),
        "brain_ml": (analysis.get("brain_mask") or {}).get("volume_ml"),
        "aif_method": (record.get("aif") or {}).get("method"),
        "aif_n_voxels": (record.get("aif") or {}).get("n_voxels"),
        "motion_max_displacement_mm": (analysis.get("motion") or {}).get("max_displacement_mm"),
        "software_version": (record.get("software") or {}).get("version"),
    })
    for name, value in (record.get("settings") or {}).items():
        if not isinstance(value, (list, dict)):
            row[f"setting_{name}"] = value
    return {key: _csv_value(value) for key, value in row.items()}


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return value


# --------------------------------------------------------------------------------------------
def _verdict_text(eligible) -> str:
    return {True: "eligible", False: "not eligible"}.get(eligible, "indeterminate")


def _side(lesion) -> str | None:
    side = getattr(lesion, "affected_side", None)
    return side if side in ("left", "right") else None


def _baseline_dict(baseline) -> dict:
    data = _to_dict(baseline) or {}
    data["frames"] = [baseline.start, baseline.stop - 1]
    return data


def _unique(items):
    return list(dict.fromkeys(items))


def _to_dict(obj):
    import dataclasses

    if obj is None:
        return None
    if hasattr(obj, "to_dict"):
        return obj.to_dict()
    if dataclasses.is_dataclass(obj):
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)
                if not isinstance(getattr(obj, f.name), np.ndarray) or getattr(obj, f.name).size <= 1000}
    return obj


def _scalars_only(mapping: dict) -> dict:
    """Keep scalars and short lists (drop whole maps stored in ``extra``)."""
    return {k: v for k, v in mapping.items() if not (isinstance(v, np.ndarray) and v.size > 64)}


def jsonable(value):
    """Recursively convert numpy types to Python ones; NaN/±inf become None."""
    import dataclasses

    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
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
        return jsonable(_to_dict(value))
    if hasattr(value, "to_dict"):
        return jsonable(value.to_dict())
    return str(value)
