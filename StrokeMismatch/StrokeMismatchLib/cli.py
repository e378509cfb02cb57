"""``stroke-mismatch``: perfusion maps and core/penumbra mismatch from the command line.

    stroke-mismatch demo [--modality mr|ct] [--out DIR]
    stroke-mismatch analyze --perfusion PATH [--diffusion ADC] [--modality mr|ct] [--te S] ...
    stroke-mismatch cohort MANIFEST.csv|BIDS_DIR --out DIR [--scheduler ADDRESS] [--workers N] [--resume] ...

Exit codes: 0 success, 2 bad input or output location (one line ``stroke-mismatch: error: …``),
1 unexpected failure (one line; ``--debug`` shows the traceback), 3 results written but sending them
(``--send``/``--stow``) failed, 130 cancelled (Ctrl-C).
Progress goes to stderr (``--quiet`` silences it); ``--json`` prints summary.json to stdout.
``cohort`` exits 3 when the cohort finished but some cases failed (listed, with reasons).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

from . import DISCLAIMER, __version__
from .errors import AnalysisCancelled, InputDataError, StrokeMismatchError

PROG = "stroke-mismatch"

class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports usage errors in our one-line format (exit code 2)."""

    def error(self, message):
        raise _UsageError(message)


class _UsageError(Exception):
    pass


