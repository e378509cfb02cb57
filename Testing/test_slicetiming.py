"""Slice-timing correction: the resampling itself, its refusals, the pipeline switch, and its
effect on Tmax in an interleaved acquisition of the volume phantom."""

import warnings

import numpy as np
import pytest
from slice_timing_phantom import interleaved_phantom, interleaved_slice_times

from StrokeMismatchLib.errors import InputDataError
from StrokeMismatchLib.pipeline import CaseSettings, run_case
from StrokeMismatchLib.slicetiming import correct_slice_timing, from_sidecar


def _curve(t):
    return 100.0 + 50.0 * np.exp(-((t - 20.0) / 5.0) ** 2)


def test_each_slice_is_resampled_to_the_frame_times():
    times = np.arange(40) * 1.5
    offsets = np.array([0.0, 0.5, 1.0])
    acquired = np.stack([np.broadcast_to(_curve(times + d), (2, 2, times.size)) for d in offsets])
    corrected, report = correct_slice_timing(acquired, times, offsets, source="test")
    assert report.applied and report.max_shift_s == pytest.approx(1.0)
    truth = _curve(times)
    inner = slice(1, None)  # the first frame of a late slice is held, not extrapolated
    for k in range(3):
        error = np.abs(corrected[k, 0, 0, inner] - truth[inner]).max()
        before = np.abs(acquired[k, 0, 0, inner] - truth[inner]).max()
        assert error < 2.0, k
        if offsets[k] > 0:
            assert error < 0.3 * before, k
    np.testing.assert_allclose(corrected[0], acquired[0], rtol=1e-6)  # acquired at the frame time
    assert report.mean_abs_change > 0


@pytest.mark.parametrize("offsets, reason", [
    ([0.0, 0.5], "2 slice times for 3 slices"),
    ([0.0, -0.1, 0.2], "not finite"),
    ([0.0, 0.7, 1.6], "not shorter than the shortest frame interval"),
])
def test_slice_times_that_do_not_fit_leave_the_signal_and_say_why(offsets, reason):
    times = np.arange(10) * 1.5
    signal = np.random.default_rng(0).normal(size=(3, 2, 2, 10)).astype(np.float32)
    corrected, report = correct_slice_timing(signal, times, offsets, source="sidecar")
    assert corrected is signal and not report.applied
    assert reason in report.reason


def test_sidecar_slice_timing_is_checked():
    assert from_sidecar({}, 3) is None
    np.testing.assert_allclose(from_sidecar({"SliceTiming": [0, 0.5, 1.0]}, 3), [0, 0.5, 1.0])
    with pytest.raises(InputDataError, match="3 values for 4 slices"):
        from_sidecar({"SliceTiming": [0, 0.5, 1.0]}, 4)
    with pytest.raises(InputDataError, match="list of numbers"):
        from_sidecar({"SliceTiming": "0 0.5"}, 2)


def test_interleaved_slice_times():
    np.testing.assert_allclose(interleaved_slice_times(4, 2.0), [0.0, 1.0, 0.5, 1.5])


@pytest.fixture(scope="module")
def interleaved():
    truth, series = interleaved_phantom("mr", shape=(8, 48, 48), snr=None)

    def run(s, on):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return run_case(s, adc=truth.adc, adc_geometry=truth.adc_geometry,
                            settings=CaseSettings(motion_correction=False, slice_timing_correction=on))

    return truth, run(truth.series, False), run(series, False), run(series, True), run(truth.series, True)


def _per_slice_bias(result, reference, truth):
    tissue = np.isfinite(truth.true_maps["tmax"]) & np.isfinite(result.maps.tmax) & np.isfinite(reference.maps.tmax)
    difference = result.maps.tmax - reference.maps.tmax
    k = np.indices(tissue.shape)[0]
    bias = [float(np.mean(difference[tissue & (k == s)])) for s in range(tissue.shape[0]) if np.any(tissue & (k == s))]
    return np.array(bias), float(np.mean(np.abs(difference[tissue])))


def test_correction_removes_the_slice_dependent_tmax_offset(interleaved):
    """TR 1.5 s, 8 interleaved slices (0–1.31 s): uncorrected, Tmax is off by a slice-dependent
    −0.5…+0.5 s against the same phantom acquired all at once; corrected, by < 0.1 s."""
    truth, simultaneous, uncorrected, corrected, _ = interleaved
    bias_off, mae_off = _per_slice_bias(uncorrected, simultaneous, truth)
    bias_on, mae_on = _per_slice_bias(corrected, simultaneous, truth)
    assert np.ptp(bias_off) > 0.7
    assert np.ptp(bias_on) < 0.2
    assert mae_on < 0.5 * mae_off
    assert corrected.summary()["analysis"]["slice_timing"]["applied"] is True
    assert corrected.summary()["analysis"]["slice_timing"]["source"] == "simulated interleaved acquisition"
    record = uncorrected.summary()
    assert record["analysis"]["slice_timing"] == {"applied": False, "reason": "switched off"}
    assert record["settings"]["slice_timing_correction"] is False


def test_series_without_slice_timing_is_left_as_it_is(interleaved):
    _, simultaneous, _, _, result = interleaved
    np.testing.assert_array_equal(result.maps.tmax, simultaneous.maps.tmax)
    assert result.summary()["analysis"]["slice_timing"]["applied"] is False
    assert "does not record slice timing" in result.summary()["analysis"]["slice_timing"]["reason"]


def test_bids_sidecar_slice_timing_reaches_the_series(tmp_path):
    import json

    from StrokeMismatchLib import fileio
    from StrokeMismatchLib.phantom.volume import make_volume_phantom

    series = make_volume_phantom("mr", shape=(4, 24, 24), snr=None).series
    path = fileio.write_nifti_perfusion(tmp_path / "dsc.nii.gz", series)
    sidecar = fileio.sidecar_path(path)
    facts = json.loads(sidecar.read_text())
    for direction, expected in (("k", [0.0, 0.75, 0.25, 1.0]), ("k-", [1.0, 0.25, 0.75, 0.0])):
        sidecar.write_text(json.dumps(dict(facts, SliceTiming=[0.0, 0.75, 0.25, 1.0], SliceEncodingDirection=direction)))
        loaded = fileio.read_perfusion(path)
        assert loaded.metadata["slice_timing_s"] == expected
        assert loaded.metadata["slice_timing_source"] == "BIDS sidecar SliceTiming"
    sidecar.write_text(json.dumps(dict(facts, SliceTiming=[0.0, 0.5])))
    with pytest.raises(InputDataError, match="2 values for 4 slices"):
        fileio.read_perfusion(path)
