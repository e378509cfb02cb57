"""DICOM 4D perfusion series (CT perfusion, DSC-MRI): classic per-slice files and enhanced
multi-frame objects.

Headers are read with pydicom; pixel data with pydicom, falling back to SimpleITK (GDCM) for
transfer syntaxes pydicom cannot decode. Every 2D image (a classic file or one frame of an
enhanced object) becomes a :class:`_Plane` with its position, orientation, pixel spacing,
time and rescale. Planes are grouped by slice position (sorted along the slice normal) and,
within each position, ordered in time, giving ``[K, J, I, T]``.

Frame order: the vendor's temporal index (TemporalPositionIdentifier / TemporalPositionIndex)
when every plane has one, otherwise the acquisition time, then InstanceNumber. Frame times and
slice timing: :mod:`dicom_timing` (per-frame header times, or frame index × TR when the headers
carry one time for the whole series, as GE classic EPI does). Siemens mosaics (all slices of a
volume tiled in one image) are cut into their slices by :mod:`dicom_mosaic` (CSA header through
nibabel). Files named ``*.dcm.gz`` are read through gzip; FIFOs, sockets and device files in the
folder are skipped without being opened.

Values: stored × RescaleSlope + RescaleIntercept (CT: HU). Philips MR with an MR scale slope
(2005,100E): the floating-point value (stored × RS + RI) / (RS × SS), as dcm2niix writes it
(the display value differs by the constant factor 1/(RS·SS) within a series; DSC ratios do not
change); ``metadata["value_scaling"]`` says which.

A series whose in-plane extent exceeds 500 mm (no head is that wide: a mosaic read as one slice
gives ~1.2 m) is refused.

Geometry: ImagePositionPatient / ImageOrientationPatient / PixelSpacing are LPS (DICOM
PS3.3 C.7.6.2.1.1); the IJK-to-RAS matrix flips x and y.
"""

from __future__ import annotations

import gzip
import io
import os
import stat
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np

from . import dicom_mosaic
from .dicom_timing import TIME_SOURCES, frame_timing
from .errors import InputDataError, InputFileError, StrokeMismatchError
from .geometry import LPS_TO_RAS, Geometry
from .series import PerfusionSeries

MAX_HEAD_FOV_MM = 500.0  # no head (nor any CT/MR head field of view) is wider than this
MAX_GZIP_BYTES = 2 * 1024**3  # a .dcm.gz inflating beyond this is refused, not loaded
PHILIPS_SCALE_SLOPE = (0x2005, 0x100E)
GE_RTIA_TIMER = (0x0021, 0x105E)  # GEMS_RELA_01 RTIA_timer (DS, s): when each slice was acquired  # Philips MR Imaging DD 001, MR scale slope (FL)


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
    problem: str | None = None  # why the series cannot be placed (e.g. no ImagePositionPatient)

    def label(self) -> str:
        """One line for listings: number, description, modality, frames (or why it cannot be
        read), UID."""
        number = "?" if self.number is None else str(self.number)
        if self.problem and not self.n_slices:
            shape = f"cannot be read: {self.problem}"
        else:
            shape = f"{self.n_slices} slices x {self.n_frames} frames"
        return f"#{number} '{self.description}' {self.modality}, {shape} ({self.n_files} files), UID {self.uid}"


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
    tile: int | None = None  # slice index inside a Siemens mosaic
    mosaic: object = None  # dicom_mosaic.MosaicLayout of that mosaic
    slice_time: float | None = None  # s after the volume onset (CSA MosaicRefAcqTimes)


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
        if GE_RTIA_TIMER in ds and "GE" in str(ds.get("Manufacturer", "") or "").upper():
            try:  # GE RTIA timer (s from the start of the run): slice timing only
                times["ge_rtia_timer"] = _number(ds[GE_RTIA_TIMER].value)
            except (KeyError, TypeError):
                pass
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


def _philips_scale(ds):
    """Philips MR scale slope (2005,100E) when the file is Philips MR and carries it, else None."""
    if "PHILIPS" not in str(ds.get("Manufacturer", "") or "").upper() or PHILIPS_SCALE_SLOPE not in ds:
        return None
    try:
        value = ds[PHILIPS_SCALE_SLOPE].value
        value = float(value[0] if isinstance(value, (list, tuple)) else value)
    except (TypeError, ValueError, IndexError):
        return None
    return value if np.isfinite(value) and value != 0 else None


