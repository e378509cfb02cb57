"""Cohorts: the ``analyze`` pipeline over many cases, in parallel on Dask.

    run_cohort("manifest.csv", "results/", settings={"tmax_threshold": 6.0}, workers=4)
    stroke-mismatch cohort manifest.csv --out results/ [--scheduler tcp://host:8786] [--resume]

**Manifest.** A CSV (comma, semicolon or tab; UTF-8) with a header row. Columns (case-insensitive):
``subject`` (required, unique; letters, digits, ``.``, ``_``, ``-``: it names the case folder),
``perfusion`` (required: 4D NIfTI + BIDS sidecar, ``.seq.nrrd`` or DICOM folder), optional
``diffusion`` (ADC map), ``modality`` (mr/ct), ``age``, ``nihss``, ``collateral_score``, ``tr``
and ``te`` (s). Paths are relative to the manifest's folder; empty or ``n/a`` cells mean "not
given". Other columns are ignored (and listed), except near-misses of a known column (``difusion``)
which are refused. Instead of a CSV, a BIDS-like folder: every ``sub-*/`` (or ``sub-*/ses-*/``)
holding one perfusion series (suffix ``_dsc``, ``_pwi``, ``_perf`` or ``_ctp``) and optionally
one ADC map (suffix ``_adc``); ``participants.tsv`` may give ``age``, ``nihss`` and
``collateral_score``.

**What fails how.** A manifest that cannot be used as a whole (unreadable, no ``subject`` or
``perfusion`` column, an empty, unsafe or duplicate subject, a value that is not a number or
out of range) raises :class:`ManifestError` before anything runs (CLI exit 2). A case whose
files are missing, or whose analysis fails, is reported as failed with its reason (``error``
column of ``cohort.csv``), and the cohort continues.

**Each case** runs exactly what ``stroke-mismatch analyze`` runs (``caseinputs.read_case_inputs``,
``pipeline.run_case``, ``outputs.write_case_outputs``) into ``OUT/<subject>/``, with the
settings given once for the cohort; a case's ``age``, ``nihss`` and ``collateral_score`` from
the manifest override the shared ones. ``OUT/<subject>/cohort_case.json`` records the content
hash (SHA-256) of the case's input files, its settings and the software version, so ``resume``
skips a case only when all three are unchanged and its results are complete.

**Parallel** on Dask (``dask[distributed]``, the ``cohort`` extra): by default a
``distributed.LocalCluster`` of worker processes on this machine, one case at a time per worker
(one thread each) and a memory limit per worker; or an existing cluster (``client`` or
``scheduler`` address) used as it is. Workers must see the inputs and ``OUT`` at the same paths
(a shared file system) and have StrokeMismatchLib installed.

**Outputs** in ``OUT``: ``cohort.csv`` (one row per subject, the columns of ``summary.csv``
plus ``error``), ``cohort.html`` (``cohort_report.py``), ``cohort.json`` (settings, options,
status, time and worker memory of each case) and ``cohort_manifest.csv`` (the cases as run,
absolute paths).

Decision support for research and teaching, not a medical device.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import difflib
import hashlib
import io
import json
import math
import os
import re
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from . import DISCLAIMER, __version__
from .errors import InputDataError, InputFileError, OutputError, StrokeMismatchError

MANIFEST_COLUMNS = ("subject", "perfusion", "diffusion", "modality", "age", "nihss", "collateral_score",
                    "tr", "te")
CLINICAL_COLUMNS = ("age", "nihss", "collateral_score")
#: BIDS-like suffix of a perfusion series -> modality it implies (None: the file says).
PERFUSION_SUFFIXES = {"dsc": "mr", "pwi": "mr", "perf": None, "ctp": "ct"}
ADC_SUFFIXES = ("adc",)
IMAGE_EXTENSIONS = (".nii.gz", ".nii", ".seq.nrrd", ".nrrd", ".mha", ".mhd")
EMPTY_VALUES = ("", "n/a", "na", "nan", "none")

CASE_MARKER = "cohort_case.json"
COHORT_CSV = "cohort.csv"
COHORT_HTML = "cohort.html"
COHORT_JSON = "cohort.json"
COHORT_MANIFEST = "cohort_manifest.csv"

_SUBJECT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_INSTALL_HINT = ("the cohort command runs on Dask, which is not installed: "
                 "pip install 'StrokeMismatchLib[cohort]' (or pip install 'dask[distributed]')")


class ManifestError(InputFileError):
    """The manifest (CSV or folder) cannot be used as a whole; the message names file, line and column."""


# --------------------------------------------------------------------------------------------
# Manifest
@dataclass(frozen=True)
class CohortCase:
    """One case of a cohort: absolute input paths, per-case values, and a ``problem`` known
    before running (e.g. a missing file) with which the case fails without being analysed."""

    subject: str
    perfusion: Path | None
    diffusion: Path | None = None
    modality: str | None = None
    age: int | None = None
    nihss: int | None = None
    collateral_score: int | None = None
    tr: float | None = None
    te: float | None = None
    problem: str | None = None
    origin: str = ""

    def clinical(self) -> dict:
        """Per-case clinical settings given in the manifest (override the shared ones)."""
        return {name: getattr(self, name) for name in CLINICAL_COLUMNS if getattr(self, name) is not None}

    def to_row(self) -> dict:
        return {"subject": self.subject, "perfusion": _text(self.perfusion), "diffusion": _text(self.diffusion),
                "modality": _text(self.modality), "age": _text(self.age), "nihss": _text(self.nihss),
                "collateral_score": _text(self.collateral_score), "tr": _text(self.tr), "te": _text(self.te),
                "problem": _text(self.problem)}


@dataclass
class Manifest:
    """The cases of a cohort and where they came from (``kind`` "csv" or "folder")."""

    cases: list
    source: Path
    kind: str
    ignored_columns: tuple = ()
    notes: list = field(default_factory=list)

    def describe(self, limit: int = 20) -> str:
        """What was found, for the user to check before the run (one line per case up to ``limit``)."""
        problems = sum(1 for case in self.cases if case.problem)
        lines = [f"{len(self.cases)} case(s) in {self.source}"
                 + (f"; {problems} with a problem (reported as failed)" if problems else "")]
        if self.ignored_columns:
            lines.append(f"  ignored column(s): {', '.join(self.ignored_columns)}")
        lines.extend(f"  {note}" for note in self.notes)
        base = self.source if self.source.is_dir() else self.source.parent
        for case in self.cases[:limit]:
            parts = [f"perfusion {_relative(case.perfusion, base)}"]
            if case.diffusion:
                parts.append(f"ADC {_relative(case.diffusion, base)}")
            if case.modality:
                parts.append(case.modality.upper())
            parts += [f"{name} {value}" for name, value in case.clinical().items()]
            if case.problem:
                parts.append(f"PROBLEM: {case.problem}")
            lines.append(f"  {case.subject}: " + ", ".join(parts))
        if len(self.cases) > limit:
            lines.append(f"  … and {len(self.cases) - limit} more (all in {COHORT_MANIFEST} of the output folder)")
        return "\n".join(lines)


def read_manifest(path) -> Manifest:
    """The cases of a manifest CSV, or of a BIDS-like folder (see the module docstring).
    Raises :class:`ManifestError` for a manifest that cannot be used."""
    path = Path(path).expanduser()
    if not path.exists():
        raise ManifestError(f"The manifest {path} does not exist: give a CSV file or a BIDS-like folder.")
    if path.is_dir():
        return find_bids_cases(path)
    return read_manifest_csv(path)


def read_manifest_csv(path) -> Manifest:
    """Parse and check a manifest CSV (paths relative to its folder become absolute)."""
    path = Path(path).expanduser().resolve()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ManifestError(f"The manifest {path} is not UTF-8 text: save it as CSV (UTF-8).") from None
    except OSError as exc:
        raise ManifestError(f"The manifest {path} cannot be read: {exc.strerror or exc}.") from None
    if "\x00" in text:
        raise ManifestError(f"The manifest {path} is not a text CSV file (it contains NUL bytes).")
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ManifestError(f"The manifest {path} is empty: it needs a header row with subject,perfusion.")
    try:
        delimiter = csv.Sniffer().sniff(lines[0], delimiters=",;\t").delimiter
    except csv.Error:
        delimiter = ","
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        rows = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise ManifestError(f"{path}: line {reader.line_num}: not valid CSV ({exc}).") from None
    rows = [(number, row) for number, row in rows if any(cell.strip() for cell in row)]
    header_line, header = rows[0]
    columns = [cell.strip().lower() for cell in header]
    for required in ("subject", "perfusion"):
        if required not in columns:
            raise ManifestError(f"{path}: the header has no '{required}' column (found: {', '.join(columns)}); "
                                f"needed: subject, perfusion; optional: {', '.join(MANIFEST_COLUMNS[2:])}.")
    duplicates = sorted({c for c in columns if columns.count(c) > 1 and c})
    if duplicates:
        raise ManifestError(f"{path}: column(s) {', '.join(duplicates)} appear more than once in the header.")
    ignored = []
    for column in columns:
        if column in MANIFEST_COLUMNS:
            continue
        near = difflib.get_close_matches(column, MANIFEST_COLUMNS, n=1, cutoff=0.8)
        if near:
            raise ManifestError(f"{path}: unknown column '{column}': did you mean '{near[0]}'?")
        ignored.append(column or "(unnamed)")
    base = path.parent
    cases, seen = [], {}
    for number, row in rows[1:]:
        if len(row) > len(columns):
            raise ManifestError(f"{path}: line {number} has {len(row)} fields but the header has {len(columns)} "
                                "(a path with a comma must be quoted).")
        values = {column: row[index].strip() if index < len(row) else "" for index, column in enumerate(columns)}
        case = _case_from_values(values, base, where=f"{path}: line {number}")
        key = case.subject.lower()
        if key in seen:
            raise ManifestError(f"{path}: line {number}: subject '{case.subject}' already on line {seen[key]} "
                                "(subjects must be unique, ignoring case: each names an output folder).")
        seen[key] = number
        cases.append(dataclasses.replace(case, origin=f"line {number}"))
    if not cases:
        raise ManifestError(f"The manifest {path} has a header but no case rows.")
    return Manifest(cases, path, "csv", tuple(ignored))


def _case_from_values(values: dict, base: Path, *, where: str) -> CohortCase:
    subject = values.get("subject", "")
    if not subject:
        raise ManifestError(f"{where}: the subject is empty.")
    if not _SUBJECT.match(subject):
        raise ManifestError(f"{where}: subject '{subject}' may only contain letters, digits, '.', '_' and '-' "
                            "(at most 100, not starting with '.' or '-'): it names the case's output folder.")
    problems = []
    perfusion = _path_value(values.get("perfusion"), base)
    if perfusion is None:
        raise ManifestError(f"{where}: subject '{subject}' has no perfusion path.")
    if not perfusion.exists():
        problems.append(f"the perfusion input {perfusion} does not exist")
    diffusion = _path_value(values.get("diffusion"), base)
    if diffusion is not None and not diffusion.is_file():
        problems.append(f"the ADC map {diffusion} does not exist")
    modality = _empty(values.get("modality"))
    if modality is not None:
        modality = modality.lower()
        if modality not in ("mr", "ct"):
            raise ManifestError(f"{where}: modality '{modality}' must be mr, ct or empty.")
    clinical = {}
    from .settings import SettingsError, settings_by_name

    specs = settings_by_name()
    for name in CLINICAL_COLUMNS:
        text = _empty(values.get(name))
        if text is None:
            continue
        try:
            clinical[name] = specs[name].validate(_number(text, name, where))
        except SettingsError:
            raise ManifestError(f"{where}: {name} {text!r} must be {specs[name].range_text()}.") from None
    timing = {}
    for name, largest in (("tr", 60.0), ("te", 1.0)):
        text = _empty(values.get(name))
        if text is None:
            continue
        number = _number(text, name, where)
        if not 0 < number <= largest:
            hint = " (seconds: 30 ms is 0.03)" if name == "te" else " (seconds)"
            raise ManifestError(f"{where}: {name} {text!r} must be a positive number of seconds up to "
                                f"{largest:g}{hint}.")
        timing[name] = number
    return CohortCase(subject, perfusion, diffusion, modality, problem="; ".join(problems) or None,
                      **clinical, **timing)


def find_bids_cases(folder) -> Manifest:
    """Cases of a BIDS-like folder: each ``sub-*`` (or ``sub-*/ses-*`` holding a perfusion
    series) is one case; files found by suffix anywhere below it (see the module docstring)."""
    folder = Path(folder).expanduser().resolve()
    subjects = sorted(p for p in folder.iterdir() if p.is_dir() and p.name.startswith("sub-"))
    if not subjects:
        raise ManifestError(f"{folder} has no sub-* folders: give a manifest CSV, or a BIDS-like folder "
                            "(sub-XX/[ses-YY/]…_dsc.nii.gz / …_ctp.nii.gz, …_adc.nii.gz).")
    participants = _participants(folder)
    cases, notes = [], []
    for subject_dir in subjects:
        sessions = sorted(p for p in subject_dir.iterdir() if p.is_dir() and p.name.startswith("ses-"))
        units = [(f"{subject_dir.name}_{s.name}", s) for s in sessions] or [(subject_dir.name, subject_dir)]
        found_any = False
        for subject, unit in units:
            files = [p for p in sorted(unit.rglob("*")) if _image_suffix(p) is not None]
            perfusion = [p for p in files if _image_suffix(p) in PERFUSION_SUFFIXES]
            adc = [p for p in files if _image_suffix(p) in ADC_SUFFIXES]
            if not perfusion:
                if sessions:
                    notes.append(f"{subject}: no perfusion series (…_dsc, _pwi, _perf, _ctp): not a case")
                continue
            found_any = True
            problems = []
            if len(perfusion) > 1:
                problems.append("several perfusion series (" + ", ".join(p.name for p in perfusion)
                                + "): write a manifest CSV naming the one to analyse")
            if len(adc) > 1:
                problems.append("several ADC maps (" + ", ".join(p.name for p in adc)
                                + "): write a manifest CSV naming the one to use")
            if not _SUBJECT.match(subject):
                raise ManifestError(f"{unit}: '{subject}' is not usable as a subject (letters, digits, '.', '_', '-').")
            modality = PERFUSION_SUFFIXES[_image_suffix(perfusion[0])]
            clinical = participants.get(subject_dir.name, {})
            cases.append(CohortCase(subject, perfusion[0], adc[0] if len(adc) == 1 else None, modality,
                                    problem="; ".join(problems) or None, origin=str(unit), **clinical))
        if not found_any:
            cases.append(CohortCase(subject_dir.name, None, problem=(
                "no perfusion series found (a file ending in _dsc, _pwi, _perf or _ctp "
                f"+ {', '.join(IMAGE_EXTENSIONS[:3])})"), origin=str(subject_dir)))
    return Manifest(cases, folder, "folder", (), notes)


def _participants(folder: Path) -> dict:
    """participant_id -> clinical values from ``participants.tsv`` (age, nihss, collateral_score)."""
    path = folder / "participants.tsv"
    if not path.is_file():
        return {}
    from .settings import SettingsError, settings_by_name

    specs = settings_by_name()
    out = {}
    with path.open(encoding="utf-8-sig", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        fields = {name.strip().lower(): name for name in reader.fieldnames or []}
        if "participant_id" not in fields:
            raise ManifestError(f"{path} has no participant_id column.")
        for row in reader:
            values = {}
            for name in CLINICAL_COLUMNS:
                text = _empty((row.get(fields.get(name, ""), "") or "").strip())
                if text is None:
                    continue
                where = f"{path}: line {reader.line_num}"
                try:
                    values[name] = specs[name].validate(_number(text, name, where))
                except SettingsError:
                    raise ManifestError(f"{where}: {name} {text!r} must be {specs[name].range_text()}.") from None
            out[(row.get(fields["participant_id"]) or "").strip()] = values
    return out


def _image_suffix(path: Path) -> str | None:
    """The BIDS suffix (last ``_`` entity, lower case) of an image file, else None."""
    name = path.name
    lower = name.lower()
    for extension in IMAGE_EXTENSIONS:
        if lower.endswith(extension) and path.is_file():
            return lower[: -len(extension)].split("_")[-1]
    return None


def _path_value(text, base: Path) -> Path | None:
    text = _empty(text)
    if text is None:
        return None
    path = Path(text).expanduser()
    return (path if path.is_absolute() else base / path).resolve()


def _empty(text):
    if text is None:
        return None
    text = str(text).strip()
    return None if text.lower() in EMPTY_VALUES else text


def _number(text: str, name: str, where: str) -> float:
    try:
        number = float(text.replace(",", ".") if text.count(",") == 1 and "." not in text else text)
    except ValueError:
        raise ManifestError(f"{where}: {name} {text!r} is not a number.") from None
    if not math.isfinite(number):
        raise ManifestError(f"{where}: {name} {text!r} is not a finite number.")
    return int(number) if name in CLINICAL_COLUMNS and number.is_integer() else number


def _text(value) -> str:
    return "" if value is None else str(value)


def _relative(path, base: Path) -> str:
    if path is None:
        return "—"
    try:
        return str(Path(path).relative_to(base))
    except ValueError:
        return str(path)


# --------------------------------------------------------------------------------------------
# One case (runs on a Dask worker)
def input_files(case: CohortCase) -> dict:
    """Role/name -> path of every file the case reads (a DICOM folder: each file in it; a
    NIfTI: its BIDS sidecar too), for the content hash."""
    from .fileio import sidecar_path

    files = {}
    if case.perfusion is not None:
        perfusion = Path(case.perfusion)
        if perfusion.is_dir():
            for item in sorted(perfusion.rglob("*")):
                if item.is_file():
                    files[f"perfusion/{item.relative_to(perfusion).as_posix()}"] = item
        else:
            files[f"perfusion/{perfusion.name}"] = perfusion
            sidecar = sidecar_path(perfusion)
            if sidecar.is_file():
                files[f"perfusion/{sidecar.name}"] = sidecar
    if case.diffusion is not None:
        files[f"diffusion/{Path(case.diffusion).name}"] = Path(case.diffusion)
    return files


def file_sha256(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def case_fingerprint(case: CohortCase, settings, options: dict) -> tuple[str, dict]:
    """(SHA-256 over input contents, settings, read/output options and software version;
    role/name -> content hash of each input)."""
    hashes = {role: file_sha256(path) for role, path in input_files(case).items()}
    material = {"inputs": hashes, "settings": settings.to_dict(),
                "read": {"modality": case.modality or options.get("modality"), "tr": case.tr or options.get("tr"),
                         "te": case.te or options.get("te"), "adc_unit": options.get("adc_unit")},
                "outputs": {"report": bool(options.get("report", True)),
                            "save_series": bool(options.get("save_series", False))},
                "software": __version__}
    text = json.dumps(material, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest(), hashes


def completed_summary(folder, fingerprint: str) -> dict | None:
    """The summary.json of a complete earlier result with this fingerprint, else None."""
    folder = Path(folder)
    try:
        marker = json.loads((folder / CASE_MARKER).read_text(encoding="utf-8"))
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if marker.get("status") != "done" or marker.get("fingerprint") != fingerprint:
        return None
    files = (summary.get("outputs") or {}).get("files") or []
    if not files or not all((folder / rel).is_file() for rel in files):
        return None
    return summary


def run_case_task(case: CohortCase, out_dir: str, settings_values: dict, options: dict) -> dict:
    """Analyse one case into ``out_dir/<subject>`` (or skip it when ``options["resume"]`` and
    its result is complete and unchanged); never raises: a failure is an outcome with ``error``.

    Returns a small JSON-ready outcome: subject, status ("done" | "skipped" | "failed"),
    ``row`` (``caserecord.csv_row`` of summary.json), ``brief`` (numbers for cohort.html),
    error, elapsed_s, cpu_s (CPU time of the worker process during the case), worker,
    peak_rss_mib (the worker process' peak so far).
    """
    started = (time.perf_counter(), time.process_time())
    folder = Path(out_dir) / case.subject
    outcome = {"subject": case.subject, "status": "failed", "row": None, "brief": None, "error": None,
               "elapsed_s": None, "cpu_s": None, "worker": f"{_hostname()}:{os.getpid()}", "peak_rss_mib": None}
    fingerprint, hashes, settings = None, {}, None
    try:
        from .settings import case_settings_from_values

        settings = case_settings_from_values({**settings_values, **case.clinical()})
        if case.problem:
            raise InputFileError(case.problem[0].upper() + case.problem[1:] + ".")
        fingerprint, hashes = case_fingerprint(case, settings, options)
        if options.get("resume"):
            summary = completed_summary(folder, fingerprint)
            if summary is not None:
                outcome.update(status="skipped", **_rows(summary, folder))
                return _finish(outcome, started)
        _remove(folder / CASE_MARKER)
        summary = _analyse(case, folder, settings, options)
        _write_marker(folder, {"status": "done", "fingerprint": fingerprint, "inputs": hashes})
        outcome.update(status="done", **_rows(summary, folder))
    except Exception as exc:  # noqa: BLE001 - a failed case never stops the cohort
        if isinstance(exc, StrokeMismatchError):
            outcome["error"] = " ".join(str(exc).split())
        else:
            outcome["error"] = f"unexpected {type(exc).__name__}: {' '.join(str(exc).split())}"
        _remove_results(folder)
        try:
            _write_marker(folder, {"status": "failed", "fingerprint": fingerprint, "inputs": hashes,
                                   "error": outcome["error"], "traceback": traceback.format_exc()})
        except OSError:
            pass
    return _finish(outcome, started)


def _analyse(case: CohortCase, folder: Path, settings, options: dict) -> dict:
    from .caseinputs import read_case_inputs
    from .outputs import write_case_outputs
    from .pipeline import run_case

    inputs = read_case_inputs(
        case.perfusion, diffusion=case.diffusion, modality=case.modality or options.get("modality"),
        tr=case.tr or options.get("tr"), te=case.te or options.get("te"), adc_unit=options.get("adc_unit"))
    result = run_case(inputs.series, adc=inputs.adc, adc_geometry=inputs.adc_geometry, adc_unit=inputs.adc_unit,
                      brain_mask=inputs.brain_mask, settings=settings)
    return write_case_outputs(result, folder, subject=case.subject, overwrite=True,
                              report=bool(options.get("report", True)),
                              save_series=bool(options.get("save_series", False)))


def _rows(summary: dict, folder: Path) -> dict:
    from .caserecord import csv_row

    report = ((summary.get("outputs") or {}).get("report") or {}).get("written") and (folder / "report.html").is_file()
    brief = {key: summary.get(key) for key in ("core_ml", "hypoperfusion_ml", "penumbra_ml", "mismatch_ml",
                                               "mismatch_ratio", "affected_side", "modality")}
    brief["quality"] = (summary.get("quality") or {}).get("status")
    brief["verdicts"] = {key: rule.get("verdict") for key, rule in (summary.get("criteria") or {}).items()}
    brief["eligible"] = {key: rule.get("eligible") for key, rule in (summary.get("criteria") or {}).items()}
    brief["report"] = bool(report)
    return {"row": csv_row(summary), "brief": brief}


def _finish(outcome: dict, started: tuple) -> dict:
    outcome["elapsed_s"] = round(time.perf_counter() - started[0], 3)
    outcome["cpu_s"] = round(time.process_time() - started[1], 3)  # every thread of the worker process
    outcome["peak_rss_mib"] = _peak_rss_mib()
    return outcome


def _write_marker(folder: Path, data: dict) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    data = {"subject": folder.name, **data, "software_version": __version__,
            "finished": _now()}
    _atomic_write(folder / CASE_MARKER, json.dumps(data, indent=2, default=str) + "\n")


def _remove_results(folder: Path) -> None:
    """Remove our result files of an earlier run from a case folder whose rerun failed, so it
    cannot be mistaken for this run's result (files of others are kept)."""
    from .outputs import result_files

    for rel in result_files(report=True, save_series=True, adc=True) + [CASE_MARKER]:
        _remove(folder / rel)


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except (FileNotFoundError, NotADirectoryError):
        pass
    except OSError:
        pass


def _peak_rss_mib() -> float | None:
    try:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    except (ImportError, OSError):
        return None
    return round(peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0, 1)


def _hostname() -> str:
    import socket

    return socket.gethostname()


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _atomic_write(path: Path, text: str) -> None:
    path = Path(path)
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         delete=False, newline="")
    try:
        with handle:
            handle.write(text)
        os.replace(handle.name, path)
        os.chmod(path, 0o666 & ~_umask())
    except BaseException:
        _remove(Path(handle.name))
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# --------------------------------------------------------------------------------------------
# The cohort (runs in the client)
@dataclass
class CohortResult:
    """What :func:`run_cohort` did: one outcome per case (manifest order) and the files written."""

    out_dir: Path
    outcomes: list
    counts: dict
    files: dict
    warnings: list = field(default_factory=list)
    elapsed_s: float = 0.0

    @property
    def failed(self) -> list:
        return [o for o in self.outcomes if o["status"] == "failed"]

    def outcome(self, subject: str) -> dict:
        return next(o for o in self.outcomes if o["subject"] == subject)


