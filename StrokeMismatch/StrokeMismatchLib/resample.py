"""Resampling between physical voxel grids with SimpleITK.

Images are placed in space by their :class:`~StrokeMismatchLib.geometry.Geometry` (spacing,
field of view and orientation may all differ). Values use linear interpolation with NaN-aware
normalisation (a voxel near the edge of valid data is the weighted mean of its valid
neighbours); masks use nearest neighbour. Target voxels that fall outside the source get
``fill`` (NaN for values, False for masks).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .errors import InputDataError
from .geometry import LPS_TO_RAS, Geometry

_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}


def _transform(target_to_source_ras: np.ndarray | None) -> sitk.Transform:
    """SimpleITK transform mapping target (output) LPS points to source LPS points."""
    if target_to_source_ras is None:
        return sitk.Transform(3, sitk.sitkIdentity)
    matrix = np.asarray(target_to_source_ras, dtype=float)
    lps = LPS_TO_RAS @ matrix @ LPS_TO_RAS  # LPS_TO_RAS is its own inverse
    transform = sitk.AffineTransform(3)
    transform.SetMatrix([float(x) for x in lps[:3, :3].ravel()])
    transform.SetTranslation([float(x) for x in lps[:3, 3]])
    return transform


def _resample(image: sitk.Image, target: Geometry, interpolator, transform, default: float
              ) -> np.ndarray:
    reference = sitk.Image([int(n) for n in target.shape[::-1]], image.GetPixelID())
    target.apply_to_sitk(reference)
    out = sitk.Resample(image, reference, transform, interpolator, default, image.GetPixelID())
    return sitk.GetArrayFromImage(out)


def overlap_fraction(source: Geometry, target: Geometry,
                     target_to_source_ras: np.ndarray | None = None) -> float:
    """Fraction of target voxels whose centre falls inside the source grid."""
    ones = np.ones(source.shape, dtype=np.uint8)
    inside = _resample(source.to_sitk(ones), target, sitk.sitkNearestNeighbor,
                       _transform(target_to_source_ras), 0)
    return float(inside.mean())


def resample_array(array: np.ndarray, source: Geometry, target: Geometry, *,
                   interpolation: str = "linear", target_to_source_ras: np.ndarray | None = None,
                   fill: float = np.nan, require_overlap: bool = True) -> np.ndarray:
    """Resample ``array`` (on ``source``) onto ``target``; returns a new array.

    ``interpolation`` "linear" (values, NaN-aware) or "nearest"; boolean arrays are always
    resampled by nearest neighbour and returned as bool (outside → False).
    ``target_to_source_ras``: optional 4×4 RAS transform applied to target points before
    sampling the source (e.g. a reflection across the mid-sagittal plane).
    Raises :class:`InputDataError` when the grids do not overlap at all.
    """
    array = np.asarray(array)
    if array.shape != source.shape:
        raise InputDataError(
            f"Array shape {array.shape} does not match its geometry's grid {source.shape}."
        )
    if interpolation not in _INTERPOLATORS:
        raise InputDataError(f"Unknown interpolation {interpolation!r}: use 'linear' or 'nearest'.")
    transform = _transform(target_to_source_ras)
    if require_overlap and overlap_fraction(source, target, target_to_source_ras) == 0.0:
        raise InputDataError(
            "The two images do not overlap in space (no voxel of one lies inside the other). "
            "Check that the ADC/DWI and the perfusion series belong to the same patient and "
            "session, and that their position information (origin, orientation) is intact."
        )
    if array.dtype == bool:
        out = _resample(source.to_sitk(array.astype(np.uint8)), target,
                        sitk.sitkNearestNeighbor, transform, 0)
        return out.astype(bool)
    values = array.astype(np.float64)
    valid = np.isfinite(values)
    if interpolation == "nearest" or valid.all():
        out = _resample(source.to_sitk(np.where(valid, values, np.nan)), target,
                        _INTERPOLATORS[interpolation], transform, float(fill))
        return out
    # NaN-aware linear interpolation: interpolate value·valid and valid, then divide.
    weighted = _resample(source.to_sitk(np.where(valid, values, 0.0)), target,
                         sitk.sitkLinear, transform, 0.0)
    weight = _resample(source.to_sitk(valid.astype(np.float64)), target, sitk.sitkLinear,
                       transform, 0.0)
    out = np.full(target.shape, fill, dtype=np.float64)
    ok = weight >= 0.5
    out[ok] = weighted[ok] / weight[ok]
    return out


def resample_mask(mask: np.ndarray, source: Geometry, target: Geometry, **kwargs) -> np.ndarray:
    """Nearest-neighbour resampling of a boolean mask (outside the source → False)."""
    return resample_array(np.asarray(mask, dtype=bool), source, target,
                          interpolation="nearest", **kwargs)
