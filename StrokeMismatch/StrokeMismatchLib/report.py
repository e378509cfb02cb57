"""Self-contained HTML case report (RAPID-style summary and more).

``write_report(result, path)`` turns a :class:`pipeline.CaseResult` into one HTML file that
opens offline: every picture is an embedded base64 PNG, the style sheet is inline, there is no
script and no external resource. Content, top to bottom:

1. disclaimer (research and teaching decision support, not a medical device);
2. headline volumes (core, Tmax > 6 s, mismatch volume and ratio), the full metrics table with
   units, and the trial criteria with colour-coded verdicts and per-rule reasons;
3. slice montage: core (red) and penumbra (green) over ADC (MR, when given) or the mean
   perfusion image (CT) / pre-bolus image (MR without ADC), radiological convention
   (patient right on image left);
4. Tmax, CBF, CBV and MTT maps with colour bars and units;
5. the AIF and mean tissue curves (core, penumbra, contralateral normal tissue) against time,
   and the chosen AIF voxels marked on an image;
6. a 3D picture of core and penumbra in the brain surface (:mod:`render3d`, VTK offscreen);
7. quality flags, warnings, clean-up steps, every setting, input and timing facts.

The pictures are drawn by :mod:`report_figures` (matplotlib, extra ``report``, imported lazily;
without it the report has the tables only and says so); this module writes the HTML. ``build_report_html(summary, images)`` is the lower level: the
JSON-ready summary dict (``CaseResult.summary()``) plus PNG bytes by name.
"""

from __future__ import annotations

import base64
import html
import math
import time
from pathlib import Path

import numpy as np

from . import DISCLAIMER, __version__
from .errors import InputDataError, OutputError
from .report_figures import MATPLOTLIB_MISSING, make_report_images, mask_volumes

#: Picture names in the order they appear, with their captions.
IMAGE_CAPTIONS = {
    "montage": "Core (red) and penumbra (green) on the slices through the lesion. Radiological "
               "convention: the patient's right is on the image's left.",
    "maps": "Perfusion maps on the same slices (NaN outside the analysed brain shown black).",
    "aif": "Arterial input function and mean tissue curves; the AIF voxels marked on an image.",
    "render3d": "Core (red) and penumbra (green) inside the brain surface (VTK offscreen rendering).",
    "tmax_row": "Tmax on the same slices (s).",
}


# ============================================================================================
# Public API
# ============================================================================================
def write_report(result, path, *, record=None, images_dir=None, include_3d=True) -> Path:
    """Write the self-contained HTML report of ``result`` (a ``pipeline.CaseResult``) to ``path``.

    ``images_dir``: also save each picture there as ``report_<name>.png``; ``include_3d``: draw
    the VTK 3D picture (skipped with a note when VTK or OpenGL is missing); ``record`` the case
    record to render (``result.record()`` when not given: pass the one the other outputs use).
    Returns the path.
    """
    path = Path(path)
    if path.suffix.lower() not in (".html", ".htm"):
        path = path.with_suffix(".html") if not path.suffix else path
    if not path.parent.is_dir():
        raise OutputError(f"Folder {path.parent} does not exist: create it or choose another report path.")
    started = time.perf_counter()
    if record is None:
        record = result.record()
    summary = dict(record.to_dict() if hasattr(record, "to_dict") else record)
    summary["report_mask_volumes_ml"] = mask_volumes(result)
    info: dict = {}
    images, notes = make_report_images(result, include_3d=include_3d, info=info)
    if "montage_background" in info:
        summary["report_montage_background"] = info["montage_background"]
    notes.append(f"Report drawn in {time.perf_counter() - started:.1f} s.")
    text = build_report_html(summary, images, notes=notes)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as error:
        raise OutputError(f"Cannot write the report to {path}: {error.strerror or error}.") from None
    if images_dir is not None:
        folder = Path(images_dir)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            for name, png in images.items():
                (folder / f"report_{name}.png").write_bytes(png)
        except OSError as error:
            raise OutputError(
                f"Cannot write report pictures to {folder}: {error.strerror or error}."
            ) from None
    return path


