"""Pictures of the report's first page (MR and CT demo) for the README.

    python scripts/make_report_screenshots.py

Runs the demo for each modality, prints report.html to PDF with headless Chromium (as
Testing/test_report_print.py does) and renders page 1 to
Resources/Screenshots/report_page1_{mr,ct}.png with pdftoppm (Debian package poppler-utils).
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

root = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root / "StrokeMismatch"))

from StrokeMismatchLib import cli  # noqa: E402


def main() -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None or shutil.which("pdftoppm") is None:
        print("needs chromium and pdftoppm (apt-get install chromium poppler-utils)")
        return 2
    for modality in ("mr", "ct"):
        with tempfile.TemporaryDirectory() as folder:
            folder = Path(folder)
            if cli.main(["demo", "--modality", modality, "--out", str(folder / "out"), "--quiet"]) != 0:
                return 1
            pdf = folder / "report.pdf"
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync",
                            f"--user-data-dir={folder / 'profile'}", "--no-pdf-header-footer",
                            f"--print-to-pdf={pdf}", (folder / "out" / "report.html").as_uri()],
                           check=True, capture_output=True, timeout=180)
            target = root / "Resources" / "Screenshots" / f"report_page1_{modality}"
            subprocess.run(["pdftoppm", "-png", "-r", "80", "-f", "1", "-l", "1", "-singlefile", str(pdf),
                            str(target)], check=True)
            print(f"wrote {target}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
