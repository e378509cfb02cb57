"""Frame times and slice timing of a DICOM perfusion series from its headers.

The planes of a series arrive sorted as ``grid[k][t]`` (slice k, frame t); each plane carries
candidate absolute times (s) from its headers (``plane.times``: acquisition date-time,
acquisition time, trigger time, content time) and, for Siemens mosaics, its slice's acquisition
offset in the volume (``plane.slice_time``, CSA MosaicRefAcqTimes).

Frame times (s, from the first frame): the first header source present on every plane decides.

- Per-plane times that increase from frame to frame: frame t starts at the earliest time of its
  slices (the volume onset, as BIDS), so unequal intervals (variable-rate CTP) are kept.
- One time for the whole series (GE classic EPI: every file has the same AcquisitionTime; the
  order is InstanceNumber / temporal position): frame t at ``t · TR``, TR from the headers
  (RepetitionTime, classic or the enhanced MR Timing functional group) or given by the user,
  as dcm2niix does. Without a TR the refusal says so and asks for ``--tr``.
- Times that repeat or go backwards otherwise: refused, naming the sources checked.

Slice timing (s after the volume onset, one value per slice k): CSA MosaicRefAcqTimes (Siemens
mosaic); the per-slice offsets of the per-plane times used for the frames (classic Siemens,
enhanced FrameAcquisitionDateTime of Siemens XA, any vendor recording one time per slice); GE
RTIA_timer (0021,105E) (per-frame offsets, as dcm2niix), else GE TriggerTime (0018,1060),
constant over frames, within the TR. None when the headers do not
record it (Philips classic, GE with one time per series and no TriggerTime).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputDataError, InputFileError

TIME_SOURCES = ("acquisition_datetime", "acquisition_time", "trigger_time", "content_time")
SOURCE_TAGS = {
    "acquisition_datetime": "AcquisitionDateTime / FrameAcquisitionDateTime",
    "acquisition_time": "AcquisitionTime",
    "trigger_time": "TriggerTime / NominalCardiacTriggerDelayTime",
    "content_time": "ContentTime / FrameReferenceDateTime",
}


@dataclass
class HeaderTiming:
    """Frame ``times`` (s from the first frame), their ``source`` key and human ``label``;
    ``slice_times`` (s after the volume onset, one per slice) and ``slice_source`` or None."""

    times: np.ndarray
    source: str
    label: str
    slice_times: np.ndarray | None = None
    slice_source: str | None = None


def _values(grid, source):
    values = [[plane.times.get(source) for plane in row] for row in grid]
    if any(v is None for row in values for v in row):
        return None
    values = np.asarray(values, dtype=float)
    if source in ("acquisition_time", "content_time") and values.size:
        # Midnight crossing for a time of day without a date.
        reference = values.flat[0]
        values = np.where(values < reference - 43200.0, values + 86400.0, values)
    return values


def frame_timing(grid, *, tr=None, tr_source=None, manufacturer="", modality="") -> HeaderTiming:
    """Frame times and slice timing of ``grid[k][t]`` (see the module docstring). ``tr`` in s
    (header or user), ``tr_source`` a short label for it ("RepetitionTime", "given")."""
    n_frames = len(grid[0])
    tried, constant = [], None
    for source in TIME_SOURCES:
        values = _values(grid, source)
        if values is None:
            continue
        onset = values.min(axis=0)
        times = onset - onset[0]
        if np.all(np.diff(times) > 0):
            offsets = np.median(values - onset[None, :], axis=1)
            timing = HeaderTiming(times, source, f"DICOM {SOURCE_TAGS[source]} (one per frame)")
            interval = float(np.min(np.diff(times))) if n_frames > 1 else np.inf
            if np.ptp(offsets) > 1e-4 and np.max(offsets) < interval:
                timing.slice_times = offsets - offsets.min()
                timing.slice_source = f"per-slice DICOM {SOURCE_TAGS[source]}"
            return _slice_timing(timing, grid, tr, manufacturer, modality)
        if not tried and np.all(np.ptp(values, axis=1) == 0):
            constant = source  # the first time source is the same for every frame: one per series
            break
        tried.append(source)
    if constant is not None or not tried:
        what = (f"one {SOURCE_TAGS[constant]} for the whole series" if constant is not None
                else "no per-frame times")
        if tr is None:
            raise InputFileError(
                f"The DICOM headers give {what} and no RepetitionTime, so the frame times are unknown. "
                "Give the time between frames (command line: --tr SECONDS)."
            )
        times = np.arange(n_frames) * float(tr)
        label = f"frame index × TR ({tr_source or 'RepetitionTime'} {float(tr):g} s; the headers give {what})"
        return _slice_timing(HeaderTiming(times, "index_tr", label), grid, tr, manufacturer, modality)
    raise InputDataError(
        "The frame times in the DICOM headers are not strictly increasing "
        f"(checked {', '.join(SOURCE_TAGS[t] for t in tried)}): frames repeat or are out "
        "of order. Check that the folder holds one complete acquisition, or convert the "
        "series to NIfTI with a sidecar listing the frame times."
    )


def _slice_timing(timing, grid, tr, manufacturer, modality):
    """Add the slice timing from the strongest source the headers carry."""
    slice_times = [[plane.slice_time for plane in row] for row in grid]
    if all(v is not None for row in slice_times for v in row):
        values = np.median(np.asarray(slice_times, dtype=float), axis=1)
        timing.slice_times = values - values.min()
        timing.slice_source = "Siemens CSA MosaicRefAcqTimes"
        return timing
    if timing.slice_times is not None:
        return timing
    rtia = _values(grid, "ge_rtia_timer")
    if rtia is not None and "GE" in manufacturer.upper():
        offsets = np.median(rtia - rtia.min(axis=0, keepdims=True), axis=1)
        if np.ptp(offsets) > 0 and (tr is None or offsets.max() < tr):
            timing.slice_times = offsets - offsets.min()
            timing.slice_source = "GE RTIA_timer (0021,105E)"
            return timing
    trigger = _values(grid, "trigger_time")
    if (trigger is not None and timing.source != "trigger_time" and "GE" in manufacturer.upper()
            and modality.upper() == "MR" and np.all(np.ptp(trigger, axis=1) == 0)):
        values = trigger[:, 0]
        if np.ptp(values) > 0 and values.min() >= 0 and (tr is None or values.max() < tr):
            timing.slice_times = values - values.min()
            timing.slice_source = "GE TriggerTime (0018,1060)"
    return timing
