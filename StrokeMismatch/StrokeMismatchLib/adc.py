"""ADC unit detection and conversion to 10⁻⁶ mm²/s (the library's internal unit).

ADC files come as 10⁻⁶ mm²/s (normal brain ≈ 700–900), 10⁻³ mm²/s (≈ 0.8) or mm²/s
(≈ 0.0008) (PERFUSION.md §8). The unit is detected from the median of brain tissue (positive,
finite voxels inside the mask), or taken from an explicit ``unit`` given by the user; the
result always says which unit was used and whether it was assumed or given.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputDataError

#: Canonical unit names and their factor to 10⁻⁶ mm²/s.
UNIT_FACTORS = {
    "1e-6 mm2/s": 1.0,
    "1e-3 mm2/s": 1.0e3,
    "mm2/s": 1.0e6,
}

#: Accepted spellings of each unit.
_ALIASES = {
    "1e-6 mm2/s": ("1e-6 mm2/s", "1e-6", "10^-6 mm2/s", "10-6 mm2/s", "um2/s", "µm2/s",
                   "µm²/s", "10⁻⁶ mm²/s", "micro", "x1e-6"),
    "1e-3 mm2/s": ("1e-3 mm2/s", "1e-3", "10^-3 mm2/s", "10-3 mm2/s", "10⁻³ mm²/s", "milli",
                   "x1e-3"),
    "mm2/s": ("mm2/s", "mm²/s", "mm^2/s", "1"),
}

#: Plausible median ADC of brain tissue (10⁻⁶ mm²/s). Normal parenchyma ≈ 700–900; a whole
#: brain including CSF or a large infarct stays inside this wide band.
PLAUSIBLE_MEDIAN = (250.0, 3500.0)


@dataclass(frozen=True)
class AdcUnitInfo:
    """Which unit an ADC image was read in.

    ``unit`` canonical name; ``factor`` multiplies the input into 10⁻⁶ mm²/s; ``detected``
    True when inferred from the values, False when given; ``input_median`` brain median in the
    input's unit; ``message`` a sentence for the report.
    """

    unit: str
    factor: float
    detected: bool
    input_median: float | None
    message: str

    def to_dict(self) -> dict:
        return {
            "unit": self.unit,
            "factor_to_1e-6_mm2_per_s": self.factor,
            "detected": self.detected,
            "input_median": self.input_median,
            "message": self.message,
        }


def canonical_unit(unit: str) -> str:
    """Canonical name of an ADC ``unit`` spelling, or raise :class:`InputDataError`."""
    key = str(unit).strip().lower().replace(" ", "").replace("²", "2").replace("⁻", "-")
    for name, aliases in _ALIASES.items():
        for alias in aliases:
            if key == alias.lower().replace(" ", "").replace("²", "2").replace("⁻", "-"):
                return name
    raise InputDataError(
        f"Unknown ADC unit {unit!r}. Use one of: '1e-6 mm2/s', '1e-3 mm2/s' or 'mm2/s'."
    )


def _brain_median(adc: np.ndarray, mask: np.ndarray | None) -> float:
    values = np.asarray(adc, dtype=float)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != values.shape:
            raise InputDataError(
                f"The ADC mask has shape {mask.shape} but the ADC image has {values.shape}."
            )
        values = values[mask]
    values = values[np.isfinite(values) & (values > 0)]
    if values.size == 0:
        raise InputDataError(
            "The ADC image has no positive finite values in the brain: check that the right "
            "image was loaded as ADC."
        )
    return float(np.median(values))


def detect_adc_unit(adc: np.ndarray, mask: np.ndarray | None = None) -> AdcUnitInfo:
    """Infer the unit of ``adc`` from the median of its positive values (inside ``mask``).

    Raises :class:`InputDataError` when the median fits none of the three units.
    """
    median = _brain_median(adc, mask)
    low, high = PLAUSIBLE_MEDIAN
    for name, factor in UNIT_FACTORS.items():
        if low <= median * factor <= high:
            return AdcUnitInfo(
                name, factor, True, median,
                f"ADC unit assumed to be {name} (brain median {median:.4g} in the file's unit, "
                f"{median * factor:.0f} ×10⁻⁶ mm²/s). Give the unit explicitly if this is wrong.",
            )
    raise InputDataError(
        f"Cannot tell the ADC unit: the brain median is {median:.4g}, which fits none of "
        "10⁻⁶ mm²/s (≈ 700–900), 10⁻³ mm²/s (≈ 0.8) or mm²/s (≈ 0.0008). Check that the image "
        "is an ADC map (not a DWI or b0 image) or give its unit explicitly."
    )


def adc_to_micro(adc: np.ndarray, unit: str | None = None, mask: np.ndarray | None = None
                 ) -> tuple[np.ndarray, AdcUnitInfo]:
    """Return ``(adc in 10⁻⁶ mm²/s as float32, AdcUnitInfo)``; ``unit`` None → detect.

    Zero or negative values (background, failed fits) become NaN so that they neither count
    as core nor leak into tissue when the map is interpolated. A copy is always returned; the
    input is not modified.
    """
    adc = np.asarray(adc)
    if adc.ndim != 3:
        raise InputDataError(f"The ADC map must be a 3D image; got shape {adc.shape}.")
    if unit is None:
        info = detect_adc_unit(adc, mask)
    else:
        name = canonical_unit(unit)
        factor = UNIT_FACTORS[name]
        try:
            median = _brain_median(adc, mask)
        except InputDataError:
            median = None
        message = f"ADC unit given as {name}."
        if median is not None:
            low, high = PLAUSIBLE_MEDIAN
            if not low <= median * factor <= high:
                message += (
                    f" Warning: the brain median becomes {median * factor:.4g} ×10⁻⁶ mm²/s, "
                    "outside the usual range; check the unit."
                )
        info = AdcUnitInfo(name, factor, False, median, message)
    values = adc.astype(np.float64) * info.factor
    with np.errstate(invalid="ignore"):
        values[~(values > 0)] = np.nan
    return values.astype(np.float32), info
