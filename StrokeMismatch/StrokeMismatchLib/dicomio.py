"""DICOM 4D perfusion series (CT perfusion, DSC-MRI): classic per-slice files and enhanced
multi-frame objects.

Headers are read with pydicom; pixel data with pydicom, falling back to SimpleITK (GDCM) for
transfer syntaxes pydicom cannot decode. Every 2D image (a classic file or one frame of an
enhanced object) becomes a :class:`_Plane` with its position, orientation, pixel spacing,
time and rescale. Planes are grouped by slice position (sorted along the slice normal) and,
within each position, ordered in time, giving ``[K, J, I, T]``.

Frame order: the vendor's temporal index (TemporalPositionIdentifier / TemporalPositionIndex)
when every plane has one, otherwise the acquisition time. Frame times (s, relative to the first
frame) come from the first header source that is present on every plane and strictly
increasing: acquisition date-time, acquisition time, trigger time, content time. Unequal
intervals are kept as they are (variable-rate CTP).

Geometry: ImagePositionPatient / ImageOrientationPatient / PixelSpacing are LPS (DICOM
PS3.3 C.7.6.2.1.1); the IJK-to-RAS matrix flips x and y.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from .errors import InputDataError, InputFileError, StrokeMismatchError
from .geometry import LPS_TO_RAS, Geometry
from .series import PerfusionSeries

TIME_SOURCES = ("acquisition_datetime", "acquisition_time", "trigger_time", "content_time")


@dataclass
class DicomSeriesInfo:
    """One series found in a folder: ``uid``, ``description``, ``modality`` (DICOM value, e.g.
    "CT"), ``n_files``, ``n_frames`` (time points = planes / slice positions), ``n_slices``,
    ``number`` (SeriesNumber or None)."""

    uid: str
    description: str
    modality: str
    n_files: int
    n_frames: int
    n_slices: int = 0
    number: int | None = None
    files: list = field(default_factory=list, repr=False)

    def label(self) -> str:
        """One line for listings: number, description, modality, frames, UID."""
        number = "?" if self.number is None else str(self.number)
        return (
            f"#{number} '{self.description}' {self.modality}, {self.n_slices} slices x "
            f"{self.n_frames} frames ({self.n_files} files), UID {self.uid}"
        )


@dataclass
class _Plane:
    """One 2D image: geometry (LPS, mm), time candidates (s), temporal index, rescale."""

    path: str
    frame: int | None  # index in an enhanced object, None for a classic single-frame file
    position: np.ndarray
    orientation: np.ndarray
    spacing: np.ndarray  # (row spacing, column spacing) mm
    rows: int
    columns: int
    times: dict
    temporal_index: float | None
    instance: int
    slope: float
    intercept: float
    te: float | None  # s


# --- header parsing ------------------------------------------------------------------------


def _floats(value, n, name):
    try:
        array = np.array([float(v) for v in value], dtype=float)
    except (TypeError, ValueError):
        raise InputFileError(f"DICOM tag {name} is not numeric ({value!r}).") from None
    if array.shape != (n,) or not np.all(np.isfinite(array)):
        raise InputFileError(f"DICOM tag {name} must hold {n} finite numbers, got {value!r}.")
    return array


def _number(value):
    """float(value) or None when missing/unparseable."""
    try:
        if value is None or value == "":
            return None
        number = float(value)
        return number if np.isfinite(number) else None
    except (TypeError, ValueError):
        return None


def _tm_seconds(value):
    """DICOM TM (HHMMSS.FFFFFF, or the old HH:MM:SS) -> seconds of the day, or None."""
    if value is None:
        return None
    text = str(value).strip().replace(":", "")
    if len(text) < 2 or not text.replace(".", "", 1).isdigit():
        return None
    try:
        hours = int(text[0:2])
        minutes = int(text[2:4]) if len(text) >= 4 else 0
        seconds = float(text[4:]) if len(text) > 4 else 0.0
    except ValueError:
        return None
    return hours * 3600.0 + minutes * 60.0 + seconds


def _da_days(value):
    """DICOM DA (YYYYMMDD) -> ordinal day, or None."""
    try:
        return datetime.strptime(str(value).strip()[:8], "%Y%m%d").toordinal()
    except (TypeError, ValueError):
        return None


def _dt_seconds(value):
    """DICOM DT (YYYYMMDDHHMMSS.FFFFFF&ZZXX) -> seconds since year 1, or None."""
    if value is None:
        return None
    text = str(value).strip()
    for sign in "+-":
        cut = text.find(sign, 8)
        if cut > 0:
            text = text[:cut]
    days = _da_days(text[:8])
    if days is None:
        return None
    seconds = _tm_seconds(text[8:]) if len(text) > 8 else 0.0
    return None if seconds is None else days * 86400.0 + seconds


def _time_candidates(ds, *, enhanced=False, content=None, cardiac=None):
    """Candidate absolute times (s) of one plane from its headers (classic file, or one frame
    of an enhanced object with its FrameContent and CardiacSynchronization items)."""
    times = {}
    if not enhanced:
        times["acquisition_datetime"] = _dt_seconds(ds.get("AcquisitionDateTime", None))
        tm = _tm_seconds(ds.get("AcquisitionTime", None))
        day = _da_days(ds.get("AcquisitionDate", None)) or 0
        times["acquisition_time"] = None if tm is None else day * 86400.0 + tm
        trigger = _number(ds.get("TriggerTime", None))
        times["trigger_time"] = None if trigger is None else trigger / 1000.0
        tm = _tm_seconds(ds.get("ContentTime", None))
        day = _da_days(ds.get("ContentDate", None)) or 0
        times["content_time"] = None if tm is None else day * 86400.0 + tm
    else:
        get = (lambda item, name: item.get(name, None) if item is not None else None)
        times["acquisition_datetime"] = _dt_seconds(get(content, "FrameAcquisitionDateTime"))
        times["content_time"] = _dt_seconds(get(content, "FrameReferenceDateTime"))
        delay = _number(get(cardiac, "NominalCardiacTriggerDelayTime"))
        times["trigger_time"] = None if delay is None else delay / 1000.0
    return times


def _first_item(ds, sequence):
    value = ds.get(sequence, None) if ds is not None else None
    try:
        return value[0] if value else None
    except (TypeError, IndexError, KeyError):
        return None


def _rescale(ds):
    slope = _number(ds.get("RescaleSlope", None)) if ds is not None else None
    intercept = _number(ds.get("RescaleIntercept", None)) if ds is not None else None
    return (1.0 if slope is None or slope == 0 else slope), (0.0 if intercept is None else intercept)


def _classic_planes(path, ds):
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        raise InputFileError(
            f"{path} has no ImagePositionPatient/ImageOrientationPatient: its position in the "
            "patient is unknown. Export the series again with full geometry tags."
        )
    spacing = ds.get("PixelSpacing", None) or ds.get("ImagerPixelSpacing", None)
    if spacing is None:
        raise InputFileError(f"{path} has no PixelSpacing: the voxel size is unknown.")
    slope, intercept = _rescale(ds)
    echo = _number(ds.get("EchoTime", None))
    temporal = _number(ds.get("TemporalPositionIdentifier", None))
    return [
        _Plane(
            path=path,
            frame=None,
            position=_floats(ds.ImagePositionPatient, 3, "ImagePositionPatient"),
            orientation=_floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient"),
            spacing=_floats(spacing, 2, "PixelSpacing"),
            rows=int(ds.Rows),
            columns=int(ds.Columns),
            times=_time_candidates(ds),
            temporal_index=temporal,
            instance=int(_number(ds.get("InstanceNumber", None)) or 0),
            slope=slope,
            intercept=intercept,
            te=None if echo is None else echo / 1000.0,
        )
    ]


def _group_attr(per_frame, shared, sequence, attribute):
    """An attribute from a per-frame functional group, else the shared one, else None."""
    for group in (per_frame, shared):
        item = _first_item(group, sequence)
        if item is not None and attribute in item:
            return item.get(attribute)
    return None


def _enhanced_planes(path, ds):
    n_frames = int(ds.NumberOfFrames)
    per_frame = ds.get("PerFrameFunctionalGroupsSequence", None)
    shared = _first_item(ds, "SharedFunctionalGroupsSequence")
    if per_frame is None or len(per_frame) != n_frames:
        raise InputFileError(
            f"{path} is a multi-frame DICOM object without a complete per-frame functional "
            "group sequence; its frames cannot be placed in space and time."
        )
    planes = []
    for index, group in enumerate(per_frame):
        position = _group_attr(group, shared, "PlanePositionSequence", "ImagePositionPatient")
        orientation = _group_attr(group, shared, "PlaneOrientationSequence", "ImageOrientationPatient")
        spacing = _group_attr(group, shared, "PixelMeasuresSequence", "PixelSpacing")
        if position is None or orientation is None or spacing is None:
            raise InputFileError(
                f"Frame {index + 1} of {path} lacks plane position, orientation or pixel spacing."
            )
        content = _first_item(group, "FrameContentSequence")
        cardiac = _first_item(group, "CardiacSynchronizationSequence")
        temporal = _number(content.get("TemporalPositionIndex", None)) if content is not None else None
        slope = _group_attr(group, shared, "PixelValueTransformationSequence", "RescaleSlope")
        intercept = _group_attr(group, shared, "PixelValueTransformationSequence", "RescaleIntercept")
        if slope is None:
            slope, intercept = _rescale(ds)
        echo = _group_attr(group, shared, "MREchoSequence", "EffectiveEchoTime")
        echo = _number(echo) if echo is not None else _number(ds.get("EchoTime", None))
        slope = _number(slope)
        planes.append(
            _Plane(
                path=path,
                frame=index,
                position=_floats(position, 3, "ImagePositionPatient"),
                orientation=_floats(orientation, 6, "ImageOrientationPatient"),
                spacing=_floats(spacing, 2, "PixelSpacing"),
                rows=int(ds.Rows),
                columns=int(ds.Columns),
                times=_time_candidates(ds, enhanced=True, content=content, cardiac=cardiac),
                temporal_index=temporal,
                instance=index,
                slope=1.0 if not slope else slope,
                intercept=_number(intercept) or 0.0,
                te=None if echo is None else echo / 1000.0,
            )
        )
    return planes


def _planes_of(path, ds):
    if int(_number(ds.get("NumberOfFrames", None)) or 1) > 1 or "PerFrameFunctionalGroupsSequence" in ds:
        return _enhanced_planes(path, ds)
    return _classic_planes(path, ds)


# --- scanning a folder -----------------------------------------------------------------------


def _has_dicm_magic(path):
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _scan(folder):
    """Headers of every image file under ``folder``: (datasets by series UID, corrupt files)."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    folder = Path(folder)
    if not folder.exists():
        raise InputFileError(f"The folder {folder} does not exist. Check the path.")
    if not folder.is_dir():
        raise InputFileError(f"{folder} is not a folder. Give the folder that holds the DICOM files.")
    by_series: dict[str, list] = {}
    corrupt, n_files = [], 0
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            n_files += 1
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except InvalidDicomError:
                if _has_dicm_magic(path):
                    corrupt.append(path)
                continue
            except Exception:  # noqa: BLE001 - any parser failure means a damaged file
                if _has_dicm_magic(path) or name.lower().endswith((".dcm", ".ima")):
                    corrupt.append(path)
                continue
            if "Rows" not in ds or "SeriesInstanceUID" not in ds:
                continue  # DICOMDIR, structured reports, presentation states...
            by_series.setdefault(str(ds.SeriesInstanceUID), []).append((path, ds))
    if not by_series:
        detail = f" ({len(corrupt)} of them look like damaged DICOM files)" if corrupt else ""
        raise InputFileError(
            f"No DICOM images were found in {folder} ({n_files} files looked at{detail}). "
            "Give the folder that holds the perfusion series' DICOM files."
        )
    return by_series, corrupt


