"""Issue 8: one settings schema and one case record.

- every setting declared in settings.py reaches ``analyze --help`` and summary.json with the
  same default and unit (derived from the schema, no hand-kept list, no source parsing);
- out-of-range values are refused: CLI exit 2 with one line naming the setting, unit and
  range; the library raises the project's own SettingsError;
- summary.json of the demo and of an analyze run validate against the JSON Schema shipped in
  the package; the subject comes from --subject, a BIDS path or the file name;
- one record feeds every output: a reader warning reaches summary.json, summary.csv, the
  report and the terminal.
"""

import csv
import dataclasses
import html
import json
from importlib import resources

import jsonschema
import numpy as np
import pytest

from StrokeMismatchLib import cli
from StrokeMismatchLib.caserecord import SCHEMA_VERSION, subject_from_path
from StrokeMismatchLib.errors import StrokeMismatchError
from StrokeMismatchLib.fileio import write_nifti_perfusion
from StrokeMismatchLib.outputs import write_case_outputs
from StrokeMismatchLib.phantom.volume import make_volume_phantom
from StrokeMismatchLib.pipeline import run_case
from StrokeMismatchLib.settings import (GROUPS, CaseSettings, LesionSettings, SettingsError, all_settings,
                                        case_settings_from_values, settings_by_group)


def _schema():
    text = resources.files("StrokeMismatchLib").joinpath("schemas/summary.schema.json").read_text("utf-8")
    return json.loads(text)


def _validate(summary):
    jsonschema.Draft202012Validator(_schema()).validate(summary)


@pytest.fixture(scope="module")
def ct_result():
    phantom = make_volume_phantom("ct", shape=(6, 48, 48), seed=1)
    return run_case(phantom.series, settings=CaseSettings(motion_correction=False))


# --- the schema --------------------------------------------------------------------------------
def test_every_setting_is_declared_with_unit_range_help_and_group():
    specs = all_settings()
    assert len({s.name for s in specs}) == len(specs) and len({s.cli_flag for s in specs}) == len(specs)
    for spec in specs:
        assert spec.help.endswith(".") and spec.label and spec.group, spec.name
        if spec.kind in ("float", "int", "optional_float", "optional_int"):
            assert spec.minimum is not None and spec.maximum is not None, spec.name
            assert spec.minimum < spec.maximum, spec.name
            if spec.default is not None:
                assert spec.minimum <= spec.default <= spec.maximum, spec.name
        if spec.kind == "choice":
            assert spec.default in spec.choices
    grouped = [s.name for group in settings_by_group().values() for s in group]
    assert sorted(grouped) == sorted(s.name for s in specs)
    assert list(settings_by_group()) == [g for g in GROUPS if g in {s.group for s in specs}]


