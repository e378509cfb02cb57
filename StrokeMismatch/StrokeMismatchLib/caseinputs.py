"""One case's input files, read as ``stroke-mismatch analyze`` reads them (``cohort`` too).

:func:`read_case_inputs`: the perfusion series (NIfTI + sidecar, ``.seq.nrrd`` or a DICOM
folder), the ADC (a map, or computed from a DWI b0/b pair) and an optional brain mask on the
perfusion grid; the library's own errors for anything wrong.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from .errors import InputDataError, InputFileError


class CaseInputs(NamedTuple):
    """What one case reads from disk: the series, the ADC (array, geometry, unit) and a mask."""

    series: object
    adc: object = None
    adc_geometry: object = None
    adc_unit: str | None = None
    brain_mask: object = None


def read_case_inputs(perfusion, *, series_id=None, modality=None, tr=None, te=None, diffusion=None,
                     dwi_b0=None, dwi_b=None, b_value=1000.0, adc_unit=None, brain_mask=None,
                     force_modality=False) -> CaseInputs:
    """Read one case's inputs as ``analyze`` does (``cohort`` runs each case through this too):
    the perfusion series (``tr``, ``te`` in s; ``force_modality``: analyse as ``modality`` even
    when the file says otherwise), the ADC from ``diffusion`` or a DWI pair (``b_value`` s/mm²),
    and a brain mask on the perfusion grid. Raises the library's errors."""
    from .fileio import read_perfusion, read_volume

    path = Path(perfusion)
    if not path.exists():
        raise InputFileError(f"The perfusion input {path} does not exist.")
    if series_id is not None and not (path.is_dir() or path.name.lower().endswith(".dcm")):
        raise InputDataError(
            f"--series chooses a series in a DICOM folder, but {path.name} is a single file: "
            "remove --series, or give the DICOM folder with --perfusion."
        )
    if force_modality and modality is None:
        raise InputDataError("--force-modality needs --modality mr|ct (the modality to analyse as).")
    series = read_perfusion(path, modality=modality, tr=tr, te=te, series=series_id, force_modality=force_modality)
    adc, adc_geometry, adc_unit = _read_adc(diffusion, dwi_b0, dwi_b, b_value, adc_unit, read_volume)
    mask = None
    if brain_mask:
        mask_array, mask_geometry = _read_3d(read_volume, brain_mask, "brain mask")
        if not mask_geometry.same_grid(series.geometry, tolerance_mm=0.01):
            raise InputDataError(
                f"The brain mask {brain_mask} is not on the perfusion grid "
                f"({mask_geometry.shape} vs {series.geometry.shape}): resample it first."
            )
        mask = mask_array > 0
    return CaseInputs(series, adc, adc_geometry, adc_unit, mask)


def _read_adc(diffusion, dwi_b0, dwi_b, b_value, adc_unit, read_volume):
    """ADC (array, geometry, unit) from --diffusion, or computed from a --dwi-b0/--dwi-b pair."""
    pair = (dwi_b0, dwi_b)
    if diffusion and any(pair):
        raise InputDataError("Give either --diffusion (an ADC map) or --dwi-b0 with --dwi-b, not both.")
    if diffusion:
        adc, geometry = _read_3d(read_volume, diffusion, "ADC map")
        return adc, geometry, adc_unit
    if not any(pair):
        return None, None, adc_unit
    if not all(pair):
        raise InputDataError("Computing the ADC needs both DWI images: --dwi-b0 PATH and --dwi-b PATH.")
    from .dwi import adc_from_dwi

    b0, b0_geometry = _read_3d(read_volume, dwi_b0, "b0 image")
    weighted, weighted_geometry = _read_3d(read_volume, dwi_b, "diffusion-weighted image")
    if not b0_geometry.same_grid(weighted_geometry, tolerance_mm=0.01):
        raise InputDataError(
            f"{dwi_b0} and {dwi_b} are not on the same grid: give the b0 and b-{b_value:g} "
            "images of one DWI acquisition."
        )
    return adc_from_dwi(b0, weighted, b_value), b0_geometry, "1e-6"


def _read_3d(read_volume, path, what):
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"The {what} {path} does not exist.")
    volume = read_volume(path)
    if isinstance(volume, tuple):
        array, geometry = volume[0], volume[1]
    else:
        array, geometry = volume.array, volume.geometry
    return array, geometry
