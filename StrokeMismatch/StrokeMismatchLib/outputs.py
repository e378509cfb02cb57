"""Write one case's results into an output folder, safely.

Layout of ``out_dir``::

    maps/{cbf,cbv,mtt,tmax,ttp}.nii.gz        float32, perfusion grid, NaN outside the brain mask
    masks/{core,hypoperfusion,penumbra,        uint8 (0/1), perfusion grid (Tmax > 4/8/10 s as
          tmax_gt_4,tmax_gt_8,tmax_gt_10}.nii.gz   cleaned by the same steps)
    masks/brain.nii.gz, maps/baseline.nii.gz  the analysed brain and the pre-bolus image, and
    maps/adc.nii.gz (MR)                       the ADC in 10⁻⁶ mm²/s on its own grid: what
                                               re-thresholding and recompute need
    summary.json                               the case record (caserecord.py) + the files written
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
import os
import shutil
import tempfile
import warnings as _warnings
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import OutputError
from .caserecord import MAP_UNITS, csv_row
from .pipeline import MAP_NAMES

MASK_NAMES = ("core", "hypoperfusion", "penumbra", "tmax_gt_4", "tmax_gt_8", "tmax_gt_10")
SUMMARY_JSON = "summary.json"
SUMMARY_CSV = "summary.csv"
REPORT_HTML = "report.html"
SERIES_SEQ_NRRD = "series/perfusion.seq.nrrd"
#: What re-thresholding a result folder needs besides the maps (rethreshold.CASE_MAP_FILES).
BRAIN_MASK = "masks/brain.nii.gz"
BASELINE_IMAGE = "maps/baseline.nii.gz"
ADC_MAP = "maps/adc.nii.gz"


def result_files(report: bool = True, save_series: bool = False, adc: bool = False) -> list[str]:
    """Relative paths of every file ``write_case_outputs`` writes (``adc``: an MR case)."""
    files = [f"maps/{name}.nii.gz" for name in MAP_NAMES]
    files += [f"masks/{name}.nii.gz" for name in MASK_NAMES]
    files += [BRAIN_MASK, BASELINE_IMAGE] + ([ADC_MAP] if adc else [])
    files += [SUMMARY_JSON, SUMMARY_CSV]
    if report:
        files.append(REPORT_HTML)
    if save_series:
        files.append(SERIES_SEQ_NRRD)
    return files


def existing_results(out_dir) -> list[str]:
    """Result files (relative paths) already present in ``out_dir``."""
    out_dir = Path(out_dir)
    return [rel for rel in result_files(report=True, save_series=True, adc=True) if (out_dir / rel).exists()]


def write_case_outputs(
    result,
    out_dir,
    *,
    overwrite: bool = False,
    report: bool = True,
    save_series: bool = False,
    extra_summary: dict | None = None,
    subject: str | None = None,
    record=None,
    progress: Callable | None = None,
) -> dict:
    """Write maps, masks, summary.json/.csv and report.html of ``result`` into ``out_dir``.

    ``save_series`` also writes the analysed (motion-corrected) signal as
    ``series/perfusion.seq.nrrd``, which Slicer opens as a sequence over the maps.
    ``extra_summary``: JSON-ready entries added to summary.json (e.g. the demo's
    agreement with the phantom's truth). ``record``: the case record (``result.record()``,
    built here when not given, with ``subject``); summary.json, summary.csv and the report
    all render it.

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
        record = record if record is not None else result.record(subject=subject)
        written, summary = _write_all(result, record, staging, report=report, save_series=save_series,
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


def _write_all(result, record, folder: Path, *, report: bool, save_series: bool, extra_summary, tell) -> tuple[list[str], dict]:
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

    # what re-thresholding needs: the analysed brain, the pre-bolus image, the ADC (10⁻⁶ mm²/s)
    write_volume(folder / BRAIN_MASK, np.asarray(result.brain_mask, dtype=np.uint8), geometry)
    written.append(BRAIN_MASK)
    write_volume(folder / BASELINE_IMAGE, np.asarray(result.baseline_image, dtype=np.float32), geometry)
    written.append(BASELINE_IMAGE)
    adc_micro, adc_geometry = _adc_micro(result)
    if adc_micro is not None:
        write_volume(folder / ADC_MAP, adc_micro, adc_geometry)
        written.append(ADC_MAP)

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
                write_report(result, folder / REPORT_HTML, record=record)
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
    summary = record.to_dict()
    summary.update(extra_summary or {})
    summary["warnings"] = list(dict.fromkeys(list(summary.get("warnings") or []) + extra_warnings))
    summary["outputs"] = {
        "files": written + [SUMMARY_JSON, SUMMARY_CSV],
        "maps_units": dict(MAP_UNITS),
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
    for rel in set(result_files(report=True, save_series=True, adc=True)) - set(written):
        stale = out_dir / rel
        if stale.is_file():
            stale.unlink()
            if stale.parent != out_dir and not any(stale.parent.iterdir()):
                stale.parent.rmdir()


def _adc_micro(result):
    """(ADC in 10⁻⁶ mm²/s float32, its geometry) of a result, or (None, None)."""
    adc = getattr(result, "adc", None)
    if adc is None:
        return None, None
    if getattr(result, "adc_unit", None) == "1e-6" and np.asarray(adc).dtype == np.float32:
        return np.asarray(adc), result.adc_geometry
    from .adc import adc_to_micro

    micro, _ = adc_to_micro(adc, result.adc_unit)
    return micro, result.adc_geometry


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) if isinstance(exc, OSError) else str(exc)


# --------------------------------------------------------------------------------------------
def summary_csv(summary: dict) -> str:
    """CSV text: a header and one row (:func:`caserecord.csv_row`); fields with commas, quotes or
    line breaks are quoted by the csv module, so one case is always one row."""
    row = csv_row(summary)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(row), lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writeheader()
    writer.writerow(row)
    return buffer.getvalue()
