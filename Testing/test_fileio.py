"""File I/O without Slicer: NIfTI + sidecar, .seq.nrrd, 3D volumes, validation and errors."""

import gzip
import hashlib
import json

import numpy as np
import pytest
import SimpleITK as sitk

from StrokeMismatchLib import fileio
from StrokeMismatchLib.errors import InputDataError, InputFileError, OutputError
from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.series import PerfusionSeries


def _oblique_geometry(shape=(4, 5, 6)):
    """Anisotropic spacing (0.9, 1.3, 4 mm) with a rotated, non-axis-aligned direction."""
    a, b = np.deg2rad(17.0), np.deg2rad(-9.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rz @ rx @ np.diag([-0.9, -1.3, 4.0])
    matrix[:3, 3] = (12.5, -30.25, 7.0)
    return Geometry(matrix, shape)


def _series(times=None, geometry=None, modality="mr", te=0.03, tr=1.5, dtype=np.float32, seed=0):
    geometry = geometry or _oblique_geometry()
    times = np.arange(12) * 1.5 if times is None else np.asarray(times, float)
    rng = np.random.default_rng(seed)
    signal = (rng.random(geometry.shape + (times.size,)) * 1000).astype(dtype)
    return PerfusionSeries(signal, times, geometry, modality, te=te, tr=tr, source="test")


def _digest(array):
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


def _same_geometry(a, b):
    return a.shape == b.shape and np.allclose(a.ijk_to_ras, b.ijk_to_ras, atol=1e-4)


# --- NIfTI -----------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_nifti_round_trip_oblique(tmp_path, suffix):
    series = _series()
    before = _digest(series.signal)
    path = fileio.write_nifti_perfusion(tmp_path / f"dsc{suffix}", series)
    assert _digest(series.signal) == before  # input untouched
    assert (tmp_path / "dsc.json").is_file()
    loaded = fileio.read_perfusion(path)
    assert np.array_equal(loaded.signal, series.signal)
    assert loaded.signal.dtype == np.float32
    assert np.allclose(loaded.times, series.times)
    assert _same_geometry(loaded.geometry, series.geometry)
    assert np.allclose(loaded.geometry.spacing, (0.9, 1.3, 4.0))
    assert loaded.modality == "mr" and loaded.te == pytest.approx(0.03) and loaded.tr == pytest.approx(1.5)


def test_nifti_voxel_position_matches_itk(tmp_path):
    """The RAS position of a voxel equals ITK's LPS physical point with x, y flipped."""
    series = _series()
    path = fileio.write_nifti_perfusion(tmp_path / "a.nii.gz", series)
    image = sitk.ReadImage(str(path))
    ijk = (3, 2, 1)
    lps = np.array(image.TransformIndexToPhysicalPoint((*ijk, 0))[:3])
    ras = series.geometry.ijk_to_ras_points(np.array(ijk))
    assert np.allclose(ras, lps * [-1, -1, 1], atol=1e-4)


def test_sidecar_timing_and_overrides(tmp_path):
    series = _series(times=np.r_[np.arange(8) * 1.0, 10.0, 13.0, 16.0, 19.0], modality="ct", te=None, tr=None)
    path = fileio.write_nifti_perfusion(tmp_path / "ctp.nii.gz", series)
    loaded = fileio.read_perfusion(path)
    assert np.allclose(loaded.times, series.times)  # variable-rate frames kept
    assert loaded.modality == "ct" and loaded.te is None
    # Flags override the sidecar; a modality contradicting the sidecar's only when forced.
    with pytest.raises(InputDataError, match="force-modality"):
        fileio.read_perfusion(path, modality="mr", te=0.025)
    overridden = fileio.read_perfusion(path, times=np.arange(12) * 2.0, modality="mr", te=0.025,
                                       force_modality=True)
    assert np.allclose(overridden.times, np.arange(12) * 2.0)
    assert overridden.modality == "mr" and overridden.te == 0.025
    assert any("forced" in w for w in overridden.metadata["warnings"])


def test_sidecar_tr_only_and_ms_values(tmp_path):
    series = _series()
    path = fileio.write_nifti_perfusion(tmp_path / "p.nii.gz", series, sidecar=False)
    (tmp_path / "p.json").write_text(json.dumps({"RepetitionTime": 1.25, "EchoTime": 0.032, "Modality": "MR"}))
    loaded = fileio.read_nifti_perfusion(path)
    assert np.allclose(loaded.times, np.arange(12) * 1.25)
    assert loaded.te == pytest.approx(0.032) and loaded.modality == "mr"
    # Clock-time strings and an explicitly named sidecar.
    clock = {"AcquisitionTimes": [f"10:00:{s:06.3f}" for s in np.arange(12) * 1.5], "EchoTime": 30}
    other = tmp_path / "other.json"
    other.write_text(json.dumps(clock))
    loaded = fileio.read_nifti_perfusion(path, sidecar=other)
    assert np.allclose(loaded.times, np.arange(12) * 1.5)
    assert loaded.te == pytest.approx(0.030)  # 30 (ms) converted, with a warning
    assert any("ms" in w for w in loaded.metadata["warnings"])


def test_missing_timing_is_an_error(tmp_path):
    series = _series()
    array = np.moveaxis(series.signal, -1, 0)
    image = sitk.GetImageFromArray(array, isVector=False)  # no time unit in the header
    path = tmp_path / "bare.nii.gz"
    sitk.WriteImage(image, str(path))
    with pytest.raises(InputDataError, match="--tr"):  # ITK's default 1 s time step is not trusted
        fileio.read_nifti_perfusion(path)
    loaded = fileio.read_nifti_perfusion(path, tr=2.0)
    assert np.allclose(loaded.times, np.arange(12) * 2.0)
    assert loaded.te is None and loaded.modality is None  # the pipeline asks for them later


def test_3d_nifti_given_as_perfusion(tmp_path):
    path = fileio.write_volume(tmp_path / "adc.nii.gz", np.ones((4, 5, 6), np.float32), _oblique_geometry())
    with pytest.raises(InputDataError, match="3D volume"):
        fileio.read_perfusion(path, tr=1.0)


def test_corrupt_and_truncated_files(tmp_path):
    series = _series()
    good = fileio.write_nifti_perfusion(tmp_path / "good.nii.gz", series)
    data = good.read_bytes()
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match="truncated.nii.gz"):
        fileio.read_perfusion(truncated, tr=1.5)
    plain = fileio.write_nifti_perfusion(tmp_path / "plain.nii", series, sidecar=False)
    cut = tmp_path / "cut.nii"
    cut.write_bytes(plain.read_bytes()[:-100])
    with pytest.raises(InputFileError, match="cut.nii"):
        fileio.read_perfusion(cut, tr=1.5)
    with pytest.raises(InputFileError, match="truncated"):
        fileio.read_volume(truncated)
    garbage = tmp_path / "garbage.nii"
    garbage.write_bytes(b"this is not an image" * 20)
    with pytest.raises(InputFileError, match="garbage.nii"):
        fileio.read_perfusion(garbage, tr=1.5)
    with pytest.raises(InputFileError, match="does not exist"):
        fileio.read_perfusion(tmp_path / "missing.nii.gz")
    bad_json = tmp_path / "good.json"
    bad_json.write_text("{not json")
    with pytest.raises(InputFileError, match="sidecar"):
        fileio.read_perfusion(good)