def build_report_html(summary: dict, images: dict, *, notes=None) -> str:
    """The report as one HTML string from the JSON-ready ``summary`` and PNG bytes by name."""
    if not isinstance(summary, dict):
        raise InputDataError("build_report_html needs the summary dict of a case (CaseResult.summary()).")
    software = summary.get("software") or {}
    notes = list(notes or [])
    parts = [_HEAD.format(title=html.escape(_title(summary)), style=_STYLE)]
    disclaimer = _e(software.get("disclaimer") or DISCLAIMER)
    # --- page 1: the decision ---------------------------------------------------------------
    parts.append('<section class="page1">')
    parts.append(f"<h1>{html.escape(_title(summary))}</h1>")
    parts.append(_quality_banner(summary))
    parts.append(_exam_table(summary))
    parts.append(_headline(summary))
    parts.append(_verdict_lines(summary.get("criteria") or {}))
    for name in ("montage", "tmax_row"):
        if name in images:
            extra = ""
            if name == "montage" and summary.get("report_montage_background"):
                extra = f"Background: {summary['report_montage_background']}."
            parts.append(_figure(name, images[name], extra, css="page1-figure"))
    parts.append(f'<p class="disclaimer small"><b>Not a medical device.</b> {disclaimer}</p>')
    parts.append("</section>")
    # --- the details ------------------------------------------------------------------------
    parts.append('<section class="details">')
    parts.append('<div class="columns"><div>')
    parts.append("<h2>Criteria, rule by rule</h2>" + _criteria_table(summary.get("criteria")))
    parts.append("</div><div>")
    parts.append("<h2>Volumes and ratios</h2>" + _metrics_table(summary.get("metrics"),
                                                            summary.get("report_mask_volumes_ml")))
    parts.append("</div></div>")
    for note in notes:
        if note == MATPLOTLIB_MISSING:
            parts.append(f'<p class="note">{_e(note)}</p>')
    for name in ("maps", "aif", "render3d"):
        if name in images:
            parts.append(_figure(name, images[name]))
            if name == "maps" and summary.get("modality") == "mr":
                parts.append('<p class="small">DSC-MR: CBF and CBV are relative (ΔR2* is not calibrated '
                             "against arterial blood), so they are shown as rCBF and rCBV: each voxel "
                             "divided by the median of normally perfused tissue (Tmax < 4 s) in the "
                             "other hemisphere. Tmax and MTT are in seconds.</p>")
            if name == "aif":
                parts.append(_aif_table(summary.get("aif") or {}, summary.get("modality")))
    if "aif" not in images and summary.get("aif"):
        parts.append("<h2>Arterial input function</h2>"
                     + _aif_table(summary.get("aif") or {}, summary.get("modality")))
    parts.append("<h2>Quality</h2>" + _quality_table((summary.get("quality") or {}).get("findings"),
                                                     summary.get("warnings")))
    steps = (summary.get("analysis") or {}).get("cleanup_steps")
    parts.append("<h2>Clean-up steps</h2>" + _steps_table(steps))
    parts.append("<h2>Settings</h2>" + _key_value_table(summary.get("settings") or {}))
    parts.append("<h2>Technical details</h2>" + _technical(summary))
    other_notes = [n for n in notes if n != MATPLOTLIB_MISSING]
    if other_notes:
        items = "".join(f"<li>{_e(n)}</li>" for n in other_notes)
        parts.append(f"<h2>Report notes</h2><ul>{items}</ul>")
    parts.append(f'<p class="disclaimer small">{disclaimer}</p>')
    parts.append(f'<p class="small">StrokeMismatch {_e(software.get("version", __version__))}</p>')
    parts.append("</section></body></html>\n")
    return "\n".join(parts)


