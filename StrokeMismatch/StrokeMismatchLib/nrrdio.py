"""Slicer volume sequences (``.seq.nrrd``) without Slicer: read and write.

``.seq.nrrd`` is written as Slicer's ``vtkMRMLVolumeSequenceStorageNode`` writes it (verified
against slicer-core 5.12): a 4-D NRRD whose last header axis (the slowest in the file, numpy's
first) is a ``list`` axis labelled ``time`` with unit ``s`` and the key-value fields
``axis 3 index type:=numeric`` and ``axis 3 index values:=0 1.5 3 …``. The reader accepts the
list axis at any position (older Slicer versions wrote it first) and ``ms`` units.

The reader parses the header first, checks the grid (voxel size, field of view) and the data
size it announces, and only then reads the data: compressed data are inflated in pieces into a
buffer of exactly the announced size, so a payload that inflates beyond it is refused without
ever being inflated whole. NRRD stores LPS (or RAS); the geometry is converted to IJK-to-RAS.
"""

from __future__ import annotations

import bz2
import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from .errors import InputDataError, InputFileError, OutputError
from .geometry import LPS_TO_RAS, Geometry
from .iopaths import check_input_file, prepare_output_file
from .series import PerfusionSeries
from .validation import (check_voxel_size, replaced_times_warning, resolve_modality, tr_mismatch_warning,
                         validate_series)

SEQUENCE_SUFFIXES = (".seq.nrrd", ".nrrd", ".nhdr")
# Longest NRRD header read (bytes); real headers are a few kB.
MAX_HEADER_BYTES = 1 << 20
# Deflate cannot compress by more than about 1032:1 (RFC 1951 maximum run encoding).
MAX_DEFLATE_RATIO = 1100

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


def _read_nrrd_header(path: Path) -> tuple[dict, dict, int]:
    """Parse an attached-data NRRD header: (fields, key-values, byte offset of the data)."""
    check_input_file(path, "NRRD file")
    try:
        with open(path, "rb") as handle:
            head = handle.read(MAX_HEADER_BYTES)
    except OSError as error:
        raise InputFileError(f"Cannot read {path}: {error}") from None
    if not head.startswith(b"NRRD000"):
        raise InputFileError(f"{path} is not a NRRD file (no NRRD magic line). Check the file or its suffix.")
    end = head.find(b"\n\n")
    if end < 0:
        raise InputFileError(f"{path} is truncated: its NRRD header never ends. Copy or export the file again.")
    header = head[:end].decode("latin-1").splitlines()
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
    return fields, keyvalues, end + 2


def _nrrd_sizes_and_type(path: Path, fields: dict) -> tuple[list[int], np.dtype]:
    try:
        sizes = [int(s) for s in fields["sizes"].split()]
        dtype = np.dtype(_NRRD_TYPES[fields["type"].lower()])
    except KeyError as error:
        raise InputFileError(f"{path}: the NRRD header lacks or misstates {error}. The file is damaged.") from None
    except ValueError:
        raise InputFileError(f"{path}: the NRRD sizes {fields['sizes']!r} are not whole numbers.") from None
    if not sizes or any(n <= 0 for n in sizes):
        raise InputFileError(f"{path}: the NRRD header gives impossible sizes {sizes}. The file is damaged.")
    byte_order = ">" if fields.get("endian", "little").lower() == "big" else "<"
    return sizes, dtype.newbyteorder(byte_order)


def _inflate_bounded(handle, decompressor, size: int, path: Path) -> bytearray:
    """Inflate from ``handle`` into exactly ``size`` bytes; refuse a stream that inflates to more
    (never inflates more than ``size`` + 1 bytes) or ends before ``size``."""
    out = bytearray(size)
    view = memoryview(out)
    filled = 0
    pending = b""
    while True:
        if not pending:
            pending = handle.read(1 << 20)
            if not pending:
                break
        piece = decompressor.decompress(pending, size + 1 - filled)
        pending = getattr(decompressor, "unconsumed_tail", b"")
        if len(piece) > size - filled:
            raise InputFileError(
                f"{path}: the compressed image data inflate to more than the {size} bytes the header "
                "announces (sizes × type). The file is damaged or not what its header says; refused "
                "without inflating it whole. Export the series again."
            )
        view[filled:filled + len(piece)] = piece
        filled += len(piece)
        if getattr(decompressor, "eof", False):
            break
        if filled == size and not pending:
            # Everything announced is there; a stream that would continue is refused above on the
            # next piece, so read one more block to see whether more data follows.
            pending = handle.read(1 << 20)
            if not pending:
                break
    if filled < size:
        raise InputFileError(
            f"{path} is truncated: {filled} bytes of image data where the header announces {size}. "
            "Copy or export the file again."
        )
    return out