def test_every_setting_is_in_analyze_help_with_default_and_unit(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["analyze", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for spec in all_settings():
        assert spec.cli_flag in text, spec.name
        assert f"Default {spec.default_text()}" in text, spec.name
        assert spec.range_text() in text, spec.name


def test_every_setting_reaches_summary_json_with_its_default(ct_result):
    result = dataclasses.replace(ct_result, settings=CaseSettings())
    summary = result.summary()
    assert ct_result.summary()["settings"]["motion_correction"] is False  # the value used, not the default
    for spec in all_settings():
        assert summary["settings"][spec.name] == spec.default, spec.name


def test_every_setting_given_on_the_cli_reaches_the_case_settings():
    """Each option, set to a non-default value inside its range, lands on its field."""
    for spec in all_settings():
        if spec.kind in ("bool", "auto_bool"):
            value = not bool(spec.default)
            argv = [spec.cli_flag if value else "--no-" + spec.cli_flag[2:]]
        elif spec.kind == "choice":
            value = next(c for c in spec.choices if c != spec.default)
            argv = [spec.cli_flag, value]
        else:
            value = spec.maximum
            argv = [spec.cli_flag, str(value)]
        settings = cli._case_settings(cli.build_parser().parse_args(["demo", *argv]))
        owner = settings.lesion if spec.owner == "lesion" else settings
        assert getattr(owner, spec.name) == value, spec.name


@pytest.mark.parametrize("argv, words", [
    (["--core-adc", "1e9"], ["core_adc", "×10⁻⁶ mm²/s", "200–1200"]),
    (["--tmax", "1e6"], ["tmax_threshold", "s", "1–20 s"]),
    (["--nihss", "99"], ["nihss", "0–42"]),
    (["--age", "200"], ["age", "years", "0–120 years"]),
    (["--hematocrit-factor", "5"], ["hematocrit_factor", "0.3–1"]),
    (["--tissue-density", "0.01"], ["tissue_density", "g/mL", "0.9–1.2 g/mL"]),
    (["--core-rcbf", "0.3"], ["core_rcbf_percent", "%", "5–80%"]),
    (["--min-core-ml", "-1"], ["min_core_ml", "mL"]),
    (["--age", "eighty"], ["age", "not a number"]),
    (["--method", "magic"], ["method", "oSVD"]),
])
def test_out_of_range_cli_values_exit_2_with_one_line(argv, words, capsys, tmp_path):
    code = cli.main(["demo", "--out", str(tmp_path / "o"), *argv])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("stroke-mismatch: error:"), err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("build", [
    lambda: LesionSettings(tmax_threshold=1e6),
    lambda: LesionSettings(core_adc=float("nan")),
    lambda: LesionSettings(age="eighty"),
    lambda: LesionSettings(nihss=12.5),
    lambda: LesionSettings(fill_holes="yes"),
    lambda: LesionSettings(rcbf_reference="elsewhere"),
    lambda: CaseSettings(hematocrit_factor=5),
    lambda: CaseSettings(lesion={"tmax": 6}),
    lambda: CaseSettings(lesion=3),
    lambda: LesionSettings.from_mapping({"tmax": 6}),
    lambda: case_settings_from_values({"not_a_setting": 1}),
])
def test_library_refuses_bad_settings_with_its_own_error(build):
    with pytest.raises(SettingsError) as info:
        build()
    assert isinstance(info.value, StrokeMismatchError)
    assert len(str(info.value)) > 20


def test_settings_from_a_mapping_and_flat_values():
    settings = CaseSettings(lesion={"tmax_threshold": 8, "age": 70.0})
    assert settings.lesion.tmax_threshold == 8.0 and settings.lesion.age == 70
    flat = case_settings_from_values({"method": "csvd", "core_rcbf_percent": 38, "baseline": (1, 5)})
    assert flat.method == "cSVD" and flat.lesion.core_rcbf == pytest.approx(0.38) and flat.baseline == (1, 5)


# --- summary.json as a contract ----------------------------------------------------------------
def test_the_demo_summary_validates_against_the_shipped_schema(tmp_path, capsys):
    assert cli.main(["demo", "--modality", "ct", "--out", str(tmp_path / "demo"), "--no-report",
                     "--no-motion-correction"]) == 0
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text(encoding="utf-8"))
    _validate(summary)
    assert summary["schema_version"] == SCHEMA_VERSION
    assert summary["subject"] == "phantom-ct-seed0"
    assert summary["core_ml"] == summary["metrics"]["core_ml"]["value"] > 0
    assert summary["criteria"]["DEFUSE3"]["verdict"] in ("eligible", "not eligible") or \
        summary["criteria"]["DEFUSE3"]["verdict"].startswith("indeterminate")
    broken = dict(summary, criteria={"DEFUSE3": summary["criteria"]["DEFUSE3"]})
    with pytest.raises(jsonschema.ValidationError):  # the schema can fail
        _validate(broken)


def test_an_analyze_run_validates_and_takes_the_subject_from_the_bids_path(tmp_path, capsys):
    phantom = make_volume_phantom("ct", shape=(6, 40, 40), seed=2)
    folder = tmp_path / "sub-007" / "ses-1" / "perf"
    folder.mkdir(parents=True)
    write_nifti_perfusion(folder / "sub-007_ses-1_perf.nii.gz", phantom.series)
    out = tmp_path / "out"
    code = cli.main(["analyze", "--perfusion", str(folder / "sub-007_ses-1_perf.nii.gz"), "--out", str(out),
                     "--no-report", "--no-motion-correction", "--quiet"])
    assert code == 0, capsys.readouterr().err
    line = capsys.readouterr().out.strip()
    assert line.startswith("sub-007: quality ") and "DEFUSE3" in line and "\n" not in line
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    _validate(summary)
    assert summary["subject"] == "sub-007"
    code = cli.main(["analyze", "--perfusion", str(folder / "sub-007_ses-1_perf.nii.gz"), "--out",
                     str(tmp_path / "out2"), "--subject", "patient 12", "--no-report",
                     "--no-motion-correction", "--quiet"])
    assert code == 0
    assert json.loads((tmp_path / "out2" / "summary.json").read_text())["subject"] == "patient 12"


@pytest.mark.parametrize("path, subject", [
    ("/data/sub-12/ses-a/perf/sub-12_ses-a_dsc.nii.gz", "sub-12"),
    ("NIfTI /x/sub-A01_perf.nii.gz", "sub-A01"),
    ("/scans/case_0042.nii.gz", "case_0042"),
    ("/scans/ctp.seq.nrrd", "ctp"),
    ("/dicom/EXPORT_7", "EXPORT_7"),
    ("", "unnamed"),
])
def test_subject_from_path(path, subject):
    assert subject_from_path(path) == subject


# --- one record, every output ------------------------------------------------------------------
def test_a_reader_warning_reaches_every_output(ct_result, tmp_path):
    warning = "Sidecar frame times disagree with --tr 2.0 s (recorded times used)."
    metadata = dict(ct_result.series.metadata or {}, warnings=[warning])
    result = dataclasses.replace(ct_result, series=dataclasses.replace(ct_result.series, metadata=metadata))
    out = tmp_path / "case"
    summary = write_case_outputs(result, out, report=True, subject="s1")
    on_disk = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["warnings"][0] == warning and "warnings" not in on_disk["inputs"]["metadata"]
    assert warning in html.unescape((out / "report.html").read_text(encoding="utf-8"))
    assert warning in cli.format_summary(on_disk)
    with open(out / "summary.csv", newline="", encoding="utf-8") as handle:
        row = next(csv.DictReader(handle))
    assert row["subject"] == "s1" and int(row["warnings"]) == len(on_disk["warnings"]) >= 1
    # the terminal, the report and summary.json state the same verdicts
    report_text = html.unescape((out / "report.html").read_text(encoding="utf-8"))
    for rule in on_disk["criteria"].values():
        assert rule["verdict"] in report_text and rule["verdict"] in cli.format_summary(on_disk)


def test_terminal_puts_quality_first_then_side_volumes_verdicts(ct_result):
    text = cli.format_summary(ct_result.summary())
    lines = text.splitlines()
    assert lines[0].startswith("Quality: ")
    order = [next(i for i, line in enumerate(lines) if line.startswith(prefix))
             for prefix in ("Quality", "Affected side", "Volumes and ratios", "Trial criteria")]
    assert order == sorted(order)


def test_record_has_no_arrays_and_null_numbers_carry_a_reason():
    phantom = make_volume_phantom("ct", shape=(6, 40, 40), lesion=False, seed=3)
    result = run_case(phantom.series, settings=CaseSettings(motion_correction=False))
    summary = result.summary()
    _validate(summary)
    for key, value in summary.items():
        if key.endswith("_ml") or key in ("mismatch_ratio", "hir", "core_to_penumbra_ratio", "cbv_index"):
            assert value is None or isinstance(value, float), key
            if value is None:
                assert summary["notes"][key], key
    assert np.isfinite(summary["core_ml"])


def test_settings_doc_is_generated_from_the_schema():
    """docs/SETTINGS.md is the schema's own table (rerun scripts/write_settings_doc.py after a change)."""
    import pathlib

    from StrokeMismatchLib.settings import settings_markdown

    doc = pathlib.Path(__file__).resolve().parents[1] / "docs" / "SETTINGS.md"
    assert doc.read_text(encoding="utf-8") == settings_markdown() + "\n"
