"""Bad input through the real command line: a clear one-line error, a non-zero exit, nothing
lost, inputs never modified (issue 5 table)."""

import hashlib
import re

import numpy as np
import pytest

from dicom_factory import write_classic_series
from StrokeMismatchLib import cli, fileio
from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.phantom.volume import make_volume_phantom
from StrokeMismatchLib.series import PerfusionSeries

SHAPE = (6, 32, 32)


@pytest.fixture(scope="module")
def small_ct():
    return make_volume_phantom("ct", seed=21, shape=SHAPE, spacing=(3.6, 3.6, 5.0))


def _write(path, signal, times, geometry, *, modality="ct", te=None):
    series = PerfusionSeries(np.asarray(signal, dtype=np.float32), times, geometry, modality=modality, te=te)
    return fileio.write_nifti_perfusion(path, series)


def _run(argv, capsys):
    code = cli.main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


def _assert_error(code, err, pattern):
    assert code != 0
    lines = [line for line in err.splitlines() if line.strip()]
    assert lines, "no error message"
    message = lines[-1]
    assert message.startswith("stroke-mismatch: error:"), err
    assert "Traceback" not in err
    assert re.search(pattern, message, re.IGNORECASE), message


def _hashes(folder):
    return {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_3d_image_as_perfusion(tmp_path, small_ct, capsys):
    path = tmp_path / "vol.nii.gz"
    fileio.write_volume(path, small_ct.series.signal[..., 0], small_ct.geometry)
    code, err = _run(["analyze", "--perfusion", str(path), "--modality", "ct", "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"3D|4D")


def test_fewer_than_10_frames(tmp_path, small_ct, capsys):
    path = _write(tmp_path / "p.nii.gz", small_ct.series.signal[..., :8], small_ct.times[:8], small_ct.geometry)
    code, err = _run(["analyze", "--perfusion", str(path), "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"frame")


@pytest.mark.parametrize("suffix", [".seq.nrrd", ".nii.gz"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_inf(tmp_path, small_ct, capsys, bad, suffix):
    signal = small_ct.series.signal.copy()
    signal[2, 10, 10, 5] = bad
    # NIfTI keeps NaN/Inf on disk, but ITK's reader turns them into 0: the reader scans the raw data.
    if suffix == ".nii.gz":
        path = _write(tmp_path / "p.nii.gz", signal, small_ct.times, small_ct.geometry)
    else:
        series = PerfusionSeries(signal, small_ct.times, small_ct.geometry, modality="ct")
        path = fileio.write_seq_nrrd(tmp_path / "p.seq.nrrd", series)
    code, err = _run(["analyze", "--perfusion", str(path), "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"NaN|infinite")
    assert not (tmp_path / "o" / "summary.json").exists()


def test_constant_series(tmp_path, small_ct, capsys):
    signal = np.full(small_ct.series.signal.shape, 40.0, dtype=np.float32)
    path = _write(tmp_path / "p.nii.gz", signal, small_ct.times, small_ct.geometry)
    code, err = _run(["analyze", "--perfusion", str(path), "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"constant|no change|does not change|no bolus|no contrast")


def test_zero_or_negative_mr_signal(tmp_path, capsys):
    mr = make_volume_phantom("mr", seed=22, shape=SHAPE, spacing=(3.6, 3.6, 5.0))
    signal = mr.series.signal - 2000.0  # everything ≤ 0
    path = _write(tmp_path / "p.nii.gz", signal, mr.times, mr.geometry, modality="mr", te=0.03)
    adc = tmp_path / "adc.nii.gz"
    fileio.write_volume(adc, mr.adc, mr.adc_geometry)
    code, err = _run(["analyze", "--perfusion", str(path), "--diffusion", str(adc), "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"zero|negative|positive")


def test_mr_without_te(tmp_path, capsys):
    mr = make_volume_phantom("mr", seed=23, shape=SHAPE, spacing=(3.6, 3.6, 5.0))
    path = _write(tmp_path / "p.nii.gz", mr.series.signal, mr.times, mr.geometry, modality="mr", te=None)
    adc = tmp_path / "adc.nii.gz"
    fileio.write_volume(adc, mr.adc, mr.adc_geometry)
    code, err = _run(["analyze", "--perfusion", str(path), "--diffusion", str(adc), "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"echo time|TE")


def test_times_not_increasing_dicom(tmp_path, small_ct, capsys):
    times = small_ct.times.copy()
    times[20] = times[18]
    write_classic_series(tmp_path / "dcm", small_ct.series.signal[:, :8, :8, :], times)
    code, err = _run(["analyze", "--perfusion", str(tmp_path / "dcm"), "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"increas")


def test_adc_and_perfusion_do_not_overlap(tmp_path, capsys):
    mr = make_volume_phantom("mr", seed=24, shape=SHAPE, spacing=(3.6, 3.6, 5.0))
    path = _write(tmp_path / "p.nii.gz", mr.series.signal, mr.times, mr.geometry, modality="mr", te=0.03)
    far = mr.adc_geometry.ijk_to_ras.copy()
    far[:3, 3] += 500.0  # half a metre away
    adc = tmp_path / "adc.nii.gz"
    fileio.write_volume(adc, mr.adc, Geometry(far, mr.adc_geometry.shape))
    code, err = _run(["analyze", "--perfusion", str(path), "--diffusion", str(adc), "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"overlap")


def test_truncated_nifti(tmp_path, small_ct, capsys):
    path = _write(tmp_path / "p.nii", small_ct.series.signal, small_ct.times, small_ct.geometry)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    code, err = _run(["analyze", "--perfusion", str(path), "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"truncated|corrupt|damaged|incomplete")


def test_corrupt_nifti_gz(tmp_path, small_ct, capsys):
    path = _write(tmp_path / "p.nii.gz", small_ct.series.signal, small_ct.times, small_ct.geometry)
    data = bytearray(path.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = b"\x00" * 64
    path.write_bytes(bytes(data))
    code, err = _run(["analyze", "--perfusion", str(path), "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"truncated|corrupt|damaged|cannot be read|could not be read")


def test_truncated_dicom(tmp_path, small_ct, capsys):
    paths = write_classic_series(tmp_path / "dcm", small_ct.series.signal[:, :8, :8, :], small_ct.times)
    paths[3].write_bytes(paths[3].read_bytes()[:-30])
    code, err = _run(["analyze", "--perfusion", str(tmp_path / "dcm"), "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"truncated|corrupt")


def test_dicom_folder_with_mixed_series(tmp_path, small_ct, capsys):
    signal = small_ct.series.signal[:, :8, :8, :]
    write_classic_series(tmp_path / "dcm" / "a", signal, small_ct.times, number=2, description="CTP")
    write_classic_series(tmp_path / "dcm" / "b", signal[..., :1], small_ct.times[:1], number=3, description="Plain")
    code, err = _run(["analyze", "--perfusion", str(tmp_path / "dcm"), "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"--series")
    assert "CTP" in err and "Plain" in err


def test_unwritable_output_folder(tmp_path, small_ct, capsys):
    path = _write(tmp_path / "p.nii.gz", small_ct.series.signal, small_ct.times, small_ct.geometry)
    blocker = tmp_path / "a_file"
    blocker.write_text("I am a file, not a folder")
    code, err = _run(["analyze", "--perfusion", str(path), "--out", str(blocker / "results"), "--no-report"], capsys)
    _assert_error(code, err, r"writ|cannot create|not a folder|permission")
    assert blocker.read_text() == "I am a file, not a folder"


def test_existing_results_refused_without_overwrite_and_inputs_unchanged(tmp_path, small_ct, capsys):
    inputs = tmp_path / "in"
    inputs.mkdir()
    path = _write(inputs / "p.nii.gz", small_ct.series.signal, small_ct.times, small_ct.geometry)
    before = _hashes(inputs)
    out = tmp_path / "out"
    code, err = _run(["analyze", "--perfusion", str(path), "--out", str(out), "--no-report", "--quiet"], capsys)
    assert code == 0, err
    assert (out / "summary.json").exists()
    notes = out / "my_notes.txt"  # a file we did not write
    notes.write_text("keep me")
    results_before = _hashes(out)
    code, err = _run(["analyze", "--perfusion", str(path), "--out", str(out), "--no-report", "--quiet"], capsys)
    _assert_error(code, err, r"--overwrite")
    assert _hashes(out) == results_before  # nothing touched
    code, err = _run(["analyze", "--perfusion", str(path), "--out", str(out), "--no-report", "--quiet",
                      "--overwrite"], capsys)
    assert code == 0, err
    assert notes.read_text() == "keep me"  # never delete files we did not write
    assert _hashes(inputs) == before  # inputs never modified
    leftovers = [p.name for p in tmp_path.iterdir() if p.name not in {"in", "out"}]
    assert leftovers == []  # no temporary folders left behind


# --- issue 9 rows through the command line ----------------------------------------------------------


def _mr_case(tmp_path, shape=(4, 32, 32), modality="mr"):
    mr = make_volume_phantom("mr", seed=25, shape=shape, spacing=(3.6, 3.6, 5.0))
    path = _write(tmp_path / "dsc.nii.gz", mr.series.signal, mr.times, mr.geometry, modality=modality, te=0.03)
    adc = tmp_path / "adc.nii.gz"
    fileio.write_volume(adc, mr.adc, mr.adc_geometry)
    return path, adc


def test_modality_contradicting_the_file(tmp_path, capsys):
    """An MR series (sidecar Modality MR) with --modality ct: exit 0, core 0, "not eligible", no
    word of the conflict. Now refused; forcing the label still meets the signal-content check."""
    path, _ = _mr_case(tmp_path)
    code, err = _run(["analyze", "--perfusion", str(path), "--modality", "ct", "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"says MR.*--force-modality")
    code, err = _run(["analyze", "--perfusion", str(path), "--modality", "ct", "--force-modality",
                      "--out", str(tmp_path / "o")], capsys)
    _assert_error(code, err, r"looks like DSC-MR")
    assert not (tmp_path / "o").exists()


def test_mr_series_with_three_slices(tmp_path, capsys):
    """An MR slab of 3 slices crashed (exit 1) in the brain mask's smoothing filter."""
    path, adc = _mr_case(tmp_path, shape=(3, 32, 32))
    code, err = _run(["analyze", "--perfusion", str(path), "--diffusion", str(adc), "--out", str(tmp_path / "o"),
                      "--no-report", "--quiet", "--no-motion-correction"], capsys)
    assert code == 0, err
    assert (tmp_path / "o" / "summary.json").is_file()


def test_second_run_into_the_same_out_fails_at_once(tmp_path, small_ct, capsys, monkeypatch):
    """Two runs into one --out at once both exited 0; the later silently replaced the earlier.
    Now the second fails before its analysis, naming the first."""
    import subprocess
    import sys

    from StrokeMismatchLib import pipeline

    path = _write(tmp_path / "p.nii.gz", small_ct.series.signal, small_ct.times, small_ct.geometry)
    out = tmp_path / "o"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys\nfrom StrokeMismatchLib.outputs import claim_output_dir\n"
         f"with claim_output_dir({str(out)!r}):\n    print('claimed', flush=True)\n    sys.stdin.read()\n"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "claimed"
        monkeypatch.setattr(pipeline, "run_case", lambda *a, **k: pytest.fail("analysed although refused"))
        code, err = _run(["analyze", "--perfusion", str(path), "--out", str(out), "--overwrite"], capsys)
        _assert_error(code, err, rf"Another StrokeMismatch run \(process {holder.pid}")
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not out.exists()


def test_out_on_a_mount_point_refused_before_the_analysis(tmp_path, small_ct, capsys, monkeypatch):
    """An --out that cannot be replaced as a whole was refused only after the analysis."""
    from StrokeMismatchLib import pipeline

    path = _write(tmp_path / "p.nii.gz", small_ct.series.signal, small_ct.times, small_ct.geometry)
    monkeypatch.setattr(pipeline, "run_case", lambda *a, **k: pytest.fail("analysed although refused"))
    code, err = _run(["analyze", "--perfusion", str(path), "--out", "/proc", "--overwrite"], capsys)
    _assert_error(code, err, r"mount point")
