"""Input validation of a perfusion series: one place, run once per analysis.

:func:`validate_series` is what every reader ends with and what :func:`pipeline.run_case`
starts with. Its result is remembered on the series (keyed by the signal buffer, times, grid,
modality, TE and TR), so a series read from a file and then analysed is checked once; a series
whose facts change (another modality, TE, times…) is checked again. In-place edits of the signal
array after validation are not detected: build a new :class:`PerfusionSeries` instead.

Plausibility limits (each refusal names the value found and what to do):

* frame interval (median step of the frame times): 0.1–5 s. DSC-MR is acquired with a TR of
  about 1–2 s (0.3–3 s with multiband or segmented EPI); CT perfusion at 0.5–3 s per frame
  (variable-rate protocols slow down to 3–5 s only in the late phase, which the median ignores).
  A median step of 100–5000 is frame times in ms, 15 s is a TR ×10 typing error.
* voxel size 0.1–20 mm per axis, field of view ≤ 600 mm along every axis: a head is
  100–250 mm across, imaged with 0.2–10 mm voxels (CT perfusion slabs up to 10 mm thick).
  A NIfTI whose ``xyzt_units`` say metres or microns for millimetre values comes out 1000×
  off, which gives volumes of 10¹⁰ mL or a grid of billions of voxels.
"""

from __future__ import annotations

import numpy as np

from .errors import InputDataError
from .series import MODALITIES, PerfusionSeries, check_signal_dtype

MIN_FRAMES = 10
# Plausible median frame interval (s) of DSC-MR and CT perfusion (see the module docstring).
FRAME_INTERVAL_RANGE_S = (0.1, 5.0)
# Plausible voxel size per axis (mm) and largest field of view along an axis (mm) for a head.
VOXEL_SIZE_RANGE_MM = (0.1, 20.0)
MAX_FIELD_OF_VIEW_MM = 600.0

# Foreground of the mean image: |mean| above this fraction of its 99th percentile.
FOREGROUND_FRACTION = 0.1
# MR: refuse when more than this fraction of the foreground samples (voxel × frame) is ≤ 0.
MR_NONPOSITIVE_LIMIT = 0.01
# "No change over time": largest temporal range ≤ this fraction of the largest |signal|.
CONSTANT_TOLERANCE = 1e-6
# CT content check: a CT image of a head holds air (about −1000 HU) or fat (about −100 HU);
# a series declared CT whose lowest value is above this and whose head signal *drops* during the
# bolus (the T2* effect of DSC-MR; iodine only raises HU) is refused as MR signal.
CT_AIR_HU = -100.0
# The drop must exceed the rise by this factor and the frame-to-frame noise of the head mean
# curve by this factor.
BOLUS_DIRECTION_RATIO = 3.0
BOLUS_NOISE_FACTOR = 8.0

_CACHE_ATTRIBUTE = "_validation_cache"


def check_voxel_size(spacing_mm, shape, what: str = "image") -> None:
    """Refuse a grid whose voxel size or field of view cannot be a head (see the module docstring).

    ``spacing_mm`` along i, j, k; ``shape`` (K, J, I). Call it on the header, before the voxel
    data are loaded: a 1000× wrong unit would otherwise allocate gigabytes or report 10¹⁰ mL."""
    spacing = np.asarray(spacing_mm, dtype=float)[:3]
    counts = np.asarray(tuple(shape)[:3][::-1], dtype=float)  # voxels along i, j, k
    low, high = VOXEL_SIZE_RANGE_MM
    size_text = " × ".join(f"{s:.4g}" for s in spacing)
    if not np.all(np.isfinite(spacing)) or np.any(spacing < low) or np.any(spacing > high):
        hint = ""
        if np.all(spacing / 1000.0 >= low) and np.all(spacing / 1000.0 <= high):
            hint = " (1000× too large: the file's units are probably metres, or mm values labelled as metres)"
        elif np.all(spacing * 1000.0 >= low) and np.all(spacing * 1000.0 <= high):
            hint = " (1000× too small: the file's units are probably microns, or mm values labelled as microns)"
        raise InputDataError(
            f"The {what} has voxels of {size_text} mm{hint}; a head image has voxels of "
            f"{low:g}–{high:g} mm. Fix the voxel size or its unit in the header (NIfTI xyzt_units, "
            "NRRD space directions) and retry."
        )
    extent = spacing * counts
    if np.any(extent > MAX_FIELD_OF_VIEW_MM):
        raise InputDataError(
            f"The {what} spans {' × '.join(f'{e:.4g}' for e in extent)} mm ({size_text} mm voxels); "
            f"a head is 100–250 mm across and no field of view exceeds {MAX_FIELD_OF_VIEW_MM:g} mm. "
            "Check the voxel size and its unit in the header."
        )


