"""Deconvolution of tissue curves by the AIF: sSVD, cSVD, oSVD and Tikhonov (PERFUSION.md §4).

All functions work on curves already on a **uniform** time grid of spacing ``dt`` (s), with time
on the last axis ``[V, N]``; :func:`StrokeMismatchLib.perfusion.compute_maps` does the resampling.
They return k(t) = (ρ/k_H)·CBF·R(t) in 1/s (κ = 1 units, CBF = 6000·max k).

- sSVD (Østergaard et al. MRM 1996;36:715): lower-triangular Toeplitz A_ij = Δt·a(i−j),
  truncated pseudo-inverse, σ_i < P·σ_max dropped (P = 0.2). Causal, delay-sensitive.
- cSVD (Wu et al. MRM 2003;50:164): Simpson-weighted AIF, zero padded to L = 2N, block-circulant
  D. A circulant matrix is diagonalised by the DFT, so its singular values are |λ_m| with
  λ = Δt·DFT(ã) and the truncated pseudo-inverse is a filter in the Fourier domain: this module
  uses that exact fast route (``numpy``/``scipy.fft`` on the last axis, all voxels at once);
  :func:`circulant_residues_svd` keeps the explicit-SVD reference for the tests.
- oSVD (Wu 2003): per voxel the first P in 0.05, 0.10, …, 0.95 whose oscillation index
  OI = (1/L)(1/max f) Σ_{m=2}^{L−1} |f_m − 2f_{m−1} + f_{m−2}| falls below the target (0.035).
  Voxels where none does get the largest P and a flag.
- Tikhonov: circulant filter factors f_m = |λ_m|²/(|λ_m|² + α²), α chosen per voxel on a log grid
  by GCV (Golub, Heath & Wahba 1979) or the L-curve corner (Hansen 1992), all voxels at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.fft as sfft

from .errors import InputDataError

METHODS = ("sSVD", "cSVD", "oSVD", "Tikhonov")
DEFAULT_THRESHOLDS = {"sSVD": 0.2, "cSVD": 0.1}
OSVD_THRESHOLDS = tuple(np.round(np.arange(0.05, 0.951, 0.05), 2))
OSVD_OI_TARGET = 0.035


def normalize_method(method: str) -> str:
    """Canonical method name (case-insensitive match to :data:`METHODS`)."""
    for name in METHODS:
        if str(method).lower() == name.lower():
            return name
    raise InputDataError(f"Unknown deconvolution method {method!r}: choose one of {', '.join(METHODS)}.")


def simpson_weighted(aif):
    """Simpson-like AIF weighting of Wu 2003: ã_m = (a_{m−1} + 4a_m + a_{m+1})/6 (ends per §4.1)."""
    a = np.asarray(aif, dtype=float)
    out = np.empty_like(a)
    out[0] = a[0]
    out[1:-1] = (a[:-2] + 4.0 * a[1:-1] + a[2:]) / 6.0
    out[-1] = (a[-2] + 4.0 * a[-1]) / 6.0
    return out


def oscillation_index(residues):
    """Wu 2003 oscillation index of residues ``[..., L]``: (1/L)(1/max f) Σ|second difference|.

    Residues whose maximum is ≤ 0 (noise only) get ``inf``.
    """
    f = np.asarray(residues)
    length = f.shape[-1]
    d = np.subtract(f[..., 2:], f[..., 1:-1])
    d -= f[..., 1:-1]
    d += f[..., :-2]
    np.abs(d, out=d)
    rough = d.sum(axis=-1)
    fmax = f.max(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        oi = np.where(fmax > 0, rough / (length * np.where(fmax > 0, fmax, 1.0)), np.inf)
    return oi


def circulant_matrix(aif, dt):
    """Explicit block-circulant matrix D (L×L, L = 2N) of the Simpson-weighted, zero-padded AIF."""
    a = simpson_weighted(aif)
    n = a.size
    padded = np.zeros(2 * n)
    padded[:n] = a
    idx = (np.arange(2 * n)[:, None] - np.arange(2 * n)[None, :]) % (2 * n)
    return dt * padded[idx]


def toeplitz_matrix(aif, dt):
    """Lower-triangular Toeplitz matrix A_ij = Δt·a(i−j) for i ≥ j (Østergaard 1996)."""
    a = np.asarray(aif, dtype=float)
    n = a.size
    diff = np.arange(n)[:, None] - np.arange(n)[None, :]
    return dt * np.where(diff >= 0, a[np.clip(diff, 0, None)], 0.0)


def truncated_pinv(matrix, threshold):
    """Pseudo-inverse keeping singular values σ ≥ threshold·σ_max."""
    u, s, vt = np.linalg.svd(matrix)
    keep = s >= threshold * s.max()
    inv = np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
    return (vt.T * inv) @ u.T


def circulant_residues_svd(conc, aif, dt, threshold):
    """Reference cSVD by explicit SVD of D (slow; for tests): residues ``[V, 2N]``."""
    conc = np.atleast_2d(np.asarray(conc, dtype=float))
    n = conc.shape[-1]
    padded = np.zeros(conc.shape[:-1] + (2 * n,))
    padded[..., :n] = conc
    return padded @ truncated_pinv(circulant_matrix(aif, dt), threshold).T


def _peak(values, circular):
    """Index of the maximum along the last axis and a parabolic sub-sample offset in [−0.5, 0.5].

    Vertex offset 0.5·(y₋ − y₊)/(y₋ − 2y₀ + y₊) (PERFUSION.md §5); neighbours wrap for circular
    vectors, the offset is 0 at the ends of non-circular ones. Returns (index, offset, max value).
    """
    n = values.shape[-1]
    idx = np.argmax(values, axis=-1)
    rows = np.arange(values.shape[0])
    y0 = values[rows, idx]
    if circular:
        ym = values[rows, (idx - 1) % n]
        yp = values[rows, (idx + 1) % n]
        interior = np.ones(idx.shape, bool)
    else:
        ym = values[rows, np.clip(idx - 1, 0, n - 1)]
        yp = values[rows, np.clip(idx + 1, 0, n - 1)]
        interior = (idx > 0) & (idx < n - 1)
    denom = ym - 2.0 * y0 + yp
    ok = interior & (denom < 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        offset = np.where(ok, 0.5 * (ym - yp) / np.where(ok, denom, -1.0), 0.0)
    return idx, np.clip(offset, -0.5, 0.5), y0


@dataclass
class ChunkResult:
    """Per-voxel summary of one chunk: ``kmax`` (1/s), ``tmax`` (s), optional ``extra`` arrays."""

    kmax: np.ndarray
    tmax: np.ndarray
    extra: dict = field(default_factory=dict)


def _number(value, what):
    """``value`` as a finite float, or InputDataError naming ``what``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputDataError(f"{what} must be a number, not {value!r}.")
    value = float(value)
    if not np.isfinite(value):
        raise InputDataError(f"{what} must be finite, not {value!r}.")
    return value


