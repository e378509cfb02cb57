"""Command line: ADC computed from a DWI pair, and the analysed series written as a Slicer sequence."""

import json

import numpy as np
import pytest

from StrokeMismatchLib import fileio
from StrokeMismatchLib.cli import main
from StrokeMismatchLib.phantom.volume import make_volume_phantom

B_VALUE = 1000.0  # s/mm²


@pytest.fixture(scope="module")
def mr_case(tmp_path_factory):
    """The MR phantom as NIfTI + sidecar, its ADC, and a b0/b1000 pair made from that ADC."""
    folder = tmp_path_factory.mktemp("mr_case")
    phantom = make_volume_phantom("mr", seed=0)
    fileio.write_nifti_perfusion(folder / "dsc.nii.gz", phantom.series)
    fileio.write_volume(folder / "adc.nii.gz", phantom.adc.astype(np.float32), phantom.adc_geometry)
    b0 = np.where(phantom.adc > 0, 1000.0, 0.0)
    b1000 = b0 * np.exp(-B_VALUE * phantom.adc * 1e-6)  # S_b = S_0·e^(−b·ADC), ADC in 10⁻⁶ mm²/s
    fileio.write_volume(folder / "b0.nii.gz", b0.astype(np.float32), phantom.adc_geometry)
    fileio.write_volume(folder / "b1000.nii.gz", b1000.astype(np.float32), phantom.adc_geometry)
    return folder, phantom


def _analyze(folder, out, *extra):
    code = main(["analyze", "--perfusion", str(folder / "dsc.nii.gz"), "--out", str(out), "--quiet",
                 "--no-report", "--no-motion-correction", *extra])
    assert code == 0
    return json.loads((out / "summary.json").read_text())


def test_adc_from_dwi_pair_gives_the_same_core(mr_case, tmp_path):
    folder, _ = mr_case
    from_adc = _analyze(folder, tmp_path / "adc", "--diffusion", str(folder / "adc.nii.gz"))
    from_dwi = _analyze(folder, tmp_path / "dwi", "--dwi-b0", str(folder / "b0.nii.gz"),
                        "--dwi-b", str(folder / "b1000.nii.gz"), "--b-value", str(B_VALUE))
    core_adc = from_adc["metrics"]["core_ml"]["value"]
    core_dwi = from_dwi["metrics"]["core_ml"]["value"]
    assert core_adc > 10.0
    assert core_dwi == pytest.approx(core_adc, rel=0.01)


def test_wrong_b_value_changes_the_core(mr_case, tmp_path):
    """The b-value is really used: b = 2000 halves every ADC, so much more tissue falls below 620."""
    folder, _ = mr_case
    right = _analyze(folder, tmp_path / "right", "--dwi-b0", str(folder / "b0.nii.gz"),
                     "--dwi-b", str(folder / "b1000.nii.gz"))
    wrong = _analyze(folder, tmp_path / "wrong", "--dwi-b0", str(folder / "b0.nii.gz"),
                     "--dwi-b", str(folder / "b1000.nii.gz"), "--b-value", "2000")
    assert wrong["metrics"]["core_ml"]["value"] > 2 * right["metrics"]["core_ml"]["value"]


@pytest.mark.parametrize("extra, words", [
    (["--dwi-b0", "B0"], ["--dwi-b"]),
    (["--dwi-b0", "B0", "--dwi-b", "B1000", "--diffusion", "ADC"], ["either"]),
])
def test_dwi_argument_errors(mr_case, tmp_path, capsys, extra, words):
    folder, _ = mr_case
    names = {"B0": "b0.nii.gz", "B1000": "b1000.nii.gz", "ADC": "adc.nii.gz"}
    extra = [str(folder / names[a]) if a in names else a for a in extra]
    code = main(["analyze", "--perfusion", str(folder / "dsc.nii.gz"), "--out", str(tmp_path / "o"), "--quiet",
                 *extra])
    err = capsys.readouterr().err
    assert code == 2
    assert all(w in err for w in words), err
    assert not (tmp_path / "o").exists()


def test_save_series_writes_the_analysed_series_as_a_sequence(mr_case, tmp_path):
    folder, phantom = mr_case
    out = tmp_path / "with_series"
    summary = _analyze(folder, out, "--diffusion", str(folder / "adc.nii.gz"), "--save-series")
    assert "series/perfusion.seq.nrrd" in summary["outputs"]["files"]
    series = fileio.read_seq_nrrd(out / "series" / "perfusion.seq.nrrd")
    np.testing.assert_allclose(series.times, phantom.series.times, atol=1e-6)
    assert series.geometry.same_grid(phantom.series.geometry)
    # motion correction is off here, so the analysed series is the input series
    np.testing.assert_allclose(series.signal, phantom.series.signal, rtol=1e-5, atol=1e-3)
    # a second run into the same folder is refused without --overwrite
    code = main(["analyze", "--perfusion", str(folder / "dsc.nii.gz"), "--out", str(out), "--quiet",
                 "--no-report"])
    assert code == 2


def test_no_series_without_the_flag(mr_case, tmp_path):
    folder, _ = mr_case
    summary = _analyze(folder, tmp_path / "plain", "--diffusion", str(folder / "adc.nii.gz"))
    assert not (tmp_path / "plain" / "series").exists()
    assert not any(f.startswith("series/") for f in summary["outputs"]["files"])