# --------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog=PROG,
        description="Perfusion maps (CBF, CBV, MTT, Tmax, TTP), ischemic core, hypoperfusion, "
        "penumbra, mismatch and trial criteria from DSC-MRI or CT perfusion. " + DISCLAIMER,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{demo,analyze,cohort,rethreshold,recompute,listen}")

    common = _ArgumentParser(add_help=False)
    common.add_argument("--out", metavar="DIR", help="output folder")
    common.add_argument("--overwrite", action="store_true",
                        help="replace our result files in an existing output folder (other files are kept)")
    common.add_argument("--quiet", action="store_true",
                        help="no progress display; print one line per case instead of the table (batch runs)")
    common.add_argument("--subject", metavar="ID",
                        help="subject identifier in summary.json/.csv and the report (default: the BIDS "
                        "sub-XX of the input path, else the input file name)")
    common.add_argument("--no-report", dest="report", action="store_false", help="do not write report.html")
    common.add_argument("--json", action="store_true", help="print summary.json to stdout instead of the table")
    common.add_argument("--debug", action="store_true", help="show the traceback of unexpected errors")
    common.add_argument("--save-series", action="store_true",
                        help="also write the analysed (motion-corrected) series as series/perfusion.seq.nrrd, "
                        "which 3D Slicer opens as a sequence")

    analysis = _ArgumentParser(add_help=False)
    group = analysis.add_argument_group("case inputs")
    group.add_argument("--aif-voxels", type=_voxels, metavar='"k,j,i;k,j,i"',
                       help="manual AIF voxels (0-based k,j,i indices), instead of automatic selection")
    group.add_argument("--baseline-frames", type=_frame_range, metavar="START:STOP",
                       help="baseline frames (0-based, STOP excluded) instead of automatic detection")
    add_setting_options(analysis)

    rethreshold = sub.add_parser(
        "rethreshold", parents=[common],
        help="apply new thresholds / clean-up settings to a result folder's saved maps (no deconvolution)",
        description="Re-threshold a previous result: new lesion settings applied to its saved maps; the "
        "settings you do not give keep the values of the original analysis.")
    rethreshold.add_argument("result", metavar="RESULT_DIR", help="folder written by analyze or demo")
    add_setting_options(rethreshold)
    add_dicom_out_options(rethreshold)
    recompute = sub.add_parser(
        "recompute", parents=[common],
        help="volumes and verdicts of hand-corrected core / hypoperfusion masks of a result folder",
        description="Recompute every volume, ratio and criterion of a previous result from edited masks "
        "(any format SimpleITK reads; resampled by physical position when on another grid), with the "
        "original settings; summary.json records which masks were edited and by how many mL.")
    recompute.add_argument("result", metavar="RESULT_DIR", help="folder written by analyze or demo")
    recompute.add_argument("--core", metavar="PATH", help="edited core mask (default: as analysed)")
    recompute.add_argument("--hypoperfusion", metavar="PATH",
                           help="edited hypoperfusion mask (default: as analysed)")
    add_dicom_out_options(recompute)

    demo = sub.add_parser("demo", parents=[common, analysis],
                          help="run the whole analysis on a built-in digital phantom (no input needed)",
                          description="Build a digital brain phantom with a known lesion, analyse it and "
                          "compare with the truth.")
    demo.add_argument("--modality", choices=["mr", "ct"], default="mr", type=str.lower)
    demo.add_argument("--no-lesion", dest="lesion", action="store_false", help="healthy phantom")
    demo.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")

    analyze = sub.add_parser("analyze", parents=[common, analysis],
                             help="analyse a 4D perfusion series (NIfTI + BIDS JSON, .seq.nrrd or DICOM folder)")
    analyze.add_argument("--perfusion", required=True, metavar="PATH",
                         help="4D NIfTI (with its BIDS .json sidecar), .seq.nrrd, or a DICOM folder")
    analyze.add_argument("--series", metavar="UID_OR_NUMBER", help="DICOM series to use when the folder has several")
    analyze.add_argument("--diffusion", metavar="ADC_PATH", help="ADC map (3D) for the MR core")
    analyze.add_argument("--dwi-b0", metavar="PATH",
                         help="instead of --diffusion: the b = 0 image of a DWI pair, to compute the ADC")
    analyze.add_argument("--dwi-b", metavar="PATH", help="the diffusion-weighted image of that pair (b = --b-value)")
    analyze.add_argument("--b-value", type=_positive, default=1000.0, metavar="S_PER_MM2",
                         help="b-value of --dwi-b in s/mm² (default 1000)")
    analyze.add_argument("--adc-unit", choices=["1e-6", "1e-3", "mm2/s"],
                         help="unit of the ADC values (default: detected from the brain median)")
    analyze.add_argument("--brain-mask", metavar="PATH", help="brain mask (3D, on the perfusion grid)")
    analyze.add_argument("--modality", choices=["mr", "ct"], type=str.lower,
                         help="MR (DSC) or CT perfusion, when the file does not say (a contradiction "
                         "with the file's modality is refused unless --force-modality)")
    analyze.add_argument("--force-modality", action="store_true",
                         help="analyse as --modality even though the file records another modality "
                         "(only when the file's label is known to be wrong; reported as a warning)")
    analyze.add_argument("--tr", type=_positive, metavar="S",
                         help="repetition time / frame interval in seconds, for files that record no frame "
                         "times (frame times in the sidecar, DICOM headers or .seq.nrrd take precedence; "
                         "a disagreeing --tr is reported as a warning)")
    analyze.add_argument("--te", type=_positive, metavar="S", help="echo time in seconds (MR)")
    add_dicom_out_options(analyze)
    add_listen_command(sub, parents=[analysis])

    cohort = sub.add_parser(
        "cohort", help="analyse many cases (a manifest CSV or a BIDS-like folder) in parallel on Dask",
        description="Run the analyze pipeline on every case of MANIFEST into DIR/<subject>/, in parallel on Dask "
        "(a local cluster of worker processes, or an existing cluster with --scheduler), and write DIR/cohort.csv "
        "(one row per subject) and DIR/cohort.html. The settings options apply to every case; a case's age, nihss "
        "and collateral_score in the manifest override them. A failed case is reported with its reason and the "
        "cohort continues (exit code 3 when any case failed). Needs the 'cohort' extra (dask[distributed]).")
    cohort.add_argument("manifest", metavar="MANIFEST",
                        help="CSV with columns subject, perfusion [, diffusion, modality, age, nihss, "
                        "collateral_score, tr, te] (paths relative to the CSV), or a BIDS-like folder: "
                        "sub-*/[ses-*/] with one perfusion series (…_dsc/_pwi/_perf/_ctp.nii.gz) and an ADC (…_adc)")
    cohort.add_argument("--out", required=True, metavar="DIR", help="output folder of the cohort")
    cohort.add_argument("--scheduler", metavar="ADDRESS",
                        help="address of a running Dask scheduler (e.g. tcp://10.0.0.5:8786), used as it is; "
                        "its workers must see the inputs and DIR at the same paths (start them with --nthreads 1)")
    cohort.add_argument("--workers", type=int, metavar="N",
                        help="worker processes of the local cluster (default: CPU cores, at most one per 3 GiB "
                        "of memory); each analyses one case at a time")
    cohort.add_argument("--memory-limit", metavar="SIZE",
                        help="memory limit per local worker, e.g. 4GiB (default: the machine's memory / workers); "
                        "a case that exceeds it fails with that reason")
    cohort.add_argument("--resume", action="store_true",
                        help="skip cases whose inputs (content hash), settings and software version are unchanged "
                        "and whose results are complete; rerun the others")
    cohort.add_argument("--overwrite", action="store_true",
                        help="redo every case in an output folder that holds results of an earlier run")
    cohort.add_argument("--quiet", action="store_true",
                        help="no progress display; print one line per case at the end (batch logs)")
    cohort.add_argument("--no-report", dest="report", action="store_false",
                        help="do not write each case's report.html")
    cohort.add_argument("--save-series", action="store_true",
                        help="also write each case's analysed series as series/perfusion.seq.nrrd")
    cohort.add_argument("--debug", action="store_true", help="show the traceback of unexpected errors")
    group = cohort.add_argument_group("defaults for cases whose manifest row leaves them empty")
    group.add_argument("--modality", choices=["mr", "ct"], type=str.lower, help="MR (DSC) or CT perfusion")
    group.add_argument("--tr", type=_positive, metavar="S", help="repetition time in seconds (files without frame times)")
    group.add_argument("--te", type=_positive, metavar="S", help="echo time in seconds (MR)")
    group.add_argument("--adc-unit", choices=["1e-6", "1e-3", "mm2/s"],
                       help="unit of the ADC values (default: detected from the brain median)")
    add_setting_options(cohort)
    cohort.set_defaults(aif_voxels=None, baseline_frames=None)
    return parser


