"""HTML case report: content, self-containment, pictures (non-blank, coloured, oriented), and the
tables-only fallback without matplotlib. Runs the real pipeline on the volume phantom."""

import base64
import html
import io
import re
import sys

import numpy as np
import pytest

from StrokeMismatchLib import DISCLAIMER, report, report_figures
from StrokeMismatchLib.geometry import Geometry

image_module = pytest.importorskip("matplotlib.image")
pipeline = pytest.importorskip("StrokeMismatchLib.pipeline")
volume = pytest.importorskip("StrokeMismatchLib.phantom.volume")

DATA_URI = re.compile(r'<img alt="([a-z0-9_]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _run(modality):
    phantom = volume.make_volume_phantom(modality)
    settings = pipeline.CaseSettings(motion_correction=False)  # the phantom does not move
    return pipeline.run_case(phantom.series, adc=phantom.adc, adc_geometry=phantom.adc_geometry,
                             settings=settings), phantom


@pytest.fixture(scope="module")
def mr_case():
    return _run("mr")


@pytest.fixture(scope="module")
def mr_report(mr_case, tmp_path_factory):
    result, _ = mr_case
    folder = tmp_path_factory.mktemp("report")
    path = report.write_report(result, folder / "report.html", images_dir=folder / "pictures")
    return path, path.read_text(encoding="utf-8"), folder / "pictures"


def _images(text):
    return {name: base64.b64decode(data) for name, data in DATA_URI.findall(text)}


def _decode(png):
    rgb = image_module.imread(io.BytesIO(png))
    return rgb[..., :3]


def _red(rgb):
    return (rgb[..., 0] - np.maximum(rgb[..., 1], rgb[..., 2])) > 0.25


def _green(rgb):
    return (rgb[..., 1] - np.maximum(rgb[..., 0], rgb[..., 2])) > 0.2


def test_report_is_self_contained_html(mr_report):
    path, text, _ = mr_report
    assert path.suffix == ".html" and path.is_file()
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", text, re.I)
    assert not re.search(r"url\(\s*['\"]?(https?:)?//", text, re.I)
    assert "<script" not in text.lower() and "<link" not in text.lower()


def test_report_states_volumes_with_units_criteria_reasons_and_disclaimer(mr_case, mr_report):
    result, _ = mr_case
    _, text, _ = mr_report
    plain = html.unescape(text)
    summary = result.summary()
    assert DISCLAIMER in plain and "Not a medical device" in plain
    core = summary["metrics"]["core_ml"]["value"]
    hypo = summary["metrics"]["hypoperfusion_ml"]["value"]
    assert core > 1 and hypo > core
    assert f"{core:.1f} mL" in plain and (f"{hypo:.0f} mL" in plain or f"{hypo:.1f} mL" in plain)
    for rule in summary["criteria"].values():
        assert rule["name"] in plain
        for reason in rule["reasons"]:
            assert reason in plain
        for criterion in rule["rules"]:
            assert criterion["reason"] in plain
    assert "Tmax > 6 s" in plain and "ADC < 620" in plain
    # every clean-up step appears with the volume it removed
    for step in summary["analysis"]["cleanup_steps"]:
        assert step["name"] in plain
    assert "removed" in plain and "mL/100 g/min" in plain


def test_report_pictures_exist_are_nonblank_and_coloured(mr_report):
    _, text, pictures = mr_report
    images = _images(text)
    assert set(images) == {"montage", "tmax_row", "maps", "aif", "render3d"}
    for name, png in images.items():
        rgb = _decode(png)
        assert rgb.shape[0] > 200 and rgb.shape[1] > 300, name
        assert rgb.std() > 0.1, f"{name} looks blank"
        assert (pictures / f"report_{name}.png").read_bytes() == png
    montage = _decode(images["montage"])
    assert _red(montage).mean() > 0.005 and _green(montage).mean() > 0.01
    scene = _decode(images["render3d"])[32:-32]  # leave out the title and the coloured legend
    assert _red(scene).mean() > 0.002 and _green(scene).mean() > 0.002
    maps = _decode(images["maps"])
    assert maps.std(axis=(0, 1)).min() > 0.1  # colour maps, not grey


def _lesion_scene(geometry):
    """Brain disc on one slice with a core + penumbra on the patient's LEFT (RAS x < 0)."""
    shape = geometry.shape
    k, j, i = np.indices(shape)
    ras = geometry.ijk_to_ras_points(np.stack([i, j, k], axis=-1).astype(float))
    brain = (ras[..., 0] / 40) ** 2 + (ras[..., 1] / 45) ** 2 < 1
    core = brain & ((ras[..., 0] + 22) ** 2 + ras[..., 1] ** 2 < 8 ** 2)
    penumbra = brain & ((ras[..., 0] + 22) ** 2 + ras[..., 1] ** 2 < 15 ** 2) & ~core
    background = np.where(brain, 800.0, 0.0) + 50 * (ras[..., 1] > 20)  # anterior brighter
    return background, brain, core, penumbra


@pytest.mark.parametrize("ras_stored", [False, True])
def test_montage_is_radiological_patient_left_on_image_right(ras_stored):
    shape = (3, 50, 60)
    matrix = np.diag([-2.0, -2.0, 4.0, 1.0])  # LPS-stored: i → left, j → posterior
    if ras_stored:
        matrix = np.diag([2.0, 2.0, 4.0, 1.0])  # RAS-stored: i → right, j → anterior
    matrix[:3, 3] = -matrix[:3, :3] @ (np.array([60, 50, 3]) - 1) / 2  # centre at the origin
    geometry = Geometry(matrix, shape)
    background, brain, core, penumbra = _lesion_scene(geometry)
    png = report_figures.montage_png(background, geometry, [1], brain_mask=brain, core=core, penumbra=penumbra,
                             background_label="test", window=(0, 900))
    rgb = _decode(png)
    rows, cols = np.nonzero(_red(rgb[40:]))  # skip the legend line
    assert cols.size > 20
    assert cols.mean() > rgb.shape[1] / 2, "patient-left lesion must be on the image's right"
    grey = rgb[40:].mean(axis=2)
    bright = np.nonzero((grey > 0.9) & ~_red(rgb[40:]) & ~_green(rgb[40:]))[0]
    body = np.nonzero(grey > 0.5)[0]
    assert bright.mean() < body.mean(), "anterior (brighter) must be at the top"


def test_choose_slices_covers_the_lesion():
    geometry = Geometry.from_spacing((20, 8, 8))
    brain = np.zeros(geometry.shape, bool)
    brain[2:18] = True
    core = np.zeros_like(brain)
    core[9:11, 3:5, 3:5] = True
    chosen = report_figures.choose_slices(brain, core, None, geometry)
    assert {9, 10} <= set(chosen) and len(chosen) == 6 and chosen == sorted(chosen)
    big = np.zeros_like(brain)
    big[2:18, 2:6, 2:6] = True
    spread = report_figures.choose_slices(brain, None, big, geometry)
    assert len(spread) == 8 and spread[0] == 2 and spread[-1] == 17
    assert report_figures.choose_slices(brain, None, None, geometry)[0] == 2  # no lesion: brain slices


def test_headline_shows_infinite_ratio_and_units_without_pictures():
    summary = {
        "modality": "ct", "core_ml": 0.0, "hypoperfusion_ml": 25.0, "mismatch_ml": 25.0, "mismatch_ratio": None,
        "notes": {"mismatch_ratio": "infinite: core is 0 mL while the numerator is 25.00 mL"},
        "metrics": {
            "core_ml": {"value": 0.0, "unit": "mL", "label": "Ischemic core volume"},
            "hypoperfusion_ml": {"value": 25.0, "unit": "mL", "label": "Hypoperfusion volume (Tmax > 6 s)"},
            "mismatch_ml": {"value": 25.0, "unit": "mL", "label": "Mismatch volume"},
            "mismatch_ratio": {"value": None, "unit": "1", "label": "Mismatch ratio", "flag": "infinite",
                               "note": "infinite: core is 0 mL while the numerator is 25.00 mL"},
        },
        "criteria": {"DEFUSE3": {"name": "DEFUSE 3", "eligible": None, "verdict": "indeterminate",
                                 "reasons": ["age <not given>"],
                                 "rules": [{"name": "age", "status": "unknown", "reason": "age <not given>"}]}},
    }
    text = report.build_report_html(summary, {})
    plain = html.unescape(text)
    assert "∞" in plain and "infinite: core is 0 mL" in plain
    assert "25.0 mL" in plain and "rCBF < 30 %" in plain and "CT perfusion" in plain
    assert "indeterminate" in plain and "&lt;not given&gt;" in text  # escaped, not raw HTML
    assert "<img" not in text and DISCLAIMER in plain


def test_report_without_matplotlib_has_tables_and_a_note(mr_case, tmp_path, monkeypatch):
    result, _ = mr_case
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    path = report.write_report(result, tmp_path / "plain.html", include_3d=False)
    text = path.read_text(encoding="utf-8")
    plain = html.unescape(text)
    assert report.MATPLOTLIB_MISSING in plain
    assert "<img" not in text
    assert "DEFUSE 3" in plain and "Ischemic core volume" in plain and DISCLAIMER in plain
    assert text.rstrip().endswith("</html>")


def test_ct_report_uses_the_mean_ct_image(tmp_path):
    result, phantom = _run("ct")
    path = report.write_report(result, tmp_path / "ct.html", include_3d=False)
    text = path.read_text(encoding="utf-8")
    assert "mean CT perfusion image (HU)" in html.unescape(text) or "mean CT perfusion image" in text
    images = _images(text)
    assert set(images) == {"montage", "tmax_row", "maps", "aif"}
    montage = _decode(images["montage"])
    assert _red(montage).mean() > 0.002 and _green(montage).mean() > 0.005


def test_quality_flags_are_listed_with_severity_and_explanation():
    summary = {"modality": "mr", "metrics": {}, "criteria": {},
               "quality": {"status": "warn", "findings": [
                   {"code": "bolus_truncated", "severity": "warning",
                    "message": "The bolus has not returned to baseline by 45 s.",
                    "explanation": "Truncation lowers CBV and CBF."}]},
               "warnings": ["AIF peak later than tissue"]}
    text = report.build_report_html(summary, {})
    assert 'class="sev-warning"' in text
    # the quality status is the first thing on the page, before the criteria and volumes
    assert text.index("quality-warn") < text.index("Not a medical device") < text.index("Criteria")
    for words in ("bolus_truncated", "returned to baseline by 45 s", "Truncation lowers CBV",
                  "AIF peak later than tissue", "No trial criteria"):
        assert words in text


def test_report_without_opengl_notes_the_missing_3d_picture(mr_case, tmp_path, monkeypatch):
    from StrokeMismatchLib import render3d

    result, _ = mr_case
    monkeypatch.setattr(render3d, "_make_render_window", lambda vtk, size: None)
    text = report.write_report(result, tmp_path / "no3d.html").read_text(encoding="utf-8")
    assert set(_images(text)) == {"montage", "tmax_row", "maps", "aif"}
    assert "3D picture" in text and "OpenGL" in text