def _info(uid, items):
    ds = items[0][1]
    n_planes, positions = 0, set()
    for path, item in items:
        try:
            planes = _planes_of(path, item)
        except (StrokeMismatchError, AttributeError, TypeError, ValueError):
            continue
        n_planes += len(planes)
        for plane in planes:
            normal = np.cross(plane.orientation[:3], plane.orientation[3:])
            positions.add(round(float(plane.position @ normal), 2))
    n_slices = max(len(positions), 1)
    number = _number(ds.get("SeriesNumber", None))
    return DicomSeriesInfo(
        uid=uid,
        description=str(ds.get("SeriesDescription", "") or ""),
        modality=str(ds.get("Modality", "") or ""),
        n_files=len(items),
        n_frames=n_planes // n_slices,
        n_slices=len(positions),
        number=None if number is None else int(number),
        files=[path for path, _ in items],
    )


def list_dicom_series(folder) -> list[DicomSeriesInfo]:
    """The image series in ``folder`` (searched recursively), sorted by series number."""
    try:
        by_series, _ = _scan(folder)
        infos = [_info(uid, items) for uid, items in by_series.items()]
    except StrokeMismatchError:
        raise
    except Exception as exc:  # noqa: BLE001 - never let a parser traceback reach the user
        raise InputFileError(f"Could not list the DICOM series in {folder}: {exc}.") from exc
    return sorted(infos, key=lambda info: (info.number is None, info.number or 0, info.uid))


