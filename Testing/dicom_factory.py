"""Write small synthetic DICOM perfusion series with pydicom (test helper, not a test module).

``write_classic_series`` writes one file per slice and time point (CT or MR Image Storage);
``write_enhanced_series`` writes one Enhanced CT/MR multi-frame object with per-frame
functional groups. Both take ``signal [K, J, I, T]`` (stored values), frame ``times`` in s and
an LPS geometry (origin, row/column directions, spacing) so tests can check positions, times,
rescale and the LPS->RAS flip.

Vendor layouts (issue 17), each written as the vendor's scanners write it:
``write_siemens_mosaic`` (one file per volume, slices tiled, CSA header with
NumberOfImagesInMosaic, SliceNormalVector and MosaicRefAcqTimes, F>>H or H>>F numbering),
``write_siemens_xa_enhanced`` (enhanced MR, TR in the shared MR Timing group, per-slice
FrameAcquisitionDateTime), ``write_ge_epi`` (one AcquisitionTime for the whole series, frames
by InstanceNumber, slice timing in RTIA_timer or TriggerTime) and ``write_philips_classic``
(RescaleSlope/Intercept and the MR scale slope (2005,100E)). ``csa2`` writes a Siemens CSA2
header in the format nibabel documents (doc/source/dicom/siemens_csa.rst).
"""

from __future__ import annotations

import datetime as _dt
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
ENHANCED_MR = "1.2.840.10008.5.1.4.1.1.4.1"

START = _dt.datetime(2024, 3, 1, 10, 15, 0)


def _save(ds, path):
    """Write a conformant DICOM file with pydicom 3 (Slicer 5.12) or 2.4 (Slicer 5.10)."""
    if int(pydicom.__version__.split(".")[0]) >= 3:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(path, write_like_original=False)


def _tm(seconds_after_start):
    moment = START + _dt.timedelta(seconds=float(seconds_after_start))
    return moment.strftime("%H%M%S.%f")


def _dt_text(seconds_after_start):
    moment = START + _dt.timedelta(seconds=float(seconds_after_start))
    return moment.strftime("%Y%m%d%H%M%S.%f")


def _base(sop_class, modality, series_uid, study_uid, description, number, frame_uid=None):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = modality
    ds.PatientName = "Phantom^Perfusion"
    ds.PatientID = "PHANTOM"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.SeriesDescription = description
    ds.SeriesNumber = number
    ds.Manufacturer = "StrokeMismatchTests"
    ds.StudyDate = START.strftime("%Y%m%d")
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.FrameOfReferenceUID = frame_uid or generate_uid()
    return ds


