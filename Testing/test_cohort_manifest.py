"""Cohort pieces that need no cluster: the manifest (CSV and BIDS-like folder) and its errors,
the output-folder guard, cohort.html, the progress display, and the library without Dask."""

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest

from StrokeMismatchLib import cohort, fileio
from StrokeMismatchLib.cli import main
from StrokeMismatchLib.cohort import CohortCase, CohortProgress, ManifestError, read_manifest
from StrokeMismatchLib.cohort_report import cohort_html
from StrokeMismatchLib.geometry import Geometry


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def manifest(tmp_path, text: str) -> Path:
    path = tmp_path / "manifest.csv"
    path.write_text(text, encoding="utf-8")
    return path


def cli_error(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("stroke-mismatch: error: ") and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------------------------
def test_manifest_csv_paths_relative_values_and_problems(tmp_path):
    touch(tmp_path / "data" / "p1.nii.gz")
    touch(tmp_path / "data" / "a1.nii.gz")
    path = manifest(tmp_path, "\ufeffSubject;Perfusion;Diffusion;Modality;Age;NIHSS;collateral_score;TR;TE;site\n"
                              "s1;data/p1.nii.gz;data/a1.nii.gz;MR;71;n/a;2;1,5;0.03;Oslo\n"
                              "\n"
                              "s2;data/gone.nii.gz;;;;;;;;Oslo\n")
    found = read_manifest(path)
    first, second = found.cases
    assert first.perfusion == (tmp_path / "data" / "p1.nii.gz").resolve()
    assert first.diffusion == (tmp_path / "data" / "a1.nii.gz").resolve()
    assert (first.modality, first.age, first.nihss, first.collateral_score, first.tr, first.te) == \
        ("mr", 71, None, 2, 1.5, 0.03)
    assert first.clinical() == {"age": 71, "collateral_score": 2} and first.problem is None
    assert "does not exist" in second.problem and "gone.nii.gz" in second.problem
    assert found.ignored_columns == ("site",)
    listing = found.describe()
    assert "2 case(s)" in listing and "1 with a problem" in listing and "ignored column(s): site" in listing
    assert "s1: perfusion data/p1.nii.gz, ADC data/a1.nii.gz, MR, age 71, collateral_score 2" in listing


@pytest.mark.parametrize("text, words", [
    ("perfusion\np.nii.gz\n", ["no 'subject' column"]),
    ("subject,diffusion\ns1,a.nii.gz\n", ["no 'perfusion' column"]),
    ("subject,perfusion\ns1,p.nii.gz\nS1,q.nii.gz\n", ["line 3", "'S1'", "already on line 2"]),
    ("subject,perfusion\n../up,p.nii.gz\n", ["line 2", "'../up'", "letters, digits"]),
    ("subject,perfusion\n,p.nii.gz\n", ["line 2", "subject is empty"]),
    ("subject,perfusion\ns1,\n", ["line 2", "no perfusion path"]),
    ("subject,perfusion,age\ns1,p.nii.gz,old\n", ["line 2", "age 'old' is not a number"]),
    ("subject,perfusion,nihss\ns1,p.nii.gz,50\n", ["line 2", "nihss '50'", "0–42"]),
    ("subject,perfusion,te\ns1,p.nii.gz,30\n", ["te '30'", "0.03"]),
    ("subject,perfusion,modality\ns1,p.nii.gz,pet\n", ["modality 'pet'"]),
    ("subject,perfusion,difusion\ns1,p.nii.gz,a.nii.gz\n", ["unknown column 'difusion'", "did you mean 'diffusion'"]),
    ("subject,perfusion\ns1,p.nii.gz,extra\n", ["line 2 has 3 fields", "quoted"]),
    ("subject,perfusion\n", ["no case rows"]),
    ("", ["empty"]),
])
def test_manifest_errors_are_one_line_exit_2_before_anything_runs(tmp_path, capsys, text, words):
    path = manifest(tmp_path, text)
    line = cli_error(["cohort", str(path), "--out", str(tmp_path / "out")], capsys)
    for word in words:
        assert word.lower() in line.lower(), (word, line)
    assert not (tmp_path / "out").exists()


def test_manifest_not_text_or_missing(tmp_path, capsys):
    binary = tmp_path / "m.csv"
    binary.write_bytes(b"\xff\xfe\x00subject\x00")
    assert "not UTF-8" in cli_error(["cohort", str(binary), "--out", str(tmp_path / "o")], capsys)
    assert "does not exist" in cli_error(["cohort", str(tmp_path / "none.csv"), "--out", str(tmp_path / "o")], capsys)


def test_bids_like_folder_found_by_suffix_with_sessions_and_participants(tmp_path):
    root = tmp_path / "bids"
    touch(root / "sub-01" / "ses-01" / "perf" / "sub-01_ses-01_dsc.nii.gz")
    touch(root / "sub-01" / "ses-01" / "dwi" / "sub-01_ses-01_adc.nii.gz")
    touch(root / "sub-01" / "ses-02" / "dwi" / "sub-01_ses-02_adc.nii.gz")  # follow-up: no perfusion
    touch(root / "sub-02" / "sub-02_ctp.nii.gz")
    touch(root / "sub-02" / "sub-02_T1w.nii.gz")
    touch(root / "sub-03" / "anat" / "sub-03_T1w.nii.gz")
    touch(root / "sub-04" / "sub-04_run-1_dsc.nii.gz")
    touch(root / "sub-04" / "sub-04_run-2_dsc.nii.gz")
    touch(root / "derivatives" / "sub-05" / "sub-05_dsc.nii.gz")
    (root / "participants.tsv").write_text("participant_id\tage\tnihss\nsub-01\t67\t9\nsub-02\tn/a\t20\n")
    found = read_manifest(root)
    cases = {case.subject: case for case in found.cases}
    assert list(cases) == ["sub-01_ses-01", "sub-02", "sub-03", "sub-04"]
    first = cases["sub-01_ses-01"]
    assert first.perfusion.name == "sub-01_ses-01_dsc.nii.gz" and first.diffusion.name == "sub-01_ses-01_adc.nii.gz"
    assert first.modality == "mr" and (first.age, first.nihss) == (67, 9) and first.problem is None
    assert cases["sub-02"].modality == "ct" and cases["sub-02"].diffusion is None and cases["sub-02"].nihss == 20
    assert "no perfusion series found" in cases["sub-03"].problem
    assert "several perfusion series" in cases["sub-04"].problem and "manifest" in cases["sub-04"].problem
    listing = found.describe()
    assert "sub-01_ses-02: no perfusion series" in listing and "PROBLEM" in listing


def test_bids_folder_without_subjects_and_bad_participants(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert "no sub-* folders" in cli_error(["cohort", str(tmp_path / "empty"), "--out", str(tmp_path / "o")], capsys)
    touch(tmp_path / "b" / "sub-01" / "sub-01_dsc.nii.gz")
    (tmp_path / "b" / "participants.tsv").write_text("participant_id\tage\nsub-01\t300\n")
    with pytest.raises(ManifestError, match="age '300'"):
        read_manifest(tmp_path / "b")


def test_cohort_options_are_checked_before_the_cluster_starts(tmp_path, capsys):
    touch(tmp_path / "p.nii.gz")
    path = manifest(tmp_path, "subject,perfusion\ns1,p.nii.gz\n")
    out = str(tmp_path / "out")
    assert "--tmax" in cli_error(["cohort", str(path), "--out", out, "--tmax", "99"], capsys)
    assert "--resume" in cli_error(["cohort", str(path), "--out", out, "--resume", "--overwrite"], capsys)
    assert "--workers" in cli_error(["cohort", str(path), "--out", out, "--workers", "2", "--scheduler",
                                     "tcp://127.0.0.1:1"], capsys)
    assert "--out" in cli_error(["cohort", str(path)], capsys)
    # settings are accepted once for all cases, derived from the schema (no hand-made list)
    from StrokeMismatchLib.cli import build_parser
    from StrokeMismatchLib.settings import all_settings

    help_text = build_parser()._subparsers._group_actions[0].choices["cohort"].format_help()
    for spec in all_settings():
        assert spec.cli_flag in help_text, spec.cli_flag


def test_existing_results_refused_without_resume_or_overwrite(tmp_path, capsys):
    touch(tmp_path / "p.nii.gz")
    path = manifest(tmp_path, "subject,perfusion\ns1,p.nii.gz\n")
    out = tmp_path / "out"
    touch(out / "s1" / "summary.json")
    line = cli_error(["cohort", str(path), "--out", str(out)], capsys)
    assert "already holds results" in line and "--resume" in line and "--overwrite" in line
    assert (out / "s1" / "summary.json").read_bytes() == b"x"
    touch(tmp_path / "file_out")
    assert "not a folder" in cli_error(["cohort", str(path), "--out", str(tmp_path / "file_out")], capsys)


def test_library_imports_and_explains_without_dask(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "distributed", None)  # import distributed -> ImportError
    touch(tmp_path / "p.nii.gz")
    path = manifest(tmp_path, "subject,perfusion\ns1,p.nii.gz\n")
    line = cli_error(["cohort", str(path), "--out", str(tmp_path / "out")], capsys)
    assert "Dask" in line and "pip install" in line and "[cohort]" in line
    with pytest.raises(cohort.StrokeMismatchError, match="pip install"):
        cohort.run_cohort(path, tmp_path / "out2")


def test_a_case_with_a_problem_fails_in_the_task_with_its_reason_and_leaves_no_stale_result(tmp_path):
    out = tmp_path / "out"
    touch(out / "s1" / "summary.json")  # a result of an earlier run
    touch(out / "s1" / "my_notes.txt")
    case = CohortCase("s1", tmp_path / "gone.nii.gz", problem="the perfusion input gone.nii.gz does not exist")
    outcome = cohort.run_case_task(case, str(out), {"motion_correction": False}, {"resume": True})
    assert outcome["status"] == "failed" and outcome["error"] == "The perfusion input gone.nii.gz does not exist."
    assert not (out / "s1" / "summary.json").exists() and (out / "s1" / "my_notes.txt").exists()
    marker = json.loads((out / "s1" / cohort.CASE_MARKER).read_text())
    assert marker["status"] == "failed" and "does not exist" in marker["error"]


def test_case_fingerprint_follows_content_sidecar_and_settings(tmp_path):
    from StrokeMismatchLib.settings import case_settings_from_values

    geometry = Geometry(np.diag([2.0, 2.0, 5.0, 1.0]), (2, 4, 4))
    perfusion = tmp_path / "p.nii.gz"
    fileio.write_volume(perfusion, np.zeros((2, 4, 4), np.float32), geometry)
    sidecar = tmp_path / "p.json"
    sidecar.write_text('{"RepetitionTime": 1.5}')
    case = CohortCase("s1", perfusion)
    settings = case_settings_from_values({})
    first, hashes = cohort.case_fingerprint(case, settings, {})
    assert set(hashes) == {"perfusion/p.nii.gz", "perfusion/p.json"}
    assert cohort.case_fingerprint(case, settings, {})[0] == first
    sidecar.write_text('{"RepetitionTime": 1.0}')
    second = cohort.case_fingerprint(case, settings, {})[0]
    assert second != first
    assert cohort.case_fingerprint(case, case_settings_from_values({"tmax_threshold": 8.0}), {})[0] != second
    assert cohort.case_fingerprint(case, settings, {"report": False})[0] != second


def test_worker_death_is_a_reason_not_a_crash():
    from distributed.scheduler import KilledWorker

    text = cohort._worker_failure(KilledWorker("task", "tcp://127.0.0.1:1", 1))
    assert "died" in text and "memory" in text and "--workers" in text


# --------------------------------------------------------------------------------------------
def outcome(subject, status="done", core=10.0, hypo=50.0, defuse=True, quality="pass", report=True, error=None):
    if status == "failed":
        return {"subject": subject, "status": "failed", "brief": None, "row": None, "error": error}
    verdict = {True: "eligible", False: "not eligible", None: "indeterminate (quality)"}[defuse]
    return {"subject": subject, "status": status, "error": None, "row": {},
            "brief": {"core_ml": core, "hypoperfusion_ml": hypo, "mismatch_ratio": hypo / core if core else None,
                      "affected_side": "left", "quality": quality, "report": report,
                      "verdicts": {"DEFUSE3": verdict, "EXTEND_IA": "eligible"},
                      "eligible": {"DEFUSE3": defuse, "EXTEND_IA": True}}}


def test_cohort_html_is_self_contained_with_counts_plots_failures_and_links():
    outcomes = [outcome("sub-01"), outcome("sub-02", "skipped", core=80.0, hypo=120.0, defuse=False, report=False),
                outcome("sub-03", core=5.0, hypo=6.0, defuse=None, quality="fail"),
                outcome("sub-<4>", "failed", error="The perfusion input x does not exist.")]
    meta = {"manifest": "/data/m.csv", "created": "now", "finished": "later", "elapsed_s": 3.0, "cluster": "local",
            "settings": {"tmax_threshold": 6.0}, "shared_settings_given": {"tmax_threshold": 6.0},
            "software": {"version": "0.1.0", "disclaimer": "not a medical device"}}
    page = cohort_html(outcomes, meta)
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)\s*=\s*['\"]?(https?:|//)", page) and "<script" not in page
    assert "<link" not in page and "@import" not in page
    assert "href='sub-01/report.html'" in page and "sub-02/report.html" not in page  # only written reports
    assert "sub-&lt;4&gt;" in page and "The perfusion input x does not exist." in page  # escaped
    assert "<td>Failed (no result)</td><td class='num'>1</td>" in page
    assert "<td>Unchanged since the last run (resumed)</td><td class='num'>1</td>" in page
    assert ("<tr><td>DEFUSE3</td><td class='num'>1</td><td class='num'>1</td><td class='num'>1</td>"
            "<td class='num'>1</td></tr>") in page  # eligible, not, indeterminate, of which quality
    assert page.count("<circle") == 3 and "core 70 mL" in page and "ratio 1.8" in page and "mismatch 15 mL" in page
    assert page.count("<svg") == 3  # two histograms and the scatter
    assert "not a medical device" in page


def test_progress_lines_for_batch_logs_and_terminal():
    stream = io.StringIO()
    display = CohortProgress(3, stream=stream)
    display(outcome("a"), {"total": 3, "finished": 1, "done": 1, "skipped": 0, "failed": 0})
    display(outcome("b", "failed", error="bad input"), {"total": 3, "finished": 2, "done": 1, "skipped": 0,
                                                        "failed": 1})
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("[1/3] done 1, skipped 0, failed 0 | elapsed ") and "remaining ~" in lines[0]
    assert lines[1].endswith("| b failed: bad input") and "failed 1" in lines[1]

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    tty = Terminal()
    display = CohortProgress(2, stream=tty)
    display(outcome("b", "failed", error="bad input"), {"total": 2, "finished": 1, "done": 0, "skipped": 0,
                                                        "failed": 1})
    display(outcome("a"), {"total": 2, "finished": 2, "done": 1, "skipped": 0, "failed": 1})
    display.finish()
    text = tty.getvalue()
    assert "b: FAILED: bad input\n" in text and "\r[2/2]" in text and "remaining 0 s" in text
    assert cohort.format_duration(42) == "42 s" and cohort.format_duration(3725) == "1 h 02 min"