def _read_nrrd_data(path: Path, fields: dict, offset: int, sizes: list[int], dtype: np.dtype) -> np.ndarray:
    """The voxel data of an attached NRRD, in numpy C order (= reversed file axes), native byte order."""
    count = int(np.prod(sizes, dtype=np.int64))
    needed = count * dtype.itemsize
    encoding = fields.get("encoding", "raw").lower()
    skip = int(fields.get("byte skip", fields.get("byteskip", "0")))
    line_skip = int(fields.get("line skip", fields.get("lineskip", "0")))
    file_size = path.stat().st_size
    available = file_size - offset
    try:
        with open(path, "rb") as handle:
            handle.seek(offset)
            for _ in range(max(line_skip, 0)):
                handle.readline()
            if encoding == "raw":
                if skip == -1:
                    handle.seek(max(file_size - needed, handle.tell()))
                elif skip > 0:
                    handle.seek(skip, 1)
                remaining = file_size - handle.tell()
                if remaining < needed:
                    raise InputFileError(
                        f"{path} is truncated: {remaining} bytes of image data for {count} voxels of "
                        f"{dtype.itemsize} bytes. Copy or export the file again."
                    )
                data = bytearray(needed)
                handle.readinto(data)
            elif encoding in ("gzip", "gz", "bzip2", "bz2"):
                total = needed + max(skip, 0)
                if encoding in ("gzip", "gz") and total > MAX_DEFLATE_RATIO * max(available, 1):
                    raise InputFileError(
                        f"{path} is truncated: {available} compressed bytes cannot hold the {total} bytes "
                        "of image data the header announces. Copy or export the file again."
                    )
                decompressor = (zlib.decompressobj(16 + zlib.MAX_WBITS) if encoding in ("gzip", "gz")
                                else bz2.BZ2Decompressor())
                data = _inflate_bounded(handle, decompressor, total, path)
                if skip > 0:
                    data = data[skip:]
            elif encoding in ("ascii", "text", "txt"):
                values = np.array(handle.read().split(), dtype=float)
                if values.size < count:
                    raise InputFileError(
                        f"{path} is truncated: {values.size} numbers for {count} voxels. Export the file again."
                    )
                data = values[:count].astype(dtype).tobytes()
            else:
                raise InputFileError(f"{path}: NRRD encoding {encoding!r} is not supported (use raw or gzip).")
    except InputFileError:
        raise
    except (OSError, EOFError, zlib.error, ValueError) as error:
        raise InputFileError(
            f"{path} is damaged or truncated: its image data cannot be read ({error}). "
            "Copy or export the file again."
        ) from None
    array = np.frombuffer(data, dtype=dtype, count=count).reshape(sizes[::-1])
    if dtype.byteorder not in ("=", "|") and dtype.newbyteorder("=") != dtype:
        return array.astype(dtype.newbyteorder("="))
    return array


def _read_nrrd(path: Path) -> tuple[np.ndarray, dict, dict]:
    """Read an attached-data NRRD: (array in numpy C order = reversed file axes, fields, key-values)."""
    fields, keyvalues, offset = _read_nrrd_header(path)
    sizes, dtype = _nrrd_sizes_and_type(path, fields)
    return _read_nrrd_data(path, fields, offset, sizes, dtype), fields, keyvalues


