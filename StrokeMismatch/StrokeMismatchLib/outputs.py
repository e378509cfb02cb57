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

Safety (nothing is lost, nothing half-written, never a mix of two runs):

- ``out_dir`` is resolved first (a symlink is followed), so everything happens on the
  filesystem of the real folder; a folder that is a mount point (another filesystem than its
  parent) is refused, since it cannot be replaced as a whole;
- one run at a time per folder: a lock file ``.<name>.strokemismatch-lock`` beside ``out_dir``
  is claimed atomically (``O_CREAT | O_EXCL``) before the analysis (:func:`claim_output_dir`)
  and released after writing; a second run into the same folder fails at once with the first
  run's process id. A lock whose process is gone (same host) or older than
  ``STALE_LOCK_HOURS`` is taken over;
- the whole result folder is written into a staging folder beside ``out_dir``
  (``.<name>.partial-<pid>-…``) and then replaces ``out_dir`` as a whole by renaming: a reader sees
  the old result or the new one, never new maps beside an old summary.json. Files in ``out_dir``
  that are not ours are moved into the new folder afterwards;
- staging and replaced folders left by a killed run (ours by name and marker, and stale because
  we hold the lock) are cleaned at the next claim; a previous result whose replacement was
  interrupted is restored;
- a folder that already holds results (any of the files above) is refused unless
  ``overwrite=True``; with overwrite the folder is replaced by this run's results (our files
  this run does not write, e.g. an old report.html after ``report=False``, are gone), other
  files in the folder are kept;
- the folder *beside* which the results are staged (the parent of ``out_dir``) must be writable,
  and ``out_dir`` must not hold the working folder (it is renamed as a whole);
- a folder aside whose user files could not all be carried over (a name clash) is kept, never
  deleted;
- a folder that cannot be created or written raises :class:`errors.OutputError`.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import re
import shutil
import socket
import tempfile
import time
import warnings as _warnings
from contextlib import contextmanager
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


