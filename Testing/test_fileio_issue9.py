"""Issue 9, input rows: timing, voxel size, crashes on damaged files, modality contradicting the
file, library misuse. One table row per failure the adversarial testing found; each row failed
before the fix (wrong result accepted silently, or a raw Python/ITK error)."""

import gzip
import json
import struct
import tracemalloc

import numpy as np
import pydicom
import pytest

from StrokeMismatchLib import fileio, validation
from StrokeMismatchLib.errors import InputDataError, InputFileError
from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.phantom.volume import make_volume_phantom
from StrokeMismatchLib.series import PerfusionSeries

N_FRAMES = 12
GEOMETRY = Geometry.from_spacing((4, 5, 6), (1.8, 1.8, 5.0))


def _series(times=None, modality="mr", te=0.03, tr=1.5, signal=None):
    times = np.arange(N_FRAMES) * 1.5 if times is None else np.asarray(times, float)
    if signal is None:
        rng = np.random.default_rng(0)
        signal = (500 + rng.random(GEOMETRY.shape + (times.size,)) * 100).astype(np.float32)
    return PerfusionSeries(signal, times, GEOMETRY, modality, te=te, tr=tr, source="test")


def _nifti(tmp_path, sidecar: dict | None, name="p.nii", series=None):
    """A 4D NIfTI (uncompressed, so the header can be patched) and the given sidecar."""
    path = fileio.write_nifti_perfusion(tmp_path / name, series or _series(), sidecar=False)
    if sidecar is not None:
        fileio.sidecar_path(path).write_text(json.dumps(sidecar))
    return path


def _patch_nifti(path, offset, fmt, value):
    blob = bytearray(path.read_bytes())
    blob[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, *value)
    path.write_bytes(bytes(blob))
    return path


# --- rows: each builds its input in tmp_path and returns (callable that reads it, expectation) ------


def row_sidecar_frame_times_in_ms(tmp_path):
    """VolumeTiming in ms (the TR was converted, the frame times were not): the whole brain came
    out hypoperfused. Now: read as ms (intervals of 1500 s are impossible), with a warning."""
    path = _nifti(tmp_path, {"RepetitionTime": 1.5, "EchoTime": 0.03, "Modality": "MR",
                             "VolumeTiming": [1500.0 * i for i in range(N_FRAMES)]})
    series = fileio.read_perfusion(path)
    assert np.allclose(series.times, np.arange(N_FRAMES) * 1.5)
    assert any("read as ms" in w for w in series.metadata["warnings"])


def row_tr_times_ten(tmp_path):
    """RepetitionTime 15 s (×10 typing error) gave frames 15 s apart, analysed."""
    path = _nifti(tmp_path, {"RepetitionTime": 15.0, "EchoTime": 0.03, "Modality": "MR"})
    with pytest.raises(InputDataError, match=r"15 s apart.*0\.1–5 s"):
        fileio.read_perfusion(path)


def row_tr_given_times_ten(tmp_path):
    """--tr 15 on a NIfTI without timing: the same implausible interval, refused."""
    path = _nifti(tmp_path, {"EchoTime": 0.03, "Modality": "MR"})
    with pytest.raises(InputDataError, match="15 s apart"):
        fileio.read_perfusion(path, tr=15.0)


def row_repetition_time_boolean(tmp_path):
    """"RepetitionTime": true was read as 1 s."""
    path = _nifti(tmp_path, {"RepetitionTime": True, "EchoTime": 0.03, "Modality": "MR"})
    with pytest.raises(InputDataError, match="RepetitionTime is true, not a number of seconds"):
        fileio.read_perfusion(path)


def row_unusable_repetition_time_beside_recorded_times(tmp_path):
    """A RepetitionTime of 0 or true is not needed when the frame times are recorded: ignored
    with a warning, not refused."""
    path = _nifti(tmp_path, {"RepetitionTime": 0, "EchoTime": 0.03, "Modality": "MR",
                             "VolumeTiming": [1.5 * i for i in range(N_FRAMES)]})
    series = fileio.read_perfusion(path)
    assert np.allclose(series.times, np.arange(N_FRAMES) * 1.5) and series.tr is None
    assert any("RepetitionTime" in w and "ignored" in w for w in series.metadata["warnings"])


