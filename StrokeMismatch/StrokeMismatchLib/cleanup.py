"""Switchable clean-up steps on lesion masks, each reporting the volume it removed.

Every step takes a dict ``name -> bool [K,J,I]`` (e.g. core, hypoperfusion, tmax_gt_10),
returns a new dict (inputs untouched) and a :class:`StepReport` with its setting, whether it was
applied and the volume of every mask before and after (mL). A disabled step returns its input
unchanged and says so (PERFUSION.md §9: every step visible in summary.json).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk
from scipy import ndimage


@dataclass
class StepReport:
    """One clean-up step: ``name``, ``enabled`` (switch), ``applied`` (actually ran),
    ``parameters``, ``volumes_ml`` name -> {"before", "after", "removed"}, ``note``."""

    name: str
    enabled: bool
    applied: bool
    parameters: dict
    volumes_ml: dict = field(default_factory=dict)
    note: str = ""

    def removed_ml(self, mask: str) -> float:
        return self.volumes_ml[mask]["removed"]

    def to_dict(self) -> dict:
        return {"name": self.name, "enabled": self.enabled, "applied": self.applied,
                "parameters": dict(self.parameters), "volumes_ml": {
                    k: dict(v) for k, v in self.volumes_ml.items()}, "note": self.note}


def _volumes(before: dict, after: dict, voxel_ml: float) -> dict:
    out = {}
    for name in before:
        b = float(np.count_nonzero(before[name]) * voxel_ml)
        a = float(np.count_nonzero(after[name]) * voxel_ml)
        out[name] = {"before": b, "after": a, "removed": b - a}
    return out


def _copy(masks: dict) -> dict:
    return {name: np.array(mask, dtype=bool, copy=True) for name, mask in masks.items()}


def _report(name, enabled, applied, parameters, before, after, voxel_ml, note=""):
    return after, StepReport(name, enabled, applied, parameters,
                             _volumes(before, after, voxel_ml), note)


def restrict(masks: dict, region: np.ndarray | None, *, name: str, enabled: bool,
             voxel_ml: float, parameters: dict | None = None, targets=None, note: str = "",
             exclude: bool = False):
    """Keep only voxels inside ``region`` (or outside it when ``exclude``) in ``targets``
    (default all masks). ``region`` None → the step cannot run (reported, not applied)."""
    parameters = dict(parameters or {})
    if not enabled or region is None:
        if enabled and not note:
            note = "not applied: the input it needs is missing"
        return _report(name, enabled, False, parameters, masks, _copy(masks), voxel_ml,
                       note if enabled else "switched off")
    region = np.asarray(region, dtype=bool)
    keep = ~region if exclude else region
    targets = list(masks) if targets is None else list(targets)
    after = {k: (m & keep if k in targets else m.copy()) for k, m in masks.items()}
    return _report(name, True, True, parameters, masks, after, voxel_ml, note)


def bounding_box(mask: np.ndarray, margin) -> tuple:
    """Slices of the box around ``mask``'s voxels widened by ``margin`` voxels per axis (an int
    or one per axis), clipped to the image. Morphology on the box equals morphology on the whole
    image when the margin is at least the kernel's reach: the box keeps a ring of background
    around the mask, and the operations are local (measured 5–20× faster on 256² slices)."""
    margins = np.broadcast_to(np.asarray(margin, dtype=int), (mask.ndim,))
    boxes = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        where = np.nonzero(np.any(mask, axis=other))[0]
        low = max(int(where[0]) - int(margins[axis]), 0)
        high = min(int(where[-1]) + int(margins[axis]) + 1, mask.shape[axis])
        boxes.append(slice(low, high))
    return tuple(boxes)


def kernel_radius(radius_voxels: int, spacing_kji=None) -> list:
    """Per-axis radius (k, j, i voxels) of a *physical* ball of ``radius_voxels`` × the finest
    voxel spacing, rounded to whole voxels per axis: isotropic voxels give ``radius_voxels`` on
    every axis; thick slices (e.g. 1.8 × 1.8 × 5 mm) give 0 across slices, so the operation
    stays within each slice instead of reaching 5–10 mm up and down."""
    radius_voxels = int(radius_voxels)
    if spacing_kji is None:
        return [radius_voxels] * 3
    spacing = np.asarray(spacing_kji, dtype=float)
    reach_mm = radius_voxels * float(spacing.min())
    return [int(np.floor(reach_mm / s + 0.5)) for s in spacing]  # nearest whole voxel


def ball_element(radius_kji) -> np.ndarray:
    """ITK's flat ball (``sitk.sitkBall``) of per-axis radii: the offsets inside the ellipsoid of
    semi-axes radius + 0.5 (a radius of 0 keeps that axis to one voxel)."""
    radius = [int(r) for r in radius_kji]
    grids = np.meshgrid(*[np.arange(-r, r + 1) for r in radius], indexing="ij")
    return sum((g / (r + 0.5)) ** 2 for g, r in zip(grids, radius)) <= 1.0


def binary_opening_ball(mask: np.ndarray, radius_kji) -> np.ndarray:
    """Opening with :func:`ball_element`, as SimpleITK's ``BinaryMorphologicalOpening`` does it
    (outside the image counts as foreground when eroding), in scipy: the same voxels, about 10×
    faster (Testing/test_cleanup.py compares the two)."""
    element = ball_element(radius_kji)
    eroded = ndimage.binary_erosion(mask, element, border_value=1)
    return ndimage.binary_dilation(eroded, element, border_value=0)


def opening(masks: dict, *, enabled: bool, radius_voxels: int, voxel_ml: float, geometry=None,
            targets=None, spacing_kji=None):
    """Binary morphological opening with a ball of ``radius_voxels`` of ``targets``
    (default every mask). With ``spacing_kji`` (mm) the ball is physical (see
    :func:`kernel_radius`); without it, ``radius_voxels`` on every axis."""
    if spacing_kji is None and geometry is not None:
        spacing_kji = tuple(geometry.spacing[::-1])
    radius_kji = kernel_radius(radius_voxels, spacing_kji)
    targets = list(masks) if targets is None else list(targets)
    parameters = {"radius_voxels": int(radius_voxels), "kernel": "ball",
                  "kernel_radius_kji": radius_kji, "targets": targets}
    if not enabled or radius_voxels <= 0:
        return _report("morphological_opening", enabled, False, parameters, masks, _copy(masks),
                       voxel_ml, "switched off" if not enabled else "radius 0: nothing to do")
    after = {}
    for key, mask in masks.items():
        if key not in targets or not mask.any():
            after[key] = mask.copy()
            continue
        box = bounding_box(mask, [r + 1 for r in radius_kji])
        after[key] = np.zeros_like(mask)
        after[key][box] = binary_opening_ball(mask[box], radius_kji) & mask[box]
    return _report("morphological_opening", True, True, parameters, masks, after, voxel_ml)


def fill_holes(masks: dict, *, enabled: bool, voxel_ml: float, allowed=None, targets=None,
               max_area_mm2: float | None = None, pixel_area_mm2: float | None = None):
    """Fill holes of ``targets`` slice by slice (2D, 4-connected background): voxels fully
    enclosed by a lesion in their slice join it. With ``allowed`` (e.g. tissue without CSF and
    vessels) a hole is filled only when every voxel of it is allowed (a ring of lesion around
    a CSF space stays a ring). Rationale: inside a hypoperfused region, voxels with almost no flow have
    a residue without a meaningful peak, so their Tmax is random although the
    tissue is hypoperfused. The step *adds* volume: its report shows negative "removed".
    With ``max_area_mm2`` and ``pixel_area_mm2`` (in-plane voxel area) a hole larger than
    ``max_area_mm2`` in its slice stays open: a region that large is not a few voxels of noisy
    Tmax but tissue the lesion merely surrounds."""
    targets = list(masks) if targets is None else list(targets)
    capped = bool(max_area_mm2 and max_area_mm2 > 0 and pixel_area_mm2)
    parameters = {"connectivity": "2D per slice, 4-connected background", "targets": targets,
                  "restricted_to": "analysed tissue" if allowed is not None else "none",
                  "max_area_mm2": float(max_area_mm2) if capped else None}
    if not enabled:
        return _report("fill_holes", False, False, parameters, masks, _copy(masks), voxel_ml,
                       "switched off")
    structure = np.zeros((3, 3, 3), dtype=bool)
    structure[1] = ndimage.generate_binary_structure(2, 1)
    allowed = None if allowed is None else np.asarray(allowed, dtype=bool)
    after = {}
    for key, mask in masks.items():
        if key not in targets or not mask.any():
            after[key] = mask.copy()
            continue
        box = bounding_box(mask, (0, 1, 1))  # a ring of background in every slice
        part = mask[box]
        holes = ndimage.binary_fill_holes(part, structure=structure) & ~part
        if allowed is not None and holes.any():
            # a hole that contains excluded voxels (CSF, vessel) is anatomy, not missing
            # hypoperfusion: keep it open entirely
            labels, _ = ndimage.label(holes, structure=structure)
            bad = np.unique(labels[holes & ~allowed[box]])
            holes &= ~np.isin(labels, bad[bad > 0])
        if capped and holes.any():
            labels, _ = ndimage.label(holes, structure=structure)
            area = np.bincount(labels.ravel()) * float(pixel_area_mm2)
            too_big = np.flatnonzero(area > float(max_area_mm2))
            holes &= ~np.isin(labels, too_big[too_big > 0])
        after[key] = mask.copy()
        after[key][box] |= holes
    return _report("fill_holes", True, True, parameters, masks, after, voxel_ml)


def remove_small_clusters(mask: np.ndarray, min_ml: float, voxel_ml: float,
                          full_connectivity: bool = True) -> np.ndarray:
    """Drop connected components smaller than ``min_ml`` (mL, not voxels)."""
    mask = np.asarray(mask, dtype=bool)
    if min_ml <= 0 or not mask.any():
        return mask.copy()
    box = bounding_box(mask, 1)
    labels = sitk.GetArrayFromImage(
        sitk.ConnectedComponent(sitk.GetImageFromArray(mask[box].astype(np.uint8)),
                                bool(full_connectivity)))
    counts = np.bincount(labels.ravel())
    keep = counts * voxel_ml >= min_ml
    keep[0] = False
    out = np.zeros_like(mask)
    out[box] = keep[labels]
    return out


def minimum_cluster_size(masks: dict, *, enabled: bool, min_ml: dict, voxel_ml: float,
                         full_connectivity: bool = True):
    """Remove clusters smaller than ``min_ml[name]`` mL from each mask (names without an entry
    are left alone)."""
    parameters = {"min_ml": dict(min_ml), "connectivity": "26" if full_connectivity else "6"}
    if not enabled:
        return _report("minimum_cluster_size", False, False, parameters, masks, _copy(masks),
                       voxel_ml, "switched off")
    after = {k: (remove_small_clusters(m, min_ml[k], voxel_ml, full_connectivity)
                 if k in min_ml else m.copy()) for k, m in masks.items()}
    return _report("minimum_cluster_size", True, True, parameters, masks, after, voxel_ml)


#: Early-peak vessel criterion: CBV must also exceed this fraction of the CBV limit (0.5 took
#: in ≈ 150 noisy grey-matter voxels of the CT phantom, 0.75 only the arteries and 1 voxel).
EARLY_PEAK_CBV_FRACTION = 0.75


def vessel_region(cbv, *, tissue, modality: str, cbv_threshold: float = 8.0,
                  cbv_multiple: float = 4.0, ttp=None, aif_ttp: float | None = None,
                  ttp_window_s: float | None = 1.0, voxel_ml: float = 1.0):
    """Large-vessel voxels (PERFUSION.md §9 "vessel exclusion"): ``(region, parameters, note)``.

    Our rule (not RAPID's, which is not public):

    - *very high CBV*: CT CBV (mL/100 g, absolute because the AIF area normalises it) >
      ``cbv_threshold`` (default 8: grey matter is ≈ 4–6, vessels tens to hundreds). MR CBV is
      relative (ΔR2* ≠ concentration: it carries the tissue/artery relaxivity ratio κ_t/κ_a), so
      on MR the limit is ``cbv_multiple`` × the median CBV of ``tissue`` (the brain without CSF;
      default 4×, i.e. roughly 8 mL/100 g against a typical ≈ 2 mL/100 g brain median);
    - *arterial timing*: TTP no later than ``ttp_window_s`` (≈ one frame) after the AIF's TTP
      ``aif_ttp`` **and** CBV above ``EARLY_PEAK_CBV_FRACTION`` × that limit (needs ``ttp`` and
      ``aif_ttp``; skipped, and said so, otherwise). Hypoperfused tissue cannot peak with the
      artery, so this criterion removes arteries (and partial-volume artery voxels) only.

    On the MR volume phantom the vessels are simulated with the arterial relaxivity, so their
    relative CBV is only ≈ 1.2–2 × grey matter and neither criterion finds them; on real DSC,
    large vessels show CBV many times that of tissue.

    ``region`` is None (step not applicable) when there is no CBV map or, on MR, no positive
    tissue median. ``parameters`` holds the limit actually used and the vessel volumes in the
    whole map (mL, ``voxel_ml`` per voxel).
    """
    parameters = {"cbv_threshold_abs": float(cbv_threshold), "cbv_multiple_mr": float(cbv_multiple),
                  "aif_ttp_s": None if aif_ttp is None else float(aif_ttp),
                  "ttp_window_s": None if ttp_window_s is None else float(ttp_window_s)}
    if cbv is None:
        return None, parameters, "not applied: no CBV map"
    cbv = np.asarray(cbv, dtype=float)
    finite = np.isfinite(cbv)
    tissue = finite & np.asarray(tissue, dtype=bool)
    median = float(np.median(cbv[tissue])) if tissue.any() else float("nan")
    parameters["tissue_median_cbv"] = median if np.isfinite(median) else None  # JSON: no NaN
    if modality == "mr":
        if not (np.isfinite(median) and median > 0):
            return None, parameters, ("not applied: the median CBV of the brain is not positive, "
                                      "so the relative MR CBV limit is undefined")
        limit = float(cbv_multiple) * median
        parameters["cbv_limit_rule"] = (f"CBV > {cbv_multiple:g} × brain median CBV "
                                        f"({median:.3g}) — MR CBV is relative")
    else:
        limit = float(cbv_threshold)
        parameters["cbv_limit_rule"] = f"CBV > {cbv_threshold:g} mL/100 g (absolute, CT)"
    parameters["cbv_limit_used"] = limit
    with np.errstate(invalid="ignore"):
        high = finite & (cbv > limit)
    region = high.copy()
    note = ""
    early = np.zeros_like(high)
    if ttp is not None and aif_ttp is not None and ttp_window_s is not None and ttp_window_s > 0:
        ttp = np.asarray(ttp, dtype=float)
        with np.errstate(invalid="ignore"):
            early = (finite & np.isfinite(ttp) & (ttp <= float(aif_ttp) + float(ttp_window_s))
                     & (cbv > EARLY_PEAK_CBV_FRACTION * limit))
        region |= early
        parameters["early_peak_rule"] = (
            f"TTP ≤ AIF TTP {float(aif_ttp):.2f} s + {float(ttp_window_s):g} s and CBV > "
            f"{EARLY_PEAK_CBV_FRACTION:g} × {limit:.3g}")
    else:
        note = "arterial-timing criterion not used (needs the TTP map and the AIF's TTP)"
    parameters["high_cbv_ml"] = float(np.count_nonzero(high) * voxel_ml)
    parameters["early_peak_only_ml"] = float(np.count_nonzero(early & ~high) * voxel_ml)
    return region, parameters, note


def replace(masks: dict, new_masks: dict | None, *, name: str, enabled: bool, voxel_ml: float,
            parameters: dict | None = None, note: str = ""):
    """A step that recomputes some masks (e.g. from a filtered map): masks named in
    ``new_masks`` are replaced, the others copied. ``new_masks`` None → not applied."""
    parameters = dict(parameters or {})
    if not enabled or new_masks is None:
        if enabled and not note:
            note = "not applied: the input it needs is missing"
        return _report(name, enabled, False, parameters, masks, _copy(masks), voxel_ml,
                       note if enabled else (note or "switched off"))
    after = {k: np.array(new_masks[k] if k in new_masks else m, dtype=bool, copy=True)
             for k, m in masks.items()}
    return _report(name, True, True, parameters, masks, after, voxel_ml, note)
