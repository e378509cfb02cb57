"""The sample case of the Slicer module, built on the spot from the digital phantom.

No download: *Sample Data → Stroke perfusion* and the module's self-test call
``StrokeMismatch.loadSampleCase``, which makes the series (and the ADC for MR) with
:func:`make_sample_case` and puts them in the scene. ``scripts/make_sample_data.py`` writes the
same case to files (``.seq.nrrd`` + ADC ``.nrrd``) for the command line.

Pure numpy (no ``slicer`` import). Research and teaching software; not a medical device.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .geometry import Geometry
from .phantom.volume import make_volume_phantom
from .series import PerfusionSeries

#: Phantom parameters per modality, lesion in the left hemisphere (shown on the right of the image
#: in Slicer's radiological axial view), fixed noise seed, 60 frames. MR: 12 slices of 48 × 48
#: voxels of 2.4 × 2.4 × 5 mm, TE 30 ms, SNR 20. CT: the demo's phantom (16 slices of 64 × 64
#: voxels of 1.8 × 1.8 × 5 mm, 3 HU noise): the CT core (rCBF) needs the finer grid.
SAMPLE_CASES = {
    "mr": {"modality": "mr", "shape": (12, 48, 48), "spacing": (2.4, 2.4, 5.0), "seed": 0, "snr": 20.0,
           "te": 0.03, "lesion_side": "left",
           # the phantom's former vessel radius (0.75 × the voxel diagonal): the case published so far
           "vessel_radius_mm": 0.75 * 2.4 * 2 ** 0.5},
    "ct": {"modality": "ct", "seed": 0, "noise_hu": 3.0, "lesion_side": "left"},
}
#: Sample name (Sample Data module) per modality.
SAMPLE_NAMES = {"mr": "StrokeMismatchPhantomMR", "ct": "StrokeMismatchPhantomCT"}


@dataclass
class SampleCase:
    """``series`` (signal rounded to whole numbers, as a scanner stores it, float32
    [K, J, I, T]); ``adc`` [K, J, I] in 10⁻⁶ mm²/s on ``adc_geometry`` (MR only, else None);
    ``truth_ml`` the phantom's true core, hypoperfusion (Tmax > 6 s) and penumbra volumes."""

    name: str
    series: PerfusionSeries
    adc: np.ndarray | None
    adc_geometry: Geometry | None
    truth_ml: dict


def make_sample_case(modality: str = "mr") -> SampleCase:
    """The sample case for ``modality`` ("mr" or "ct"), identical on every call."""
    modality = str(modality).lower()
    if modality not in SAMPLE_CASES:
        raise ValueError(f"No sample case for modality {modality!r}: choose 'mr' or 'ct'.")
    parameters = dict(SAMPLE_CASES[modality])
    phantom = make_volume_phantom(parameters.pop("modality"), **parameters)
    source = phantom.series
    signal = np.rint(source.signal).astype(np.float32)
    series = PerfusionSeries(signal=signal, times=np.asarray(source.times, dtype=float),
                             geometry=source.geometry, modality=modality, te=source.te, tr=source.tr,
                             source=f"StrokeMismatch sample phantom ({modality.upper()})")
    adc = None if phantom.adc is None else np.clip(np.rint(phantom.adc), 0, None).astype(np.float32)
    volumes = phantom.volumes_ml
    truth = {key: round(float(volumes[f"{key}_ml"]), 3) for key in ("core", "hypoperfusion", "penumbra")}
    return SampleCase(SAMPLE_NAMES[modality], series, adc, phantom.adc_geometry if adc is not None else None,
                      truth)
