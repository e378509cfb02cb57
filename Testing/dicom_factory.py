"""Write small synthetic DICOM perfusion series with pydicom (test helper, not a test module).

``write_classic_series`` writes one file per slice and time point (CT or MR Image Storage);
``write_enhanced_series`` writes one Enhanced CT/MR multi-frame object with per-frame
functional groups. Both take ``signal [K, J, I, T]`` (stored values), frame ``times`` in s and
an LPS geometry (origin, row/column directions, spacing) so tests can check positions, times,
rescale and the LPS->RAS flip.
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
):
    """One file per (slice, time point). ``signal`` [K, J, I, T] holds the *real* values
    (HU for CT); stored pixels are (value − intercept) / slope rounded to int16.
    ``spacing`` = (column spacing along i, row spacing along j, slice step along k) in mm.
    ``time_tag``: "AcquisitionTime", "TriggerTime", "AcquisitionDateTime" or None.
    File names are shuffled so the reader cannot rely on them. Returns the list of paths."""
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
):
    """One Enhanced CT/MR object holding all K·T frames (in a shuffled order) with per-frame
    PlanePosition, FrameContent (FrameAcquisitionDateTime, TemporalPositionIndex) and, for CT,
    PixelValueTransformation; shared PixelMeasures, PlaneOrientation and MREcho."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signal = np.asarray(signal, dtype=float)
    K, J, I, T = signal.shape
    study_uid = generate_uid()
    sop_class = ENHANCED_CT if modality == "CT" else ENHANCED_MR
    ds = _base(sop_class, modality, series_uid or generate_uid(), study_uid, description, number)
    ds.InstanceNumber = 1
    ds.Rows, ds.Columns = J, I
    ds.NumberOfFrames = K * T
    row_dir, col_dir = np.asarray(row_dir, float), np.asarray(col_dir, float)
    normal = np.cross(row_dir, col_dir)

    shared = pydicom.Dataset()
    measures = pydicom.Dataset()
    measures.PixelSpacing = [f"{spacing[1]:.4f}", f"{spacing[0]:.4f}"]
    measures.SliceThickness = f"{spacing[2]:.4f}"
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
    order = np.random.default_rng(frame_order_seed).permutation(K * T)
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
        content.FrameAcquisitionDateTime = _dt_text(times[t])
        content.TemporalPositionIndex = t + 1
        content.StackID = "1"
        content.InStackPositionNumber = k + 1
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