def _classic_planes(path, ds):
    if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
        raise InputFileError(
            f"{path} has no ImagePositionPatient/ImageOrientationPatient: its position in the "
            "patient is unknown. Export the series again with full geometry tags, or convert it "
            "with dcm2niix and give the NIfTI file."
        )
    spacing = ds.get("PixelSpacing", None) or ds.get("ImagerPixelSpacing", None)
    if spacing is None:
        raise InputFileError(f"{path} has no PixelSpacing: the voxel size is unknown.")
    slope, intercept = _rescale(ds)
    scale_slope = _philips_scale(ds)
    if scale_slope is not None:  # floating-point value = (SV·RS + RI) / (RS·SS)
        slope, intercept = 1.0 / scale_slope, intercept / (slope * scale_slope)
    echo = _number(ds.get("EchoTime", None))
    temporal = _number(ds.get("TemporalPositionIdentifier", None))
    if dicom_mosaic.looks_like_mosaic(ds):
        return _mosaic_planes(path, ds, slope, intercept, echo, temporal)
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


def _mosaic_planes(path, ds, slope, intercept, echo, temporal):
    """One plane per tile of a Siemens mosaic (geometry and slice times from the CSA header)."""
    layout = dicom_mosaic.mosaic_layout(path, ds)
    orientation = _floats(ds.ImageOrientationPatient, 6, "ImageOrientationPatient")
    spacing = _floats(ds.PixelSpacing, 2, "PixelSpacing")
    times = _time_candidates(ds)
    instance = int(_number(ds.get("InstanceNumber", None)) or 0)
    return [
        _Plane(
            path=path, frame=None, position=layout.first + s * layout.step * layout.normal,
            orientation=orientation, spacing=spacing, rows=layout.rows, columns=layout.columns,
            times=times, temporal_index=temporal, instance=instance, slope=slope, intercept=intercept,
            te=None if echo is None else echo / 1000.0, tile=s, mosaic=layout,
            slice_time=None if layout.slice_times is None else float(layout.slice_times[s]),
        )
        for s in range(layout.n)
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
        with _open(path) as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except Exception:  # noqa: BLE001 - unreadable or a damaged .gz (zlib.error): not DICOM-like
        return False


def _is_regular_file(path):
    """True for a regular file (following symlinks); FIFOs, sockets and devices would block
    or never end when read."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _open(path):
    """A binary file object for ``path``; ``*.gz`` is inflated (at most MAX_GZIP_BYTES)."""
    if not str(path).lower().endswith(".gz"):
        return open(path, "rb")
    with gzip.open(path, "rb") as handle:
        data = handle.read(MAX_GZIP_BYTES + 1)
    if len(data) > MAX_GZIP_BYTES:
        raise InputFileError(f"{path} inflates to more than {MAX_GZIP_BYTES // 1024**3} GiB; it is not one DICOM image.")
    return io.BytesIO(data)


def _dcmread(path, **kwargs):
    import pydicom

    with _open(path) as handle:
        return pydicom.dcmread(handle, **kwargs)


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
            if not _is_regular_file(path):
                continue  # a FIFO, socket or device file: opening it could block forever
            n_files += 1
            try:
                ds = _dcmread(path, stop_before_pixels=True)
            except InvalidDicomError:
                if _has_dicm_magic(path):
                    corrupt.append(path)
                continue
            except Exception:  # noqa: BLE001 - any parser failure means a damaged file
                if _has_dicm_magic(path) or name.lower().endswith((".dcm", ".ima", ".dcm.gz")):
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
    n_planes, positions, problem = 0, set(), None
    for path, item in items:
        try:
            planes = _planes_of(path, item)
        except StrokeMismatchError as error:
            if problem is None:
                text = str(error)
                problem = text[len(str(path)):].strip() if text.startswith(str(path)) else text
            continue
        except (AttributeError, TypeError, ValueError) as error:
            problem = problem or f"unreadable header ({type(error).__name__}: {error})"
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
        problem=problem,
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
    try:
        dataset = _dcmread(path)
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
    if plane.tile is not None:
        layout = plane.mosaic
        if array.shape != (layout.rows * layout.grid, layout.columns * layout.grid):
            raise InputFileError(
                f"The pixel data of {plane.path} ({array.shape}) is not the {layout.grid} x {layout.grid} "
                "mosaic its header describes: the file is truncated or corrupt."
            )
        array = dicom_mosaic.tile(array, layout, plane.tile)
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


def _repetition_time(ds):
    """RepetitionTime (s) of a classic file or an enhanced object (shared, then first per-frame
    MR Timing and Related Parameters functional group), or None."""
    value = _number(ds.get("RepetitionTime", None))
    if value is None:
        shared = _first_item(ds, "SharedFunctionalGroupsSequence")
        value = _number(_group_attr(None, shared, "MRTimingAndRelatedParametersSequence", "RepetitionTime"))
    if value is None:
        per_frame = _first_item(ds, "PerFrameFunctionalGroupsSequence")
        value = _number(_group_attr(per_frame, None, "MRTimingAndRelatedParametersSequence", "RepetitionTime"))
    return None if value is None or value <= 0 else value / 1000.0


def _check_extent(info, first):
    """Refuse an in-plane extent no head has (a mosaic read as one slice is ~1.2 m wide)."""
    extent = np.array([first.rows * first.spacing[0], first.columns * first.spacing[1]])
    if np.max(extent) <= MAX_HEAD_FOV_MM:
        return
    raise InputFileError(
        f"Series {info.uid} ('{info.description}') has images {extent[1]:.0f} x {extent[0]:.0f} mm "
        f"({first.columns} x {first.rows} pixels of {first.spacing[1]:g} x {first.spacing[0]:g} mm): no "
        f"head is wider than {MAX_HEAD_FOV_MM:.0f} mm, so this is not one slice of a head. It is "
        "probably a mosaic (several slices tiled in one image) whose tiling its headers do not describe. "
        + "Export the series as separate slices or enhanced DICOM, or convert it with dcm2niix."
    )


def _assemble(info, items, folder, given_tr=None):
    planes = []
    for path, ds in items:
        planes.extend(_planes_of(path, ds))
    first = planes[0]
    _check_extent(info, first)
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
    ds = items[0][1]
    header_tr = _repetition_time(ds)
    tr_for_timing, tr_label = (header_tr, "RepetitionTime") if header_tr is not None else (given_tr, "given TR")
    timing = frame_timing(grid, tr=tr_for_timing, tr_source=tr_label,
                          manufacturer=str(ds.get("Manufacturer", "") or ""),
                          modality=str(ds.get("Modality", "") or ""))
    if timing.source == "index_tr" and not use_index:
        for row in grid:
            instances = [plane.instance for plane in row]
            if len(set(instances)) != len(instances) and len({plane.path for plane in row}) == len(row):
                raise InputFileError(
                    f"Series {info.uid}: the frames of one slice cannot be put in order: the headers give "
                    "no temporal position, one acquisition time for the whole series, and repeated "
                    "InstanceNumbers. Export the series again, or convert it with dcm2niix."
                )
    times = timing.times

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
    scale_slope = _philips_scale(ds)
    metadata = {
        "folder": str(folder),
        "series_uid": info.uid,
        "series_description": info.description,
        "study_date": str(ds.get("StudyDate", "") or "") or None,
        "study_description": str(ds.get("StudyDescription", "") or "") or None,
        "series_number": info.number,
        "manufacturer": str(ds.get("Manufacturer", "") or ""),
        "frame_time_source": timing.source,
        "time_source": timing.label,
        "frame_order": ("temporal index" if use_index else
                        "InstanceNumber" if timing.source == "index_tr" else "time"),
        "enhanced": any(plane.frame is not None for plane in planes),
        "mosaic": any(plane.tile is not None for plane in planes),
        "n_files": info.n_files,
        "value_scaling": (
            f"Philips floating point: (stored × RescaleSlope + RescaleIntercept) / (RescaleSlope × "
            f"MR scale slope (2005,100E) {scale_slope:g}), as dcm2niix"
            if scale_slope is not None else "stored × RescaleSlope + RescaleIntercept"),
    }
    if timing.slice_times is not None:
        metadata["slice_timing_s"] = [round(float(v), 6) for v in timing.slice_times]
        metadata["slice_timing_source"] = timing.slice_source
    else:
        metadata["slice_timing_source"] = None
    return PerfusionSeries(
        signal=signal,
        times=times,
        geometry=geometry,
        modality=modality,
        te=te,
        tr=header_tr if header_tr is not None else given_tr,
        source=f"DICOM series {info.number if info.number is not None else info.uid} in {folder}",
        metadata=metadata,
    )


def read_dicom_perfusion(folder, *, series=None, tr=None) -> PerfusionSeries:
    """Read a 4D perfusion series from a DICOM ``folder``.

    ``series`` chooses among several series (SeriesNumber, SeriesInstanceUID or description);
    without it a folder with several series raises an :class:`InputFileError` listing them.
    Returns signal ``[K, J, I, T]`` float32 (CT in HU after RescaleSlope/Intercept), frame
    times in s from the first frame, TE/TR in s. ``tr`` (s, e.g. the user's ``--tr``) times the
    frames as index × TR only when the headers give neither per-frame times nor a RepetitionTime.
    ``metadata`` names the time source (``time_source``), the slice timing (``slice_timing_s``,
    ``slice_timing_source``) and the value scaling. Any failure is a :class:`StrokeMismatchError`.
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
        return _assemble(info, by_series[info.uid], folder, given_tr=tr)
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
