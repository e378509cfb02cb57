"""Signal → concentration, bolus arrival and baseline (PERFUSION.md §2).

- MR (DSC): ΔR2*(t) = −ln(S(t)/S0)/TE in 1/s (TE in s). The signal is clamped to
  ≥ 10⁻³·S0 before the log (so zero or negative samples give a finite ΔR2* ≤ ln(1000)/TE), and
  voxels with S0 ≤ 0 (background) get 0. Negative pre-bolus values are kept as they are.
- CT: ΔHU(t) = HU(t) − HU0.

Baseline (our choice, PERFUSION.md §2.2): on the mean curve over the mask (all voxels when no
mask is given), skip the frames before steady state (MR 2, CT 0), take mean and SD of the next
3 frames, and call bolus arrival (BAT) the first later frame that departs from that mean by more
than max(3·SD, 5 % of the peak change), downward for MR and upward for CT. The baseline is the
frames ``start … BAT − 1``; S0 per voxel is their mean. Fewer than 3 baseline frames gives a
warning. A user-given ``baseline`` is used verbatim.

Large inputs (e.g. int16 CT) are converted chunk by chunk, never upcast to float64 as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputDataError

CHUNK_VOXELS = 1 << 16
MR_CLAMP_FRACTION = 1e-3


@dataclass
class BaselineInfo:
    """Baseline frames ``start:stop`` (half-open frame indices), bolus arrival frame, warnings."""

    start: int
    stop: int
    bolus_arrival_index: int | None
    warnings: list = field(default_factory=list)
    global_curve: np.ndarray | None = None

    @property
    def frames(self) -> slice:
        return slice(self.start, self.stop)


def check_times(times, n_frames):
    """Validated frame times as float64 [T] (s, strictly increasing, finite)."""
    times = np.asarray(times, dtype=float)
    if times.ndim != 1 or times.size != n_frames:
        raise InputDataError(
            f"{times.size} frame times were given for {n_frames} frames: give one time (s) per frame."
        )
    if n_frames < 5:
        raise InputDataError(f"Only {n_frames} frames: a perfusion series needs at least 5 time points.")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise InputDataError("Frame times must be finite and strictly increasing (seconds).")
    from .validation import check_frame_times

    check_frame_times(times)  # a median interval of 0.1–5 s: times in ms or TR ×10 refused with a hint
    return times


def check_modality(modality):
    m = str(modality).lower() if modality is not None else None
    if m not in ("mr", "ct"):
        raise InputDataError(f"Unknown modality {modality!r}: say modality='mr' (DSC) or 'ct' (CTP).")
    return m


def _flat(array):
    """View [V, T] of an array [..., T] (a copy only if it is not contiguous)."""
    return np.reshape(array, (-1, array.shape[-1]))


def mean_curve(signal, mask=None, *, chunk=CHUNK_VOXELS):
    """Mean curve [T] over ``mask`` (bool, leading shape) or all voxels, chunked (float64 sums)."""
    flat = _flat(np.asarray(signal))
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != signal.shape[:-1]:
            raise InputDataError(f"Mask shape {mask.shape} does not match the image grid {signal.shape[:-1]}.")
        index = np.flatnonzero(mask)
        if index.size == 0:
            raise InputDataError("The mask is empty: give a mask that contains brain voxels.")
    else:
        index = None
    total = np.zeros(flat.shape[-1])
    n = flat.shape[0] if index is None else index.size
    for start in range(0, n, chunk):
        rows = flat[start:start + chunk] if index is None else flat[index[start:start + chunk]]
        total += rows.sum(axis=0, dtype=np.float64)
    return total / n


def detect_baseline(signal, times, *, modality, mask=None, skip_frames=None, n_initial=3,
                    sd_factor=3.0, peak_fraction=0.05) -> BaselineInfo:
    """Bolus arrival and baseline frames from the mean curve (algorithm in the module docstring)."""
    signal = np.asarray(signal)
    modality = check_modality(modality)
    times = check_times(times, signal.shape[-1])
    curve = mean_curve(signal, mask)
    return detect_baseline_curve(curve, modality=modality, skip_frames=skip_frames, n_initial=n_initial,
                                 sd_factor=sd_factor, peak_fraction=peak_fraction)


def detect_baseline_curve(curve, *, modality, skip_frames=None, n_initial=3, sd_factor=3.0,
                          peak_fraction=0.05) -> BaselineInfo:
    """Baseline detection on one curve [T] (signal units; MR signal falls, CT rises)."""
    modality = check_modality(modality)
    curve = np.asarray(curve, dtype=float)
    n = curve.size
    warnings = []
    skip = (2 if modality == "mr" else 0) if skip_frames is None else int(skip_frames)
    if skip + n_initial >= n:
        skip = 0
    init = curve[skip:skip + n_initial]
    mean0, sd0 = init.mean(), init.std(ddof=1) if init.size > 1 else 0.0
    change = (mean0 - curve) if modality == "mr" else (curve - mean0)
    peak_change = change[skip:].max()
    if peak_change <= 0:
        warnings.append("No bolus found in the mean curve: baseline set to the first frames; check the series.")
        return BaselineInfo(skip, min(skip + n_initial, n), None, warnings, curve)
    limit = max(sd_factor * sd0, peak_fraction * peak_change)
    later = np.flatnonzero(change[skip + n_initial:] > limit)
    bat = skip + n_initial + int(later[0]) if later.size else None
    if bat is None:
        warnings.append("Bolus arrival not found: baseline set to the first frames; check the series.")
        return BaselineInfo(skip, skip + n_initial, None, warnings, curve)
    if bat - skip < 3:
        warnings.append(f"Only {bat - skip} baseline frames before bolus arrival (3 or more recommended).")
    return BaselineInfo(skip, bat, bat, warnings, curve)


def _baseline_range(baseline, n_frames):
    if isinstance(baseline, BaselineInfo):
        start, stop = baseline.start, baseline.stop
    elif isinstance(baseline, slice):
        start, stop, _ = baseline.indices(n_frames)
    else:
        try:
            start, stop = (int(x) for x in baseline)
        except (TypeError, ValueError):
            raise InputDataError(
                f"baseline={baseline!r} is not understood: give (start, stop) frame indices (stop excluded)."
            ) from None
    if not (0 <= start < stop <= n_frames):
        raise InputDataError(
            f"Baseline frames {start}:{stop} are outside the {n_frames} frames: give 0 ≤ start < stop ≤ {n_frames}."
        )
    return start, stop


def signal_to_concentration(signal, times, *, modality, te=None, baseline=None, mask=None,
                            dtype=np.float32, chunk=CHUNK_VOXELS):
    """Concentration-like curves [..., T] from the signal [..., T] (time on the last axis).

    ``modality`` "mr": ΔR2* = −ln(S/S0)/TE in 1/s, ``te`` in **seconds** (required);
    "ct": ΔHU = HU − HU0. ``baseline`` None detects bolus arrival (see :func:`detect_baseline`,
    on the mean over ``mask`` if given) and uses the pre-bolus frames for S0; a
    ``(start, stop)`` frame range (stop excluded), a ``slice`` or a :class:`BaselineInfo`
    overrides it. Returns a new ``dtype`` array (float32 by default); the input is not modified.
    Zero or negative MR samples are clamped (module docstring), so the result is always finite.
    """
    signal = np.asarray(signal)
    from .series import check_signal_dtype

    check_signal_dtype(signal)  # boolean / complex arrays are not a signal
    modality = check_modality(modality)
    if signal.ndim < 1 or signal.shape[-1] < 5:
        raise InputDataError("The signal must have time on its last axis with at least 5 frames.")
    times = check_times(times, signal.shape[-1])
    if modality == "mr":
        if te is None:
            raise InputDataError(
                "MR (DSC) conversion needs the echo time: pass te in seconds (e.g. te=0.03 for 30 ms)."
            )
        te = float(te)
        if not np.isfinite(te) or te <= 0:
            raise InputDataError(f"Echo time te={te} is not a positive number of seconds.")
        if te > 1.0:
            raise InputDataError(f"Echo time te={te} looks like milliseconds: give it in seconds (e.g. {te / 1000:g}).")
    n_frames = signal.shape[-1]
    if baseline is None:
        baseline = detect_baseline(signal, times, modality=modality, mask=mask)
    start, stop = _baseline_range(baseline, n_frames)
    flat = _flat(signal)
    out = np.empty(flat.shape, dtype=dtype)
    for lo in range(0, flat.shape[0], chunk):
        rows = flat[lo:lo + chunk]
        work = np.nan_to_num(rows.astype(dtype if np.dtype(dtype).itemsize >= 4 else np.float32))
        s0 = work[:, start:stop].mean(axis=1, keepdims=True)
        if modality == "ct":
            out[lo:lo + chunk] = work - s0
        else:
            valid = s0 > 0
            s0c = np.where(valid, s0, 1.0)
            clamped = np.maximum(work, MR_CLAMP_FRACTION * s0c)
            out[lo:lo + chunk] = np.where(valid, np.log(s0c / clamped) / te, 0.0)
    return out.reshape(signal.shape)