_OUR_FILES = frozenset(result_files(report=True, save_series=True, adc=True))
_OUR_FOLDERS = frozenset(rel.split("/")[0] for rel in _OUR_FILES if "/" in rel)


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

    Uses the claim of :func:`claim_output_dir` when this process holds one for ``out_dir``,
    else claims the folder for the time of writing. Returns the summary dict that was written
    (with an ``outputs`` entry listing the files and whether the report was written). Raises
    :class:`errors.OutputError` when the folder exists with results and ``overwrite`` is
    False, when another run is writing there, or when it cannot be written.
    """
    with claim_output_dir(out_dir, overwrite=overwrite) as claimed:
        real = _resolve(claimed)
        _check_target(real, overwrite, shown=claimed)

        def tell(fraction, message):
            if progress is not None:
                progress(fraction, message)

        try:
            staging = _make_staging(real)
        except OSError as exc:
            raise OutputError(
                f"Cannot write results to {claimed}: {_reason(exc)}. Choose a writable folder with --out."
            ) from None
        try:
            record = record if record is not None else result.record(subject=subject)
            _written, summary = _write_all(result, record, staging, report=report, save_series=save_series,
                                           extra_summary=extra_summary, tell=tell)
            (staging / STAGING_MARK).unlink()
            tell(0.95, "Moving results into place")
            _replace_folder(staging, real)
        except OSError as exc:
            raise OutputError(
                f"Cannot write results to {claimed}: {_reason(exc)}. Choose a writable folder with --out."
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    tell(1.0, "Results written")
    return summary


# --------------------------------------------------------------------------------------------
STAGING_MARK = ".strokemismatch-staging"
LOCK_SUFFIX = ".strokemismatch-lock"
STALE_LOCK_HOURS = 12.0
_HELD: dict[str, int] = {}  # resolved folder → nesting depth of this process's claim


def check_output_dir(out_dir, *, overwrite: bool = False) -> Path:
    """Raise :class:`errors.OutputError` now if ``out_dir`` cannot take our results (call it
    before a long analysis; :func:`claim_output_dir` also keeps other runs out); returns the path."""
    out_dir = Path(out_dir).expanduser()
    _check_target(_resolve(out_dir), overwrite, shown=out_dir)
    return out_dir


@contextmanager
def claim_output_dir(out_dir, *, overwrite: bool = False):
    """Check ``out_dir`` and claim it for this run (``with claim_output_dir(out) as out: …``).

    Raises :class:`errors.OutputError` at once when the folder cannot take our results, or when
    another live run holds it. While claimed, :func:`write_case_outputs` into it uses this claim.
    Leftovers of killed runs (staging folders, an interrupted replacement) are cleaned here."""
    shown = Path(out_dir).expanduser()
    real = _resolve(shown)
    _check_target(real, overwrite, shown=shown)
    key = str(real)
    if key in _HELD:
        _HELD[key] += 1
        try:
            yield shown
        finally:
            _HELD[key] -= 1
        return
    lock = _lock_path(real)
    _acquire(lock, shown)
    _HELD[key] = 1
    try:
        _clean_leftovers(real)
        yield shown
    finally:
        _HELD[key] -= 1
        if _HELD[key] <= 0:
            del _HELD[key]
            _release(lock)


def _resolve(out_dir: Path) -> Path:
    """The real folder (symlinks followed, absolute), so staging lies on its filesystem."""
    return Path(os.path.realpath(Path(out_dir).expanduser()))


def _lock_path(real: Path) -> Path:
    return real.parent / f".{real.name}{LOCK_SUFFIX}"


def _lock_text() -> str:
    return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})


def _acquire(lock: Path, shown: Path) -> None:
    try:
        lock.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"Cannot create the output folder {shown}: {_reason(exc)}. Choose a writable folder with --out."
        ) from None
    for _attempt in range(3):
        try:
            descriptor = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = _lock_holder(lock)
            if holder is None:  # stale: its run is gone; take it over
                try:
                    lock.unlink()
                except FileNotFoundError:
                    pass
                continue
            raise OutputError(
                f"Another StrokeMismatch run ({holder}) is writing to {shown}: wait for it to finish or "
                f"choose another --out. If no run is active, delete {lock}."
            ) from None
        except OSError as exc:
            raise OutputError(
                f"Cannot write results to {shown}: {_reason(exc)}. Choose a writable folder with --out."
            ) from None
        with os.fdopen(descriptor, "w") as handle:
            handle.write(_lock_text())
        return
    raise OutputError(f"Cannot claim the output folder {shown}: its lock {lock} keeps changing; retry.")


def _lock_holder(lock: Path) -> str | None:
    """A description of the live run holding ``lock``, or None when the lock is stale."""
    try:
        facts = json.loads(lock.read_text())
        pid, host, started = int(facts["pid"]), str(facts["host"]), float(facts["started"])
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        try:  # unreadable (being written right now, or damaged): judge by its age
            age = time.time() - lock.stat().st_mtime
        except OSError:
            return None
        return None if age > 60.0 else "a run starting now"
    if time.time() - started > STALE_LOCK_HOURS * 3600.0:
        return None
    if host == socket.gethostname():
        if pid == os.getpid():
            return None  # left by this process (not held: not in _HELD)
        if not _alive(pid):
            return None
    return f"process {pid} on {host}, started {time.strftime('%H:%M:%S', time.localtime(started))}"


def _alive(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (never signals it)."""
    if os.name == "nt":  # os.kill(pid, 0) would terminate the process on Windows
        return _alive_windows(pid)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _alive_windows(pid: int) -> bool:
    import ctypes

    kernel32 = ctypes.windll.kernel32
    handle = kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
    if not handle:
        return ctypes.GetLastError() == 5  # access denied: it exists
    try:
        code = ctypes.c_ulong()
        if not kernel32.GetExitCodeProcess(handle, ctypes.byref(code)):
            return True
        return code.value == 259  # STILL_ACTIVE
    finally:
        kernel32.CloseHandle(handle)


def _release(lock: Path) -> None:
    try:
        facts = json.loads(lock.read_text())
        if int(facts.get("pid", -1)) == os.getpid() and facts.get("host") == socket.gethostname():
            lock.unlink()
    except (OSError, ValueError, TypeError):
        pass


def _make_staging(real: Path) -> Path:
    real.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{real.name}.partial-{os.getpid()}-", dir=real.parent))
    (staging / STAGING_MARK).write_text(_lock_text())
    return staging


def _replace_folder(staging: Path, real: Path) -> None:
    """Put the complete ``staging`` folder at ``real`` by renaming; an existing ``real`` is
    renamed aside first, its files that are not ours are moved into the new folder, then it is
    removed. Between the two renames ``real`` is briefly absent, never mixed."""
    if real.exists():
        os.chmod(staging, os.stat(real).st_mode & 0o7777)
    else:
        os.chmod(staging, 0o777 & ~_umask())  # mkdtemp made it private (0700)
    try:
        os.rename(staging, real)  # atomic when nothing is there yet
        return
    except OSError:
        if not real.exists():
            raise
    aside = Path(tempfile.mkdtemp(prefix=f".{real.name}.old-{os.getpid()}-", dir=real.parent))
    os.rmdir(aside)
    os.rename(real, aside)
    try:
        os.rename(staging, real)
    except OSError:
        os.rename(aside, real)  # put the previous result back
        raise
    _carry_foreign_files(aside, real)
    _remove_if_only_ours(aside)