# HTML pieces
# ============================================================================================
_HEAD = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style></head><body>"""

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 1.5em auto;
       max-width: 1100px; color: #1b1b1b; padding: 0 1em; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; } h2 { font-size: 1.15em; border-bottom: 1px solid #ccc;
     padding-bottom: 0.2em; margin-top: 1.4em; }
table { border-collapse: collapse; margin: 0.4em 0; font-size: 0.88em; }
th, td { border: 1px solid #d0d0d0; padding: 0.25em 0.5em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.quality { padding: 0.5em 0.8em; border: 2px solid; margin: 0.5em 0; }
.quality-pass { border-color: #3c9a5f; background: #e9f7ee; }
.quality-warn { border-color: #e0a030; background: #fff1d6; }
.quality-fail { border-color: #c0392b; background: #fbe1de; }
.disclaimer { background: #fff4d6; border: 1px solid #e0b94f; padding: 0.5em 0.8em; }
.small { font-size: 0.8em; color: #555; } .note { background: #eef4ff; border: 1px solid #9ab;
        padding: 0.4em 0.8em; }
table.headline { border-collapse: separate; border-spacing: 0.8em 0; margin: 0.8em -0.8em; }
.box { border: 2px solid #999; border-radius: 6px; padding: 0.5em 1em; min-width: 11em; }
.box .value { font-size: 1.7em; font-weight: bold; } .box .label { font-size: 0.85em; color: #333; }
.box.core { border-color: #d01010; } .box.core .value { color: #c00000; }
.box.hypo { border-color: #1a9e2c; } .box.hypo .value { color: #137a22; }
.box.mismatch .value { color: #333; }
.columns { display: flex; flex-wrap: wrap; gap: 1.5em; } .columns > div { flex: 1 1 420px; }
.eligible { background: #d9f2d9; color: #0b5d0b; font-weight: bold; }
.noteligible { background: #f9d6d6; color: #8a0d0d; font-weight: bold; }
.indeterminate { background: #fbeacc; color: #7a4b00; font-weight: bold; }
.pass { color: #0b5d0b; } .fail { color: #8a0d0d; font-weight: bold; } .unknown { color: #7a4b00; }
.sev-error { background: #f9d6d6; } .sev-warning { background: #fbeacc; } .sev-info { background: #eef4ff; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: 0.85em; color: #444; }
table.exam th { width: 9em; } table.exam { font-size: 0.82em; }
table.verdicts td, table.verdicts th { font-size: 0.95em; }
.box.small-box .value { font-size: 1.2em; }
figure.page1-figure { margin: 0.4em 0; } figure.page1-figure img { max-height: 62mm; }
section.page1 { break-after: page; page-break-after: always; }
@page { size: A4; margin: 10mm; }
@media print {
  body { margin: 0; max-width: none; font-size: 10pt; padding: 0; }
  h1 { font-size: 14pt; margin: 0 0 2mm 0; }
  .quality, .disclaimer { padding: 1.5mm 3mm; margin: 1.5mm 0; }
  table.headline { margin: 1mm -0.8em; } .box { padding: 1mm 3mm; } .box .value { font-size: 15pt; }
  figure.page1-figure img { max-height: 58mm; }
  h2 { break-after: avoid; page-break-after: avoid; }
  table, figure, tr { break-inside: avoid; page-break-inside: avoid; }
}
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _title(summary) -> str:
    modality = {"mr": "DSC-MR perfusion", "ct": "CT perfusion"}.get(summary.get("modality"), "perfusion")
    return f"StrokeMismatch report: {modality}"


#: (label, metadata keys in the order they are looked for) of the exam identification.
_EXAM_FIELDS = (
    ("Study date", ("study_date", "StudyDate", "AcquisitionDateTime", "AcquisitionDate")),
    ("Series", ("series_description", "SeriesDescription", "ProtocolName")),
    ("Scanner", ("manufacturer", "Manufacturer", "ManufacturersModelName")),
)


def _exam_table(summary) -> str:
    """Who and what: subject, exam date and series (DICOM/BIDS, when the input says), modality,
    affected side, analysis date and method."""
    inputs = summary.get("inputs") or {}
    metadata = inputs.get("metadata") or {}
    modality = {"mr": "DSC-MR perfusion", "ct": "CT perfusion"}.get(summary.get("modality"), "perfusion")
    rows = [("Subject", summary.get("subject") or "—"), ("Modality", modality)]
    for label, keys in _EXAM_FIELDS:
        value = next((metadata[k] for k in keys if metadata.get(k)), None)
        rows.append((label, value if value is not None else "not in the input"))
    rows.append(("Input", inputs.get("source") or "—"))
    side = summary.get("affected_side")
    rows.append(("Affected side", side if side else "not determined (no clear Tmax asymmetry)"))
    rows.append(("Analysed", f"{(summary.get('software') or {}).get('created', '')} · "
                             f"{(summary.get('settings') or {}).get('method', '?')} deconvolution"))
    cells = "".join(f"<tr><th>{_e(k)}</th><td>{_e(v)}</td></tr>" for k, v in rows)
    return f'<table class="exam">{cells}</table>'


_STATUS_WORDS = {"pass": "Quality: pass", "warn": "Quality: warnings, read the findings below",
                 "fail": "Quality: FAIL, the verdicts are indeterminate"}


def _quality_banner(summary) -> str:
    """The quality status, first on the page, with each warning/error finding."""
    quality = summary.get("quality") or {}
    status = str(quality.get("status") or "pass")
    findings = [f for f in quality.get("findings") or []
                if isinstance(f, dict) and f.get("severity") in ("warning", "error")]
    items = "".join(f"<li>{_e(f.get('message', ''))}</li>" for f in findings)
    banner = (f'<div class="quality quality-{_e(status)}"><b>{_e(_STATUS_WORDS.get(status, status))}</b>'
              f'{f"<ul>{items}</ul>" if items else ""}</div>')
    stability = summary.get("stability") or {}
    if stability.get("status") == "stable":
        banner = banner.replace("</b>", "</b> · verdicts stable: none changes within ±1 s of Tmax, ±50 × 10⁻⁶ "
                                "mm²/s of ADC or ±5 points of rCBF, and no tested volume is within 10 % of "
                                "its limit", 1)
    if stability.get("status") == "near_cutoff":
        near = "".join(f"<li>{_e(f.get('message', ''))}</li>" for f in stability.get("findings") or [])
        banner += (f'<div class="quality quality-warn near-cutoff"><b>Verdict near a cut-off</b>: a small '
                   f'change of threshold or volume flips it.<ul>{near}</ul></div>')
    return banner


def _fmt(value, key="") -> str:
    """Numbers for people: ratios 2 decimals, others 1 decimal (≥ 100: none); None → '—'."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        value = float(value)
        if not math.isfinite(value):
            return "∞" if value > 0 else ("−∞" if value < 0 else "undefined")
        lowered = key.lower()
        if "ratio" in lowered or "index" in lowered or "hir" in lowered or "factor" in lowered:
            return f"{value:.2f}"
        if value != 0 and abs(value) < 0.1:
            return f"{value:.3g}"
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.1f}"
    if isinstance(value, (list, tuple)):
        if len(value) > 12:
            return f"[{len(value)} values]"
        return ", ".join(_fmt(v, key) for v in value)
    if isinstance(value, dict):
        if value and all(isinstance(v, dict) and "before" in v and "after" in v for v in value.values()):
            return "\n".join(
                f"{_pretty(k)}: {_fmt(v['before'], k)} → {_fmt(v['after'], k)} mL"
                f" (removed {_fmt(v.get('removed', v['before'] - v['after']), k)} mL)"
                for k, v in value.items())
        return "; ".join(f"{k} = {_fmt(v, k)}" for k, v in value.items())
    return str(value)


