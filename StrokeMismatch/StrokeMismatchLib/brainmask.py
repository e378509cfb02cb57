"""Automatic brain mask from the pre-bolus (baseline) image; the user may replace it.

- MR (DSC): Otsu threshold of the lightly smoothed baseline signal (background is dark), a small
  opening to cut thin bridges to scalp, the largest connected component, holes filled.
- CT: HU window for brain tissue and CSF (−15…100 HU), restricted to the intracranial space
  enclosed by the skull (> 300 HU, holes filled slice by slice) when a skull is visible, so
  scalp and the table are dropped; then an erosion, the largest component, a dilation back
  and hole filling.

All steps are SimpleITK filters on the physical grid (radii in mm → voxels per axis).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .errors import InputDataError
from .geometry import Geometry

CT_BRAIN_HU = (-15.0, 100.0)
CT_BONE_HU = 300.0
#: Smallest plausible brain mask in mL; smaller means the automatic mask failed.
MIN_BRAIN_ML = 5.0


def _radius(geometry: Geometry, mm: float) -> list[int]:
    """Kernel radius in voxels (i, j, k) for ``mm``, at least 1 in-plane, ≥ 0 through-plane."""
    spacing = geometry.spacing
    radius = [max(1, int(round(mm / spacing[0]))), max(1, int(round(mm / spacing[1]))),
              int(round(mm / spacing[2]))]
    return [int(r) for r in radius]


def _largest_component(mask: sitk.Image) -> sitk.Image:
    labels = sitk.RelabelComponent(sitk.ConnectedComponent(mask), sortByObjectSize=True)
    return sitk.Cast(labels == 1, sitk.sitkUInt8)


def _fill_holes_slicewise(mask: np.ndarray) -> np.ndarray:
    """Fill holes in 3D and in every axial slice (ventricles, sulci open at one end in 3D)."""
    filled = sitk.GetArrayFromImage(sitk.BinaryFillhole(sitk.GetImageFromArray(mask.astype(np.uint8))))
    out = filled.astype(bool)
    for k in range(mask.shape[0]):  # loop over slices only (K ≲ 300), not voxels
        out[k] |= sitk.GetArrayFromImage(
            sitk.BinaryFillhole(sitk.GetImageFromArray(out[k].astype(np.uint8)))
        ).astype(bool)
    return out


def auto_brain_mask(baseline_image, geometry: Geometry, *, modality) -> np.ndarray:
    """Brain mask (bool ``[K, J, I]``) from ``baseline_image`` (pre-bolus mean; MR a.u., CT HU)."""
    image = np.asarray(baseline_image, dtype=np.float32)
    if image.shape != tuple(geometry.shape):
        raise InputDataError(
            f"The baseline image {image.shape} does not match the series grid {geometry.shape}."
        )
    if modality not in ("mr", "ct"):
        raise InputDataError(f"Unknown modality {modality!r} for the brain mask: use 'mr' or 'ct'.")
    finite = np.isfinite(image)
    if not np.any(finite):
        raise InputDataError("The baseline image has no finite values; no brain mask can be made.")
    image = np.where(finite, image, np.nanmin(image[finite]))
    itk = geometry.to_sitk(image)

    if modality == "mr":
        sigma = float(np.min(geometry.spacing))
        if min(itk.GetSize()) >= 4:
            smooth = sitk.SmoothingRecursiveGaussian(itk, sigma)
        else:  # the recursive filter needs ≥ 4 voxels per axis (an MR slab of 1–3 slices)
            smooth = sitk.DiscreteGaussian(itk, variance=sigma ** 2, useImageSpacing=True)
        otsu = sitk.OtsuThresholdImageFilter()
        otsu.SetInsideValue(0)
        otsu.SetOutsideValue(1)
        mask = otsu.Execute(smooth)
        # Smoothing spreads the head into the background: keep voxels that are bright themselves.
        bright = sitk.Cast(itk > 0.5 * otsu.GetThreshold(), sitk.sitkUInt8)
        mask = sitk.BinaryMorphologicalOpening(sitk.And(mask, bright), _radius(geometry, 2.0))
        mask = _largest_component(mask)
    else:
        low, high = CT_BRAIN_HU
        smooth = sitk.Median(itk, [1, 1, 0])
        values = sitk.GetArrayFromImage(smooth)
        candidate = (values >= low) & (values <= high)
        bone = image > CT_BONE_HU
        if bone.sum() > 0.005 * bone.size:
            closed = sitk.GetArrayFromImage(
                sitk.BinaryMorphologicalClosing(
                    sitk.GetImageFromArray(bone.astype(np.uint8)), _radius(geometry, 2.0)
                )
            ).astype(bool)
            intracranial = _fill_holes_slicewise(closed) & ~closed
            # A skull ring cut by the field of view encloses nothing: do not restrict there.
            open_ring = ~intracranial.any(axis=(1, 2))
            intracranial[open_ring] = ~closed[open_ring]
            if intracranial.sum() * geometry.voxel_volume_ml >= MIN_BRAIN_ML:
                candidate &= intracranial
        mask = sitk.GetImageFromArray(candidate.astype(np.uint8))
        mask.CopyInformation(itk)
        radius = _radius(geometry, 2.0)
        mask = _largest_component(sitk.BinaryErode(mask, radius))
        mask = sitk.BinaryDilate(mask, radius)
        mask_array = sitk.GetArrayFromImage(mask).astype(bool) & candidate
        mask = sitk.GetImageFromArray(mask_array.astype(np.uint8))
    result = _fill_holes_slicewise(sitk.GetArrayFromImage(mask).astype(bool))
    if result.sum() * geometry.voxel_volume_ml < MIN_BRAIN_ML:
        raise InputDataError(
            f"The automatic brain mask found only {result.sum() * geometry.voxel_volume_ml:.1f} mL "
            "of brain. Check the modality and the series, or give a brain mask (--mask)."
        )
    return result