def row_echo_time_list_multi_echo(tmp_path):
    """A multi-echo EchoTime list was silently cut to its first value."""
    path = _nifti(tmp_path, {"RepetitionTime": 1.5, "EchoTime": [0.015, 0.045], "Modality": "MR"})
    with pytest.raises(InputDataError, match="multi-echo"):
        fileio.read_perfusion(path)
    assert fileio.read_perfusion(path, te=0.045).te == 0.045  # the echo given explicitly


def row_echo_time_list_of_one(tmp_path):
    """A list of one TE (some converters write it) is that TE."""
    path = _nifti(tmp_path, {"RepetitionTime": 1.5, "EchoTime": [0.032], "Modality": "MR"})
    assert fileio.read_perfusion(path).te == pytest.approx(0.032)


def row_tr_does_not_replace_dicom_times(tmp_path):
    """--tr replaced the DICOM header's frame times when the header had no RepetitionTime
    (usual for CT), contradicting the README: recorded times win, the conflict is reported."""
    from dicom_factory import write_classic_series

    rng = np.random.default_rng(4)
    signal = np.round(rng.random((2, 3, 4, N_FRAMES)) * 100 + 20)
    times = np.arange(N_FRAMES) * 1.0
    folder = tmp_path / "dicom"
    for path in write_classic_series(folder, signal, times, modality="CT"):
        assert "RepetitionTime" not in pydicom.dcmread(path, stop_before_pixels=True)  # as CT writes it
    series = fileio.read_perfusion(folder, tr=2.0)
    assert np.allclose(series.times - series.times[0], times)
    assert any("2 s was not used" in w for w in series.metadata["warnings"])


@pytest.mark.parametrize("unit_code, word", [(1, "metres"), (3, "microns")])
def row_nifti_voxel_units(tmp_path, unit_code=1, word="metres"):
    """xyzt_units metres → core 4.6e10 mL; microns → 24 GB allocated and killed. Refused on the
    header, naming the size found."""
    path = _nifti(tmp_path, {"RepetitionTime": 1.5, "EchoTime": 0.03, "Modality": "MR"})
    _patch_nifti(path, 123, "<B", (unit_code | 8,))  # NIFTI_UNITS_METER=1 / MICRON=3, | SEC=8
    with pytest.raises(InputDataError, match=rf"voxels of .* mm .*{word}"):
        fileio.read_perfusion(path)


def row_adc_voxel_units_metres(tmp_path):
    """The same check on the ADC (read_volume), before its voxels are loaded."""
    path = fileio.write_volume(tmp_path / "adc.nii", np.full(GEOMETRY.shape, 800, np.float32), GEOMETRY)
    _patch_nifti(path, 123, "<B", (1 | 8,))
    with pytest.raises(InputDataError, match="metres"):
        fileio.read_volume(path)


def row_sidecar_not_an_object(tmp_path):
    """A sidecar that is valid JSON but a list crashed with AttributeError."""
    path = _nifti(tmp_path, None)
    fileio.sidecar_path(path).write_text("[1.5, 0.03]")
    with pytest.raises(InputFileError, match="not an object"):
        fileio.read_perfusion(path)


def row_sidecar_with_byte_order_mark(tmp_path):
    """A sidecar saved by a Windows editor starts with a UTF-8 BOM: still read."""
    path = _nifti(tmp_path, None)
    text = json.dumps({"RepetitionTime": 1.5, "EchoTime": 0.03, "Modality": "MR"})
    fileio.sidecar_path(path).write_bytes(b"\xef\xbb\xbf" + text.encode())
    assert fileio.read_perfusion(path).te == pytest.approx(0.03)


def row_sidecar_deeply_nested(tmp_path):
    """A deeply nested sidecar crashed with RecursionError."""
    path = _nifti(tmp_path, None)
    fileio.sidecar_path(path).write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(InputFileError, match="nested too deeply"):
        fileio.read_perfusion(path)


def row_nifti_negative_dimension(tmp_path):
    """A NIfTI whose header gives a negative size crashed inside ITK / numpy."""
    path = _nifti(tmp_path, {"RepetitionTime": 1.5, "EchoTime": 0.03, "Modality": "MR"})
    dims = struct.unpack("<8h", path.read_bytes()[40:56])
    _patch_nifti(path, 40, "<8h", (dims[0], dims[1], -dims[2], *dims[3:]))
    with pytest.raises(InputFileError, match="impossible image sizes"):
        fileio.read_perfusion(path)