def _raw(value) -> str:
    """Settings exactly as given (floats with up to 6 significant digits)."""
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_raw(v) for v in value) if value else "—"
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return str(value)


def _lines(text: str) -> str:
    return "<br>".join(_e(line) for line in str(text).split("\n"))


_UNIT_SUFFIXES = (("_ml", "mL"), ("_mm", "mm"), ("_s", "s"), ("_percent", "%"), ("_pct", "%"))


def _pretty(key: str) -> str:
    text = str(key)
    for suffix, _ in _UNIT_SUFFIXES:
        if text.endswith(suffix):
            text = text[: -len(suffix)]
    text = text.replace("tmax_gt_", "Tmax > ").replace("_", " ")
    text = text.replace("rcbf", "rCBF").replace("rcbv", "rCBV").replace("cbv", "CBV").replace("cbf", "CBF")
    text = text.replace("hir", "HIR").replace("adc", "ADC").replace("aif", "AIF")
    words = [{"fwhm": "FWHM", "auc": "AUC", "sd": "SD", "n": "number of", "ml": "mL"}.get(w, w)
             for w in text.split(" ")]
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _metric_entries(metrics) -> list[tuple[str, str, object, str, str]]:
    """(key, label, value, unit, note) rows from a metrics dict of any reasonable shape."""
    rows = []
    if not isinstance(metrics, dict):
        return rows
    for key, entry in metrics.items():
        unit, note, value = "", "", entry
        if isinstance(entry, dict):
            if "value" not in entry and all(isinstance(v, (dict, list, tuple, int, float, type(None)))
                                            for v in entry.values()):
                for sub_key, sub_entry in _metric_entries(entry):
                    rows.append((f"{key}.{sub_key[0]}", f"{_pretty(key)}: {sub_key[1]}", *sub_key[2:]))
                continue
            value = entry.get("value")
            unit = entry.get("unit") or ""
            if unit == "1":  # dimensionless ratio
                unit = ""
            note = entry.get("note") or entry.get("reason") or entry.get("flag") or ""
            if entry.get("label"):
                rows.append((str(key), str(entry["label"]), value, unit, str(note) if note else ""))
                continue
        elif isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[1], str):
            value, unit = entry
        if not unit:
            for suffix, suffix_unit in _UNIT_SUFFIXES:
                if str(key).endswith(suffix):
                    unit = suffix_unit
        rows.append((str(key), _pretty(key), value, unit, str(note) if note else ""))
    return rows