def dask_distributed():
    """The ``distributed`` module, or a clear :class:`StrokeMismatchError` when Dask is missing."""
    try:
        import distributed
    except ImportError:
        raise StrokeMismatchError(_INSTALL_HINT[0].upper() + _INSTALL_HINT[1:] + ".") from None
    return distributed


def shared_settings_values(settings=None) -> dict:
    """Flat name -> value of the settings given once for all cases (``CaseSettings``, a flat
    mapping, or None for the defaults); validated here (``SettingsError``)."""
    from .settings import CaseSettings, case_settings_from_values

    if settings is None:
        return {}
    if isinstance(settings, CaseSettings):
        if settings.aif_voxels is not None or settings.aif_mask is not None or settings.baseline is not None:
            raise InputDataError("Manual AIF voxels or baseline frames are per case, not for a whole cohort: "
                                 "leave them out of the cohort's settings.")
        return {**settings.settings_dict(), **settings.lesion.settings_dict()}
    values = {key: value for key, value in dict(settings).items() if value is not None}
    for key in ("aif_voxels", "aif_mask", "baseline"):
        if key in values:
            raise InputDataError(f"{key} is per case, not for a whole cohort: leave it out of the cohort's settings.")
    case_settings_from_values(values)  # validate now, before any case runs
    return values


