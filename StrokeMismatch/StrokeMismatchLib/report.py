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

The pictures need matplotlib (extra ``report``), imported lazily; without it the report has
the tables only and says so. ``build_report_html(summary, images)`` is the lower level: the
JSON-ready summary dict (``CaseResult.summary()``) plus PNG bytes by name.
"""

from __future__ import annotations

import base64
import html
import io
import math
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

from . import DISCLAIMER, __version__
from .errors import InputDataError, OutputError
from .geometry import Geometry

#: Picture names in the order they appear, with their captions.
IMAGE_CAPTIONS = {
    "montage": "Core (red) and penumbra (green) on the slices through the lesion. Radiological "
               "convention: the patient's right is on the image's left.",
    "maps": "Perfusion maps on the same slices (NaN outside the analysed brain shown black).",
    "aif": "Arterial input function and mean tissue curves; the AIF voxels marked on an image.",
    "render3d": "Core (red) and penumbra (green) inside the brain surface (VTK offscreen rendering).",
}

MAP_DISPLAY = {  # name: (title, unit, colour-bar label, fixed range or None)
    "tmax": ("Tmax", "s", "Tmax (s)", (0.0, 10.0)),
    "cbf": ("CBF", "mL/100 g/min", "CBF (mL/100 g/min)", None),
    "cbv": ("CBV", "mL/100 g", "CBV (mL/100 g)", None),
    "mtt": ("MTT", "s", "MTT (s)", None),
}

CORE_RGB = (0.92, 0.05, 0.05)
PENUMBRA_RGB = (0.10, 0.85, 0.20)

MATPLOTLIB_MISSING = (
    "Figures were not drawn because matplotlib is not installed "
    "(pip install 'StrokeMismatchLib[report]'). The tables below are complete."
)


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
    summary["report_mask_volumes_ml"] = _mask_volumes(result)
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


def make_report_images(result, *, include_3d=True, info=None) -> tuple[dict, list]:
    """PNG bytes by picture name for ``result``, and notes about pictures that were not drawn.
    ``info`` (a dict), when given, receives facts for the captions (``montage_background``)."""
    info = {} if info is None else info
    images: dict[str, bytes] = {}
    notes: list[str] = []
    geometry = result.series.geometry
    brain = _brain_mask(result)
    masks = _lesion_masks(result)
    core, penumbra = masks.get("core"), masks.get("penumbra")
    try:
        _import_matplotlib()
    except ImportError:
        notes.append(MATPLOTLIB_MISSING)
    else:
        background, background_label, window = _background(result, brain)
        info["montage_background"] = background_label
        slices = choose_slices(brain, core, penumbra, geometry)
        jobs = {
            "montage": lambda: montage_png(background, geometry, slices, brain_mask=brain, core=core,
                                           penumbra=penumbra, background_label=background_label,
                                           window=window),
            "maps": lambda: maps_png(_map_arrays(result), geometry, _map_slices(slices, core, penumbra),
                                     brain_mask=brain),
            "aif": lambda: _aif_png_for(result, brain, masks, geometry),
        }
        for name, job in jobs.items():
            try:
                images[name] = job()
            except Exception as error:  # one failed picture must not lose the whole report
                notes.append(f"The {name} picture could not be drawn: {error}")
    if include_3d:
        png = _render3d_png(brain, core, penumbra, geometry, notes)
        if png is not None:
            images["render3d"] = png
    return images, notes


def build_report_html(summary: dict, images: dict, *, notes=None) -> str:
    """The report as one HTML string from the JSON-ready ``summary`` and PNG bytes by name."""
    if not isinstance(summary, dict):
        raise InputDataError("build_report_html needs the summary dict of a case (CaseResult.summary()).")
    software = summary.get("software") or {}
    notes = list(notes or [])
    parts = [_HEAD.format(title=html.escape(_title(summary)), style=_STYLE)]
    parts.append(f"<h1>{html.escape(_title(summary))}</h1>")
    disclaimer = _e(software.get("disclaimer") or DISCLAIMER)
    parts.append(_quality_banner(summary))
    parts.append(f'<p class="disclaimer"><b>Not a medical device.</b> {disclaimer}</p>')
    parts.append(_case_line(summary))
    parts.append(_headline(summary))
    parts.append('<div class="columns"><div>')
    parts.append("<h2>Criteria</h2>" + _criteria_table(summary.get("criteria")))
    parts.append("</div><div>")
    parts.append("<h2>Volumes and ratios</h2>" + _metrics_table(summary.get("metrics"),
                                                            summary.get("report_mask_volumes_ml")))
    parts.append("</div></div>")
    for note in notes:
        if note == MATPLOTLIB_MISSING:
            parts.append(f'<p class="note">{_e(note)}</p>')
    for name in ("montage", "maps", "aif", "render3d"):
        if name in images:
            extra = ""
            if name == "montage" and summary.get("report_montage_background"):
                extra = f"Background: {summary['report_montage_background']}."
            parts.append(_figure(name, images[name], extra))
            if name == "maps" and summary.get("modality") == "mr":
                parts.append('<p class="small">DSC-MR: CBF and CBV carry the standard units, but their '
                             "absolute level depends on the AIF scaling (partial volume, ΔR2* "
                             "calibration); read them relative to the other hemisphere. Tmax and MTT "
                             "are in seconds and do not depend on it.</p>")
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
    parts.append("</body></html>\n")
    return "\n".join(parts)


# ============================================================================================
# Accessors: what the report needs from a CaseResult (tolerant of missing parts)
# ============================================================================================
def _brain_mask(result) -> np.ndarray:
    mask = getattr(result, "brain_mask", None)
    if mask is None:
        mask = np.isfinite(np.asarray(result.maps.cbf))
    return np.asarray(mask, dtype=bool)


def _lesion_masks(result) -> dict:
    lesion = getattr(result, "lesion", None)
    masks = getattr(lesion, "masks", None)
    if masks is None and isinstance(lesion, dict):
        masks = lesion.get("masks")
    shape = tuple(result.series.geometry.shape)
    out = {}
    for name, mask in (masks or {}).items():
        mask = np.asarray(mask)
        if mask.shape == shape:
            out[name] = mask.astype(bool)
    if "penumbra" not in out and "hypoperfusion" in out:
        out["penumbra"] = out["hypoperfusion"] & ~out.get("core", np.zeros(shape, bool))
    return out


def _mask_volumes(result) -> dict:
    """Volumes (mL) of the lesion masks on the perfusion grid, for the headline fallback."""
    voxel_ml = result.series.geometry.voxel_volume_ml
    return {name: float(np.count_nonzero(mask)) * voxel_ml for name, mask in _lesion_masks(result).items()}


def _map_arrays(result) -> dict:
    return {name: np.asarray(getattr(result.maps, name), dtype=np.float32)
            for name in MAP_DISPLAY if getattr(result.maps, name, None) is not None}


def _adc_on_perfusion_grid(result):
    shape = tuple(result.series.geometry.shape)
    lesion = getattr(result, "lesion", None)
    for holder in (lesion, result):
        for name in ("adc_on_perfusion_grid", "adc_perfusion_grid", "adc_resampled", "adc"):
            value = getattr(holder, name, None) if holder is not None else None
            if value is None and isinstance(holder, dict):
                value = holder.get(name)
            if isinstance(value, np.ndarray) and value.shape == shape:
                return value
    return None


def _background(result, brain):
    """(image, label, (low, high) window) for the montage."""
    adc = _adc_on_perfusion_grid(result) if result.series.modality == "mr" else None
    if adc is not None:
        adc = np.asarray(adc, dtype=np.float32)
        scale = 1.0
        median = np.nanmedian(adc[brain]) if brain.any() else np.nanmedian(adc)
        if np.isfinite(median) and median < 0.1:  # stored in mm²/s or 10⁻³ mm²/s: show 10⁻⁶
            scale = 1e6 if median < 0.01 else 1e3
        return adc * scale, "ADC (10⁻⁶ mm²/s)", (0.0, 1600.0)
    if result.series.modality == "ct":
        signal = getattr(result, "signal", None)
        signal = result.series.signal if signal is None else signal
        image = np.mean(signal, axis=-1, dtype=np.float64).astype(np.float32)
        return image, "mean CT perfusion image (HU)", (0.0, 80.0)
    image = getattr(result, "baseline_image", None)
    if image is None:
        image = np.mean(result.series.signal, axis=-1)
    image = np.asarray(image, dtype=np.float32)
    return image, "pre-bolus DSC image (no ADC given)", _robust_window(image, brain)


def _aif_png_for(result, brain, masks, geometry) -> bytes:
    times = np.asarray(result.series.times, dtype=float)
    concentration = np.asarray(result.concentration)
    aif = result.aif
    tissue = {}
    for name, label in (("core", "core"), ("penumbra", "penumbra")):
        mask = masks.get(name)
        if mask is not None and mask.any():
            tissue[label] = concentration[mask].mean(axis=0)
    normal = contralateral_normal_mask(brain, masks, geometry, tmax=getattr(result.maps, "tmax", None))
    if normal.any():
        tissue["contralateral normal"] = concentration[normal].mean(axis=0)
    voxels = np.asarray(getattr(aif, "voxels", np.zeros((0, 3))), dtype=int).reshape(-1, 3)
    baseline = getattr(result, "baseline", None)
    frames = None
    if baseline is not None and hasattr(baseline, "start"):
        try:
            frames = (int(baseline.start), int(baseline.stop))
        except (TypeError, ValueError):
            frames = None
    arrival = getattr(baseline, "bolus_arrival_index", None)
    unit = "ΔR2* (1/s)" if result.series.modality == "mr" else "ΔHU (HU)"
    return aif_png(times, np.asarray(aif.curve, dtype=float), tissue, voxels, concentration, geometry,
                   brain_mask=brain, unit_label=unit, baseline_frames=frames, bolus_arrival_index=arrival)


def _render3d_png(brain, core, penumbra, geometry, notes) -> bytes | None:
    from .render3d import render_lesion_3d

    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "render3d.png"
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                written = render_lesion_3d(brain, core, penumbra, geometry, target)
            except Exception as error:
                notes.append(f"The 3D picture could not be drawn: {error}")
                return None
        for warning in caught:
            notes.append(f"3D picture: {warning.message}")
        if written is None or not Path(written).is_file():
            return None
        return Path(written).read_bytes()


# ============================================================================================
# Geometry helpers: slice choice and radiological orientation
# ============================================================================================
def choose_slices(brain, core, penumbra, geometry: Geometry, n_max=8, n_min=6) -> list[int]:
    """Slice indices k (inferior to superior) covering the lesion: every lesion slice when ≤
    ``n_max``, else ``n_max`` evenly spread over it; padded with neighbours to ``n_min``; brain
    slices evenly spread when there is no lesion."""
    brain = np.asarray(brain, bool)
    n_slices = brain.shape[0]
    lesion = np.zeros_like(brain)
    for mask in (core, penumbra):
        if mask is not None:
            lesion |= np.asarray(mask, bool)
    source = lesion if lesion.any() else brain
    present = np.flatnonzero(source.any(axis=(1, 2)))
    if present.size == 0:
        present = np.arange(n_slices)
    if present.size > n_max:
        picks = np.unique(np.round(np.linspace(present[0], present[-1], n_max)).astype(int))
    else:
        picks = present
    brain_slices = set(np.flatnonzero(brain.any(axis=(1, 2))).tolist()) or set(range(n_slices))
    chosen = set(picks.tolist())
    low, high = int(picks.min()), int(picks.max())
    while len(chosen) < min(n_min, len(brain_slices)):
        grew = False
        for candidate in (high + 1, low - 1):
            if 0 <= candidate < n_slices and candidate in brain_slices and len(chosen) < n_min:
                chosen.add(candidate)
                low, high = min(low, candidate), max(high, candidate)
                grew = True
        if not grew:
            break
    ordered = sorted(chosen)
    if geometry.ijk_to_ras[2, 2] < 0:  # k runs superior to inferior: show inferior first
        ordered = ordered[::-1]
    return ordered


def _map_slices(slices, core, penumbra, n=4) -> list[int]:
    """The ``n`` montage slices with the largest lesion area, in montage order."""
    area = np.zeros(len(slices))
    for mask in (core, penumbra):
        if mask is not None:
            area += np.asarray([np.count_nonzero(mask[k]) for k in slices], float)
    if not area.any():
        return list(slices)[:: max(1, len(slices) // n)][:n]
    keep = set(np.argsort(-area, kind="stable")[:n].tolist())
    return [k for index, k in enumerate(slices) if index in keep]


class _Orientation:
    """Turns a ``[j, i]`` slice into radiological display: patient right on image left,
    anterior at the top (for axial slices; best effort otherwise)."""

    def __init__(self, geometry: Geometry):
        direction = geometry.ijk_to_ras[:3, :3]
        self.transpose = abs(direction[0, 1]) > abs(direction[0, 0])
        col_vec = direction[:, 1] if self.transpose else direction[:, 0]
        row_vec = direction[:, 0] if self.transpose else direction[:, 1]
        self.flip_cols = col_vec[0] > 0  # moving right on screen must go towards patient left (−x)
        self.flip_rows = row_vec[1] > 0  # moving down on screen must go posterior (−y)
        spacing = geometry.spacing
        col_spacing = spacing[1] if self.transpose else spacing[0]
        row_spacing = spacing[0] if self.transpose else spacing[1]
        self.aspect = float(row_spacing / col_spacing)
        shape = geometry.shape
        self.n_rows = shape[2] if self.transpose else shape[1]
        self.n_cols = shape[1] if self.transpose else shape[2]

    def image(self, slice_ji):
        out = slice_ji.T if self.transpose else slice_ji
        if self.flip_rows:
            out = out[::-1, :]
        if self.flip_cols:
            out = out[:, ::-1]
        return out

    def points(self, j, i):
        """Display (row, col) of voxel indices (j, i)."""
        rows, cols = (i, j) if self.transpose else (j, i)
        rows = np.asarray(rows, float)
        cols = np.asarray(cols, float)
        if self.flip_rows:
            rows = self.n_rows - 1 - rows
        if self.flip_cols:
            cols = self.n_cols - 1 - cols
        return rows, cols


def _crop_box(brain, orientation: _Orientation, margin=2):
    """(row0, row1, col0, col1) display bounding box of the brain over all slices."""
    footprint = orientation.image(np.asarray(brain, bool).any(axis=0))
    rows = np.flatnonzero(footprint.any(axis=1))
    cols = np.flatnonzero(footprint.any(axis=0))
    if rows.size == 0:
        return 0, footprint.shape[0], 0, footprint.shape[1]
    return (max(rows[0] - margin, 0), min(rows[-1] + margin + 1, footprint.shape[0]),
            max(cols[0] - margin, 0), min(cols[-1] + margin + 1, footprint.shape[1]))


def _slice_label(geometry: Geometry, k: int) -> str:
    shape = geometry.shape
    centre = geometry.ijk_to_ras_points(np.array([(shape[2] - 1) / 2, (shape[1] - 1) / 2, k]))
    return f"slice {k}  (S {centre[2]:+.0f} mm)"


def contralateral_normal_mask(brain, masks, geometry: Geometry, tmax=None) -> np.ndarray:
    """Brain voxels on the side opposite the lesion, outside every lesion mask, Tmax < 4 s when
    Tmax is given (normally perfused tissue, PERFUSION.md §8)."""
    brain = np.asarray(brain, bool)
    lesion = np.zeros_like(brain)
    for name in ("core", "hypoperfusion", "penumbra"):
        if name in masks:
            lesion |= masks[name]
    k, j, i = np.indices(brain.shape, dtype=np.float32)
    x = geometry.ijk_to_ras[0, 0] * i + geometry.ijk_to_ras[0, 1] * j + geometry.ijk_to_ras[0, 2] * k
    x = x + geometry.ijk_to_ras[0, 3]
    if not brain.any():
        return brain
    midline = float(np.median(x[brain]))
    if lesion.any():
        lesion_right = float(np.mean(x[lesion])) > midline
        side = x < midline if lesion_right else x > midline
    else:
        side = np.ones_like(brain)
    normal = brain & side & ~lesion
    if tmax is not None:
        tmax = np.asarray(tmax)
        if tmax.shape == brain.shape:
            with np.errstate(invalid="ignore"):
                normal &= np.isfinite(tmax) & (tmax < 4.0)
    return normal


# ============================================================================================
# Pictures (matplotlib, Agg, no pyplot state)
# ============================================================================================
def _import_matplotlib():
    import matplotlib  # noqa: F401  (raises ImportError when missing or blocked)
    from matplotlib.figure import Figure
    from matplotlib import colormaps

    return Figure, colormaps


def _png(figure, dpi=100) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, facecolor=figure.get_facecolor())
    return buffer.getvalue()


def _robust_window(image, mask, low=1.0, high=99.0):
    values = np.asarray(image)[np.asarray(mask, bool)] if np.any(mask) else np.asarray(image).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(values, [low, high])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _side_labels(axis, colour="white", size=9):
    """'R' and 'L' in the top corners (radiological convention: patient right on image left)."""
    axis.text(0.02, 0.98, "R", color=colour, fontsize=size, fontweight="bold", transform=axis.transAxes,
              ha="left", va="top")
    axis.text(0.98, 0.98, "L", color=colour, fontsize=size, fontweight="bold", transform=axis.transAxes,
              ha="right", va="top")


def montage_png(background, geometry: Geometry, slices, *, brain_mask=None, core=None, penumbra=None,
                background_label="", window=None, columns=4) -> bytes:
    """Slice montage: ``background`` grey, core red and penumbra green (filled, alpha 0.4, with
    outlines), radiological convention, cropped to the brain. Returns PNG bytes."""
    Figure, _ = _import_matplotlib()
    background = np.asarray(background, dtype=np.float32)
    shape = tuple(geometry.shape)
    brain = np.ones(shape, bool) if brain_mask is None else np.asarray(brain_mask, bool)
    empty = np.zeros(shape, bool)
    core = empty if core is None else np.asarray(core, bool)
    penumbra = empty if penumbra is None else np.asarray(penumbra, bool)
    if window is None:
        window = _robust_window(background, brain)
    orient = _Orientation(geometry)
    r0, r1, c0, c1 = _crop_box(brain, orient)
    slices = list(slices) or [shape[0] // 2]
    columns = min(columns, len(slices))
    rows = int(math.ceil(len(slices) / columns))
    panel_w = 2.3
    panel_h = panel_w * (r1 - r0) * orient.aspect / max(c1 - c0, 1)
    figure = Figure(figsize=(panel_w * columns, (panel_h + 0.2) * rows + 0.55), facecolor="black")
    figure.subplots_adjust(left=0.005, right=0.995, bottom=0.005, top=1 - 0.45 / (panel_h * rows + 0.55),
                           wspace=0.02, hspace=0.12)
    for index in range(rows * columns):
        axis = figure.add_subplot(rows, columns, index + 1)
        axis.set_facecolor("black")
        axis.set_axis_off()
        if index >= len(slices):
            continue
        k = slices[index]
        crop = (slice(r0, r1), slice(c0, c1))
        image = orient.image(background[k])[crop]
        axis.imshow(image, cmap="gray", vmin=window[0], vmax=window[1], aspect=orient.aspect,
                    interpolation="nearest")
        overlay = np.zeros(image.shape + (4,), np.float32)
        for mask, rgb in ((penumbra, PENUMBRA_RGB), (core, CORE_RGB)):
            shown = orient.image(mask[k])[crop]
            overlay[shown] = (*rgb, 0.42)
            if shown.any() and shown.shape[0] > 1 and shown.shape[1] > 1:
                axis.contour(shown.astype(np.float32), levels=[0.5], colors=[rgb], linewidths=1.0)
        axis.imshow(overlay, aspect=orient.aspect, interpolation="nearest")
        axis.set_title(_slice_label(geometry, k), color="white", fontsize=7.5, pad=2)
        _side_labels(axis)
    figure.text(0.01, 1 - 0.2 / (panel_h * rows + 0.55), f"Background: {background_label}", color="white",
                fontsize=9, va="center")
    figure.text(0.99, 1 - 0.2 / (panel_h * rows + 0.55), "■ core", color=CORE_RGB, fontsize=10,
                ha="right", va="center", fontweight="bold")
    figure.text(0.86, 1 - 0.2 / (panel_h * rows + 0.55), "■ penumbra", color=PENUMBRA_RGB, fontsize=10,
                ha="right", va="center", fontweight="bold")
    return _png(figure)


def maps_png(maps: dict, geometry: Geometry, slices, *, brain_mask=None) -> bytes:
    """Rows Tmax, CBF, CBV, MTT × the given slices, each row with a colour bar and its unit."""
    Figure, colormaps = _import_matplotlib()
    names = [name for name in MAP_DISPLAY if name in maps]
    if not names:
        raise InputDataError("No perfusion map to draw (expected tmax, cbf, cbv or mtt).")
    shape = tuple(geometry.shape)
    brain = np.ones(shape, bool) if brain_mask is None else np.asarray(brain_mask, bool)
    orient = _Orientation(geometry)
    r0, r1, c0, c1 = _crop_box(brain, orient)
    slices = list(slices) or [shape[0] // 2]
    panel_w = 2.0
    panel_h = panel_w * (r1 - r0) * orient.aspect / max(c1 - c0, 1)
    width = panel_w * len(slices) + 1.3
    figure = Figure(figsize=(width, (panel_h + 0.1) * len(names) + 0.3), facecolor="white")
    grid = figure.add_gridspec(len(names), len(slices) + 1, width_ratios=[1] * len(slices) + [0.08],
                               left=0.07, right=0.88, bottom=0.02, top=0.96, wspace=0.03, hspace=0.08)
    cmap = colormaps["turbo"].with_extremes(bad="black")
    for row, name in enumerate(names):
        title, unit, bar_label, fixed = MAP_DISPLAY[name]
        data = np.asarray(maps[name], dtype=np.float32)
        if fixed is not None:
            vmin, vmax = fixed
        else:
            finite = data[brain & np.isfinite(data)]
            vmin, vmax = 0.0, float(np.percentile(finite, 98)) if finite.size else 1.0
            if name == "mtt":
                vmax = min(vmax, 20.0)
            vmax = vmax if vmax > vmin else vmin + 1.0
        image = None
        for col, k in enumerate(slices):
            axis = figure.add_subplot(grid[row, col])
            axis.set_axis_off()
            shown = orient.image(data[k])[r0:r1, c0:c1]
            shown = np.where(orient.image(brain[k])[r0:r1, c0:c1], shown, np.nan)
            image = axis.imshow(shown, cmap=cmap, vmin=vmin, vmax=vmax, aspect=orient.aspect,
                                interpolation="nearest")
            _side_labels(axis, size=8)
            if row == 0:
                axis.set_title(_slice_label(geometry, k), fontsize=7)
        figure.text(0.035, 1 - (row + 0.5) / len(names) * 0.94 - 0.04, title, rotation=90, fontsize=11,
                    fontweight="bold", ha="center", va="center")
        bar_axis = figure.add_subplot(grid[row, len(slices)])
        bar = figure.colorbar(image, cax=bar_axis, extend="max")
        bar.set_label(bar_label, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return _png(figure)


def aif_png(times, aif_curve, tissue_curves: dict, aif_voxels, concentration, geometry: Geometry, *,
            brain_mask=None, unit_label="concentration", baseline_frames=None,
            bolus_arrival_index=None) -> bytes:
    """Left: AIF (left axis) and mean tissue curves (right axis) against time (s), baseline
    frames shaded; right: the AIF voxels (circles) on the slice holding most of them, over the
    area under the concentration curve (arteries bright), radiological convention."""
    Figure, _ = _import_matplotlib()
    times = np.asarray(times, float)
    aif_curve = np.asarray(aif_curve, float)
    voxels = np.asarray(aif_voxels, int).reshape(-1, 3)
    figure = Figure(figsize=(10.0, 3.8), facecolor="white")
    grid = figure.add_gridspec(1, 2, width_ratios=[1.7, 1], left=0.07, right=0.98, bottom=0.14, top=0.9,
                               wspace=0.28)
    axis = figure.add_subplot(grid[0, 0])
    if baseline_frames is not None:
        start, stop = baseline_frames
        start = int(np.clip(start, 0, times.size - 1))
        stop = int(np.clip(stop - 1, 0, times.size - 1))
        axis.axvspan(times[start], times[stop], color="0.9", zorder=0, label="baseline frames")
    if bolus_arrival_index is not None and 0 <= int(bolus_arrival_index) < times.size:
        axis.axvline(times[int(bolus_arrival_index)], color="0.4", linestyle=":", linewidth=1.0,
                     label="bolus arrival")
    axis.plot(times, aif_curve, color="#c00000", linewidth=2.2, label=f"AIF ({voxels.shape[0]} voxels)")
    axis.set_xlabel("time (s)")
    axis.set_ylabel(f"AIF {unit_label}", color="#c00000")
    axis.set_xlim(times[0], times[-1])
    axis.grid(alpha=0.3)
    tissue_axis = axis.twinx()
    styles = {"core": ("#e8540c", "--"), "penumbra": ("#1a9e2c", "-"),
              "contralateral normal": ("#1f4e9e", "-")}
    for label, curve in tissue_curves.items():
        colour, style = styles.get(label, ("0.3", "-."))
        tissue_axis.plot(times, np.asarray(curve, float), color=colour, linestyle=style, linewidth=1.5,
                         label=f"{label} (mean)")
    tissue_axis.set_ylabel(f"tissue {unit_label}")
    handles = axis.get_legend_handles_labels()
    more = tissue_axis.get_legend_handles_labels()
    axis.legend(handles[0] + more[0], handles[1] + more[1], fontsize=7.5, loc="upper right", framealpha=0.9)
    axis.set_title("AIF and tissue curves (tissue on the right axis)", fontsize=9.5)

    image_axis = figure.add_subplot(grid[0, 1])
    image_axis.set_axis_off()
    concentration = np.asarray(concentration)
    shape = tuple(geometry.shape)
    brain = np.ones(shape, bool) if brain_mask is None else np.asarray(brain_mask, bool)
    if voxels.shape[0]:
        k = int(np.bincount(voxels[:, 0], minlength=shape[0]).argmax())
    else:
        k = shape[0] // 2
    area = np.trapezoid(concentration[k], times, axis=-1) if times.size > 1 else concentration[k, ..., 0]
    orient = _Orientation(geometry)
    r0, r1, c0, c1 = _crop_box(brain, orient)
    shown = orient.image(np.where(brain[k], area, np.nan))[r0:r1, c0:c1]
    window = _robust_window(shown, np.isfinite(shown), 1.0, 99.5)
    image_axis.imshow(shown, cmap="gray", vmin=window[0], vmax=window[1], aspect=orient.aspect,
                      interpolation="nearest")
    on_slice = voxels[voxels[:, 0] == k] if voxels.shape[0] else voxels
    if on_slice.shape[0]:
        rows, cols = orient.points(on_slice[:, 1], on_slice[:, 2])
        image_axis.scatter(cols - c0, rows - r0, s=40, facecolors="none", edgecolors="#ffd400",
                           linewidths=1.4)
    _side_labels(image_axis, colour="#40c0ff")
    image_axis.set_title(f"AIF voxels on {_slice_label(geometry, k)}\n"
                         f"({on_slice.shape[0]} of {voxels.shape[0]} here; image: area under the curve)",
                         fontsize=8.5)
    return _png(figure)


# ============================================================================================
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
"""


