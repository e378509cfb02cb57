"""Sending results to a PACS (C-STORE, STOW-RS) and the ``listen`` receiver node (pynetdicom).

- :func:`send_cstore` sends DICOM files to ``AET@HOST:PORT``; :func:`send_stow` to a DICOMweb
  STOW-RS URL. Both return a :class:`SendReport` (what was sent, what failed and why) instead of
  raising for a refused instance, so the caller reports it and keeps the local files.
- :class:`ListenerNode` is a DICOM storage SCP: a perfusion series pushed to it (C-STORE) is
  analysed once *complete* — no new instance of the series for ``settle_s`` seconds — and the
  results (:mod:`dicomout`) are sent to the configured peer. Every case is logged as one JSON
  line in ``<out>/cases.jsonl``.

Safety of the node (it faces a hospital network):

- only configured peers: calling AE titles and source addresses on the allow-list, others are
  rejected at association;
- bounded: bytes and instances per series, series pending at once, seconds a series may keep
  arriving, network/DIMSE timeouts; an over-limit series is refused, its files deleted, logged;
- file names never come from the network: series folders and instance files are named by a hash
  of their (validated) UIDs inside ``<out>/incoming``; results go to ``<out>/cases/<case id>``;
- a hostile or broken sender (garbage PDU, a non-image dataset, a truncated association) costs
  that association only; a failing analysis is a logged refusal, never a crash of the node.

Decision support for research and teaching, not a medical device.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import logging
import re
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import InputDataError, OutputError, StrokeMismatchError

LOG = logging.getLogger("StrokeMismatch.listen")
UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
AE_RE = re.compile(r"^[\x21-\x7e][\x20-\x7e]{0,15}$")
CALLING_AE = "STROKEMISMATCH"
#: C-STORE statuses the node answers with.
STATUS_OK, STATUS_OUT_OF_RESOURCES, STATUS_NOT_IMAGE, STATUS_CANNOT_UNDERSTAND = 0x0000, 0xA700, 0xA900, 0xC000


def _pynetdicom():
    try:
        import pynetdicom
    except ImportError:
        raise OutputError("Sending DICOM needs pynetdicom: pip install 'StrokeMismatchLib[dicom]'.") from None
    return pynetdicom


@dataclass(frozen=True)
class Peer:
    """A DICOM node: AE title, host and port."""

    ae_title: str
    host: str
    port: int

    def __str__(self):
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_peer(text: str) -> Peer:
    """``AET@HOST:PORT`` -> :class:`Peer`; a clear :class:`InputDataError` otherwise."""
    match = re.fullmatch(r"([^@]{1,16})@([^:@\s]+|\[[0-9a-fA-F:]+\]):([0-9]{1,5})", str(text).strip())
    if not match or not AE_RE.match(match.group(1)) or not 0 < int(match.group(3)) < 65536:
        raise InputDataError(
            f"{text!r} is not a DICOM node: give AET@HOST:PORT, e.g. PACS@10.0.0.5:104 (AE title of "
            "1-16 printable characters, port 1-65535).")
    return Peer(match.group(1).strip(), match.group(2).strip("[]"), int(match.group(3)))


@dataclass
class SendReport:
    """What a send did: ``sent`` files, ``failed`` (file, reason), and a connection ``error``."""

    destination: str
    sent: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and not self.failed

    def message(self) -> str:
        if self.ok:
            return f"sent {len(self.sent)} DICOM object(s) to {self.destination}"
        detail = self.error or "; ".join(f"{Path(p).name}: {why}" for p, why in self.failed[:5])
        return (f"sending to {self.destination} failed for {len(self.failed) or 'all'} object(s) "
                f"({detail}); {len(self.sent)} sent")


def _read(paths):
    import pydicom

    return [(Path(p), pydicom.dcmread(str(p))) for p in paths]


def send_cstore(paths, peer: Peer | str, *, calling_ae: str = CALLING_AE, timeout_s: float = 30.0) -> SendReport:
    """C-STORE every file of ``paths`` to ``peer`` in one association."""
    pynetdicom = _pynetdicom()
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

    peer = parse_peer(peer) if isinstance(peer, str) else peer
    report = SendReport(destination=str(peer))
    items = _read(paths)
    ae = pynetdicom.AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_s
    ae.connection_timeout = timeout_s
    for sop_class in sorted({str(ds.SOPClassUID) for _, ds in items}):
        ae.add_requested_context(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    try:
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title)
    except Exception as exc:  # noqa: BLE001 - e.g. unresolvable host name
        report.error = f"cannot connect ({exc})"
        return report
    if not assoc.is_established:
        report.error = ("association rejected" if assoc.is_rejected else
                        "association aborted" if assoc.is_aborted else "no answer (is the node running?)")
        return report
    try:
        for path, ds in items:
            try:
                status = assoc.send_c_store(ds)
            except Exception as exc:  # noqa: BLE001 - one bad object must not stop the others
                report.failed.append((str(path), str(exc)))
                continue
            code = getattr(status, "Status", None)
            if code is None:
                report.failed.append((str(path), "no response (connection lost or timed out)"))
            elif code in (0x0000, 0xB000, 0xB007, 0xB006):
                report.sent.append(str(path))
            else:
                report.failed.append((str(path), f"refused with status 0x{code:04X}"))
    finally:
        if assoc.is_established:
            assoc.release()
    return report


def send_stow(paths, url: str, *, timeout_s: float = 60.0) -> SendReport:
    """STOW-RS every file of ``paths`` to the DICOMweb ``url`` (the service root or its /studies)."""
    try:
        from dicomweb_client.api import DICOMwebClient
    except ImportError:
        raise OutputError("STOW-RS needs dicomweb-client: pip install 'StrokeMismatchLib[dicom]'.") from None
    report = SendReport(destination=url)
    items = _read(paths)
    root = url.rstrip("/")
    if root.endswith("/studies"):
        root = root[: -len("/studies")]
    try:
        client = DICOMwebClient(url=root)
        client.set_http_retry_params(retry=False)
        response = client.store_instances([ds for _, ds in items])
    except Exception as exc:  # noqa: BLE001 - HTTP errors, refused connection, bad URL
        report.error = f"{type(exc).__name__}: {exc}"
        return report
    failed = {str(item.ReferencedSOPInstanceUID) for item in getattr(response, "FailedSOPSequence", [])}
    for path, ds in items:
        if str(ds.SOPInstanceUID) in failed:
            report.failed.append((str(path), "refused by the server"))
        else:
            report.sent.append(str(path))
    return report


# --------------------------------------------------------------------------------------------
# The receiver node
# --------------------------------------------------------------------------------------------
@dataclass
class ListenerConfig:
    """Settings of :class:`ListenerNode` (every bound is enforced)."""

    out_dir: Path
    ae_title: str
    port: int
    send_to: Peer | None = None
    host: str = "0.0.0.0"
    allowed_ae_titles: tuple = ()        # calling AE titles accepted (the --send peer's is added)
    allowed_hosts: tuple = ()            # source addresses accepted (the --send peer's is added)
    settle_s: float = 10.0               # a series is complete when no instance came for this long
    max_receive_s: float = 900.0         # a series still arriving after this long is refused
    max_series_bytes: int = 2 * 1024 ** 3
    max_instances: int = 20000           # per series
    max_pending: int = 4                 # series received or waiting for analysis at once
    timeout_s: float = 30.0              # network, ACSE and DIMSE timeouts
    keep_received: bool = False          # keep the received series after its analysis
    analyse: Callable | None = None      # (series_dir, case_dir, log_entry) -> list of result files

    def __post_init__(self):
        self.out_dir = Path(self.out_dir)
        if not AE_RE.match(self.ae_title or ""):
            raise InputDataError(f"--ae-title {self.ae_title!r}: give 1-16 printable characters.")
        if not 0 < int(self.port) < 65536:
            raise InputDataError(f"--port {self.port}: give a port between 1 and 65535.")
        if not 0.5 <= self.settle_s <= 600:
            raise InputDataError("--settle must be between 0.5 and 600 s.")
        for name in ("max_series_bytes", "max_instances", "max_pending"):
            if int(getattr(self, name)) < 1:
                raise InputDataError(f"{name} must be at least 1.")
        aets, hosts = set(self.allowed_ae_titles), set(self.allowed_hosts)
        if self.send_to is not None:
            aets.add(self.send_to.ae_title)
            hosts.add(self.send_to.host)
        if not aets:
            raise InputDataError("The node accepts only configured peers: give --send or --allow AET@HOST.")
        self.allowed_ae_titles, self.allowed_hosts = tuple(sorted(aets)), tuple(sorted(hosts))


@dataclass
class _Series:
    uid: str
    key: str
    folder: Path
    calling_ae: str
    address: str
    first: float
    last: float
    n_instances: int = 0
    n_bytes: int = 0
    sop_uids: set = field(default_factory=set)
    state: str = "receiving"             # receiving | analysing | done | refused
    late: bool = False                   # an instance came while analysing (logged once)


class ListenerNode:
    """The ``stroke-mismatch listen`` node: ``start()`` serves in the background, ``stop()`` ends."""

    def __init__(self, config: ListenerConfig):
        self.config = config
        self.out_dir = config.out_dir.expanduser().resolve()
        self.incoming = self.out_dir / "incoming"
        self.cases = self.out_dir / "cases"
        self.log_path = self.out_dir / "cases.jsonl"
        self._series: dict[str, _Series] = {}
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._server = None
        self._threads: list[threading.Thread] = []
        self._queue: list[_Series] = []
        self._n_cases = 0
        self._wake = threading.Condition(self._lock)

    # --- life cycle -------------------------------------------------------------------------
    def start(self) -> "ListenerNode":
        pynetdicom = _pynetdicom()
        from pynetdicom import evt
        from pynetdicom.sop_class import Verification

        try:
            for folder in (self.incoming, self.cases):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"Cannot use {self.out_dir} as the node's folder: {exc.strerror or exc}.") from None
        ae = pynetdicom.AE(ae_title=self.config.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.config.timeout_s
        ae.maximum_associations = 4
        ae.require_calling_aet = list(self.config.allowed_ae_titles)
        ae.require_called_aet = True
        ae.add_supported_context(Verification)
        for context in pynetdicom.AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        handlers = [(evt.EVT_C_STORE, self._on_store)]
        try:
            self._server = ae.start_server((self.config.host, int(self.config.port)), block=False,
                                           evt_handlers=handlers)
        except OSError as exc:
            raise OutputError(f"Cannot listen on port {self.config.port}: {exc.strerror or exc}.") from None
        # socketserver's hook: a connection from an address off the allow-list is closed at once
        self._server.verify_request = self._verify_address
        for target in (self._watch, self._work):
            thread = threading.Thread(target=target, daemon=True, name=f"stroke-mismatch-{target.__name__}")
            thread.start()
            self._threads.append(thread)
        self._log({"event": "started", "ae_title": self.config.ae_title, "port": self.config.port,
                   "send_to": str(self.config.send_to) if self.config.send_to else None,
                   "allowed_ae_titles": list(self.config.allowed_ae_titles),
                   "allowed_hosts": list(self.config.allowed_hosts)})
        return self

    def stop(self):
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        if self._server is not None:
            self._server.shutdown()
        for thread in self._threads:
            thread.join(timeout=60)
        self._log({"event": "stopped"})

    def serve_forever(self):
        """Start and block until Ctrl-C."""
        self.start()
        try:
            while not self._stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    # --- log --------------------------------------------------------------------------------
    def _log(self, entry: dict):
        entry = {"time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), **entry}
        LOG.info(json.dumps(entry))
        with self._lock:
            try:
                with open(self.log_path, "a", encoding="utf-8") as handle:
                    handle.write(json.dumps(entry, ensure_ascii=False, default=str) + "\n")
            except OSError:
                LOG.exception("cannot write the case log")

    def log_entries(self) -> list[dict]:
        """Every line of ``cases.jsonl`` (for tests and monitoring)."""
        try:
            return [json.loads(line) for line in self.log_path.read_text(encoding="utf-8").splitlines() if line]
        except OSError:
            return []

    # --- network events ---------------------------------------------------------------------
    def _verify_address(self, request, client_address) -> bool:
        address = str(client_address[0])
        if self.config.allowed_hosts and address not in self.config.allowed_hosts:
            self._log({"event": "refused connection", "address": address, "reason": "address not allowed"})
            return False
        return True

    def _on_store(self, event):
        """C-STORE: validate, bound, store under a hashed name; a status for every refusal."""
        try:
            return self._store(event)
        except Exception as exc:  # noqa: BLE001 - never let one dataset take the node down
            self._log({"event": "refused instance", "reason": f"{type(exc).__name__}: {exc}"})
            return STATUS_CANNOT_UNDERSTAND

    def _store(self, event):
        requestor = event.assoc.requestor
        calling, address = str(requestor.ae_title).strip(), str(requestor.address)
        if calling not in self.config.allowed_ae_titles or (
                self.config.allowed_hosts and address not in self.config.allowed_hosts):
            return STATUS_OUT_OF_RESOURCES
        encoded = event.request.DataSet.getvalue()
        try:
            ds = event.dataset
            uid = str(ds.get("SeriesInstanceUID", "") or "")
            sop_uid = str(ds.get("SOPInstanceUID", "") or "")
            modality = str(ds.get("Modality", "") or "").upper()
            is_image = "Rows" in ds and "PixelData" in ds
        except Exception as exc:  # noqa: BLE001 - undecodable dataset
            self._log({"event": "refused instance", "calling_ae": calling, "address": address,
                       "reason": f"not a readable DICOM dataset ({type(exc).__name__})"})
            return STATUS_CANNOT_UNDERSTAND
        if not (UID_RE.match(uid) and len(uid) <= 64 and UID_RE.match(sop_uid) and len(sop_uid) <= 64):
            self._log({"event": "refused instance", "calling_ae": calling, "address": address,
                       "reason": "missing or malformed SeriesInstanceUID/SOPInstanceUID"})
            return STATUS_NOT_IMAGE
        if modality not in ("CT", "MR") or not is_image:
            self._log({"event": "refused instance", "calling_ae": calling, "address": address, "series_uid": uid,
                       "reason": f"not a CT/MR image (modality {modality or 'none'!r})"})
            return STATUS_NOT_IMAGE
        now = time.monotonic()
        with self._lock:
            series = self._series.get(uid)
            if series is not None and series.state == "done":
                series = None  # the same series sent again after its analysis: a new case
            if series is None:
                pending = sum(1 for s in self._series.values() if s.state in ("receiving", "analysing"))
                if pending >= self.config.max_pending:
                    self._log({"event": "refused instance", "series_uid": uid, "calling_ae": calling,
                               "reason": f"{pending} series already pending (limit {self.config.max_pending})"})
                    return STATUS_OUT_OF_RESOURCES
                key = hashlib.sha256(uid.encode()).hexdigest()[:24]
                series = _Series(uid, key, self.incoming / key, calling, address, now, now)
                self._series[uid] = series
                self._log({"event": "receiving", "series_uid": uid, "calling_ae": calling, "address": address,
                           "case": key})
            if series.state == "analysing":
                if not series.late:
                    series.late = True
                    self._log({"event": "late instance", "series_uid": uid, "case": series.key,
                               "reason": f"instances arrived after the series was taken as complete (no instance "
                               f"for {self.config.settle_s:g} s); they are refused, the case may be incomplete: "
                               "raise --settle or send the series again"})
                return STATUS_OUT_OF_RESOURCES
            if series.state != "receiving":
                return STATUS_OUT_OF_RESOURCES
            if sop_uid in series.sop_uids:
                series.last = now
                return STATUS_OK
            size = len(encoded)
            reason = None
            if series.n_instances + 1 > self.config.max_instances:
                reason = f"more than {self.config.max_instances} instances"
            elif series.n_bytes + size > self.config.max_series_bytes:
                reason = f"more than {self.config.max_series_bytes} bytes"
            elif now - series.first > self.config.max_receive_s:
                reason = f"still arriving after {self.config.max_receive_s:.0f} s"
            if reason is not None:
                self._refuse(series, f"series over the node's limit: {reason}")
                return STATUS_OUT_OF_RESOURCES
            series.n_instances += 1
            series.n_bytes += size
            series.sop_uids.add(sop_uid)
            series.last = now
            folder = series.folder
        path = folder / (hashlib.sha256(sop_uid.encode()).hexdigest()[:32] + ".dcm")
        if self.incoming not in path.resolve().parents:  # cannot happen with hashed names; checked anyway
            return STATUS_CANNOT_UNDERSTAND
        folder.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        with open(partial, "wb") as handle:
            handle.write(b"\x00" * 128 + b"DICM")
            from pydicom.filewriter import write_file_meta_info

            write_file_meta_info(handle, event.file_meta, enforce_standard=True)
            handle.write(encoded)
        partial.replace(path)
        return STATUS_OK

    def _refuse(self, series: _Series, reason: str):
        series.state = "refused"
        shutil.rmtree(series.folder, ignore_errors=True)
        self._log({"event": "refused series", "series_uid": series.uid, "case": series.key,
                   "calling_ae": series.calling_ae, "instances": series.n_instances, "reason": reason})

    # --- completion and analysis ----------------------------------------------------------
    def _watch(self):
        """Mark series complete after ``settle_s`` quiet seconds; refuse those arriving too long."""
        while not self._stop.wait(0.2):
            now = time.monotonic()
            with self._wake:
                for series in list(self._series.values()):
                    if series.state == "receiving" and now - series.last >= self.config.settle_s:
                        series.state = "analysing"
                        self._queue.append(series)
                        self._wake.notify_all()
                    elif series.state == "receiving" and now - series.first > self.config.max_receive_s:
                        self._refuse(series, f"still arriving after {self.config.max_receive_s:.0f} s")
                    elif series.state in ("done", "refused") and now - series.last > 3600:
                        del self._series[series.uid]  # forget old series (a resend is a new case)

    def _work(self):
        while not self._stop.is_set():
            with self._wake:
                while not self._queue and not self._stop.is_set():
                    self._wake.wait(0.5)
                if self._stop.is_set():
                    return
                series = self._queue.pop(0)
            self._analyse(series)

    def _analyse(self, series: _Series):
        self._n_cases += 1
        case_dir = self.cases / f"{_dt.datetime.now().strftime('%Y%m%dT%H%M%S')}-{series.key}-{self._n_cases}"
        entry = {"event": "case", "series_uid": series.uid, "case": case_dir.name, "calling_ae": series.calling_ae,
                 "address": series.address, "instances": series.n_instances, "bytes": series.n_bytes}
        started = time.monotonic()
        try:
            analyse = self.config.analyse or analyse_received_series
            files = analyse(series.folder, case_dir, entry)
            entry["status"] = "analysed"
            if self.config.send_to is not None and files:
                report = send_cstore(files, self.config.send_to, calling_ae=self.config.ae_title,
                                     timeout_s=self.config.timeout_s)
                entry["sent"] = len(report.sent)
                entry["send"] = report.message()
                if not report.ok:
                    entry["status"] = "analysed, sending failed"
        except StrokeMismatchError as exc:
            entry.update(status="refused", reason=str(exc))
        except Exception as exc:  # noqa: BLE001 - a broken series must never stop the node
            entry.update(status="failed", reason=f"unexpected {type(exc).__name__}: {exc}")
        finally:
            entry["seconds"] = round(time.monotonic() - started, 2)
            with self._lock:
                series.state = "done"
                series.last = time.monotonic()
            if not self.config.keep_received:
                shutil.rmtree(series.folder, ignore_errors=True)
            self._log(entry)


def analyse_received_series(series_dir, case_dir, entry: dict, settings=None) -> list[Path]:
    """Analyse one received series folder into ``case_dir`` (NIfTI maps, summary, report under
    ``results/``, DICOM objects under ``dicom/``); returns the DICOM files to send back and adds the
    headline numbers and verdicts to ``entry``."""
    from .dicomio import read_dicom_perfusion
    from .dicomout import export_case_dicom
    from .outputs import write_case_outputs
    from .pipeline import CaseSettings, run_case

    series = read_dicom_perfusion(series_dir)
    if series.metadata is not None:
        series.metadata.setdefault("folder", str(series_dir))
    result = run_case(series, settings=settings or CaseSettings())
    record = result.record(subject=None)
    write_case_outputs(result, Path(case_dir) / "results", record=record)
    exported = export_case_dicom(result, record, Path(case_dir) / "dicom")
    summary = record.to_dict()
    entry.update(core_ml=summary.get("core_ml"), hypoperfusion_ml=summary.get("hypoperfusion_ml"),
                 mismatch_ratio=summary.get("mismatch_ratio"),
                 quality=(summary.get("quality") or {}).get("status"),
                 verdicts={key: rule.get("verdict") for key, rule in (summary.get("criteria") or {}).items()})
    return exported.files
