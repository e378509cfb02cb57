"""Threshold masks: core (ADC or rCBF), hypoperfusion (Tmax), penumbra; rCBF references.

All inequalities are strict (PERFUSION.md §8): core is ADC < threshold or rCBF < threshold,
hypoperfusion is Tmax > threshold. NaN never passes a threshold.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .errors import InputDataError

RCBF_REFERENCES = ("contralateral", "tmax_lt_4", "mirror")
STATISTICS = ("trimmed_mean", "median", "mean")
#: Fraction cut from *each* end of the reference CBF distribution by the "trimmed_mean".
TRIM_FRACTION = 0.05


def _less(values: np.ndarray, threshold: float) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values < threshold)


def _greater(values: np.ndarray, threshold: float) -> np.ndarray:
    values = np.asarray(values, dtype=float)
    with np.errstate(invalid="ignore"):
        return np.isfinite(values) & (values > threshold)


def core_from_adc(adc_micro: np.ndarray, threshold: float = 620.0) -> np.ndarray:
    """Core where ADC < ``threshold`` (10⁻⁶ mm²/s). Zero/negative ADC (background) is not core."""
    adc_micro = np.asarray(adc_micro, dtype=float)
    with np.errstate(invalid="ignore"):
        return _less(adc_micro, threshold) & (adc_micro > 0)


def core_from_rcbf(rcbf: np.ndarray, threshold: float = 0.30) -> np.ndarray:
    """Core where relative CBF < ``threshold`` (fraction, 0.30 = 30 %)."""
    return _less(rcbf, threshold)


def tmax_mask(tmax: np.ndarray, threshold_s: float = 6.0) -> np.ndarray:
    """Hypoperfused tissue: Tmax > ``threshold_s`` (strict)."""
    return _greater(tmax, threshold_s)


def penumbra(core: np.ndarray, hypoperfusion: np.ndarray) -> np.ndarray:
    """Penumbra = hypoperfusion minus core (voxel set)."""
    return np.asarray(hypoperfusion, dtype=bool) & ~np.asarray(core, dtype=bool)


def _statistic(values: np.ndarray, statistic: str) -> float:
    """"mean", "median", or "trimmed_mean": the mean of the values between the 5th and 95th
    percentiles (robust to the vessel and CSF voxels that slip through the exclusions, yet, unlike
    the median, still the grey/white-matter average that the trial-era rCBF < 30 % threshold was
    defined against — a median of a white-matter-dominated slab sits near the white-matter CBF)."""
    values = np.asarray(values, dtype=float)
    if statistic == "mean":
        return float(np.mean(values))
    if statistic == "median":
        return float(np.median(values))
    low, high = np.quantile(values, [TRIM_FRACTION, 1.0 - TRIM_FRACTION])
    kept = values[(values >= low) & (values <= high)]
    return float(np.mean(kept if kept.size else values))


def smooth_nan(values: np.ndarray, sigma_mm: float, spacing_kji) -> np.ndarray:
    """Gaussian smoothing (σ in mm) that ignores NaN (normalised convolution); NaN stays NaN."""
    if sigma_mm <= 0:
        return _normalised_gaussian(values, None)
    return _normalised_gaussian(values, [sigma_mm / s for s in spacing_kji])


def _normalised_gaussian(values, sigma_voxels) -> np.ndarray:
    """G⊗(v·M) / G⊗M over the finite voxels M (σ per axis in voxels; None: no smoothing), NaN
    outside M (Knutsson & Westin 1993 normalised convolution)."""
    values = np.asarray(values, dtype=float)
    valid = np.isfinite(values)
    if sigma_voxels is None:
        return np.where(valid, values, np.nan)
    num = ndimage.gaussian_filter(np.where(valid, values, 0.0), sigma_voxels, mode="constant")
    den = ndimage.gaussian_filter(valid.astype(float), sigma_voxels, mode="constant")
    out = np.full(values.shape, np.nan)
    ok = valid & (den > 1e-6)
    out[ok] = num[ok] / den[ok]
    return out


FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))  # ≈ 2.3548


def smooth_in_plane(values: np.ndarray, fwhm_mm: float, spacing_kji) -> np.ndarray:
    """Gaussian smoothing within each slice (FWHM in mm, σ = FWHM / 2.3548), normalised within
    the finite voxels: G⊗(v·M) / G⊗M with M the finite mask (Knutsson & Westin 1993
    normalised convolution), NaN outside M. ``fwhm_mm`` ≤ 0 returns a copy."""
    if fwhm_mm <= 0:
        return _normalised_gaussian(values, None)
    return _normalised_gaussian(values, [0.0] + [fwhm_mm / FWHM_PER_SIGMA / float(s) for s in spacing_kji[1:]])


def median_in_plane(values: np.ndarray, size: int = 3) -> np.ndarray:
    """NaN-aware ``size`` × ``size`` median within each slice: the median of the finite
    neighbours (NaN neighbours ignored, so the brain edge is not pulled towards the outside);
    NaN where the voxel itself is NaN. A classic despeckling filter for outliers (Tmax of
    low-flow voxels, whose residue has no clear peak)."""
    values = np.asarray(values, dtype=float)
    size = int(size)
    if size < 2:
        return values.copy()
    half = size // 2
    out = np.full(values.shape, np.nan)
    for k in range(values.shape[0]):  # one slice at a time: memory size² × one slice
        plane = values[k]
        if not np.isfinite(plane).any():
            continue
        padded = np.pad(plane, half, mode="constant", constant_values=np.nan)
        windows = np.lib.stride_tricks.sliding_window_view(padded, (size, size))
        windows = windows[:plane.shape[0], :plane.shape[1]].reshape(plane.shape + (size * size,))
        finite = np.isfinite(plane)
        out[k][finite] = np.nanmedian(windows[finite], axis=-1)
    return out


def rcbf_reference(cbf: np.ndarray, *, method: str = "contralateral", tissue: np.ndarray,
                   tmax: np.ndarray | None = None, hemispheres=None, affected_side: str = "none",
                   tmax_threshold: float = 6.0, normal_tmax: float = 4.0,
                   statistic: str = "trimmed_mean", mirror_sigma_mm: float = 5.0) -> tuple[np.ndarray, dict]:
    """Relative CBF map and a JSON-ready description of its reference.

    ``method``:
    - "contralateral": ``statistic`` of CBF in tissue of the hemisphere opposite
      ``affected_side`` with Tmax ≤ ``tmax_threshold`` (whole brain when the side is "none");
    - "tmax_lt_4": ``statistic`` of CBF where Tmax < ``normal_tmax`` (normally perfused tissue);
    - "mirror": local mirror normalisation (Rau et al., AJNR 2024): each voxel ÷ the
      Gaussian-smoothed (σ ``mirror_sigma_mm``) CBF at its mirror across the mid-sagittal plane.
    ``tissue``: voxels usable as reference (brain, CSF excluded).
    """
    if method not in RCBF_REFERENCES:
        raise InputDataError(
            f"Unknown rCBF reference {method!r}: use one of {', '.join(RCBF_REFERENCES)}."
        )
    if statistic not in STATISTICS:
        raise InputDataError(f"Unknown statistic {statistic!r}: use {', '.join(STATISTICS)}.")
    cbf = np.asarray(cbf, dtype=float)
    tissue = np.asarray(tissue, dtype=bool) & np.isfinite(cbf)
    info = {"method": method, "statistic": statistic}
    if method == "mirror":
        if hemispheres is None:
            raise InputDataError("Mirror normalisation needs the mid-sagittal plane.")
        spacing_kji = hemispheres.geometry.spacing[::-1]
        smooth = smooth_nan(np.where(tissue, cbf, np.nan), mirror_sigma_mm, spacing_kji)
        mirrored = hemispheres.mirror(smooth)
        with np.errstate(invalid="ignore", divide="ignore"):
            rcbf = np.where(np.isfinite(mirrored) & (mirrored > 0), cbf / mirrored, np.nan)
        info.update(value=None, unit="mL/100 g/min", smoothing_sigma_mm=mirror_sigma_mm,
                    n_voxels=int(np.count_nonzero(np.isfinite(rcbf))),
                    description=("each voxel divided by the smoothed CBF at its mirror position "
                                 f"across the mid-sagittal plane (σ = {mirror_sigma_mm:g} mm)"))
        return rcbf, info
    if tmax is None:
        raise InputDataError(f"The '{method}' rCBF reference needs a Tmax map.")
    tmax = np.asarray(tmax, dtype=float)
    if method == "contralateral":
        region = tissue & ~_greater(tmax, tmax_threshold) & np.isfinite(tmax)
        if affected_side in ("left", "right") and hemispheres is not None:
            other = "left" if affected_side == "right" else "right"
            region &= hemispheres.side_masks()[other]
            description = (f"{statistic} CBF of {other} hemisphere tissue (contralateral to the "
                           f"{affected_side}-sided deficit) with Tmax ≤ {tmax_threshold:g} s")
        else:
            description = (f"{statistic} CBF of all brain tissue with Tmax ≤ {tmax_threshold:g} s "
                           "(no affected side found)")
    else:
        region = tissue & _less(tmax, normal_tmax)
        description = f"{statistic} CBF of tissue with Tmax < {normal_tmax:g} s"
    if not region.any():
        raise InputDataError(
            f"No reference tissue for rCBF ({description}): choose another rCBF reference."
        )
    value = _statistic(cbf[region], statistic)
    if not np.isfinite(value) or value <= 0:
        raise InputDataError(
            f"The rCBF reference CBF is {value:g} ({description}): the CBF map looks empty."
        )
    with np.errstate(invalid="ignore"):
        rcbf = cbf / value
    info.update(value=value, unit="mL/100 g/min", n_voxels=int(np.count_nonzero(region)),
                description=description)
    return rcbf, info