def _ours(rel: str) -> bool:
    return rel in _OUR_FILES or rel == STAGING_MARK


def _carry_foreign_files(old: Path, new: Path) -> None:
    """Move every file or folder of ``old`` that is not one of our results into ``new``
    (same filesystem: renames, no copies); entries already present in ``new`` are kept."""
    for root, folders, files in os.walk(old):
        root_path = Path(root)
        rel_root = root_path.relative_to(old)
        for name in list(folders):
            rel = (rel_root / name).as_posix()
            if rel not in _OUR_FOLDERS:  # a folder of the user's: move it whole
                folders.remove(name)
                _move_if_absent(root_path / name, new / rel)
        for name in files:
            rel = (rel_root / name).as_posix()
            if not _ours(rel):
                _move_if_absent(root_path / name, new / rel)


def _remove_if_only_ours(folder: Path) -> bool:
    """Remove ``folder`` when nothing but our result files is left in it (the user's files were
    carried over); otherwise keep it (a name clash or a file that could not be moved) so nothing
    of the user's is ever deleted. Returns True when removed."""
    for root, _folders, files in os.walk(folder):
        rel_root = Path(root).relative_to(folder)
        if any(not _ours((rel_root / name).as_posix()) for name in files):
            return False
    shutil.rmtree(folder, ignore_errors=True)
    return True


def _move_if_absent(source: Path, target: Path) -> None:
    if target.exists() or target.is_symlink():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    os.rename(source, target)


def _clean_leftovers(real: Path) -> None:
    """Remove staging folders of killed runs into ``real`` and finish interrupted replacements.

    Called while holding the lock, so every such folder belongs to a run that is gone. Only our
    folders are touched: ``.<name>.partial-<pid>-…`` holding our marker file, and
    ``.<name>.old-<pid>-…`` (a previous result renamed aside): restored when ``real`` is missing,
    else its foreign files are moved into ``real`` and it is removed."""
    parent = real.parent
    if not parent.is_dir():
        return
    pattern = re.compile(re.escape(f".{real.name}.") + r"(partial|old)-\d+-[A-Za-z0-9_]+$")
    for entry in parent.iterdir():
        match = pattern.match(entry.name)
        if not match or entry.is_symlink() or not entry.is_dir():
            continue
        try:
            if match.group(1) == "partial":
                if (entry / STAGING_MARK).is_file():
                    shutil.rmtree(entry, ignore_errors=True)
            elif not real.exists():
                os.rename(entry, real)
            else:
                _carry_foreign_files(entry, real)
                _remove_if_only_ours(entry)
        except OSError:
            continue


def _check_target(out_dir: Path, overwrite: bool, *, shown: Path | None = None) -> None:
    shown = shown if shown is not None else out_dir
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"The output path {shown} exists and is not a folder: choose another --out.")
    if out_dir.parent == out_dir:
        raise OutputError(f"The output folder {shown} is a filesystem root: give a folder inside it.")
    cwd = Path(os.path.realpath(os.getcwd()))
    if cwd == out_dir or out_dir in cwd.parents:
        raise OutputError(
            f"The output folder {shown} holds the current working folder; results replace their folder "
            f"as a whole, so give a sub-folder for them (e.g. --out {shown / 'results'})."
        )
    if out_dir.is_dir():
        present = existing_results(out_dir)
        if present and not overwrite:
            raise OutputError(
                f"The output folder {shown} already contains results ({', '.join(present[:3])}"
                f"{', …' if len(present) > 3 else ''}): choose another folder or use --overwrite."
            )
        if os.stat(out_dir).st_dev != os.stat(out_dir.parent).st_dev:
            raise OutputError(
                f"The output folder {shown} is a mount point (another filesystem than {out_dir.parent}); "
                "results replace their folder as a whole, which cannot be done there: give a folder "
                f"inside it, e.g. --out {shown / 'results'}."
            )
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise OutputError(f"The output folder {shown} is not writable: choose another --out.")
    for ancestor in [out_dir.parent, *out_dir.parent.parents]:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise OutputError(
                    f"Cannot create the output folder {shown}: {ancestor} is a file, not a folder."
                )
            if not os.access(ancestor, os.W_OK | os.X_OK):
                raise OutputError(
                    f"Cannot write results to {shown}: {ancestor} is not writable (the results are "
                    "written beside the folder first, then moved into place). Choose another --out."
                )
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
