"""outputs.write_case_outputs: layout, atomic writing, refusal/overwrite rules, CSV flattening."""

import csv
import io
import json
import os
import sys

import numpy as np
import pytest

from StrokeMismatchLib.caserecord import csv_row
from StrokeMismatchLib.errors import OutputError
from StrokeMismatchLib.outputs import (
    check_output_dir,
    result_files,
    summary_csv,
    write_case_outputs,
)
from StrokeMismatchLib.phantom.volume import make_volume_phantom
from StrokeMismatchLib.pipeline import CaseSettings, run_case


@pytest.fixture(scope="module")
def result():
    phantom = make_volume_phantom("ct", shape=(6, 48, 48))
    return run_case(phantom.series, settings=CaseSettings(motion_correction=False))


def _leftovers(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_layout_and_permissions(result, tmp_path):
    out = tmp_path / "case"
    summary = write_case_outputs(result, out, report=False)
    for rel in result_files(report=False):
        assert (out / rel).is_file(), rel
    assert not (out / "report.html").exists()
    assert summary["outputs"]["report"]["written"] is False
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert _leftovers(tmp_path) == []
    assert os.stat(out).st_mode & 0o055  # not left private like a mkdtemp folder


def test_refuses_existing_results_and_changes_nothing(result, tmp_path):
    out = tmp_path / "case"
    write_case_outputs(result, out, report=False)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(OutputError, match="--overwrite"):
        write_case_outputs(result, out, report=False)
    with pytest.raises(OutputError, match="--overwrite"):
        check_output_dir(out)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert _leftovers(tmp_path) == []


def test_overwrite_keeps_foreign_files(result, tmp_path):
    out = tmp_path / "case"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    (out / "maps").mkdir()
    (out / "maps" / "my_map.nii.gz").write_bytes(b"keep")
    (out / "summary.json").write_text("old")
    write_case_outputs(result, out, overwrite=True, report=False)
    assert (out / "notes.txt").read_text() == "mine"
    assert (out / "maps" / "my_map.nii.gz").read_bytes() == b"keep"
    assert json.loads((out / "summary.json").read_text())["modality"] == "ct"
    assert (out / "maps" / "cbf.nii.gz").is_file()


def test_existing_empty_folder_is_fine(result, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    write_case_outputs(result, out, report=False)
    assert (out / "summary.csv").is_file()


def test_unwritable_locations(result, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="not a folder"):
        write_case_outputs(result, blocker, report=False)
    with pytest.raises(OutputError, match="file"):
        write_case_outputs(result, blocker / "sub" / "case", report=False)
    assert blocker.read_text() == "x"


def test_failure_midway_leaves_nothing(result, tmp_path, monkeypatch):
    import StrokeMismatchLib.fileio as fileio

    real = fileio.write_volume
    calls = []

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(fileio, "write_volume", flaky)
    out = tmp_path / "case"
    with pytest.raises(OutputError, match="No space left"):
        write_case_outputs(result, out, report=False)
    assert not out.exists()
    assert _leftovers(tmp_path) == []


def test_missing_report_module_is_a_warning(result, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "StrokeMismatchLib.report", None)  # import raises ImportError
    out = tmp_path / "case"
    summary = write_case_outputs(result, out, report=True)
    assert not (out / "report.html").exists()
    assert summary["outputs"]["report"]["written"] is False
    assert any("report.html was not written" in w for w in summary["warnings"])
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["outputs"]["report"]["written"] is False


def test_progress_reaches_one(result, tmp_path):
    seen = []
    write_case_outputs(result, tmp_path / "case", report=False, progress=lambda f, m: seen.append(f))
    assert seen[-1] == 1.0 and all(0 <= f <= 1 for f in seen)


def test_csv_row_headline_verdicts_settings_and_null_ratios():
    summary = {
        "subject": "sub-01", "modality": "mr", "affected_side": "left", "core_ml": 0.0,
        "hypoperfusion_ml": 12.5, "mismatch_ratio": None, "notes": {"mismatch_ratio": "infinite: core is 0 mL"},
        "quality": {"status": "warn", "findings": [{"code": "bolus_truncated", "severity": "warning"},
                                                   {"code": "motion", "severity": "info"}]},
        "criteria": {"DEFUSE3": {"eligible": True, "verdict": "eligible", "reasons": []},
                     "DAWN": {"eligible": None, "verdict": "indeterminate",
                              "reasons": ["age unknown", "NIHSS unknown"]}},
        "settings": {"tmax_threshold": 6.0, "core_rcbf_percent": 30.0},
        "inputs": {"source": "line one\nline two, with comma"}, "software": {"version": "x"},
    }
    row = csv_row(summary)
    assert list(row)[:4] == ["subject", "modality", "affected_side", "quality_status"]
    assert row["core_ml"] == "0.0" and row["hypoperfusion_ml"] == "12.5"  # repr: full precision
    assert row["mismatch_ratio"] == "" and row["mismatch_ratio_note"] == "infinite: core is 0 mL"
    assert row["DEFUSE3_eligible"] == "true" and row["DAWN_eligible"] == "" and row["DAWN_verdict"] == "indeterminate"
    assert row["DAWN_reasons"] == "age unknown; NIHSS unknown"
    assert row["quality_status"] == "warn" and row["quality_codes"] == "bolus_truncated;motion"
    assert row["setting_tmax_threshold"] == "6.0"
    rows = list(csv.DictReader(io.StringIO(summary_csv(summary))))
    assert len(rows) == 1 and rows[0]["core_ml"] == "0.0"
    assert rows[0]["source"] == "line one\nline two, with comma"  # quoted, not split


def test_written_maps_are_float32_nan_outside(result, tmp_path):
    import SimpleITK as sitk

    out = tmp_path / "case"
    write_case_outputs(result, out, report=False)
    image = sitk.ReadImage(str(out / "maps" / "tmax.nii.gz"))
    assert image.GetPixelID() == sitk.sitkFloat32
    # SimpleITK's NIfTI reader turns NaN into 0, so check the stored voxels themselves
    array = nifti_voxels(out / "maps" / "tmax.nii.gz", result.geometry.shape)
    assert np.all(np.isnan(array[~result.brain_mask]))
    np.testing.assert_allclose(array[result.brain_mask], result.maps.tmax[result.brain_mask], rtol=0, atol=0)


def nifti_voxels(path, shape):
    """Float32 voxels [K, J, I] of a NIfTI-1 file, straight from the bytes (no NaN clean-up)."""
    import gzip
    import struct

    raw = gzip.open(path).read() if str(path).endswith(".gz") else open(path, "rb").read()
    assert struct.unpack("<h", raw[70:72])[0] == 16  # datatype FLOAT32
    offset = int(struct.unpack("<f", raw[108:112])[0])
    return np.frombuffer(raw[offset:], dtype="<f4").reshape(shape)


def test_overwrite_removes_our_files_this_run_did_not_write(result, tmp_path):
    """--overwrite must not leave a previous run's report.html or series beside the new results
    (they would describe another analysis); files that are not ours stay."""
    out = tmp_path / "case"
    write_case_outputs(result, out, report=False, save_series=True)
    (out / "report.html").write_text("<html>previous run</html>")
    (out / "notes.txt").write_text("mine")
    assert (out / "series" / "perfusion.seq.nrrd").is_file()
    summary = write_case_outputs(result, out, overwrite=True, report=False, save_series=False)
    assert not (out / "report.html").exists()
    assert not (out / "series" / "perfusion.seq.nrrd").exists()
    assert (out / "notes.txt").read_text() == "mine"
    for rel in summary["outputs"]["files"]:
        assert (out / rel).is_file(), rel


def test_reader_warnings_reach_the_summary(result, tmp_path):
    """What the file reader noticed (e.g. a sidecar TE in ms converted to s) is shown with the
    results, not only buried in input.metadata."""
    import dataclasses

    note = "The sidecar's EchoTime 30 looks like ms; used 0.03 s."
    series = dataclasses.replace(result.series, metadata={**result.series.metadata, "warnings": [note]})
    summary = write_case_outputs(dataclasses.replace(result, series=series), tmp_path / "case", report=False)
    assert summary["warnings"].count(note) == 1
    assert note in json.loads((tmp_path / "case" / "summary.json").read_text())["warnings"]


def test_csv_header_does_not_depend_on_notes_or_reasons():
    """A cohort stacks summary.csv rows under one header: columns must not come and go with
    whether a ratio had a note or a rule had reasons."""
    def summary(note, reasons):
        return {
            "software": {"version": "x"}, "modality": "ct", "settings": {"method": "oSVD"}, "inputs": {},
            "core_ml": 1.0, "mismatch_ratio": None if note else 2.0,
            "notes": {"mismatch_ratio": "infinite: core is 0 mL"} if note else {},
            "criteria": {"DAWN": {"eligible": None if reasons else True,
                                  "verdict": "indeterminate" if reasons else "eligible",
                                  "reasons": ["age not given"] if reasons else []}},
            "quality": {"status": "pass", "findings": []},
        }

    headers = {summary_csv(summary(note, reasons)).splitlines()[0]
               for note in (False, True) for reasons in (False, True)}
    assert len(headers) == 1
    assert "mismatch_ratio_note" in headers.pop()