# --- assembling the 4D series ---------------------------------------------------------------


def _select(infos, by_series, series, folder):
    if series is None:
        if len(infos) == 1:
            return infos[0]
        listing = "\n  ".join(info.label() for info in infos)
        raise InputFileError(
            f"The folder {folder} holds {len(infos)} DICOM series; choose one with --series "
            f"(its number, UID or description):\n  {listing}"
        )
    key = str(series).strip()
    matches = [
        info
        for info in infos
        if key == info.uid or (info.number is not None and key == str(info.number))
    ]
    if not matches:
        matches = [info for info in infos if key.lower() == info.description.lower()]
    if len(matches) != 1:
        listing = "\n  ".join(info.label() for info in infos)
        what = "matches no" if not matches else "matches more than one"
        raise InputFileError(
            f"--series {key!r} {what} series in {folder}; give a number or UID from:\n  {listing}"
        )
    return matches[0]


def _pixels(path, cache):
    """Raw stored pixel array of a file ([rows, cols] or [frames, rows, cols]) and whether the
    rescale was already applied (SimpleITK/GDCM applies it)."""
    if path in cache:
        return cache[path]
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
        _check_pixel_data_length(dataset, path)
        array = np.asarray(dataset.pixel_array)
        applied = False
    except InputFileError:
        raise
    except Exception as pydicom_error:  # noqa: BLE001 - try GDCM through SimpleITK next
        try:
            import SimpleITK as sitk

            array = sitk.GetArrayFromImage(sitk.ReadImage(path))
            array = array[0] if array.ndim == 3 and array.shape[0] == 1 else array
            applied = True
        except Exception:  # noqa: BLE001
            raise InputFileError(
                f"The pixel data of {path} cannot be decoded ({pydicom_error}). The file may be "
                "truncated or corrupt, or use a compression this installation cannot read: "
                "re-export the series uncompressed."
            ) from None
    cache.clear()  # keep one file in memory at a time (enhanced objects can be large)
    cache[path] = (array, applied)
    return array, applied


