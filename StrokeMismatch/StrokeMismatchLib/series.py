"""A 4D perfusion series as loaded from any source (NIfTI, NRRD sequence, DICOM, MRML)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputDataError
from .geometry import Geometry

MODALITIES = ("mr", "ct")


@dataclass
class PerfusionSeries:
    """Signal ``[K, J, I, T]`` with frame ``times`` (s, strictly increasing, need not be uniform).

    ``modality`` "mr" or "ct" (None when the source does not say); ``te`` and ``tr`` in s;
    ``source`` a short description of where it came from; ``metadata`` free-form facts kept for
    the report (e.g. series description, vendor).
    """

    signal: np.ndarray
    times: np.ndarray
    geometry: Geometry
    modality: str | None = None
    te: float | None = None
    tr: float | None = None
    source: str = ""
    metadata: dict = field(default_factory=dict)

    def __post_init__(self):
        self.times = np.asarray(self.times, dtype=float)
        if self.signal.ndim != 4:
            raise InputDataError(
                f"A perfusion series must be 4D [K, J, I, T]; got shape {self.signal.shape}. "
                "Load the dynamic (time-resolved) series, not a single 3D volume."
            )
        if self.signal.shape[:3] != self.geometry.shape:
            raise InputDataError(
                f"Signal grid {self.signal.shape[:3]} does not match its geometry {self.geometry.shape}."
            )
        if self.times.shape != (self.signal.shape[3],):
            raise InputDataError(
                f"{self.times.size} frame times were given for {self.signal.shape[3]} frames."
            )
        if self.modality is not None and self.modality not in MODALITIES:
            raise InputDataError(f"Unknown modality {self.modality!r}: use 'mr' or 'ct'.")
