"""Rigid motion correction of a 4D perfusion series (SimpleITK).

Every frame is registered to a reference: by default the mean of the pre-bolus frames (found
from the global curve, modality-agnostic: the first frame departing from the early baseline by
more than max(3·SD, 5 % of the largest change)), or a frame the caller chooses.

Registration: ``Euler3DTransform`` about the image centre, normalised-correlation metric
(insensitive to global intensity scaling; the bolus changes intensities locally, so the metric
is evaluated on the head only), regular-step gradient descent, two resolution levels
(shrink 2 → 1). Each frame starts from the previous frame's estimate (motion is continuous). Matrices above
96 voxels in-plane are registered on a shrunk copy; the correction is applied at full size.
Frames whose estimated motion is below 0.05 mm are left untouched (no interpolation blur).

The estimate is the head's motion: the rigid transform T with ``frame(T(p)) ≈ reference(p)``,
i.e. a point at p in the reference is found at T(p) in the frame. Translations (mm) and
rotations (degrees, about the right, anterior and superior axes) are reported in RAS.
Displacement per frame: the largest movement of points on a 50 mm sphere around the rotation
centre (the usual head radius of framewise-displacement measures; Power et al., NeuroImage
2012;59:2142).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import SimpleITK as sitk

from .errors import AnalysisCancelled, InputDataError
from .geometry import Geometry

HEAD_RADIUS_MM = 50.0
#: Estimates beyond these are treated as registration failures, not motion.
MAX_TRANSLATION_MM = 30.0
MAX_ROTATION_DEG = 20.0
#: Frames whose best correlation with the reference stays below this are failures.
MIN_CORRELATION = 0.5
#: Frames that moved less than this are left as acquired.
NEGLIGIBLE_MM = 0.05
#: In-plane matrix above which registration runs on a shrunk copy.
MAX_MATRIX = 96


@dataclass
class MotionTrace:
    """Estimated rigid head motion per frame relative to the reference.

    ``translations_mm`` [T, 3] (R, A, S); ``rotations_deg`` [T, 3] (about R, A, S axes);
    ``displacement_mm`` [T] (largest movement of a 50 mm-radius head); ``max_displacement_mm``;
    ``failed_frames`` frame indices that could not be registered (left uncorrected);
    ``reference`` how the reference was made; ``correlation`` [T] final similarity.
    """

    translations_mm: np.ndarray
    rotations_deg: np.ndarray
    displacement_mm: np.ndarray
    max_displacement_mm: float
    failed_frames: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    reference: str = ""
    correlation: np.ndarray | None = None
    warn_mm: float = 2.0
    corrected: bool = True

    def to_dict(self) -> dict:
        """JSON-ready summary (lists of floats, rounded to 0.01 mm / 0.01°)."""
        worst = int(np.argmax(self.displacement_mm)) if self.displacement_mm.size else None
        return {
            "corrected": bool(self.corrected),
            "reference": self.reference,
            "units": {"translations": "mm (R, A, S)", "rotations": "degrees (about R, A, S)",
                      "displacement": "mm (50 mm head radius)"},
            "translations_mm": np.round(self.translations_mm, 2).tolist(),
            "rotations_deg": np.round(self.rotations_deg, 2).tolist(),
            "displacement_mm": np.round(self.displacement_mm, 2).tolist(),
            "max_displacement_mm": round(float(self.max_displacement_mm), 2),
            "worst_frame": worst,
            "warn_threshold_mm": float(self.warn_mm),
            "failed_frames": [int(t) for t in self.failed_frames],
            "warnings": list(self.warnings),
        }


def baseline_frames(signal: np.ndarray, *, skip: int = 1) -> tuple[int, int]:
    """Pre-bolus frame range ``(start, stop)`` from the global curve of the brighter half of
    voxels (modality-agnostic: MR signal drops, CT rises)."""
    n_frames = signal.shape[-1]
    first = np.nan_to_num(signal[..., 0].astype(np.float64))
    head = first > np.mean(first)
    if not np.any(head):
        head = np.ones(first.shape, dtype=bool)
    curve = np.nan_to_num(signal[head].mean(axis=0, dtype=np.float64))
    start = min(skip, max(n_frames - 2, 0))
    early = curve[start:start + 3]
    deviation = np.abs(curve - early.mean())
    threshold = max(3.0 * early.std(), 0.05 * deviation.max(), 1e-12)
    later = np.nonzero(deviation[start + 3:] > threshold)[0]
    stop = start + 3 + int(later[0]) if later.size else n_frames
    stop = max(stop, start + 1)
    return start, min(stop, n_frames)


def _sphere_points(center: np.ndarray) -> np.ndarray:
    directions = np.array(
        [(x, y, z) for x in (-1, 0, 1) for y in (-1, 0, 1) for z in (-1, 0, 1) if (x, y, z) != (0, 0, 0)],
        dtype=float,
    )
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    return center + HEAD_RADIUS_MM * directions


def _displacement(transform: sitk.Euler3DTransform, points: np.ndarray) -> float:
    moved = np.array([transform.TransformPoint(tuple(p)) for p in points])
    return float(np.max(np.linalg.norm(moved - points, axis=1)))


def _head_mask(reference: sitk.Image) -> sitk.Image:
    mask = sitk.OtsuThreshold(reference, 0, 1)
    return sitk.BinaryDilate(mask, [2, 2, 1])


def correct_motion(
    signal,
    geometry: Geometry,
    times,
    *,
    reference_frame: int | None = None,
    warn_mm: float = 2.0,
    progress=None,
) -> tuple[np.ndarray, MotionTrace]:
    """Register every frame of ``signal`` [K, J, I, T] rigidly to a reference.

    Returns the corrected signal (float32, a new array; failed frames left as acquired and
    listed in the trace) and a :class:`MotionTrace`. ``reference_frame`` None: mean of the
    pre-bolus frames. ``warn_mm``: warn when a frame's displacement exceeds it.
    ``progress(fraction, message)`` returning False cancels (:class:`AnalysisCancelled`).
    """
    signal = np.asarray(signal)
    if signal.ndim != 4 or signal.shape[:3] != tuple(geometry.shape):
        raise InputDataError(
            f"Motion correction needs a 4D series [K, J, I, T] on its geometry {geometry.shape}; "
            f"got {signal.shape}."
        )
    n_frames = signal.shape[3]
    if np.asarray(times).shape != (n_frames,):
        raise InputDataError(f"{np.size(times)} frame times were given for {n_frames} frames.")
    finite = np.nan_to_num(signal.astype(np.float32, copy=False), nan=0.0, posinf=0.0, neginf=0.0)

    if reference_frame is None:
        start, stop = baseline_frames(finite)
        reference_array = finite[..., start:stop].mean(axis=-1)
        reference_text = f"mean of pre-bolus frames {start}-{stop - 1}"
    else:
        if not 0 <= int(reference_frame) < n_frames:
            raise InputDataError(
                f"Reference frame {reference_frame} is outside the series (0-{n_frames - 1})."
            )
        reference_array = finite[..., int(reference_frame)]
        reference_text = f"frame {int(reference_frame)}"
    reference = geometry.to_sitk(reference_array.astype(np.float32))
    # Large matrices are registered on an in-plane shrunk copy (≤ ~96 voxels) for speed.
    shrink = [max(1, int(np.ceil(n / MAX_MATRIX))) for n in reference.GetSize()[:2]] + [1]
    fixed = sitk.Shrink(reference, shrink) if max(shrink) > 1 else reference
    head = _head_mask(fixed)
    size = np.array(reference.GetSize(), dtype=float)
    center = np.array(reference.TransformContinuousIndexToPhysicalPoint(tuple((size - 1) / 2.0)))
    sphere = _sphere_points(center)

    registration = sitk.ImageRegistrationMethod()
    registration.SetMetricAsCorrelation()
    registration.SetMetricSamplingStrategy(registration.NONE)
    registration.SetMetricFixedMask(head)
    registration.SetInterpolator(sitk.sitkLinear)
    registration.SetOptimizerAsRegularStepGradientDescent(
        learningRate=0.25, minStep=1e-2, numberOfIterations=60, gradientMagnitudeTolerance=1e-8,
        relaxationFactor=0.5,
    )
    registration.SetOptimizerScalesFromPhysicalShift()
    registration.SetShrinkFactorsPerLevel([2, 1])
    registration.SetSmoothingSigmasPerLevel([1.0, 0.0])
    registration.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()

    translations = np.zeros((n_frames, 3))
    rotations = np.zeros((n_frames, 3))
    displacement = np.zeros(n_frames)
    correlation = np.full(n_frames, np.nan)
    failed: list[int] = []
    corrected = signal.astype(np.float32, copy=True)
    previous = sitk.Euler3DTransform()
    previous.SetCenter(tuple(center))

    for t in range(n_frames):
        if progress is not None and progress(t / n_frames, f"Motion correction, frame {t + 1}/{n_frames}") is False:
            raise AnalysisCancelled("Motion correction was cancelled.")
        moving = geometry.to_sitk(finite[..., t])
        initial = sitk.Euler3DTransform(previous)
        registration.SetInitialTransform(initial, inPlace=False)
        try:
            small = sitk.Shrink(moving, shrink) if max(shrink) > 1 else moving
            result = registration.Execute(fixed, small)
            transform = sitk.Euler3DTransform(sitk.CompositeTransform(result).GetNthTransform(0))
            metric = -float(registration.GetMetricValue())
        except RuntimeError:
            failed.append(t)
            continue
        params = np.array(transform.GetParameters())
        angles_deg = np.rad2deg(params[:3])
        if (
            not np.all(np.isfinite(params))
            or np.linalg.norm(params[3:]) > MAX_TRANSLATION_MM
            or np.max(np.abs(angles_deg)) > MAX_ROTATION_DEG
            or metric < MIN_CORRELATION
        ):
            failed.append(t)
            correlation[t] = metric
            continue
        correlation[t] = metric
        # LPS -> RAS: x and y flip; rotations about x and y change sign.
        translations[t] = params[3:] * np.array([-1.0, -1.0, 1.0])
        rotations[t] = angles_deg * np.array([-1.0, -1.0, 1.0])
        displacement[t] = _displacement(transform, sphere)
        previous = transform
        if displacement[t] >= NEGLIGIBLE_MM:
            resampler = sitk.ResampleImageFilter()
            resampler.SetReferenceImage(reference)
            resampler.SetTransform(transform)
            resampler.SetInterpolator(sitk.sitkLinear)
            resampler.SetUseNearestNeighborExtrapolator(True)
            corrected[..., t] = sitk.GetArrayFromImage(resampler.Execute(moving))
    if progress is not None:
        progress(1.0, "Motion correction done")

    warnings = []
    max_disp = float(displacement.max()) if n_frames else 0.0
    if max_disp > warn_mm:
        worst = int(np.argmax(displacement))
        warnings.append(
            f"Head motion up to {max_disp:.1f} mm (frame {worst}, t = {float(times[worst]):.1f} s) "
            f"exceeds {warn_mm:g} mm; it was corrected, but check the maps for motion artefacts."
        )
    if failed:
        warnings.append(
            f"{len(failed)} frame(s) could not be registered to the reference and are left "
            f"uncorrected: {', '.join(str(t) for t in failed[:20])}. Check them for severe "
            "motion; consider excluding the case or those frames."
        )
    trace = MotionTrace(
        translations_mm=translations,
        rotations_deg=rotations,
        displacement_mm=displacement,
        max_displacement_mm=max_disp,
        failed_frames=failed,
        warnings=warnings,
        reference=reference_text,
        correlation=correlation,
        warn_mm=float(warn_mm),
    )
    return corrected, trace