def _check_pixel_data_length(dataset, path):
    """Refuse uncompressed pixel data shorter than Rows × Columns × frames × samples × bytes.

    pydicom 3 notices a truncated value when reading; pydicom 2.4 (Slicer 5.10) returns the
    short value, so a cut file would otherwise be decoded silently."""
    syntax = getattr(getattr(dataset, "file_meta", None), "TransferSyntaxUID", None)
    if "PixelData" not in dataset or syntax is None or syntax.is_compressed:
        return
    expected = (int(dataset.Rows) * int(dataset.Columns) * int(getattr(dataset, "NumberOfFrames", 1) or 1)
                * int(getattr(dataset, "SamplesPerPixel", 1) or 1) * int(dataset.BitsAllocated) // 8)
    if len(dataset.PixelData) < expected:
        raise InputFileError(
            f"The pixel data of {path} is {len(dataset.PixelData)} bytes where its header announces "
            f"{expected}: the file is truncated or corrupt. Re-export the series."
        )


def _plane_pixels(plane, cache):
    array, applied = _pixels(plane.path, cache)
    if plane.frame is not None:
        if array.ndim != 3 or plane.frame >= array.shape[0]:
            raise InputFileError(
                f"{plane.path} has fewer frames of pixel data than its header announces: the "
                "file is truncated or corrupt."
            )
        array = array[plane.frame]
    if array.shape != (plane.rows, plane.columns):
        raise InputFileError(
            f"The pixel data of {plane.path} ({array.shape}) does not match its Rows x Columns "
            f"({plane.rows} x {plane.columns}): the file is truncated or corrupt."
        )
    array = array.astype(np.float32)
    if not applied and (plane.slope != 1.0 or plane.intercept != 0.0):
        array = array * np.float32(plane.slope) + np.float32(plane.intercept)
    return array


def _frame_times(grid):
    """Frame times (s from the first frame) and the header source used, from the planes
    ``grid[k][t]``; the first source present everywhere and strictly increasing wins."""
    tried = []
    for source in TIME_SOURCES:
        values = np.array([[plane.times.get(source) for plane in row] for row in grid], dtype=object)
        if any(v is None for v in values.ravel()):
            continue
        values = values.astype(float)
        # Midnight crossing for time-of-day sources without a date.
        times = np.median(values, axis=0)
        if source in ("acquisition_time", "content_time") and np.any(np.diff(times) < -43200):
            values = np.where(values < values[:, :1] - 43200, values + 86400.0, values)
            times = np.median(values, axis=0)
        times = times - times[0]
        if np.all(np.diff(times) > 0):
            return times, source
        tried.append(source)
    if tried:
        raise InputDataError(
            "The frame times in the DICOM headers are not strictly increasing "
            f"(checked {', '.join(t.replace('_', ' ') for t in tried)}): frames repeat or are out "
            "of order. Check that the folder holds one complete acquisition, or convert the "
            "series to NIfTI with a sidecar listing the frame times."
        )
    raise InputFileError(
        "The DICOM headers give no per-frame times (no acquisition, trigger or content time). "
        "Convert the series to NIfTI with a JSON sidecar giving the frame times (s)."
    )


def _assemble(info, items, folder):
    planes = []
    for path, ds in items:
        planes.extend(_planes_of(path, ds))
    first = planes[0]
    for plane in planes:
        if (plane.rows, plane.columns) != (first.rows, first.columns):
            raise InputFileError(
                f"Series {info.uid} mixes image sizes ({first.rows}x{first.columns} and "
                f"{plane.rows}x{plane.columns}); it is not a single perfusion acquisition."
            )
        if not np.allclose(plane.orientation, first.orientation, atol=1e-3):
            raise InputFileError(
                f"Series {info.uid} mixes slice orientations; it is not a single perfusion "
                "acquisition. Choose the dynamic series."
            )
        if not np.allclose(plane.spacing, first.spacing, atol=1e-3):
            raise InputFileError(f"Series {info.uid} mixes pixel spacings; it cannot be stacked.")
    row_dir, col_dir = first.orientation[:3], first.orientation[3:]
    normal = np.cross(row_dir, col_dir)
    if np.linalg.norm(normal) < 1e-3:
        raise InputFileError("ImageOrientationPatient has parallel row and column directions.")
    normal = normal / np.linalg.norm(normal)
    distance = np.array([plane.position @ normal for plane in planes])
    order = np.argsort(distance, kind="stable")
    slices, keys = [], []
    for index in order:
        if keys and abs(distance[index] - keys[-1]) < 1e-2:
            slices[-1].append(planes[index])
        else:
            keys.append(distance[index])
            slices.append([planes[index]])
    counts = {len(group) for group in slices}
    if len(counts) != 1:
        raise InputFileError(
            f"Series {info.uid} is incomplete: its {len(slices)} slice positions have different "
            f"numbers of time points ({min(counts)} to {max(counts)}). Files are missing or the "
            "folder mixes acquisitions; export the complete series again."
        )
    n_frames = counts.pop()
    if n_frames < 2:
        raise InputDataError(
            f"Series {info.uid} ('{info.description}') is a 3D volume ({len(slices)} slices, one "
            "time point), not a 4D perfusion series. Choose the dynamic perfusion series."
        )
    use_index = all(plane.temporal_index is not None for plane in planes)

    def time_key(plane):
        primary = plane.temporal_index if use_index else 0.0
        fallback = next((plane.times[s] for s in TIME_SOURCES if plane.times.get(s) is not None), 0.0)
        return (primary, fallback, plane.instance)

    grid = [sorted(group, key=time_key) for group in slices]
    times, time_source = _frame_times(grid)

    keys = np.asarray(keys)
    if len(keys) > 1:
        gaps = np.diff(keys)
        if np.max(gaps) > 1.2 * np.min(gaps):
            raise InputFileError(
                f"Series {info.uid} has uneven slice spacing ({np.min(gaps):.2f} to "
                f"{np.max(gaps):.2f} mm): slices are missing. Export the complete series again."
            )
        step = (grid[-1][0].position - grid[0][0].position) / (len(keys) - 1)
    else:
        ds = items[0][1]
        thickness = _number(ds.get("SpacingBetweenSlices", None)) or _number(ds.get("SliceThickness", None))
        step = normal * (thickness or 1.0)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, 0] = row_dir * first.spacing[1]
    ijk_to_lps[:3, 1] = col_dir * first.spacing[0]
    ijk_to_lps[:3, 2] = step
    ijk_to_lps[:3, 3] = grid[0][0].position
    geometry = Geometry(LPS_TO_RAS @ ijk_to_lps, (len(keys), first.rows, first.columns))

    signal = np.empty((len(keys), first.rows, first.columns, n_frames), dtype=np.float32)
    cache: dict = {}
    # Read file by file (enhanced objects hold many planes) to decode each file once.
    by_file: dict[str, list] = {}
    for k, row in enumerate(grid):
        for t, plane in enumerate(row):
            by_file.setdefault(plane.path, []).append((k, t, plane))
    for path, entries in by_file.items():
        for k, t, plane in entries:
            signal[k, :, :, t] = _plane_pixels(plane, cache)

    ds = items[0][1]
    modality_tag = str(ds.get("Modality", "") or "").upper()
    modality = {"MR": "mr", "CT": "ct"}.get(modality_tag)
    if modality is None:
        raise InputFileError(
            f"Series {info.uid} has modality {modality_tag or 'unknown'!r}; only CT and MR "
            "perfusion series can be analysed."
        )
    te_values = [plane.te for plane in planes if plane.te is not None]
    te = float(np.median(te_values)) if te_values and modality == "mr" else None
    if te is not None and te <= 0:
        te = None
    tr = _number(ds.get("RepetitionTime", None))
    metadata = {
        "series_uid": info.uid,
        "series_description": info.description,
        "series_number": info.number,
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "frame_time_source": time_source,
        "frame_order": "temporal index" if use_index else "time",
        "enhanced": any(plane.frame is not None for plane in planes),
        "n_files": info.n_files,
    }
    return PerfusionSeries(
        signal=signal,
        times=times,
        geometry=geometry,
        modality=modality,
        te=te,
        tr=None if tr is None else tr / 1000.0,
        source=f"DICOM series {info.number if info.number is not None else info.uid} in {folder}",
        metadata=metadata,
    )