def read_seq_nrrd(path, *, modality=None, te=None, tr=None, times=None, force_modality=False) -> PerfusionSeries:
    """Read a Slicer volume sequence (``.seq.nrrd``) as a :class:`PerfusionSeries`.

    The ``list`` axis gives the frames, its ``axis N index values`` the times (``units`` ``ms``
    converted to s). ``te`` (s) overrides the TE the file records (our writer stores modality, TE
    and TR as ``StrokeMismatch.*`` key-value fields); the recorded frame times win over a given
    ``tr`` (a disagreement is reported in ``metadata["warnings"]``); explicit ``times`` (s) replace
    them. A ``modality`` contradicting the recorded one is refused unless ``force_modality``.
    The grid and the data size are checked on the header, before any voxel is read."""
    path = Path(path)
    fields, keyvalues, offset = _read_nrrd_header(path)
    sizes, dtype = _nrrd_sizes_and_type(path, fields)
    dimension = int(fields.get("dimension", len(sizes)))
    if dimension == 3:
        raise InputDataError(f"{path} is a 3D volume; give the 4D dynamic series (a volume sequence).")
    if dimension != 4 or len(sizes) != 4:
        raise InputDataError(f"{path} has {dimension} axes; a volume sequence has 4 (3 space + time).")
    kinds = [k.lower() for k in _nrrd_list(fields.get("kinds", ""))]
    directions_text = re.findall(r"\([^)]*\)|none", fields.get("space directions", ""))
    try:
        directions = [_nrrd_vector(d) for d in directions_text]
    except ValueError:
        raise InputFileError(f"{path}: unreadable NRRD space directions. The file is damaged.") from None
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
        if directions[n] is None or len(directions[n]) != 3:
            raise InputFileError(f"{path}: space axis {n} has no direction. The file is damaged.")
        matrix[:3, column] = directions[n]
    try:
        origin = _nrrd_vector(fields.get("space origin", "(0,0,0)")) or [0.0, 0.0, 0.0]
        matrix[:3, 3] = origin
    except ValueError:
        raise InputFileError(f"{path}: unreadable NRRD space origin. The file is damaged.") from None
    ijk_to_ras = flip @ matrix
    grid_shape = (sizes[space_axes[2]], sizes[space_axes[1]], sizes[space_axes[0]])
    geometry = Geometry(ijk_to_ras, grid_shape)
    check_voxel_size(geometry.spacing, grid_shape, f"sequence {path.name}")

    values = keyvalues.get(f"axis {axis} index values")
    if values is None:
        raise InputDataError(
            f"{path} does not record the frame times (no 'axis {axis} index values' field). Re-save the "
            "sequence from Slicer with a numeric time index."
        )
    if keyvalues.get(f"axis {axis} index type", "numeric").lower() != "numeric":
        raise InputDataError(f"{path}: the sequence index is not numeric, so it gives no frame times.")
    try:
        recorded = np.array([float(v) for v in values.split()])
    except ValueError:
        raise InputDataError(f"{path}: the frame times {values[:80]!r} are not numbers.") from None
    units = _nrrd_list(fields.get("units", ""))
    unit = units[axis].strip().lower() if len(units) == 4 else "s"
    if unit not in _TIME_UNITS:
        raise InputDataError(f"{path}: unknown time unit {unit!r} for the sequence index (use s or ms).")
    recorded = recorded * _TIME_UNITS[unit]
    if recorded.size != sizes[axis]:
        raise InputFileError(f"{path}: {recorded.size} frame times for {sizes[axis]} frames. The file is damaged.")

    def stored(name):
        return keyvalues.get(f"StrokeMismatch.{name}") or None

    warnings: list[str] = []
    modality = resolve_modality(modality, stored("modality"), f"the sequence {path.name} (StrokeMismatch.modality)",
                                force=force_modality, warnings=warnings)
    try:
        te = te if te is not None else (float(stored("te")) if stored("te") else None)
        stored_tr = float(stored("tr")) if stored("tr") else None
    except ValueError:
        raise InputFileError(f"{path}: the recorded TE or TR is not a number. The file is damaged.") from None
    if tr is not None:
        conflict = tr_mismatch_warning(recorded, tr, "sequence's frame times")
        if conflict:
            warnings.append(conflict)
    frame_times = recorded if times is None else np.asarray(times, dtype=float).ravel()
    if times is not None:
        replaced = replaced_times_warning(recorded, frame_times, "sequence's index values")
        if replaced:
            warnings.append(replaced)

    array = _read_nrrd_data(path, fields, offset, sizes, dtype)
    # numpy axes are the file axes reversed: file axis n ↔ numpy axis 3 − n.
    signal = np.transpose(array, (3 - space_axes[2], 3 - space_axes[1], 3 - space_axes[0], 3 - axis))
    signal = np.ascontiguousarray(signal)
    del array
    labels = _nrrd_list(fields.get("labels", ""))
    metadata = {"path": str(path), "index_name": labels[axis] if len(labels) == 4 else None,
                "time_unit": unit or "s", "time_source": "sequence index values" if times is None else "given",
                "times_recorded": True, "warnings": warnings}
    series = PerfusionSeries(signal, frame_times, geometry, modality, te=te,
                             tr=tr if tr is not None else stored_tr,
                             source=f"sequence {path.name}", metadata=metadata)
    warnings.extend(validate_series(series))
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
    prepare_output_file(path)
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