# --- validation ------------------------------------------------------------------------------


def test_validate_series_errors():
    geometry = Geometry.from_spacing((2, 2, 2))
    bolus = np.ones((2, 2, 2, 12), np.float32)
    bolus[..., 5] = 3.0
    good = PerfusionSeries(bolus, np.arange(12.0), geometry, "ct")
    assert isinstance(fileio.validate_series(good), list)
    short = PerfusionSeries(np.ones((2, 2, 2, 9), np.float32), np.arange(9.0), geometry, "ct")
    with pytest.raises(InputDataError, match="at least 10"):
        fileio.validate_series(short)
    nan = good.signal.copy()
    nan[0, 0, 0, 3] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        fileio.validate_series(PerfusionSeries(nan, np.arange(12.0), geometry, "ct"))
    inf = good.signal.copy()
    inf[1, 1, 1, 1] = np.inf
    with pytest.raises(InputDataError, match="NaN or infinite"):
        fileio.validate_series(PerfusionSeries(inf, np.arange(12.0), geometry, "ct"))
    times = np.arange(12.0)
    times[5] = times[4]
    with pytest.raises(InputDataError, match="increase"):
        fileio.validate_series(PerfusionSeries(good.signal, times, geometry, "ct"))
    with pytest.raises(InputDataError, match="echo time"):
        fileio.validate_series(PerfusionSeries(good.signal, np.arange(12.0), geometry, "mr", te=-1))
    variable = PerfusionSeries(good.signal, np.r_[np.arange(8.0), 10, 13, 16, 19], geometry, "ct")
    warnings = fileio.validate_series(variable)
    assert any("vary" in w for w in warnings) and any("truncated" in w for w in warnings)


