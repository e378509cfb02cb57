"""outputs.write_case_outputs: layout, atomic writing, refusal/overwrite rules, CSV flattening."""

import csv
import io
import json
import os
import sys
from pathlib import Path

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


# --- issue 9, output rows: concurrent runs, whole-folder replacement, leftovers, CSV rows ----------

import subprocess  # noqa: E402
import textwrap  # noqa: E402

from StrokeMismatchLib import outputs  # noqa: E402


def _holder(out):
    """A separate process that claims ``out`` (as a CLI run does before its analysis) and holds it
    until its stdin closes."""
    code = textwrap.dedent(f"""
        import sys
        from StrokeMismatchLib.outputs import claim_output_dir
        with claim_output_dir({str(out)!r}):
            print("claimed", flush=True)
            sys.stdin.read()
    """)
    process = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdout.readline().strip() == "claimed"
    return process


def test_second_run_into_the_same_folder_fails_while_the_first_runs(result, tmp_path):
    """Two runs into one --out: both exited 0 and the later silently replaced the earlier."""
    out = tmp_path / "case"
    first = _holder(out)
    try:
        with pytest.raises(OutputError, match=rf"Another StrokeMismatch run \(process {first.pid}"):
            write_case_outputs(result, out, report=False)
        with pytest.raises(OutputError, match="Another StrokeMismatch run"):
            with outputs.claim_output_dir(out, overwrite=True):
                pass
        assert not out.exists()
    finally:
        first.stdin.close()
        first.wait(timeout=60)
    write_case_outputs(result, out, report=False)  # released: the folder is free again
    assert (out / "summary.json").is_file()
    assert _leftovers(tmp_path) == []


def test_lock_of_a_killed_run_is_taken_over(result, tmp_path):
    out = tmp_path / "case"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    lock = tmp_path / f".case{outputs.LOCK_SUFFIX}"
    import socket
    import time

    lock.write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "started": time.time()}))
    write_case_outputs(result, out, report=False)
    assert (out / "summary.json").is_file() and not lock.exists()


def test_interrupted_overwrite_never_mixes_old_and_new(result, tmp_path, monkeypatch):
    """A failed --overwrite left new maps beside the old summary.json (files were moved one by
    one). The folder is replaced as a whole: a failure while moving leaves the old result whole."""
    out = tmp_path / "case"
    write_case_outputs(result, out, report=False)
    (out / "notes.txt").write_text("mine")
    for path in out.rglob("*.nii.gz"):  # mark the old result, so any new file among it shows
        path.write_bytes(b"old " + path.name.encode())
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    moves = []
    real_rename, real_replace = os.rename, os.replace

    def failing(move):
        def wrapper(source, target, *args, **kwargs):
            if ".partial-" in str(source):
                moves.append(str(source))
                if len(moves) >= 2:
                    raise OSError(5, "Input/output error")
            return move(source, target, *args, **kwargs)
        return wrapper

    monkeypatch.setattr(os, "rename", failing(real_rename))
    monkeypatch.setattr(os, "replace", failing(real_replace))
    with pytest.raises(OutputError, match="Input/output error"):
        write_case_outputs(result, out, overwrite=True, report=False, save_series=True)
    monkeypatch.undo()
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before
    assert _leftovers(tmp_path) == []


def test_leftovers_of_a_killed_overwrite_are_cleaned_safely(result, tmp_path):
    """Killed between renaming the old result aside and putting the new one in place: the next
    run restores the old result; a killed run's staging folder is removed; folders that are not
    ours (no marker, other names) are never touched."""
    out = tmp_path / "case"
    write_case_outputs(result, out, report=False)
    (out / "notes.txt").write_text("mine")
    os.rename(out, tmp_path / ".case.old-99999-abc123")  # killed after the first rename
    staging = tmp_path / ".case.partial-99999-xyz789"
    (staging / "maps").mkdir(parents=True)
    (staging / outputs.STAGING_MARK).write_text("{}")
    (staging / "maps" / "cbf.nii.gz").write_bytes(b"half-written")
    not_ours = tmp_path / ".case.partial-12345-nomark"
    not_ours.mkdir()
    (not_ours / "data.txt").write_text("someone else's")
    with outputs.claim_output_dir(out, overwrite=True):
        assert (out / "summary.json").is_file() and (out / "notes.txt").read_text() == "mine"
        assert not staging.exists()
    assert (not_ours / "data.txt").read_text() == "someone else's"
    assert sorted(_leftovers(tmp_path)) == [not_ours.name]