def check_frame_times(times) -> np.ndarray:
    """Refuse frame times (s) that are not finite, not strictly increasing, or whose median
    interval lies outside ``FRAME_INTERVAL_RANGE_S`` (ms or minutes given as s, TR ×10).
    Returns the frame steps (s)."""
    times = np.asarray(times, dtype=float)
    if not np.all(np.isfinite(times)):
        raise InputDataError("Some frame times are missing or not finite: give the frame times in s.")
    steps = np.diff(times)
    if np.any(steps <= 0):
        bad = int(np.argmax(steps <= 0))
        raise InputDataError(
            f"Frame times must increase strictly; frame {bad + 1} ({times[bad + 1]:g} s) does not "
            f"come after frame {bad} ({times[bad]:g} s). Check the frame order or the timing "
            "(TR / sidecar frame times)."
        )
    if steps.size:
        interval = float(np.median(steps))
        low, high = FRAME_INTERVAL_RANGE_S
        if not low <= interval <= high:
            if low <= interval / 1000.0 <= high:
                hint = f" They look like ms ({interval / 1000.0:.4g} s per frame): give the times in s."
            elif low <= interval * 60.0 <= high:
                hint = f" They look like minutes ({interval * 60.0:.4g} s per frame): give the times in s."
            else:
                hint = " Check the TR (--tr, sidecar RepetitionTime) or the frame times for a typing error."
            raise InputDataError(
                f"The frames are {interval:.4g} s apart (median), which is not a perfusion acquisition: "
                f"DSC-MR and CT perfusion sample every {low:g}–{high:g} s (TR about 1–2 s).{hint}"
            )
    return steps


def _fingerprint(series: PerfusionSeries):
    signal = series.signal
    return (
        id(signal), signal.__array_interface__["data"][0], signal.shape, signal.dtype.str, signal.strides,
        np.asarray(series.times, dtype=float).tobytes(), series.geometry.ijk_to_ras.tobytes(),
        series.geometry.shape, series.modality, series.te, series.tr,
    )


def validate_series(series: PerfusionSeries) -> list[str]:
    """Check that ``series`` can be analysed; return a list of warnings (strings).

    Raises :class:`InputDataError` for fewer than 10 frames, non-finite or non-increasing
    times, an implausible frame interval or voxel size, an unknown modality string, a
    non-positive TE, boolean/complex/NaN/Inf signal, a signal that does not change over time,
    MR magnitude signal that is largely zero or negative inside the head, and a CT declaration
    contradicted by the signal (no air, signal dropping during the bolus as on DSC-MR).

    Runs once per series: a second call with the same facts returns the remembered warnings.
    """
    if not isinstance(series, PerfusionSeries):
        raise InputDataError("Expected a PerfusionSeries (load the data with fileio.read_perfusion).")
    key = _fingerprint(series)
    cached = getattr(series, _CACHE_ATTRIBUTE, None)
    if cached is not None and cached[0] == key:
        return list(cached[1])
    warnings = _validate(series)
    setattr(series, _CACHE_ATTRIBUTE, (key, tuple(warnings)))
    return list(warnings)


