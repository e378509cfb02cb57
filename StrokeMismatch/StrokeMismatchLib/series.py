"""A 4D perfusion series as loaded from any source (NIfTI, NRRD sequence, DICOM, MRML)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .errors import InputDataError
from .geometry import Geometry

MODALITIES = ("mr", "ct")


def check_signal_dtype(signal: np.ndarray) -> None:
    """Refuse boolean, complex and non-numeric signal arrays (a perfusion signal is real)."""
    dtype = signal.dtype
    if dtype == bool or not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        kind = {"b": "boolean (a mask?)", "c": "complex (raw or phase data?)"}.get(dtype.kind, str(dtype))
        raise InputDataError(
            f"The perfusion signal must be real numbers (integer or float), not {kind} values. "
            "Give the magnitude (MR) or HU (CT) image series."
        )


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
        self.signal = np.asarray(self.signal)
        check_signal_dtype(self.signal)
        try:
            self.times = np.asarray(self.times, dtype=float)
        except (TypeError, ValueError):
            raise InputDataError("The frame times must be numbers (s), one per frame.") from None
        if not isinstance(self.geometry, Geometry):
            raise InputDataError("geometry must be a Geometry (IJK-to-RAS matrix and grid shape).")
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
