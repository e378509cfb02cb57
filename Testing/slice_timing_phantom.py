"""An interleaved multi-slice acquisition of the volume phantom (test and benchmark helper).

Slice k of frame n is acquired at ``times[n] + slice_times[k]``: the phantom is simulated once
per distinct slice time (its curves are analytic, so each slice is sampled exactly at its own
acquisition times) and slice k is taken from the simulation at its own times. The series is
labelled with the frame times only, as a scanner's volumes are, and carries the slice timing in
its metadata as the readers record it.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from StrokeMismatchLib.phantom.volume import default_times, make_volume_phantom


def interleaved_slice_times(n_slices: int, tr: float) -> np.ndarray:
    """Slice times (s) of an interleaved ascending acquisition: even slices first, then odd."""
    order = list(range(0, n_slices, 2)) + list(range(1, n_slices, 2))
    times = np.empty(n_slices)
    for position, k in enumerate(order):
        times[k] = position * tr / n_slices
    return times


def interleaved_phantom(modality="mr", *, seed=0, shape=(8, 48, 48), **kwargs):
    """(phantom with truth, series acquired slice by slice with interleaved slice timing)."""
    times = default_times(modality)
    tr = float(np.median(np.diff(times)))
    slice_times = interleaved_slice_times(shape[0], tr)
    reference = make_volume_phantom(modality, seed=seed, shape=shape, times=times, **kwargs)
    signal = np.empty_like(reference.series.signal)
    for offset in np.unique(slice_times):
        shifted = make_volume_phantom(modality, seed=seed, shape=shape, times=times + offset, **kwargs)
        for k in np.flatnonzero(slice_times == offset):
            signal[k] = shifted.series.signal[k]
    metadata = dict(reference.series.metadata)
    metadata.update(slice_timing_s=slice_times.tolist(), slice_timing_source="simulated interleaved acquisition")
    series = dataclasses.replace(reference.series, signal=signal, metadata=metadata)
    return reference, series
