"""Page 1 of the report is the decision and prints on one A4 page (issue 11).

Real parts: the demo pipeline and report, headless Chromium (Debian package, installed by
scripts/install_test_system_packages.sh) printing the HTML to PDF with the report's own print
CSS, and pypdf reading the PDF back. Nothing is stubbed.
"""

import json
import re
import shutil
import subprocess

import pytest
from pypdf import PdfReader

from StrokeMismatchLib import cli

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def print_to_pdf(html_path, pdf_path, profile):
    """Headless Chromium print of ``html_path`` to ``pdf_path`` (A4 from the page's @page rule)."""
    if CHROMIUM is None:
        pytest.fail("Chromium is missing: run scripts/install_test_system_packages.sh (CI does).")
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--no-pdf-header-footer", f"--print-to-pdf={pdf_path}",
               html_path.resolve().as_uri()]
    subprocess.run(command, check=True, capture_output=True, timeout=180)
    return PdfReader(str(pdf_path))


@pytest.fixture(scope="module", params=["mr", "ct"])
def printed(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"print_{request.param}")
    assert cli.main(["demo", "--modality", request.param, "--out", str(folder / "out"), "--quiet"]) == 0
    reader = print_to_pdf(folder / "out" / "report.html", folder / "report.pdf", folder / "profile")
    summary = json.loads((folder / "out" / "summary.json").read_text(encoding="utf-8"))
    return request.param, reader, summary


def _text(page):
    return " ".join(page.extract_text().split())


def test_page_one_holds_the_decision(printed):
    modality, reader, summary = printed
    assert len(reader.pages) >= 2  # details follow on later pages
    page = _text(reader.pages[0])
    assert "Quality: pass" in page
    assert summary["subject"] in page and f"Affected side {summary['affected_side']}" in page
    assert ("DSC-MR perfusion" if modality == "mr" else "CT perfusion") in page
    for key in ("core_ml", "hypoperfusion_ml", "mismatch_ml", "penumbra_ml", "tmax_gt_10_ml"):
        assert f"{summary[key]:.1f} mL" in page, key
    assert f"{summary['mismatch_ratio']:.2f}" in page and f"{summary['hir']:.2f}" in page
    assert "Tmax > 10 s" in page and "HIR" in page
    for rule in summary["criteria"].values():
        name = re.escape(rule["name"].split(" (")[0])
        assert re.search(name + r".{0,40}" + re.escape(rule["verdict"]), page), rule["name"]
    assert "Not a medical device" in page
    # the montage and the Tmax row are on page 1
    images = [name for name in reader.pages[0].images]
    assert len(images) >= 2
    # the details are not: the rule-by-rule table starts on a later page
    assert "Criteria, rule by rule" not in page
    assert any("Criteria, rule by rule" in _text(p) for p in reader.pages[1:])


def test_page_one_is_a4(printed):
    _, reader, _ = printed
    box = reader.pages[0].mediabox
    width_mm, height_mm = float(box.width) / 72 * 25.4, float(box.height) / 72 * 25.4
    assert width_mm == pytest.approx(210, abs=1) and height_mm == pytest.approx(297, abs=1)


def test_mr_cbf_and_cbv_are_shown_as_relative(printed):
    modality, reader, _ = printed
    text = " ".join(_text(p) for p in reader.pages)
    if modality == "mr":
        assert "rCBF and rCBV" in text
    else:
        assert "rCBF and rCBV" not in text