def write_classic_series(
    folder,
    signal,
    times,
    *,
    modality="CT",
    origin=(-30.0, -40.0, 10.0),
    row_dir=(1.0, 0.0, 0.0),
    col_dir=(0.0, 1.0, 0.0),
    spacing=(2.0, 1.5, 5.0),
    slope=1.0,
    intercept=0.0,
    te_ms=30.0,
    tr_ms=1500.0,
    time_tag="AcquisitionTime",
    temporal_index=True,
    series_uid=None,
    study_uid=None,
    description="Perfusion",
    number=5,
    shuffle_seed=0,
    customize=None,
):
    """One file per (slice, time point). ``signal`` [K, J, I, T] holds the *real* values
    (HU for CT); stored pixels are (value − intercept) / slope rounded to int16.
    ``spacing`` = (column spacing along i, row spacing along j, slice step along k) in mm.
    ``time_tag``: "AcquisitionTime", "TriggerTime", "AcquisitionDateTime" or None.
    File names are shuffled so the reader cannot rely on them. ``customize(ds, k, t)`` may
    change each dataset before it is written (vendor layouts). Returns the list of paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    signal = np.asarray(signal, dtype=float)
    K, J, I, T = signal.shape
    series_uid = series_uid or generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()  # one frame of reference for the whole series, as scanners write it
    sop_class = CT_IMAGE if modality == "CT" else MR_IMAGE
    row_dir, col_dir = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row_dir, col_dir)
    stored = np.round((signal - intercept) / slope).astype(np.int16)
    order = np.random.default_rng(shuffle_seed).permutation(K * T)
    paths = []
    for n, flat in enumerate(order):
        k, t = divmod(int(flat), T)
        ds = _base(sop_class, modality, series_uid, study_uid, description, number, frame_uid)
        ds.InstanceNumber = t * K + k + 1
        position = np.asarray(origin, float) + k * spacing[2] * normal
        ds.ImagePositionPatient = [f"{x:.4f}" for x in position]
        ds.ImageOrientationPatient = [f"{x:.6f}" for x in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[0]:.4f}"]
        ds.SliceThickness = f"{spacing[2]:.4f}"
        ds.Rows, ds.Columns = J, I
        if temporal_index:
            ds.TemporalPositionIdentifier = t + 1
            ds.NumberOfTemporalPositions = T
        ds.AcquisitionDate = START.strftime("%Y%m%d")
        slice_offset = 0.01 * k  # slices of one frame are not simultaneous
        if time_tag == "AcquisitionTime":
            ds.AcquisitionTime = _tm(times[t] + slice_offset)
        elif time_tag == "TriggerTime":
            ds.TriggerTime = f"{1000.0 * (times[t] + slice_offset):.3f}"
        elif time_tag == "AcquisitionDateTime":
            ds.AcquisitionDateTime = _dt_text(times[t] + slice_offset)
        ds.ContentTime = _tm(0.0)  # constant on purpose: not a usable frame time
        if modality == "CT":
            ds.RescaleSlope = f"{slope:g}"
            ds.RescaleIntercept = f"{intercept:g}"
            ds.KVP = "80"
        else:
            if te_ms is not None:
                ds.EchoTime = f"{te_ms:g}"
            ds.RepetitionTime = f"{tr_ms:g}"
        ds.PixelData = np.ascontiguousarray(stored[k, :, :, t]).tobytes()
        if customize is not None:
            customize(ds, k, t)
        path = folder / f"IM{n:05d}.dcm"
        _save(ds, path)
        paths.append(path)
    return paths


def write_enhanced_series(
    path,
    signal,
    times,
    *,
    modality="MR",
    origin=(-30.0, -40.0, 10.0),
    row_dir=(1.0, 0.0, 0.0),
    col_dir=(0.0, 1.0, 0.0),
    spacing=(2.0, 1.5, 5.0),
    slope=1.0,
    intercept=0.0,
    te_ms=30.0,
    series_uid=None,
    description="Enhanced perfusion",
    number=7,
    frame_order_seed=0,
    manufacturer=None,
    tr_ms=None,
    slice_times=None,
    study_uid=None,
    temporal_start=1,
):
    """One Enhanced CT/MR object holding all K·T frames (in a shuffled order) with per-frame
    PlanePosition, FrameContent (FrameAcquisitionDateTime, TemporalPositionIndex) and, for CT,
    PixelValueTransformation; shared PixelMeasures, PlaneOrientation and MREcho; ``tr_ms`` in the
    shared MR Timing and Related Parameters group; ``slice_times`` (s, one per slice) added to each
    frame's FrameAcquisitionDateTime."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signal = np.asarray(signal, dtype=float)
    K, J, I, T = signal.shape
    study_uid = study_uid or generate_uid()
    sop_class = ENHANCED_CT if modality == "CT" else ENHANCED_MR
    ds = _base(sop_class, modality, series_uid or generate_uid(), study_uid, description, number)
    ds.InstanceNumber = temporal_start
    ds.AcquisitionNumber = temporal_start
    ds.AcquisitionDateTime = _dt_text(float(np.min(times)))
    ds.ImageType = ["ORIGINAL", "PRIMARY", "PERFUSION", "NONE"]
    ds.Rows, ds.Columns = J, I
    ds.NumberOfFrames = K * T
    if manufacturer:
        ds.Manufacturer = manufacturer
    row_dir, col_dir = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row_dir, col_dir)
    slice_times = np.zeros(K) if slice_times is None else np.asarray(slice_times, float)

    shared = pydicom.Dataset()
    if tr_ms is not None:
        timing = pydicom.Dataset()
        timing.RepetitionTime = tr_ms
        timing.FlipAngle = 90
        shared.MRTimingAndRelatedParametersSequence = Sequence([timing])
    measures = pydicom.Dataset()
    measures.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[0]:.4f}"]
    measures.SliceThickness = f"{spacing[2]:.4f}"
    measures.SpacingBetweenSlices = f"{spacing[2]:.4f}"
    shared.PixelMeasuresSequence = Sequence([measures])
    orientation = pydicom.Dataset()
    orientation.ImageOrientationPatient = [f"{x:.6f}" for x in (*row_dir, *col_dir)]
    shared.PlaneOrientationSequence = Sequence([orientation])
    if modality == "MR" and te_ms is not None:
        echo = pydicom.Dataset()
        echo.EffectiveEchoTime = te_ms
        shared.MREchoSequence = Sequence([echo])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])

    stored = np.round((signal - intercept) / slope).astype(np.int16)
    order = (np.arange(K * T).reshape(K, T).T.ravel() if frame_order_seed is None  # volume by volume
             else np.random.default_rng(frame_order_seed).permutation(K * T))
    per_frame, pixels = [], []
    for flat in order:
        k, t = divmod(int(flat), T)
        group = pydicom.Dataset()
        position = pydicom.Dataset()
        position.ImagePositionPatient = [
            f"{x:.4f}" for x in np.asarray(origin, float) + k * spacing[2] * normal
        ]
        group.PlanePositionSequence = Sequence([position])
        content = pydicom.Dataset()
        content.FrameAcquisitionDateTime = _dt_text(times[t] + slice_times[k])
        content.TemporalPositionIndex = t + temporal_start
        content.StackID = "1"
        content.InStackPositionNumber = k + 1
        content.DimensionIndexValues = [1, t + temporal_start, k + 1]
        group.FrameContentSequence = Sequence([content])
        if modality == "CT":
            transform = pydicom.Dataset()
            transform.RescaleSlope = f"{slope:g}"
            transform.RescaleIntercept = f"{intercept:g}"
            transform.RescaleType = "HU"
            group.PixelValueTransformationSequence = Sequence([transform])
        per_frame.append(group)
        pixels.append(stored[k, :, :, t])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    dimension_uid = generate_uid(prefix="1.2.826.0.1.3680043.8.498.")
    dimensions = []
    for pointer in (0x00209056, 0x00209128, 0x00209057):  # StackID, TemporalPosition, InStackPosition
        item = pydicom.Dataset()
        item.DimensionOrganizationUID = dimension_uid
        item.DimensionIndexPointer = pointer
        item.FunctionalGroupPointer = 0x00209111
        dimensions.append(item)
    ds.DimensionIndexSequence = Sequence(dimensions)
    ds.PixelData = np.ascontiguousarray(np.stack(pixels)).tobytes()
    _save(ds, path)
    return path


