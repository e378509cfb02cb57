"""Command line: exit codes, one-line errors, --debug, --version, progress display, option parsing."""

import io
import json

import numpy as np
import pytest
import SimpleITK as sitk

from StrokeMismatchLib import __version__, cli
from StrokeMismatchLib.cli import ProgressDisplay, build_parser, main


def run(argv, capsys):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(err, *words):
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("stroke-mismatch: error: "), err
    assert "Traceback" not in err
    for word in words:
        assert word.lower() in lines[0].lower(), (word, err)


@pytest.fixture(scope="module")
def small_ct_nifti(tmp_path_factory):
    """A small CT phantom written as 4D NIfTI + BIDS sidecar."""
    from StrokeMismatchLib import fileio
    from StrokeMismatchLib.phantom.volume import make_volume_phantom

    folder = tmp_path_factory.mktemp("ctp")
    path = folder / "ctp.nii.gz"
    fileio.write_nifti_perfusion(path, make_volume_phantom("ct", shape=(4, 32, 32)).series)
    return path


def test_version(capsys):
    code, out, err = run(["--version"], capsys)
    assert code == 0
    assert __version__ in out + err


def test_no_command_is_usage_error(capsys):
    code, _, err = run([], capsys)
    assert code == 2
    assert "demo" in err


def test_unknown_option_is_one_line_usage_error(capsys):
    code, _, err = run(["demo", "--frobnicate"], capsys)
    assert code == 2
    assert_one_line_error(err, "frobnicate")


def test_missing_perfusion_argument(capsys):
    code, _, err = run(["analyze"], capsys)
    assert code == 2
    assert_one_line_error(err, "--perfusion")