def _metrics_table(metrics, mask_volumes=None) -> str:
    rows = _metric_entries(metrics)
    if not rows and mask_volumes:
        rows = [(k, _pretty(k) + " volume", v, "mL", "from the masks on the perfusion grid")
                for k, v in mask_volumes.items()]
    if not rows:
        return "<p>No metrics were computed.</p>"
    body = "".join(
        f"<tr><td>{_e(label)}</td><td class=num>{_e(_fmt(value, key))}</td><td>{_e(unit)}</td>"
        f"<td>{_e(note)}</td></tr>"
        for key, label, value, unit, note in rows
    )
    return f"<table><tr><th>Quantity</th><th>Value</th><th>Unit</th><th>Note</th></tr>{body}</table>"


def _find_metric(rows, include, exclude=(), exact=None):
    for key, label, value, unit, note in rows:
        if exact is not None and key == exact:
            return value, unit, note
    for key, label, value, unit, note in rows:
        lowered = key.lower()
        if all(any(word in lowered for word in group) for group in include) and not any(
                word in lowered for word in exclude):
            return value, unit, note
    return None


def _headline(summary) -> str:
    """Headline boxes from the record's top-level numbers, each with its unit or its reason."""
    settings = summary.get("settings") or {}
    if summary.get("modality") == "mr":
        core_rule = f"ADC < {settings.get('core_adc', 620):g} × 10⁻⁶ mm²/s"
    else:
        core_rule = f"rCBF < {settings.get('core_rcbf_percent', 30):g} %"
    tmax_rule = f"Tmax > {settings.get('tmax_threshold', 6):g} s"
    notes = summary.get("notes") or {}
    volumes = summary.get("report_mask_volumes_ml") or {}

    def box(css, label, key, unit):
        value = summary.get(key)
        if value is None and key in ("core_ml", "hypoperfusion_ml") and key[:-3] in volumes:
            value = volumes[key[:-3]]
        note = notes.get(key, "") if value is None else ""
        text = ("∞" if "infinite" in note else "—") if value is None else _fmt(value, key)
        unit_html = f" {_e(unit)}" if unit and value is not None else ""
        note_html = f'<div class="small">{_e(note)}</div>' if note else ""
        return (f'<td class="box {css}"><div class="value">{_e(text)}{unit_html}</div>'
                f'<div class="label">{_e(label)}</div>{note_html}</td>')

    # A table rather than flex boxes: also renders in Qt's rich-text viewer (Slicer).
    return ('<table class="headline"><tr>'
            + box("core", f"Ischemic core ({core_rule})", "core_ml", "mL")
            + box("hypo", f"Hypoperfusion ({tmax_rule})", "hypoperfusion_ml", "mL")
            + box("mismatch", "Mismatch volume", "mismatch_ml", "mL")
            + box("mismatch", "Mismatch ratio", "mismatch_ratio", "")
            + '</tr><tr>'
            + box("hypo small-box", "Penumbra", "penumbra_ml", "mL")
            + box("mismatch small-box", "Tmax > 10 s", "tmax_gt_10_ml", "mL")
            + box("mismatch small-box", "HIR (Tmax > 10 s / Tmax > 6 s)", "hir", "")
            + box("mismatch small-box", "Core / penumbra", "core_to_penumbra_ratio", "")
            + "</tr></table>")


