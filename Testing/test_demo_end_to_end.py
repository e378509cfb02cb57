"""`stroke-mismatch demo` end to end (MR and CT) against the phantom's truth, plus a NIfTI round trip."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from StrokeMismatchLib import DISCLAIMER
from StrokeMismatchLib.cli import main
from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.phantom.volume import make_volume_phantom

MAPS = ("cbf", "cbv", "mtt", "tmax", "ttp")
MASKS = ("core", "hypoperfusion", "penumbra")


def _dice(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


def nifti_voxels(path, shape):
    """Float32 voxels [K, J, I] of a NIfTI-1 file from its bytes (SimpleITK's reader turns NaN into 0)."""
    import gzip
    import struct

    raw = gzip.open(path).read()
    assert struct.unpack("<h", raw[70:72])[0] == 16  # datatype FLOAT32
    offset = int(struct.unpack("<f", raw[108:112])[0])
    return np.frombuffer(raw[offset:], dtype="<f4").reshape(shape)


def _load(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), Geometry.from_sitk(image), image


@pytest.fixture(scope="module", params=["mr", "ct"])
def demo(request, tmp_path_factory):
    """One in-process demo run per modality: (modality, out_dir, stdout, phantom)."""
    modality = request.param
    out = tmp_path_factory.mktemp(f"demo_{modality}") / "out"
    capture = _Capture()
    with capture:
        code = main(["demo", "--modality", modality, "--out", str(out)])
    assert code == 0, capture.err
    return modality, out, capture.out, make_volume_phantom(modality)


class _Capture:
    """Capture sys.stdout/sys.stderr of an in-process main() call."""

    def __enter__(self):
        import io

        self._old = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = io.StringIO(), io.StringIO()
        return self

    def __exit__(self, *exc):
        self.out, self.err = sys.stdout.getvalue(), sys.stderr.getvalue()
        sys.stdout, sys.stderr = self._old
        return False


def test_demo_masks_agree_with_truth(demo):
    modality, out, _, phantom = demo
    voxel_ml = phantom.series.geometry.voxel_volume_ml
    for name, truth in (("core", phantom.true_core), ("hypoperfusion", phantom.true_hypoperfusion)):
        found, _, _ = _load(out / "masks" / f"{name}.nii.gz")
        dice = _dice(found, truth)
        v_found = np.count_nonzero(found) * voxel_ml
        v_truth = np.count_nonzero(truth) * voxel_ml
        assert dice >= 0.8, f"{modality} {name}: Dice {dice:.3f} (found {v_found:.1f} mL, truth {v_truth:.1f} mL)"
        # the CT core: issue 15's target (15 % or 3 mL; oSVD compresses CBF contrast, so the
        # core reads slightly low, 17.8 of 20.0 mL here); everything else within 10 %
        tolerance = max(0.15 * v_truth, 3.0) if (modality, name) == ("ct", "core") else 0.10 * v_truth
        assert abs(v_found - v_truth) <= tolerance, f"{modality} {name}: {v_found:.1f} vs {v_truth:.1f} mL"


def test_demo_outputs_geometry_and_dtypes(demo):
    _, out, _, phantom = demo
    geometry = phantom.series.geometry
    for name in MAPS:
        array, geo, image = _load(out / "maps" / f"{name}.nii.gz")
        assert image.GetPixelID() == sitk.sitkFloat32, name
        assert geo.same_grid(geometry, tolerance_mm=1e-3), name
        stored = nifti_voxels(out / "maps" / f"{name}.nii.gz", geometry.shape)
        assert np.isfinite(stored).sum() > 0.5 * phantom.brain_mask.sum()
        assert np.isnan(stored[~phantom.brain_mask]).mean() > 0.95  # NaN outside the analysed brain
    for name in MASKS:
        array, geo, image = _load(out / "masks" / f"{name}.nii.gz")
        assert image.GetPixelID() == sitk.sitkUInt8, name
        assert geo.same_grid(geometry, tolerance_mm=1e-3), name
        assert set(np.unique(array)) <= {0, 1}
    core = _load(out / "masks" / "core.nii.gz")[0].astype(bool)
    hypo = _load(out / "masks" / "hypoperfusion.nii.gz")[0].astype(bool)
    penumbra = _load(out / "masks" / "penumbra.nii.gz")[0].astype(bool)
    assert np.array_equal(penumbra, hypo & ~core)
    # no temporary folders left beside the output
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_demo_summary_json_is_strict_and_has_every_threshold(demo):
    modality, out, _, _ = demo
    text = (out / "summary.json").read_text(encoding="utf-8")
    summary = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))
    json.dumps(summary, allow_nan=False)
    assert summary["software"]["disclaimer"] == DISCLAIMER
    assert text.count(DISCLAIMER) == 1  # once, not repeated per rule and section
    assert summary["modality"] == modality
    for key in ("core_adc", "core_rcbf_percent", "tmax_threshold", "rcbf_reference"):
        assert key in summary["settings"], key
    assert summary["metrics"]["core_ml"]["unit"] == "mL"
    assert summary["criteria"]
    assert summary["phantom_agreement"]["core"]["dice"] >= 0.8
    for rel in summary["outputs"]["files"]:
        assert (out / rel).is_file(), rel