def add_dicom_out_options(parser) -> None:
    """--dicom-out / --send / --stow (DICOM results for PACS; dicomout.py, dicomnet.py)."""
    group = parser.add_argument_group("DICOM results (for a DICOM input; needs the 'dicom' extra)")
    group.add_argument("--dicom-out", metavar="DIR",
                       help="also write DICOM objects into DIR: segmentation (core, penumbra, hypoperfusion), "
                       "parametric maps (CBF, CBV, MTT, Tmax), a summary capture and a measurement report (SR), "
                       "as new series of the source study, marked NOT FOR CLINICAL USE")
    group.add_argument("--send", metavar="AET@HOST:PORT", help="send the DICOM objects by C-STORE to this node")
    group.add_argument("--stow", metavar="URL", help="send the DICOM objects by DICOMweb STOW-RS to this URL")


def add_listen_command(sub, parents) -> None:
    """``stroke-mismatch listen``: the DICOM receiver node (dicomnet.ListenerNode)."""
    listen = sub.add_parser(
        "listen", parents=parents,
        help="DICOM node: analyse perfusion series pushed to it (C-STORE) and send the results back",
        description="Receive perfusion series by C-STORE; a series is analysed when no instance of it "
        "arrived for --settle seconds; the DICOM results are sent to --send. Only the --send node and "
        "--allow peers may connect. Cases are logged in OUT/cases.jsonl. " + DISCLAIMER)
    listen.add_argument("--port", type=int, required=True, help="DICOM port to listen on")
    listen.add_argument("--ae-title", required=True, help="this node's AE title")
    listen.add_argument("--send", required=True, metavar="AET@HOST:PORT", help="where results are sent")
    listen.add_argument("--out", metavar="DIR", default="stroke-mismatch-node", help="the node's folder")
    listen.add_argument("--allow", action="append", default=[], metavar="AET@HOST",
                        help="another peer allowed to send (calling AE title @ address); repeatable")
    listen.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    listen.add_argument("--settle", type=_positive, default=10.0, metavar="S",
                        help="a series is complete when no instance came for S seconds (0.5-600, default 10)")
    listen.add_argument("--max-series-mb", type=_positive, default=2048.0, help="largest series accepted (MB)")
    listen.add_argument("--max-instances", type=int, default=20000, help="most instances per series")
    listen.add_argument("--max-pending", type=int, default=4, help="most series received or queued at once")
    listen.add_argument("--debug", action="store_true", help="show the traceback of unexpected errors")


def _number(text, what):
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number ({what})") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number ({what})")
    return value


def _positive(text):
    value = _number(text, "expected a positive number")
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return value


def _voxels(text):
    voxels = []
    for part in text.replace(" ", "").split(";"):
        if not part:
            continue
        try:
            k, j, i = (int(v) for v in part.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"AIF voxel {part!r} is not three whole numbers k,j,i (e.g. \"12,40,33;12,40,34\")"
            ) from None
        voxels.append((k, j, i))
    if not voxels:
        raise argparse.ArgumentTypeError("no AIF voxel given")
    return voxels


