"""The quality status and gate (issue 9): the mechanism, the demo cases pass, edited segments."""

import json

import numpy as np
import pytest

from StrokeMismatchLib.analysis import metrics_from_masks
from StrokeMismatchLib.cli import main
from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.quality import QualityFlag, quality_status


def test_quality_status_pass_warn_fail_and_findings_errors_first():
    info = QualityFlag("motion", "info", "Head motion at most 0.1 mm.", "fine")
    warning = QualityFlag("short_scan", "warning", "The acquisition lasts 45 s.", "short",
                          value=45.0, threshold="≥ 60", unit="s")
    error = QualityFlag("no_bolus", "error", "No contrast bolus was detected.", "none",
                        value=0.2, threshold="≥ 5", unit="% signal drop")
    assert quality_status([])["status"] == "pass"
    assert quality_status([info])["status"] == "pass"
    assert quality_status([info, warning])["status"] == "warn"
    status = quality_status([info, warning, error])
    assert status["status"] == "fail" and status["errors"] == 1 and status["warnings"] == 1
    assert [f["code"] for f in status["findings"]] == ["no_bolus", "short_scan", "motion"]
    first = status["findings"][0]
    assert {"code", "severity", "message", "explanation", "value", "threshold", "unit"} <= set(first)
    assert first["value"] == 0.2 and first["threshold"] == "≥ 5"
    assert "indeterminate" in status["meaning"]
    json.dumps(status, allow_nan=False)
    # dicts (as read back from summary.json) give the same status
    assert quality_status([f.to_dict() for f in (info, warning, error)])["status"] == "fail"


def test_flag_value_nan_becomes_null():
    assert QualityFlag("x", "warning", "m", "e", value=float("nan")).to_dict()["value"] is None


def test_metrics_from_masks_applies_the_quality_gate():
    geometry = Geometry(np.diag([2.0, 2.0, 2.0, 1.0]), (10, 20, 20))
    core = np.zeros(geometry.shape, bool)
    hypo = np.zeros(geometry.shape, bool)
    core[2:4, 2:10, 2:10] = True                      # 1.024 mL
    hypo[2:8, 2:18, 2:18] = True                      # 12.3 mL
    free = metrics_from_masks(core, hypo, geometry)
    assert free.criteria[1].status == "eligible"
    error = QualityFlag("core_deficit_opposite_sides", "error", "Core left, deficit right.", "why")
    gated = metrics_from_masks(core, hypo, geometry, quality_flags=[error.to_dict()])
    assert [r.status for r in gated.criteria] == ["indeterminate (quality)"] * 4
    assert gated.metrics["core_ml"].value == free.metrics["core_ml"].value
    assert gated.to_dict()["criteria"][1]["reasons"][0].startswith("Quality: core_deficit_opposite_sides")
    warned = metrics_from_masks(core, hypo, geometry,
                                quality_flags=[QualityFlag("motion", "warning", "m", "e")])
    assert warned.criteria[1].status == "eligible" and warned.criteria[1].quality_status == "warn"


@pytest.mark.parametrize("argv", [
    ["demo"], ["demo", "--modality", "ct"], ["demo", "--no-lesion"],
    ["demo", "--modality", "ct", "--no-lesion"],
], ids=["mr", "ct", "mr-healthy", "ct-healthy"])
def test_demo_cases_pass_the_quality_gate(argv, tmp_path, capsys):
    code = main(argv + ["--out", str(tmp_path / "out"), "--json", "--quiet", "--no-report"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads(out[out.index("{"):])
    assert summary["quality"]["status"] == "pass", summary["quality"]["findings"]
    rules = summary["criteria"]
    assert all(r["verdict"].split(" (")[0] in ("eligible", "not eligible", "indeterminate")
               for r in rules.values())
    assert all(r.get("quality_status") == "pass" for r in rules.values())
    if "--no-lesion" not in argv:
        assert rules["DEFUSE3"]["verdict"] == "eligible"  # the demo lesion


# --- Re-threshold and recompute keep the gate (rethreshold.py) --------------------------------
def _healthy_noisy_ct():
    from StrokeMismatchLib.phantom.volume import make_volume_phantom
    from StrokeMismatchLib.pipeline import CaseSettings, run_case

    phantom = make_volume_phantom("ct", seed=1, lesion=False, noise_hu=10.0)
    # without denoising before deconvolution (issue 15's default now removes this speckle)
    return run_case(phantom.series, settings=CaseSettings(motion_correction=False, denoise="none"))


def test_rethreshold_and_recompute_keep_the_quality_gate():
    from StrokeMismatchLib.rethreshold import CaseMaps, recomputed_result, rethresholded_result

    result = _healthy_noisy_ct()                      # 10 mL of Tmax speckle: gated
    assert "hypoperfusion_scattered" in {f.code for f in result.quality if f.severity == "error"}
    case = CaseMaps.from_result(result)
    same = rethresholded_result(case, {}).record().to_dict()
    assert same["quality"]["status"] == "fail"
    assert {r["verdict"] for r in same["criteria"].values()} == {"indeterminate (quality)"}
    # A stricter Tmax threshold leaves no speckle: the mask findings are recomputed, not copied.
    strict = rethresholded_result(case, {"tmax_threshold": 10.0}).record().to_dict()
    codes = {f["code"] for f in strict["quality"]["findings"]}
    assert not codes & {"hypoperfusion_scattered", "hypoperfusion_not_lateralised"}
    assert "indeterminate (quality)" not in {r["verdict"] for r in strict["criteria"].values()}
    # Hand-corrected masks keep the analysis' findings (re-run the analysis to clear them).
    edited = recomputed_result(case, hypoperfusion=result.lesion.masks["hypoperfusion"] & False)
    record = edited.record().to_dict()
    assert record["quality"]["status"] == "fail"
    assert {r["verdict"] for r in record["criteria"].values()} == {"indeterminate (quality)"}