def _verdict_lines(criteria: dict) -> str:
    """One line per trial rule: the verdict and the rule that decides it (DAWN: the group)."""
    lines = []
    for key, rule in criteria.items():
        if not isinstance(rule, dict):
            continue
        verdict, css = _verdict(rule)
        eligible = rule.get("eligible")
        if eligible is True:
            passed = [c.get("reason") for c in rule.get("rules") or [] if c.get("status") == "pass"]
            if rule.get("groups"):
                group = next((g for g in rule["groups"] if g.get("eligible")), None)
                passed = [c.get("reason") for c in (group or {}).get("criteria") or []]
                why = f"{rule.get('matched_group')}: " + "; ".join(filter(None, passed))
            else:
                why = "; ".join(filter(None, passed))
        else:
            why = "; ".join(str(r) for r in rule.get("reasons") or [])
        lines.append(f'<tr><th>{_e(rule.get("name") or key)}</th><td class="{css}">{_e(verdict)}</td>'
                     f'<td class="small">{_e(why)}</td></tr>')
    if not lines:
        return "<p>No trial criteria were evaluated.</p>"
    return ('<table class="verdicts"><tr><th>Trial imaging criteria</th><th>Verdict</th><th>Deciding rule</th>'
            "</tr>" + "".join(lines) + "</table>")


def _verdict(rule: dict):
    """('eligible' | 'not eligible' | 'indeterminate', css class)."""
    for key in ("eligible", "met", "passed", "result"):
        if key in rule and isinstance(rule[key], (bool, type(None))):
            value = rule[key]
            break
    else:
        text = str(rule.get("verdict") or rule.get("status") or "").lower()
        if text in ("eligible", "met", "pass", "passed", "true", "yes"):
            value = True
        elif text in ("not eligible", "not met", "fail", "failed", "false", "no"):
            value = False
        else:
            value = None
    css = {True: "eligible", False: "noteligible"}.get(value, "indeterminate")
    if isinstance(rule.get("verdict"), str) and rule["verdict"]:
        return rule["verdict"], css
    if value is True:
        return "eligible (on the criteria checked here)", css
    if value is False:
        return "not eligible", css
    return "indeterminate (an input is missing)", css


def _criterion_items(details) -> str:
    """<li> items for a rule's criteria: status (colour) and the reason sentence."""
    items = []
    for item in details if isinstance(details, list) else []:
        if not isinstance(item, dict):
            items.append(f"<li>{_e(item)}</li>")
            continue
        status = str(item.get("status", "")).lower()
        status_css = {"pass": "pass", "fail": "fail"}.get(status, "unknown")
        if item.get("reason"):
            text = str(item["reason"])
        else:
            label = item.get("name") or item.get("criterion") or ""
            text = f"{label}: {_fmt(item.get('value'), str(label))} {item.get('unit') or ''}".strip()
            threshold = item.get("threshold") or ""
            if threshold:
                text += f" (needs {threshold if isinstance(threshold, str) else _fmt(threshold)})"
        items.append(f'<li><span class="{status_css}">{_e(status or "?")}</span> {_e(text)}</li>')
    return "".join(items)