def test_nan_in_file_is_rejected(tmp_path):
    series = _series()
    series.signal[1, 1, 1, 4] = np.nan
    path = fileio.write_seq_nrrd(tmp_path / "nan.seq.nrrd", series)
    with pytest.raises(InputDataError, match="NaN"):
        fileio.read_perfusion(path)



@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, -np.inf])
def test_nonfinite_in_nifti_is_rejected(tmp_path, suffix, dtype, bad):
    # ITK's NIfTI reader (niftilib) turns NaN/Inf into 0, so the reader must look at the raw bytes.
    series = _series(dtype=dtype)
    series.signal[3, 4, 5, 11] = bad  # the very last voxel of the file
    series.signal[0, 0, 0, 0] = bad  # the first one
    path = fileio.write_nifti_perfusion(tmp_path / ("p" + suffix), series)
    assert np.all(np.isfinite(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))))  # ITK hides them
    with pytest.raises(InputDataError, match="2 NaN or infinite"):
        fileio.read_perfusion(path)


def test_nifti_nan_scan_reads_across_chunks(tmp_path, monkeypatch):
    """A NaN straddling no chunk boundary is missed or counted twice if the scan is wrong."""
    series = _series(dtype=np.float64)
    series.signal[2, 2, 2, 7] = np.nan
    path = fileio.write_nifti_perfusion(tmp_path / "p.nii.gz", series)
    count = fileio._check_nifti_complete(path, "file", count_nonfinite=True)
    assert count == 1
    original = gzip.GzipFile.read

    def small_reads(self, size=-1):  # 13-byte chunks: values split between chunks
        return original(self, 13 if size == 1 << 24 else size)

    monkeypatch.setattr(gzip.GzipFile, "read", small_reads)
    assert fileio._check_nifti_complete(path, "file", count_nonfinite=True) == 1


def test_nan_maps_written_by_us_stay_nan_on_disk(tmp_path):
    # What we write keeps NaN in the file; ITK-based readers (SimpleITK, Slicer) show 0 there.
    geometry = _oblique_geometry()
    values = np.full(geometry.shape, np.nan, np.float32)
    values[1:3, 1:4, 1:5] = 42.0
    path = fileio.write_volume(tmp_path / "cbf.nii.gz", values, geometry)
    assert fileio._check_nifti_complete(path, "map", count_nonfinite=True) == int(np.isnan(values).sum())
    read, _ = fileio.read_volume(path)
    assert np.all(read[np.isnan(values)] == 0) and np.all(read[values == 42.0] == 42.0)
    nrrd = fileio.write_volume(tmp_path / "cbf.nrrd", values, geometry)
    read, _ = fileio.read_volume(nrrd)
    assert np.array_equal(np.isnan(read), np.isnan(values))  # NRRD keeps NaN


def test_integer_nifti_is_not_scanned_as_float(tmp_path):
    series = _series(dtype=np.int16)
    path = fileio.write_nifti_perfusion(tmp_path / "p.nii", series)
    assert fileio._check_nifti_complete(path, "file", count_nonfinite=True) == 0
    assert np.array_equal(fileio.read_perfusion(path).signal, series.signal)


def _head_phantom(shape=(6, 24, 24), frames=20, seed=3):
    """MR-like magnitude: positive head with a signal drop, zero background, Rician-free."""
    geometry = Geometry.from_spacing(shape, (2.0, 2.0, 5.0))
    k, j, i = np.indices(shape)
    head = ((j - 11.5) ** 2 + (i - 11.5) ** 2) < 9.0 ** 2
    drop = 1.0 - 0.4 * np.exp(-0.5 * ((np.arange(frames) - 10) / 2.0) ** 2)
    rng = np.random.default_rng(seed)
    signal = np.where(head[..., None], 800.0 * drop + rng.normal(0, 10, shape + (frames,)), 0.0)
    return PerfusionSeries(signal.astype(np.float32), np.arange(frames) * 1.5, geometry, "mr", te=0.03), head