def expected_ijk_to_ras(origin, row_dir, col_dir, spacing):
    """The IJK-to-RAS matrix the reader should produce for the factory's geometry."""
    row_dir, col_dir = np.asarray(row_dir, float), np.asarray(col_dir, float)
    matrix = np.eye(4)
    matrix[:3, 0] = row_dir * spacing[0]
    matrix[:3, 1] = col_dir * spacing[1]
    matrix[:3, 2] = np.cross(row_dir, col_dir) * spacing[2]
    matrix[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ matrix


# --- vendor layouts ----------------------------------------------------------------------------


def csa2(tags):
    """A Siemens CSA2 header: ``tags`` maps a name to (VR, list of values). Layout (nibabel
    docs, "Siemens CSA header"): b"SV10", 4 unused bytes, uint32 n_tags, uint32 77; per tag a
    64-byte name, int32 VM, 4-byte VR, int32 SyngoDT, int32 n_items, int32 77; per item four
    int32 (length, length, 77, length) and the value as text, null-terminated, padded to 4 bytes."""
    import struct

    out = [b"SV10", b"\x04\x03\x02\x01", struct.pack("<2I", len(tags), 77)]
    for name, (vr, values) in tags.items():
        out.append(struct.pack("<64si4s3i", name.encode(), len(values), vr.encode(), 0, len(values), 77))
        for value in values:
            text = (f"{value:.8f}" if isinstance(value, float) else str(value)).encode() + b"\0"
            out.append(struct.pack("<4i", len(text), len(text), 77, len(text)))
            out.append(text + b"\0" * (-len(text) % 4))
    return b"".join(out)


def _private(ds, group, creator, element, vr, value):
    block = ds.private_block(group, creator, create=True)
    block.add_new(element, vr, value)


def write_siemens_mosaic(folder, signal, times, *, numbering="F>>H", slice_times=None,
                         origin=(-60.0, -70.0, -20.0), row_dir=(1.0, 0.0, 0.0), col_dir=(0.0, 1.0, 0.0),
                         spacing=(3.0, 3.0, 4.0), te_ms=30.0, tr_ms=1500.0, with_csa=True, number=9):
    """Siemens V-series mosaic: one MR file per frame, the K slices tiled row-major in a
    ceil(sqrt(K))² grid. ``numbering`` "F>>H" (tile s = slice k = s, CSA normal = row × col) or
    "H>>F" (tile s = slice K−1−s, CSA normal reversed). ``slice_times`` (s, per slice k) go to
    CSA MosaicRefAcqTimes in tile order. ``origin`` is slice 0's first voxel (LPS mm);
    ``spacing`` (column, row, slice) mm. ``with_csa`` False leaves the CSA header out (an
    unrecognisable mosaic)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    signal = np.asarray(signal, dtype=float)
    K, J, I, T = signal.shape
    grid = int(np.ceil(np.sqrt(K)))
    row_dir, col_dir = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row_dir, col_dir)
    reverse = numbering == "H>>F"
    order = list(range(K))[::-1] if reverse else list(range(K))  # slice k of each tile
    slice_times = np.zeros(K) if slice_times is None else np.asarray(slice_times, float)
    first = np.asarray(origin, float) + order[0] * spacing[2] * normal
    # ImagePositionPatient of the whole mosaic: tile 0's corner less half the unused tiles.
    shift = (grid - 1) * np.array([J, I]) / 2.0
    ipp = first - col_dir * spacing[1] * shift[0] - row_dir * spacing[0] * shift[1]
    csa = csa2({
        "NumberOfImagesInMosaic": ("US", [K]),
        "AcquisitionMatrixText": ("SH", [f"{J}p*{I}"]),
        "SliceNormalVector": ("FD", [float(v) for v in (-normal if reverse else normal)]),
        "MosaicRefAcqTimes": ("FD", [float(1000.0 * slice_times[k]) for k in order]),
        "SliceMeasurementDuration": ("DS", [float(tr_ms / K)]),
    })
    series_uid, study_uid = generate_uid(), generate_uid()
    paths = []
    for t in range(T):
        ds = _base(MR_IMAGE, "MR", series_uid, study_uid, "ep2d_perf", number)
        ds.Manufacturer = "SIEMENS"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND", "MOSAIC"]
        ds.InstanceNumber = t + 1
        ds.AcquisitionNumber = t + 1
        ds.ImagePositionPatient = [f"{x:.6f}" for x in ipp]
        ds.ImageOrientationPatient = [f"{x:.6f}" for x in (*row_dir, *col_dir)]
        ds.PixelSpacing = [f"{spacing[1]:g}", f"{spacing[0]:g}"]
        ds.SliceThickness = f"{spacing[2]:g}"
        ds.SpacingBetweenSlices = f"{spacing[2]:g}"
        ds.Rows, ds.Columns = grid * J, grid * I
        ds.EchoTime, ds.RepetitionTime = f"{te_ms:g}", f"{tr_ms:g}"
        ds.AcquisitionDate = START.strftime("%Y%m%d")
        ds.AcquisitionTime = _tm(times[t])
        ds.ContentTime = _tm(times[t])
        ds.PixelRepresentation = 0
        mosaic = np.zeros((grid * J, grid * I), dtype=np.uint16)
        for s, k in enumerate(order):
            r, c = divmod(s, grid)
            mosaic[r * J:(r + 1) * J, c * I:(c + 1) * I] = np.round(signal[k, :, :, t])
        ds.PixelData = mosaic.tobytes()
        if with_csa:
            _private(ds, 0x0019, "SIEMENS MR HEADER", 0x0A, "US", K)
            _private(ds, 0x0029, "SIEMENS CSA HEADER", 0x10, "OB", csa)
        path = folder / f"MR{t:04d}.dcm"
        _save(ds, path)
        paths.append(path)
    return paths


def write_siemens_xa_enhanced(folder, signal, times, *, slice_times=None, tr_ms=1500.0, **kwargs):
    """Siemens XA (Vida, XA30) EPI as dcm_qa_xa30 holds it: one enhanced MR object per volume,
    frames in slice order, TR only in the shared MR Timing and Related Parameters group,
    per-frame FrameAcquisitionDateTime = frame time + slice time, dimension indices,
    SoftwareVersions XA30. Returns the paths."""
    folder = Path(folder)
    series_uid, study_uid, frame_of_reference = generate_uid(), generate_uid(), generate_uid()
    kwargs.setdefault("frame_order_seed", None)
    paths = []
    for t in range(signal.shape[3]):
        path = write_enhanced_series(folder / f"XA{t:04d}.dcm", signal[..., t:t + 1], np.asarray(times)[t:t + 1],
                                     modality="MR", manufacturer="Siemens Healthineers", tr_ms=tr_ms,
                                     slice_times=slice_times, series_uid=series_uid, study_uid=study_uid,
                                     temporal_start=t + 1, **kwargs)
        ds = pydicom.dcmread(path)
        ds.NumberOfTemporalPositions = signal.shape[3]
        ds.FrameOfReferenceUID = frame_of_reference
        ds.MRAcquisitionType = "2D"
        ds.PatientPosition = "HFS"
        ds.SoftwareVersions = "syngo MR XA30"
        _save(ds, path)
        paths.append(path)
    return paths


def write_ge_epi(folder, signal, times, *, tr_ms=1500.0, slice_times=None, timer="rtia", **kwargs):
    """GE classic EPI: one MR file per slice and frame, every file the same AcquisitionTime (the
    series start), frames in InstanceNumber order (t·K + k + 1), NumberOfTemporalPositions, no
    temporal position; slice timing (s, per slice) in RTIA_timer (0021,105E) ("rtia", seconds
    from the run start) or TriggerTime ("trigger", ms within the TR)."""
    K, T = signal.shape[0], signal.shape[3]
    slice_times = np.zeros(K) if slice_times is None else np.asarray(slice_times, float)

    def ge(ds, k, t):
        ds.Manufacturer = "GE MEDICAL SYSTEMS"
        ds.AcquisitionTime = _tm(0.0)
        ds.NumberOfTemporalPositions = T
        ds.ImagesInAcquisition = K * T
        ds.SliceLocation = f"{float(ds.ImagePositionPatient[2]):.4f}"
        if timer == "rtia":
            _private(ds, 0x0021, "GEMS_RELA_01", 0x5E, "DS", f"{t * tr_ms / 1000.0 + slice_times[k]:.6f}")
        elif timer == "trigger":
            ds.TriggerTime = f"{1000.0 * slice_times[k]:.3f}"

    return write_classic_series(folder, signal, times, modality="MR", time_tag=None, temporal_index=False,
                                tr_ms=tr_ms, customize=ge, **kwargs)


def write_philips_classic(folder, signal, times, *, rescale=(2.5, -10.0), scale_slope=0.004, **kwargs):
    """Philips classic MR: ``signal`` holds the stored values; RescaleSlope/Intercept (display
    values) and the MR scale slope (2005,100E) (floating-point values); AcquisitionTime per frame."""
    slope, intercept = rescale

    def philips(ds, k, t):
        ds.Manufacturer = "Philips Medical Systems"
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        ds.RescaleType = "normalized"
        _private(ds, 0x2005, "Philips MR Imaging DD 001", 0x0E, "FL", float(scale_slope))

    return write_classic_series(folder, signal, times, modality="MR", customize=philips, **kwargs)
