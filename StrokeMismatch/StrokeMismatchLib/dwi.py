"""ADC from a diffusion-weighted b0 / b-high pair.

Mono-exponential decay S_b = S_0 · exp(−b · ADC) gives ADC = ln(S_0 / S_b) / b (Le Bihan et al.,
Radiology 1986;161:401). With b in s/mm², ADC is in mm²/s; we return 10⁻⁶ mm²/s (× 10⁶), the
library's internal ADC unit.
"""

from __future__ import annotations

import numpy as np

from .errors import InputDataError

#: Upper bound of the result in 10⁻⁶ mm²/s (free water at 37 °C is ≈ 3000).
ADC_MAX = 5000.0


def adc_from_dwi(b0, b_high, b_value) -> np.ndarray:
    """ADC (10⁻⁶ mm²/s, float32) from a b = 0 image ``b0`` and a b = ``b_value`` (s/mm²) image.

    Guards: where S_0 ≤ 0 or either signal is not finite the ADC is NaN (no tissue signal);
    where S_b ≤ 0 but S_0 > 0 (signal lost in noise) it is ``ADC_MAX``; results are clipped
    to [0, ``ADC_MAX``] (S_b > S_0 from noise gives 0). Inputs are not modified.
    """
    b0 = np.asarray(b0, dtype=float)
    b_high = np.asarray(b_high, dtype=float)
    if b0.shape != b_high.shape:
        raise InputDataError(
            f"The b0 image {b0.shape} and the diffusion-weighted image {b_high.shape} have "
            "different grids; give the two images of one DWI acquisition."
        )
    if b0.ndim != 3:
        raise InputDataError(f"DWI images must be 3D; got {b0.ndim}D. Give one b0 and one b-high volume.")
    try:
        b_value = float(b_value)
    except (TypeError, ValueError):
        raise InputDataError(f"The b-value must be a number in s/mm² (e.g. 1000), not {b_value!r}.") from None
    if not np.isfinite(b_value) or b_value < 50.0:
        raise InputDataError(
            f"b-value {b_value} is not usable: give the high b-value in s/mm² (typically 1000)."
        )
    valid = np.isfinite(b0) & np.isfinite(b_high) & (b0 > 0)
    if not np.any(valid):
        raise InputDataError("The b0 image has no positive signal; check that it is the b = 0 image.")
    lost = valid & (b_high <= 0)
    ratio = np.where(valid & ~lost, b0, 1.0) / np.where(valid & ~lost, b_high, 1.0)
    adc = np.log(ratio) / b_value * 1e6
    adc = np.clip(adc, 0.0, ADC_MAX)
    adc[lost] = ADC_MAX
    adc[~valid] = np.nan
    return adc.astype(np.float32)