def _e(value) -> str:
    return html.escape(str(value), quote=True)


def _title(summary) -> str:
    modality = {"mr": "DSC-MR perfusion", "ct": "CT perfusion"}.get(summary.get("modality"), "perfusion")
    return f"StrokeMismatch report: {modality}"


def _case_line(summary) -> str:
    source = (summary.get("inputs") or {}).get("source") or "unnamed input"
    created = (summary.get("software") or {}).get("created") or ""
    method = (summary.get("settings") or {}).get("method") or "?"
    side = summary.get("affected_side") or "not determined"
    return (f'<p class="small">Subject: <b>{_e(summary.get("subject") or "—")}</b> · input: {_e(source)} · '
            f'analysed {_e(created)} · deconvolution {_e(method)} · affected side: <b>{_e(side)}</b></p>')


_STATUS_WORDS = {"pass": "Quality: pass", "warn": "Quality: warnings, read the findings below",
                 "fail": "Quality: FAIL, the verdicts are indeterminate"}


def _quality_banner(summary) -> str:
    """The quality status, first on the page, with each warning/error finding."""
    quality = summary.get("quality") or {}
    status = str(quality.get("status") or "pass")
    findings = [f for f in quality.get("findings") or []
                if isinstance(f, dict) and f.get("severity") in ("warning", "error")]
    items = "".join(f"<li>{_e(f.get('message', ''))}</li>" for f in findings)
    return (f'<div class="quality quality-{_e(status)}"><b>{_e(_STATUS_WORDS.get(status, status))}</b>'
            f'{f"<ul>{items}</ul>" if items else ""}</div>')


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
    rows = _metric_entries(summary.get("metrics"))
    volumes = summary.get("report_mask_volumes_ml") or {}
    modality = summary.get("modality")
    core_rule = "ADC < 620 × 10⁻⁶ mm²/s" if modality == "mr" else "rCBF < 30 %"
    lesion_settings = summary.get("settings") or {}
    if modality == "mr" and isinstance(lesion_settings.get("core_adc"), (int, float)):
        core_rule = f"ADC < {lesion_settings['core_adc']:g} × 10⁻⁶ mm²/s"
    elif modality == "ct" and isinstance(lesion_settings.get("core_rcbf_percent"), (int, float)):
        core_rule = f"rCBF < {lesion_settings['core_rcbf_percent']:g} %"
    tmax_rule = "Tmax > 6 s"
    if isinstance(lesion_settings.get("tmax_threshold"), (int, float)):
        tmax_rule = f"Tmax > {lesion_settings['tmax_threshold']:g} s"

    def pick(found, fallback_key):
        if found is not None:
            return found[0], found[1] or "mL", found[2]
        if fallback_key in volumes:
            return volumes[fallback_key], "mL", ""
        return None, "mL", "not computed"

    core = pick(_find_metric(rows, [("core",), ("volume", "_ml")], ("ratio", "penumbra", "grid_adc",
                                                                   "dwi"), exact="core_ml"), "core")
    hypo = pick(_find_metric(rows, [("hypoperfusion", "tmax_gt_6", "tmax6"), ("volume", "_ml")],
                             ("ratio", "index"), exact="hypoperfusion_ml"), "hypoperfusion")
    mismatch = pick(_find_metric(rows, [("mismatch",), ("volume", "_ml")], ("ratio",), exact="mismatch_ml"),
                    "__none__")
    if mismatch[0] is None and core[0] is not None and hypo[0] is not None:
        mismatch = (hypo[0] - core[0], "mL", "")
    ratio_found = _find_metric(rows, [("mismatch_ratio", "mismatch ratio")], exact="mismatch_ratio")
    if ratio_found is not None:
        ratio = ratio_found
    elif core[0] is not None and hypo[0] is not None:
        ratio = ((hypo[0] / core[0]) if core[0] > 0 else None, "",
                 "infinite (no core)" if core[0] == 0 and hypo[0] > 0 else ("" if core[0] else "undefined"))
    else:
        ratio = (None, "", "not computed")

    def box(css, label, entry, key):
        value, unit, note = entry
        text = _fmt(value, key)
        if value is None and note:
            text = "∞" if "infinite" in str(note).lower() else "—"
        note_html = f'<div class="small">{_e(note)}</div>' if note else ""
        unit_html = f" {_e(unit)}" if unit and value is not None else ""
        return (f'<td class="box {css}"><div class="value">{_e(text)}{unit_html}</div>'
                f'<div class="label">{_e(label)}</div>{note_html}</td>')

    # A table rather than flex boxes: also renders in Qt's rich-text viewer (Slicer).
    return ('<table class="headline"><tr>'
            + box("core", f"Ischemic core ({core_rule})", core, "core_ml")
            + box("hypo", f"Hypoperfusion ({tmax_rule})", hypo, "hypo_ml")
            + box("mismatch", "Mismatch volume", mismatch, "mismatch_ml")
            + box("mismatch", "Mismatch ratio", ratio, "mismatch_ratio")
            + "</tr></table>")


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
    if value is True:
        return "eligible (on the criteria checked here)", "eligible"
    if value is False:
        return "not eligible", "noteligible"
    return "indeterminate (an input is missing)", "indeterminate"


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
    if isinstance(criteria, dict):
        if "rules" in criteria and isinstance(criteria["rules"], list):
            criteria = criteria["rules"]
        else:
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
            details = rule.get("criteria") or rule.get("checks") or rule.get("items") or []
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


def _figure(name, png: bytes, extra_caption="") -> str:
    data = base64.b64encode(png).decode("ascii")
    headings = {"montage": "Core and penumbra", "maps": "Perfusion maps",
                "aif": "Arterial input function", "render3d": "3D view"}
    return (f'<h2>{_e(headings.get(name, name))}</h2><figure><img alt="{_e(name)}" '
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