def _validate(series: PerfusionSeries) -> list[str]:
    signal = series.signal
    times = np.asarray(series.times, dtype=float)
    n_frames = signal.shape[-1]
    if n_frames < MIN_FRAMES:
        raise InputDataError(
            f"The perfusion series has only {n_frames} frame(s); at least {MIN_FRAMES} are needed "
            "(baseline frames before the bolus plus its first pass). Load the complete dynamic series."
        )
    steps = check_frame_times(times)
    check_signal_dtype(signal)
    check_voxel_size(series.geometry.spacing, series.geometry.shape, "perfusion series")
    if series.modality is not None and series.modality not in MODALITIES:
        raise InputDataError(f"Unknown modality {series.modality!r}: use 'mr' or 'ct'.")
    if series.te is not None and not (np.isfinite(series.te) and series.te > 0):
        raise InputDataError(f"The echo time must be a positive number of seconds, not {series.te!r}.")
    # MR without TE cannot be analysed at all; the pipeline asks for TE first, and the MR value
    # checks run once it is known (the series is validated again when its TE changes).
    _check_signal_values(signal, series.modality if series.modality != "mr" or series.te else None)
    warnings = []
    if series.te is not None and series.te > 0.2:
        warnings.append(f"Echo time {series.te:g} s is unusually long for DSC-MRI: is it in ms?")
    if steps.size and steps.max() > 1.5 * steps.min():
        warnings.append(f"Frame intervals vary from {steps.min():.3g} s to {steps.max():.3g} s "
                        "(variable-rate acquisition).")
    duration = times[-1] - times[0]
    if duration < 40.0:
        warnings.append(f"The series covers only {duration:.3g} s: the bolus passage may be truncated "
                        "(CBV and MTT then come out low).")
    return warnings


