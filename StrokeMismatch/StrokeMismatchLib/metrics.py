"""Lesion volumes and ratios (PERFUSION.md §8), each carrying its unit.

Volumes = voxel count × voxel volume (mm³) / 1000 → mL, never rounded. Ratios whose
denominator is 0 are not numbers: ``value`` is ``None`` (JSON ``null``) and ``flag`` says
``"infinite"`` (numerator > 0) or ``"undefined"`` (0/0), with a sentence in ``note``. No
metric ever holds inf or NaN, so every dict is JSON-ready.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Metric:
    """``value`` (float or None), ``unit``, human ``label``, ``flag`` (None, "infinite",
    "undefined", "not_available") and ``note``."""

    name: str
    value: float | None
    unit: str
    label: str
    flag: str | None = None
    note: str = ""

    def to_dict(self) -> dict:
        return {"value": self.value, "unit": self.unit, "label": self.label,
                "flag": self.flag, "note": self.note}


def json_number(value) -> float | None:
    """``float(value)`` or None when it is None, NaN or infinite."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def volume_ml(mask: np.ndarray, voxel_ml: float) -> float:
    """Volume of a boolean mask in mL."""
    return float(np.count_nonzero(mask) * voxel_ml)


def ratio(name: str, numerator: float, denominator: float, *, unit: str = "1", label: str = "",
          what: str = "", counts: tuple | None = None) -> Metric:
    """numerator / denominator; None + flag when the denominator is 0.

    ``counts`` (voxel counts of numerator and denominator on one grid) gives the value as
    count / count, exact at trial boundaries: 45 / 25 voxels is 1.8, whereas
    (45·v) / (25·v) in mL can round to 1.7999999999999998 and fail "≥ 1.8".
    """
    if denominator > 0:
        value = numerator / denominator if counts is None else counts[0] / counts[1]
        return Metric(name, float(value), unit, label)
    if numerator > 0:
        return Metric(name, None, unit, label, "infinite",
                      f"infinite: {what or 'denominator'} is 0 mL while the numerator is "
                      f"{numerator:.2f} mL")
    return Metric(name, None, unit, label, "undefined",
                  f"undefined: both volumes are 0 mL ({what or 'denominator'} is 0)")


def compute_metrics(core: np.ndarray, hypoperfusion: np.ndarray, penumbra: np.ndarray,
                    voxel_ml: float, *, tmax_masks: dict | None = None,
                    tmax_threshold: float = 6.0, cbv: np.ndarray | None = None,
                    hemispheres=None) -> dict:
    """All metrics as ``name -> Metric``.

    ``tmax_masks``: ``{threshold_s: mask}`` for the extra Tmax volumes (e.g. 4, 8, 10 s).
    HIR = V(Tmax > 10 s) / V(hypoperfusion) (Olivot et al., Stroke 2014).
    CBV index = mean CBV in the hypoperfused region ÷ mean CBV in its mirror image across the
    mid-sagittal plane (mirrored voxels that are themselves hypoperfused are left out).
    """
    tmax_masks = dict(tmax_masks or {})
    # ratios and differences from voxel counts, so that boundary values are exact (§8, §10)
    n_core = int(np.count_nonzero(core))
    n_hypo = int(np.count_nonzero(hypoperfusion))
    n_pen = int(np.count_nonzero(penumbra))
    v_core, v_hypo, v_pen = n_core * voxel_ml, n_hypo * voxel_ml, n_pen * voxel_ml
    thr = f"{tmax_threshold:g}"
    m = {}
    m["core_ml"] = Metric("core_ml", v_core, "mL", "Ischemic core volume")
    m["hypoperfusion_ml"] = Metric("hypoperfusion_ml", v_hypo, "mL",
                                   f"Hypoperfusion volume (Tmax > {thr} s)")
    m["penumbra_ml"] = Metric("penumbra_ml", v_pen, "mL",
                              "Penumbra volume (hypoperfusion minus core)")
    m["mismatch_ml"] = Metric("mismatch_ml", float((n_hypo - n_core) * voxel_ml), "mL",
                              "Mismatch volume (hypoperfusion − core)")
    m["mismatch_ratio"] = ratio("mismatch_ratio", v_hypo, v_core,
                                label="Mismatch ratio (hypoperfusion / core)", what="core",
                                counts=(n_hypo, n_core))
    for threshold in sorted(tmax_masks):
        key = f"tmax_gt_{threshold:g}_ml"
        m[key] = Metric(key, volume_ml(tmax_masks[threshold], voxel_ml), "mL",
                        f"Tmax > {threshold:g} s volume")
    if 10.0 in tmax_masks:
        n10 = int(np.count_nonzero(tmax_masks[10.0]))
        m["hir"] = ratio("hir", n10 * voxel_ml, v_hypo,
                         label=f"Hypoperfusion intensity ratio (Tmax > 10 s / Tmax > {thr} s)",
                         what=f"Tmax > {thr} s volume", counts=(n10, n_hypo))
    else:
        m["hir"] = Metric("hir", None, "1", "Hypoperfusion intensity ratio", "not_available",
                          "no Tmax > 10 s mask")
    if 4.0 in tmax_masks:
        n4 = int(np.count_nonzero(tmax_masks[4.0]))
        m["compensation_index"] = ratio(
            "compensation_index", n4 * voxel_ml, v_hypo,
            label=f"Compensation index (Tmax > 4 s / Tmax > {thr} s)",
            what=f"Tmax > {thr} s volume", counts=(n4, n_hypo))
    m["core_to_penumbra_ratio"] = ratio("core_to_penumbra_ratio", v_core, v_pen,
                                        label="Core-to-penumbra ratio", what="penumbra",
                                        counts=(n_core, n_pen))
    m["cbv_index"] = cbv_index(hypoperfusion, cbv, hemispheres)
    return m


def cbv_index(hypoperfusion: np.ndarray, cbv: np.ndarray | None, hemispheres) -> Metric:
    """Mean CBV in ``hypoperfusion`` ÷ mean CBV of its mirror region (PERFUSION.md §8)."""
    label = "CBV index (hypoperfused ÷ mirrored contralateral mean CBV)"
    if cbv is None or hemispheres is None:
        return Metric("cbv_index", None, "1", label, "not_available",
                      "needs a CBV map and the mid-sagittal plane")
    hypoperfusion = np.asarray(hypoperfusion, dtype=bool)
    cbv = np.asarray(cbv, dtype=float)
    inside = cbv[hypoperfusion & np.isfinite(cbv)]
    mirror_region = hemispheres.mirror(hypoperfusion) & ~hypoperfusion & np.isfinite(cbv)
    outside = cbv[mirror_region]
    if inside.size == 0 or outside.size == 0:
        return Metric("cbv_index", None, "1", label, "undefined",
                      "no hypoperfused voxels, or no valid mirrored contralateral voxels")
    reference = float(np.mean(outside))
    if reference <= 0:
        return Metric("cbv_index", None, "1", label, "undefined",
                      "the mirrored contralateral mean CBV is not positive")
    return Metric("cbv_index", float(np.mean(inside)) / reference, "1", label,
                  note=f"{inside.size} hypoperfused voxels vs {outside.size} mirrored voxels")


def metrics_to_dict(metrics: dict) -> dict:
    """JSON-ready ``name -> {"value", "unit", "label", "flag", "note"}``."""
    out = {}
    for name, metric in metrics.items():
        entry = metric.to_dict()
        entry["value"] = json_number(entry["value"])
        out[name] = entry
    return out