def test_not_existing_path(tmp_path, capsys):
    code, _, err = run(["analyze", "--perfusion", str(tmp_path / "nothing.nii.gz"), "--out", str(tmp_path / "o"),
                        "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "nothing.nii.gz")
    assert not (tmp_path / "o").exists()


def test_3d_image_as_perfusion(tmp_path, capsys):
    path = tmp_path / "t1.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((4, 8, 8), np.float32)), str(path))
    code, _, err = run(["analyze", "--perfusion", str(path), "--modality", "ct", "--tr", "1", "--quiet",
                        "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert_one_line_error(err, "4D")


def test_missing_te_for_mr(small_ct_nifti, tmp_path, capsys):
    # a 4D series declared MR without any echo time (the sidecar has none for CT)
    path = tmp_path / "dsc.nii.gz"
    image = sitk.ReadImage(str(small_ct_nifti))
    positive = sitk.GetImageFromArray(sitk.GetArrayFromImage(image) + 2000.0, isVector=False)
    positive.CopyInformation(image)
    image = positive
    sitk.WriteImage(image, str(path))
    code, _, err = run(["analyze", "--perfusion", str(path), "--modality", "mr", "--tr", "1", "--quiet",
                        "--out", str(tmp_path / "o")], capsys)
    assert code == 2
    assert_one_line_error(err, "echo time")


def test_existing_output_without_overwrite(small_ct_nifti, tmp_path, capsys):
    out = tmp_path / "o"
    out.mkdir()
    (out / "summary.json").write_text("{}")
    code, _, err = run(["analyze", "--perfusion", str(small_ct_nifti), "--out", str(out), "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "--overwrite")
    assert (out / "summary.json").read_text() == "{}"


def test_unwritable_output(small_ct_nifti, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = run(["analyze", "--perfusion", str(small_ct_nifti), "--out", str(blocker / "out"), "--quiet"],
                       capsys)
    assert code == 2
    assert_one_line_error(err, "a_file")


def test_bad_option_values(capsys):
    for argv, word in [
        (["demo", "--core-rcbf", "0.30"], "5–80%"),
        (["demo", "--tmax", "-1"], "1–20 s"),
        (["demo", "--aif-voxels", "1,2"], "k,j,i"),
        (["demo", "--method", "magic"], "method"),
        (["demo", "--modality", "pet"], "modality"),
    ]:
        code, _, err = run(argv, capsys)
        assert code == 2, argv
        assert_one_line_error(err, word)


def test_unexpected_error_one_line_and_debug_traceback(monkeypatch, tmp_path, capsys):
    import StrokeMismatchLib.pipeline as pipeline

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(pipeline, "run_case", boom)
    code, _, err = run(["demo", "--out", str(tmp_path / "a"), "--quiet"], capsys)
    assert code == 1
    assert_one_line_error(err, "kaboom", "--debug")
    code, _, err = run(["demo", "--out", str(tmp_path / "b"), "--quiet", "--debug"], capsys)
    assert code == 1
    assert "Traceback" in err and "kaboom" in err


def test_lesion_options_reach_settings(tmp_path):
    args = build_parser().parse_args([
        "analyze", "--perfusion", "x", "--core-adc", "600", "--core-rcbf", "38", "--tmax", "8",
        "--rcbf-reference", "mirror", "--age", "70", "--nihss", "12", "--collateral-score", "2",
        "--min-core-ml", "2", "--min-hypoperfusion-ml", "2", "--no-csf-exclusion", "--no-cluster-removal", "--opening",
        "--no-core-in-hypoperfusion", "--aif-voxels", "1,2,3;1,2,4", "--method", "csvd",
        "--no-motion-correction", "--baseline-frames", "2:8",
    ])
    settings = cli._case_settings(args)
    assert settings.method == "cSVD"
    assert settings.motion_correction is False
    assert settings.aif_voxels.tolist() == [[1, 2, 3], [1, 2, 4]]
    assert settings.baseline == (2, 8)
    lesion = settings.lesion
    assert lesion.core_adc == 600 and lesion.core_rcbf_percent == 38 and lesion.tmax_threshold == 8
    assert lesion.rcbf_reference == "mirror"
    assert lesion.core_within_hypoperfusion is False
    assert lesion.csf_exclusion is False and lesion.cluster_removal is False and lesion.opening is True
    assert lesion.min_core_ml == 2 and lesion.min_hypoperfusion_ml == 2
    assert (lesion.age, lesion.nihss, lesion.collateral_score) == (70, 12, 2)
    record = json.dumps(settings.to_dict(), allow_nan=False)
    assert "mirror" in record


def test_rcbf_reference_tmax4_and_specific_cluster_sizes():
    args = build_parser().parse_args(["demo", "--rcbf-reference", "tmax4", "--min-hypoperfusion-ml", "3",
                                      "--min-core-ml", "0.2"])
    lesion = cli._case_settings(args).lesion
    assert lesion.rcbf_reference == "tmax_lt_4"
    assert lesion.min_core_ml == 0.2 and lesion.min_hypoperfusion_ml == 3


def test_defaults_leave_lesion_settings_alone():
    from StrokeMismatchLib.analysis import LesionSettings

    args = build_parser().parse_args(["demo"])
    assert cli._case_settings(args).lesion == LesionSettings()


def test_progress_display_plain_lines():
    stream = io.StringIO()
    display = ProgressDisplay(stream=stream)
    display(0.0, "Correcting motion")
    display(0.1, "Correcting motion")
    display(0.5, "Deconvolution (oSVD)")
    lines = stream.getvalue().splitlines()
    assert lines == ["[  0%] Correcting motion", "[ 50%] Deconvolution (oSVD)"]
    quiet = io.StringIO()
    ProgressDisplay(stream=quiet, enabled=False)(0.5, "x")
    assert quiet.getvalue() == ""


def test_format_summary_handles_null_ratio():
    summary = {
        "software": {"version": __version__, "disclaimer": "D"}, "modality": "ct",
        "settings": {"method": "oSVD"},
        "metrics": {"mismatch_ratio": {"value": None, "unit": "1", "label": "Mismatch ratio",
                                       "flag": "infinite", "note": "infinite: core is 0 mL"}},
        "criteria": {"DEFUSE3": {"name": "DEFUSE 3", "eligible": None, "verdict": "indeterminate",
                                 "reasons": ["age unknown"]}},
    }
    text = cli.format_summary(summary)
    assert "n/a (infinite: core is 0 mL)" in text
    assert "indeterminate" in text and "age unknown" in text


def test_vessel_and_hemisphere_options_reach_settings():
    args = build_parser().parse_args([
        "demo", "--no-vessel-exclusion", "--vessel-cbv", "10", "--vessel-cbv-multiple", "5",
        "--vessel-ttp-window", "0", "--restrict-to-affected-hemisphere"])
    lesion = cli._case_settings(args).lesion
    assert lesion.vessel_exclusion is False and lesion.vessel_cbv == 10
    assert lesion.vessel_cbv_multiple == 5 and lesion.vessel_ttp_window_s == 0
    assert lesion.restrict_to_affected_hemisphere is True
    defaults = cli._case_settings(build_parser().parse_args(["demo"])).lesion
    assert defaults.vessel_exclusion is True and defaults.restrict_to_affected_hemisphere is False
    for argv, word in ([["demo", "--vessel-cbv", "0"], "2–50 mL/100 g"],
                       [["demo", "--vessel-ttp-window", "-1"], "0–10 s"]):
        with pytest.raises(cli._UsageError, match=word):
            build_parser().parse_args(argv)


def test_cleanup_steps_and_their_settings_are_in_summary_json(small_ct_nifti, tmp_path, capsys):
    code, out, err = run(["analyze", "--perfusion", str(small_ct_nifti), "--out", str(tmp_path / "o"),
                          "--quiet", "--json", "--no-report", "--no-motion-correction", "--vessel-cbv", "9",
                          "--restrict-to-affected-hemisphere"], capsys)
    assert code == 0, err
    summary = json.loads(out)
    steps = {s["name"]: s for s in summary["analysis"]["cleanup_steps"]}
    assert {"vessel_exclusion", "hemisphere_restriction"} <= set(steps)
    vessel = steps["vessel_exclusion"]
    assert vessel["enabled"] and vessel["applied"]
    assert vessel["parameters"]["cbv_limit_used"] == 9.0
    assert vessel["parameters"]["aif_ttp_s"] is not None and vessel["parameters"]["ttp_window_s"] > 0
    assert steps["hemisphere_restriction"]["enabled"]
    assert summary["settings"]["vessel_cbv"] == 9.0
    assert summary["settings"]["restrict_to_affected_hemisphere"] is True
    for step in summary["analysis"]["cleanup_steps"]:
        for v in step["volumes_ml"].values():
            assert v["removed"] == pytest.approx(v["before"] - v["after"])


def test_series_option_with_a_nifti_is_refused(small_ct_nifti, tmp_path, capsys):
    """--series chooses among DICOM series; given with a file it would be silently ignored."""
    code, _, err = run(["analyze", "--perfusion", str(small_ct_nifti), "--series", "5",
                        "--out", str(tmp_path / "o"), "--quiet"], capsys)
    assert code == 2
    assert_one_line_error(err, "--series", "DICOM")
    assert not (tmp_path / "o").exists()


def test_format_summary_states_the_timing_and_echo_time_used():
    """The researcher sees, with units, which timing and TE the analysis used (e.g. after a
    sidecar TE in ms was converted, or when --tr met recorded frame times)."""
    summary = {"modality": "mr", "settings": {"method": "oSVD"},
               "inputs": {"source": "NIfTI dsc.nii.gz", "n_frames": 4, "te_s": 0.032, "tr_s": 1.5,
                          "frame_times_s": [0.0, 1.5, 3.0, 88.5],
                         "voxel_size_mm_ijk": [1.8, 1.8, 5.0],
                         "metadata": {"time_source": "sidecar VolumeTiming"}}}
    text = cli.format_summary(summary)
    line = next(line for line in text.splitlines() if line.startswith("Input:"))
    for part in ("dsc.nii.gz", "4 frames", "88.5 s", "sidecar VolumeTiming", "TE 32 ms", "TR 1.5 s",
                 "1.8 × 1.8 × 5 mm"):
        assert part in line, (part, line)
    assert "TE" not in cli.format_summary({"modality": "ct", "inputs": {"source": "x", "te_s": None}})


def test_format_summary_does_not_repeat_quality_warnings_as_notes():
    summary = {"modality": "mr", "settings": {"method": "oSVD"},
               "quality": {"status": "warn", "findings": [
                   {"severity": "warning", "message": "The AIF rests on only 1 voxel(s)."}]},
               "warnings": ["AIF: The AIF rests on only 1 voxel(s).", "Frame intervals vary from 1 s to 3 s."]}
    text = cli.format_summary(summary)
    assert text.count("The AIF rests on only 1 voxel(s).") == 1
    assert "Frame intervals vary from 1 s to 3 s." in text