def _check_signal_values(signal: np.ndarray, modality: str | None) -> None:
    """Refuse signal values that cannot be analysed; raise :class:`InputDataError`.

    * NaN or ±Inf anywhere (float data);
    * a series whose frames are all identical (largest temporal range of any voxel
      ≤ ``CONSTANT_TOLERANCE`` × largest |signal|), e.g. one frame repeated;
    * MR only: DSC magnitude signal must be positive, since ΔR2*(t) = −ln(S/S0)/TE
      (Rosen BR et al. MRM 1990;14:249–265). Refused when the signal is nowhere positive,
      when more than ``MR_NONPOSITIVE_LIMIT`` of the head samples (voxels whose |mean over time|
      exceeds ``FOREGROUND_FRACTION`` × its 99th percentile, × all frames) are ≤ 0, or when a
      frame is ≤ 0 in most of the head. Zero background outside the head and a few isolated
      dropouts pass (the concentration step clamps them).
    * CT only: a series with no value below ``CT_AIR_HU`` whose head mean signal drops during
      the bolus is DSC-MR signal, not HU (iodine raises attenuation; gadolinium's T2* effect
      lowers the MR signal: Østergaard L. JMRI 2005;22:710–717).

    Works slice by slice: the only full-size temporary is a float32 [K, J, I] mean image,
    no float copy of the 4D array is made.
    """
    n_slices, n_frames = signal.shape[0], signal.shape[-1]
    if signal.size == 0:
        raise InputDataError(f"The perfusion series has no voxels (shape {signal.shape}).")
    is_float = np.issubdtype(signal.dtype, np.floating)
    is_mr = modality == "mr"
    is_ct = modality == "ct"
    largest_range = 0.0
    largest_abs = 0.0
    largest = -np.inf
    smallest = np.inf
    mean_image = np.empty(signal.shape[:3], dtype=np.float32) if (is_mr or is_ct) else None
    bad_count = 0
    for k in range(n_slices):
        block = signal[k]
        if is_float:
            finite = np.isfinite(block)
            if not finite.all():
                bad_count += int(finite.size - np.count_nonzero(finite))
                continue
        if bad_count:
            continue
        high = block.max(axis=-1)
        low = block.min(axis=-1)
        spread = high.astype(np.float64) - low  # per voxel [J, I], no overflow for integers
        largest_range = max(largest_range, float(spread.max()))
        largest_abs = max(largest_abs, abs(float(high.max())), abs(float(low.min())))
        largest = max(largest, float(high.max()))
        smallest = min(smallest, float(low.min()))
        if mean_image is not None:
            mean_image[k] = np.mean(block, axis=-1, dtype=np.float64)
    if bad_count:
        raise InputDataError(
            f"The perfusion signal contains {bad_count} NaN or infinite value(s): the file is damaged "
            "or was exported incorrectly. Re-export the series (or replace invalid voxels) and retry."
        )
    if largest_abs == 0.0:
        raise InputDataError(
            "The perfusion series is empty (every voxel of every frame is 0): check that the right "
            "file or series was loaded and that the export kept the image data."
        )
    if largest_range <= CONSTANT_TOLERANCE * largest_abs:
        raise InputDataError(
            f"The perfusion series does not change over time (all {n_frames} frames are identical), "
            "so there is no contrast bolus to analyse. Check that you loaded the dynamic "
            "(time-resolved) series, not repeated copies of one frame or a derived map."
        )
    if is_ct:
        if smallest > CT_AIR_HU:
            _check_ct_bolus_direction(signal, mean_image, smallest)
        return
    if not is_mr:
        return
    advice = (
        "DSC-MR perfusion needs the positive magnitude signal S(t) (ΔR2* = −ln(S/S0)/TE). The data "
        "look like subtracted, ΔR2* / concentration, phase or wrongly scaled images. Load the "
        "original magnitude DSC series (or choose CT if this is CT perfusion)."
    )
    if largest <= 0:
        raise InputDataError(f"The MR perfusion signal is zero or negative everywhere. {advice}")
    foreground = _foreground(mean_image)
    del mean_image  # one float32 [K, J, I] buffer
    n_foreground = int(np.count_nonzero(foreground))
    if n_foreground == 0:
        return
    per_frame = np.zeros(n_frames, dtype=np.int64)
    for k in range(n_slices):
        inside = foreground[k]
        if inside.any():
            per_frame += np.count_nonzero(signal[k][inside] <= 0, axis=0)
    fraction = per_frame.sum() / (n_foreground * n_frames)
    worst = int(np.argmax(per_frame))
    if per_frame[worst] > 0.5 * n_foreground:
        raise InputDataError(
            f"Frame {worst + 1} of the MR perfusion series is zero or negative in "
            f"{100.0 * per_frame[worst] / n_foreground:.0f} % of the head. {advice}"
        )
    if fraction > MR_NONPOSITIVE_LIMIT:
        raise InputDataError(
            f"{100.0 * fraction:.1f} % of the MR perfusion signal inside the head is zero or negative "
            f"(at most {100 * MR_NONPOSITIVE_LIMIT:g} % is tolerated as isolated dropouts). {advice}"
        )


def _foreground(mean_image: np.ndarray) -> np.ndarray:
    """Voxels whose |temporal mean| exceeds ``FOREGROUND_FRACTION`` × its 99th percentile."""
    magnitude = np.abs(mean_image, out=mean_image)
    step = max(1, int(round((magnitude.size / 1_000_000) ** (1 / 3))))  # percentile on ≤ ~1e6 voxels
    level = float(np.percentile(magnitude[::step, ::step, ::step], 99.0))
    return magnitude > FOREGROUND_FRACTION * level


