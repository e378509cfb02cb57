"""The curve inspector and the curves of a case: what the Slicer panel plots, in plain numpy.

For one voxel under the mouse: its concentration curve, its deconvolved residue CBF·R(t), its
map values and its class (core / penumbra / normal / outside); for a case: the AIF and the mean
curves of core, penumbra and other brain tissue; the RAS centre of the lesion. No ``slicer``
import: ``mrmlio`` turns these arrays into plot nodes, and the tests need no MRML.

Conventions: arrays ``[k, j, i]``, time last, RAS millimetres (see ``geometry.Geometry``).
"""

from __future__ import annotations

import math

import numpy as np

from .errors import InputDataError
from .geometry import Geometry


def ras_to_voxel(geometry: Geometry, ras):
    """Nearest voxel ``(k, j, i)`` of a RAS point, or None when it falls outside the grid."""
    ijk = np.rint(geometry.ras_to_ijk_points(np.asarray(ras, dtype=float)[:3])).astype(int)
    i, j, k = (int(v) for v in ijk)
    shape = geometry.shape
    if not (0 <= k < shape[0] and 0 <= j < shape[1] and 0 <= i < shape[2]):
        return None
    return k, j, i


def classify_voxel(masks: dict, voxel, brain_mask=None) -> str:
    """"core", "penumbra", "normal" or "outside" (outside the analysed brain) for one voxel."""
    for key in ("core", "penumbra"):
        mask = masks.get(key) if masks else None
        if mask is not None and bool(mask[voxel]):
            return key
    if brain_mask is not None and not bool(brain_mask[voxel]):
        return "outside"
    return "normal"


def inspect_voxel(voxel, *, concentration, aif, times, maps, masks, brain_mask=None, method=None):
    """Everything the curve inspector shows for one voxel ``(k, j, i)``.

    Returns a dict: ``voxel``, ``concentration`` [T], ``residue_times`` (lag, s) and
    ``residue`` = 6000·κ·k(t) = CBF·R(t) in mL/100 g/min (its peak is the voxel's CBF; the lag
    of the peak is Tmax; PERFUSION.md §5), ``cbf``/``cbv``/``mtt``/``tmax``/``ttp`` read from
    the maps, and ``class`` ("core", "penumbra", "normal", "outside").
    """
    from . import perfusion

    voxel = tuple(int(v) for v in voxel)
    curve = np.asarray(concentration[voxel], dtype=float)
    result = {"voxel": voxel, "concentration": curve, "class": classify_voxel(masks, voxel, brain_mask)}
    for key in ("cbf", "tmax", "cbv", "mtt", "ttp"):
        array = maps.get(key) if isinstance(maps, dict) else getattr(maps, key, None)
        result[key] = float(array[voxel]) if array is not None else math.nan
    settings = dict(getattr(maps, "settings", {}) or {})
    method = method or getattr(maps, "method", None) or "oSVD"
    try:
        residue = perfusion.deconvolve_curve(curve, np.asarray(getattr(aif, "curve", aif), dtype=float),
                                             np.asarray(times, dtype=float), method=method, **settings)
    except TypeError:  # settings not accepted by this version: default regularisation
        residue = perfusion.deconvolve_curve(curve, np.asarray(getattr(aif, "curve", aif), dtype=float),
                                             np.asarray(times, dtype=float), method=method)
    kappa = float(getattr(maps, "kappa", 0.73 / 1.04))
    result["residue_times"] = np.asarray(residue.times, dtype=float)
    result["residue"] = 6000.0 * kappa * np.asarray(residue.k, dtype=float)
    return result


def mean_curve(concentration, voxels) -> np.ndarray:
    """Mean curve [T] of ``concentration`` [K, J, I, T] over ``voxels`` ((N, 3) k, j, i)."""
    voxels = np.asarray(voxels, dtype=int).reshape(-1, 3)
    if voxels.size == 0:
        raise InputDataError("No voxel to average.")
    return np.asarray(concentration[voxels[:, 0], voxels[:, 1], voxels[:, 2]], dtype=float).mean(axis=0)


def inspector_curves(info: dict, times, aif) -> dict:
    """Legend -> curve for the inspector chart: the voxel's C(t), the AIF and CBF·R(t), each
    divided by its own peak so their shapes and timing (delay, dispersion) compare on one axis;
    the legends give the peaks with units. The residue is on its own lag axis (s)."""
    aif = np.asarray(getattr(aif, "curve", aif), dtype=float)

    def scaled(curve):
        curve = np.asarray(curve, dtype=float)
        peak = float(np.nanmax(np.abs(curve))) if curve.size else 0.0
        return (curve / peak if peak > 0 else curve), peak

    tissue, tissue_peak = scaled(info["concentration"])
    aif_scaled, aif_peak = scaled(aif)
    residue, residue_peak = scaled(info["residue"])
    return {
        f"Voxel C(t) (peak {tissue_peak:.3g})": tissue,
        f"AIF C(t) (peak {aif_peak:.3g})": aif_scaled,
        f"CBF·R(t) vs lag (peak {residue_peak:.1f} mL/100 g/min)": (np.asarray(info["residue_times"]), residue),
    }



def case_curves(result) -> dict:
    """Legend -> curve [T] for the AIF chart of a ``pipeline.CaseResult``: the AIF and the mean
    concentration in the core, the penumbra and the rest of the brain."""
    aif = getattr(result.aif, "curve", result.aif)
    voxels = np.asarray(getattr(result.aif, "voxels", np.zeros((0, 3)))).reshape(-1, 3)
    curves = {f"AIF ({getattr(result.aif, 'method', 'AIF')}, {len(voxels)} voxels)": np.asarray(aif, dtype=float)}
    brain = np.asarray(result.brain_mask, dtype=bool)
    empty = np.zeros_like(brain)
    core = np.asarray(result.lesion.masks.get("core", empty), dtype=bool)
    penumbra = np.asarray(result.lesion.masks.get("penumbra", empty), dtype=bool)
    for label, mask in (("Core tissue (mean)", core), ("Penumbra tissue (mean)", penumbra),
                        ("Other brain tissue (mean)", brain & ~core & ~penumbra)):
        if np.any(mask):
            curves[label] = np.asarray(result.concentration[mask], dtype=float).mean(axis=0)
    return curves


def lesion_center_ras(result):
    """RAS (mm) centre of the hypoperfused tissue (else the core) of a case, or None."""
    masks = result.lesion.masks
    for key in ("hypoperfusion", "core"):
        mask = masks.get(key)
        if mask is not None and np.any(mask):
            kji = np.argwhere(mask).mean(axis=0)
            return result.geometry.ijk_to_ras_points(kji[::-1])
    return None
