"""4D NIfTI perfusion series with their BIDS JSON sidecar, and 3D volumes (ADC, masks, maps) in
any format SimpleITK reads.

NIfTI (through ITK) stores LPS; the geometry is converted to IJK-to-RAS. ITK applies the
header's ``xyzt_units`` (metres and microns become mm), and the voxel size is checked on the
header before the voxels are loaded (:func:`validation.check_voxel_size`). The sidecar gives the
timing: per-frame times (``VolumeTiming``, ``FrameTimesStart``, ``AcquisitionTimes``…) win over
``RepetitionTime``; ``EchoTime`` in s (ms values converted with a warning).
"""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import InputDataError, InputFileError, OutputError
from .geometry import LPS_TO_RAS, Geometry
from .iopaths import check_input_file, prepare_output_file
from .series import PerfusionSeries
from .validation import (FRAME_INTERVAL_RANGE_S, check_voxel_size, replaced_times_warning, resolve_modality,
                         tr_mismatch_warning, validate_series)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
# BIDS sidecar keys that list one time per volume (s).
_SIDECAR_TIMING_KEYS = ("VolumeTiming", "FrameTimesStart", "AcquisitionTimes", "FrameTimes",
                        "SliceTimingVolumes")
# A sidecar is a few kB; refuse anything this large unread.
MAX_SIDECAR_BYTES = 16 << 20


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
    n_dims = dims[0]
    if not 1 <= n_dims <= 7:
        raise ValueError(f"the header declares {n_dims} dimensions (NIfTI allows 1 to 7)")
    if any(d <= 0 for d in dims[1:1 + n_dims]):
        raise ValueError(f"the header declares impossible image sizes {list(dims[1:1 + n_dims])} "
                         "(a size must be a positive whole number)")
    vox_offset = struct.unpack(endian + "f", head[108:112])[0]
    if not (np.isfinite(vox_offset) and 0 <= vox_offset < 2 ** 31):
        raise ValueError(f"impossible data offset {vox_offset!r} in the header")
    return {
        "endian": endian,
        "datatype": struct.unpack(endian + "h", head[70:72])[0],
        "bitpix": struct.unpack(endian + "h", head[72:74])[0],
        "vox_offset": vox_offset,
        "voxels": int(np.prod(dims[1:1 + n_dims], dtype=np.int64)),
    }


def _read_sitk(path: Path, what: str, *, finite: bool = False) -> tuple[sitk.Image, dict]:
    """Read any SimpleITK image; return it and its header meta-data.

    ``finite``: refuse NaN/Inf stored in a float NIfTI file (ITK would read them as 0)."""
    check_input_file(path, what)
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
        reader.ReadImageInformation()
        if reader.GetDimension() >= 3:
            size = reader.GetSize()
            check_voxel_size(reader.GetSpacing()[:3], (size[2], size[1], size[0]), f"{what} {path.name}")
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
    """The BIDS JSON sidecar as a dict; :class:`InputFileError` for anything else (not JSON, not
    an object, too large, nested too deeply to parse)."""
    advice = "Fix or remove it and give the timing with tr=/times= (command line: --tr)."
    try:
        size = path.stat().st_size
        if size > MAX_SIDECAR_BYTES:
            raise InputFileError(f"The JSON sidecar {path} is {size / 2**20:.0f} MB; a BIDS sidecar is a few kB. {advice}")
        facts = json.loads(path.read_text(encoding="utf-8-sig"))  # a BOM (Windows editors) is fine
    except RecursionError:
        raise InputFileError(f"The JSON sidecar {path} is nested too deeply to be a BIDS sidecar. {advice}") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputFileError(f"The JSON sidecar {path} cannot be read ({error}). {advice}") from None
    if not isinstance(facts, dict):
        raise InputFileError(
            f"The JSON sidecar {path} holds a JSON {type(facts).__name__}, not an object of "
            f'"Key": value pairs as BIDS requires (e.g. {{"RepetitionTime": 1.5}}). {advice}'
        )
    return facts


