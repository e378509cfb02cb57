"""Pseudo-mismatch screen: does the pipeline itself make (or hide) a mismatch? (issue 20)

Technical factors — a baseline window that reaches into the bolus, an "AIF" that is not an
artery, residual motion, a bolus drowned in noise, a clean-up step that erases a lesion because
a map is inflated — produce an apparent core or penumbra that is not there, or hide one that is
(PERFUSION.md §2.2, §3.1, §9). Each item below is measured on the analysed case, with its
threshold and what it means; a failing item becomes a :class:`quality.QualityFlag` of severity
"error", so every trial verdict becomes indeterminate (quality gate, issue 9).

Items (each: passes when …; why):

- ``aif_prebolus_offset``: |AIF mean before its arrival| ≤ one noise SD (at least 0.5 % of its
  peak); an offset distorts the AIF's area and shape, so CBV, CBF and Tmax shift.
- ``aif_is_artery``: the AIF passes every artery rule (:func:`aif.artery_checks`); tissue,
  noise, a vein or a skull edge as "AIF" gives a confident wrong verdict.
- ``aif_location``: ≤ 50 % of the AIF voxels outside the brain or on its in-plane edge; such
  voxels are partial-volume skull or background, not arteries.
- ``aif_arrival_vs_baseline``: the baseline window ends before the AIF arrives; otherwise the
  AIF's upslope is in its own baseline.
- ``residual_motion``: displacement seen at the head's edge ≤ ``MAX_RESIDUAL_MOTION_MM`` (90th
  percentile of frames); moving edges mix tissue with skull/CSF curves, fake CBF/Tmax lesions
  and make skull look like an artery.
- ``bolus_cnr``: brain-average bolus peak ≥ ``MIN_BOLUS_CNR`` × its pre-bolus noise; without a
  clear brain-wide bolus the maps are noise (PERFUSION.md §2.6).
- ``lesion_removed_by_step``: no clean-up step (other than the anatomical brain-mask and CSF
  steps) removes > 50 % of a core or hypoperfusion it receives, ≥ ``MIN_REMOVED_ML`` mL and
  most of its largest cluster of at least that size; a step erasing a lesion usually acts on an
  inflated map (CBV read ×4 by a bad AIF), not on speckle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .cleanup import LESION_MASKS, MAX_REMOVED_FRACTION, MIN_REMOVED_ML
from .concentration import aif_prebolus_check, curve_arrival_index, mean_curve, recut_baseline
from .quality import QualityFlag

#: Residual displacement at the head's edge (mm, 90th percentile over frames) above which the
#: analysed series still moves (about half a typical 1.8–2 mm in-plane voxel).
MAX_RESIDUAL_MOTION_MM = 1.0
#: Calibration of the edge displacement estimate (see :func:`residual_motion_mm`).
EDGE_CALIBRATION = 3.0
#: Brain-average bolus peak ÷ the SD of the brain-average curve before arrival.
MIN_BOLUS_CNR = 5.0
#: Steps that remove what is not brain tissue by definition, from the baseline image or the ADC
#: (never from perfusion maps, so an inflated map cannot drive them): reported, not judged.
#: On CT the CSF step always removes most of the raw rCBF "core" (CSF has no flow).
ANATOMY_STEPS = ("brain_mask", "csf_exclusion")
#: At most this fraction of the AIF voxels may lie outside the brain or on its in-plane edge.
MAX_EDGE_FRACTION = 0.5


@dataclass
class ScreenItem:
    """One screen item: ``name``, ``label``, measured ``value`` (with ``unit``), ``threshold``,
    ``passed`` (True / False / None = not measurable), ``meaning`` and ``detail`` (extras)."""

    name: str
    label: str
    value: object
    unit: str
    threshold: object
    passed: bool | None
    meaning: str
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"name": self.name, "label": self.label, "value": self.value, "unit": self.unit,
                "threshold": self.threshold, "passed": self.passed, "meaning": self.meaning,
                "detail": self.detail}


@dataclass
class PseudoMismatchScreen:
    """The screen of one case: ``items`` and the ``flags`` (severity "error") of failing items."""

    items: list
    flags: list

    @property
    def passed(self) -> bool:
        return not any(item.passed is False for item in self.items)

    def item(self, name: str) -> ScreenItem:
        return next(item for item in self.items if item.name == name)

    def to_dict(self) -> dict:
        return {"passed": self.passed,
                "failed": [item.name for item in self.items if item.passed is False],
                "items": [item.to_dict() for item in self.items]}


# --------------------------------------------------------------------------------------------
def second_baseline_pass(baseline, signal, times, aif, concentration, *, modality, te, mask,
                         baseline_image=None):
    """Re-cut the baseline from the AIF's own arrival and check the AIF before its bolus
    (PERFUSION.md §2.2 steps 3–4). Returns ``(baseline, concentration, aif, baseline_image)``:
    when the window moved, the signal is converted again, the same AIF voxels re-read and the
    pre-bolus mean image recomputed. ``baseline.aif_check`` holds value and threshold."""
    from .aif import refresh_aif
    from .concentration import signal_to_concentration

    new = recut_baseline(baseline, aif.curve,
                         allow_extend=bool((getattr(aif, "artery", None) or {}).get("found")))
    if new.recut:
        concentration = signal_to_concentration(signal, times, modality=modality, te=te,
                                                baseline=(new.start, new.stop))
        baseline_image = np.mean(signal[..., new.start:new.stop], axis=-1,
                                 dtype=np.float64).astype(np.float32)
        aif = refresh_aif(aif, concentration, times, signal=signal if modality == "mr" else None,
                          tissue_curve=mean_curve(concentration, mask), modality=modality,
                          baseline_image=baseline_image if modality == "ct" else None,
                          baseline_frames=(new.start, new.stop))
    new.aif_check = aif_prebolus_check(aif.curve, new)
    return new, concentration, aif, baseline_image


def aif_location(voxels, brain_mask, geometry, *, modality, baseline_image=None, adc=None,
                 hemispheres=None, csf_hu=15.0, csf_adc=2000.0) -> dict:
    """Where the AIF voxels lie: ``slices`` (k), ``side`` (left/right of the mid-sagittal plane,
    or of the brain's centre without one), per-voxel ``classes`` counts among "outside brain",
    "brain edge" (in-plane outer ring of the brain mask), "CSF" (CT baseline < ``csf_hu`` HU, MR
    ADC > ``csf_adc``) and "tissue", and the majority ``class``."""
    voxels = np.asarray(voxels, dtype=int).reshape(-1, 3)
    brain = np.asarray(brain_mask, dtype=bool)
    if voxels.size == 0:
        return {"n_voxels": 0, "slices": [], "side": None, "classes": {}, "class": None,
                "edge_or_outside_fraction": None}
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = ndimage.generate_binary_structure(2, 1)
    edge = brain & ~ndimage.binary_erosion(brain, structure=plane, border_value=0)
    idx = tuple(voxels.T)
    classes = np.full(voxels.shape[0], "tissue", dtype=object)
    if modality == "ct" and baseline_image is not None:
        classes[np.asarray(baseline_image)[idx] < csf_hu] = "CSF"
    elif adc is not None:
        with np.errstate(invalid="ignore"):
            classes[np.asarray(adc, dtype=float)[idx] > csf_adc] = "CSF"
    classes[edge[idx]] = "brain edge"
    classes[~brain[idx]] = "outside brain"
    names, counts = np.unique(classes.astype(str), return_counts=True)
    ras = geometry.ijk_to_ras_points(voxels[:, ::-1].astype(float)).mean(axis=0)
    if hemispheres is not None:
        x = float(np.asarray(hemispheres.normal_ras) @ ras - hemispheres.offset_mm)
    else:
        centre = geometry.ijk_to_ras_points(np.argwhere(brain)[:, ::-1].astype(float)).mean(axis=0)
        x = float(ras[0] - centre[0])
    bad = float(np.mean(np.isin(classes, ["brain edge", "outside brain"])))
    return {"n_voxels": int(voxels.shape[0]), "slices": sorted({int(k) for k in voxels[:, 0]}),
            "side": "right" if x > 0 else "left", "distance_from_midline_mm": round(abs(x), 1),
            "centre_ras_mm": [round(float(v), 1) for v in ras],
            "classes": {str(n): int(c) for n, c in zip(names, counts)},
            "class": str(names[int(np.argmax(counts))]), "edge_or_outside_fraction": bad}


def residual_motion_mm(signal, brain_mask, geometry, frames, *, quantile=90.0) -> dict:
    """Residual motion as a displacement (mm) seen at the head's edge.

    Edge voxels: the in-plane rings just inside and just outside the brain mask, keeping the
    quarter with the steepest in-plane gradient |∇B| of the pre-bolus mean image B (HU/mm or
    a.u./mm: skull or background against brain). A shift d changes a voxel whose edge normal
    makes an angle θ with it by ≈ d·|cos θ|·|∇B|; averaged over edge orientations |cos θ| is
    2/π, so per frame d_t = (π/2)·mean(|S_t − B| / |∇B|). Noise alone gives a few hundredths of
    a mm; shifts beyond the edge width are underestimated (the change saturates). On sampled
    edges this reads about a third of the true shift (volume phantom, CT and MR, in-plane shifts
    0.25–2 mm: 0.34–0.38 per mm), so d_t is multiplied by ``EDGE_CALIBRATION`` (3): a 1 mm
    in-plane shift then reads ≈ 1.0–1.1 mm, a 1 mm shift across 5 mm slices ≈ 0.3 mm. Reported:
    ``value_mm`` = the ``quantile`` (90th) percentile of d_t over frames, and the worst frame.
    """
    brain = np.asarray(brain_mask, dtype=bool)
    plane = np.zeros((3, 3, 3), bool)
    plane[1] = ndimage.generate_binary_structure(2, 1)
    inside = brain & ~ndimage.binary_erosion(brain, structure=plane, border_value=0)
    outside = ndimage.binary_dilation(brain, structure=plane) & ~brain
    ring = inside | outside
    start, stop = frames
    signal = np.asarray(signal)
    base = signal[..., start:stop].mean(axis=-1, dtype=np.float64)
    spacing = np.asarray(geometry.spacing, dtype=float)  # i, j, k mm
    gj = ndimage.sobel(base, axis=1) / (8.0 * spacing[1])
    gi = ndimage.sobel(base, axis=2) / (8.0 * spacing[0])
    grad = np.hypot(gi, gj)
    if ring.sum() < 20:
        return {"value_mm": None, "worst_frame": None, "n_edge_voxels": int(ring.sum())}
    steep = ring & (grad >= np.percentile(grad[ring], 75.0)) & (grad > 0)
    g = grad[steep]
    dev = np.abs(signal[steep].astype(np.float64) - base[steep][:, None]) / g[:, None]
    per_frame = EDGE_CALIBRATION * (np.pi / 2) * dev.mean(axis=0)
    worst = int(np.argmax(per_frame))
    return {"value_mm": float(np.percentile(per_frame, quantile)), "worst_frame": worst,
            "worst_frame_mm": float(per_frame[worst]), "n_edge_voxels": int(steep.sum()),
            "per_frame_mm": [round(float(v), 3) for v in per_frame]}


def bolus_cnr(concentration, brain_mask, baseline) -> dict:
    """Brain-average bolus contrast-to-noise: peak of the mean concentration curve ÷ its SD over
    the baseline frames; also the per-voxel tissue CNR (that peak ÷ the median voxel SD)."""
    curve = mean_curve(concentration, brain_mask)
    lo, hi = baseline.start, max(baseline.stop, baseline.start + 2)
    sd = float(np.std(curve[lo:hi], ddof=1))
    peak = float(curve.max())
    sample = np.asarray(concentration)[np.asarray(brain_mask, bool)]
    if sample.shape[0] > 20000:
        sample = sample[:: sample.shape[0] // 20000]
    voxel_sd = float(np.median(np.std(sample[:, lo:hi].astype(np.float64), axis=1, ddof=1)))
    return {"brain_cnr": peak / sd if sd > 0 else float("inf"), "brain_peak": peak,
            "voxel_cnr": peak / voxel_sd if voxel_sd > 0 else float("inf")}


def steps_removing_lesion(steps, *, masks=LESION_MASKS, fraction=MAX_REMOVED_FRACTION,
                          min_ml=MIN_REMOVED_ML, skip=ANATOMY_STEPS) -> list:
    """Clean-up steps (other than ``skip``) that removed more than ``fraction`` of a lesion mask
    they received and at least ``min_ml`` mL: list of dicts step, mask, before_ml, removed_ml,
    fraction."""
    out = []
    for step in steps or []:
        data = step.to_dict() if hasattr(step, "to_dict") else dict(step)
        if not data.get("applied") or data.get("name") in skip:
            continue
        for name in masks:
            vol = (data.get("volumes_ml") or {}).get(name)
            if not vol or vol["before"] <= 0:
                continue
            removed = vol["before"] - vol["after"]
            cluster = (data.get("lesion_clusters") or {}).get(name) or {}
            kept = cluster.get("kept_fraction")
            big = cluster.get("largest_ml", 0.0) >= min_ml
            if removed > fraction * vol["before"] and removed >= min_ml and big and kept is not None \
                    and kept < 1 - fraction:
                out.append({"step": data["name"], "mask": name, "before_ml": vol["before"],
                            "removed_ml": removed, "fraction": removed / vol["before"],
                            "largest_cluster_ml": cluster["largest_ml"],
                            "largest_cluster_kept_fraction": kept})
    return out


# --------------------------------------------------------------------------------------------
def screen_case(*, modality, times, signal, concentration, baseline, aif, brain_mask, geometry,
                lesion=None, motion=None, baseline_image=None) -> PseudoMismatchScreen:
    """The pseudo-mismatch screen of an analysed case (module docstring). Every input is what
    ``pipeline.run_case`` produced; returns the items and one "error" flag per failing item."""
    unit = "HU" if modality == "ct" else "1/s"
    items = []
    check = getattr(baseline, "aif_check", None) or aif_prebolus_check(aif.curve, baseline)
    items.append(ScreenItem(
        "aif_prebolus_offset", "AIF pre-bolus offset", check.get("prebolus_mean"), unit,
        check.get("threshold"), check.get("passed"),
        "The converted AIF must sit at zero before its bolus. An offset means the baseline "
        "window reached into the bolus (or drifted): the AIF's area and shape are wrong, so CBV, "
        "CBF and Tmax are biased and the clean-up rules that use them misfire.",
        {k: check.get(k) for k in ("frames", "noise_sd", "aif_peak", "rule")}))

    artery = getattr(aif, "artery", None) or {}
    failed = [c for c in artery.get("checks", []) if c.get("passed") is False]
    items.append(ScreenItem(
        "aif_is_artery", "AIF is an artery", artery.get("reason") or "all artery rules pass", "",
        "every artery rule (blood-like baseline on CT, peak-to-noise, peak vs tissue, early "
        "arrival, not later than tissue, return toward baseline)",
        artery.get("found") if artery else None,
        "Clustering always returns something. An 'AIF' made of tissue, noise, a vein or a "
        "moved skull edge gives maps — and a verdict — that look confident and are wrong. "
        "When no artery is found the verdicts are indeterminate; pick an artery by hand.",
        {"checks": artery.get("checks", []), "failed": [c["name"] for c in failed],
         "gated_candidates": artery.get("gated_candidates"), "method": getattr(aif, "method", None)}))

    location = aif_location(getattr(aif, "voxels", np.zeros((0, 3))), brain_mask, geometry,
                            modality=modality, baseline_image=baseline_image,
                            adc=getattr(lesion, "adc", None),
                            hemispheres=getattr(lesion, "hemispheres", None))
    bad = location["edge_or_outside_fraction"]
    items.append(ScreenItem(
        "aif_location", "AIF location",
        f"slice(s) {location['slices'][:6]}{'…' if len(location['slices']) > 6 else ''}, "
        f"{location['side']}, {location['class']}", "", f"≤ {100 * MAX_EDGE_FRACTION:g} % at the "
        "brain edge or outside the brain", None if bad is None else bad <= MAX_EDGE_FRACTION,
        "Arteries lie inside the head (Sylvian fissure, basal cisterns). AIF voxels at the edge "
        "of the brain or outside it are partial-volume skull, scalp or background.", location))

    arrival = check.get("aif_arrival_index")
    if arrival is None:
        arrival = curve_arrival_index(aif.curve, start=baseline.start)
    t = np.asarray(times, float)
    items.append(ScreenItem(
        "aif_arrival_vs_baseline", "AIF arrival vs baseline window",
        None if arrival is None else float(t[arrival] - t[0]), "s",
        f"baseline frames {baseline.start}–{baseline.stop - 1} end before the AIF arrives "
        f"(last baseline frame at {t[baseline.stop - 1] - t[0]:.1f} s)",
        None if arrival is None else bool(baseline.stop <= arrival),
        "If the AIF arrives inside the baseline window, its upslope is subtracted from itself: "
        "the AIF sits below zero before the bolus and loses area.",
        {"aif_arrival_index": arrival, "baseline_frames": [baseline.start, baseline.stop - 1],
         "user_given": bool(getattr(baseline, "user_given", False)),
         "recut": bool(getattr(baseline, "recut", False)),
         "arrival_source": getattr(baseline, "arrival_source", None)}))

    motion_info = residual_motion_mm(signal, brain_mask, geometry, (baseline.start, baseline.stop))
    ratio = motion_info["value_mm"]
    if motion is not None:
        motion_info["max_displacement_mm"] = getattr(motion, "max_displacement_mm", None)
        motion_info["failed_frames"] = list(getattr(motion, "failed_frames", []) or [])
    motion_info["corrected"] = motion is not None
    items.append(ScreenItem(
        "residual_motion", "Residual motion at the head's edge", ratio, "mm", MAX_RESIDUAL_MOTION_MM,
        None if ratio is None else ratio <= MAX_RESIDUAL_MOTION_MM,
        "After motion correction, the brain's edge should change no more than its interior "
        "(noise). Moving edges mix tissue with skull, CSF or background and create false CBF and "
        "Tmax lesions — or make skull look like an artery.", motion_info))

    cnr = bolus_cnr(concentration, brain_mask, baseline)
    items.append(ScreenItem(
        "bolus_cnr", "Bolus contrast-to-noise (brain average)", cnr["brain_cnr"], "ratio",
        MIN_BOLUS_CNR, cnr["brain_cnr"] >= MIN_BOLUS_CNR,
        "A brain-wide bolus must stand clear of the noise; otherwise there was no usable "
        "injection (or a wrong series) and deconvolving noise gives noise maps. The per-voxel "
        "tissue CNR is reported too: low values mean speckled Tmax and a shrinking CT core.", cnr))

    removed = steps_removing_lesion(getattr(lesion, "steps", None))
    items.append(ScreenItem(
        "lesion_removed_by_step", "Clean-up steps that removed most of a lesion",
        ", ".join(f"{r['step']} removed {100 * r['fraction']:.0f} % of {r['mask']} "
                  f"({r['removed_ml']:.1f} of {r['before_ml']:.1f} mL)" for r in removed) or "none",
        "", f"no step removes > {100 * MAX_REMOVED_FRACTION:g} % (and ≥ {MIN_REMOVED_ML:g} mL) of "
        "the core or hypoperfusion it receives", None if lesion is None else not removed,
        "Clean-up removes speckle, vessels and CSF. A step that erases most of a lesion usually "
        "acts on an inflated or distorted map (e.g. CBV read ×4 by a bad AIF), so the verdict "
        "would rest on the artefact.", {"steps": removed}))

    flags = [_flag(item, unit) for item in items if item.passed is False]
    return PseudoMismatchScreen(items, flags)


def refresh_lesion_step_flag(flags, lesion) -> list:
    """``flags`` with the screen's "lesion removed by a step" finding recomputed for ``lesion``
    (a re-thresholded LesionAnalysis): it depends on the masks, unlike the other screen items."""
    code = "screen_lesion_removed_by_step"
    kept = [f for f in flags if getattr(f, "code", None) != code]
    removed = steps_removing_lesion(getattr(lesion, "steps", None))
    if not removed:
        return kept
    item = ScreenItem(
        "lesion_removed_by_step", "Clean-up steps that removed most of a lesion",
        ", ".join(f"{r['step']} removed {100 * r['fraction']:.0f} % of {r['mask']} "
                  f"({r['removed_ml']:.1f} of {r['before_ml']:.1f} mL)" for r in removed),
        "", f"no step removes > {100 * MAX_REMOVED_FRACTION:g} % (and ≥ {MIN_REMOVED_ML:g} mL) of "
        "the core or hypoperfusion it receives", False,
        "A step that erases most of a lesion usually acts on an inflated or distorted map.", {"steps": removed})
    return kept + [_flag(item, "")]


def _fmt(value):
    if isinstance(value, float):
        return f"{value:.3g}"
    return str(value)


def _flag(item: ScreenItem, unit: str) -> QualityFlag:
    unit_text = f" {item.unit}" if item.unit and item.unit != "ratio" else ""
    message = (f"Pseudo-mismatch screen: {item.label} failed — measured {_fmt(item.value)}{unit_text}, "
               f"threshold {_fmt(item.threshold)}.")
    return QualityFlag(f"screen_{item.name}", "error", message, item.meaning)
