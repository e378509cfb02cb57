"""Write one case's results into an output folder, safely.

Layout of ``out_dir``::

    maps/{cbf,cbv,mtt,tmax,ttp}.nii.gz        float32, perfusion grid, NaN outside the brain mask
    masks/{core,hypoperfusion,penumbra}.nii.gz uint8 (0/1), perfusion grid
    summary.json                               CaseResult.summary() + the list of files written
    summary.csv                                one row with flat columns (units in the names); the
                                               same columns for every case (MR or CT, with or
                                               without notes), so cohort rows stack
    report.html                                self-contained report (optional)
    series/perfusion.seq.nrrd                  the analysed (motion-corrected) series as a Slicer
                                               sequence (optional, ``save_series``)

Safety (nothing is lost, nothing half-written):

- every file is first written to a hidden temporary folder beside ``out_dir`` and moved into
  place only when all of them are complete;
- a folder that already holds results (any of the files above) is refused unless
  ``overwrite=True``; with overwrite only the files listed above are replaced (those of them
  this run does not write, e.g. an old report.html after ``report=False``, are removed), other
  files in the folder are left alone;
- a folder that cannot be created or written raises :class:`errors.OutputError`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import re
import shutil
import tempfile
import warnings as _warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import OutputError
from .pipeline import MAP_NAMES

MASK_NAMES = ("core", "hypoperfusion", "penumbra")
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
REPORT_HTML = "report.html"
SERIES_SEQ_NRRD = "series/perfusion.seq.nrrd"


def result_files(report: bool = True, save_series: bool = False) -> list[str]:
    """Relative paths of every file ``write_case_outputs`` writes."""
    files = [f"maps/{name}.nii.gz" for name in MAP_NAMES]
    files += [f"masks/{name}.nii.gz" for name in MASK_NAMES]
    files += [SUMMARY_JSON, SUMMARY_CSV]
    if report:
        files.append(REPORT_HTML)
    if save_series:
        files.append(SERIES_SEQ_NRRD)
    return files


def existing_results(out_dir) -> list[str]:
    """Result files (relative paths) already present in ``out_dir``."""
    out_dir = Path(out_dir)
    return [rel for rel in result_files(report=True, save_series=True) if (out_dir / rel).exists()]


def write_case_outputs(
    result,
    out_dir,
    *,
    overwrite: bool = False,
    report: bool = True,
    save_series: bool = False,
    extra_summary: dict | None = None,
    progress: Callable | None = None,
) -> dict:
    """Write maps, masks, summary.json/.csv and report.html of ``result`` into ``out_dir``.

    ``save_series`` also writes the analysed (motion-corrected) signal as
    ``series/perfusion.seq.nrrd``, which Slicer opens as a sequence over the maps.
    ``extra_summary``: JSON-ready entries added to summary.json/.csv (e.g. the demo's
    agreement with the phantom's truth).

    Returns the summary dict that was written (with an ``outputs`` entry listing the files and
    whether the report was written). Raises :class:`errors.OutputError` when the folder exists
    with results and ``overwrite`` is False, or when it cannot be written.
    """
    out_dir = Path(out_dir).expanduser()
    _check_target(out_dir, overwrite)

    def tell(fraction, message):
        if progress is not None:
            progress(fraction, message)

    parent = out_dir.parent.resolve() if out_dir.parent != Path("") else Path.cwd()
    try:
        parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=parent))
    except OSError as exc:
        raise OutputError(
            f"Cannot write results to {out_dir}: {_reason(exc)}. Choose a writable folder with --out."
        ) from None

    try:
        written, summary = _write_all(result, staging, report=report, save_series=save_series,
                                      extra_summary=extra_summary, tell=tell)
        tell(0.95, "Moving results into place")
        _move_into_place(staging, out_dir, written)
    except OSError as exc:
        raise OutputError(
            f"Cannot write results to {out_dir}: {_reason(exc)}. Choose a writable folder with --out."
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    tell(1.0, "Results written")
    return summary


# --------------------------------------------------------------------------------------------
def check_output_dir(out_dir, *, overwrite: bool = False) -> Path:
    """Raise :class:`errors.OutputError` now if ``out_dir`` cannot take our results (call it
    before a long analysis); returns the path."""
    out_dir = Path(out_dir).expanduser()
    _check_target(out_dir, overwrite)
    return out_dir


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"The output path {out_dir} exists and is not a folder: choose another --out.")
    if out_dir.is_dir():
        present = existing_results(out_dir)
        if present and not overwrite:
            raise OutputError(
                f"The output folder {out_dir} already contains results ({', '.join(present[:3])}"
                f"{', …' if len(present) > 3 else ''}): choose another folder or use --overwrite."
            )
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise OutputError(f"The output folder {out_dir} is not writable: choose another --out.")
    for ancestor in [out_dir, *out_dir.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputError(
                    f"Cannot create the output folder {out_dir}: {ancestor} is a file, not a folder."
                )
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise OutputError(f"Cannot create the output folder {out_dir}: {ancestor} is not writable.")
            break


def _write_all(result, folder: Path, *, report: bool, save_series: bool, extra_summary, tell) -> tuple[list[str], dict]:
    from .fileio import write_seq_nrrd, write_volume

    geometry = result.geometry
    written: list[str] = []
    extra_warnings: list[str] = []

    (folder / "maps").mkdir()
    (folder / "masks").mkdir()
    maps = result.map_arrays()
    for index, name in enumerate(MAP_NAMES):
        tell(0.05 + 0.4 * index / len(MAP_NAMES), f"Writing the {name.upper()} map")
        rel = f"maps/{name}.nii.gz"
        write_volume(folder / rel, maps[name].astype(np.float32, copy=False), geometry)
        written.append(rel)
    masks = getattr(result.lesion, "masks", {}) or {}
    for name in MASK_NAMES:
        rel = f"masks/{name}.nii.gz"
        array = np.asarray(masks[name], dtype=np.uint8)
        write_volume(folder / rel, array, geometry)
        written.append(rel)

    if save_series:
        tell(0.47, "Writing the analysed series (.seq.nrrd)")
        (folder / "series").mkdir()
        analysed = dataclasses.replace(result.series, signal=result.signal, source="analysed series")
        write_seq_nrrd(folder / SERIES_SEQ_NRRD, analysed)
        written.append(SERIES_SEQ_NRRD)

    report_status = {"written": False, "path": None, "reason": "not requested (--no-report)"}
    if report:
        tell(0.5, "Writing the report")
        try:
            from .report import write_report

            with _warnings.catch_warnings():
                _warnings.simplefilter("ignore")
                write_report(result, folder / REPORT_HTML)
        except ImportError as exc:
            reason = f"the report needs optional packages that are missing ({exc}); install the 'report' extra"
            report_status = {"written": False, "path": None, "reason": reason}
            extra_warnings.append(f"report.html was not written: {reason}.")
        except Exception as exc:  # the analysis must not be lost because a picture failed
            reason = f"{type(exc).__name__}: {exc}"
            report_status = {"written": False, "path": None, "reason": reason}
            extra_warnings.append(f"report.html was not written: {reason}.")
        else:
            written.append(REPORT_HTML)
            report_status = {"written": True, "path": REPORT_HTML, "reason": None}

    tell(0.85, "Writing the summary")
    summary = result.summary()
    summary.update(extra_summary or {})
    # What the file reader noticed (e.g. a sidecar EchoTime in ms converted to s) comes first.
    reader_warnings = (getattr(result.series, "metadata", None) or {}).get("warnings") or []
    merged = [str(w) for w in reader_warnings] + list(summary.get("warnings") or []) + extra_warnings
    summary["warnings"] = list(dict.fromkeys(merged))
    summary["outputs"] = {
        "files": written + [SUMMARY_JSON, SUMMARY_CSV],
        "maps_units": {name: unit for name, unit in _map_units().items()},
        "maps_outside_mask": "NaN",
        "masks_dtype": "uint8",
        "report": report_status,
    }
    text = json.dumps(summary, indent=2, allow_nan=False, ensure_ascii=False)
    (folder / SUMMARY_JSON).write_text(text + "\n", encoding="utf-8")
    written.append(SUMMARY_JSON)
    (folder / SUMMARY_CSV).write_text(summary_csv(summary), encoding="utf-8")
    written.append(SUMMARY_CSV)
    return written, summary


def _map_units():
    from .pipeline import MAP_UNITS

    return MAP_UNITS


def _move_into_place(staging: Path, out_dir: Path, written: list[str]) -> None:
    if not out_dir.exists():
        try:
            os.rename(staging, out_dir)  # atomic when nothing is there yet
            os.chmod(out_dir, 0o777 & ~_umask())  # mkdtemp made it private (0700)
            return
        except OSError:
            if out_dir.exists():  # created concurrently: fall through to per-file moves
                pass
            else:
                raise
    for rel in written:
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging / rel, target)
    # Our files that this run did not write (report.html after --no-report, the series without
    # --save-series) belong to a previous analysis: remove them so the folder describes one run.
    for rel in set(result_files(report=True, save_series=True)) - set(written):
        stale = out_dir / rel
        if stale.is_file():
            stale.unlink()
            if stale.parent != out_dir and not any(stale.parent.iterdir()):
                stale.parent.rmdir()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)


# --------------------------------------------------------------------------------------------
_UNIT_SUFFIX = {
    "ml": "ml",
    "s": "s",
    "ml/100 g/min": "ml_per_100g_min",
    "ml/100 g": "ml_per_100g",
    "mm": "mm",
    "%": "percent",
    "1e-6 mm2/s": "1e-6mm2_per_s",
    "10⁻⁶ mm²/s": "1e-6mm2_per_s",
}


def _slug(text: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", str(text).lower()).strip("_")


def _unit_suffix(unit) -> str:
    if not unit or str(unit).lower() in ("1", "ratio", "none", "dimensionless", "-", "count"):
        return ""
    unit = str(unit).strip()
    return _UNIT_SUFFIX.get(unit.lower(), _slug(unit))


def _csv_value(value):
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ""
    return value


def flat_row(summary: dict) -> dict:
    """One flat row (column → value) of a summary, for cohort tables."""
    row = {
        "software_version": summary.get("software", {}).get("version"),
        "source": summary.get("input", {}).get("source"),
        "modality": summary.get("modality"),
        "method": summary.get("method"),
        "n_frames": summary.get("input", {}).get("n_frames"),
        "voxel_volume_ml": summary.get("input", {}).get("voxel_volume_ml"),
        "brain_ml": summary.get("brain_mask", {}).get("volume_ml"),
        "aif_method": summary.get("aif", {}).get("method"),
        "aif_n_voxels": summary.get("aif", {}).get("n_voxels"),
        "motion_max_displacement_mm": (summary.get("motion") or {}).get("max_displacement_mm"),
    }
    metrics = summary.get("metrics") or {}
    for name, entry in metrics.items():
        if isinstance(entry, dict):
            value = entry.get("value")
            suffix = _unit_suffix(entry.get("unit"))
            column = _slug(name)
            if suffix and not column.endswith("_" + suffix):
                column = f"{column}_{suffix}"
            row[column] = value
            # Always present (empty when there is nothing to say): cohort rows share one header.
            row[f"{column}_note"] = (entry.get("flag") or entry.get("reason")) if value is None else None
        elif not isinstance(entry, (list, dict)):
            row[_slug(name)] = entry
    for criterion in summary.get("criteria") or []:
        if not isinstance(criterion, dict):
            continue
        name = criterion.get("rule") or criterion.get("name") or criterion.get("id")
        if name is None:
            continue
        status = criterion.get("eligible", criterion.get("status"))
        row[f"{_slug(name)}_eligible"] = status
        reasons = criterion.get("reasons") or []
        row[f"{_slug(name)}_reasons"] = "; ".join(str(r) for r in reasons)
    flags = summary.get("quality_flags") or []
    row["quality_warnings"] = sum(1 for f in flags if isinstance(f, dict) and f.get("severity") in ("warning", "error"))
    row["quality_codes"] = ";".join(str(f.get("code")) for f in flags if isinstance(f, dict))
    return {key: _csv_value(value) for key, value in row.items()}


def summary_csv(summary: dict) -> str:
    """CSV text: a header and one row (see :func:`flat_row`)."""
    row = flat_row(summary)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(row), lineterminator="\n")
    writer.writeheader()
    writer.writerow(row)
    return buffer.getvalue()