def test_demo_summary_csv_one_row(demo):
    import csv

    _, out, _, _ = demo
    with open(out / "summary.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 1
    row = rows[0]
    summary = json.loads((out / "summary.json").read_text())
    assert float(row["core_ml"]) == pytest.approx(summary["metrics"]["core_ml"]["value"])
    assert float(row["hypoperfusion_ml"]) == pytest.approx(summary["metrics"]["hypoperfusion_ml"]["value"])
    assert row["modality"] == summary["modality"]


def test_demo_prints_table(demo):
    _, out, stdout, _ = demo
    assert "mL" in stdout
    assert DISCLAIMER in stdout
    assert "Dice" in stdout
    assert "DEFUSE" in stdout.upper()
    assert str(out) in stdout


def test_demo_report_written_or_explained(demo):
    _, out, _, _ = demo
    summary = json.loads((out / "summary.json").read_text())
    status = summary["outputs"]["report"]
    if status["written"]:
        assert (out / "report.html").stat().st_size > 1000
    else:
        assert not (out / "report.html").exists()
        assert any("report.html" in w for w in summary["warnings"])


def test_demo_without_lesion_reports_no_lesion(tmp_path):
    out = tmp_path / "healthy"
    capture = _Capture()
    with capture:
        code = main(["demo", "--modality", "ct", "--no-lesion", "--out", str(out), "--quiet", "--no-report",
                     "--no-motion-correction"])
    assert code == 0, capture.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["metrics"]["core_ml"]["value"] < 1.0
    assert summary["metrics"]["hypoperfusion_ml"]["value"] < 1.0


def test_demo_subprocess_json(tmp_path):
    out = tmp_path / "sub"
    env = dict(os.environ)
    env.setdefault("MPLBACKEND", "Agg")
    exe = Path(sys.executable).with_name("stroke-mismatch")
    command = [str(exe)] if exe.exists() else [sys.executable, "-m", "StrokeMismatchLib.cli"]
    proc = subprocess.run(command + ["demo", "--out", str(out), "--json", "--no-report"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["modality"] == "mr"
    assert summary["phantom_agreement"]["hypoperfusion"]["dice"] >= 0.8
    assert "[" in proc.stderr and "%" in proc.stderr  # progress went to stderr
    assert (out / "summary.json").is_file()


def test_nifti_round_trip_matches_demo(tmp_path):
    """Phantom → 4D NIfTI + BIDS sidecar → analyze gives the same result as the in-memory run."""
    from StrokeMismatchLib import fileio

    phantom = make_volume_phantom("ct")
    nifti = tmp_path / "ctp.nii.gz"
    fileio.write_nifti_perfusion(nifti, phantom.series)
    inputs = sorted(p for p in tmp_path.iterdir() if p.is_file())
    before = {p: p.read_bytes() for p in inputs}

    demo_out, analyze_out = tmp_path / "demo", tmp_path / "analyze"
    capture = _Capture()
    with capture:
        assert main(["demo", "--modality", "ct", "--out", str(demo_out), "--quiet", "--no-report",
                     "--no-motion-correction"]) == 0, capture.err
        assert main(["analyze", "--perfusion", str(nifti), "--modality", "ct", "--out", str(analyze_out),
                     "--quiet", "--no-report", "--no-motion-correction"]) == 0, capture.err
    assert {p: p.read_bytes() for p in inputs} == before  # inputs untouched
    a = json.loads((demo_out / "summary.json").read_text())
    b = json.loads((analyze_out / "summary.json").read_text())
    for key in ("core_ml", "hypoperfusion_ml", "penumbra_ml"):
        assert b["metrics"][key]["value"] == pytest.approx(a["metrics"][key]["value"], rel=1e-3, abs=0.05), key
    for name in ("tmax", "cbf"):
        x = nifti_voxels(demo_out / "maps" / f"{name}.nii.gz", phantom.series.geometry.shape)
        y = nifti_voxels(analyze_out / "maps" / f"{name}.nii.gz", phantom.series.geometry.shape)
        assert np.array_equal(np.isnan(x), np.isnan(y))
        assert np.nanmax(np.abs(x - y)) <= 1e-3 * max(np.nanmax(np.abs(x)), 1.0)


def test_cli_noise_and_morphology_flags_reach_the_lesion_settings():
    from StrokeMismatchLib.cli import _case_settings, build_parser

    default = _case_settings(build_parser().parse_args(["demo"])).lesion
    assert default.opening is True and default.fill_holes is True and default.core_opening is False
    assert default.tmax_median_filter is None and default.cbf_smoothing_fwhm_mm == 0.0  # issue 15: denoised before deconvolution
    args = build_parser().parse_args(["demo", "--no-opening", "--core-opening", "--no-fill-holes",
                                      "--tmax-median-filter", "--cbf-smoothing-fwhm", "3"])
    lesion = _case_settings(args).lesion
    assert lesion.opening is False and lesion.core_opening is True and lesion.fill_holes is False
    assert lesion.tmax_median_filter is True and lesion.cbf_smoothing_fwhm_mm == 3.0
    lesion = _case_settings(build_parser().parse_args(["demo", "--no-tmax-median-filter"])).lesion
    assert lesion.tmax_median_filter is False


def test_healthy_mr_phantom_reports_no_lesion():
    from StrokeMismatchLib.pipeline import CaseSettings, run_case

    phantom = make_volume_phantom("mr", lesion=False)
    result = run_case(phantom.series, adc=phantom.adc, adc_geometry=phantom.adc_geometry,
                      settings=CaseSettings(motion_correction=False))
    voxel_ml = phantom.series.geometry.voxel_volume_ml
    for name in ("core", "hypoperfusion"):
        assert np.count_nonzero(result.lesion.masks[name]) * voxel_ml < 1.0, name