def run_cohort(manifest, out, *, client=None, scheduler: str | None = None, workers: int | None = None,
               memory_limit="auto", settings=None, modality: str | None = None, tr: float | None = None,
               te: float | None = None, adc_unit: str | None = None, report: bool = True,
               save_series: bool = False, resume: bool = False, overwrite: bool = False,
               progress: Callable | None = None) -> CohortResult:
    """Run every case of ``manifest`` (a CSV/folder path, a :class:`Manifest` or a list of
    :class:`CohortCase`) through the ``analyze`` pipeline into ``out/<subject>/`` on Dask.

    ``client``: a ``distributed.Client`` to use as it is; else ``scheduler`` (address of a
    running scheduler, e.g. ``"tcp://10.0.0.5:8786"``); else a ``LocalCluster`` of ``workers``
    processes (default: CPU cores, at most one per 3 GiB of memory), one thread each, with
    ``memory_limit`` per worker ("4GiB", bytes, or "auto" = the machine's memory / workers).
    ``settings``: the shared settings (``CaseSettings`` or flat mapping, see settings.py);
    ``modality``/``tr``/``te`` (s)/``adc_unit``: defaults for cases whose manifest row leaves them
    empty. ``resume``: skip cases whose inputs, settings and software are unchanged and whose
    result is complete; ``overwrite``: redo every case in a folder that holds results (else such
    a folder is refused). ``progress(outcome, counts)`` is called as each case finishes.
    Writes cohort.csv, cohort.html, cohort.json and cohort_manifest.csv; returns a
    :class:`CohortResult`. A failed case never stops the cohort.
    """
    if client is not None and (scheduler or workers):
        raise InputDataError("Give a Dask client, or a scheduler address, or a number of workers, not several.")
    if scheduler and workers:
        raise InputDataError("--workers starts a local cluster; with --scheduler the cluster's own workers are used.")
    if workers is not None and int(workers) < 1:
        raise InputDataError(f"--workers must be at least 1, not {workers}.")
    manifest = _as_manifest(manifest)
    settings_values = shared_settings_values(settings)
    out_dir = check_cohort_out(out, manifest, resume=resume, overwrite=overwrite)
    options = {"modality": modality, "tr": tr, "te": te, "adc_unit": adc_unit, "report": bool(report),
               "save_series": bool(save_series), "resume": bool(resume)}
    distributed = dask_distributed()
    started = time.perf_counter()
    created = _now()
    warnings: list = []
    own_cluster = own_client = None
    outcomes: dict = {}
    cluster_text = ""
    try:
        if client is None:
            if scheduler:
                try:
                    own_client = client = distributed.Client(scheduler, timeout="20s")
                except (OSError, TimeoutError, ValueError) as exc:
                    raise StrokeMismatchError(f"Cannot reach the Dask scheduler at {scheduler}: {exc}. Check the "
                                              "address (tcp://host:port) and that the scheduler is running.") from None
            else:
                own_cluster = _local_cluster(distributed, workers, memory_limit)
                own_client = client = distributed.Client(own_cluster)
        _write_manifest_copy(out_dir, manifest)
        cluster_text, cluster_warnings = _describe_cluster(client, own_cluster is not None)
        warnings.extend(cluster_warnings)
        _run_all(distributed, client, manifest.cases, out_dir, settings_values, options, progress, outcomes)
    except KeyboardInterrupt:
        for case in manifest.cases:
            outcomes.setdefault(case.subject, _failed(case.subject, "interrupted before this case finished; run "
                                                      "again with --resume to finish the cohort"))
        _write_cohort_files(out_dir, manifest, outcomes, settings_values, options, cluster_text, created,
                            time.perf_counter() - started, warnings)
        raise
    finally:
        if own_client is not None:
            own_client.close()
        if own_cluster is not None:
            own_cluster.close()
    elapsed = time.perf_counter() - started
    files = _write_cohort_files(out_dir, manifest, outcomes, settings_values, options, cluster_text, created,
                                elapsed, warnings)
    ordered = [outcomes[case.subject] for case in manifest.cases]
    return CohortResult(out_dir, ordered, _counts(ordered, len(ordered)), files, warnings, elapsed)