def read_dicom_perfusion(folder, *, series=None) -> PerfusionSeries:
    """Read a 4D perfusion series from a DICOM ``folder``.

    ``series`` chooses among several series (SeriesNumber, SeriesInstanceUID or description);
    without it a folder with several series raises an :class:`InputFileError` listing them.
    Returns signal ``[K, J, I, T]`` float32 (CT in HU after RescaleSlope/Intercept), frame
    times in s from the first frame, TE/TR in s. Any failure is a :class:`StrokeMismatchError`.
    """
    try:
        by_series, corrupt = _scan(folder)
        infos = [_info(uid, items) for uid, items in by_series.items()]
        infos.sort(key=lambda info: (info.number is None, info.number or 0, info.uid))
        info = _select(infos, by_series, series, folder)
        if corrupt:
            names = ", ".join(os.path.basename(p) for p in corrupt[:5])
            raise InputFileError(
                f"{len(corrupt)} file(s) in {folder} look like DICOM but cannot be read "
                f"(truncated or corrupt): {names}. Remove them or export the series again."
            )
        return _assemble(info, by_series[info.uid], folder)
    except StrokeMismatchError:
        raise
    except MemoryError:
        raise InputFileError(f"The DICOM series in {folder} is too large to load in memory.") from None
    except Exception as exc:  # noqa: BLE001 - never let a parser traceback reach the user
        raise InputFileError(
            f"The DICOM files in {folder} could not be read as a perfusion series "
            f"({type(exc).__name__}: {exc}). They may be corrupt or incomplete; export the "
            "series again."
        ) from exc