def test_mr_signal_checks():
    series, head = _head_phantom()
    assert isinstance(fileio.validate_series(series), list)  # zero background is fine
    few = series.signal.copy()
    few[2, 11, 11, :] = 0.0  # one dropout voxel (0.2 % of the head): clamped later, accepted
    few[3, 10, 10, 4] = -3.0
    fileio.validate_series(PerfusionSeries(few, series.times, series.geometry, "mr", te=0.03))
    many = series.signal.copy()
    inside = np.argwhere(head)
    many[:, inside[::20, 0], inside[::20, 1], :] *= -1  # 5 % of the head negative
    with pytest.raises(InputDataError, match=r"zero or negative.*magnitude"):
        fileio.validate_series(PerfusionSeries(many, series.times, series.geometry, "mr", te=0.03))
    blank = series.signal.copy()
    blank[..., 7] = 0.0  # one empty frame
    with pytest.raises(InputDataError, match="Frame 8 .* zero or negative"):
        fileio.validate_series(PerfusionSeries(blank, series.times, series.geometry, "mr", te=0.03))
    # The same values are fine for CT (HU may be negative), and MR without TE is checked later.
    fileio.validate_series(PerfusionSeries(many, series.times, series.geometry, "ct"))
    fileio.validate_series(PerfusionSeries(many, series.times, series.geometry, "mr", te=None))


@pytest.mark.parametrize("dtype", [np.int16, np.float32])
def test_constant_and_empty_series(dtype):
    geometry = Geometry.from_spacing((2, 3, 4), (1.0, 1.0, 1.0))
    times = np.arange(12.0)
    ramp = np.arange(24, dtype=dtype).reshape(2, 3, 4)
    constant = np.repeat(ramp[..., None], 12, axis=-1)
    with pytest.raises(InputDataError, match="does not change over time"):
        fileio.validate_series(PerfusionSeries(constant, times, geometry, "ct"))
    with pytest.raises(InputDataError, match="empty"):
        fileio.validate_series(PerfusionSeries(np.zeros_like(constant), times, geometry, "ct"))
    changing = constant.copy()
    changing[1, 2, 3, 6] += 5  # a single voxel changes: accepted here (the AIF step judges the bolus)
    fileio.validate_series(PerfusionSeries(changing, times, geometry, "ct"))
    extreme = constant.copy()
    if dtype == np.int16:
        extreme[0, 0, 0, 0], extreme[0, 0, 0, 1] = -32768, 32767  # range without int16 overflow
        fileio.validate_series(PerfusionSeries(extreme, times, geometry, "ct"))

# --- .seq.nrrd ------------------------------------------------------------------------------


def test_seq_nrrd_round_trip(tmp_path):
    series = _series(times=[0, 1, 2, 3, 4, 5, 6, 7.5, 9, 12, 15, 18.25])
    before = _digest(series.signal)
    path = fileio.write_seq_nrrd(tmp_path / "s.seq.nrrd", series)
    assert _digest(series.signal) == before
    loaded = fileio.read_perfusion(path)
    assert np.array_equal(loaded.signal, series.signal)
    assert np.allclose(loaded.times, series.times)
    assert _same_geometry(loaded.geometry, series.geometry)
    assert (loaded.modality, loaded.te, loaded.tr) == ("mr", 0.03, 1.5)
    assert loaded.metadata["index_name"] == "time"


def test_seq_nrrd_header_layout(tmp_path):
    series = _series(dtype=np.int16, modality="ct", te=None, tr=None)
    path = fileio.write_seq_nrrd(tmp_path / "s.seq.nrrd", series)
    blob = path.read_bytes()
    end = blob.index(b"\n\n")
    header = blob[:end].decode()
    assert "space: left-posterior-superior" in header
    assert "kinds: domain domain domain list" in header
    assert "encoding: gzip" in header and "type: short" in header
    assert "axis 3 index type:=numeric" in header
    assert "axis 3 index values:=0 1.5 3 4.5" in header
    assert 'units: "" "" "" "s"' in header
    # Raw data: time slowest, then k, j, i (i fastest): the first voxel row of frame 1.
    raw = np.frombuffer(gzip.decompress(blob[end + 2:]), dtype="<i2").reshape(12, 4, 5, 6)
    assert np.array_equal(raw[1], series.signal[..., 1])
    loaded = fileio.read_seq_nrrd(path)
    assert loaded.signal.dtype == np.int16 and np.array_equal(loaded.signal, series.signal)
    assert loaded.modality == "ct" and loaded.te is None