def _as_manifest(manifest) -> Manifest:
    if isinstance(manifest, Manifest):
        return manifest
    if isinstance(manifest, (str, os.PathLike)):
        return read_manifest(manifest)
    cases = list(manifest)
    if not cases or not all(isinstance(case, CohortCase) for case in cases):
        raise InputDataError("run_cohort needs a manifest path, a Manifest or a list of CohortCase.")
    subjects = [case.subject.lower() for case in cases]
    if len(set(subjects)) != len(subjects):
        raise ManifestError("Subjects must be unique (ignoring case): each names an output folder.")
    return Manifest(cases, Path.cwd(), "list")


def check_cohort_out(out, manifest: Manifest, *, resume: bool = False, overwrite: bool = False) -> Path:
    """Create ``out`` (absolute path returned) or raise :class:`OutputError` now, before any case
    runs: not a folder, not writable, or holding results of an earlier run without ``resume``
    (skip finished, unchanged cases) or ``overwrite`` (redo every case)."""
    from .outputs import existing_results

    if resume and overwrite:
        raise InputDataError("Choose --resume (skip finished, unchanged cases) or --overwrite (redo every case), "
                             "not both.")
    out_dir = Path(out).expanduser().resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"The output path {out_dir} exists and is not a folder: choose another --out.")
    if out_dir.is_dir() and not (resume or overwrite):
        previous = [name for name in (COHORT_CSV, COHORT_JSON) if (out_dir / name).exists()]
        previous += [case.subject for case in manifest.cases
                     if (out_dir / case.subject).is_dir() and existing_results(out_dir / case.subject)]
        if previous:
            raise OutputError(f"The output folder {out_dir} already holds results ({', '.join(previous[:3])}"
                              f"{', …' if len(previous) > 3 else ''}): use --resume to finish or update that "
                              "cohort, --overwrite to redo every case, or choose another --out.")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=out_dir, prefix=".write-test-", delete=True)
        probe.close()
    except OSError as exc:
        raise OutputError(f"Cannot write to the output folder {out_dir}: {exc.strerror or exc}. "
                          "Choose a writable --out.") from None
    clash = [case.subject for case in manifest.cases if (out_dir / case.subject).exists()
             and not (out_dir / case.subject).is_dir()]
    if clash:
        raise OutputError(f"{out_dir / clash[0]} exists and is not a folder: it is where that case's results go.")
    return out_dir


