"""``cohort.html``: a self-contained overview of a cohort (inline CSS and SVG, no external resource).

Counts of analysed and failed cases, quality status and each trial rule's verdicts; the
distributions of core and hypoperfusion volumes; core vs hypoperfusion with the DEFUSE 3
imaging limits; the failed cases with their reasons; every case linked to its ``report.html``.

Decision support for research and teaching, not a medical device.
"""

from __future__ import annotations

import html
import math
import urllib.parse

import numpy as np

#: DEFUSE 3 imaging criteria (Albers et al., NEJM 2018), as in ``criteria.defuse3``:
#: core < 70 mL, mismatch ratio hypoperfusion/core ≥ 1.8, mismatch volume ≥ 15 mL.
DEFUSE3_CORE_ML = 70.0
DEFUSE3_RATIO = 1.8
DEFUSE3_MISMATCH_ML = 15.0

_COLOURS = {True: "#1a7f37", False: "#b42318", None: "#b54708"}
_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1100px;color:#1d2939;
padding:0 16px}h1{font-size:1.6em;margin-bottom:4px}h2{font-size:1.2em;margin-top:32px;border-bottom:1px solid #d0d5dd}
table{border-collapse:collapse;margin:8px 0;font-size:0.9em}th,td{border:1px solid #d0d5dd;padding:3px 8px;text-align:left}
th{background:#f2f4f7}td.num{text-align:right;font-variant-numeric:tabular-nums}.meta{color:#475467;font-size:0.9em}
.disclaimer{background:#fffaeb;border:1px solid #fedf89;padding:8px 12px;margin:12px 0}.fail{color:#b42318}
.warn{color:#b54708}.pass{color:#1a7f37}svg{background:#fff;border:1px solid #eaecf0}.figs{display:flex;flex-wrap:wrap;gap:16px}
"""


def cohort_html(outcomes: list, meta: dict) -> str:
    """The page for ``outcomes`` (``cohort.run_case_task`` outcomes, manifest order) and the
    cohort's ``meta`` (the cohort.json object)."""
    analysed = [o for o in outcomes if o.get("brief")]
    failed = [o for o in outcomes if o["status"] == "failed"]
    software = meta.get("software") or {}
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        "<meta name='viewport' content='width=device-width, initial-scale=1'>",
        f"<title>StrokeMismatch cohort — {len(outcomes)} cases</title><style>{_CSS}</style></head><body>",
        "<h1>StrokeMismatch cohort</h1>",
        f"<p class='meta'>Manifest {_e(meta.get('manifest'))} · {len(outcomes)} cases · created "
        f"{_e(meta.get('created'))}, finished {_e(meta.get('finished'))} ({_e(meta.get('elapsed_s'))} s) · "
        f"{_e(meta.get('cluster'))} · StrokeMismatch {_e(software.get('version'))}</p>",
        f"<div class='disclaimer'>{_e(software.get('disclaimer'))}</div>",
        _counts_section(outcomes, analysed, failed),
        _distributions_section(analysed),
        _scatter_section(analysed),
        _failed_section(failed),
        _cases_section(outcomes),
        _settings_section(meta),
    ]
    for text in meta.get("warnings") or []:
        parts.insert(6, f"<p class='warn'>{_e(text)}</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# --------------------------------------------------------------------------------------------
def _counts_section(outcomes, analysed, failed) -> str:
    skipped = sum(1 for o in outcomes if o["status"] == "skipped")
    rows = [("Cases", len(outcomes)), ("Analysed in this run", len(analysed) - skipped),
            ("Unchanged since the last run (resumed)", skipped), ("Failed (no result)", len(failed))]
    out = ["<h2>Counts</h2><div class='figs'><table><tr><th>Cases</th><th>n</th></tr>"]
    out += [f"<tr><td>{_e(label)}</td><td class='num'>{n}</td></tr>" for label, n in rows]
    out.append("</table><table><tr><th>Quality status</th><th>n</th></tr>")
    for status in ("pass", "warn", "fail"):
        n = sum(1 for o in analysed if o["brief"].get("quality") == status)
        out.append(f"<tr><td class='{status}'>{status}</td><td class='num'>{n}</td></tr>")
    out.append("</table><table><tr><th>Trial rule</th><th>eligible</th><th>not eligible</th>"
               "<th>indeterminate</th><th>of which: quality failure</th></tr>")
    rules = []
    for o in analysed:
        for key in o["brief"].get("eligible") or {}:
            if key not in rules:
                rules.append(key)
    for key in rules:
        values = [o["brief"]["eligible"].get(key) for o in analysed]
        by_quality = sum(1 for o in analysed if o["brief"]["eligible"].get(key) is None
                         and o["brief"].get("quality") == "fail")
        out.append(f"<tr><td>{_e(key)}</td><td class='num'>{values.count(True)}</td><td class='num'>"
                   f"{values.count(False)}</td><td class='num'>{sum(v is None for v in values)}</td>"
                   f"<td class='num'>{by_quality}</td></tr>")
    out.append("</table></div>")
    return "".join(out)


def _distributions_section(analysed) -> str:
    out = ["<h2>Volumes</h2><table><tr><th></th><th>n</th><th>median</th><th>IQR</th><th>min</th><th>max</th></tr>"]
    figures = []
    for key, label in (("core_ml", "Core (mL)"), ("hypoperfusion_ml", "Hypoperfusion (mL)")):
        values = np.asarray([o["brief"][key] for o in analysed if _finite(o["brief"].get(key))], dtype=float)
        if values.size:
            q1, median, q3 = np.percentile(values, [25, 50, 75])
            out.append(f"<tr><td>{label}</td><td class='num'>{values.size}</td><td class='num'>{median:.1f}</td>"
                       f"<td class='num'>{q1:.1f}–{q3:.1f}</td><td class='num'>{values.min():.1f}</td>"
                       f"<td class='num'>{values.max():.1f}</td></tr>")
        else:
            out.append(f"<tr><td>{label}</td><td class='num'>0</td><td colspan='4'>no values</td></tr>")
        figures.append(_histogram_svg(values, label))
    out.append("</table><div class='figs'>" + "".join(figures) + "</div>")
    return "".join(out)


def _histogram_svg(values: np.ndarray, label: str, width=500, height=260) -> str:
    left, right, top, bottom = 50, 15, 20, 45
    plot_w, plot_h = width - left - right, height - top - bottom
    high = max(float(values.max()) if values.size else 0.0, 1.0)
    edges = np.linspace(0.0, _nice_ceiling(high), min(20, max(5, int(math.sqrt(values.size)) + 4)) + 1)
    counts, _ = np.histogram(np.clip(values, 0.0, edges[-1]), bins=edges)
    peak = max(int(counts.max()) if counts.size else 0, 1)
    out = [f"<svg width='{width}' height='{height}' role='img' aria-label='{_e(label)} histogram'>"]
    bar_w = plot_w / len(counts)
    for index, count in enumerate(counts):
        h = plot_h * count / peak
        x = left + index * bar_w
        out.append(f"<rect x='{x:.1f}' y='{top + plot_h - h:.1f}' width='{max(bar_w - 1, 1):.1f}' height='{h:.1f}' "
                   f"fill='#2e90fa'><title>{edges[index]:.0f}–{edges[index + 1]:.0f} mL: {count}</title></rect>")
    out.append(_axes(left, top, plot_w, plot_h, (0.0, edges[-1]), (0.0, peak), label, "cases"))
    out.append("</svg>")
    return "".join(out)


def _scatter_section(analysed) -> str:
    points = [o for o in analysed if _finite(o["brief"].get("core_ml")) and _finite(o["brief"].get("hypoperfusion_ml"))]
    width, height, left, right, top, bottom = 640, 480, 60, 20, 20, 50
    plot_w, plot_h = width - left - right, height - top - bottom
    x_max = _nice_ceiling(max([o["brief"]["core_ml"] for o in points] + [DEFUSE3_CORE_ML * 1.2]))
    y_max = _nice_ceiling(max([o["brief"]["hypoperfusion_ml"] for o in points] + [DEFUSE3_CORE_ML * 2.0]))

    def sx(x):
        return left + plot_w * x / x_max

    def sy(y):
        return top + plot_h * (1.0 - y / y_max)

    out = ["<h2>Core vs hypoperfusion</h2>",
           f"<p class='meta'>Each point a case, coloured by its DEFUSE 3 verdict (<span class='pass'>eligible</span>, "
           f"<span class='fail'>not eligible</span>, <span class='warn'>indeterminate</span>); click a point for its "
           f"report. Lines: the DEFUSE 3 imaging limits (Albers et al., NEJM 2018): core {DEFUSE3_CORE_ML:g} mL, "
           f"mismatch ratio {DEFUSE3_RATIO:g} (hypoperfusion = {DEFUSE3_RATIO:g} × core) and mismatch volume "
           f"{DEFUSE3_MISMATCH_ML:g} mL (hypoperfusion = core + {DEFUSE3_MISMATCH_ML:g} mL); eligible cases lie "
           "left of the first and above the other two.</p>",
           f"<svg width='{width}' height='{height}' role='img' aria-label='core versus hypoperfusion'>"]
    out.append(_axes(left, top, plot_w, plot_h, (0.0, x_max), (0.0, y_max), "Core (mL)", "Hypoperfusion (mL)"))
    line = "stroke='#344054' stroke-width='1.2' stroke-dasharray='6 4' fill='none'"
    out.append(f"<line x1='{sx(DEFUSE3_CORE_ML):.1f}' y1='{sy(0):.1f}' x2='{sx(DEFUSE3_CORE_ML):.1f}' "
               f"y2='{sy(y_max):.1f}' {line}><title>core {DEFUSE3_CORE_ML:g} mL</title></line>")
    ratio_x = min(x_max, y_max / DEFUSE3_RATIO)
    out.append(f"<line x1='{sx(0):.1f}' y1='{sy(0):.1f}' x2='{sx(ratio_x):.1f}' y2='{sy(ratio_x * DEFUSE3_RATIO):.1f}' "
               f"{line}><title>mismatch ratio {DEFUSE3_RATIO:g}</title></line>")
    volume_x = min(x_max, y_max - DEFUSE3_MISMATCH_ML)
    out.append(f"<line x1='{sx(0):.1f}' y1='{sy(DEFUSE3_MISMATCH_ML):.1f}' x2='{sx(volume_x):.1f}' "
               f"y2='{sy(volume_x + DEFUSE3_MISMATCH_ML):.1f}' {line}><title>mismatch volume "
               f"{DEFUSE3_MISMATCH_ML:g} mL</title></line>")
    out.append(f"<text x='{sx(DEFUSE3_CORE_ML) + 4:.1f}' y='{top + 12}' font-size='11'>core {DEFUSE3_CORE_ML:g} mL</text>")
    out.append(f"<text x='{sx(ratio_x) - 70:.1f}' y='{sy(ratio_x * DEFUSE3_RATIO) + 14:.1f}' font-size='11'>"
               f"ratio {DEFUSE3_RATIO:g}</text>")
    out.append(f"<text x='{sx(volume_x) - 90:.1f}' y='{sy(volume_x + DEFUSE3_MISMATCH_ML) + 26:.1f}' font-size='11'>"
               f"mismatch {DEFUSE3_MISMATCH_ML:g} mL</text>")
    for o in points:
        brief = o["brief"]
        eligible = (brief.get("eligible") or {}).get("DEFUSE3")
        verdict = (brief.get("verdicts") or {}).get("DEFUSE3") or "no verdict"
        x, y = min(brief["core_ml"], x_max), min(brief["hypoperfusion_ml"], y_max)
        dot = (f"<circle cx='{sx(x):.1f}' cy='{sy(y):.1f}' r='5' fill='{_COLOURS.get(eligible, '#b54708')}' "
               f"fill-opacity='0.8' stroke='#101828' stroke-width='0.5'><title>{_e(o['subject'])}: core "
               f"{brief['core_ml']:.1f} mL, hypoperfusion {brief['hypoperfusion_ml']:.1f} mL, DEFUSE 3 {_e(verdict)}"
               f"</title></circle>")
        out.append(f"<a href='{_report_href(o)}'>{dot}</a>" if brief.get("report") else dot)
    out.append("</svg>")
    if len(points) < len(analysed):
        out.append(f"<p class='meta'>{len(analysed) - len(points)} analysed case(s) without both volumes are not "
                   "plotted.</p>")
    return "".join(out)


def _failed_section(failed) -> str:
    if not failed:
        return "<h2>Failed cases</h2><p>None.</p>"
    out = [f"<h2>Failed cases ({len(failed)})</h2><table><tr><th>Subject</th><th>Reason</th></tr>"]
    out += [f"<tr><td>{_e(o['subject'])}</td><td class='fail'>{_e(o.get('error'))}</td></tr>" for o in failed]
    out.append("</table>")
    return "".join(out)


def _cases_section(outcomes) -> str:
    rules = []
    for o in outcomes:
        for key in (o.get("brief") or {}).get("verdicts") or {}:
            if key not in rules:
                rules.append(key)
    head = "".join(f"<th>{_e(key)}</th>" for key in rules)
    out = ["<h2>Cases</h2><table><tr><th>Subject</th><th>Status</th><th>Quality</th><th>Side</th><th>Core (mL)</th>"
           f"<th>Hypoperfusion (mL)</th><th>Mismatch ratio</th>{head}</tr>"]
    for o in outcomes:
        brief = o.get("brief")
        name = _e(o["subject"])
        if brief and brief.get("report"):
            name = f"<a href='{_report_href(o)}'>{name}</a>"
        if not brief:
            out.append(f"<tr><td>{name}</td><td class='fail'>failed</td><td colspan='{5 + len(rules)}'>"
                       f"{_e(o.get('error'))}</td></tr>")
            continue
        quality = brief.get("quality") or ""
        cells = "".join(f"<td>{_e((brief.get('verdicts') or {}).get(key, ''))}</td>" for key in rules)
        out.append(f"<tr><td>{name}</td><td>{_e(o['status'])}</td><td class='{_e(quality)}'>{_e(quality)}</td>"
                   f"<td>{_e(brief.get('affected_side') or '—')}</td><td class='num'>{_num(brief.get('core_ml'))}</td>"
                   f"<td class='num'>{_num(brief.get('hypoperfusion_ml'))}</td>"
                   f"<td class='num'>{_num(brief.get('mismatch_ratio'), 2)}</td>{cells}</tr>")
    out.append("</table>")
    return "".join(out)


def _settings_section(meta) -> str:
    given = meta.get("shared_settings_given") or {}
    out = ["<h2>Settings (the same for every case)</h2><p class='meta'>Given for this cohort: "
           + (_e(", ".join(f"{k} = {v}" for k, v in given.items())) or "none (defaults)")
           + ". A case's age, NIHSS and collateral score from the manifest override these; each case's "
           "summary.json records the settings it was analysed with.</p><table><tr><th>Setting</th><th>Value</th></tr>"]
    for key, value in (meta.get("settings") or {}).items():
        out.append(f"<tr><td>{_e(key)}</td><td>{_e(value)}</td></tr>")
    out.append("</table>")
    return "".join(out)


# --------------------------------------------------------------------------------------------
def _axes(left, top, width, height, x_range, y_range, x_label, y_label) -> str:
    out = [f"<line x1='{left}' y1='{top + height}' x2='{left + width}' y2='{top + height}' stroke='#101828'/>",
           f"<line x1='{left}' y1='{top}' x2='{left}' y2='{top + height}' stroke='#101828'/>"]
    for value in _ticks(*x_range):
        x = left + width * (value - x_range[0]) / (x_range[1] - x_range[0])
        out.append(f"<line x1='{x:.1f}' y1='{top + height}' x2='{x:.1f}' y2='{top + height + 4}' stroke='#101828'/>"
                   f"<text x='{x:.1f}' y='{top + height + 16}' font-size='11' text-anchor='middle'>{value:g}</text>")
    for value in _ticks(*y_range):
        y = top + height * (1.0 - (value - y_range[0]) / (y_range[1] - y_range[0]))
        out.append(f"<line x1='{left - 4}' y1='{y:.1f}' x2='{left}' y2='{y:.1f}' stroke='#101828'/>"
                   f"<text x='{left - 6}' y='{y + 4:.1f}' font-size='11' text-anchor='end'>{value:g}</text>")
    out.append(f"<text x='{left + width / 2:.1f}' y='{top + height + 36}' font-size='12' text-anchor='middle'>"
               f"{_e(x_label)}</text>")
    out.append(f"<text x='14' y='{top + height / 2:.1f}' font-size='12' text-anchor='middle' "
               f"transform='rotate(-90 14 {top + height / 2:.1f})'>{_e(y_label)}</text>")
    return "".join(out)


def _ticks(low: float, high: float, count: int = 6) -> list:
    span = max(high - low, 1e-9)
    raw = span / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.ceil(low / step) * step
    return [round(start + i * step, 10) for i in range(int((high - start) / step + 1e-9) + 1)]


def _nice_ceiling(value: float) -> float:
    value = max(float(value), 1.0)
    magnitude = 10 ** math.floor(math.log10(value))
    return next(m * magnitude for m in (1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10) if m * magnitude >= value)


def _report_href(outcome) -> str:
    return _e(urllib.parse.quote(outcome["subject"]) + "/report.html")


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _num(value, digits: int = 1) -> str:
    return f"{value:.{digits}f}" if _finite(value) else "n/a"


def _e(value) -> str:
    return html.escape("" if value is None else str(value), quote=True)