def test_seq_nrrd_is_byte_deterministic(tmp_path, monkeypatch):
    import time

    series = _series()
    first = fileio.write_seq_nrrd(tmp_path / "a.seq.nrrd", series).read_bytes()
    monkeypatch.setattr(time, "time", lambda: 1.7e9 + 12345.0)  # gzip would stamp this by default
    second = fileio.write_seq_nrrd(tmp_path / "b.seq.nrrd", series).read_bytes()
    assert first == second
    body = first[first.index(b"\n\n") + 2:]
    assert body[:2] == b"\x1f\x8b" and body[4:8] == b"\x00\x00\x00\x00"  # gzip MTIME field = 0

def _hand_nrrd(path, array_file_order, header_lines, encoding="gzip"):
    data = np.ascontiguousarray(array_file_order).astype("<f4").tobytes()
    payload = gzip.compress(data) if encoding == "gzip" else data
    text = "\n".join(["NRRD0004", "type: float", *header_lines, "endian: little", f"encoding: {encoding}"])
    path.write_bytes(text.encode() + b"\n\n" + payload)
    return path


def test_seq_nrrd_list_axis_first_ms_units_ras_space(tmp_path):
    """Older Slicer put the list axis first; times may be in ms; space may be RAS."""
    rng = np.random.default_rng(3)
    signal = rng.random((3, 4, 5, 10)).astype(np.float32)  # [K, J, I, T]
    file_order = np.transpose(signal, (0, 1, 2, 3))  # numpy (K, J, I, T) = file axes (T, I, J, K)
    path = _hand_nrrd(tmp_path / "old.seq.nrrd", file_order, [
        "dimension: 4",
        "space: right-anterior-superior",
        "sizes: 10 5 4 3",
        "space directions: none (2,0,0) (0,2,0) (0,0,3)",
        "kinds: list domain domain domain",
        'labels: "frame" "" "" ""',
        'units: "ms" "" "" ""',
        "space origin: (1,2,3)",
        "axis 0 index type:=numeric",
        "axis 0 index values:=" + " ".join(str(1000 * t) for t in range(10)),
    ], encoding="raw")
    loaded = fileio.read_seq_nrrd(path, modality="ct")
    assert np.array_equal(loaded.signal, signal)
    assert np.allclose(loaded.times, np.arange(10.0))
    expected = np.eye(4)
    expected[:3, :3] = np.diag([2.0, 2.0, 3.0])
    expected[:3, 3] = (1, 2, 3)
    assert np.allclose(loaded.geometry.ijk_to_ras, expected)


def test_seq_nrrd_errors(tmp_path):
    series = _series()
    good = fileio.write_seq_nrrd(tmp_path / "good.seq.nrrd", series)
    blob = good.read_bytes()
    truncated = tmp_path / "truncated.seq.nrrd"
    truncated.write_bytes(blob[: len(blob) - 200])
    with pytest.raises(InputFileError, match="truncated.seq.nrrd"):
        fileio.read_perfusion(truncated)
    no_header_end = tmp_path / "cut.seq.nrrd"
    no_header_end.write_bytes(blob[:60])
    with pytest.raises(InputFileError, match="truncated"):
        fileio.read_perfusion(no_header_end)
    not_nrrd = tmp_path / "x.seq.nrrd"
    not_nrrd.write_bytes(b"hello world\n\n")
    with pytest.raises(InputFileError, match="not a NRRD"):
        fileio.read_perfusion(not_nrrd)
    volume3d = fileio.write_volume(tmp_path / "v.nrrd", np.ones((4, 5, 6), np.float32), _oblique_geometry())
    with pytest.raises(InputDataError, match="3D volume"):
        fileio.read_perfusion(volume3d)
    no_times = _hand_nrrd(tmp_path / "notimes.seq.nrrd", np.zeros((10, 2, 2, 2)), [
        "dimension: 4", "space: left-posterior-superior", "sizes: 2 2 2 10",
        "space directions: (1,0,0) (0,1,0) (0,0,1) none", "kinds: domain domain domain list"])
    with pytest.raises(InputDataError, match="frame times"):
        fileio.read_perfusion(no_times)


