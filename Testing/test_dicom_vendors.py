"""Vendor DICOM layouts read as dcm2niix (the reference converter) reads them.

Each layout is written by the test factory as the vendor's scanners write it, converted with
dcm2niix (PyPI ``dcm2niix``, in the ``test`` extra) and read by ``dicomio``; the reader's shape,
voxel-centre positions (within 0.1 mm), values, frame times (dcm2niix: n × RepetitionTime) and
slice timing (dcm2niix's BIDS ``SliceTiming``) must equal dcm2niix's.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import (write_ge_epi, write_philips_classic, write_siemens_mosaic,
                           write_siemens_xa_enhanced)

from StrokeMismatchLib import dicomio

K, J, I, T = 5, 12, 10, 6  # 5 slices: a 3 × 3 mosaic with 4 empty tiles
TR = 1.5
TIMES = np.arange(T) * TR
INTERLEAVED = np.array([0.0, 0.9, 0.3, 1.2, 0.6])  # slices 0, 2, 4, 1, 3, 300 ms apart
ORIGIN = (-17.0, -22.5, 31.0)
ROW, COL = (0.9848078, 0.1736482, 0.0), (0.0, 0.0, -1.0)  # oblique coronal


def _dcm2niix():
    found = shutil.which("dcm2niix") or str(Path(sys.executable).with_name("dcm2niix"))
    assert os.path.exists(found), "dcm2niix (PyPI package dcm2niix, test extra) is not installed"
    return found


def _values(seed=0):
    """Distinct positive values per slice, row, column and frame (any mix-up shows)."""
    k, j, i = np.meshgrid(np.arange(K), np.arange(J), np.arange(I), indexing="ij")
    base = 1000 + 400 * k + 20 * j + i
    noise = np.random.default_rng(seed).integers(0, 7, size=(K, J, I, T))
    return (base[..., None] + 3 * np.arange(T) + noise).astype(float)


def _convert(folder, out, n_outputs=1):
    out.mkdir()
    result = subprocess.run([_dcm2niix(), "-z", "n", "-f", "ref", "-o", str(out), str(folder)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    niftis = sorted(out.glob("ref*.nii"))
    assert len(niftis) == n_outputs, (result.stdout, niftis)
    outputs = [(nib.load(path), json.loads(path.with_suffix(".json").read_text())) for path in niftis]
    return outputs[0] if n_outputs == 1 else outputs


def _clock(text):
    hours, minutes, seconds = text.split(":")
    return 3600 * int(hours) + 60 * int(minutes) + float(seconds)


def _compare(series, image, sidecar, reference=None):
    reference = np.asarray(image.dataobj, dtype=np.float64) if reference is None else reference
    assert reference.ndim == 4 and reference.shape[3] == series.signal.shape[3]
    assert sorted(reference.shape[:3]) == sorted(series.signal.shape[:3])
    # Every voxel centre of ours must fall on a voxel centre of dcm2niix's grid.
    k, j, i = np.meshgrid(*(np.arange(n) for n in series.signal.shape[:3]), indexing="ij")
    ras = series.geometry.ijk_to_ras @ np.stack([i.ravel(), j.ravel(), k.ravel(), np.ones(i.size)])
    index = np.linalg.inv(image.affine) @ ras
    nearest = np.round(index[:3]).astype(int)
    error_mm = np.linalg.norm(image.affine[:3, :3] @ (index[:3] - nearest), axis=0).max()
    assert error_mm < 0.1
    assert np.all((nearest >= 0) & (nearest < np.array(reference.shape[:3])[:, None]))
    theirs = reference[nearest[0], nearest[1], nearest[2]]
    np.testing.assert_allclose(series.signal.reshape(-1, series.signal.shape[3]), theirs, rtol=1e-5, atol=1e-3)
    their_times = sidecar.get("frame_times", np.arange(series.signal.shape[3]) * sidecar["RepetitionTime"])
    np.testing.assert_allclose(series.times, their_times, atol=1e-3)
    assert series.tr == pytest.approx(sidecar["RepetitionTime"])
    if "SliceTiming" in sidecar:
        their_k = nearest[2].reshape(series.signal.shape[:3])[:, 0, 0]
        np.testing.assert_allclose(series.metadata["slice_timing_s"], np.asarray(sidecar["SliceTiming"])[their_k],
                                   atol=0.003)
    return theirs


@pytest.mark.parametrize("numbering", ["F>>H", "H>>F"])
def test_siemens_mosaic_matches_dcm2niix(tmp_path, numbering):
    signal = _values()
    write_siemens_mosaic(tmp_path / "in", signal, TIMES, numbering=numbering, slice_times=INTERLEAVED,
                         origin=ORIGIN, row_dir=ROW, col_dir=COL, tr_ms=1000 * TR)
    series = dicomio.read_dicom_perfusion(tmp_path / "in")
    image, sidecar = _convert(tmp_path / "in", tmp_path / "out")
    assert series.signal.shape == (K, J, I, T)
    assert series.metadata["mosaic"] is True
    np.testing.assert_allclose(series.signal, signal)  # the factory's slices, in place
    _compare(series, image, sidecar)
    np.testing.assert_allclose(series.metadata["slice_timing_s"], INTERLEAVED, atol=1e-6)
    assert series.metadata["slice_timing_source"] == "Siemens CSA MosaicRefAcqTimes"
    assert "SliceTiming" in sidecar


def test_siemens_xa_enhanced_matches_dcm2niix(tmp_path):
    """XA30 EPI, one enhanced object per volume: dcm2niix converts each volume on its own, with its
    AcquisitionTime; stacked in time order they must equal the reader's 4D series."""
    signal = _values(1)
    write_siemens_xa_enhanced(tmp_path / "in", signal, TIMES, slice_times=INTERLEAVED, tr_ms=1000 * TR,
                              origin=ORIGIN, row_dir=ROW, col_dir=COL, spacing=(2.0, 2.0, 4.0))
    series = dicomio.read_dicom_perfusion(tmp_path / "in")
    outputs = _convert(tmp_path / "in", tmp_path / "out", n_outputs=T)
    outputs.sort(key=lambda output: _clock(output[1]["AcquisitionTime"]))
    image, sidecar = outputs[0]
    for other, _ in outputs[1:]:
        np.testing.assert_allclose(other.affine, image.affine, atol=1e-4)
    volumes = np.stack([np.asarray(other.dataobj, dtype=np.float64).reshape(image.shape[:3]) for other, _ in outputs], axis=-1)
    clocks = np.array([_clock(meta["AcquisitionTime"]) for _, meta in outputs])
    sidecar = dict(sidecar, frame_times=clocks - clocks[0])
    assert series.tr == pytest.approx(TR)  # from the shared MR Timing and Related Parameters group
    assert series.metadata["enhanced"] is True
    np.testing.assert_allclose(series.signal, signal)
    _compare(series, image, sidecar, reference=volumes)
    np.testing.assert_allclose(series.metadata["slice_timing_s"], INTERLEAVED, atol=1e-3)