def _positive_seconds(value, name, warnings, *, ms_above):
    """A positive float in s from the sidecar, converting evident ms values (> ``ms_above``).

    Refused (:class:`InputDataError`): booleans (``true`` is not 1 s), text, lists of several
    different values (multi-echo ``EchoTime``: one series per echo is analysed), zero or negative
    values. A list of one value, or of equal values, is that value."""
    if value is None:
        return None
    if isinstance(value, (list, tuple)):
        numbers = [v for v in value if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if not value or len(numbers) != len(value):
            raise InputDataError(f"The sidecar's {name} ({json.dumps(value)}) is not a number of seconds.")
        distinct = sorted(set(numbers))
        if len(distinct) > 1:
            raise InputDataError(
                f"The sidecar's {name} lists {len(value)} values {json.dumps(value)}: a multi-echo "
                f"acquisition. StrokeMismatch analyses one echo: give the series of a single echo with "
                f"its {name} (command line: --te SECONDS)."
            )
        value = distinct[0]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputDataError(
            f"The sidecar's {name} is {json.dumps(value)}, not a number of seconds. Write it in seconds "
            f'(e.g. "{name}": 1.5) or give it on the command line.'
        )
    value = float(value)
    if not np.isfinite(value) or value <= 0:
        raise InputDataError(f"The sidecar's {name} ({value:g}) must be a positive number of seconds.")
    if value > ms_above:
        warnings.append(f"The sidecar's {name} {value:g} looks like ms; used {value / 1000:g} s.")
        value /= 1000.0
    return value


def _sidecar_frame_times(facts: dict, warnings: list) -> tuple[np.ndarray | None, str | None]:
    """Per-frame times (s) recorded in the sidecar and their key, or (None, None).

    Frame times whose median interval is impossible in s but plausible in ms (100–5000) are
    converted to s with a warning (BIDS says s, but some converters copy DICOM's ms values);
    any other implausible interval is refused later by :func:`validation.check_frame_times`."""
    for key in _SIDECAR_TIMING_KEYS:
        values = facts.get(key)
        if not (isinstance(values, list) and values):
            continue
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            times = np.asarray(values, dtype=float)
        elif all(isinstance(v, str) for v in values):
            times = _clock_to_seconds(values)
        else:
            raise InputDataError(
                f"The sidecar's {key} mixes numbers and other values ({json.dumps(values[:4])}…): give one "
                "time in seconds per frame."
            )
        steps = np.diff(times)
        if steps.size and np.all(np.isfinite(steps)):
            interval = float(np.median(steps))
            low, high = FRAME_INTERVAL_RANGE_S
            if not low <= interval <= high and low <= interval / 1000.0 <= high:
                warnings.append(
                    f"The sidecar's {key} are {interval:g} apart: impossible in seconds for perfusion, "
                    f"so read as ms ({interval / 1000.0:g} s per frame). BIDS gives times in s; fix the sidecar."
                )
                times = times / 1000.0
        return times, f"sidecar {key}"
    return None, None


def read_nifti_perfusion(path, *, sidecar=None, tr=None, te=None, times=None, modality=None,
                         force_modality=False) -> PerfusionSeries:
    """Read a 4D perfusion series from a NIfTI file (or any 4D image SimpleITK reads).

    ``sidecar``: BIDS JSON (default: same stem + ``.json`` if present) giving ``RepetitionTime``
    and ``EchoTime`` (s), optional per-frame times (``VolumeTiming``, ``FrameTimesStart``,
    ``AcquisitionTimes``) and ``Modality``. Keyword arguments: ``te`` s replaces the sidecar's;
    ``times`` s (one per frame) replace any recorded times; ``modality`` "mr"/"ct" must agree
    with the sidecar's ``Modality`` unless ``force_modality``. Frame times are, in this order:
    given ``times``, the sidecar's per-frame times (ms values converted with a warning), index ×
    TR (given ``tr``, else the sidecar's ``RepetitionTime``). The NIfTI header's time step is not
    trusted (many tools leave it at 1). A given ``tr`` never replaces recorded frame times; a
    disagreement of more than 1 % is reported in ``metadata["warnings"]``. MR without TE carries
    ``te=None`` (the pipeline then asks for it).
    """
    path = Path(path)
    warnings: list[str] = []
    side = Path(sidecar) if sidecar is not None else sidecar_path(path)
    facts = {}
    if sidecar is not None and not side.is_file():
        raise InputFileError(f"The sidecar {side} does not exist: check the path.")
    if side.is_file():
        facts = _read_sidecar(side)
    # Facts from the sidecar first: a bad sidecar is refused before the image is loaded.
    recorded, recorded_source = _sidecar_frame_times(facts, warnings)
    try:
        sidecar_tr = _positive_seconds(facts.get("RepetitionTime"), "RepetitionTime", warnings, ms_above=30.0)
    except InputDataError as error:
        if recorded is None and tr is None:
            raise  # the timing would rest on it
        sidecar_tr = None  # not needed: recorded frame times (or the given TR) make the timing
        warnings.append(f"{error} It was ignored: the frame times come from "
                        f"{recorded_source if recorded is not None else 'the given TR'}.")
    if tr is not None:
        try:
            valid = not isinstance(tr, bool) and np.isfinite(float(tr)) and float(tr) > 0
        except (TypeError, ValueError):
            valid = False
        if not valid:
            raise InputDataError(f"TR must be a positive number of seconds, not {tr!r}.")
    te_value = te if te is not None else _positive_seconds(facts.get("EchoTime"), "EchoTime", warnings,
                                                            ms_above=1.0)
    modality = resolve_modality(modality, facts.get("Modality"), f"the sidecar {side.name} (Modality)",
                                force=force_modality, warnings=warnings)

    image, _ = _read_sitk(path, "perfusion file", finite=True)
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
    geometry = Geometry.from_sitk(image)
    n_frames = image.GetSize()[3]
    header_step = image.GetSpacing()[3]
    array = sitk.GetArrayViewFromImage(image)  # (T, K, J, I), no copy
    dtype = np.float32 if array.dtype == np.float64 else array.dtype
    signal = np.array(np.moveaxis(array, 0, -1), dtype=dtype, order="C", copy=True)  # the one copy
    del array, image

    # Timing: given times, else recorded times, else index × TR.
    tr_value = float(tr) if tr is not None else sidecar_tr
    if times is not None:
        frame_times, time_source = np.asarray(times, dtype=float).ravel(), "given"
        if recorded is not None:
            replaced = replaced_times_warning(recorded, frame_times, recorded_source)
            if replaced:
                warnings.append(replaced)
    elif recorded is not None:
        frame_times, time_source = recorded, recorded_source
        if tr is not None:
            conflict = tr_mismatch_warning(frame_times, tr, time_source)
            if conflict:
                warnings.append(conflict)
    elif tr_value is not None:
        frame_times = np.arange(n_frames) * tr_value
        time_source = f"index × TR ({'given' if tr is not None else 'sidecar'})"
    else:
        raise InputDataError(
            f"The frame timing of {path} is unknown: give the repetition time or frame times "
            f"(command line: --tr SECONDS; or RepetitionTime / VolumeTiming in {side.name}). "
            f"The NIfTI header's time step ({header_step:g}) is not trusted: many tools leave it at 1."
        )
    if frame_times.size != n_frames:
        raise InputDataError(
            f"{frame_times.size} frame times ({time_source}) were given for the {n_frames} frames of {path}."
        )
    metadata = {"path": str(path), "time_source": time_source, "sidecar": str(side) if facts else None,
                "times_recorded": time_source != "given" and recorded is not None, "warnings": warnings}
    for key in ("Manufacturer", "ManufacturersModelName", "SeriesDescription", "MagneticFieldStrength",
                "ProtocolName"):
        if key in facts:
            metadata[key] = facts[key]
    from .slicetiming import sidecar_metadata

    metadata.update(sidecar_metadata(facts, signal.shape[0], warnings))  # BIDS SliceTiming (issue 17 hook)
    series = PerfusionSeries(signal, frame_times, geometry, modality, te=te_value, tr=tr_value,
                             source=f"NIfTI {path.name}", metadata=metadata)
    warnings.extend(validate_series(series))
    return series


def write_nifti_perfusion(path, series: PerfusionSeries, *, sidecar=True) -> Path:
    """Write ``series`` as a 4D NIfTI (``.nii``/``.nii.gz``) and, with ``sidecar``, a BIDS JSON
    (RepetitionTime, EchoTime in s, VolumeTiming = frame times, Modality). Returns the path."""
    path = Path(path)
    if not path.name.lower().endswith(NIFTI_SUFFIXES):
        raise OutputError(f"{path}: a NIfTI file name must end in .nii or .nii.gz.")
    prepare_output_file(path)
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
    prepare_output_file(path)
    try:
        image = geometry.to_sitk(array)
        sitk.WriteImage(image, str(path), True)
    except InputDataError as error:
        raise OutputError(f"Cannot write {path}: {error}") from None
    except RuntimeError as error:
        raise OutputError(f"Could not write {path}: {str(error).strip().splitlines()[-1][:200]}") from None
    return path