# --- 3D volumes ----------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd"])
@pytest.mark.parametrize("dtype", [np.float64, np.bool_])
def test_volume_round_trip(tmp_path, suffix, dtype):
    geometry = _oblique_geometry()
    rng = np.random.default_rng(1)
    array = rng.random(geometry.shape) > 0.5 if dtype == np.bool_ else rng.random(geometry.shape) * 900
    before = _digest(array)
    path = fileio.write_volume(tmp_path / "sub" / f"v{suffix}", array, geometry)
    assert _digest(array) == before
    loaded, loaded_geometry = fileio.read_volume(path)
    assert _same_geometry(loaded_geometry, geometry)
    if dtype == np.bool_:
        assert loaded.dtype == np.uint8 and np.array_equal(loaded > 0, array)
    else:
        assert loaded.dtype == np.float32 and np.allclose(loaded, array, rtol=1e-6)


def test_read_volume_rejects_4d(tmp_path):
    path = fileio.write_nifti_perfusion(tmp_path / "p.nii.gz", _series())
    with pytest.raises(InputDataError, match="4D"):
        fileio.read_volume(path)
    with pytest.raises(InputFileError):
        fileio.read_volume(tmp_path / "nothing.nii.gz")


def test_write_errors(tmp_path):
    with pytest.raises(OutputError):
        fileio.write_volume(tmp_path / "a.nii.gz", np.ones((2, 2)), _oblique_geometry())
    with pytest.raises(OutputError):
        fileio.write_volume(tmp_path / "a.nii.gz", np.ones((2, 2, 2)), _oblique_geometry())
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError):
        fileio.write_volume(blocker / "a.nii.gz", np.ones((4, 5, 6)), _oblique_geometry())
    with pytest.raises(OutputError):
        fileio.write_nifti_perfusion(tmp_path / "a.nrrd", _series())


def test_phantom_round_trip_both_formats(tmp_path):
    from StrokeMismatchLib.phantom import make_volume_phantom

    phantom = make_volume_phantom("mr")
    for name in ("p.nii.gz", "p.seq.nrrd"):
        path = tmp_path / name
        (fileio.write_nifti_perfusion if name.endswith(".nii.gz") else fileio.write_seq_nrrd)(path, phantom.series)
        loaded = fileio.read_perfusion(path)
        assert np.array_equal(loaded.signal, phantom.series.signal)
        assert np.allclose(loaded.times, phantom.times)
        assert loaded.geometry.same_grid(phantom.geometry)
        assert loaded.te == pytest.approx(0.03) and loaded.modality == "mr"
    adc_path = fileio.write_volume(tmp_path / "adc.nrrd", phantom.adc, phantom.adc_geometry)
    adc, adc_geometry = fileio.read_volume(adc_path)
    assert adc_geometry.same_grid(phantom.adc_geometry) and np.array_equal(adc, phantom.adc)


def test_read_perfusion_dispatches_dicom_folder(tmp_path):
    from dicom_factory import write_classic_series

    rng = np.random.default_rng(4)
    signal = np.round(rng.random((2, 3, 4, 10)) * 100 + 20)
    times = np.arange(10) * 1.0
    write_classic_series(tmp_path / "dicom", signal, times, modality="CT")
    loaded = fileio.read_perfusion(tmp_path / "dicom")
    assert loaded.signal.shape == signal.shape
    assert np.allclose(loaded.signal, signal)
    assert np.allclose(loaded.times - loaded.times[0], times)
    assert loaded.modality == "ct"
    with pytest.raises(InputDataError, match="DICOM header"):  # the file says CT
        fileio.read_perfusion(tmp_path / "dicom", modality="mr", te=0.025)
    overridden = fileio.read_perfusion(tmp_path / "dicom", modality="mr", te=0.025, force_modality=True)
    assert overridden.modality == "mr" and overridden.te == 0.025


def test_given_tr_with_sidecar_frame_times_is_reported(tmp_path):
    """Frame times recorded in the sidecar win over --tr (they are measured); a TR that does not
    match them is said, not silently dropped."""
    series = _series(times=np.arange(12) * 1.5)
    path = fileio.write_nifti_perfusion(tmp_path / "p.nii.gz", series)  # sidecar with VolumeTiming
    loaded = fileio.read_perfusion(path, tr=3.0)
    assert np.allclose(loaded.times, np.arange(12) * 1.5)
    assert any("3 s" in w and "VolumeTiming" in w for w in loaded.metadata["warnings"]), \
        loaded.metadata["warnings"]
    same = fileio.read_perfusion(path, tr=1.5)  # agrees: nothing to say
    assert not any("TR" in w for w in same.metadata["warnings"])