def _criteria_table(criteria) -> str:
    if isinstance(criteria, dict):  # summary.json: rule key -> rule
        criteria = [dict(value, name=value.get("name", key)) if isinstance(value, dict)
                    else {"name": key, "verdict": value} for key, value in criteria.items()]
    if not criteria:
        return "<p>No trial criteria were evaluated.</p>"
    rows = []
    for rule in criteria:
        if not isinstance(rule, dict):
            continue
        name = rule.get("name") or rule.get("rule") or "rule"
        verdict, css = _verdict(rule)
        reasons = rule.get("reasons") or rule.get("reason") or []
        if isinstance(reasons, str):
            reasons = [reasons]
        groups = [g for g in rule.get("groups") or [] if isinstance(g, dict)]
        if groups:
            parts = []
            for group in groups:
                group_verdict, group_css = _verdict(group)
                group_name = group.get("name") or group.get("rule") or "group"
                parts.append(f'<li><b>{_e(group_name)}</b>: <span class="{group_css}">'
                             f'{_e(group_verdict.split(" (")[0])}</span><ul>'
                             f'{_criterion_items(group.get("criteria"))}</ul></li>')
            detail_html = f'<ul class="small">{"".join(parts)}</ul>'
        else:
            details = rule.get("rules") or rule.get("criteria") or []
            items = _criterion_items(details)
            detail_html = f'<ul class="small">{items}</ul>' if items else ""
        not_checked = rule.get("not_checked") or []
        if not_checked:
            listed = _e(", ".join(map(str, not_checked)))
            detail_html += f'<div class="small">Not checked here: {listed}</div>'
        reason_html = "<br>".join(_e(r) for r in reasons) if reasons else "all criteria met"
        note = rule.get("note") or ("illustrative only, not a trial rule" if rule.get("illustrative") else "")
        note_html = f'<div class="small">{_e(note)}</div>' if note else ""
        rows.append(f"<tr><td><b>{_e(name)}</b>{note_html}</td><td class={css}>{_e(verdict)}</td>"
                    f"<td>{reason_html}{detail_html}</td></tr>")
    return ("<table><tr><th>Rule</th><th>Verdict</th><th>Reasons</th></tr>" + "".join(rows) + "</table>"
            '<p class="small">Imaging criteria as published for each trial; clinical inputs (age, NIHSS, '
            "time, occlusion site) must be entered to decide. Decision support only.</p>")


def _figure(name, png: bytes, extra_caption="", css="") -> str:
    data = base64.b64encode(png).decode("ascii")
    headings = {"montage": "Core and penumbra", "maps": "Perfusion maps", "tmax_row": "Tmax",
                "aif": "Arterial input function", "render3d": "3D view"}
    heading = "" if css == "page1-figure" else f"<h2>{_e(headings.get(name, name))}</h2>"
    return (f'{heading}<figure class="{_e(css)}"><img alt="{_e(name)}" '
            f'src="data:image/png;base64,{data}"><figcaption>{_e(IMAGE_CAPTIONS.get(name, ""))}'
            f"{(' ' + _e(extra_caption)) if extra_caption else ''}</figcaption></figure>")


_AIF_QUALITY_UNITS = {"time_to_peak_s": "s", "fwhm_s": "s", "first_moment_s": "s"}


def _aif_table(aif: dict, modality=None) -> str:
    quality = aif.get("quality") or {}
    conc = {"mr": "1/s (ΔR2*)", "ct": "HU (ΔHU)"}.get(modality, "concentration units")
    area = {"mr": "(1/s)·s (ΔR2*·time)", "ct": "HU·s"}.get(modality, "concentration × s")
    units = dict(_AIF_QUALITY_UNITS, peak_height=conc, noise_sd=conc, auc=area, min_signal_ratio="S/S0")
    rows = [("Method", aif.get("method"), ""), ("Voxels", aif.get("n_voxels"), "")]
    for key, value in quality.items():
        if key == "n_voxels":
            continue
        rows.append((_pretty(key), value, units.get(key, "s" if key.endswith("_s") else "")))
    voxels = aif.get("voxels_kji") or []
    if voxels:
        shown = "; ".join(",".join(str(v) for v in voxel) for voxel in voxels[:12])
        rows.append(("Voxels (k, j, i)", shown + (" …" if len(voxels) > 12 else ""), ""))
    body = "".join(f"<tr><td>{_e(label)}</td><td>{_e(_fmt(value, label))}</td><td>{_e(unit)}</td></tr>"
                   for label, value, unit in rows)
    warnings_html = "".join(f"<li>{_e(w)}</li>" for w in aif.get("warnings") or [])
    return (f"<table><tr><th>AIF</th><th>Value</th><th>Unit</th></tr>{body}</table>"
            + (f"<ul>{warnings_html}</ul>" if warnings_html else ""))