@pytest.mark.parametrize("timer", ["rtia", "trigger"])
def test_ge_epi_with_one_time_per_series_matches_dcm2niix(tmp_path, timer):
    signal = _values(2)
    write_ge_epi(tmp_path / "in", signal, TIMES, tr_ms=1000 * TR, slice_times=INTERLEAVED, timer=timer,
                 origin=ORIGIN, row_dir=ROW, col_dir=COL, spacing=(2.0, 2.0, 4.0))
    series = dicomio.read_dicom_perfusion(tmp_path / "in")
    image, sidecar = _convert(tmp_path / "in", tmp_path / "out")
    assert series.metadata["time_source"].startswith("frame index × TR (RepetitionTime 1.5 s")
    assert series.metadata["frame_order"] == "InstanceNumber"
    np.testing.assert_allclose(series.signal, signal)
    _compare(series, image, sidecar)
    np.testing.assert_allclose(series.metadata["slice_timing_s"], INTERLEAVED, atol=1e-6)
    assert series.metadata["slice_timing_source"].startswith({"rtia": "GE RTIA", "trigger": "GE TriggerTime"}[timer])


def test_philips_classic_floating_point_values_match_dcm2niix(tmp_path):
    signal = _values(3)
    write_philips_classic(tmp_path / "in", signal, TIMES, rescale=(2.5, -10.0), scale_slope=0.004,
                          tr_ms=1000 * TR, origin=ORIGIN, row_dir=ROW, col_dir=COL)
    series = dicomio.read_dicom_perfusion(tmp_path / "in")
    image, sidecar = _convert(tmp_path / "in", tmp_path / "out")
    theirs = _compare(series, image, sidecar)
    # Floating point = (stored × 2.5 − 10) / (2.5 × 0.004), not the display value stored × 2.5 − 10.
    np.testing.assert_allclose(series.signal, (signal * 2.5 - 10.0) / (2.5 * 0.004), rtol=1e-6)
    assert "Philips floating point" in series.metadata["value_scaling"]
    assert theirs.max() > 1e5