def _frame_range(text):
    try:
        start, stop = (int(v) for v in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not START:STOP frame indices (e.g. 2:10)") from None
    return start, stop


# --------------------------------------------------------------------------------------------
class ProgressDisplay:
    """A one-line text bar with percent and step name on stderr (plain lines when not a TTY)."""

    def __init__(self, stream=None, enabled=True):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.last_message = None
        self.last_percent = -1
        self.started = time.perf_counter()

    def __call__(self, fraction, message=""):
        if not self.enabled:
            return True
        percent = int(round(100 * max(0.0, min(1.0, fraction))))
        if self.tty:
            if percent != self.last_percent or message != self.last_message:
                filled = percent // 5
                bar = "#" * filled + "." * (20 - filled)
                self.stream.write(f"\r[{bar}] {percent:3d}%  {message[:50]:<50}")
                self.stream.flush()
        elif message != self.last_message:
            self.stream.write(f"[{percent:3d}%] {message}\n")
            self.stream.flush()
        self.last_message, self.last_percent = message, percent
        return True

    def scaled(self, start, end):
        """A callback that maps 0…1 onto start…end of this display."""
        return lambda fraction, message="": self(start + (end - start) * fraction, message)

    def finish(self):
        if self.enabled and self.tty:
            elapsed = time.perf_counter() - self.started
            self.stream.write(f"\r[{'#' * 20}] 100%  {'done in %.1f s' % elapsed:<50}\n")
            self.stream.flush()


# --------------------------------------------------------------------------------------------
def add_setting_options(parser) -> None:
    """One option per setting of the schema (``settings.py``), grouped as on the panel.

    Numbers: ``--tmax 6`` (checked against the setting's range, exit 2 otherwise); switches:
    ``--fill-holes`` / ``--no-fill-holes`` (absent: the default, "auto" for by-modality switches);
    choices: ``--method oSVD``. Every default is None here, so only given options change a setting.
    """
    from .settings import settings_by_group

    for group_name, specs in settings_by_group().items():
        group = parser.add_argument_group(f"settings: {group_name.lower()}")
        for spec in specs:
            text = f"{spec.help} Default {spec.default_text()}; {spec.range_text()}."
            text = text.replace("%", "%%")
            if spec.kind in ("bool", "auto_bool"):
                group.add_argument(spec.cli_flag, dest=spec.name, action=argparse.BooleanOptionalAction,
                                   default=None, help=text)
            elif spec.kind == "choice":
                group.add_argument(spec.cli_flag, dest=spec.name, type=_choice(spec), default=None,
                                   metavar="|".join(spec.choices), help=text)
            else:
                group.add_argument(spec.cli_flag, dest=spec.name, type=_setting_value(spec), default=None,
                                   metavar=_METAVARS.get(spec.unit, "X"),
                                   help=text)


_METAVARS = {"%": "PERCENT", "s": "S", "mm": "MM", "mL": "ML", "HU": "HU", "years": "YEARS", "g/mL": "G_PER_ML",
             "mL/100 g": "ML_PER_100G", "×10⁻⁶ mm²/s": "ADC", "voxels": "VOXELS", "°": "DEG", "": "N"}


def _setting_value(spec):
    def parse(text):
        from .settings import SettingsError

        try:
            number = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number; {spec.name} takes {spec.range_text()}") from None
        if spec.kind in ("int", "optional_int") and number.is_integer():
            number = int(number)
        try:
            return spec.validate(number)
        except SettingsError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = spec.name
    return parse


#: Older spellings still accepted on the command line.
_CHOICE_ALIASES = {"tmax4": "tmax_lt_4"}


def _choice(spec):
    def parse(text):
        from .settings import SettingsError

        try:
            return spec.validate(_CHOICE_ALIASES.get(text.lower(), text))
        except SettingsError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = spec.name
    return parse


def _case_settings(args):
    """The :class:`CaseSettings` of the given options (only what the user gave changes a default)."""
    from .settings import all_settings, case_settings_from_values

    values = {spec.name: getattr(args, spec.name) for spec in all_settings()
              if getattr(args, spec.name, None) is not None}
    return case_settings_from_values(
        {**values, "aif_voxels": args.aif_voxels, "baseline": args.baseline_frames})


def _run_and_write(args, series, *, adc=None, adc_geometry=None, adc_unit=None, brain_mask=None,
                   default_out, subject, annotate=None):
    """Run the case and write its outputs; ``annotate(result) -> dict`` adds summary entries."""
    from .outputs import claim_output_dir, write_case_outputs
    from .pipeline import run_case

    # Checked and claimed before the analysis (a second run into the same folder fails at once).
    with claim_output_dir(args.out or default_out, overwrite=args.overwrite) as out_dir:
        settings = _case_settings(args)
        display = ProgressDisplay(enabled=not args.quiet)
        result = run_case(series, adc=adc, adc_geometry=adc_geometry, adc_unit=adc_unit, brain_mask=brain_mask,
                          settings=settings, progress=display.scaled(0.0, 0.9))
        summary = write_case_outputs(result, out_dir, overwrite=args.overwrite, report=args.report,
                                     save_series=args.save_series, subject=args.subject or subject,
                                     extra_summary=annotate(result) if annotate else None,
                                     progress=display.scaled(0.9, 1.0))
    display.finish()
    return result, summary, out_dir


def _cmd_demo(args):
    from .phantom.volume import make_volume_phantom

    display = ProgressDisplay(enabled=not args.quiet)
    display(0.0, f"Building the {args.modality.upper()} phantom")
    phantom = make_volume_phantom(args.modality, lesion=args.lesion, seed=args.seed)
    default_out = f"stroke-mismatch-demo-{args.modality}"

    def agreement_with_truth(result):
        masks = result.lesion.masks
        voxel_ml = result.geometry.voxel_volume_ml
        return {"phantom_agreement": {
            "phantom": {"modality": args.modality, "lesion": bool(args.lesion), "seed": args.seed,
                        "lesion_side": phantom.lesion_side},
            "core": _agreement(masks["core"], phantom.true_core, voxel_ml),
            "hypoperfusion": _agreement(masks["hypoperfusion"], phantom.true_hypoperfusion, voxel_ml),
        }}

    _, summary, out_dir = _run_and_write(
        args, phantom.series, adc=phantom.adc, adc_geometry=phantom.adc_geometry, default_out=default_out,
        subject=f"phantom-{args.modality}{'' if args.lesion else '-healthy'}-seed{args.seed}",
        annotate=agreement_with_truth,
    )
    if args.json:
        print(json.dumps(summary, indent=2, allow_nan=False, ensure_ascii=False))
    elif args.quiet:
        print(format_one_line(summary))
    else:
        print(format_summary(summary, out_dir))
        print(_format_agreement(summary["phantom_agreement"]))
    return 0


def _agreement(found, truth, voxel_ml):
    import numpy as np

    found = np.asarray(found, dtype=bool)
    truth = np.asarray(truth, dtype=bool)
    both = int(np.count_nonzero(found & truth))
    total = int(np.count_nonzero(found)) + int(np.count_nonzero(truth))
    return {
        "dice": (2.0 * both / total) if total else None,
        "found_ml": float(np.count_nonzero(found)) * voxel_ml,
        "truth_ml": float(np.count_nonzero(truth)) * voxel_ml,
    }


def _format_agreement(truth):
    lines = ["", "Agreement with the phantom's truth:"]
    for name in ("core", "hypoperfusion"):
        entry = truth[name]
        dice = "n/a (both empty)" if entry["dice"] is None else f"{entry['dice']:.3f}"
        lines.append(f"  {name:<14} Dice {dice:<8}  found {entry['found_ml']:7.1f} mL   truth {entry['truth_ml']:7.1f} mL")
    return "\n".join(lines)


def _cmd_analyze(args):
    from .caseinputs import read_case_inputs

    inputs = read_case_inputs(
        args.perfusion, series_id=args.series, modality=args.modality, tr=args.tr, te=args.te,
        diffusion=args.diffusion, dwi_b0=args.dwi_b0, dwi_b=args.dwi_b, b_value=args.b_value,
        adc_unit=args.adc_unit, brain_mask=args.brain_mask, force_modality=args.force_modality)
    _check_dicom_out(args, inputs.series)
    from .caserecord import subject_from_path

    path = Path(args.perfusion)
    stem = path.name.split(".")[0] or "case"
    result, summary, out_dir = _run_and_write(
        args, inputs.series, adc=inputs.adc, adc_geometry=inputs.adc_geometry, adc_unit=inputs.adc_unit,
        brain_mask=inputs.brain_mask, default_out=f"stroke-mismatch-{stem}",
        subject=subject_from_path(path.resolve()),
    )
    return _send_and_print(args, result, summary, out_dir)


def _check_dicom_out(args, series, inputs=None):
    """Before the analysis: --send/--stow need --dicom-out, and DICOM results need a DICOM input
    (``inputs``: the summary.json ``inputs`` of a result folder, for rethreshold/recompute)."""
    if (args.send or args.stow) and not args.dicom_out:
        raise InputDataError("--send and --stow send the DICOM results: give --dicom-out DIR too.")
    if args.dicom_out:
        from .dicomout import require_dicom_source
        from .dicomnet import parse_peer

        require_dicom_source(series, inputs)
        from .dicomout import FILE_NAMES
        from .errors import OutputError

        present = [name for name in FILE_NAMES.values() if (Path(args.dicom_out) / name).exists()]
        if present and not args.overwrite:
            raise OutputError(f"{args.dicom_out} already holds DICOM results ({', '.join(present[:3])}…): "
                              "choose another --dicom-out folder or add --overwrite.")
        if args.send:
            parse_peer(args.send)


def _dicom_out(args, result, summary):
    """Write the DICOM objects (--dicom-out) and send them (--send, --stow); returns the send reports."""
    if not args.dicom_out:
        return []
    from .dicomout import export_case_dicom
    from .dicomnet import send_cstore, send_stow

    exported = export_case_dicom(result, result.record(subject=summary.get("subject")), args.dicom_out)
    if not args.quiet:
        print(f"DICOM results: {len(exported.files)} objects in {args.dicom_out}", file=sys.stderr)
    reports = []
    if args.send:
        reports.append(send_cstore(exported.files, args.send))
    if args.stow:
        reports.append(send_stow(exported.files, args.stow))
    return reports


def _report_sends(reports) -> int:
    """Print each send's outcome; exit code 3 when one failed (the local files are kept)."""
    code = 0
    for report in reports:
        if report.ok:
            print(f"{PROG}: {report.message()}", file=sys.stderr)
        else:
            _error(f"{report.message()}. The DICOM files are kept; send them again later.")
            code = 3
    return code


def _cmd_listen(args):
    """Run the receiver node until Ctrl-C."""
    import logging

    from .dicomnet import ListenerConfig, ListenerNode, analyse_received_series, parse_peer

    allowed = [parse_peer(f"{text}:1") if ":" not in text else parse_peer(text) for text in args.allow]
    settings = _case_settings(args)
    config = ListenerConfig(
        out_dir=Path(args.out), ae_title=args.ae_title, port=args.port, send_to=parse_peer(args.send),
        host=args.host, allowed_ae_titles=tuple(p.ae_title for p in allowed),
        allowed_hosts=tuple(p.host for p in allowed), settle_s=args.settle,
        max_series_bytes=int(args.max_series_mb * 1024 ** 2), max_instances=args.max_instances,
        max_pending=args.max_pending,
        analyse=lambda folder, case_dir, entry: analyse_received_series(folder, case_dir, entry, settings))
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    print(f"{PROG} listen: {args.ae_title} on port {args.port}, results to {args.send}; Ctrl-C stops. "
          f"{DISCLAIMER}", file=sys.stderr)
    ListenerNode(config).serve_forever()
    return 0


def _cmd_cohort(args):
    """``stroke-mismatch cohort``: every case of the manifest on Dask (see ``cohort.py``)."""
    from .cohort import (CohortProgress, check_cohort_out, dask_distributed, format_cohort_summary,
                         format_outcome_line, read_manifest, run_cohort)
    from .settings import all_settings

    dask_distributed()  # a clear message now when Dask is missing
    _case_settings(args)  # every setting checked once, before any case
    given = {spec.name: getattr(args, spec.name) for spec in all_settings() if getattr(args, spec.name) is not None}
    if args.scheduler and (args.workers or args.memory_limit):
        raise InputDataError("--workers and --memory-limit set up the local cluster; a --scheduler cluster keeps "
                             "its own workers.")
    if args.workers is not None and args.workers < 1:
        raise InputDataError(f"--workers must be at least 1, not {args.workers}.")
    manifest = read_manifest(args.manifest)
    check_cohort_out(args.out, manifest, resume=args.resume, overwrite=args.overwrite)
    if not args.quiet:
        sys.stderr.write(manifest.describe() + "\n")
        sys.stderr.flush()
    display = None if args.quiet else CohortProgress(len(manifest.cases))
    try:
        result = run_cohort(manifest, args.out, scheduler=args.scheduler, workers=args.workers,
                            memory_limit=args.memory_limit or "auto", settings=given, modality=args.modality,
                            tr=args.tr, te=args.te, adc_unit=args.adc_unit, report=args.report,
                            save_series=args.save_series, resume=args.resume, overwrite=args.overwrite,
                            progress=display)
    finally:
        if display is not None:
            display.finish()
    if args.quiet:
        for outcome in result.outcomes:
            print(format_outcome_line(outcome))
        counts = result.counts
        print(f"cohort: {counts['total']} cases, {counts['done']} analysed, {counts['skipped']} unchanged, "
              f"{counts['failed']} failed; {result.files['csv']}")
    else:
        print(format_cohort_summary(result))
    return 3 if result.failed else 0


def _cmd_derived(args):
    """``rethreshold`` and ``recompute``: a previous result folder, derived without deconvolving."""
    from .outputs import check_output_dir, write_case_outputs
    from .rethreshold import load_case_maps, read_edited_mask, recomputed_result, rethresholded_result
    from .settings import all_settings

    source = Path(args.result)
    out_dir = check_output_dir(args.out or f"{source.as_posix().rstrip('/')}-{args.command}",
                               overwrite=args.overwrite)
    if out_dir.resolve() == source.resolve():
        raise InputDataError("--out must differ from the result folder: the original result is kept as it is.")
    case = load_case_maps(source)
    _check_dicom_out(args, None, (case.summary or {}).get("inputs"))
    if args.command == "rethreshold":
        overrides = {spec.name: getattr(args, spec.name) for spec in all_settings()
                     if getattr(args, spec.name, None) is not None}
        derived = rethresholded_result(case, overrides)
    else:
        if not (args.core or args.hypoperfusion):
            raise InputDataError("Give the edited masks: --core PATH and/or --hypoperfusion PATH.")
        core = read_edited_mask(args.core, case, "core") if args.core else None
        hypo = read_edited_mask(args.hypoperfusion, case, "hypoperfusion") if args.hypoperfusion else None
        derived = recomputed_result(case, core, hypo)
    summary = write_case_outputs(derived, out_dir, overwrite=args.overwrite, report=args.report,
                                 subject=args.subject)
    return _send_and_print(args, derived, summary, out_dir)


def _send_and_print(args, result, summary, out_dir) -> int:
    """DICOM results out (when asked), then the summary as --json, one --quiet line or the table."""
    sent = _dicom_out(args, result, summary)
    if args.json:
        print(json.dumps(summary, indent=2, allow_nan=False, ensure_ascii=False))
    elif args.quiet:
        print(format_one_line(summary))
    else:
        print(format_summary(summary, out_dir))
    return _report_sends(sent)


# --------------------------------------------------------------------------------------------
def _fmt(value, unit="", digits=1):
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        text = f"{value:.{digits}f}"
        return f"{text} {unit}".strip()
    return str(value)


def _describe_input(summary: dict) -> str:
    """Source, frames and their timing, TE/TR and voxel size, each with its unit."""
    info = summary.get("inputs") or {}
    parts = [str(info.get("source"))]
    times = info.get("frame_times_s") or []
    n_frames = info.get("n_frames") or len(times)
    if n_frames:
        timing = f"{n_frames} frames"
        if len(times) > 1:
            timing += f" over {times[-1] - times[0]:.1f} s"
        time_source = (info.get("metadata") or {}).get("time_source")
        if time_source:
            timing += f" [timing: {time_source}]"
        parts.append(timing)
    if info.get("te_s"):
        parts.append(f"TE {1000.0 * info['te_s']:.3g} ms")
    if info.get("tr_s"):
        parts.append(f"TR {info['tr_s']:.3g} s")
    voxel = info.get("voxel_size_mm_ijk")
    if voxel:
        parts.append(" × ".join(f"{v:.3g}" for v in voxel) + " mm voxels")
    return ", ".join(parts)


_QUALITY_WORDS = {"pass": "PASS", "warn": "WARN (verdicts stand; read the findings)",
                  "fail": "FAIL (verdicts indeterminate: the data cannot support them)"}


def format_summary(summary: dict, out_dir=None) -> str:
    """The human-readable table printed after a run, rendered from the case record (summary.json):
    quality first, then the case, affected side, volumes and ratios, verdicts, notes."""
    quality = summary.get("quality") or {}
    status = str(quality.get("status") or "pass")
    lines = [f"Quality: {_QUALITY_WORDS.get(status, status.upper())}"]
    findings = [f for f in quality.get("findings") or [] if isinstance(f, dict)
                and f.get("severity") in ("warning", "error")]
    for finding in findings:
        lines.append(f"  [{finding.get('severity')}] {finding.get('message')}")
    stability = summary.get("stability") or {}
    if stability.get("status") == "near_cutoff":
        lines.append("Verdict stability: NEAR A CUT-OFF (a small change of threshold or volume flips a verdict)")
        for finding in stability.get("findings") or []:
            lines.append(f"  - {finding.get('message')}")
    elif stability:
        lines.append("Verdict stability: stable (no verdict changes within ±1 s Tmax, ±50 ADC / ±5 points "
                     "rCBF, or ±10 % of a limit)")
    settings = summary.get("settings") or {}
    lines.append(f"StrokeMismatch {summary.get('software', {}).get('version', '')} — "
                 f"{str(summary.get('modality', '')).upper()} perfusion, {settings.get('method')}; "
                 f"subject {summary.get('subject')}")
    if (summary.get("inputs") or {}).get("source"):
        lines.append(f"Input: {_describe_input(summary)}")
    lines.append(f"Affected side: {summary.get('affected_side') or 'not determined'}")
    lines.append("")
    metrics = summary.get("metrics") or {}
    if metrics:
        lines.append("Volumes and ratios")
        rows = []
        for name, entry in metrics.items():
            if isinstance(entry, dict):
                value, unit = entry.get("value"), entry.get("unit") or ""
                if unit in ("1", "ratio"):
                    unit = ""
                note = entry.get("note") or entry.get("flag") or entry.get("reason")
                label = entry.get("label") or name.replace("_", " ")
                text = _fmt(value, unit, 1 if unit else 2)
                if value is None and note:
                    text += f" ({note})"
                rows.append((label, text))
        width = min(max(len(label) for label, _ in rows), 60) if rows else 0
        for label, text in rows:
            lines.append(f"  {label:<{width}}  {text}")
    criteria = summary.get("criteria") or {}
    if criteria:
        lines.append("")
        lines.append("Trial criteria")
        for rule in criteria.values():
            lines.append(f"  {str(rule.get('name')):<38} {rule.get('verdict')}")
            for reason in rule.get("reasons") or []:
                lines.append(f"      - {reason}")
    shown = {str(f.get("message")) for f in findings}
    other = [text for text in summary.get("warnings") or []
             if str(text) not in shown and str(text).split(": ", 1)[-1] not in shown]
    if other:
        lines.append("")
        lines.append("Notes")
        for text in other:
            lines.append(f"  - {text}")
    if out_dir is not None:
        lines.append("")
        lines.append(f"Results written to {out_dir}")
    lines.append("")
    lines.append((summary.get("software") or {}).get("disclaimer") or DISCLAIMER)
    return "\n".join(lines)


def format_one_line(summary: dict) -> str:
    """One line per case (``--quiet``): subject, quality, side, core/hypoperfusion/mismatch, verdicts."""
    verdicts = ", ".join(f"{key} {rule.get('verdict')}" for key, rule in (summary.get("criteria") or {}).items())
    near = (summary.get("stability") or {}).get("status") == "near_cutoff"
    return (f"{summary.get('subject')}: quality {(summary.get('quality') or {}).get('status')}"
            f"{', NEAR A CUT-OFF' if near else ''}; "
            f"side {summary.get('affected_side') or '—'}; core {_fmt(summary.get('core_ml'), 'mL')}, "
            f"Tmax>6 s {_fmt(summary.get('hypoperfusion_ml'), 'mL')}, mismatch ratio "
            f"{_fmt(summary.get('mismatch_ratio'), '', 2)}; {verdicts}")


# --------------------------------------------------------------------------------------------
def _error(message, stream=None):
    stream = stream if stream is not None else sys.stderr
    message = " ".join(str(message).split())  # one line
    stream.write(f"{PROG}: error: {message}\n")
    stream.flush()


def _run_command(args) -> int:
    if args.command == "demo":
        return _cmd_demo(args)
    if args.command == "listen":
        return _cmd_listen(args)
    if args.command == "cohort":
        return _cmd_cohort(args)
    if args.command in ("rethreshold", "recompute"):
        return _cmd_derived(args)
    return _cmd_analyze(args)


def main(argv=None) -> int:
    """Entry point of the ``stroke-mismatch`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    debug = "--debug" in argv
    try:
        args = parser.parse_args(argv)
    except _UsageError as exc:
        _error(f"{exc} (see '{PROG} --help')")
        return 2
    except SystemExit as exc:  # --help / --version
        return int(exc.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    try:
        code = _run_command(args)
        sys.stdout.flush()  # here, so that a reader that went away is handled below
        return code
    except BrokenPipeError:
        # The reader of stdout closed it (e.g. "| head"): the results are written; stop quietly,
        # with stdout pointed at /dev/null so that Python's exit-time flush does not complain.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
    except AnalysisCancelled as exc:
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        _error(exc)
        return 130
    except StrokeMismatchError as exc:
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        _error(exc)
        if debug:
            traceback.print_exc()
        return 2
    except KeyboardInterrupt:
        _error("interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - last resort: one line, traceback only with --debug
        if sys.stderr.isatty():
            sys.stderr.write("\n")
        if debug:
            traceback.print_exc()
        _error(f"unexpected {type(exc).__name__}: {exc} — run with --debug for details")
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