def _quality_table(flags, warnings_list) -> str:
    parts = []
    flags = [flag for flag in (flags or []) if isinstance(flag, dict)]
    if flags:
        rows = "".join(
            f'<tr class="sev-{_e(str(flag.get("severity", "info")).lower())}">'
            f'<td>{_e(flag.get("severity", ""))}'
            f'</td><td>{_e(flag.get("code", ""))}</td><td>{_e(flag.get("message", ""))}</td>'
            f'<td>{_e(flag.get("explanation", ""))}</td></tr>'
            for flag in flags)
        parts.append("<table><tr><th>Severity</th><th>Check</th><th>Finding</th><th>What it means</th></tr>"
                     f"{rows}</table>")
    else:
        parts.append("<p>No quality flag was raised.</p>")
    if warnings_list:
        parts.append("<p><b>Warnings during the analysis</b></p><ul>"
                     + "".join(f"<li>{_e(w)}</li>" for w in warnings_list) + "</ul>")
    return "".join(parts)


def _steps_table(steps) -> str:
    if not steps:
        return "<p>No clean-up step was reported.</p>"
    if isinstance(steps, dict):
        steps = [dict(value, name=value.get("name", key)) if isinstance(value, dict)
                 else {"name": key, "value": value} for key, value in steps.items()]
    columns = []
    for step in steps:
        if isinstance(step, dict):
            for key in step:
                if key not in columns:
                    columns.append(key)
    preferred = [c for c in ("name", "step", "mask", "enabled") if c in columns]
    columns = preferred + [c for c in columns if c not in preferred]
    header = "".join(f"<th>{_e(_pretty(c))}{' (mL)' if str(c).endswith('_ml') else ''}</th>" for c in columns)
    rows = "".join(
        "<tr>" + "".join(
            f"<td{' class=num' if _is_number(step.get(c)) else ''}>"
            f"{_lines(_fmt(step.get(c), str(c)))}</td>" for c in columns) + "</tr>"
        for step in steps if isinstance(step, dict))
    return f"<table><tr>{header}</tr>{rows}</table>"


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flatten(mapping, prefix=""):
    for key, value in mapping.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(value, name + ".")
        else:
            yield name, value


def _key_value_table(mapping: dict) -> str:
    rows = "".join(f"<tr><td>{_e(key)}</td><td>{_e(_raw(value))}</td></tr>"
                   for key, value in _flatten(mapping))
    return f"<table><tr><th>Setting</th><th>Value</th></tr>{rows}</table>" if rows else "<p>—</p>"


def _technical(summary) -> str:
    facts = {}
    inputs = summary.get("inputs") or {}
    for key in ("source", "modality", "shape_kjit", "voxel_size_mm_ijk", "voxel_volume_ml", "te_s", "tr_s",
                "adc_provided", "adc_unit"):
        if key in inputs:
            facts[f"input.{key}"] = inputs[key]
    times = inputs.get("frame_times_s") or []
    if times:
        facts["frames"] = f"{len(times)} frames, {times[0]:.1f}–{times[-1]:.1f} s"
    analysis = summary.get("analysis") or {}
    for section in ("baseline", "brain_mask", "maps", "motion", "hemispheres", "rcbf_reference",
                    "adc_unit", "timings_s"):
        value = analysis.get(section)
        if isinstance(value, dict):
            for key, item in _flatten(value):
                if isinstance(item, list) and len(item) > 12:
                    item = f"[{len(item)} values]"
                facts[f"{section}.{key}"] = item
        elif value is not None:
            facts[section] = value
    rows = "".join(f"<tr><td>{_e(k)}</td><td>{_e(_fmt(v, k))}</td></tr>" for k, v in facts.items())
    return f"<table><tr><th>Item</th><th>Value</th></tr>{rows}</table>"
