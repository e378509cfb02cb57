"""File input and output without Slicer: 4D NIfTI (+ BIDS JSON sidecar), Slicer ``.seq.nrrd``
volume sequences, 3D volumes (ADC, masks, maps) in anything SimpleITK reads.

Conventions: arrays ``[k, j, i]`` with time on the last axis, times in s, geometry as
:class:`~.geometry.Geometry` (IJK-to-RAS). NIfTI (through ITK) and NRRD store LPS; the
conversion flips x and y. ``.seq.nrrd`` is written as Slicer's ``vtkMRMLVolumeSequenceStorageNode``
writes it (verified against slicer-core 5.12): a 4-D NRRD whose last header axis (the slowest in
the file, numpy's first) is a ``list`` axis labelled ``time`` with unit ``s`` and the key-value
fields ``axis 3 index type:=numeric`` and ``axis 3 index values:=0 1.5 3 …``. The reader accepts
the list axis at any position (older Slicer versions wrote it first) and ``ms`` units.

Every reader ends with :func:`validate_series`; damaged files raise :class:`InputFileError`,
unusable content :class:`InputDataError`, unwritable outputs :class:`OutputError`.
"""

from __future__ import annotations

import bz2
import gzip
import json
import re
import struct
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputDataError, InputFileError, OutputError
from .geometry import LPS_TO_RAS, Geometry
from .series import MODALITIES, PerfusionSeries

MIN_FRAMES = 10
NIFTI_SUFFIXES = (".nii", ".nii.gz")
SEQUENCE_SUFFIXES = (".seq.nrrd", ".nrrd", ".nhdr")

# NRRD type names ↔ numpy dtypes (teem nrrd format spec, "type" field).
_NRRD_TYPES = {
    "float": np.float32, "double": np.float64,
    "signed char": np.int8, "int8": np.int8, "int8_t": np.int8, "char": np.int8,
    "uchar": np.uint8, "unsigned char": np.uint8, "uint8": np.uint8, "uint8_t": np.uint8,
    "short": np.int16, "short int": np.int16, "signed short": np.int16, "signed short int": np.int16,
    "int16": np.int16, "int16_t": np.int16,
    "ushort": np.uint16, "unsigned short": np.uint16, "unsigned short int": np.uint16,
    "uint16": np.uint16, "uint16_t": np.uint16,
    "int": np.int32, "signed int": np.int32, "int32": np.int32, "int32_t": np.int32,
    "uint": np.uint32, "unsigned int": np.uint32, "uint32": np.uint32, "uint32_t": np.uint32,
    "longlong": np.int64, "long long": np.int64, "long long int": np.int64, "int64": np.int64,
    "int64_t": np.int64, "signed long long": np.int64, "signed long long int": np.int64,
    "ulonglong": np.uint64, "unsigned long long": np.uint64, "unsigned long long int": np.uint64,
    "uint64": np.uint64, "uint64_t": np.uint64,
}
_NUMPY_TO_NRRD = {
    np.dtype(np.float32): "float", np.dtype(np.float64): "double", np.dtype(np.int8): "signed char",
    np.dtype(np.uint8): "uchar", np.dtype(np.int16): "short", np.dtype(np.uint16): "ushort",
    np.dtype(np.int32): "int", np.dtype(np.uint32): "uint", np.dtype(np.int64): "longlong",
    np.dtype(np.uint64): "ulonglong",
}
# Space of a NRRD file → sign flips that take it to RAS.
_NRRD_SPACES = {
    "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
}
_TIME_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3,
               "millisecond": 1e-3, "milliseconds": 1e-3, "min": 60.0, "": 1.0}
# BIDS sidecar keys that list one time per volume (s).
_SIDECAR_TIMING_KEYS = ("VolumeTiming", "FrameTimesStart", "AcquisitionTimes", "FrameTimes",
                        "SliceTimingVolumes")


# --- validation ------------------------------------------------------------------------------


def validate_series(series: PerfusionSeries) -> list[str]:
    """Check that ``series`` can be analysed; return a list of warnings (strings).

    Raises :class:`InputDataError` for fewer than 10 frames, non-finite or non-increasing
    times, an unknown modality string, a non-positive TE, NaN/Inf in the signal, a signal that
    does not change over time, and (MR with a TE) magnitude signal that is largely zero or
    negative inside the head (see :func:`_check_signal_values`).
    """
    if not isinstance(series, PerfusionSeries):
        raise InputDataError("Expected a PerfusionSeries (load the data with fileio.read_perfusion).")
    signal = series.signal
    times = np.asarray(series.times, dtype=float)
    n_frames = signal.shape[-1]
    if n_frames < MIN_FRAMES:
        raise InputDataError(
            f"The perfusion series has only {n_frames} frame(s); at least {MIN_FRAMES} are needed "
            "(baseline frames before the bolus plus its first pass). Load the complete dynamic series."
        )
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
    if not np.issubdtype(signal.dtype, np.number) or np.issubdtype(signal.dtype, np.complexfloating):
        raise InputDataError(f"The signal must be real numbers, not {signal.dtype}.")
    if series.modality is not None and series.modality not in MODALITIES:
        raise InputDataError(f"Unknown modality {series.modality!r}: use 'mr' or 'ct'.")
    if series.te is not None and not (np.isfinite(series.te) and series.te > 0):
        raise InputDataError(f"The echo time must be a positive number of seconds, not {series.te!r}.")
    # MR without TE cannot be analysed at all; the pipeline asks for TE first, and the MR value
    # checks run once it is known (run_case validates again).
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