def _local_cluster(distributed, workers, memory_limit):
    import logging

    import dask
    import dask.utils

    cores = os.cpu_count() or 1
    if memory_limit not in (None, "auto") and isinstance(memory_limit, str):
        try:
            dask.utils.parse_bytes(memory_limit)
        except ValueError:
            raise InputDataError(f"The memory limit {memory_limit!r} is not a size: give e.g. 4GiB or 3000MB.") from None
    if workers is None:
        total = _total_memory()
        by_memory = max(1, int(total // (3 * 1024 ** 3))) if total else cores
        workers = max(1, min(cores, by_memory))
    # A case that kills its worker (memory limit) is retried once on another worker, not three times.
    with dask.config.set({"distributed.scheduler.allowed-failures": 1}):
        return distributed.LocalCluster(n_workers=int(workers), threads_per_worker=1, processes=True,
                                        memory_limit=memory_limit, dashboard_address=":0",
                                        silence_logs=logging.ERROR)


def _total_memory() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        return None


def _describe_cluster(client, local: bool) -> tuple[str, list]:
    info = client.scheduler_info()
    workers = info.get("workers") or {}
    threads = [w.get("nthreads", 1) for w in workers.values()]
    limits = [w.get("memory_limit") for w in workers.values() if w.get("memory_limit")]
    text = (f"{'local cluster' if local else 'Dask scheduler ' + str(info.get('address'))}: {len(workers)} "
            f"worker(s)")
    if limits:
        text += f", memory limit {min(limits) / 1024 ** 3:.1f} GiB per worker"
    warnings = []
    if any(n > 1 for n in threads):
        warnings.append(f"Some Dask workers run {max(threads)} threads: they analyse several cases at once and "
                        "need that much more memory; start them with --nthreads 1 for one case per worker.")
    if not workers:
        warnings.append("The Dask scheduler has no workers yet: cases wait until a worker connects.")
    return text, warnings


def _run_all(distributed, client, cases, out_dir: Path, settings_values, options, progress, outcomes: dict) -> None:
    """Submit every case, collect outcomes (subject -> outcome) into ``outcomes`` as they finish."""
    import uuid

    token = uuid.uuid4().hex[:8]
    futures = {}
    for case in cases:
        future = client.submit(run_case_task, case, str(out_dir), settings_values, options,
                               key=f"stroke-mismatch-{case.subject}-{token}", pure=False, retries=0)
        futures[future] = case.subject
    try:
        for future in distributed.as_completed(list(futures)):
            subject = futures[future]
            try:
                outcome = future.result()
            except Exception as exc:  # noqa: BLE001 - the worker died or could not run the task
                outcome = _failed(subject, _worker_failure(exc))
            outcomes[subject] = outcome
            if progress is not None:
                progress(outcome, _counts(outcomes.values(), len(cases)))
    finally:
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)


def _worker_failure(exc) -> str:
    name = type(exc).__name__
    if name == "KilledWorker":
        return ("the Dask worker running this case died (most often: the case needs more memory than the "
                "worker's limit; give fewer --workers or a larger --memory-limit)")
    return f"the Dask worker could not run this case: {name}: {' '.join(str(exc).split())}"


def _failed(subject: str, error: str) -> dict:
    return {"subject": subject, "status": "failed", "row": None, "brief": None, "error": error,
            "elapsed_s": None, "cpu_s": None, "worker": None, "peak_rss_mib": None}


def _counts(outcomes, total: int) -> dict:
    outcomes = list(outcomes)
    counts = {"total": total, "finished": len(outcomes)}
    for status in ("done", "skipped", "failed"):
        counts[status] = sum(1 for o in outcomes if o["status"] == status)
    return counts


# --------------------------------------------------------------------------------------------
# Cohort files
def cohort_columns() -> list:
    """The header of cohort.csv: the columns of summary.csv (``caserecord.csv_row``) for every
    rule and setting, then ``error``."""
    from .caserecord import RULE_KEYS, csv_row
    from .settings import CaseSettings

    template = {"criteria": {key: {} for key in RULE_KEYS.values()}, "settings": CaseSettings().to_dict()}
    return list(csv_row(template)) + ["error"]


def cohort_rows(outcomes, manifest: Manifest) -> tuple[list, list]:
    """(header, rows) of cohort.csv in manifest order; a failed case has its subject, the
    manifest's modality and the ``error``, the other cells empty."""
    header = cohort_columns()
    by_subject = {case.subject: case for case in manifest.cases}
    rows = []
    for outcome in outcomes:
        row = dict(outcome.get("row") or {})
        for key in row:
            if key not in header:
                header.insert(len(header) - 1, key)
        if outcome["status"] == "failed":
            case = by_subject.get(outcome["subject"])
            row = {"subject": outcome["subject"], "modality": (case.modality if case else None) or ""}
        row["error"] = outcome.get("error") or ""
        rows.append(row)
    return header, [{key: row.get(key, "") for key in header} for row in rows]


def _write_cohort_files(out_dir, manifest, outcomes: dict, settings_values, options, cluster_text, created,
                        elapsed, warnings) -> dict:
    from .cohort_report import cohort_html
    from .settings import case_settings_from_values

    ordered = [outcomes.get(case.subject) or _failed(case.subject, "not run") for case in manifest.cases]
    header, rows = cohort_rows(ordered, manifest)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=header, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    _atomic_write(out_dir / COHORT_CSV, buffer.getvalue())
    counts = _counts(ordered, len(ordered))
    settings = case_settings_from_values(settings_values).to_dict()
    meta = {"schema": "stroke-mismatch-cohort/1", "manifest": str(manifest.source), "created": created,
            "finished": _now(), "elapsed_s": round(elapsed, 2), "cluster": cluster_text,
            "settings": settings, "shared_settings_given": settings_values,
            "options": {k: v for k, v in options.items()}, "counts": counts, "warnings": list(warnings),
            "software": {"name": "StrokeMismatch", "version": __version__, "disclaimer": DISCLAIMER},
            "cases": [{key: o.get(key) for key in ("subject", "status", "error", "elapsed_s", "cpu_s", "worker",
                                                   "peak_rss_mib")} for o in ordered]}
    _atomic_write(out_dir / COHORT_JSON, json.dumps(meta, indent=2, default=str, allow_nan=False) + "\n")
    _atomic_write(out_dir / COHORT_HTML, cohort_html(ordered, meta))
    return {"csv": out_dir / COHORT_CSV, "html": out_dir / COHORT_HTML, "json": out_dir / COHORT_JSON,
            "manifest": out_dir / COHORT_MANIFEST}


def _write_manifest_copy(out_dir: Path, manifest: Manifest) -> None:
    buffer = io.StringIO()
    fields = list(CohortCase("x", None).to_row())
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(case.to_row() for case in manifest.cases)
    _atomic_write(out_dir / COHORT_MANIFEST, buffer.getvalue())


# --------------------------------------------------------------------------------------------
class CohortProgress:
    """Cases done/skipped/failed, elapsed and estimated remaining time on ``stream`` (stderr):
    one line rewritten in place on a terminal (failures on their own line), else one line per
    finished case (batch logs)."""

    def __init__(self, total: int, stream=None):
        self.total = total
        self.stream = stream if stream is not None else sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.perf_counter()
        self.last_width = 0

    def status(self, counts: dict) -> str:
        elapsed = time.perf_counter() - self.started
        ran = counts["done"] + counts["failed"]
        remaining = self.total - counts["finished"]
        if remaining == 0:
            eta = "0 s"
        elif ran:
            eta = "~" + format_duration(elapsed / ran * remaining)
        else:
            eta = "unknown"
        return (f"[{counts['finished']}/{self.total}] done {counts['done']}, skipped {counts['skipped']}, "
                f"failed {counts['failed']} | elapsed {format_duration(elapsed)} | remaining {eta}")

    def __call__(self, outcome: dict, counts: dict) -> None:
        status = self.status(counts)
        if self.tty:
            if outcome["status"] == "failed":
                self._clear()
                self.stream.write(f"{outcome['subject']}: FAILED: {outcome['error']}\n")
            self.stream.write("\r" + status.ljust(self.last_width))
            self.last_width = len(status)
        else:
            what = outcome["status"] + (f": {outcome['error']}" if outcome["status"] == "failed" else "")
            self.stream.write(f"{status} | {outcome['subject']} {what}\n")
        self.stream.flush()

    def _clear(self):
        if self.last_width:
            self.stream.write("\r" + " " * self.last_width + "\r")

    def finish(self) -> None:
        if self.tty and self.last_width:
            self.stream.write("\n")
            self.stream.flush()


def format_duration(seconds: float) -> str:
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_cohort_summary(result: CohortResult) -> str:
    """The lines printed after a cohort: counts, quality and eligibility, failures, files."""
    counts = result.counts
    lines = [f"Cohort: {counts['total']} case(s): {counts['done']} analysed, {counts['skipped']} unchanged "
             f"(resumed), {counts['failed']} failed, in {format_duration(result.elapsed_s)}"]
    briefs = [o["brief"] for o in result.outcomes if o.get("brief")]
    if briefs:
        quality = {}
        for brief in briefs:
            quality[brief.get("quality")] = quality.get(brief.get("quality"), 0) + 1
        lines.append("Quality: " + ", ".join(f"{k} {v}" for k, v in sorted(quality.items(), key=str)))
        rules = {}
        for brief in briefs:
            for key, eligible in (brief.get("eligible") or {}).items():
                tally = rules.setdefault(key, [0, 0, 0])
                tally[0 if eligible is True else 1 if eligible is False else 2] += 1
        for key, (yes, no, unknown) in rules.items():
            lines.append(f"  {key:<12} eligible {yes}, not eligible {no}, indeterminate {unknown}")
    for outcome in result.failed:
        lines.append(f"FAILED {outcome['subject']}: {outcome['error']}")
    for text in result.warnings:
        lines.append(f"Note: {text}")
    lines.append(f"Results: {result.files['csv']} and {result.files['html']}")
    lines.append(DISCLAIMER)
    return "\n".join(lines)


def format_outcome_line(outcome: dict) -> str:
    """One line per case (``--quiet``)."""
    if outcome["status"] == "failed":
        return f"{outcome['subject']}: FAILED: {outcome['error']}"
    brief = outcome.get("brief") or {}
    verdicts = ", ".join(f"{k} {v}" for k, v in (brief.get("verdicts") or {}).items())
    ratio = brief.get("mismatch_ratio")
    return (f"{outcome['subject']}: {outcome['status']}; quality {brief.get('quality')}; side "
            f"{brief.get('affected_side') or '—'}; core {_ml(brief.get('core_ml'))}, hypoperfusion "
            f"{_ml(brief.get('hypoperfusion_ml'))}, mismatch ratio {'n/a' if ratio is None else f'{ratio:.2f}'}; "
            f"{verdicts}")


def _ml(value) -> str:
    return "n/a" if value is None else f"{value:.1f} mL"
