"""Write docs/SETTINGS.md from the settings schema (run after changing settings.py)."""

import pathlib
import sys

root = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(root / "StrokeMismatch"))

from StrokeMismatchLib.settings import settings_markdown  # noqa: E402

(root / "docs" / "SETTINGS.md").write_text(settings_markdown() + "\n", encoding="utf-8")
print("wrote docs/SETTINGS.md")