# Foreground of the mean image: |mean| above this fraction of its 99th percentile.
FOREGROUND_FRACTION = 0.1
# MR: refuse when more than this fraction of the foreground samples (voxel × frame) is ≤ 0.
MR_NONPOSITIVE_LIMIT = 0.01
# "No change over time": largest temporal range ≤ this fraction of the largest |signal|.
CONSTANT_TOLERANCE = 1e-6


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

    Works slice by slice: the only full-size temporary is a float32 [K, J, I] mean image (MR),
    no float copy of the 4D array is made.
    """
    n_slices, n_frames = signal.shape[0], signal.shape[-1]
    if signal.size == 0:
        raise InputDataError(f"The perfusion series has no voxels (shape {signal.shape}).")
    is_float = np.issubdtype(signal.dtype, np.floating)
    is_mr = modality == "mr"
    largest_range = 0.0
    largest_abs = 0.0
    largest = -np.inf
    mean_image = np.empty(signal.shape[:3], dtype=np.float32) if is_mr else None
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
        if is_mr:
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
    if not is_mr:
        return
    advice = (
        "DSC-MR perfusion needs the positive magnitude signal S(t) (ΔR2* = −ln(S/S0)/TE). The data "
        "look like subtracted, ΔR2* / concentration, phase or wrongly scaled images. Load the "
        "original magnitude DSC series (or choose CT if this is CT perfusion)."
    )
    if largest <= 0:
        raise InputDataError(f"The MR perfusion signal is zero or negative everywhere. {advice}")
    magnitude = np.abs(mean_image, out=mean_image)
    step = max(1, int(round((magnitude.size / 1_000_000) ** (1 / 3))))  # percentile on ≤ ~1e6 voxels
    level = float(np.percentile(magnitude[::step, ::step, ::step], 99.0))
    foreground = magnitude > FOREGROUND_FRACTION * level
    del magnitude, mean_image  # one float32 [K, J, I] buffer
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


# --- NIfTI + BIDS sidecar --------------------------------------------------------------------


def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise InputFileError(f"The {what} {path} does not exist: check the path.")
    if path.is_dir():
        raise InputFileError(f"The {what} {path} is a folder; give the image file.")


# NIfTI-1 float datatype codes (nifti1.h: DT_FLOAT32 = 16, DT_FLOAT64 = 64).
_NIFTI_FLOAT_CODES = {16: "f4", 64: "f8"}


def _check_nifti_complete(path: Path, what: str, *, count_nonfinite: bool = False) -> int:
    """Refuse truncated or damaged NIfTI files, which ITK may read silently as zeros.

    Streams through a ``.gz`` file (gzip end-of-stream and CRC) and compares the data size with
    what the NIfTI-1 header announces (vox_offset + voxels × bitpix / 8). With
    ``count_nonfinite``, also counts NaN/±Inf in float32/float64 voxel data and returns the
    count: ITK reads NIfTI through niftilib, whose ``nifti_read_buffer`` replaces every
    non-finite float by 0 without notice, so they can only be seen in the raw bytes.
    Returns 0 for files that are not NIfTI-1.
    """
    name = path.name.lower()
    if not name.endswith((".nii", ".nii.gz")):
        return 0
    damaged = (
        f"The {what} {path} is truncated or damaged (%s). Copy or export the file again."
    )
    compressed = name.endswith(".gz")
    nonfinite = 0
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as handle:
            head = handle.read(348)
            total = len(head)
            header = _nifti1_header(head)
            dtype = None
            if count_nonfinite and header is not None:
                code = header["datatype"]
                if code in _NIFTI_FLOAT_CODES:
                    dtype = np.dtype(header["endian"] + _NIFTI_FLOAT_CODES[code])
            if dtype is None and not compressed:
                total = path.stat().st_size
            else:
                skip = max(int(header["vox_offset"]) - 348, 0) if header is not None else 0
                remaining = header["voxels"] if header is not None else 0
                pending = b""
                while chunk := handle.read(1 << 24):
                    total += len(chunk)
                    if dtype is None or remaining <= 0:
                        continue
                    if skip:
                        dropped = min(skip, len(chunk))
                        chunk, skip = chunk[dropped:], skip - dropped
                    block = pending + chunk
                    usable = min(len(block) // dtype.itemsize, remaining)
                    values = np.frombuffer(block, dtype=dtype, count=usable)
                    nonfinite += int(usable - np.count_nonzero(np.isfinite(values)))
                    remaining -= usable
                    pending = block[usable * dtype.itemsize:]
    except (EOFError, OSError, zlib.error, ValueError) as error:
        raise InputFileError(damaged % error) from None
    if len(head) < 348:
        raise InputFileError(damaged % f"only {total} bytes, shorter than a NIfTI header")
    if header is None:
        return 0  # NIfTI-2 or another format: let ITK judge
    needed = int(header["vox_offset"]) + header["voxels"] * max(header["bitpix"], 0) // 8
    if total < needed:
        raise InputFileError(damaged % f"{total} bytes where the header announces {needed}")
    return nonfinite


def _nifti1_header(head: bytes) -> dict | None:
    """The few NIfTI-1 header fields we need (NIfTI-1 standard, nifti1.h), or None."""
    if len(head) < 348:
        return None
    for endian in "<>":
        if struct.unpack(endian + "i", head[:4])[0] == 348:
            break
    else:
        return None
    dims = struct.unpack(endian + "8h", head[40:56])
    n_dims = min(max(dims[0], 0), 7)
    vox_offset = struct.unpack(endian + "f", head[108:112])[0]
    if not (np.isfinite(vox_offset) and 0 <= vox_offset < 2 ** 31):
        raise ValueError(f"impossible data offset {vox_offset!r} in the header")
    return {
        "endian": endian,
        "datatype": struct.unpack(endian + "h", head[70:72])[0],
        "bitpix": struct.unpack(endian + "h", head[72:74])[0],
        "vox_offset": vox_offset,
        "voxels": int(np.prod([max(d, 1) for d in dims[1:1 + n_dims]], dtype=np.int64)),
    }


def _read_sitk(path: Path, what: str, *, finite: bool = False) -> tuple[sitk.Image, dict]:
    """Read any SimpleITK image; return it and its header meta-data.

    ``finite``: refuse NaN/Inf stored in a float NIfTI file (ITK would read them as 0)."""
    _check_exists(path, what)
    nonfinite = _check_nifti_complete(path, what, count_nonfinite=finite)
    if nonfinite:
        raise InputDataError(
            f"The {what} {path} contains {nonfinite} NaN or infinite value(s) (ITK's NIfTI reader "
            "would silently turn them into 0): the file is damaged or was exported incorrectly. "
            "Re-export the series (or replace invalid voxels) and retry."
        )
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        image = reader.Execute()
    except RuntimeError as error:
        reason = str(error).strip().splitlines()
        reason = reason[-1][:200] if reason else "unknown reason"
        raise InputFileError(
            f"Could not read the {what} {path}: the file is damaged, truncated or not an image "
            f"format SimpleITK understands ({reason}). Re-export or copy the file again."
        ) from None
    meta = {key: reader.GetMetaData(key) for key in reader.GetMetaDataKeys()}
    return image, meta


def _strip_suffix(path: Path) -> Path:
    name = path.name
    for suffix in (".nii.gz", ".seq.nrrd", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".gz"):
        if name.lower().endswith(suffix):
            return path.with_name(name[: -len(suffix)])
    return path.with_suffix("")


def sidecar_path(path) -> Path:
    """The BIDS JSON sidecar next to ``path`` (same stem, ``.json``)."""
    path = Path(path)
    return _strip_suffix(path).with_name(_strip_suffix(path).name + ".json")


def _clock_to_seconds(values) -> np.ndarray:
    """Times given as "HH:MM:SS.ffffff" strings → s relative to the first."""
    seconds = []
    for value in values:
        text = str(value).strip()
        for pattern in ("%H:%M:%S.%f", "%H:%M:%S", "%H%M%S.%f", "%H%M%S"):
            try:
                moment = datetime.strptime(text, pattern)
                break
            except ValueError:
                continue
        else:
            raise InputDataError(f"Cannot read the frame time {text!r} in the sidecar.")
        seconds.append(moment.hour * 3600 + moment.minute * 60 + moment.second + moment.microsecond / 1e6)
    seconds = np.array(seconds)
    return seconds - seconds[0]


def _read_sidecar(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputFileError(
            f"The JSON sidecar {path} cannot be read ({error}). Fix or remove it and give the timing "
            "with tr=/times= (command line: --tr)."
        ) from None


def _sidecar_modality(value) -> str | None:
    text = str(value or "").strip().lower()
    if text in ("mr", "mri", "dsc", "pwi"):
        return "mr"
    if text in ("ct", "ctp"):
        return "ct"
    return None


def _positive_seconds(value, name, warnings, *, ms_above):
    """A positive float in s from the sidecar, converting evident ms values (> ``ms_above``)."""
    if value is None:
        return None
    try:
        value = float(value[0] if isinstance(value, (list, tuple)) else value)
    except (TypeError, ValueError, IndexError):
        raise InputDataError(f"The sidecar's {name} ({value!r}) is not a number of seconds.") from None
    if not np.isfinite(value) or value <= 0:
        return None
    if value > ms_above:
        warnings.append(f"The sidecar's {name} {value:g} looks like ms; used {value / 1000:g} s.")
        value /= 1000.0
    return value


def _tr_mismatch_warning(times, tr, time_source) -> str | None:
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


def _sidecar_slice_timing(facts, n_slices, warnings) -> dict:
    """BIDS SliceTiming (s, along the k axis; reversed for SliceEncodingDirection k-) as the
    ``slice_timing_s`` / ``slice_timing_source`` metadata that slicetiming.py uses."""
    from .slicetiming import from_sidecar

    values = from_sidecar(facts, n_slices)
    if values is None:
        return {}
    direction = str(facts.get("SliceEncodingDirection", "k")).strip()
    if direction not in ("k", "k-"):
        warnings.append(f"The sidecar's SliceTiming runs along {direction!r}, not the slice axis k; it was not used.")
        return {}
    values = values[::-1] if direction == "k-" else values
    return {"slice_timing_s": [float(v) for v in values], "slice_timing_source": "BIDS sidecar SliceTiming"}


def read_nifti_perfusion(path, *, sidecar=None, tr=None, te=None, times=None, modality=None) -> PerfusionSeries:
    """Read a 4D perfusion series from a NIfTI file (or any 4D image SimpleITK reads).

    ``sidecar``: BIDS JSON (default: same stem + ``.json`` if present) giving ``RepetitionTime``
    and ``EchoTime`` (s), optional per-frame times (``VolumeTiming``, ``FrameTimesStart``,
    ``AcquisitionTimes``) and ``Modality``. Keyword arguments override the sidecar: ``tr`` s,
    ``te`` s, ``times`` s (one per frame), ``modality`` "mr"/"ct". Frame times are the given or
    sidecar times, else index × TR (the NIfTI header's time step is not trusted: many tools leave
    it at 1); a given ``tr`` does not replace frame times the sidecar records (a mismatch of
    more than 1 % is reported in ``metadata["warnings"]``). MR without TE carries ``te=None``
    (the pipeline then asks for it).
    """
    path = Path(path)
    image, _ = _read_sitk(path, "perfusion file", finite=True)
    warnings: list[str] = []
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputDataError(
            f"{path} stores {image.GetNumberOfComponentsPerPixel()} values per voxel (vector/RGB image); "
            "give the 4D dynamic series as a scalar 4D NIfTI."
        )
    if image.GetDimension() == 3:
        raise InputDataError(
            f"{path} is a 3D volume; give the 4D dynamic (time-resolved) perfusion series."
        )
    if image.GetDimension() != 4:
        raise InputDataError(f"{path} is a {image.GetDimension()}D image; a 4D perfusion series is needed.")
    array = sitk.GetArrayFromImage(image)  # (T, K, J, I)
    signal = np.moveaxis(array, 0, -1)
    if signal.dtype == np.float64:
        signal = signal.astype(np.float32)
    signal = np.ascontiguousarray(signal)
    geometry = Geometry.from_sitk(image)
    n_frames = signal.shape[-1]

    side = Path(sidecar) if sidecar is not None else sidecar_path(path)
    facts = {}
    if sidecar is not None and not side.is_file():
        raise InputFileError(f"The sidecar {side} does not exist: check the path.")
    if side.is_file():
        facts = _read_sidecar(side)
    # Timing.
    frame_times = None
    time_source = None
    if times is not None:
        frame_times, time_source = np.asarray(times, dtype=float).ravel(), "given"
    else:
        for key in _SIDECAR_TIMING_KEYS:
            if key in facts and isinstance(facts[key], list) and facts[key]:
                values = facts[key]
                if all(isinstance(v, (int, float)) for v in values):
                    frame_times = np.asarray(values, dtype=float)
                else:
                    frame_times = _clock_to_seconds(values)
                time_source = f"sidecar {key}"
                break
    tr_value = tr if tr is not None else _positive_seconds(facts.get("RepetitionTime"), "RepetitionTime",
                                                            warnings, ms_above=30.0)
    tr_source = "given" if tr is not None else ("sidecar" if tr_value is not None else None)
    if tr_value is not None and not (np.isfinite(tr_value) and tr_value > 0):
        raise InputDataError(f"TR must be a positive number of seconds, not {tr_value!r}.")
    if frame_times is None:
        if tr_value is None:
            raise InputDataError(
                f"The frame timing of {path} is unknown: give the repetition time or frame times "
                f"(command line: --tr SECONDS; or RepetitionTime / VolumeTiming in {side.name}). "
                f"The NIfTI header's time step ({image.GetSpacing()[3]:g}) is not trusted: many tools "
                "leave it at 1."
            )
        frame_times, time_source = np.arange(n_frames) * float(tr_value), f"index × TR ({tr_source})"
    if frame_times.size != n_frames:
        raise InputDataError(
            f"{frame_times.size} frame times ({time_source}) were given for the {n_frames} frames of {path}."
        )
    if tr is not None and time_source.startswith("sidecar"):
        conflict = _tr_mismatch_warning(frame_times, tr, time_source)
        if conflict:
            warnings.append(conflict)
    te_value = te if te is not None else _positive_seconds(facts.get("EchoTime"), "EchoTime", warnings,
                                                            ms_above=1.0)
    if modality is None:
        modality = _sidecar_modality(facts.get("Modality"))
    elif modality not in MODALITIES:
        raise InputDataError(f"Unknown modality {modality!r}: use 'mr' or 'ct'.")
    metadata = {"path": str(path), "time_source": time_source, "sidecar": str(side) if facts else None,
                "warnings": warnings}
    for key in ("Manufacturer", "ManufacturersModelName", "SeriesDescription", "MagneticFieldStrength",
                "ProtocolName"):
        if key in facts:
            metadata[key] = facts[key]
    metadata.update(_sidecar_slice_timing(facts, signal.shape[0], warnings))  # issue 17 hook
    series = PerfusionSeries(signal, frame_times, geometry, modality, te=te_value,
                             tr=float(tr_value) if tr_value is not None else None,
                             source=f"NIfTI {path.name}", metadata=metadata)
    warnings.extend(validate_series(series))
    return series


def write_nifti_perfusion(path, series: PerfusionSeries, *, sidecar=True) -> Path:
    """Write ``series`` as a 4D NIfTI (``.nii``/``.nii.gz``) and, with ``sidecar``, a BIDS JSON
    (RepetitionTime, EchoTime in s, VolumeTiming = frame times, Modality). Returns the path."""
    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise OutputError(f"{path}: a NIfTI file name must end in .nii or .nii.gz.")
    _prepare_output(path)
    array = np.moveaxis(np.asarray(series.signal), -1, 0)  # (T, K, J, I), a view
    image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=False)
    ijk_to_lps = LPS_TO_RAS @ series.geometry.ijk_to_ras
    spacing = series.geometry.spacing
    times = np.asarray(series.times, dtype=float)
    step = float(series.tr) if series.tr else (float(np.median(np.diff(times))) if times.size > 1 else 1.0)
    direction = np.eye(4)
    direction[:3, :3] = ijk_to_lps[:3, :3] / spacing
    image.SetSpacing([*(float(s) for s in spacing), step])
    image.SetOrigin([*(float(x) for x in ijk_to_lps[:3, 3]), float(times[0]) if times.size else 0.0])
    image.SetDirection([float(x) for x in direction.ravel()])
    try:
        sitk.WriteImage(image, str(path), True)
    except RuntimeError as error:
        raise OutputError(f"Could not write {path}: {str(error).strip().splitlines()[-1][:200]}") from None
    if sidecar:
        facts = {"VolumeTiming": [float(t) for t in times]}
        if series.tr:
            facts["RepetitionTime"] = float(series.tr)
        if series.te:
            facts["EchoTime"] = float(series.te)
        if series.modality:
            facts["Modality"] = series.modality.upper()
        facts["GeneratedBy"] = [{"Name": "StrokeMismatch", "Description": series.source or ""}]
        try:
            sidecar_path(path).write_text(json.dumps(facts, indent=2), encoding="utf-8")
        except OSError as error:
            raise OutputError(f"Could not write the sidecar {sidecar_path(path)}: {error}") from None
    return path


# --- 3D volumes --------------------------------------------------------------------------------


def read_volume(path) -> tuple[np.ndarray, Geometry]:
    """Read a 3D image (ADC map, mask, …) from NIfTI, NRRD or any format SimpleITK reads.

    Returns ``(array [K, J, I], Geometry)``; a 4D file with one frame is accepted, a real 4D
    series raises :class:`InputDataError`.
    """
    path = Path(path)
    image, _ = _read_sitk(path, "volume")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputDataError(
            f"{path} stores {image.GetNumberOfComponentsPerPixel()} values per voxel; give a scalar 3D volume."
        )
    if image.GetDimension() == 4:
        if image.GetSize()[3] != 1:
            raise InputDataError(
                f"{path} is a 4D series with {image.GetSize()[3]} frames; a single 3D volume is needed here "
                "(e.g. the ADC map or a mask)."
            )
        array = sitk.GetArrayFromImage(image)[0]
        return np.ascontiguousarray(array), Geometry.from_sitk(image)
    if image.GetDimension() != 3:
        raise InputDataError(f"{path} is a {image.GetDimension()}D image; a 3D volume is needed.")
    return sitk.GetArrayFromImage(image), Geometry.from_sitk(image)


def _prepare_output(path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"Cannot create the folder {path.parent}: {error}") from None
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name.")


def write_volume(path, array, geometry: Geometry) -> Path:
    """Write a 3D ``array`` [K, J, I] with ``geometry``; the format follows the suffix
    (``.nii.gz``, ``.nii``, ``.nrrd``, ``.mha``…). Booleans are written as uint8, float64 as
    float32, int64 as int32. Returns the path."""
    path = Path(path)
    array = np.asarray(array)
    if array.ndim != 3:
        raise OutputError(f"write_volume writes 3D arrays; got shape {array.shape}.")
    if array.dtype == bool:
        array = array.astype(np.uint8)
    elif array.dtype == np.float64:
        array = array.astype(np.float32)
    elif array.dtype == np.int64:
        array = array.astype(np.int32)
    _prepare_output(path)
    try:
        image = geometry.to_sitk(array)
        sitk.WriteImage(image, str(path), True)
    except InputDataError as error:
        raise OutputError(f"Cannot write {path}: {error}") from None
    except RuntimeError as error:
        raise OutputError(f"Could not write {path}: {str(error).strip().splitlines()[-1][:200]}") from None
    return path


# --- NRRD (volume sequences) ---------------------------------------------------------------


def _nrrd_vector(text: str):
    text = text.strip()
    if text == "none":
        return None
    return [float(v) for v in text.strip("()").split(",")]


def _nrrd_list(text: str) -> list[str]:
    """Split a NRRD per-axis field; quoted entries may contain spaces."""
    text = text.strip()
    if '"' in text:
        return re.findall(r'"([^"]*)"', text)
    return text.split()


def _read_nrrd(path: Path) -> tuple[np.ndarray, dict, dict]:
    """Read an attached-data NRRD: (array in numpy C order = reversed file axes, fields, key-values)."""
    _check_exists(path, "NRRD file")
    try:
        blob = path.read_bytes()
    except OSError as error:
        raise InputFileError(f"Cannot read {path}: {error}") from None
    if not blob.startswith(b"NRRD000"):
        raise InputFileError(f"{path} is not a NRRD file (no NRRD magic line). Check the file or its suffix.")
    end = blob.find(b"\n\n")
    if end < 0:
        raise InputFileError(f"{path} is truncated: its NRRD header never ends. Copy or export the file again.")
    header = blob[:end].decode("latin-1").splitlines()
    fields, keyvalues = {}, {}
    for line in header[1:]:
        if not line or line.startswith("#"):
            continue
        if ":=" in line:
            key, value = line.split(":=", 1)
            keyvalues[key.strip()] = value.strip()
        elif ": " in line:
            key, value = line.split(": ", 1)
            fields[key.strip().lower()] = value.strip()
        else:
            raise InputFileError(f"{path}: unreadable NRRD header line {line!r}. The file is damaged.")
    if "data file" in fields or "datafile" in fields:
        raise InputFileError(
            f"{path} is a detached NRRD header (.nhdr + data file), which is not supported for sequences: "
            "save the sequence from Slicer as a single .seq.nrrd file."
        )
    try:
        sizes = [int(s) for s in fields["sizes"].split()]
        dtype = np.dtype(_NRRD_TYPES[fields["type"].lower()])
    except KeyError as error:
        raise InputFileError(f"{path}: the NRRD header lacks or misstates {error}. The file is damaged.") from None
    if fields.get("endian", "little").lower() == "big":
        dtype = dtype.newbyteorder(">")
    else:
        dtype = dtype.newbyteorder("<")
    data = blob[end + 2:]
    if int(fields.get("line skip", fields.get("lineskip", "0"))):
        data = data.split(b"\n", int(fields.get("line skip", fields.get("lineskip", "0"))))[-1]
    encoding = fields.get("encoding", "raw").lower()
    count = int(np.prod(sizes))
    try:
        if encoding in ("gzip", "gz"):
            data = gzip.decompress(data)
        elif encoding in ("bzip2", "bz2"):
            data = bz2.decompress(data)
        elif encoding in ("ascii", "text", "txt"):
            values = np.array(data.split(), dtype=float)
            data = values.astype(dtype).tobytes()
        elif encoding != "raw":
            raise InputFileError(f"{path}: NRRD encoding {encoding!r} is not supported (use raw or gzip).")
    except (OSError, EOFError, zlib.error, ValueError) as error:
        raise InputFileError(
            f"{path} is damaged or truncated: its compressed image data cannot be read ({error}). "
            "Copy or export the file again."
        ) from None
    skip = int(fields.get("byte skip", fields.get("byteskip", "0")))
    if skip == -1:
        data = data[len(data) - count * dtype.itemsize:]
    elif skip > 0:
        data = data[skip:]
    if len(data) < count * dtype.itemsize:
        raise InputFileError(
            f"{path} is truncated: {len(data)} bytes of image data for {count} voxels of "
            f"{dtype.itemsize} bytes. Copy or export the file again."
        )
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(sizes[::-1])
    return array.astype(dtype.newbyteorder("="), copy=True), fields, keyvalues


def read_seq_nrrd(path, *, modality=None, te=None, tr=None) -> PerfusionSeries:
    """Read a Slicer volume sequence (``.seq.nrrd``) as a :class:`PerfusionSeries`.

    The ``list`` axis gives the frames, its ``axis N index values`` the times (``units`` ``ms``
    converted to s). ``modality``, ``te`` (s) and ``tr`` (s) override what the file records
    (our writer stores them as ``StrokeMismatch.*`` key-value fields)."""
    path = Path(path)
    array, fields, keyvalues = _read_nrrd(path)
    dimension = int(fields.get("dimension", array.ndim))
    if dimension == 3:
        raise InputDataError(f"{path} is a 3D volume; give the 4D dynamic series (a volume sequence).")
    if dimension != 4:
        raise InputDataError(f"{path} has {dimension} axes; a volume sequence has 4 (3 space + time).")
    kinds = [k.lower() for k in _nrrd_list(fields.get("kinds", ""))]
    directions_text = re.findall(r"\([^)]*\)|none", fields.get("space directions", ""))
    directions = [_nrrd_vector(d) for d in directions_text]
    list_axes = [n for n, kind in enumerate(kinds) if kind in ("list", "time", "vector", "point")]
    if len(list_axes) != 1 and len(directions) == 4:
        list_axes = [n for n, d in enumerate(directions) if d is None]
    if len(list_axes) != 1 or len(directions) != 4:
        raise InputFileError(
            f"{path} is a 4-D NRRD without one list (time) axis and three space axes; it is not a "
            "volume sequence. Save it from Slicer's Sequences module as .seq.nrrd."
        )
    axis = list_axes[0]
    space_axes = [n for n in range(4) if n != axis]
    space = fields.get("space", "").lower()
    if space not in _NRRD_SPACES:
        raise InputFileError(
            f"{path}: NRRD space {space or '(none)'!r} is not supported; it must be left-posterior-superior "
            "or right-anterior-superior."
        )
    flip = np.diag([*_NRRD_SPACES[space], 1.0])
    matrix = np.eye(4)
    for column, n in enumerate(space_axes):
        if directions[n] is None:
            raise InputFileError(f"{path}: space axis {n} has no direction. The file is damaged.")
        matrix[:3, column] = directions[n]
    origin = _nrrd_vector(fields.get("space origin", "(0,0,0)")) or [0.0, 0.0, 0.0]
    matrix[:3, 3] = origin
    ijk_to_ras = flip @ matrix
    # numpy axes are the file axes reversed: file axis n ↔ numpy axis 3 − n.
    signal = np.transpose(array, (3 - space_axes[2], 3 - space_axes[1], 3 - space_axes[0], 3 - axis))
    signal = np.ascontiguousarray(signal)
    geometry = Geometry(ijk_to_ras, signal.shape[:3])

    values = keyvalues.get(f"axis {axis} index values")
    if values is None:
        raise InputDataError(
            f"{path} does not record the frame times (no 'axis {axis} index values' field). Re-save the "
            "sequence from Slicer with a numeric time index."
        )
    if keyvalues.get(f"axis {axis} index type", "numeric").lower() != "numeric":
        raise InputDataError(f"{path}: the sequence index is not numeric, so it gives no frame times.")
    try:
        times = np.array([float(v) for v in values.split()])
    except ValueError:
        raise InputDataError(f"{path}: the frame times {values[:80]!r} are not numbers.") from None
    units = _nrrd_list(fields.get("units", ""))
    unit = units[axis].strip().lower() if len(units) == 4 else "s"
    if unit not in _TIME_UNITS:
        raise InputDataError(f"{path}: unknown time unit {unit!r} for the sequence index (use s or ms).")
    times = times * _TIME_UNITS[unit]
    if times.size != signal.shape[-1]:
        raise InputFileError(f"{path}: {times.size} frame times for {signal.shape[-1]} frames. The file is damaged.")

    def stored(name):
        return keyvalues.get(f"StrokeMismatch.{name}") or None

    modality = modality if modality is not None else stored("modality")
    if modality is not None and modality not in MODALITIES:
        raise InputDataError(f"Unknown modality {modality!r}: use 'mr' or 'ct'.")
    given_tr = tr
    te = te if te is not None else (float(stored("te")) if stored("te") else None)
    tr = tr if tr is not None else (float(stored("tr")) if stored("tr") else None)
    labels = _nrrd_list(fields.get("labels", ""))
    metadata = {"path": str(path), "index_name": labels[axis] if len(labels) == 4 else None,
                "time_unit": unit or "s"}
    series = PerfusionSeries(signal, times, geometry, modality, te=te, tr=tr,
                             source=f"sequence {path.name}", metadata=metadata)
    conflict = _tr_mismatch_warning(times, tr, "sequence's frame times") if given_tr is not None else None
    metadata["warnings"] = ([conflict] if conflict else []) + validate_series(series)
    return series


def _fmt(value: float) -> str:
    return repr(float(value)) if np.isfinite(value) else "nan"


def write_seq_nrrd(path, series: PerfusionSeries) -> Path:
    """Write ``series`` as a Slicer volume sequence (``.seq.nrrd``), gzip-encoded, LPS space,
    time as the last (list) header axis, as ``vtkMRMLVolumeSequenceStorageNode`` writes it.
    The file is byte-deterministic (no time stamp in the gzip stream)."""
    path = Path(path)
    if not path.name.lower().endswith(".nrrd"):
        raise OutputError(f"{path}: a volume sequence file name must end in .seq.nrrd.")
    _prepare_output(path)
    signal = np.asarray(series.signal)
    if signal.dtype == bool:
        signal = signal.astype(np.uint8)
    if signal.dtype not in _NUMPY_TO_NRRD:
        signal = signal.astype(np.float32)
    data = np.ascontiguousarray(np.moveaxis(signal, -1, 0), dtype=signal.dtype.newbyteorder("<"))
    K, J, I, T = signal.shape
    ijk_to_lps = LPS_TO_RAS @ series.geometry.ijk_to_ras
    directions = " ".join("(" + ",".join(_fmt(x) for x in ijk_to_lps[:3, n]) + ")" for n in range(3))
    lines = [
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
        f"type: {_NUMPY_TO_NRRD[signal.dtype]}",
        "dimension: 4",
        "space: left-posterior-superior",
        f"sizes: {I} {J} {K} {T}",
        f"space directions: {directions} none",
        "kinds: domain domain domain list",
        'labels: "" "" "" "time"',
        'units: "" "" "" "s"',
        "endian: little",
        "encoding: gzip",
        "space origin: (" + ",".join(_fmt(x) for x in ijk_to_lps[:3, 3]) + ")",
        "DataNodeClassName:=vtkMRMLScalarVolumeNode",
        "axis 3 index type:=numeric",
        "axis 3 index values:=" + " ".join(f"{float(t):.10g}" for t in series.times),
    ]
    if series.modality:
        lines.append(f"StrokeMismatch.modality:={series.modality}")
    if series.te:
        lines.append(f"StrokeMismatch.te:={float(series.te):.10g}")
    if series.tr:
        lines.append(f"StrokeMismatch.tr:={float(series.tr):.10g}")
    header = ("\n".join(lines) + "\n\n").encode("latin-1")
    try:
        with open(path, "wb") as handle:
            handle.write(header)
            # mtime=0 and a fixed level: the same series gives the same bytes (reproducible outputs).
            handle.write(gzip.compress(data.tobytes(), compresslevel=6, mtime=0))
    except OSError as error:
        raise OutputError(f"Could not write {path}: {error}") from None
    return path


# --- dispatch ------------------------------------------------------------------------------


def read_perfusion(path, *, series=None, modality=None, tr=None, te=None, times=None, sidecar=None) -> PerfusionSeries:
    """Read a perfusion series from ``path``: ``.nii``/``.nii.gz`` (with BIDS sidecar),
    ``.seq.nrrd``/``.nrrd`` (Slicer sequence), ``.mha``/``.mhd`` (4D image) or a DICOM folder
    (``series`` picks one when the folder holds several). ``modality``, ``tr``, ``te`` (s) and
    ``times`` (s) override what the files say."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"The perfusion input {path} does not exist: check the path.")
    name = path.name.lower()
    if path.is_dir() or name.endswith(".dcm"):
        from . import dicomio

        folder = path if path.is_dir() else path.parent
        loaded = dicomio.read_dicom_perfusion(folder, series=series, tr=tr)  # tr: only where headers give no timing
        loaded = _override(loaded, modality=modality, tr=tr, te=te, times=times)
    elif name.endswith(SEQUENCE_SUFFIXES):
        loaded = read_seq_nrrd(path, modality=modality, te=te, tr=tr)
        if times is not None:
            loaded = _override(loaded, times=times)
    else:
        loaded = read_nifti_perfusion(path, sidecar=sidecar, tr=tr, te=te, times=times, modality=modality)
    return loaded


def _override(series: PerfusionSeries, *, modality=None, tr=None, te=None, times=None) -> PerfusionSeries:
    """A copy of ``series`` with user-given facts replacing those read from the files."""
    if modality is None and tr is None and te is None and times is None:
        return series
    new_times = series.times
    warnings = []
    if times is not None:
        new_times = np.asarray(times, dtype=float).ravel()
    elif tr is not None and series.tr is None:
        new_times = np.arange(series.signal.shape[-1]) * float(tr)
    elif tr is not None:
        conflict = _tr_mismatch_warning(series.times, tr, "frame times recorded in the file")
        if conflict:
            warnings.append(conflict)
    result = PerfusionSeries(
        series.signal, new_times, series.geometry,
        modality if modality is not None else series.modality,
        te=te if te is not None else series.te,
        tr=tr if tr is not None else series.tr,
        source=series.source, metadata=dict(series.metadata),
    )
    result.metadata["warnings"] = warnings + validate_series(result)
    return result
