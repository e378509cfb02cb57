"""Public perfusion API: signal → concentration → AIF → CBF, CBV, MTT, Tmax, TTP maps.

    from StrokeMismatchLib.perfusion import signal_to_concentration, select_aif, compute_maps

Arrays are ``[..., T]`` (any leading shape, time last), times in seconds (need not be uniform).
See docs/PERFUSION_METHODS.md for the algorithms as implemented and their measured biases.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .aif import AIFResult, select_aif, voxels_around  # noqa: F401
from .concentration import (  # noqa: F401
    BaselineInfo,
    check_times,
    detect_baseline,
    signal_to_concentration,
)
from .deconvolution import (  # noqa: F401
    METHODS,
    OSVD_OI_TARGET,
    OSVD_THRESHOLDS,
    DeconvolutionPlan,
    deconvolve,
    normalize_method,
    oscillation_index,
)
from .errors import AnalysisCancelled, InputDataError

__all__ = [
    "signal_to_concentration", "detect_baseline", "BaselineInfo", "select_aif", "AIFResult",
    "compute_maps", "PerfusionMaps", "deconvolve_curve", "ResidueCurve", "uniform_grid", "METHODS",
]

CHUNK_VOXELS = 8192


def _real_array(values, what):
    """``values`` as an array of real numbers, or InputDataError (complex, boolean, text)."""
    array = np.asarray(values)
    if array.dtype == bool:
        raise InputDataError(f"The {what} is a boolean array: give the image values (real numbers), "
                             "not a mask.")
    if np.iscomplexobj(array):
        raise InputDataError(f"The {what} is complex-valued: give the magnitude (np.abs) or the "
                             "real-valued image.")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise InputDataError(f"The {what} must be an array of numbers, not {array.dtype} values.")
    return array


def uniform_grid(times, grid_dt=None):
    """Uniform deconvolution grid for frame ``times`` (s).

    Spacing ``grid_dt`` or the median frame interval, from the first frame to the last.
    Returns (grid times [N], interpolation matrix W [T, N] or None when the frames are already
    uniform); curves on the grid are ``curve @ W`` (linear interpolation, PERFUSION.md §2.4).
    """
    times = np.asarray(times, dtype=float)
    steps = np.diff(times)
    dt = float(np.median(steps)) if grid_dt is None else float(grid_dt)
    if dt <= 0:
        raise InputDataError("grid_dt must be positive (seconds).")
    if np.all(np.abs(steps - dt) <= 1e-6 * dt):
        return times.copy(), None
    n = int(np.floor((times[-1] - times[0]) / dt + 1e-9)) + 1
    grid = times[0] + dt * np.arange(n)
    eye = np.eye(times.size)
    weights = np.stack([np.interp(grid, times, row) for row in eye])  # [T, N]
    return grid, weights


def trapezoid_weights(times):
    """Weights w [T] with ∫C dt = C @ w (trapezoid rule on the true frame times)."""
    times = np.asarray(times, dtype=float)
    w = np.zeros(times.size)
    d = np.diff(times)
    w[:-1] += d / 2
    w[1:] += d / 2
    return w


class ResidueCurve(NamedTuple):
    """k(t) = κ⁻¹·CBF·R(t)/6000 in 1/s on lag ``times`` (s); oSVD threshold / OI when relevant."""

    k: np.ndarray
    times: np.ndarray
    method: str
    threshold: float | None
    oscillation_index: float | None


def _aif_curve(aif):
    curve = getattr(aif, "curve", aif)
    return np.asarray(curve)  # dtype checked by _real_array before use


def deconvolve_curve(curve, aif, times, *, method="oSVD", grid_dt=None, **kwargs) -> ResidueCurve:
    """Residue k(t) of one tissue curve [T] (e.g. a voxel, for the curve inspector).

    Curves are resampled to the uniform grid of :func:`uniform_grid`. Circulant methods return
    lags from −(N−1)·Δt to N·Δt (negative: tissue leading the AIF), sSVD 0…(N−1)·Δt.
    CBF = 6000·κ·max k with κ = hematocrit_factor/tissue_density.
    """
    curve = _real_array(curve, "tissue curve").astype(float)
    a = _real_array(_aif_curve(aif), "AIF").astype(float)
    times = check_times(times, a.size)
    if curve.shape != a.shape:
        raise InputDataError(f"Curve length {curve.shape} and AIF length {a.shape} differ.")
    grid, weights = uniform_grid(times, grid_dt)
    if weights is not None:
        curve, a = curve @ weights, a @ weights
    k, lags, extras = deconvolve(curve, a, grid[1] - grid[0], method, **kwargs)
    thr = extras.get("threshold")
    oi = extras.get("oscillation_index")
    return ResidueCurve(k, lags, normalize_method(method), None if thr is None else float(thr),
                        None if oi is None else float(oi))


@dataclass
class PerfusionMaps:
    """Perfusion maps, float32 with the leading shape of the input; **NaN outside the mask**.

    ``cbf`` mL/100 g/min, ``cbv`` mL/100 g, ``mtt`` s, ``tmax`` s, ``ttp`` s (from the first
    frame). ``method``, ``grid_dt`` (s, deconvolution grid), ``kappa`` = hematocrit_factor /
    tissue_density, ``extra`` optional maps: oSVD ``osvd_threshold`` (chosen P),
    ``oscillation_index``, ``osvd_no_threshold`` (bool, True where no P met the OI target,
    False outside the mask); Tikhonov ``tikhonov_lambda`` (α, relative units); every method
    ``no_positive_residue`` (bool: max k ≤ 0, there MTT and Tmax are set to 0),
    ``nonfinite_input`` (bool: a NaN/inf sample, maps NaN there); ``nonfinite_voxels`` their
    count and ``warnings`` sentences about them.
    """

    cbf: np.ndarray
    cbv: np.ndarray
    mtt: np.ndarray
    tmax: np.ndarray
    ttp: np.ndarray
    method: str
    grid_dt: float
    kappa: float
    mask: np.ndarray | None = None
    extra: dict = field(default_factory=dict)
    aif: np.ndarray | None = None
    settings: dict = field(default_factory=dict)
    nonfinite_voxels: int = 0
    warnings: list = field(default_factory=list)
    _concentration: np.ndarray | None = field(default=None, repr=False)
    _times: np.ndarray | None = field(default=None, repr=False)

    def residue(self, voxel) -> ResidueCurve:
        """Residue k(t) of one voxel (index tuple into the leading shape), same settings as the maps."""
        if self._concentration is None:
            raise InputDataError("These maps do not keep the concentration; call deconvolve_curve instead.")
        curve = np.asarray(self._concentration[tuple(voxel)], dtype=float)
        return deconvolve_curve(curve, self.aif, self._times, method=self.method, **self.settings)


def _check_progress(progress, fraction, message):
    if progress is not None and progress(float(fraction), message) is False:
        raise AnalysisCancelled("Perfusion analysis cancelled by the user.")


def compute_maps(concentration, aif, times, *, method="oSVD", mask=None, hematocrit_factor=0.73,
                 tissue_density=1.04, progress=None, threshold=None, oi_target=OSVD_OI_TARGET,
                 thresholds=OSVD_THRESHOLDS, tikhonov_criterion="gcv", tikhonov_alpha=None,
                 grid_dt=None, chunk_size=CHUNK_VOXELS, precision="float32", keep_extra=True,
                 n_threads=None) -> PerfusionMaps:
    """CBF, CBV, MTT, Tmax and TTP from concentration curves [..., T] and an AIF [T] (or AIFResult).

    ``method`` "sSVD" (P = 0.2), "cSVD" (block-circulant, L = 2N, P = 0.1), "oSVD" (default;
    Wu 2003, per voxel the first P in ``thresholds`` whose oscillation index < ``oi_target``)
    or "Tikhonov" (circulant filter factors, α per voxel by ``tikhonov_criterion`` "gcv" or
    "lcurve", or a fixed ``tikhonov_alpha`` relative to max|λ|). ``threshold`` overrides the
    sSVD/cSVD default.

    Times (s) need not be uniform: the curves are **linearly resampled to a uniform grid**
    (spacing ``grid_dt``, default the median frame interval) for deconvolution and TTP; CBV
    (AUC ratio) is integrated with the trapezoid rule on the true frame times.

    Units (κ = ``hematocrit_factor``/``tissue_density``): CBF = 6000·κ·max k mL/100 g/min,
    CBV = 100·κ·∫C_t/∫C_a mL/100 g, MTT = 60·CBV/CBF s, Tmax = lag of max k (s, parabolic
    sub-frame vertex; circulant lags past L/2 are negative), TTP = time of max C_t from the
    first frame (s, parabolic). With both factors 1, CBF = 6000·max k ("κ = 1").

    Measured bias (noise-free curve phantom, Δt = 1 s, κ = 1; docs/PERFUSION_METHODS.md):
    Tmax exceeds the true delay by a **constant positive offset** that does not depend on the
    delay but grows with MTT: exponential residue, MTT 2/4/8 s: oSVD +1.3/+1.7/+2.1 s, cSVD
    +1.4/+2.0/+2.4 s, Tikhonov +0.7/+1.0/+1.1 s (it is not subtracted). SVD CBF is low for short
    MTT (high flow): oSVD 52/71/87 %, cSVD 45/65/80 %, sSVD 49/62/73 % of truth.

    ``mask`` (bool, leading shape) limits the analysis; **outside it every map is NaN**.
    Voxels are processed in chunks of ``chunk_size`` in ``precision`` (float32 or float64), so
    int16 input is never upcast as a whole; chunks run on ``n_threads`` threads (default: up to
    2, the CPU count). ``progress(fraction, message)`` returning False
    raises :class:`errors.AnalysisCancelled`. The input is not modified.
    """
    conc = _real_array(concentration, "concentration")
    if conc.ndim < 1:
        raise InputDataError("concentration must be an array with time on its last axis.")
    a = _real_array(_aif_curve(aif), "AIF").astype(float)
    times = check_times(times, conc.shape[-1])
    if a.shape != (conc.shape[-1],):
        raise InputDataError(f"The AIF has {a.size} points but the series has {conc.shape[-1]} frames.")
    if not np.all(np.isfinite(a)):
        raise InputDataError("The AIF contains NaN or inf values: select the AIF again.")
    method = normalize_method(method)
    dtype = np.dtype(precision)
    if dtype not in (np.float32, np.float64):
        raise InputDataError("precision must be 'float32' or 'float64'.")
    kappa = float(hematocrit_factor) / float(tissue_density)
    if not np.isfinite(kappa) or kappa <= 0:
        raise InputDataError("hematocrit_factor and tissue_density must be positive numbers.")
    lead = conc.shape[:-1]
    flat = conc.reshape(-1, conc.shape[-1])
    if mask is None:
        index = None
        n_vox = flat.shape[0]
    else:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != lead:
            raise InputDataError(f"Mask shape {mask.shape} does not match the image grid {lead}.")
        index = np.flatnonzero(mask)
        n_vox = index.size

    grid, weights = uniform_grid(times, grid_dt)
    dt = float(grid[1] - grid[0])
    a_grid = a if weights is None else a @ weights
    plan = DeconvolutionPlan(a_grid, dt, method, threshold=threshold, thresholds=thresholds,
                             oi_target=oi_target, tikhonov_criterion=tikhonov_criterion,
                             tikhonov_alpha=tikhonov_alpha, dtype=dtype)
    wt = trapezoid_weights(times)
    aif_auc = float(a @ wt)
    if aif_auc <= 0:
        peak, trough = float(np.max(a)), float(np.min(a))
        if peak > 0 and trough < -0.2 * peak:
            raise InputDataError(
                f"The AIF has no positive area: after its peak ({peak:.3g}) it falls to {trough:.3g}, "
                "far below its pre-contrast baseline. The frames used as baseline already contain "
                "the arterial bolus (the scan started too late, or too few frames before the "
                "injection): give a baseline range that ends before the arteries fill, or start the "
                "scan earlier.")
        raise InputDataError("The AIF has no positive area (no bolus in the chosen voxels): select "
                             "the AIF again.")
    wt_d = wt.astype(dtype)
    w_d = None if weights is None else weights.astype(dtype)

    size = int(np.prod(lead, dtype=np.int64))
    out = {name: np.full(size, np.nan, dtype=np.float32) for name in ("cbf", "cbv", "mtt", "tmax", "ttp")}
    extra = {}
    _check_progress(progress, 0.0, f"{method} deconvolution of {n_vox} voxels")
    chunk_size = max(int(chunk_size), 1)

    def work_chunk(lo):
        """Maps of voxels lo … lo + chunk_size (runs in a worker thread; numpy releases the GIL)."""
        hi = min(lo + chunk_size, n_vox)
        rows = flat[lo:hi] if index is None else flat[index[lo:hi]]
        # A voxel with a missing (NaN/inf) sample has no curve to deconvolve: its maps are NaN
        # and it is counted (``extra["nonfinite_input"]``), never silently read as zero.
        bad = ~np.all(np.isfinite(rows), axis=-1)
        work = rows.astype(dtype, copy=True)
        work[bad] = 0.0  # deconvolved harmlessly, then set to NaN below
        auc = work @ wt_d
        on_grid = work if w_d is None else work @ w_d
        del work
        pidx, poff, _ = _peak_noncircular(on_grid)
        res = plan.summarize(on_grid)
        del on_grid
        positive = res.kmax > 0
        cbf = 6000.0 * kappa * res.kmax
        cbv = 100.0 * kappa * auc / aif_auc
        with np.errstate(divide="ignore", invalid="ignore"):
            mtt = np.where(positive, 60.0 * cbv / np.where(positive, cbf, 1.0), 0.0)
        values = {"cbf": cbf, "cbv": cbv, "mtt": mtt, "tmax": np.where(positive, res.tmax, 0.0),
                  "ttp": (grid[0] - times[0]) + (pidx + poff) * dt}
        if bad.any():
            values = {key: np.where(bad, np.nan, value) for key, value in values.items()}
        chunk_extra = dict(res.extra) if keep_extra else {}
        chunk_extra["nonfinite_input"] = bad
        if keep_extra:
            chunk_extra["no_positive_residue"] = ~positive & ~bad
        return lo, hi, values, chunk_extra

    n_threads = _default_threads() if n_threads is None else max(int(n_threads), 1)
    plan.fft_workers = 1 if n_threads > 1 else -1
    starts = range(0, n_vox, chunk_size)
    executor = ThreadPoolExecutor(max_workers=n_threads) if n_threads > 1 and len(starts) > 1 else None
    results = executor.map(work_chunk, starts) if executor is not None else map(work_chunk, starts)
    try:
        for lo, hi, values, chunk_extra in results:
            where = slice(lo, hi) if index is None else index[lo:hi]
            for key, value in values.items():
                out[key][where] = value
            for key, value in chunk_extra.items():
                if key not in extra:
                    if value.dtype == bool:
                        extra[key] = np.zeros(size, dtype=bool)
                    else:
                        extra[key] = np.full(size, np.nan, dtype=np.float32)
                extra[key][where] = value
            _check_progress(progress, hi / max(n_vox, 1), f"{method}: {hi}/{n_vox} voxels")
    finally:
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
    maps = {key: value.reshape(lead) for key, value in out.items()}
    extra = {key: value.reshape(lead) for key, value in extra.items()}
    warnings = []
    n_bad = int(np.count_nonzero(extra["nonfinite_input"])) if "nonfinite_input" in extra else 0
    if n_bad:
        warnings.append(f"{n_bad} voxel(s) inside the mask have NaN or infinite samples: their maps "
                        "are NaN (not analysed).")
    if not keep_extra:
        extra.pop("nonfinite_input", None)
    settings = {"threshold": threshold, "oi_target": oi_target, "thresholds": thresholds,
                "tikhonov_criterion": tikhonov_criterion, "tikhonov_alpha": tikhonov_alpha, "grid_dt": grid_dt}
    return PerfusionMaps(method=method, grid_dt=dt, kappa=kappa, mask=mask, extra=extra, aif=a,
                         settings=settings, _concentration=conc, _times=times,
                         nonfinite_voxels=n_bad, warnings=warnings, **maps)


def _default_threads():
    return max(1, min(2, os.cpu_count() or 1))


def _peak_noncircular(values):
    from .deconvolution import _peak

    return _peak(values, circular=False)
