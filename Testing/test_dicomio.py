"""DICOM 4D perfusion reading: classic and enhanced series written by the tests themselves."""

import numpy as np
import pytest

from dicom_factory import expected_ijk_to_ras, write_classic_series, write_enhanced_series
from StrokeMismatchLib import dicomio
from StrokeMismatchLib.errors import InputDataError, InputFileError, StrokeMismatchError

# Variable-rate CTP-like protocol: 1 s frames, then 3 s after the bolus.
TIMES = np.concatenate([np.arange(0.0, 8.0, 1.0), 8.0 + 3.0 * np.arange(1, 5)])


def _signal(shape=(3, 6, 5), times=TIMES, seed=1):
    """Values that identify slice, row, column and frame, so any mix-up shows."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in shape), indexing="ij")
    t = np.arange(times.size)
    return (100 * k + 10 * j + i)[..., None] + 7.0 * t + np.zeros(shape + (times.size,))


@pytest.mark.parametrize("time_tag", ["AcquisitionTime", "TriggerTime", "AcquisitionDateTime"])
def test_classic_ct_series_round_trip(tmp_path, time_tag):
    signal = _signal() - 1024.0  # HU, stored with intercept -1024
    origin, row_dir, col_dir = (-30.0, -40.0, 10.0), (1.0, 0.0, 0.0), (0.0, 1.0, 0.0)
    write_classic_series(
        tmp_path, signal, TIMES, modality="CT", intercept=-1024.0, time_tag=time_tag,
        origin=origin, row_dir=row_dir, col_dir=col_dir, spacing=(2.0, 1.5, 5.0),
        temporal_index=time_tag != "TriggerTime",
    )
    series = dicomio.read_dicom_perfusion(tmp_path)
    assert series.modality == "ct"
    assert series.signal.shape == signal.shape
    np.testing.assert_allclose(series.signal, signal, atol=1e-3)
    # Unequal frame times come from the headers (slice offsets are 10 ms apart, median taken).
    np.testing.assert_allclose(series.times, TIMES, atol=0.011)
    assert np.ptp(np.diff(series.times)) > 1.5
    np.testing.assert_allclose(
        series.geometry.ijk_to_ras, expected_ijk_to_ras(origin, row_dir, col_dir, (2.0, 1.5, 5.0)),
        atol=1e-4,
    )
    # LPS -> RAS: DICOM x = -30 (right of the patient is -x in LPS) -> R = +30.
    assert series.geometry.ijk_to_ras[0, 3] == pytest.approx(30.0)
    assert series.metadata["frame_time_source"].replace("_", " ").startswith(
        {"AcquisitionTime": "acquisition time", "TriggerTime": "trigger",
         "AcquisitionDateTime": "acquisition datetime"}[time_tag]
    )


def test_classic_mr_oblique_with_te_and_reversed_slices(tmp_path):
    angle = np.deg2rad(20.0)
    row_dir = (np.cos(angle), np.sin(angle), 0.0)
    col_dir = (0.0, 0.0, -1.0)  # coronal-ish, slice normal then runs along -y rotated
    signal = _signal() + 500.0
    write_classic_series(
        tmp_path, signal, TIMES, modality="MR", row_dir=row_dir, col_dir=col_dir,
        te_ms=32.0, tr_ms=1400.0,
    )
    series = dicomio.read_dicom_perfusion(tmp_path)
    assert series.modality == "mr"
    assert series.te == pytest.approx(0.032)
    assert series.tr == pytest.approx(1.4)
    np.testing.assert_allclose(series.signal, signal, atol=1e-3)
    np.testing.assert_allclose(
        series.geometry.ijk_to_ras,
        expected_ijk_to_ras((-30.0, -40.0, 10.0), row_dir, col_dir, (2.0, 1.5, 5.0)),
        atol=1e-3,
    )


@pytest.mark.parametrize("modality", ["MR", "CT"])
def test_enhanced_multiframe_round_trip(tmp_path, modality):
    signal = _signal() + (500.0 if modality == "MR" else -1000.0)
    slope, intercept = (1.0, 0.0) if modality == "MR" else (0.5, -1000.0)
    write_enhanced_series(
        tmp_path / "enhanced.dcm", signal, TIMES, modality=modality, slope=slope,
        intercept=intercept, te_ms=25.0,
    )
    series = dicomio.read_dicom_perfusion(tmp_path)
    assert series.metadata["enhanced"] is True
    assert series.signal.shape == signal.shape
    np.testing.assert_allclose(series.signal, signal, atol=0.51)
    np.testing.assert_allclose(series.times, TIMES, atol=1e-3)
    if modality == "MR":
        assert series.te == pytest.approx(0.025)
    else:
        assert series.te is None
    np.testing.assert_allclose(
        series.geometry.ijk_to_ras,
        expected_ijk_to_ras((-30.0, -40.0, 10.0), (1, 0, 0), (0, 1, 0), (2.0, 1.5, 5.0)),
        atol=1e-4,
    )


def test_folder_with_several_series_lists_them_and_series_option_chooses(tmp_path):
    signal = _signal()
    write_classic_series(tmp_path / "a", signal, TIMES, number=3, description="CTP head")
    write_classic_series(tmp_path / "b", signal[..., :1], TIMES[:1], number=4, description="Scout")
    infos = dicomio.list_dicom_series(tmp_path)
    assert [info.number for info in infos] == [3, 4]
    assert [info.n_frames for info in infos] == [TIMES.size, 1]
    assert infos[0].n_slices == 3
    with pytest.raises(InputFileError, match="--series") as error:
        dicomio.read_dicom_perfusion(tmp_path)
    assert "CTP head" in str(error.value) and "Scout" in str(error.value)
    series = dicomio.read_dicom_perfusion(tmp_path, series="3")
    assert series.signal.shape[3] == TIMES.size
    assert dicomio.read_dicom_perfusion(tmp_path, series=infos[0].uid).signal.shape[3] == TIMES.size
    assert dicomio.read_dicom_perfusion(tmp_path, series="ctp head").signal.shape[3] == TIMES.size
    with pytest.raises(InputDataError, match="not a 4D perfusion"):
        dicomio.read_dicom_perfusion(tmp_path, series="4")
    with pytest.raises(InputFileError, match="matches no"):
        dicomio.read_dicom_perfusion(tmp_path, series="99")


def test_times_not_increasing_is_refused(tmp_path):
    times = TIMES.copy()
    times[5] = times[3]  # a frame repeats an earlier time, ordered by temporal index
    write_classic_series(tmp_path, _signal(), times)
    with pytest.raises(InputDataError, match="not strictly increasing"):
        dicomio.read_dicom_perfusion(tmp_path)


def test_no_times_at_all_is_refused(tmp_path):
    write_classic_series(tmp_path, _signal(), TIMES, time_tag=None)
    # ContentTime is present but constant, so it cannot give frame times.
    with pytest.raises(StrokeMismatchError, match="(?i)time"):
        dicomio.read_dicom_perfusion(tmp_path)


def test_missing_slice_file_is_reported(tmp_path):
    paths = write_classic_series(tmp_path, _signal(), TIMES)
    paths[4].unlink()
    with pytest.raises(InputFileError, match="incomplete"):
        dicomio.read_dicom_perfusion(tmp_path)


def test_truncated_file_is_reported(tmp_path):
    paths = write_classic_series(tmp_path, _signal(), TIMES)
    data = paths[2].read_bytes()
    paths[2].write_bytes(data[: len(data) - 20])
    with pytest.raises(InputFileError, match="(?i)truncated|corrupt"):
        dicomio.read_dicom_perfusion(tmp_path)


def test_header_damaged_file_is_reported(tmp_path):
    paths = write_classic_series(tmp_path, _signal(), TIMES)
    data = paths[0].read_bytes()
    paths[0].write_bytes(data[:200])
    with pytest.raises(InputFileError):
        dicomio.read_dicom_perfusion(tmp_path)


def test_empty_and_missing_folders(tmp_path):
    (tmp_path / "notes.txt").write_text("not dicom")
    with pytest.raises(InputFileError, match="No DICOM images"):
        dicomio.read_dicom_perfusion(tmp_path)
    with pytest.raises(InputFileError, match="does not exist"):
        dicomio.read_dicom_perfusion(tmp_path / "nowhere")


def test_other_modality_is_refused(tmp_path):
    write_classic_series(tmp_path, _signal(), TIMES, modality="CT")
    import pydicom

    for path in tmp_path.iterdir():
        ds = pydicom.dcmread(path)
        ds.Modality = "PT"
        ds.save_as(path)
    with pytest.raises(InputFileError, match="PT"):
        dicomio.read_dicom_perfusion(tmp_path)


def test_inputs_are_not_modified(tmp_path):
    import hashlib

    paths = write_classic_series(tmp_path, _signal(), TIMES)
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    dicomio.read_dicom_perfusion(tmp_path)
    after = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    assert before == after
