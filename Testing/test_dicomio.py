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


# --- issue 17: vendor layouts, odd files, refusals that say the real reason -----------------

def test_fifo_in_the_folder_is_skipped_without_hanging(tmp_path):
    import os
    import threading

    write_classic_series(tmp_path, _signal(), TIMES)
    os.mkfifo(tmp_path / "pipe.dcm")
    result = {}
    worker = threading.Thread(target=lambda: result.update(series=dicomio.read_dicom_perfusion(tmp_path)),
                              daemon=True)
    worker.start()
    worker.join(timeout=60)
    if worker.is_alive():  # unblock the reader so the test run can end, then fail
        with open(tmp_path / "pipe.dcm", "wb"):
            pass
        pytest.fail("reading a folder with a FIFO hung")
    assert result["series"].signal.shape == _signal().shape


def test_gzipped_dicom_files_are_read(tmp_path):
    import gzip

    paths = write_classic_series(tmp_path / "in", _signal(), TIMES)
    for path in paths:
        (tmp_path / "in" / (path.name + ".gz")).write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
    series = dicomio.read_dicom_perfusion(tmp_path / "in")
    np.testing.assert_allclose(series.signal, _signal(), atol=1e-3)
    np.testing.assert_allclose(series.times, TIMES, atol=0.011)


def test_series_without_image_position_is_listed_and_refused_with_the_reason(tmp_path):
    def strip(ds, k, t):
        del ds.ImagePositionPatient

    write_classic_series(tmp_path, _signal(), TIMES, customize=strip, description="Vendor export")
    (info,) = dicomio.list_dicom_series(tmp_path)
    assert "0 slices" not in info.label()
    assert "cannot be read" in info.label() and "ImagePositionPatient" in info.label()
    with pytest.raises(InputFileError, match="no ImagePositionPatient"):
        dicomio.read_dicom_perfusion(tmp_path)


def test_mosaic_read_as_one_wide_slice_is_refused(tmp_path):
    """A mosaic whose headers do not say so (no MOSAIC, no CSA): 6 × 64 = 384 pixels of 3.2 mm."""
    signal = np.full((1, 384, 384, 4), 500.0)
    write_classic_series(tmp_path, signal, np.arange(4) * 1.5, modality="MR", spacing=(3.2, 3.2, 3.0))
    with pytest.raises(InputFileError, match="no head is wider than 500 mm.*mosaic"):
        dicomio.read_dicom_perfusion(tmp_path)


def test_mosaic_without_its_csa_header_is_refused(tmp_path):
    from dicom_factory import write_siemens_mosaic

    write_siemens_mosaic(tmp_path, np.full((5, 8, 8, 3), 300.0), np.arange(3) * 1.5, with_csa=False)
    with pytest.raises(InputFileError, match="Siemens mosaic.*no Siemens CSA image header"):
        dicomio.read_dicom_perfusion(tmp_path)
    (info,) = dicomio.list_dicom_series(tmp_path)
    assert "cannot be read" in info.label()


def test_enhanced_repetition_time_comes_from_the_shared_mr_timing_group(tmp_path):
    write_enhanced_series(tmp_path / "e.dcm", _signal() + 500.0, TIMES, tr_ms=1250.0)
    series = dicomio.read_dicom_perfusion(tmp_path)
    assert series.tr == pytest.approx(1.25)
    assert series.metadata["time_source"].startswith("DICOM AcquisitionDateTime")


def test_one_time_per_series_without_tr_asks_for_tr_and_tr_then_works(tmp_path):
    from dicom_factory import write_ge_epi

    from StrokeMismatchLib import fileio

    times = np.arange(12) * 2.0
    signal = _signal(times=times) + 500.0
    paths = write_ge_epi(tmp_path, signal, times, tr_ms=2000.0, timer=None)
    import pydicom

    for path in paths:  # an export that dropped RepetitionTime
        ds = pydicom.dcmread(path)
        del ds.RepetitionTime
        ds.save_as(path)
    with pytest.raises(InputFileError, match="one AcquisitionTime for the whole series.*--tr"):
        dicomio.read_dicom_perfusion(tmp_path)
    series = fileio.read_perfusion(tmp_path, tr=2.0)
    np.testing.assert_allclose(series.times, times)
    np.testing.assert_allclose(series.signal, signal)
    assert "given TR 2 s" in series.metadata["time_source"]
    assert series.metadata["slice_timing_source"] is None


def test_frames_that_cannot_be_ordered_are_refused_with_the_reason(tmp_path):
    from dicom_factory import write_ge_epi

    def same_instance(ds, k, t):
        ds.InstanceNumber = k + 1

    times = np.arange(4) * 2.0
    write_ge_epi(tmp_path, _signal(times=times), times, tr_ms=2000.0, timer=None)
    import pydicom

    for path in tmp_path.iterdir():
        ds = pydicom.dcmread(path)
        same_instance(ds, 0, 0)
        ds.save_as(path)
    with pytest.raises(InputFileError, match="cannot be put in order"):
        dicomio.read_dicom_perfusion(tmp_path)


def test_given_tr_does_not_replace_frame_times_recorded_in_ct_headers(tmp_path):
    """CT headers carry frame times but no RepetitionTime: a --tr must not replace them."""
    from StrokeMismatchLib import fileio

    write_classic_series(tmp_path, _signal() - 1000.0, TIMES, modality="CT", intercept=-1024.0)
    series = fileio.read_perfusion(tmp_path, tr=2.0)
    np.testing.assert_allclose(series.times, TIMES, atol=0.011)
    assert any("was not used for the frame timing" in w for w in series.metadata["warnings"])
