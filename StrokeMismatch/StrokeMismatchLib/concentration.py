"""Signal → concentration, bolus arrival and baseline (PERFUSION.md §2).

- MR (DSC): ΔR2*(t) = −ln(S(t)/S0)/TE in 1/s (TE in s). The signal is clamped to
  ≥ 10⁻³·S0 before the log (so zero or negative samples give a finite ΔR2* ≤ ln(1000)/TE), and
  voxels with S0 ≤ 0 (background) get 0. Negative pre-bolus values are kept as they are.
- CT: ΔHU(t) = HU(t) − HU0.

Baseline (our choice, PERFUSION.md §2.2): **the baseline ends before the earliest arrival in
the image** (the arteries'), not the brain average's, which departs 1–3 frames later and would
put the AIF's own upslope into the AIF's baseline (measured on a CT phantom: the AIF 13 HU below
zero before the bolus and 32 % of its area lost).

1. Skip the frames before steady state (MR 2, CT 0).
2. Provisional arrival from the **earliest-enhancing voxels**: the ``earliest_fraction`` (1 %)
   of the mask voxels (all voxels when no mask is given) with the largest signal change
   (ΔR2*-like −ln(S/S_init) on MR, ΔHU on CT), i.e. the arteries and veins. On their mean curve,
   take mean and SD of the 3 frames after the skipped ones; bolus arrival (BAT) is the first
   later frame that departs from that mean by more than max(3·SD, 5 % of the peak change),
   downward for MR and upward for CT. (``reference="mean"`` uses the mean curve of the whole
   mask instead: the method before issue 20.)
3. Baseline = frames ``start … BAT − 1 − margin`` (one frame of margin); S0 per voxel = their
   mean. Fewer than 3 baseline frames gives a warning.
4. Second pass (:func:`recut_baseline`): after AIF selection, the AIF's own arrival is detected
   on its curve; when it is earlier than ``stop + margin`` the window is cut back to
   ``AIF arrival − margin`` (the caller then converts again).
5. Check (:func:`aif_prebolus_check`): the converted AIF's mean over its pre-bolus frames
   (first usable frame … its arrival − 1) must lie within one noise SD of zero (the SD of the AIF
   curve over those frames, at least ``AIF_OFFSET_FLOOR_FRACTION`` of its peak); value and
   threshold are reported.

A user-given ``baseline`` is used verbatim (no re-cut), but checked the same way.

Large inputs (e.g. int16 CT) are converted chunk by chunk, never upcast to float64 as a whole.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from .errors import InputDataError

CHUNK_VOXELS = 1 << 16
MR_CLAMP_FRACTION = 1e-3
#: Fraction of the mask's voxels (largest signal change) whose mean curve gives the provisional
#: bolus arrival: the arteries and veins, which arrive first (PERFUSION.md §2.2 step 2).
EARLIEST_FRACTION = 0.01
#: MR voxels whose initial signal is below this fraction of the 99th percentile are background
#: and never count as earliest-enhancing.
MR_BACKGROUND_FRACTION = 0.2
#: Frames of margin between the last baseline frame and the frame before bolus arrival.
MARGIN_FRAMES = 1
#: The second pass cuts the window back by at most this many frames before the provisional
#: arrival (arteries lead the earliest-enhancing voxels by 0–2 frames).
MAX_RECUT_FRAMES = 3
#: Floor of the AIF pre-bolus offset tolerance, as a fraction of the AIF peak (noise-free data
#: have a zero noise SD); 0.5 % of the peak over a 60 s scan is already ≈ 5 % of the AIF area.
AIF_OFFSET_FLOOR_FRACTION = 0.005


@dataclass
class BaselineInfo:
    """Baseline frames ``start:stop`` (half-open frame indices), bolus arrival frame, warnings.

    ``arrival_source`` says which curve gave ``bolus_arrival_index`` ("earliest-enhancing
    voxels", "mean curve", "AIF" after a re-cut, "user"); ``margin_frames`` frames lie between
    the baseline and the frame before arrival; ``provisional_arrival_index`` is the first-pass
    arrival; ``aif_arrival_index`` the AIF's own arrival (second pass); ``recut`` True when the
    second pass moved ``stop``; ``user_given`` True for a window set by the user (used verbatim);
    ``aif_check`` the AIF pre-bolus check (:func:`aif_prebolus_check`).
    """

    start: int
    stop: int
    bolus_arrival_index: int | None
    warnings: list = field(default_factory=list)
    global_curve: np.ndarray | None = None
    arrival_source: str = "mean curve"
    margin_frames: int = 0
    provisional_arrival_index: int | None = None
    aif_arrival_index: int | None = None
    recut: bool = False
    user_given: bool = False
    aif_check: dict | None = None

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


def _mask_index(mask, grid_shape):
    """Flat indices of a bool ``mask`` on ``grid_shape`` (None: no mask); clear errors."""
    if mask is None:
        return None
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != tuple(grid_shape):
        raise InputDataError(f"Mask shape {mask.shape} does not match the image grid {tuple(grid_shape)}.")
    index = np.flatnonzero(mask)
    if index.size == 0:
        raise InputDataError("The mask is empty: give a mask that contains brain voxels.")
    return index


def mean_curve(signal, mask=None, *, chunk=CHUNK_VOXELS):
    """Mean curve [T] over ``mask`` (bool, leading shape) or all voxels, chunked (float64 sums)."""
    flat = _flat(np.asarray(signal))
    index = _mask_index(mask, signal.shape[:-1])
    total = np.zeros(flat.shape[-1])
    n = flat.shape[0] if index is None else index.size
    for start in range(0, n, chunk):
        rows = flat[start:start + chunk] if index is None else flat[index[start:start + chunk]]
        total += rows.sum(axis=0, dtype=np.float64)
    return total / n


def earliest_enhancing_curve(signal, *, modality, mask=None, skip_frames=None, n_initial=3,
                             fraction=EARLIEST_FRACTION, min_voxels=100, chunk=CHUNK_VOXELS):
    """Mean signal curve [T] of the ``fraction`` of ``mask`` voxels (at least ``min_voxels``, so
    that its noise does not fake an early arrival)
    with the largest signal change from their first frames (MR: −ln(S/S_init), CT: HU − HU_init;
    S_init the mean of the ``n_initial`` frames after the ``skip_frames`` skipped ones), and the
    number of voxels used."""
    signal = np.asarray(signal)
    modality = check_modality(modality)
    flat = _flat(signal)
    n = flat.shape[-1]
    skip = (2 if modality == "mr" else 0) if skip_frames is None else int(skip_frames)
    if skip + n_initial >= n:
        skip = 0
    index = _mask_index(mask, signal.shape[:-1])
    if index is None:
        index = np.arange(flat.shape[0])
    change = np.empty(index.size)
    floor = 0.0
    if modality == "mr":  # background (noise around zero) has huge relative changes: leave it out
        init_all = np.concatenate([
            np.nan_to_num(flat[index[lo:lo + chunk], skip:skip + n_initial].astype(np.float64)).mean(axis=1)
            for lo in range(0, index.size, chunk)])
        floor = MR_BACKGROUND_FRACTION * float(np.percentile(init_all, 99.0))
    for lo in range(0, index.size, chunk):
        rows = np.nan_to_num(flat[index[lo:lo + chunk]].astype(np.float64))
        init = rows[:, skip:skip + n_initial].mean(axis=1, keepdims=True)
        if modality == "mr":
            ok = init[:, 0] > floor
            safe = np.where(init > 0, init, 1.0)
            rel = np.log(safe / np.maximum(rows, MR_CLAMP_FRACTION * safe))
            change[lo:lo + chunk] = np.where(ok, rel[:, skip:].max(axis=1), -np.inf)
        else:
            change[lo:lo + chunk] = (rows - init)[:, skip:].max(axis=1)
    n_keep = min(index.size, max(int(min_voxels), int(np.ceil(fraction * index.size))))
    top = index[np.argsort(-change, kind="stable")[:n_keep]]
    top.sort()
    return mean_curve(flat, np.isin(np.arange(flat.shape[0]), top)), n_keep


def detect_baseline(signal, times, *, modality, mask=None, skip_frames=None, n_initial=3,
                    sd_factor=3.0, peak_fraction=0.05, reference="earliest",
                    earliest_fraction=EARLIEST_FRACTION, margin_frames=MARGIN_FRAMES) -> BaselineInfo:
    """Bolus arrival and baseline frames (algorithm in the module docstring).

    ``reference`` "earliest" (default): provisional arrival from the earliest-enhancing voxels
    (``earliest_fraction`` of ``mask``), baseline ending ``margin_frames`` before the frame
    preceding it; "mean": arrival of the mean curve over ``mask``, no margin (the old method).
    """
    signal = np.asarray(signal)
    modality = check_modality(modality)
    times = check_times(times, signal.shape[-1])
    if reference == "mean":
        curve = mean_curve(signal, mask)
        return detect_baseline_curve(curve, modality=modality, skip_frames=skip_frames, n_initial=n_initial,
                                     sd_factor=sd_factor, peak_fraction=peak_fraction)
    if reference != "earliest":
        raise InputDataError(f"Unknown baseline reference {reference!r}: use 'earliest' or 'mean'.")
    early, n_voxels = earliest_enhancing_curve(signal, modality=modality, mask=mask, skip_frames=skip_frames,
                                               n_initial=n_initial, fraction=earliest_fraction)
    info = detect_baseline_curve(early, modality=modality, skip_frames=skip_frames, n_initial=n_initial,
                                 sd_factor=sd_factor, peak_fraction=peak_fraction,
                                 margin_frames=margin_frames)
    info.arrival_source = f"earliest-enhancing voxels ({n_voxels}, {100 * earliest_fraction:g} % of the mask)"
    info.global_curve = mean_curve(signal, mask)
    return info


def detect_baseline_curve(curve, *, modality, skip_frames=None, n_initial=3, sd_factor=3.0,
                          peak_fraction=0.05, margin_frames=0) -> BaselineInfo:
    """Baseline detection on one curve [T] (signal units; MR signal falls, CT rises); the
    baseline ends ``margin_frames`` before the frame preceding arrival (at least one frame)."""
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
    stop = max(skip + 1, bat - int(margin_frames))
    if stop - skip < 3:
        warnings.append(f"Only {stop - skip} baseline frames before bolus arrival (3 or more recommended).")
    return BaselineInfo(skip, stop, bat, warnings, curve, margin_frames=int(margin_frames),
                        provisional_arrival_index=bat)


def curve_arrival_index(curve, *, start=0, n_initial=3, sd_factor=3.0, peak_fraction=0.05):
    """Arrival frame of a concentration curve [T] (rising), searched from frame ``start`` with
    the rule of :func:`detect_baseline_curve`; None when it never departs."""
    curve = np.asarray(curve, dtype=float)
    start = int(start) if int(start) + n_initial < curve.size else 0
    info = detect_baseline_curve(curve, modality="ct", skip_frames=start, n_initial=n_initial,
                                 sd_factor=sd_factor, peak_fraction=peak_fraction)
    return info.bolus_arrival_index


def recut_baseline(baseline: BaselineInfo, aif_curve, *, margin_frames=MARGIN_FRAMES,
                   max_recut_frames=MAX_RECUT_FRAMES, allow_extend: bool = False) -> BaselineInfo:
    """Second pass of the baseline (PERFUSION.md §2.2 step 3): the AIF's own arrival, and a
    window cut back to ``AIF arrival − margin_frames`` when it reached later than that. A
    user-given window is never changed, nor one the AIF would cut by more than
    ``max_recut_frames`` before the provisional arrival (an "AIF" rising that early is motion or
    noise, not an artery: the window is kept, a warning says so, and the pre-bolus check and
    the screen then report it). ``allow_extend`` (the AIF passed the artery rules): a window
    that ends well before the artery's own arrival is extended to it — nothing perfused arrives
    before the arteries, so an earlier "earliest-enhancing" arrival was noise (measured: CT at
    8–10 HU noise put it at frame 4 of a bolus arriving at frame 17, leaving 3 baseline frames,
    an AIF 4–6 HU below zero before its bolus and a core 25 % low). Returns a new
    :class:`BaselineInfo` (``recut`` says whether ``stop`` moved); convert the signal again when
    it did."""
    arrival = curve_arrival_index(aif_curve, start=baseline.start)
    out = dataclasses.replace(baseline, warnings=list(baseline.warnings), aif_arrival_index=arrival)
    if arrival is None or baseline.user_given:
        return out
    provisional = baseline.provisional_arrival_index
    if provisional is not None and provisional - arrival > int(max_recut_frames):
        out.warnings.append(
            f"The AIF rises at frame {arrival}, {provisional - arrival} frames before the earliest-enhancing "
            f"voxels (frame {provisional}): the baseline was not cut back to it (motion or noise, not blood?).")
        return out
    stop = max(baseline.start + 1, arrival - int(margin_frames))
    extend = allow_extend and stop > baseline.stop + int(margin_frames)
    if extend:
        out.warnings.append(
            f"The baseline was extended from frames {baseline.start}–{baseline.stop - 1} to "
            f"{baseline.start}–{stop - 1}: the AIF (an artery) arrives at frame {arrival}, so the earlier "
            "provisional arrival was noise.")
    if extend or stop < baseline.stop:
        out.stop = stop
        out.recut = True
        out.bolus_arrival_index = arrival
        out.arrival_source = ("AIF (second pass; provisional arrival was noise)" if extend
                              else "AIF (second pass)")
        out.margin_frames = int(margin_frames)
        out.warnings = [w for w in out.warnings if not w.startswith("Only ")]
        if stop - baseline.start < 3:
            out.warnings.append(f"Only {stop - baseline.start} baseline frames before the AIF's arrival "
                                "(3 or more recommended).")
    return out


def aif_prebolus_check(aif_curve, baseline: BaselineInfo, *, floor_fraction=AIF_OFFSET_FLOOR_FRACTION) -> dict:
    """Is the converted AIF at zero before its bolus? (PERFUSION.md §2.2 step 4.)

    ``prebolus_mean``: mean of the AIF curve over frames ``baseline.start`` … its own arrival − 1
    (concentration units: 1/s for MR ΔR2*, HU for CT); ``threshold``: one noise SD (SD of the
    curve over those frames), at least ``floor_fraction`` × its peak; ``passed`` when
    |prebolus_mean| ≤ threshold. ``passed`` is None (not checkable) when the AIF has no
    arrival or fewer than 2 pre-bolus frames.
    """
    curve = np.asarray(aif_curve, dtype=float)
    arrival = curve_arrival_index(curve, start=baseline.start)
    peak = float(np.max(curve)) if curve.size else float("nan")
    out = {"aif_arrival_index": arrival, "frames": None, "prebolus_mean": None, "noise_sd": None,
           "threshold": None, "aif_peak": peak, "passed": None,
           "rule": (f"|mean of the AIF before its arrival| ≤ one noise SD (at least "
                    f"{100 * floor_fraction:g} % of the AIF peak)")}
    if arrival is None or arrival - baseline.start < 2:
        return out
    pre = curve[baseline.start:arrival]
    mean, sd = float(pre.mean()), float(pre.std(ddof=1))
    threshold = max(sd, floor_fraction * abs(peak)) if np.isfinite(peak) else sd
    out.update(frames=[int(baseline.start), int(arrival - 1)], prebolus_mean=mean, noise_sd=sd,
               threshold=float(threshold), passed=bool(abs(mean) <= threshold))
    return out


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
