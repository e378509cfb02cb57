"""Curve-level digital perfusion phantom (PERFUSION.md §11).

Every convolution and integral is done on a fine time grid (``dt_fine``, default 0.02 s) and
the curves are point-sampled at the frame times afterwards, so the phantom's CBV equals its
label (no rectangle-rule bias, PERFUSION.md §6). Concentrations use the "κ = 1" convention:

    C_t(t) = (CBF / 6000) · [C_a(· − δ) ⊗ h_disp ⊗ R](t)      CBF in mL/100 g/min, t in s

so that CBV = CBF · MTT / 60 mL/100 g. All parameters broadcast, so one call simulates a whole
grid of (CBF, MTT, delay, dispersion) combinations at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import gammainc

RESIDUE_SHAPES = ("exponential", "gamma", "box", "linear")


def gamma_variate_aif(t, *, t0=20.0, r=3.0, b=1.5, peak=1.0):
    """Gamma-variate AIF ``(t − t0)^r · e^{−(t − t0)/b}`` for t > t0, scaled to ``peak``.

    Defaults r = 3, b = 1.5 s, t0 = 20 s: peak at t0 + r·b = 24.5 s; unscaled area Γ(4)·b⁴.
    """
    t = np.asarray(t, dtype=float)
    s = np.clip(t - t0, 0.0, None)
    curve = s**r * np.exp(-s / b)
    unscaled_peak = (r * b) ** r * np.exp(-r)
    return peak * curve / unscaled_peak


def residue_function(t, mtt, shape="exponential", *, gamma_shape=5.0):
    """Residue R(t) with R(0) = 1 and ∫R dt = MTT (s), for t ≥ 0 (0 before).

    Shapes: ``exponential`` e^{−t/MTT}; ``gamma`` 1 − P(λ, λt/MTT) (λ = ``gamma_shape``);
    ``box`` 1 for t < MTT; ``linear`` 1 − t/(2·MTT) for t < 2·MTT.
    """
    t = np.asarray(t, dtype=float)
    mtt = np.asarray(mtt, dtype=float)
    tt = np.clip(t, 0.0, None)
    if shape == "exponential":
        residue = np.exp(-tt / mtt)
    elif shape == "gamma":
        residue = 1.0 - gammainc(gamma_shape, gamma_shape * tt / mtt)
    elif shape == "box":
        residue = (tt < mtt).astype(float)
    elif shape == "linear":
        residue = np.clip(1.0 - tt / (2.0 * mtt), 0.0, None)
    else:
        raise ValueError(f"Unknown residue shape {shape!r}; choose one of {RESIDUE_SHAPES}.")
    return np.where(t >= 0, residue, 0.0)


def dispersion_kernel(t, tau):
    """Unit-area transport kernel h(t) = β·e^{−βt} with time constant τ = 1/β (s); τ = 0 is a delta."""
    t = np.asarray(t, dtype=float)
    tau = np.asarray(tau, dtype=float)
    safe_tau = np.where(tau > 0, tau, 1.0)
    return np.where((t >= 0) & (tau > 0), np.exp(-np.clip(t, 0, None) / safe_tau) / safe_tau, 0.0)


@dataclass
class CurveSet:
    """Simulated curves and their truth. Parameter arrays share the broadcast shape P.

    ``times`` [T] s; ``aif`` [T] and ``tissue`` [P..., T] concentrations (κ = 1 units);
    ``truth``: ``cbf`` mL/100 g/min, ``cbv`` mL/100 g, ``mtt`` s, ``tmax`` s, ``ttp`` s (from t = 0),
    ``delay`` s, ``dispersion`` s; ``fine_times``/``fine_aif`` the fine grid used.
    """

    times: np.ndarray
    aif: np.ndarray
    tissue: np.ndarray
    truth: dict = field(default_factory=dict)
    fine_times: np.ndarray | None = None
    fine_aif: np.ndarray | None = None


def _sample(fine_times, fine_curves, times):
    """Linear interpolation of ``fine_curves`` [..., Nf] (uniform grid) at ``times`` [T]."""
    dt = fine_times[1] - fine_times[0]
    position = (np.asarray(times, dtype=float) - fine_times[0]) / dt
    lower = np.clip(np.floor(position).astype(int), 0, fine_times.size - 2)
    weight = np.clip(position - lower, 0.0, 1.0)
    return fine_curves[..., lower] * (1 - weight) + fine_curves[..., lower + 1] * weight


def simulate_curves(
    cbf,
    mtt,
    *,
    residue="exponential",
    delay=0.0,
    dispersion=0.0,
    times=None,
    dt_fine=0.02,
    aif_peak=1.0,
    t0=20.0,
    r=3.0,
    b=1.5,
    gamma_shape=5.0,
) -> CurveSet:
    """Noise-free tissue curves for broadcast parameter arrays (PERFUSION.md §11.1–11.2).

    ``cbf`` mL/100 g/min, ``mtt`` s, ``delay`` s (negative: tissue leads the AIF),
    ``dispersion`` time constant 1/β in s (0: none); ``times`` frame times in s
    (default 0…119 s at 1 s). The AIF is sampled undelayed; each tissue curve sees the AIF
    shifted by its delay (evaluated analytically, so any sub-frame delay is exact).
    """
    times = np.arange(0.0, 120.0, 1.0) if times is None else np.asarray(times, dtype=float)
    cbf, mtt, delay, dispersion = np.broadcast_arrays(
        *(np.asarray(x, dtype=float) for x in (cbf, mtt, delay, dispersion))
    )
    shape = cbf.shape
    end = float(times.max()) + 1.0
    fine = np.arange(0.0, end + dt_fine / 2, dt_fine)
    n_fine = fine.size
    n_fft = 2 * n_fine

    flat = lambda x: x.reshape(-1, 1)  # noqa: E731
    aif_delayed = gamma_variate_aif(fine[None, :] - flat(delay), t0=t0, r=r, b=b, peak=aif_peak)
    residue_fine = residue_function(fine[None, :], flat(mtt), residue, gamma_shape=gamma_shape)
    kernel = residue_fine
    tau = flat(dispersion)
    if np.any(tau > 0):
        h = dispersion_kernel(fine[None, :], tau) * dt_fine
        h = np.where(tau > 0, h / np.maximum(h.sum(axis=-1, keepdims=True), 1e-30), 0.0)
        h[:, 0] = np.where(tau[:, 0] > 0, h[:, 0], 1.0)  # unit area; a delta where no dispersion
        kernel = np.fft.irfft(np.fft.rfft(h, n_fft) * np.fft.rfft(residue_fine, n_fft), n_fft)[:, :n_fine]
    # Trapezoid-weighted fine convolution: the first sample counts half.
    weights = np.ones(n_fine)
    weights[0] = 0.5
    conv = np.fft.irfft(
        np.fft.rfft(aif_delayed, n_fft) * np.fft.rfft(kernel * weights, n_fft), n_fft
    )[:, :n_fine] * dt_fine
    tissue_fine = flat(cbf) / 6000.0 * conv

    kernel_peak = fine[np.argmax(kernel, axis=-1)]
    truth = {
        "cbf": cbf.copy(),
        "mtt": mtt.copy(),
        "cbv": cbf * mtt / 60.0,
        "delay": delay.copy(),
        "dispersion": dispersion.copy(),
        "tmax": (delay.ravel() + np.where(dispersion.ravel() > 0, kernel_peak, 0.0)).reshape(shape),
        "ttp": fine[np.argmax(tissue_fine, axis=-1)].reshape(shape),
    }
    aif_fine = gamma_variate_aif(fine, t0=t0, r=r, b=b, peak=aif_peak)
    tissue = _sample(fine, tissue_fine, times).reshape(shape + (times.size,))
    return CurveSet(
        times=times,
        aif=_sample(fine, aif_fine, times),
        tissue=tissue,
        truth=truth,
        fine_times=fine,
        fine_aif=aif_fine,
    )


# --- signal models and noise (PERFUSION.md §11.3) ----------------------------------------


def concentration_to_mr_signal(concentration, *, te, k, s0=1000.0):
    """DSC signal S = S0 · e^{−k·TE·C}; ``te`` in s, ``k`` the relaxivity-like scale (1/s per unit C)."""
    return s0 * np.exp(-k * te * np.asarray(concentration, dtype=float))


def mr_scale_for_drop(peak_concentration, *, te, drop):
    """The k for which a curve peaking at ``peak_concentration`` loses ``drop`` (0–1) of its signal."""
    return -np.log(1.0 - drop) / (te * peak_concentration)


def add_rician_noise(signal, sigma, rng):
    """Magnitude of signal plus complex Gaussian noise of SD ``sigma`` (Rician), from ``rng``."""
    signal = np.asarray(signal, dtype=float)
    real = signal + rng.normal(0.0, sigma, signal.shape)
    imaginary = rng.normal(0.0, sigma, signal.shape)
    return np.hypot(real, imaginary)


def add_gaussian_noise(signal, sigma, rng):
    """Signal plus Gaussian noise of SD ``sigma`` (CT, HU), from ``rng``."""
    signal = np.asarray(signal, dtype=float)
    return signal + rng.normal(0.0, sigma, signal.shape)