def test_symlinked_out_on_another_filesystem(result, tmp_path):
    """--out a symlink to a folder on another filesystem was refused only after the analysis
    (cross-device rename), leaving an empty maps/. Now the real folder is used."""
    import shutil
    import tempfile

    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    elsewhere = Path(tempfile.mkdtemp(dir=base))
    try:
        target = elsewhere / "results"
        target.mkdir()
        (target / "notes.txt").write_text("mine")
        link = tmp_path / "out"
        link.symlink_to(target)
        write_case_outputs(result, link, report=False)
        assert link.is_symlink() and (link / "summary.json").is_file()
        assert (target / "notes.txt").read_text() == "mine"
        write_case_outputs(result, link, overwrite=True, report=False)
        assert link.is_symlink() and (target / "maps" / "cbf.nii.gz").is_file()
        assert _leftovers(tmp_path) == [] and _leftovers(elsewhere) == []
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)


def test_mount_point_refused_before_the_analysis():
    """A folder that is another filesystem than its parent cannot be replaced as a whole: say so
    before the analysis (here /proc, a mount point on Linux)."""
    assert os.stat("/proc").st_dev != os.stat("/").st_dev
    with pytest.raises(OutputError, match="mount point"):
        check_output_dir("/proc", overwrite=True)


@pytest.mark.parametrize("name", ["sub-01\nfake,row.nii.gz", 'a "quoted", name\r\t.nii.gz', "x\u2028y.nii.gz"])
def test_csv_row_survives_control_characters_commas_quotes(name):
    """A newline, comma or quote in a file name must not split or shift the summary.csv row: the
    csv module quotes the field, and a csv reader gets one row with the name intact."""
    summary = {"software": {"version": "x"}, "modality": "ct", "inputs": {"source": f"NIfTI {name}"},
               "core_ml": 1.0}
    text = summary_csv(summary)
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len(rows) == 2 and len(rows[0]) == len(rows[1])
    record = dict(zip(*rows))
    assert record["source"] == f"NIfTI {name}" and record["core_ml"] == "1.0"


def test_a_clash_with_the_users_file_never_deletes_it(result, tmp_path):
    """Leftovers of an interrupted replacement whose user file clashes with a new one of the same
    name: the folder aside is kept (nothing of the user's is deleted), the rest is cleaned."""
    out = tmp_path / "case"
    write_case_outputs(result, out, report=False)
    aside = tmp_path / ".case.old-99999-abc123"
    (aside / "maps").mkdir(parents=True)
    (aside / "maps" / "cbf.nii.gz").write_bytes(b"old result")
    (aside / "notes.txt").write_text("old notes")
    (aside / "extra.txt").write_text("carried")
    (out / "notes.txt").write_text("new notes")
    with outputs.claim_output_dir(out, overwrite=True):
        pass
    assert (out / "notes.txt").read_text() == "new notes"
    assert (out / "extra.txt").read_text() == "carried"
    assert (aside / "notes.txt").read_text() == "old notes"  # kept, not deleted


def test_out_holding_the_working_folder_is_refused(result, tmp_path, monkeypatch):
    """--out . would rename the working folder away under the user's shell."""
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    monkeypatch.chdir(inner)
    with pytest.raises(OutputError, match="working folder"):
        check_output_dir(".", overwrite=True)
    with pytest.raises(OutputError, match="working folder"):
        write_case_outputs(result, tmp_path / "a", overwrite=True, report=False)
    assert inner.is_dir() and _leftovers(tmp_path) == []