def row_seq_nrrd_gzip_bomb(tmp_path):
    """A .seq.nrrd whose gzip payload inflates far beyond the header's size was inflated whole
    (2.2 GB for a 1 MB file). Now refused with at most the announced size inflated."""
    series = _series(modality="ct", te=None)
    path = fileio.write_seq_nrrd(tmp_path / "bomb.seq.nrrd", series)
    blob = path.read_bytes()
    header = blob[: blob.index(b"\n\n") + 2]
    path.write_bytes(header + gzip.compress(bytes(200 << 20), compresslevel=9))  # 200 MB of zeros
    assert path.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(InputFileError, match=r"^\S+bomb.seq.nrrd: the compressed image data inflate to more than"):
            fileio.read_perfusion(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"{peak / 2**20:.0f} MB allocated to refuse a bomb"


def row_seq_nrrd_metres(tmp_path):
    """A .seq.nrrd with space directions 1000× too large is refused on its header."""
    series = _series(modality="ct", te=None)
    path = fileio.write_seq_nrrd(tmp_path / "m.seq.nrrd", series)
    blob = path.read_bytes()
    end = blob.index(b"\n\n")
    text = blob[:end].decode().replace("(1.8,", "(1800.0,")
    assert "(1800.0," in text
    path.write_bytes(text.encode() + blob[end:])
    with pytest.raises(InputDataError, match="voxels of 1800 × 1.8 × 5 mm"):
        fileio.read_perfusion(path)


def row_modality_contradicts_sidecar(tmp_path):
    """An MR series (sidecar Modality MR) given as CT: exit 0, core 0, "not eligible"."""
    path = _nifti(tmp_path, {"RepetitionTime": 1.5, "EchoTime": 0.03, "Modality": "MR"})
    with pytest.raises(InputDataError, match="sidecar p.json \\(Modality\\) says MR.*--force-modality"):
        fileio.read_perfusion(path, modality="ct")


def row_modality_contradicts_seq_nrrd(tmp_path):
    path = fileio.write_seq_nrrd(tmp_path / "mr.seq.nrrd", _series())
    with pytest.raises(InputDataError, match="says MR"):
        fileio.read_perfusion(path, modality="ct")


def row_mr_signal_declared_ct(tmp_path):
    """MR signal without any modality label, declared CT: the content contradicts it (no air,
    signal drops during the bolus) and it is refused, even when the label is forced."""
    phantom = make_volume_phantom("mr", seed=0, shape=(4, 32, 32), spacing=(3.6, 3.6, 5.0))
    series = phantom.series
    unlabeled = PerfusionSeries(series.signal, series.times, series.geometry, None, te=series.te)
    path = fileio.write_nifti_perfusion(tmp_path / "dsc.nii.gz", unlabeled)
    with pytest.raises(InputDataError, match="looks like DSC-MR"):
        fileio.read_perfusion(path, modality="ct")
    labelled = fileio.write_nifti_perfusion(tmp_path / "lab.nii.gz", series)
    with pytest.raises(InputDataError, match="looks like DSC-MR"):
        fileio.read_perfusion(labelled, modality="ct", force_modality=True)


def row_boolean_signal(tmp_path):
    """A boolean array (a mask) was accepted as signal."""
    with pytest.raises(InputDataError, match="boolean"):
        _series(signal=np.ones(GEOMETRY.shape + (N_FRAMES,), dtype=bool))


def row_complex_signal(tmp_path):
    """A complex array was accepted as signal."""
    with pytest.raises(InputDataError, match="complex"):
        _series(signal=np.ones(GEOMETRY.shape + (N_FRAMES,), dtype=np.complex64))


def row_library_times_in_ms(tmp_path):
    """Times in ms given to the library: refused with the hint."""
    series = _series(times=np.arange(N_FRAMES) * 1500.0)
    with pytest.raises(InputDataError, match="look like ms"):
        fileio.validate_series(series)


def row_given_times_replacing_recorded_ones_are_reported(tmp_path):
    """Explicit frame times (library) replace recorded ones, and the replacement is said."""
    path = fileio.write_seq_nrrd(tmp_path / "s.seq.nrrd", _series())
    series = fileio.read_perfusion(path, times=np.arange(N_FRAMES) * 2.0)
    assert np.allclose(series.times, np.arange(N_FRAMES) * 2.0)
    assert any("replace those recorded" in w for w in series.metadata["warnings"])
    same = fileio.read_perfusion(path, times=np.arange(N_FRAMES) * 1.5)
    assert not any("replace" in w for w in same.metadata["warnings"])


ROWS = [
    row_sidecar_frame_times_in_ms, row_tr_times_ten, row_tr_given_times_ten, row_repetition_time_boolean,
    row_unusable_repetition_time_beside_recorded_times,
    row_echo_time_list_multi_echo, row_echo_time_list_of_one, row_tr_does_not_replace_dicom_times,
    row_adc_voxel_units_metres, row_sidecar_not_an_object, row_sidecar_with_byte_order_mark, row_sidecar_deeply_nested,
    row_nifti_negative_dimension, row_seq_nrrd_gzip_bomb, row_seq_nrrd_metres,
    row_modality_contradicts_sidecar, row_modality_contradicts_seq_nrrd, row_mr_signal_declared_ct,
    row_boolean_signal, row_complex_signal, row_library_times_in_ms,
    row_given_times_replacing_recorded_ones_are_reported,
]


@pytest.mark.parametrize("row", ROWS, ids=[row.__name__[4:] for row in ROWS])
def test_input_row(row, tmp_path):
    row(tmp_path)


@pytest.mark.parametrize("unit_code, word", [(1, "metres"), (3, "microns")])
def test_input_row_nifti_voxel_units(tmp_path, unit_code, word):
    row_nifti_voxel_units(tmp_path, unit_code, word)


# --- validation runs once per analysis -----------------------------------------------------------


def test_series_is_validated_once_per_analysis(tmp_path, monkeypatch):
    """Read + run_case validated the 4D series 2–3 times (reader, override, pipeline)."""
    from StrokeMismatchLib.pipeline import CaseSettings, run_case

    phantom = make_volume_phantom("ct", seed=1, shape=(4, 32, 32), spacing=(3.6, 3.6, 5.0))
    path = fileio.write_seq_nrrd(tmp_path / "ct.seq.nrrd", phantom.series)
    calls = []
    real = validation._check_signal_values
    monkeypatch.setattr(validation, "_check_signal_values", lambda *a, **k: calls.append(1) or real(*a, **k))
    series = fileio.read_perfusion(path, times=phantom.series.times, tr=1.0)
    run_case(series, settings=CaseSettings(motion_correction=False))
    assert len(calls) == 1
    # A changed fact is checked again.
    series.te = 0.03
    fileio.validate_series(series)
    assert len(calls) == 2


def test_mr_series_with_fewer_than_four_slices_runs():
    """An MR slab of 1–3 slices crashed in the brain mask's recursive Gaussian (needs ≥ 4 voxels
    per axis)."""
    from StrokeMismatchLib.pipeline import CaseSettings, run_case

    phantom = make_volume_phantom("mr", seed=0, shape=(3, 32, 32), spacing=(3.6, 3.6, 5.0))
    for n_slices in (3, 1):
        s = phantom.series
        grid = Geometry(s.geometry.ijk_to_ras, (n_slices, *s.signal.shape[1:3]))
        series = PerfusionSeries(s.signal[:n_slices].copy(), s.times, grid, "mr", te=s.te)
        adc_grid = Geometry(phantom.adc_geometry.ijk_to_ras, (n_slices, *phantom.adc.shape[1:]))
        result = run_case(series, adc=phantom.adc[:n_slices], adc_geometry=adc_grid,
                          settings=CaseSettings(motion_correction=False))
        assert result.brain_mask.shape == grid.shape and result.brain_mask.any()


@pytest.mark.parametrize("signal_dtype, times_scale, pattern", [
    (bool, 1.0, "boolean"), (np.complex64, 1.0, "complex"), (np.float32, 1000.0, "look like ms"),
])
def test_low_level_api_refuses_misuse(signal_dtype, times_scale, pattern):
    """signal_to_concentration took boolean and complex arrays and times in ms without a word."""
    from StrokeMismatchLib.perfusion import signal_to_concentration

    signal = np.ones((2, 2, 2, 40), dtype=signal_dtype)
    with pytest.raises(InputDataError, match=pattern):
        signal_to_concentration(signal, np.arange(40) * 1.5 * times_scale, modality="ct")