def _fraction(value, what):
    """An SVD truncation threshold: a fraction of the largest singular value, 0 < P < 1."""
    value = _number(value, what)
    if not 0.0 < value < 1.0:
        raise InputDataError(
            f"{what} must lie between 0 and 1 (a fraction of the largest singular value; "
            f"e.g. sSVD 0.2, cSVD 0.1), not {value:g}.")
    return value


def _positive(value, what):
    value = _number(value, what)
    if value <= 0:
        raise InputDataError(f"{what} must be positive, not {value:g}.")
    return value


class DeconvolutionPlan:
    """Everything that depends only on the AIF and the method, computed once per volume.

    ``aif`` on the uniform grid [N] (concentration units), ``dt`` s. ``threshold`` overrides the
    method's default (sSVD 0.2, cSVD 0.1); ``thresholds`` and ``oi_target`` are the oSVD
    settings; ``tikhonov_criterion`` "gcv" or "lcurve", ``tikhonov_alpha`` a fixed α relative to
    max|λ| (skips the per-voxel choice), ``n_lambda`` the grid size. ``dtype`` float32 (fast)
    or float64.
    """

    def __init__(self, aif, dt, method="oSVD", *, threshold=None, thresholds=OSVD_THRESHOLDS,
                 oi_target=OSVD_OI_TARGET, tikhonov_criterion="gcv", tikhonov_alpha=None,
                 n_lambda=50, dtype=np.float32):
        self.method = normalize_method(method)
        self.fft_workers = -1  # scipy.fft threads (compute_maps sets 1 when it threads over chunks)
        aif = np.asarray(aif, dtype=float)
        if aif.ndim != 1 or aif.size < 4:
            raise InputDataError("The AIF must be a 1D curve of at least 4 frames.")
        if not np.all(np.isfinite(aif)) or aif.max() <= 0:
            raise InputDataError("The AIF has no positive bolus (or contains NaN/inf): check the AIF selection.")
        self.dt = float(dt)
        self.n = aif.size
        self.length = 2 * self.n
        self.dtype = np.dtype(dtype)
        self.cdtype = np.result_type(self.dtype, np.complex64)
        self.threshold = (DEFAULT_THRESHOLDS.get(self.method) if threshold is None
                          else _fraction(threshold, "threshold"))
        try:
            self.thresholds = tuple(_fraction(p, "oSVD thresholds") for p in thresholds)
        except TypeError:
            raise InputDataError("oSVD thresholds must be a sequence of fractions in (0, 1), e.g. "
                                 "0.05 … 0.95.") from None
        self.oi_target = _positive(oi_target, "oi_target (oscillation-index target, e.g. 0.035)")
        if tikhonov_alpha is not None:
            tikhonov_alpha = _positive(tikhonov_alpha, "tikhonov_alpha (relative to max|λ|)")
        self.tikhonov_criterion = str(tikhonov_criterion).lower()
        if self.tikhonov_criterion not in ("gcv", "lcurve"):
            raise InputDataError("tikhonov_criterion must be 'gcv' or 'lcurve'.")
        self.tikhonov_alpha = tikhonov_alpha
        if self.method == "sSVD":
            self.pinv_t = truncated_pinv(toeplitz_matrix(aif, self.dt), self.threshold).T.astype(self.dtype)
            return
        padded = np.zeros(self.length)
        padded[: self.n] = simpson_weighted(aif)
        lam = self.dt * np.fft.rfft(padded)  # eigenvalues of D (rfft half)
        self.lam = lam
        mag = np.abs(lam)
        self.mag = mag
        # weight of each rfft bin in a full-spectrum sum (DC and Nyquist once, others twice)
        w = np.full(mag.size, 2.0)
        w[0] = 1.0
        if self.length % 2 == 0:
            w[-1] = 1.0
        self.bin_weight = w
        safe = np.where(mag > 0, lam, 1.0)
        self.inv_lam = np.where(mag > 0, 1.0 / safe, 0.0)
        if self.method in ("cSVD", "oSVD"):
            if self.method == "oSVD":
                if list(self.thresholds) != sorted(self.thresholds) or not self.thresholds:
                    raise InputDataError("oSVD thresholds must be a non-empty increasing sequence (e.g. 0.05 … 0.95).")
                self.keep_bins = [mag >= p * mag.max() for p in self.thresholds]
            else:
                self.filters = [np.where(mag >= self.threshold * mag.max(), self.inv_lam, 0.0).astype(self.cdtype)]
        else:
            alphas = np.logspace(-3, 0, int(n_lambda)) * mag.max()
            if tikhonov_alpha is not None:
                alphas = np.array([float(tikhonov_alpha) * mag.max()])
            self.alphas = alphas
            m2 = mag[None, :] ** 2
            self.tik_factors = m2 / (m2 + alphas[:, None] ** 2)  # [G, M]

    # -- helpers -------------------------------------------------------------------------
    def _spectrum(self, conc):
        return sfft.rfft(conc, n=self.length, axis=-1, workers=self.fft_workers)

    def _inverse(self, spec):
        return sfft.irfft(spec, n=self.length, axis=-1, workers=self.fft_workers)

    def _lag_seconds(self, idx, offset, circular=True):
        lag = idx + offset
        if circular:
            lag = np.where(idx > self.length // 2, lag - self.length, lag)
        return lag * self.dt

    # -- full residues (curve inspector, tests) ------------------------------------------
    def residues(self, conc):
        """Residues k [V, L] (sSVD: [V, N]) and a dict of per-voxel extras."""
        conc = np.atleast_2d(np.asarray(conc, dtype=self.dtype))
        if self.method == "sSVD":
            return conc @ self.pinv_t, {"threshold": np.full(conc.shape[0], self.threshold)}
        spec = self._spectrum(conc)
        if self.method == "cSVD":
            return self._inverse(spec * self.filters[0]), {"threshold": np.full(conc.shape[0], self.threshold)}
        if self.method == "oSVD":
            choice, oi, flag, res = self._osvd(spec, keep_residues=True)
            return res, {"threshold": np.asarray(self.thresholds)[choice], "oscillation_index": oi, "no_threshold": flag}
        factors, alpha = self._tikhonov_factors(spec)
        return self._inverse(spec * (factors * self.inv_lam).astype(self.cdtype)), {"tikhonov_alpha": alpha}

    # -- hot path ------------------------------------------------------------------------
    def summarize(self, conc) -> ChunkResult:
        """max k (1/s) and Tmax (s, parabolic sub-frame) for a chunk of curves [V, N] on the grid."""
        conc = np.asarray(conc, dtype=self.dtype)
        if self.method == "sSVD":
            k = conc @ self.pinv_t
            idx, off, kmax = _peak(k, circular=False)
            return ChunkResult(kmax, self._lag_seconds(idx, off, circular=False))
        spec = self._spectrum(conc)
        if self.method == "cSVD":
            k = self._inverse(spec * self.filters[0])
            idx, off, kmax = _peak(k, circular=True)
            return ChunkResult(kmax, self._lag_seconds(idx, off))
        if self.method == "oSVD":
            choice, oi, flag, (kmax, tmax) = self._osvd(spec, keep_residues=False)
            return ChunkResult(kmax, tmax, {"osvd_threshold": np.asarray(self.thresholds, np.float32)[choice],
                                            "oscillation_index": oi, "osvd_no_threshold": flag})
        factors, alpha = self._tikhonov_factors(spec)
        k = self._inverse(spec * (factors * self.inv_lam).astype(self.cdtype))
        idx, off, kmax = _peak(k, circular=True)
        return ChunkResult(kmax, self._lag_seconds(idx, off), {"tikhonov_lambda": alpha})

    def _osvd(self, spec, keep_residues):
        """Wu 2003 oSVD over the thresholds, low to high, on a shrinking set of active voxels.

        The retained frequency sets are nested (a higher P keeps a subset), so the unregularised
        spectrum C/λ is computed once and each threshold only zeroes its newly dropped bins,
        then costs one inverse FFT of the voxels that have not yet met the OI target.
        Thresholds that drop no new bin give the same residue and are skipped.
        """
        nvox = spec.shape[0]
        n_thr = len(self.thresholds)
        choice = np.full(nvox, n_thr - 1, dtype=np.int16)
        oi_out = np.full(nvox, np.inf, dtype=np.float32)
        flag = np.ones(nvox, dtype=bool)
        if keep_residues:
            res_out = np.zeros((nvox, self.length), dtype=self.dtype)
        else:
            kmax_out = np.zeros(nvox, dtype=self.dtype)
            tmax_out = np.zeros(nvox, dtype=self.dtype)
        active = np.arange(nvox)
        x = spec * self.inv_lam.astype(self.cdtype)
        dropped = np.zeros(self.mag.size, bool)
        for t, keep_bins in enumerate(self.keep_bins):
            last = t == n_thr - 1
            new = ~keep_bins & ~dropped
            if t > 0 and not new.any() and not last:
                continue  # same retained frequencies: same OI, still failing
            if new.any():
                x[:, new] = 0
                dropped |= new
            f = self._inverse(x)
            oi = oscillation_index(f)
            done = np.ones(active.size, bool) if last else oi < self.oi_target
            if np.any(done):
                sel = active[done]
                fd = f[done]
                choice[sel] = t
                oi_out[sel] = oi[done]
                flag[sel] = ~(oi[done] < self.oi_target)
                if keep_residues:
                    res_out[sel] = fd
                else:
                    idx, off, kmax = _peak(fd, circular=True)
                    kmax_out[sel] = kmax
                    tmax_out[sel] = self._lag_seconds(idx, off)
                keep = ~done
                active = active[keep]
                x = x[keep]
            if active.size == 0:
                break
        if keep_residues:
            return choice, oi_out, flag, res_out
        return choice, oi_out, flag, (kmax_out, tmax_out)

    def _tikhonov_factors(self, spec):
        """Per-voxel Tikhonov filter factors [V, M] and chosen α (GCV or L-curve on the α grid)."""
        nvox = spec.shape[0]
        if self.alphas.size == 1:
            return np.broadcast_to(self.tik_factors[0], (nvox, self.mag.size)), np.full(nvox, self.alphas[0], np.float32)
        power = (spec.real.astype(np.float64) ** 2 + spec.imag.astype(np.float64) ** 2) * self.bin_weight
        one_minus = (1.0 - self.tik_factors) ** 2  # [G, M]
        resid = power @ one_minus.T / self.length  # ‖r‖² by Parseval, [V, G]
        if self.tikhonov_criterion == "gcv":
            trace = (self.tik_factors * self.bin_weight).sum(axis=1)  # Σ f over all L bins
            score = resid / (self.length - trace)[None, :] ** 2
            best = np.argmin(score, axis=1)
        else:
            mag2 = np.where(self.mag > 0, self.mag**2, np.inf)
            sol = power @ (self.tik_factors**2 / mag2).T / self.length  # ‖k‖², [V, G]
            x = 0.5 * np.log(np.maximum(resid, 1e-300))
            y = 0.5 * np.log(np.maximum(sol, 1e-300))
            s = np.log(self.alphas)
            dx, dy = np.gradient(x, s, axis=1), np.gradient(y, s, axis=1)
            ddx, ddy = np.gradient(dx, s, axis=1), np.gradient(dy, s, axis=1)
            curv = (dx * ddy - ddx * dy) / np.maximum((dx**2 + dy**2) ** 1.5, 1e-300)
            curv[:, [0, -1]] = -np.inf
            best = np.argmax(curv, axis=1)
        return self.tik_factors[best], self.alphas[best].astype(np.float32)


def deconvolve(conc, aif, dt, method="oSVD", **kwargs):
    """Residues of curves ``conc`` [..., N] on a uniform grid (spacing ``dt`` s) by ``method``.

    Returns (k [..., L] in 1/s, lag times [L] in s, extras dict). Circulant methods (L = 2N)
    are reordered so that lags run from −(N−1)·dt to N·dt (negative lags: tissue leading the AIF);
    sSVD returns lags 0…(N−1)·dt.
    """
    conc = np.asarray(conc, dtype=float)
    lead = conc.shape[:-1]
    plan = DeconvolutionPlan(aif, dt, method, dtype=np.float64, **kwargs)
    k, extras = plan.residues(conc.reshape(-1, conc.shape[-1]))
    if plan.method == "sSVD":
        lags = np.arange(plan.n) * plan.dt
    else:
        order = np.r_[np.arange(plan.n + 1, plan.length), np.arange(plan.n + 1)]
        k = k[:, order]
        lags = np.where(order > plan.length // 2, order - plan.length, order) * plan.dt
    extras = {key: np.asarray(v).reshape(lead) for key, v in extras.items()}
    return k.reshape(lead + (k.shape[-1],)), lags, extras
