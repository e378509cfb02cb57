"""Slice-timing correction: every slice's curves put on the volume's time grid.

A 2D multi-slice EPI or CT acquisition does not sample all slices of a volume at once: slice k
of frame n is acquired at ``times[n] + slice_times[k]`` (``slice_times`` s after the volume
onset, BIDS ``SliceTiming``), up to a TR later than the frame time. The AIF and the tissue
usually lie in different slices, so without correction Tmax carries a slice-dependent offset of
up to ±1 TR (the curve of a late slice looks early by its slice time).

Correction (Sladky et al., NeuroImage 2011, "Slice-timing effects and their correction in
functional MRI"): each slice's curves are resampled from their own time axis
``times + slice_times[k]`` to the frame times by linear interpolation; before the first sample of
a slice the first value is held (the baseline). Linear rather than sinc/spline interpolation: it
does not ring at the bolus front and needs no uniform sampling (variable-rate CTP).

Where the slice timing comes from (``series.metadata``): ``slice_timing_s`` (one value per
slice k of the [K, J, I] grid, s) and ``slice_timing_source``, filled by the DICOM reader
(Siemens CSA MosaicRefAcqTimes, per-frame acquisition times, GE RTIA_timer / TriggerTime) or
from the BIDS sidecar ``SliceTiming`` of a NIfTI (:func:`from_sidecar`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputDataError


@dataclass
class SliceTimingReport:
    """What the step did: ``applied``; ``source`` of the slice times; ``slice_times_s`` (one per
    slice); ``max_shift_s`` (largest resampling shift); ``reason`` when not applied;
    ``mean_abs_change`` (mean |Δsignal| over the series, signal units) as its effect."""

    applied: bool
    source: str | None = None
    slice_times_s: list = field(default_factory=list)
    max_shift_s: float = 0.0
    reason: str = ""
    mean_abs_change: float = 0.0

    def to_dict(self) -> dict:
        return {"applied": self.applied, "source": self.source, "slice_times_s": list(self.slice_times_s),
                "max_shift_s": round(float(self.max_shift_s), 6), "reason": self.reason,
                "mean_abs_change": round(float(self.mean_abs_change), 6)}


def from_sidecar(facts: dict, n_slices: int):
    """BIDS ``SliceTiming`` (s, one per slice along the NIfTI k axis) from a sidecar dict, or
    None when absent. Raises InputDataError when present but not ``n_slices`` finite numbers ≥ 0."""
    values = facts.get("SliceTiming") if isinstance(facts, dict) else None
    if values is None:
        return None
    if not isinstance(values, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                               for v in values):
        raise InputDataError(f"The sidecar's SliceTiming must be a list of numbers (s), not {values!r}.")
    times = np.asarray(values, dtype=float)
    if times.size != n_slices or not np.all(np.isfinite(times)) or np.any(times < 0):
        raise InputDataError(
            f"The sidecar's SliceTiming has {times.size} values for {n_slices} slices (or values that are "
            "not finite and ≥ 0 s); give one acquisition time per slice, in seconds."
        )
    return times


def sidecar_metadata(facts: dict, n_slices: int, warnings: list) -> dict:
    """BIDS SliceTiming of a NIfTI sidecar as the ``slice_timing_s`` / ``slice_timing_source``
    metadata :func:`slice_times_of` reads (reversed for SliceEncodingDirection ``k-``; a slice
    axis other than k is reported in ``warnings`` and not used)."""
    values = from_sidecar(facts, n_slices)
    if values is None:
        return {}
    direction = str(facts.get("SliceEncodingDirection", "k")).strip()
    if direction not in ("k", "k-"):
        warnings.append(f"The sidecar's SliceTiming runs along {direction!r}, not the slice axis k; it was not used.")
        return {}
    values = values[::-1] if direction == "k-" else values
    return {"slice_timing_s": [float(v) for v in values], "slice_timing_source": "BIDS sidecar SliceTiming"}


def slice_times_of(series):
    """(slice_times s [K], source) recorded for ``series``, or (None, reason)."""
    metadata = getattr(series, "metadata", None) or {}
    values = metadata.get("slice_timing_s")
    if values is None:
        return None, "the input does not record slice timing"
    times = np.asarray(values, dtype=float).ravel()
    return times, metadata.get("slice_timing_source") or "recorded"


def correct_slice_timing(signal: np.ndarray, times: np.ndarray, slice_times, *, source: str = ""):
    """Resample each slice k of ``signal [K, J, I, T]`` from ``times + slice_times[k]`` to
    ``times`` (s). Returns (corrected float32 signal, :class:`SliceTimingReport`). Slice times that
    do not fit the series (wrong count, negative, not finite, or not shorter than the shortest
    frame interval) leave the signal as it is, with the reason in the report."""
    times = np.asarray(times, dtype=float)
    n_slices = signal.shape[0]
    if slice_times is None:
        return signal, SliceTimingReport(False, source or None, reason=source or "no slice timing recorded")
    offsets = np.asarray(slice_times, dtype=float).ravel()
    interval = float(np.min(np.diff(times))) if times.size > 1 else 0.0
    problem = None
    if offsets.size != n_slices:
        problem = f"{offsets.size} slice times for {n_slices} slices"
    elif not np.all(np.isfinite(offsets)) or np.any(offsets < 0):
        problem = "slice times that are not finite and ≥ 0 s"
    elif times.size > 1 and np.max(offsets) >= interval:
        problem = (f"slice times up to {np.max(offsets):.3g} s, not shorter than the shortest frame interval "
                   f"{interval:.3g} s")
    if problem:
        return signal, SliceTimingReport(False, source, offsets.tolist(), reason=f"not applied: {problem}")
    if np.ptp(offsets) == 0:
        return signal, SliceTimingReport(False, source, offsets.tolist(),
                                         reason="all slices acquired together: nothing to correct")
    corrected = np.empty(signal.shape, dtype=np.float32)
    change = 0.0
    for k in range(n_slices):
        if offsets[k] == 0:
            corrected[k] = signal[k]
            continue
        sampled = times + offsets[k]  # when slice k was really acquired
        # Linear interpolation weights from the sampled axis to the frame times (held before the first sample).
        upper = np.clip(np.searchsorted(sampled, times, side="right"), 1, times.size - 1)
        lower = upper - 1
        weight = np.clip((times - sampled[lower]) / (sampled[upper] - sampled[lower]), 0.0, 1.0)
        data = np.asarray(signal[k], dtype=np.float32)
        corrected[k] = data[..., lower] * (1.0 - weight).astype(np.float32) + data[..., upper] * weight.astype(np.float32)
        change += float(np.sum(np.abs(corrected[k] - data), dtype=np.float64))
    report = SliceTimingReport(True, source, offsets.tolist(), max_shift_s=float(np.max(offsets)),
                               mean_abs_change=change / max(signal.size, 1))
    return corrected, report
