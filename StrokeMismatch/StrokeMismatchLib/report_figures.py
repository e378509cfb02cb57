"""The report's pictures: slice choice, montage, maps, AIF curves and the 3D view, as PNG bytes.

``make_report_images(result)`` draws every picture of a ``pipeline.CaseResult``; ``report.py``
puts them into the HTML page. The pictures need matplotlib (extra ``report``), imported lazily;
without it no picture is drawn and a note says so. Radiological convention: the patient's
right is on the image's left.
"""

from __future__ import annotations

import io
import math
import tempfile
import warnings
from pathlib import Path

import numpy as np

from .errors import InputDataError
from .geometry import Geometry

MAP_DISPLAY = {  # name: (title, unit, colour-bar label, fixed range or None)
    "tmax": ("Tmax", "s", "Tmax (s)", (0.0, 10.0)),
    "cbf": ("CBF", "mL/100 g/min", "CBF (mL/100 g/min)", None),
    "rcbf": ("rCBF", "", "rCBF (× contralateral normal)", (0.0, 1.6)),
    "cbv": ("CBV", "mL/100 g", "CBV (mL/100 g)", None),
    "rcbv": ("rCBV", "", "rCBV (× contralateral normal)", (0.0, 1.6)),
    "mtt": ("MTT", "s", "MTT (s)", None),
}

CORE_RGB = (0.92, 0.05, 0.05)
PENUMBRA_RGB = (0.10, 0.85, 0.20)

MATPLOTLIB_MISSING = (
    "Figures were not drawn because matplotlib is not installed "
    "(pip install 'StrokeMismatchLib[report]'). The tables below are complete."
)


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
            "tmax_row": lambda: maps_png({"tmax": np.asarray(result.maps.tmax, dtype=np.float32)}, geometry,
                                         _map_slices(slices, core, penumbra), brain_mask=brain),
        }
        if getattr(result, "concentration", None) is None:
            del jobs["aif"]
            notes.append("No AIF curves in this report: it was derived from saved maps (the original "
                         "analysis' report shows them).")
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


def mask_volumes(result) -> dict:
    """Volumes (mL) of the lesion masks on the perfusion grid, for the headline fallback."""
    voxel_ml = result.series.geometry.voxel_volume_ml
    return {name: float(np.count_nonzero(mask)) * voxel_ml for name, mask in _lesion_masks(result).items()}


def _map_arrays(result) -> dict:
    """The maps to draw. DSC-MR CBF and CBV are relative (uncalibrated ΔR2*): they are shown as
    rCBF / rCBV, divided by the median of contralateral normally perfused tissue."""
    maps = {name: np.asarray(getattr(result.maps, name), dtype=np.float32)
            for name in ("tmax", "cbf", "cbv", "mtt") if getattr(result.maps, name, None) is not None}
    if result.series.modality == "mr":
        normal = contralateral_normal_mask(_brain_mask(result), _lesion_masks(result), result.series.geometry,
                                           tmax=maps.get("tmax"))
        for name in ("cbf", "cbv"):
            if name in maps:
                values = maps.pop(name)
                reference = np.nanmedian(values[normal]) if normal.any() else np.nan
                if np.isfinite(reference) and reference > 0:
                    maps["r" + name] = values / np.float32(reference)
    return maps


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
        if signal is None:  # a re-thresholded or recomputed case: no series, the pre-bolus image
            image = np.asarray(result.baseline_image, dtype=np.float32)
            return image, "pre-contrast CT image (HU)", (0.0, 80.0)
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