def _check_ct_bolus_direction(signal: np.ndarray, mean_image: np.ndarray, smallest: float) -> None:
    """Refuse a series declared CT that holds no air and whose head signal drops with the bolus."""
    foreground = _foreground(mean_image)
    count = int(np.count_nonzero(foreground))
    if count == 0:
        return
    curve = np.zeros(signal.shape[-1], dtype=np.float64)
    for k in range(signal.shape[0]):
        inside = foreground[k]
        if inside.any():
            curve += signal[k][inside].sum(axis=0, dtype=np.float64)
    curve /= count
    level = float(np.median(curve))
    drop = level - float(curve.min())
    rise = float(curve.max()) - level
    differences = np.diff(curve)
    noise = 1.4826 * float(np.median(np.abs(differences - np.median(differences)))) / np.sqrt(2.0)
    if drop > BOLUS_DIRECTION_RATIO * rise and drop > BOLUS_NOISE_FACTOR * max(noise, 1e-12):
        raise InputDataError(
            f"The series is declared CT, but it looks like DSC-MR signal: its lowest value is "
            f"{smallest:.4g} (a CT of the head holds air near −1000 HU) and the head signal drops by "
            f"{100.0 * drop / max(abs(level), 1e-12):.1f} % during the bolus (iodine raises HU; "
            "gadolinium lowers the MR signal). Check --modality (use mr for DSC-MRI)."
        )


def tr_mismatch_warning(times, tr, time_source) -> str | None:
    """A warning when a given TR (s) disagrees (> 1 %) with the frame intervals the file records.

    Recorded frame times win (they are what the scanner measured); the TR is only used for the
    timing when the file gives none."""
    steps = np.diff(np.asarray(times, dtype=float))
    if tr is None or steps.size == 0:
        return None
    interval = float(np.median(steps))
    if abs(interval - float(tr)) <= 0.01 * interval:
        return None
    return (f"The given TR {float(tr):g} s was not used for the frame timing: the {time_source} "
            f"give frame intervals of {interval:.4g} s, and recorded frame times take precedence over a "
            "given TR.")


def resolve_modality(given, recorded, where: str, *, force: bool = False, warnings: list | None = None):
    """The modality to analyse: ``given`` (the user's) or ``recorded`` (the file's, any spelling
    such as "MR", "CT", "ctp"; unknown labels are ignored).

    A ``given`` modality that contradicts the recorded one is refused (an MR series analysed as
    CT gives core 0 and a confident "not eligible") unless ``force``; then the conflict is
    appended to ``warnings``. ``where`` names the record (e.g. "the DICOM header (Modality)")."""
    if given is not None and given not in MODALITIES:
        raise InputDataError(f"Unknown modality {given!r}: use 'mr' or 'ct'.")
    file_says = normalise_modality(recorded)
    if given is None:
        return file_says
    if file_says is not None and file_says != given:
        text = (f"The modality {given.upper()} was given, but {where} says {file_says.upper()}")
        if not force:
            raise InputDataError(
                f"{text}. Analysing {file_says.upper()} data as {given.upper()} gives meaningless volumes. "
                f"Remove --modality (or give --modality {file_says}); if the file's label is wrong, "
                "confirm with --force-modality."
            )
        if warnings is not None:
            warnings.append(f"{text}; analysed as {given.upper()} because the modality was forced.")
    return given


def normalise_modality(value) -> str | None:
    """"mr" / "ct" from a file's modality label (DICOM/BIDS "MR", "CT", "ctp", "DSC"…), else None."""
    text = str(value or "").strip().lower()
    if text in ("mr", "mri", "dsc", "pwi"):
        return "mr"
    if text in ("ct", "ctp"):
        return "ct"
    return None


def replaced_times_warning(recorded, given, time_source) -> str | None:
    """A warning when explicitly given frame times (s) differ from those the file records."""
    recorded = np.asarray(recorded, dtype=float)
    given = np.asarray(given, dtype=float)
    if recorded.shape == given.shape and np.allclose(recorded - recorded[0], given - given[0], atol=1e-3):
        return None
    return (f"The given frame times replace those recorded in the {time_source}, which differ "
            "(recorded times are what the scanner measured).")
